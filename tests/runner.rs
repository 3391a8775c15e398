//! The projection runner: skipping, checkpoints, dead letters, the stop policy, failures of
//! its own storage, replay, reset and lag.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{Balances, Permanent, Tally, deposit, positioned, rename, withdraw};
use projections::Halt;
use projections::checkpoint::CheckpointUpdate;
use projections::dlq::{DLQFilter, FailedEvent};
use projections::runner::Repositories;
use projections::runner::{EventOutcome, RunnerError};
use projections::storage::BoxFuture;
use projections::store::UndecodableEvent;
use projections::{
    CheckpointData, CheckpointRepository, DLQRepository, DLQStatus, EventMetadata, EventRegistry,
    EventStore, ExpectedVersion, FailurePolicy, InMemoryCheckpointRepository,
    InMemoryDLQRepository, InMemoryEventStore, NoRetryPolicy, ProjectionRunner, StorageError,
    StoredEvent,
};
use uuid::Uuid;

fn runner_with(
    projection: Balances,
    checkpoints: Arc<dyn CheckpointRepository>,
    dead_letters: Arc<dyn DLQRepository>,
    on_failure: FailurePolicy,
) -> ProjectionRunner<Balances> {
    ProjectionRunner::builder(projection)
        .storage(Repositories::new(checkpoints, dead_letters))
        .retry_policy(NoRetryPolicy)
        .on_failure(on_failure)
        .build()
}

#[tokio::test]
async fn redelivered_events_are_skipped_and_move_no_counter() {
    let checkpoints = Arc::new(InMemoryCheckpointRepository::new());
    let mut runner = runner_with(
        Balances::default(),
        checkpoints.clone(),
        Arc::new(InMemoryDLQRepository::new()),
        FailurePolicy::DeadLetter,
    );
    let account = Uuid::new_v4();
    let events = positioned(vec![deposit(account, 10), deposit(account, 5)], 1);

    runner.handle_batch(&events).await.unwrap();
    let again = runner.handle_batch(&events).await.unwrap();
    assert_eq!((again.applied, again.skipped), (0, 2));
    assert_eq!(
        runner.handle(&events[0]).await.unwrap(),
        EventOutcome::Skipped
    );

    assert_eq!(runner.projection().balances[&account], 15);
    assert_eq!(runner.projection().calls.load(Ordering::SeqCst), 2);
    let data = checkpoints
        .get_checkpoint_data("balances")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((data.position, data.events_processed), (2, 2));
    assert_eq!(data.last_event_id, Some(events[1].event_id()));
    assert_eq!(data.last_event_type.as_deref(), Some("Deposited"));
}

#[tokio::test]
async fn the_checkpoint_never_moves_backwards() {
    let mut runner = ProjectionRunner::new(Balances::default());
    let account = Uuid::new_v4();
    let late = positioned(vec![deposit(account, 1)], 5);
    let early = positioned(vec![deposit(account, 100)], 3);
    runner.handle_batch(&late).await.unwrap();
    assert_eq!(
        runner.handle(&early[0]).await.unwrap(),
        EventOutcome::Skipped
    );
    assert_eq!(runner.checkpoint().await.unwrap(), Some(5));
    assert_eq!(runner.projection().balances[&account], 1);
}

#[tokio::test]
async fn a_restarted_runner_resumes_from_the_stored_checkpoint() {
    let checkpoints: Arc<dyn CheckpointRepository> = Arc::new(InMemoryCheckpointRepository::new());
    let dead: Arc<dyn DLQRepository> = Arc::new(InMemoryDLQRepository::new());
    let account = Uuid::new_v4();
    let events = positioned(
        vec![
            deposit(account, 1),
            deposit(account, 2),
            deposit(account, 4),
        ],
        1,
    );
    let mut first = runner_with(
        Balances::default(),
        checkpoints.clone(),
        dead.clone(),
        FailurePolicy::DeadLetter,
    );
    first.handle_batch(&events[..2]).await.unwrap();

    let mut second = runner_with(
        Balances::default(),
        checkpoints,
        dead,
        FailurePolicy::DeadLetter,
    );
    let outcome = second.handle_batch(&events).await.unwrap();
    assert_eq!((outcome.skipped, outcome.applied), (2, 1));
    assert_eq!(second.projection().balances[&account], 4);
}

