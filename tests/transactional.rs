//! The transactional runner's algorithm over an in-memory transactional database: one
//! transaction per batch, isolation of a failing event, retries in fresh transactions, dead
//! letter and checkpoint committed together, and recovery from a failure at every step.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use common::{Deposited, Withdrawn, deposit, positioned};
use projections::checkpoint::CheckpointUpdate;
use projections::dlq::FailedEvent;
use projections::projection::Injectable;
use projections::runner::{EventOrder, RunnerError};
use projections::storage::BoxFuture;
use projections::transactional::{TransactionUnit, TransactionalRunner};
use projections::{
    AnyEvent, CheckpointRepository, DLQRepository, DLQStatus, Envelope,
    ExponentialBackoffRetryPolicy, FailurePolicy, InMemoryCheckpointRepository,
    InMemoryDLQRepository, NoRetryPolicy, RetryConfig, StorageError, projection,
};
use uuid::Uuid;

/// A transaction's buffered writes; applied on commit, dropped on rollback.
#[derive(Default)]
pub struct FakeConn {
    balances: Vec<(Uuid, i64)>,
    checkpoint: Option<(String, CheckpointUpdate)>,
    reset: Option<String>,
    dead: Vec<FailedEvent>,
    resolved: Vec<(i64, String)>,
}

impl Injectable for FakeConn {}

pub struct FakeTx(FakeConn);

impl Deref for FakeTx {
    type Target = FakeConn;
    fn deref(&self) -> &FakeConn {
        &self.0
    }
}

impl DerefMut for FakeTx {
    fn deref_mut(&mut self) -> &mut FakeConn {
        &mut self.0
    }
}

/// Where an injected failure strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Begin,
    Lock,
    WriteCheckpoint,
    Commit,
}

#[derive(Default)]
struct FakeDb {
    balances: Mutex<BTreeMap<Uuid, i64>>,
    checkpoints: Arc<InMemoryCheckpointRepository>,
    dead_letters: Arc<InMemoryDLQRepository>,
    begins: AtomicU32,
    commits: AtomicU32,
    /// Fail at the n-th occurrence (1-based) of a step.
    fault: Mutex<Option<(Fault, u32)>>,
    seen: Mutex<BTreeMap<String, u32>>,
}

impl FakeDb {
    fn trip(&self, step: Fault) -> Result<(), StorageError> {
        let mut seen = self.seen.lock().unwrap();
        let count = seen.entry(format!("{step:?}")).or_default();
        *count += 1;
        match *self.fault.lock().unwrap() {
            Some((fault, n)) if fault == step && n == *count => {
                Err(StorageError::backend(format!("injected {step:?}")))
            }
            _ => Ok(()),
        }
    }

    fn balances(&self) -> BTreeMap<Uuid, i64> {
        self.balances.lock().unwrap().clone()
    }
}

impl TransactionUnit for FakeDb {
    type Connection = FakeConn;
    type Transaction = FakeTx;

