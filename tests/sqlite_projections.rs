//! The transactional runner on SQLite files: crash safety at every step of a batch, rollback
//! of a failing event's statements (including a statement that ends SQLite's transaction
//! itself), retries in fresh transactions, the stop policy, bad rows from the store, reset and
//! rebuild, one transaction per batch, live tailing, and two runners of one projection on one
//! file applying every event once.
//!
//! Run with `cargo test -p projections-tests --features sqlite --test sqlite_projections`.
//! Every test works on database files of its own under the temporary directory, removed when
//! it ends, and fails rather than hangs (120 s bound) when the runner deadlocks.
//!
//! Faults are injected by [`Probe`] (`common::probe`, shared with the PostgreSQL tests): it
//! delegates every method to [`SqliteTransactionUnit`] and can, at a chosen occurrence of a
//! chosen step, fail or hang forever. A hang is a crash: the test waits until the step is
//! reached, drops the runner's future and closes the crashed runner's own pool (closing a
//! connection rolls back its open transaction and releases the write lock), then a new runner
//! on a new pool over the same file carries on, as a restarted process would.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::positioned;
use common::probe::{Action, Faults, Point};
use common::sqlite::TempFile;
use projections::coordinator::{CoordinatorHandle, ProjectionCoordinator};
use projections::dlq::DLQFilter;
use projections::runner::RunnerError;
use projections::sqlite::{
    SqliteCheckpointRepository, SqliteDLQRepository, SqliteEventStore, SqlitePool,
};
use projections::transactional::{SqliteTransactionUnit, TransactionalRunner};
use projections::{
    AnyEvent, CheckpointRepository, DLQRepository, DLQStatus, Envelope, Event, EventStore,
    ExpectedVersion, ExponentialBackoffRetryPolicy, FailurePolicy, NoRetryPolicy,
    ProjectionRegistry, RetryConfig, SqliteConnection, StorageError, projection,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

const ORDER_PLACED: &str = "sqp.order_placed";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "sqp.order_placed", aggregate = "Order")]
struct OrderPlaced {
    order_no: i64,
    day: String,
    amount: i64,
    customer: String,
}

/// An event the projection does not subscribe to: the checkpoint passes over it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "sqp.order_audited", aggregate = "Order")]
struct OrderAudited {
    order_no: i64,
}

/// An order of `amount == POISON` always fails its handler, after the first statement.
const POISON: i64 = 13;

fn order(order_no: i64, day: &str, amount: i64) -> AnyEvent {
    Envelope::new(
        Uuid::new_v4(),
        OrderPlaced {
            order_no,
            day: day.to_owned(),
            amount,
            customer: format!("customer {order_no}"),
        },
    )
    .into()
}

fn audit(order_no: i64) -> AnyEvent {
    Envelope::new(Uuid::new_v4(), OrderAudited { order_no }).into()
}

// ---------------------------------------------------------------------------------------------
// The projection: two statements per event
// ---------------------------------------------------------------------------------------------

const PROJECTION: &str = "sq_orders";

/// The read model. No unique key on `order_no`: an order applied twice shows up as two rows.
/// `sqp_guard` holds one row, for the statements that fail on purpose.
const CREATE_READ_MODEL: &str = "
    CREATE TABLE sqp_orders (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        order_no INTEGER NOT NULL,
        day      TEXT    NOT NULL,
        amount   INTEGER NOT NULL,
        customer TEXT    NOT NULL
    );
    CREATE TABLE sqp_daily_totals (
        day    TEXT    PRIMARY KEY,
        total  INTEGER NOT NULL,
        orders INTEGER NOT NULL
    );
    CREATE TABLE sqp_guard (id INTEGER PRIMARY KEY);
    INSERT INTO sqp_guard (id) VALUES (1);
    CREATE TABLE sqp_applications (
        event_id     TEXT    PRIMARY KEY,
        position     INTEGER NOT NULL,
        runner       TEXT    NOT NULL,
        applications INTEGER NOT NULL
    );";

const INSERT_ORDER: &str =
    "INSERT INTO sqp_orders (order_no, day, amount, customer) VALUES (?1, ?2, ?3, ?4)";
const UPSERT_TOTAL: &str = "INSERT INTO sqp_daily_totals (day, total, orders) VALUES (?1, ?2, 1)
     ON CONFLICT (day) DO UPDATE SET total = total + excluded.total, orders = orders + 1";
const SELECT_ORDERS: &str =
    "SELECT order_no, day, amount, customer FROM sqp_orders ORDER BY order_no, id";
const SELECT_TOTALS: &str = "SELECT day, total, orders FROM sqp_daily_totals ORDER BY day";

/// A statement that SQLite refuses, in one of the two ways it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerError {
    /// A constraint violation that undoes this statement only (SQLite's default, `ABORT`):
    /// the transaction stays open with the earlier statements in it.
    Statement,
    /// A constraint violation under `OR ROLLBACK`: SQLite rolls the whole transaction back
    /// at once and leaves the connection outside any transaction, as it also does on some
    /// I/O and memory errors, or a trigger's `RAISE(ROLLBACK, ...)`.
    Transaction,
}

