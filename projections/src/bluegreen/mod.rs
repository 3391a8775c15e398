//! Blue/green rebuilds: a new version of a database projection is built beside the serving
//! one, in tables of its own and with a checkpoint of its own, while the serving version
//! keeps answering readers and keeps up with live events. Once the new version has caught up,
//! readers are switched to it in one transaction; the old version is retired after a grace
//! period or on command. See ADR 0014 (`docs/adr/0014-blue-green-through-stable-views.md`).
//!
//! **Versions.** `#[projection(name = "orders", version = 2)]` gives the projection its version
//! ([`DatabaseProjection::version`], 1 unless given). [`BlueGreen::runner`] makes the runner of
//! one version: named [`versioned_name`] (`orders@v2`) for its worker, checkpoint and dead
//! letters, and committing into that version's tables. Register a runner per version that
//! should run (the serving one and the one being built) with one coordinator.
//!
//! **Where the tables are.** Readers query stable views that always have the read model's
//! plain table names; each version's tables are behind them:
//!
//! | | a version's tables | the stable views | handlers write to |
//! |---|---|---|---|
//! | PostgreSQL (`PostgreSQLReadModelVersions`, feature `postgres`) | schema `<serving>_v<N>` | schema `<serving>`, one view per table | unqualified names: each batch runs with `SET LOCAL search_path` to the version's schema |
//! | SQLite (`SqliteReadModelVersions`, feature `sqlite`) | tables `<table>_v<N>` in the same file | view `<table>` | the version's own names (`orders_v2`), written in that version's code |
//!
//! **The switch.** [`BlueGreen::promote`] waits until the new version's worker is live, then
//! in one transaction locks both checkpoints, refuses while the new one is behind the serving
//! one (and waits for it), drops and recreates the views over the new version's tables, and
//! records the roles in the versions ledger (`projection_versions`). A reader sees the old
//! views or the new ones, never an error and never fewer rows than the serving version had.
//! Both versions go on applying every event exactly once (each in its own transactions, with
//! its own checkpoint), so events appended during the rebuild appear in both.
//!
//! **Retiring.** The replaced version keeps running until [`BlueGreen::retire`] (or
//! [`BlueGreen::retire_after`] a grace period): its worker is stopped, then its tables and
//! checkpoint are dropped in one transaction. Until then, promoting it again is a rollback
//! that needs no rebuild.
//!
//! ```no_run
//! # #[cfg(feature = "postgres")]
//! # async fn deploy<P>(pool: sqlx::PgPool, store: std::sync::Arc<dyn projections::EventStore>, orders_v2: P) -> Result<(), Box<dyn std::error::Error>>
//! # where P: projections::DatabaseProjection<Connection = projections::PgConnection> + 'static {
//! use std::time::Duration;
//! use projections::bluegreen::{BlueGreen, PostgreSQLReadModelVersions};
//! use projections::coordinator::ProjectionCoordinator;
//! use projections::postgres::Schema;
//! use projections::ProjectionRegistry;
//!
//! // Checkpoints in `app`; readers query the views in schema `orders`.
//! let versions = PostgreSQLReadModelVersions::new(pool, Schema::named("app")?, Schema::named("orders")?)?;
//! let orders = std::sync::Arc::new(BlueGreen::new(versions, "orders"));
//!
//! let mut registry = ProjectionRegistry::new();
//! // `orders_v2` is `#[projection(name = "orders", version = 2)]`; its tables are created
//! // by this DDL in schema `orders_v2` the first time.
//! registry.register(orders.runner(orders_v2, "CREATE TABLE orders (id uuid PRIMARY KEY, total bigint)").await?)?;
//! let handle = ProjectionCoordinator::new(registry, store).start()?;
//!
//! let replaced = orders.promote(&handle, 2).await?; // once version 2 has caught up
//! if let Some(old) = replaced {
//!     orders.retire_after(handle.clone(), old, Duration::from_secs(600));
//! }
//! # Ok(()) }
//! ```

mod role;
mod versions;

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use role::{VersionRole, VersionStatus, versioned_name};
pub use versions::{ReadModelVersions, Switch};

