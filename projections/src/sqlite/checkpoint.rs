//! Checkpoints in SQLite (table `projection_checkpoints`).

use sqlx::pool::PoolConnection;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::{backend, time, to_i64, to_u64};
use crate::checkpoint::{CheckpointData, CheckpointRepository, CheckpointUpdate, Halt, StoredHalt};
use crate::storage::{BoxFuture, StorageError};

const DATA_COLUMNS: &str = "projection_name, position, last_event_id, last_event_type, \
     last_processed_at, events_processed, halt_state, halt_reason, halt_at, halt_position, \
     halt_event_id, halt_event_type, halt_attempts, halt_failure_kind";

const GET: &str = "SELECT position FROM projection_checkpoints WHERE projection_name = ?1";

/// The position only moves forward; the last event and the time move with it (the time also
/// when events were applied without moving it). `?7` is now.
const UPDATE: &str = "INSERT INTO projection_checkpoints AS c (
         projection_name, position, last_event_id, last_event_type, last_processed_at,
         events_processed, created_at, updated_at
     )
     VALUES (
         ?1, ?2,
         CASE WHEN ?2 > 0 THEN ?3 END,
         CASE WHEN ?2 > 0 THEN ?4 END,
         CASE WHEN ?2 > 0 OR ?5 > 0 THEN ?6 END,
         ?5, ?7, ?7
     )
     ON CONFLICT (projection_name) DO UPDATE SET
         position = max(c.position, excluded.position),
         last_event_id = CASE WHEN excluded.position > c.position
             THEN ?3 ELSE c.last_event_id END,
         last_event_type = CASE WHEN excluded.position > c.position
             THEN ?4 ELSE c.last_event_type END,
         last_processed_at = CASE WHEN excluded.position > c.position OR ?5 > 0
             THEN ?6 ELSE c.last_processed_at END,
         events_processed = c.events_processed + excluded.events_processed,
         updated_at = ?7";

/// Creates the row (at position 0) if there is none; never touches the position. `?10` is now.
const SET_HALT: &str = "INSERT INTO projection_checkpoints (
         projection_name, halt_state, halt_reason, halt_at, halt_position, halt_event_id,
         halt_event_type, halt_attempts, halt_failure_kind, created_at, updated_at
     )
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)
     ON CONFLICT (projection_name) DO UPDATE SET
         halt_state = excluded.halt_state,
         halt_reason = excluded.halt_reason,
         halt_at = excluded.halt_at,
         halt_position = excluded.halt_position,
         halt_event_id = excluded.halt_event_id,
         halt_event_type = excluded.halt_event_type,
         halt_attempts = excluded.halt_attempts,
         halt_failure_kind = excluded.halt_failure_kind,
         updated_at = excluded.updated_at";

/// A missing row stays missing. `?2` is now.
const CLEAR_HALT: &str = "UPDATE projection_checkpoints SET
         halt_state = NULL, halt_reason = NULL, halt_at = NULL, halt_position = NULL,
         halt_event_id = NULL, halt_event_type = NULL, halt_attempts = NULL,
         halt_failure_kind = NULL, updated_at = ?2
     WHERE projection_name = ?1 AND halt_state IS NOT NULL";

const RESET: &str = "DELETE FROM projection_checkpoints WHERE projection_name = ?1";

/// Checkpoints in SQLite: one row per projection in `projection_checkpoints`, moved with a
/// monotonic upsert (`position = max(stored, new)`), so a checkpoint never goes backwards
/// whatever the order of writers. Names sort in byte order (SQLite's `BINARY` collation).
///
/// A halt ([`CheckpointRepository::set_halt`]) is kept in the `halt_*` columns of the
/// projection's row: moving the checkpoint leaves it alone, a reset deletes it with the row.
#[derive(Debug, Clone)]
pub struct SqliteCheckpointRepository {
    pool: SqlitePool,
}

impl SqliteCheckpointRepository {
    /// Checkpoints on `pool`. The tables must exist: see [`migrate`](super::migrate).
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }

    /// The pool the repository works on.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn connection(&self) -> Result<PoolConnection<Sqlite>, StorageError> {
        self.pool.acquire().await.map_err(backend)
    }
}

