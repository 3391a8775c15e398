//! PostgreSQL benchmark: a transactional database projection (the orders dashboard of the
//! Python library's "Complete Example") and the gap-safe read path, each beside a hand-written
//! sqlx loop doing the same work.
//!
//! Run with `cargo run --release -p projections-benches --features postgres --bin postgres`
//! against `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`). Everything
//! lives in the schema `projections_bench`; its events are kept for the next run (the data is
//! the same every time), the read model is reset before every timed run.
//!
//! Data: 50,000 orders over 30 days, each an `OrderCreated` then an `OrderShipped` (100,000
//! events), appended through `PostgreSQLEventStore` (setup, not timed) and read back once, so
//! both sides of the projection benchmark take the same decoded events and reading is timed
//! separately.
//!
//! Projection, per batch size (1, 100, 1,000; batch size 1 on the first 5,000 events only):
//! - ours: `TransactionalRunner` over `PostgreSQLTransactionUnit` (default `PgPool`, default runner
//!   settings: tracing spans on, no subscriber installed), `handle_batch` per batch. Per batch:
//!   `pool.begin()`, `SELECT position ... FOR UPDATE` of its checkpoint row (plus an
//!   `INSERT ... ON CONFLICT DO NOTHING` the first time), for each event the handler's two
//!   statements, one monotonic checkpoint upsert (`GREATEST`), `COMMIT`.
//! - by hand: the same statements on the same pool, with the same batching: per batch
//!   `pool.begin()`, `SELECT position ... FOR UPDATE` of its own checkpoint row in the same
//!   table (created the first time), skips events at or below it, the same two statements
//!   per event (typed events by `downcast`), one plain checkpoint upsert, `COMMIT`.
//! - set-based by hand (batch sizes above 1): the same read model from two statements per
//!   batch (`unnest` arrays: orders inserted together with every metric of the batch, summed
//!   per day, in a data-modifying CTE; then orders shipped), with the same checkpoint lock and
//!   upsert.
//! - ours set-based (batch sizes above 1): the same runner with set-based handlers
//!   (`events: &[Envelope<E>]`) and `EventOrder::PerAggregate`, so that each batch's
//!   `OrderCreated` events reach their handler in one call and its `OrderShipped` events in
//!   another; each handler writes its orders and its metrics in one statement. Per batch: the
//!   lock, two statements, the checkpoint upsert, `COMMIT`.
//!
//! The read-model tables are truncated and the checkpoints deleted (and vacuumed) before each
//! run, and a `CHECKPOINT` is forced, so each run starts from the same state. Each round
//! starts with a different side. Each side's best run is reported, with the median per-round
//! ratio of throughputs (ours / by hand). Every side must leave the same read model.
//!
//! Reads: the whole event table in pages of 1,000, through `PostgreSQLEventStore::read_all`
//! (gap-safe: a fresh store per round, which reads the registrations of appends in flight
//! before its first page and whenever a page reaches the cut; rows decoded to typed events with
//! their metadata), beside a plain `SELECT ... WHERE position > $1 ORDER BY position LIMIT
//! 1000` of the same columns decoding the same rows into a typed struct (payload through
//! `sqlx::types::Json` into the event struct, metadata into a map), and the same plain query
//! fetching rows without decoding them (raw fetch). Measured twice: each side reading the whole
//! table in turn (order rotating between rounds), and the three sides interleaved page by page
//! (order rotating every page), which spreads bursts of load on a shared machine over all
//! sides.
//!
//! Stall (`postgres stall`, not part of the default run; `--stall-seconds N`, default 20): in
//! a schema of its own, one transaction that writes to another table of this database and
//! one in the database `postgres` stay open for N seconds, while an appender appends one event
//! every 10 ms and a reader tails with `read_all(after, 1000)` every millisecond. Reports how
//! long after its append returned each event was read (maximum, median, 99th percentile), and
//! checks that both transactions were still running at the end.
//!
//! `postgres projection`, `postgres reads`, `postgres stall` and `--batch N` run one part (for
//! profiling); `postgres set` runs only the two set-based sides of the projection.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use projections::postgres::{self, PostgreSQLEventStore, Schema};
use projections::runner::EventOrder;
use projections::transactional::{PostgreSQLTransactionUnit, TransactionalRunner};
use projections::{
    AnyEvent, Envelope, Event, EventStore, ExpectedVersion, NoRetryPolicy, PgConnection,
    StoredEvent, projection,
};
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{PgPool, Row};
use uuid::Uuid;

/// The benchmark's schema: `projections_bench_seq` (named for the layout of migration 6,
/// positions from a sequence: a schema of an earlier layout, which earlier builds still read
/// and write, is left alone), or `BENCH_SCHEMA` when set (to keep the runs of two builds with
/// different migrations apart).
const SCHEMA: BenchSchema = BenchSchema;
/// How long the stall test keeps its transactions open, unless `--stall-seconds N`.
const STALL_SECONDS: u64 = 20;
/// How often the stall test appends.
const STALL_APPEND_EVERY: Duration = Duration::from_millis(10);

struct BenchSchema;

impl std::fmt::Display for BenchSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        static NAME: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            std::env::var("BENCH_SCHEMA").unwrap_or_else(|_| "projections_bench_seq".to_owned())
        });
        f.write_str(&NAME)
    }
}
const ORDERS: usize = 50_000;
const DAYS: usize = 30;
const BATCH_SIZES: [usize; 3] = [1, 100, 1_000];
/// Events projected at batch size 1 (one commit per event).
const EVENTS_AT_BATCH_1: usize = 5_000;
const PROJECTION_ROUNDS: usize = 4;
const READ_PAGE: usize = 1_000;
const READ_ROUNDS: usize = 5;

const OURS: &str = "bench-dashboard";
const OURS_SET: &str = "bench-dashboard-set-based";
const HAND: &str = "bench-dashboard-by-hand";

// ---- Events and the projection ----------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(aggregate = "Order")]
struct OrderCreated {
    customer_id: String,
    total_cents: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(aggregate = "Order")]
struct OrderShipped {
    tracking_number: String,
}

/// The statements of the dashboard, shared by both sides.
struct Sql {
    insert_order: String,
    count_created: String,
    ship_order: String,
    count_shipped: String,
    truncate: String,
}

