//! Live latency benchmark: how long after an append commits do live projections have the event
//! applied, with 20 projections (and, for comparison, 1) following the store while events are
//! appended at a steady rate.
//!
//! Run with `cargo run --release -p projections-benches --features postgres --bin live`.
//! Arguments: `memory` or `postgres` (default both), `--seconds N` (the 20-projection run,
//! default 60; the 1-projection run lasts a third of it, at least 5 s), `--rate N` (events per
//! second, default 1,000), `--async-appends` (the appender's PostgreSQL sessions commit with
//! `synchronous_commit = off`; the projections' stay durable). PostgreSQL runs against
//! `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`) in the schema
//! `projections_bench_live`, dropped and migrated afresh before every run.
//!
//! What runs:
//! - `ProjectionCoordinator::new(registry, store).start()` with its defaults (batches of 100,
//!   tracing on) and a 1 s poll interval, so that live latency comes from the stores'
//!   notifications (a `watch` in memory, `LISTEN`/`NOTIFY` on PostgreSQL), not from polling.
//! - memory: `InMemoryEventStore`; each projection is a `#[projection]` behind a
//!   `ProjectionRunner` with its default in-memory repositories, recording in its handler when
//!   it applied each event.
//! - postgres: `PostgreSQLEventStore`; each projection is a `TransactionalRunner` over
//!   `PostgreSQLTransactionUnit::with_schema` (the runner users deploy for a database read model),
//!   whose handler inserts one row per event into the projection's own table. The projections
//!   share one pool with one connection per projection plus one for the listener and one
//!   spare, so that no worker waits for a connection. Two instants are recorded per event:
//!   when the handler's `INSERT` returned (inside the open transaction) and when the batch's
//!   `COMMIT` returned (the read model visible). The second comes from a `TransactionUnit`
//!   that delegates everything to `PostgreSQLTransactionUnit` and notes the time after `commit`.
//! - The appender runs on its own thread and Tokio runtime (as another process would), so the
//!   workers' load never delays its clock: one event (one new aggregate) per append, one
//!   append started per tick of a 1 ms `tokio::time::interval` with
//!   `MissedTickBehavior::Burst`. Tokio's timer has a resolution of 1 ms, so with `Delay` every
//!   late tick would lower the rate; `Burst` keeps the number of events per second. Each append
//!   is its own task, up to 8 in flight (PostgreSQL appends overlap when one takes longer than
//!   a tick, as an application's requests would). The commit instant is taken when `append`
//!   returns on PostgreSQL, and when it is called in memory (see `Backend::commit_instant`).
//!
//! Latency = apply instant - commit instant, for every (event, projection). The first 2 s of
//! events are warm-up and left out. At the end every projection must have applied every event,
//! or the program fails. Output: one markdown table row per (backend, projections, instant),
//! then a note per run: the rate reached, how long appends took, how long after the last
//! append everything was applied, and a warning when the appender missed the rate or the
//! projections fell behind (the row then measures a backlog, not the live path).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use projections::checkpoint::CheckpointUpdate;
use projections::coordinator::{ProjectionCoordinator, WorkerState};
use projections::dlq::FailedEvent;
use projections::postgres::{self, PostgreSQLEventStore, Schema};
use projections::storage::{BoxFuture, StorageError};
use projections::transactional::{PostgreSQLTransactionUnit, TransactionUnit, TransactionalRunner};
use projections::{
    CheckpointRepository, DLQRepository, Envelope, Event, EventStore, ExpectedVersion,
    InMemoryEventStore, PgConnection, ProjectionRegistry, projection,
};
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use tokio::time::MissedTickBehavior;
use uuid::Uuid;

