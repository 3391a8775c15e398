//! Checkpoints in PostgreSQL (table `projection_checkpoints`).

use std::sync::{Arc, LazyLock};

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{Executor, PgConnection, PgPool, Postgres, Row};
use uuid::Uuid;

use super::{Schema, backend, timestamp, to_i64, to_u64};
use crate::checkpoint::{CheckpointData, CheckpointRepository, CheckpointUpdate, Halt, StoredHalt};
use crate::storage::{BoxFuture, StorageError};

/// The checkpoint table.
const CHECKPOINTS_TABLE: &str = "projection_checkpoints";

/// How often [`get_checkpoint_for_update`] tries to find or create the row when concurrent
/// resets keep deleting it.
const LOCK_ATTEMPTS: u32 = 8;

const DATA_COLUMNS: &str = "projection_name, position, last_event_id, last_event_type, \
     last_processed_at, events_processed, halt_state, halt_reason, halt_at, halt_position, \
     halt_event_id, halt_event_type, halt_attempts, halt_failure_kind";

/// The statements, formatted once with the schema's table name.
#[derive(Debug)]
struct Sql {
    get: String,
    get_data: String,
    get_all: String,
    lock: String,
    create: String,
    update: String,
    set_halt: String,
    clear_halt: String,
    reset: String,
    get_horizon: String,
    set_horizon: String,
}

impl Sql {
    fn new(schema: &Schema) -> Self {
        let table = schema.table(CHECKPOINTS_TABLE);
        Self {
            get: format!("SELECT position FROM {table} WHERE projection_name = $1"),
            get_data: format!("SELECT {DATA_COLUMNS} FROM {table} WHERE projection_name = $1"),
            get_all: format!(
                "SELECT {DATA_COLUMNS} FROM {table} ORDER BY projection_name COLLATE \"C\""
            ),
            lock: format!("SELECT position FROM {table} WHERE projection_name = $1 FOR UPDATE"),
            create: format!(
                "INSERT INTO {table} (projection_name) VALUES ($1)
                 ON CONFLICT (projection_name) DO NOTHING
                 RETURNING position"
            ),
            // The position only moves forward; the last event and the time move with it (the
            // time also when events were applied without moving it).
            update: format!(
                "INSERT INTO {table} AS c (
                     projection_name, position, last_event_id, last_event_type,
                     last_processed_at, events_processed
                 )
                 VALUES (
                     $1, $2,
                     CASE WHEN $2 > 0 THEN $3::uuid END,
                     CASE WHEN $2 > 0 THEN $4::text END,
                     CASE WHEN $2 > 0 OR $5 > 0 THEN $6::timestamptz END,
                     $5
                 )
                 ON CONFLICT (projection_name) DO UPDATE SET
                     position = GREATEST(c.position, EXCLUDED.position),
                     last_event_id = CASE WHEN EXCLUDED.position > c.position
                         THEN $3::uuid ELSE c.last_event_id END,
                     last_event_type = CASE WHEN EXCLUDED.position > c.position
                         THEN $4::text ELSE c.last_event_type END,
                     last_processed_at = CASE WHEN EXCLUDED.position > c.position OR $5 > 0
                         THEN $6::timestamptz ELSE c.last_processed_at END,
                     events_processed = c.events_processed + EXCLUDED.events_processed,
                     updated_at = now()"
            ),
            // Creates the row (at position 0) if there is none; never touches the position.
            set_halt: format!(
                "INSERT INTO {table} (
                     projection_name, halt_state, halt_reason, halt_at, halt_position,
                     halt_event_id, halt_event_type, halt_attempts, halt_failure_kind
                 )
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (projection_name) DO UPDATE SET
                     halt_state = EXCLUDED.halt_state,
                     halt_reason = EXCLUDED.halt_reason,
                     halt_at = EXCLUDED.halt_at,
                     halt_position = EXCLUDED.halt_position,
                     halt_event_id = EXCLUDED.halt_event_id,
                     halt_event_type = EXCLUDED.halt_event_type,
                     halt_attempts = EXCLUDED.halt_attempts,
                     halt_failure_kind = EXCLUDED.halt_failure_kind,
                     updated_at = now()"
            ),
            // A missing row stays missing.
            clear_halt: format!(
                "UPDATE {table} SET
                     halt_state = NULL, halt_reason = NULL, halt_at = NULL,
                     halt_position = NULL, halt_event_id = NULL, halt_event_type = NULL,
                     halt_attempts = NULL, halt_failure_kind = NULL,
                     updated_at = now()
                 WHERE projection_name = $1 AND halt_state IS NOT NULL"
            ),
            reset: format!("DELETE FROM {table} WHERE projection_name = $1"),
            get_horizon: format!("SELECT replay_until FROM {table} WHERE projection_name = $1"),
            // Creates the row (at position 0) if there is none; a horizon already stored (by
            // another process of the projection) wins.
            set_horizon: format!(
                "INSERT INTO {table} AS c (projection_name, replay_until) VALUES ($1, $2)
                 ON CONFLICT (projection_name) DO UPDATE SET
                     replay_until = COALESCE(c.replay_until, EXCLUDED.replay_until),
                     updated_at = now()
                 RETURNING replay_until"
            ),
        }
    }
}

