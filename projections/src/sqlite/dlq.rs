//! Dead letters in SQLite (table `projection_dead_letters`).

use sqlx::sqlite::SqliteRow;
use sqlx::{Connection, Row, SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::{backend, time, to_i64, to_u64};
use crate::dlq::{DLQEntry, DLQFilter, DLQRepository, DLQStats, DLQStatus, FailedEvent};
use crate::storage::{BoxFuture, StorageError};

const ENTRY_COLUMNS: &str = "id, event_id, position, projection_name, event_type, event_data, \
     error_message, error_chain, attempts, first_failed_at, last_failed_at, status, \
     resolved_at, resolved_by";

/// One entry per (event, projection): a new failure adds its attempts (saturating at the
/// largest `u32`), replaces the error, and reopens the entry.
const ADD: &str = "INSERT INTO projection_dead_letters AS d (
         event_id, position, projection_name, event_type, event_data, error_message,
         error_chain, attempts, first_failed_at, last_failed_at, status
     )
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, 'failed')
     ON CONFLICT (event_id, projection_name) DO UPDATE SET
         attempts = min(d.attempts + excluded.attempts, 4294967295),
         error_message = excluded.error_message,
         error_chain = excluded.error_chain,
         last_failed_at = excluded.last_failed_at,
         status = 'failed',
         resolved_at = NULL,
         resolved_by = NULL,
         position = coalesce(excluded.position, d.position),
         event_data = excluded.event_data
     RETURNING id";

/// `?3` is the limit, negative for none.
const LIST: &str = "SELECT id, event_id, position, projection_name, event_type, event_data, \
     error_message, error_chain, attempts, first_failed_at, last_failed_at, status, \
     resolved_at, resolved_by FROM projection_dead_letters
     WHERE (?1 IS NULL OR projection_name = ?1)
       AND (?2 IS NULL OR status = ?2)
     ORDER BY first_failed_at, id
     LIMIT ?3";

const STATUS: &str = "SELECT status FROM projection_dead_letters WHERE id = ?1";

/// `?4` is now.
const SET_STATUS: &str = "UPDATE projection_dead_letters SET
         status = ?2,
         resolved_at = CASE WHEN ?2 = 'resolved' THEN ?4 ELSE resolved_at END,
         resolved_by = CASE WHEN ?2 = 'resolved' THEN ?3 ELSE resolved_by END
     WHERE id = ?1";

const STATS: &str = "SELECT
         count(CASE WHEN status = 'failed' THEN 1 END) AS failed,
         count(CASE WHEN status = 'retrying' THEN 1 END) AS retrying,
         count(CASE WHEN status = 'resolved' THEN 1 END) AS resolved,
         count(DISTINCT CASE WHEN status <> 'resolved' THEN projection_name END)
             AS affected_projections,
         min(CASE WHEN status <> 'resolved' THEN first_failed_at END) AS oldest_failure
     FROM projection_dead_letters";

const PROJECTION_COUNTS: &str = "SELECT projection_name, count(*) AS failures
     FROM projection_dead_letters
     WHERE status <> 'resolved'
     GROUP BY projection_name
     ORDER BY projection_name";

/// `?1` is the cut-off time.
const DELETE_RESOLVED: &str =
    "DELETE FROM projection_dead_letters WHERE status = 'resolved' AND resolved_at < ?1";

/// A day, in the stored unit.
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Dead letters in SQLite: one row per (event, projection) in `projection_dead_letters`, with
/// the same semantics as [`InMemoryDLQRepository`](crate::InMemoryDLQRepository): repeated
/// failures accumulate attempts and reopen the entry, lists are oldest first, status changes
/// are checked ([`DLQStatus::can_become`]) in a write transaction (`BEGIN IMMEDIATE`).
#[derive(Debug, Clone)]
pub struct SqliteDLQRepository {
    pool: SqlitePool,
}

impl SqliteDLQRepository {
    /// Dead letters on `pool`. The tables must exist: see [`migrate`](super::migrate).
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }

    /// The pool the repository works on.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Checks and makes a status change in a write transaction of its own.
    async fn transition(
        &self,
        id: i64,
        to: DLQStatus,
        resolved_by: Option<&str>,
    ) -> Result<(), StorageError> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(backend)?;
        transition_in(&mut tx, id, to, resolved_by).await?;
        tx.commit().await.map_err(backend)
    }
}