const SCHEMA: &str = "projections_bench_live";
const PROJECTIONS: usize = 20;
const DEFAULT_SECONDS: u64 = 60;
const DEFAULT_RATE: u64 = 1_000;
const WARM_UP_SECONDS: u64 = 2;
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Appends in flight at once (and connections of the appender's pool). When they are all
/// waiting, the ticks wait too, then `Burst` catches up: the rate falls short rather than an
/// unbounded queue of appends building up.
const APPENDS_IN_FLIGHT: u32 = 8;
/// How long the projections may take, after the last append, to apply everything.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

// ---- Clock and recording ----------------------------------------------------------------

static START: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Nanoseconds since the program started, never 0 (0 means "not yet").
fn now_ns() -> u64 {
    START.elapsed().as_nanos() as u64 + 1
}

/// What one projection saw, per event sequence number.
struct Recorder {
    /// When the handler applied event `seq` (for PostgreSQL: its `INSERT` returned, not yet
    /// committed).
    handled: Box<[AtomicU64]>,
    /// When the transaction holding event `seq` committed (PostgreSQL only).
    committed: Box<[AtomicU64]>,
    /// Events handled in the transaction in hand.
    pending: Mutex<Vec<u64>>,
}

impl Recorder {
    fn new(events: usize) -> Arc<Self> {
        let zeros = || (0..events).map(|_| AtomicU64::new(0)).collect();
        Arc::new(Self {
            handled: zeros(),
            committed: zeros(),
            pending: Mutex::new(Vec::with_capacity(1_024)),
        })
    }

    fn handled(&self, seq: u64) {
        self.handled[seq as usize].store(now_ns(), Ordering::Relaxed);
    }

    fn handled_in_transaction(&self, seq: u64) {
        self.handled(seq);
        self.pending.lock().unwrap().push(seq);
    }

    fn committed(&self) {
        let at = now_ns();
        for seq in self.pending.lock().unwrap().drain(..) {
            self.committed[seq as usize].store(at, Ordering::Relaxed);
        }
    }

    fn rolled_back(&self) {
        self.pending.lock().unwrap().clear();
    }
}

// ---- The event and the projections -----------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(aggregate = "Probe")]
struct Tick {
    seq: u64,
}

/// One in-memory and one PostgreSQL projection type per name: a projection's name is its
/// type's, and 20 live projections need 20 names.
macro_rules! live_projections {
    ($(($memory:ident, $database:ident, $table:literal)),* $(,)?) => {
        $(
            struct $memory {
                recorder: Arc<Recorder>,
            }

            #[projection]
            impl $memory {
                #[handles(Tick)]
                async fn tick(&mut self, event: &Envelope<Tick>) {
                    self.recorder.handled(event.seq);
                }
            }

            struct $database {
                recorder: Arc<Recorder>,
                insert: String,
            }

            #[projection]
            impl $database {
                #[handles(Tick)]
                async fn tick(
                    &mut self,
                    conn: &mut PgConnection,
                    event: &Envelope<Tick>,
                ) -> Result<(), sqlx::Error> {
                    sqlx::query(&self.insert)
                        .bind(event.seq as i64)
                        .bind(event.position().map(|p| p as i64))
                        .execute(&mut *conn)
                        .await?;
                    self.recorder.handled_in_transaction(event.seq);
                    Ok(())
                }
            }
        )*

        /// The read-model table of each PostgreSQL projection, in registration order.
        const TABLES: &[&str] = &[$($table),*];

        /// Registers one in-memory projection per recorder.
        fn register_memory(registry: &mut ProjectionRegistry, recorders: &[Arc<Recorder>]) {
            let mut recorders = recorders.iter().cloned();
            $(
                if let Some(recorder) = recorders.next() {
                    registry.register_projection($memory { recorder }).unwrap();
                }
            )*
            assert!(recorders.next().is_none(), "more recorders than projection types");
        }

        /// Registers one transactional PostgreSQL projection per recorder.
        fn register_database(
            registry: &mut ProjectionRegistry,
            recorders: &[Arc<Recorder>],
            pool: &PgPool,
            schema: &Schema,
        ) {
            let mut recorders = recorders.iter().cloned();
            $(
                if let Some(recorder) = recorders.next() {
                    let unit = Arc::new(TimedUnit {
                        inner: PostgreSQLTransactionUnit::with_schema(pool.clone(), schema),
                        recorder: recorder.clone(),
                    });
                    let insert =
                        format!("INSERT INTO {SCHEMA}.{} (seq, position) VALUES ($1, $2)", $table);
                    let projection = $database { recorder, insert };
                    registry.register(TransactionalRunner::new(projection, unit)).unwrap();
                }
            )*
            assert!(recorders.next().is_none(), "more recorders than projection types");
        }
    };
}

live_projections!(
    (Live01, PgLive01, "live_01"),
    (Live02, PgLive02, "live_02"),
    (Live03, PgLive03, "live_03"),
    (Live04, PgLive04, "live_04"),
    (Live05, PgLive05, "live_05"),
    (Live06, PgLive06, "live_06"),
    (Live07, PgLive07, "live_07"),
    (Live08, PgLive08, "live_08"),
    (Live09, PgLive09, "live_09"),
    (Live10, PgLive10, "live_10"),
    (Live11, PgLive11, "live_11"),
    (Live12, PgLive12, "live_12"),
    (Live13, PgLive13, "live_13"),
    (Live14, PgLive14, "live_14"),
    (Live15, PgLive15, "live_15"),
    (Live16, PgLive16, "live_16"),
    (Live17, PgLive17, "live_17"),
    (Live18, PgLive18, "live_18"),
    (Live19, PgLive19, "live_19"),
    (Live20, PgLive20, "live_20"),
);

/// `PostgreSQLTransactionUnit`, noting when each commit returned.
struct TimedUnit {
    inner: PostgreSQLTransactionUnit,
    recorder: Arc<Recorder>,
}

impl TransactionUnit for TimedUnit {
    type Connection = PgConnection;
    type Transaction = Transaction<'static, Postgres>;

    fn begin(&self) -> BoxFuture<'_, Result<Self::Transaction, StorageError>> {
        self.recorder.rolled_back();
        self.inner.begin()
    }

    fn commit(&self, tx: Self::Transaction) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move {
            self.inner.commit(tx).await?;
            self.recorder.committed();
            Ok(())
        })
    }

    fn rollback(&self, tx: Self::Transaction) -> BoxFuture<'_, Result<(), StorageError>> {
        self.recorder.rolled_back();
        self.inner.rollback(tx)
    }

    fn lock_checkpoint<'a>(
        &'a self,
        tx: &'a mut Self::Transaction,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, StorageError>> {
        self.inner.lock_checkpoint(tx, projection)
    }

    fn write_checkpoint<'a>(
        &'a self,
        tx: &'a mut Self::Transaction,
        projection: &'a str,
        update: &'a CheckpointUpdate,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        self.inner.write_checkpoint(tx, projection, update)
    }

    fn reset_checkpoint<'a>(
        &'a self,
        tx: &'a mut Self::Transaction,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        self.inner.reset_checkpoint(tx, projection)
    }

    fn dead_letter<'a>(
        &'a self,
        tx: &'a mut Self::Transaction,
        failure: &'a FailedEvent,
    ) -> BoxFuture<'a, Result<i64, StorageError>> {
        self.inner.dead_letter(tx, failure)
    }

    fn resolve_dead_letter<'a>(
        &'a self,
        tx: &'a mut Self::Transaction,
        entry_id: i64,
        resolved_by: &'a str,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        self.inner.resolve_dead_letter(tx, entry_id, resolved_by)
    }

    fn checkpoints(&self) -> Arc<dyn CheckpointRepository> {
        self.inner.checkpoints()
    }

    fn dead_letters(&self) -> Arc<dyn DLQRepository> {
        self.inner.dead_letters()
    }
}

