//! SQLite benchmark: the orders dashboard as a database projection on a SQLite file, and the
//! catch-up read path, each beside hand-written sqlx doing the same work on the same file in
//! the same run.
//!
//! Run with `cargo run --release -p projections-benches --features sqlite --bin sqlite`.
//! The file is `projections-bench.db` in the system's temporary directory; its events are kept
//! for the next run (the data is the same every time), the read model is emptied before every
//! timed run. Connections are opened with `projections::sqlite::connect_options` (WAL,
//! `synchronous = FULL`: every commit is on disk) on both sides.
//!
//! Data: 20,000 orders over 30 days, each an `OrderCreated` then an `OrderShipped` (40,000
//! events), appended through `SqliteEventStore` (setup, not timed) and read back once, so both
//! sides of the projection take the same decoded events.
//!
//! Projection, per batch size (1, 100, 1,000; batch size 1 on the first 1,000 events only):
//! - ours: `TransactionalRunner` over `SqliteTransactionUnit`, `handle_batch` per batch. Per
//!   batch: `BEGIN IMMEDIATE`, read the checkpoint, the handler's two statements per event,
//!   one monotonic checkpoint upsert, `COMMIT`.
//! - by hand: the same statements on the same pool with the same batching: `BEGIN IMMEDIATE`,
//!   read its own checkpoint row, skip events at or below it, two statements per event
//!   (typed events by `downcast`), one checkpoint upsert, `COMMIT`.
//!
//! Reads: the whole event table in pages of 1,000 through `SqliteEventStore::read_all` (rows
//! decoded to typed events with their metadata), beside a plain `SELECT` of the same columns
//! decoding the same rows into a typed struct, and the same query fetching rows only.
//!
//! Each round starts with a different side; each side's best run is reported with the median
//! per-round ratio of throughputs (ours / by hand). Both sides must leave the same read model.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use projections::sqlite::{self, SqliteEventStore};
use projections::transactional::{SqliteTransactionUnit, TransactionalRunner};
use projections::{
    AnyEvent, Envelope, Event, EventStore, ExpectedVersion, NoRetryPolicy, SqliteConnection,
    StoredEvent, projection,
};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use uuid::Uuid;

const ORDERS: usize = 20_000;
const DAYS: usize = 30;
const BATCH_SIZES: [usize; 3] = [1, 100, 1_000];
const EVENTS_AT_BATCH_1: usize = 1_000;
const PROJECTION_ROUNDS: usize = 4;
const READ_PAGE: usize = 1_000;
const READ_ROUNDS: usize = 5;

const OURS: &str = "bench-dashboard";
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

const INSERT_ORDER: &str = "INSERT INTO orders (id, customer_id, total_cents, status, created_at)
     VALUES (?1, ?2, ?3, 'created', ?4)
     ON CONFLICT (id) DO NOTHING";
const COUNT_CREATED: &str = "INSERT INTO order_metrics (date, orders_created, revenue_cents)
     VALUES (?1, 1, ?2)
     ON CONFLICT (date) DO UPDATE SET
         orders_created = orders_created + 1,
         revenue_cents = revenue_cents + excluded.revenue_cents";
const SHIP_ORDER: &str = "UPDATE orders
     SET status = 'shipped', tracking_number = ?2, shipped_at = ?3
     WHERE id = ?1";
const COUNT_SHIPPED: &str = "INSERT INTO order_metrics (date, orders_shipped)
     VALUES (?1, 1)
     ON CONFLICT (date) DO UPDATE SET orders_shipped = orders_shipped + 1";
const CLEAR: &str = "DELETE FROM orders; DELETE FROM order_metrics;";

