//! Blue/green rebuilds on SQLite, in one temporary database file per test: a new version of a
//! projection is built beside the serving one while a reader (a pool of its own, as another
//! process would have) queries the stable views and a writer appends; the switch loses no rows
//! and raises no error; both versions apply every event exactly once; the old version is
//! retired. Tables of a version that are not named for it are refused.
//!
//! Run with `cargo test -p projections-tests --features sqlite --test sqlite_bluegreen`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::sqlite::TempFile;
use projections::bluegreen::{BlueGreen, BlueGreenError, SqliteReadModelVersions, VersionRole};
use projections::coordinator::{CoordinatorHandle, ProjectionCoordinator, WorkerState};
use projections::sqlite::{SqliteEventStore, SqlitePool};
use projections::{
    AnyEvent, Envelope, Event, EventStore, ExpectedVersion, ProjectionRegistry, SqliteConnection,
    projection,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "sbg.order_placed", aggregate = "Order")]
struct OrderPlaced {
    order_no: i64,
    amount: i64,
}

/// Version 1: one row per order, in `orders_v1`. No unique key: an order applied twice shows
/// as two rows.
const V1_TABLES: &str =
    "CREATE TABLE orders_v1 (order_no INTEGER NOT NULL, amount INTEGER NOT NULL) STRICT";

struct OrdersV1;

#[projection(name = "orders", version = 1)]
impl OrdersV1 {
    #[handles(OrderPlaced)]
    async fn placed(
        &mut self,
        conn: &mut SqliteConnection,
        event: &Envelope<OrderPlaced>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO orders_v1 (order_no, amount) VALUES (?1, ?2)")
            .bind(event.order_no)
            .bind(event.amount)
            .execute(conn)
            .await?;
        Ok(())
    }
}

/// Version 2: a new shape, and a second table.
const V2_TABLES: &str = "
    CREATE TABLE orders_v2 (
        order_no INTEGER NOT NULL,
        amount   INTEGER NOT NULL,
        size     TEXT    NOT NULL
    ) STRICT;
    CREATE INDEX orders_v2_by_no ON orders_v2 (order_no);
    CREATE TABLE order_sizes_v2 (size TEXT PRIMARY KEY, orders INTEGER NOT NULL) STRICT;";

struct OrdersV2;

#[projection(name = "orders", version = 2)]
impl OrdersV2 {
    #[handles(OrderPlaced)]
    async fn placed(
        &mut self,
        conn: &mut SqliteConnection,
        event: &Envelope<OrderPlaced>,
    ) -> Result<(), sqlx::Error> {
        let size = if event.amount >= 100 {
            "large"
        } else {
            "small"
        };
        sqlx::query("INSERT INTO orders_v2 (order_no, amount, size) VALUES (?1, ?2, ?3)")
            .bind(event.order_no)
            .bind(event.amount)
            .bind(size)
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "INSERT INTO order_sizes_v2 (size, orders) VALUES (?1, 1)
             ON CONFLICT (size) DO UPDATE SET orders = orders + 1",
        )
        .bind(size)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// Fails instead of hanging.
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    let limit = Duration::from_secs(300);
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
}

struct TestDb {
    file: TempFile,
    pool: SqlitePool,
    store: Arc<SqliteEventStore>,
}

impl TestDb {
    async fn new() -> Self {
        let file = TempFile::new("sqlite-bluegreen");
        let pool = file.open().await;
        let store = Arc::new(SqliteEventStore::new(pool.clone()));
        Self { file, pool, store }
    }

    fn blue_green(&self) -> Arc<BlueGreen<SqliteReadModelVersions>> {
        Arc::new(BlueGreen::new(
            SqliteReadModelVersions::new(self.pool.clone()),
            "orders",
        ))
    }

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

    fn coordinator(&self, registry: ProjectionRegistry) -> CoordinatorHandle {
        ProjectionCoordinator::new(registry, self.store.clone())
            .batch_size(1000)
            .poll_interval(Duration::from_millis(200))
            .start()
            .unwrap()
    }

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

