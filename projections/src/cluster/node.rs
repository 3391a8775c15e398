//! A node's identity and timing: what every node of a cluster is configured with.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

use crate::postgres::Schema;
use crate::storage::StorageError;

/// One node of a cluster: its id, the database the nodes coordinate through, and how long a
/// lease lasts. Give it to
/// [`ProjectionCoordinator::cluster`](crate::ProjectionCoordinator::cluster); see the
/// [module documentation](super) for what it guarantees.
///
/// Run the crate's migrations first ([`migrate_schema`](crate::postgres::migrate_schema)):
/// the node uses the tables `projection_nodes`, `projection_leases` and `projection_fences`
/// of its schema, which must be the schema of the checkpoints its projections use.
///
/// ```
/// # fn pool() -> sqlx::PgPool { sqlx::PgPool::connect_lazy("postgres://localhost/app").unwrap() }
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use projections::cluster::ClusterNode;
///
/// let node = ClusterNode::new(pool(), "node-a")?
///     .lease(Duration::from_secs(10))
///     .heartbeat(Duration::from_secs(2));
/// assert_eq!(node.id(), "node-a");
/// assert!(ClusterNode::new(pool(), "").is_err());
/// # Ok::<_, projections::StorageError>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct ClusterNode {
    pub(crate) pool: PgPool,
    pub(crate) schema: Schema,
    pub(crate) id: Arc<str>,
    pub(crate) lease: Duration,
    pub(crate) heartbeat: Duration,
    pub(crate) batch_idle_timeout: Duration,
    pub(crate) host: Option<String>,
}

impl ClusterNode {
    /// The node `id` (unique among the nodes: two live processes must never share one),
    /// coordinating through `pool`, tables in the connection's `search_path`. Leases last 5 s,
    /// heartbeats come every second. An id must be 1 to 200 printable characters.
    pub fn new(pool: PgPool, id: impl Into<String>) -> Result<Self, StorageError> {
        let id = id.into();
        if id.is_empty() || id.len() > 200 || id.chars().any(char::is_control) {
            return Err(StorageError::Invalid {
                what: "node id",
                reason: format!("{id:?} must be 1 to 200 printable characters"),
            });
        }
        Ok(Self {
            pool,
            schema: Schema::default(),
            id: Arc::from(id),
            lease: Duration::from_secs(5),
            heartbeat: Duration::from_secs(1),
            batch_idle_timeout: Duration::from_secs(5),
            host: std::env::var("HOSTNAME").ok(),
        })
    }

    /// The tables live in `schema` (the schema of the projections' checkpoints).
    #[must_use]
    pub fn schema(mut self, schema: &Schema) -> Self {
        self.schema = schema.clone();
        self
    }

    /// How long a lease (and a node's announcement) lasts without a heartbeat: the time
    /// within which the others take over from a node that died. Also sets the batch idle
    /// timeout to the same, unless set after. At least twice the heartbeat interval.
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(200));
        self.batch_idle_timeout = self.lease;
        self
    }

    /// How often the node renews its leases, looks at the others and rebalances.
    #[must_use]
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat = interval.max(Duration::from_millis(50));
        self
    }

    /// How long a batch's transaction may sit idle (the node paused, or its network cut)
    /// before the server ends it and frees the fence for a takeover. Handlers that wait for
    /// something else between two statements for longer than this fail their batch (an
    /// infrastructure failure, tried again). Defaults to the lease duration.
    #[must_use]
    pub fn batch_idle_timeout(mut self, timeout: Duration) -> Self {
        self.batch_idle_timeout = timeout.max(Duration::from_millis(100));
        self
    }

    /// The host name shown to the other nodes (the `HOSTNAME` variable by default).
    #[must_use]
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// The node's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The heartbeat interval, made shorter than half the lease if it was not.
    pub(crate) fn effective_heartbeat(&self) -> Duration {
        self.heartbeat.min(self.lease / 2)
    }
}
