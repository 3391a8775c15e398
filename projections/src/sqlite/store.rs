//! The event store on SQLite: appends in one write transaction, positions gap-free from 1.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use sqlx::sqlite::SqliteRow;
use sqlx::{Connection, Row, SqliteConnection, SqlitePool};
use tokio::sync::watch;
use uuid::Uuid;

use super::{OpenError, backend, time, to_i64, to_u64};
use crate::event::{AnyEvent, DecodeError, EventMetadata, EventRegistry};
use crate::storage::{BoxFuture, StorageError};
use crate::store::{
    AppendError, AppendResult, Backlog, EventStore, ExpectedVersion, ReadFilter, ReadPage,
    StoredEvent, UndecodableEvent, check_append,
};

/// The columns a stored event is decoded from.
const COLUMNS: &str = "position, event_id, aggregate_id, aggregate_type, aggregate_version, \
     event_type, event_version, payload, metadata, tenant_id, actor_id, correlation_id, \
     causation_id, occurred_at, stored_at";

const STREAM_VERSION: &str =
    "SELECT coalesce(max(aggregate_version), 0) FROM projection_events WHERE aggregate_id = ?1";

const HEAD: &str = "SELECT coalesce(max(position), 0) FROM projection_events";

const INSERT: &str = "INSERT INTO projection_events (
         position, event_id, aggregate_id, aggregate_type, aggregate_version, event_type,
         event_version, payload, metadata, tenant_id, actor_id, correlation_id, causation_id,
         occurred_at, stored_at
     )
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)";

/// `?1`: the position after which to count; `?2`: the event types as a JSON array, or null
/// for every type.
const BACKLOG: &str = "SELECT (SELECT coalesce(max(position), 0) FROM projection_events) AS head,
            count(*) AS events,
            min(stored_at) AS oldest
     FROM projection_events
     WHERE position > ?1
       AND (?2 IS NULL OR event_type IN (SELECT value FROM json_each(?2)))";

/// A filtered read looks at positions up to this many pages ahead (`limit` each).
const READ_WINDOW_PAGES: u64 = 100;

/// The smallest window of a filtered read, in positions.
const MIN_READ_WINDOW: u64 = 10_000;

/// The conditions of a filtered read or backlog (after `WHERE position > ?1 AND position <=
/// ?2`): `?3` the event types as a JSON array (null: every type), `?4` the aggregate types,
/// `?5` the types this program knows, a type outside them being selected (null: none is),
/// `?6` the tenants (null: every tenant, or those of a predicate, which the reader evaluates),
/// `?7` whether events without a tenant are selected.
const FILTER: &str = "
       AND (?3 IS NULL
            OR event_type IN (SELECT value FROM json_each(?3))
            OR aggregate_type IN (SELECT value FROM json_each(?4))
            OR (?5 IS NOT NULL AND event_type NOT IN (SELECT value FROM json_each(?5))))
       AND ((?6 IS NULL AND tenant_id IS NOT NULL)
            OR tenant_id IN (SELECT value FROM json_each(?6))
            OR (?7 AND tenant_id IS NULL))";

/// The parameters `?3` to `?7` of [`FILTER`] for `filter`; a backlog leaves out types the
/// program does not know (`unknown_types` false).
struct FilterParams {
    types: Option<String>,
    aggregates: String,
    known: Option<String>,
    tenants: Option<String>,
    untenanted: bool,
}

impl FilterParams {
    fn of(filter: &ReadFilter, unknown_types: bool) -> Result<Self, StorageError> {
        let types = filter.types();
        let known = match types {
            Some(types) if unknown_types => {
                let mut known = EventRegistry::global().event_types();
                known.extend(types.iter().copied());
                Some(json(&known)?)
            }
            _ => None,
        };
        let tenants = filter
            .tenant()
            .tenants()
            .map(|tenants| {
                let text: Vec<String> = tenants.iter().map(Uuid::to_string).collect();
                json(&text[..])
            })
            .transpose()?;
        Ok(Self {
            types: types.map(|types| json(&types)).transpose()?,
            aggregates: json(&filter.aggregate_types())?,
            known,
            tenants,
            untenanted: filter.tenant().admits_untenanted(),
        })
    }

