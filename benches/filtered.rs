//! PostgreSQL benchmark: a projection handling one event type in twenty catches up over a
//! store of 1,000,000 events, reading only its own (`EventStore::read_filtered`) or reading
//! every event, each beside a hand-written sqlx loop doing the same work.
//!
//! Run with `cargo run --release -p projections-benches --features postgres --bin filtered`
//! against `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`). Everything
//! lives in the schema `projections_bench_filtered` (or `BENCH_SCHEMA`); its events are kept
//! for the next run. `--events N` changes the store's size (the schema is filled anew when it
//! holds another number of events); `--rounds N` the number of rounds (default 3).
//!
//! Data: N events of twenty types (`bench.k0` .. `bench.k19`, a payload of a number and a
//! 40-character note), spread pseudo-randomly, each of one of twenty tenants, inserted by one
//! `INSERT .. SELECT generate_series` (positions from the column's default, so the rows are
//! registered as an append's), then `VACUUM ANALYZE`. The projection handles `bench.k7`: about
//! 5% of the events.
//!
//! Sides, each reading from position 0 to the end in pages of 1,000, decoding what it keeps:
//! - **ours, filtered**: `PostgreSQLEventStore::read_filtered` with the projection's filter
//!   (its one type), from a fresh store; after each page it goes on from `read_to`.
//! - **ours, every event**: `read_all`, keeping the events of the type (what every projection
//!   did before filtered reads).
//! - **by hand, filtered**: `SELECT <columns> FROM projection_events WHERE event_type = $1 AND
//!   position > $2 ORDER BY event_type, position LIMIT 1000` (the sort key of the type index,
//!   so that its generic plan scans that index), rows decoded into a typed struct (payload
//!   through `sqlx::types::Json`, metadata into a map). Not gap-safe.
//! - **by hand, every event**: `SELECT .. WHERE position > $1 ORDER BY position LIMIT 1000`,
//!   the rows of the type decoded, the others dropped. Not gap-safe.
//! - **catch-up, filtered / every event**: `ProjectionCoordinator::catch_up` of a
//!   `ProjectionRunner` (in-memory checkpoints) over the store, batch size 1,000: the same
//!   projection through the whole runner, reading filtered, and through a store that only
//!   offers `read_all` (so reading through the trait's default `read_filtered`, every event).
//! - **tenant, ours / by hand**: the same type, limited to one tenant in twenty (about 0.25%
//!   of the events): `read_filtered` with `TenantFilter::only`, beside `WHERE tenant_id = $1
//!   AND event_type = $2 AND position > $3 ORDER BY tenant_id, event_type, position LIMIT
//!   1000` (on the tenant index of migration 10).
//!
//! Each round runs every side once, the order rotating between rounds; every side must find
//! the same events. Reported: each side's best time, its rate over the store's events, and the
//! median per-round ratios.
//!
//! `--live N` measures the live path instead: N times, one `bench.k7` event is appended and
//! read back from just before it, once with `read_all` and once with `read_filtered` (the
//! order alternating), each from a store that has read up to there; reported: the time of each
//! read, median and 99th percentile. (The appended events stay in the store: the next full run
//! refills it.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use projections::postgres::{self, PostgreSQLEventStore, Schema};
use projections::storage::BoxFuture;
use projections::store::{AppendError, AppendResult, Backlog, ReadFilter, ReadPage, TenantFilter};
use projections::{
    AnyEvent, Envelope, Event, EventStore, ExpectedVersion, ProjectionCoordinator,
    ProjectionRegistry, ProjectionRunner, StorageError, StoredEvent, projection,
};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPoolOptions;
use sqlx::types::Json;
use sqlx::{PgPool, Row};
use uuid::Uuid;

const DEFAULT_EVENTS: u64 = 1_000_000;
const DEFAULT_ROUNDS: usize = 3;
const PAGE: usize = 1_000;
/// The tenant of the tenant sides, of twenty.
const TENANT: u64 = 3;