#[cfg(feature = "postgres")]
pub use postgres::PostgreSQLReadModelVersions;
/// The former name of [`PostgreSQLReadModelVersions`].
#[cfg(feature = "postgres")]
#[deprecated(note = "renamed `PostgreSQLReadModelVersions`, like the other PostgreSQL types")]
pub type PgReadModelVersions = PostgreSQLReadModelVersions;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteReadModelVersions;

pub(crate) use role::VersionTag;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::coordinator::{CoordinatorError, CoordinatorHandle, WorkerState};
use crate::projection::DatabaseProjection;
use crate::storage::StorageError;
use crate::transactional::{TransactionUnit, TransactionalRunner};

/// What went wrong building, promoting or retiring a version.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlueGreenError {
    /// A runner was asked for a projection of another name.
    #[error(
        "this blue/green deployment is for projection `{expected}`, not `{found}`; \
         make one `BlueGreen` per projection"
    )]
    WrongProjection {
        /// The deployment's projection.
        expected: String,
        /// The projection given.
        found: String,
    },
    /// The version was never built, or was retired.
    #[error("version {version} of projection `{projection}` was never built or is retired")]
    UnknownVersion {
        /// The projection.
        projection: String,
        /// The version.
        version: u32,
    },
    /// The serving version cannot be retired.
    #[error(
        "version {version} of projection `{projection}` is serving readers; promote another \
         version before retiring it"
    )]
    Serving {
        /// The projection.
        projection: String,
        /// The version.
        version: u32,
    },
    /// The version's worker is stopped: it will not catch up until an operator resumes it.
    #[error(
        "version {version} of projection `{projection}` cannot be promoted: its worker is {state}"
    )]
    Halted {
        /// The projection.
        projection: String,
        /// The version.
        version: u32,
        /// What its worker is doing.
        state: String,
    },
    /// The coordinator does not run the version (not registered, or its worker ended).
    #[error(transparent)]
    Coordinator(#[from] CoordinatorError),
    /// The database failed or refused.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The versions of one database projection, built beside each other and switched for
/// readers in one transaction. See the [module documentation](self).
pub struct BlueGreen<V> {
    versions: Arc<V>,
    projection: String,
    tags: Mutex<Vec<Arc<VersionTag>>>,
}

impl<V> std::fmt::Debug for BlueGreen<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlueGreen")
            .field("projection", &self.projection)
            .finish_non_exhaustive()
    }
}

impl<V: ReadModelVersions> BlueGreen<V> {
    /// The versions of `projection` (its `#[projection(name = ...)]`), kept in `versions`.
    pub fn new(versions: V, projection: impl Into<String>) -> Self {
        Self {
            versions: Arc::new(versions),
            projection: projection.into(),
            tags: Mutex::new(Vec::new()),
        }
    }

    /// The projection's name.
    pub fn projection(&self) -> &str {
        &self.projection
    }

    /// The database that keeps the versions.
    pub fn backend(&self) -> &V {
        &self.versions
    }

    /// The runner of `projection`'s version ([`DatabaseProjection::version`]), to register
    /// with a coordinator. The first time, the version's tables are created by running `ddl`
    /// where they go (see the [module documentation](self)) and it is recorded as
    /// [`VersionRole::Building`]; after that (a restart) `ddl` is not run again and the runner
    /// goes on from the version's checkpoint.
    pub async fn runner<P>(
        &self,
        projection: P,
        ddl: &str,
    ) -> Result<TransactionalRunner<P, V::Unit>, BlueGreenError>
    where
        P: DatabaseProjection<Connection = <V::Unit as TransactionUnit>::Connection> + 'static,
    {
        if projection.name() != self.projection {
            return Err(BlueGreenError::WrongProjection {
                expected: self.projection.clone(),
                found: projection.name().to_owned(),
            });
        }
        let version = projection.version();
        let role = self
            .versions
            .prepare(&self.projection, version, ddl)
            .await?;
        let unit = self.versions.unit(&self.projection, version)?;
        let tag = self.tag(version, role);
        Ok(TransactionalRunner::new(projection, unit).versioned(tag))
    }

    /// Every recorded version with its role, oldest first.
    pub async fn versions(&self) -> Result<Vec<(u32, VersionRole)>, BlueGreenError> {
        Ok(self.versions.versions(&self.projection).await?)
    }