// ---- The appender -----------------------------------------------------------------------

/// One append: when its tick was due to fire, when `append` was called and when it returned.
#[derive(Clone, Copy, Default)]
struct Append {
    scheduled: u64,
    started: u64,
    returned: u64,
}

/// Appends `events` events at `rate` per second on a thread and runtime of its own; returns
/// the appends by sequence number.
async fn append_steadily(store: Arc<dyn EventStore>, events: usize, rate: u64) -> Vec<Append> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("appender".to_owned())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let appends = runtime.block_on(async move {
                let period = Duration::from_nanos(1_000_000_000 / rate);
                let mut interval = tokio::time::interval(period);
                interval.set_missed_tick_behavior(MissedTickBehavior::Burst);
                let mut appends = vec![Append::default(); events];
                let mut tasks = tokio::task::JoinSet::new();
                let in_flight = Arc::new(tokio::sync::Semaphore::new(APPENDS_IN_FLIGHT as usize));
                for seq in 0..events as u64 {
                    // When this tick was due: `Burst` keeps the ticks due every period from
                    // the first, however late they fire.
                    let due = interval.tick().await.into_std();
                    let scheduled = due.saturating_duration_since(*START).as_nanos() as u64 + 1;
                    let store = Arc::clone(&store);
                    let permit = Arc::clone(&in_flight).acquire_owned().await.unwrap();
                    tasks.spawn(async move {
                        let id = Uuid::new_v4();
                        let event = Envelope::new(id, Tick { seq }).into();
                        let started = now_ns();
                        store
                            .append(id, ExpectedVersion::NoStream, vec![event])
                            .await
                            .unwrap_or_else(|e| panic!("append {seq} failed: {e}"));
                        let returned = now_ns();
                        drop(permit);
                        (
                            seq,
                            Append {
                                scheduled,
                                started,
                                returned,
                            },
                        )
                    });
                    while let Some(finished) = tasks.try_join_next() {
                        let (seq, append) = finished.unwrap();
                        appends[seq as usize] = append;
                    }
                }
                while let Some(finished) = tasks.join_next().await {
                    let (seq, append) = finished.unwrap();
                    appends[seq as usize] = append;
                }
                appends
            });
            let _ = done.send(appends);
        })
        .unwrap();
    result.await.expect("the appender thread panicked")
}

