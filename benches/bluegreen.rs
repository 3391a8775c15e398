//! Blue/green rebuild benchmark on PostgreSQL: version 2 of a projection over 1,000,000 events
//! is built beside the serving version 1 while a reader queries the stable views and a writer
//! appends, then readers are switched; beside a hand-written sqlx loop building the same
//! tables from the same store under the same load.
//!
//! Run with `cargo run --release -p projections-benches --features postgres --bin bluegreen`
//! against `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
//! `-- --events N` for another size. Events live in schema `projections_bench_bluegreen` and
//! are kept for the next run (the writer's are deleted); every read model, checkpoint and
//! version is dropped at the start.
//!
//! Phases:
//! 1. setup: version 1 (one row per order) is built and promoted (timed, for information);
//! 2. load: a reader queries `SELECT count(*)` on the view without pause (recording errors,
//!    the lowest count, latencies) and a writer appends 10 events every 20 ms; version 1 keeps
//!    applying them;
//! 3. ours: version 2 (a new shape: one row per order with a size band) is built beside it by
//!    a coordinator (`BlueGreen::runner`, batches of 1,000, `SET LOCAL search_path` per
//!    batch), from start until its worker is live; then `promote` is timed;
//! 4. by hand, under the same load: a sqlx loop reading the same store in pages of 1,000
//!    (`read_all`) and writing the same rows into a schema of its own, per batch `BEGIN`, its
//!    checkpoint row `FOR UPDATE`, one `INSERT` per event, a checkpoint upsert, `COMMIT`.
//!
//! Checked: both version tables and the hand-built table hold every order once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use projections::bluegreen::{BlueGreen, PostgreSQLReadModelVersions};
use projections::coordinator::{ProjectionCoordinator, WorkerState};
use projections::postgres::{self, PostgreSQLEventStore, Schema};
use projections::{
    AnyEvent, Envelope, Event, EventStore, ExpectedVersion, PgConnection, ProjectionRegistry,
    projection,
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

const SCHEMA: &str = "projections_bench_bluegreen";
const SERVING: &str = "projections_bench_bg_orders";
const HAND: &str = "projections_bench_bg_by_hand";
const BATCH: usize = 1_000;

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "bench.bg.order_placed", aggregate = "Order")]
struct OrderPlaced {
    order_no: i64,
    amount: i64,
}

const V1_TABLES: &str = "CREATE TABLE orders (order_no bigint NOT NULL, amount bigint NOT NULL)";
const V2_TABLES: &str = "CREATE TABLE orders (
    order_no bigint NOT NULL, amount bigint NOT NULL, size text NOT NULL)";

struct OrdersV1;

#[projection(name = "bench-orders", version = 1)]
impl OrdersV1 {
    #[handles(OrderPlaced)]
    async fn placed(
        &mut self,
        conn: &mut PgConnection,
        event: &Envelope<OrderPlaced>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO orders (order_no, amount) VALUES ($1, $2)")
            .bind(event.order_no)
            .bind(event.amount)
            .execute(conn)
            .await?;
        Ok(())
    }
}

struct OrdersV2;

fn size(amount: i64) -> &'static str {
    if amount >= 100 { "large" } else { "small" }
}

#[projection(name = "bench-orders", version = 2)]
impl OrdersV2 {
    #[handles(OrderPlaced)]
    async fn placed(
        &mut self,
        conn: &mut PgConnection,
        event: &Envelope<OrderPlaced>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO orders (order_no, amount, size) VALUES ($1, $2, $3)")
            .bind(event.order_no)
            .bind(event.amount)
            .bind(size(event.amount))
            .execute(conn)
            .await?;
        Ok(())
    }
}

fn order(stream: Uuid, order_no: i64) -> AnyEvent {
    Envelope::new(
        stream,
        OrderPlaced {
            order_no,
            amount: order_no % 200,
        },
    )
    .into()
}

#[derive(Debug, Default)]
struct Reads {
    queries: u64,
    errors: Vec<String>,
    lowest: Option<i64>,
    latencies: Vec<Duration>,
}

async fn read_continuously(pool: PgPool, stop: Arc<AtomicBool>) -> Reads {
    let mut reads = Reads::default();
    let sql = format!("SELECT count(*) FROM \"{SERVING}\".orders");
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        match sqlx::query_scalar::<_, i64>(&sql).fetch_one(&pool).await {
            Ok(count) => {
                reads.lowest = Some(reads.lowest.map_or(count, |l| l.min(count)));
                reads.latencies.push(started.elapsed());
            }
            Err(error) => reads.errors.push(error.to_string()),
        }
        reads.queries += 1;
    }
    reads
}