#[tokio::test]
async fn events_of_other_types_are_passed_over_and_the_checkpoint_moves_past_them() {
    let mut runner = ProjectionRunner::new(Balances::default());
    let account = Uuid::new_v4();
    let events = positioned(vec![deposit(account, 1), rename(account)], 1);
    let outcome = runner.handle_batch(&events).await.unwrap();
    assert_eq!((outcome.applied, outcome.not_subscribed), (1, 1));
    assert_eq!(outcome.checkpoint, Some(2));
    assert_eq!(runner.projection().calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_dead_letter_records_the_whole_failure_and_the_checkpoint_moves_past_it() {
    let dead = Arc::new(InMemoryDLQRepository::new());
    let checkpoints = Arc::new(InMemoryCheckpointRepository::new());
    let mut runner = runner_with(
        Balances::default(),
        checkpoints.clone(),
        dead.clone(),
        FailurePolicy::DeadLetter,
    );
    let account = Uuid::new_v4();
    let events = positioned(
        vec![
            deposit(account, 50),
            withdraw(account, 13),
            withdraw(account, 20),
        ],
        1,
    );

    let outcome = runner.handle_batch(&events).await.unwrap();
    assert_eq!(outcome.applied, 2);
    assert_eq!(outcome.dead_lettered.len(), 1);
    assert_eq!(outcome.checkpoint, Some(3));
    assert_eq!(runner.projection().balances[&account], 30);

    let entry = dead
        .get_by_id(outcome.dead_lettered[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.event_id, events[1].event_id());
    assert_eq!(entry.position, Some(2));
    assert_eq!(entry.projection_name, "balances");
    assert_eq!(entry.event_type, "Withdrawn");
    assert_eq!(entry.event_data, events[1].to_json().unwrap());
    assert_eq!(entry.event_data["payload"]["amount"], 13);
    assert!(
        entry.error_message.contains("unlucky withdrawal"),
        "{}",
        entry.error_message
    );
    assert_eq!(entry.attempts, 1);
    assert_eq!(entry.status, DLQStatus::Failed);
    let data = checkpoints
        .get_checkpoint_data("balances")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((data.position, data.events_processed), (3, 2));
}

#[tokio::test]
async fn the_dead_letter_keeps_the_error_source_chain() {
    #[derive(Debug, thiserror::Error)]
    #[error("could not apply withdrawal")]
    struct Outer(#[source] Permanent);

    let dead = Arc::new(InMemoryDLQRepository::new());
    let error = Outer(Permanent("inner cause".into()));
    let failure = FailedEvent::new(Uuid::new_v4(), "p", "T", serde_json::json!({}), &error, 2);
    let id = dead.add_failed_event(failure).await.unwrap();
    let entry = dead.get_by_id(id).await.unwrap().unwrap();
    assert_eq!(entry.error_message, "could not apply withdrawal");
    assert_eq!(
        entry.error_chain,
        vec!["permanent failure: inner cause".to_owned()]
    );
}

#[tokio::test]
async fn the_stop_policy_keeps_the_checkpoint_before_the_event_and_applies_nothing_further() {
    let dead = Arc::new(InMemoryDLQRepository::new());
    let mut runner = runner_with(
        Balances::default(),
        Arc::new(InMemoryCheckpointRepository::new()),
        dead.clone(),
        FailurePolicy::Stop,
    );
    let account = Uuid::new_v4();
    let events = positioned(
        vec![
            deposit(account, 50),
            withdraw(account, 13),
            deposit(account, 7),
        ],
        1,
    );

    let error = runner.handle_batch(&events).await.unwrap_err();
    let RunnerError::Stopped { at, source, .. } = &error else {
        panic!("{error:?}")
    };
    assert_eq!(at.position, Some(2));
    assert_eq!(at.event_id, Some(events[1].event_id()));
    assert!(source.is_some());
    assert!(error.to_string().contains("stopped"), "{error}");
    assert_eq!(runner.checkpoint().await.unwrap(), Some(1));
    assert_eq!(runner.projection().balances[&account], 50);

    // Nothing further is applied, not even other events, until an operator acts.
    let later = positioned(vec![deposit(account, 1)], 4);
    assert!(matches!(
        runner.handle_batch(&later).await,
        Err(RunnerError::Stopped { source: None, .. })
    ));
    assert_eq!(runner.projection().balances[&account], 50);
    assert!(
        dead.get_failed_events(DLQFilter::all())
            .await
            .unwrap()
            .is_empty()
    );

    // Resuming tries the failed event again; it still fails, so the projection stops again.
    runner.resume().await.unwrap();
    assert!(matches!(
        runner.handle_batch(&events).await,
        Err(RunnerError::Stopped { .. })
    ));
    assert_eq!(runner.checkpoint().await.unwrap(), Some(1));
}

/// A checkpoint repository whose writes fail on demand.
#[derive(Default)]
struct FlakyCheckpoints {
    inner: InMemoryCheckpointRepository,
    fail: AtomicBool,
}

impl CheckpointRepository for FlakyCheckpoints {
    fn get_checkpoint<'a>(
        &'a self,
        p: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, StorageError>> {
        self.inner.get_checkpoint(p)
    }
    fn get_checkpoint_data<'a>(
        &'a self,
        p: &'a str,
    ) -> BoxFuture<'a, Result<Option<CheckpointData>, StorageError>> {
        self.inner.get_checkpoint_data(p)
    }
    fn update_checkpoint<'a>(
        &'a self,
        p: &'a str,
        u: CheckpointUpdate,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        if self.fail.load(Ordering::SeqCst) {
            return Box::pin(async { Err(StorageError::backend("disk full")) });
        }
        self.inner.update_checkpoint(p, u)
    }
    fn reset_checkpoint<'a>(&'a self, p: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        self.inner.reset_checkpoint(p)
    }
    fn set_halt<'a>(
        &'a self,
        p: &'a str,
        halt: Option<&'a Halt>,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        self.inner.set_halt(p, halt)
    }
    fn get_all_checkpoints(&self) -> BoxFuture<'_, Result<Vec<CheckpointData>, StorageError>> {
        self.inner.get_all_checkpoints()
    }
}

