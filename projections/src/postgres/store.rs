//! The event store on PostgreSQL: batched appends with optimistic concurrency, gap-safe reads.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgPoolOptions, PgRow};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::listen::Notifier;
use super::timestamp::{self, Timestamptz};
use super::{APPEND_CHANNEL, Schema, backend, migrate_schema, to_i64, to_u64};
use crate::event::{AnyEvent, DecodeError, EventMetadata, EventRegistry, to_microseconds};
use crate::storage::{BoxFuture, StorageError};
use crate::store::{
    AppendError, AppendResult, Backlog, EventStore, ExpectedVersion, StoredEvent, UndecodableEvent,
    check_append,
};

/// How long [`PostgresEventStore::connect`]'s pool waits for a connection before failing.
pub const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The event table.
const EVENTS_TABLE: &str = "projection_events";

/// The single-row table whose row holds the last position handed out.
const POSITIONS_TABLE: &str = "projection_positions";

/// The unique constraint that makes two appends at one aggregate version conflict.
const STREAM_VERSION_KEY: &str = "projection_events_stream_version_key";

/// How often an append with [`ExpectedVersion::Any`] retries when a concurrent append to the
/// same aggregate took the versions it computed.
const ANY_VERSION_ATTEMPTS: u32 = 64;

/// The oldest transaction still running in the cluster, in the statement's snapshot: a row
/// with a smaller `txid` is final.
const HORIZON: &str = "pg_snapshot_xmin(pg_current_snapshot())";

/// A barrier beyond every position.
const NO_BARRIER: &str = "9223372036854775807";

/// The columns a stored event is decoded from. The payload comes as text, which decodes
/// faster than a JSON value.
const COLUMNS: &str = "position, event_id, aggregate_id, aggregate_type, aggregate_version, \
     event_type, event_version, payload::text AS payload, metadata::text AS metadata, \
     tenant_id, actor_id, correlation_id, causation_id, occurred_at, stored_at";

/// [`COLUMNS`] by name, selected from a page that has them.
const PAGE_COLUMNS: &str = "position, event_id, aggregate_id, aggregate_type, \
     aggregate_version, event_type, event_version, payload, metadata, tenant_id, actor_id, \
     correlation_id, causation_id, occurred_at, stored_at";

/// An event store in PostgreSQL (tables `projection_events` and `projection_positions`, see
/// [`migrate`](super::migrate)).
///
/// Cloning is cheap; clones share the pool and the notification listener.
///
/// # Appends
///
/// An append is one statement, so one round trip and one transaction: it checks the expected
/// version, takes positions from the counter row of `projection_positions`, inserts the whole
/// batch with consecutive aggregate versions, and announces the new head on
/// [`APPEND_CHANNEL`]. An append that commits at the same aggregate versions first makes it
/// fail on the unique `(aggregate_id, aggregate_version)` constraint, which becomes
/// [`AppendError::Conflict`] with nothing written (or a retry, for [`ExpectedVersion::Any`]).
///
/// The counter row stays locked until the append commits, so appends to one store take their
/// positions one after another and commit in position order, and a failed append gives its
/// positions back: positions are consecutive from 1, without gaps. The price is that appends
/// do not overlap (batch events for throughput).
///
/// # Reads and the horizon
///
/// `read_all`, `head_position` and `backlog` read positions in order and stop before the
/// first row whose transaction is not yet behind the horizon
/// (`txid >= pg_snapshot_xmin(pg_current_snapshot())`, the oldest transaction still running,
/// compared by the server in the same statement). Every row they return has `txid` below the
/// horizon, and so does every row before it.
///
/// Why a cut and not a filter: transaction ids are taken when a transaction first writes (an
/// append takes its id before it waits for the counter row), so id order is not position
/// order. With `WHERE txid < horizon` alone, rows 93..101 of a committed append T can be held
/// back (T's id is above some transaction still running) while row 102 of a later append B
/// (which took its id earlier, then waited for T) passes: a reader moving to 102 would never
/// see 93..101. The concurrent-writer test catches that filter every time.
///
/// Appends commit in position order, so for them the cut only ever delays. The horizon also
/// holds readers back at a row written in a transaction that is still running by a writer that
/// took its position some other way (see the test of out-of-order commits).
///
/// A long-running transaction anywhere in the cluster holds every reader back until it ends.
/// Do not read inside a transaction that has written: its own id holds the horizon back.
///
/// # Decoding
///
/// Rows decode through [`EventRegistry::global`]. A row of an unknown type, or whose payload or
/// metadata does not decode, comes back as [`StoredEvent::Undecodable`] with the whole row as
/// JSON, never as an error of the read.
#[derive(Debug, Clone)]
pub struct PostgresEventStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    schema: Schema,
    sql: Sql,
    notifier: Notifier,
}