    fn begin(&self) -> BoxFuture<'_, Result<FakeTx, StorageError>> {
        Box::pin(async move {
            self.trip(Fault::Begin)?;
            self.begins.fetch_add(1, Ordering::SeqCst);
            Ok(FakeTx(FakeConn::default()))
        })
    }

    fn commit(&self, tx: FakeTx) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move {
            self.trip(Fault::Commit)?;
            let conn = tx.0;
            if let Some(name) = conn.reset {
                self.balances.lock().unwrap().clear();
                self.checkpoints.reset_checkpoint(&name).await?;
            }
            for (account, delta) in conn.balances {
                *self.balances.lock().unwrap().entry(account).or_default() += delta;
            }
            for failure in conn.dead {
                self.dead_letters.add_failed_event(failure).await?;
            }
            for (id, by) in conn.resolved {
                self.dead_letters.mark_resolved(id, &by).await?;
            }
            if let Some((name, update)) = conn.checkpoint {
                self.checkpoints.update_checkpoint(&name, update).await?;
            }
            self.commits.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    }

    fn rollback(&self, _tx: FakeTx) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async { Ok(()) })
    }

    fn lock_checkpoint<'a>(
        &'a self,
        _tx: &'a mut FakeTx,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, StorageError>> {
        Box::pin(async move {
            self.trip(Fault::Lock)?;
            self.checkpoints.get_checkpoint(projection).await
        })
    }

    fn write_checkpoint<'a>(
        &'a self,
        tx: &'a mut FakeTx,
        projection: &'a str,
        update: &'a CheckpointUpdate,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            self.trip(Fault::WriteCheckpoint)?;
            tx.checkpoint = Some((projection.to_owned(), update.clone()));
            Ok(())
        })
    }

    fn reset_checkpoint<'a>(
        &'a self,
        tx: &'a mut FakeTx,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        tx.reset = Some(projection.to_owned());
        Box::pin(async { Ok(()) })
    }

    fn dead_letter<'a>(
        &'a self,
        tx: &'a mut FakeTx,
        failure: &'a FailedEvent,
    ) -> BoxFuture<'a, Result<i64, StorageError>> {
        tx.dead.push(failure.clone());
        Box::pin(async { Ok(0) })
    }

    fn resolve_dead_letter<'a>(
        &'a self,
        tx: &'a mut FakeTx,
        entry_id: i64,
        resolved_by: &'a str,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        tx.resolved.push((entry_id, resolved_by.to_owned()));
        Box::pin(async { Ok(()) })
    }

    fn checkpoints(&self) -> Arc<dyn CheckpointRepository> {
        self.checkpoints.clone()
    }

    fn dead_letters(&self) -> Arc<dyn DLQRepository> {
        self.dead_letters.clone()
    }
}

/// Writes two statements per deposit; a deposit of 13 fails between them, and `flaky` makes
/// the next N calls fail after the first statement.
#[derive(Default)]
struct Ledger {
    calls: Arc<AtomicU32>,
    flaky: u32,
}

#[projection(name = "ledger")]
impl Ledger {
    #[handles(Deposited)]
    async fn deposited(
        &mut self,
        conn: &mut FakeConn,
        event: &Envelope<Deposited>,
    ) -> Result<(), String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        conn.balances.push((event.aggregate_id(), event.amount));
        if self.flaky > 0 {
            self.flaky -= 1;
            return Err("flaky".into());
        }
        if event.amount == 13 {
            return Err(format!("refusing 13 on {}", event.aggregate_id()));
        }
        conn.balances.push((event.aggregate_id(), 1000));
        Ok(())
    }

    #[reset]
    async fn clear(&mut self, conn: &mut FakeConn) {
        let _ = conn;
    }
}

fn runner(db: &Arc<FakeDb>, ledger: Ledger) -> TransactionalRunner<Ledger, FakeDb> {
    TransactionalRunner::new(ledger, db.clone()).retry_policy(NoRetryPolicy)
}

fn deposits(account: Uuid, amounts: &[i64]) -> Vec<AnyEvent> {
    positioned(amounts.iter().map(|&a| deposit(account, a)).collect(), 1)
}

#[tokio::test]
async fn a_batch_is_one_transaction_with_its_checkpoint() {
    let db = Arc::new(FakeDb::default());
    let account = Uuid::new_v4();
    let events = deposits(account, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    let outcome = runner(&db, Ledger::default())
        .handle_batch(&events)
        .await
        .unwrap();
    assert_eq!(outcome.applied, 10);
    assert_eq!(outcome.checkpoint, Some(10));
    assert_eq!(db.begins.load(Ordering::SeqCst), 1);
    assert_eq!(db.commits.load(Ordering::SeqCst), 1);
    assert_eq!(db.balances()[&account], 55 + 10_000);
    let data = db
        .checkpoints
        .get_checkpoint_data("ledger")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((data.position, data.events_processed), (10, 10));
}

#[tokio::test]
async fn a_failing_event_is_isolated_and_dead_lettered_with_the_checkpoint() {
    let db = Arc::new(FakeDb::default());
    let account = Uuid::new_v4();
    let events = deposits(account, &[1, 2, 13, 4]);
    let mut runner = runner(&db, Ledger::default());
    let outcome = runner.handle_batch(&events).await.unwrap();

    assert_eq!(outcome.applied, 3);
    assert_eq!(outcome.dead_lettered.len(), 1);
    assert_eq!(outcome.checkpoint, Some(4));
    // The failing event's first statement was rolled back; the others applied exactly once
    // although the events before it ran twice (once in the rolled-back transaction).
    assert_eq!(db.balances()[&account], 1 + 2 + 4 + 3_000);
    let entries = db
        .dead_letters
        .get_failed_events(Default::default())
        .await
        .unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].position, Some(3));
    assert_eq!(entries[0].status, DLQStatus::Failed);
    assert!(entries[0].error_message.contains("refusing 13"));
    let data = db
        .checkpoints
        .get_checkpoint_data("ledger")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((data.position, data.events_processed), (4, 3));
}