// ---- One run ----------------------------------------------------------------------------

/// How many events, how many of them are warm-up, and how fast they are appended.
#[derive(Clone, Copy)]
struct Load {
    events: usize,
    warm_up: usize,
    rate: u64,
}

#[derive(Clone, Copy, PartialEq)]
enum Backend {
    Memory,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Postgres => "postgres",
        }
    }

    /// When `append` committed, as far as the appender can tell.
    ///
    /// - memory: when `append` was called. The append is a synchronous call of about a
    ///   microsecond that wakes the workers before it returns; on a busy machine the woken
    ///   worker often preempts the appender's thread, so the instant after the call is late
    ///   (in smoke runs, 15% to 45% of the events were applied before it).
    /// - postgres: when `append` returned, i.e. the server acknowledged the `COMMIT`. The
    ///   notification is sent at commit, and a worker still has to read the event before it
    ///   can apply it.
    fn commit_instant(self, append: &Append) -> u64 {
        match self {
            Self::Memory => append.started,
            Self::Postgres => append.returned,
        }
    }
}

/// What one run measured.
struct Run {
    backend: Backend,
    projections: usize,
    /// Events counted (after the warm-up).
    events: usize,
    /// Appended per second over the whole run.
    rate: f64,
    /// Applied per second by each projection, from the first tick to the last application.
    applied_rate: f64,
    /// From the last append's return to every projection's checkpoint at the head.
    drain: Duration,
    /// The server and its settings, if any.
    settings: String,
    /// Tick to commit of each append (after the warm-up).
    append: Stats,
    /// Commit to handler, per (event, projection).
    handled: Stats,
    /// Commit to the projection's own commit, per (event, projection) (PostgreSQL).
    committed: Option<Stats>,
}

struct Stats {
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
    /// Samples where the projection's instant came before `append` returned (counted as 0).
    early: usize,
}

impl Stats {
    fn of(mut samples: Vec<u64>, early: usize) -> Self {
        assert!(!samples.is_empty(), "no samples after the warm-up");
        samples.sort_unstable();
        // Nearest rank.
        let rank = |q: f64| samples[((q * samples.len() as f64).ceil() as usize).max(1) - 1];
        Self {
            p50: rank(0.50),
            p99: rank(0.99),
            p999: rank(0.999),
            max: samples[samples.len() - 1],
            early,
        }
    }
}

/// Latencies from each append's commit to `instants`, for the events after the warm-up.
fn latencies(
    commits: &[u64],
    warm_up: usize,
    recorders: &[Arc<Recorder>],
    instants: impl Fn(&Recorder) -> &[AtomicU64],
) -> Stats {
    let mut samples = Vec::with_capacity((commits.len() - warm_up) * recorders.len());
    let mut early = 0;
    for recorder in recorders {
        let applied = instants(recorder);
        for (&commit, at) in commits.iter().zip(applied).skip(warm_up) {
            let at = at.load(Ordering::Relaxed);
            if at < commit {
                early += 1;
            }
            samples.push(at.saturating_sub(commit));
        }
    }
    Stats::of(samples, early)
}

