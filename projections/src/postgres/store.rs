//! The event store on PostgreSQL: batched appends with optimistic concurrency, gap-safe reads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgPoolOptions, PgRow};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::announce::Announcer;
use super::filtered;
use super::listen::Notifier;
use super::timestamp::{self, Timestamptz};
use super::{Schema, backend, migrate_schema, to_i64, to_u64};
use crate::event::{AnyEvent, DecodeError, EventMetadata, EventRegistry, to_microseconds};
use crate::storage::{BoxFuture, StorageError};
use crate::store::{
    AppendError, AppendResult, Backlog, EventStore, ExpectedVersion, ReadFilter, ReadHold,
    ReadPage, StoredEvent, UndecodableEvent, check_append,
};

/// How long [`PostgreSQLEventStore::connect`]'s pool waits for a connection before failing.
pub const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The event table.
const EVENTS_TABLE: &str = "projection_events";

/// The sequence positions come from (migration 6).
const POSITIONS_SEQUENCE: &str = "projection_events_position_seq";

/// The function that appends (migration 6).
const APPEND_FUNCTION: &str = "projection_append";

/// The unique constraint that makes two appends at one aggregate version conflict.
const STREAM_VERSION_KEY: &str = "projection_events_stream_version_key";

/// How often an append with [`ExpectedVersion::Any`] retries when a concurrent append to the
/// same aggregate took the versions it computed.
const ANY_VERSION_ATTEMPTS: u32 = 64;

/// How many characters of the query of a transaction holding reads back a status shows.
const HOLDER_QUERY_CHARS: i32 = 80;

/// A filtered read looks at positions up to this many pages ahead (`limit` each), so that a
/// filter the indexes cannot serve (a followed aggregate type, events without a tenant) never
/// scans the whole store for one page.
pub const READ_WINDOW_PAGES: u64 = 100;

/// The smallest window of a filtered read, in positions.
const MIN_READ_WINDOW: u64 = 10_000;

/// The columns a stored event is decoded from. The payload comes as text, which decodes
/// faster than a JSON value.
const COLUMNS: &str = "position, event_id, aggregate_id, aggregate_type, aggregate_version, \
     event_type, event_version, payload::text AS payload, metadata::text AS metadata, \
     tenant_id, actor_id, correlation_id, causation_id, occurred_at, stored_at";

/// The index of each of [`COLUMNS`] in a row: decoding by index spares a lookup by name per
/// column and row.
mod column {
    pub(super) const POSITION: usize = 0;
    pub(super) const EVENT_ID: usize = 1;
    pub(super) const AGGREGATE_ID: usize = 2;
    pub(super) const AGGREGATE_TYPE: usize = 3;
    pub(super) const AGGREGATE_VERSION: usize = 4;
    pub(super) const EVENT_TYPE: usize = 5;
    pub(super) const EVENT_VERSION: usize = 6;
    pub(super) const PAYLOAD: usize = 7;
    pub(super) const METADATA: usize = 8;
    pub(super) const TENANT_ID: usize = 9;
    pub(super) const ACTOR_ID: usize = 10;
    pub(super) const CORRELATION_ID: usize = 11;
    pub(super) const CAUSATION_ID: usize = 12;
    pub(super) const OCCURRED_AT: usize = 13;
}

