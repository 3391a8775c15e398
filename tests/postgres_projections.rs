//! The transactional runner against a real PostgreSQL server (`DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`): crash safety at every step of a batch, rollback
//! of a failing event's statements, retries in fresh transactions, the stop policy, bad rows
//! from the store, reset and rebuild, and one transaction per batch.
//!
//! Run with `cargo test -p projections-tests --features postgres --test postgres_projections`.
//! Every test fails, rather than skips, when the server cannot be reached, and fails rather
//! than hangs (120 s bound) when the runner deadlocks.
//!
//! Isolation: tests run concurrently on one database, so each test (and each case of the crash
//! test) works in a schema of its own, `pt_<random>`, holding the crate's tables and the read
//! model's, dropped when the test passes.
//!
//! Faults are injected by [`Probe`] (`common::probe`, shared with the SQLite tests): it delegates
//! every method to [`PostgreSQLTransactionUnit`] and can, at a chosen occurrence of a chosen step, fail
//! or hang forever. A hang is a crash: the test waits until the step is reached, drops the
//! runner's future and closes the crashed runner's own pool, so the server rolls back its open
//! transaction as it would when a process dies.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::positioned;
use common::probe::{Action, Faults, Point};
use projections::coordinator::ProjectionCoordinator;
use projections::dlq::DLQFilter;
use projections::postgres::{
    PostgreSQLCheckpointRepository, PostgreSQLDLQRepository, PostgreSQLEventStore, Schema,
    migrate_schema,
};
use projections::runner::RunnerError;
use projections::transactional::{PostgreSQLTransactionUnit, TransactionalRunner};
use projections::{
    AnyEvent, CheckpointRepository, DLQRepository, DLQStatus, Envelope, Event, EventStore,
    ExpectedVersion, ExponentialBackoffRetryPolicy, FailurePolicy, NoRetryPolicy, PgConnection,
    ProjectionRegistry, RetryConfig, StorageError, projection,
};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgPool};
use tokio::sync::OnceCell;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

const ORDER_PLACED: &str = "pgp.order_placed";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "pgp.order_placed", aggregate = "Order")]
struct OrderPlaced {
    order_no: i64,
    day: String,
    amount: i64,
    customer: String,
}

/// An event the projection does not subscribe to: the checkpoint passes over it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "pgp.order_audited", aggregate = "Order")]
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

const PROJECTION: &str = "pg_orders";
const ORDERS_TABLE: &str = "pgp_orders";
const TOTALS_TABLE: &str = "pgp_daily_totals";

/// The read model's SQL, formatted once per projection with the schema's validated name.
struct ReadModelSql {
    create: String,
    insert_order: String,
    upsert_total: String,
    clear_orders: String,
    clear_totals: String,
    select_orders: String,
    select_totals: String,
}

