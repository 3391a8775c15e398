use std::ops::DerefMut;
use std::sync::Arc;

use crate::checkpoint::{CheckpointRepository, CheckpointUpdate};
use crate::dlq::{DLQRepository, FailedEvent};
use crate::projection::Injectable;
use crate::storage::{BoxFuture, StorageError};

/// What a [`TransactionalRunner`](super::TransactionalRunner) needs from a database: a
/// transaction whose connection the handlers write through, and the checkpoint and
/// dead-letter writes made inside that same transaction.
///
/// The PostgreSQL implementation is `PostgreSQLTransactionUnit` (feature `postgres`); tests may
/// implement it to inject failures at each step.
pub trait TransactionUnit: Send + Sync + 'static {
    /// The connection handlers receive.
    type Connection: Injectable + ?Sized;
    /// An open transaction; it derefs to the connection and rolls back when dropped.
    type Transaction: DerefMut<Target = Self::Connection> + Send;

    /// Opens a transaction.
    fn begin(&self) -> BoxFuture<'_, Result<Self::Transaction, StorageError>>;

    /// Commits.
    fn commit(&self, tx: Self::Transaction) -> BoxFuture<'_, Result<(), StorageError>>;

    /// Rolls back.
    fn rollback(&self, tx: Self::Transaction) -> BoxFuture<'_, Result<(), StorageError>>;

    /// Reads the checkpoint of `projection` and locks it until the transaction ends, so that
    /// two runners of one projection never apply the same events.
    fn lock_checkpoint<'a>(
        &'a self,
        tx: &'a mut Self::Transaction,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, StorageError>>;

    /// Checks inside the transaction that this node still owns the lease `fence` names, and
    /// keeps the check valid until the transaction ends (a takeover waits for it); fails with
    /// [`StorageError::Fenced`] otherwise. A transactional runner that carries a fence (it
    /// runs on a node of a [cluster](crate::cluster)) calls it first in every transaction.
    ///
    /// The default refuses: storage that cannot fence cannot run in a cluster.
    fn check_fence<'a>(
        &'a self,
        tx: &'a mut Self::Transaction,
        fence: &'a crate::cluster::Fence,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        let _ = tx;
        Box::pin(std::future::ready(Err(StorageError::Invalid {
            what: "storage for a cluster",
            reason: format!(
                "this transaction unit cannot check the fencing token of `{}`; clusters run on PostgreSQL",
                fence.lease()
            ),
        })))
    }

    /// Moves the checkpoint inside the transaction (monotonic, like
    /// [`CheckpointRepository::update_checkpoint`]).
    fn write_checkpoint<'a>(
        &'a self,
        tx: &'a mut Self::Transaction,
        projection: &'a str,
        update: &'a CheckpointUpdate,
    ) -> BoxFuture<'a, Result<(), StorageError>>;

    /// Deletes the checkpoint inside the transaction.
    fn reset_checkpoint<'a>(
        &'a self,
        tx: &'a mut Self::Transaction,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<(), StorageError>>;

    /// Records a dead letter inside the transaction (upsert, like
    /// [`DLQRepository::add_failed_event`]); returns the entry's id.
    fn dead_letter<'a>(
        &'a self,
        tx: &'a mut Self::Transaction,
        failure: &'a FailedEvent,
    ) -> BoxFuture<'a, Result<i64, StorageError>>;

    /// Marks a dead-letter entry resolved by `resolved_by` inside the transaction (a replay
    /// that succeeded).
    fn resolve_dead_letter<'a>(
        &'a self,
        tx: &'a mut Self::Transaction,
        entry_id: i64,
        resolved_by: &'a str,
    ) -> BoxFuture<'a, Result<(), StorageError>>;

    /// The checkpoint repository over the same storage, for reads (health, lag).
    fn checkpoints(&self) -> Arc<dyn CheckpointRepository>;

    /// The dead-letter repository over the same storage, for reads and replay.
    fn dead_letters(&self) -> Arc<dyn DLQRepository>;
}
