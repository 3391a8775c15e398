//! The PostgreSQL backend against a real server (`DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`): the gap-safe read horizon (appends in flight hold
//! readers back, other transactions do not), concurrent writers, undecodable rows, migrations,
//! the in-transaction helpers, and the storage conformance suite.
//!
//! Run with `cargo test -p projections-tests --features postgres --test postgres`. Every test
//! fails, rather than skips, when the server cannot be reached.
//!
//! Isolation: the database is shared with other tests running at the same time, so nothing
//! here truncates a shared table. Each test works in a schema of its own
//! (`projections_test_<unix seconds>_<random>`), created by `migrate_schema` and dropped when
//! the test passes; the conformance suite shares one such schema per test binary. Schemas of
//! this kind older than six hours (left by failed tests and by the conformance schema, which no
//! test can drop after the last check) are dropped at start.
//! `default_schema_migrations_*` is the only test that touches the `search_path` (`public`):
//! it applies the crate's migrations there, as an application would.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod conformance;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::SubsecRound;
use projections::checkpoint::CheckpointUpdate;
use projections::dlq::{DLQFilter, FailedEvent};
use projections::postgres::{
    self, MIGRATIONS_TABLE, PostgreSQLCheckpointRepository, PostgreSQLDLQRepository,
    PostgreSQLEventStore, Schema,
};
use projections::store::{AppendError, ReadFilter, TenantFilter};
use projections::{
    AnyEvent, CheckpointRepository, DLQRepository, DLQStatus, DecodeError, Envelope, EventStore,
    ExpectedVersion, FailureKind, Halt, StoppedAt, StorageError, StoredEvent,
};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgPool};
use tokio::sync::OnceCell;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

const SCHEMA_PREFIX: &str = "projections_test_";

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A pool on the test server; panics (fails the test) when the server cannot be reached.
async fn connect(max_connections: u32) -> PgPool {
    let url = database_url();
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

/// A fresh schema, migrated, for one test.
#[derive(Clone)]
struct TestSchema {
    pool: PgPool,
    schema: Schema,
    name: String,
}

impl TestSchema {
    async fn new(max_connections: u32) -> Self {
        let pool = connect(max_connections).await;
        drop_stale_schemas(&pool).await;
        let name = fresh_schema_name();
        let schema = Schema::named(&name).unwrap();
        postgres::migrate_schema(&pool, &schema).await.unwrap();
        Self { pool, schema, name }
    }

    fn store(&self) -> PostgreSQLEventStore {
        PostgreSQLEventStore::with_schema(self.pool.clone(), self.schema.clone())
    }

    fn table(&self, table: &str) -> String {
        format!("\"{}\".{table}", self.name)
    }

    /// Drops the schema; called at the end of a test that passed.
    async fn drop(self) {
        sqlx::raw_sql(&format!("DROP SCHEMA \"{}\" CASCADE", self.name))
            .execute(&self.pool)
            .await
            .unwrap();
        self.pool.close().await;
    }
}

fn fresh_schema_name() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let random = &Uuid::new_v4().simple().to_string()[..12];
    format!("{SCHEMA_PREFIX}{seconds}_{random}")
}

/// Drops the test schemas of runs more than six hours old (a failed test leaves its schema, and
/// so does every run's conformance schema).
async fn drop_stale_schemas(pool: &PgPool) {
    static ONCE: OnceCell<()> = OnceCell::const_new();
    ONCE.get_or_init(|| async {
        let names: Vec<String> =
            sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE $1")
                .bind(format!("{SCHEMA_PREFIX}%"))
                .fetch_all(pool)
                .await
                .unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        for name in names {
            let created = name
                .strip_prefix(SCHEMA_PREFIX)
                .and_then(|rest| rest.split('_').next())
                .and_then(|seconds| seconds.parse::<u64>().ok());
            if created.is_some_and(|created| created + 6 * 3600 < now)
                && Schema::named(&name).is_ok()
            {
                let _ = sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                    .execute(pool)
                    .await;
            }
        }
    })
    .await;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, projections::Event)]
#[event(name = "pg_tests.deposited", aggregate = "PgAccount")]
struct Deposited {
    amount: i64,
}

fn deposit(aggregate: Uuid, amount: i64) -> AnyEvent {
    AnyEvent::new(Envelope::new(aggregate, Deposited { amount }))
}

fn deposits(aggregate: Uuid, count: usize) -> Vec<AnyEvent> {
    (0..count).map(|n| deposit(aggregate, n as i64)).collect()
}

fn positions(events: &[StoredEvent]) -> Vec<u64> {
    events.iter().map(|e| e.position().unwrap()).collect()
}

fn event_ids(events: &[StoredEvent]) -> Vec<Uuid> {
    events
        .iter()
        .map(|e| e.event().unwrap().event_id())
        .collect()
}

/// Waits until the head reaches `position`.
async fn wait_head(store: &PostgreSQLEventStore, position: u64) -> u64 {
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let head = store.head_position().await.unwrap();
            if head >= position {
                return head;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("position {position} did not become readable"))
}

/// Inserts one event row by hand, as a writer other than the store would, at `position` (or,
/// when `None`, at the position the column's default takes, which registers the transaction
/// as a writer of events), on `conn` and in its transaction.
async fn insert_row(
    conn: &mut sqlx::PgConnection,
    schema: &TestSchema,
    position: Option<i64>,
    event_type: &str,
    payload: &str,
    metadata: &str,
    event_version: i32,
) -> (i64, Uuid) {
    let event_id = Uuid::new_v4();
    let position: i64 = sqlx::query_scalar(&format!(
        "INSERT INTO {events} (
             position, event_id, aggregate_id, aggregate_type, aggregate_version, event_type,
             event_version, payload, metadata, correlation_id, occurred_at
         )
         SELECT coalesce($1::bigint, {next}()), $2, $3, 'PgAccount', 1, $4,
                $5, $6::jsonb, $7::jsonb, $8, now()
         RETURNING position",
        next = schema.table("projection_next_position"),
        events = schema.table("projection_events"),
    ))
    .bind(position)
    .bind(event_id)
    .bind(Uuid::new_v4())
    .bind(event_type)
    .bind(event_version)
    .bind(payload)
    .bind(metadata)
    .bind(Uuid::new_v4())
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    (position, event_id)
}

// ---------------------------------------------------------------------------------------------
// (a) The read horizon: out-of-order commits
// ---------------------------------------------------------------------------------------------

/// Writer A inserts an event by hand (the position from the column's default) but does not
/// commit; writer B appends after it and commits. Until A commits, a reader sees neither and
/// the head stays before both, while the backlog counts B's events as committed and names A's
/// backend as what holds them back; then the reader sees both, in position order.
#[tokio::test]
async fn reader_never_passes_a_transaction_in_flight() {
    let t = TestSchema::new(6).await;
    let store = t.store();
    let earlier = Uuid::new_v4();
    let before = store
        .append(earlier, ExpectedVersion::NoStream, deposits(earlier, 2))
        .await
        .unwrap();
    let head_before = wait_head(&store, before.last_position).await;
    assert_eq!(head_before, before.last_position);

    // Writer A: its event, in a transaction left open.
    let mut conn_a = t.pool.acquire().await.unwrap();
    let a_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *conn_a)
        .await
        .unwrap();
    let mut tx_a = conn_a.begin().await.unwrap();
    let payload = serde_json::to_string(&Deposited { amount: 7 }).unwrap();
    let (a_position, a_id) =
        insert_row(&mut tx_a, &t, None, "pg_tests.deposited", &payload, "{}", 1).await;

    // Writer B: appends after A and commits.
    let b_aggregate = Uuid::new_v4();
    let b_events = deposits(b_aggregate, 2);
    let b = store
        .append(b_aggregate, ExpectedVersion::NoStream, b_events.clone())
        .await
        .unwrap();
    assert!(b.first_position > a_position as u64);

    // B is committed and visible to a plain query, but no reader may pass A.
    let committed: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {} WHERE position > $1",
        t.table("projection_events")
    ))
    .bind(head_before as i64)
    .fetch_one(&t.pool)
    .await
    .unwrap();
    assert_eq!(committed, 2, "B's events are committed");
    for _ in 0..5 {
        assert!(
            store.read_all(head_before, 100).await.unwrap().is_empty(),
            "read_all passed a transaction in flight"
        );
        assert_eq!(store.head_position().await.unwrap(), head_before);
        let backlog = store.backlog(head_before, &[]).await.unwrap();
        assert_eq!(backlog.events, 2, "lag counts B's committed events");
        assert_eq!(backlog.head_position, b.last_position);
        let hold = backlog
            .held_back
            .expect("the backlog names what holds B back");
        assert_eq!(hold.pid, Some(a_pid));
        assert_eq!(hold.events, 2);
        assert!(hold.position <= a_position as u64);
        assert!(hold.since.is_some());
        assert!(
            hold.query.as_deref().unwrap().starts_with("INSERT INTO"),
            "{hold}"
        );
        // A reader filtering on another type has nothing waiting.
        let other = store.backlog(head_before, &["other.type"]).await.unwrap();
        assert_eq!((other.events, other.held_back), (0, None));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    tx_a.commit().await.unwrap();
    wait_head(&store, b.last_position).await;
    assert_eq!(
        store.backlog(head_before, &[]).await.unwrap().held_back,
        None
    );
    let read = store.read_all(head_before, 100).await.unwrap();
    assert_eq!(
        positions(&read),
        [a_position as u64, b.first_position, b.last_position]
    );
    let b_ids: Vec<Uuid> = b_events.iter().map(AnyEvent::event_id).collect();
    assert_eq!(event_ids(&read), [vec![a_id], b_ids].concat());
    t.drop().await;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, projections::Event)]
#[event(name = "pg_tests.withdrawn", aggregate = "PgAccount")]
struct Withdrawn {
    amount: i64,
}