    async fn objects(&self) -> Vec<(String, String)> {
        sqlx::query_as(
            "SELECT type, name FROM sqlite_master
             WHERE name LIKE 'order%' AND type IN ('table', 'view') ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }
}

#[derive(Debug, Default)]
struct Reads {
    queries: u64,
    errors: Vec<String>,
    counts: Vec<i64>,
    shapes: Vec<usize>,
}

/// Queries the view `orders` until `stop`, on a pool of its own: the row count, the columns
/// both versions have (by name: see the bluegreen docs on `SELECT *`), and the view's shape.
async fn read_continuously(pool: SqlitePool, stop: Arc<AtomicBool>) -> Reads {
    let mut reads = Reads::default();
    while !stop.load(Ordering::Relaxed) {
        reads.queries += 1;
        match sqlx::query_scalar::<_, i64>("SELECT count(*) FROM orders")
            .fetch_one(&pool)
            .await
        {
            Ok(count) => reads.counts.push(count),
            Err(error) => reads.errors.push(error.to_string()),
        }
        if let Err(error) =
            sqlx::query("SELECT order_no, amount FROM orders ORDER BY order_no LIMIT 1")
                .fetch_optional(&pool)
                .await
        {
            reads.errors.push(error.to_string());
        }
        match sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pragma_table_info('orders')")
            .fetch_one(&pool)
            .await
        {
            Ok(columns) => {
                let columns = usize::try_from(columns).unwrap();
                if reads.shapes.last() != Some(&columns) {
                    reads.shapes.push(columns);
                }
            }
            Err(error) => reads.errors.push(error.to_string()),
        }
        tokio::task::yield_now().await;
    }
    reads
}

const BEFORE: i64 = 10_000;
const DURING: i64 = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_is_built_beside_the_serving_one_and_readers_switch_without_losing_a_row() {
    let db = TestDb::new().await;
    db.append(0, BEFORE).await;
    let orders = db.blue_green();

    let mut registry = ProjectionRegistry::new();
    registry
        .register(orders.runner(OrdersV1, V1_TABLES).await.unwrap())
        .unwrap();
    let old = db.coordinator(registry);
    assert_eq!(
        within("promoting v1", orders.promote(&old, 1))
            .await
            .unwrap(),
        None
    );
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(before, BEFORE);

    let stop_reading = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn(read_continuously(
        db.file.open().await,
        stop_reading.clone(),
    ));

    let mut registry = ProjectionRegistry::new();
    registry
        .register(orders.runner(OrdersV2, V2_TABLES).await.unwrap())
        .unwrap();
    let new = db.coordinator(registry);

    let writer = {
        let store = db.store.clone();
        tokio::spawn(async move {
            let mut appended = 0;
            while appended < DURING {
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
                store
                    .append(stream, ExpectedVersion::NoStream, events)
                    .await
                    .unwrap();
                appended += 10;
                tokio::task::yield_now().await;
            }
            appended
        })
    };

    assert_eq!(
        within("promoting v2", orders.promote(&new, 2))
            .await
            .unwrap(),
        Some(1)
    );
    let total = BEFORE + writer.await.unwrap();
    let head = db.store.head_position().await.unwrap();
    within("v1 catching up", old.wait_for_checkpoint("orders@v1", head))
        .await
        .unwrap();
    within("v2 catching up", new.wait_for_checkpoint("orders@v2", head))
        .await
        .unwrap();
    let v2 = new.projection_status("orders@v2").unwrap().version.unwrap();
    assert_eq!(
        (v2.version, v2.role, v2.progress),
        (2, VersionRole::Serving, Some(1.0))
    );

    // Exactly once, in both versions and through the views.
    for table in ["orders_v1", "orders_v2", "orders"] {
        let (repeated, distinct) = db.applications(table).await;
        assert!(repeated.is_empty(), "{table}: applied twice: {repeated:?}");
        assert_eq!(distinct, total, "{table}");
    }
    let sizes: i64 = sqlx::query_scalar("SELECT sum(orders) FROM order_sizes")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(sizes, total);

    // Retired: v1's table and checkpoint go; the views stay on v2.
    within("retiring v1", orders.retire(Some(&old), 1))
        .await
        .unwrap();
    assert_eq!(
        old.projection_status("orders@v1").unwrap().state,
        WorkerState::Finished
    );
    let objects = db.objects().await;
    let expected: Vec<(String, String)> = [
        ("view", "order_sizes"),
        ("table", "order_sizes_v2"),
        ("view", "orders"),
        ("table", "orders_v2"),
    ]
    .iter()
    .map(|(t, n)| ((*t).to_owned(), (*n).to_owned()))
    .collect();
    assert_eq!(objects, expected);
    let v1_checkpoint: Option<i64> = sqlx::query_scalar(
        "SELECT position FROM projection_checkpoints WHERE projection_name = 'orders@v1'",
    )
    .fetch_optional(&db.pool)
    .await
    .unwrap();
    assert_eq!(v1_checkpoint, None);
    assert_eq!(
        orders.versions().await.unwrap(),
        [(1, VersionRole::Retired), (2, VersionRole::Serving)]
    );

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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_not_named_for_their_version_are_refused_and_nothing_is_created() {
    let db = TestDb::new().await;
    let orders = db.blue_green();
    let Err(error) = orders
        .runner(
            OrdersV2,
            "CREATE TABLE orders_v2 (order_no INTEGER); CREATE TABLE orders (n INTEGER);",
        )
        .await
    else {
        panic!("a table without the version's suffix was accepted");
    };
    let message = error.to_string();
    assert!(matches!(error, BlueGreenError::Storage(_)), "{message}");
    assert!(
        message.contains("`orders`") && message.contains("_v2"),
        "{message}"
    );
    assert!(db.objects().await.is_empty(), "nothing was created");
    assert!(orders.versions().await.unwrap().is_empty());

    // Retiring what was never built, or the serving version, is refused.
    assert!(matches!(
        orders.retire(None, 2).await,
        Err(BlueGreenError::UnknownVersion { version: 2, .. })
    ));
    orders.runner(OrdersV1, V1_TABLES).await.unwrap();
    let mut registry = ProjectionRegistry::new();
    registry
        .register(orders.runner(OrdersV1, V1_TABLES).await.unwrap())
        .unwrap();
    let handle = db.coordinator(registry);
    within("promoting v1", orders.promote(&handle, 1))
        .await
        .unwrap();
    assert!(matches!(
        orders.retire(Some(&handle), 1).await,
        Err(BlueGreenError::Serving { version: 1, .. })
    ));
    handle.shutdown(Duration::from_secs(10)).await;
}
