//! Shared reads: projections catching up over the same range read the log about once between
//! them (`store::SharedReads`, used by the coordinator when several projections run), and
//! every projection still gets every event, in order, whether it is with the others or far
//! behind them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use projections::coordinator::ProjectionCoordinator;
use projections::runner::Repositories;
use projections::runner::{Partition, ProjectionRunner};
use projections::storage::BoxFuture;
use projections::store::{
    AppendError, AppendResult, Backlog, ExpectedVersion, ReadFilter, ReadPage, SharedReads,
    StoredEvent,
};
use projections::{
    AnyEvent, Envelope, Event, EventStore, InMemoryEventStore, ProjectionRegistry, StorageError,
    projection,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "shared.tick", aggregate = "Clock")]
struct Tick {
    n: u64,
}

/// A rare event: one in a hundred.
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "shared.rare", aggregate = "Clock")]
struct Rare;

/// Counts rare events.
#[derive(Default)]
struct Rares(u64);

#[projection(name = "rares")]
impl Rares {
    #[handles(Rare)]
    async fn rare(&mut self, _e: &Envelope<Rare>) {
        self.0 += 1;
    }
}

/// Counts the events read through it.
struct Counting {
    inner: InMemoryEventStore,
    read: AtomicU64,
}

impl EventStore for Counting {
    fn append(
        &self,
        aggregate_id: Uuid,
        expected: ExpectedVersion,
        events: Vec<AnyEvent>,
    ) -> BoxFuture<'_, Result<AppendResult, AppendError>> {
        self.inner.append(aggregate_id, expected, events)
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
            self.read.fetch_add(events.len() as u64, Ordering::SeqCst);
            Ok(events)
        })
    }
    /// The in-memory store's own filtered read, counting what it returns.
    fn read_filtered<'a>(
        &'a self,
        after: u64,
        limit: usize,
        filter: &'a ReadFilter,
    ) -> BoxFuture<'a, Result<ReadPage, StorageError>> {
        Box::pin(async move {
            let page = self.inner.read_filtered(after, limit, filter).await?;
            self.read
                .fetch_add(page.events.len() as u64, Ordering::SeqCst);
            Ok(page)
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

/// Checks that it sees its aggregates' ticks in order, and counts them.
#[derive(Default)]
struct Ordered {
    seen: u64,
    last: std::collections::HashMap<Uuid, u64>,
    out_of_order: u64,
}

#[projection(name = "ordered")]
impl Ordered {
    #[handles(Tick)]
    async fn tick(&mut self, e: &Envelope<Tick>) {
        let last = self.last.entry(e.metadata.aggregate_id).or_insert(0);
        if e.n != *last + 1 {
            self.out_of_order += 1;
        }
        *last = e.n;
        self.seen += 1;
    }
}

async fn fill(store: &dyn EventStore, aggregates: u64, ticks: u64) -> u64 {
    let mut head = 0;
    for _ in 0..aggregates {
        let id = Uuid::new_v4();
        let events: Vec<AnyEvent> = (1..=ticks)
            .map(|n| Envelope::new(id, Tick { n }).into())
            .collect();
        head = store
            .append(id, ExpectedVersion::NoStream, events)
            .await
            .unwrap()
            .last_position;
    }
    head
}

/// Twenty projections (partitions of one, so every one reads the whole log) catch up together;
/// returns the events read from the store.
async fn catch_up_twenty(shared: usize) -> (u64, u64) {
    let store = Arc::new(Counting {
        inner: InMemoryEventStore::new(),
        read: AtomicU64::new(0),
    });
    let head = fill(&*store, 200, 50).await;
    let mut registry = ProjectionRegistry::new();
    for partition in Partition::all(20).unwrap() {
        registry
            .register(ProjectionRunner::new(Ordered::default()).partition(partition))
            .unwrap();
    }
    let handle = ProjectionCoordinator::new(registry, store.clone() as Arc<dyn EventStore>)
        .batch_size(100)
        .shared_reads(shared)
        .start()
        .unwrap();
    for name in handle.names() {
        handle.wait_for_checkpoint(name, head).await.unwrap();
    }
    let (mut seen, mut out_of_order) = (0, 0);
    for name in handle.names() {
        let (s, o) = handle
            .read_named(name, |p: &Ordered| (p.seen, p.out_of_order))
            .await
            .unwrap();
        seen += s;
        out_of_order += o;
    }
    assert_eq!(
        (seen, out_of_order),
        (head, 0),
        "every event once, in order"
    );
    assert!(handle.shutdown(Duration::from_secs(5)).await.is_ok());
    (store.read.load(Ordering::SeqCst), head)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_projections_catching_up_together_read_the_log_about_once() {
    let (read, head) = catch_up_twenty(20_000).await;
    eprintln!("shared: {read} events read for 20 projections over {head} events");
    assert!(
        read as f64 <= 1.2 * head as f64,
        "{read} events read for {head} in the log"
    );
    let (alone, head) = catch_up_twenty(0).await;
    eprintln!("not shared: {alone} events read for 20 projections over {head} events");
    assert!(
        alone >= 20 * head,
        "without sharing each reads alone: {alone}"
    );
}

#[tokio::test]
async fn a_reader_behind_the_kept_range_reads_the_store_and_misses_nothing() {
    let inner = Arc::new(InMemoryEventStore::new());
    let head = fill(&*inner, 10, 500).await;
    // Keeps at most 1,000 events (one read's worth).
    let shared = SharedReads::new(inner as Arc<dyn EventStore>, 1);
    // A reader ahead reads to the end, so the kept range is the last one.
    let mut ahead = 0;
    while ahead < head {
        let page = shared.read_all(ahead, 300).await.unwrap();
        ahead = page.last().and_then(StoredEvent::position).unwrap();
    }
    // A reader behind gets every position, in order.
    let mut behind = 0;
    let mut positions = Vec::new();
    loop {
        let page = shared.read_all(behind, 70).await.unwrap();
        if page.is_empty() {
            break;
        }
        positions.extend(page.iter().filter_map(StoredEvent::position));
        behind = *positions.last().unwrap();
    }
    assert_eq!(positions, (1..=head).collect::<Vec<_>>());
    assert!(shared.events_read() < 3 * head, "{}", shared.events_read());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_catching_up_alone_keeps_its_filtered_read() {
    let store = Arc::new(Counting {
        inner: InMemoryEventStore::new(),
        read: AtomicU64::new(0),
    });
    let mut head = 0;
    for i in 0..5_000_u64 {
        let id = Uuid::new_v4();
        let event: AnyEvent = if i % 100 == 0 {
            Envelope::new(id, Rare).into()
        } else {
            Envelope::new(id, Tick { n: 1 }).into()
        };
        head = store
            .append(id, ExpectedVersion::NoStream, vec![event])
            .await
            .unwrap()
            .last_position;
    }
    // The ticks' projection is at the head already (its checkpoint kept in `ticks`).
    let ticks = Repositories::in_memory();
    let mut registry = ProjectionRegistry::new();
    registry
        .register(
            ProjectionRunner::builder(Ordered::default())
                .storage(ticks.clone())
                .build(),
        )
        .unwrap();
    let mut alone = ProjectionCoordinator::new(registry, store.clone() as Arc<dyn EventStore>);
    alone.catch_up_all().await.unwrap();
    store.read.store(0, Ordering::SeqCst);

    // With it, the rare events' projection catches up from nothing, alone.
    let mut registry = ProjectionRegistry::new();
    registry
        .register(
            ProjectionRunner::builder(Ordered::default())
                .storage(ticks)
                .build(),
        )
        .unwrap();
    registry
        .register(ProjectionRunner::new(Rares::default()))
        .unwrap();
    let handle = ProjectionCoordinator::new(registry, store.clone() as Arc<dyn EventStore>)
        .batch_size(100)
        .start()
        .unwrap();
    handle.wait_for_checkpoint("rares", head).await.unwrap();
    assert_eq!(handle.read(|r: &Rares| r.0).await.unwrap(), 50);
    let read = store.read.load(Ordering::SeqCst);
    eprintln!("alone: {read} events read to catch up 50 rare events in {head}");
    // At most the first shared chunk (before the other reader showed it was at the head) and
    // the rare events: far from the whole log.
    assert!(read < head / 2, "{read} events read");
    assert!(handle.shutdown(Duration::from_secs(5)).await.is_ok());
}