fn withdrawal(aggregate: Uuid, amount: i64, tenant: Uuid) -> AnyEvent {
    AnyEvent::new(Envelope::new(aggregate, Withdrawn { amount }).with_tenant(tenant))
}

/// Filtered reads stop where `read_all` stops. Writer A (a deposit) is in flight; writer B
/// appends withdrawals and a deposit after it and commits. Until A commits, no filter returns
/// B's events, and no page reads up to A's position, not even one that selects none of A's
/// type or tenant (moving a checkpoint there would pass A for good); then each filter returns
/// its events, in position order.
#[tokio::test]
async fn filtered_reader_never_passes_a_transaction_in_flight() {
    use projections::Event as _;
    let t = TestSchema::new(6).await;
    let store = t.store();
    let earlier = Uuid::new_v4();
    let before = store
        .append(earlier, ExpectedVersion::NoStream, deposits(earlier, 2))
        .await
        .unwrap();
    let head_before = wait_head(&store, before.last_position).await;

    let mut conn_a = t.pool.acquire().await.unwrap();
    let mut tx_a = conn_a.begin().await.unwrap();
    let payload = serde_json::to_string(&Deposited { amount: 7 }).unwrap();
    let (a_position, a_id) =
        insert_row(&mut tx_a, &t, None, "pg_tests.deposited", &payload, "{}", 1).await;
    let a_position = a_position as u64;

    let tenant = Uuid::new_v4();
    let b_aggregate = Uuid::new_v4();
    let b_events = vec![
        withdrawal(b_aggregate, 1, tenant),
        deposit(b_aggregate, 2),
        withdrawal(b_aggregate, 3, tenant),
    ];
    let b_ids: Vec<Uuid> = b_events.iter().map(AnyEvent::event_id).collect();
    let b = store
        .append(b_aggregate, ExpectedVersion::NoStream, b_events)
        .await
        .unwrap();
    assert!(b.first_position > a_position);

    let of_deposits = ReadFilter::event_types([Deposited::EVENT_TYPE]);
    let of_withdrawals = ReadFilter::event_types([Withdrawn::EVENT_TYPE]);
    let filters = [
        of_deposits.clone(),
        of_withdrawals.clone(),
        of_withdrawals
            .clone()
            .with_tenant(TenantFilter::only(tenant)),
        of_withdrawals.clone().with_aggregate_types(["PgAccount"]),
        ReadFilter::all().with_tenant(TenantFilter::only(tenant)),
        ReadFilter::all(),
    ];
    for _ in 0..5 {
        for filter in &filters {
            for limit in [1, 100] {
                let page = store
                    .read_filtered(head_before, limit, filter)
                    .await
                    .unwrap();
                assert!(
                    page.events.is_empty(),
                    "{filter:?} passed a transaction in flight: {page:?}"
                );
                assert!(
                    page.read_to < a_position,
                    "{filter:?} read to {}, at or past the position {a_position} in flight",
                    page.read_to
                );
                assert!(page.at_head, "nothing more is readable");
            }
        }
        let lag = store
            .backlog_filtered(head_before, &of_withdrawals)
            .await
            .unwrap();
        assert_eq!(lag.events, 2, "lag counts B's committed withdrawals");
        assert!(lag.held_back.is_some(), "and says what holds them back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    tx_a.commit().await.unwrap();
    wait_head(&store, b.last_position).await;
    let page = store
        .read_filtered(head_before, 100, &of_deposits)
        .await
        .unwrap();
    assert_eq!(event_ids(&page.events), [a_id, b_ids[1]]);
    assert!(page.read_to >= b.last_position);
    let page = store
        .read_filtered(head_before, 100, &filters[2])
        .await
        .unwrap();
    assert_eq!(event_ids(&page.events), [b_ids[0], b_ids[2]]);
    let page = store
        .read_filtered(head_before, 1, &of_withdrawals)
        .await
        .unwrap();
    assert_eq!(event_ids(&page.events), [b_ids[0]]);
    assert_eq!(
        page.read_to, b.first_position,
        "a full page reads to its last event"
    );
    t.drop().await;
}

/// Counts withdrawals, for the filtered catch-ups.
#[derive(Default)]
struct WithdrawalCount(Vec<i64>);

#[projections::projection(name = "pg-tests-withdrawal-count")]
impl WithdrawalCount {
    #[handles(Withdrawn)]
    async fn withdrawn(&mut self, event: &Envelope<Withdrawn>) {
        self.0.push(event.amount);
    }
}

/// A projection of one type in many reads its own events, its checkpoint reaches the head
/// over pages of other types, and its lag counts its own; limited to a tenant, it applies
/// that tenant's. A row of a type this program does not know is read too (it goes to the
/// dead-letter queue rather than being passed over).
#[tokio::test]
async fn filtered_catch_ups_reach_the_head_and_keep_to_their_tenant() {
    let t = TestSchema::new(4).await;
    let store = t.store();
    let (acme, globex) = (Uuid::new_v4(), Uuid::new_v4());
    let mut last = 0;
    for round in 0..10_i64 {
        let aggregate = Uuid::new_v4();
        let mut events = deposits(aggregate, 30);
        let tenant = if round % 2 == 0 { acme } else { globex };
        events.push(withdrawal(aggregate, round, tenant));
        events.extend(deposits(aggregate, 30));
        last = store
            .append(aggregate, ExpectedVersion::NoStream, events)
            .await
            .unwrap()
            .last_position;
    }
    let head = wait_head(&store, last).await;

    let catch_up = |runner: projections::ProjectionRunner<WithdrawalCount>| {
        let store = store.clone();
        async move {
            let before = runner.lag_metrics(&store).await.unwrap().events_behind;
            let mut registry = projections::ProjectionRegistry::new();
            registry.register_projection(runner).unwrap();
            let mut coordinator =
                projections::ProjectionCoordinator::new(registry, Arc::new(store.clone()))
                    .batch_size(3);
            let report = coordinator.catch_up_all().await.unwrap();
            let counted = report.projection("pg-tests-withdrawal-count").unwrap();
            assert!(counted.is_ok(), "{counted:?}");
            assert_eq!(
                (counted.not_subscribed, counted.skipped),
                (0, 0),
                "the deposits are not read"
            );
            let runner = coordinator
                .registry()
                .projection_runner::<WithdrawalCount>()
                .unwrap();
            let lag = runner.lag_metrics(&store).await.unwrap();
            (before, runner.projection().0.clone(), lag)
        }
    };
    let (before, seen, lag) = catch_up(projections::ProjectionRunner::new(
        WithdrawalCount::default(),
    ))
    .await;
    assert_eq!(before, 10);
    assert_eq!(seen, (0..10).collect::<Vec<_>>());
    assert_eq!((lag.checkpoint_position, lag.events_behind), (head, 0));

    let (before, seen, lag) = catch_up(
        projections::ProjectionRunner::builder(WithdrawalCount::default())
            .tenant(TenantFilter::only(globex))
            .build(),
    )
    .await;
    assert_eq!(before, 5, "lag counts the tenant's withdrawals");
    assert_eq!(seen, [1, 3, 5, 7, 9]);
    assert_eq!((lag.checkpoint_position, lag.events_behind), (head, 0));

    // A row of a type this build does not know, among deposits: read, not passed over.
    let mut conn = t.pool.acquire().await.unwrap();
    let (unknown_position, _) = insert_row(
        &mut conn,
        &t,
        None,
        "pg_tests.from_a_newer_build",
        "{}",
        "{}",
        1,
    )
    .await;
    drop(conn);
    let more = Uuid::new_v4();
    let last = store
        .append(more, ExpectedVersion::NoStream, deposits(more, 5))
        .await
        .unwrap()
        .last_position;
    wait_head(&store, last).await;
    let page = store
        .read_filtered(head, 100, &ReadFilter::event_types(["pg_tests.withdrawn"]))
        .await
        .unwrap();
    assert_eq!(positions(&page.events), [unknown_position as u64]);
    assert!(matches!(page.events[0], StoredEvent::Undecodable(_)));
    assert!(page.read_to >= last);
    // A page narrower than the range reads by type (a range no wider than a page reads by
    // position): the unknown type is found among the stored types.
    let one = store
        .read_filtered(head, 1, &ReadFilter::event_types(["pg_tests.withdrawn"]))
        .await
        .unwrap();
    assert_eq!(positions(&one.events), [unknown_position as u64]);
    assert_eq!(one.read_to, unknown_position as u64);
    let tenant_page = store
        .read_filtered(
            head,
            100,
            &ReadFilter::event_types(["pg_tests.withdrawn"])
                .with_tenant(TenantFilter::only(acme).with_untenanted()),
        )
        .await
        .unwrap();
    assert_eq!(positions(&tenant_page.events), [unknown_position as u64]);
    t.drop().await;
}

/// A transaction that rolls back, or an append that fails, leaves a gap in the positions (and
/// nothing else): readers pass it, and count only the events that are there.
#[tokio::test]
async fn rolled_back_appends_leave_gaps_that_readers_pass() {
    let t = TestSchema::new(4).await;
    let store = t.store();
    let aggregate = Uuid::new_v4();
    let first = store
        .append(aggregate, ExpectedVersion::NoStream, deposits(aggregate, 1))
        .await
        .unwrap();
    assert_eq!((first.first_position, first.last_position), (1, 1));

    let mut conn = t.pool.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let (rolled_back, _) = insert_row(
        &mut tx,
        &t,
        None,
        "pg_tests.deposited",
        "{\"amount\":1}",
        "{}",
        1,
    )
    .await;
    assert_eq!(rolled_back, 2);
    tx.rollback().await.unwrap();

    // A failed append (duplicate event id) leaves its position unused too.
    let duplicate = deposit(aggregate, 5);
    store
        .append(aggregate, ExpectedVersion::Any, vec![duplicate.clone()])
        .await
        .unwrap();
    let error = store
        .append(aggregate, ExpectedVersion::Any, vec![duplicate])
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        AppendError::Storage(StorageError::Backend(_))
    ));

    let next = store
        .append(aggregate, ExpectedVersion::Exact(2), deposits(aggregate, 2))
        .await
        .unwrap();
    assert_eq!((next.first_position, next.last_position), (5, 6));
    assert_eq!(wait_head(&store, 6).await, 6);
    assert_eq!(
        positions(&store.read_all(0, 100).await.unwrap()),
        [1, 3, 5, 6]
    );
    // Pages pass the gaps too.
    assert_eq!(positions(&store.read_all(1, 1).await.unwrap()), [3]);
    assert_eq!(positions(&store.read_all(3, 1).await.unwrap()), [5]);
    let backlog = store.backlog(0, &[]).await.unwrap();
    assert_eq!((backlog.events, backlog.head_position), (4, 6));
    assert_eq!(store.backlog(4, &[]).await.unwrap().events, 2);
    t.drop().await;
}