#[tokio::test(start_paused = true)]
async fn each_retry_runs_in_a_fresh_transaction() {
    let db = Arc::new(FakeDb::default());
    let account = Uuid::new_v4();
    let events = deposits(account, &[5]);
    let retry = RetryConfig::new(
        3,
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(10),
        2.0,
        0.0,
    )
    .unwrap();
    let ledger = Ledger {
        flaky: 2,
        ..Ledger::default()
    };
    let calls = ledger.calls.clone();
    let mut runner = TransactionalRunner::new(ledger, db.clone())
        .retry_policy(ExponentialBackoffRetryPolicy::new(retry));
    let outcome = runner.handle_batch(&events).await.unwrap();
    assert_eq!(outcome.applied, 1);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // The two failed attempts left nothing behind.
    assert_eq!(db.balances()[&account], 1005);
    assert_eq!(db.begins.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn the_stop_policy_commits_what_came_before_and_stops() {
    let db = Arc::new(FakeDb::default());
    let account = Uuid::new_v4();
    let events = deposits(account, &[1, 13, 4]);
    let mut runner = runner(&db, Ledger::default()).on_failure(FailurePolicy::Stop);
    let error = runner.handle_batch(&events).await.unwrap_err();
    assert!(matches!(error, RunnerError::Stopped { .. }));
    assert_eq!(db.balances()[&account], 1001);
    assert_eq!(
        db.checkpoints.get_checkpoint("ledger").await.unwrap(),
        Some(1)
    );
    assert!(
        db.dead_letters
            .get_failed_events(Default::default())
            .await
            .unwrap()
            .is_empty()
    );
}

/// For every step of a batch and every occurrence of it, a failure there followed by a
/// restart gives the read model of an uninterrupted run: nothing lost, nothing twice.
#[tokio::test]
async fn a_failure_at_any_step_then_a_restart_gives_the_uninterrupted_result() {
    let account = Uuid::new_v4();
    let events = deposits(account, &[1, 2, 13, 4, 5]);
    let clean = Arc::new(FakeDb::default());
    runner(&clean, Ledger::default())
        .handle_batch(&events)
        .await
        .unwrap();
    let expected = clean.balances();

    for fault in [
        Fault::Begin,
        Fault::Lock,
        Fault::WriteCheckpoint,
        Fault::Commit,
    ] {
        for occurrence in 1..=4 {
            let db = Arc::new(FakeDb::default());
            *db.fault.lock().unwrap() = Some((fault, occurrence));
            let first = runner(&db, Ledger::default()).handle_batch(&events).await;
            *db.fault.lock().unwrap() = None;
            // A new process: a new runner over the same database.
            runner(&db, Ledger::default())
                .handle_batch(&events)
                .await
                .unwrap();
            assert_eq!(
                db.balances(),
                expected,
                "fault {fault:?} #{occurrence}, first run: {first:?}"
            );
            let dead = db
                .dead_letters
                .get_failed_events(Default::default())
                .await
                .unwrap();
            assert_eq!(dead.len(), 1, "fault {fault:?} #{occurrence}");
        }
    }
}

/// Writes one statement per deposit, then loses its connection on a deposit of 99 (an
/// infrastructure failure).
#[derive(Default)]
struct Unplugged {
    calls: Arc<AtomicU32>,
}

#[projection(name = "unplugged")]
impl Unplugged {
    #[handles(Deposited)]
    async fn deposited(
        &mut self,
        conn: &mut FakeConn,
        event: &Envelope<Deposited>,
    ) -> Result<(), std::io::Error> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        conn.balances.push((event.aggregate_id(), event.amount));
        if event.amount == 99 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "reset by peer",
            ));
        }
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn an_infrastructure_failure_rolls_back_and_is_never_dead_lettered() {
    let db = Arc::new(FakeDb::default());
    let account = Uuid::new_v4();
    let events = deposits(account, &[1, 2, 99, 4]);
    let ledger = Unplugged::default();
    let calls = ledger.calls.clone();
    // Even with retries configured, the infrastructure's failure is not the event's: it is
    // returned at once, for the caller to wait out.
    let mut runner = TransactionalRunner::new(ledger, db.clone());
    let mut outcome = projections::runner::BatchOutcome::default();
    let error = runner
        .handle_batch_into(&events, &mut outcome)
        .await
        .unwrap_err();
    assert!(
        matches!(error, RunnerError::Infrastructure { .. }),
        "{error:?}"
    );
    assert_eq!(error.kind(), projections::FailureKind::Infrastructure);
    assert_eq!(calls.load(Ordering::SeqCst), 3, "no retry of the event");
    assert_eq!((outcome.applied, outcome.failed), (0, 1));
    assert!(outcome.dead_lettered.is_empty());
    // Nothing committed, nothing dead-lettered: the batch is tried again later, whole.
    assert!(db.balances().is_empty());
    assert_eq!(
        db.checkpoints.get_checkpoint("unplugged").await.unwrap(),
        None
    );
    assert!(
        db.dead_letters
            .get_failed_events(Default::default())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn an_event_without_a_position_delivered_twice_in_a_row_commits_once() {
    let db = Arc::new(FakeDb::default());
    let account = Uuid::new_v4();
    let event = deposit(account, 5);
    assert_eq!(event.position(), None);
    let mut runner = runner(&db, Ledger::default());
    let first = runner
        .handle_batch(std::slice::from_ref(&event))
        .await
        .unwrap();
    assert_eq!((first.applied, first.skipped), (1, 0));
    let second = runner.handle_batch(&[event.clone(), event]).await.unwrap();
    assert_eq!((second.applied, second.skipped), (0, 2));
    assert_eq!(db.balances()[&account], 5 + 1000);
}

/// Strict about the `Account` events it has no handler for.
#[derive(Default)]
struct StrictLedger;

#[projection(name = "strict-ledger", unregistered = error)]
impl StrictLedger {
    #[handles(Deposited)]
    async fn deposited(&mut self, conn: &mut FakeConn, event: &Envelope<Deposited>) {
        conn.balances.push((event.aggregate_id(), event.amount));
    }
}

#[tokio::test]
async fn an_unhandled_event_of_a_followed_aggregate_is_dead_lettered_with_its_checkpoint() {
    let db = Arc::new(FakeDb::default());
    let account = Uuid::new_v4();
    let events = positioned(
        vec![
            deposit(account, 1),
            common::withdraw(account, 2),
            deposit(account, 3),
        ],
        1,
    );
    let mut runner = TransactionalRunner::new(StrictLedger, db.clone())
        .retry_policy(ExponentialBackoffRetryPolicy::default())
        .follows_aggregates(["Account"]);
    let outcome = runner.handle_batch(&events).await.unwrap();
    assert_eq!((outcome.applied, outcome.dead_lettered.len()), (2, 1));
    assert_eq!(outcome.checkpoint, Some(3));
    assert_eq!(db.balances()[&account], 4);
    let entries = db
        .dead_letters
        .get_failed_events(projections::dlq::DLQFilter::all())
        .await
        .unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (
            entries[0].event_type.as_str(),
            entries[0].position,
            entries[0].attempts
        ),
        ("Withdrawn", Some(2), 1),
        "not retried: trying again cannot add a handler"
    );
}

// ---- Set-based handlers ----------------------------------------------------------------

/// Deposits set-based, withdrawals per event. A run writes one statement per deposit, then
/// refuses the whole run if it holds a 13 or panics if it holds a 66: the runner must find that
/// event. The size of every call is recorded.
#[derive(Default)]
struct SetLedger {
    runs: Arc<Mutex<Vec<usize>>>,
}

#[projection(name = "set-ledger")]
impl SetLedger {
    #[handles(Deposited)]
    async fn deposited(
        &mut self,
        conn: &mut FakeConn,
        events: &[Envelope<Deposited>],
    ) -> Result<(), String> {
        self.runs.lock().unwrap().push(events.len());
        for event in events {
            conn.balances.push((event.aggregate_id(), event.amount));
        }
        if let Some(bad) = events.iter().find(|e| e.amount == 13) {
            return Err(format!("refusing 13 at {:?}", bad.position()));
        }
        assert!(events.iter().all(|e| e.amount != 66), "66 is not a deposit");
        for event in events {
            conn.balances.push((event.aggregate_id(), 1000));
        }
        Ok(())
    }

    #[handles(Withdrawn)]
    async fn withdrawn(&mut self, conn: &mut FakeConn, event: &Envelope<Withdrawn>) {
        conn.balances.push((event.aggregate_id(), -event.amount));
    }
}

fn set_runner(db: &Arc<FakeDb>, ledger: SetLedger) -> TransactionalRunner<SetLedger, FakeDb> {
    TransactionalRunner::new(ledger, db.clone()).retry_policy(NoRetryPolicy)
}

#[tokio::test]
async fn a_set_based_handler_takes_each_run_of_its_type_in_one_call() {
    let db = Arc::new(FakeDb::default());
    let account = Uuid::new_v4();
    let events = positioned(
        vec![
            deposit(account, 1),
            deposit(account, 2),
            deposit(account, 3),
            common::withdraw(account, 4),
            deposit(account, 5),
            deposit(account, 6),
        ],
        1,
    );
    let ledger = SetLedger::default();
    let runs = ledger.runs.clone();
    let outcome = set_runner(&db, ledger).handle_batch(&events).await.unwrap();
    assert_eq!((outcome.applied, outcome.checkpoint), (6, Some(6)));
    assert_eq!(*runs.lock().unwrap(), [3, 2], "one call per run, in order");
    assert_eq!(db.begins.load(Ordering::SeqCst), 1, "one transaction");
    assert_eq!(db.balances()[&account], 1 + 2 + 3 - 4 + 5 + 6 + 5_000);
    let data = db
        .checkpoints
        .get_checkpoint_data("set-ledger")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((data.position, data.events_processed), (6, 6));
}

/// Wherever the bad event sits in a run, it alone is dead-lettered and every other event is
/// applied exactly once.
#[tokio::test]
async fn a_failing_event_in_a_run_is_found_and_dead_lettered_alone() {
    for bad in 0..9 {
        let db = Arc::new(FakeDb::default());
        let account = Uuid::new_v4();
        let amounts: Vec<i64> = (1..=9)
            .map(|n| if n - 1 == bad { 13 } else { n * 100 })
            .collect();
        let events = deposits(account, &amounts);
        let ledger = SetLedger::default();
        let runs = ledger.runs.clone();
        let outcome = set_runner(&db, ledger).handle_batch(&events).await.unwrap();
        let good: i64 = amounts.iter().filter(|&&a| a != 13).sum();
        assert_eq!(
            (
                outcome.applied,
                outcome.dead_lettered.len(),
                outcome.checkpoint
            ),
            (8, 1, Some(9)),
            "bad event at {bad}"
        );
        assert_eq!(db.balances()[&account], good + 8_000, "bad event at {bad}");
        let entries = db
            .dead_letters
            .get_failed_events(Default::default())
            .await
            .unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].position, Some(bad as u64 + 1));
        assert_eq!(entries[0].attempts, 1);
        // Narrowing halves: a handful of calls, not one per event.
        let calls = runs.lock().unwrap().len();
        assert!(calls <= 10, "{calls} calls for a bad event at {bad}");
        let data = db
            .checkpoints
            .get_checkpoint_data("set-ledger")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((data.position, data.events_processed), (9, 8));
    }
}