async fn created(
    conn: &mut SqliteConnection,
    event: &Envelope<OrderCreated>,
) -> Result<(), sqlx::Error> {
    sqlx::query(INSERT_ORDER)
        .bind(event.aggregate_id().to_string())
        .bind(&event.customer_id)
        .bind(event.total_cents)
        .bind(event.occurred_at().timestamp_micros())
        .execute(&mut *conn)
        .await?;
    sqlx::query(COUNT_CREATED)
        .bind(event.occurred_at().date_naive().to_string())
        .bind(event.total_cents)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn shipped(
    conn: &mut SqliteConnection,
    event: &Envelope<OrderShipped>,
) -> Result<(), sqlx::Error> {
    sqlx::query(SHIP_ORDER)
        .bind(event.aggregate_id().to_string())
        .bind(&event.tracking_number)
        .bind(event.occurred_at().timestamp_micros())
        .execute(&mut *conn)
        .await?;
    sqlx::query(COUNT_SHIPPED)
        .bind(event.occurred_at().date_naive().to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

struct Dashboard;

#[projection(name = "bench-dashboard")]
impl Dashboard {
    #[handles(OrderCreated)]
    async fn created(
        &mut self,
        conn: &mut SqliteConnection,
        event: &Envelope<OrderCreated>,
    ) -> Result<(), sqlx::Error> {
        created(conn, event).await
    }

    #[handles(OrderShipped)]
    async fn shipped(
        &mut self,
        conn: &mut SqliteConnection,
        event: &Envelope<OrderShipped>,
    ) -> Result<(), sqlx::Error> {
        shipped(conn, event).await
    }

    #[reset]
    async fn clear(&mut self, conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
        for table in ["orders", "order_metrics"] {
            sqlx::query(&format!("DELETE FROM {table}"))
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
}

// ---- Setup ------------------------------------------------------------------------------

fn path() -> PathBuf {
    std::env::temp_dir().join("projections-bench.db")
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

/// The file with its events (appended when missing, on a pool that does not wait for the
/// disk: setup only) and the read-model tables. Returns whether the events were appended.
async fn prepare() -> bool {
    let stored = match SqlitePool::connect_with(sqlite::connect_options(path())).await {
        Ok(pool) => {
            let count: Option<i64> = sqlx::query_scalar("SELECT count(*) FROM projection_events")
                .fetch_one(&pool)
                .await
                .ok();
            pool.close().await;
            count
        }
        Err(_) => None,
    };
    let append = stored != Some(2 * ORDERS as i64);
    if append {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path().display()));
        }
    }
    let pool = SqlitePoolOptions::new()
        .connect_with(sqlite::connect_options(path()).synchronous(SqliteSynchronous::Off))
        .await
        .unwrap();
    sqlite::migrate(&pool).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS orders (
             id              TEXT    PRIMARY KEY,
             customer_id     TEXT    NOT NULL,
             total_cents     INTEGER NOT NULL,
             status          TEXT    NOT NULL,
             tracking_number TEXT,
             created_at      INTEGER NOT NULL,
             shipped_at      INTEGER
         );
         CREATE TABLE IF NOT EXISTS order_metrics (
             date           TEXT    PRIMARY KEY,
             orders_created INTEGER NOT NULL DEFAULT 0,
             orders_shipped INTEGER NOT NULL DEFAULT 0,
             revenue_cents  INTEGER NOT NULL DEFAULT 0
         );",
    )
    .execute(&pool)
    .await
    .unwrap();
    if append {
        let store = SqliteEventStore::new(pool.clone());
        for n in 0..ORDERS {
            let (id, events) = order(n);
            store
                .append(id, ExpectedVersion::NoStream, events)
                .await
                .unwrap();
        }
    }
    pool.close().await;
    append
}

async fn read_everything(store: &SqliteEventStore) -> Vec<StoredEvent> {
    let events = store.read_all(0, 2 * ORDERS + 1).await.unwrap();
    assert_eq!(events.len(), 2 * ORDERS);
    assert!(events.iter().all(|e| e.event().is_some()));
    events
}

// ---- The projection benchmark -----------------------------------------------------------

async fn reset(pool: &SqlitePool) {
    sqlx::raw_sql(&format!("{CLEAR} DELETE FROM projection_checkpoints;"))
        .execute(pool)
        .await
        .unwrap();
    sqlx::raw_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(pool)
        .await
        .unwrap();
}

async fn ours(pool: &SqlitePool, events: &[StoredEvent], batch: usize) -> Duration {
    let unit = Arc::new(SqliteTransactionUnit::new(pool.clone()));
    let mut runner = TransactionalRunner::new(Dashboard, unit).retry_policy(NoRetryPolicy);
    let start = Instant::now();
    for chunk in events.chunks(batch) {
        let outcome = runner.handle_batch(chunk).await.unwrap();
        debug_assert_eq!(outcome.applied, chunk.len() as u64);
        black_box(outcome);
    }
    start.elapsed()
}

async fn by_hand(pool: &SqlitePool, events: &[StoredEvent], batch: usize) -> Duration {
    let read = "SELECT position FROM projection_checkpoints WHERE projection_name = ?1";
    let upsert = "INSERT INTO projection_checkpoints AS c (
             projection_name, position, last_event_id, last_event_type, last_processed_at,
             events_processed, created_at, updated_at
         )
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?5, ?5)
         ON CONFLICT (projection_name) DO UPDATE SET
             position = excluded.position,
             last_event_id = excluded.last_event_id,
             last_event_type = excluded.last_event_type,
             last_processed_at = excluded.last_processed_at,
             events_processed = c.events_processed + excluded.events_processed,
             updated_at = excluded.updated_at";
    let start = Instant::now();
    for chunk in events.chunks(batch) {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
        let stored: Option<i64> = sqlx::query_scalar(read)
            .bind(HAND)
            .fetch_optional(&mut *tx)
            .await
            .unwrap();
        let mut checkpoint = stored.unwrap_or(0) as u64;
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
                created(&mut tx, e).await.unwrap();
            } else if let Some(e) = event.downcast::<OrderShipped>() {
                shipped(&mut tx, e).await.unwrap();
            }
            checkpoint = position;
            applied += 1;
            last = Some(event);
        }
        if let Some(event) = last {
            sqlx::query(upsert)
                .bind(HAND)
                .bind(checkpoint as i64)
                .bind(event.event_id().to_string())
                .bind(event.event_type())
                .bind(Utc::now().timestamp_micros())
                .bind(applied)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }
    start.elapsed()
}

