//! What the fault tests share: a bounded wait, and a throwaway cluster with the crate's tables,
//! the read model, and a pool on it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use projections::postgres::PostgreSQLEventStore;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use super::cluster::ThrowawayCluster;
use super::faults;

/// The longest any one setup step may take.
pub const STEP: Duration = Duration::from_secs(15);

/// `future`, or a test failure naming `what` when it takes longer than `limit`.
pub async fn within<F: Future>(what: &str, limit: Duration, future: F) -> F::Output {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
}

/// A throwaway cluster with the crate's tables and the read model, and a pool on it.
pub struct Rig {
    pub cluster: Arc<ThrowawayCluster>,
    pub pool: PgPool,
}

impl Rig {
    /// A cluster, and a pool of at most `connections` that gives up on a down server after
    /// `acquire_timeout`.
    pub async fn start(connections: u32, acquire_timeout: Duration) -> Self {
        let cluster = tokio::task::spawn_blocking(ThrowawayCluster::start)
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("cannot start a throwaway cluster: {e}"));
        let pool = within(
            "connecting",
            STEP,
            PgPoolOptions::new()
                .max_connections(connections)
                .acquire_timeout(acquire_timeout)
                .connect(&cluster.url()),
        )
        .await
        .unwrap_or_else(|e| panic!("cannot connect: {e}\n{}", cluster.server_log()));
        within("migrating", STEP, faults::prepare(&pool))
            .await
            .unwrap();
        Self {
            cluster: Arc::new(cluster),
            pool,
        }
    }

    /// The event store on the pool.
    pub fn store(&self) -> PostgreSQLEventStore {
        PostgreSQLEventStore::new(self.pool.clone())
    }
}