    fn bind<'q>(
        &'q self,
        query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    ) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
        query
            .bind(self.types.as_deref())
            .bind(self.aggregates.as_str())
            .bind(self.known.as_deref())
            .bind(self.tenants.as_deref())
            .bind(self.untenanted)
    }
}

/// A value as JSON text, for `json_each`.
fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, StorageError> {
    serde_json::to_string(value).map_err(StorageError::backend)
}

/// An event store in a SQLite database (table `projection_events`, see
/// [`migrate`](super::migrate)).
///
/// Cloning is cheap; clones share the pool and the head notifier.
///
/// # Appends and positions
///
/// An append is one `BEGIN IMMEDIATE` transaction: it takes SQLite's write lock first (waiting
/// up to the busy timeout for another writer), checks the expected version, numbers the batch
/// after the largest stored position and inserts it. SQLite has a single writer, so appends
/// commit one after another in position order: positions are consecutive from 1, an append
/// that fails or conflicts writes nothing and leaves no gap, and a reader sees positions in
/// order; no position can appear below one already read. `read_all`, `head_position` and
/// `backlog` therefore read every committed row, with no read horizon.
///
/// # Notifications
///
/// [`subscribe`](EventStore::subscribe) gives a receiver of the head position that changes
/// after every append made through this store or its clones. Appends by another store value
/// or another process on the same file are not announced: readers also poll.
///
/// # Decoding
///
/// Rows decode through [`EventRegistry::global`]. A row of an unknown type, or whose payload,
/// metadata, ids or times do not decode, comes back as [`StoredEvent::Undecodable`] with the
/// whole row as JSON, never as an error of the read.
#[derive(Debug, Clone)]
pub struct SqliteEventStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: SqlitePool,
    head: watch::Sender<u64>,
}

impl SqliteEventStore {
    /// A store on `pool`. The tables must exist: see [`migrate`](super::migrate).
    pub fn new(pool: SqlitePool) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                head: watch::Sender::new(0),
            }),
        }
    }

    /// Opens (creating it if missing) the database file at `path` with
    /// [`connect_options`](super::connect_options), applies the crate's migrations and returns
    /// a store on a new pool; see [`open`](super::open).
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        Ok(Self::new(super::open(path).await?))
    }

    /// The pool the store works on.
    pub fn pool(&self) -> &SqlitePool {
        &self.inner.pool
    }

    /// The version of `aggregate_id`: the number of its events, 0 when it has none.
    pub async fn stream_version(&self, aggregate_id: Uuid) -> Result<u64, StorageError> {
        let version: i64 = sqlx::query_scalar(STREAM_VERSION)
            .bind(aggregate_id.to_string())
            .fetch_one(&self.inner.pool)
            .await
            .map_err(backend)?;
        to_u64(version, "aggregate version")
    }

    async fn append_batch(
        &self,
        aggregate_id: Uuid,
        expected: ExpectedVersion,
        events: Vec<AnyEvent>,
    ) -> Result<AppendResult, AppendError> {
        check_append(aggregate_id, &events)?;
        let rows = events
            .iter()
            .map(EventColumns::of)
            .collect::<Result<Vec<_>, _>>()?;
        let conflict = |actual| AppendError::Conflict {
            aggregate_id,
            expected,
            actual,
        };
        let matches = |actual: u64| match expected {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::Exact(version) => actual == version,
        };
        if rows.is_empty() {
            let actual = self.stream_version(aggregate_id).await?;
            if !matches(actual) {
                return Err(conflict(actual));
            }
            return Ok(AppendResult {
                first_position: 0,
                last_position: 0,
                version: actual,
            });
        }

        let aggregate = aggregate_id.to_string();
        let mut conn = self.inner.pool.acquire().await.map_err(backend)?;
        // The write lock first: nothing read below can change before the commit.
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(backend)?;
        let actual: i64 = sqlx::query_scalar(STREAM_VERSION)
            .bind(&aggregate)
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        let actual = to_u64(actual, "aggregate version")?;
        if !matches(actual) {
            // Dropping the transaction rolls it back: nothing was written.
            return Err(conflict(actual));
        }
        let head: i64 = sqlx::query_scalar(HEAD)
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        let stored_at = time::now();
        let count = to_i64(rows.len() as u64, "batch size")?;
        let full = || StorageError::Invalid {
            what: "position",
            reason: "the event store has no positions left".to_owned(),
        };
        let first = head.checked_add(1).ok_or_else(full)?;
        let last = first.checked_add(count - 1).ok_or_else(full)?;
        let base_version = to_i64(actual, "aggregate version")?;
        for (offset, row) in (0..count).zip(&rows) {
            let inserted = insert(
                &mut tx,
                first + offset,
                base_version + offset + 1,
                &aggregate,
                row,
                stored_at,
            )
            .await;
            if let Err(error) = inserted {
                // A trigger's `RAISE(ROLLBACK, ...)` or an I/O error may have ended the
                // transaction already; see `rollback`. The insert's error is the one to report.
                let _ = super::rollback(tx).await;
                return Err(error.into());
            }
        }
        tx.commit().await.map_err(backend)?;

        let last = to_u64(last, "position")?;
        self.inner.head.send_if_modified(|head| {
            let moved = *head < last;
            *head = (*head).max(last);
            moved
        });
        Ok(AppendResult {
            first_position: to_u64(first, "position")?,
            last_position: last,
            version: actual + rows.len() as u64,
        })
    }

    async fn fetch_events<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    ) -> Result<Vec<StoredEvent>, StorageError> {
        let rows = query.fetch_all(&self.inner.pool).await.map_err(backend)?;
        rows.iter().map(decode_row).collect()
    }
}

