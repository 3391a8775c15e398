//! Faults of the database itself (the server stops, crashes, or drops connections), against a
//! throwaway PostgreSQL cluster of each test's own (`common::cluster`), never the shared server.
//!
//! Run with `cargo test -p projections-tests --features postgres --test pg_faults`. Needs the
//! PostgreSQL server binaries (`initdb`, `pg_ctl`) on the machine; every test fails, rather than
//! skips, without them. Every wait is bounded, so a broken machine fails fast.
//!
//! The projection under fault is `common::faults::Ledger`, transactional (one transaction per
//! batch, `PostgreSQLTransactionUnit`), run by `ProjectionCoordinator::start`: one row per event under
//! a primary key, written with a plain `INSERT`, so an event applied twice would fail (and be
//! dead-lettered). "Exactly once" below is: one row per stored event, none missing, no dead
//! letter, and the checkpoint's own count of applied events equal to the number of events.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::cluster::ThrowawayCluster;
use common::faults::{
    self, Ledger, MISSING_TABLE, MissingTableAudit, OnPoison, Tally, append_ticks, ticks_of,
};
use common::rig::{Rig, within};
use projections::coordinator::{
    CoordinatorHandle, InfrastructureBackoff, ProjectionCoordinator, ProjectionSnapshot,
    WorkerState,
};
use projections::postgres::PostgreSQLEventStore;
use projections::registry::RegisteredProjection;
use projections::store::AppendError;
use projections::transactional::{PostgreSQLTransactionUnit, TransactionalRunner};
use projections::{EventStore, ExpectedVersion, FailureKind, NoRetryPolicy, ProjectionRegistry};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The longest any one step may take.
const STEP: Duration = Duration::from_secs(10);

/// `future`, or a test failure naming `what` when it takes longer than [`STEP`].
async fn bounded<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(STEP, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {STEP:?}"))
}

/// A pool that gives up on a down server within 2 s (sqlx keeps retrying a refused connection
/// until the acquire timeout).
async fn pool(cluster: &ThrowawayCluster) -> PgPool {
    bounded(
        "connecting",
        PgPoolOptions::new()
            .max_connections(3)
            .acquire_timeout(Duration::from_secs(2))
            .connect(&cluster.url()),
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "cannot connect to the throwaway cluster: {e}\n{}",
            cluster.server_log()
        )
    })
}

async fn backend_pid(connection: &mut sqlx::PgConnection) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(connection)
        .await
}

/// The harness itself: data survives a stop and a start, queries fail while the server is
/// down, the pool reconnects once it is back, terminated backends fail their next query, and
/// a crash keeps committed data.
#[tokio::test]
async fn cluster_stops_restarts_and_terminates_backends() -> anyhow::Result<()> {
    let cluster = ThrowawayCluster::start()?;
    let pool = pool(&cluster).await;
    bounded(
        "creating the table",
        sqlx::query("CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)").execute(&pool),
    )
    .await?;
    bounded(
        "inserting",
        sqlx::query("INSERT INTO notes VALUES (1, 'written before the stop')").execute(&pool),
    )
    .await?;
    let mut held = bounded("acquiring", pool.acquire()).await?;

    cluster.stop()?;

    let held_error = bounded("a query on a held connection", backend_pid(&mut held))
        .await
        .expect_err("a held connection must fail while the server is down");
    drop(held);
    let pool_error = bounded(
        "a query on the pool",
        sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&pool),
    )
    .await
    .expect_err("the pool must fail while the server is down");
    eprintln!("while down: held connection: {held_error}; pool: {pool_error}");

    cluster.start_again()?;

    let body: String = bounded(
        "reading after the restart",
        sqlx::query_scalar("SELECT body FROM notes WHERE id = 1").fetch_one(&pool),
    )
    .await?;
    assert_eq!(body, "written before the stop");

    let mut doomed = bounded("acquiring", pool.acquire()).await?;
    let mut spared = bounded("acquiring", pool.acquire()).await?;
    let doomed_pid = bounded("a query", backend_pid(&mut doomed)).await?;
    let spared_pid = bounded("a query", backend_pid(&mut spared)).await?;
    assert_ne!(doomed_pid, spared_pid);

    let terminated = bounded(
        "terminating backends",
        cluster.terminate_backends(Some(spared_pid)),
    )
    .await?;
    assert!(terminated >= 1, "no backend was terminated");

    let terminated_error = bounded("a query on a terminated backend", backend_pid(&mut doomed))
        .await
        .expect_err("a terminated backend's connection must fail");
    eprintln!("after termination: {terminated_error}");
    assert_eq!(
        bounded("a query on the spared backend", backend_pid(&mut spared)).await?,
        spared_pid,
        "the backend given as the exception must survive"
    );
    drop(doomed);
    drop(spared);
    let one: i32 = bounded(
        "a pool query after the termination",
        sqlx::query_scalar("SELECT 1").fetch_one(&pool),
    )
    .await?;
    assert_eq!(one, 1);

    // A crash (immediate shutdown) keeps what was committed: the restart recovers it from the WAL.
    bounded(
        "inserting",
        sqlx::query("INSERT INTO notes VALUES (2, 'written before the crash')").execute(&pool),
    )
    .await?;
    cluster.kill()?;
    cluster.start_again()?;
    let count: i64 = bounded(
        "reading after the crash",
        sqlx::query_scalar("SELECT count(*) FROM notes").fetch_one(&pool),
    )
    .await?;
    assert_eq!(count, 2, "server log:\n{}", cluster.server_log());

    pool.close().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// A coordinator under a failing database