/// An event store in PostgreSQL (table `projection_events` and sequence
/// `projection_events_position_seq`, see [`migrate`](super::migrate)).
///
/// Cloning is cheap; clones share the pool, the notification listener and what the store
/// knows of the read horizon.
///
/// # Appends
///
/// An append is one statement, so one round trip and one transaction: it checks the expected
/// version, registers itself as an append in flight, takes positions from the sequence and
/// inserts the whole batch with consecutive aggregate versions. An append that commits at the
/// same aggregate versions first makes it fail on the unique `(aggregate_id,
/// aggregate_version)` constraint, which becomes [`AppendError::Conflict`] with nothing
/// written (or a retry, for [`ExpectedVersion::Any`]).
///
/// Appends overlap: nothing is locked from one append to the next, so concurrent appends
/// commit together (their WAL flushes are shared). Positions are unique and increase in the
/// order readers see them, but an append that fails or rolls back leaves a gap, and positions
/// of concurrent appends interleave. Lag counts events, never position differences.
///
/// Once committed, an append is announced on [`APPEND_CHANNEL`](super::APPEND_CHANNEL) by a separate statement
/// (several appends in quick succession share one notification), and at once to the
/// subscribers of this store. A `NOTIFY` inside the append would serialise every appending
/// transaction on PostgreSQL's notification queue lock until its commit.
///
/// # Reads and the horizon
///
/// An append registers itself before it takes a position: a shared transaction-level
/// advisory lock (keys: the sequence's oid, and the low 32 bits of the next value the
/// sequence would give, a lower bound of the positions it will take). A reader first reads the
/// sequence, then the registered bounds (`pg_locks`), and computes the cut: the smallest bound,
/// or the sequence's next value when none is registered. Every position below the cut is
/// committed or never will be. `read_all`, `head_position` and `backlog` read below the cut
/// in a later statement, so with a later snapshot.
///
/// Only transactions that write events hold readers back, and only while they run: a long
/// transaction elsewhere in the database or the cluster delays no reader. A transaction that
/// appends and then stays open holds every reader of its schema back at its first position;
/// [`backlog`](EventStore::backlog) names it ([`ReadHold`]). Do not read inside a transaction
/// that has appended: its own registration holds the read back.
///
/// The store remembers the highest cut it has computed: positions below it stay final, so a
/// reader catching up reads page after page with a plain indexed `SELECT` and computes the cut
/// again only when it reaches it.
///
/// Rows inserted by hand without a position get one from `projection_next_position()`, which
/// registers their transaction the same way. A writer that supplies positions itself, or calls
/// `nextval` on the sequence directly, is not protected. The registrations live in the lock
/// table of the primary: read from the primary, not from a standby.
///
/// # Filtered reads
///
/// [`read_filtered`](EventStore::read_filtered) reads below the same cut as `read_all`, and
/// selects in the query. For a filter of event types it merges one ordered scan of the type
/// index per type (per tenant and type, on the tenant index of migration 10, for a filter of a
/// few tenants) in position order, and PostgreSQL reads each scan only as far as the page goes:
/// a projection handling one type in twenty reads its own rows and no others. Stored types the
/// program does not know (found by a skip scan of the type index, once per cut) are read like
/// listed ones, so that the runner can send their events through its failure policy. Filters
/// the indexes cannot serve (aggregate types to follow, every type of some tenants) are
/// conditions on a scan of positions, which looks at most [`READ_WINDOW_PAGES`] pages' worth of
/// positions ahead. When a read finds fewer than `limit` events, [`ReadPage::read_to`] says how
/// far it looked, and a reader moves its checkpoint there. The statement is sent unnamed, so
/// that PostgreSQL plans it with each page's bounds (a generic plan takes the range for a
/// narrow one and scans the primary key). A range no wider than the page (a live read) is read
/// by position with a prepared statement, in as many round trips as `read_all`. See
/// `docs/adr/0017-filtered-reads.md`.
///
/// # Decoding
///
/// Rows decode through [`EventRegistry::global`]. A row of an unknown type, or whose payload or
/// metadata does not decode, comes back as [`StoredEvent::Undecodable`] with the whole row as
/// JSON, never as an error of the read.
#[derive(Clone)]
pub struct PostgreSQLEventStore {
    inner: Arc<Inner>,
    /// Projections applied inside each append's transaction.
    inline: Arc<[Arc<dyn super::inline::Inline>]>,
}