impl ReadModelSql {
    fn new(schema: &Schema) -> Self {
        // `Schema::named` accepted only `^[a-z_][a-z0-9_]{0,62}$`; the table names are ours.
        let table = |name: &str| match schema.name() {
            Some(schema) => format!("\"{schema}\".{name}"),
            None => name.to_owned(),
        };
        let (orders, totals) = (table(ORDERS_TABLE), table(TOTALS_TABLE));
        Self {
            // No unique key on `order_no`: an order applied twice shows up as two rows.
            create: format!(
                "CREATE TABLE {orders} (
                     id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                     order_no bigint NOT NULL,
                     day      text   NOT NULL,
                     amount   bigint NOT NULL,
                     customer text   NOT NULL
                 );
                 CREATE TABLE {totals} (
                     day    text   PRIMARY KEY,
                     total  bigint NOT NULL,
                     orders bigint NOT NULL
                 );"
            ),
            insert_order: format!(
                "INSERT INTO {orders} (order_no, day, amount, customer) VALUES ($1, $2, $3, $4)"
            ),
            upsert_total: format!(
                "INSERT INTO {totals} AS t (day, total, orders) VALUES ($1, $2, 1)
                 ON CONFLICT (day) DO UPDATE SET
                     total = t.total + EXCLUDED.total, orders = t.orders + 1"
            ),
            clear_orders: format!("DELETE FROM {orders}"),
            clear_totals: format!("DELETE FROM {totals}"),
            select_orders: format!(
                "SELECT order_no, day, amount, customer FROM {orders} ORDER BY order_no, id"
            ),
            select_totals: format!("SELECT day, total, orders FROM {totals} ORDER BY day"),
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
    sql: ReadModelSql,
    faults: Arc<Faults>,
    /// Handler calls per order number.
    calls: Arc<Mutex<BTreeMap<i64, u32>>>,
    /// Per order number: how many more calls run a statement that fails at the server
    /// (`SELECT 1/0`, which aborts the transaction) after the first statement.
    server_errors: HashMap<i64, u32>,
    /// Makes the reset fail after its first statement.
    fail_reset: bool,
}

impl Orders {
    fn new(schema: &Schema, faults: Arc<Faults>) -> Self {
        Self {
            sql: ReadModelSql::new(schema),
            faults,
            calls: Arc::default(),
            server_errors: HashMap::new(),
            fail_reset: false,
        }
    }
}

#[projection(name = "pg_orders")]
impl Orders {
    #[handles(OrderPlaced)]
    async fn placed(
        &mut self,
        conn: &mut PgConnection,
        event: &Envelope<OrderPlaced>,
    ) -> Result<(), OrderError> {
        *self
            .calls
            .lock()
            .unwrap()
            .entry(event.order_no)
            .or_default() += 1;
        sqlx::query(&self.sql.insert_order)
            .bind(event.order_no)
            .bind(event.day.as_str())
            .bind(event.amount)
            .bind(event.customer.as_str())
            .execute(&mut *conn)
            .await?;
        if let Some(left) = self.server_errors.get_mut(&event.order_no)
            && *left > 0
        {
            *left -= 1;
            sqlx::query("SELECT 1/0").execute(&mut *conn).await?;
        }
        self.faults.trip(Point::BetweenStatements).await?;
        if event.amount == POISON {
            return Err(OrderError::Poison(event.order_no));
        }
        sqlx::query(&self.sql.upsert_total)
            .bind(event.day.as_str())
            .bind(event.amount)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    #[reset]
    async fn clear(&mut self, conn: &mut PgConnection) -> Result<(), OrderError> {
        sqlx::query(&self.sql.clear_orders)
            .execute(&mut *conn)
            .await?;
        if self.fail_reset {
            return Err(OrderError::ResetRefused);
        }
        sqlx::query(&self.sql.clear_totals)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

type Probe = common::probe::Probe<PostgreSQLTransactionUnit>;
type Runner = TransactionalRunner<Orders, Probe>;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A pool on the test server; panics (fails the test) when the server cannot be reached.
async fn connect(max_connections: u32) -> PgPool {
    let url = database_url();
    // One direct connection first: a refused connection fails at once, where a pool would
    // retry until its acquire timeout.
    static REACHABLE: OnceCell<()> = OnceCell::const_new();
    REACHABLE
        .get_or_init(|| async {
            match PgConnection::connect(&url).await {
                Ok(conn) => conn.close().await.unwrap(),
                Err(e) => panic!(
                    "cannot reach PostgreSQL at {url}: {e}. These tests need a running server; \
                     set DATABASE_URL"
                ),
            }
        })
        .await;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(30))
        .connect(&url)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot reach PostgreSQL at {url}: {e}. These tests need a running server; \
                 set DATABASE_URL"
            )
        })
}

/// Fails instead of hanging.
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 120 s"))
}

/// One schema with the crate's tables and the read model's.
struct TestDb {
    pool: PgPool,
    schema: Schema,
    name: String,
    sql: ReadModelSql,
}

impl TestDb {
    async fn new() -> Self {
        Self::on(connect(4).await).await
    }

    async fn on(pool: PgPool) -> Self {
        let name = format!("pt_{}", &Uuid::new_v4().simple().to_string()[..16]);
        let schema = Schema::named(&name).unwrap();
        migrate_schema(&pool, &schema).await.unwrap();
        let sql = ReadModelSql::new(&schema);
        sqlx::raw_sql(&sql.create).execute(&pool).await.unwrap();
        Self {
            pool,
            schema,
            name,
            sql,
        }
    }

    fn unit(&self, pool: &PgPool, faults: &Arc<Faults>) -> Arc<Probe> {
        Arc::new(Probe::new(
            PostgreSQLTransactionUnit::with_schema(pool.clone(), &self.schema),
            faults.clone(),
        ))
    }