/// Moves the checkpoint of `projection` on `conn` (inside the caller's transaction, if any).
pub(crate) async fn update_checkpoint_in(
    conn: &mut SqliteConnection,
    projection: &str,
    update: &CheckpointUpdate,
) -> Result<(), StorageError> {
    sqlx::query(UPDATE)
        .bind(projection)
        .bind(to_i64(update.position, "checkpoint position")?)
        .bind(update.event_id.map(|id| id.to_string()))
        .bind(update.event_type.as_deref())
        .bind(to_i64(update.events_applied, "events applied")?)
        .bind(time::to_stored(update.at))
        .bind(time::now())
        .execute(conn)
        .await
        .map_err(backend)?;
    Ok(())
}

/// The checkpoint position of `projection` read on `conn`.
pub(crate) async fn checkpoint_in(
    conn: &mut SqliteConnection,
    projection: &str,
) -> Result<Option<u64>, StorageError> {
    let position: Option<i64> = sqlx::query_scalar(GET)
        .bind(projection)
        .fetch_optional(conn)
        .await
        .map_err(backend)?;
    position
        .map(|p| to_u64(p, "checkpoint position"))
        .transpose()
}

/// Deletes the checkpoint (and its halt) of `projection` on `conn`.
pub(crate) async fn reset_checkpoint_in(
    conn: &mut SqliteConnection,
    projection: &str,
) -> Result<(), StorageError> {
    sqlx::query(RESET)
        .bind(projection)
        .execute(conn)
        .await
        .map_err(backend)?;
    Ok(())
}

/// Records (or, with `None`, clears) the halt of `projection` on `conn`.
async fn set_halt_in(
    conn: &mut SqliteConnection,
    projection: &str,
    halt: Option<&Halt>,
) -> Result<(), StorageError> {
    let Some(halt) = halt else {
        sqlx::query(CLEAR_HALT)
            .bind(projection)
            .bind(time::now())
            .execute(conn)
            .await
            .map_err(backend)?;
        return Ok(());
    };
    let state = halt.state();
    let query = match halt.storable() {
        Halt::Paused { reason, at } => sqlx::query(SET_HALT)
            .bind(projection)
            .bind(state)
            .bind(reason)
            .bind(time::to_stored(at))
            .bind(None::<i64>)
            .bind(None::<String>)
            .bind(None::<String>)
            .bind(None::<i64>)
            .bind(None::<&str>),
        Halt::Stopped(stopped) => sqlx::query(SET_HALT)
            .bind(projection)
            .bind(state)
            .bind(stopped.error)
            .bind(time::to_stored(stopped.at))
            .bind(
                stopped
                    .position
                    .map(|p| to_i64(p, "halt position"))
                    .transpose()?,
            )
            .bind(stopped.event_id.map(|id| id.to_string()))
            .bind(stopped.event_type)
            .bind(i64::from(stopped.attempts))
            .bind(stopped.kind.as_str()),
    };
    query
        .bind(time::now())
        .execute(conn)
        .await
        .map_err(backend)?;
    Ok(())
}

/// A stored UUID text; `what` names it in the error.
fn uuid(text: Option<String>, what: &dyn std::fmt::Display) -> Result<Option<Uuid>, StorageError> {
    text.map(|text| {
        Uuid::parse_str(&text).map_err(|_| {
            StorageError::Unreadable(format!("the stored {what} `{text}` is not a UUID"))
        })
    })
    .transpose()
}

fn checkpoint_data(row: &SqliteRow) -> Result<CheckpointData, StorageError> {
    let projection_name: String = row.try_get("projection_name").map_err(backend)?;
    let last_processed_at: Option<i64> = row.try_get("last_processed_at").map_err(backend)?;
    Ok(CheckpointData {
        last_event_id: uuid(
            row.try_get("last_event_id").map_err(backend)?,
            &format_args!("last_event_id of the checkpoint of {projection_name}"),
        )?,
        last_event_type: row.try_get("last_event_type").map_err(backend)?,
        position: to_u64(
            row.try_get("position").map_err(backend)?,
            "checkpoint position",
        )?,
        last_processed_at: last_processed_at
            .map(|micros| {
                time::from_stored(
                    micros,
                    &format_args!("last_processed_at of the checkpoint of {projection_name}"),
                )
            })
            .transpose()?,
        events_processed: to_u64(
            row.try_get("events_processed").map_err(backend)?,
            "events processed",
        )?,
        halt: halt(row, &projection_name)?,
        projection_name,
    })
}