// ---------------------------------------------------------------------------------------------

/// The longest a test waits for the projection to catch up once the database is back.
const CATCH_UP: Duration = Duration::from_secs(20);

/// The projection under fault.
const LEDGER: &str = "ledger";

impl Rig {
    fn unit(&self) -> Arc<PostgreSQLTransactionUnit> {
        Arc::new(PostgreSQLTransactionUnit::new(self.pool.clone()))
    }

    /// Starts a coordinator of `runner`: batches of `batch_size`, polling every 50 ms, waiting
    /// out a failing infrastructure from 50 ms up to 500 ms.
    fn coordinate(
        &self,
        runner: impl RegisteredProjection,
        batch_size: usize,
    ) -> CoordinatorHandle {
        let mut registry = ProjectionRegistry::new();
        registry.register(runner).unwrap();
        ProjectionCoordinator::new(registry, Arc::new(self.store()))
            .batch_size(batch_size)
            .poll_interval(Duration::from_millis(50))
            .infrastructure_backoff(InfrastructureBackoff {
                initial: Duration::from_millis(50),
                max: Duration::from_millis(500),
            })
            .start()
            .unwrap()
    }

    async fn stop_server(&self) {
        let cluster = Arc::clone(&self.cluster);
        tokio::task::spawn_blocking(move || cluster.stop())
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("stopping the server: {e}"));
    }

    async fn start_server_again(&self) {
        let cluster = Arc::clone(&self.cluster);
        tokio::task::spawn_blocking(move || cluster.start_again())
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("starting the server again: {e}"));
    }

    async fn tally(&self, projection: &str) -> Tally {
        within("counting", STEP, faults::tally(&self.pool, projection))
            .await
            .unwrap()
    }
}

/// What a projection's worker was seen doing, from its status channel.
#[derive(Default)]
struct Seen {
    /// Times the state became `Degraded`.
    degraded: AtomicU32,
    /// The distinct errors it was degraded with, in order (at most 20).
    errors: Mutex<Vec<String>>,
    /// Whether it was ever `Stopped` or `Paused`.
    halted: AtomicBool,
}

impl Seen {
    fn degraded(&self) -> u32 {
        self.degraded.load(Ordering::SeqCst)
    }

    fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }
}

