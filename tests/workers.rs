//! One worker per projection (paused time, in memory): independence, the live handle, failure
//! kinds, panics, durable pause and stop, truthful reports, graceful shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use common::{Balances, Deposited, Tally, deposit, withdraw};
use projections::coordinator::{
    CoordinatorHandle, InfrastructureBackoff, ProjectionCoordinator, ProjectionSnapshot,
    WorkerState,
};
use projections::runner::Repositories;
use projections::{
    Envelope, EventStore, ExpectedVersion, FailureKind, FailurePolicy, HandlerError,
    InMemoryEventStore, NoRetryPolicy, ProjectionRegistry, ProjectionRunner, projection,
};
use tokio::time::Instant;
use uuid::Uuid;

const POLL: Duration = Duration::from_secs(1);

async fn append(store: &InMemoryEventStore, events: Vec<projections::AnyEvent>) {
    let aggregate = events[0].metadata().aggregate_id;
    store
        .append(aggregate, ExpectedVersion::Any, events)
        .await
        .unwrap();
}

fn start(registry: ProjectionRegistry, store: Arc<InMemoryEventStore>) -> CoordinatorHandle {
    ProjectionCoordinator::new(registry, store)
        .poll_interval(POLL)
        .infrastructure_backoff(InfrastructureBackoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        })
        .start()
        .unwrap()
}

/// Waits (in paused time, so instantly in real time) until `name`'s status satisfies `ready`.
async fn wait_for(
    handle: &CoordinatorHandle,
    name: &str,
    ready: impl FnMut(&ProjectionSnapshot) -> bool,
) -> ProjectionSnapshot {
    let mut status = handle.watch(name).unwrap();
    tokio::time::timeout(Duration::from_secs(600), status.wait_for(ready))
        .await
        .unwrap_or_else(|_| panic!("{name} never got there: {:?}", handle.status()))
        .unwrap()
        .clone()
}

#[tokio::test(start_paused = true)]
async fn a_retrying_projection_never_delays_another() {
    let account = Uuid::new_v4();
    let store = Arc::new(InMemoryEventStore::new());
    // A poison event for `balances`, retried under the default policy: 2 + 4 + 8 s.
    append(&store, vec![withdraw(account, 13)]).await;
    let mut registry = ProjectionRegistry::new();
    registry.register_projection(Balances::default()).unwrap();
    registry.register_projection(Tally::default()).unwrap();
    let handle = start(registry, store.clone());

    tokio::time::sleep(Duration::from_millis(1100)).await;
    append(&store, vec![deposit(account, 5)]).await;
    let appended = Instant::now();
    wait_for(&handle, "tally", |s| s.checkpoint == Some(2)).await;
    assert!(
        appended.elapsed() <= POLL,
        "tally waited {:?}",
        appended.elapsed()
    );
    let balances = handle.projection_status("balances").unwrap();
    assert_eq!(balances.checkpoint, None, "balances is still retrying");
    assert_eq!(balances.dead_letters, 0);

    // Balances gives up at 14 s, dead-letters the event and catches up on its own.
    let balances = wait_for(&handle, "balances", |s| s.checkpoint == Some(2)).await;
    assert_eq!(balances.dead_letters, 1);
    assert_eq!(
        handle
            .read(move |b: &Balances| b.balances[&account])
            .await
            .unwrap(),
        5
    );

    let report = handle.shutdown(Duration::from_secs(5)).await;
    let balances = report.projection("balances").unwrap();
    assert_eq!((balances.applied, balances.dead_lettered.len()), (1, 1));
    assert_eq!(report.projection("tally").unwrap().applied, 2);
    assert!(!report.is_ok(), "a dead letter is not ok");
}

/// Panics on deposits of 666.
#[derive(Default)]
struct Panicky {
    total: i64,
}

