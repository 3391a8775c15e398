//! SQLite: the event store, checkpoint and dead-letter repositories in one database file
//! (cargo feature `sqlite`, which bundles the SQLite library).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use projections::sqlite::{SqliteCheckpointRepository, SqliteDLQRepository, SqliteEventStore};
//!
//! // Opens (or creates) the file and applies the crate's migrations.
//! let store = SqliteEventStore::open("app.db").await?;
//! let checkpoints = SqliteCheckpointRepository::new(store.pool().clone());
//! let dead_letters = SqliteDLQRepository::new(store.pool().clone());
//! # Ok(()) }
//! ```
//!
//! # Connections
//!
//! [`connect_options`] is how every connection is opened: write-ahead logging (readers do not
//! block the writer, nor the writer the readers), `synchronous = FULL` (a committed append
//! survives a power loss), a busy timeout of [`BUSY_TIMEOUT`] (a writer waits for another
//! rather than failing at once) and foreign keys on. [`open`] builds a pool with them and
//! migrates; a file that is not a SQLite database, or that a newer build of this crate
//! migrated, is an [`OpenError`] that says so.
//!
//! # Tables and migrations
//!
//! [`migrate`] creates `projection_events`, `projection_checkpoints` and
//! `projection_dead_letters`, recording what it applied in its own ledger,
//! [`MIGRATIONS_TABLE`]; a user's own `sqlx::migrate!` is not disturbed. The SQL ships in the
//! crate's `migrations/sqlite/` folder. Times are stored as integer microseconds since the Unix
//! epoch, so they read back exactly as written; ids as hyphenated UUID text; JSON as text.
//!
//! # Positions
//!
//! SQLite has a single writer. An append is one `BEGIN IMMEDIATE` transaction that takes the
//! write lock before it reads anything, checks the expected version, and numbers its events
//! after the largest stored position. So positions are consecutive from 1, a failed append
//! leaves no gap, and positions become visible in order: a reader never has to wait for a
//! position that an unfinished append could still fill.

mod checkpoint;
mod dlq;
mod migrate;
mod store;
pub(crate) mod time;

use std::path::Path;
use std::time::Duration;

pub use checkpoint::SqliteCheckpointRepository;
pub(crate) use checkpoint::{checkpoint_in, reset_checkpoint_in, update_checkpoint_in};
pub use dlq::SqliteDLQRepository;
pub(crate) use dlq::{add_failed_event_in, mark_resolved_in};
pub use migrate::{MIGRATIONS_TABLE, OpenError, migrate};
pub use sqlx::{SqliteConnection, SqlitePool};
pub use store::SqliteEventStore;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Sqlite, Transaction};

use crate::storage::StorageError;

/// How long a connection waits for another writer to finish before failing with "database is
/// locked".
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`open`]'s pool waits for a free connection before failing.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// The options every connection to the database file at `path` is opened with: created if
/// missing, write-ahead logging, `synchronous = FULL`, a busy timeout of [`BUSY_TIMEOUT`],
/// foreign keys on. Build a pool with them (or change them) and pass it to [`migrate`] and the
/// types' `new`, or use [`open`].
pub fn connect_options(path: impl AsRef<Path>) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true)
}

/// Opens (creating it if missing) the database file at `path` with [`connect_options`],
/// applies the crate's migrations and returns a pool on it.
///
/// The pool never hands out a connection that sqlx still counts as inside a transaction
/// (one that SQLite ended by itself, then dropped without a rollback): it opens a new one
/// instead, so such a transaction cannot make every later `BEGIN IMMEDIATE` on the pool fail.
pub async fn open(path: impl AsRef<Path>) -> Result<SqlitePool, OpenError> {
    let path = path.as_ref();
    let pool = SqlitePoolOptions::new()
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // A connection idle in the pool that sqlx counts as inside a transaction was left so
        // by a transaction that SQLite had ended by itself and that was then dropped rather
        // than rolled back (see `rollback`): it would refuse every `BEGIN IMMEDIATE`. Replace
        // it with a new one.
        .before_acquire(|conn, _| Box::pin(async move { Ok(!conn.is_in_transaction()) }))
        .connect_with(connect_options(path))
        .await
        .map_err(|error| OpenError::from_connect(path, error))?;
    migrate(&pool)
        .await
        .map_err(|error| error.with_path(path))?;
    Ok(pool)
}

/// A migrated SQLite database in memory, on a pool of one connection that is never closed
/// (each connection to `:memory:` is a database of its own, and it is gone when its
/// connection closes). Nothing survives the pool. Unlike [`open`]'s pool, this one cannot
/// replace a connection left inside a transaction (that would drop the database): the crate
/// rolls back through a statement SQLite accepts even then.
pub async fn open_in_memory() -> Result<SqlitePool, OpenError> {
    let options = SqliteConnectOptions::new()
        .in_memory(true)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|error| OpenError::from_connect(Path::new(":memory:"), error))?;
    migrate(&pool).await?;
    Ok(pool)
}

/// Rolls `tx` back, also when a statement already made SQLite end it: SQLite rolls a whole
/// transaction back by itself on a constraint violation under `OR ROLLBACK`, a trigger's
/// `RAISE(ROLLBACK, ...)` and some I/O and memory errors. sqlx still counts such a
/// transaction as open, so its `ROLLBACK` would fail and the connection would go back to the
/// pool counted as inside one, where every later `BEGIN IMMEDIATE` fails. A plain `BEGIN`
/// first gives that `ROLLBACK` a transaction to end; while `tx` is still open, SQLite refuses
/// the `BEGIN` and nothing changes.
pub(crate) async fn rollback(mut tx: Transaction<'_, Sqlite>) -> Result<(), StorageError> {
    // Refused ("cannot start a transaction within a transaction") in the usual case.
    let _ = sqlx::query("BEGIN").execute(&mut *tx).await;
    tx.rollback().await.map_err(backend)
}

/// Wraps a database error.
fn backend(error: sqlx::Error) -> StorageError {
    StorageError::backend(error)
}

/// A position or count from Rust, as SQLite's 64-bit integer.
fn to_i64(value: u64, what: &'static str) -> Result<i64, StorageError> {
    i64::try_from(value).map_err(|_| StorageError::Invalid {
        what,
        reason: format!("{value} does not fit in a SQLite integer"),
    })
}

/// A stored integer that must not be negative.
fn to_u64(value: i64, what: &'static str) -> Result<u64, StorageError> {
    u64::try_from(value)
        .map_err(|_| StorageError::Unreadable(format!("stored {what} is negative: {value}")))
}

/// Every public future can be spawned on a multi-threaded runtime.
#[cfg(test)]
mod send_checks {
    use super::*;
    use crate::checkpoint::CheckpointRepository;
    use crate::dlq::DLQRepository;
    use crate::store::EventStore;

    fn spawnable<F: std::future::Future + Send + 'static>(_: F) {}

    #[allow(dead_code)]
    fn futures_are_spawnable(pool: SqlitePool) {
        let p = pool.clone();
        spawnable(async move { migrate(&p).await });
        spawnable(async move { open("x.db").await });
        spawnable(async move { SqliteEventStore::open("x.db").await });
        let store = SqliteEventStore::new(pool.clone());
        spawnable(async move { store.head_position().await });
        let checkpoints = SqliteCheckpointRepository::new(pool.clone());
        spawnable(async move { checkpoints.get_all_checkpoints().await });
        let dead_letters = SqliteDLQRepository::new(pool);
        spawnable(async move { dead_letters.mark_retrying(1).await });
    }
}
