//! Read-your-writes latency on PostgreSQL: append one event, then
//! `CoordinatorHandle::wait_for(projection, position, timeout)` until the projection has
//! applied it. Two spans per event: from the batch's `COMMIT` returning (the checkpoint
//! written) to `wait_for` returning, and from `append` returning to `wait_for` returning (what a
//! caller waits in all).
//!
//! Run with `cargo run --release -p projections-benches --features postgres --bin wait_for`
//! against `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`); `-- --events N`
//! (default 500). Schema `projections_bench_wait_for`, dropped and migrated afresh. One
//! transactional projection (one `INSERT` per event), default poll interval (1 s), so the
//! worker wakes on the store's notification.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use projections::checkpoint::CheckpointUpdate;
use projections::coordinator::{ProjectionCoordinator, Waited};
use projections::dlq::{DLQRepository, FailedEvent};
use projections::postgres::{self, PostgreSQLEventStore, Schema};
use projections::storage::BoxFuture;
use projections::transactional::{PostgreSQLTransactionUnit, TransactionUnit, TransactionalRunner};
use projections::{
    CheckpointRepository, Envelope, Event, EventStore, ExpectedVersion, PgConnection,
    ProjectionRegistry, StorageError, projection,
};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

const SCHEMA: &str = "projections_bench_wait_for";

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "bench.wait_for.placed", aggregate = "Order")]
struct Placed {
    n: i64,
}

struct Orders;

#[projection(name = "orders")]
impl Orders {
    #[handles(Placed)]
    async fn placed(
        &mut self,
        conn: &mut PgConnection,
        e: &Envelope<Placed>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO projections_bench_wait_for.orders (n) VALUES ($1)")
            .bind(e.n)
            .execute(conn)
            .await?;
        Ok(())
    }
}

/// `PostgreSQLTransactionUnit`, noting when each commit returned.
struct Timed {
    inner: PostgreSQLTransactionUnit,
    committed: Arc<Mutex<Option<Instant>>>,
}

impl TransactionUnit for Timed {
    type Connection = PgConnection;
    type Transaction = Transaction<'static, Postgres>;

    fn begin(&self) -> BoxFuture<'_, Result<Self::Transaction, StorageError>> {
        self.inner.begin()
    }
    fn commit(&self, tx: Self::Transaction) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move {
            self.inner.commit(tx).await?;
            *self.committed.lock().unwrap() = Some(Instant::now());
            Ok(())
        })
    }
    fn rollback(&self, tx: Self::Transaction) -> BoxFuture<'_, Result<(), StorageError>> {
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

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1_000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let events: usize = args
        .iter()
        .position(|a| a == "--events")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let pool = PgPoolOptions::new()
        .max_connections(6)
        .connect(&url)
        .await
        .unwrap();
    sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        .execute(&pool)
        .await
        .unwrap();
    let schema = Schema::named(SCHEMA).unwrap();
    postgres::migrate_schema(&pool, &schema).await.unwrap();
    sqlx::raw_sql("CREATE TABLE projections_bench_wait_for.orders (n bigint NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    let committed = Arc::new(Mutex::new(None));
    let unit = Arc::new(Timed {
        inner: PostgreSQLTransactionUnit::with_schema(pool.clone(), &schema),
        committed: committed.clone(),
    });
    let mut registry = ProjectionRegistry::new();
    registry
        .register(TransactionalRunner::new(Orders, unit))
        .unwrap();
    let store = Arc::new(PostgreSQLEventStore::with_schema(pool.clone(), schema));
    let handle = ProjectionCoordinator::new(registry, store.clone())
        .start()
        .unwrap();

    let (mut after_commit, mut after_append) = (Vec::new(), Vec::new());
    for n in 0..events {
        let id = Uuid::new_v4();
        let appended = store
            .append(
                id,
                ExpectedVersion::NoStream,
                vec![Envelope::new(id, Placed { n: n as i64 }).into()],
            )
            .await
            .unwrap();
        let returned = Instant::now();
        let waited_for = handle
            .wait_for("orders", appended.last_position, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(matches!(waited_for, Waited::Reached(_)), "{waited_for:?}");
        let waited = Instant::now();
        let commit = committed.lock().unwrap().unwrap();
        // The first tenth is warm-up.
        if n >= events / 10 {
            after_commit.push(waited.saturating_duration_since(commit));
            after_append.push(waited - returned);
        }
    }
    after_commit.sort();
    after_append.sort();
    println!(
        "{} events measured (of {events}), one at a time",
        after_commit.len()
    );
    println!("| span | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|");
    for (span, values) in [
        ("checkpoint commit -> wait_for returns", &after_commit),
        ("append returns -> wait_for returns", &after_append),
    ] {
        println!(
            "| {span} | {:.3} | {:.3} | {:.3} |",
            percentile(values, 0.5),
            percentile(values, 0.99),
            percentile(values, 1.0)
        );
    }
    let _ = handle.shutdown(Duration::from_secs(5)).await;
}