impl Sql {
    fn new() -> Self {
        Self {
            insert_order: format!(
                "INSERT INTO {SCHEMA}.orders (id, customer_id, total_cents, status, created_at)
                 VALUES ($1, $2, $3, 'created', $4)
                 ON CONFLICT (id) DO NOTHING"
            ),
            count_created: format!(
                "INSERT INTO {SCHEMA}.order_metrics (date, orders_created, revenue_cents)
                 VALUES ($1, 1, $2)
                 ON CONFLICT (date) DO UPDATE SET
                     orders_created = order_metrics.orders_created + 1,
                     revenue_cents = order_metrics.revenue_cents + EXCLUDED.revenue_cents"
            ),
            ship_order: format!(
                "UPDATE {SCHEMA}.orders
                 SET status = 'shipped', tracking_number = $2, shipped_at = $3
                 WHERE id = $1"
            ),
            count_shipped: format!(
                "INSERT INTO {SCHEMA}.order_metrics (date, orders_shipped)
                 VALUES ($1, 1)
                 ON CONFLICT (date) DO UPDATE SET
                     orders_shipped = order_metrics.orders_shipped + 1"
            ),
            truncate: format!("TRUNCATE {SCHEMA}.orders, {SCHEMA}.order_metrics"),
        }
    }
}

async fn created(
    sql: &Sql,
    conn: &mut PgConnection,
    event: &Envelope<OrderCreated>,
) -> Result<(), sqlx::Error> {
    sqlx::query(&sql.insert_order)
        .bind(event.aggregate_id())
        .bind(&event.customer_id)
        .bind(event.total_cents)
        .bind(event.occurred_at())
        .execute(&mut *conn)
        .await?;
    sqlx::query(&sql.count_created)
        .bind(event.occurred_at().date_naive())
        .bind(event.total_cents)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn shipped(
    sql: &Sql,
    conn: &mut PgConnection,
    event: &Envelope<OrderShipped>,
) -> Result<(), sqlx::Error> {
    sqlx::query(&sql.ship_order)
        .bind(event.aggregate_id())
        .bind(&event.tracking_number)
        .bind(event.occurred_at())
        .execute(&mut *conn)
        .await?;
    sqlx::query(&sql.count_shipped)
        .bind(event.occurred_at().date_naive())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

struct Dashboard {
    sql: Arc<Sql>,
}

#[projection(name = "bench-dashboard")]
impl Dashboard {
    #[handles(OrderCreated)]
    async fn created(
        &mut self,
        conn: &mut PgConnection,
        event: &Envelope<OrderCreated>,
    ) -> Result<(), sqlx::Error> {
        created(&self.sql, conn, event).await
    }

    #[handles(OrderShipped)]
    async fn shipped(
        &mut self,
        conn: &mut PgConnection,
        event: &Envelope<OrderShipped>,
    ) -> Result<(), sqlx::Error> {
        shipped(&self.sql, conn, event).await
    }

    #[reset]
    async fn clear(&mut self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query(&self.sql.truncate).execute(&mut *conn).await?;
        Ok(())
    }
}

/// The dashboard with set-based handlers: per call, one statement that writes the orders of
/// the run (`unnest`) and, in a data-modifying CTE, the metrics of their days, summed in Rust.
struct SetDashboard {
    create_orders: String,
    ship_orders: String,
    truncate: String,
}

impl SetDashboard {
    fn new(sql: &Sql) -> Self {
        Self {
            create_orders: format!(
                "WITH inserted AS (
                     INSERT INTO {SCHEMA}.orders (id, customer_id, total_cents, status, created_at)
                     SELECT id, customer_id, total_cents, 'created', created_at
                     FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::timestamptz[])
                          AS t(id, customer_id, total_cents, created_at)
                     ON CONFLICT (id) DO NOTHING
                 )
                 INSERT INTO {SCHEMA}.order_metrics (date, orders_created, revenue_cents)
                 SELECT * FROM unnest($5::date[], $6::bigint[], $7::bigint[])
                 ON CONFLICT (date) DO UPDATE SET
                     orders_created = order_metrics.orders_created + EXCLUDED.orders_created,
                     revenue_cents = order_metrics.revenue_cents + EXCLUDED.revenue_cents"
            ),
            ship_orders: format!(
                "WITH shipped AS (
                     UPDATE {SCHEMA}.orders AS o
                     SET status = 'shipped', tracking_number = t.tracking_number,
                         shipped_at = t.shipped_at
                     FROM unnest($1::uuid[], $2::text[], $3::timestamptz[])
                          AS t(id, tracking_number, shipped_at)
                     WHERE o.id = t.id
                 )
                 INSERT INTO {SCHEMA}.order_metrics (date, orders_shipped)
                 SELECT * FROM unnest($4::date[], $5::bigint[])
                 ON CONFLICT (date) DO UPDATE SET
                     orders_shipped = order_metrics.orders_shipped + EXCLUDED.orders_shipped"
            ),
            truncate: sql.truncate.clone(),
        }
    }
}