/// The statements, formatted once with the schema's table name.
#[derive(Debug)]
struct Sql {
    append: String,
    stream_version: String,
    read_stream: String,
    read_all: String,
    head: String,
    /// The last committed position, horizon or not: what a (re)started listener announces,
    /// so that events held back by the horizon when it starts are still announced.
    committed_head: String,
    backlog_all: String,
    backlog_types: String,
}

impl Sql {
    fn new(schema: &Schema) -> Self {
        let events = schema.table(EVENTS_TABLE);
        let positions = schema.table(POSITIONS_TABLE);
        // The first position that readers must not reach yet (uses the index on `txid`).
        let barrier = format!(
            "SELECT coalesce(min(position), {NO_BARRIER}) AS position FROM {events}
             WHERE txid >= {HORIZON}"
        );
        Self {
            // The expected version is checked against the statement's snapshot; an append
            // that committed since then makes the insert violate STREAM_VERSION_KEY. The
            // update of the position counter waits for any append in flight and then reads
            // the latest committed counter, so positions are consecutive, in commit order.
            append: format!(
                "WITH current_version AS (
                     SELECT coalesce(max(aggregate_version), 0) AS version
                     FROM {events} WHERE aggregate_id = $1
                 ),
                 checked AS (
                     SELECT version FROM current_version
                     WHERE $2::bigint IS NULL OR version = $2::bigint
                 ),
                 allocated AS (
                     UPDATE {positions} SET position = position + cardinality($3::uuid[])
                     WHERE EXISTS (SELECT FROM checked)
                     RETURNING position - cardinality($3::uuid[]) AS base
                 ),
                 inserted AS (
                     INSERT INTO {events} (
                         position, event_id, aggregate_id, aggregate_type, aggregate_version,
                         event_type, event_version, payload, metadata, tenant_id, actor_id,
                         correlation_id, causation_id, occurred_at
                     )
                     SELECT allocated.base + e.ordinal, e.event_id, $1, e.aggregate_type,
                            checked.version + e.ordinal, e.event_type, e.event_version,
                            e.payload::jsonb, e.metadata::jsonb, e.tenant_id, e.actor_id,
                            e.correlation_id, e.causation_id, e.occurred_at
                     FROM allocated
                     CROSS JOIN checked
                     CROSS JOIN unnest(
                         $3::uuid[], $4::text[], $5::text[], $6::integer[], $7::text[],
                         $8::text[], $9::uuid[], $10::text[], $11::uuid[], $12::uuid[],
                         $13::timestamptz[]
                     ) WITH ORDINALITY AS e(
                         event_id, aggregate_type, event_type, event_version, payload, metadata,
                         tenant_id, actor_id, correlation_id, causation_id, occurred_at, ordinal
                     )
                     RETURNING position
                 ),
                 notified AS (
                     SELECT pg_notify($14, $15 || max(position)::text)
                     FROM inserted HAVING count(*) > 0
                 )
                 SELECT (SELECT version FROM current_version) AS actual,
                        (SELECT count(*) FROM checked) AS checked,
                        (SELECT min(position) FROM inserted) AS first_position,
                        (SELECT max(position) FROM inserted) AS last_position,
                        (SELECT count(*) FROM inserted) AS appended,
                        (SELECT count(*) FROM notified) AS notified"
            ),
            stream_version: format!(
                "SELECT coalesce(max(aggregate_version), 0) FROM {events} WHERE aggregate_id = $1"
            ),
            read_stream: format!(
                "SELECT {COLUMNS} FROM {events} WHERE aggregate_id = $1 ORDER BY aggregate_version"
            ),
            // The first page after `after`, cut before its first row that is not yet behind
            // the horizon.
            read_all: format!(
                "WITH page AS (
                     SELECT {COLUMNS}, txid FROM {events}
                     WHERE position > $1
                     ORDER BY position
                     LIMIT $2
                 )
                 SELECT {PAGE_COLUMNS} FROM page
                 WHERE position < coalesce(
                     (SELECT min(position) FROM page WHERE txid >= {HORIZON}),
                     {NO_BARRIER}
                 )
                 ORDER BY position"
            ),
            head: format!(
                "SELECT coalesce(max(position), 0) FROM {events}
                 WHERE position < ({barrier})"
            ),
            committed_head: format!("SELECT coalesce(max(position), 0) FROM {events}"),
            backlog_all: format!(
                "WITH barrier AS MATERIALIZED ({barrier})
                 SELECT (SELECT coalesce(max(position), 0) FROM {events}
                         WHERE position < (SELECT position FROM barrier)) AS head,
                        count(*) AS events,
                        min(stored_at) AS oldest
                 FROM {events}
                 WHERE position > $1 AND position < (SELECT position FROM barrier)"
            ),
            backlog_types: format!(
                "WITH barrier AS MATERIALIZED ({barrier})
                 SELECT (SELECT coalesce(max(position), 0) FROM {events}
                         WHERE position < (SELECT position FROM barrier)) AS head,
                        count(*) AS events,
                        min(stored_at) AS oldest
                 FROM {events}
                 WHERE event_type = ANY($2::text[])
                   AND position > $1 AND position < (SELECT position FROM barrier)"
            ),
        }
    }
}