#[tokio::test]
async fn a_failed_checkpoint_write_is_returned_and_never_reruns_or_dead_letters() {
    let checkpoints = Arc::new(FlakyCheckpoints::default());
    checkpoints.fail.store(true, Ordering::SeqCst);
    let dead = Arc::new(InMemoryDLQRepository::new());
    let mut runner = runner_with(
        Balances::default(),
        checkpoints.clone(),
        dead.clone(),
        FailurePolicy::DeadLetter,
    );
    let account = Uuid::new_v4();
    let events = positioned(vec![deposit(account, 10)], 1);

    let error = runner.handle_batch(&events).await.unwrap_err();
    assert!(
        matches!(
            error,
            RunnerError::Checkpoint {
                position: Some(1),
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(runner.projection().calls.load(Ordering::SeqCst), 1);
    assert!(
        dead.get_failed_events(DLQFilter::all())
            .await
            .unwrap()
            .is_empty()
    );

    // Once storage recovers, the pending progress is written without re-running anything.
    checkpoints.fail.store(false, Ordering::SeqCst);
    assert_eq!(
        runner.handle(&events[0]).await.unwrap(),
        EventOutcome::Skipped
    );
    assert_eq!(runner.projection().calls.load(Ordering::SeqCst), 1);
    let data = checkpoints
        .get_checkpoint_data("balances")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((data.position, data.events_processed), (1, 1));
}

/// A dead-letter queue that cannot be written.
struct BrokenDeadLetters;

impl DLQRepository for BrokenDeadLetters {
    fn add_failed_event(&self, _: FailedEvent) -> BoxFuture<'_, Result<i64, StorageError>> {
        Box::pin(async { Err(StorageError::backend("dlq offline")) })
    }
    fn get_failed_events(
        &self,
        _: DLQFilter,
    ) -> BoxFuture<'_, Result<Vec<projections::DLQEntry>, StorageError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn get_by_id(
        &self,
        _: i64,
    ) -> BoxFuture<'_, Result<Option<projections::DLQEntry>, StorageError>> {
        Box::pin(async { Ok(None) })
    }
    fn mark_retrying(&self, _: i64) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async { Ok(()) })
    }
    fn mark_resolved<'a>(&'a self, _: i64, _: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async { Ok(()) })
    }
    fn get_stats(&self) -> BoxFuture<'_, Result<projections::DLQStats, StorageError>> {
        Box::pin(async { Ok(Default::default()) })
    }
    fn get_projection_counts(&self) -> BoxFuture<'_, Result<Vec<(String, u64)>, StorageError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn delete_resolved(&self, _: u32) -> BoxFuture<'_, Result<u64, StorageError>> {
        Box::pin(async { Ok(0) })
    }
}