/// What the read model and a checkpoint hold after a run, to check both sides did the same.
async fn fingerprint(pool: &SqlitePool, projection: &str) -> [i64; 7] {
    let row = sqlx::query(
        "SELECT
             (SELECT count(*) FROM orders),
             (SELECT count(*) FROM orders WHERE status = 'shipped'),
             (SELECT coalesce(sum(total_cents), 0) FROM orders),
             (SELECT coalesce(sum(orders_created), 0) FROM order_metrics),
             (SELECT coalesce(sum(orders_shipped), 0) FROM order_metrics),
             (SELECT coalesce(sum(revenue_cents), 0) FROM order_metrics),
             (SELECT position FROM projection_checkpoints WHERE projection_name = ?1)",
    )
    .bind(projection)
    .fetch_one(pool)
    .await
    .unwrap();
    std::array::from_fn(|i| row.try_get::<Option<i64>, _>(i).unwrap().unwrap_or(-1))
}

fn per_second(events: usize, elapsed: Duration) -> f64 {
    events as f64 / elapsed.as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    (values[(values.len() - 1) / 2] + values[values.len() / 2]) / 2.0
}

/// Best throughput of ours and by hand, and the median per-round ratio.
async fn compare_projection(
    pool: &SqlitePool,
    events: &[StoredEvent],
    batch: usize,
) -> (f64, f64, f64) {
    let mut best = [Duration::MAX; 2];
    let mut ratios = Vec::new();
    for round in 0..PROJECTION_ROUNDS {
        let mut times = [Duration::ZERO; 2];
        let mut prints = Vec::new();
        for step in 0..2 {
            let side = (step + round) % 2;
            reset(pool).await;
            let (elapsed, name) = if side == 0 {
                (ours(pool, events, batch).await, OURS)
            } else {
                (by_hand(pool, events, batch).await, HAND)
            };
            prints.push(fingerprint(pool, name).await);
            times[side] = elapsed;
        }
        assert_eq!(
            prints[0], prints[1],
            "both sides must leave the same read model"
        );
        assert_eq!(prints[0][6], events.len() as i64);
        for (best, time) in best.iter_mut().zip(times) {
            *best = (*best).min(time);
        }
        ratios.push(times[1].as_secs_f64() / times[0].as_secs_f64());
    }
    (
        per_second(events.len(), best[0]),
        per_second(events.len(), best[1]),
        median(ratios),
    )
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
    event_version: i64,
    payload: Payload,
    metadata: BTreeMap<String, serde_json::Value>,
    tenant_id: Option<Uuid>,
    actor_id: Option<String>,
    correlation_id: Uuid,
    causation_id: Option<Uuid>,
    occurred_at: DateTime<Utc>,
    stored_at: DateTime<Utc>,
}