impl PostgresEventStore {
    /// A store on `pool`, with its tables in the connection's `search_path`. The tables must
    /// exist: see [`migrate`](super::migrate).
    pub fn new(pool: PgPool) -> Self {
        Self::with_schema(pool, Schema::default())
    }

    /// A store on `pool`, with its tables in `schema`; see
    /// [`migrate_schema`](super::migrate_schema).
    pub fn with_schema(pool: PgPool, schema: Schema) -> Self {
        let sql = Sql::new(&schema);
        Self {
            inner: Arc::new(Inner {
                notifier: Notifier::new(&schema, sql.committed_head.clone()),
                sql,
                pool,
                schema,
            }),
        }
    }

    /// Connects to the database at `url`, applies the crate's migrations (in the
    /// `search_path`) and returns a store on a new pool.
    ///
    /// The pool gives up waiting for a connection after [`ACQUIRE_TIMEOUT`] (sqlx's default is
    /// 30 s): during an outage the workers report themselves degraded, with the cause, within
    /// seconds rather than waiting silently. Build the pool yourself and use [`new`](Self::new)
    /// for other settings.
    pub async fn connect(url: &str) -> Result<Self, StorageError> {
        let pool = PgPoolOptions::new()
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await
            .map_err(backend)?;
        migrate_schema(&pool, &Schema::default()).await?;
        Ok(Self::new(pool))
    }

    /// The pool the store works on.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The schema of the store's tables.
    pub fn schema(&self) -> &Schema {
        &self.inner.schema
    }

