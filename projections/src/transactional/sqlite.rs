//! The SQLite [`TransactionUnit`].

use std::sync::Arc;

use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};

use super::TransactionUnit;
use crate::checkpoint::{CheckpointRepository, CheckpointUpdate};
use crate::dlq::{DLQRepository, FailedEvent};
use crate::sqlite::{SqliteCheckpointRepository, SqliteDLQRepository};
use crate::storage::{BoxFuture, StorageError};

/// Transactions on a SQLite database, with its checkpoint and dead-letter tables.
///
/// Every batch transaction starts with `BEGIN IMMEDIATE`: it takes SQLite's single write lock
/// before reading the checkpoint, so two runners of one projection (in one process or two)
/// take turns and never apply the same events, and a batch never fails half-way because a
/// reader could not be promoted to a writer. While a batch runs, appends and other batches
/// wait for the lock (up to the [busy timeout](crate::sqlite::BUSY_TIMEOUT)); keep batches
/// short on a busy file.
///
/// **Handlers must return the errors of their statements.** On some failures (a trigger's
/// `RAISE(ROLLBACK)`, `INSERT OR ROLLBACK`, some I/O errors) SQLite ends the whole transaction
/// at once, and statements after it run outside any transaction, each committing on its own.
/// A handler that returns the error is safe: the batch is rolled back and retried as usual. A
/// handler that hides it loses the batch's earlier writes and commits its later ones alone;
/// the unit notices before the checkpoint moves and refuses the batch (an infrastructure
/// failure, tried again), so no event is skipped, but the writes that ran outside the
/// transaction happen again when the batch is retried.
///
/// ```no_run
/// # use std::sync::Arc;
/// # use projections::transactional::{SqliteTransactionUnit, TransactionalRunner};
/// # async fn run<P: projections::DatabaseProjection<Connection = sqlx::SqliteConnection>>(projection: P) -> Result<(), Box<dyn std::error::Error>> {
/// let pool = projections::sqlite::open("app.db").await?;
/// let unit = Arc::new(SqliteTransactionUnit::new(pool));
/// let runner = TransactionalRunner::new(projection, unit);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SqliteTransactionUnit {
    pool: SqlitePool,
    checkpoints: Arc<SqliteCheckpointRepository>,
    dead_letters: Arc<SqliteDLQRepository>,
}

impl SqliteTransactionUnit {
    /// Transactions on `pool`. The tables must exist: see [`migrate`](crate::sqlite::migrate).
    pub fn new(pool: SqlitePool) -> Self {
        Self {
            checkpoints: Arc::new(SqliteCheckpointRepository::new(pool.clone())),
            dead_letters: Arc::new(SqliteDLQRepository::new(pool.clone())),
            pool,
        }
    }

    /// The pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// The batch's transaction ended before its checkpoint was written.
#[derive(Debug, thiserror::Error)]
#[error(
    "SQLite ended the batch's transaction by itself (a statement failed with rollback \
     semantics and a handler did not return its error); the checkpoint was not written and \
     the batch will be tried again"
)]
struct TransactionEnded;

fn backend(error: sqlx::Error) -> StorageError {
    StorageError::backend(error)
}

fn conn<'a>(tx: &'a mut Transaction<'static, Sqlite>) -> &'a mut SqliteConnection {
    tx
}

impl TransactionUnit for SqliteTransactionUnit {
    type Connection = SqliteConnection;
    type Transaction = Transaction<'static, Sqlite>;

    fn begin(&self) -> BoxFuture<'_, Result<Self::Transaction, StorageError>> {
        Box::pin(async move {
            self.pool
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(backend)
        })
    }

    fn commit(&self, tx: Self::Transaction) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move { tx.commit().await.map_err(backend) })
    }

    /// Rolls back, also when a statement of a handler already made SQLite end the transaction
    /// (a constraint violation under `OR ROLLBACK`, a trigger's `RAISE(ROLLBACK, ...)`, some
    /// I/O errors), so that the connection goes back to the pool fit for the next batch.
    fn rollback(&self, tx: Self::Transaction) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(crate::sqlite::rollback(tx))
    }

    /// The write lock taken by [`begin`](TransactionUnit::begin) already excludes every
    /// other writer, so this is a plain read.
    fn lock_checkpoint<'a>(
        &'a self,
        tx: &'a mut Self::Transaction,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, StorageError>> {
        Box::pin(crate::sqlite::checkpoint_in(conn(tx), projection))
    }

    fn write_checkpoint<'a>(
        &'a self,
        tx: &'a mut Self::Transaction,
        projection: &'a str,
        update: &'a CheckpointUpdate,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            let conn = conn(tx);
            // SQLite ends a transaction by itself on some failures (a trigger's
            // `RAISE(ROLLBACK)`, `OR ROLLBACK`, some I/O errors). If a handler swallowed such
            // an error, the batch's earlier writes are gone and its later statements ran on
            // their own: moving the checkpoint now would skip events. A `BEGIN` succeeds only
            // outside a transaction, so it tells; the batch is then refused and tried again.
            if sqlx::query("BEGIN").execute(&mut *conn).await.is_ok() {
                return Err(StorageError::backend(TransactionEnded));
            }
            crate::sqlite::update_checkpoint_in(conn, projection, update).await
        })
    }

    fn reset_checkpoint<'a>(
        &'a self,
        tx: &'a mut Self::Transaction,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(crate::sqlite::reset_checkpoint_in(conn(tx), projection))
    }

    fn dead_letter<'a>(
        &'a self,
        tx: &'a mut Self::Transaction,
        failure: &'a FailedEvent,
    ) -> BoxFuture<'a, Result<i64, StorageError>> {
        Box::pin(crate::sqlite::add_failed_event_in(conn(tx), failure))
    }

    fn resolve_dead_letter<'a>(
        &'a self,
        tx: &'a mut Self::Transaction,
        entry_id: i64,
        resolved_by: &'a str,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(crate::sqlite::mark_resolved_in(
            conn(tx),
            entry_id,
            resolved_by,
        ))
    }

    fn checkpoints(&self) -> Arc<dyn CheckpointRepository> {
        self.checkpoints.clone()
    }

    fn dead_letters(&self) -> Arc<dyn DLQRepository> {
        self.dead_letters.clone()
    }
}