impl std::fmt::Debug for PostgreSQLEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgreSQLEventStore")
            .field("inner", &self.inner)
            .field(
                "inline",
                &self.inline.iter().map(|p| p.name()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    schema: Schema,
    sql: Sql,
    notifier: Notifier,
    announcer: Announcer,
    /// Every position below this one is committed or never will be (0: not known yet).
    final_below: AtomicU64,
    /// The event types stored below a cut, as last read (for filtered reads, which also read
    /// the types this program does not know).
    stored_types: std::sync::Mutex<Option<StoredTypes>>,
}

/// The distinct event types of the rows below a cut.
#[derive(Debug, Clone)]
struct StoredTypes {
    below: u64,
    types: Arc<Vec<String>>,
}

/// The statements, formatted once with the schema's table name.
#[derive(Debug)]
struct Sql {
    /// The event table, qualified.
    events: String,
    append: String,
    /// The positions and versions of an append's events, by id, in its transaction.
    appended: String,
    stream_version: String,
    read_stream: String,
    read_page: String,
    horizon: String,
    head_below: String,
    /// The last committed position, horizon or not: what a (re)started listener announces,
    /// so that events held back by the horizon when it starts are still announced.
    committed_head: String,
    backlog_all: String,
    backlog_types: String,
    /// Every distinct event type, by a skip scan of the type index.
    stored_types: String,
    /// The distinct event types of the rows from `$1` and below `$2`.
    stored_types_between: String,
}

impl Sql {
    fn new(schema: &Schema) -> Self {
        let events = schema.table(EVENTS_TABLE);
        let sequence = schema.table(POSITIONS_SEQUENCE);
        // The sequence as a constant, resolved when the statement is planned.
        let sequence_oid = format!("'{sequence}'::regclass::oid");
        let backlog = |filter: &str| backlog_statement(&events, filter);
        Self {
            // The steps, and why their order matters, are in migration 6.
            append: format!(
                "SELECT actual, first_position, last_position, appended
                 FROM {append}(
                     $1, $2, $3::uuid[], $4::text[], $5::text[], $6::integer[], $7::text[],
                     $8::text[], $9::uuid[], $10::text[], $11::uuid[], $12::uuid[],
                     $13::timestamptz[]
                 )",
                append = schema.table(APPEND_FUNCTION),
            ),
            appended: format!(
                "SELECT event_id, position, aggregate_version FROM {events} WHERE event_id = ANY($1)"
            ),
            stream_version: format!(
                "SELECT coalesce(max(aggregate_version), 0) FROM {events} WHERE aggregate_id = $1"
            ),
            read_stream: format!(
                "SELECT {COLUMNS} FROM {events} WHERE aggregate_id = $1 ORDER BY aggregate_version"
            ),
            // A plain range scan of the primary key: $2 is a cut computed before.
            read_page: format!(
                "SELECT {COLUMNS} FROM {events}
                 WHERE position > $1 AND position < $2
                 ORDER BY position
                 LIMIT $3"
            ),
            // The sequence's last value first, then the registrations: the lateral subquery
            // needs the outer row, so it runs after it. A bound is rebuilt from its low 32 bits
            // as the value nearest the last value (within 2^31 of it).
            horizon: format!(
                "SELECT s.last, h.bound, h.pid
                 FROM (
                     SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END AS last,
                            last_value AS raw
                     FROM {sequence}
                 ) s
                 LEFT JOIN LATERAL (
                     SELECT s.raw + 2147483648
                            - ((s.raw + 2147483648 - l.objid::bigint) % 4294967296 + 4294967296)
                              % 4294967296 AS bound,
                            l.pid
                     FROM pg_locks l
                     WHERE l.locktype = 'advisory'
                       AND l.objsubid = 2
                       AND l.classid = {sequence_oid}
                       AND l.database = (SELECT oid FROM pg_database
                                         WHERE datname = current_database())
                     ORDER BY 1
                     LIMIT 1
                 ) h ON true"
            ),
            head_below: format!(
                "SELECT coalesce(max(position), 0) FROM {events} WHERE position < $1"
            ),
            committed_head: format!("SELECT coalesce(max(position), 0) FROM {events}"),
            backlog_all: backlog(""),
            backlog_types: backlog(" AND event_type = ANY($4::text[])"),
            stored_types: format!(
                "WITH RECURSIVE stored(event_type) AS (
                     SELECT min(event_type) FROM {events}
                     UNION ALL
                     SELECT (SELECT min(event_type) FROM {events} WHERE event_type > s.event_type)
                     FROM stored s WHERE s.event_type IS NOT NULL
                 )
                 SELECT event_type FROM stored WHERE event_type IS NOT NULL"
            ),
            stored_types_between: format!(
                "SELECT DISTINCT event_type FROM {events} WHERE position >= $1 AND position < $2"
            ),
            events,
        }
    }
}

/// A backlog statement: the committed head, and the events after `$1` that `filter` (SQL
/// after `WHERE position > $1`) selects, counted; `$2` is the cut, `$3` the pid of who holds
/// the oldest registration, if events wait behind it.
fn backlog_statement(events: &str, filter: &str) -> String {
    format!(
        "SELECT (SELECT coalesce(max(position), 0) FROM {events}) AS head,
                count(*) AS events,
                min(stored_at) AS oldest,
                count(*) FILTER (WHERE position >= $2) AS held,
                (SELECT xact_start FROM pg_stat_activity WHERE pid = $3) AS since,
                (SELECT left(query, {HOLDER_QUERY_CHARS}) FROM pg_stat_activity
                 WHERE pid = $3) AS query
         FROM {events}
         WHERE position > $1{filter}"
    )
}