/// Long transactions that write no events, in this database and in another database of the
/// cluster, hold no reader back: while they stay open, every append is readable (and counted,
/// with nothing named as holding it) as soon as it returns. Under the cluster-wide horizon
/// (ADR 0007, replaced by ADR 0011) both held every reader back until they ended.
#[tokio::test]
async fn transactions_that_write_no_events_hold_no_reader() {
    let t = TestSchema::new(6).await;
    let store = t.store();
    let before = {
        let aggregate = Uuid::new_v4();
        store
            .append(aggregate, ExpectedVersion::NoStream, deposits(aggregate, 3))
            .await
            .unwrap()
    };

    // A writing transaction in this database, on a table of its own, left open...
    let scratch = t.table("scratch");
    sqlx::raw_sql(&format!("CREATE TABLE {scratch} (n integer)"))
        .execute(&t.pool)
        .await
        .unwrap();
    let mut here = t.pool.acquire().await.unwrap();
    let mut here_tx = here.begin().await.unwrap();
    sqlx::query(&format!("INSERT INTO {scratch} VALUES (1)"))
        .execute(&mut *here_tx)
        .await
        .unwrap();
    let here_xid: String = sqlx::query_scalar("SELECT pg_current_xact_id()::text")
        .fetch_one(&mut *here_tx)
        .await
        .unwrap();
    // ... and one in another database of the cluster.
    let mut elsewhere = sqlx::PgConnection::connect(&other_database_url())
        .await
        .unwrap();
    let mut elsewhere_tx = elsewhere.begin().await.unwrap();
    let elsewhere_xid: String = sqlx::query_scalar("SELECT pg_current_xact_id()::text")
        .fetch_one(&mut *elsewhere_tx)
        .await
        .unwrap();

    let running: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM unnest($1::text[]) AS x
         WHERE pg_xact_status(x::xid8) = 'in progress'",
    )
    .bind(vec![here_xid.clone(), elsewhere_xid.clone()])
    .fetch_one(&t.pool)
    .await
    .unwrap();
    assert_eq!(running, 2, "both foreign transactions are running");

    let mut after = before.last_position;
    for round in 0..20 {
        let aggregate = Uuid::new_v4();
        let appended = store
            .append(aggregate, ExpectedVersion::NoStream, deposits(aggregate, 5))
            .await
            .unwrap();
        // No waiting: readable as soon as the append returns.
        assert_eq!(
            store.head_position().await.unwrap(),
            appended.last_position,
            "round {round}: the head is held back"
        );
        let read = store.read_all(after, 100).await.unwrap();
        assert_eq!(read.len(), 5, "round {round}: events are held back");
        assert_eq!(
            positions(&read).last().copied(),
            Some(appended.last_position)
        );
        let backlog = store.backlog(after, &[]).await.unwrap();
        assert_eq!((backlog.events, backlog.held_back), (5, None));
        after = appended.last_position;
    }

    // Both transactions are still open (they would have held every read until now).
    let still: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM unnest($1::text[]) AS x
         WHERE pg_xact_status(x::xid8) = 'in progress'",
    )
    .bind(vec![here_xid, elsewhere_xid])
    .fetch_one(&t.pool)
    .await
    .unwrap();
    assert_eq!(still, 2);
    here_tx.rollback().await.unwrap();
    elsewhere_tx.rollback().await.unwrap();
    drop(here);
    t.drop().await;
}

/// A registration keeps only the low 32 bits of its bound; readers rebuild the rest from the
/// sequence. An append left open at position 2^32 - 1 still holds readers back while later
/// appends take positions past 2^32.
#[tokio::test]
async fn registrations_hold_readers_across_a_32_bit_boundary() {
    let t = TestSchema::new(4).await;
    let store = t.store();
    let before: i64 = (1 << 32) - 3;
    sqlx::query(&format!(
        "SELECT setval('{}', $1)",
        t.table("projection_events_position_seq")
    ))
    .bind(before)
    .execute(&t.pool)
    .await
    .unwrap();
    let first = Uuid::new_v4();
    let readable = store
        .append(first, ExpectedVersion::NoStream, deposits(first, 1))
        .await
        .unwrap();
    assert_eq!(readable.last_position, (1 << 32) - 2);

    let mut conn = t.pool.acquire().await.unwrap();
    let mut open = conn.begin().await.unwrap();
    let (held_at, _) = insert_row(
        &mut open,
        &t,
        None,
        "pg_tests.deposited",
        "{\"amount\":1}",
        "{}",
        1,
    )
    .await;
    assert_eq!(held_at, (1 << 32) - 1);
    let later = Uuid::new_v4();
    let behind = store
        .append(later, ExpectedVersion::NoStream, deposits(later, 3))
        .await
        .unwrap();
    assert!(behind.first_position >= 1 << 32);

    assert_eq!(
        positions(&store.read_all(0, 100).await.unwrap()),
        [readable.last_position]
    );
    assert_eq!(store.head_position().await.unwrap(), readable.last_position);
    let hold = store.backlog(0, &[]).await.unwrap().held_back.unwrap();
    assert_eq!((hold.position, hold.events), (held_at as u64, 3));

    open.commit().await.unwrap();
    let read = store.read_all(readable.last_position, 100).await.unwrap();
    assert_eq!(read.len(), 4);
    assert_eq!(positions(&read)[0], held_at as u64);
    drop(conn);
    t.drop().await;
}

/// The URL of another database on the same server (`postgres`, which every cluster has).
fn other_database_url() -> String {
    let url = database_url();
    match url.rsplit_once('/') {
        Some((server, database)) => {
            let options = database.split_once('?').map_or("", |(_, options)| options);
            if options.is_empty() {
                format!("{server}/postgres")
            } else {
                format!("{server}/postgres?{options}")
            }
        }
        None => url,
    }
}

/// An append left open after registering holds readers of its own schema back at its first
/// position, and readers of another schema not at all.
#[tokio::test]
async fn an_open_append_holds_only_its_own_schema() {
    let mine = TestSchema::new(4).await;
    let other = TestSchema::new(4).await;
    let (store, other_store) = (mine.store(), other.store());
    let aggregate = Uuid::new_v4();
    store
        .append(aggregate, ExpectedVersion::NoStream, deposits(aggregate, 1))
        .await
        .unwrap();

    let mut conn = mine.pool.acquire().await.unwrap();
    let mut open = conn.begin().await.unwrap();
    let (held_at, _) = insert_row(
        &mut open,
        &mine,
        None,
        "pg_tests.deposited",
        "{\"amount\":1}",
        "{}",
        1,
    )
    .await;
    // A second row in the same transaction registers nothing more.
    insert_row(
        &mut open,
        &mine,
        None,
        "pg_tests.deposited",
        "{\"amount\":2}",
        "{}",
        1,
    )
    .await;
    let aggregate = Uuid::new_v4();
    let later = store
        .append(aggregate, ExpectedVersion::NoStream, deposits(aggregate, 2))
        .await
        .unwrap();
    assert!(later.first_position > held_at as u64);
    assert_eq!(positions(&store.read_all(0, 100).await.unwrap()), [1]);
    assert_eq!(store.head_position().await.unwrap(), 1);

    let other_aggregate = Uuid::new_v4();
    let elsewhere = other_store
        .append(
            other_aggregate,
            ExpectedVersion::NoStream,
            deposits(other_aggregate, 2),
        )
        .await
        .unwrap();
    assert_eq!(
        other_store.head_position().await.unwrap(),
        elsewhere.last_position
    );
    assert_eq!(other_store.read_all(0, 100).await.unwrap().len(), 2);

    open.commit().await.unwrap();
    let read = store.read_all(0, 100).await.unwrap();
    assert_eq!(read.len(), 5);
    assert_eq!(positions(&read).last().copied(), Some(later.last_position));
    drop(conn);
    mine.drop().await;
    other.drop().await;
}

// ---------------------------------------------------------------------------------------------
// (b) Concurrent writers, one tailing reader
// ---------------------------------------------------------------------------------------------