#[tokio::test]
async fn a_panic_in_a_set_based_handler_is_its_events_failure() {
    let db = Arc::new(FakeDb::default());
    let account = Uuid::new_v4();
    let events = deposits(account, &[1, 2, 66, 4]);
    let outcome = set_runner(&db, SetLedger::default())
        .handle_batch(&events)
        .await
        .unwrap();
    assert_eq!((outcome.applied, outcome.dead_lettered.len()), (3, 1));
    assert_eq!(db.balances()[&account], 1 + 2 + 4 + 3_000);
    let entries = db
        .dead_letters
        .get_failed_events(Default::default())
        .await
        .unwrap();
    assert_eq!(entries[0].position, Some(3));
    assert!(entries[0].error_message.contains("66 is not a deposit"));
}

#[tokio::test]
async fn the_stop_policy_stops_at_the_failing_event_of_a_run() {
    let db = Arc::new(FakeDb::default());
    let account = Uuid::new_v4();
    let events = deposits(account, &[1, 2, 3, 13, 5, 6]);
    let mut runner = set_runner(&db, SetLedger::default()).on_failure(FailurePolicy::Stop);
    let error = runner.handle_batch(&events).await.unwrap_err();
    let RunnerError::Stopped { at, .. } = error else {
        panic!("{error:?}");
    };
    assert_eq!(at.position, Some(4));
    assert_eq!(db.balances()[&account], 1 + 2 + 3 + 3_000);
    assert_eq!(
        db.checkpoints.get_checkpoint("set-ledger").await.unwrap(),
        Some(3)
    );
}

