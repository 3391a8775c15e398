//! What a database does for blue/green rebuilds: build a version's tables, switch the stable
//! views to a version in one transaction, drop a version.

use std::sync::Arc;

use super::VersionRole;
use crate::storage::{BoxFuture, StorageError};
use crate::transactional::TransactionUnit;

/// What a [`switch`](ReadModelVersions::switch) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Switch {
    /// The views now show the version; `from` is the version they showed before (`None` when
    /// none did; the version itself when it was already serving).
    Switched {
        /// The version replaced.
        from: Option<u32>,
    },
    /// Nothing changed: the version's checkpoint is behind the serving version's, so readers
    /// would lose rows. Try again once it has caught up.
    Behind {
        /// The version's checkpoint.
        checkpoint: u64,
        /// The serving version's checkpoint.
        serving: u64,
    },
    /// No version of that number was built (or it was retired).
    Unknown,
}

/// A database that keeps the versions of blue/green projections: PostgreSQL
/// (`PostgreSQLReadModelVersions`, feature `postgres`: a schema per version) and
/// SQLite (`SqliteReadModelVersions`, feature `sqlite`: tables
/// named per version). Every method is one transaction.
pub trait ReadModelVersions: Send + Sync + 'static {
    /// The transaction unit a version's runner commits through.
    type Unit: TransactionUnit;

    /// Creates version `version` of `projection` by running `ddl` where its tables go, and
    /// records it as [`VersionRole::Building`], unless it exists already (then `ddl` does not
    /// run). Returns its role.
    fn prepare<'a>(
        &'a self,
        projection: &'a str,
        version: u32,
        ddl: &'a str,
    ) -> BoxFuture<'a, Result<VersionRole, StorageError>>;

    /// The transaction unit whose batches write to the tables of `version`.
    fn unit(&self, projection: &str, version: u32) -> Result<Arc<Self::Unit>, StorageError>;

    /// Every recorded version of `projection` with its role, oldest first.
    fn versions<'a>(
        &'a self,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(u32, VersionRole)>, StorageError>>;

    /// Points the stable views of `projection` at the tables of `version`, in one transaction
    /// that also compares the checkpoints (locked) and records the roles: readers see the old
    /// version or the new one, never a mix, never fewer rows.
    fn switch<'a>(
        &'a self,
        projection: &'a str,
        version: u32,
    ) -> BoxFuture<'a, Result<Switch, StorageError>>;

    /// Drops the tables and the checkpoint of `version` and records it retired. Refuses the
    /// serving version ([`StorageError::Invalid`]).
    fn retire<'a>(
        &'a self,
        projection: &'a str,
        version: u32,
    ) -> BoxFuture<'a, Result<(), StorageError>>;
}