/// Sixteen writers append 200 events each, in batches of 1 to 9 over four aggregates each, while
/// a reader tails with `read_all(after, 7)`: it sees every event exactly once, in strictly
/// increasing position order. Every fourth writer inserts its events by hand in transactions
/// that wait a moment before committing, so that appends which took later positions commit
/// first. Nothing fails here, so the positions have no gaps either: a reader that moved past a
/// position still in flight would miss it and fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_and_a_tailing_reader() {
    const WRITERS: usize = 16;
    const PER_WRITER: usize = 200;
    const AGGREGATES: usize = 4;
    let t = TestSchema::new(20).await;
    let store = t.store();

    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let store = store.clone();
        let t = t.clone();
        writers.push(tokio::spawn(async move {
            let aggregates: Vec<Uuid> = (0..AGGREGATES).map(|_| Uuid::new_v4()).collect();
            let mut versions = vec![0_u64; AGGREGATES];
            let mut ids = Vec::with_capacity(PER_WRITER);
            let mut written = 0;
            let mut round = 0;
            if writer % 4 == 3 {
                while written < PER_WRITER {
                    let size = (1 + (writer + round) % 9).min(PER_WRITER - written);
                    let mut tx = t.pool.begin().await.unwrap();
                    for _ in 0..size {
                        let (_, id) = insert_row(
                            &mut tx,
                            &t,
                            None,
                            "pg_tests.deposited",
                            "{\"amount\":1}",
                            "{}",
                            1,
                        )
                        .await;
                        ids.push(id);
                    }
                    tokio::time::sleep(Duration::from_millis(5 + 10 * (round % 3) as u64)).await;
                    tx.commit().await.unwrap();
                    written += size;
                    round += 1;
                }
                return (Vec::new(), Vec::new(), ids);
            }
            while written < PER_WRITER {
                let slot = round % AGGREGATES;
                let size = (1 + (writer + round) % 9).min(PER_WRITER - written);
                let batch = deposits(aggregates[slot], size);
                ids.extend(batch.iter().map(AnyEvent::event_id));
                let expected = if versions[slot] == 0 {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::Exact(versions[slot])
                };
                let result = store
                    .append(aggregates[slot], expected, batch)
                    .await
                    .unwrap();
                versions[slot] = result.version;
                written += size;
                round += 1;
            }
            (aggregates, versions, ids)
        }));
    }

    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut after = 0;
            let mut seen = Vec::new();
            let mut seen_ids = HashSet::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            while seen.len() < WRITERS * PER_WRITER {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the reader saw {} of {} events",
                    seen.len(),
                    WRITERS * PER_WRITER
                );
                let page = store.read_all(after, 7).await.unwrap();
                assert!(page.len() <= 7);
                for stored in &page {
                    let position = stored.position().unwrap();
                    assert!(
                        position > after,
                        "position {position} after {after}: out of order or repeated"
                    );
                    assert_eq!(position, after + 1, "the reader skipped a position");
                    let id = stored.event().expect("a stress event decodes").event_id();
                    assert!(seen_ids.insert(id), "event {id} read twice");
                    seen.push(position);
                    after = position;
                }
                if page.is_empty() {
                    tokio::task::yield_now().await;
                }
            }
            (seen, seen_ids)
        })
    };

    let mut written_ids = HashSet::new();
    let mut streams = Vec::new();
    for writer in writers {
        let (aggregates, versions, ids) = writer.await.unwrap();
        written_ids.extend(ids);
        streams.extend(aggregates.into_iter().zip(versions));
    }
    let (seen, seen_ids) = reader.await.unwrap();
    assert_eq!(seen.len(), WRITERS * PER_WRITER);
    assert_eq!(
        seen,
        (1..=(WRITERS * PER_WRITER) as u64).collect::<Vec<_>>()
    );
    assert_eq!(seen_ids, written_ids);
    assert_eq!(
        store.head_position().await.unwrap(),
        (WRITERS * PER_WRITER) as u64
    );
    assert!(
        store
            .read_all((WRITERS * PER_WRITER) as u64, 7)
            .await
            .unwrap()
            .is_empty()
    );
    for (aggregate, version) in streams {
        let stream = store.read_stream(aggregate).await.unwrap();
        let versions: Vec<u64> = stream
            .iter()
            .map(|e| e.event().unwrap().metadata().aggregate_version)
            .collect();
        assert_eq!(versions, (1..=version).collect::<Vec<_>>());
    }
    t.drop().await;
}

/// Concurrent appends to one aggregate: with `NoStream` exactly one wins and the others get a
/// conflict naming the version it made; with `Any` every append lands, versions consecutive.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_to_one_aggregate() {
    let t = TestSchema::new(10).await;
    let store = t.store();

    let contested = Uuid::new_v4();
    let attempts: Vec<_> = (0..6)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append(contested, ExpectedVersion::NoStream, deposits(contested, 3))
                    .await
            })
        })
        .collect();
    let mut wins = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(result) => {
                wins += 1;
                assert_eq!(result.version, 3);
            }
            Err(AppendError::Conflict {
                aggregate_id,
                expected,
                actual,
            }) => {
                assert_eq!(aggregate_id, contested);
                assert_eq!(expected, ExpectedVersion::NoStream);
                assert_eq!(actual, 3);
            }
            Err(other) => panic!("unexpected append error: {other}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(store.read_stream(contested).await.unwrap().len(), 3);

    let shared = Uuid::new_v4();
    let appends: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..5 {
                    store
                        .append(shared, ExpectedVersion::Any, deposits(shared, 2))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for append in appends {
        append.await.unwrap();
    }
    let versions: Vec<u64> = store
        .read_stream(shared)
        .await
        .unwrap()
        .iter()
        .map(|e| e.event().unwrap().metadata().aggregate_version)
        .collect();
    assert_eq!(versions, (1..=80).collect::<Vec<_>>());

    // Conflicts and retries may leave gaps; readers see the 83 events, in position order.
    let read = store.read_all(0, 1000).await.unwrap();
    assert_eq!(read.len(), 83);
    let read_positions = positions(&read);
    assert!(read_positions.windows(2).all(|pair| pair[0] < pair[1]));
    let last = *read_positions.last().unwrap();
    assert_eq!(wait_head(&store, last).await, last);
    assert_eq!(store.backlog(0, &[]).await.unwrap().events, 83);
    t.drop().await;
}

// ---------------------------------------------------------------------------------------------
// (c) Rows that do not decode
// ---------------------------------------------------------------------------------------------

/// A row of an unknown type, one whose payload does not fit its type, one with a metadata
/// column that is not an object and one with a negative schema version come back as
/// `StoredEvent::Undecodable` with the whole row, between events that decode.
#[tokio::test]
async fn undecodable_rows_are_reported_not_fatal() {
    let t = TestSchema::new(4).await;
    let store = t.store();
    let mut conn = t.pool.acquire().await.unwrap();

    let (unknown, unknown_id) = insert_row(
        &mut conn,
        &t,
        None,
        "pg_tests.never_registered",
        "{\"x\":1}",
        "{}",
        1,
    )
    .await;
    let (mismatch, _) = insert_row(
        &mut conn,
        &t,
        None,
        "pg_tests.deposited",
        "{\"amount\":\"twelve\"}",
        "{\"source\":\"hand\"}",
        1,
    )
    .await;
    let (bad_metadata, _) = insert_row(
        &mut conn,
        &t,
        None,
        "pg_tests.deposited",
        "{\"amount\":1}",
        "[1, 2]",
        1,
    )
    .await;
    let (bad_version, _) = insert_row(
        &mut conn,
        &t,
        None,
        "pg_tests.deposited",
        "{\"amount\":1}",
        "{}",
        -1,
    )
    .await;
    let (good, good_id) = insert_row(
        &mut conn,
        &t,
        None,
        "pg_tests.deposited",
        "{\"amount\":12}",
        "{\"source\":\"hand\"}",
        1,
    )
    .await;
    drop(conn);
    wait_head(&store, good as u64).await;

    let read = store.read_all(0, 100).await.unwrap();
    assert_eq!(
        positions(&read),
        [unknown, mismatch, bad_metadata, bad_version, good].map(|p| p as u64)
    );

    let StoredEvent::Undecodable(raw) = &read[0] else {
        panic!("an unknown type decoded: {:?}", read[0]);
    };
    assert_eq!(raw.event_id, unknown_id);
    assert_eq!(raw.event_type, "pg_tests.never_registered");
    assert!(matches!(
        &raw.error,
        DecodeError::UnknownEventType { event_type, known }
            if event_type == "pg_tests.never_registered"
                && known.contains(&"pg_tests.deposited")
    ));
    assert_eq!(raw.raw["payload"], serde_json::json!({ "x": 1 }));
    assert_eq!(raw.raw["event_type"], "pg_tests.never_registered");
    assert_eq!(raw.raw["position"], unknown);
    assert_eq!(raw.raw["event_id"], unknown_id.to_string());

    let StoredEvent::Undecodable(raw) = &read[1] else {
        panic!("a mismatched payload decoded: {:?}", read[1]);
    };
    assert!(
        matches!(&raw.error, DecodeError::Payload { event_type, .. } if event_type == "pg_tests.deposited")
    );
    assert_eq!(
        raw.raw["payload"],
        serde_json::json!({ "amount": "twelve" })
    );
    assert_eq!(raw.raw["metadata"], serde_json::json!({ "source": "hand" }));

    for stored in &read[2..4] {
        let StoredEvent::Undecodable(raw) = stored else {
            panic!("a malformed row decoded: {stored:?}");
        };
        assert!(matches!(raw.error, DecodeError::Payload { .. }));
    }

    let event = read[4].event().expect("the good row decodes");
    assert_eq!(event.event_id(), good_id);
    assert_eq!(event.downcast::<Deposited>().unwrap().amount, 12);
    assert_eq!(
        event.metadata().metadata,
        BTreeMap::from([("source".to_owned(), serde_json::json!("hand"))])
    );

    // read_stream reports them the same way.
    let stream = store
        .read_stream(event.metadata().aggregate_id)
        .await
        .unwrap();
    assert_eq!(stream.len(), 1);
    t.drop().await;
}

// ---------------------------------------------------------------------------------------------
// Timestamps chrono cannot hold (rows written before migration 5)
// ---------------------------------------------------------------------------------------------

/// Inserts one `pg_tests.deposited` row by hand, with `occurred_at` and `stored_at` given as
/// PostgreSQL text (`'infinity'`, `'now'`, ...), at the position the column's default takes.
/// Returns (position, event id, aggregate id).
async fn insert_timed_row(
    conn: &mut sqlx::PgConnection,
    schema: &TestSchema,
    occurred_at: &str,
    stored_at: &str,
) -> (u64, Uuid, Uuid) {
    let (event_id, aggregate_id) = (Uuid::new_v4(), Uuid::new_v4());
    let position: i64 = sqlx::query_scalar(&format!(
        "INSERT INTO {events} (
             event_id, aggregate_id, aggregate_type, aggregate_version, event_type,
             event_version, payload, correlation_id, occurred_at, stored_at
         )
         VALUES ($1, $2, 'PgAccount', 1, 'pg_tests.deposited', 1,
                 '{{\"amount\":5}}'::jsonb, $3, $4::timestamptz, $5::timestamptz)
         RETURNING position",
        events = schema.table("projection_events"),
    ))
    .bind(event_id)
    .bind(aggregate_id)
    .bind(Uuid::new_v4())
    .bind(occurred_at)
    .bind(stored_at)
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    (position as u64, event_id, aggregate_id)
}