impl ServerError {
    fn sql(self) -> &'static str {
        match self {
            Self::Statement => "INSERT INTO sqp_guard (id) VALUES (1)",
            Self::Transaction => "INSERT OR ROLLBACK INTO sqp_guard (id) VALUES (1)",
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum OrderError {
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("order {0} is poison")]
    Poison(i64),
    #[error("reset refused")]
    ResetRefused,
    #[error(transparent)]
    Injected(#[from] StorageError),
}

/// Orders and daily totals: each event inserts an order row, then upserts its day's total.
struct Orders {
    faults: Arc<Faults>,
    /// Handler calls per order number.
    calls: Arc<Mutex<BTreeMap<i64, u32>>>,
    /// Per order number: the statements SQLite refuses that its next calls run, one per call,
    /// after the first statement.
    server_errors: HashMap<i64, VecDeque<ServerError>>,
    /// Makes the reset fail after its first statement.
    fail_reset: bool,
    /// Handlers ignore the errors of the refused statements (a bug in a handler).
    swallow: bool,
}

impl Orders {
    fn new(faults: Arc<Faults>) -> Self {
        Self {
            faults,
            calls: Arc::default(),
            server_errors: HashMap::new(),
            fail_reset: false,
            swallow: false,
        }
    }
}

#[projection(name = "sq_orders")]
impl Orders {
    #[handles(OrderPlaced)]
    async fn placed(
        &mut self,
        conn: &mut SqliteConnection,
        event: &Envelope<OrderPlaced>,
    ) -> Result<(), OrderError> {
        *self
            .calls
            .lock()
            .unwrap()
            .entry(event.order_no)
            .or_default() += 1;
        sqlx::query(INSERT_ORDER)
            .bind(event.order_no)
            .bind(event.day.as_str())
            .bind(event.amount)
            .bind(event.customer.as_str())
            .execute(&mut *conn)
            .await?;
        if let Some(error) = self
            .server_errors
            .get_mut(&event.order_no)
            .and_then(VecDeque::pop_front)
        {
            let refused = sqlx::query(error.sql()).execute(&mut *conn).await;
            if !self.swallow {
                refused?;
            }
        }
        self.faults.trip(Point::BetweenStatements).await?;
        if event.amount == POISON {
            return Err(OrderError::Poison(event.order_no));
        }
        sqlx::query(UPSERT_TOTAL)
            .bind(event.day.as_str())
            .bind(event.amount)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    #[reset]
    async fn clear(&mut self, conn: &mut SqliteConnection) -> Result<(), OrderError> {
        sqlx::query("DELETE FROM sqp_orders")
            .execute(&mut *conn)
            .await?;
        if self.fail_reset {
            return Err(OrderError::ResetRefused);
        }
        sqlx::query("DELETE FROM sqp_daily_totals")
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

type Probe = common::probe::Probe<SqliteTransactionUnit>;
type Runner = TransactionalRunner<Orders, Probe>;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// Fails instead of hanging.
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 120 s"))
}

/// One database file with the crate's tables and the read model's, and the test's own pool on
/// it. The file is removed when the value is dropped.
struct TestDb {
    pool: SqlitePool,
    file: TempFile,
}

impl TestDb {
    async fn new() -> Self {
        let file = TempFile::new("sqlite-projections");
        let pool = file.open().await;
        sqlx::raw_sql(CREATE_READ_MODEL)
            .execute(&pool)
            .await
            .unwrap();
        Self { pool, file }
    }

    /// A pool of its own on the same file: another process.
    async fn process(&self) -> SqlitePool {
        self.file.open().await
    }

    fn unit(pool: &SqlitePool, faults: &Arc<Faults>) -> Arc<Probe> {
        Arc::new(Probe::new(
            SqliteTransactionUnit::new(pool.clone()),
            faults.clone(),
        ))
    }

    /// A runner on `pool` (a process of its own when the pool is its own).
    fn runner_on(pool: &SqlitePool, faults: &Arc<Faults>) -> Runner {
        TransactionalRunner::new(Orders::new(faults.clone()), Self::unit(pool, faults))
            .retry_policy(NoRetryPolicy)
    }

    fn runner(&self, faults: &Arc<Faults>) -> Runner {
        Self::runner_on(&self.pool, faults)
    }

    fn store(&self) -> SqliteEventStore {
        SqliteEventStore::new(self.pool.clone())
    }

    fn checkpoints(&self) -> SqliteCheckpointRepository {
        SqliteCheckpointRepository::new(self.pool.clone())
    }

    fn dead_letters(&self) -> SqliteDLQRepository {
        SqliteDLQRepository::new(self.pool.clone())
    }

    async fn orders(&self) -> Vec<(i64, String, i64, String)> {
        sqlx::query_as(SELECT_ORDERS)
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }

    async fn order_numbers(&self) -> Vec<i64> {
        self.orders().await.into_iter().map(|o| o.0).collect()
    }

    async fn totals(&self) -> Vec<(String, i64, i64)> {
        sqlx::query_as(SELECT_TOTALS)
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }

    async fn checkpoint(&self) -> Option<Checkpoint> {
        self.checkpoints()
            .get_checkpoint_data(PROJECTION)
            .await
            .unwrap()
            .map(|c| Checkpoint {
                position: c.position,
                last_event_id: c.last_event_id,
                last_event_type: c.last_event_type,
                events_processed: c.events_processed,
            })
    }

    async fn dead(&self) -> Vec<DeadLetter> {
        self.dead_letters()
            .get_failed_events(DLQFilter::all())
            .await
            .unwrap()
            .into_iter()
            .map(|e| DeadLetter {
                event_id: e.event_id,
                position: e.position,
                projection: e.projection_name,
                event_type: e.event_type,
                error_message: e.error_message,
                attempts: e.attempts,
                status: e.status,
            })
            .collect()
    }

    async fn snapshot(&self) -> Snapshot {
        Snapshot {
            orders: self.orders().await,
            totals: self.totals().await,
            checkpoint: self.checkpoint().await,
            dead_letters: self.dead().await,
        }
    }

    /// Closes the test's pool; the file goes when `self` is dropped.
    async fn close(self) {
        within("closing the pool", self.pool.close()).await;
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Checkpoint {
    position: u64,
    last_event_id: Option<Uuid>,
    last_event_type: Option<String>,
    events_processed: u64,
}

#[derive(Debug, Clone, PartialEq)]
struct DeadLetter {
    event_id: Uuid,
    position: Option<u64>,
    projection: String,
    event_type: String,
    error_message: String,
    attempts: u32,
    status: DLQStatus,
}

/// Everything a run leaves behind, minus ids and times.
#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    orders: Vec<(i64, String, i64, String)>,
    totals: Vec<(String, i64, i64)>,
    checkpoint: Option<Checkpoint>,
    dead_letters: Vec<DeadLetter>,
}

fn tiny_backoff(max_retries: u32) -> ExponentialBackoffRetryPolicy {
    ExponentialBackoffRetryPolicy::new(
        RetryConfig::new(
            max_retries,
            Duration::from_millis(1),
            Duration::from_millis(1),
            2.0,
            0.0,
        )
        .unwrap(),
    )
}

async fn append(store: &SqliteEventStore, event: AnyEvent) -> u64 {
    let aggregate = event.metadata().aggregate_id;
    store
        .append(aggregate, ExpectedVersion::NoStream, vec![event])
        .await
        .unwrap()
        .last_position
}

// ---------------------------------------------------------------------------------------------
// 1. Crash safety
// ---------------------------------------------------------------------------------------------

/// Two batches; the second holds a poison order (6) between good ones, and each batch an
/// event the projection passes over.
fn crash_stream() -> Vec<Vec<AnyEvent>> {
    let events = positioned(
        vec![
            order(1, "d1", 10),
            order(2, "d1", 20),
            audit(1),
            order(3, "d2", 30),
            order(4, "d2", 40),
            order(5, "d1", 50),
            order(6, "d1", POISON),
            order(7, "d2", 70),
            audit(2),
            order(8, "d3", 80),
        ],
        1,
    );
    vec![events[..4].to_vec(), events[4..].to_vec()]
}

fn crash_runner(pool: &SqlitePool, faults: &Arc<Faults>) -> Runner {
    // One retry, so that a retry's own transaction is crossed too.
    TestDb::runner_on(pool, faults).retry_policy(tiny_backoff(1))
}

/// Runs `batches` in a process of its own (its own pool on the file) until the planned crash;
/// then the process dies: its future is dropped and its connections closed, which rolls back
/// whatever it had open and releases the write lock. Returns whether the crash happened.
async fn run_until_crash(db: &TestDb, faults: &Arc<Faults>, batches: &[Vec<AnyEvent>]) -> bool {
    let pool = db.process().await;
    let crashed = {
        let mut runner = crash_runner(&pool, faults);
        let work = async {
            for batch in batches {
                runner
                    .handle_batch(batch)
                    .await
                    .expect("no error before the crash");
            }
        };
        tokio::select! {
            () = faults.crashed.notified() => true,
            () = work => false,
        }
    };
    within("closing the crashed process's connections", pool.close()).await;
    crashed
}

async fn run_to_completion(pool: &SqlitePool, faults: &Arc<Faults>, batches: &[Vec<AnyEvent>]) {
    let mut runner = crash_runner(pool, faults);
    for batch in batches {
        runner.handle_batch(batch).await.unwrap();
    }
}

/// For each step of the work (before the handler, between its two statements, before the
/// checkpoint write, before and after the commit, before the dead letter) and each of its
/// occurrences (the first batch, the later batch, the re-apply after the failure, the retry,
/// the dead-letter transaction, the batch's rest), a crash there followed by a restart (a new
/// runner on a new pool over the same file, the same events) gives exactly the read model,
/// checkpoint and dead letters of an uninterrupted run: nothing applied twice, nothing lost.
#[tokio::test]
async fn a_crash_at_any_step_then_a_restart_gives_the_uninterrupted_result() {
    let batches = crash_stream();
    let all: Vec<&AnyEvent> = batches.iter().flatten().collect();

    // The uninterrupted run, on a file of its own; its counts say how often each step occurs.
    let clean = TestDb::new().await;
    let counting = Faults::none();
    within(
        "the uninterrupted run",
        run_to_completion(&clean.pool, &counting, &batches),
    )
    .await;
    let expected = clean.snapshot().await;
    let d = |s: &str| s.to_owned();
    let customer = |n: i64| format!("customer {n}");
    assert_eq!(
        expected.orders,
        [
            (1, "d1", 10),
            (2, "d1", 20),
            (3, "d2", 30),
            (4, "d2", 40),
            (5, "d1", 50)
        ]
        .into_iter()
        .chain([(7, "d2", 70), (8, "d3", 80)])
        .map(|(n, day, amount)| (n, d(day), amount, customer(n)))
        .collect::<Vec<_>>()
    );
    assert_eq!(
        expected.totals,
        [(d("d1"), 80, 3), (d("d2"), 140, 3), (d("d3"), 80, 1)]
    );
    assert_eq!(
        expected.checkpoint,
        Some(Checkpoint {
            position: 10,
            last_event_id: Some(all[9].event_id()),
            last_event_type: Some(ORDER_PLACED.to_owned()),
            events_processed: 7,
        })
    );
    assert_eq!(expected.dead_letters.len(), 1);
    let dead = &expected.dead_letters[0];
    assert_eq!(
        (dead.event_id, dead.position, dead.attempts, dead.status),
        (all[6].event_id(), Some(7), 2, DLQStatus::Failed)
    );
    assert!(dead.error_message.contains("order 6 is poison"), "{dead:?}");
    clean.close().await;

    // Transactions: batch 1; batch 2 up to the poison (rolled back); the re-apply of 4 and 5;
    // the retry of 6 (rolled back); the dead letter; batch 2's rest.
    let counts = counting.counts();
    assert_eq!(counts[&Point::AfterBegin], 6, "{counts:?}");
    assert_eq!(counts[&Point::AfterCommit], 4, "{counts:?}");
    assert_eq!(counts[&Point::Rollback], 2, "{counts:?}");
    assert_eq!(counts[&Point::BeforeDeadLetter], 1, "{counts:?}");
    // Handler calls: 3 + 3 (up to the poison) + 2 (re-apply) + 1 (retry) + 2.
    assert_eq!(counts[&Point::BetweenStatements], 11, "{counts:?}");

    let mut cases = 0;
    for point in [
        Point::AfterBegin,
        Point::AfterLock,
        Point::BetweenStatements,
        Point::BeforeWriteCheckpoint,
        Point::BeforeDeadLetter,
        Point::BeforeCommit,
        Point::AfterCommit,
    ] {
        for occurrence in 1..=counts[&point] {
            let db = TestDb::new().await;
            let faults = Faults::at(point, occurrence, Action::Crash);
            let crashed = within(
                &format!("the run up to the crash at {point:?} #{occurrence}"),
                run_until_crash(&db, &faults, &batches),
            )
            .await;
            assert!(crashed, "{point:?} #{occurrence} was never reached");

            // A new process: a new runner on a new pool over the same file runs the same
            // events.
            let restarted = db.process().await;
            within(
                &format!("the restart after the crash at {point:?} #{occurrence}"),
                run_to_completion(&restarted, &Faults::none(), &batches),
            )
            .await;
            restarted.close().await;
            let after = db.snapshot().await;
            assert_eq!(after, expected, "crash at {point:?} #{occurrence}");
            db.close().await;
            cases += 1;
        }
    }
    assert_eq!(cases, 6 + 6 + 11 + 4 + 1 + 4 + 4);
}

// ---------------------------------------------------------------------------------------------
// 2. A handler error rolls back its event's statements; dead letter and checkpoint together
// ---------------------------------------------------------------------------------------------

/// Order 3 inserts its order row and then fails. Its row leaves no trace; orders 1 and 2, run
/// once in the rolled-back transaction and again in a fresh one, are committed exactly once.
/// The dead letter and the checkpoint move past order 3 commit together: when that commit
/// fails, neither exists; a restart writes both.
#[tokio::test]
async fn a_handler_error_rolls_back_every_statement_of_its_event() {
    within("a_handler_error_rolls_back_every_statement_of_its_event", async {
        let db = TestDb::new().await;
        let events = positioned(
            vec![
                order(1, "d1", 10),
                order(2, "d2", 20),
                order(3, "d1", POISON),
                order(4, "d1", 40),
            ],
            1,
        );

        let faults = Faults::at(Point::DeadLetterCommit, 1, Action::Fail);
        let mut runner = db.runner(&faults);
        let calls = runner.projection().calls.clone();
        let error = runner.handle_batch(&events).await.unwrap_err();
        assert!(
            matches!(&error, RunnerError::DeadLetter { event_id, .. } if *event_id == events[2].event_id()),
            "{error:?}"
        );
        // Order 3's first statement ran (and orders 1 and 2 ran twice) ...
        assert_eq!(
            *calls.lock().unwrap(),
            BTreeMap::from([(1, 2), (2, 2), (3, 1)])
        );
        // ... and the dead letter was written in the transaction whose commit failed.
        assert_eq!(faults.count(Point::BeforeDeadLetter), 1);
        assert_eq!(faults.count(Point::DeadLetterCommit), 1);

        // No trace of order 3; orders 1 and 2 once; no dead letter and the checkpoint before 3.
        assert_eq!(db.order_numbers().await, [1, 2]);
        assert_eq!(
            db.totals().await,
            [("d1".to_owned(), 10, 1), ("d2".to_owned(), 20, 1)]
        );
        assert!(db.dead().await.is_empty());
        let checkpoint = db.checkpoint().await.unwrap();
        assert_eq!((checkpoint.position, checkpoint.events_processed), (2, 2));
        drop(runner);

        // A restart writes the dead letter and moves the checkpoint past it, then goes on.
        let mut runner = db.runner(&Faults::none());
        let outcome = runner.handle_batch(&events).await.unwrap();
        assert_eq!(outcome.applied, 1);
        assert_eq!(outcome.dead_lettered.len(), 1);
        assert_eq!(db.order_numbers().await, [1, 2, 4]);
        assert_eq!(
            db.totals().await,
            [("d1".to_owned(), 50, 2), ("d2".to_owned(), 20, 1)]
        );
        let dead = db.dead().await;
        assert_eq!(dead.len(), 1);
        assert_eq!(
            (dead[0].event_id, dead[0].position, dead[0].attempts),
            (events[2].event_id(), Some(3), 1)
        );
        assert_eq!(dead[0].projection, PROJECTION);
        assert_eq!(dead[0].event_type, ORDER_PLACED);
        assert!(dead[0].error_message.contains("order 3 is poison"));
        let checkpoint = db.checkpoint().await.unwrap();
        assert_eq!((checkpoint.position, checkpoint.events_processed), (4, 3));
        db.close().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 3. A retry is not poisoned by the attempt before it
// ---------------------------------------------------------------------------------------------

/// Order 2's first attempt inserts its row and then runs a statement under `OR ROLLBACK` that
/// SQLite refuses, which ends the transaction at once; its second attempt runs a statement
/// SQLite refuses within the transaction; the third, in a fresh transaction, succeeds. Order 2
/// is applied exactly once, nothing is dead-lettered, and the pool's connections are fit for
/// the batches after it: the next batch commits, and so does an append through the same pool.
#[tokio::test]
async fn a_retry_is_not_poisoned_by_the_failed_attempt_before_it() {
    within(
        "a_retry_is_not_poisoned_by_the_failed_attempt_before_it",
        async {
            let db = TestDb::new().await;
            let events = positioned(
                vec![
                    order(1, "d1", 10),
                    order(2, "d1", 20),
                    order(3, "d2", 30),
                    order(4, "d2", 40),
                ],
                1,
            );
            let faults = Faults::none();
            // A pool built by hand, without the guard of `sqlite::open`'s pool: the unit's
            // rollback alone must leave its connections fit.
            let pool = db.file.connect().await;
            let mut runner = TestDb::runner_on(&pool, &faults).retry_policy(tiny_backoff(3));
            runner.projection_mut().server_errors.insert(
                2,
                VecDeque::from([ServerError::Transaction, ServerError::Statement]),
            );
            let calls = runner.projection().calls.clone();

            let outcome = runner.handle_batch(&events[..3]).await.unwrap();
            assert_eq!(outcome.applied, 3);
            assert!(outcome.dead_lettered.is_empty());
            // Order 2: the batch's attempt, a retry that failed, a retry that succeeded.
            assert_eq!(calls.lock().unwrap()[&2], 3);
            assert_eq!(faults.count(Point::Rollback), 2);

            assert_eq!(db.order_numbers().await, [1, 2, 3]);
            assert_eq!(
                db.totals().await,
                [("d1".to_owned(), 30, 2), ("d2".to_owned(), 30, 1)]
            );
            assert!(db.dead().await.is_empty());
            let checkpoint = db.checkpoint().await.unwrap();
            assert_eq!((checkpoint.position, checkpoint.events_processed), (3, 3));

            // The connections are back in the pool in a state fit for the next transaction.
            let outcome = runner.handle_batch(&events[3..]).await.unwrap();
            assert_eq!(outcome.applied, 1);
            assert_eq!(db.order_numbers().await, [1, 2, 3, 4]);
            let store = SqliteEventStore::new(pool.clone());
            for n in 5..10 {
                append(&store, order(n, "d3", n)).await;
            }
            pool.close().await;
            db.close().await;
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// 4. The stop policy
// ---------------------------------------------------------------------------------------------

/// Under `FailurePolicy::Stop`, the events before the poison are committed, the checkpoint
/// stays before it, nothing is dead-lettered, and nothing after it is applied, not by this
/// runner (which refuses further batches) nor by a restarted one.
/// A handler that ignores the error of a statement under `OR ROLLBACK`: SQLite has ended the
/// batch's transaction, so order 1's row and order 2's first row are gone, and what runs after
/// (order 2's total, order 3) commits on its own, outside any transaction. The checkpoint must
/// not move past what was undone: the batch is refused (an infrastructure failure, nothing
/// dead-lettered) and, tried again, loses no order. Order 3, which ran outside the
/// transaction, is applied twice: the documented cost of a handler that hides a statement's
/// error (`SqliteTransactionUnit`).
#[tokio::test]
async fn a_transaction_sqlite_ended_under_a_handler_never_moves_the_checkpoint() {
    within(
        "a_transaction_sqlite_ended_under_a_handler_never_moves_the_checkpoint",
        async {
            let db = TestDb::new().await;
            let events = positioned(
                vec![order(1, "d1", 10), order(2, "d1", 20), order(3, "d2", 30)],
                1,
            );
            let faults = Faults::none();
            let mut runner = db.runner(&faults).retry_policy(tiny_backoff(3));
            runner.projection_mut().swallow = true;
            runner
                .projection_mut()
                .server_errors
                .insert(2, VecDeque::from([ServerError::Transaction]));

            let error = runner.handle_batch(&events).await.err().unwrap();
            assert_eq!(
                error.kind(),
                projections::FailureKind::Infrastructure,
                "{error}"
            );
            assert!(
                error.to_string().contains("ended the batch's transaction"),
                "{error}"
            );
            assert_eq!(db.checkpoint().await.map(|c| c.position), None);
            assert!(db.dead().await.is_empty());

            // Order 3 ran outside the transaction and stayed.
            assert_eq!(db.order_numbers().await, [3]);
            // The statement no longer fails: the batch, tried again, applies every order.
            let outcome = runner.handle_batch(&events).await.unwrap();
            assert_eq!(outcome.applied, 3);
            assert_eq!(db.order_numbers().await, [1, 2, 3, 3]);
            assert_eq!(db.checkpoint().await.map(|c| c.position), Some(3));
            db.close().await;
        },
    )
    .await;
}

#[tokio::test]
async fn the_stop_policy_keeps_the_checkpoint_before_the_failing_event() {
    within(
        "the_stop_policy_keeps_the_checkpoint_before_the_failing_event",
        async {
            let db = TestDb::new().await;
            let events = positioned(
                vec![
                    order(1, "d1", 10),
                    order(2, "d1", 20),
                    order(3, "d1", POISON),
                    order(4, "d1", 40),
                ],
                1,
            );
            let faults = Faults::none();
            let mut runner = db.runner(&faults).on_failure(FailurePolicy::Stop);

            let error = runner.handle_batch(&events).await.unwrap_err();
            let RunnerError::Stopped { at, .. } = &error else {
                panic!("expected Stopped, got {error:?}");
            };
            assert_eq!(
                (at.position, at.event_id),
                (Some(3), Some(events[2].event_id()))
            );
            assert!(at.error.contains("order 3 is poison"), "{at:?}");
            assert!(runner.stopped().is_some());

            let expect_state = || async {
                assert_eq!(db.order_numbers().await, [1, 2]);
                assert_eq!(db.totals().await, [("d1".to_owned(), 30, 2)]);
                assert!(db.dead().await.is_empty());
                let checkpoint = db.checkpoint().await.unwrap();
                assert_eq!((checkpoint.position, checkpoint.events_processed), (2, 2));
            };
            expect_state().await;

            // The stopped runner touches nothing.
            let begins = faults.count(Point::AfterBegin);
            let again = runner.handle_batch(&events[3..]).await.unwrap_err();
            assert!(matches!(again, RunnerError::Stopped { .. }), "{again:?}");
            assert_eq!(faults.count(Point::AfterBegin), begins);
            expect_state().await;

            // A restarted runner, in another process, stops at the same event.
            let process = db.process().await;
            let mut restarted =
                TestDb::runner_on(&process, &Faults::none()).on_failure(FailurePolicy::Stop);
            let error = restarted.handle_batch(&events).await.unwrap_err();
            assert!(
                matches!(&error, RunnerError::Stopped { at, .. } if at.position == Some(3)),
                "{error:?}"
            );
            process.close().await;
            expect_state().await;
            db.close().await;
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// 5. Bad input from the store
// ---------------------------------------------------------------------------------------------

/// Inserts one event row by hand, at the next position, as a writer other than the store
/// would. Every value is bound.
async fn insert_raw_event(db: &TestDb, event_type: &str, payload: &str) -> (u64, Uuid) {
    let event_id = Uuid::new_v4();
    let position: i64 = sqlx::query_scalar(
        "INSERT INTO projection_events (
             position, event_id, aggregate_id, aggregate_type, aggregate_version, event_type,
             event_version, payload, metadata, correlation_id, occurred_at, stored_at
         )
         SELECT coalesce(max(position), 0) + 1, ?1, ?2, 'Order', 1, ?3, 1, ?4, '{}', ?5, 0, 0
         FROM projection_events
         RETURNING position",
    )
    .bind(event_id.to_string())
    .bind(Uuid::new_v4().to_string())
    .bind(event_type)
    .bind(payload)
    .bind(Uuid::new_v4().to_string())
    .fetch_one(&db.pool)
    .await
    .unwrap();
    (u64::try_from(position).unwrap(), event_id)
}

/// Rows of an unknown type and with a payload that does not decode reach the dead-letter
/// queue with the decode error, the checkpoint passes them, and the good events around them
/// are applied. Values are bound: quotes in them are stored verbatim.
#[tokio::test]
async fn undecodable_stored_events_are_dead_lettered_and_passed() {
    within(
        "undecodable_stored_events_are_dead_lettered_and_passed",
        async {
            let db = TestDb::new().await;
            let store = db.store();
            append(&store, order(1, "d1", 10)).await;
            append(&store, order(2, "d1", 20)).await;
            let unknown_type = "sqp.never_registered'\"); DROP TABLE sqp_orders; --";
            let (unknown_at, unknown_id) = insert_raw_event(&db, unknown_type, "{\"x\": 1}").await;
            let (garbled_at, garbled_id) = insert_raw_event(
                &db,
                ORDER_PLACED,
                "{\"order_no\": \"seven\", \"day\": \"d1\"}",
            )
            .await;
            let quoted = "O'Brien \"Bob\" '); DELETE FROM sqp_orders; -- \\ ?1";
            let last = append(
                &store,
                Envelope::new(
                    Uuid::new_v4(),
                    OrderPlaced {
                        order_no: 3,
                        day: "d2".to_owned(),
                        amount: 30,
                        customer: quoted.to_owned(),
                    },
                )
                .into(),
            )
            .await;
            assert_eq!((unknown_at, garbled_at, last), (3, 4, 5));

            let mut registry = ProjectionRegistry::new();
            registry.register(db.runner(&Faults::none())).unwrap();
            let mut coordinator = ProjectionCoordinator::new(registry, Arc::new(store));
            let report = coordinator.catch_up_all().await.unwrap();
            assert!(report.failures().next().is_none(), "{report:?}");

            let orders = db.orders().await;
            assert_eq!(orders.iter().map(|o| o.0).collect::<Vec<_>>(), [1, 2, 3]);
            assert_eq!(orders[2].3, quoted);
            assert_eq!(
                db.totals().await,
                [("d1".to_owned(), 30, 2), ("d2".to_owned(), 30, 1)]
            );

            let dead = db.dead().await;
            assert_eq!(dead.len(), 2, "{dead:?}");
            let unknown = dead.iter().find(|d| d.event_id == unknown_id).unwrap();
            assert_eq!(unknown.position, Some(unknown_at));
            assert_eq!(unknown.event_type, unknown_type);
            assert!(
                unknown.error_message.contains("does not decode")
                    && unknown.error_message.contains("unknown event type"),
                "{unknown:?}"
            );
            let garbled = dead.iter().find(|d| d.event_id == garbled_id).unwrap();
            assert_eq!(garbled.position, Some(garbled_at));
            assert_eq!(garbled.event_type, ORDER_PLACED);
            assert!(
                garbled.error_message.contains("does not decode")
                    && garbled
                        .error_message
                        .contains("payload of `sqp.order_placed` does not decode"),
                "{garbled:?}"
            );
            // The whole row is kept for an operator.
            let entry = db
                .dead_letters()
                .get_failed_events(DLQFilter::failed_in(PROJECTION))
                .await
                .unwrap()
                .into_iter()
                .find(|e| e.event_id == unknown_id)
                .unwrap();
            assert_eq!(entry.event_data["payload"], serde_json::json!({ "x": 1 }));

            let checkpoint = db.checkpoint().await.unwrap();
            assert_eq!((checkpoint.position, checkpoint.events_processed), (5, 3));
            drop(coordinator);
            db.close().await;
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// 6. Reset and rebuild
// ---------------------------------------------------------------------------------------------

/// The reset clears both read-model tables and the checkpoint in one transaction: when the
/// projection's reset fails after its first statement, or the commit fails, nothing is
/// cleared; when it commits, everything is. A rebuild through the coordinator then gives the
/// read model and checkpoint of the first run.
#[tokio::test]
async fn reset_is_one_transaction_and_a_rebuild_gives_the_same_read_model() {
    within(
        "reset_is_one_transaction_and_a_rebuild_gives_the_same_read_model",
        async {
            let db = TestDb::new().await;
            let store = db.store();
            let mut last = 0;
            for (n, day, amount) in [(1, "d1", 10), (2, "d2", 20), (3, "d1", 30), (4, "d3", 40)] {
                last = append(&store, order(n, day, amount)).await;
            }
            let faults = Faults::none();
            let mut registry = ProjectionRegistry::new();
            registry.register(db.runner(&faults)).unwrap();
            let mut coordinator = ProjectionCoordinator::new(registry, Arc::new(store));
            assert!(coordinator.catch_up_all().await.unwrap().is_ok());
            let before = db.snapshot().await;
            assert_eq!(before.orders.len(), 4);
            assert_eq!(before.checkpoint.as_ref().unwrap().position, last);

            // The projection's reset fails after deleting the orders: all rolled back.
            let runner = coordinator.registry_mut().runner_mut::<Runner>().unwrap();
            runner.projection_mut().fail_reset = true;
            let error = runner.reset().await.unwrap_err();
            assert!(matches!(error, RunnerError::Reset { .. }), "{error:?}");
            assert_eq!(db.snapshot().await, before);

            // The commit fails: all rolled back.
            runner.projection_mut().fail_reset = false;
            faults.fail_next(Point::ResetCommit);
            let error = runner.reset().await.unwrap_err();
            assert!(matches!(error, RunnerError::Storage { .. }), "{error:?}");
            assert_eq!(db.snapshot().await, before);

            // It commits: both tables and the checkpoint are gone.
            runner.reset().await.unwrap();
            let cleared = db.snapshot().await;
            assert!(cleared.orders.is_empty() && cleared.totals.is_empty());
            assert_eq!(cleared.checkpoint, None);

            // A rebuild gives the same read model and checkpoint.
            coordinator.rebuild_projection(PROJECTION).await.unwrap();
            assert_eq!(db.snapshot().await, before);
            drop(coordinator);
            db.close().await;
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// 7. One transaction per batch
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_batch_of_one_hundred_events_is_one_transaction() {
    within("a_batch_of_one_hundred_events_is_one_transaction", async {
        let db = TestDb::new().await;
        let events = positioned(
            (1..=100)
                // Even amounts: never the poison.
                .map(|n| order(n, if n % 2 == 0 { "even" } else { "odd" }, 2 * n))
                .collect(),
            1,
        );
        let faults = Faults::none();
        let mut runner = db.runner(&faults);
        let outcome = runner.handle_batch(&events).await.unwrap();
        assert_eq!(outcome.applied, 100);
        assert_eq!(outcome.checkpoint, Some(100));

        assert_eq!(faults.count(Point::AfterBegin), 1);
        assert_eq!(faults.count(Point::AfterCommit), 1);
        assert_eq!(faults.count(Point::Rollback), 0);
        assert_eq!(faults.count(Point::BeforeWriteCheckpoint), 1);

        assert_eq!(db.orders().await.len(), 100);
        assert_eq!(
            db.totals().await,
            [("even".to_owned(), 5100, 50), ("odd".to_owned(), 5000, 50)]
        );
        let checkpoint = db.checkpoint().await.unwrap();
        assert_eq!(
            (checkpoint.position, checkpoint.events_processed),
            (100, 100)
        );
        db.close().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 8. Live tailing
// ---------------------------------------------------------------------------------------------

fn start_orders(db: &TestDb, store: &Arc<SqliteEventStore>, poll: Duration) -> CoordinatorHandle {
    let mut registry = ProjectionRegistry::new();
    registry.register(db.runner(&Faults::none())).unwrap();
    ProjectionCoordinator::new(registry, store.clone())
        .poll_interval(poll)
        .start()
        .unwrap()
}

/// An append through the store wakes the coordinator's live loop at once: with an hour-long
/// poll interval, an append made while the loop waits is applied within the test's time
/// limit. (Real time: sqlx runs each SQLite connection on a thread of its own, which paused
/// tokio time does not wait for, so it would jump to the poll.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_through_the_store_wake_the_live_loop_at_once() {
    within(
        "appends_through_the_store_wake_the_live_loop_at_once",
        async {
            let db = TestDb::new().await;
            let store = Arc::new(db.store());
            let handle = start_orders(&db, &store, Duration::from_secs(3600));
            let first = append(&store, order(1, "d1", 10)).await;
            handle.wait_for_checkpoint(PROJECTION, first).await.unwrap();
            // The first event is applied: the loop has finished a pass and waits. Only the
            // store's notification can wake it before the hour is up.
            for n in 2..=4 {
                let position = append(&store, order(n, "d1", 10 * n)).await;
                handle
                    .wait_for_checkpoint(PROJECTION, position)
                    .await
                    .unwrap();
            }
            let report = handle.shutdown(Duration::from_secs(30)).await;
            assert!(report.is_ok(), "{report:?}");
            assert_eq!(db.order_numbers().await, [1, 2, 3, 4]);
            db.close().await;
        },
    )
    .await;
}

/// Appends by another process (another pool, another store value on the same file) are not
/// announced to the coordinator's store, yet the live loop sees them within its poll
/// interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_by_another_process_are_seen_by_polling() {
    within("appends_by_another_process_are_seen_by_polling", async {
        let db = TestDb::new().await;
        let store = Arc::new(db.store());
        let announcements = store.subscribe().unwrap();
        let handle = start_orders(&db, &store, Duration::from_millis(100));
        let other_pool = db.process().await;
        let other = SqliteEventStore::new(other_pool.clone());
        let mut last = 0;
        for n in 1..=3 {
            last = append(&other, order(n, "d1", 10 * n)).await;
            handle.wait_for_checkpoint(PROJECTION, last).await.unwrap();
        }
        assert_eq!(last, 3);
        assert!(
            !announcements.has_changed().unwrap(),
            "the coordinator's store announced an append it did not make"
        );
        let report = handle.shutdown(Duration::from_secs(30)).await;
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(db.order_numbers().await, [1, 2, 3]);
        other_pool.close().await;
        db.close().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 9. Two runners of one projection on one file
// ---------------------------------------------------------------------------------------------

/// Records every application of an event, and which runner made it.
struct Applications {
    runner: &'static str,
}

#[projection(name = "sq_applications")]
impl Applications {
    #[handles(OrderPlaced)]
    async fn placed(
        &mut self,
        conn: &mut SqliteConnection,
        event: &Envelope<OrderPlaced>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO sqp_applications (event_id, position, runner, applications)
             VALUES (?1, ?2, ?3, 1)
             ON CONFLICT (event_id) DO UPDATE SET applications = applications + 1",
        )
        .bind(event.event_id().to_string())
        .bind(i64::try_from(event.position().unwrap()).unwrap())
        .bind(self.runner)
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// Two processes (a pool each on the same file) run the same database projection at the same
/// time, live, in small batches, while four writers append 240 orders: every event is applied
/// exactly once (one row per event, each applied once), and the two runners' applied counts
/// add up to the number of events. `BEGIN IMMEDIATE` makes them take turns, and each reads the
/// checkpoint under the write lock and skips what the other committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_runners_of_one_projection_on_one_file_apply_every_event_once() {
    const WRITERS: i64 = 4;
    const PER_WRITER: i64 = 60;
    const EVENTS: u64 = (WRITERS * PER_WRITER) as u64;
    within(
        "two_runners_of_one_projection_on_one_file_apply_every_event_once",
        async {
            let db = TestDb::new().await;
            let start = |runner: &'static str, pool: SqlitePool| {
                let mut registry = ProjectionRegistry::new();
                registry
                    .register(TransactionalRunner::new(
                        Applications { runner },
                        Arc::new(SqliteTransactionUnit::new(pool.clone())),
                    ))
                    .unwrap();
                ProjectionCoordinator::new(registry, Arc::new(SqliteEventStore::new(pool)))
                    .batch_size(5)
                    .poll_interval(Duration::from_millis(10))
                    .start()
                    .unwrap()
            };
            let (pool_a, pool_b) = (db.process().await, db.process().await);
            let (a, b) = (start("a", pool_a.clone()), start("b", pool_b.clone()));

            let writers: Vec<_> = (0..WRITERS)
                .map(|writer| {
                    let store = db.store();
                    tokio::spawn(async move {
                        let mut ids = Vec::new();
                        for n in 0..PER_WRITER {
                            let event = order(writer * PER_WRITER + n, "d", 1);
                            ids.push(event.event_id());
                            append(&store, event).await;
                        }
                        ids
                    })
                })
                .collect();
            let mut written = Vec::new();
            for writer in writers {
                written.extend(writer.await.unwrap());
            }

            let checkpoints = db.checkpoints();
            while checkpoints.get_checkpoint("sq_applications").await.unwrap() < Some(EVENTS) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let (report_a, report_b) = (
                a.shutdown(Duration::from_secs(30)).await,
                b.shutdown(Duration::from_secs(30)).await,
            );
            assert!(
                report_a.is_ok() && report_b.is_ok(),
                "{report_a:?} {report_b:?}"
            );

            let rows: Vec<(String, i64, String, i64)> = sqlx::query_as(
                "SELECT event_id, position, runner, applications FROM sqp_applications
                 ORDER BY position",
            )
            .fetch_all(&db.pool)
            .await
            .unwrap();
            let twice: Vec<_> = rows.iter().filter(|row| row.3 != 1).collect();
            assert!(twice.is_empty(), "applied more than once: {twice:?}");
            assert_eq!(
                rows.iter().map(|row| row.1).collect::<Vec<_>>(),
                (1..=EVENTS as i64).collect::<Vec<_>>()
            );
            let mut applied_ids: Vec<String> = rows.iter().map(|row| row.0.clone()).collect();
            let mut written: Vec<String> = written.iter().map(Uuid::to_string).collect();
            applied_ids.sort();
            written.sort();
            assert_eq!(applied_ids, written);
            assert_eq!(report_a.applied() + report_b.applied(), EVENTS);
            let by_a = rows.iter().filter(|row| row.2 == "a").count();
            println!(
                "runner a applied {by_a} events, runner b {}; skipped: a {}, b {}",
                rows.len() - by_a,
                report_a.projections[0].skipped,
                report_b.projections[0].skipped
            );
            let checkpoint = checkpoints
                .get_checkpoint_data("sq_applications")
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                (checkpoint.position, checkpoint.events_processed),
                (EVENTS, EVENTS)
            );
            pool_a.close().await;
            pool_b.close().await;
            db.close().await;
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Live-only handlers keep their replay horizon in the file
// ---------------------------------------------------------------------------------------------

/// Writes an order row per order placed, for live orders only.
struct LiveOrders;

#[projection(name = "sq_orders")]
impl LiveOrders {
    #[handles(OrderPlaced, live_only)]
    async fn placed(
        &mut self,
        conn: &mut SqliteConnection,
        event: &Envelope<OrderPlaced>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(INSERT_ORDER)
            .bind(event.order_no)
            .bind(event.day.as_str())
            .bind(event.amount)
            .bind(event.customer.as_str())
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    #[reset]
    async fn clear(&mut self, _conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
        // What went out (the order rows stand for notifications) is not taken back.
        Ok(())
    }
}

/// The replay horizon is stored in the SQLite file with the checkpoint: a restarted process
/// keeps it, a rebuild takes a new one, and only live orders are written, once each.
#[tokio::test]
async fn live_only_handlers_keep_their_horizon_in_the_file() {
    within("live-only on SQLite", async {
        let db = TestDb::new().await;
        let store = Arc::new(db.store());
        for n in 1..=5 {
            append(&store, order(n, "d1", 10 * n)).await;
        }
        let coordinator = |pool: &SqlitePool| {
            let unit = Arc::new(SqliteTransactionUnit::new(pool.clone()));
            let mut registry = ProjectionRegistry::new();
            registry
                .register(TransactionalRunner::new(LiveOrders, unit))
                .unwrap();
            ProjectionCoordinator::new(registry, Arc::new(SqliteEventStore::new(pool.clone())))
        };
        let mut first = coordinator(&db.pool);
        first.catch_up_all().await.unwrap();
        assert!(
            db.order_numbers().await.is_empty(),
            "stored orders are replayed"
        );
        assert_eq!(
            db.checkpoints()
                .get_replay_horizon(PROJECTION)
                .await
                .unwrap(),
            Some(5)
        );
        append(&store, order(6, "d2", 60)).await;
        first.catch_up_all().await.unwrap();
        assert_eq!(db.order_numbers().await, [6]);
        drop(first);

        // Another process on the same file: the same horizon, and nothing twice.
        let other = db.process().await;
        let mut second = coordinator(&other);
        let last = append(&store, order(7, "d2", 70)).await;
        second.catch_up_all().await.unwrap();
        assert_eq!(db.order_numbers().await, [6, 7]);

        // A rebuild replays what the projection had passed: nothing is written again.
        second.rebuild_projection(PROJECTION).await.unwrap();
        assert_eq!(
            db.checkpoints()
                .get_replay_horizon(PROJECTION)
                .await
                .unwrap(),
            Some(last)
        );
        assert_eq!(db.order_numbers().await, [6, 7]);
        append(&store, order(8, "d3", 80)).await;
        second.catch_up_all().await.unwrap();
        assert_eq!(db.order_numbers().await, [6, 7, 8]);
    })
    .await;
}