async fn insert(
    conn: &mut SqliteConnection,
    position: i64,
    aggregate_version: i64,
    aggregate_id: &str,
    row: &EventColumns,
    stored_at: i64,
) -> Result<(), StorageError> {
    sqlx::query(INSERT)
        .bind(position)
        .bind(&row.event_id)
        .bind(aggregate_id)
        .bind(&row.aggregate_type)
        .bind(aggregate_version)
        .bind(&row.event_type)
        .bind(row.event_version)
        .bind(&row.payload)
        .bind(&row.metadata)
        .bind(&row.tenant_id)
        .bind(&row.actor_id)
        .bind(&row.correlation_id)
        .bind(&row.causation_id)
        .bind(row.occurred_at)
        .bind(stored_at)
        .execute(conn)
        .await
        .map_err(backend)?;
    Ok(())
}

impl EventStore for SqliteEventStore {
    fn append(
        &self,
        aggregate_id: Uuid,
        expected: ExpectedVersion,
        events: Vec<AnyEvent>,
    ) -> BoxFuture<'_, Result<AppendResult, AppendError>> {
        Box::pin(self.append_batch(aggregate_id, expected, events))
    }

    fn read_stream(
        &self,
        aggregate_id: Uuid,
    ) -> BoxFuture<'_, Result<Vec<StoredEvent>, StorageError>> {
        Box::pin(async move {
            let sql = format!(
                "SELECT {COLUMNS} FROM projection_events WHERE aggregate_id = ?1
                 ORDER BY aggregate_version"
            );
            self.fetch_events(sqlx::query(&sql).bind(aggregate_id.to_string()))
                .await
        })
    }

    fn read_all(
        &self,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredEvent>, StorageError>> {
        Box::pin(async move {
            // Nothing lies beyond the largest integer.
            let Ok(after) = i64::try_from(after) else {
                return Ok(Vec::new());
            };
            if limit == 0 {
                return Ok(Vec::new());
            }
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let sql = format!(
                "SELECT {COLUMNS} FROM projection_events WHERE position > ?1
                 ORDER BY position LIMIT ?2"
            );
            self.fetch_events(sqlx::query(&sql).bind(after).bind(limit))
                .await
        })
    }

    /// Selects in the query, within a window of positions after `after` (at most 100 pages'
    /// worth): the rows passed over are neither sent nor decoded. SQLite commits appends in
    /// position order, so the read goes up to the head it saw first.
    fn read_filtered<'a>(
        &'a self,
        after: u64,
        limit: usize,
        filter: &'a ReadFilter,
    ) -> BoxFuture<'a, Result<ReadPage, StorageError>> {
        Box::pin(async move {
            let (Ok(after_sql), Ok(limit_sql)) = (i64::try_from(after), i64::try_from(limit))
            else {
                return Ok(ReadPage::new(Vec::new(), after, true));
            };
            if limit == 0 {
                return Ok(ReadPage::new(Vec::new(), after, true));
            }
            // Every position up to the head is committed: appends commit in position order.
            let head: i64 = sqlx::query_scalar(HEAD)
                .fetch_one(&self.inner.pool)
                .await
                .map_err(backend)?;
            let head = to_u64(head, "position")?;
            let window = (limit as u64)
                .saturating_mul(READ_WINDOW_PAGES)
                .max(MIN_READ_WINDOW);
            let end = head.min(after.saturating_add(window));
            if end <= after {
                return Ok(ReadPage::new(Vec::new(), after, true));
            }
            let params = FilterParams::of(filter, true)?;
            let sql = format!(
                "SELECT {COLUMNS} FROM projection_events
                 WHERE position > ?1 AND position <= ?2{FILTER}
                 ORDER BY position LIMIT ?8"
            );
            let query = sqlx::query(&sql)
                .bind(after_sql)
                .bind(i64::try_from(end).unwrap_or(i64::MAX));
            let events = self
                .fetch_events(params.bind(query).bind(limit_sql))
                .await?;
            if events.len() == limit {
                let read_to = events
                    .last()
                    .and_then(StoredEvent::position)
                    .unwrap_or(after)
                    .max(after);
                return Ok(ReadPage::new(events, read_to, false));
            }
            Ok(ReadPage::new(events, end, end >= head))
        })
    }

    fn head_position(&self) -> BoxFuture<'_, Result<u64, StorageError>> {
        Box::pin(async move {
            let head: i64 = sqlx::query_scalar(HEAD)
                .fetch_one(&self.inner.pool)
                .await
                .map_err(backend)?;
            to_u64(head, "position")
        })
    }

    fn backlog<'a>(
        &'a self,
        after: u64,
        event_types: &'a [&'static str],
    ) -> BoxFuture<'a, Result<Backlog, StorageError>> {
        Box::pin(async move {
            let after = i64::try_from(after).unwrap_or(i64::MAX);
            let types = if event_types.is_empty() {
                None
            } else {
                Some(serde_json::to_string(event_types).map_err(StorageError::backend)?)
            };
            let row = sqlx::query(BACKLOG)
                .bind(after)
                .bind(types)
                .fetch_one(&self.inner.pool)
                .await
                .map_err(backend)?;
            backlog_of(&row, after)
        })
    }

    fn backlog_filtered<'a>(
        &'a self,
        after: u64,
        filter: &'a ReadFilter,
    ) -> BoxFuture<'a, Result<Backlog, StorageError>> {
        Box::pin(async move {
            let after = i64::try_from(after).unwrap_or(i64::MAX);
            let params = FilterParams::of(filter, false)?;
            let sql = format!(
                "SELECT (SELECT coalesce(max(position), 0) FROM projection_events) AS head,
                        count(*) AS events,
                        min(stored_at) AS oldest
                 FROM projection_events
                 WHERE position > ?1 AND position <= ?2{FILTER}"
            );
            let query = sqlx::query(&sql).bind(after).bind(i64::MAX);
            let row = params
                .bind(query)
                .fetch_one(&self.inner.pool)
                .await
                .map_err(backend)?;
            backlog_of(&row, after)
        })
    }

    /// A receiver of the head position, changed by every append made through this store (or
    /// a clone of it). Appends by other processes are not announced: treat a change as a
    /// wake-up and keep polling with `read_all`.
    fn subscribe(&self) -> Option<watch::Receiver<u64>> {
        Some(self.inner.head.subscribe())
    }
}

