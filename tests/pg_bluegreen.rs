//! Blue/green rebuilds on a real PostgreSQL server (`DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`): a new version of a projection is built beside
//! the serving one while readers query the stable views and writers append; the switch loses
//! no rows and raises no error; both versions apply every event exactly once; the old version
//! is retired.
//!
//! Run with `cargo test -p projections-tests --features postgres --test pg_bluegreen`. Every
//! test fails, rather than skips, when the server cannot be reached, and fails rather than
//! hangs (bounded waits).
//!
//! Isolation: each test works in schemas of its own, `bg_<random>` (the crate's tables) and
//! `bg_<random>_orders` (the views) with `bg_<random>_orders_v<N>` (each version's tables),
//! dropped when the test passes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use projections::bluegreen::{
    BlueGreen, BlueGreenError, PostgreSQLReadModelVersions, ReadModelVersions, Switch, VersionRole,
};
use projections::coordinator::{CoordinatorHandle, ProjectionCoordinator, WorkerState};
use projections::postgres::{PostgreSQLEventStore, Schema, migrate_schema};
use projections::{
    AnyEvent, Envelope, Event, EventStore, ExpectedVersion, PgConnection, ProjectionRegistry,
    projection,
};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgPool, Row};
use tokio::sync::OnceCell;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Events and the two versions of the projection
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "bg.order_placed", aggregate = "Order")]
struct OrderPlaced {
    order_no: i64,
    amount: i64,
}

/// Version 1: one row per order. No unique key: an order applied twice shows as two rows.
const V1_TABLES: &str = "CREATE TABLE orders (order_no bigint NOT NULL, amount bigint NOT NULL)";

struct OrdersV1;

#[projection(name = "orders", version = 1)]
impl OrdersV1 {
    #[handles(OrderPlaced)]
    async fn placed(
        &mut self,
        conn: &mut PgConnection,
        event: &Envelope<OrderPlaced>,
    ) -> Result<(), sqlx::Error> {
        // Unqualified: the batch's `search_path` starts with this version's schema.
        sqlx::query("INSERT INTO orders (order_no, amount) VALUES ($1, $2)")
            .bind(event.order_no)
            .bind(event.amount)
            .execute(conn)
            .await?;
        Ok(())
    }
}

/// Version 2: a new shape (a size band per order) and a second table.
const V2_TABLES: &str = "
    CREATE TABLE orders (
        order_no bigint NOT NULL,
        amount   bigint NOT NULL,
        size     text   NOT NULL
    );
    CREATE TABLE order_sizes (size text PRIMARY KEY, orders bigint NOT NULL);";

struct OrdersV2;

#[projection(name = "orders", version = 2)]
impl OrdersV2 {
    #[handles(OrderPlaced)]
    async fn placed(
        &mut self,
        conn: &mut PgConnection,
        event: &Envelope<OrderPlaced>,
    ) -> Result<(), sqlx::Error> {
        let size = if event.amount >= 100 {
            "large"
        } else {
            "small"
        };
        sqlx::query("INSERT INTO orders (order_no, amount, size) VALUES ($1, $2, $3)")
            .bind(event.order_no)
            .bind(event.amount)
            .bind(size)
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "INSERT INTO order_sizes AS s (size, orders) VALUES ($1, 1)
             ON CONFLICT (size) DO UPDATE SET orders = s.orders + 1",
        )
        .bind(size)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

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
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {url}: {e}"))
}

/// Fails instead of hanging.
async fn within<T>(what: &str, limit: Duration, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
}

const LIMIT: Duration = Duration::from_secs(300);

/// The crate's tables in `bg_<random>`, the views in `bg_<random>_orders`.
struct TestDb {
    pool: PgPool,
    name: String,
    schema: Schema,
    store: Arc<PostgreSQLEventStore>,
}

impl TestDb {
    async fn new() -> Self {
        let pool = connect(12).await;
        let name = format!("bg_{}", &Uuid::new_v4().simple().to_string()[..16]);
        let schema = Schema::named(&name).unwrap();
        migrate_schema(&pool, &schema).await.unwrap();
        let store = Arc::new(PostgreSQLEventStore::with_schema(
            pool.clone(),
            schema.clone(),
        ));
        Self {
            pool,
            name,
            schema,
            store,
        }
    }