/// Drops migration 5's checks on `table`, as in a database written before it.
async fn drop_readable_checks(schema: &TestSchema, table: &str, columns: &[&str]) {
    let drops: Vec<String> = columns
        .iter()
        .map(|column| format!("DROP CONSTRAINT {table}_{column}_readable"))
        .collect();
    sqlx::raw_sql(&format!(
        "ALTER TABLE {} {}",
        schema.table(table),
        drops.join(", ")
    ))
    .execute(&schema.pool)
    .await
    .unwrap();
}

/// Counts deposits, for the catch-up over rows whose time is out of range.
#[derive(Default)]
struct DepositCount(u64);

#[projections::projection(name = "pg-tests-deposit-count")]
impl DepositCount {
    #[handles(Deposited)]
    async fn deposited(&mut self, _event: &Envelope<Deposited>) {
        self.0 += 1;
    }
}

/// Rows written before migration 5 (its checks dropped here) with an `occurred_at` of
/// `'infinity'`, `'-infinity'` or the year 294276, which sqlx's chrono decoding panicked on:
/// `read_all` and `read_stream` give them as `StoredEvent::Undecodable` with the time in the
/// raw row, between events that decode; `catch_up` dead-letters them and moves on. A row whose
/// `stored_at` is `'-infinity'` decodes, and makes `backlog` (lag) an error until the
/// checkpoint passes it. Nothing panics.
#[tokio::test]
async fn out_of_range_event_times_are_undecodable_not_a_panic() {
    let t = TestSchema::new(4).await;
    drop_readable_checks(&t, "projection_events", &["occurred_at", "stored_at"]).await;
    let store = t.store();
    let first_aggregate = Uuid::new_v4();
    store
        .append(
            first_aggregate,
            ExpectedVersion::NoStream,
            deposits(first_aggregate, 1),
        )
        .await
        .unwrap();
    let mut conn = t.pool.acquire().await.unwrap();
    let mut unreadable = Vec::new();
    for occurred_at in ["infinity", "-infinity", "294276-12-31 23:59:59+00"] {
        unreadable.push(insert_timed_row(&mut conn, &t, occurred_at, "now").await);
    }
    let (stored_never, stored_never_id, _) =
        insert_timed_row(&mut conn, &t, "now", "-infinity").await;
    drop(conn);
    let last_aggregate = Uuid::new_v4();
    let last = store
        .append(
            last_aggregate,
            ExpectedVersion::NoStream,
            deposits(last_aggregate, 1),
        )
        .await
        .unwrap()
        .last_position;
    wait_head(&store, last).await;

    let read = store.read_all(0, 100).await.unwrap();
    assert_eq!(positions(&read), [1, 2, 3, 4, 5, 6]);
    let shown = ["infinity", "-infinity", "294276-12-31 23:59:59+00"];
    for ((stored, (position, event_id, _)), shown) in read[1..4].iter().zip(&unreadable).zip(shown)
    {
        let StoredEvent::Undecodable(raw) = stored else {
            panic!("an occurred_at of {shown} decoded: {stored:?}");
        };
        assert_eq!((raw.position, raw.event_id), (*position, *event_id));
        assert!(matches!(raw.error, DecodeError::Payload { .. }));
        assert!(
            raw.error
                .to_string()
                .contains(&format!("occurred_at is {shown}")),
            "{}",
            raw.error
        );
        let raw_time = raw.raw["occurred_at"].as_str().unwrap();
        assert!(raw_time.starts_with(shown), "{raw_time}");
        assert_eq!(raw.raw["payload"], serde_json::json!({ "amount": 5 }));
    }
    assert_eq!(read[4].event().unwrap().event_id(), stored_never_id);
    assert!(read[5].event().is_some() && read[0].event().is_some());
    for (_, _, aggregate) in &unreadable {
        let stream = store.read_stream(*aggregate).await.unwrap();
        assert!(
            matches!(stream[..], [StoredEvent::Undecodable(_)]),
            "{stream:?}"
        );
    }

    // The lag query: an error while the row is in the backlog, not a panic.
    match store.backlog(0, &[]).await {
        Err(StorageError::Unreadable(error)) => {
            assert!(error.contains("-infinity"), "{error}");
        }
        other => panic!("a stored_at of -infinity in the backlog gave {other:?}"),
    }
    let past_it = store.backlog(stored_never, &[]).await.unwrap();
    assert_eq!(past_it.events, 1);
    assert!(past_it.oldest_stored_at.is_some());

    // A catch-up dead-letters the three, applies the rest and moves past them all.
    let runner = projections::ProjectionRunner::builder(DepositCount::default())
        .storage(projections::runner::Repositories::postgres_in(
            t.pool.clone(),
            &t.schema,
        ))
        .build();
    let mut registry = projections::ProjectionRegistry::new();
    registry.register(runner).unwrap();
    let mut coordinator =
        projections::ProjectionCoordinator::new(registry, Arc::new(store.clone()));
    let checkpoints = PostgreSQLCheckpointRepository::with_schema(t.pool.clone(), &t.schema);
    let (mut applied, mut dead_lettered) = (0, 0);
    tokio::time::timeout(Duration::from_secs(60), async {
        // One pass may stop at the read horizon, held back by other tests' transactions.
        while checkpoints
            .get_checkpoint("pg-tests-deposit-count")
            .await
            .unwrap()
            < Some(last)
        {
            let report = coordinator.catch_up_all().await.unwrap();
            assert!(
                report.projections.iter().all(|p| p.error.is_none()),
                "{report:?}"
            );
            applied += report.applied();
            dead_lettered += report.dead_lettered();
        }
    })
    .await
    .expect("the catch-up did not reach the last event");
    assert_eq!((applied, dead_lettered), (3, 3));
    let count = coordinator
        .registry()
        .projection::<DepositCount>()
        .unwrap()
        .0;
    assert_eq!(count, 3);
    let dead = PostgreSQLDLQRepository::with_schema(t.pool.clone(), &t.schema)
        .get_failed_events(DLQFilter::failed_in("pg-tests-deposit-count"))
        .await
        .unwrap();
    let mut dead_times: Vec<String> = dead
        .iter()
        .map(|entry| entry.event_data["occurred_at"].as_str().unwrap().to_owned())
        .collect();
    dead_times.sort();
    assert_eq!(
        dead_times,
        ["-infinity", "294276-12-31 23:59:59+00", "infinity"]
    );
    drop(coordinator);
    t.drop().await;
}

/// Checkpoints and dead letters written before migration 5 with a time chrono cannot hold
/// read back as a `StorageError` naming the column, not a panic; the other rows stay readable.
#[tokio::test]
async fn out_of_range_times_in_checkpoints_and_dead_letters_are_errors() {
    let t = TestSchema::new(2).await;
    drop_readable_checks(
        &t,
        "projection_checkpoints",
        &["last_processed_at", "halt_at"],
    )
    .await;
    drop_readable_checks(
        &t,
        "projection_dead_letters",
        &["first_failed_at", "last_failed_at", "resolved_at"],
    )
    .await;
    let unreadable = ["infinity", "-infinity", "294276-12-31 23:59:59+00"];
    fn is_error_naming<T>(result: &Result<T, StorageError>, column: &str) -> bool {
        match result {
            Err(StorageError::Unreadable(error)) => error.contains(column),
            _ => false,
        }
    }

    let checkpoints = PostgreSQLCheckpointRepository::with_schema(t.pool.clone(), &t.schema);
    let table = t.table("projection_checkpoints");
    let (bad, fine) = (
        format!("pg-time-bad-{}", Uuid::new_v4()),
        format!("pg-time-fine-{}", Uuid::new_v4()),
    );
    for name in [&bad, &fine] {
        checkpoints
            .update_checkpoint(name, CheckpointUpdate::new(1))
            .await
            .unwrap();
    }
    checkpoints
        .set_halt(&bad, Some(&Halt::paused("maintenance")))
        .await
        .unwrap();
    for column in ["last_processed_at", "halt_at"] {
        for value in unreadable {
            let other = if column == "halt_at" {
                "last_processed_at"
            } else {
                "halt_at"
            };
            sqlx::query(&format!(
                "UPDATE {table} SET {other} = now(), {column} = $2::timestamptz
                 WHERE projection_name = $1"
            ))
            .bind(&bad)
            .bind(value)
            .execute(&t.pool)
            .await
            .unwrap();
            let read = checkpoints.get_checkpoint_data(&bad).await;
            assert!(
                is_error_naming(&read, column),
                "{column} = {value}: {read:?}"
            );
            let all = checkpoints.get_all_checkpoints().await;
            assert!(is_error_naming(&all, column), "{column} = {value}: {all:?}");
            assert_eq!(checkpoints.get_checkpoint(&bad).await.unwrap(), Some(1));
            let fine = checkpoints.get_checkpoint_data(&fine).await.unwrap();
            assert_eq!(fine.map(|c| c.position), Some(1));
        }
    }

    let dead_letters = PostgreSQLDLQRepository::with_schema(t.pool.clone(), &t.schema);
    let table = t.table("projection_dead_letters");
    let projection = format!("pg-time-dlq-{}", Uuid::new_v4());
    let failure = || {
        FailedEvent::new(
            Uuid::new_v4(),
            &projection,
            "pg_tests.deposited",
            serde_json::json!({}),
            &std::io::Error::other("boom"),
            1,
        )
    };
    let bad = dead_letters.add_failed_event(failure()).await.unwrap();
    let fine = dead_letters.add_failed_event(failure()).await.unwrap();
    for column in ["first_failed_at", "last_failed_at", "resolved_at"] {
        for value in unreadable {
            let others: Vec<&str> = ["first_failed_at", "last_failed_at", "resolved_at"]
                .into_iter()
                .filter(|other| *other != column)
                .collect();
            sqlx::query(&format!(
                "UPDATE {table} SET {} = now(), {} = now(), {column} = $2::timestamptz
                 WHERE id = $1",
                others[0], others[1]
            ))
            .bind(bad)
            .bind(value)
            .execute(&t.pool)
            .await
            .unwrap();
            let read = dead_letters.get_by_id(bad).await;
            assert!(
                is_error_naming(&read, column),
                "{column} = {value}: {read:?}"
            );
            let listed = dead_letters
                .get_failed_events(DLQFilter::failed_in(&projection))
                .await;
            assert!(
                is_error_naming(&listed, column),
                "{column} = {value}: {listed:?}"
            );
            if column == "first_failed_at" && value == "-infinity" {
                // The oldest failure of the queue's stats.
                let stats = dead_letters.get_stats().await;
                assert!(is_error_naming(&stats, column), "{stats:?}");
            }
            assert!(dead_letters.get_by_id(fine).await.unwrap().is_some());
        }
    }
    t.drop().await;
}