/// The backlog in a row of `head`, `events` and `oldest`.
fn backlog_of(row: &SqliteRow, after: i64) -> Result<Backlog, StorageError> {
    let head = to_u64(row.try_get("head").map_err(backend)?, "position")?;
    let events = to_u64(row.try_get("events").map_err(backend)?, "count")?;
    let oldest: Option<i64> = row.try_get("oldest").map_err(backend)?;
    let oldest = oldest
        .map(|micros| {
            time::from_stored(
                micros,
                &format_args!("stored_at of the oldest event after position {after}"),
            )
        })
        .transpose()?;
    Ok(Backlog::new(head, events, oldest))
}

/// One event as its row's columns, apart from position, aggregate and version.
struct EventColumns {
    event_id: String,
    aggregate_type: String,
    event_type: String,
    event_version: i64,
    payload: String,
    metadata: String,
    tenant_id: Option<String>,
    actor_id: Option<String>,
    correlation_id: String,
    causation_id: Option<String>,
    occurred_at: i64,
}

impl EventColumns {
    fn of(event: &AnyEvent) -> Result<Self, StorageError> {
        let meta = event.metadata();
        let invalid = |what: &'static str, error: &dyn std::fmt::Display| StorageError::Invalid {
            what,
            reason: format!("event {} ({}): {error}", meta.event_id, meta.event_type),
        };
        let payload = event
            .payload_json()
            .and_then(|value| serde_json::to_string(&value))
            .map_err(|e| invalid("event payload", &e))?;
        let metadata =
            serde_json::to_string(&meta.metadata).map_err(|e| invalid("event metadata", &e))?;
        Ok(Self {
            event_id: meta.event_id.to_string(),
            aggregate_type: meta.aggregate_type.clone(),
            event_type: meta.event_type.clone(),
            event_version: i64::from(meta.event_version),
            payload,
            metadata,
            tenant_id: meta.tenant_id.map(|id| id.to_string()),
            actor_id: meta.actor_id.clone(),
            correlation_id: meta.correlation_id.to_string(),
            causation_id: meta.causation_id.map(|id| id.to_string()),
            occurred_at: time::to_stored(meta.occurred_at),
        })
    }
}

