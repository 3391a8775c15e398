//! Several nodes sharing the projections of one PostgreSQL database: one owner per
//! projection at a time, failover when an owner dies, and fencing so that a node that lost
//! ownership never commits again (feature `postgres`; `docs/adr/0015-leases-and-fencing.md`).
//!
//! Each node runs the same program with its own id. A [`ClusterNode`] given to
//! [`ProjectionCoordinator::cluster`](crate::ProjectionCoordinator::cluster) makes the
//! coordinator's workers apply only the projections this node holds the lease of:
//!
//! - **Ownership.** Every projection has a lease row. A node announces itself every
//!   heartbeat, renews the leases it holds, and takes free or expired ones until it holds its
//!   share: with N live nodes and M projections, `M / N` or one more (never more than
//!   `ceil(M / N)`), the same answer on every node. When a node joins, the nodes above their
//!   share give leases back, each after the batch in hand; when one leaves gracefully
//!   (shutdown), it gives its leases back at once.
//! - **Failover.** A node that stops beating (killed, its machine gone, its connection cut) is
//!   gone once its lease expires; the others take its projections then: within the lease
//!   duration plus a heartbeat ([`ClusterNode::lease`], 5 s by default, and
//!   [`ClusterNode::heartbeat`], 1 s). A node that dies inside a batch's transaction holds
//!   its fence until the server notices: at once for a killed process (its connections
//!   close), after [`ClusterNode::batch_idle_timeout`] for a paused one or a cut connection.
//! - **Fencing.** Every acquisition moves the lease's fencing token on by one, in the lease
//!   row and in its fence row. A transactional runner checks the fence row in each batch's
//!   transaction and keeps it locked until commit, so a takeover waits for a batch in flight
//!   and no batch of the old owner commits after it: a node paused past its lease (a
//!   "zombie") commits nothing when it wakes, notices, and stands by.
//!
//! **Partitioned projections.** One heavy projection can be split by aggregate id into
//! partitions ([`Runner::partition`](crate::runner::Runner::partition),
//! [`Partition`](crate::runner::Partition)), each a runner with its own checkpoint and its own
//! lease: the partitions spread over the nodes like any projections, and the events of one
//! aggregate stay in order (they all belong to one partition). A rebuild resets every
//! partition together; changing the number of partitions is a rebuild.
//!
//! **What is guaranteed across nodes.** Transactional projections
//! ([`TransactionalRunner`](crate::transactional::TransactionalRunner) on
//! [`PostgreSQLTransactionUnit`](crate::transactional::PostgreSQLTransactionUnit)): every event's effect
//! exactly once, whatever dies when. Projections with [`Repositories`](crate::runner::Repositories)
//! (handlers without the batch's connection) are **at least once across a handover**: a node
//! only starts a batch while it holds the lease, but a paused node may finish the batch it
//! had started after another node took over, so up to one batch of events can be applied
//! twice per handover.
//!
//! ```no_run
//! # async fn run(pool: sqlx::PgPool, registry: projections::ProjectionRegistry,
//! #              store: std::sync::Arc<dyn projections::EventStore>) -> Result<(), Box<dyn std::error::Error>> {
//! use projections::ProjectionCoordinator;
//! use projections::cluster::ClusterNode;
//!
//! let node = ClusterNode::new(pool, "node-a")?;
//! let handle = ProjectionCoordinator::new(registry, store).cluster(node).start()?;
//! // Every node runs the same; each applies its share of the projections.
//! # Ok(()) }
//! ```

#[cfg(feature = "postgres")]
mod assign;
mod fence;
#[cfg(feature = "postgres")]
mod membership;
#[cfg(feature = "postgres")]
mod node;
#[cfg(feature = "postgres")]
mod sql;

pub use fence::Fence;
#[cfg(feature = "postgres")]
pub use membership::ClusterView;
#[cfg(feature = "postgres")]
pub(crate) use membership::{ClusterLink, Membership, WorkerLease};
#[cfg(feature = "postgres")]
pub use node::ClusterNode;
#[cfg(feature = "postgres")]
pub use sql::NodeInfo;
#[cfg(feature = "postgres")]
pub(crate) use sql::check_fence;

/// Who holds each of the leases `names` now, read from the database: the owner and the
/// seconds its lease has left, by lease (free leases are missing).
#[cfg(all(feature = "postgres", feature = "cli"))]
pub(crate) async fn holders(
    node: &ClusterNode,
    names: &[String],
) -> Result<std::collections::HashMap<String, (String, f64)>, crate::StorageError> {
    let tables = sql::Tables::new(&node.schema);
    let now = Utc::now();
    Ok(sql::leases(&node.pool, &tables, names)
        .await?
        .into_iter()
        .filter(|row| row.live)
        .filter_map(|row| {
            let left = row.expires_at? - now;
            Some((row.name, (row.owner?, left.as_seconds_f64().max(0.0))))
        })
        .collect())
}

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Who owns a projection (or a partition), as this node last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Ownership {
    /// The owning node; `None` while the lease is free.
    pub node: Option<String>,
    /// Whether that node is this one.
    pub mine: bool,
    /// When the owner took the lease.
    pub since: Option<DateTime<Utc>>,
    /// When the lease expires unless its owner renews it.
    pub expires_at: Option<DateTime<Utc>>,
    /// The fencing token of the current ownership.
    pub token: i64,
}
