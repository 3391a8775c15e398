//! Database projections applied one transaction per batch: read-model writes, the checkpoint
//! and any dead-letter row commit together, so each event's effect happens exactly once.

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;
mod unit;

#[cfg(feature = "postgres")]
pub use postgres::PostgreSQLTransactionUnit;
/// The former name of [`PostgreSQLTransactionUnit`].
#[cfg(feature = "postgres")]
#[deprecated(note = "renamed `PostgreSQLTransactionUnit`, like the other PostgreSQL types")]
pub type PgTransactionUnit = PostgreSQLTransactionUnit;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteTransactionUnit;
pub use unit::TransactionUnit;

use std::sync::Arc;

use crate::projection::DatabaseProjection;
use crate::runner::Runner;

/// Runs a [`DatabaseProjection`] whose handlers write through the batch's transaction:
/// **exactly once**.
///
/// A batch is applied in one transaction that also locks and moves the checkpoint. When a
/// handler fails, the transaction is rolled back; the events before the failing one are
/// applied again in a fresh transaction and committed; the failing event goes where its
/// [`FailureKind`](crate::FailureKind) says: retried under the retry policy, each attempt in a
/// fresh transaction (an aborted transaction never poisons the next attempt), then the
/// dead-letter row and the checkpoint move past the event in one transaction (or, under
/// [`FailurePolicy::Stop`](crate::FailurePolicy::Stop), the runner stops before it); an
/// infrastructure failure leaves everything as it was, to be tried again.
///
/// A crash at any point leaves either the whole batch committed or none of it. Handlers that
/// take no connection run inside the same transaction but cannot write through it; their side
/// effects happen again when a batch is re-applied. For projections whose handlers take no
/// connection at all, use [`ProjectionRunner`](crate::ProjectionRunner) with database
/// repositories: it holds no transaction open while handlers run.
pub type TransactionalRunner<P, U> = Runner<P, Arc<U>>;

impl<P, U> Runner<P, Arc<U>>
where
    P: DatabaseProjection,
    U: TransactionUnit<Connection = P::Connection>,
{
    /// A runner over `unit` with the default retry policy, dead-lettering on terminal failure.
    pub fn new(projection: P, unit: Arc<U>) -> Self {
        Self::with_storage(projection, unit)
    }

    /// The transaction unit.
    pub fn unit(&self) -> &Arc<U> {
        self.storage()
    }
}