#[projection(name = "panicky")]
impl Panicky {
    #[handles(Deposited)]
    async fn deposited(&mut self, event: &Envelope<Deposited>) {
        assert_ne!(event.amount, 666, "the number of the beast");
        self.total += event.amount;
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_fails_its_event_only() {
    let account = Uuid::new_v4();
    let store = Arc::new(InMemoryEventStore::new());
    append(
        &store,
        vec![
            deposit(account, 1),
            deposit(account, 666),
            deposit(account, 2),
        ],
    )
    .await;
    let mut registry = ProjectionRegistry::new();
    registry
        .register_projection(
            ProjectionRunner::builder(Panicky::default())
                .retry_policy(NoRetryPolicy)
                .build(),
        )
        .unwrap();
    registry.register_projection(Tally::default()).unwrap();
    let handle = start(registry, store.clone());

    let panicky = wait_for(&handle, "panicky", |s| s.checkpoint == Some(3)).await;
    assert_eq!(panicky.dead_letters, 1);
    wait_for(&handle, "tally", |s| s.checkpoint == Some(3)).await;
    // The worker lives on: a new event is applied.
    append(&store, vec![deposit(account, 4)]).await;
    wait_for(&handle, "panicky", |s| s.checkpoint == Some(4)).await;
    assert_eq!(handle.read(|p: &Panicky| p.total).await.unwrap(), 7);

    let report = handle.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.projection("panicky").unwrap().dead_lettered.len(), 1);
}

/// Fails with an infrastructure error while `down` is set; then with a setup error while
/// `misconfigured` is set.
#[derive(Default)]
struct Fragile {
    down: Arc<AtomicBool>,
    misconfigured: Arc<AtomicBool>,
    calls: Arc<AtomicU32>,
    applied: u32,
}

#[projection(name = "fragile")]
impl Fragile {
    #[handles(Deposited)]
    async fn deposited(&mut self, _event: &Envelope<Deposited>) -> Result<(), HandlerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(HandlerError::infrastructure("broker unreachable"));
        }
        if self.misconfigured.load(Ordering::SeqCst) {
            return Err(HandlerError::setup("relation \"totals\" does not exist"));
        }
        self.applied += 1;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn an_infrastructure_failure_is_waited_out_and_never_dead_lettered() {
    let account = Uuid::new_v4();
    let store = Arc::new(InMemoryEventStore::new());
    append(&store, vec![deposit(account, 1), deposit(account, 2)]).await;
    let fragile = Fragile::default();
    let (down, calls) = (fragile.down.clone(), fragile.calls.clone());
    down.store(true, Ordering::SeqCst);
    let storage = Repositories::in_memory();
    let mut registry = ProjectionRegistry::new();
    registry
        .register_projection(
            ProjectionRunner::builder(fragile)
                .storage(storage.clone())
                .build(),
        )
        .unwrap();
    let handle = start(registry, store.clone());

    let degraded = wait_for(
        &handle,
        "fragile",
        |s| matches!(s.state, WorkerState::Degraded { failures, .. } if failures >= 5),
    )
    .await;
    assert!(degraded.last_error.unwrap().contains("broker unreachable"));
    assert_eq!(degraded.checkpoint, None);
    assert!(calls.load(Ordering::SeqCst) >= 5, "it keeps trying");

    down.store(false, Ordering::SeqCst);
    let live = wait_for(&handle, "fragile", |s| s.checkpoint == Some(2)).await;
    assert_eq!(live.state, WorkerState::Live);
    assert_eq!(live.last_error, None);
    assert_eq!(handle.read(|f: &Fragile| f.applied).await.unwrap(), 2);
    let dead = storage
        .dead_letter_repository()
        .get_failed_events(Default::default())
        .await
        .unwrap();
    assert!(dead.is_empty(), "{dead:?}");
    let report = handle.shutdown(Duration::from_secs(5)).await;
    assert!(report.is_ok(), "{report:?}");
}

#[tokio::test(start_paused = true)]
async fn a_setup_failure_stops_durably_without_dead_letters() {
    let account = Uuid::new_v4();
    let store = Arc::new(InMemoryEventStore::new());
    append(&store, vec![deposit(account, 1), deposit(account, 2)]).await;
    let fragile = Fragile::default();
    fragile.misconfigured.store(true, Ordering::SeqCst);
    let (misconfigured, calls) = (fragile.misconfigured.clone(), fragile.calls.clone());
    let storage = Repositories::in_memory();
    let mut registry = ProjectionRegistry::new();
    registry
        .register_projection(
            ProjectionRunner::builder(fragile)
                .storage(storage.clone())
                .build(),
        )
        .unwrap();
    let handle = start(registry, store.clone());

    let stopped = wait_for(&handle, "fragile", |s| {
        matches!(s.state, WorkerState::Stopped { .. })
    })
    .await;
    let WorkerState::Stopped { at } = &stopped.state else {
        unreachable!()
    };
    assert_eq!(at.kind, FailureKind::Setup);
    assert_eq!(at.position, Some(1));
    assert!(at.error.contains("does not exist"), "{at:?}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "a setup failure is not retried"
    );
    assert!(
        storage
            .dead_letter_repository()
            .get_failed_events(Default::default())
            .await
            .unwrap()
            .is_empty()
    );
    // Stored with the checkpoint.
    let data = storage
        .checkpoint_repository()
        .get_checkpoint_data("fragile")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(data.halt.as_ref().and_then(|h| h.stopped()), Some(at));

    // Fixed, then resumed: it goes on from the event it stopped at.
    misconfigured.store(false, Ordering::SeqCst);
    handle.resume("fragile").await.unwrap();
    wait_for(&handle, "fragile", |s| s.checkpoint == Some(2)).await;
    let report = handle.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.projection("fragile").unwrap().applied, 2);
}

