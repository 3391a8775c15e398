//! `FailurePolicy::ParkAggregate`: an aggregate's later events wait behind its dead letter
//! (recorded, not applied) while the other aggregates go on; replaying or resolving the first
//! entry releases them in order, so a replay never applies an aggregate's events out of order.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use projections::coordinator::{CoordinatorHandle, ProjectionCoordinator};
use projections::dlq::DLQFilter;
use projections::runner::{ProjectionRunner, Repositories};
use projections::{
    AnyEvent, DLQStatus, Envelope, Event, EventStore, ExpectedVersion, FailurePolicy,
    InMemoryEventStore, NoRetryPolicy, ProjectionRegistry, projection,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "park.deposited", aggregate = "Account")]
struct Deposited {
    cents: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "park.withdrawn", aggregate = "Account")]
struct Withdrawn {
    cents: i64,
}

/// A deposit of 5000 cannot be read by this build while `broken` is set (the bug to fix); a
/// withdrawal past the balance is refused. Each account keeps the positions it applied, so
/// an order broken within an account shows.
#[derive(Default)]
struct Ledger {
    balances: HashMap<Uuid, i64>,
    history: HashMap<Uuid, Vec<u64>>,
    broken: Arc<AtomicBool>,
}

#[projection(name = "ledger")]
impl Ledger {
    #[handles(Deposited)]
    async fn deposited(&mut self, event: &Envelope<Deposited>) -> Result<(), String> {
        if event.cents == 5000 && self.broken.load(Ordering::SeqCst) {
            return Err("a deposit this build cannot read".into());
        }
        let account = event.aggregate_id();
        *self.balances.entry(account).or_default() += event.cents;
        self.history
            .entry(account)
            .or_default()
            .push(event.position().unwrap_or(0));
        Ok(())
    }

    #[handles(Withdrawn)]
    async fn withdrawn(&mut self, event: &Envelope<Withdrawn>) -> Result<(), String> {
        let account = event.aggregate_id();
        let balance = self.balances.entry(account).or_default();
        if *balance < event.cents {
            return Err(format!("overdrawn: {} < {}", balance, event.cents));
        }
        *balance -= event.cents;
        self.history
            .entry(account)
            .or_default()
            .push(event.position().unwrap_or(0));
        Ok(())
    }
}

fn deposit(account: Uuid, cents: i64) -> AnyEvent {
    Envelope::new(account, Deposited { cents }).into()
}

fn withdraw(account: Uuid, cents: i64) -> AnyEvent {
    Envelope::new(account, Withdrawn { cents }).into()
}

async fn append(store: &InMemoryEventStore, events: Vec<(Uuid, AnyEvent)>) {
    for (account, event) in events {
        store
            .append(account, ExpectedVersion::Any, vec![event])
            .await
            .unwrap();
    }
}

fn start(
    store: &Arc<InMemoryEventStore>,
    storage: &Repositories,
    broken: &Arc<AtomicBool>,
) -> CoordinatorHandle {
    let ledger = Ledger {
        broken: Arc::clone(broken),
        ..Ledger::default()
    };
    let runner = ProjectionRunner::builder(ledger)
        .storage(storage.clone())
        .retry_policy(NoRetryPolicy)
        .on_failure(FailurePolicy::ParkAggregate)
        .build();
    let mut registry = ProjectionRegistry::new();
    registry.register(runner).unwrap();
    ProjectionCoordinator::new(registry, store.clone())
        .poll_interval(Duration::from_millis(10))
        .start()
        .unwrap()
}

/// (balances, histories) of the running ledger.
async fn model(handle: &CoordinatorHandle) -> (HashMap<Uuid, i64>, HashMap<Uuid, Vec<u64>>) {
    handle
        .read(|ledger: &Ledger| (ledger.balances.clone(), ledger.history.clone()))
        .await
        .unwrap()
}