#[projection(name = "bench-dashboard-set-based")]
impl SetDashboard {
    #[handles(OrderCreated)]
    async fn created(
        &mut self,
        conn: &mut PgConnection,
        events: &[Envelope<OrderCreated>],
    ) -> Result<(), sqlx::Error> {
        let ids: Vec<Uuid> = events.iter().map(|e| e.aggregate_id()).collect();
        let customers: Vec<&str> = events.iter().map(|e| e.customer_id.as_str()).collect();
        let totals: Vec<i64> = events.iter().map(|e| e.total_cents).collect();
        let times: Vec<DateTime<Utc>> = events.iter().map(|e| e.occurred_at()).collect();
        let mut days: BTreeMap<chrono::NaiveDate, (i64, i64)> = BTreeMap::new();
        for event in events {
            let day = days.entry(event.occurred_at().date_naive()).or_default();
            day.0 += 1;
            day.1 += event.total_cents;
        }
        let dates: Vec<_> = days.keys().copied().collect();
        let created: Vec<i64> = days.values().map(|d| d.0).collect();
        let revenue: Vec<i64> = days.values().map(|d| d.1).collect();
        sqlx::query(&self.create_orders)
            .bind(&ids)
            .bind(&customers)
            .bind(&totals)
            .bind(&times)
            .bind(&dates)
            .bind(&created)
            .bind(&revenue)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    #[handles(OrderShipped)]
    async fn shipped(
        &mut self,
        conn: &mut PgConnection,
        events: &[Envelope<OrderShipped>],
    ) -> Result<(), sqlx::Error> {
        let ids: Vec<Uuid> = events.iter().map(|e| e.aggregate_id()).collect();
        let tracking: Vec<&str> = events.iter().map(|e| e.tracking_number.as_str()).collect();
        let times: Vec<DateTime<Utc>> = events.iter().map(|e| e.occurred_at()).collect();
        let mut days: BTreeMap<chrono::NaiveDate, i64> = BTreeMap::new();
        for event in events {
            *days.entry(event.occurred_at().date_naive()).or_default() += 1;
        }
        let dates: Vec<_> = days.keys().copied().collect();
        let shipped: Vec<i64> = days.values().copied().collect();
        sqlx::query(&self.ship_orders)
            .bind(&ids)
            .bind(&tracking)
            .bind(&times)
            .bind(&dates)
            .bind(&shipped)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    #[reset]
    async fn clear(&mut self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query(&self.truncate).execute(&mut *conn).await?;
        Ok(())
    }
}

// ---- Setup ------------------------------------------------------------------------------

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Our migrations and the read-model tables in the benchmark's schema. The events of an
/// earlier run are kept when they are all there (the data is the same every time); otherwise
/// the schema is dropped and re-created. Returns whether the events must be appended.
async fn prepare_schema(pool: &PgPool) -> (Schema, bool) {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("{SCHEMA}.projection_events"))
        .fetch_one(pool)
        .await
        .unwrap();
    let stored: Option<i64> = if exists {
        let count = format!("SELECT count(*) FROM {SCHEMA}.projection_events");
        Some(sqlx::query_scalar(&count).fetch_one(pool).await.unwrap())
    } else {
        None
    };
    let reuse = stored == Some(2 * ORDERS as i64);
    if !reuse {
        sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
            .execute(pool)
            .await
            .unwrap();
    }
    let schema = Schema::named(&SCHEMA.to_string()).unwrap();
    postgres::migrate_schema(pool, &schema).await.unwrap();
    sqlx::raw_sql(&format!(
        "CREATE TABLE IF NOT EXISTS {SCHEMA}.orders (
             id              uuid        PRIMARY KEY,
             customer_id     text        NOT NULL,
             total_cents     bigint      NOT NULL,
             status          text        NOT NULL,
             tracking_number text,
             created_at      timestamptz NOT NULL,
             shipped_at      timestamptz
         );
         CREATE TABLE IF NOT EXISTS {SCHEMA}.order_metrics (
             date           date   PRIMARY KEY,
             orders_created bigint NOT NULL DEFAULT 0,
             orders_shipped bigint NOT NULL DEFAULT 0,
             revenue_cents  bigint NOT NULL DEFAULT 0
         );"
    ))
    .execute(pool)
    .await
    .unwrap();
    (schema, !reuse)
}

/// Order `n`: its id and its two events.
fn order(n: usize) -> (Uuid, Vec<AnyEvent>) {
    let id = Uuid::from_u128(0xbe0c_0000_0000_4000_8000_0000_0000_0000 | n as u128);
    let base = Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, 0).single().unwrap();
    let created_at: DateTime<Utc> = base
        + chrono::Duration::seconds((n * DAYS * 86_400 / ORDERS) as i64)
        + chrono::Duration::seconds((n % 3_600) as i64);
    let shipped_at = created_at + chrono::Duration::hours(20);
    let events = vec![
        Envelope::new(
            id,
            OrderCreated {
                customer_id: format!("customer-{:05}", n % 5_000),
                total_cents: 500 + (n * 7_919 % 20_000) as i64,
            },
        )
        .with_occurred_at(created_at)
        .into(),
        Envelope::new(
            id,
            OrderShipped {
                tracking_number: format!("TRK-{n:08}"),
            },
        )
        .with_occurred_at(shipped_at)
        .into(),
    ];
    (id, events)
}