/// Follows `name`'s status until the worker ends.
fn follow(handle: &CoordinatorHandle, name: &str) -> Arc<Seen> {
    let seen = Arc::new(Seen::default());
    let mut status = handle.watch(name).unwrap();
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        let mut was_degraded = false;
        loop {
            let state = status.borrow_and_update().state.clone();
            match &state {
                WorkerState::Degraded { error, .. } => {
                    if !was_degraded {
                        record.degraded.fetch_add(1, Ordering::SeqCst);
                    }
                    let mut errors = record.errors.lock().unwrap();
                    if errors.len() < 20 && !errors.contains(error) {
                        errors.push(error.clone());
                    }
                }
                WorkerState::Stopped { .. } | WorkerState::Paused { .. } => {
                    record.halted.store(true, Ordering::SeqCst);
                }
                _ => {}
            }
            was_degraded = matches!(state, WorkerState::Degraded { .. });
            if status.changed().await.is_err() {
                break;
            }
        }
    });
    seen
}

/// Waits (up to `limit`) until `name`'s status satisfies `ready`; fails with the last status.
async fn wait_for_status(
    handle: &CoordinatorHandle,
    name: &str,
    what: &str,
    limit: Duration,
    ready: impl FnMut(&ProjectionSnapshot) -> bool,
) -> ProjectionSnapshot {
    let mut status = handle.watch(name).unwrap();
    match tokio::time::timeout(limit, status.wait_for(ready)).await {
        Ok(Ok(snapshot)) => snapshot.clone(),
        Ok(Err(_)) => panic!("the worker of {name} ended while waiting for {what}"),
        Err(_) => panic!(
            "{what} did not happen within {limit:?}; last status: {:?}",
            handle.projection_status(name).unwrap()
        ),
    }
}

/// What the appender did.
#[derive(Debug, Default)]
struct Appended {
    /// Events committed (each append is one event of a new aggregate).
    committed: AtomicU64,
    /// Failed attempts (each retried until it succeeded).
    failed_attempts: AtomicU64,
    /// Appends whose commit was in doubt (an error) and turned out committed: the retry found
    /// the aggregate's version taken.
    in_doubt_committed: AtomicU64,
}

