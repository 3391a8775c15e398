//! The PostgreSQL [`TransactionUnit`].

use std::sync::Arc;

use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use super::TransactionUnit;
use crate::checkpoint::{CheckpointRepository, CheckpointUpdate};
use crate::dlq::{DLQRepository, FailedEvent};
use crate::postgres::{PostgreSQLCheckpointRepository, PostgreSQLDLQRepository, Schema};
use crate::storage::{BoxFuture, StorageError};

/// Transactions on a PostgreSQL pool, with the checkpoint and dead-letter tables of one schema.
///
/// ```no_run
/// # use std::sync::Arc;
/// # use projections::transactional::{PostgreSQLTransactionUnit, TransactionalRunner};
/// # async fn run<P: projections::DatabaseProjection<Connection = projections::PgConnection>>(pool: sqlx::PgPool, projection: P) {
/// let unit = Arc::new(PostgreSQLTransactionUnit::new(pool));
/// let runner = TransactionalRunner::new(projection, unit);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PostgreSQLTransactionUnit {
    pool: PgPool,
    checkpoints: Arc<PostgreSQLCheckpointRepository>,
    dead_letters: Arc<PostgreSQLDLQRepository>,
    /// The schema searched first by every batch (`SET LOCAL search_path`), as SQL.
    read_model: Option<String>,
}

impl PostgreSQLTransactionUnit {
    /// Transactions on `pool`, tables in the connection's `search_path`.
    pub fn new(pool: PgPool) -> Self {
        Self {
            checkpoints: Arc::new(PostgreSQLCheckpointRepository::new(pool.clone())),
            dead_letters: Arc::new(PostgreSQLDLQRepository::new(pool.clone())),
            pool,
            read_model: None,
        }
    }

    /// Transactions on `pool`, tables in `schema`.
    pub fn with_schema(pool: PgPool, schema: &Schema) -> Self {
        Self {
            checkpoints: Arc::new(PostgreSQLCheckpointRepository::with_schema(
                pool.clone(),
                schema,
            )),
            dead_letters: Arc::new(PostgreSQLDLQRepository::with_schema(pool.clone(), schema)),
            pool,
            read_model: None,
        }
    }

    /// Runs every batch with `schema` first in the `search_path` (`SET LOCAL`, so only for
    /// that transaction): the handlers' unqualified table names resolve to the read model's
    /// tables in `schema`. This is how a blue/green version writes into its own schema
    /// ([`PostgreSQLReadModelVersions`](crate::bluegreen::PostgreSQLReadModelVersions)). The crate's own
    /// tables are found as before: through the unit's schema, or the rest of the path.
    #[must_use]
    pub fn read_model_schema(mut self, schema: &Schema) -> Self {
        self.read_model = schema.name().map(|name| format!("\"{name}\""));
        self
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

fn backend(error: sqlx::Error) -> StorageError {
    StorageError::backend(error)
}

fn conn<'a>(tx: &'a mut Transaction<'static, Postgres>) -> &'a mut PgConnection {
    tx
}

impl TransactionUnit for PostgreSQLTransactionUnit {
    type Connection = PgConnection;
    type Transaction = Transaction<'static, Postgres>;

    fn begin(&self) -> BoxFuture<'_, Result<Self::Transaction, StorageError>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await.map_err(backend)?;
            if let Some(schema) = &self.read_model {
                // The rest of the path stays, so the crate's unqualified tables (a unit
                // without a schema) and the user's extensions still resolve.
                sqlx::query(
                    "SELECT set_config('search_path', $1 || ', ' || current_setting('search_path'), true)",
                )
                .bind(schema)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            }
            Ok(tx)
        })
    }

    fn commit(&self, tx: Self::Transaction) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move { tx.commit().await.map_err(backend) })
    }

    fn rollback(&self, tx: Self::Transaction) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move { tx.rollback().await.map_err(backend) })
    }

    fn lock_checkpoint<'a>(
        &'a self,
        tx: &'a mut Self::Transaction,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, StorageError>> {
        Box::pin(
            self.checkpoints
                .get_checkpoint_for_update(conn(tx), projection),
        )
    }

    fn check_fence<'a>(
        &'a self,
        tx: &'a mut Self::Transaction,
        fence: &'a crate::cluster::Fence,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(crate::cluster::check_fence(conn(tx), fence))
    }

    fn write_checkpoint<'a>(
        &'a self,
        tx: &'a mut Self::Transaction,
        projection: &'a str,
        update: &'a CheckpointUpdate,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(
            self.checkpoints
                .update_checkpoint_in(conn(tx), projection, update),
        )
    }

    fn reset_checkpoint<'a>(
        &'a self,
        tx: &'a mut Self::Transaction,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(self.checkpoints.reset_checkpoint_in(conn(tx), projection))
    }

    fn dead_letter<'a>(
        &'a self,
        tx: &'a mut Self::Transaction,
        failure: &'a FailedEvent,
    ) -> BoxFuture<'a, Result<i64, StorageError>> {
        Box::pin(self.dead_letters.add_failed_event_in(conn(tx), failure))
    }

    fn resolve_dead_letter<'a>(
        &'a self,
        tx: &'a mut Self::Transaction,
        entry_id: i64,
        resolved_by: &'a str,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(
            self.dead_letters
                .mark_resolved_in(conn(tx), entry_id, resolved_by),
        )
    }

    fn checkpoints(&self) -> Arc<dyn CheckpointRepository> {
        self.checkpoints.clone()
    }

    fn dead_letters(&self) -> Arc<dyn DLQRepository> {
        self.dead_letters.clone()
    }
}