    /// The version readers see, if any.
    pub async fn serving(&self) -> Result<Option<u32>, BlueGreenError> {
        let versions = self.versions().await?;
        Ok(versions
            .into_iter()
            .find(|(_, role)| *role == VersionRole::Serving)
            .map(|(version, _)| version))
    }

    /// Switches readers to `version` once it has caught up: waits until its worker (run by
    /// `handle`) is live and its checkpoint is at or past the serving version's, then swaps
    /// the views in one transaction. Returns the version it replaced (`None` when none was
    /// serving or `version` already was). The replaced version keeps running until retired.
    ///
    /// Waits as long as it takes; bound it with `tokio::time::timeout` if needed. Fails with
    /// [`BlueGreenError::Halted`] when the version's worker is stopped (a failing event under
    /// the stop policy, a wrong setup).
    pub async fn promote(
        &self,
        handle: &CoordinatorHandle,
        version: u32,
    ) -> Result<Option<u32>, BlueGreenError> {
        let name = versioned_name(&self.projection, version);
        let mut status = handle.watch(&name)?;
        let not_running = || CoordinatorError::NotRunning(name.clone());
        loop {
            let state = status
                .wait_for(|s| {
                    matches!(
                        s.state,
                        WorkerState::Live | WorkerState::Stopped { .. } | WorkerState::Finished
                    )
                })
                .await
                .map_err(|_| not_running())?
                .state
                .clone();
            match state {
                WorkerState::Live => {}
                WorkerState::Finished => return Err(not_running().into()),
                other => {
                    return Err(BlueGreenError::Halted {
                        projection: self.projection.clone(),
                        version,
                        state: other.to_string(),
                    });
                }
            }
            match self.versions.switch(&self.projection, version).await? {
                Switch::Switched { from } => {
                    let replaced = from.filter(|&from| from != version);
                    if let Some(old) = replaced {
                        self.set_role(old, VersionRole::Replaced);
                        handle.republish(&versioned_name(&self.projection, old));
                    }
                    self.set_role(version, VersionRole::Serving);
                    handle.republish(&name);
                    tracing::info!(projection = %self.projection, version, replaced = ?replaced, "readers switched to a new version");
                    return Ok(replaced);
                }
                Switch::Behind {
                    checkpoint,
                    serving,
                } => {
                    tracing::debug!(projection = %self.projection, version, checkpoint, serving, "not promoted yet: behind the serving version");
                    status.changed().await.map_err(|_| not_running())?;
                }
                Switch::Unknown => {
                    return Err(BlueGreenError::UnknownVersion {
                        projection: self.projection.clone(),
                        version,
                    });
                }
            }
        }
    }

    /// Retires `version`: stops its worker in `handle` (when given and running), then drops
    /// its tables and checkpoint in one transaction. Refuses the serving version
    /// ([`BlueGreenError::Serving`]) and one never built ([`BlueGreenError::UnknownVersion`]).
    /// Its dead letters are kept, under [`versioned_name`]. Retiring a retired version does
    /// nothing.
    pub async fn retire(
        &self,
        handle: Option<&CoordinatorHandle>,
        version: u32,
    ) -> Result<(), BlueGreenError> {
        let role = match self.versions().await?.iter().find(|(v, _)| *v == version) {
            None => {
                return Err(BlueGreenError::UnknownVersion {
                    projection: self.projection.clone(),
                    version,
                });
            }
            Some((_, VersionRole::Retired)) => return Ok(()),
            Some((_, VersionRole::Serving)) => {
                return Err(BlueGreenError::Serving {
                    projection: self.projection.clone(),
                    version,
                });
            }
            Some(&(_, role)) => role,
        };
        // Shown as retired in the worker's last status; put back if the retirement fails.
        self.set_role(version, VersionRole::Retired);
        let retired = async {
            if let Some(handle) = handle {
                let name = versioned_name(&self.projection, version);
                match handle.stop(&name).await {
                    Ok(_)
                    | Err(
                        CoordinatorError::NotRunning(_) | CoordinatorError::UnknownProjection(_),
                    ) => {}
                    Err(other) => return Err(BlueGreenError::from(other)),
                }
            }
            Ok(self.versions.retire(&self.projection, version).await?)
        };
        if let Err(error) = retired.await {
            self.set_role(version, role);
            return Err(error);
        }
        tracing::info!(projection = %self.projection, version, "version retired");
        Ok(())
    }