/// The statements for the connection's `search_path`, used by the free functions.
static DEFAULT_SQL: LazyLock<Arc<Sql>> = LazyLock::new(|| Arc::new(Sql::new(&Schema::default())));

/// Checkpoints in PostgreSQL: one row per projection in `projection_checkpoints`, moved with a
/// monotonic upsert (`position = GREATEST(stored, new)`), so a checkpoint never goes backwards
/// whatever the order of concurrent writers.
///
/// The trait methods each run on a connection of the pool, in a transaction of their own. To
/// write a checkpoint in the same transaction as a read model, use
/// [`get_checkpoint_for_update`](Self::get_checkpoint_for_update),
/// [`update_checkpoint_in`](Self::update_checkpoint_in),
/// [`set_halt_in`](Self::set_halt_in) and
/// [`reset_checkpoint_in`](Self::reset_checkpoint_in) with the transaction's connection.
///
/// A halt ([`CheckpointRepository::set_halt`]) is kept in the `halt_*` columns of the
/// projection's row: moving the checkpoint leaves it alone, a reset deletes it with the row.
#[derive(Debug, Clone)]
pub struct PostgreSQLCheckpointRepository {
    pool: PgPool,
    sql: Arc<Sql>,
}

impl PostgreSQLCheckpointRepository {
    /// Checkpoints on `pool`, in the connection's `search_path`.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            sql: Arc::clone(&DEFAULT_SQL),
        }
    }

    /// Checkpoints on `pool`, in `schema`.
    pub fn with_schema(pool: PgPool, schema: &Schema) -> Self {
        Self {
            pool,
            sql: Arc::new(Sql::new(schema)),
        }
    }

    /// The pool the repository works on.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// [`get_checkpoint_for_update`] in this repository's schema.
    pub async fn get_checkpoint_for_update(
        &self,
        conn: &mut PgConnection,
        projection: &str,
    ) -> Result<Option<u64>, StorageError> {
        lock_checkpoint(&self.sql, conn, projection).await
    }

    /// [`update_checkpoint_in`] in this repository's schema.
    pub async fn update_checkpoint_in(
        &self,
        conn: &mut PgConnection,
        projection: &str,
        update: &CheckpointUpdate,
    ) -> Result<(), StorageError> {
        write_update(&self.sql, conn, projection, update).await
    }

    /// [`set_halt_in`] in this repository's schema.
    pub async fn set_halt_in(
        &self,
        conn: &mut PgConnection,
        projection: &str,
        halt: Option<&Halt>,
    ) -> Result<(), StorageError> {
        write_halt(&self.sql, conn, projection, halt).await
    }

    /// [`reset_checkpoint_in`] in this repository's schema.
    pub async fn reset_checkpoint_in(
        &self,
        conn: &mut PgConnection,
        projection: &str,
    ) -> Result<(), StorageError> {
        delete(&self.sql, conn, projection).await
    }
}

/// Locks the checkpoint row of `projection` until the end of `conn`'s transaction
/// (`SELECT ... FOR UPDATE`) and returns its position; `None` if the projection had no
/// checkpoint, in which case a row at position 0 is created (and, being uncommitted, is just
/// as locked). Works in the connection's `search_path`; the repository's method of the same
/// name works in its schema.
///
/// Call it first in the transaction that applies a batch: a second runner of the same
/// projection then waits here, and sees the position the first one committed. Outside a
/// transaction the lock ends with the statement. After a `None`, the projection has a
/// checkpoint at position 0 once the transaction commits.
pub async fn get_checkpoint_for_update(
    conn: &mut PgConnection,
    projection: &str,
) -> Result<Option<u64>, StorageError> {
    lock_checkpoint(&DEFAULT_SQL, conn, projection).await
}

/// Moves the checkpoint of `projection` as [`CheckpointRepository::update_checkpoint`] does,
/// on `conn` and in its transaction (nothing is committed here). Works in the connection's
/// `search_path`; the repository's method of the same name works in its schema.
pub async fn update_checkpoint_in(
    conn: &mut PgConnection,
    projection: &str,
    update: &CheckpointUpdate,
) -> Result<(), StorageError> {
    write_update(&DEFAULT_SQL, conn, projection, update).await
}