/// Another client of the store: appends one event every `every` until `stop`, retrying a
/// failed append (the same event, to the same new aggregate, expecting no stream) until it
/// succeeds, so that it knows exactly what was committed. It ends only between appends.
fn spawn_appender(
    store: PostgreSQLEventStore,
    every: Duration,
    stop: CancellationToken,
) -> (Arc<Appended>, tokio::task::JoinHandle<()>) {
    let appended = Arc::new(Appended::default());
    let record = Arc::clone(&appended);
    let task = tokio::spawn(async move {
        let mut n = 1_000_000;
        while !stop.is_cancelled() {
            n += 1;
            let aggregate = Uuid::new_v4();
            let events = ticks_of(aggregate, [n]);
            let mut attempts = 0;
            loop {
                attempts += 1;
                let outcome = tokio::time::timeout(
                    Duration::from_secs(5),
                    store.append(aggregate, ExpectedVersion::NoStream, events.clone()),
                )
                .await;
                match outcome {
                    Ok(Ok(_)) => {
                        record.committed.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    // An earlier attempt committed after all.
                    Ok(Err(AppendError::Conflict { actual: 1, .. })) if attempts > 1 => {
                        record.committed.fetch_add(1, Ordering::SeqCst);
                        record.in_doubt_committed.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    Ok(Err(_)) | Err(_) => {
                        record.failed_attempts.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            tokio::time::sleep(every).await;
        }
    });
    (appended, task)
}

/// Waits until `name` is live at the store's highest position, then checks that every stored
/// event was applied exactly once, by the read model and the checkpoint, with no dead letter.
async fn assert_exactly_once(rig: &Rig, handle: &CoordinatorHandle, committed: u64) -> Tally {
    let stored = rig.tally(LEDGER).await;
    assert_eq!(
        stored.events,
        i64::try_from(committed).unwrap(),
        "the store holds exactly the events the appenders know they committed"
    );
    // Appends cut off by a fault may leave gaps, and so may a crash (the sequence logs its
    // values ahead): the head is at least the number of events.
    assert!(
        stored.head >= stored.events,
        "positions are unique: head {} below {} events",
        stored.head,
        stored.events
    );
    let head = u64::try_from(stored.head).unwrap();
    let live = wait_for_status(
        handle,
        LEDGER,
        "the projection live at the head",
        CATCH_UP,
        |s| s.state == WorkerState::Live && s.checkpoint.is_some_and(|c| c >= head),
    )
    .await;
    let tally = rig.tally(LEDGER).await;
    let dead_letters = within(
        "reading dead letters",
        STEP,
        faults::dead_letter_summary(&rig.pool),
    )
    .await
    .unwrap();
    let expected = Tally {
        rows: stored.events,
        events: stored.events,
        head: stored.head,
        missing: 0,
        dead_letters: 0,
        checkpoint: Some(stored.head),
        events_processed: Some(stored.events),
    };
    assert_eq!(
        tally, expected,
        "every committed event applied exactly once, none dead-lettered; status {live:?}; \
         dead letters: {dead_letters:#?}"
    );
    tally
}

/// The server stops (fast shutdown: every connection cut, new ones refused) while the
/// coordinator follows the store live and another client keeps appending, and starts again
/// 1.5 s later. The worker reports itself degraded while the server is down and comes back live
/// by itself, without a restart of the coordinator; every event committed (before, during the
/// outage's edges, after) is applied exactly once; nothing is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_database_is_waited_out_and_nothing_is_lost_or_applied_twice() {
    within("the test", Duration::from_secs(60), async {
        let rig = Rig::start(8, Duration::from_secs(1)).await;
        let runner = TransactionalRunner::new(Ledger::new(OnPoison::Apply), rig.unit())
            .retry_policy(NoRetryPolicy);
        let handle = rig.coordinate(runner, 20);
        let seen = follow(&handle, LEDGER);
        let stop_appending = CancellationToken::new();
        let (appended, appender) = spawn_appender(
            rig.store(),
            Duration::from_millis(10),
            stop_appending.clone(),
        );

        within(
            "live tailing before the outage",
            STEP,
            handle.wait_for_checkpoint(LEDGER, 20),
        )
        .await
        .unwrap();
        rig.stop_server().await;
        let down = wait_for_status(
            &handle,
            LEDGER,
            "degraded while the server is down",
            STEP,
            |s| matches!(s.state, WorkerState::Degraded { .. }),
        )
        .await;
        eprintln!("while down: {}", down.state);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let failed_while_down = appended.failed_attempts.load(Ordering::SeqCst);
        rig.start_server_again().await;
        tokio::time::sleep(Duration::from_millis(700)).await;
        stop_appending.cancel();
        within("the appender", STEP, appender).await.unwrap();

        let committed = appended.committed.load(Ordering::SeqCst);
        let tally = assert_exactly_once(&rig, &handle, committed).await;
        eprintln!(
            "committed {committed} events ({} failed attempts, {} in doubt and committed); \
             degraded {} time(s): {:?}; {tally:?}",
            appended.failed_attempts.load(Ordering::SeqCst),
            appended.in_doubt_committed.load(Ordering::SeqCst),
            seen.degraded(),
            seen.errors(),
        );
        assert!(
            failed_while_down > 0,
            "the appender must have failed while the server was down"
        );
        assert!(seen.degraded() >= 1, "the worker never reported degraded");
        assert!(
            !seen.halted.load(Ordering::SeqCst),
            "an outage must not stop the projection"
        );
        let report = within("shutdown", STEP, handle.shutdown(STEP)).await;
        assert!(report.is_ok(), "{report:?}");
    })
    .await;
}

/// Every client backend is terminated (`pg_terminate_backend`) every 150-300 ms while the
/// coordinator works through a backlog of 1,500 events in batches of 50 (2 ms per event, so a
/// batch is in flight most of the time) and another client keeps appending. Each batch cut
/// short is rolled back and tried again: every event is applied exactly once, nothing is
/// dead-lettered, and the worker is live again by itself at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_killed_mid_batch_lose_nothing_and_apply_nothing_twice() {
    within("the test", Duration::from_secs(60), async {
        const BACKLOG: u64 = 1_500;
        let rig = Rig::start(8, Duration::from_secs(1)).await;
        let backlog = within(
            "appending the backlog",
            STEP,
            append_ticks(&rig.store(), 1..=1_500, 50),
        )
        .await
        .unwrap();
        assert_eq!(backlog, BACKLOG);
        let runner = TransactionalRunner::new(
            Ledger::new(OnPoison::Apply).pace(Duration::from_millis(2)),
            rig.unit(),
        )
        .retry_policy(NoRetryPolicy);
        let handle = rig.coordinate(runner, 50);
        let seen = follow(&handle, LEDGER);
        let stop_appending = CancellationToken::new();
        let (appended, appender) = spawn_appender(
            rig.store(),
            Duration::from_millis(20),
            stop_appending.clone(),
        );

        within(
            "the first batch",
            STEP,
            handle.wait_for_checkpoint(LEDGER, 50),
        )
        .await
        .unwrap();
        let mut kills_mid_backlog = 0;
        let mut terminated = 0;
        for _ in 0..12 {
            tokio::time::sleep(Duration::from_millis(fastrand::u64(150..=300))).await;
            let checkpoint = handle.projection_status(LEDGER).unwrap().checkpoint;
            if checkpoint.is_some_and(|c| c >= BACKLOG) {
                break;
            }
            terminated += within(
                "terminating backends",
                STEP,
                rig.cluster.terminate_backends(None),
            )
            .await
            .unwrap();
            kills_mid_backlog += 1;
        }
        stop_appending.cancel();
        within("the appender", STEP, appender).await.unwrap();

        let committed = BACKLOG + appended.committed.load(Ordering::SeqCst);
        let tally = assert_exactly_once(&rig, &handle, committed).await;
        eprintln!(
            "{kills_mid_backlog} kills during the backlog ({terminated} backends); degraded {} \
             time(s): {:?}; appender: {} failed attempts, {} in doubt and committed; {tally:?}",
            seen.degraded(),
            seen.errors(),
            appended.failed_attempts.load(Ordering::SeqCst),
            appended.in_doubt_committed.load(Ordering::SeqCst),
        );
        assert!(
            kills_mid_backlog >= 5,
            "the backlog was applied before the connections could be killed 5 times"
        );
        assert!(
            seen.degraded() >= 1,
            "no kill ever hit the worker (it never reported degraded)"
        );
        assert!(
            !seen.halted.load(Ordering::SeqCst),
            "killed connections must not stop it"
        );
        let report = within("shutdown", STEP, handle.shutdown(STEP)).await;
        assert!(report.is_ok(), "{report:?}");
    })
    .await;
}

/// A handler writes to a table that does not exist (SQLSTATE 42P01): a wrong setup, not the
/// event's fault. The projection stops at that event, with a setup failure naming the table,
/// without retrying it (the default retry policy would wait 2 s first) and without a dead
/// letter; the events before it are committed, the one after it is not applied, the
/// checkpoint stays before it, and it stays stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_table_stops_the_projection_as_a_setup_failure() {
    within("the test", Duration::from_secs(60), async {
        const PROJECTION: &str = "missing_table_audit";
        let rig = Rig::start(8, Duration::from_secs(1)).await;
        let store = rig.store();
        append_ticks(&store, [1, 2], 2).await.unwrap();
        let audit = faults::audited(3);
        let audit_id = audit.event_id();
        let audit_aggregate = audit.metadata().aggregate_id;
        store
            .append(audit_aggregate, ExpectedVersion::NoStream, vec![audit])
            .await
            .unwrap();
        append_ticks(&store, [4], 1).await.unwrap();

        let projection = MissingTableAudit::default();
        let audit_calls = Arc::clone(&projection.audit_calls);
        // The default retry policy (2, 4, 8 s): a setup failure must not wait for it.
        let runner = TransactionalRunner::new(projection, rig.unit());
        let handle = rig.coordinate(runner, 20);
        let seen = follow(&handle, PROJECTION);

        let stopped = wait_for_status(&handle, PROJECTION, "the stop", STEP, |s| {
            matches!(s.state, WorkerState::Stopped { .. })
        })
        .await;
        let WorkerState::Stopped { at } = &stopped.state else {
            unreachable!()
        };
        assert_eq!(at.kind, FailureKind::Setup, "{at}");
        assert!(
            at.error.contains(MISSING_TABLE),
            "the error names the missing table: {at}"
        );
        assert_eq!(at.position, Some(3), "{at}");
        assert_eq!(at.event_id, Some(audit_id), "{at}");
        assert_eq!(at.event_type.as_deref(), Some("faults.audited"), "{at}");

        // It stays stopped, and does not try the event again.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let later = handle.projection_status(PROJECTION).unwrap();
        assert_eq!(later.state, stopped.state, "it stays stopped");
        assert_eq!(audit_calls.load(Ordering::SeqCst), 1, "no retry");
        assert_eq!(seen.degraded(), 0, "a wrong setup is not waited out");

        let tally = rig.tally(PROJECTION).await;
        assert_eq!(tally.dead_letters, 0, "nothing dead-lettered");
        assert_eq!(
            tally.checkpoint,
            Some(2),
            "the checkpoint stays before the event"
        );
        assert_eq!(
            within(
                "reading",
                STEP,
                faults::applied_positions(&rig.pool, PROJECTION)
            )
            .await
            .unwrap(),
            vec![1, 2],
            "the events before it applied, the one after it not"
        );
        let report = within("shutdown", STEP, handle.shutdown(STEP)).await;
        assert!(
            report.projections[0]
                .stopped
                .as_ref()
                .is_some_and(|s| s.kind == FailureKind::Setup),
            "{report:?}"
        );
    })
    .await;
}

/// A read model's error type that forwards to the database error (`#[error(transparent)]`, the
/// usual thiserror wrapper): its source chain holds what `sqlx::Error::Database` holds (the
/// server's error with its SQLSTATE), not the `sqlx::Error` itself.
#[derive(Debug, thiserror::Error)]
enum ReadModelError {
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// Writes a row per tick; at tick 2, the first time only, terminates its own backend first
/// (as an operator or a failover would): SQLSTATE 57P01, "terminating connection due to
/// administrator command", an infrastructure failure.
#[derive(Default)]
struct SelfTerminating {
    terminated: Arc<AtomicBool>,
}

#[projections::projection(name = "self_terminating")]
impl SelfTerminating {
    #[handles(faults::Ticked)]
    async fn ticked(
        &mut self,
        conn: &mut sqlx::PgConnection,
        event: &projections::Envelope<faults::Ticked>,
    ) -> Result<(), ReadModelError> {
        if event.n == 2 && !self.terminated.swap(true, Ordering::SeqCst) {
            sqlx::query("SELECT pg_terminate_backend(pg_backend_pid())")
                .execute(&mut *conn)
                .await?;
        }
        faults::insert(conn, "self_terminating", event).await?;
        Ok(())
    }
}

/// A connection terminated under a handler whose error type wraps `sqlx::Error` transparently
/// is still the infrastructure's failure: waited out and tried again (the event then applies),
/// never dead-lettered. (With no retries and dead letters on failure, misclassifying it as the
/// event's failure dead-letters the event at once.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transparent_database_error_is_still_infrastructure() {
    within("the test", Duration::from_secs(60), async {
        const PROJECTION: &str = "self_terminating";
        let rig = Rig::start(8, Duration::from_secs(1)).await;
        append_ticks(&rig.store(), 1..=3, 1).await.unwrap();
        let projection = SelfTerminating::default();
        let terminated = Arc::clone(&projection.terminated);
        let runner = TransactionalRunner::new(projection, rig.unit()).retry_policy(NoRetryPolicy);
        let handle = rig.coordinate(runner, 20);
        let seen = follow(&handle, PROJECTION);
        let live = wait_for_status(&handle, PROJECTION, "caught up", STEP, |s| {
            s.checkpoint.is_some_and(|c| c >= 3)
        })
        .await;
        assert!(
            terminated.load(Ordering::SeqCst),
            "the backend was terminated"
        );
        let dead_letters = faults::dead_letter_summary(&rig.pool).await.unwrap();
        assert_eq!(
            faults::applied_positions(&rig.pool, PROJECTION)
                .await
                .unwrap(),
            vec![1, 2, 3],
            "every tick applied once, none dead-lettered: {dead_letters:?}; {live:?}"
        );
        assert!(dead_letters.is_empty(), "{dead_letters:?}");
        assert!(
            seen.degraded() >= 1,
            "the worker waited out the terminated connection"
        );
        within("shutdown", STEP, handle.shutdown(STEP)).await;
    })
    .await;
}