    /// Retires `version` after `grace` (as [`retire`](Self::retire)), in a task of its own;
    /// its result is the task's. Readers of the old tables in flight finish meanwhile, and
    /// until then promoting it again rolls back without a rebuild (the retirement then fails
    /// with [`BlueGreenError::Serving`] and changes nothing).
    pub fn retire_after(
        self: &Arc<Self>,
        handle: CoordinatorHandle,
        version: u32,
        grace: Duration,
    ) -> tokio::task::JoinHandle<Result<(), BlueGreenError>> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            this.retire(Some(&handle), version).await
        })
    }

    fn tag(&self, version: u32, role: VersionRole) -> Arc<VersionTag> {
        let mut tags = self.tags.lock().unwrap_or_else(PoisonError::into_inner);
        tags.retain(|tag| tag.version != version);
        let tag = VersionTag::new(&self.projection, version, role);
        tags.push(Arc::clone(&tag));
        tag
    }

    fn set_role(&self, version: u32, role: VersionRole) {
        let tags = self.tags.lock().unwrap_or_else(PoisonError::into_inner);
        for tag in tags.iter().filter(|tag| tag.version == version) {
            tag.set_role(role);
        }
    }
}

/// An error of a versions backend that is the caller's, not the database's.
#[cfg_attr(not(any(feature = "postgres", feature = "sqlite")), allow(dead_code))]
pub(crate) fn invalid(reason: String) -> StorageError {
    StorageError::Invalid {
        what: "blue/green version",
        reason,
    }
}