/// The unresolved entries of the ledger: (position, status, error).
async fn waiting(storage: &Repositories) -> Vec<(u64, DLQStatus, String)> {
    let mut entries = storage
        .dead_letter_repository()
        .get_failed_events(DLQFilter::all().projection("ledger"))
        .await
        .unwrap();
    entries.retain(|e| e.status != DLQStatus::Resolved);
    entries.sort_by_key(|e| e.position);
    entries
        .into_iter()
        .map(|e| (e.position.unwrap(), e.status, e.error_message))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_events_wait_behind_a_dead_letter_and_a_replay_releases_them_in_order() {
    let store = Arc::new(InMemoryEventStore::new());
    let storage = Repositories::in_memory();
    let broken = Arc::new(AtomicBool::new(true));
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut events = vec![
        (a, deposit(a, 100)),   // 1
        (b, deposit(b, 10)),    // 2
        (a, deposit(a, 5000)),  // 3: cannot be read yet
        (b, deposit(b, 20)),    // 4
        (a, withdraw(a, 3900)), // 5: before 3 it would overdraw
        (b, withdraw(b, 5)),    // 6
        (a, deposit(a, 1)),     // 7
    ];
    append(&store, events.clone()).await;
    let handle = start(&store, &storage, &broken);
    handle.wait_for_checkpoint("ledger", 7).await.unwrap();

    // A waits behind its dead letter; B went on.
    let (balances, history) = model(&handle).await;
    assert_eq!((balances[&a], &history[&a]), (100, &vec![1]));
    assert_eq!((balances[&b], &history[&b]), (25, &vec![2, 4, 6]));
    let parked = waiting(&storage).await;
    assert_eq!(
        parked.iter().map(|p| p.0).collect::<Vec<_>>(),
        [3, 5, 7],
        "{parked:?}"
    );
    assert_eq!(parked[0].2, "a deposit this build cannot read");
    assert!(
        parked[1]
            .2
            .starts_with("held back: an earlier event of aggregate")
    );
    assert_eq!(handle.projection_status("ledger").unwrap().dead_letters, 3);

    // Live: A's new events are held too; B's are applied.
    let live = vec![(a, deposit(a, 2)), (b, deposit(b, 1))]; // 8, 9
    append(&store, live.clone()).await;
    events.extend(live);
    handle.wait_for_checkpoint("ledger", 9).await.unwrap();
    let (balances, _) = model(&handle).await;
    assert_eq!((balances[&a], balances[&b]), (100, 26));
    assert_eq!(waiting(&storage).await.len(), 4);

    // A held entry cannot jump the line.
    let held = storage
        .dead_letter_repository()
        .get_failed_events(DLQFilter::failed_in("ledger"))
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.position == Some(5))
        .unwrap();
    let refused = handle
        .replay_dead_letter("ledger", held.id)
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("held behind entry"),
        "{refused}"
    );

    // The fix, then a replay of the projection's entries: A in order, as if never parked.
    broken.store(false, Ordering::SeqCst);
    let report = handle.replay_dead_letters("ledger").await.unwrap();
    assert_eq!(report.replayed.len(), 4, "{report:?}");
    assert!(report.failed.is_empty(), "{report:?}");
    assert!(waiting(&storage).await.is_empty());
    let replayed = model(&handle).await;

    let mut uninterrupted = ProjectionRunner::new(Ledger::default());
    let stored = store.read_all(0, 100).await.unwrap();
    uninterrupted.handle_batch(&stored).await.unwrap();
    let expected = uninterrupted.projection();
    assert_eq!(replayed.0, expected.balances);
    assert_eq!(replayed.1, expected.history);
    assert_eq!(replayed.1[&a], [1, 3, 5, 7, 8]);
    assert_eq!(replayed.0[&a], 100 + 5000 - 3900 + 1 + 2);

    // Released: A's next event applies at once.
    append(&store, vec![(a, deposit(a, 4))]).await; // 10
    handle.wait_for_checkpoint("ledger", 10).await.unwrap();
    assert_eq!(model(&handle).await.1[&a], [1, 3, 5, 7, 8, 10]);
    assert_eq!(handle.projection_status("ledger").unwrap().dead_letters, 0);
    let _ = handle.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parking_survives_a_restart_and_resolving_the_first_releases_the_rest() {
    let store = Arc::new(InMemoryEventStore::new());
    let storage = Repositories::in_memory();
    let broken = Arc::new(AtomicBool::new(true));
    let a = Uuid::new_v4();
    append(
        &store,
        vec![
            (a, deposit(a, 100)),  // 1
            (a, deposit(a, 5000)), // 2: cannot be read
            (a, deposit(a, 7)),    // 3: held
        ],
    )
    .await;
    let handle = start(&store, &storage, &broken);
    handle.wait_for_checkpoint("ledger", 3).await.unwrap();
    let _ = handle.shutdown(Duration::from_secs(5)).await;

    // A new process: A is still parked (read from the dead-letter queue).
    append(&store, vec![(a, deposit(a, 30))]).await; // 4
    let handle = start(&store, &storage, &broken);
    handle.wait_for_checkpoint("ledger", 4).await.unwrap();
    assert_eq!(
        model(&handle).await.0.get(&a),
        None,
        "a new process applied none of A"
    );
    let positions: Vec<_> = waiting(&storage).await.iter().map(|p| p.0).collect();
    assert_eq!(positions, [2, 3, 4]);

    // The unreadable deposit is declared lost: the held ones apply, in order.
    let first = storage
        .dead_letter_repository()
        .get_failed_events(DLQFilter::failed_in("ledger"))
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.position == Some(2))
        .unwrap();
    handle
        .resolve_dead_letter("ledger", first.id, "lost in transit")
        .await
        .unwrap();
    let (balances, history) = model(&handle).await;
    assert_eq!(history[&a], [3, 4]);
    assert_eq!(balances[&a], 37);
    assert!(waiting(&storage).await.is_empty());
    assert_eq!(handle.projection_status("ledger").unwrap().dead_letters, 0);
    let _ = handle.shutdown(Duration::from_secs(5)).await;
}