#[tokio::test(start_paused = true)]
async fn a_stop_and_a_pause_survive_a_restart() {
    let account = Uuid::new_v4();
    let store = Arc::new(InMemoryEventStore::new());
    append(&store, vec![deposit(account, 1), withdraw(account, 13)]).await;
    let storage = Repositories::in_memory();
    let registry = |balances: Balances| {
        let mut registry = ProjectionRegistry::new();
        registry
            .register_projection(
                ProjectionRunner::builder(balances)
                    .storage(storage.clone())
                    .retry_policy(NoRetryPolicy)
                    .on_failure(FailurePolicy::Stop)
                    .build(),
            )
            .unwrap();
        registry.register_projection(Tally::default()).unwrap();
        registry
    };

    let handle = start(registry(Balances::default()), store.clone());
    let stopped = wait_for(&handle, "balances", |s| {
        matches!(s.state, WorkerState::Stopped { .. })
    })
    .await;
    assert_eq!(stopped.checkpoint, Some(1));
    handle.pause("tally", "maintenance").await.unwrap();
    let report = handle.shutdown(Duration::from_secs(5)).await;
    assert!(report.projection("balances").unwrap().stopped.is_some());
    assert!(!report.is_ok());

    // A new process over the same storage: balances is stopped at the same event and does
    // not run its handler; tally (in-memory checkpoints of its own) is not paused there.
    let balances = Balances::default();
    let calls = balances.calls.clone();
    let handle = start(registry(balances), store.clone());
    let restarted = wait_for(&handle, "balances", |s| {
        matches!(s.state, WorkerState::Stopped { .. })
    })
    .await;
    let (WorkerState::Stopped { at: before }, WorkerState::Stopped { at: after }) =
        (&stopped.state, &restarted.state)
    else {
        unreachable!()
    };
    assert_eq!(before, after);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "a stopped projection runs nothing"
    );

    // Paused durably: a pause given now holds until resumed.
    handle.pause("balances", "operator").await.unwrap();
    let paused = wait_for(&handle, "balances", |s| {
        matches!(s.state, WorkerState::Paused { .. })
    })
    .await;
    assert_eq!(
        paused.state,
        WorkerState::Paused {
            reason: "operator".into()
        }
    );
    handle.shutdown(Duration::from_secs(5)).await;
    let data = storage
        .checkpoint_repository()
        .get_checkpoint_data("balances")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(data.halt.as_ref().map(|h| h.state()), Some("paused"));
}

#[tokio::test(start_paused = true)]
async fn the_handle_reads_rebuilds_and_replays_while_running() {
    let account = Uuid::new_v4();
    let store = Arc::new(InMemoryEventStore::new());
    append(&store, vec![deposit(account, 10), deposit(account, 20)]).await;
    let balances = Balances {
        fail_next: 1,
        ..Balances::default()
    };
    let mut registry = ProjectionRegistry::new();
    registry
        .register_projection(
            ProjectionRunner::builder(balances)
                .retry_policy(NoRetryPolicy)
                .build(),
        )
        .unwrap();
    registry.register_projection(Tally::default()).unwrap();
    let handle = start(registry, store.clone());

    let status = wait_for(&handle, "balances", |s| s.checkpoint == Some(2)).await;
    assert_eq!(status.dead_letters, 1);
    assert_eq!(
        handle
            .read(move |b: &Balances| b.balances[&account])
            .await
            .unwrap(),
        20
    );

    let replay = handle.replay_dead_letters("balances").await.unwrap();
    assert_eq!((replay.replayed.len(), replay.failed.len()), (1, 0));
    assert_eq!(
        handle
            .read(move |b: &Balances| b.balances[&account])
            .await
            .unwrap(),
        30
    );
    assert_eq!(
        handle.projection_status("balances").unwrap().dead_letters,
        0
    );

    let rebuilt = handle.rebuild("balances").await.unwrap();
    assert_eq!(rebuilt.applied, 2);
    assert!(rebuilt.is_ok());
    assert_eq!(
        handle
            .read(move |b: &Balances| b.balances[&account])
            .await
            .unwrap(),
        30
    );

    // Status of every projection, from any task, at any time.
    let names: Vec<_> = handle.status().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["balances", "tally"]);
    let other = handle.clone();
    let health = tokio::spawn(async move { other.health() }).await.unwrap();
    assert!(health.is_healthy(), "{health:?}");

    // Stopping one worker leaves the other running.
    let stopped = handle.stop("tally").await.unwrap();
    assert_eq!(stopped.applied, 2);
    append(&store, vec![deposit(account, 1)]).await;
    wait_for(&handle, "balances", |s| s.checkpoint == Some(3)).await;
    assert_eq!(
        handle.projection_status("tally").unwrap().state,
        WorkerState::Finished
    );
    handle.shutdown(Duration::from_secs(5)).await;
}

