//! Dead letters in PostgreSQL (table `projection_dead_letters`).

use std::sync::{Arc, LazyLock};

use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{Acquire, Executor, PgConnection, PgPool, Postgres, Row};

use super::{Schema, backend, timestamp, to_i64, to_u64};
use crate::dlq::{DLQEntry, DLQFilter, DLQRepository, DLQStats, DLQStatus, FailedEvent};
use crate::storage::{BoxFuture, StorageError};

/// The dead-letter table.
const DEAD_LETTERS_TABLE: &str = "projection_dead_letters";

const ENTRY_COLUMNS: &str = "id, event_id, position, projection_name, event_type, event_data, \
     error_message, error_chain, attempts, first_failed_at, last_failed_at, status, \
     resolved_at, resolved_by";

/// The statements, formatted once with the schema's table name.
#[derive(Debug)]
struct Sql {
    add: String,
    list: String,
    get: String,
    lock_status: String,
    set_status: String,
    stats: String,
    projection_counts: String,
    delete_resolved: String,
}

impl Sql {
    fn new(schema: &Schema) -> Self {
        let table = schema.table(DEAD_LETTERS_TABLE);
        Self {
            // One entry per (event, projection): a new failure adds its attempts (saturating
            // at the column's maximum), replaces the error, and reopens the entry.
            add: format!(
                "INSERT INTO {table} AS d (
                     event_id, position, projection_name, event_type, event_data, error_message,
                     error_chain, attempts, first_failed_at, last_failed_at, status
                 )
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, 'failed')
                 ON CONFLICT (event_id, projection_name) DO UPDATE SET
                     attempts = LEAST(d.attempts::bigint + EXCLUDED.attempts, 2147483647)::integer,
                     error_message = EXCLUDED.error_message,
                     error_chain = EXCLUDED.error_chain,
                     last_failed_at = EXCLUDED.last_failed_at,
                     status = 'failed',
                     resolved_at = NULL,
                     resolved_by = NULL,
                     position = COALESCE(EXCLUDED.position, d.position),
                     event_data = EXCLUDED.event_data
                 RETURNING id"
            ),
            list: format!(
                "SELECT {ENTRY_COLUMNS} FROM {table}
                 WHERE ($1::text IS NULL OR projection_name = $1)
                   AND ($2::text IS NULL OR status = $2)
                 ORDER BY first_failed_at, id
                 LIMIT $3"
            ),
            get: format!("SELECT {ENTRY_COLUMNS} FROM {table} WHERE id = $1"),
            lock_status: format!("SELECT status FROM {table} WHERE id = $1 FOR UPDATE"),
            set_status: format!(
                "UPDATE {table} SET
                     status = $2,
                     resolved_at = CASE WHEN $2 = 'resolved' THEN now() ELSE resolved_at END,
                     resolved_by = CASE WHEN $2 = 'resolved' THEN $3 ELSE resolved_by END
                 WHERE id = $1"
            ),
            stats: format!(
                "SELECT count(*) FILTER (WHERE status = 'failed') AS failed,
                        count(*) FILTER (WHERE status = 'retrying') AS retrying,
                        count(*) FILTER (WHERE status = 'resolved') AS resolved,
                        count(DISTINCT projection_name) FILTER (WHERE status <> 'resolved')
                            AS affected_projections,
                        min(first_failed_at) FILTER (WHERE status <> 'resolved') AS oldest_failure
                 FROM {table}"
            ),
            projection_counts: format!(
                "SELECT projection_name, count(*) AS failures FROM {table}
                 WHERE status <> 'resolved'
                 GROUP BY projection_name
                 ORDER BY projection_name COLLATE \"C\""
            ),
            delete_resolved: format!(
                "DELETE FROM {table}
                 WHERE status = 'resolved' AND resolved_at < now() - make_interval(days => $1)"
            ),
        }
    }
}

/// The statements for the connection's `search_path`, used by the free functions.
static DEFAULT_SQL: LazyLock<Arc<Sql>> = LazyLock::new(|| Arc::new(Sql::new(&Schema::default())));

/// Dead letters in PostgreSQL: one row per (event, projection) in `projection_dead_letters`,
/// with the same semantics as [`InMemoryDLQRepository`](crate::InMemoryDLQRepository):
/// repeated failures accumulate attempts and reopen the entry, lists are oldest first, status
/// changes are checked ([`DLQStatus::can_become`]).
///
/// To record a failure (or resolve an entry) in the same transaction as a batch of read-model
/// writes, use [`add_failed_event_in`](Self::add_failed_event_in),
/// [`mark_resolved_in`](Self::mark_resolved_in) or [`mark_retrying_in`](Self::mark_retrying_in)
/// with the transaction's connection.
#[derive(Debug, Clone)]
pub struct PostgreSQLDLQRepository {
    pool: PgPool,
    sql: Arc<Sql>,
}

