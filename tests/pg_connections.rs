//! Many projections on few connections, on a real PostgreSQL server (`DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`): 200 transactional projections (200 partitions
//! of one projection, each a runner and worker of its own) on a pool of at most 10
//! connections, tailing the store live while events are appended. The server's own count of
//! the pool's connections (`pg_stat_activity`, by `application_name`) never exceeds the pool
//! (plus the one listening connection the store keeps for append notifications), and every
//! projection reaches the head: none starves.
//!
//! Run with `cargo test -p projections-tests --features postgres --test pg_connections`
//! (`-- --nocapture` prints the figures; `PG_CONNECTIONS_SECONDS` makes the live phase
//! longer). It works in a schema of its own, dropped when it passes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "common/nodes.rs"]
mod nodes;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use nodes::{Beat, Counting, Sequenced};
use projections::coordinator::ProjectionCoordinator;
use projections::postgres::{PostgreSQLEventStore, Schema};
use projections::runner::Partition;
use projections::transactional::{PostgreSQLTransactionUnit, TransactionalRunner};
use projections::{AnyEvent, Envelope, EventStore, ExpectedVersion, ProjectionRegistry};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::time::Instant;
use uuid::Uuid;

const PROJECTIONS: u32 = 200;
const POOL: u32 = 10;

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Connections the server sees for `application`.
async fn connections(observer: &PgPool, application: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
        .bind(application)
        .fetch_one(observer)
        .await
        .unwrap()
}

async fn checkpoints_at(observer: &PgPool, schema: &str, head: u64) -> i64 {
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM \"{schema}\".projection_checkpoints WHERE position >= $1"
    ))
    .bind(head as i64)
    .fetch_one(observer)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_projections_run_on_ten_connections_and_none_starves() {
    let url = database_url();
    let observer = PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {url}: {e}; set DATABASE_URL"));
    let name = format!("pc_{}", Uuid::new_v4().simple());
    let schema = Schema::named(&name[..24]).unwrap();
    let schema_name = schema.name().unwrap().to_owned();
    nodes::prepare(&observer, &schema).await.unwrap();
    nodes::prepare_sequences(&observer, &schema).await.unwrap();

    let application = format!("bounded_{}", &schema_name[3..]);
    let options = PgConnectOptions::from_str(&url)
        .unwrap()
        .application_name(&application);
    let pool = PgPoolOptions::new()
        .max_connections(POOL)
        .acquire_timeout(Duration::from_secs(60))
        .connect_with(options)
        .await
        .unwrap();
    let unit = Arc::new(PostgreSQLTransactionUnit::with_schema(
        pool.clone(),
        &schema,
    ));
    let store = Arc::new(PostgreSQLEventStore::with_schema(
        pool.clone(),
        schema.clone(),
    ));
    let mut registry = ProjectionRegistry::new();
    let projection = Sequenced(Counting::new(&schema, "solo"));
    for partition in Partition::all(PROJECTIONS).unwrap() {
        registry
            .register(
                TransactionalRunner::new(projection.clone(), unit.clone())
                    .partition(partition)
                    .tracing(false),
            )
            .unwrap();
    }
    let handle = ProjectionCoordinator::new(registry, store.clone() as Arc<dyn EventStore>)
        .batch_size(100)
        .poll_interval(Duration::from_millis(500))
        .tracing(false)
        .start()
        .unwrap();

    // Live: aggregates of ten beats, one append each, while the server's count is sampled.
    let seconds = std::env::var("PG_CONNECTIONS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15_u64);
    let started = Instant::now();
    let (mut most, mut samples, mut head, mut aggregates) = (0_i64, 0, 0_u64, 0_i64);
    while started.elapsed() < Duration::from_secs(seconds) {
        let id = Uuid::new_v4();
        let events: Vec<AnyEvent> = (0..10)
            .map(|n| Envelope::new(id, Beat { n }).into())
            .collect();
        head = store
            .append(id, ExpectedVersion::NoStream, events)
            .await
            .unwrap()
            .last_position;
        aggregates += 1;
        most = most.max(connections(&observer, &application).await);
        samples += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Every projection reaches the head.
    let caught_up = Instant::now();
    loop {
        most = most.max(connections(&observer, &application).await);
        let at_head = checkpoints_at(&observer, &schema_name, head).await;
        if at_head == i64::from(PROJECTIONS) {
            break;
        }
        assert!(
            caught_up.elapsed() < Duration::from_secs(120),
            "{at_head} of {PROJECTIONS} projections reached the head in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let behind = caught_up.elapsed();
    assert_eq!(
        nodes::sequences(&observer, &schema, 9).await.unwrap(),
        (aggregates, aggregates, aggregates * 10),
        "every aggregate's beats applied once, in order"
    );
    eprintln!(
        "{PROJECTIONS} projections, pool of {POOL}: {aggregates} appends of 10 events over \
         {seconds} s; at most {most} connections seen in {samples} samples (pool and listener); \
         all at the head {behind:?} after the last append"
    );
    // The pool, and the connection the store listens on.
    assert!(most <= i64::from(POOL) + 1, "{most} connections");
    assert!(handle.shutdown(Duration::from_secs(30)).await.is_ok());
    pool.close().await;
    sqlx::raw_sql(&format!("DROP SCHEMA \"{schema_name}\" CASCADE"))
        .execute(&observer)
        .await
        .unwrap();
}