/// Migration 5 refuses, in new and updated rows, every time that a reader could not read
/// back: infinite, or from 262143-01-01 on; the last microsecond chrono holds is accepted and
/// reads back.
#[tokio::test]
async fn migration_5_refuses_times_a_reader_cannot_read() {
    let t = TestSchema::new(2).await;
    let refused = ["infinity", "-infinity", "262143-01-01 00:00:00+00"];
    let check_of = |result: Result<sqlx::postgres::PgQueryResult, sqlx::Error>| {
        let error = result.expect_err("the table accepted a time no reader can read");
        let database = error.as_database_error().expect("a database error");
        assert_eq!(database.code().as_deref(), Some("23514"), "{database}");
        database.constraint().map(str::to_owned)
    };

    let mut conn = t.pool.acquire().await.unwrap();
    for column in ["occurred_at", "stored_at"] {
        for value in refused {
            let (occurred_at, stored_at) = if column == "occurred_at" {
                (value, "now")
            } else {
                ("now", value)
            };
            let result = sqlx::query(&format!(
                "INSERT INTO {} (
                     position, event_id, aggregate_id, aggregate_type, aggregate_version,
                     event_type, event_version, payload, correlation_id, occurred_at, stored_at
                 )
                 VALUES (1000000, $1, $2, 'PgAccount', 1, 'pg_tests.deposited', 1, '{{}}',
                         $3, $4::timestamptz, $5::timestamptz)",
                t.table("projection_events")
            ))
            .bind(Uuid::new_v4())
            .bind(Uuid::new_v4())
            .bind(Uuid::new_v4())
            .bind(occurred_at)
            .bind(stored_at)
            .execute(&mut *conn)
            .await;
            assert_eq!(
                check_of(result).as_deref(),
                Some(format!("projection_events_{column}_readable").as_str())
            );
        }
    }
    let (position, event_id, _) = insert_timed_row(
        &mut conn,
        &t,
        "262142-12-31 23:59:59.999999+00",
        "262142-12-31 23:59:59.999999+00",
    )
    .await;
    drop(conn);
    let store = t.store();
    wait_head(&store, position).await;
    let read = store.read_all(position - 1, 1).await.unwrap();
    let event = read[0].event().expect("the last time chrono holds decodes");
    assert_eq!(event.event_id(), event_id);
    assert_eq!(
        event.metadata().occurred_at,
        chrono::DateTime::<chrono::Utc>::MAX_UTC.trunc_subsecs(6)
    );
    assert!(store.backlog(position - 1, &[]).await.is_ok());

    let checkpoints = PostgreSQLCheckpointRepository::with_schema(t.pool.clone(), &t.schema);
    let name = format!("pg-refuse-{}", Uuid::new_v4());
    checkpoints
        .set_halt(&name, Some(&Halt::paused("maintenance")))
        .await
        .unwrap();
    for column in ["last_processed_at", "halt_at"] {
        for value in refused {
            let result = sqlx::query(&format!(
                "UPDATE {} SET {column} = $2::timestamptz WHERE projection_name = $1",
                t.table("projection_checkpoints")
            ))
            .bind(&name)
            .bind(value)
            .execute(&t.pool)
            .await;
            assert_eq!(
                check_of(result).as_deref(),
                Some(format!("projection_checkpoints_{column}_readable").as_str())
            );
        }
    }

    let dead_letters = PostgreSQLDLQRepository::with_schema(t.pool.clone(), &t.schema);
    let id = dead_letters
        .add_failed_event(FailedEvent::new(
            Uuid::new_v4(),
            &name,
            "pg_tests.deposited",
            serde_json::json!({}),
            &std::io::Error::other("boom"),
            1,
        ))
        .await
        .unwrap();
    for column in ["first_failed_at", "last_failed_at", "resolved_at"] {
        for value in refused {
            let result = sqlx::query(&format!(
                "UPDATE {} SET {column} = $2::timestamptz WHERE id = $1",
                t.table("projection_dead_letters")
            ))
            .bind(id)
            .bind(value)
            .execute(&t.pool)
            .await;
            assert_eq!(
                check_of(result).as_deref(),
                Some(format!("projection_dead_letters_{column}_readable").as_str())
            );
        }
    }
    t.drop().await;
}

// ---------------------------------------------------------------------------------------------
// (d) Migrations
// ---------------------------------------------------------------------------------------------

async fn table_exists(pool: &PgPool, qualified: &str) -> bool {
    sqlx::query_scalar::<_, Option<String>>("SELECT to_regclass($1)::text")
        .bind(qualified)
        .fetch_one(pool)
        .await
        .unwrap()
        .is_some()
}

async fn ledger_versions(pool: &PgPool, ledger: &str) -> Vec<i64> {
    sqlx::query_scalar(&format!("SELECT version FROM {ledger} ORDER BY version"))
        .fetch_all(pool)
        .await
        .unwrap()
}

/// The FNV-1a fingerprint the migration ledger records (as `migrate.rs` computes it).
fn migration_checksum(sql: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in sql.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// A store migrated by an earlier build (migrations 1 to 5, positions from the counter row)
/// upgrades in place: migration 6 carries the counter over to the sequence, and appends and
/// reads go on after the events already stored.
#[tokio::test]
async fn migration_6_upgrades_a_counter_store_in_place() {
    let pool = connect(4).await;
    drop_stale_schemas(&pool).await;
    let name = fresh_schema_name();
    let schema = Schema::named(&name).unwrap();
    let qualifier = format!("\"{name}\".");
    let ledger = format!("\"{name}\".{MIGRATIONS_TABLE}");
    sqlx::raw_sql(&format!(
        "CREATE SCHEMA \"{name}\";
         CREATE TABLE {ledger} (
             version bigint PRIMARY KEY, description text NOT NULL, checksum text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )"
    ))
    .execute(&pool)
    .await
    .unwrap();
    let earlier = [
        include_str!("../projections/migrations/0001_event_store.sql"),
        include_str!("../projections/migrations/0002_checkpoints.sql"),
        include_str!("../projections/migrations/0003_dead_letters.sql"),
        include_str!("../projections/migrations/0004_halts.sql"),
        include_str!("../projections/migrations/0005_readable_timestamps.sql"),
    ];
    for (version, sql) in (1_i64..).zip(earlier) {
        sqlx::raw_sql(&sql.replace("__SCHEMA__.", &qualifier))
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query(&format!(
            "INSERT INTO {ledger} (version, description, checksum) VALUES ($1, 'earlier', $2)"
        ))
        .bind(version)
        .bind(migration_checksum(sql))
        .execute(&pool)
        .await
        .unwrap();
    }
    // Three events written the earlier way: positions from the counter row.
    let old_aggregate = Uuid::new_v4();
    for version in 1..=3_i64 {
        sqlx::query(&format!(
            "WITH next AS (
                 UPDATE {qualifier}projection_positions SET position = position + 1
                 RETURNING position
             )
             INSERT INTO {qualifier}projection_events (
                 position, event_id, aggregate_id, aggregate_type, aggregate_version,
                 event_type, event_version, payload, correlation_id, occurred_at
             )
             SELECT next.position, $1, $2, 'PgAccount', $3, 'pg_tests.deposited', 1,
                    '{{\"amount\":1}}'::jsonb, $4, now()
             FROM next"
        ))
        .bind(Uuid::new_v4())
        .bind(old_aggregate)
        .bind(version)
        .bind(Uuid::new_v4())
        .execute(&pool)
        .await
        .unwrap();
    }

    postgres::migrate_schema(&pool, &schema).await.unwrap();
    assert_eq!(
        ledger_versions(&pool, &ledger).await,
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    );
    let store = PostgreSQLEventStore::with_schema(pool.clone(), schema.clone());
    let appended = store
        .append(
            old_aggregate,
            ExpectedVersion::Exact(3),
            deposits(old_aggregate, 2),
        )
        .await
        .unwrap();
    assert_eq!((appended.first_position, appended.last_position), (4, 5));
    assert_eq!(
        positions(&store.read_all(0, 100).await.unwrap()),
        [1, 2, 3, 4, 5]
    );
    TestSchema { pool, schema, name }.drop().await;
}

