//! The crate's migrations, applied through a ledger table of its own so that a user's own
//! `sqlx::migrate!` (and its `_sqlx_migrations` table) is never touched, and the typed error
//! of a database this build cannot use.

use std::path::Path;

use sqlx::{Connection, Executor, Row, SqlitePool};

use super::time;
use crate::storage::StorageError;

/// The ledger of applied migrations:
/// `(version INTEGER PRIMARY KEY, description TEXT, checksum TEXT, applied_at INTEGER)`.
pub const MIGRATIONS_TABLE: &str = "projections_schema_migrations";

/// SQLite's result code for a file that is not a database (`SQLITE_NOTADB`).
const SQLITE_NOTADB: &str = "26";

/// One migration shipped with the crate.
struct Migration {
    version: i64,
    description: &'static str,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "event store",
        sql: include_str!("../../migrations/sqlite/0001_event_store.sql"),
    },
    Migration {
        version: 2,
        description: "checkpoints",
        sql: include_str!("../../migrations/sqlite/0002_checkpoints.sql"),
    },
    Migration {
        version: 3,
        description: "dead letters",
        sql: include_str!("../../migrations/sqlite/0003_dead_letters.sql"),
    },
    Migration {
        version: 4,
        description: "blue/green projection versions",
        sql: include_str!("../../migrations/sqlite/0004_projection_versions.sql"),
    },
    Migration {
        version: 5,
        description: "replay horizons",
        sql: include_str!("../../migrations/sqlite/0005_replay_horizons.sql"),
    },
];

/// The database cannot be opened or migrated by this build.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The file exists but is not a SQLite database (or is encrypted, or damaged in its
    /// header).
    #[error("{path} is not a SQLite database")]
    NotADatabase {
        /// The file, as given (empty when opened through a pool).
        path: String,
        /// SQLite's error.
        #[source]
        source: sqlx::Error,
    },
    /// The file cannot be opened for writing: its directory does not exist, it is a
    /// directory, or this process may not write it (or the folder it is in, where SQLite
    /// keeps the write-ahead log).
    #[error(
        "cannot open {path} for writing (does its directory exist, and may this process write \
         there?)"
    )]
    NotWritable {
        /// The file, as given.
        path: String,
        /// SQLite's error.
        #[source]
        source: sqlx::Error,
    },
    /// A newer build of this crate migrated the database: its ledger records a migration this
    /// build does not know, so it cannot tell what the tables mean.
    #[error(
        "the database was migrated by a newer build of projections (migration {found} is \
         recorded in {MIGRATIONS_TABLE}; this build knows up to {known}): upgrade the crate"
    )]
    NewerSchema {
        /// The newest migration recorded.
        found: i64,
        /// The newest migration this build ships.
        known: i64,
    },
    /// A migration recorded in the ledger differs from the one this build ships.
    #[error(
        "migration {version} ({description}) was applied with checksum {recorded}, but this \
         build ships {shipped}: the database was migrated by a different build of projections"
    )]
    ChangedMigration {
        /// The migration.
        version: i64,
        /// What it does.
        description: &'static str,
        /// The checksum in the ledger.
        recorded: String,
        /// The checksum of the migration shipped.
        shipped: String,
    },
    /// Opening or migrating failed otherwise.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl OpenError {
    /// The error of opening (or first using) `path`.
    pub(super) fn from_connect(path: &Path, error: sqlx::Error) -> Self {
        let path = path.display().to_string();
        if is_not_a_database(&error) {
            return Self::NotADatabase {
                path,
                source: error,
            };
        }
        if is_not_writable(&error) {
            return Self::NotWritable {
                path,
                source: error,
            };
        }
        Self::Storage(StorageError::backend(error))
    }

    /// This error, naming `path` if it is about the file.
    pub(super) fn with_path(self, path: &Path) -> Self {
        match self {
            Self::NotADatabase { source, .. } => Self::NotADatabase {
                path: path.display().to_string(),
                source,
            },
            Self::NotWritable { source, .. } => Self::NotWritable {
                path: path.display().to_string(),
                source,
            },
            other => other,
        }
    }
}