/// Never finishes its handler.
#[derive(Default)]
struct Stuck;

#[projection(name = "stuck")]
impl Stuck {
    #[handles(Deposited)]
    async fn deposited(&mut self, _event: &Envelope<Deposited>) {
        std::future::pending::<()>().await;
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_finishes_batches_and_a_deadline_bounds_it() {
    let account = Uuid::new_v4();
    let store = Arc::new(InMemoryEventStore::new());
    append(&store, vec![deposit(account, 1)]).await;
    let mut registry = ProjectionRegistry::new();
    registry.register_projection(Stuck).unwrap();
    registry.register_projection(Tally::default()).unwrap();
    let handle = start(registry, store.clone());
    wait_for(&handle, "tally", |s| s.checkpoint == Some(1)).await;

    let started = Instant::now();
    let report = handle.shutdown(Duration::from_secs(3)).await;
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert!(started.elapsed() < Duration::from_secs(4));
    assert!(matches!(
        report.projection("stuck").unwrap().error,
        Some(projections::runner::RunnerError::Aborted { .. })
    ));
    let tally = report.projection("tally").unwrap();
    assert!(tally.is_ok() && tally.applied == 1, "{tally:?}");
}

#[test]
fn health_check_can_be_spawned() {
    fn spawnable<F: std::future::Future + Send>(_: &F) {}
    let coordinator = ProjectionCoordinator::new(
        ProjectionRegistry::new(),
        Arc::new(InMemoryEventStore::new()),
    );
    spawnable(&coordinator.health_check());
}

/// Checkpoints whose storage is set up wrong: every call fails as a missing table would.
struct Misconfigured;

impl projections::CheckpointRepository for Misconfigured {
    fn get_checkpoint<'a>(
        &'a self,
        _: &'a str,
    ) -> projections::storage::BoxFuture<'a, Result<Option<u64>, projections::StorageError>> {
        Box::pin(async { Err(missing()) })
    }
    fn get_checkpoint_data<'a>(
        &'a self,
        _: &'a str,
    ) -> projections::storage::BoxFuture<
        'a,
        Result<Option<projections::CheckpointData>, projections::StorageError>,
    > {
        Box::pin(async { Err(missing()) })
    }
    fn update_checkpoint<'a>(
        &'a self,
        _: &'a str,
        _: projections::checkpoint::CheckpointUpdate,
    ) -> projections::storage::BoxFuture<'a, Result<(), projections::StorageError>> {
        Box::pin(async { Err(missing()) })
    }
    fn set_halt<'a>(
        &'a self,
        _: &'a str,
        _: Option<&'a projections::Halt>,
    ) -> projections::storage::BoxFuture<'a, Result<(), projections::StorageError>> {
        Box::pin(async { Err(missing()) })
    }
    fn reset_checkpoint<'a>(
        &'a self,
        _: &'a str,
    ) -> projections::storage::BoxFuture<'a, Result<(), projections::StorageError>> {
        Box::pin(async { Err(missing()) })
    }
    fn get_all_checkpoints(
        &self,
    ) -> projections::storage::BoxFuture<
        '_,
        Result<Vec<projections::CheckpointData>, projections::StorageError>,
    > {
        Box::pin(async { Err(missing()) })
    }
}

fn missing() -> projections::StorageError {
    projections::StorageError::Invalid {
        what: "checkpoint table",
        reason: "relation \"projection_checkpoints\" does not exist".into(),
    }
}

