//! How a runner commits: the only thing that differs between runners.
//!
//! - [`Repositories`]: the handlers' effects happen as they run; the checkpoint and dead letters
//!   go to their repositories after them. Nothing is held open while handlers run. At least
//!   once: a crash between a handler and the checkpoint write applies that batch again.
//! - a [`TransactionUnit`] (in an `Arc`): one database transaction per batch around the
//!   handlers, the checkpoint and the dead letters. Exactly once.

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use crate::checkpoint::{CheckpointRepository, CheckpointUpdate};
use crate::dlq::{DLQRepository, FailedEvent};
use crate::memory::{InMemoryCheckpointRepository, InMemoryDLQRepository};
use crate::projection::{Injectable, NoConnection};
use crate::storage::StorageError;
use crate::transactional::TransactionUnit;

mod sealed {
    pub trait Sealed {}
}

/// How a runner commits its progress. Implemented by [`Repositories`] and by
/// `Arc<U>` for every [`TransactionUnit`] `U`; not implementable outside this crate.
pub trait CommitStrategy: sealed::Sealed + Send + Sync + 'static {
    /// The connection handlers receive.
    type Connection: Injectable + ?Sized;
    /// What a batch runs in.
    type Transaction: DerefMut<Target = Self::Connection> + Send;
    /// Whether rolling back undoes what the handlers did. When it does, a failure rolls the
    /// batch back and the events before the failing one are applied again in a fresh
    /// transaction; when it does not, the progress before the failure is written instead.
    const ATOMIC: bool;

    /// Opens a transaction.
    fn begin(&self) -> impl Future<Output = Result<Self::Transaction, StorageError>> + Send;
    /// Commits.
    fn commit(
        &self,
        tx: Self::Transaction,
    ) -> impl Future<Output = Result<(), StorageError>> + Send;
    /// Rolls back.
    fn rollback(
        &self,
        tx: Self::Transaction,
    ) -> impl Future<Output = Result<(), StorageError>> + Send;
    /// The checkpoint of `projection`, locked until the transaction ends where that means
    /// anything. `known` is the runner's last knowledge of it, which a strategy that locks
    /// nothing may return without a round trip.
    fn lock_checkpoint<'a>(
        &'a self,
        tx: &'a mut Self::Transaction,
        projection: &'a str,
        known: Option<Option<u64>>,
    ) -> impl Future<Output = Result<Option<u64>, StorageError>> + Send + 'a;
    /// Checks that this node still owns the lease `fence` names, inside the transaction (see
    /// [`TransactionUnit::check_fence`]). [`Repositories`] hold no transaction to check it in:
    /// they pass, and a handover is at least once.
    fn check_fence<'a>(
        &'a self,
        tx: &'a mut Self::Transaction,
        fence: &'a crate::cluster::Fence,
    ) -> impl Future<Output = Result<(), StorageError>> + Send + 'a;
    /// Moves the checkpoint forward.
    fn write_checkpoint<'a>(
        &'a self,
        tx: &'a mut Self::Transaction,
        projection: &'a str,
        update: &'a CheckpointUpdate,
    ) -> impl Future<Output = Result<(), StorageError>> + Send + 'a;
    /// Deletes the checkpoint (and its halt).
    fn reset_checkpoint<'a>(
        &'a self,
        tx: &'a mut Self::Transaction,
        projection: &'a str,
    ) -> impl Future<Output = Result<(), StorageError>> + Send + 'a;
    /// Records a dead letter; returns its id.
    fn dead_letter<'a>(
        &'a self,
        tx: &'a mut Self::Transaction,
        failure: &'a FailedEvent,
    ) -> impl Future<Output = Result<i64, StorageError>> + Send + 'a;
    /// Marks a dead letter resolved by `resolved_by`.
    fn resolve_dead_letter<'a>(
        &'a self,
        tx: &'a mut Self::Transaction,
        entry_id: i64,
        resolved_by: &'a str,
    ) -> impl Future<Output = Result<(), StorageError>> + Send + 'a;
    /// The checkpoint repository over the same storage (reads, halts).
    fn checkpoints(&self) -> Arc<dyn CheckpointRepository>;
    /// The dead-letter repository over the same storage.
    fn dead_letters(&self) -> Arc<dyn DLQRepository>;
}