    /// A runner on `pool` (a process of its own when the pool is its own).
    fn runner_on(&self, pool: &PgPool, faults: &Arc<Faults>) -> Runner {
        TransactionalRunner::new(
            Orders::new(&self.schema, faults.clone()),
            self.unit(pool, faults),
        )
        .retry_policy(NoRetryPolicy)
    }

    fn runner(&self, faults: &Arc<Faults>) -> Runner {
        self.runner_on(&self.pool, faults)
    }

    fn store(&self) -> PostgreSQLEventStore {
        PostgreSQLEventStore::with_schema(self.pool.clone(), self.schema.clone())
    }

    fn table(&self, table: &str) -> String {
        format!("\"{}\".{table}", self.name)
    }

    fn checkpoints(&self) -> PostgreSQLCheckpointRepository {
        PostgreSQLCheckpointRepository::with_schema(self.pool.clone(), &self.schema)
    }

    fn dead_letters(&self) -> PostgreSQLDLQRepository {
        PostgreSQLDLQRepository::with_schema(self.pool.clone(), &self.schema)
    }

    async fn orders(&self) -> Vec<(i64, String, i64, String)> {
        sqlx::query_as(&self.sql.select_orders)
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }

    async fn order_numbers(&self) -> Vec<i64> {
        self.orders().await.into_iter().map(|o| o.0).collect()
    }