#[tokio::test(start_paused = true)]
async fn storage_set_up_wrong_stops_the_projection_even_where_it_cannot_record_it() {
    let account = Uuid::new_v4();
    let store = Arc::new(InMemoryEventStore::new());
    append(&store, vec![deposit(account, 1)]).await;
    let balances = Balances::default();
    let calls = balances.calls.clone();
    let storage = Repositories::new(
        Arc::new(Misconfigured),
        Arc::new(projections::InMemoryDLQRepository::new()),
    );
    let mut registry = ProjectionRegistry::new();
    registry
        .register_projection(ProjectionRunner::builder(balances).storage(storage).build())
        .unwrap();
    registry.register_projection(Tally::default()).unwrap();
    let handle = start(registry, store.clone());

    let stopped = wait_for(&handle, "balances", |s| {
        matches!(s.state, WorkerState::Stopped { .. })
    })
    .await;
    let WorkerState::Stopped { at } = &stopped.state else {
        unreachable!()
    };
    assert_eq!(at.kind, FailureKind::Setup);
    assert!(at.error.contains("does not exist"), "{at:?}");
    wait_for(&handle, "tally", |s| s.checkpoint == Some(1)).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert!(matches!(
        handle.projection_status("balances").unwrap().state,
        WorkerState::Stopped { .. }
    ));
    handle.shutdown(Duration::from_secs(5)).await;
}

/// Takes 10 ms per event.
#[derive(Default)]
struct Slow;

#[projection(name = "slow")]
impl Slow {
    #[handles(Deposited)]
    async fn deposited(&mut self, _event: &Envelope<Deposited>) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn an_append_announced_during_a_batch_is_read_at_once() {
    let account = Uuid::new_v4();
    let store = Arc::new(InMemoryEventStore::new());
    let mut registry = ProjectionRegistry::new();
    registry.register_projection(Slow).unwrap();
    let handle = start(registry, store.clone());
    wait_for(&handle, "slow", |s| s.state == WorkerState::Live).await;

    let started = Instant::now();
    append(&store, vec![deposit(account, 1)]).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    // Announced while the first event's handler runs.
    append(&store, vec![deposit(account, 2)]).await;
    wait_for(&handle, "slow", |s| s.checkpoint == Some(2)).await;
    // Two handlers of 10 ms, and no wait between them.
    assert!(
        started.elapsed() < Duration::from_millis(25),
        "{:?}",
        started.elapsed()
    );
    handle.shutdown(Duration::from_secs(5)).await;
}

/// Read-your-writes: `wait_for` returns as soon as the projection's checkpoint covers the
/// append, says so when the projection is paused short of it, and when the time runs out.
#[tokio::test(start_paused = true)]
async fn wait_for_returns_when_the_append_is_applied_or_never_will_be() {
    use projections::coordinator::Waited;
    let account = Uuid::new_v4();
    let store = Arc::new(InMemoryEventStore::new());
    let mut registry = ProjectionRegistry::new();
    registry.register_projection(Tally::default()).unwrap();
    let handle = start(registry, store.clone());

    let appended = store
        .append(account, ExpectedVersion::Any, vec![deposit(account, 5)])
        .await
        .unwrap();
    let started = Instant::now();
    let waited = handle
        .wait_for("tally", appended.last_position, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(waited.reached(), "{waited:?}");
    assert!(waited.status().checkpoint >= Some(appended.last_position));
    // Woken by the append, not by the poll.
    assert!(started.elapsed() < POLL, "took {:?}", started.elapsed());

    // Paused: the next append will not be applied; the wait says so at once.
    handle.pause("tally", "maintenance").await.unwrap();
    let appended = store
        .append(account, ExpectedVersion::Any, vec![deposit(account, 7)])
        .await
        .unwrap();
    let started = Instant::now();
    let waited = handle
        .wait_for("tally", appended.last_position, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(matches!(waited, Waited::Halted(_)), "{waited:?}");
    assert!(started.elapsed() < Duration::from_secs(30));

    // A position far ahead: the time runs out.
    handle.resume("tally").await.unwrap();
    let waited = handle
        .wait_for(
            "tally",
            appended.last_position + 100,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert!(matches!(waited, Waited::TimedOut(_)), "{waited:?}");
    assert_eq!(waited.status().checkpoint, Some(appended.last_position));
    assert!(
        handle
            .wait_for("nobody", 1, Duration::from_secs(1))
            .await
            .is_err()
    );
}