/// Appends the orders through the store, 8 appends in flight, on a pool that does not wait
/// for the WAL flush (setup only).
async fn append_orders(schema: &Schema) {
    let options = PgConnectOptions::from_str(&database_url())
        .unwrap()
        .options([("synchronous_commit", "off")]);
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .unwrap();
    let store = PostgreSQLEventStore::with_schema(pool.clone(), schema.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let store = store.clone();
        tasks.spawn(async move {
            for n in (worker..ORDERS).step_by(8) {
                let (id, events) = order(n);
                store
                    .append(id, ExpectedVersion::NoStream, events)
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    pool.close().await;
}

/// Every event, read once through the store.
async fn read_everything(store: &PostgreSQLEventStore) -> Vec<StoredEvent> {
    let mut events = Vec::with_capacity(2 * ORDERS);
    let mut stalls: u32 = 0;
    while events.len() < 2 * ORDERS {
        let after = events.last().and_then(StoredEvent::position).unwrap_or(0);
        let page = store.read_all(after, 10_000).await.unwrap();
        if page.is_empty() {
            // Every 10 s.
            if stalls.is_multiple_of(20) {
                report_horizon(store.pool(), events.len()).await;
            }
            stalls += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        events.extend(page);
    }
    assert!(events.iter().all(|e| e.event().is_some()));
    events
}

/// Says which transactions hold the read horizon back, when reading stalls.
async fn report_horizon(pool: &PgPool, read: usize) {
    let holders: Vec<(i32, String, f64)> = sqlx::query_as(
        "SELECT pid, coalesce(state, ''), extract(epoch FROM now() - xact_start)::float8
         FROM pg_stat_activity
         WHERE pid <> pg_backend_pid()
           AND (backend_xid IS NOT NULL OR backend_xmin IS NOT NULL)
           AND xact_start < now() - interval '1 second'
         ORDER BY xact_start",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    eprintln!(
        "read {read} of {} events; the rest is behind the read horizon, held by: {}",
        2 * ORDERS,
        holders
            .iter()
            .map(|(pid, state, age)| format!("pid {pid} ({state}, transaction open {age:.0} s)"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

// ---- The projection benchmark -----------------------------------------------------------

/// Empties the read model and the checkpoints, and starts from a fresh server checkpoint.
async fn reset(pool: &PgPool, sql: &Sql) {
    sqlx::raw_sql(&format!(
        "{}; DELETE FROM {SCHEMA}.projection_checkpoints",
        sql.truncate
    ))
    .execute(pool)
    .await
    .unwrap();
    // One statement each: neither may run in the implicit transaction of a multi-statement
    // query.
    for statement in [
        format!("VACUUM ANALYZE {SCHEMA}.projection_checkpoints"),
        "CHECKPOINT".to_owned(),
    ] {
        sqlx::raw_sql(&statement).execute(pool).await.unwrap();
    }
}

async fn ours(
    pool: &PgPool,
    schema: &Schema,
    sql: &Arc<Sql>,
    events: &[StoredEvent],
    batch: usize,
) -> Duration {
    let unit = Arc::new(PostgreSQLTransactionUnit::with_schema(pool.clone(), schema));
    let mut runner =
        TransactionalRunner::new(Dashboard { sql: sql.clone() }, unit).retry_policy(NoRetryPolicy);
    let start = Instant::now();
    for chunk in events.chunks(batch) {
        let outcome = runner.handle_batch(chunk).await.unwrap();
        debug_assert_eq!(outcome.applied, chunk.len() as u64);
        black_box(outcome);
    }
    start.elapsed()
}

/// Ours, set-based: the same runner with [`SetDashboard`], in per-aggregate order so that a
/// batch's `OrderCreated` and `OrderShipped` events each reach their handler in one call.
async fn ours_set_based(
    pool: &PgPool,
    schema: &Schema,
    sql: &Sql,
    events: &[StoredEvent],
    batch: usize,
) -> Duration {
    let unit = Arc::new(PostgreSQLTransactionUnit::with_schema(pool.clone(), schema));
    let mut runner = TransactionalRunner::new(SetDashboard::new(sql), unit)
        .retry_policy(NoRetryPolicy)
        .event_order(EventOrder::PerAggregate);
    let start = Instant::now();
    for chunk in events.chunks(batch) {
        let outcome = runner.handle_batch(chunk).await.unwrap();
        debug_assert_eq!(outcome.applied, chunk.len() as u64);
        black_box(outcome);
    }
    start.elapsed()
}

async fn by_hand(pool: &PgPool, sql: &Sql, events: &[StoredEvent], batch: usize) -> Duration {
    let checkpoints = format!("{SCHEMA}.projection_checkpoints");
    let lock = format!("SELECT position FROM {checkpoints} WHERE projection_name = $1 FOR UPDATE");
    let create = format!(
        "INSERT INTO {checkpoints} (projection_name) VALUES ($1)
         ON CONFLICT (projection_name) DO NOTHING"
    );
    let upsert = format!(
        "INSERT INTO {checkpoints} AS c (
             projection_name, position, last_event_id, last_event_type, last_processed_at,
             events_processed
         )
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (projection_name) DO UPDATE SET
             position = EXCLUDED.position,
             last_event_id = EXCLUDED.last_event_id,
             last_event_type = EXCLUDED.last_event_type,
             last_processed_at = EXCLUDED.last_processed_at,
             events_processed = c.events_processed + EXCLUDED.events_processed,
             updated_at = now()"
    );
    let start = Instant::now();
    for chunk in events.chunks(batch) {
        let mut tx = pool.begin().await.unwrap();
        let locked: Option<i64> = sqlx::query_scalar(&lock)
            .bind(HAND)
            .fetch_optional(&mut *tx)
            .await
            .unwrap();
        if locked.is_none() {
            sqlx::query(&create)
                .bind(HAND)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        let mut checkpoint = locked.unwrap_or(0) as u64;
        let mut last = None;
        let mut applied = 0i64;
        for stored in chunk {
            let Some(event) = stored.event() else {
                continue;
            };
            let position = event.position().unwrap_or(0);
            if position <= checkpoint {
                continue;
            }
            if let Some(e) = event.downcast::<OrderCreated>() {
                created(sql, &mut tx, e).await.unwrap();
            } else if let Some(e) = event.downcast::<OrderShipped>() {
                shipped(sql, &mut tx, e).await.unwrap();
            }
            checkpoint = position;
            applied += 1;
            last = Some(event);
        }
        if let Some(event) = last {
            sqlx::query(&upsert)
                .bind(HAND)
                .bind(checkpoint as i64)
                .bind(event.event_id())
                .bind(event.event_type())
                .bind(Utc::now())
                .bind(applied)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }
    start.elapsed()
}

/// Hand-written, set-based: the same read model from two statements per batch (orders
/// inserted with every metric of the batch summed per day and upserted, then orders shipped),
/// parameters as arrays through `unnest`, with the same checkpoint lock and upsert: the
/// baseline of ours set-based.
async fn set_based(pool: &PgPool, events: &[StoredEvent], batch: usize) -> Duration {
    let checkpoints = format!("{SCHEMA}.projection_checkpoints");
    let lock = format!("SELECT position FROM {checkpoints} WHERE projection_name = $1 FOR UPDATE");
    let create = format!(
        "INSERT INTO {checkpoints} (projection_name) VALUES ($1)
         ON CONFLICT (projection_name) DO NOTHING"
    );
    let upsert = format!(
        "INSERT INTO {checkpoints} AS c (
             projection_name, position, last_event_id, last_event_type, last_processed_at,
             events_processed
         )
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (projection_name) DO UPDATE SET
             position = EXCLUDED.position,
             last_event_id = EXCLUDED.last_event_id,
             last_event_type = EXCLUDED.last_event_type,
             last_processed_at = EXCLUDED.last_processed_at,
             events_processed = c.events_processed + EXCLUDED.events_processed,
             updated_at = now()"
    );
    // One statement for the orders created and every metric of the batch (a data-modifying
    // CTE), then one for the orders shipped, which must see the rows just inserted.
    let insert_orders_and_metrics = format!(
        "WITH inserted AS (
             INSERT INTO {SCHEMA}.orders (id, customer_id, total_cents, status, created_at)
             SELECT id, customer_id, total_cents, 'created', created_at
             FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::timestamptz[])
                  AS t(id, customer_id, total_cents, created_at)
             ON CONFLICT (id) DO NOTHING
         )
         INSERT INTO {SCHEMA}.order_metrics (date, orders_created, orders_shipped, revenue_cents)
         SELECT * FROM unnest($5::date[], $6::bigint[], $7::bigint[], $8::bigint[])
         ON CONFLICT (date) DO UPDATE SET
             orders_created = order_metrics.orders_created + EXCLUDED.orders_created,
             orders_shipped = order_metrics.orders_shipped + EXCLUDED.orders_shipped,
             revenue_cents = order_metrics.revenue_cents + EXCLUDED.revenue_cents"
    );
    let ship_orders = format!(
        "UPDATE {SCHEMA}.orders AS o
         SET status = 'shipped', tracking_number = t.tracking_number, shipped_at = t.shipped_at
         FROM unnest($1::uuid[], $2::text[], $3::timestamptz[])
              AS t(id, tracking_number, shipped_at)
         WHERE o.id = t.id"
    );
    let start = Instant::now();
    for chunk in events.chunks(batch) {
        let mut tx = pool.begin().await.unwrap();
        let locked: Option<i64> = sqlx::query_scalar(&lock)
            .bind(HAND)
            .fetch_optional(&mut *tx)
            .await
            .unwrap();
        if locked.is_none() {
            sqlx::query(&create)
                .bind(HAND)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        let mut checkpoint = locked.unwrap_or(0) as u64;
        let mut last = None;
        let mut applied = 0i64;
        let (mut c_ids, mut c_customers, mut c_totals, mut c_at) = (vec![], vec![], vec![], vec![]);
        let (mut s_ids, mut s_tracking, mut s_at) = (vec![], vec![], vec![]);
        // Per day: created, shipped, revenue.
        let mut days: BTreeMap<chrono::NaiveDate, (i64, i64, i64)> = BTreeMap::new();
        for stored in chunk {
            let Some(event) = stored.event() else {
                continue;
            };
            let position = event.position().unwrap_or(0);
            if position <= checkpoint {
                continue;
            }
            if let Some(e) = event.downcast::<OrderCreated>() {
                c_ids.push(e.aggregate_id());
                c_customers.push(e.customer_id.as_str());
                c_totals.push(e.total_cents);
                c_at.push(e.occurred_at());
                let day = days.entry(e.occurred_at().date_naive()).or_default();
                day.0 += 1;
                day.2 += e.total_cents;
            } else if let Some(e) = event.downcast::<OrderShipped>() {
                s_ids.push(e.aggregate_id());
                s_tracking.push(e.tracking_number.as_str());
                s_at.push(e.occurred_at());
                days.entry(e.occurred_at().date_naive()).or_default().1 += 1;
            }
            checkpoint = position;
            applied += 1;
            last = Some(event);
        }
        if !days.is_empty() {
            let dates: Vec<_> = days.keys().copied().collect();
            let created: Vec<i64> = days.values().map(|d| d.0).collect();
            let shipped: Vec<i64> = days.values().map(|d| d.1).collect();
            let revenue: Vec<i64> = days.values().map(|d| d.2).collect();
            sqlx::query(&insert_orders_and_metrics)
                .bind(&c_ids)
                .bind(&c_customers)
                .bind(&c_totals)
                .bind(&c_at)
                .bind(&dates)
                .bind(&created)
                .bind(&shipped)
                .bind(&revenue)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        if !s_ids.is_empty() {
            sqlx::query(&ship_orders)
                .bind(&s_ids)
                .bind(&s_tracking)
                .bind(&s_at)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        if let Some(event) = last {
            sqlx::query(&upsert)
                .bind(HAND)
                .bind(checkpoint as i64)
                .bind(event.event_id())
                .bind(event.event_type())
                .bind(Utc::now())
                .bind(applied)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }
    start.elapsed()
}

/// What the read model and a checkpoint hold after a run, to check that both sides did the
/// same work.
async fn fingerprint(pool: &PgPool, projection: &str) -> (i64, i64, i64, i64, i64, i64, i64) {
    let row = sqlx::query(&format!(
        "SELECT
             (SELECT count(*) FROM {SCHEMA}.orders) AS orders,
             (SELECT count(*) FROM {SCHEMA}.orders WHERE status = 'shipped') AS shipped,
             (SELECT coalesce(sum(total_cents), 0)::bigint FROM {SCHEMA}.orders) AS total,
             (SELECT coalesce(sum(orders_created), 0)::bigint FROM {SCHEMA}.order_metrics) AS m_created,
             (SELECT coalesce(sum(orders_shipped), 0)::bigint FROM {SCHEMA}.order_metrics) AS m_shipped,
             (SELECT coalesce(sum(revenue_cents), 0)::bigint FROM {SCHEMA}.order_metrics) AS m_revenue,
             (SELECT position FROM {SCHEMA}.projection_checkpoints WHERE projection_name = $1) AS position"
    ))
    .bind(projection)
    .fetch_one(pool)
    .await
    .unwrap();
    let get = |column: &str| row.try_get::<Option<i64>, _>(column).unwrap().unwrap_or(-1);
    (
        get("orders"),
        get("shipped"),
        get("total"),
        get("m_created"),
        get("m_shipped"),
        get("m_revenue"),
        get("position"),
    )
}

struct Comparison {
    ours: Option<f64>,
    hand: Option<f64>,
    median_ratio: Option<f64>,
    set_based: Option<f64>,
    ours_set_based: Option<f64>,
    /// Median per round of ours set-based / set-based by hand (throughputs).
    set_based_ratio: Option<f64>,
}

fn per_second(events: usize, elapsed: Duration) -> f64 {
    events as f64 / elapsed.as_secs_f64()
}

#[derive(Clone, Copy, PartialEq)]
enum Side {
    Ours,
    ByHand,
    SetBased,
    OursSetBased,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    (values[(values.len() - 1) / 2] + values[values.len() / 2]) / 2.0
}

async fn compare_projection(
    pool: &PgPool,
    schema: &Schema,
    sql: &Arc<Sql>,
    events: &[StoredEvent],
    batch: usize,
    set_only: bool,
) -> Comparison {
    let mut sides = if set_only {
        vec![]
    } else {
        vec![Side::Ours, Side::ByHand]
    };
    if batch > 1 {
        sides.push(Side::SetBased);
        sides.push(Side::OursSetBased);
    }
    let mut best = [Duration::MAX; 4];
    let mut ratios = Vec::new();
    let mut set_ratios = Vec::new();
    for round in 0..PROJECTION_ROUNDS {
        let mut times = [Duration::ZERO; 4];
        let mut prints = Vec::new();
        // Each round starts with a different side.
        for step in 0..sides.len() {
            let side = sides[(step + round) % sides.len()];
            reset(pool, sql).await;
            let (elapsed, name) = match side {
                Side::Ours => (ours(pool, schema, sql, events, batch).await, OURS),
                Side::ByHand => (by_hand(pool, sql, events, batch).await, HAND),
                Side::SetBased => (set_based(pool, events, batch).await, HAND),
                Side::OursSetBased => (
                    ours_set_based(pool, schema, sql, events, batch).await,
                    OURS_SET,
                ),
            };
            prints.push(fingerprint(pool, name).await);
            times[side as usize] = elapsed;
        }
        assert!(
            prints.windows(2).all(|w| w[0] == w[1]),
            "every side must leave the same read model: {prints:?}"
        );
        assert_eq!(prints[0].6, events.len() as i64);
        for (best, time) in best.iter_mut().zip(times) {
            if time > Duration::ZERO {
                *best = (*best).min(time);
            }
        }
        // Throughput ratio: ours / hand-written = time by hand / time ours.
        if !set_only {
            ratios.push(times[1].as_secs_f64() / times[0].as_secs_f64());
        }
        if batch > 1 {
            set_ratios.push(times[2].as_secs_f64() / times[3].as_secs_f64());
        }
    }
    let rate = |time: Duration| (time < Duration::MAX).then(|| per_second(events.len(), time));
    Comparison {
        ours: rate(best[0]),
        hand: rate(best[1]),
        median_ratio: (!ratios.is_empty()).then(|| median(ratios)),
        set_based: rate(best[2]),
        ours_set_based: rate(best[3]),
        set_based_ratio: (!set_ratios.is_empty()).then(|| median(set_ratios)),
    }
}

// ---- The read benchmark -----------------------------------------------------------------

#[derive(Debug)]
#[allow(dead_code)] // read through `black_box` only
enum Payload {
    Created(OrderCreated),
    Shipped(OrderShipped),
    Other(String),
}

#[derive(Debug)]
#[allow(dead_code)] // read through `black_box` only
struct HandEvent {
    position: i64,
    event_id: Uuid,
    aggregate_id: Uuid,
    aggregate_type: String,
    aggregate_version: i64,
    event_type: String,
    event_version: i32,
    payload: Payload,
    metadata: BTreeMap<String, serde_json::Value>,
    tenant_id: Option<Uuid>,
    actor_id: Option<String>,
    correlation_id: Uuid,
    causation_id: Option<Uuid>,
    occurred_at: DateTime<Utc>,
    stored_at: DateTime<Utc>,
}

fn plain_select() -> String {
    format!(
        "SELECT position, event_id, aggregate_id, aggregate_type, aggregate_version, event_type,
                event_version, payload, metadata, tenant_id, actor_id, correlation_id,
                causation_id, occurred_at, stored_at
         FROM {SCHEMA}.projection_events
         WHERE position > $1
         ORDER BY position
         LIMIT $2"
    )
}

async fn read_ours(pool: &PgPool, schema: &Schema) -> (usize, Duration) {
    // A fresh store: it knows nothing of the horizon yet.
    let store = PostgreSQLEventStore::with_schema(pool.clone(), schema.clone());
    let start = Instant::now();
    let (mut after, mut count) = (0, 0);
    loop {
        let page = store.read_all(after, READ_PAGE).await.unwrap();
        let Some(last) = page.last().and_then(StoredEvent::position) else {
            break;
        };
        after = last;
        count += page.len();
        black_box(page);
    }
    (count, start.elapsed())
}

fn decode(row: &sqlx::postgres::PgRow) -> Result<HandEvent, sqlx::Error> {
    let event_type: String = row.try_get("event_type")?;
    let payload = match event_type.as_str() {
        "OrderCreated" => Payload::Created(row.try_get::<Json<OrderCreated>, _>("payload")?.0),
        "OrderShipped" => Payload::Shipped(row.try_get::<Json<OrderShipped>, _>("payload")?.0),
        other => Payload::Other(other.to_owned()),
    };
    Ok(HandEvent {
        position: row.try_get("position")?,
        event_id: row.try_get("event_id")?,
        aggregate_id: row.try_get("aggregate_id")?,
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_version: row.try_get("aggregate_version")?,
        event_type,
        event_version: row.try_get("event_version")?,
        payload,
        metadata: row
            .try_get::<Json<BTreeMap<String, serde_json::Value>>, _>("metadata")?
            .0,
        tenant_id: row.try_get("tenant_id")?,
        actor_id: row.try_get("actor_id")?,
        correlation_id: row.try_get("correlation_id")?,
        causation_id: row.try_get("causation_id")?,
        occurred_at: row.try_get("occurred_at")?,
        stored_at: row.try_get("stored_at")?,
    })
}

async fn read_by_hand(pool: &PgPool, decoded: bool) -> (usize, Duration) {
    let select = plain_select();
    let start = Instant::now();
    let (mut after, mut count) = (0i64, 0);
    loop {
        let rows = sqlx::query(&select)
            .bind(after)
            .bind(READ_PAGE as i64)
            .fetch_all(pool)
            .await
            .unwrap();
        let Some(last) = rows.last() else {
            break;
        };
        after = last.try_get("position").unwrap();
        count += rows.len();
        if decoded {
            let events: Vec<HandEvent> = rows.iter().map(|row| decode(row).unwrap()).collect();
            black_box(events);
        } else {
            black_box(rows);
        }
    }
    (count, start.elapsed())
}

/// Reads the whole table once per side, one page of each side after the other (the first side
/// rotating every page), so that a burst of load on the shared machine falls on all sides
/// alike. Returns each side's total time (ours, by hand decoded, raw fetch) and the events
/// read.
async fn read_interleaved(pool: &PgPool, schema: &Schema, round: usize) -> ([Duration; 3], usize) {
    // A fresh store: it knows nothing of the horizon yet.
    let store = PostgreSQLEventStore::with_schema(pool.clone(), schema.clone());
    let select = plain_select();
    let mut times = [Duration::ZERO; 3];
    let (mut after, mut count) = (0_u64, 0);
    for page in round.. {
        let mut read = [(0_usize, 0_u64); 3];
        for step in 0..3 {
            let which = (step + page) % 3;
            let start = Instant::now();
            read[which] = if which == 0 {
                let events = store.read_all(after, READ_PAGE).await.unwrap();
                let last = events.last().and_then(StoredEvent::position);
                let len = events.len();
                black_box(events);
                (len, last.unwrap_or(after))
            } else {
                let rows = sqlx::query(&select)
                    .bind(i64::try_from(after).unwrap())
                    .bind(READ_PAGE as i64)
                    .fetch_all(pool)
                    .await
                    .unwrap();
                let last = rows
                    .last()
                    .map(|row| u64::try_from(row.try_get::<i64, _>("position").unwrap()).unwrap());
                let len = rows.len();
                if which == 1 {
                    let events: Vec<HandEvent> =
                        rows.iter().map(|row| decode(row).unwrap()).collect();
                    black_box(events);
                } else {
                    black_box(rows);
                }
                (len, last.unwrap_or(after))
            };
            times[which] += start.elapsed();
        }
        assert!(read.iter().all(|side| *side == read[0]), "{read:?}");
        let (len, last) = read[0];
        if len == 0 {
            break;
        }
        count += len;
        after = last;
    }
    (times, count)
}

// ---- The stall test -----------------------------------------------------------------------

/// The URL of the database `postgres` on the benchmark's server.
fn other_database_url() -> String {
    let url = database_url();
    let (server, database) = url.rsplit_once('/').unwrap();
    match database.split_once('?') {
        Some((_, options)) => format!("{server}/postgres?{options}"),
        None => format!("{server}/postgres"),
    }
}

/// Appends and tails while two transactions that write no events stay open (see the module
/// documentation).
async fn stall(pool: &PgPool, seconds: u64) {
    let name = format!("{SCHEMA}_stall");
    sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
        .execute(pool)
        .await
        .unwrap();
    let schema = Schema::named(&name).unwrap();
    postgres::migrate_schema(pool, &schema).await.unwrap();
    sqlx::raw_sql(&format!("CREATE TABLE {name}.scratch (n integer)"))
        .execute(pool)
        .await
        .unwrap();

    let mut here = pool.acquire().await.unwrap();
    sqlx::raw_sql(&format!("BEGIN; INSERT INTO {name}.scratch VALUES (1)"))
        .execute(&mut *here)
        .await
        .unwrap();
    let mut elsewhere = <PgConnection as sqlx::Connection>::connect(&other_database_url())
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN; SELECT pg_current_xact_id()")
        .execute(&mut elsewhere)
        .await
        .unwrap();
    let xids: Vec<String> = vec![
        sqlx::query_scalar("SELECT pg_current_xact_id()::text")
            .fetch_one(&mut *here)
            .await
            .unwrap(),
        sqlx::query_scalar("SELECT pg_current_xact_id()::text")
            .fetch_one(&mut elsewhere)
            .await
            .unwrap(),
    ];

    let store = PostgreSQLEventStore::with_schema(pool.clone(), schema.clone());
    let until = Instant::now() + Duration::from_secs(seconds);
    let appender = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut returned = Vec::new();
            let mut tick = tokio::time::interval(STALL_APPEND_EVERY);
            let mut n = 0;
            while Instant::now() < until {
                tick.tick().await;
                n += 1;
                let (id, mut events) = order(n);
                events.truncate(1);
                let result = store
                    .append(id, ExpectedVersion::NoStream, events)
                    .await
                    .unwrap();
                returned.push((result.last_position, Instant::now()));
            }
            returned
        })
    };
    let mut seen = BTreeMap::new();
    let mut after = 0;
    while Instant::now() < until || !appender.is_finished() {
        let page = store.read_all(after, 1_000).await.unwrap();
        let now = Instant::now();
        for event in &page {
            let position = event.position().unwrap();
            seen.insert(position, now);
            after = position;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let returned = appender.await.unwrap();
    // The last appends, read now.
    loop {
        let page = store.read_all(after, 1_000).await.unwrap();
        let now = Instant::now();
        let Some(last) = page.last().and_then(StoredEvent::position) else {
            break;
        };
        for event in &page {
            seen.insert(event.position().unwrap(), now);
        }
        after = last;
    }
    let running: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM unnest($1::text[]) AS x
         WHERE pg_xact_status(x::xid8) = 'in progress'",
    )
    .bind(&xids)
    .fetch_one(pool)
    .await
    .unwrap();
    sqlx::raw_sql("ROLLBACK").execute(&mut *here).await.unwrap();
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut elsewhere)
        .await
        .unwrap();
    drop(here);

    let mut delays: Vec<Duration> = returned
        .iter()
        .map(|(position, at)| {
            let read = seen
                .get(position)
                .unwrap_or_else(|| panic!("event {position} was never read"));
            read.saturating_duration_since(*at)
        })
        .collect();
    delays.sort();
    let quantile = |q: f64| delays[((delays.len() - 1) as f64 * q) as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "Stall test: {} appends over {seconds} s while a writing transaction in this database \
         and one in database `postgres` stayed open ({running} of 2 still running at the end)",
        delays.len()
    );
    println!(
        "  append returned -> read: median {:.2} ms, p99 {:.2} ms, max {:.2} ms\n",
        ms(quantile(0.5)),
        ms(quantile(0.99)),
        ms(quantile(1.0))
    );
    assert_eq!(
        running, 2,
        "a foreign transaction ended before the test did"
    );
    sqlx::raw_sql(&format!("DROP SCHEMA {name} CASCADE"))
        .execute(pool)
        .await
        .unwrap();
}

// ---- Main -------------------------------------------------------------------------------

fn main() {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}

/// What to run, from the arguments: `projection`, `reads` (default both), `stall`, `--batch N`
/// (repeatable; default 1, 100 and 1,000) and `--stall-seconds N`; `set` runs the set-based
/// sides of the projection only.
struct Selection {
    projection: bool,
    reads: bool,
    stall: bool,
    set_only: bool,
    batches: Vec<usize>,
    stall_seconds: u64,
}

impl Selection {
    fn from_args() -> Self {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut batches = Vec::new();
        let mut words = Vec::new();
        let mut stall_seconds = STALL_SECONDS;
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            if arg == "--batch" {
                let size = args.next().and_then(|n| n.parse().ok());
                batches.push(size.expect("--batch takes a number"));
            } else if arg == "--stall-seconds" {
                let seconds = args.next().and_then(|n| n.parse().ok());
                stall_seconds = seconds.expect("--stall-seconds takes a number");
            } else {
                words.push(arg.as_str());
            }
        }
        if batches.is_empty() {
            batches = BATCH_SIZES.to_vec();
        }
        let set_only = words.contains(&"set");
        let all = words.is_empty();
        Self {
            set_only,
            projection: all || set_only || words.contains(&"projection"),
            reads: all || words.contains(&"reads"),
            stall: words.contains(&"stall"),
            batches,
            stall_seconds,
        }
    }
}

async fn run() {
    let selection = Selection::from_args();
    let url = database_url();
    let pool = PgPoolOptions::new()
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {url}: {e}; set DATABASE_URL"));
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&pool)
        .await
        .unwrap();
    let synchronous_commit: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&pool)
        .await
        .unwrap();

    if selection.stall {
        stall(&pool, selection.stall_seconds).await;
        if !selection.projection && !selection.reads {
            pool.close().await;
            return;
        }
    }

    let setup = Instant::now();
    let (schema, append) = prepare_schema(&pool).await;
    if append {
        append_orders(&schema).await;
    }
    let store = PostgreSQLEventStore::with_schema(pool.clone(), schema.clone());
    let events = read_everything(&store).await;
    println!(
        "PostgreSQL {version} (synchronous_commit = {synchronous_commit}), schema {SCHEMA}: \
         {} events of {ORDERS} orders {} and read in {:.1} s\n",
        events.len(),
        if append {
            "appended"
        } else {
            "kept from an earlier run"
        },
        setup.elapsed().as_secs_f64()
    );

    if selection.projection {
        let sql = Arc::new(Sql::new());
        println!(
            "Projection into orders + order_metrics, one transaction per batch \
             (best of {PROJECTION_ROUNDS} rounds, sides rotating)"
        );
        println!(
            "  {:>6} {:>8}  {:>10}  {:>12}  {:>19}  {:>18}  {:>18}  {:>24}",
            "batch",
            "events",
            "ours ev/s",
            "by hand ev/s",
            "ours/by hand median",
            "set-based by hand",
            "ours set-based",
            "ours/by hand (set) median"
        );
        let optional = |value: Option<f64>, decimals: usize| {
            value.map_or("-".to_owned(), |v| format!("{v:.decimals$}"))
        };
        for &batch in &selection.batches {
            let count = if batch == 1 {
                EVENTS_AT_BATCH_1
            } else {
                events.len()
            };
            let result = compare_projection(
                &pool,
                &schema,
                &sql,
                &events[..count],
                batch,
                selection.set_only,
            )
            .await;
            println!(
                "  {batch:>6} {count:>8}  {:>10}  {:>12}  {:>19}  {:>18}  {:>18}  {:>24}",
                optional(result.ours, 0),
                optional(result.hand, 0),
                optional(result.median_ratio, 2),
                optional(result.set_based, 0),
                optional(result.ours_set_based, 0),
                optional(result.set_based_ratio, 2),
            );
        }
    }
    if !selection.reads {
        pool.close().await;
        return;
    }

    println!(
        "\nReading the event table in pages of {READ_PAGE} (best of {READ_ROUNDS} rounds, \
         order rotating)"
    );
    let mut best = [Duration::MAX; 3];
    let mut ratios = Vec::new();
    for round in 0..READ_ROUNDS {
        let mut times = [Duration::ZERO; 3];
        for step in 0..3 {
            let which = (step + round) % 3;
            let (count, elapsed) = match which {
                0 => read_ours(&pool, &schema).await,
                1 => read_by_hand(&pool, true).await,
                _ => read_by_hand(&pool, false).await,
            };
            assert_eq!(count, events.len());
            times[which] = elapsed;
        }
        for (best, time) in best.iter_mut().zip(times) {
            *best = (*best).min(time);
        }
        ratios.push(times[1].as_secs_f64() / times[0].as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    let rate = |d: Duration| per_second(events.len(), d);
    println!(
        "  ours, read_all (gap-safe, decoded)        {:>10.0} ev/s",
        rate(best[0])
    );
    println!(
        "  by hand, plain SELECT, decoded            {:>10.0} ev/s",
        rate(best[1])
    );
    println!(
        "  by hand, plain SELECT, raw fetch only     {:>10.0} ev/s",
        rate(best[2])
    );
    println!(
        "  ours / by hand (decoded), median          {:>10.2}",
        ratios[ratios.len() / 2]
    );

    println!(
        "\nThe same pages, the three sides interleaved page by page ({READ_ROUNDS} rounds, \
         order rotating every page)"
    );
    let mut totals = [Duration::ZERO; 3];
    let mut ratios = Vec::new();
    for round in 0..READ_ROUNDS {
        let (times, count) = read_interleaved(&pool, &schema, round).await;
        assert_eq!(count, events.len());
        ratios.push(times[1].as_secs_f64() / times[0].as_secs_f64());
        for (total, time) in totals.iter_mut().zip(times) {
            *total += time;
        }
    }
    ratios.sort_by(f64::total_cmp);
    let rate = |d: Duration| per_second(events.len() * READ_ROUNDS, d);
    println!(
        "  ours, read_all (gap-safe, decoded)        {:>10.0} ev/s",
        rate(totals[0])
    );
    println!(
        "  by hand, plain SELECT, decoded            {:>10.0} ev/s",
        rate(totals[1])
    );
    println!(
        "  by hand, plain SELECT, raw fetch only     {:>10.0} ev/s",
        rate(totals[2])
    );
    println!(
        "  ours / by hand (decoded), median, min..max {:>9.2} ({:.2}..{:.2})",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
    pool.close().await;
}