#[tokio::test]
async fn a_failed_dead_letter_write_keeps_the_checkpoint_before_the_event() {
    let checkpoints = Arc::new(InMemoryCheckpointRepository::new());
    let mut runner = runner_with(
        Balances::default(),
        checkpoints.clone(),
        Arc::new(BrokenDeadLetters),
        FailurePolicy::DeadLetter,
    );
    let account = Uuid::new_v4();
    let events = positioned(
        vec![
            deposit(account, 5),
            withdraw(account, 13),
            deposit(account, 1),
        ],
        1,
    );
    let error = runner.handle_batch(&events).await.unwrap_err();
    assert!(matches!(error, RunnerError::DeadLetter { .. }), "{error:?}");
    // The event before the failure is recorded; the failing one and those after are not.
    assert_eq!(
        checkpoints.get_checkpoint("balances").await.unwrap(),
        Some(1)
    );
    assert_eq!(runner.projection().balances[&account], 5);
}

#[tokio::test]
async fn an_undecodable_stored_event_goes_through_the_failure_policy_with_its_reason() {
    let dead = Arc::new(InMemoryDLQRepository::new());
    let mut runner = runner_with(
        Balances::default(),
        Arc::new(InMemoryCheckpointRepository::new()),
        dead.clone(),
        FailurePolicy::DeadLetter,
    );
    let metadata = EventMetadata::new("Deposited", 1, Uuid::new_v4(), "Account");
    let error = EventRegistry::global()
        .decode_str(metadata.clone(), r#"{"amount": "not a number"}"#)
        .unwrap_err();
    let raw =
        serde_json::json!({ "event_type": "Deposited", "payload": { "amount": "not a number" } });
    let events = vec![StoredEvent::Undecodable(UndecodableEvent::new(
        1,
        metadata.event_id,
        "Deposited",
        raw.clone(),
        error,
    ))];
    let outcome = runner.handle_batch(&events).await.unwrap();
    assert_eq!(outcome.dead_lettered.len(), 1);
    let entry = dead
        .get_by_id(outcome.dead_lettered[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.event_data, raw);
    assert!(
        entry.error_message.contains("does not decode"),
        "{}",
        entry.error_message
    );
    assert_eq!(runner.projection().calls.load(Ordering::SeqCst), 0);
    assert_eq!(outcome.checkpoint, Some(1));
}

#[tokio::test]
async fn replay_resolves_an_entry_once_the_projection_accepts_it() {
    let dead = Arc::new(InMemoryDLQRepository::new());
    let projection = Balances {
        fail_next: 1,
        ..Balances::default()
    };
    let mut runner = runner_with(
        projection,
        Arc::new(InMemoryCheckpointRepository::new()),
        dead.clone(),
        FailurePolicy::DeadLetter,
    );
    let account = Uuid::new_v4();
    let events = positioned(vec![deposit(account, 9)], 1);
    let outcome = runner.handle_batch(&events).await.unwrap();
    let id = outcome.dead_lettered[0];
    assert!(!runner.projection().balances.contains_key(&account));

    runner.replay_dead_letter(id).await.unwrap();
    assert_eq!(runner.projection().balances[&account], 9);
    let entry = dead.get_by_id(id).await.unwrap().unwrap();
    assert_eq!(entry.status, DLQStatus::Resolved);
    assert_eq!(entry.resolved_by.as_deref(), Some("replay"));
    assert!(entry.resolved_at.is_some());
    // A resolved entry is not replayed twice.
    assert!(matches!(
        runner.replay_dead_letter(id).await,
        Err(RunnerError::Replay { .. })
    ));
}

#[tokio::test]
async fn a_failed_replay_puts_the_entry_back_with_attempts_added() {
    let dead = Arc::new(InMemoryDLQRepository::new());
    let mut runner = runner_with(
        Balances::default(),
        Arc::new(InMemoryCheckpointRepository::new()),
        dead.clone(),
        FailurePolicy::DeadLetter,
    );
    let events = positioned(vec![withdraw(Uuid::new_v4(), 13)], 1);
    let id = runner.handle_batch(&events).await.unwrap().dead_lettered[0];

    let error = runner.replay_dead_letter(id).await.unwrap_err();
    assert!(error.to_string().contains("unlucky"), "{error}");
    let entry = dead.get_by_id(id).await.unwrap().unwrap();
    assert_eq!(entry.status, DLQStatus::Failed);
    assert_eq!(entry.attempts, 2);
}

#[tokio::test]
async fn reset_clears_the_checkpoint_and_the_read_model() {
    let checkpoints = Arc::new(InMemoryCheckpointRepository::new());
    let mut runner = runner_with(
        Balances::default(),
        checkpoints.clone(),
        Arc::new(InMemoryDLQRepository::new()),
        FailurePolicy::DeadLetter,
    );
    let events = positioned(vec![deposit(Uuid::new_v4(), 3)], 1);
    runner.handle_batch(&events).await.unwrap();
    runner.reset().await.unwrap();
    assert!(runner.projection().balances.is_empty());
    assert_eq!(checkpoints.get_checkpoint("balances").await.unwrap(), None);
    // After a reset the same events apply again.
    assert_eq!(
        runner.handle(&events[0]).await.unwrap(),
        EventOutcome::Applied
    );
}

#[tokio::test]
async fn lag_counts_relevant_events_after_the_checkpoint() {
    let store = InMemoryEventStore::new();
    let account = Uuid::new_v4();
    store
        .append(
            account,
            ExpectedVersion::NoStream,
            vec![
                deposit(account, 1),
                rename(account),
                deposit(account, 2),
                withdraw(account, 1),
            ],
        )
        .await
        .unwrap();
    let mut runner = ProjectionRunner::new(Tally::default());
    let first_two = store.read_all(0, 2).await.unwrap();
    runner.handle_batch(&first_two).await.unwrap();

    let lag = runner.lag_metrics(&store).await.unwrap();
    assert_eq!(lag.projection_name, "tally");
    assert_eq!(lag.checkpoint_position, 2);
    assert_eq!(lag.head_position, 4);
    assert_eq!(lag.events_behind, 2);
    assert!(lag.oldest_unprocessed_age.is_some());
    assert!(lag.since_last_progress.is_some());
    assert_eq!(lag.events_processed, 1);

    let rest = store.read_all(2, 10).await.unwrap();
    runner.handle_batch(&rest).await.unwrap();
    let lag = runner.lag_metrics(&store).await.unwrap();
    assert!(lag.is_caught_up());
    assert_eq!(lag.oldest_unprocessed_age, None);
}

/// Fails deposits of 99 as if a downstream service were unreachable.
#[derive(Default)]
struct Forwarder {
    forwarded: Vec<i64>,
}

#[projections::projection(name = "forwarder")]
impl Forwarder {
    #[handles(common::Deposited)]
    async fn deposited(
        &mut self,
        event: &projections::Envelope<common::Deposited>,
    ) -> Result<(), projections::HandlerError> {
        if event.amount == 99 {
            return Err(projections::HandlerError::infrastructure(
                "service unreachable",
            ));
        }
        self.forwarded.push(event.amount);
        Ok(())
    }
}

#[tokio::test]
async fn an_infrastructure_failure_keeps_what_came_before_and_dead_letters_nothing() {
    let storage = Repositories::in_memory();
    let mut runner = ProjectionRunner::builder(Forwarder::default())
        .storage(storage.clone())
        .build();
    let account = Uuid::new_v4();
    let events = positioned(
        vec![
            deposit(account, 1),
            deposit(account, 99),
            deposit(account, 3),
        ],
        1,
    );
    let error = runner.handle_batch(&events).await.unwrap_err();
    assert!(
        matches!(error, RunnerError::Infrastructure { .. }),
        "{error:?}"
    );
    // The handlers' effects before the failure happened and are recorded; the failing event
    // and what follows are not passed.
    assert_eq!(runner.projection().forwarded, vec![1]);
    assert_eq!(runner.checkpoint().await.unwrap(), Some(1));
    assert_eq!(
        storage
            .checkpoint_repository()
            .get_checkpoint("forwarder")
            .await
            .unwrap(),
        Some(1)
    );
    assert!(
        storage
            .dead_letter_repository()
            .get_failed_events(DLQFilter::all())
            .await
            .unwrap()
            .is_empty()
    );
}

/// A synchronous projection that panics on deposits of 666: the panic happens while the
/// handler's future is built, not while it is polled.
#[derive(Default)]
struct SyncPanicky {
    total: i64,
}

#[projections::projection(name = "sync-panicky", sync)]
impl SyncPanicky {
    #[handles(common::Deposited)]
    fn deposited(&mut self, event: &projections::Envelope<common::Deposited>) {
        if event.amount == 666 {
            panic!("sync handler refuses {}", event.amount);
        }
        self.total += event.amount;
    }
}

#[tokio::test]
async fn a_panic_in_a_synchronous_handler_is_that_events_failure() {
    let mut runner = ProjectionRunner::builder(SyncPanicky::default())
        .retry_policy(NoRetryPolicy)
        .build();
    let account = Uuid::new_v4();
    let events = positioned(
        vec![
            deposit(account, 1),
            deposit(account, 666),
            deposit(account, 2),
        ],
        1,
    );
    let outcome = runner.handle_batch(&events).await.unwrap();
    assert_eq!((outcome.applied, outcome.dead_lettered.len()), (2, 1));
    assert_eq!(runner.projection().total, 3);
    let dead = runner.unresolved_dead_letters().await.unwrap();
    assert!(
        dead[0]
            .error_message
            .contains("panicked: sync handler refuses 666"),
        "{dead:?}"
    );
}

use projections::{Envelope, projection};

/// Sums deposits set-based; refuses a run holding a 13 before changing anything.
#[derive(Default)]
struct SetTotal {
    total: i64,
    calls: Vec<usize>,
}

#[projection(name = "set-total")]
impl SetTotal {
    #[handles(common::Deposited)]
    async fn deposited(&mut self, events: &[Envelope<common::Deposited>]) -> Result<(), String> {
        self.calls.push(events.len());
        if events.iter().any(|e| e.amount == 13) {
            return Err("refusing 13".into());
        }
        self.total += events.iter().map(|e| e.amount).sum::<i64>();
        Ok(())
    }
}

/// With repositories, a failing run is narrowed down the same way: the bad event alone is
/// dead-lettered and the checkpoint passes it.
#[tokio::test]
async fn a_set_based_failure_is_narrowed_down_with_repositories() {
    let account = Uuid::new_v4();
    let events = positioned(
        [1, 2, 3, 4, 13, 6, 7]
            .iter()
            .map(|&a| deposit(account, a))
            .collect(),
        1,
    );
    let mut runner = ProjectionRunner::builder(SetTotal::default())
        .retry_policy(NoRetryPolicy)
        .build();
    let outcome = runner.handle_batch(&events).await.unwrap();
    assert_eq!((outcome.applied, outcome.dead_lettered.len()), (6, 1));
    assert_eq!(outcome.checkpoint, Some(7));
    assert_eq!(runner.projection().total, 1 + 2 + 3 + 4 + 6 + 7);
    // [7 events] fails; [1 2 3] commits; [4 13 6 7] fails; [4 13] fails; [4] commits;
    // [13 6 7] fails; [13] fails alone and is dead-lettered; [6 7] commits.
    assert_eq!(runner.projection().calls, [7, 3, 4, 2, 1, 3, 1, 2]);
    let dead = runner.unresolved_dead_letters().await.unwrap();
    assert_eq!(dead[0].position, Some(5));
}