    fn serving(&self) -> String {
        format!("{}_orders", self.name)
    }

    fn blue_green(&self) -> Arc<BlueGreen<PostgreSQLReadModelVersions>> {
        let versions = PostgreSQLReadModelVersions::new(
            self.pool.clone(),
            self.schema.clone(),
            Schema::named(&self.serving()).unwrap(),
        )
        .unwrap();
        Arc::new(BlueGreen::new(versions, "orders"))
    }

    /// Appends orders `from..from + count` in appends of up to 1000 events, one stream each.
    async fn append(&self, from: i64, count: i64) {
        let mut next = from;
        while next < from + count {
            let end = (next + 1000).min(from + count);
            let stream = Uuid::new_v4();
            let events: Vec<AnyEvent> = (next..end)
                .map(|order_no| {
                    Envelope::new(
                        stream,
                        OrderPlaced {
                            order_no,
                            amount: order_no % 200,
                        },
                    )
                    .into()
                })
                .collect();
            self.store
                .append(stream, ExpectedVersion::NoStream, events)
                .await
                .unwrap();
            next = end;
        }
    }

    /// The last position appended (every append has committed). The store's readable head
    /// may lag behind it while transactions elsewhere on the server are still running.
    async fn last_position(&self) -> u64 {
        let last: i64 = sqlx::query_scalar(&format!(
            "SELECT coalesce(max(position), 0) FROM \"{}\".projection_events",
            self.name
        ))
        .fetch_one(&self.pool)
        .await
        .unwrap();
        u64::try_from(last).unwrap()
    }

    fn coordinator(&self, registry: ProjectionRegistry) -> CoordinatorHandle {
        ProjectionCoordinator::new(registry, self.store.clone())
            .batch_size(1000)
            .poll_interval(Duration::from_millis(200))
            .start()
            .unwrap()
    }

    /// Order numbers applied more than once, and the number of distinct ones, in `table`.
    async fn applications(&self, table: &str) -> (Vec<i64>, i64) {
        let repeated: Vec<i64> = sqlx::query_scalar(&format!(
            "SELECT order_no FROM {table} GROUP BY order_no HAVING count(*) > 1 ORDER BY 1"
        ))
        .fetch_all(&self.pool)
        .await
        .unwrap();
        let distinct: i64 =
            sqlx::query_scalar(&format!("SELECT count(DISTINCT order_no) FROM {table}"))
                .fetch_one(&self.pool)
                .await
                .unwrap();
        (repeated, distinct)
    }

    async fn schema_exists(&self, name: &str) -> bool {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    async fn drop(self) {
        for schema in [
            self.name.clone(),
            self.serving(),
            format!("{}_v1", self.serving()),
            format!("{}_v2", self.serving()),
        ] {
            sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .execute(&self.pool)
                .await
                .unwrap();
        }
    }
}

/// What a reader saw while it queried the views continuously.
#[derive(Debug, Default)]
struct Reads {
    queries: u64,
    errors: Vec<String>,
    /// Row counts, in the order seen.
    counts: Vec<i64>,
    /// Columns of `orders`, in the order seen (deduplicated runs).
    shapes: Vec<usize>,
}

/// Queries the views until `stop`: the row count, then one row (through the simple query
/// protocol, as `SELECT *` must be when the shape changes: see the bluegreen docs).
async fn read_continuously(pool: PgPool, serving: String, stop: Arc<AtomicBool>) -> Reads {
    let mut reads = Reads::default();
    let count_sql = format!("SELECT count(*) FROM \"{serving}\".orders");
    let row_sql = format!("SELECT * FROM \"{serving}\".orders LIMIT 1");
    while !stop.load(Ordering::Relaxed) {
        reads.queries += 1;
        match sqlx::query_scalar::<_, i64>(&count_sql)
            .fetch_one(&pool)
            .await
        {
            Ok(count) => reads.counts.push(count),
            Err(error) => reads.errors.push(error.to_string()),
        }
        // The simple query protocol: no statement is parsed ahead of its execution, so a swap
        // between the two cannot change a planned result type under it.
        match sqlx::raw_sql(&row_sql)
            .fetch_all(&pool)
            .await
            .map(|rows| rows.into_iter().next())
        {
            Ok(Some(row)) => {
                let columns = row.columns().len();
                if reads.shapes.last() != Some(&columns) {
                    reads.shapes.push(columns);
                }
            }
            Ok(None) => {}
            Err(error) => reads.errors.push(error.to_string()),
        }
    }
    reads
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Orders stored before the rebuild.
const BEFORE: i64 = 20_000;
/// Orders appended while version 2 is built (at most).
const DURING: i64 = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_is_built_beside_the_serving_one_and_readers_switch_without_losing_a_row() {
    let db = TestDb::new().await;
    db.append(0, BEFORE).await;
    let orders = db.blue_green();

    // Version 1 serves.
    let mut registry = ProjectionRegistry::new();
    registry
        .register(orders.runner(OrdersV1, V1_TABLES).await.unwrap())
        .unwrap();
    let old = db.coordinator(registry);
    assert_eq!(
        within("promoting v1", LIMIT, orders.promote(&old, 1))
            .await
            .unwrap(),
        None
    );
    let serving = db.serving();
    let before: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM \"{serving}\".orders"))
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(before, BEFORE, "v1 is promoted only once caught up");