/// Checkpoints and dead letters in repositories of one storage backend, written beside the
/// handlers (the commit strategy of [`ProjectionRunner`](super::ProjectionRunner)).
///
/// Both come from one backend: [`Repositories::in_memory`], `Repositories::postgres` (feature
/// `postgres`). Pairing repositories of two backends is possible only by naming both in
/// [`Repositories::new`], never by leaving one out.
///
/// ```
/// use projections::runner::Repositories;
/// let storage = Repositories::in_memory();
/// ```
#[derive(Clone)]
pub struct Repositories {
    checkpoints: Arc<dyn CheckpointRepository>,
    dead_letters: Arc<dyn DLQRepository>,
}

impl std::fmt::Debug for Repositories {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repositories").finish_non_exhaustive()
    }
}

impl Repositories {
    /// Checkpoints in `checkpoints`, dead letters in `dead_letters`. Give both from the same
    /// storage: a durable checkpoint in front of a volatile dead-letter queue loses the record
    /// of every event it moved past.
    pub fn new(
        checkpoints: Arc<dyn CheckpointRepository>,
        dead_letters: Arc<dyn DLQRepository>,
    ) -> Self {
        Self {
            checkpoints,
            dead_letters,
        }
    }

    /// Both in memory: nothing survives the process.
    pub fn in_memory() -> Self {
        Self::new(
            Arc::new(InMemoryCheckpointRepository::new()),
            Arc::new(InMemoryDLQRepository::new()),
        )
    }

    /// Both in PostgreSQL, in the connection's `search_path`.
    #[cfg(feature = "postgres")]
    pub fn postgres(pool: sqlx::PgPool) -> Self {
        use crate::postgres::{PostgreSQLCheckpointRepository, PostgreSQLDLQRepository};
        Self::new(
            Arc::new(PostgreSQLCheckpointRepository::new(pool.clone())),
            Arc::new(PostgreSQLDLQRepository::new(pool)),
        )
    }

    /// Both in PostgreSQL, in `schema`.
    #[cfg(feature = "postgres")]
    pub fn postgres_in(pool: sqlx::PgPool, schema: &crate::postgres::Schema) -> Self {
        use crate::postgres::{PostgreSQLCheckpointRepository, PostgreSQLDLQRepository};
        Self::new(
            Arc::new(PostgreSQLCheckpointRepository::with_schema(
                pool.clone(),
                schema,
            )),
            Arc::new(PostgreSQLDLQRepository::with_schema(pool, schema)),
        )
    }

    /// The checkpoint repository.
    pub fn checkpoint_repository(&self) -> &Arc<dyn CheckpointRepository> {
        &self.checkpoints
    }

    /// The dead-letter repository.
    pub fn dead_letter_repository(&self) -> &Arc<dyn DLQRepository> {
        &self.dead_letters
    }
}

/// The "transaction" of [`Repositories`]: nothing is held; it only hands handlers the
/// [`NoConnection`] they take.
#[derive(Debug, Default)]
pub struct NoTransaction(NoConnection);

impl Deref for NoTransaction {
    type Target = NoConnection;
    fn deref(&self) -> &NoConnection {
        &self.0
    }
}

impl DerefMut for NoTransaction {
    fn deref_mut(&mut self) -> &mut NoConnection {
        &mut self.0
    }
}

impl sealed::Sealed for Repositories {}

impl CommitStrategy for Repositories {
    type Connection = NoConnection;
    type Transaction = NoTransaction;
    const ATOMIC: bool = false;

    fn begin(&self) -> impl Future<Output = Result<NoTransaction, StorageError>> + Send {
        std::future::ready(Ok(NoTransaction::default()))
    }

    fn commit(&self, _tx: NoTransaction) -> impl Future<Output = Result<(), StorageError>> + Send {
        std::future::ready(Ok(()))
    }

    fn rollback(
        &self,
        _tx: NoTransaction,
    ) -> impl Future<Output = Result<(), StorageError>> + Send {
        std::future::ready(Ok(()))
    }