/// Runs the coordinator over `store` with the registered projections while `append_store`
/// receives `events` events at `rate` per second; checks that every projection applied every
/// event and returns the appends. `stalled` says why, when the projections do not finish.
async fn measure(
    registry: ProjectionRegistry,
    store: Arc<dyn EventStore>,
    append_store: Arc<dyn EventStore>,
    recorders: &[Arc<Recorder>],
    transactional: bool,
    load: Load,
    stalled: impl AsyncFnOnce() -> String,
) -> (Vec<Append>, Duration) {
    let events = load.events;
    let handle = ProjectionCoordinator::new(registry, store)
        .poll_interval(POLL_INTERVAL)
        .start()
        .expect("no two event types share a wire name");
    let names: Vec<String> = handle.names().iter().map(|n| (*n).to_owned()).collect();
    for name in &names {
        let mut status = handle.watch(name).unwrap();
        let live = tokio::time::timeout(
            Duration::from_secs(30),
            status.wait_for(|s| s.state == WorkerState::Live),
        )
        .await
        .map(|live| live.is_ok());
        assert!(
            live == Ok(true),
            "projection {name} did not go live: {:?}",
            *status.borrow()
        );
    }

    let appends = append_steadily(append_store, events, load.rate).await;

    // Positions are consecutive from 1 in a fresh store, so the last is `events`.
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        for name in &names {
            handle
                .wait_for_checkpoint(name, events as u64)
                .await
                .unwrap();
        }
    })
    .await;
    if drained.is_err() {
        let behind: Vec<String> = handle
            .status()
            .iter()
            .filter(|s| s.checkpoint < Some(events as u64))
            .map(|s| format!("{} at {:?} ({:?})", s.name, s.checkpoint, s.state))
            .collect();
        panic!(
            "{} s after the last append, projections still short of position {events}: {}; {}",
            DRAIN_TIMEOUT.as_secs(),
            behind.join(", "),
            stalled().await
        );
    }
    let last_append = appends.iter().map(|a| a.returned).max().unwrap_or(0);
    let drain = Duration::from_nanos(now_ns().saturating_sub(last_append));
    let report = handle.shutdown(Duration::from_secs(10)).await;
    assert!(report.is_ok(), "a projection failed: {report:?}");
    for projection in &report.projections {
        assert_eq!(
            projection.applied, events as u64,
            "projection {} applied {} of {events} events",
            projection.name, projection.applied
        );
    }
    for (name, recorder) in names.iter().zip(recorders) {
        let missing = |instants: &[AtomicU64]| {
            instants
                .iter()
                .filter(|at| at.load(Ordering::Relaxed) == 0)
                .count()
        };
        let unhandled = missing(&recorder.handled);
        assert_eq!(
            unhandled, 0,
            "projection {name} never handled {unhandled} events"
        );
        if transactional {
            let uncommitted = missing(&recorder.committed);
            assert_eq!(
                uncommitted, 0,
                "projection {name}: {uncommitted} events never committed"
            );
        }
    }
    (appends, drain)
}

fn summarize(
    backend: Backend,
    recorders: &[Arc<Recorder>],
    (appends, drain): (Vec<Append>, Duration),
    warm_up: usize,
    transactional: bool,
) -> Run {
    let appends = &appends[..];
    let first = appends[0].scheduled;
    let last = appends.iter().map(|a| a.returned).max().unwrap();
    let rate = appends.len() as f64 / ((last - first) as f64 / 1e9);
    let append = Stats::of(
        appends[warm_up..]
            .iter()
            .map(|a| a.returned.saturating_sub(a.scheduled))
            .collect(),
        0,
    );
    let commits: Vec<u64> = appends.iter().map(|a| backend.commit_instant(a)).collect();
    let last_applied = recorders
        .iter()
        .flat_map(|r| r.handled.iter().chain(r.committed.iter()))
        .map(|at| at.load(Ordering::Relaxed))
        .max()
        .unwrap();
    let applied_rate = appends.len() as f64 / ((last_applied - first) as f64 / 1e9);
    Run {
        backend,
        projections: recorders.len(),
        events: appends.len() - warm_up,
        rate,
        applied_rate,
        append,
        drain,
        settings: String::new(),
        handled: latencies(&commits, warm_up, recorders, |r| &r.handled),
        committed: transactional.then(|| latencies(&commits, warm_up, recorders, |r| &r.committed)),
    }
}

