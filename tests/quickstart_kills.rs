//! The quickstart example (built from examples/quickstart.rs as the `quickstart` binary of
//! this package), killed with SIGKILL at moments spread over its run and started again,
//! ends with what an uninterrupted run gives: no event lost, none applied twice.
//!
//! Each run appends orders and applies them to two read-model tables in SQLite, one
//! transaction per batch with the checkpoint. The daily metrics are counters, so an event
//! applied twice shows as a count too high, and one lost as a count too low.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::SqliteConnectOptions;

fn quickstart(db: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_quickstart"));
    command
        .arg("--db")
        .arg(db)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// What the store holds, counted from the events themselves.
#[derive(Debug, PartialEq, Eq)]
struct Expected {
    orders: i64,
    revenue_cents: i64,
    shipped: i64,
    cancelled: i64,
}

async fn expected(pool: &SqlitePool) -> Expected {
    let (orders, revenue_cents, shipped, cancelled): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT
             count(CASE WHEN event_type = 'OrderCreated' THEN 1 END),
             coalesce(sum(CASE WHEN event_type = 'OrderCreated'
                 THEN json_extract(payload, '$.total_cents') END), 0),
             count(CASE WHEN event_type = 'OrderShipped' THEN 1 END),
             count(CASE WHEN event_type = 'OrderCancelled' THEN 1 END)
         FROM projection_events",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    Expected {
        orders,
        revenue_cents,
        shipped,
        cancelled,
    }
}

async fn counted(pool: &SqlitePool) -> Expected {
    let (orders, revenue_cents, shipped, cancelled): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(orders), 0), coalesce(sum(revenue_cents), 0),
                coalesce(sum(shipped), 0), coalesce(sum(cancelled), 0)
         FROM daily_metrics",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    Expected {
        orders,
        revenue_cents,
        shipped,
        cancelled,
    }
}

/// A directory of its own under the system's temporary directory, removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!(
            "projections-quickstart-kills-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quickstart_killed_at_any_moment_loses_nothing_and_applies_nothing_twice() {
    let dir = TempDir::new();
    let db = dir.0.join("orders.db");

    // A first run creates the file and appends the first orders; a second one shows how long
    // a later run takes: the kills are spread over that span.
    assert!(quickstart(&db).status().unwrap().success());
    let started = std::time::Instant::now();
    assert!(quickstart(&db).status().unwrap().success());
    let span = started.elapsed().max(Duration::from_millis(10));

    // Kill moments step through the span, from the start of the process to its usual end,
    // until 40 kills have hit a running process.
    let wanted = 40u32;
    let mut killed_while_running = 0;
    for round in 0..(wanted * 5) {
        if killed_while_running == wanted {
            break;
        }
        let mut child = quickstart(&db).spawn().unwrap();
        std::thread::sleep(span * (round % wanted) / wanted);
        if child.try_wait().unwrap().is_none() {
            killed_while_running += 1;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    assert_eq!(
        killed_while_running, wanted,
        "too few kills hit a running process"
    );

    // Started again, it finishes what the killed runs left.
    let output = quickstart(&db).stdout(Stdio::piped()).output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("resumed from checkpoint"), "{text}");

    let pool = SqlitePool::connect_with(SqliteConnectOptions::new().filename(&db))
        .await
        .unwrap();
    let expected = expected(&pool).await;
    assert!(expected.orders >= 3, "{expected:?}");
    assert_eq!(counted(&pool).await, expected);

    // One row per created order, in the order summary; the shipment of the order that was
    // never created is the one dead letter, recorded once.
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM order_summary")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, expected.orders);
    let dead: Vec<(String, String)> =
        sqlx::query_as("SELECT projection_name, event_type FROM projection_dead_letters")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(dead, [("order-summary".into(), "OrderShipped".into())]);

    // Both checkpoints at the head.
    let head: i64 = sqlx::query_scalar("SELECT max(position) FROM projection_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    let checkpoints: Vec<(String, i64)> = sqlx::query_as(
        "SELECT projection_name, position FROM projection_checkpoints ORDER BY projection_name",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        checkpoints,
        [
            ("daily-metrics".into(), head),
            ("order-summary".into(), head)
        ]
    );
}