    /// The version of `aggregate_id`: the number of its events, 0 when it has none.
    pub async fn stream_version(&self, aggregate_id: Uuid) -> Result<u64, StorageError> {
        let version: i64 = sqlx::query_scalar(&self.inner.sql.stream_version)
            .bind(aggregate_id)
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
        let expected_version = match expected {
            ExpectedVersion::Any => None,
            ExpectedVersion::NoStream => Some(0),
            ExpectedVersion::Exact(version) => Some(to_i64(version, "expected version")?),
        };
        let conflict = |actual| AppendError::Conflict {
            aggregate_id,
            expected,
            actual,
        };
        if events.is_empty() {
            let actual = self.stream_version(aggregate_id).await?;
            return match expected_version {
                Some(version) if to_i64(actual, "aggregate version")? != version => {
                    Err(conflict(actual))
                }
                _ => Ok(AppendResult {
                    first_position: 0,
                    last_position: 0,
                    version: actual,
                }),
            };
        }

        let batch = Columns::of(&events)?;
        let sql = &self.inner.sql;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let outcome = sqlx::query(&sql.append)
                .bind(aggregate_id)
                .bind(expected_version)
                .bind(&batch.event_ids)
                .bind(&batch.aggregate_types)
                .bind(&batch.event_types)
                .bind(&batch.event_versions)
                .bind(&batch.payloads)
                .bind(&batch.metadata)
                .bind(&batch.tenant_ids)
                .bind(&batch.actor_ids)
                .bind(&batch.correlation_ids)
                .bind(&batch.causation_ids)
                .bind(&batch.occurred_at)
                .bind(APPEND_CHANNEL)
                .bind(self.inner.schema.notify_prefix())
                .fetch_one(&self.inner.pool)
                .await;
            let row = match outcome {
                Ok(row) => row,
                Err(error) if is_violation_of(&error, STREAM_VERSION_KEY) => {
                    // A concurrent append committed these versions after this statement's
                    // snapshot was taken.
                    if expected == ExpectedVersion::Any && attempts < ANY_VERSION_ATTEMPTS {
                        continue;
                    }
                    return Err(conflict(self.stream_version(aggregate_id).await?));
                }
                Err(error) => return Err(backend(error).into()),
            };
            let actual = to_u64(row.try_get("actual").map_err(backend)?, "aggregate version")?;
            let appended: i64 = row.try_get("appended").map_err(backend)?;
            if appended == 0 {
                let checked: i64 = row.try_get("checked").map_err(backend)?;
                if checked > 0 {
                    return Err(StorageError::Unreadable(format!(
                        "the position counter (table {POSITIONS_TABLE}) has no row"
                    ))
                    .into());
                }
                return Err(conflict(actual));
            }
            let first: Option<i64> = row.try_get("first_position").map_err(backend)?;
            let last: Option<i64> = row.try_get("last_position").map_err(backend)?;
            return Ok(AppendResult {
                first_position: to_u64(first.unwrap_or(0), "position")?,
                last_position: to_u64(last.unwrap_or(0), "position")?,
                version: actual + to_u64(appended, "appended count")?,
            });
        }
    }

    async fn fetch_events(
        &self,
        query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<Vec<StoredEvent>, StorageError> {
        let rows = query.fetch_all(&self.inner.pool).await.map_err(backend)?;
        rows.iter().map(decode_row).collect()
    }
}

impl EventStore for PostgresEventStore {
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
            self.fetch_events(sqlx::query(&self.inner.sql.read_stream).bind(aggregate_id))
                .await
        })
    }

    fn read_all(
        &self,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredEvent>, StorageError>> {
        Box::pin(async move {
            // Nothing lies beyond the largest bigint.
            let Ok(after) = i64::try_from(after) else {
                return Ok(Vec::new());
            };
            if limit == 0 {
                return Ok(Vec::new());
            }
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            self.fetch_events(
                sqlx::query(&self.inner.sql.read_all)
                    .bind(after)
                    .bind(limit),
            )
            .await
        })
    }

    fn head_position(&self) -> BoxFuture<'_, Result<u64, StorageError>> {
        Box::pin(async move {
            let head: i64 = sqlx::query_scalar(&self.inner.sql.head)
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
            let sql = &self.inner.sql;
            let query = if event_types.is_empty() {
                sqlx::query(&sql.backlog_all).bind(after)
            } else {
                sqlx::query(&sql.backlog_types)
                    .bind(after)
                    .bind(event_types)
            };
            let row = query.fetch_one(&self.inner.pool).await.map_err(backend)?;
            let head = to_u64(row.try_get("head").map_err(backend)?, "position")?;
            let events = to_u64(row.try_get("events").map_err(backend)?, "count")?;
            // A stored_at out of range (possible in a row written before migration 5) is an
            // error of this read, not a panic.
            let oldest = timestamp::get_optional(
                &row,
                "oldest",
                &format_args!("stored_at of the oldest event after position {after}"),
            )?;
            Ok(Backlog::new(head, events, oldest))
        })
    }

    /// A receiver of the head position, fed by a background task that listens on
    /// [`APPEND_CHANNEL`] with one connection of the pool. The task starts with the first
    /// subscriber (which must be inside a Tokio runtime, otherwise `None`), reconnects with
    /// backoff when the connection drops (publishing the head afresh, since notifications may
    /// have been missed), and ends when every receiver is dropped, the store is dropped or the
    /// pool is closed. Treat a change as a wake-up and read with `read_all`: the announced
    /// position may still be behind the read horizon, so readers also poll.
    fn subscribe(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.inner.notifier.subscribe(&self.inner.pool)
    }
}