macro_rules! kinds {
    ($($kind:ident = $name:literal),* $(,)?) => {
        $(
            #[derive(Debug, Clone, Serialize, Deserialize, Event)]
            #[event(name = $name, aggregate = "Bench")]
            struct $kind {
                n: u64,
                note: String,
            }
        )*
    };
}

kinds!(
    K0 = "bench.k0",
    K1 = "bench.k1",
    K2 = "bench.k2",
    K3 = "bench.k3",
    K4 = "bench.k4",
    K5 = "bench.k5",
    K6 = "bench.k6",
    K7 = "bench.k7",
    K8 = "bench.k8",
    K9 = "bench.k9",
    K10 = "bench.k10",
    K11 = "bench.k11",
    K12 = "bench.k12",
    K13 = "bench.k13",
    K14 = "bench.k14",
    K15 = "bench.k15",
    K16 = "bench.k16",
    K17 = "bench.k17",
    K18 = "bench.k18",
    K19 = "bench.k19",
);

/// Handles `bench.k7`: sums its numbers.
#[derive(Debug, Default)]
struct Sevens {
    events: u64,
    sum: u64,
}

#[projection(name = "bench-sevens")]
impl Sevens {
    #[handles(K7)]
    async fn seven(&mut self, event: &Envelope<K7>) {
        self.events += 1;
        self.sum += event.n;
    }
}

fn schema_name() -> String {
    std::env::var("BENCH_SCHEMA").unwrap_or_else(|_| "projections_bench_filtered".to_owned())
}

fn tenant(n: u64) -> Uuid {
    Uuid::from_u128(0xbe7c_0000_0000_0000_0000_0000_0000_0000 + u128::from(n))
}

/// Fills the schema with `events` events, unless it holds that many already.
async fn prepare(pool: &PgPool, schema: &Schema, events: u64) {
    postgres::migrate_schema(pool, schema).await.unwrap();
    let name = schema_name();
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
             event_version, payload, metadata, tenant_id, correlation_id, occurred_at
         )
         SELECT gen_random_uuid(), gen_random_uuid(), 'Bench', 1,
                'bench.k' || ((hashint8(g)::bigint + 2147483648) % 20), 1,
                jsonb_build_object('n', g, 'note', 'a note of forty characters, more or less'),
                '{{}}'::jsonb,
                ('be7c0000-0000-0000-0000-0000000000'
                 || lpad(to_hex((hashint8(-g)::bigint + 2147483648) % 20), 2, '0'))::uuid,
                gen_random_uuid(), now()
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

/// What a side found: events of the type (and tenant), and the sum of their numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Found {
    events: u64,
    sum: u64,
}

fn add(found: &mut Found, event: &AnyEvent) {
    let k7 = event.downcast::<K7>().expect("a bench.k7 event");
    found.events += 1;
    found.sum += k7.n;
}

async fn ours_filtered(store: &PostgreSQLEventStore, filter: &ReadFilter) -> Found {
    let mut found = Found { events: 0, sum: 0 };
    let mut after = 0;
    loop {
        let page: ReadPage = store.read_filtered(after, PAGE, filter).await.unwrap();
        for stored in &page.events {
            add(&mut found, stored.event().expect("decoded"));
        }
        black_box(&page.events);
        if page.at_head {
            return found;
        }
        after = page.read_to;
    }
}

async fn ours_every_event(store: &PostgreSQLEventStore) -> Found {
    let mut found = Found { events: 0, sum: 0 };
    let mut after = 0;
    loop {
        let page = store.read_all(after, PAGE).await.unwrap();
        for stored in &page {
            if stored.event_type() == K7::EVENT_TYPE {
                add(&mut found, stored.event().expect("decoded"));
            }
        }
        let Some(last) = page.last().and_then(StoredEvent::position) else {
            return found;
        };
        after = last;
        black_box(page);
    }
}