/// The crash-at-every-step suite for a set-based projection: narrowing a failed run takes
/// more transactions, and a failure at any of them, then a restart, gives the uninterrupted
/// result.
#[tokio::test]
async fn a_failure_at_any_step_of_a_set_based_batch_then_a_restart_gives_the_uninterrupted_result()
{
    let account = Uuid::new_v4();
    let events = positioned(
        vec![
            deposit(account, 1),
            deposit(account, 2),
            deposit(account, 3),
            deposit(account, 13),
            deposit(account, 5),
            common::withdraw(account, 6),
            deposit(account, 7),
            deposit(account, 8),
        ],
        1,
    );
    let clean = Arc::new(FakeDb::default());
    set_runner(&clean, SetLedger::default())
        .handle_batch(&events)
        .await
        .unwrap();
    let expected = clean.balances();
    assert_eq!(expected[&account], 1 + 2 + 3 + 5 - 6 + 7 + 8 + 6_000);
    let steps = clean.seen.lock().unwrap().clone();

    for fault in [
        Fault::Begin,
        Fault::Lock,
        Fault::WriteCheckpoint,
        Fault::Commit,
    ] {
        let occurrences = steps.get(&format!("{fault:?}")).copied().unwrap_or(0);
        assert!(occurrences >= 2, "{fault:?} happens {occurrences} times");
        for occurrence in 1..=occurrences {
            let db = Arc::new(FakeDb::default());
            *db.fault.lock().unwrap() = Some((fault, occurrence));
            let first = set_runner(&db, SetLedger::default())
                .handle_batch(&events)
                .await;
            *db.fault.lock().unwrap() = None;
            set_runner(&db, SetLedger::default())
                .handle_batch(&events)
                .await
                .unwrap();
            assert_eq!(
                db.balances(),
                expected,
                "fault {fault:?} #{occurrence}, first run: {first:?}"
            );
            let dead = db
                .dead_letters
                .get_failed_events(Default::default())
                .await
                .unwrap();
            assert_eq!(dead.len(), 1, "fault {fault:?} #{occurrence}");
            assert_eq!(dead[0].position, Some(4));
        }
    }
}