/// The batch as one array per column, bound to the append statement.
struct Columns {
    event_ids: Vec<Uuid>,
    aggregate_types: Vec<String>,
    event_types: Vec<String>,
    event_versions: Vec<i32>,
    payloads: Vec<String>,
    metadata: Vec<String>,
    tenant_ids: Vec<Option<Uuid>>,
    actor_ids: Vec<Option<String>>,
    correlation_ids: Vec<Uuid>,
    causation_ids: Vec<Option<Uuid>>,
    occurred_at: Vec<DateTime<Utc>>,
}

impl Columns {
    fn of(events: &[AnyEvent]) -> Result<Self, StorageError> {
        let n = events.len();
        let mut columns = Self {
            event_ids: Vec::with_capacity(n),
            aggregate_types: Vec::with_capacity(n),
            event_types: Vec::with_capacity(n),
            event_versions: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
            metadata: Vec::with_capacity(n),
            tenant_ids: Vec::with_capacity(n),
            actor_ids: Vec::with_capacity(n),
            correlation_ids: Vec::with_capacity(n),
            causation_ids: Vec::with_capacity(n),
            occurred_at: Vec::with_capacity(n),
        };
        for event in events {
            let meta = event.metadata();
            let invalid =
                |what: &'static str, error: &dyn std::fmt::Display| StorageError::Invalid {
                    what,
                    reason: format!("event {} ({}): {error}", meta.event_id, meta.event_type),
                };
            let payload = event
                .payload_json()
                .and_then(|value| serde_json::to_string(&value))
                .map_err(|e| invalid("event payload", &e))?;
            let metadata =
                serde_json::to_string(&meta.metadata).map_err(|e| invalid("event metadata", &e))?;
            let version = i32::try_from(meta.event_version).map_err(|_| {
                invalid(
                    "event version",
                    &"the schema version does not fit in a PostgreSQL integer",
                )
            })?;
            columns.event_ids.push(meta.event_id);
            columns.aggregate_types.push(meta.aggregate_type.clone());
            columns.event_types.push(meta.event_type.clone());
            columns.event_versions.push(version);
            columns.payloads.push(payload);
            columns.metadata.push(metadata);
            columns.tenant_ids.push(meta.tenant_id);
            columns.actor_ids.push(meta.actor_id.clone());
            columns.correlation_ids.push(meta.correlation_id);
            columns.causation_ids.push(meta.causation_id);
            // Truncated here rather than by the encoder, which rounds towards 2000-01-01:
            // the same microsecond as every other store, for a time set on the field directly.
            columns.occurred_at.push(to_microseconds(meta.occurred_at));
        }
        Ok(columns)
    }
}

/// Whether `error` is a unique violation of `constraint`.
fn is_violation_of(error: &sqlx::Error, constraint: &str) -> bool {
    error.as_database_error().is_some_and(|db| {
        db.code().as_deref() == Some("23505") && db.constraint() == Some(constraint)
    })
}