/// A row decoded by hand.
#[allow(dead_code)]
#[derive(Debug)]
struct HandEvent {
    position: i64,
    event_id: Uuid,
    aggregate_id: Uuid,
    aggregate_type: String,
    aggregate_version: i64,
    event_type: String,
    event_version: i32,
    payload: K7,
    metadata: BTreeMap<String, serde_json::Value>,
    tenant_id: Option<Uuid>,
    actor_id: Option<String>,
    correlation_id: Uuid,
    causation_id: Option<Uuid>,
    occurred_at: DateTime<Utc>,
    stored_at: DateTime<Utc>,
}

const COLUMNS: &str = "position, event_id, aggregate_id, aggregate_type, aggregate_version, \
     event_type, event_version, payload, metadata, tenant_id, actor_id, correlation_id, \
     causation_id, occurred_at, stored_at";

fn decode(row: &sqlx::postgres::PgRow) -> HandEvent {
    HandEvent {
        position: row.try_get("position").unwrap(),
        event_id: row.try_get("event_id").unwrap(),
        aggregate_id: row.try_get("aggregate_id").unwrap(),
        aggregate_type: row.try_get("aggregate_type").unwrap(),
        aggregate_version: row.try_get("aggregate_version").unwrap(),
        event_type: row.try_get("event_type").unwrap(),
        event_version: row.try_get("event_version").unwrap(),
        payload: row.try_get::<Json<K7>, _>("payload").unwrap().0,
        metadata: row
            .try_get::<Json<BTreeMap<String, serde_json::Value>>, _>("metadata")
            .unwrap()
            .0,
        tenant_id: row.try_get("tenant_id").unwrap(),
        actor_id: row.try_get("actor_id").unwrap(),
        correlation_id: row.try_get("correlation_id").unwrap(),
        causation_id: row.try_get("causation_id").unwrap(),
        occurred_at: row.try_get("occurred_at").unwrap(),
        stored_at: row.try_get("stored_at").unwrap(),
    }
}

/// A hand-written loop: `sql` takes the last position read as its last parameter, after
/// `binds`.
async fn by_hand(pool: &PgPool, sql: &str, binds: &[Bind], keep_all: bool) -> Found {
    let mut found = Found { events: 0, sum: 0 };
    let mut after = 0_i64;
    loop {
        let mut query = sqlx::query(sql);
        for bind in binds {
            query = match bind {
                Bind::Text(text) => query.bind(*text),
                Bind::Uuid(id) => query.bind(*id),
            };
        }
        let rows = query.bind(after).fetch_all(pool).await.unwrap();
        for row in &rows {
            if keep_all || row.try_get::<&str, _>("event_type").unwrap() == K7::EVENT_TYPE {
                let event = decode(row);
                found.events += 1;
                found.sum += event.payload.n;
                black_box(event);
            }
        }
        let Some(last) = rows.last() else {
            return found;
        };
        after = last.try_get("position").unwrap();
        if rows.len() < PAGE {
            return found;
        }
    }
}

enum Bind {
    Text(&'static str),
    Uuid(Uuid),
}

/// The store with only what `EventStore` requires: its filtered read is the trait's default,
/// which reads every event.
struct EveryEvent(PostgreSQLEventStore);

impl EventStore for EveryEvent {
    fn append(
        &self,
        aggregate_id: Uuid,
        expected: ExpectedVersion,
        events: Vec<AnyEvent>,
    ) -> BoxFuture<'_, Result<AppendResult, AppendError>> {
        self.0.append(aggregate_id, expected, events)
    }
    fn read_stream(
        &self,
        aggregate_id: Uuid,
    ) -> BoxFuture<'_, Result<Vec<StoredEvent>, StorageError>> {
        self.0.read_stream(aggregate_id)
    }
    fn read_all(
        &self,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredEvent>, StorageError>> {
        self.0.read_all(after, limit)
    }
    fn head_position(&self) -> BoxFuture<'_, Result<u64, StorageError>> {
        self.0.head_position()
    }
    fn backlog<'a>(
        &'a self,
        after: u64,
        event_types: &'a [&'static str],
    ) -> BoxFuture<'a, Result<Backlog, StorageError>> {
        self.0.backlog(after, event_types)
    }
}