/// Fails its `fail_on`-th call; otherwise writes the deposit.
struct FailsOnCall {
    calls: u32,
    fail_on: u32,
}

#[projection(name = "fails-on-call")]
impl FailsOnCall {
    #[handles(Deposited)]
    async fn deposited(
        &mut self,
        conn: &mut FakeConn,
        event: &Envelope<Deposited>,
    ) -> Result<(), String> {
        self.calls += 1;
        conn.balances.push((event.aggregate_id(), event.amount));
        if self.calls == self.fail_on || event.amount == 13 {
            return Err(format!("call {} on {}", self.calls, event.amount));
        }
        Ok(())
    }
}

/// When re-applying the events before a failure, one that had succeeded fails now: it is
/// settled (here dead-lettered), and the later failure is met again in order. No event is
/// passed over without being applied or dead-lettered.
#[tokio::test]
async fn an_event_that_fails_when_applied_again_is_settled_not_skipped() {
    let db = Arc::new(FakeDb::default());
    let account = Uuid::new_v4();
    let events = deposits(account, &[1, 2, 13, 4]);
    // Calls: 1, 2, 13 (fails, rolled back), then 1, 2 again: the second 2 (call 5) fails.
    let projection = FailsOnCall {
        calls: 0,
        fail_on: 5,
    };
    let mut runner = TransactionalRunner::new(projection, db.clone()).retry_policy(NoRetryPolicy);
    let outcome = runner.handle_batch(&events).await.unwrap();
    assert_eq!((outcome.applied, outcome.checkpoint), (2, Some(4)));
    let dead: Vec<Option<u64>> = db
        .dead_letters
        .get_failed_events(Default::default())
        .await
        .unwrap()
        .iter()
        .map(|e| e.position)
        .collect();
    assert_eq!(dead, [Some(2), Some(3)]);
    assert_eq!(db.balances()[&account], 1 + 4);
}