    // Readers query continuously from here on.
    let stop_reading = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn(read_continuously(
        db.pool.clone(),
        serving.clone(),
        stop_reading.clone(),
    ));

    // The new release: version 2, built beside version 1 (which keeps running).
    let mut registry = ProjectionRegistry::new();
    registry
        .register(orders.runner(OrdersV2, V2_TABLES).await.unwrap())
        .unwrap();
    let new = db.coordinator(registry);
    let mut v2_status = new.watch("orders@v2").unwrap();
    let building = tokio::spawn(async move {
        // Every version status v2 publishes before it is promoted.
        let mut seen = Vec::new();
        while v2_status.changed().await.is_ok() {
            let snapshot = v2_status.borrow_and_update().clone();
            let Some(version) = snapshot.version else {
                continue;
            };
            let serving = version.role == VersionRole::Serving;
            seen.push((snapshot.state, version));
            if serving {
                break;
            }
        }
        seen
    });

    // Writers append while v2 catches up.
    let stop_writing = Arc::new(AtomicBool::new(false));
    let writer = {
        let db_store = db.store.clone();
        let stop = stop_writing.clone();
        tokio::spawn(async move {
            let mut appended = 0;
            while appended < DURING && !stop.load(Ordering::Relaxed) {
                let stream = Uuid::new_v4();
                let events: Vec<AnyEvent> = (0..10)
                    .map(|i| {
                        let order_no = BEFORE + appended + i;
                        Envelope::new(
                            stream,
                            OrderPlaced {
                                order_no,
                                amount: order_no % 200,
                            },
                        )
                        .into()
                    })
                    .collect();
                db_store
                    .append(stream, ExpectedVersion::NoStream, events)
                    .await
                    .unwrap();
                appended += 10;
                tokio::task::yield_now().await;
            }
            appended
        })
    };

    let replaced = within("promoting v2", LIMIT, orders.promote(&new, 2))
        .await
        .unwrap();
    assert_eq!(replaced, Some(1));
    stop_writing.store(true, Ordering::Relaxed);
    let during = writer.await.unwrap();
    assert!(during > 0, "appends ran during the rebuild");
    let total = BEFORE + during;

    // Both versions go on: each reaches the head.
    let head = db.last_position().await;
    within(
        "v1 catching up",
        LIMIT,
        old.wait_for_checkpoint("orders@v1", head),
    )
    .await
    .unwrap();
    within(
        "v2 catching up",
        LIMIT,
        new.wait_for_checkpoint("orders@v2", head),
    )
    .await
    .unwrap();