/// Checks and makes a status change on `conn`, which must be inside a write transaction so
/// that the check and the change are one step.
async fn transition_in(
    conn: &mut SqliteConnection,
    id: i64,
    to: DLQStatus,
    resolved_by: Option<&str>,
) -> Result<(), StorageError> {
    let status: Option<String> = sqlx::query_scalar(STATUS)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend)?;
    let from = match status {
        None => {
            return Err(StorageError::NotFound {
                what: format!("dead-letter entry {id}"),
            });
        }
        Some(status) => parse_status(&status)?,
    };
    if !from.can_become(to) {
        return Err(StorageError::InvalidTransition {
            id,
            from: from.as_str(),
            to: to.as_str(),
        });
    }
    sqlx::query(SET_STATUS)
        .bind(id)
        .bind(to.as_str())
        .bind(resolved_by)
        .bind(time::now())
        .execute(conn)
        .await
        .map_err(backend)?;
    Ok(())
}

/// Marks entry `id` resolved by `resolved_by` on `conn` (inside the caller's write
/// transaction).
pub(crate) async fn mark_resolved_in(
    conn: &mut SqliteConnection,
    id: i64,
    resolved_by: &str,
) -> Result<(), StorageError> {
    transition_in(conn, id, DLQStatus::Resolved, Some(resolved_by)).await
}

/// Records `failure` on `conn` (inside the caller's transaction, if any); returns the entry's
/// id.
pub(crate) async fn add_failed_event_in(
    conn: &mut SqliteConnection,
    failure: &FailedEvent,
) -> Result<i64, StorageError> {
    let position = failure
        .position
        .map(|p| to_i64(p, "event position"))
        .transpose()?;
    let event_data = serde_json::to_string(&failure.event_data).map_err(StorageError::backend)?;
    let error_chain = serde_json::to_string(&failure.error_chain).map_err(StorageError::backend)?;
    sqlx::query_scalar(ADD)
        .bind(failure.event_id.to_string())
        .bind(position)
        .bind(&failure.projection_name)
        .bind(&failure.event_type)
        .bind(event_data)
        .bind(&failure.error_message)
        .bind(error_chain)
        .bind(i64::from(failure.attempts))
        .bind(time::to_stored(failure.failed_at))
        .fetch_one(conn)
        .await
        .map_err(backend)
}

fn parse_status(status: &str) -> Result<DLQStatus, StorageError> {
    DLQStatus::parse(status)
        .ok_or_else(|| StorageError::Unreadable(format!("unknown dead-letter status `{status}`")))
}

fn entry(row: &SqliteRow) -> Result<DLQEntry, StorageError> {
    let id: i64 = row.try_get("id").map_err(backend)?;
    let unreadable = |what: &str| StorageError::Unreadable(format!("dead letter {id}: {what}"));
    let event_id: String = row.try_get("event_id").map_err(backend)?;
    let event_id = Uuid::parse_str(&event_id)
        .map_err(|_| unreadable(&format!("event_id `{event_id}` is not a UUID")))?;
    let position: Option<i64> = row.try_get("position").map_err(backend)?;
    let attempts: i64 = row.try_get("attempts").map_err(backend)?;
    let status: String = row.try_get("status").map_err(backend)?;
    let event_data: String = row.try_get("event_data").map_err(backend)?;
    let event_data = serde_json::from_str(&event_data)
        .map_err(|e| unreadable(&format!("event_data is not JSON: {e}")))?;
    let error_chain: String = row.try_get("error_chain").map_err(backend)?;
    let error_chain = serde_json::from_str(&error_chain)
        .map_err(|e| unreadable(&format!("error_chain is not an array of strings: {e}")))?;
    let time = |column: &str| -> Result<Option<chrono::DateTime<chrono::Utc>>, StorageError> {
        let micros: Option<i64> = row.try_get(column).map_err(backend)?;
        micros
            .map(|micros| time::from_stored(micros, &format_args!("{column} of dead letter {id}")))
            .transpose()
    };
    let required =
        |column: &str| time(column)?.ok_or_else(|| unreadable(&format!("{column} is missing")));
    Ok(DLQEntry {
        id,
        event_id,
        position: position.map(|p| to_u64(p, "event position")).transpose()?,
        projection_name: row.try_get("projection_name").map_err(backend)?,
        event_type: row.try_get("event_type").map_err(backend)?,
        event_data,
        error_message: row.try_get("error_message").map_err(backend)?,
        error_chain,
        attempts: u32::try_from(attempts)
            .map_err(|_| unreadable(&format!("attempts {attempts} is not a u32")))?,
        first_failed_at: required("first_failed_at")?,
        last_failed_at: required("last_failed_at")?,
        status: parse_status(&status)?,
        resolved_at: time("resolved_at")?,
        resolved_by: row.try_get("resolved_by").map_err(backend)?,
    })
}