/// Decodes one row of [`COLUMNS`]. Columns of the wrong type are a backend error (the table is
/// not ours); content that does not decode is an [`UndecodableEvent`].
fn decode_row(row: &SqliteRow) -> Result<StoredEvent, StorageError> {
    let position = to_u64(row.try_get("position").map_err(backend)?, "position")?;
    let event_id_text: String = row.try_get("event_id").map_err(backend)?;
    let event_type: String = row.try_get("event_type").map_err(backend)?;

    let undecodable = |event_id: Uuid, event_type: String, error: DecodeError| {
        StoredEvent::Undecodable(UndecodableEvent {
            position,
            event_id,
            event_type,
            raw: raw_row(row),
            error,
        })
    };
    let malformed = |event_type: &str, message: String| DecodeError::Payload {
        event_type: event_type.to_owned(),
        type_name: "EventMetadata",
        source: <serde_json::Error as serde::de::Error>::custom(message),
    };

    let Ok(event_id) = Uuid::parse_str(&event_id_text) else {
        let error = malformed(
            &event_type,
            format!("event_id `{event_id_text}` is not a UUID"),
        );
        return Ok(undecodable(Uuid::nil(), event_type, error));
    };
    let fail = |message: String| -> Result<StoredEvent, StorageError> {
        let error = malformed(&event_type, message);
        Ok(undecodable(event_id, event_type.clone(), error))
    };
    let event_version: i64 = row.try_get("event_version").map_err(backend)?;
    let Ok(event_version) = u32::try_from(event_version) else {
        return fail(format!("event_version {event_version} is not a u32"));
    };
    let aggregate_version: i64 = row.try_get("aggregate_version").map_err(backend)?;
    let Ok(aggregate_version) = u64::try_from(aggregate_version) else {
        return fail(format!("negative aggregate_version {aggregate_version}"));
    };
    let occurred_at: i64 = row.try_get("occurred_at").map_err(backend)?;
    let Some(occurred_at) = time::parse(occurred_at) else {
        return fail(format!(
            "occurred_at is {occurred_at} microseconds from 1970, which a DateTime<Utc> cannot \
             hold"
        ));
    };
    let mut ids = BTreeMap::new();
    for column in ["aggregate_id", "correlation_id"] {
        let text: String = row.try_get(column).map_err(backend)?;
        match Uuid::parse_str(&text) {
            Ok(id) => ids.insert(column, Some(id)),
            Err(_) => return fail(format!("{column} `{text}` is not a UUID")),
        };
    }
    for column in ["tenant_id", "causation_id"] {
        let text: Option<String> = row.try_get(column).map_err(backend)?;
        match text.as_deref().map(Uuid::parse_str).transpose() {
            Ok(id) => ids.insert(column, id),
            Err(_) => return fail(format!("{column} `{text:?}` is not a UUID")),
        };
    }
    let id = |column: &str| ids.get(column).copied().flatten();
    let metadata_text: String = row.try_get("metadata").map_err(backend)?;
    let extra: BTreeMap<String, serde_json::Value> = match serde_json::from_str(&metadata_text) {
        Ok(map) => map,
        Err(error) => return fail(format!("metadata is not a JSON object: {error}")),
    };
    let (Some(aggregate_id), Some(correlation_id)) = (id("aggregate_id"), id("correlation_id"))
    else {
        return fail("aggregate_id or correlation_id is missing".to_owned());
    };
    let payload: String = row.try_get("payload").map_err(backend)?;
    let metadata = EventMetadata {
        event_id,
        event_type: event_type.clone(),
        event_version,
        occurred_at,
        aggregate_id,
        aggregate_type: row.try_get("aggregate_type").map_err(backend)?,
        aggregate_version,
        tenant_id: id("tenant_id"),
        actor_id: row.try_get("actor_id").map_err(backend)?,
        correlation_id,
        causation_id: id("causation_id"),
        metadata: extra,
        position: Some(position),
    };
    match EventRegistry::global().decode_str(metadata, &payload) {
        Ok(event) => Ok(StoredEvent::Event(event)),
        Err(error) => Ok(undecodable(event_id, event_type, error)),
    }
}