async fn catch_up(store: Arc<dyn EventStore>) -> Found {
    let mut registry = ProjectionRegistry::new();
    registry
        .register_projection(
            ProjectionRunner::builder(Sevens::default())
                .tracing(false)
                .build(),
        )
        .unwrap();
    let mut coordinator = ProjectionCoordinator::new(registry, store).batch_size(PAGE);
    let report = coordinator.catch_up_all().await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    let sevens = coordinator.registry().projection::<Sevens>().unwrap();
    Found {
        events: sevens.events,
        sum: sevens.sum,
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Side {
    OursFiltered,
    OursEvery,
    HandFiltered,
    HandEvery,
    CatchUpFiltered,
    CatchUpEvery,
    TenantOurs,
    TenantHand,
}

const SIDES: [Side; 8] = [
    Side::OursFiltered,
    Side::OursEvery,
    Side::HandFiltered,
    Side::HandEvery,
    Side::CatchUpFiltered,
    Side::CatchUpEvery,
    Side::TenantOurs,
    Side::TenantHand,
];

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::OursFiltered => "ours, read_filtered (its type)",
            Side::OursEvery => "ours, read_all (every event)",
            Side::HandFiltered => "by hand, WHERE event_type = $1",
            Side::HandEvery => "by hand, every event",
            Side::CatchUpFiltered => "catch-up, filtered",
            Side::CatchUpEvery => "catch-up, every event (read_all)",
            Side::TenantOurs => "ours, read_filtered (type + tenant)",
            Side::TenantHand => "by hand, WHERE tenant_id, event_type",
        }
    }
}

