//! Live-only handlers (`#[handles(E, live_only)]`): they never run for replayed events (a
//! first start over an existing store, a rebuild), also after a restart in the middle of a
//! replay, and run once for each live event.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{Deposited, deposit};
use projections::coordinator::ProjectionCoordinator;
use projections::runner::{EventOutcome, Repositories};
use projections::{
    AnyEvent, CheckpointRepository, Envelope, EventStore, ExpectedVersion,
    InMemoryCheckpointRepository, InMemoryDLQRepository, InMemoryEventStore, ProjectionRegistry,
    ProjectionRunner, projection,
};
use uuid::Uuid;

/// Counts deposits (every one) and "sends a receipt" for each live one.
#[derive(Default)]
struct Receipts {
    counted: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
}

#[projection(name = "receipts")]
impl Receipts {
    #[handles(Deposited, live_only)]
    async fn send_receipt(&mut self, _event: &Envelope<Deposited>) {
        self.sent.fetch_add(1, Ordering::SeqCst);
    }

    #[handles(common::Withdrawn)]
    async fn withdrawn(&mut self, _event: &Envelope<common::Withdrawn>) {
        self.counted.fetch_add(1, Ordering::SeqCst);
    }

    #[reset]
    async fn clear(&mut self) {}
}

async fn append_deposits(store: &InMemoryEventStore, count: usize) {
    let accounts: Vec<Uuid> = (0..100).map(|_| Uuid::new_v4()).collect();
    let mut remaining = count;
    while remaining > 0 {
        for account in &accounts {
            let n = remaining.min(100);
            if n == 0 {
                break;
            }
            let events: Vec<AnyEvent> = (0..n).map(|i| deposit(*account, i as i64)).collect();
            store
                .append(*account, ExpectedVersion::Any, events)
                .await
                .unwrap();
            remaining -= n;
        }
    }
}

/// A first start over a million stored events and a rebuild fire nothing; each event appended
/// after the start fires once, however often the projection catches up.
#[tokio::test]
async fn a_rebuild_of_a_million_events_fires_none_and_live_events_fire_once() {
    let store = Arc::new(InMemoryEventStore::new());
    append_deposits(&store, 1_000_000).await;
    assert_eq!(store.head_position().await.unwrap(), 1_000_000);

    let receipts = Receipts::default();
    let sent = receipts.sent.clone();
    let mut registry = ProjectionRegistry::new();
    registry.register_projection(receipts).unwrap();
    let mut coordinator = ProjectionCoordinator::new(registry, store.clone()).batch_size(1_000);

    let report = coordinator.catch_up_all().await.unwrap();
    assert!(report.is_ok());
    let first = &report.projections[0];
    assert_eq!((first.applied, first.live_only_passed), (0, 1_000_000));
    assert_eq!(sent.load(Ordering::SeqCst), 0, "the first start replays");

    append_deposits(&store, 25).await;
    coordinator.catch_up_all().await.unwrap();
    assert_eq!(sent.load(Ordering::SeqCst), 25, "live events fire");
    coordinator.catch_up_all().await.unwrap();
    assert_eq!(sent.load(Ordering::SeqCst), 25, "each once");

    let rebuilt = coordinator.rebuild_projection("receipts").await.unwrap();
    assert!(rebuilt.is_ok());
    assert_eq!(rebuilt.live_only_passed, 1_000_025);
    assert_eq!(sent.load(Ordering::SeqCst), 25, "a rebuild replays");

    append_deposits(&store, 3).await;
    coordinator.catch_up_all().await.unwrap();
    assert_eq!(sent.load(Ordering::SeqCst), 28);
}