/// The whole row as JSON, for an undecodable event's dead-letter entry. Columns that cannot be
/// read come out as `null`; a payload or metadata that is not JSON comes out as a string, and
/// so does a time out of chrono's range (as its number of microseconds).
fn raw_row(row: &SqliteRow) -> serde_json::Value {
    use serde_json::Value;
    fn text(row: &SqliteRow, column: &str) -> Value {
        row.try_get::<Option<String>, _>(column)
            .ok()
            .flatten()
            .map_or(Value::Null, Value::String)
    }
    fn integer(row: &SqliteRow, column: &str) -> Value {
        row.try_get::<Option<i64>, _>(column)
            .ok()
            .flatten()
            .map_or(Value::Null, Value::from)
    }
    fn time(row: &SqliteRow, column: &str) -> Value {
        match row.try_get::<Option<i64>, _>(column).ok().flatten() {
            None => Value::Null,
            Some(micros) => match super::time::parse(micros) {
                Some(time) => serde_json::to_value(time).unwrap_or(Value::Null),
                None => Value::String(micros.to_string()),
            },
        }
    }
    fn json(row: &SqliteRow, column: &str) -> Value {
        match row.try_get::<Option<String>, _>(column) {
            Ok(Some(text)) => serde_json::from_str(&text).unwrap_or(Value::String(text)),
            _ => Value::Null,
        }
    }
    serde_json::json!({
        "position": integer(row, "position"),
        "event_id": text(row, "event_id"),
        "aggregate_id": text(row, "aggregate_id"),
        "aggregate_type": text(row, "aggregate_type"),
        "aggregate_version": integer(row, "aggregate_version"),
        "event_type": text(row, "event_type"),
        "event_version": integer(row, "event_version"),
        "payload": json(row, "payload"),
        "metadata": json(row, "metadata"),
        "tenant_id": text(row, "tenant_id"),
        "actor_id": text(row, "actor_id"),
        "correlation_id": text(row, "correlation_id"),
        "causation_id": text(row, "causation_id"),
        "occurred_at": time(row, "occurred_at"),
        "stored_at": time(row, "stored_at"),
    })
}