/// Records or clears the halt of `projection` as [`CheckpointRepository::set_halt`] does, on
/// `conn` and in its transaction (nothing is committed here), so that a runner can stop at an
/// event in the transaction that rolls back its batch's other writes. Works in the
/// connection's `search_path`; the repository's method of the same name works in its schema.
pub async fn set_halt_in(
    conn: &mut PgConnection,
    projection: &str,
    halt: Option<&Halt>,
) -> Result<(), StorageError> {
    write_halt(&DEFAULT_SQL, conn, projection, halt).await
}

/// Deletes the checkpoint of `projection` on `conn` and in its transaction, so that a rebuild
/// can clear the read model and the checkpoint atomically. Works in the connection's
/// `search_path`; the repository's method of the same name works in its schema.
pub async fn reset_checkpoint_in(
    conn: &mut PgConnection,
    projection: &str,
) -> Result<(), StorageError> {
    delete(&DEFAULT_SQL, conn, projection).await
}

async fn lock_checkpoint(
    sql: &Sql,
    conn: &mut PgConnection,
    projection: &str,
) -> Result<Option<u64>, StorageError> {
    for _ in 0..LOCK_ATTEMPTS {
        let locked: Option<i64> = sqlx::query_scalar(&sql.lock)
            .bind(projection)
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend)?;
        if let Some(position) = locked {
            return Ok(Some(to_u64(position, "checkpoint position")?));
        }
        // Waits for a concurrent creator of the row, if any, to finish.
        let created: Option<i64> = sqlx::query_scalar(&sql.create)
            .bind(projection)
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend)?;
        if created.is_some() {
            return Ok(None);
        }
        // Someone else created it first; lock theirs.
    }
    Err(StorageError::backend(format!(
        "the checkpoint row of {projection} kept disappearing while it was being locked"
    )))
}

async fn write_update<'c>(
    sql: &Sql,
    executor: impl Executor<'c, Database = Postgres>,
    projection: &str,
    update: &CheckpointUpdate,
) -> Result<(), StorageError> {
    sqlx::query(&sql.update)
        .bind(projection)
        .bind(to_i64(update.position, "checkpoint position")?)
        .bind(update.event_id)
        .bind(update.event_type.as_deref())
        .bind(to_i64(update.events_applied, "events applied")?)
        .bind(update.at)
        .execute(executor)
        .await
        .map_err(backend)?;
    Ok(())
}

/// The halt's columns, in the order of [`Sql::set_halt`]'s parameters `$2`..`$9`.
struct HaltColumns {
    state: &'static str,
    reason: String,
    at: DateTime<Utc>,
    position: Option<i64>,
    event_id: Option<Uuid>,
    event_type: Option<String>,
    attempts: Option<i32>,
    failure_kind: Option<&'static str>,
}

impl HaltColumns {
    /// The columns of `halt` as stored, its texts made storable ([`Halt::storable`]).
    fn new(halt: &Halt) -> Result<Self, StorageError> {
        Ok(match halt.storable() {
            Halt::Paused { reason, at } => Self {
                state: halt.state(),
                reason,
                at,
                position: None,
                event_id: None,
                event_type: None,
                attempts: None,
                failure_kind: None,
            },
            Halt::Stopped(stopped) => Self {
                state: halt.state(),
                position: stopped
                    .position
                    .map(|p| to_i64(p, "halt position"))
                    .transpose()?,
                // As for dead letters: more attempts than an `integer` holds are recorded as
                // its maximum rather than not at all.
                attempts: Some(i32::try_from(stopped.attempts).unwrap_or(i32::MAX)),
                failure_kind: Some(stopped.kind.as_str()),
                reason: stopped.error,
                at: stopped.at,
                event_id: stopped.event_id,
                event_type: stopped.event_type,
            },
        })
    }
}

async fn write_halt<'c>(
    sql: &Sql,
    executor: impl Executor<'c, Database = Postgres>,
    projection: &str,
    halt: Option<&Halt>,
) -> Result<(), StorageError> {
    let query = match halt {
        None => sqlx::query(&sql.clear_halt).bind(projection),
        Some(halt) => {
            let columns = HaltColumns::new(halt)?;
            sqlx::query(&sql.set_halt)
                .bind(projection)
                .bind(columns.state)
                .bind(columns.reason)
                .bind(columns.at)
                .bind(columns.position)
                .bind(columns.event_id)
                .bind(columns.event_type)
                .bind(columns.attempts)
                .bind(columns.failure_kind)
        }
    };
    query.execute(executor).await.map_err(backend)?;
    Ok(())
}