// ---- Per-aggregate order: the events of a type gathered across a batch ----------------

/// Deposits and withdrawals, both set-based; records each call as (type, size).
#[derive(Default)]
struct GatheredLedger {
    calls: Arc<Mutex<Vec<(&'static str, usize)>>>,
}

#[projection(name = "gathered-ledger")]
impl GatheredLedger {
    #[handles(Deposited)]
    async fn deposited(
        &mut self,
        conn: &mut FakeConn,
        events: &[Envelope<Deposited>],
    ) -> Result<(), String> {
        self.calls.lock().unwrap().push(("deposited", events.len()));
        for event in events {
            conn.balances.push((event.aggregate_id(), event.amount));
        }
        match events.iter().find(|e| e.amount == 13) {
            Some(_) => Err("refusing 13".into()),
            None => Ok(()),
        }
    }

    #[handles(Withdrawn)]
    async fn withdrawn(&mut self, conn: &mut FakeConn, events: &[Envelope<Withdrawn>]) {
        self.calls.lock().unwrap().push(("withdrawn", events.len()));
        for event in events {
            conn.balances.push((event.aggregate_id(), -event.amount));
        }
    }
}

fn gathered_runner(
    db: &Arc<FakeDb>,
    ledger: GatheredLedger,
) -> TransactionalRunner<GatheredLedger, FakeDb> {
    TransactionalRunner::new(ledger, db.clone())
        .retry_policy(NoRetryPolicy)
        .event_order(EventOrder::PerAggregate)
}

#[tokio::test]
async fn per_aggregate_order_gathers_each_type_of_a_batch_in_one_call() {
    let db = Arc::new(FakeDb::default());
    let accounts: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let events = positioned(
        accounts
            .iter()
            .flat_map(|&a| [deposit(a, 10), common::withdraw(a, 3)])
            .collect(),
        1,
    );
    let ledger = GatheredLedger::default();
    let calls = ledger.calls.clone();
    let outcome = gathered_runner(&db, ledger)
        .handle_batch(&events)
        .await
        .unwrap();
    assert_eq!((outcome.applied, outcome.checkpoint), (6, Some(6)));
    assert_eq!(*calls.lock().unwrap(), [("deposited", 3), ("withdrawn", 3)]);
    assert_eq!(db.begins.load(Ordering::SeqCst), 1);
    for account in accounts {
        assert_eq!(db.balances()[&account], 7);
    }
}

/// A batch that starts with the second type (its aggregate's first event was in the previous
/// batch, as concurrent appends interleave) is still gathered: the types run in the order
/// that keeps each aggregate's events in order, not the order they first appear.
#[tokio::test]
async fn per_aggregate_order_runs_the_types_in_the_order_the_aggregates_need() {
    let db = Arc::new(FakeDb::default());
    let (early, a, b) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let events = positioned(
        vec![
            deposit(early, 10),
            // The second batch starts here.
            common::withdraw(early, 1),
            deposit(a, 10),
            deposit(b, 20),
            common::withdraw(b, 2),
            common::withdraw(a, 3),
        ],
        1,
    );
    let ledger = GatheredLedger::default();
    let calls = ledger.calls.clone();
    let mut runner = gathered_runner(&db, ledger);
    runner.handle_batch(&events[..1]).await.unwrap();
    calls.lock().unwrap().clear();
    let outcome = runner.handle_batch(&events[1..]).await.unwrap();
    assert_eq!((outcome.applied, outcome.checkpoint), (5, Some(6)));
    // Every deposit before every withdrawal: `a` and `b` need it, `early` does not mind.
    assert_eq!(*calls.lock().unwrap(), [("deposited", 2), ("withdrawn", 3)]);
    assert_eq!(db.begins.load(Ordering::SeqCst), 2);
    assert_eq!(db.balances()[&early], 9);
    assert_eq!(db.balances()[&a], 7);
    assert_eq!(db.balances()[&b], 18);
}

/// An aggregate whose events of two types interleave keeps its order: the batch runs in log
/// order (runs of consecutive events only).
#[tokio::test]
async fn per_aggregate_order_never_reorders_one_aggregates_events() {
    let db = Arc::new(FakeDb::default());
    let account = Uuid::new_v4();
    let events = positioned(
        vec![
            deposit(account, 10),
            common::withdraw(account, 3),
            deposit(account, 5),
        ],
        1,
    );
    let ledger = GatheredLedger::default();
    let calls = ledger.calls.clone();
    gathered_runner(&db, ledger)
        .handle_batch(&events)
        .await
        .unwrap();
    assert_eq!(
        *calls.lock().unwrap(),
        [("deposited", 1), ("withdrawn", 1), ("deposited", 1)]
    );
    assert_eq!(db.balances()[&account], 12);
    // Seen before any transaction was opened: the batch costs one, as in log order.
    assert_eq!(db.begins.load(Ordering::SeqCst), 1);
}

/// A failing gathered call rolls back; the batch runs again in log order, where the failing
/// event alone is dead-lettered.
#[tokio::test]
async fn a_failure_in_a_gathered_batch_is_isolated_in_log_order() {
    let db = Arc::new(FakeDb::default());
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let events = positioned(
        vec![
            deposit(a, 10),
            common::withdraw(a, 3),
            deposit(b, 13),
            common::withdraw(b, 4),
        ],
        1,
    );
    let outcome = gathered_runner(&db, GatheredLedger::default())
        .handle_batch(&events)
        .await
        .unwrap();
    assert_eq!((outcome.applied, outcome.dead_lettered.len()), (3, 1));
    assert_eq!(db.balances()[&a], 7);
    assert_eq!(db.balances()[&b], -4);
    let dead = db
        .dead_letters
        .get_failed_events(Default::default())
        .await
        .unwrap();
    assert_eq!(dead[0].position, Some(3));
}

/// The crash-at-every-step suite for a gathered batch that fails and runs again in log order.
#[tokio::test]
async fn a_failure_at_any_step_of_a_gathered_batch_then_a_restart_gives_the_uninterrupted_result() {
    let accounts: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    let events = positioned(
        accounts
            .iter()
            .enumerate()
            .flat_map(|(n, &a)| {
                let amount = if n == 2 { 13 } else { 20 + n as i64 };
                [deposit(a, amount), common::withdraw(a, 3)]
            })
            .collect(),
        1,
    );
    let clean = Arc::new(FakeDb::default());
    gathered_runner(&clean, GatheredLedger::default())
        .handle_batch(&events)
        .await
        .unwrap();
    let expected = clean.balances();
    let steps = clean.seen.lock().unwrap().clone();
    for fault in [
        Fault::Begin,
        Fault::Lock,
        Fault::WriteCheckpoint,
        Fault::Commit,
    ] {
        let occurrences = steps.get(&format!("{fault:?}")).copied().unwrap_or(0);
        for occurrence in 1..=occurrences {
            let db = Arc::new(FakeDb::default());
            *db.fault.lock().unwrap() = Some((fault, occurrence));
            let first = gathered_runner(&db, GatheredLedger::default())
                .handle_batch(&events)
                .await;
            *db.fault.lock().unwrap() = None;
            gathered_runner(&db, GatheredLedger::default())
                .handle_batch(&events)
                .await
                .unwrap();
            assert_eq!(
                db.balances(),
                expected,
                "fault {fault:?} #{occurrence}, first run: {first:?}"
            );
            let dead = db
                .dead_letters
                .get_failed_events(Default::default())
                .await
                .unwrap();
            assert_eq!(dead.len(), 1, "fault {fault:?} #{occurrence}: {dead:#?}");
        }
    }
}