impl PostgreSQLDLQRepository {
    /// Dead letters on `pool`, in the connection's `search_path`.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            sql: Arc::clone(&DEFAULT_SQL),
        }
    }

    /// Dead letters on `pool`, in `schema`.
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

    /// [`add_failed_event_in`] in this repository's schema.
    pub async fn add_failed_event_in(
        &self,
        conn: &mut PgConnection,
        failure: &FailedEvent,
    ) -> Result<i64, StorageError> {
        add(&self.sql, conn, failure).await
    }

    /// [`mark_retrying_in`] in this repository's schema.
    pub async fn mark_retrying_in(
        &self,
        conn: &mut PgConnection,
        id: i64,
    ) -> Result<(), StorageError> {
        transition(&self.sql, conn, id, DLQStatus::Retrying, None).await
    }

    /// [`mark_resolved_in`] in this repository's schema.
    pub async fn mark_resolved_in(
        &self,
        conn: &mut PgConnection,
        id: i64,
        resolved_by: &str,
    ) -> Result<(), StorageError> {
        transition(&self.sql, conn, id, DLQStatus::Resolved, Some(resolved_by)).await
    }

    /// Changes the status in a transaction of its own.
    async fn transition_now(
        &self,
        id: i64,
        to: DLQStatus,
        resolved_by: Option<&str>,
    ) -> Result<(), StorageError> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        let mut tx = conn.begin().await.map_err(backend)?;
        transition(&self.sql, &mut tx, id, to, resolved_by).await?;
        tx.commit().await.map_err(backend)
    }
}

/// Records a failure as [`DLQRepository::add_failed_event`] does, on `conn` and in its
/// transaction (nothing is committed here), and returns the entry's id. Works in the
/// connection's `search_path`; the repository's method of the same name works in its schema.
pub async fn add_failed_event_in(
    conn: &mut PgConnection,
    failure: &FailedEvent,
) -> Result<i64, StorageError> {
    add(&DEFAULT_SQL, conn, failure).await
}

/// Marks entry `id` as being replayed, as [`DLQRepository::mark_retrying`] does, on `conn` and
/// in its transaction: [`StorageError::NotFound`] if there is no such entry,
/// [`StorageError::InvalidTransition`] if its status does not allow it. Works in the
/// connection's `search_path`; the repository's method of the same name works in its schema.
pub async fn mark_retrying_in(conn: &mut PgConnection, id: i64) -> Result<(), StorageError> {
    transition(&DEFAULT_SQL, conn, id, DLQStatus::Retrying, None).await
}

/// Marks entry `id` as done with, by `resolved_by`, as [`DLQRepository::mark_resolved`] does,
/// on `conn` and in its transaction (a replay that succeeded resolves its entry together with
/// the read-model writes). Errors as [`mark_retrying_in`]. Works in the connection's
/// `search_path`; the repository's method of the same name works in its schema.
pub async fn mark_resolved_in(
    conn: &mut PgConnection,
    id: i64,
    resolved_by: &str,
) -> Result<(), StorageError> {
    transition(
        &DEFAULT_SQL,
        conn,
        id,
        DLQStatus::Resolved,
        Some(resolved_by),
    )
    .await
}

/// Locks the entry, checks the transition and makes it.
async fn transition(
    sql: &Sql,
    conn: &mut PgConnection,
    id: i64,
    to: DLQStatus,
    resolved_by: Option<&str>,
) -> Result<(), StorageError> {
    let status: Option<String> = sqlx::query_scalar(&sql.lock_status)
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
    sqlx::query(&sql.set_status)
        .bind(id)
        .bind(to.as_str())
        .bind(resolved_by)
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    Ok(())
}

async fn add<'c>(
    sql: &Sql,
    executor: impl Executor<'c, Database = Postgres>,
    failure: &FailedEvent,
) -> Result<i64, StorageError> {
    let position = failure
        .position
        .map(|p| to_i64(p, "event position"))
        .transpose()?;
    let attempts = i32::try_from(failure.attempts).unwrap_or(i32::MAX);
    sqlx::query_scalar(&sql.add)
        .bind(failure.event_id)
        .bind(position)
        .bind(&failure.projection_name)
        .bind(&failure.event_type)
        .bind(Json(&failure.event_data))
        .bind(&failure.error_message)
        .bind(Json(&failure.error_chain))
        .bind(attempts)
        .bind(failure.failed_at)
        .fetch_one(executor)
        .await
        .map_err(backend)
}