impl From<OpenError> for StorageError {
    /// A wrong file or schema is a setup failure ([`StorageError::Unreadable`]).
    fn from(error: OpenError) -> Self {
        match error {
            OpenError::Storage(error) => error,
            other => StorageError::Unreadable(other.to_string()),
        }
    }
}

fn is_not_a_database(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|db| db.code().as_deref() == Some(SQLITE_NOTADB))
}

/// SQLite's primary result codes for a file it may not write: `SQLITE_PERM`,
/// `SQLITE_READONLY` and `SQLITE_CANTOPEN` (sqlx reports extended codes; the low byte is the
/// primary one).
fn is_not_writable(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|db| db.code())
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| matches!(code & 0xff, 3 | 8 | 14))
}

/// The error of a statement of the migration.
fn failed(error: sqlx::Error) -> OpenError {
    if is_not_a_database(&error) {
        return OpenError::NotADatabase {
            path: String::new(),
            source: error,
        };
    }
    if is_not_writable(&error) {
        return OpenError::NotWritable {
            path: String::new(),
            source: error,
        };
    }
    OpenError::Storage(StorageError::backend(error))
}

/// Creates or upgrades the crate's tables (event store, checkpoints, dead letters).
///
/// Idempotent, and safe when several connections or processes call it at once: everything
/// runs in one `BEGIN IMMEDIATE` transaction, so a second caller waits for the first (up to the
/// busy timeout) and then finds nothing left to do. Applied migrations are recorded in
/// [`MIGRATIONS_TABLE`]. A ledger that records a migration this build does not ship is
/// [`OpenError::NewerSchema`]; one whose checksum differs, [`OpenError::ChangedMigration`].
pub async fn migrate(pool: &SqlitePool) -> Result<(), OpenError> {
    let mut conn = pool.acquire().await.map_err(failed)?;
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(failed)?;
    (&mut *tx)
        .execute(sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS projections_schema_migrations (
                 version     INTEGER PRIMARY KEY,
                 description TEXT    NOT NULL,
                 checksum    TEXT    NOT NULL,
                 applied_at  INTEGER NOT NULL
             ) STRICT",
        ))
        .await
        .map_err(failed)?;

    let applied = sqlx::query(&format!("SELECT version, checksum FROM {MIGRATIONS_TABLE}"))
        .fetch_all(&mut *tx)
        .await
        .map_err(failed)?
        .into_iter()
        .map(|row| {
            Ok((
                row.try_get::<i64, _>("version")?,
                row.try_get::<String, _>("checksum")?,
            ))
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(failed)?;

    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    if let Some(found) = applied.iter().map(|(v, _)| *v).filter(|v| *v > known).max() {
        return Err(OpenError::NewerSchema { found, known });
    }
    for migration in MIGRATIONS {
        let shipped = checksum(migration.sql);
        if let Some((_, recorded)) = applied.iter().find(|(v, _)| *v == migration.version) {
            if *recorded != shipped {
                return Err(OpenError::ChangedMigration {
                    version: migration.version,
                    description: migration.description,
                    recorded: recorded.clone(),
                    shipped,
                });
            }
            continue;
        }
        (&mut *tx)
            .execute(sqlx::raw_sql(migration.sql))
            .await
            .map_err(failed)?;
        sqlx::query(&format!(
            "INSERT INTO {MIGRATIONS_TABLE} (version, description, checksum, applied_at)
             VALUES (?1, ?2, ?3, ?4)"
        ))
        .bind(migration.version)
        .bind(migration.description)
        .bind(&shipped)
        .bind(time::now())
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
        tracing::info!(
            version = migration.version,
            description = migration.description,
            "applied projections SQLite migration"
        );
    }
    tx.commit().await.map_err(failed)
}

/// A fingerprint of a migration's text (FNV-1a, 64 bits, hex): detects an edited migration,
/// no more.
fn checksum(sql: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in sql.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_from_one() {
        for (at, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version, i64::try_from(at + 1).unwrap_or(-1));
        }
    }
}
