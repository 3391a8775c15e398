//! What running as a cluster node costs: a transactional projection catching up from nothing,
//! as a plain coordinator and as the one node of a cluster (a fencing check in every batch's
//! transaction, a heartbeat beside), interleaved round by round in the same run.
//!
//! Run with `cargo run --release -p projections-benches --features postgres --bin cluster`
//! against `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
//! `-- --events N --rounds R` for other sizes. Everything lives in schema
//! `projections_bench_cluster`; the events are kept for the next run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use projections::cluster::ClusterNode;
use projections::coordinator::ProjectionCoordinator;
use projections::postgres::{self, PostgreSQLEventStore, Schema};
use projections::transactional::{PostgreSQLTransactionUnit, TransactionalRunner};
use projections::{
    AnyEvent, Envelope, Event, EventStore, ExpectedVersion, PgConnection, ProjectionRegistry,
    projection,
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

const SCHEMA: &str = "projections_bench_cluster";

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "bench.cluster.ticked", aggregate = "Clock")]
struct Ticked {
    n: i64,
}

struct Ticks;

#[projection(name = "ticks")]
impl Ticks {
    #[handles(Ticked)]
    async fn ticked(
        &mut self,
        conn: &mut PgConnection,
        event: &Envelope<Ticked>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO projections_bench_cluster.ticks (n) VALUES ($1)")
            .bind(event.n)
            .execute(conn)
            .await?;
        Ok(())
    }
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn prepare(pool: &PgPool, store: &PostgreSQLEventStore, events: usize) -> u64 {
    let schema = Schema::named(SCHEMA).unwrap();
    postgres::migrate_schema(pool, &schema).await.unwrap();
    sqlx::raw_sql("CREATE TABLE IF NOT EXISTS projections_bench_cluster.ticks (n bigint NOT NULL)")
        .execute(pool)
        .await
        .unwrap();
    let mut head = store.head_position().await.unwrap();
    let mut stored = usize::try_from(head).unwrap();
    while stored < events {
        let aggregate = Uuid::new_v4();
        let chunk: Vec<AnyEvent> = (0..1_000.min(events - stored))
            .map(|i| {
                Envelope::new(
                    aggregate,
                    Ticked {
                        n: (stored + i) as i64,
                    },
                )
                .into()
            })
            .collect();
        stored += chunk.len();
        head = store
            .append(aggregate, ExpectedVersion::NoStream, chunk)
            .await
            .unwrap()
            .last_position;
    }
    head
}

/// Clears the read model, the checkpoint and the lease, then catches up from nothing; the
/// seconds it took.
async fn catch_up(
    pool: &PgPool,
    store: &Arc<PostgreSQLEventStore>,
    head: u64,
    batch: usize,
    cluster: bool,
) -> f64 {
    sqlx::raw_sql(
        "TRUNCATE projections_bench_cluster.ticks;
         DELETE FROM projections_bench_cluster.projection_checkpoints;
         DELETE FROM projections_bench_cluster.projection_leases;
         DELETE FROM projections_bench_cluster.projection_fences;
         DELETE FROM projections_bench_cluster.projection_nodes;",
    )
    .execute(pool)
    .await
    .unwrap();
    let schema = Schema::named(SCHEMA).unwrap();
    let unit = Arc::new(PostgreSQLTransactionUnit::with_schema(
        pool.clone(),
        &schema,
    ));
    let mut registry = ProjectionRegistry::new();
    registry
        .register(TransactionalRunner::new(Ticks, unit).tracing(false))
        .unwrap();
    let coordinator = ProjectionCoordinator::new(registry, store.clone() as Arc<dyn EventStore>)
        .batch_size(batch)
        .tracing(false);
    let coordinator = if cluster {
        coordinator.cluster(
            ClusterNode::new(pool.clone(), "bench")
                .unwrap()
                .schema(&schema),
        )
    } else {
        coordinator
    };
    let started = Instant::now();
    let handle = coordinator.start().unwrap();
    handle.wait_for_checkpoint("ticks", head).await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let _ = handle.shutdown(Duration::from_secs(10)).await;
    seconds
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let events = arg("--events", 20_000);
    let rounds = arg("--rounds", 5);
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect(&url)
        .await
        .unwrap();
    let store = Arc::new(PostgreSQLEventStore::with_schema(
        pool.clone(),
        Schema::named(SCHEMA).unwrap(),
    ));
    let head = prepare(&pool, &store, events).await;
    println!("{events} events (head {head}), {rounds} rounds, interleaved");
    println!(
        "| batch | plain, events/s (median) | cluster node, events/s (median) | node / plain |"
    );
    println!("|---:|---:|---:|---:|");
    for batch in [20, 100, 1_000] {
        let (mut plain, mut node) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            plain.push(head as f64 / catch_up(&pool, &store, head, batch, false).await);
            node.push(head as f64 / catch_up(&pool, &store, head, batch, true).await);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (plain, node) = (median(&mut plain), median(&mut node));
        println!("| {batch} | {plain:.0} | {node:.0} | {:.2} |", node / plain);
    }
}
