//! The crate's migrations, applied through a ledger table of its own so that a user's own
//! `sqlx::migrate!` (and its `_sqlx_migrations` table) is never touched.

use sqlx::{Connection, Executor, PgPool, Row};

use super::{Schema, backend};
use crate::storage::StorageError;

/// The ledger of applied migrations, in the configured schema:
/// `(version bigint primary key, description text, checksum text, applied_at timestamptz)`.
pub const MIGRATIONS_TABLE: &str = "projections_schema_migrations";

/// The advisory lock that serialises migrations: one key for every schema, so that two
/// names for one schema (`public` and the `search_path`) cannot race. The ASCII of
/// `projmigr`.
const MIGRATION_LOCK_KEY: i64 = 0x7072_6f6a_6d69_6772;

/// What the migration files write where the schema goes (`"name".` or nothing).
const SCHEMA_PLACEHOLDER: &str = "__SCHEMA__.";

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
        sql: include_str!("../../migrations/0001_event_store.sql"),
    },
    Migration {
        version: 2,
        description: "checkpoints",
        sql: include_str!("../../migrations/0002_checkpoints.sql"),
    },
    Migration {
        version: 3,
        description: "dead letters",
        sql: include_str!("../../migrations/0003_dead_letters.sql"),
    },
    Migration {
        version: 4,
        description: "halts",
        sql: include_str!("../../migrations/0004_halts.sql"),
    },
    Migration {
        version: 5,
        description: "readable timestamps",
        sql: include_str!("../../migrations/0005_readable_timestamps.sql"),
    },
    Migration {
        version: 6,
        description: "overlapping appends",
        sql: include_str!("../../migrations/0006_overlapping_appends.sql"),
    },
    Migration {
        version: 7,
        description: "replay horizons",
        sql: include_str!("../../migrations/0007_replay_horizons.sql"),
    },
    Migration {
        version: 8,
        description: "blue/green projection versions",
        sql: include_str!("../../migrations/0008_projection_versions.sql"),
    },
    Migration {
        version: 9,
        description: "cluster: nodes, leases and fences",
        sql: include_str!("../../migrations/0009_cluster.sql"),
    },
    Migration {
        version: 10,
        description: "filtered reads",
        sql: include_str!("../../migrations/0010_filtered_reads.sql"),
    },
];

/// Creates or upgrades the crate's tables (event store, checkpoints, dead letters) in the
/// connection's `search_path`; see [`migrate_schema`].
pub async fn migrate(pool: &PgPool) -> Result<(), StorageError> {
    migrate_schema(pool, &Schema::default()).await
}

/// Creates or upgrades the crate's tables in `schema`, creating the schema if it does not exist.
///
/// Idempotent, and safe when several processes call it at once: everything runs in one
/// transaction under a transaction-scoped advisory lock, so a second caller waits for the
/// first and then finds nothing left to do. Applied migrations are recorded in
/// [`MIGRATIONS_TABLE`], never in sqlx's `_sqlx_migrations`. A migration whose recorded
/// checksum differs from the shipped one is an error ([`StorageError::Invalid`]): the
/// database was migrated by a different build of this crate.
pub async fn migrate_schema(pool: &PgPool, schema: &Schema) -> Result<(), StorageError> {
    let mut conn = pool.acquire().await.map_err(backend)?;
    let mut tx = conn.begin().await.map_err(backend)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK_KEY)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
    if let Some(name) = schema.name() {
        // `name` is a validated identifier.
        (&mut *tx)
            .execute(sqlx::raw_sql(&format!(
                "CREATE SCHEMA IF NOT EXISTS \"{name}\""
            )))
            .await
            .map_err(backend)?;
    }
    let ledger = schema.table(MIGRATIONS_TABLE);
    (&mut *tx)
        .execute(sqlx::raw_sql(&format!(
            "CREATE TABLE IF NOT EXISTS {ledger} (
            version     bigint      PRIMARY KEY,
            description text        NOT NULL,
            checksum    text        NOT NULL,
            applied_at  timestamptz NOT NULL DEFAULT now()
        )"
        )))
        .await
        .map_err(backend)?;

    let applied = sqlx::query(&format!("SELECT version, checksum FROM {ledger}"))
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?
        .into_iter()
        .map(|row| {
            Ok((
                row.try_get::<i64, _>("version")?,
                row.try_get::<String, _>("checksum")?,
            ))
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(backend)?;

    let qualifier = match schema.name() {
        Some(name) => format!("\"{name}\"."),
        None => String::new(),
    };
    for migration in MIGRATIONS {
        let checksum = checksum(migration.sql);
        if let Some((_, recorded)) = applied.iter().find(|(v, _)| *v == migration.version) {
            if *recorded != checksum {
                return Err(StorageError::Invalid {
                    what: "migration",
                    reason: format!(
                        "migration {} ({}) in schema {schema} was applied with checksum \
                         {recorded}, but this build ships {checksum}",
                        migration.version, migration.description
                    ),
                });
            }
            continue;
        }
        let sql = migration.sql.replace(SCHEMA_PLACEHOLDER, &qualifier);
        (&mut *tx)
            .execute(sqlx::raw_sql(&sql))
            .await
            .map_err(backend)?;
        sqlx::query(&format!(
            "INSERT INTO {ledger} (version, description, checksum) VALUES ($1, $2, $3)"
        ))
        .bind(migration.version)
        .bind(migration.description)
        .bind(&checksum)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tracing::info!(
            version = migration.version,
            description = migration.description,
            %schema,
            "applied projections migration"
        );
    }
    tx.commit().await.map_err(backend)
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
    fn versions_increase_and_every_table_is_qualified() {
        for pair in MIGRATIONS.windows(2) {
            assert!(pair[0].version < pair[1].version);
        }
        for migration in MIGRATIONS {
            for statement in ["CREATE TABLE ", "ALTER TABLE ", "INSERT INTO ", " ON "] {
                for (at, _) in migration.sql.match_indices(statement) {
                    let rest = &migration.sql[at + statement.len()..];
                    assert!(
                        rest.trim_start().starts_with(SCHEMA_PLACEHOLDER),
                        "migration {} has an unqualified table after `{statement}`",
                        migration.version
                    );
                }
            }
        }
    }
}