/// What a reader learns from the registrations.
#[derive(Debug, Clone, Copy)]
struct Horizon {
    /// Every position below it is committed or never will be.
    cut: u64,
    /// The registration the cut comes from, if one does: its backend (`None` for a prepared
    /// transaction, which has none).
    holder: Option<Option<i32>>,
}

impl PostgreSQLEventStore {
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
                announcer: Announcer::new(schema.notify_prefix()),
                sql,
                pool,
                schema,
                final_below: AtomicU64::new(0),
                stored_types: std::sync::Mutex::new(None),
            }),
            inline: Arc::from([]),
        }
    }

    /// Runs `projection` **inline**: its handlers apply each append's events inside the
    /// append's own transaction, so the read model commits with the events, or neither does.
    /// A reader of the read model after `append` returned sees the events applied (no waiting
    /// for a worker), and there is no checkpoint: every append of this store applies its own
    /// events.
    ///
    /// A handler that fails (an error or a panic) fails the append: nothing is stored, and
    /// `append` returns [`AppendError::Inline`] naming the projection, with the handler's
    /// error; the caller decides, as with a version conflict. Appends of one aggregate wait for
    /// each other in the database anyway; appends of different aggregates wait only when their
    /// handlers write the same rows.
    ///
    /// Every process that appends must run the projection inline (appends made without it are
    /// not applied), and it must not also be registered with a coordinator (its events would
    /// be applied twice). To rebuild it, stop appending, reset its read model and replay the
    /// store once (a coordinator's `rebuild_projection` does both), then append again.
    ///
    /// ```no_run
    /// # use projections::postgres::PostgreSQLEventStore;
    /// # fn run<P: projections::DatabaseProjection<Connection = projections::PgConnection> + Clone + Send + Sync + 'static>(
    /// #     pool: sqlx::PgPool, order_totals: P) {
    /// let store = PostgreSQLEventStore::new(pool).inline(order_totals);
    /// # }
    /// ```
    #[must_use]
    pub fn inline<P>(mut self, projection: P) -> Self
    where
        P: crate::projection::DatabaseProjection<Connection = sqlx::PgConnection>
            + Clone
            + Send
            + Sync
            + 'static,
    {
        let mut inline: Vec<Arc<dyn super::inline::Inline>> = self.inline.to_vec();
        inline.push(super::inline::InlineProjection::new(projection));
        self.inline = inline.into();
        self
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
            // With inline projections, the append and their handlers share one transaction.
            let mut tx = if self.inline.is_empty() {
                None
            } else {
                Some(self.inner.pool.begin().await.map_err(backend)?)
            };
            let query = sqlx::query(&sql.append)
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
                .bind(&batch.occurred_at);
            let outcome = match tx.as_mut() {
                Some(tx) => query.fetch_one(&mut **tx).await,
                None => query.fetch_one(&self.inner.pool).await,
            };
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
                return Err(conflict(actual));
            }
            let first: Option<i64> = row.try_get("first_position").map_err(backend)?;
            let last: Option<i64> = row.try_get("last_position").map_err(backend)?;
            let last_position = to_u64(last.unwrap_or(0), "position")?;
            if let Some(mut tx) = tx {
                self.apply_inline(&mut tx, &events, &batch.event_ids)
                    .await?;
                tx.commit().await.map_err(backend)?;
            }
            self.announce(last_position).await;
            return Ok(AppendResult {
                first_position: to_u64(first.unwrap_or(0), "position")?,
                last_position,
                version: actual + to_u64(appended, "appended count")?,
            });
        }
    }

    /// Applies the inline projections to the events just appended in `tx`, with the positions
    /// and versions the append gave them.
    async fn apply_inline(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        events: &[AnyEvent],
        event_ids: &[Uuid],
    ) -> Result<(), AppendError> {
        let rows = sqlx::query(&self.inner.sql.appended)
            .bind(event_ids)
            .fetch_all(&mut **tx)
            .await
            .map_err(backend)?;
        let mut placed = std::collections::HashMap::with_capacity(rows.len());
        for row in &rows {
            let id: Uuid = row.try_get("event_id").map_err(backend)?;
            let position: i64 = row.try_get("position").map_err(backend)?;
            let version: i64 = row.try_get("aggregate_version").map_err(backend)?;
            placed.insert(
                id,
                (
                    to_u64(position, "position")?,
                    to_u64(version, "aggregate version")?,
                ),
            );
        }
        let mut positioned: Vec<AnyEvent> = events
            .iter()
            .map(|event| {
                let (position, version) = placed.get(&event.event_id()).copied().unzip();
                event.clone().map_metadata(|m| {
                    m.position = position;
                    if let Some(version) = version {
                        m.aggregate_version = version;
                    }
                })
            })
            .collect();
        positioned.sort_by_key(AnyEvent::position);
        for projection in self.inline.iter() {
            projection
                .apply(tx, &positioned)
                .await
                .map_err(|source| AppendError::Inline {
                    projection: projection.name().to_owned(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Tells this store's subscribers at once, and other processes through
    /// [`APPEND_CHANNEL`](super::APPEND_CHANNEL), that `position` is committed.
    async fn announce(&self, position: u64) {
        self.inner.notifier.publish(position);
        self.inner
            .announcer
            .announce(&self.inner.pool, position)
            .await;
    }

    /// Reads the registrations and remembers the cut.
    async fn refresh_horizon(&self) -> Result<Horizon, StorageError> {
        let row = sqlx::query(&self.inner.sql.horizon)
            .fetch_one(&self.inner.pool)
            .await
            .map_err(backend)?;
        let last: i64 = row.try_get("last").map_err(backend)?;
        let bound: Option<i64> = row.try_get("bound").map_err(backend)?;
        let holder: Option<i32> = row.try_get("pid").map_err(backend)?;
        // Nothing taken yet: the sequence shows its start, 1, not yet called.
        let next = to_u64(last.max(0), "position")?.saturating_add(1);
        let (cut, holder) = match bound {
            Some(bound) if bound.max(0).cast_unsigned() < next => {
                (bound.max(0).cast_unsigned(), Some(holder))
            }
            _ => (next, None),
        };
        let known = self.inner.final_below.fetch_max(cut, Ordering::AcqRel);
        Ok(Horizon {
            cut: cut.max(known),
            holder,
        })
    }

    /// Up to `limit` events after `after` and below `cut`, in position order.
    async fn page(
        &self,
        after: u64,
        cut: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StorageError> {
        let (Ok(after), Ok(limit)) = (i64::try_from(after), i64::try_from(limit)) else {
            return Ok(Vec::new());
        };
        let cut = i64::try_from(cut).unwrap_or(i64::MAX);
        if after.saturating_add(1) >= cut || limit == 0 {
            return Ok(Vec::new());
        }
        self.fetch_events(
            sqlx::query(&self.inner.sql.read_page)
                .bind(after)
                .bind(cut)
                .bind(limit),
        )
        .await
    }

    async fn read_page(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StorageError> {
        if limit == 0 || after >= i64::MAX.cast_unsigned() {
            return Ok(Vec::new());
        }
        let known = self.inner.final_below.load(Ordering::Acquire);
        // Nothing known to be readable after `after`: look at the registrations first.
        if after.saturating_add(1) >= known {
            let cut = self.refresh_horizon().await?.cut;
            return self.page(after, cut, limit).await;
        }
        let mut events = self.page(after, known, limit).await?;
        if events.len() < limit {
            // The page stopped at the known cut: it may have moved since.
            let cut = self.refresh_horizon().await?.cut;
            if cut > known {
                let last = events
                    .last()
                    .and_then(StoredEvent::position)
                    .unwrap_or(after);
                let more = self.page(last, cut, limit - events.len()).await?;
                events.extend(more);
            }
        }
        Ok(events)
    }

    /// Up to `limit` events after `after` that `filter` selects, and how far the read looked.
    async fn read_filtered_page(
        &self,
        after: u64,
        limit: usize,
        filter: &ReadFilter,
    ) -> Result<ReadPage, StorageError> {
        if limit == 0 || after >= i64::MAX.cast_unsigned() {
            return Ok(ReadPage::new(Vec::new(), after, true));
        }
        let window = (limit as u64)
            .saturating_mul(READ_WINDOW_PAGES)
            .max(MIN_READ_WINDOW);
        let window_end = after.saturating_add(1).saturating_add(window);
        let known = self.inner.final_below.load(Ordering::Acquire);
        // Nothing known to be readable after `after`: look at the registrations first.
        let refreshed = after.saturating_add(1) >= known;
        let mut cut = if refreshed {
            self.refresh_horizon().await?.cut
        } else {
            known
        };
        let (mut events, mut end) = self
            .filtered_rows(filter, after, (cut, window_end), limit)
            .await?;
        if events.len() < limit && end == cut && !refreshed {
            // The page stopped at the known cut: it may have moved since. Everything the
            // filter selects below the old cut is in the page already.
            let fresh = self.refresh_horizon().await?.cut;
            if fresh > cut {
                let from = cut - 1;
                cut = fresh;
                let (more, more_end) = self
                    .filtered_rows(filter, from, (cut, window_end), limit - events.len())
                    .await?;
                events.extend(more);
                end = more_end;
            }
        }
        if events.len() == limit {
            let read_to = events
                .last()
                .and_then(StoredEvent::position)
                .unwrap_or(after)
                .max(after);
            return Ok(ReadPage::new(events, read_to, false));
        }
        // Short: every selected event below `end` is in the page.
        let read_to = end.saturating_sub(1).max(after);
        Ok(ReadPage::new(events, read_to, end >= cut))
    }

    /// The rows of a filtered read after `after` and below `cut` (a cut computed before), at
    /// most `limit`, and the position the read looked below: `cut`, or `window_end` when the
    /// filter has conditions that no index bounds and it comes first.
    async fn filtered_rows(
        &self,
        filter: &ReadFilter,
        after: u64,
        (cut, window_end): (u64, u64),
        limit: usize,
    ) -> Result<(Vec<StoredEvent>, u64), StorageError> {
        if cut.saturating_sub(after) <= limit as u64 {
            // No wider than a page (a live read): by position, prepared, one round trip.
            let statement = filtered::read_narrow(&self.inner.sql.events, COLUMNS, filter);
            let (Ok(after_sql), Ok(limit_sql)) = (i64::try_from(after), i64::try_from(limit))
            else {
                return Ok((Vec::new(), cut));
            };
            let cut_sql = i64::try_from(cut).unwrap_or(i64::MAX);
            if after_sql.saturating_add(1) >= cut_sql || limit == 0 {
                return Ok((Vec::new(), cut));
            }
            let query = sqlx::query(&statement.sql)
                .bind(after_sql)
                .bind(cut_sql)
                .bind(limit_sql);
            return Ok((self.fetch_events(statement.bind(query)).await?, cut));
        }
        let unknown = match filter.types() {
            Some(listed) => {
                let stored = self.stored_types(cut).await?;
                let registry = EventRegistry::global();
                stored
                    .iter()
                    .filter(|t| !registry.contains(t) && !listed.contains(&t.as_str()))
                    .cloned()
                    .collect()
            }
            None => Vec::new(),
        };
        let statement = filtered::read(&self.inner.sql.events, COLUMNS, filter, &unknown);
        let before = if statement.windowed {
            cut.min(window_end)
        } else {
            cut
        };
        let (Ok(after_sql), Ok(limit_sql)) = (i64::try_from(after), i64::try_from(limit)) else {
            return Ok((Vec::new(), before));
        };
        let before_sql = i64::try_from(before).unwrap_or(i64::MAX);
        if after_sql.saturating_add(1) >= before_sql || limit == 0 {
            return Ok((Vec::new(), before));
        }
        // Unnamed, so planned with this page's bounds (see `filtered`).
        let query = sqlx::query(&statement.sql)
            .persistent(false)
            .bind(after_sql)
            .bind(before_sql)
            .bind(limit_sql);
        Ok((self.fetch_events(statement.bind(query)).await?, before))
    }

    /// The distinct event types of the rows below `cut`, which must be a cut computed before
    /// this call (every row below it is committed or never will be): a later statement then
    /// sees them all. Read once, then only for the rows after the cut last read.
    async fn stored_types(&self, cut: u64) -> Result<Arc<Vec<String>>, StorageError> {
        /// Beyond this many new positions, the skip scan of every type is cheaper.
        const SCAN_NEW_ROWS_UP_TO: u64 = 10_000;
        let known = self
            .inner
            .stored_types
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let sql = &self.inner.sql;
        let cut_sql = i64::try_from(cut).unwrap_or(i64::MAX);
        let fresh = match known {
            Some(known) if known.below >= cut => return Ok(known.types),
            Some(known) if cut - known.below <= SCAN_NEW_ROWS_UP_TO => {
                let new: Vec<String> = sqlx::query_scalar(&sql.stored_types_between)
                    .bind(i64::try_from(known.below).unwrap_or(i64::MAX))
                    .bind(cut_sql)
                    .fetch_all(&self.inner.pool)
                    .await
                    .map_err(backend)?;
                let mut types = (*known.types).clone();
                for event_type in new {
                    if !types.contains(&event_type) {
                        types.push(event_type);
                    }
                }
                types
            }
            _ => sqlx::query_scalar(&sql.stored_types)
                .fetch_all(&self.inner.pool)
                .await
                .map_err(backend)?,
        };
        let fresh = StoredTypes {
            below: cut,
            types: Arc::new(fresh),
        };
        let mut cached = self
            .inner
            .stored_types
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cached.as_ref().is_none_or(|c| c.below < cut) {
            *cached = Some(fresh.clone());
        }
        Ok(fresh.types)
    }

    async fn read_backlog(
        &self,
        after: u64,
        event_types: &[&'static str],
    ) -> Result<Backlog, StorageError> {
        let sql = &self.inner.sql;
        if event_types.is_empty() {
            self.count_backlog(after, &sql.backlog_all, |query| query)
                .await
        } else {
            self.count_backlog(after, &sql.backlog_types, |query| query.bind(event_types))
                .await
        }
    }

    async fn read_backlog_filtered(
        &self,
        after: u64,
        filter: &ReadFilter,
    ) -> Result<Backlog, StorageError> {
        let condition = filtered::backlog_condition(3, filter);
        let sql = backlog_statement(&self.inner.sql.events, &condition.sql);
        self.count_backlog(after, &sql, |query| condition.bind(query))
            .await
    }

    /// Runs a backlog statement (see [`backlog_statement`]), its parameters after the third
    /// bound by `bind`.
    async fn count_backlog<'q>(
        &self,
        after: u64,
        sql: &'q str,
        bind: impl FnOnce(
            sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
        )
            -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<Backlog, StorageError> {
        let horizon = self.refresh_horizon().await?;
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let cut = i64::try_from(horizon.cut).unwrap_or(i64::MAX);
        let query = sqlx::query(sql)
            .bind(after)
            .bind(cut)
            .bind(horizon.holder.flatten());
        let row = bind(query)
            .fetch_one(&self.inner.pool)
            .await
            .map_err(backend)?;
        let head = to_u64(row.try_get("head").map_err(backend)?, "position")?;
        let events = to_u64(row.try_get("events").map_err(backend)?, "count")?;
        let held = to_u64(row.try_get("held").map_err(backend)?, "count")?;
        // A stored_at out of range (possible in a row written before migration 5) is an
        // error of this read, not a panic.
        let oldest = timestamp::get_optional(
            &row,
            "oldest",
            &format_args!("stored_at of the oldest event after position {after}"),
        )?;
        let backlog = Backlog::new(head, events, oldest);
        // Rows at or after the cut with no registration behind it were written with positions
        // of their own, beyond the sequence: nothing to name.
        let (Some(pid), true) = (horizon.holder, held > 0) else {
            return Ok(backlog);
        };
        let since = timestamp::get_optional(
            &row,
            "since",
            &format_args!("the start of the transaction of backend {pid:?}"),
        )?;
        let query: Option<String> = row.try_get("query").map_err(backend)?;
        Ok(backlog.with_hold(ReadHold::new(horizon.cut, held, pid, since, query)))
    }

    async fn fetch_events(
        &self,
        query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<Vec<StoredEvent>, StorageError> {
        let rows = query.fetch_all(&self.inner.pool).await.map_err(backend)?;
        rows.iter().map(decode_row).collect()
    }
}

impl EventStore for PostgreSQLEventStore {
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
        Box::pin(self.read_page(after, limit))
    }

    /// Selects in the query (see "Filtered reads" above): a projection of one event type
    /// reads the rows of that type, through the type index, and no others.
    fn read_filtered<'a>(
        &'a self,
        after: u64,
        limit: usize,
        filter: &'a ReadFilter,
    ) -> BoxFuture<'a, Result<ReadPage, StorageError>> {
        Box::pin(self.read_filtered_page(after, limit, filter))
    }

    fn head_position(&self) -> BoxFuture<'_, Result<u64, StorageError>> {
        Box::pin(async move {
            let cut = self.refresh_horizon().await?.cut;
            let head: i64 = sqlx::query_scalar(&self.inner.sql.head_below)
                .bind(i64::try_from(cut).unwrap_or(i64::MAX))
                .fetch_one(&self.inner.pool)
                .await
                .map_err(backend)?;
            to_u64(head, "position")
        })
    }

    /// Counts every committed event after `after`, including those the read horizon still
    /// holds back; when some are held back, [`Backlog::held_back`] says by which transaction.
    fn backlog<'a>(
        &'a self,
        after: u64,
        event_types: &'a [&'static str],
    ) -> BoxFuture<'a, Result<Backlog, StorageError>> {
        Box::pin(self.read_backlog(after, event_types))
    }

    /// Counts as [`backlog`](EventStore::backlog) does, what the filter selects.
    fn backlog_filtered<'a>(
        &'a self,
        after: u64,
        filter: &'a ReadFilter,
    ) -> BoxFuture<'a, Result<Backlog, StorageError>> {
        Box::pin(self.read_backlog_filtered(after, filter))
    }

    /// A receiver of the head position, fed by this store's own appends at once and by a
    /// background task that listens on [`APPEND_CHANNEL`](super::APPEND_CHANNEL) with one connection of the pool.
    /// The task starts with the first subscriber (which must be inside a Tokio runtime,
    /// otherwise `None`), reconnects with backoff when the connection drops (publishing the
    /// head afresh, since notifications may have been missed), and ends when every receiver
    /// is dropped, the store is dropped or the pool is closed. Treat a change as a wake-up and
    /// read with `read_all`: the announced position may still be behind the read horizon, so
    /// readers also poll.
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
    let position = to_u64(row.try_get(column::POSITION).map_err(backend)?, "position")?;
    let event_id: Uuid = row.try_get(column::EVENT_ID).map_err(backend)?;
    let event_type: String = row.try_get(column::EVENT_TYPE).map_err(backend)?;
    let event_version: i32 = row.try_get(column::EVENT_VERSION).map_err(backend)?;
    let aggregate_version: i64 = row.try_get(column::AGGREGATE_VERSION).map_err(backend)?;
    // Borrowed from the row: decoded from there, never kept.
    let metadata_text: &str = row.try_get(column::METADATA).map_err(backend)?;
    let payload: &str = row.try_get(column::PAYLOAD).map_err(backend)?;

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
    let occurred_at = match row.try_get(column::OCCURRED_AT).map_err(backend)? {
        Timestamptz::InRange(time) => time,
        Timestamptz::OutOfRange(value) => {
            let error = malformed(
                &event_type,
                format!("occurred_at is {value}, which a DateTime<Utc> cannot hold"),
            );
            return Ok(undecodable(event_type, error));
        }
    };
    let extra: BTreeMap<String, serde_json::Value> = match serde_json::from_str(metadata_text) {
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
        aggregate_id: row.try_get(column::AGGREGATE_ID).map_err(backend)?,
        aggregate_type: row.try_get(column::AGGREGATE_TYPE).map_err(backend)?,
        aggregate_version,
        tenant_id: row.try_get(column::TENANT_ID).map_err(backend)?,
        actor_id: row.try_get(column::ACTOR_ID).map_err(backend)?,
        correlation_id: row.try_get(column::CORRELATION_ID).map_err(backend)?,
        causation_id: row.try_get(column::CAUSATION_ID).map_err(backend)?,
        metadata: extra,
        position: Some(position),
    };
    match EventRegistry::global().decode_str(metadata, payload) {
        Ok(event) => Ok(StoredEvent::Event(event)),
        // The type read again rather than copied for every row in case it fails.
        Err(error) => {
            let event_type: String = row.try_get(column::EVENT_TYPE).map_err(backend)?;
            Ok(undecodable(event_type, error))
        }
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