const PLAIN_SELECT: &str = "SELECT position, event_id, aggregate_id, aggregate_type,
        aggregate_version, event_type, event_version, payload, metadata, tenant_id, actor_id,
        correlation_id, causation_id, occurred_at, stored_at
     FROM projection_events
     WHERE position > ?1
     ORDER BY position
     LIMIT ?2";

async fn read_ours(store: &SqliteEventStore) -> (usize, Duration) {
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

fn uuid(text: Option<String>) -> Option<Uuid> {
    text.map(|t| Uuid::parse_str(&t).unwrap())
}

fn micros(value: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(value).unwrap()
}

fn decode(row: &SqliteRow) -> Result<HandEvent, sqlx::Error> {
    let event_type: String = row.try_get("event_type")?;
    let payload: &str = row.try_get("payload")?;
    let payload = match event_type.as_str() {
        "OrderCreated" => Payload::Created(serde_json::from_str(payload).unwrap()),
        "OrderShipped" => Payload::Shipped(serde_json::from_str(payload).unwrap()),
        other => Payload::Other(other.to_owned()),
    };
    let metadata: &str = row.try_get("metadata")?;
    Ok(HandEvent {
        position: row.try_get("position")?,
        event_id: uuid(row.try_get("event_id")?).unwrap(),
        aggregate_id: uuid(row.try_get("aggregate_id")?).unwrap(),
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_version: row.try_get("aggregate_version")?,
        event_type,
        event_version: row.try_get("event_version")?,
        payload,
        metadata: serde_json::from_str(metadata).unwrap(),
        tenant_id: uuid(row.try_get("tenant_id")?),
        actor_id: row.try_get("actor_id")?,
        correlation_id: uuid(row.try_get("correlation_id")?).unwrap(),
        causation_id: uuid(row.try_get("causation_id")?),
        occurred_at: micros(row.try_get("occurred_at")?),
        stored_at: micros(row.try_get("stored_at")?),
    })
}

async fn read_by_hand(pool: &SqlitePool, decoded: bool) -> (usize, Duration) {
    let start = Instant::now();
    let (mut after, mut count) = (0i64, 0);
    loop {
        let rows = sqlx::query(PLAIN_SELECT)
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

// ---- Main -------------------------------------------------------------------------------

fn main() {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}

async fn run() {
    let setup = Instant::now();
    let appended = prepare().await;
    let pool = sqlite::open(path()).await.unwrap();
    let store = SqliteEventStore::new(pool.clone());
    let events = read_everything(&store).await;
    let version: String = sqlx::query_scalar("SELECT sqlite_version()")
        .fetch_one(&pool)
        .await
        .unwrap();
    println!(
        "SQLite {version} (WAL, synchronous = FULL), {}: {} events of {ORDERS} orders {} and \
         read in {:.1} s\n",
        path().display(),
        events.len(),
        if appended {
            "appended"
        } else {
            "kept from an earlier run"
        },
        setup.elapsed().as_secs_f64()
    );

    println!(
        "Projection into orders + order_metrics, one transaction per batch \
         (best of {PROJECTION_ROUNDS} rounds, sides alternating)"
    );
    println!(
        "  {:>6} {:>8}  {:>10}  {:>12}  {:>19}",
        "batch", "events", "ours ev/s", "by hand ev/s", "ours/by hand median"
    );
    for batch in BATCH_SIZES {
        let count = if batch == 1 {
            EVENTS_AT_BATCH_1
        } else {
            events.len()
        };
        let (ours, hand, ratio) = compare_projection(&pool, &events[..count], batch).await;
        println!("  {batch:>6} {count:>8}  {ours:>10.0}  {hand:>12.0}  {ratio:>19.2}");
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
                0 => read_ours(&store).await,
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
    let rate = |d: Duration| per_second(events.len(), d);
    println!(
        "  ours, read_all (decoded)                  {:>10.0} ev/s",
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
        median(ratios)
    );
    pool.close().await;
}