    // The status showed v2 building, with its progress, then serving.
    let seen = within("v2's statuses", LIMIT, building).await.unwrap();
    let building_progress: Vec<f64> = seen
        .iter()
        .filter(|(_, v)| v.role == VersionRole::Building)
        .filter_map(|(_, v)| v.progress)
        .collect();
    assert!(
        building_progress.iter().any(|&p| p < 1.0),
        "v2 showed its progress while building: {seen:?}"
    );
    assert!(
        building_progress.windows(2).all(|w| w[0] <= w[1]),
        "{building_progress:?}"
    );
    let v2 = new.projection_status("orders@v2").unwrap();
    let v2_version = v2.version.unwrap();
    assert_eq!(
        (v2_version.version, v2_version.role),
        (2, VersionRole::Serving)
    );
    // v1 runs in another coordinator than the one given to `promote`: its worker shows the
    // new role at its next look at the store (a poll interval).
    let mut v1_status = old.watch("orders@v1").unwrap();
    within(
        "v1 showing its new role",
        LIMIT,
        v1_status.wait_for(|s| {
            s.version
                .as_ref()
                .is_some_and(|v| v.role == VersionRole::Replaced)
        }),
    )
    .await
    .unwrap();
    assert_eq!(
        orders.versions().await.unwrap(),
        [(1, VersionRole::Replaced), (2, VersionRole::Serving)]
    );

    // Exactly once, in both versions: every order once, events of the rebuild included.
    for table in [
        format!("\"{serving}_v1\".orders"),
        format!("\"{serving}_v2\".orders"),
        format!("\"{serving}\".orders"),
    ] {
        let (repeated, distinct) = db.applications(&table).await;
        assert!(repeated.is_empty(), "{table}: applied twice: {repeated:?}");
        assert_eq!(distinct, total, "{table}");
    }
    let sizes: i64 = sqlx::query_scalar(&format!(
        "SELECT sum(orders)::bigint FROM \"{serving}\".order_sizes"
    ))
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(sizes, total, "the new version's second table is served too");

    // Retire v1: its worker stops, its schema and checkpoint go.
    within("retiring v1", LIMIT, orders.retire(Some(&old), 1))
        .await
        .unwrap();
    assert!(!db.schema_exists(&format!("{serving}_v1")).await);
    let v1_checkpoint: Option<i64> = sqlx::query_scalar(&format!(
        "SELECT position FROM \"{}\".projection_checkpoints WHERE projection_name = 'orders@v1'",
        db.name
    ))
    .fetch_optional(&db.pool)
    .await
    .unwrap();
    assert_eq!(v1_checkpoint, None);
    assert_eq!(
        old.projection_status("orders@v1").unwrap().state,
        WorkerState::Finished
    );

    // What the reader saw, across the rebuild, the switch and the retirement.
    stop_reading.store(true, Ordering::Relaxed);
    let reads = reader.await.unwrap();
    assert!(
        reads.errors.is_empty(),
        "the reader saw errors: {:?}",
        reads.errors
    );
    assert!(reads.queries > 10, "the reader kept querying: {reads:?}");
    let lowest = reads.counts.iter().min().copied().unwrap();
    assert!(
        lowest >= before,
        "the reader saw {lowest} rows, fewer than {before}"
    );
    assert!(
        reads.counts.windows(2).all(|w| w[0] <= w[1]),
        "the row count never went down"
    );
    assert_eq!(reads.shapes, [2, 3], "the old shape, then the new one");