async fn delete<'c>(
    sql: &Sql,
    executor: impl Executor<'c, Database = Postgres>,
    projection: &str,
) -> Result<(), StorageError> {
    sqlx::query(&sql.reset)
        .bind(projection)
        .execute(executor)
        .await
        .map_err(backend)?;
    Ok(())
}

fn checkpoint_data(row: &PgRow) -> Result<CheckpointData, StorageError> {
    let projection_name: String = row.try_get("projection_name").map_err(backend)?;
    Ok(CheckpointData {
        last_event_id: row
            .try_get::<Option<Uuid>, _>("last_event_id")
            .map_err(backend)?,
        last_event_type: row.try_get("last_event_type").map_err(backend)?,
        position: to_u64(
            row.try_get("position").map_err(backend)?,
            "checkpoint position",
        )?,
        last_processed_at: timestamp::get_optional(
            row,
            "last_processed_at",
            &format_args!("last_processed_at of the checkpoint of {projection_name}"),
        )?,
        events_processed: to_u64(
            row.try_get("events_processed").map_err(backend)?,
            "events processed",
        )?,
        halt: halt(row)?,
        projection_name,
    })
}

/// The halt stored in `row`'s `halt_*` columns. A value that does not read back as a halt
/// (possible only if the table's checks were changed) is a [`StorageError`].
fn halt(row: &PgRow) -> Result<Option<Halt>, StorageError> {
    let Some(state) = row
        .try_get::<Option<String>, _>("halt_state")
        .map_err(backend)?
    else {
        return Ok(None);
    };
    let projection: String = row.try_get("projection_name").map_err(backend)?;
    let at = timestamp::get_optional(
        row,
        "halt_at",
        &format_args!("halt_at of the checkpoint of {projection}"),
    )?;
    let attempts: Option<i32> = row.try_get("halt_attempts").map_err(backend)?;
    let stored = StoredHalt {
        state,
        reason: row.try_get("halt_reason").map_err(backend)?,
        at,
        kind: row.try_get("halt_failure_kind").map_err(backend)?,
        attempts: attempts.map(i64::from),
        position: row.try_get("halt_position").map_err(backend)?,
        event_id: row.try_get("halt_event_id").map_err(backend)?,
        event_type: row.try_get("halt_event_type").map_err(backend)?,
    };
    stored.into_halt(&projection).map(Some)
}

impl CheckpointRepository for PostgreSQLCheckpointRepository {
    fn get_checkpoint<'a>(
        &'a self,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, StorageError>> {
        Box::pin(async move {
            let position: Option<i64> = sqlx::query_scalar(&self.sql.get)
                .bind(projection)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
            position
                .map(|p| to_u64(p, "checkpoint position"))
                .transpose()
        })
    }

    fn get_checkpoint_data<'a>(
        &'a self,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<Option<CheckpointData>, StorageError>> {
        Box::pin(async move {
            let row = sqlx::query(&self.sql.get_data)
                .bind(projection)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
            row.as_ref().map(checkpoint_data).transpose()
        })
    }

    fn update_checkpoint<'a>(
        &'a self,
        projection: &'a str,
        update: CheckpointUpdate,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move { write_update(&self.sql, &self.pool, projection, &update).await })
    }

    fn set_halt<'a>(
        &'a self,
        projection: &'a str,
        halt: Option<&'a Halt>,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move { write_halt(&self.sql, &self.pool, projection, halt).await })
    }

    fn reset_checkpoint<'a>(
        &'a self,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move { delete(&self.sql, &self.pool, projection).await })
    }

    fn get_replay_horizon<'a>(
        &'a self,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, StorageError>> {
        Box::pin(async move {
            let horizon: Option<Option<i64>> = sqlx::query_scalar(&self.sql.get_horizon)
                .bind(projection)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
            horizon
                .flatten()
                .map(|h| to_u64(h, "replay horizon"))
                .transpose()
        })
    }

    fn set_replay_horizon<'a>(
        &'a self,
        projection: &'a str,
        head: u64,
    ) -> BoxFuture<'a, Result<u64, StorageError>> {
        Box::pin(async move {
            let stored: Option<i64> = sqlx::query_scalar(&self.sql.set_horizon)
                .bind(projection)
                .bind(to_i64(head, "replay horizon")?)
                .fetch_one(&self.pool)
                .await
                .map_err(backend)?;
            let stored = stored.ok_or_else(|| {
                StorageError::Unreadable(format!(
                    "the replay horizon of {projection} was not stored"
                ))
            })?;
            to_u64(stored, "replay horizon")
        })
    }

    fn get_all_checkpoints(&self) -> BoxFuture<'_, Result<Vec<CheckpointData>, StorageError>> {
        Box::pin(async move {
            let rows = sqlx::query(&self.sql.get_all)
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
            rows.iter().map(checkpoint_data).collect()
        })
    }
}