async fn write_continuously(
    store: Arc<PostgreSQLEventStore>,
    first: i64,
    stop: Arc<AtomicBool>,
) -> i64 {
    let mut next = first;
    while !stop.load(Ordering::Relaxed) {
        let stream = Uuid::new_v4();
        let events = (next..next + 10).map(|n| order(stream, n)).collect();
        store
            .append(stream, ExpectedVersion::NoStream, events)
            .await
            .unwrap();
        next += 10;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    next
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index]
}

/// Builds the v2 shape by hand into `HAND.orders` from the store, up to `target`, as the
/// runner does: read a page outside any transaction, then one transaction that locks the
/// checkpoint row, inserts the page's rows and moves the checkpoint.
async fn build_by_hand(pool: &PgPool, store: &PostgreSQLEventStore, target: u64) -> u64 {
    let mut applied = 0;
    let mut after: i64 = sqlx::query_scalar(&format!(
        "SELECT position FROM \"{HAND}\".checkpoint WHERE id = 1"
    ))
    .fetch_one(pool)
    .await
    .unwrap();
    while (after as u64) < target {
        let events = store.read_all(after as u64, BATCH).await.unwrap();
        let Some(last) = events.last().and_then(|e| e.position()) else {
            // Behind the read horizon (a transaction still running somewhere): look again.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let mut tx = pool.begin().await.unwrap();
        sqlx::query(&format!(
            "SELECT position FROM \"{HAND}\".checkpoint WHERE id = 1 FOR UPDATE"
        ))
        .execute(&mut *tx)
        .await
        .unwrap();
        for stored in &events {
            let event = stored.event().unwrap().downcast::<OrderPlaced>().unwrap();
            sqlx::query(&format!(
                "INSERT INTO \"{HAND}\".orders (order_no, amount, size) VALUES ($1, $2, $3)"
            ))
            .bind(event.order_no)
            .bind(event.amount)
            .bind(size(event.amount))
            .execute(&mut *tx)
            .await
            .unwrap();
            applied += 1;
        }
        sqlx::query(&format!(
            "UPDATE \"{HAND}\".checkpoint SET position = $1 WHERE id = 1"
        ))
        .bind(last as i64)
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
        after = last as i64;
    }
    applied
}

async fn every_order_once(pool: &PgPool, table: &str) -> (i64, i64) {
    sqlx::query_as(&format!(
        "SELECT count(*), count(DISTINCT order_no) FROM {table}"
    ))
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let events: i64 = std::env::args()
        .skip_while(|a| a != "--events")
        .nth(1)
        .map_or(1_000_000, |n| n.parse().expect("--events N"));
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {url}: {e}"));
    let schema = Schema::named(SCHEMA).unwrap();

    // Events: kept when their number matches.
    postgres::migrate_schema(&pool, &schema).await.unwrap();
    let stored: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM \"{SCHEMA}\".projection_events"
    ))
    .fetch_one(&pool)
    .await
    .unwrap();
    if stored > events {
        // The writer's events of an earlier run: positions after the first `events`.
        sqlx::query(&format!(
            "DELETE FROM \"{SCHEMA}\".projection_events WHERE position > $1"
        ))
        .bind(events)
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(&format!(
            "UPDATE \"{SCHEMA}\".projection_positions SET position = $1"
        ))
        .bind(events)
        .execute(&pool)
        .await
        .unwrap();
    }
    let stored: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM \"{SCHEMA}\".projection_events WHERE position <= $1"
    ))
    .bind(events)
    .fetch_one(&pool)
    .await
    .unwrap();
    if stored != events {
        sqlx::raw_sql(&format!("DROP SCHEMA \"{SCHEMA}\" CASCADE"))
            .execute(&pool)
            .await
            .unwrap();
        postgres::migrate_schema(&pool, &schema).await.unwrap();
    }
    for drop in [
        SERVING.to_owned(),
        format!("{SERVING}_v1"),
        format!("{SERVING}_v2"),
        HAND.to_owned(),
    ] {
        sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS \"{drop}\" CASCADE"))
            .execute(&pool)
            .await
            .unwrap();
    }
    sqlx::raw_sql(&format!(
        "DELETE FROM \"{SCHEMA}\".projection_checkpoints;
         DELETE FROM \"{SCHEMA}\".projection_versions;
         CREATE SCHEMA \"{HAND}\";
         CREATE TABLE \"{HAND}\".orders (order_no bigint NOT NULL, amount bigint NOT NULL, size text NOT NULL);
         CREATE TABLE \"{HAND}\".checkpoint (id int PRIMARY KEY, position bigint NOT NULL);
         INSERT INTO \"{HAND}\".checkpoint VALUES (1, 0);"
    ))
    .execute(&pool)
    .await
    .unwrap();
    let store = Arc::new(PostgreSQLEventStore::with_schema(
        pool.clone(),
        schema.clone(),
    ));
    if stored != events {
        let started = Instant::now();
        let mut next = 0;
        while next < events {
            let end = (next + 5_000).min(events);
            let stream = Uuid::new_v4();
            let batch = (next..end).map(|n| order(stream, n)).collect();
            store
                .append(stream, ExpectedVersion::NoStream, batch)
                .await
                .unwrap();
            next = end;
        }
        println!(
            "appended {events} events in {:.1} s (setup)",
            started.elapsed().as_secs_f64()
        );
    }

    let versions = PostgreSQLReadModelVersions::new(
        pool.clone(),
        schema.clone(),
        Schema::named(SERVING).unwrap(),
    )
    .unwrap();
    let orders = Arc::new(BlueGreen::new(versions, "bench-orders"));

    // 1. Version 1 serves.
    let started = Instant::now();
    let mut registry = ProjectionRegistry::new();
    registry
        .register(orders.runner(OrdersV1, V1_TABLES).await.unwrap())
        .unwrap();
    let old = ProjectionCoordinator::new(registry, store.clone())
        .batch_size(BATCH)
        .start()
        .unwrap();
    orders.promote(&old, 1).await.unwrap();
    let v1_build = started.elapsed();
    println!(
        "v1 built from nothing and promoted: {events} events in {:.1} s ({:.0} events/s)",
        v1_build.as_secs_f64(),
        events as f64 / v1_build.as_secs_f64()
    );
    let before: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM \"{SERVING}\".orders"))
        .fetch_one(&pool)
        .await
        .unwrap();

    // 2. Load: a reader and a writer.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn(read_continuously(pool.clone(), stop.clone()));
    let writer = tokio::spawn(write_continuously(store.clone(), events, stop.clone()));

    // 3. Ours: v2 beside v1.
    let started = Instant::now();
    let mut registry = ProjectionRegistry::new();
    registry
        .register(orders.runner(OrdersV2, V2_TABLES).await.unwrap())
        .unwrap();
    let new = ProjectionCoordinator::new(registry, store.clone())
        .batch_size(BATCH)
        .start()
        .unwrap();
    let mut status = new.watch("bench-orders@v2").unwrap();
    status
        .wait_for(|s| s.state == WorkerState::Live)
        .await
        .unwrap();
    let ours = started.elapsed();
    let ours_applied = new.projection_status("bench-orders@v2").unwrap().applied;
    let switching = Instant::now();
    let replaced = orders.promote(&new, 2).await.unwrap();
    let promote = switching.elapsed();
    assert_eq!(replaced, Some(1));

    // 4. By hand, under the same load (v1 still applying the writer's events).
    let started = Instant::now();
    let target = store.head_position().await.unwrap();
    let hand_applied = build_by_hand(&pool, &store, target).await;
    let hand = started.elapsed();

    stop.store(true, Ordering::Relaxed);
    let reads = reader.await.unwrap();
    let written = writer.await.unwrap() - events;
    // Every append has committed: the last position, which the readable head reaches once
    // transactions elsewhere on the server have ended.
    let head = u64::try_from(events + written).unwrap();
    old.wait_for_checkpoint("bench-orders@v1", head)
        .await
        .unwrap();
    new.wait_for_checkpoint("bench-orders@v2", head)
        .await
        .unwrap();
    build_by_hand(&pool, &store, head).await;
    for table in [
        format!("\"{SERVING}_v1\".orders"),
        format!("\"{SERVING}_v2\".orders"),
        format!("\"{HAND}\".orders"),
    ] {
        let (rows, distinct) = every_order_once(&pool, &table).await;
        assert_eq!(
            (rows, distinct),
            (events + written, events + written),
            "{table}"
        );
    }
    old.shutdown(Duration::from_secs(10)).await;
    new.shutdown(Duration::from_secs(10)).await;

    let mut latencies = reads.latencies.clone();
    latencies.sort();
    let rate = |n: u64, d: Duration| n as f64 / d.as_secs_f64();
    println!("\nv2 built beside serving v1, under load (reader + writer):");
    println!(
        "  ours     {ours_applied:>9} events in {:>6.1} s  {:>8.0} events/s",
        ours.as_secs_f64(),
        rate(ours_applied, ours)
    );
    println!(
        "  by hand  {hand_applied:>9} events in {:>6.1} s  {:>8.0} events/s",
        hand.as_secs_f64(),
        rate(hand_applied, hand)
    );
    println!(
        "  ours / by hand throughput: {:.2}",
        rate(ours_applied, ours) / rate(hand_applied, hand)
    );
    println!(
        "  promote (switch once live): {:.1} ms",
        promote.as_secs_f64() * 1e3
    );
    println!(
        "reader: {} queries, {} errors, lowest count {} (before the rebuild: {before}); \
         latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        reads.queries,
        reads.errors.len(),
        reads.lowest.unwrap_or(0),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        percentile(&latencies, 1.0).as_secs_f64() * 1e3,
    );
    println!(
        "writer: {written} events appended during the rebuild; both versions hold every order once"
    );
    if let Some(error) = reads.errors.first() {
        println!("first reader error: {error}");
    }
}