/// Several processes migrating one new schema at once: all succeed, each migration is applied
/// once, and sqlx's own `_sqlx_migrations` is neither created nor touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_migrations_of_a_new_schema() {
    let pool = connect(8).await;
    drop_stale_schemas(&pool).await;
    let sqlx_ledger_before = table_exists(&pool, "public._sqlx_migrations").await;
    let name = fresh_schema_name();
    let schema = Schema::named(&name).unwrap();

    let runs: Vec<_> = (0..4)
        .map(|_| {
            let (pool, schema) = (pool.clone(), schema.clone());
            tokio::spawn(async move { postgres::migrate_schema(&pool, &schema).await })
        })
        .collect();
    for run in runs {
        run.await.unwrap().unwrap();
    }
    postgres::migrate_schema(&pool, &schema).await.unwrap();

    let ledger = format!("\"{name}\".{MIGRATIONS_TABLE}");
    assert_eq!(
        ledger_versions(&pool, &ledger).await,
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    );
    for table in [
        "projection_events",
        "projection_events_position_seq",
        "projection_checkpoints",
        "projection_dead_letters",
    ] {
        assert!(table_exists(&pool, &format!("\"{name}\".{table}")).await);
    }
    // Migration 6 replaced the counter with the sequence.
    assert!(!table_exists(&pool, &format!("\"{name}\".projection_positions")).await);
    assert!(!table_exists(&pool, &format!("\"{name}\"._sqlx_migrations")).await);
    assert_eq!(
        table_exists(&pool, "public._sqlx_migrations").await,
        sqlx_ledger_before
    );

    // A migration edited after it was applied is refused.
    sqlx::query(&format!(
        "UPDATE {ledger} SET checksum = 'edited' WHERE version = 2"
    ))
    .execute(&pool)
    .await
    .unwrap();
    assert!(matches!(
        postgres::migrate_schema(&pool, &schema).await,
        Err(StorageError::Invalid {
            what: "migration",
            ..
        })
    ));

    TestSchema { pool, schema, name }.drop().await;
}

/// `migrate` in the `search_path` (`public` here), twice at once and again: idempotent, and
/// `_sqlx_migrations` (if an application has one) keeps its rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_schema_migrations_are_idempotent_and_leave_sqlx_alone() {
    let pool = connect(4).await;
    let sqlx_rows = |pool: PgPool| async move {
        if table_exists(&pool, "public._sqlx_migrations").await {
            let rows: Vec<String> = sqlx::query_scalar(
                "SELECT version::text || ':' || encode(checksum, 'hex') \
                 FROM public._sqlx_migrations ORDER BY version",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            Some(rows)
        } else {
            None
        }
    };
    let before = sqlx_rows(pool.clone()).await;
    let (first, second) = tokio::join!(postgres::migrate(&pool), postgres::migrate(&pool));
    first.unwrap();
    second.unwrap();
    postgres::migrate(&pool).await.unwrap();
    assert_eq!(
        ledger_versions(&pool, &format!("public.{MIGRATIONS_TABLE}")).await,
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    );
    assert_eq!(sqlx_rows(pool.clone()).await, before);

    // `connect` migrates too, and the default-schema store works.
    let store = PostgreSQLEventStore::connect(&database_url())
        .await
        .unwrap();
    let aggregate = Uuid::new_v4();
    let result = store
        .append(aggregate, ExpectedVersion::NoStream, deposits(aggregate, 2))
        .await
        .unwrap();
    assert_eq!(result.last_position, result.first_position + 1);
    assert_eq!(store.read_stream(aggregate).await.unwrap().len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Notifications
// ---------------------------------------------------------------------------------------------

/// The receiver follows appends to its own schema only.
#[tokio::test]
async fn subscribers_follow_their_own_schema() {
    let mine = TestSchema::new(4).await;
    let other = TestSchema::new(4).await;
    let store = mine.store();
    let other_store = other.store();
    let mut receiver = store.subscribe().expect("the PostgreSQL store notifies");
    // A second subscriber shares the listener.
    let second = store.subscribe().expect("the PostgreSQL store notifies");

    // Let the listener start (it publishes the head, 0, which changes nothing).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let noise = Uuid::new_v4();
    other_store
        .append(noise, ExpectedVersion::NoStream, deposits(noise, 50))
        .await
        .unwrap();
    let aggregate = Uuid::new_v4();
    let result = store
        .append(aggregate, ExpectedVersion::NoStream, deposits(aggregate, 3))
        .await
        .unwrap();
    assert_eq!(result.last_position, 3);

    tokio::time::timeout(Duration::from_secs(30), receiver.changed())
        .await
        .expect("no notification")
        .unwrap();
    assert_eq!(
        *receiver.borrow_and_update(),
        3,
        "another schema's head leaked in"
    );
    assert_eq!(*second.borrow(), 3);

    // After every receiver is gone, a new subscriber starts a new listener.
    drop((receiver, second));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut again = store.subscribe().unwrap();
    let result = store
        .append(aggregate, ExpectedVersion::Exact(3), deposits(aggregate, 1))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        while *again.borrow_and_update() < result.last_position {
            again.changed().await.unwrap();
        }
    })
    .await
    .expect("no notification after resubscribing");
    drop(store);
    other.drop().await;
    mine.drop().await;
}

// ---------------------------------------------------------------------------------------------
// Checkpoints and dead letters inside the caller's transaction
// ---------------------------------------------------------------------------------------------

/// `get_checkpoint_for_update` creates a missing row and locks it: a second transaction waits
/// until the first commits and then sees what it wrote. Writes in a rolled-back transaction
/// vanish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_locked_and_written_inside_transactions() {
    let t = TestSchema::new(6).await;
    let repo = PostgreSQLCheckpointRepository::with_schema(t.pool.clone(), &t.schema);
    let name = format!("pg-checkpoint-{}", Uuid::new_v4());

    let mut first_conn = t.pool.acquire().await.unwrap();
    let mut first = first_conn.begin().await.unwrap();
    assert_eq!(
        repo.get_checkpoint_for_update(&mut first, &name)
            .await
            .unwrap(),
        None
    );

    let second = {
        let (pool, repo, name) = (t.pool.clone(), repo.clone(), name.clone());
        tokio::spawn(async move {
            let mut conn = pool.acquire().await.unwrap();
            let mut tx = conn.begin().await.unwrap();
            let position = repo
                .get_checkpoint_for_update(&mut tx, &name)
                .await
                .unwrap();
            repo.update_checkpoint_in(
                &mut tx,
                &name,
                &CheckpointUpdate::new(9).with_events_applied(4),
            )
            .await
            .unwrap();
            tx.commit().await.unwrap();
            position
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "the second transaction did not wait");

    let event = Uuid::new_v4();
    repo.update_checkpoint_in(
        &mut first,
        &name,
        &CheckpointUpdate::new(5)
            .with_event(event, "pg_tests.deposited")
            .with_events_applied(5),
    )
    .await
    .unwrap();
    first.commit().await.unwrap();
    assert_eq!(second.await.unwrap(), Some(5));

    let data = repo.get_checkpoint_data(&name).await.unwrap().unwrap();
    assert_eq!((data.position, data.events_processed), (9, 9));

    // Rolled back: neither the move nor the reset happened.
    let mut tx = first_conn.begin().await.unwrap();
    assert_eq!(
        repo.get_checkpoint_for_update(&mut tx, &name)
            .await
            .unwrap(),
        Some(9)
    );
    repo.update_checkpoint_in(&mut tx, &name, &CheckpointUpdate::new(20))
        .await
        .unwrap();
    repo.reset_checkpoint_in(&mut tx, &name).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(repo.get_checkpoint(&name).await.unwrap(), Some(9));

    let mut tx = first_conn.begin().await.unwrap();
    repo.reset_checkpoint_in(&mut tx, &name).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(repo.get_checkpoint(&name).await.unwrap(), None);
    drop(first_conn);
    t.drop().await;
}

/// The free functions work on the `search_path`; here it is set to the test schema.
#[tokio::test]
async fn free_functions_use_the_search_path() {
    let t = TestSchema::new(2).await;
    let mut conn = t.pool.acquire().await.unwrap();
    sqlx::raw_sql(&format!("SET search_path TO \"{}\"", t.name))
        .execute(&mut *conn)
        .await
        .unwrap();
    let name = format!("pg-free-{}", Uuid::new_v4());
    let mut tx = conn.begin().await.unwrap();
    assert_eq!(
        postgres::get_checkpoint_for_update(&mut tx, &name)
            .await
            .unwrap(),
        None
    );
    postgres::update_checkpoint_in(&mut tx, &name, &CheckpointUpdate::new(3))
        .await
        .unwrap();
    let failure = FailedEvent::new(
        Uuid::new_v4(),
        &name,
        "pg_tests.deposited",
        serde_json::json!({}),
        &std::io::Error::other("boom"),
        2,
    );
    let id = postgres::add_failed_event_in(&mut tx, &failure)
        .await
        .unwrap();
    postgres::mark_resolved_in(&mut tx, id, "replay")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    sqlx::raw_sql("RESET search_path")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);

    let checkpoints = PostgreSQLCheckpointRepository::with_schema(t.pool.clone(), &t.schema);
    assert_eq!(checkpoints.get_checkpoint(&name).await.unwrap(), Some(3));
    let dead_letters = PostgreSQLDLQRepository::with_schema(t.pool.clone(), &t.schema);
    let entry = dead_letters.get_by_id(id).await.unwrap().unwrap();
    assert_eq!(entry.status, DLQStatus::Resolved);
    assert_eq!(entry.resolved_by.as_deref(), Some("replay"));
    t.drop().await;
}

