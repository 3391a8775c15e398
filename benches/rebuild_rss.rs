//! PostgreSQL benchmark: the peak memory of a rebuild, which must not grow with the number of
//! events replayed.
//!
//! Run with `cargo run --release -p projections-benches --features postgres --bin rebuild_rss
//! -- --events N` against `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
//! The events live in the schema `projections_bench_rebuild_<N>` (or `BENCH_SCHEMA`) and are
//! kept for the next run; the schema is filled anew when it holds another number of events.
//!
//! Data: N events of two types (`rss.deposited` and `rss.withdrawn`, a payload of an account
//! number, an amount and a 40-character note), alternating, over 10,000 accounts, inserted by
//! one `INSERT .. SELECT generate_series` (positions from the column's default), then `VACUUM
//! ANALYZE`.
//!
//! What is measured: once the store is filled, the program starts itself again with
//! `--measure`, so the process measured does nothing but the rebuild: a `ProjectionCoordinator`
//! over a `PostgreSQLEventStore` rebuilds (`rebuild_projection`) a `ProjectionRunner` whose
//! checkpoints and dead letters are in PostgreSQL (`Repositories::postgres_in`), batch size
//! 1,000. The projection handles both types and keeps a balance per account (a read model
//! whose size depends on the accounts, not on the events). The child prints its peak resident
//! set (`VmHWM` of `/proc/self/status`) before and after the rebuild, the time it took, and
//! the rate; the parent checks that every event was applied.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::HashMap;
use std::time::Instant;

use projections::postgres::{self, PostgreSQLEventStore, Schema};
use projections::runner::Repositories;
use projections::{
    Envelope, Event, ProjectionCoordinator, ProjectionRegistry, ProjectionRunner, projection,
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

const ACCOUNTS: u64 = 10_000;
const BATCH: usize = 1_000;

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "rss.deposited", aggregate = "Account")]
struct Deposited {
    account: u64,
    amount: i64,
    note: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "rss.withdrawn", aggregate = "Account")]
struct Withdrawn {
    account: u64,
    amount: i64,
    note: String,
}

/// Balances per account, and how many events made them.
#[derive(Debug, Default)]
struct Balances {
    balances: HashMap<u64, i64>,
    events: u64,
}

#[projection(name = "bench-balances")]
impl Balances {
    #[handles(Deposited)]
    async fn deposited(&mut self, event: &Envelope<Deposited>) {
        *self.balances.entry(event.account).or_default() += event.amount;
        self.events += 1;
    }

    #[handles(Withdrawn)]
    async fn withdrawn(&mut self, event: &Envelope<Withdrawn>) {
        *self.balances.entry(event.account).or_default() -= event.amount;
        self.events += 1;
    }

    #[reset]
    async fn reset(&mut self) {
        self.balances.clear();
        self.events = 0;
    }
}

fn schema_name(events: u64) -> String {
    std::env::var("BENCH_SCHEMA").unwrap_or_else(|_| format!("projections_bench_rebuild_{events}"))
}

/// Fills the schema with `events` events, unless it holds that many already.
async fn prepare(pool: &PgPool, schema: &Schema, name: &str, events: u64) {
    postgres::migrate_schema(pool, schema).await.unwrap();
    let count: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM \"{name}\".projection_events"
    ))
    .fetch_one(pool)
    .await
    .unwrap();
    if u64::try_from(count).unwrap() == events {
        println!("store: {events} events, kept from an earlier run");
        return;
    }
    println!("store: filling with {events} events ...");
    let started = Instant::now();
    sqlx::raw_sql(&format!(
        "TRUNCATE \"{name}\".projection_events;
         INSERT INTO \"{name}\".projection_events (
             event_id, aggregate_id, aggregate_type, aggregate_version, event_type,
             event_version, payload, metadata, correlation_id, occurred_at
         )
         SELECT gen_random_uuid(), gen_random_uuid(), 'Account', 1,
                CASE WHEN g % 2 = 0 THEN 'rss.deposited' ELSE 'rss.withdrawn' END, 1,
                jsonb_build_object('account', g % {ACCOUNTS}, 'amount', g % 97,
                                   'note', 'a note of forty characters, more or less'),
                '{{}}'::jsonb, gen_random_uuid(), now()
         FROM generate_series(1::bigint, {events}) g;"
    ))
    .execute(pool)
    .await
    .unwrap();
    sqlx::raw_sql(&format!("VACUUM ANALYZE \"{name}\".projection_events"))
        .execute(pool)
        .await
        .unwrap();
    println!("store: filled in {:.1} s", started.elapsed().as_secs_f64());
}

/// The peak resident set of this process so far, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The measured process: one rebuild, then its figures on one line.
async fn measure(pool: PgPool, schema: Schema, events: u64) {
    let before = peak_rss_kib();
    let store = PostgreSQLEventStore::with_schema(pool.clone(), schema.clone());
    let mut registry = ProjectionRegistry::new();
    registry
        .register_projection(
            ProjectionRunner::builder(Balances::default())
                .storage(Repositories::postgres_in(pool, &schema))
                .tracing(false)
                .build(),
        )
        .unwrap();
    let mut coordinator =
        ProjectionCoordinator::new(registry, std::sync::Arc::new(store)).batch_size(BATCH);
    let started = Instant::now();
    let report = coordinator
        .rebuild_projection("bench-balances")
        .await
        .unwrap();
    let took = started.elapsed().as_secs_f64();
    let balances = coordinator.registry().projection::<Balances>().unwrap();
    assert_eq!(balances.events, events, "{report:?}");
    assert_eq!(report.applied, events, "{report:?}");
    let after = peak_rss_kib();
    println!(
        "measured: events {events} seconds {took:.1} events/s {:.0} peak_rss_before_kib {before} peak_rss_kib {after} accounts {}",
        events as f64 / took,
        balances.balances.len()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut events = 1_000_000;
    let mut child = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--events" => {
                events = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--events takes a number")
            }
            "--measure" => child = true,
            other => panic!("unknown argument {other}"),
        }
    }
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .unwrap();
    let name = schema_name(events);
    let schema = Schema::named(&name).unwrap();
    if child {
        measure(pool, schema, events).await;
        return;
    }
    prepare(&pool, &schema, &name, events).await;
    pool.close().await;
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--events", &events.to_string(), "--measure"])
        .status()
        .unwrap();
    assert!(status.success(), "the measured rebuild failed");
}