    async fn totals(&self) -> Vec<(String, i64, i64)> {
        sqlx::query_as(&self.sql.select_totals)
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

    /// Drops the schema; called at the end of a test that passed.
    async fn drop(self) {
        sqlx::raw_sql(&format!("DROP SCHEMA \"{}\" CASCADE", self.name))
            .execute(&self.pool)
            .await
            .unwrap();
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

fn event_id_of(event: &AnyEvent) -> Uuid {
    event.event_id()
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

// ---------------------------------------------------------------------------------------------
// 1. Crash safety
// ---------------------------------------------------------------------------------------------

/// Two batches; the second holds a poison order (7) between good ones, and each batch an
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

fn crash_runner(db: &TestDb, pool: &PgPool, faults: &Arc<Faults>) -> Runner {
    // One retry, so that a retry's own transaction is crossed too.
    db.runner_on(pool, faults).retry_policy(tiny_backoff(1))
}

/// Runs `batches` in a process of its own (its own pool) until the planned crash; then the
/// process dies: its future is dropped and its connections closed, so the server rolls back
/// whatever it had open. Returns whether the crash happened.
async fn run_until_crash(db: &TestDb, faults: &Arc<Faults>, batches: &[Vec<AnyEvent>]) -> bool {
    let pool = connect(2).await;
    let crashed = {
        let mut runner = crash_runner(db, &pool, faults);
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

async fn run_to_completion(db: &TestDb, faults: &Arc<Faults>, batches: &[Vec<AnyEvent>]) {
    let mut runner = crash_runner(db, &db.pool, faults);
    for batch in batches {
        runner.handle_batch(batch).await.unwrap();
    }
}

/// For each step of the work (before the handler, between its two statements, before the
/// checkpoint write, before and after the commit, before the dead letter) and each of its
/// occurrences (the first batch, the later batch, the re-apply after the failure, the retry,
/// the dead-letter transaction, the batch's rest), a crash there followed by a restart (a new
/// runner on the same schema, the same events) gives exactly the read model, checkpoint and
/// dead letters of an uninterrupted run: nothing applied twice, nothing lost.
#[tokio::test]
async fn a_crash_at_any_step_then_a_restart_gives_the_uninterrupted_result() {
    let pool = connect(4).await;
    let batches = crash_stream();
    let all: Vec<&AnyEvent> = batches.iter().flatten().collect();

    // The uninterrupted run, in a schema of its own; its counts say how often each step occurs.
    let clean = TestDb::on(pool.clone()).await;
    let counting = Faults::none();
    within(
        "the uninterrupted run",
        run_to_completion(&clean, &counting, &batches),
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
            last_event_id: Some(event_id_of(all[9])),
            last_event_type: Some(ORDER_PLACED.to_owned()),
            events_processed: 7,
        })
    );
    assert_eq!(expected.dead_letters.len(), 1);
    let dead = &expected.dead_letters[0];
    assert_eq!(
        (dead.event_id, dead.position, dead.attempts, dead.status),
        (event_id_of(all[6]), Some(7), 2, DLQStatus::Failed)
    );
    assert!(dead.error_message.contains("order 6 is poison"), "{dead:?}");
    clean.drop().await;

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
            let db = TestDb::on(pool.clone()).await;
            let faults = Faults::at(point, occurrence, Action::Crash);
            let crashed = within(
                &format!("the run up to the crash at {point:?} #{occurrence}"),
                run_until_crash(&db, &faults, &batches),
            )
            .await;
            assert!(crashed, "{point:?} #{occurrence} was never reached");

            // A new process: a new runner over the same schema runs the same events.
            within(
                &format!("the restart after the crash at {point:?} #{occurrence}"),
                run_to_completion(&db, &Faults::none(), &batches),
            )
            .await;
            let after = db.snapshot().await;
            assert_eq!(after, expected, "crash at {point:?} #{occurrence}");
            assert_eq!(
                after.dead_letters.len(),
                1,
                "crash at {point:?} #{occurrence}"
            );
            db.drop().await;
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
        matches!(&error, RunnerError::DeadLetter { event_id, .. } if *event_id == event_id_of(&events[2])),
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
        (event_id_of(&events[2]), Some(3), 1)
    );
    assert_eq!(dead[0].projection, PROJECTION);
    assert!(dead[0].error_message.contains("order 3 is poison"));
    let checkpoint = db.checkpoint().await.unwrap();
    assert_eq!((checkpoint.position, checkpoint.events_processed), (4, 3));
    db.drop().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 3. A retry is not poisoned by the previous attempt's aborted transaction
// ---------------------------------------------------------------------------------------------

/// Order 2's first two attempts insert its row and then run `SELECT 1/0`, which aborts the
/// transaction at the server; the third attempt, in a fresh transaction, succeeds. Order 2 is
/// applied exactly once and nothing is dead-lettered.
#[tokio::test]
async fn a_retry_is_not_poisoned_by_the_aborted_transaction_before_it() {
    within(
        "a_retry_is_not_poisoned_by_the_aborted_transaction_before_it",
        async {
            let db = TestDb::new().await;
            let events = positioned(
                vec![order(1, "d1", 10), order(2, "d1", 20), order(3, "d2", 30)],
                1,
            );
            let faults = Faults::none();
            let mut runner = db.runner(&faults).retry_policy(tiny_backoff(3));
            runner.projection_mut().server_errors.insert(2, 2);
            let calls = runner.projection().calls.clone();

            let outcome = runner.handle_batch(&events).await.unwrap();
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
            db.drop().await;
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
                (Some(3), Some(event_id_of(&events[2])))
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

            // A restarted runner stops at the same event.
            let mut restarted = db.runner(&Faults::none()).on_failure(FailurePolicy::Stop);
            let error = restarted.handle_batch(&events).await.unwrap_err();
            assert!(
                matches!(&error, RunnerError::Stopped { at, .. } if at.position == Some(3)),
                "{error:?}"
            );
            expect_state().await;
            db.drop().await;
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// 5. Bad input from the store
// ---------------------------------------------------------------------------------------------

/// Inserts one event row by hand, at the position the column's default takes, as a writer
/// other than the store would. Every value is bound.
async fn insert_raw_event(db: &TestDb, event_type: &str, payload: &str) -> (u64, Uuid) {
    let event_id = Uuid::new_v4();
    let position: i64 = sqlx::query_scalar(&format!(
        "INSERT INTO {events} (
             event_id, aggregate_id, aggregate_type, aggregate_version, event_type,
             event_version, payload, correlation_id, occurred_at
         )
         VALUES ($1, $2, 'Order', 1, $3, 1, $4::jsonb, $5, now())
         RETURNING position",
        events = db.table("projection_events"),
    ))
    .bind(event_id)
    .bind(Uuid::new_v4())
    .bind(event_type)
    .bind(payload)
    .bind(Uuid::new_v4())
    .fetch_one(&db.pool)
    .await
    .unwrap();
    (u64::try_from(position).unwrap(), event_id)
}

async fn append(store: &PostgreSQLEventStore, event: AnyEvent) -> u64 {
    let aggregate = event.metadata().aggregate_id;
    store
        .append(aggregate, ExpectedVersion::NoStream, vec![event])
        .await
        .unwrap()
        .last_position
}

/// Catches up until the projection's checkpoint reaches `position`. One pass may stop short:
/// readers never pass an append still in flight, so a pass ends at that horizon and the next
/// one goes on.
async fn catch_up_to(coordinator: &mut ProjectionCoordinator, position: u64) {
    within(&format!("catching up to {position}"), async {
        loop {
            let report = coordinator.catch_up_all().await.unwrap();
            let failures: Vec<String> = report
                .failures()
                .map(|(name, error)| format!("{name}: {error}"))
                .collect();
            assert!(failures.is_empty(), "{failures:?}");
            let runner = coordinator.registry_mut().get_mut(PROJECTION).unwrap();
            if runner.checkpoint().await.unwrap() >= Some(position) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// An append left open holds the projection's reads back: its health counts the committed
/// event waiting behind it (lag counts committed events it cannot see yet) and names the
/// backend, the transaction's start and its statement; once the append commits, both events
/// are applied and nothing is named.
#[tokio::test]
async fn health_names_the_append_that_holds_reads_back() {
    within("a held-back read", async {
        let db = TestDb::new().await;
        let mut registry = ProjectionRegistry::new();
        registry.register(db.runner(&Faults::none())).unwrap();
        let store = Arc::new(db.store());
        let mut coordinator = ProjectionCoordinator::new(registry, store.clone());
        let first = append(&store, order(1, "2026-11-01", 10)).await;
        catch_up_to(&mut coordinator, first).await;

        let mut open = db.pool.begin().await.unwrap();
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *open)
            .await
            .unwrap();
        let event = order(2, "2026-11-02", 20);
        let held: i64 = sqlx::query_scalar(&format!(
            "INSERT INTO {events} (
                 event_id, aggregate_id, aggregate_type, aggregate_version, event_type,
                 event_version, payload, correlation_id, occurred_at
             )
             VALUES ($1, $2, 'Order', 1, $3, 1, $4::jsonb, $5, now())
             RETURNING position",
            events = db.table("projection_events"),
        ))
        .bind(event.event_id())
        .bind(event.metadata().aggregate_id)
        .bind(event.event_type())
        .bind(serde_json::to_string(&event.payload_json().unwrap()).unwrap())
        .bind(Uuid::new_v4())
        .fetch_one(&mut *open)
        .await
        .unwrap();
        let behind = append(&store, order(3, "2026-11-03", 30)).await;
        assert!(behind > u64::try_from(held).unwrap());

        coordinator.catch_up_all().await.unwrap();
        let report = coordinator.health_check().await;
        let health = &report.projections[0];
        let lag = health.lag.as_ref().unwrap();
        assert_eq!(lag.checkpoint_position, first);
        assert_eq!(
            lag.events_behind, 1,
            "the committed event behind the open append"
        );
        let hold = lag.held_back.as_ref().expect("the status names the hold");
        assert_eq!(hold.pid, Some(pid));
        assert_eq!(hold.events, 1);
        assert!(hold.since.is_some());
        assert!(hold.query.as_deref().unwrap().starts_with("INSERT INTO"));
        assert!(!report.is_healthy());

        open.commit().await.unwrap();
        catch_up_to(&mut coordinator, behind).await;
        let report = coordinator.health_check().await;
        let lag = report.projections[0].lag.as_ref().unwrap();
        assert_eq!((lag.events_behind, lag.held_back.as_ref()), (0, None));
        assert_eq!(db.order_numbers().await, vec![1, 2, 3]);
        db.drop().await;
    })
    .await;
}

/// Rows of an unknown type and with a payload that does not decode reach the dead-letter
/// queue with the decode error, the checkpoint passes them, and the good events around them
/// are applied. Identifiers are validated, values are bound: an injection attempt in a schema
/// name is refused, and quotes in values are stored verbatim.
#[tokio::test]
async fn undecodable_stored_events_are_dead_lettered_and_passed() {
    within(
        "undecodable_stored_events_are_dead_lettered_and_passed",
        async {
            let injection = "pt_x\"; DROP SCHEMA public CASCADE; --";
            assert!(matches!(
                Schema::named(injection),
                Err(StorageError::Invalid { .. })
            ));
            assert!(matches!(
                Schema::named("Robert'); DROP TABLE students;--"),
                Err(StorageError::Invalid { .. })
            ));

            let db = TestDb::new().await;
            let store = db.store();
            append(&store, order(1, "d1", 10)).await;
            append(&store, order(2, "d1", 20)).await;
            let unknown_type = "pgp.never_registered'\"); DROP TABLE pgp_orders; --";
            let (unknown_at, unknown_id) = insert_raw_event(&db, unknown_type, "{\"x\": 1}").await;
            let (garbled_at, garbled_id) = insert_raw_event(
                &db,
                ORDER_PLACED,
                "{\"order_no\": \"seven\", \"day\": \"d1\"}",
            )
            .await;
            let quoted = "O'Brien \"Bob\" '); DELETE FROM pgp_orders; -- \\ $1";
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
            catch_up_to(&mut coordinator, last).await;

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
                        .contains("payload of `pgp.order_placed` does not decode"),
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
            db.drop().await;
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
            catch_up_to(&mut coordinator, last).await;
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
            catch_up_to(&mut coordinator, last).await;
            assert_eq!(db.snapshot().await, before);
            drop(coordinator);
            db.drop().await;
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
        db.drop().await;
    })
    .await;
}

/// The coordinator's live loop wakes on the store's append notifications: with an hour-long
/// poll interval, an append made while it waits is applied within the test's time limit.
#[tokio::test]
async fn the_live_loop_follows_appends_through_notifications() {
    within("live tailing", async {
        let db = TestDb::new().await;
        let mut registry = ProjectionRegistry::new();
        registry.register(db.runner(&Faults::none())).unwrap();
        let store = Arc::new(db.store());
        let mut coordinator = ProjectionCoordinator::new(registry, store.clone())
            .poll_interval(Duration::from_secs(3600));
        let shutdown = tokio_util::sync::CancellationToken::new();
        let stop = shutdown.clone();
        let checkpoints = db.checkpoints();
        let first = append(&store, order(1, "2026-11-01", 10)).await;
        let writer = async {
            // Once the first event is applied, the loop has finished a pass and waits: only
            // a notification can wake it before the poll interval.
            while checkpoints.get_checkpoint(PROJECTION).await.unwrap() < Some(first) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let second = append(&store, order(2, "2026-11-02", 20)).await;
            while checkpoints.get_checkpoint(PROJECTION).await.unwrap() < Some(second) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            stop.cancel();
        };
        let (report, ()) = tokio::join!(coordinator.run(shutdown), writer);
        report.unwrap();
        assert_eq!(db.order_numbers().await, vec![1, 2]);
        db.drop().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 8. Set-based and live-only handlers
// ---------------------------------------------------------------------------------------------

/// The same read model as [`Orders`], set-based: one statement for the orders of a run, then
/// (unless the run holds a poison order) one for the day totals.
struct SetOrders {
    insert_orders: String,
    upsert_totals: String,
    runs: Arc<Mutex<Vec<usize>>>,
}

impl SetOrders {
    fn new(db: &TestDb) -> Self {
        let (orders, totals) = (db.table(ORDERS_TABLE), db.table(TOTALS_TABLE));
        Self {
            insert_orders: format!(
                "INSERT INTO {orders} (order_no, day, amount, customer)
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[])"
            ),
            upsert_totals: format!(
                "INSERT INTO {totals} AS t (day, total, orders)
                 SELECT day, sum(amount), count(*)
                 FROM unnest($1::text[], $2::bigint[]) AS u(day, amount)
                 GROUP BY day
                 ON CONFLICT (day) DO UPDATE SET
                     total = t.total + EXCLUDED.total, orders = t.orders + EXCLUDED.orders"
            ),
            runs: Arc::default(),
        }
    }
}

#[projection(name = "pg_orders")]
impl SetOrders {
    #[handles(OrderPlaced)]
    async fn placed(
        &mut self,
        conn: &mut PgConnection,
        events: &[Envelope<OrderPlaced>],
    ) -> Result<(), OrderError> {
        self.runs.lock().unwrap().push(events.len());
        let numbers: Vec<i64> = events.iter().map(|e| e.order_no).collect();
        let days: Vec<&str> = events.iter().map(|e| e.day.as_str()).collect();
        let amounts: Vec<i64> = events.iter().map(|e| e.amount).collect();
        let customers: Vec<&str> = events.iter().map(|e| e.customer.as_str()).collect();
        sqlx::query(&self.insert_orders)
            .bind(&numbers)
            .bind(&days)
            .bind(&amounts)
            .bind(&customers)
            .execute(&mut *conn)
            .await?;
        if let Some(poison) = events.iter().find(|e| e.amount == POISON) {
            return Err(OrderError::Poison(poison.order_no));
        }
        sqlx::query(&self.upsert_totals)
            .bind(&days)
            .bind(&amounts)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

/// Set-based, the read model, checkpoint and dead letters are those of the per-event
/// projection: the poison order's statements roll back, every other order is written once.
#[tokio::test]
async fn a_set_based_projection_leaves_the_read_model_of_the_per_event_one() {
    within("set-based against per-event", async {
        let events: Vec<AnyEvent> = crash_stream().concat();
        let per_event = TestDb::new().await;
        per_event
            .runner(&Faults::none())
            .handle_batch(&events)
            .await
            .unwrap();
        let expected = per_event.snapshot().await;
        assert_eq!(expected.dead_letters.len(), 1);

        let db = TestDb::new().await;
        let projection = SetOrders::new(&db);
        let runs = projection.runs.clone();
        let unit = Arc::new(PostgreSQLTransactionUnit::with_schema(
            db.pool.clone(),
            &db.schema,
        ));
        let mut runner = TransactionalRunner::new(projection, unit).retry_policy(NoRetryPolicy);
        let outcome = runner.handle_batch(&events).await.unwrap();
        assert_eq!((outcome.applied, outcome.dead_lettered.len()), (7, 1));
        assert_eq!(db.snapshot().await, expected);
        // Runs split by the events passed over: [1 2] [3 4 5 6p 7] [8]; the poisoned run is
        // narrowed down by halves, each in a fresh transaction.
        assert_eq!(runs.lock().unwrap()[..2], [2, 5]);
        per_event.drop().await;
        db.drop().await;
    })
    .await;
}

/// Writes a notification row per order placed, for live orders only.
struct Notifier {
    insert: String,
}

#[projection(name = "pg_orders")]
impl Notifier {
    #[handles(OrderPlaced, live_only)]
    async fn notify(
        &mut self,
        conn: &mut PgConnection,
        event: &Envelope<OrderPlaced>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(&self.insert)
            .bind(event.order_no)
            .bind(event.day.as_str())
            .bind(event.amount)
            .bind(event.customer.as_str())
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

/// The replay horizon is stored in PostgreSQL with the checkpoint: a restarted process keeps
/// it, a rebuild takes a new one, and only live orders are notified, once each.
#[tokio::test]
async fn live_only_handlers_keep_their_horizon_in_postgres() {
    within("live-only on PostgreSQL", async {
        let db = TestDb::new().await;
        let store = db.store();
        for n in 1..=5 {
            append(&store, order(n, "d1", 10 * n)).await;
        }
        // The first start takes the readable head as its horizon: wait until all five are
        // readable (transactions of other tests may hold the horizon back for a moment).
        while store.head_position().await.unwrap() < 5 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let coordinator = |db: &TestDb| {
            let insert = ReadModelSql::new(&db.schema).insert_order;
            let unit = Arc::new(PostgreSQLTransactionUnit::with_schema(
                db.pool.clone(),
                &db.schema,
            ));
            let mut registry = ProjectionRegistry::new();
            registry
                .register(TransactionalRunner::new(Notifier { insert }, unit))
                .unwrap();
            ProjectionCoordinator::new(registry, Arc::new(db.store()))
        };
        let mut first = coordinator(&db);
        catch_up_to(&mut first, 5).await;
        assert!(db.orders().await.is_empty(), "stored orders are replayed");
        assert_eq!(
            db.checkpoints()
                .get_replay_horizon(PROJECTION)
                .await
                .unwrap(),
            Some(5)
        );
        let last = append(&store, order(6, "d2", 60)).await;
        catch_up_to(&mut first, last).await;
        assert_eq!(db.order_numbers().await, [6]);
        drop(first);

        // A new process: the same horizon, and nothing twice.
        let mut second = coordinator(&db);
        let last = append(&store, order(7, "d2", 70)).await;
        catch_up_to(&mut second, last).await;
        assert_eq!(db.order_numbers().await, [6, 7]);

        // A rebuild replays what the projection had passed: nothing is notified again.
        second.rebuild_projection(PROJECTION).await.unwrap();
        assert_eq!(
            db.checkpoints()
                .get_replay_horizon(PROJECTION)
                .await
                .unwrap(),
            Some(last)
        );
        assert_eq!(db.order_numbers().await, [6, 7]);
        let last = append(&store, order(8, "d3", 80)).await;
        catch_up_to(&mut second, last).await;
        assert_eq!(db.order_numbers().await, [6, 7, 8]);
        drop(second);
        db.drop().await;
    })
    .await;
}