    async fn lock_checkpoint<'a>(
        &'a self,
        _tx: &'a mut NoTransaction,
        projection: &'a str,
        known: Option<Option<u64>>,
    ) -> Result<Option<u64>, StorageError> {
        match known {
            Some(known) => Ok(known),
            None => self.checkpoints.get_checkpoint(projection).await,
        }
    }

    fn check_fence<'a>(
        &'a self,
        _tx: &'a mut NoTransaction,
        _fence: &'a crate::cluster::Fence,
    ) -> impl Future<Output = Result<(), StorageError>> + Send + 'a {
        std::future::ready(Ok(()))
    }

    fn write_checkpoint<'a>(
        &'a self,
        _tx: &'a mut NoTransaction,
        projection: &'a str,
        update: &'a CheckpointUpdate,
    ) -> impl Future<Output = Result<(), StorageError>> + Send + 'a {
        self.checkpoints
            .update_checkpoint(projection, update.clone())
    }

    fn reset_checkpoint<'a>(
        &'a self,
        _tx: &'a mut NoTransaction,
        projection: &'a str,
    ) -> impl Future<Output = Result<(), StorageError>> + Send + 'a {
        self.checkpoints.reset_checkpoint(projection)
    }

    fn dead_letter<'a>(
        &'a self,
        _tx: &'a mut NoTransaction,
        failure: &'a FailedEvent,
    ) -> impl Future<Output = Result<i64, StorageError>> + Send + 'a {
        self.dead_letters.add_failed_event(failure.clone())
    }

    fn resolve_dead_letter<'a>(
        &'a self,
        _tx: &'a mut NoTransaction,
        entry_id: i64,
        resolved_by: &'a str,
    ) -> impl Future<Output = Result<(), StorageError>> + Send + 'a {
        self.dead_letters.mark_resolved(entry_id, resolved_by)
    }

    fn checkpoints(&self) -> Arc<dyn CheckpointRepository> {
        Arc::clone(&self.checkpoints)
    }

    fn dead_letters(&self) -> Arc<dyn DLQRepository> {
        Arc::clone(&self.dead_letters)
    }
}

impl<U: TransactionUnit> sealed::Sealed for Arc<U> {}

impl<U: TransactionUnit> CommitStrategy for Arc<U> {
    type Connection = U::Connection;
    type Transaction = U::Transaction;
    const ATOMIC: bool = true;

    fn begin(&self) -> impl Future<Output = Result<U::Transaction, StorageError>> + Send {
        U::begin(self)
    }

    fn commit(&self, tx: U::Transaction) -> impl Future<Output = Result<(), StorageError>> + Send {
        U::commit(self, tx)
    }

    fn rollback(
        &self,
        tx: U::Transaction,
    ) -> impl Future<Output = Result<(), StorageError>> + Send {
        U::rollback(self, tx)
    }

    fn lock_checkpoint<'a>(
        &'a self,
        tx: &'a mut U::Transaction,
        projection: &'a str,
        _known: Option<Option<u64>>,
    ) -> impl Future<Output = Result<Option<u64>, StorageError>> + Send + 'a {
        U::lock_checkpoint(self, tx, projection)
    }

    fn check_fence<'a>(
        &'a self,
        tx: &'a mut U::Transaction,
        fence: &'a crate::cluster::Fence,
    ) -> impl Future<Output = Result<(), StorageError>> + Send + 'a {
        U::check_fence(self, tx, fence)
    }

    fn write_checkpoint<'a>(
        &'a self,
        tx: &'a mut U::Transaction,
        projection: &'a str,
        update: &'a CheckpointUpdate,
    ) -> impl Future<Output = Result<(), StorageError>> + Send + 'a {
        U::write_checkpoint(self, tx, projection, update)
    }

    fn reset_checkpoint<'a>(
        &'a self,
        tx: &'a mut U::Transaction,
        projection: &'a str,
    ) -> impl Future<Output = Result<(), StorageError>> + Send + 'a {
        U::reset_checkpoint(self, tx, projection)
    }

    fn dead_letter<'a>(
        &'a self,
        tx: &'a mut U::Transaction,
        failure: &'a FailedEvent,
    ) -> impl Future<Output = Result<i64, StorageError>> + Send + 'a {
        U::dead_letter(self, tx, failure)
    }

    fn resolve_dead_letter<'a>(
        &'a self,
        tx: &'a mut U::Transaction,
        entry_id: i64,
        resolved_by: &'a str,
    ) -> impl Future<Output = Result<(), StorageError>> + Send + 'a {
        U::resolve_dead_letter(self, tx, entry_id, resolved_by)
    }

    fn checkpoints(&self) -> Arc<dyn CheckpointRepository> {
        U::checkpoints(self)
    }

    fn dead_letters(&self) -> Arc<dyn DLQRepository> {
        U::dead_letters(self)
    }
}