impl DLQRepository for SqliteDLQRepository {
    fn add_failed_event(&self, failure: FailedEvent) -> BoxFuture<'_, Result<i64, StorageError>> {
        Box::pin(async move {
            let mut conn = self.pool.acquire().await.map_err(backend)?;
            add_failed_event_in(&mut conn, &failure).await
        })
    }

    fn get_failed_events(
        &self,
        filter: DLQFilter,
    ) -> BoxFuture<'_, Result<Vec<DLQEntry>, StorageError>> {
        Box::pin(async move {
            let limit = filter
                .limit
                .map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
            let rows = sqlx::query(LIST)
                .bind(filter.projection_name.as_deref())
                .bind(filter.status.map(DLQStatus::as_str))
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
            rows.iter().map(entry).collect()
        })
    }

    fn get_by_id(&self, id: i64) -> BoxFuture<'_, Result<Option<DLQEntry>, StorageError>> {
        Box::pin(async move {
            let sql = format!("SELECT {ENTRY_COLUMNS} FROM projection_dead_letters WHERE id = ?1");
            let row = sqlx::query(&sql)
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
            row.as_ref().map(entry).transpose()
        })
    }

    fn mark_retrying(&self, id: i64) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(self.transition(id, DLQStatus::Retrying, None))
    }

    fn mark_resolved<'a>(
        &'a self,
        id: i64,
        resolved_by: &'a str,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(self.transition(id, DLQStatus::Resolved, Some(resolved_by)))
    }

    fn get_stats(&self) -> BoxFuture<'_, Result<DLQStats, StorageError>> {
        Box::pin(async move {
            let row = sqlx::query(STATS)
                .fetch_one(&self.pool)
                .await
                .map_err(backend)?;
            let count = |column: &str| -> Result<u64, StorageError> {
                to_u64(row.try_get(column).map_err(backend)?, "count")
            };
            let oldest: Option<i64> = row.try_get("oldest_failure").map_err(backend)?;
            Ok(DLQStats {
                failed: count("failed")?,
                retrying: count("retrying")?,
                resolved: count("resolved")?,
                affected_projections: count("affected_projections")?,
                oldest_failure: oldest
                    .map(|micros| {
                        time::from_stored(
                            micros,
                            &"first_failed_at of the oldest unresolved dead letter",
                        )
                    })
                    .transpose()?,
            })
        })
    }

    fn get_projection_counts(&self) -> BoxFuture<'_, Result<Vec<(String, u64)>, StorageError>> {
        Box::pin(async move {
            let rows = sqlx::query(PROJECTION_COUNTS)
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
            rows.iter()
                .map(|row| {
                    Ok((
                        row.try_get("projection_name").map_err(backend)?,
                        to_u64(row.try_get("failures").map_err(backend)?, "count")?,
                    ))
                })
                .collect()
        })
    }

    fn delete_resolved(&self, older_than_days: u32) -> BoxFuture<'_, Result<u64, StorageError>> {
        Box::pin(async move {
            // Saturates: far enough in the past is before every stored time.
            let age = i64::from(older_than_days).saturating_mul(MICROS_PER_DAY);
            let cutoff = time::now().saturating_sub(age);
            let deleted = sqlx::query(DELETE_RESOLVED)
                .bind(cutoff)
                .execute(&self.pool)
                .await
                .map_err(backend)?;
            Ok(deleted.rows_affected())
        })
    }
}
