//! One value for where everything is kept: the event store, the checkpoints and the dead
//! letters, on one backend, chosen in one place (often from a URL in the configuration).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use projections::{ProjectionCoordinator, ProjectionRegistry, Storage};
//!
//! // "memory:", "sqlite://orders.db", "postgres://app@db/orders", ...
//! let storage = Storage::connect("sqlite://orders.db").await?;
//! println!("events and read-model progress are kept in {storage}");
//!
//! let registry = ProjectionRegistry::new();
//! // ... register runners built with `.storage(storage.repositories())` ...
//! let coordinator = ProjectionCoordinator::new(registry, storage.event_store());
//! # Ok(()) }
//! ```

mod error;
mod url;

use std::fmt;
#[cfg(feature = "sqlite")]
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use error::ConnectError;
use url::Target;

use crate::memory::InMemoryEventStore;
use crate::runner::Repositories;
use crate::store::EventStore;

/// The event store, checkpoint repository and dead-letter repository of one backend.
///
/// Build it with [`Storage::connect`] from a URL, or with the constructor of a backend. Every
/// constructor of a database backend also applies the crate's migrations. Cloning is cheap:
/// clones share the store and the connection pool.
///
/// | URL | backend | survives a restart |
/// |---|---|---|
/// | `memory:` | [`InMemoryEventStore`] and the in-memory repositories | no |
/// | `sqlite::memory:` | a SQLite database in memory (feature `sqlite`) | no |
/// | `sqlite://orders.db`, `sqlite:///var/lib/app/orders.db` | a SQLite file, created if missing (feature `sqlite`) | yes |
/// | `postgres://user@host/db`, `postgresql://...` | PostgreSQL, tables in the `search_path` (feature `postgres`) | yes |
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn EventStore>,
    repositories: Repositories,
    backend: Backend,
}

/// The backend a [`Storage`] works on, with its connection pool: what a database projection's
/// [`TransactionUnit`](crate::transactional::TransactionUnit) is built from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Backend {
    /// Everything in this process's memory.
    Memory,
    /// A SQLite database.
    #[cfg(feature = "sqlite")]
    Sqlite {
        /// The pool on the database.
        pool: sqlx::SqlitePool,
        /// The file, or `None` for a database in memory.
        path: Option<PathBuf>,
    },
    /// A PostgreSQL database.
    #[cfg(feature = "postgres")]
    Postgres {
        /// The pool on the database.
        pool: sqlx::PgPool,
    },
}

impl Storage {
    /// Opens the backend that `url` names (see the table on [`Storage`]) and applies its
    /// migrations.
    ///
    /// # Errors
    ///
    /// [`ConnectError`]: an unknown scheme, a backend whose cargo feature is off, a file that
    /// cannot be opened as a database, a server that cannot be reached. The message never
    /// repeats the URL past its scheme, which may hold a password.
    pub async fn connect(url: &str) -> Result<Self, ConnectError> {
        match Target::parse(url)? {
            Target::Memory => Ok(Self::in_memory()),
            #[cfg(feature = "sqlite")]
            Target::SqliteMemory => Self::sqlite_in_memory().await,
            #[cfg(feature = "sqlite")]
            Target::SqliteFile(path) => Self::sqlite(path).await,
            #[cfg(not(feature = "sqlite"))]
            Target::SqliteMemory | Target::SqliteFile(_) => Err(ConnectError::FeatureDisabled {
                scheme: "sqlite",
                feature: "sqlite",
            }),
            #[cfg(feature = "postgres")]
            Target::Postgres(url) => Self::postgres(&url).await,
            #[cfg(not(feature = "postgres"))]
            Target::Postgres(_) => Err(ConnectError::FeatureDisabled {
                scheme: "postgres",
                feature: "postgres",
            }),
        }
    }

    /// Everything in memory: nothing survives the process.
    pub fn in_memory() -> Self {
        Self {
            store: Arc::new(InMemoryEventStore::new()),
            repositories: Repositories::in_memory(),
            backend: Backend::Memory,
        }
    }

    /// The SQLite file at `path`, created if missing, migrated; see
    /// [`sqlite::open`](crate::sqlite::open).
    #[cfg(feature = "sqlite")]
    pub async fn sqlite(path: impl AsRef<Path>) -> Result<Self, ConnectError> {
        let path = path.as_ref();
        let pool = crate::sqlite::open(path).await?;
        Ok(Self::on_sqlite(pool, Some(path.to_path_buf())))
    }

    /// A SQLite database in memory, migrated: the SQLite code paths with nothing on disk. It
    /// lives on one connection that the pool never closes, and is gone with the last clone.
    #[cfg(feature = "sqlite")]
    pub async fn sqlite_in_memory() -> Result<Self, ConnectError> {
        let pool = crate::sqlite::open_in_memory().await?;
        Ok(Self::on_sqlite(pool, None))
    }

    #[cfg(feature = "sqlite")]
    fn on_sqlite(pool: sqlx::SqlitePool, path: Option<PathBuf>) -> Self {
        use crate::sqlite::{SqliteCheckpointRepository, SqliteDLQRepository, SqliteEventStore};
        Self {
            store: Arc::new(SqliteEventStore::new(pool.clone())),
            repositories: Repositories::new(
                Arc::new(SqliteCheckpointRepository::new(pool.clone())),
                Arc::new(SqliteDLQRepository::new(pool.clone())),
            ),
            backend: Backend::Sqlite { pool, path },
        }
    }

    /// The PostgreSQL database at `url`, migrated (tables in the connection's
    /// `search_path`); see [`PostgreSQLEventStore::connect`](crate::postgres::PostgreSQLEventStore::connect).
    #[cfg(feature = "postgres")]
    pub async fn postgres(url: &str) -> Result<Self, ConnectError> {
        let store = crate::postgres::PostgreSQLEventStore::connect(url)
            .await
            .map_err(ConnectError::Postgres)?;
        let pool = store.pool().clone();
        Ok(Self {
            store: Arc::new(store),
            repositories: Repositories::postgres(pool.clone()),
            backend: Backend::Postgres { pool },
        })
    }

    /// The event store.
    pub fn event_store(&self) -> Arc<dyn EventStore> {
        self.store.clone()
    }

    /// The checkpoint and dead-letter repositories, for
    /// [`ProjectionRunner::builder(..).storage(..)`](crate::runner::RunnerBuilder::storage).
    pub fn repositories(&self) -> Repositories {
        self.repositories.clone()
    }

    /// The backend, with its pool.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }
}

impl From<&Storage> for Repositories {
    fn from(storage: &Storage) -> Self {
        storage.repositories()
    }
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Storage")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// Where the data is, for people: `memory`, `SQLite file orders.db`, `SQLite in memory`,
/// `PostgreSQL database app on db.internal:5432`. Never a password.
impl fmt::Display for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.backend {
            Backend::Memory => f.write_str("memory"),
            #[cfg(feature = "sqlite")]
            Backend::Sqlite {
                path: Some(path), ..
            } => write!(f, "SQLite file {}", path.display()),
            #[cfg(feature = "sqlite")]
            Backend::Sqlite { path: None, .. } => f.write_str("SQLite in memory"),
            #[cfg(feature = "postgres")]
            Backend::Postgres { pool } => {
                let options = pool.connect_options();
                write!(
                    f,
                    "PostgreSQL database {} on {}:{}",
                    options.get_database().unwrap_or("(default)"),
                    options.get_host(),
                    options.get_port()
                )
            }
        }
    }
}