/// `name` quoted as an SQL identifier (on both backends).
#[cfg_attr(not(any(feature = "postgres", feature = "sqlite")), allow(dead_code))]
pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::checkpoint::{CheckpointRepository, CheckpointUpdate};
    use crate::coordinator::ProjectionCoordinator;
    use crate::dlq::{DLQRepository, FailedEvent};
    use crate::memory::{InMemoryCheckpointRepository, InMemoryDLQRepository, InMemoryEventStore};
    use crate::projection::NoConnection;
    use crate::registry::ProjectionRegistry;
    use crate::storage::BoxFuture;

    /// A unit no test opens: the fake versions below never build a runner.
    struct NoUnit;

    fn refused<'a, T: Send + 'a>() -> BoxFuture<'a, Result<T, StorageError>> {
        Box::pin(async { Err(StorageError::Unreadable("not in this test".to_owned())) })
    }

    impl TransactionUnit for NoUnit {
        type Connection = NoConnection;
        type Transaction = Box<NoConnection>;
        fn begin(&self) -> BoxFuture<'_, Result<Self::Transaction, StorageError>> {
            refused()
        }
        fn commit(&self, _: Self::Transaction) -> BoxFuture<'_, Result<(), StorageError>> {
            refused()
        }
        fn rollback(&self, _: Self::Transaction) -> BoxFuture<'_, Result<(), StorageError>> {
            refused()
        }
        fn lock_checkpoint<'a>(
            &'a self,
            _: &'a mut Self::Transaction,
            _: &'a str,
        ) -> BoxFuture<'a, Result<Option<u64>, StorageError>> {
            refused()
        }
        fn write_checkpoint<'a>(
            &'a self,
            _: &'a mut Self::Transaction,
            _: &'a str,
            _: &'a CheckpointUpdate,
        ) -> BoxFuture<'a, Result<(), StorageError>> {
            refused()
        }
        fn reset_checkpoint<'a>(
            &'a self,
            _: &'a mut Self::Transaction,
            _: &'a str,
        ) -> BoxFuture<'a, Result<(), StorageError>> {
            refused()
        }
        fn dead_letter<'a>(
            &'a self,
            _: &'a mut Self::Transaction,
            _: &'a FailedEvent,
        ) -> BoxFuture<'a, Result<i64, StorageError>> {
            refused()
        }
        fn resolve_dead_letter<'a>(
            &'a self,
            _: &'a mut Self::Transaction,
            _: i64,
            _: &'a str,
        ) -> BoxFuture<'a, Result<(), StorageError>> {
            refused()
        }
        fn checkpoints(&self) -> Arc<dyn CheckpointRepository> {
            Arc::new(InMemoryCheckpointRepository::new())
        }
        fn dead_letters(&self) -> Arc<dyn DLQRepository> {
            Arc::new(InMemoryDLQRepository::new())
        }
    }

    /// Versions in memory: their roles, and the versions retired.
    #[derive(Default)]
    struct FakeVersions {
        roles: Mutex<Vec<(u32, VersionRole)>>,
        retired: Mutex<Vec<u32>>,
    }

    impl FakeVersions {
        fn with(roles: &[(u32, VersionRole)]) -> Self {
            Self {
                roles: Mutex::new(roles.to_vec()),
                retired: Mutex::default(),
            }
        }
    }

    impl ReadModelVersions for FakeVersions {
        type Unit = NoUnit;

        fn prepare<'a>(
            &'a self,
            _: &'a str,
            _: u32,
            _: &'a str,
        ) -> BoxFuture<'a, Result<VersionRole, StorageError>> {
            refused()
        }

        fn unit(&self, _: &str, _: u32) -> Result<Arc<NoUnit>, StorageError> {
            Ok(Arc::new(NoUnit))
        }

        fn versions<'a>(
            &'a self,
            _: &'a str,
        ) -> BoxFuture<'a, Result<Vec<(u32, VersionRole)>, StorageError>> {
            let roles = self.roles.lock().map(|r| r.clone()).unwrap_or_default();
            Box::pin(async move { Ok(roles) })
        }

        fn switch<'a>(&'a self, _: &'a str, _: u32) -> BoxFuture<'a, Result<Switch, StorageError>> {
            refused()
        }

        fn retire<'a>(
            &'a self,
            _: &'a str,
            version: u32,
        ) -> BoxFuture<'a, Result<(), StorageError>> {
            if let Ok(mut retired) = self.retired.lock() {
                retired.push(version);
            }
            Box::pin(async { Ok(()) })
        }
    }

    fn handle() -> CoordinatorHandle {
        let store = Arc::new(InMemoryEventStore::new());
        ProjectionCoordinator::new(ProjectionRegistry::new(), store)
            .start()
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_replaced_version_is_retired_after_the_grace_period_not_before() {
        let orders = Arc::new(BlueGreen::new(
            FakeVersions::with(&[(1, VersionRole::Replaced), (2, VersionRole::Serving)]),
            "orders",
        ));
        let retirement = orders.retire_after(handle(), 1, Duration::from_secs(600));
        tokio::time::sleep(Duration::from_secs(599)).await;
        assert!(orders.backend().retired.lock().unwrap().is_empty());
        assert!(!retirement.is_finished());
        tokio::time::sleep(Duration::from_secs(2)).await;
        retirement.await.unwrap().unwrap();
        assert_eq!(*orders.backend().retired.lock().unwrap(), [1]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_version_promoted_again_during_its_grace_period_is_not_retired() {
        let orders = Arc::new(BlueGreen::new(
            FakeVersions::with(&[(1, VersionRole::Replaced), (2, VersionRole::Serving)]),
            "orders",
        ));
        let retirement = orders.retire_after(handle(), 1, Duration::from_secs(600));
        tokio::time::sleep(Duration::from_secs(300)).await;
        // A rollback: version 1 serves again.
        *orders.backend().roles.lock().unwrap() =
            vec![(1, VersionRole::Serving), (2, VersionRole::Replaced)];
        let result = retirement.await.unwrap();
        assert!(
            matches!(result, Err(BlueGreenError::Serving { version: 1, .. })),
            "{result:?}"
        );
        assert!(orders.backend().retired.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn retiring_what_was_never_built_is_refused_and_a_retired_version_is_left_alone() {
        let orders = BlueGreen::new(
            FakeVersions::with(&[(1, VersionRole::Retired), (2, VersionRole::Serving)]),
            "orders",
        );
        assert!(matches!(
            orders.retire(None, 3).await,
            Err(BlueGreenError::UnknownVersion { version: 3, .. })
        ));
        orders.retire(None, 1).await.unwrap();
        assert!(orders.backend().retired.lock().unwrap().is_empty());
    }
}