    old.shutdown(Duration::from_secs(10)).await;
    new.shutdown(Duration::from_secs(10)).await;
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_behind_the_serving_one_is_not_switched_to_and_a_replaced_one_can_come_back() {
    let db = TestDb::new().await;
    db.append(0, 500).await;
    let orders = db.blue_green();

    let mut registry = ProjectionRegistry::new();
    registry
        .register(orders.runner(OrdersV1, V1_TABLES).await.unwrap())
        .unwrap();
    registry
        .register(orders.runner(OrdersV2, V2_TABLES).await.unwrap())
        .unwrap();
    let handle = db.coordinator(registry);
    within("promoting v1", LIMIT, orders.promote(&handle, 1))
        .await
        .unwrap();
    within(
        "v2 catching up",
        LIMIT,
        handle.wait_for_checkpoint("orders@v2", db.last_position().await),
    )
    .await
    .unwrap();

    // v2 paused: v1 moves ahead of it.
    assert_eq!(db.last_position().await, 500);
    handle.pause("orders@v2", "held back").await.unwrap();
    db.append(500, 100).await;
    let head = db.last_position().await;
    within(
        "v1 catching up",
        LIMIT,
        handle.wait_for_checkpoint("orders@v1", head),
    )
    .await
    .unwrap();
    let serving = db.serving();
    let count = |pool: PgPool, serving: String| async move {
        sqlx::query_scalar::<_, i64>(&format!("SELECT count(*) FROM \"{serving}\".orders"))
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let switch = orders.backend().switch("orders", 2).await.unwrap();
    assert!(
        matches!(switch, Switch::Behind { checkpoint, serving } if checkpoint == 500 && serving == head),
        "{switch:?}"
    );
    assert_eq!(
        count(db.pool.clone(), serving.clone()).await,
        600,
        "still v1"
    );
    assert_eq!(orders.serving().await.unwrap(), Some(1));

    // Resumed, it catches up and is promoted.
    handle.resume("orders@v2").await.unwrap();
    assert_eq!(
        within("promoting v2", LIMIT, orders.promote(&handle, 2))
            .await
            .unwrap(),
        Some(1)
    );
    assert_eq!(count(db.pool.clone(), serving.clone()).await, 600);

    // The serving version cannot be retired; the replaced one can come back (a rollback).
    assert!(matches!(
        orders.retire(Some(&handle), 2).await,
        Err(BlueGreenError::Serving { version: 2, .. })
    ));
    assert_eq!(
        within("rolling back to v1", LIMIT, orders.promote(&handle, 1))
            .await
            .unwrap(),
        Some(2)
    );
    let columns: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'orders'",
    )
    .bind(&serving)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(columns, 2, "the views show v1's shape again");
    let sizes_view: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_views WHERE schemaname = $1 AND viewname = 'order_sizes')",
    )
    .bind(&serving)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(!sizes_view, "v2's other view went with it");

    // Unknown versions and other projections are refused.
    assert!(matches!(
        orders.promote(&handle, 3).await,
        Err(BlueGreenError::Coordinator(_))
    ));
    assert!(matches!(
        orders.backend().switch("orders", 3).await.unwrap(),
        Switch::Unknown
    ));
    let other = BlueGreen::new(
        PostgreSQLReadModelVersions::new(
            db.pool.clone(),
            db.schema.clone(),
            Schema::named(&serving).unwrap(),
        )
        .unwrap(),
        "customers",
    );
    assert!(matches!(
        other.runner(OrdersV1, V1_TABLES).await,
        Err(BlueGreenError::WrongProjection { .. })
    ));
    handle.shutdown(Duration::from_secs(10)).await;
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_goes_on_from_each_versions_checkpoint_without_running_its_ddl_again() {
    let db = TestDb::new().await;
    db.append(0, 300).await;
    let orders = db.blue_green();
    let mut registry = ProjectionRegistry::new();
    registry
        .register(orders.runner(OrdersV1, V1_TABLES).await.unwrap())
        .unwrap();
    let handle = db.coordinator(registry);
    within("promoting v1", LIMIT, orders.promote(&handle, 1))
        .await
        .unwrap();
    handle.shutdown(Duration::from_secs(10)).await;

    // A new process: the same DDL would fail if it ran again (the table exists).
    db.append(300, 50).await;
    let orders = db.blue_green();
    let mut registry = ProjectionRegistry::new();
    let runner = orders.runner(OrdersV1, V1_TABLES).await.unwrap();
    assert_eq!(runner.version_status().unwrap().role, VersionRole::Serving);
    registry.register(runner).unwrap();
    let handle = db.coordinator(registry);
    within(
        "v1 catching up",
        LIMIT,
        handle.wait_for_checkpoint("orders@v1", db.last_position().await),
    )
    .await
    .unwrap();
    let (repeated, distinct) = db
        .applications(&format!("\"{}\".orders", db.serving()))
        .await;
    assert!(repeated.is_empty(), "applied twice: {repeated:?}");
    assert_eq!(distinct, 350);

    // A DDL that fails creates nothing: no schema, no ledger entry.
    let failing = db.blue_green();
    let Err(error) = failing
        .runner(
            OrdersV2,
            "CREATE TABLE orders (order_no bigint); SELECT 1/0;",
        )
        .await
    else {
        panic!("a failing DDL was accepted");
    };
    assert!(matches!(error, BlueGreenError::Storage(_)), "{error}");
    assert!(!db.schema_exists(&format!("{}_v2", db.serving())).await);
    assert_eq!(
        failing.versions().await.unwrap(),
        [(1, VersionRole::Serving)]
    );
    handle.shutdown(Duration::from_secs(10)).await;
    db.drop().await;
}