async fn run(side: Side, pool: &PgPool, schema: &Schema) -> Found {
    // A fresh store per run: it knows nothing of the horizon yet.
    let store = PostgreSQLEventStore::with_schema(pool.clone(), schema.clone());
    let name = schema_name();
    let of_type = ReadFilter::event_types([K7::EVENT_TYPE]);
    match side {
        Side::OursFiltered => ours_filtered(&store, &of_type).await,
        Side::OursEvery => ours_every_event(&store).await,
        Side::HandFiltered => {
            let sql = format!(
                "SELECT {COLUMNS} FROM \"{name}\".projection_events
                 WHERE event_type = $1 AND position > $2
                 ORDER BY event_type, position LIMIT {PAGE}"
            );
            by_hand(pool, &sql, &[Bind::Text(K7::EVENT_TYPE)], true).await
        }
        Side::HandEvery => {
            let sql = format!(
                "SELECT {COLUMNS} FROM \"{name}\".projection_events
                 WHERE position > $1 ORDER BY position LIMIT {PAGE}"
            );
            by_hand(pool, &sql, &[], false).await
        }
        Side::CatchUpFiltered => catch_up(Arc::new(store)).await,
        Side::CatchUpEvery => catch_up(Arc::new(EveryEvent(store))).await,
        Side::TenantOurs => {
            let filter = of_type.with_tenant(TenantFilter::only(tenant(TENANT)));
            ours_filtered(&store, &filter).await
        }
        Side::TenantHand => {
            let sql = format!(
                "SELECT {COLUMNS} FROM \"{name}\".projection_events
                 WHERE tenant_id = $1 AND event_type = $2 AND position > $3
                 ORDER BY tenant_id, event_type, position LIMIT {PAGE}"
            );
            by_hand(
                pool,
                &sql,
                &[Bind::Uuid(tenant(TENANT)), Bind::Text(K7::EVENT_TYPE)],
                true,
            )
            .await
        }
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Appends one event and reads it back, `times` times, with `read_all` and `read_filtered`.
async fn live(pool: &PgPool, schema: &Schema, times: usize) {
    let store = PostgreSQLEventStore::with_schema(pool.clone(), schema.clone());
    let filter = ReadFilter::event_types([K7::EVENT_TYPE]);
    let mut took: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    // Both paths have read up to the head (the horizon and the stored types are known).
    let head = store.head_position().await.unwrap();
    store.read_filtered(head, PAGE, &filter).await.unwrap();
    for n in 0..times {
        let aggregate = Uuid::new_v4();
        let event = AnyEvent::new(Envelope::new(
            aggregate,
            K7 {
                n: n as u64,
                note: "live".to_owned(),
            },
        ));
        let appended = store
            .append(aggregate, ExpectedVersion::NoStream, vec![event])
            .await
            .unwrap();
        let after = appended.last_position - 1;
        for step in 0..2 {
            let which = (n + step) % 2;
            let started = Instant::now();
            let read = if which == 0 {
                store.read_all(after, PAGE).await.unwrap().len()
            } else {
                store
                    .read_filtered(after, PAGE, &filter)
                    .await
                    .unwrap()
                    .events
                    .len()
            };
            took[which].push(started.elapsed().as_secs_f64() * 1e3);
            assert_eq!(read, 1, "the appended event is read back");
        }
    }
    for (label, mut times) in ["read_all", "read_filtered"].into_iter().zip(took) {
        times.sort_by(f64::total_cmp);
        let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
        println!(
            "live read of one new event, {label:<14} p50 {:.3} ms, p99 {:.3} ms",
            at(0.5),
            at(0.99)
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (mut events, mut rounds) = (DEFAULT_EVENTS, DEFAULT_ROUNDS);
    let mut live_reads = None;
    let number = |args: &mut dyn Iterator<Item = String>, what: &str| -> u64 {
        args.next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{what} takes a number"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--events" => events = number(&mut args, "--events"),
            "--rounds" => rounds = number(&mut args, "--rounds") as usize,
            "--live" => live_reads = Some(number(&mut args, "--live") as usize),
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
    let schema = Schema::named(&schema_name()).unwrap();
    if let Some(times) = live_reads {
        postgres::migrate_schema(&pool, &schema).await.unwrap();
        live(&pool, &schema, times).await;
        return;
    }
    prepare(&pool, &schema, events).await;

    let mut times: BTreeMap<Side, Vec<Duration>> = BTreeMap::new();
    let mut expected: BTreeMap<bool, Found> = BTreeMap::new();
    for round in 0..rounds {
        for step in 0..SIDES.len() {
            let side = SIDES[(round + step) % SIDES.len()];
            let started = Instant::now();
            let found = run(side, &pool, &schema).await;
            let took = started.elapsed();
            let tenant_side = matches!(side, Side::TenantOurs | Side::TenantHand);
            let first = *expected.entry(tenant_side).or_insert(found);
            assert_eq!(found, first, "{side:?} found other events");
            times.entry(side).or_default().push(took);
        }
        println!("round {} of {rounds} done", round + 1);
    }

    println!();
    println!(
        "{events} events, 20 types; the projection's type: {} events; with the tenant: {}",
        expected[&false].events, expected[&true].events
    );
    println!(
        "{:<40} {:>10} {:>16}",
        "side", "best (ms)", "store events/s"
    );
    for side in SIDES {
        let best = times[&side].iter().min().copied().unwrap();
        println!(
            "{:<40} {:>10.0} {:>16.0}",
            side.label(),
            best.as_secs_f64() * 1e3,
            events as f64 / best.as_secs_f64()
        );
    }
    let ratio = |a: Side, b: Side| {
        median(
            times[&a]
                .iter()
                .zip(&times[&b])
                .map(|(a, b)| b.as_secs_f64() / a.as_secs_f64())
                .collect(),
        )
    };
    println!();
    println!("median per-round ratios (how many times faster the first is):");
    for (a, b) in [
        (Side::OursFiltered, Side::OursEvery),
        (Side::CatchUpFiltered, Side::CatchUpEvery),
        (Side::HandFiltered, Side::HandEvery),
        (Side::OursFiltered, Side::HandEvery),
        (Side::OursFiltered, Side::HandFiltered),
        (Side::TenantOurs, Side::TenantHand),
    ] {
        println!("  {} / {}: {:.2}x", a.label(), b.label(), ratio(a, b));
    }
}