fn parse_status(status: &str) -> Result<DLQStatus, StorageError> {
    DLQStatus::parse(status)
        .ok_or_else(|| StorageError::Unreadable(format!("unknown dead-letter status `{status}`")))
}

fn entry(row: &PgRow) -> Result<DLQEntry, StorageError> {
    let id: i64 = row.try_get("id").map_err(backend)?;
    let position: Option<i64> = row.try_get("position").map_err(backend)?;
    let attempts: i32 = row.try_get("attempts").map_err(backend)?;
    let status: String = row.try_get("status").map_err(backend)?;
    let Json(error_chain) = row
        .try_get::<Json<Vec<String>>, _>("error_chain")
        .map_err(backend)?;
    Ok(DLQEntry {
        id,
        event_id: row.try_get("event_id").map_err(backend)?,
        position: position.map(|p| to_u64(p, "event position")).transpose()?,
        projection_name: row.try_get("projection_name").map_err(backend)?,
        event_type: row.try_get("event_type").map_err(backend)?,
        event_data: row
            .try_get::<Json<serde_json::Value>, _>("event_data")
            .map_err(backend)?
            .0,
        error_message: row.try_get("error_message").map_err(backend)?,
        error_chain,
        attempts: u32::try_from(attempts).map_err(|_| {
            StorageError::Unreadable(format!("stored attempts are negative: {attempts}"))
        })?,
        first_failed_at: timestamp::get(
            row,
            "first_failed_at",
            &format_args!("first_failed_at of dead letter {id}"),
        )?,
        last_failed_at: timestamp::get(
            row,
            "last_failed_at",
            &format_args!("last_failed_at of dead letter {id}"),
        )?,
        status: parse_status(&status)?,
        resolved_at: timestamp::get_optional(
            row,
            "resolved_at",
            &format_args!("resolved_at of dead letter {id}"),
        )?,
        resolved_by: row.try_get("resolved_by").map_err(backend)?,
    })
}

impl DLQRepository for PostgreSQLDLQRepository {
    fn add_failed_event(&self, failure: FailedEvent) -> BoxFuture<'_, Result<i64, StorageError>> {
        Box::pin(async move { add(&self.sql, &self.pool, &failure).await })
    }

    fn get_failed_events(
        &self,
        filter: DLQFilter,
    ) -> BoxFuture<'_, Result<Vec<DLQEntry>, StorageError>> {
        Box::pin(async move {
            let limit = filter.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
            let rows = sqlx::query(&self.sql.list)
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
            let row = sqlx::query(&self.sql.get)
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
            row.as_ref().map(entry).transpose()
        })
    }

    fn mark_retrying(&self, id: i64) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(self.transition_now(id, DLQStatus::Retrying, None))
    }

    fn mark_resolved<'a>(
        &'a self,
        id: i64,
        resolved_by: &'a str,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(self.transition_now(id, DLQStatus::Resolved, Some(resolved_by)))
    }

    fn get_stats(&self) -> BoxFuture<'_, Result<DLQStats, StorageError>> {
        Box::pin(async move {
            let row = sqlx::query(&self.sql.stats)
                .fetch_one(&self.pool)
                .await
                .map_err(backend)?;
            let count = |column: &str| -> Result<u64, StorageError> {
                to_u64(row.try_get(column).map_err(backend)?, "count")
            };
            Ok(DLQStats {
                failed: count("failed")?,
                retrying: count("retrying")?,
                resolved: count("resolved")?,
                affected_projections: count("affected_projections")?,
                oldest_failure: timestamp::get_optional(
                    &row,
                    "oldest_failure",
                    &"first_failed_at of the oldest unresolved dead letter",
                )?,
            })
        })
    }

    fn get_projection_counts(&self) -> BoxFuture<'_, Result<Vec<(String, u64)>, StorageError>> {
        Box::pin(async move {
            let rows = sqlx::query(&self.sql.projection_counts)
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
            // Older than any timestamp the table can hold, and far from PostgreSQL's limits.
            let days = i32::try_from(older_than_days.min(1_000_000)).unwrap_or(1_000_000);
            let deleted = sqlx::query(&self.sql.delete_resolved)
                .bind(days)
                .execute(&self.pool)
                .await
                .map_err(backend)?;
            Ok(deleted.rows_affected())
        })
    }
}