async fn run_memory(projections: usize, load: Load) -> Run {
    let recorders: Vec<_> = (0..projections)
        .map(|_| Recorder::new(load.events))
        .collect();
    let store = Arc::new(InMemoryEventStore::new());
    let mut registry = ProjectionRegistry::new();
    register_memory(&mut registry, &recorders);
    let measured = measure(
        registry,
        store.clone(),
        store,
        &recorders,
        false,
        load,
        async || String::new(),
    )
    .await;
    summarize(Backend::Memory, &recorders, measured, load.warm_up, false)
}

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Drops and re-creates the benchmark's schema: the crate's tables and one read-model table
/// per projection. Then forces a server checkpoint, so that none starts during the run.
async fn reset_schema(pool: &PgPool) -> Schema {
    sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        .execute(pool)
        .await
        .unwrap();
    let schema = Schema::named(SCHEMA).unwrap();
    postgres::migrate_schema(pool, &schema).await.unwrap();
    let tables: String = TABLES
        .iter()
        .map(|table| {
            format!(
                "CREATE TABLE {SCHEMA}.{table} (
                     seq        bigint      PRIMARY KEY,
                     position   bigint      NOT NULL,
                     applied_at timestamptz NOT NULL DEFAULT now()
                 );"
            )
        })
        .collect();
    sqlx::raw_sql(&tables).execute(pool).await.unwrap();
    if let Err(error) = sqlx::raw_sql("CHECKPOINT").execute(pool).await {
        eprintln!("(could not force a CHECKPOINT: {error})");
    }
    schema
}

/// Which transactions hold the read horizon back.
async fn horizon_holders(pool: &PgPool) -> String {
    let holders: Vec<(i32, String, f64, String)> = sqlx::query_as(
        "SELECT pid, coalesce(state, ''), extract(epoch FROM now() - xact_start)::float8,
                left(coalesce(query, ''), 80)
         FROM pg_stat_activity
         WHERE pid <> pg_backend_pid()
           AND (backend_xid IS NOT NULL OR backend_xmin IS NOT NULL)
           AND xact_start < now() - interval '1 second'
         ORDER BY xact_start",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    if holders.is_empty() {
        return "no transaction older than 1 s is open in the cluster".to_owned();
    }
    format!(
        "the read horizon is held by: {}",
        holders
            .iter()
            .map(|(pid, state, age, query)| format!(
                "pid {pid} ({state}, transaction open {age:.0} s, {query:?})"
            ))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The server's version and commit setting, for the output.
async fn server_settings(pool: &PgPool) -> String {
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(pool)
        .await
        .unwrap();
    let synchronous_commit: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(pool)
        .await
        .unwrap();
    format!("PostgreSQL {version}, synchronous_commit = {synchronous_commit}")
}

async fn run_postgres(url: &str, projections: usize, load: Load, async_appends: bool) -> Run {
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {url}: {e}; set DATABASE_URL"));
    let schema = reset_schema(&admin).await;
    let settings = server_settings(&admin).await;

    // One connection per worker, one for the listener, one spare.
    let pool = PgPoolOptions::new()
        .max_connections(projections as u32 + 2)
        .connect(url)
        .await
        .unwrap();
    let mut append_options = PgConnectOptions::from_str(url).unwrap();
    if async_appends {
        append_options = append_options.options([("synchronous_commit", "off")]);
    }
    let append_pool = PgPoolOptions::new()
        .max_connections(APPENDS_IN_FLIGHT)
        .connect_with(append_options)
        .await
        .unwrap();
    let store = Arc::new(PostgreSQLEventStore::with_schema(
        pool.clone(),
        schema.clone(),
    ));
    let append_store = Arc::new(PostgreSQLEventStore::with_schema(
        append_pool.clone(),
        schema.clone(),
    ));

    let recorders: Vec<_> = (0..projections)
        .map(|_| Recorder::new(load.events))
        .collect();
    let mut registry = ProjectionRegistry::new();
    register_database(&mut registry, &recorders, &pool, &schema);
    let measured = measure(
        registry,
        store.clone(),
        append_store,
        &recorders,
        true,
        load,
        async || horizon_holders(&admin).await,
    )
    .await;
    drop(store);
    pool.close().await;
    append_pool.close().await;
    admin.close().await;
    let mut run = summarize(Backend::Postgres, &recorders, measured, load.warm_up, true);
    run.settings = format!(
        "{settings}{}",
        if async_appends { " (appends: off)" } else { "" }
    );
    run
}

// ---- Main -------------------------------------------------------------------------------

struct Args {
    backends: Vec<Backend>,
    seconds: u64,
    rate: u64,
    /// PostgreSQL appends with `synchronous_commit = off`.
    async_appends: bool,
}

impl Args {
    fn from_args() -> Self {
        let mut backends = Vec::new();
        let mut seconds = DEFAULT_SECONDS;
        let mut rate = DEFAULT_RATE;
        let mut async_appends = false;
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "memory" => backends.push(Backend::Memory),
                "postgres" => backends.push(Backend::Postgres),
                "--seconds" => {
                    seconds = args
                        .next()
                        .and_then(|n| n.parse().ok())
                        .expect("--seconds takes a number");
                }
                "--async-appends" => async_appends = true,
                "--rate" => {
                    rate = args
                        .next()
                        .and_then(|n| n.parse().ok())
                        .expect("--rate takes a number");
                }
                other => panic!(
                    "unknown argument `{other}`; expected memory, postgres, --seconds N, --rate N, \
                     --async-appends"
                ),
            }
        }
        assert!(
            seconds > WARM_UP_SECONDS,
            "--seconds must exceed the {WARM_UP_SECONDS} s warm-up"
        );
        assert!(
            (1..=1_000_000).contains(&rate),
            "--rate must be 1 to 1,000,000"
        );
        if backends.is_empty() {
            backends = vec![Backend::Memory, Backend::Postgres];
        }
        Self {
            backends,
            seconds,
            rate,
            async_appends,
        }
    }
}