/// The halt stored in `row`'s `halt_*` columns. A value that does not read back as a halt
/// (possible only if the table's checks were changed) is a [`StorageError`].
fn halt(row: &SqliteRow, projection: &str) -> Result<Option<Halt>, StorageError> {
    let Some(state) = row
        .try_get::<Option<String>, _>("halt_state")
        .map_err(backend)?
    else {
        return Ok(None);
    };
    let at: Option<i64> = row.try_get("halt_at").map_err(backend)?;
    let at = at
        .map(|at| {
            time::from_stored(
                at,
                &format_args!("halt_at of the checkpoint of {projection}"),
            )
        })
        .transpose()?;
    let stored = StoredHalt {
        state,
        reason: row.try_get("halt_reason").map_err(backend)?,
        at,
        kind: row.try_get("halt_failure_kind").map_err(backend)?,
        attempts: row.try_get("halt_attempts").map_err(backend)?,
        position: row.try_get("halt_position").map_err(backend)?,
        event_id: uuid(
            row.try_get("halt_event_id").map_err(backend)?,
            &format_args!("halt_event_id of the checkpoint of {projection}"),
        )?,
        event_type: row.try_get("halt_event_type").map_err(backend)?,
    };
    stored.into_halt(projection).map(Some)
}

impl CheckpointRepository for SqliteCheckpointRepository {
    fn get_checkpoint<'a>(
        &'a self,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, StorageError>> {
        Box::pin(async move { checkpoint_in(&mut *self.connection().await?, projection).await })
    }

    fn get_checkpoint_data<'a>(
        &'a self,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<Option<CheckpointData>, StorageError>> {
        Box::pin(async move {
            let sql = format!(
                "SELECT {DATA_COLUMNS} FROM projection_checkpoints WHERE projection_name = ?1"
            );
            let row = sqlx::query(&sql)
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
        Box::pin(async move {
            update_checkpoint_in(&mut *self.connection().await?, projection, &update).await
        })
    }

    fn set_halt<'a>(
        &'a self,
        projection: &'a str,
        halt: Option<&'a Halt>,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move { set_halt_in(&mut *self.connection().await?, projection, halt).await })
    }

    fn reset_checkpoint<'a>(
        &'a self,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(
            async move { reset_checkpoint_in(&mut *self.connection().await?, projection).await },
        )
    }

    fn get_replay_horizon<'a>(
        &'a self,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, StorageError>> {
        Box::pin(async move {
            let horizon: Option<Option<i64>> = sqlx::query_scalar(
                "SELECT replay_until FROM projection_checkpoints WHERE projection_name = ?1",
            )
            .bind(projection)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
            horizon
                .flatten()
                .map(|h| {
                    u64::try_from(h).map_err(|_| {
                        StorageError::Unreadable(format!(
                            "the replay horizon of {projection} is {h}"
                        ))
                    })
                })
                .transpose()
        })
    }

    fn set_replay_horizon<'a>(
        &'a self,
        projection: &'a str,
        head: u64,
    ) -> BoxFuture<'a, Result<u64, StorageError>> {
        Box::pin(async move {
            // Creates the row (at position 0) if there is none; a horizon already stored (by
            // another process of the projection) wins.
            let now = time::now();
            let stored: Option<i64> = sqlx::query_scalar(
                "INSERT INTO projection_checkpoints
                     (projection_name, replay_until, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT (projection_name) DO UPDATE SET
                     replay_until = COALESCE(projection_checkpoints.replay_until, excluded.replay_until),
                     updated_at = excluded.updated_at
                 RETURNING replay_until",
            )
            .bind(projection)
            .bind(to_i64(head, "replay horizon")?)
            .bind(now)
            .fetch_one(&mut *self.connection().await?)
            .await
            .map_err(backend)?;
            let stored = stored.ok_or_else(|| {
                StorageError::Unreadable(format!(
                    "the replay horizon of {projection} was not stored"
                ))
            })?;
            u64::try_from(stored).map_err(|_| {
                StorageError::Unreadable(format!("the replay horizon of {projection} is {stored}"))
            })
        })
    }

    fn get_all_checkpoints(&self) -> BoxFuture<'_, Result<Vec<CheckpointData>, StorageError>> {
        Box::pin(async move {
            let sql = format!(
                "SELECT {DATA_COLUMNS} FROM projection_checkpoints ORDER BY projection_name"
            );
            let rows = sqlx::query(&sql)
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
            rows.iter().map(checkpoint_data).collect()
        })
    }
}