/// A process that dies in the middle of a replay comes back to the horizon it stored: the
/// rest of the replay fires nothing.
#[tokio::test]
async fn the_horizon_survives_a_restart_in_the_middle_of_a_replay() {
    let store = InMemoryEventStore::new();
    append_deposits(&store, 500).await;
    let storage = Repositories::new(
        Arc::new(InMemoryCheckpointRepository::new()),
        Arc::new(InMemoryDLQRepository::new()),
    );
    let events = store.read_all(0, 10_000).await.unwrap();

    let first = Receipts::default();
    let sent = first.sent.clone();
    let mut runner = ProjectionRunner::builder(first)
        .storage(storage.clone())
        .build();
    runner.prepare_replay(&store).await.unwrap();
    assert_eq!(runner.replay_horizon(), Some(500));
    runner.handle_batch(&events[..200]).await.unwrap();
    drop(runner);

    // Events appended after the first start are live, even though the restarted process
    // reads them while it is still replaying.
    append_deposits(&store, 10).await;
    let events = store.read_all(0, 10_000).await.unwrap();
    let second = Receipts {
        sent: sent.clone(),
        ..Receipts::default()
    };
    let mut runner = ProjectionRunner::builder(second).storage(storage).build();
    runner.prepare_replay(&store).await.unwrap();
    assert_eq!(runner.replay_horizon(), Some(500), "the stored horizon");
    let outcome = runner.handle_batch(&events).await.unwrap();
    assert_eq!(
        (outcome.skipped, outcome.live_only_passed, outcome.applied),
        (200, 300, 10)
    );
    assert_eq!(sent.load(Ordering::SeqCst), 10);
}

/// Events handed in without a position (push mode) are live; a runner that has a checkpoint
/// but no horizon (it gained its live-only handler later) treats what follows as live.
#[tokio::test]
async fn events_without_a_horizon_are_live() {
    let receipts = Receipts::default();
    let sent = receipts.sent.clone();
    let mut runner = ProjectionRunner::new(receipts);
    let outcome = runner.handle(&deposit(Uuid::new_v4(), 5)).await.unwrap();
    assert_eq!(outcome, EventOutcome::Applied);
    assert_eq!(runner.replay_horizon(), None);
    assert_eq!(sent.load(Ordering::SeqCst), 1);
}

/// A projection without live-only handlers takes no horizon.
#[tokio::test]
async fn a_projection_without_live_only_handlers_takes_no_horizon() {
    let store = InMemoryEventStore::new();
    append_deposits(&store, 5).await;
    let checkpoints = Arc::new(InMemoryCheckpointRepository::new());
    let storage = Repositories::new(checkpoints.clone(), Arc::new(InMemoryDLQRepository::new()));
    let mut runner = ProjectionRunner::builder(common::Tally::default())
        .storage(storage)
        .build();
    runner.prepare_replay(&store).await.unwrap();
    assert_eq!(runner.replay_horizon(), None);
    assert_eq!(checkpoints.get_replay_horizon("tally").await.unwrap(), None);
    assert_eq!(checkpoints.get_checkpoint("tally").await.unwrap(), None);
}

/// A rebuild replays what the projection had passed; the events it had not reached yet never
/// ran their live-only handler, and run it once during the rebuild.
#[tokio::test]
async fn a_rebuild_fires_the_events_the_projection_had_not_reached_once() {
    let store = Arc::new(InMemoryEventStore::new());
    let receipts = Receipts::default();
    let sent = receipts.sent.clone();
    let mut registry = ProjectionRegistry::new();
    registry.register_projection(receipts).unwrap();
    let mut coordinator = ProjectionCoordinator::new(registry, store.clone()).batch_size(4);
    // An empty store: every event is live.
    coordinator.catch_up_all().await.unwrap();
    append_deposits(&store, 10).await;
    coordinator.catch_up_all().await.unwrap();
    assert_eq!(sent.load(Ordering::SeqCst), 10);

    // Five more arrive; the projection is rebuilt before it reads them.
    append_deposits(&store, 5).await;
    let rebuilt = coordinator.rebuild_projection("receipts").await.unwrap();
    assert_eq!((rebuilt.live_only_passed, rebuilt.applied), (10, 5));
    assert_eq!(sent.load(Ordering::SeqCst), 15);
    coordinator.catch_up_all().await.unwrap();
    assert_eq!(sent.load(Ordering::SeqCst), 15);
}
