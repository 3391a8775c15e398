//! Twenty projections catching up together on PostgreSQL, with the workers' reads shared
//! (`SharedReads`, the coordinator's default) and not (`shared_reads(0)`): events read from the
//! store per event applied, and the time to catch up, in the same run.
//!
//! Run with `cargo run --release -p projections-benches --features postgres --bin shared_reads`
//! against `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
//! `-- --events N` (default 50,000). Schema `projections_bench_shared`; the events are kept for
//! the next run. The projections are in-memory counters (`ProjectionRunner`), so the figure is
//! the reading, not the writing of read models.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use projections::coordinator::ProjectionCoordinator;
use projections::postgres::{self, PostgreSQLEventStore, Schema};
use projections::runner::{Partition, ProjectionRunner};
use projections::storage::BoxFuture;
use projections::store::{AppendError, AppendResult, Backlog, ExpectedVersion, StoredEvent};
use projections::{
    AnyEvent, Envelope, Event, EventStore, ProjectionRegistry, StorageError, projection,
};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

const SCHEMA: &str = "projections_bench_shared";

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "bench.shared.tick", aggregate = "Clock")]
struct Tick {
    n: i64,
}

#[derive(Default)]
struct Count(u64);

#[projection(name = "count")]
impl Count {
    #[handles(Tick)]
    async fn tick(&mut self, _e: &Envelope<Tick>) {
        self.0 += 1;
    }
}

/// Counts the events read through it.
struct Counting {
    inner: PostgreSQLEventStore,
    read: AtomicU64,
}

impl EventStore for Counting {
    fn append(
        &self,
        id: Uuid,
        expected: ExpectedVersion,
        events: Vec<AnyEvent>,
    ) -> BoxFuture<'_, Result<AppendResult, AppendError>> {
        self.inner.append(id, expected, events)
    }
    fn read_stream(&self, id: Uuid) -> BoxFuture<'_, Result<Vec<StoredEvent>, StorageError>> {
        self.inner.read_stream(id)
    }
    fn read_all(
        &self,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredEvent>, StorageError>> {
        Box::pin(async move {
            let events = self.inner.read_all(after, limit).await?;
            self.read.fetch_add(events.len() as u64, Ordering::Relaxed);
            Ok(events)
        })
    }
    fn head_position(&self) -> BoxFuture<'_, Result<u64, StorageError>> {
        self.inner.head_position()
    }
    fn backlog<'a>(
        &'a self,
        after: u64,
        types: &'a [&'static str],
    ) -> BoxFuture<'a, Result<Backlog, StorageError>> {
        self.inner.backlog(after, types)
    }
    fn subscribe(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.inner.subscribe()
    }
}

async fn run(store: &Arc<Counting>, head: u64, shared: usize) -> (f64, f64) {
    store.read.store(0, Ordering::Relaxed);
    let mut registry = ProjectionRegistry::new();
    // Twenty partitions of one projection: twenty runners that each read the whole log.
    for partition in Partition::all(20).unwrap() {
        registry
            .register(
                ProjectionRunner::new(Count::default())
                    .partition(partition)
                    .tracing(false),
            )
            .unwrap();
    }
    let started = Instant::now();
    let handle = ProjectionCoordinator::new(registry, store.clone() as Arc<dyn EventStore>)
        .batch_size(100)
        .tracing(false)
        .shared_reads(shared)
        .start()
        .unwrap();
    for name in handle.names() {
        handle.wait_for_checkpoint(name, head).await.unwrap();
    }
    let seconds = started.elapsed().as_secs_f64();
    let _ = handle.shutdown(Duration::from_secs(10)).await;
    (
        store.read.load(Ordering::Relaxed) as f64 / head as f64,
        seconds,
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let events: u64 = args
        .iter()
        .position(|a| a == "--events")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect(&url)
        .await
        .unwrap();
    let schema = Schema::named(SCHEMA).unwrap();
    postgres::migrate_schema(&pool, &schema).await.unwrap();
    let store = Arc::new(Counting {
        inner: PostgreSQLEventStore::with_schema(pool, schema),
        read: AtomicU64::new(0),
    });
    let mut head = store.head_position().await.unwrap();
    while head < events {
        let id = Uuid::new_v4();
        let chunk: Vec<AnyEvent> = (0..1_000.min(events - head))
            .map(|n| Envelope::new(id, Tick { n: n as i64 }).into())
            .collect();
        head = store
            .append(id, ExpectedVersion::NoStream, chunk)
            .await
            .unwrap()
            .last_position;
    }
    println!(
        "20 projections catching up over {head} events, batches of 100, 3 rounds each, interleaved"
    );
    println!("| reads | events read per event in the log (median) | seconds (median) |");
    println!("|---|---:|---:|");
    let (mut shared, mut alone) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        shared.push(run(&store, head, 20_000).await);
        alone.push(run(&store, head, 0).await);
    }
    for (label, runs) in [
        ("shared (default)", &mut shared),
        ("each alone (`shared_reads(0)`)", &mut alone),
    ] {
        runs.sort_by(|a, b| a.1.total_cmp(&b.1));
        let (read, seconds) = runs[runs.len() / 2];
        println!("| {label} | {read:.2} | {seconds:.2} |");
    }
}