/// A dead letter written in a transaction that rolls back is not recorded; one that commits
/// is, and transitions inside a transaction are checked.
#[tokio::test]
async fn dead_letters_inside_transactions() {
    let t = TestSchema::new(4).await;
    let repo = PostgreSQLDLQRepository::with_schema(t.pool.clone(), &t.schema);
    let projection = format!("pg-dlq-{}", Uuid::new_v4());
    let failure = FailedEvent::new(
        Uuid::new_v4(),
        &projection,
        "pg_tests.deposited",
        serde_json::json!({ "payload": { "amount": 13 } }),
        &std::io::Error::other("poison"),
        3,
    )
    .with_position(Some(41));

    let mut conn = t.pool.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    repo.add_failed_event_in(&mut tx, &failure).await.unwrap();
    tx.rollback().await.unwrap();
    assert!(
        repo.get_failed_events(DLQFilter::all().projection(&projection))
            .await
            .unwrap()
            .is_empty()
    );

    let mut tx = conn.begin().await.unwrap();
    let id = repo.add_failed_event_in(&mut tx, &failure).await.unwrap();
    assert!(matches!(
        repo.mark_resolved_in(&mut tx, id + 1_000_000, "x").await,
        Err(StorageError::NotFound { .. })
    ));
    tx.commit().await.unwrap();
    let entry = repo.get_by_id(id).await.unwrap().unwrap();
    assert_eq!((entry.position, entry.attempts), (Some(41), 3));
    assert_eq!(entry.error_message, "poison");

    let mut tx = conn.begin().await.unwrap();
    repo.mark_resolved_in(&mut tx, id, "replayer")
        .await
        .unwrap();
    assert!(matches!(
        repo.mark_retrying_in(&mut tx, id).await,
        Err(StorageError::InvalidTransition {
            from: "resolved",
            to: "retrying",
            ..
        })
    ));
    tx.rollback().await.unwrap();
    assert_eq!(
        repo.get_by_id(id).await.unwrap().unwrap().status,
        DLQStatus::Failed
    );
    drop(conn);
    t.drop().await;
}

/// A halt set inside a transaction that rolls back is not recorded; one that commits is, and
/// moving the checkpoint in a later transaction keeps it. The free function works on the
/// `search_path`.
#[tokio::test]
async fn halts_inside_transactions() {
    let t = TestSchema::new(4).await;
    let repo = PostgreSQLCheckpointRepository::with_schema(t.pool.clone(), &t.schema);
    let name = format!("pg-halt-{}", Uuid::new_v4());
    let stopped = Halt::Stopped(
        StoppedAt::new(FailureKind::Event, "poison")
            .with_event(Some(8), Uuid::new_v4(), "pg_tests.deposited")
            .with_attempts(3),
    );

    let mut conn = t.pool.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    assert_eq!(
        repo.get_checkpoint_for_update(&mut tx, &name)
            .await
            .unwrap(),
        None
    );
    repo.set_halt_in(&mut tx, &name, Some(&stopped))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(repo.get_checkpoint_data(&name).await.unwrap(), None);

    let mut tx = conn.begin().await.unwrap();
    repo.update_checkpoint_in(&mut tx, &name, &CheckpointUpdate::new(7))
        .await
        .unwrap();
    repo.set_halt_in(&mut tx, &name, Some(&stopped))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    repo.update_checkpoint_in(&mut tx, &name, &CheckpointUpdate::new(9))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let data = repo.get_checkpoint_data(&name).await.unwrap().unwrap();
    // PostgreSQL keeps microseconds.
    let mut expected = stopped.clone();
    if let Halt::Stopped(at) = &mut expected {
        at.at = at.at.trunc_subsecs(6);
    }
    assert_eq!((data.position, data.halt), (9, Some(expected)));

    // The free function, on the search_path.
    sqlx::raw_sql(&format!("SET search_path TO \"{}\"", t.name))
        .execute(&mut *conn)
        .await
        .unwrap();
    let mut tx = conn.begin().await.unwrap();
    postgres::set_halt_in(&mut tx, &name, None).await.unwrap();
    tx.commit().await.unwrap();
    sqlx::raw_sql("RESET search_path")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let data = repo.get_checkpoint_data(&name).await.unwrap().unwrap();
    assert_eq!((data.position, data.halt), (9, None));
    t.drop().await;
}

/// The table's checks refuse a halt whose columns do not agree; a stored halt that does not
/// read back (the checks dropped, a value edited by hand) is a `StorageError`, not a panic,
/// and leaves the other checkpoints readable.
#[tokio::test]
async fn inconsistent_and_undecodable_halts() {
    let t = TestSchema::new(2).await;
    let repo = PostgreSQLCheckpointRepository::with_schema(t.pool.clone(), &t.schema);
    let table = t.table("projection_checkpoints");
    let name = format!("pg-halt-bad-{}", Uuid::new_v4());
    repo.set_halt(&name, Some(&Halt::paused("maintenance")))
        .await
        .unwrap();

    for (edit, why) in [
        ("halt_state = NULL", "columns without a state"),
        ("halt_reason = NULL", "a pause without reason"),
        ("halt_attempts = 1", "a pause with attempts"),
        ("halt_state = 'stopped'", "a stop without failure kind"),
        ("halt_state = 'gone'", "an unknown state"),
        ("halt_failure_kind = 'event'", "a pause with a failure kind"),
    ] {
        let result = sqlx::query(&format!(
            "UPDATE {table} SET {edit} WHERE projection_name = $1"
        ))
        .bind(&name)
        .execute(&t.pool)
        .await;
        assert!(result.is_err(), "the table accepted {why}");
    }

    sqlx::raw_sql(&format!(
        "ALTER TABLE {table}
             DROP CONSTRAINT projection_checkpoints_halt_consistent,
             DROP CONSTRAINT projection_checkpoints_halt_state_check,
             DROP CONSTRAINT projection_checkpoints_halt_failure_kind_check,
             DROP CONSTRAINT projection_checkpoints_halt_attempts_check"
    ))
    .execute(&t.pool)
    .await
    .unwrap();
    let fine = format!("pg-halt-fine-{}", Uuid::new_v4());
    repo.update_checkpoint(&fine, CheckpointUpdate::new(1))
        .await
        .unwrap();
    for edit in [
        "halt_state = 'gone'",
        "halt_reason = NULL",
        "halt_at = NULL",
        "halt_state = 'stopped', halt_attempts = 1, halt_failure_kind = 'cosmic'",
        "halt_state = 'stopped', halt_attempts = 1",
        "halt_state = 'stopped', halt_attempts = -1, halt_failure_kind = 'event'",
    ] {
        repo.set_halt(&name, Some(&Halt::paused("maintenance")))
            .await
            .unwrap();
        sqlx::query(&format!(
            "UPDATE {table} SET {edit} WHERE projection_name = $1"
        ))
        .bind(&name)
        .execute(&t.pool)
        .await
        .unwrap();
        let read = repo.get_checkpoint_data(&name).await;
        assert!(
            matches!(read, Err(StorageError::Unreadable(_))),
            "`{edit}` read back as {read:?}"
        );
        assert!(matches!(
            repo.get_all_checkpoints().await,
            Err(StorageError::Unreadable(_))
        ));
        assert_eq!(
            repo.get_checkpoint_data(&fine)
                .await
                .unwrap()
                .map(|c| c.position),
            Some(1)
        );
        // Clearing repairs it.
        repo.set_halt(&name, None).await.unwrap();
        assert_eq!(
            repo.get_checkpoint_data(&name).await.unwrap().unwrap().halt,
            None
        );
    }
    t.drop().await;
}

/// Values PostgreSQL cannot hold are refused before they reach it.
#[tokio::test]
async fn out_of_range_values_are_invalid() {
    let t = TestSchema::new(2).await;
    let repo = PostgreSQLCheckpointRepository::with_schema(t.pool.clone(), &t.schema);
    assert!(matches!(
        repo.update_checkpoint("pg-range", CheckpointUpdate::new(u64::MAX))
            .await,
        Err(StorageError::Invalid { .. })
    ));
    let store = t.store();
    let aggregate = Uuid::new_v4();
    assert!(matches!(
        store
            .append(
                aggregate,
                ExpectedVersion::Exact(u64::MAX),
                deposits(aggregate, 1)
            )
            .await,
        Err(AppendError::Storage(StorageError::Invalid { .. }))
    ));
    assert!(store.read_all(u64::MAX, 10).await.unwrap().is_empty());
    t.drop().await;
}

// ---------------------------------------------------------------------------------------------
// The conformance suite
// ---------------------------------------------------------------------------------------------

/// One migrated schema that every conformance check of this binary shares, as checks share one
/// database in production. Each check gets a pool of its own: a pool belongs to the runtime
/// of the test that made it.
async fn conformance_schema() -> Schema {
    static SCHEMA: OnceCell<Schema> = OnceCell::const_new();
    SCHEMA
        .get_or_init(|| async {
            let pool = connect(2).await;
            drop_stale_schemas(&pool).await;
            let schema = Schema::named(&fresh_schema_name()).unwrap();
            postgres::migrate_schema(&pool, &schema).await.unwrap();
            pool.close().await;
            schema
        })
        .await
        .clone()
}

async fn conformance_checkpoints() -> Arc<PostgreSQLCheckpointRepository> {
    let schema = conformance_schema().await;
    Arc::new(PostgreSQLCheckpointRepository::with_schema(
        connect(3).await,
        &schema,
    ))
}

async fn conformance_dead_letters() -> Arc<PostgreSQLDLQRepository> {
    let schema = conformance_schema().await;
    Arc::new(PostgreSQLDLQRepository::with_schema(
        connect(3).await,
        &schema,
    ))
}

async fn conformance_store() -> Arc<PostgreSQLEventStore> {
    let schema = conformance_schema().await;
    Arc::new(PostgreSQLEventStore::with_schema(connect(4).await, schema))
}

conformance::checkpoint_tests!(checkpoint, conformance_checkpoints());
conformance::dlq_tests!(dlq, conformance_dead_letters());
conformance::store_tests!(store, conformance_store());