/// Decodes one row of [`COLUMNS`]. Columns of the wrong type are a backend error (the table is
/// not ours); content that does not decode is an [`UndecodableEvent`].
fn decode_row(row: &PgRow) -> Result<StoredEvent, StorageError> {
    let position = to_u64(row.try_get("position").map_err(backend)?, "position")?;
    let event_id: Uuid = row.try_get("event_id").map_err(backend)?;
    let event_type: String = row.try_get("event_type").map_err(backend)?;
    let event_version: i32 = row.try_get("event_version").map_err(backend)?;
    let aggregate_version: i64 = row.try_get("aggregate_version").map_err(backend)?;
    let metadata_text: String = row.try_get("metadata").map_err(backend)?;
    let payload: String = row.try_get("payload").map_err(backend)?;

    let undecodable = |event_type: String, error: DecodeError| {
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

    let Ok(event_version) = u32::try_from(event_version) else {
        let error = malformed(
            &event_type,
            format!("negative event_version {event_version}"),
        );
        return Ok(undecodable(event_type, error));
    };
    let Ok(aggregate_version) = u64::try_from(aggregate_version) else {
        let error = malformed(
            &event_type,
            format!("negative aggregate_version {aggregate_version}"),
        );
        return Ok(undecodable(event_type, error));
    };
    // A time chrono cannot hold (possible in a row written before migration 5) makes the row
    // undecodable, like any other malformed column.
    let occurred_at = match row.try_get("occurred_at").map_err(backend)? {
        Timestamptz::InRange(time) => time,
        Timestamptz::OutOfRange(value) => {
            let error = malformed(
                &event_type,
                format!("occurred_at is {value}, which a DateTime<Utc> cannot hold"),
            );
            return Ok(undecodable(event_type, error));
        }
    };
    let extra: BTreeMap<String, serde_json::Value> = match serde_json::from_str(&metadata_text) {
        Ok(map) => map,
        Err(error) => {
            let error = malformed(
                &event_type,
                format!("metadata is not a JSON object: {error}"),
            );
            return Ok(undecodable(event_type, error));
        }
    };
    let metadata = EventMetadata {
        event_id,
        event_type,
        event_version,
        occurred_at,
        aggregate_id: row.try_get("aggregate_id").map_err(backend)?,
        aggregate_type: row.try_get("aggregate_type").map_err(backend)?,
        aggregate_version,
        tenant_id: row.try_get("tenant_id").map_err(backend)?,
        actor_id: row.try_get("actor_id").map_err(backend)?,
        correlation_id: row.try_get("correlation_id").map_err(backend)?,
        causation_id: row.try_get("causation_id").map_err(backend)?,
        metadata: extra,
        position: Some(position),
    };
    let event_type_on_error = metadata.event_type.clone();
    match EventRegistry::global().decode_str(metadata, &payload) {
        Ok(event) => Ok(StoredEvent::Event(event)),
        Err(error) => Ok(undecodable(event_type_on_error, error)),
    }
}

/// The whole row as JSON, for an undecodable event's dead-letter entry. Columns that cannot be
/// read come out as `null`; a payload or metadata that is not JSON comes out as a string, and
/// so does a time out of chrono's range (`"infinity"`).
fn raw_row(row: &PgRow) -> serde_json::Value {
    fn get<'r, T>(row: &'r PgRow, column: &str) -> serde_json::Value
    where
        T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + serde::Serialize,
    {
        row.try_get::<T, _>(column)
            .ok()
            .and_then(|value| serde_json::to_value(value).ok())
            .unwrap_or(serde_json::Value::Null)
    }
    fn time(row: &PgRow, column: &str) -> serde_json::Value {
        row.try_get::<Timestamptz, _>(column)
            .map_or(serde_json::Value::Null, Timestamptz::to_json)
    }
    fn json(row: &PgRow, column: &str) -> serde_json::Value {
        match row.try_get::<Option<String>, _>(column) {
            Ok(Some(text)) => {
                serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
            }
            _ => serde_json::Value::Null,
        }
    }
    serde_json::json!({
        "position": get::<i64>(row, "position"),
        "event_id": get::<Uuid>(row, "event_id"),
        "aggregate_id": get::<Uuid>(row, "aggregate_id"),
        "aggregate_type": get::<String>(row, "aggregate_type"),
        "aggregate_version": get::<i64>(row, "aggregate_version"),
        "event_type": get::<String>(row, "event_type"),
        "event_version": get::<i32>(row, "event_version"),
        "payload": json(row, "payload"),
        "metadata": json(row, "metadata"),
        "tenant_id": get::<Option<Uuid>>(row, "tenant_id"),
        "actor_id": get::<Option<String>>(row, "actor_id"),
        "correlation_id": get::<Uuid>(row, "correlation_id"),
        "causation_id": get::<Option<Uuid>>(row, "causation_id"),
        "occurred_at": time(row, "occurred_at"),
        "stored_at": time(row, "stored_at"),
    })
}