fn ms(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1e6)
}

fn row(run: &Run, at: &str, stats: &Stats) -> String {
    format!(
        "| {} | {} | {at} | {} | {} | {} | {} | {} |",
        run.backend.name(),
        run.projections,
        run.events,
        ms(stats.p50),
        ms(stats.p99),
        ms(stats.p999),
        ms(stats.max),
    )
}

fn main() {
    LazyLock::force(&START);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}

async fn run() {
    let args = Args::from_args();
    let url = database_url();
    let short_seconds = (args.seconds / 3).max(5).min(args.seconds);
    println!(
        "Live latency, append commit to applied: {} events/s, {PROJECTIONS} projections for {} s \
         and 1 for {short_seconds} s, first {WARM_UP_SECONDS} s left out, poll interval {} s\n",
        args.rate,
        args.seconds,
        POLL_INTERVAL.as_secs()
    );
    println!(
        "| backend | projections | applied at | events | p50 ms | p99 ms | p99.9 ms | max ms |"
    );
    println!("|---|---:|---|---:|---:|---:|---:|---:|");
    let warm_up = (WARM_UP_SECONDS * args.rate) as usize;
    let mut notes = Vec::new();
    for &backend in &args.backends {
        for (projections, seconds) in [(PROJECTIONS, args.seconds), (1, short_seconds)] {
            let load = Load {
                events: (seconds * args.rate) as usize,
                warm_up,
                rate: args.rate,
            };
            let run = match backend {
                Backend::Memory => run_memory(projections, load).await,
                Backend::Postgres => {
                    run_postgres(&url, projections, load, args.async_appends).await
                }
            };
            match &run.committed {
                Some(committed) => {
                    println!("{}", row(&run, "commit", committed));
                    println!("{}", row(&run, "handler (uncommitted)", &run.handled));
                }
                None => println!("{}", row(&run, "handler", &run.handled)),
            }
            notes.push(note(&run, args.rate));
        }
    }
    println!();
    for note in notes {
        println!("{note}");
    }
}

/// What else a run showed: the append side, how long the projections took to finish after
/// the last append, and anything that makes the row suspect.
fn note(run: &Run, target_rate: u64) -> String {
    let mut note = format!(
        "- {} x{}{}: appended {:.0} events/s; append (tick due to return) p50 {} ms, p99 {} ms, \
         max {} ms; all applied {} ms after the last append",
        run.backend.name(),
        run.projections,
        if run.settings.is_empty() {
            String::new()
        } else {
            format!(" ({})", run.settings)
        },
        run.rate,
        ms(run.append.p50),
        ms(run.append.p99),
        ms(run.append.max),
        ms(run.drain.as_nanos() as u64),
    );
    let early = run.handled.early + run.committed.as_ref().map_or(0, |c| c.early);
    if early > 0 {
        note.push_str(&format!(
            "; {early} samples applied before the commit instant (counted as 0)"
        ));
    }
    if run.applied_rate < 0.95 * run.rate {
        note.push_str(&format!(
            "\n  WARNING: each projection applied only {:.0} events/s: they fell behind, so this \
             row measures a backlog, not the live path",
            run.applied_rate
        ));
    }
    if run.rate < 0.95 * target_rate as f64 {
        note.push_str(&format!(
            "\n  WARNING: the appender reached {:.0} of {target_rate} events/s; this row is not \
             at the target rate",
            run.rate
        ));
    }
    note
}
