//! A cluster node when its database goes away: a node runs on a throwaway PostgreSQL cluster
//! (`common::cluster`, started with the server's own `initdb`/`pg_ctl` on a free port), the
//! server is stopped for longer than a lease, and started again. Meanwhile the node says why in
//! its cluster view, its workers stand by (their leases lapsed here), nothing is lost; after, it
//! takes its projections back and applies every event exactly once.
//!
//! Run with `cargo test -p projections-tests --features postgres --test cluster_outage`. Needs
//! the PostgreSQL server binaries, as `pg_faults` does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "common/nodes.rs"]
mod nodes;
#[path = "common/cluster.rs"]
#[allow(dead_code)] // the fault tests use more of it
mod throwaway;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use nodes::{Beat, Count0, Count1, Counting};
use projections::cluster::ClusterNode;
use projections::coordinator::{CoordinatorHandle, ProjectionCoordinator, WorkerState};
use projections::postgres::{PostgreSQLEventStore, Schema};
use projections::transactional::{PostgreSQLTransactionUnit, TransactionalRunner};
use projections::{AnyEvent, Envelope, EventStore, ExpectedVersion, ProjectionRegistry};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use throwaway::ThrowawayCluster;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    tokio::time::timeout(WAIT, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} did not happen within {WAIT:?}"));
}

async fn append(store: &PostgreSQLEventStore, count: i64) -> u64 {
    let aggregate = Uuid::new_v4();
    let events: Vec<AnyEvent> = (0..count)
        .map(|n| Envelope::new(aggregate, Beat { n }).into())
        .collect();
    store
        .append(aggregate, ExpectedVersion::NoStream, events)
        .await
        .unwrap()
        .last_position
}

async fn checkpoint(pool: &PgPool, projection: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(
        "SELECT position FROM \"outage\".projection_checkpoints WHERE projection_name = $1",
    )
    .bind(projection)
    .fetch_optional(pool)
    .await
    .ok()
    .flatten()
    .unwrap_or(0)
}

async fn held(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM \"outage\".projection_leases WHERE owner = 'a' AND expires_at > now()",
    )
    .fetch_one(pool)
    .await
    .unwrap_or(0)
}

fn node(pool: &PgPool, schema: &Schema, store: &Arc<PostgreSQLEventStore>) -> CoordinatorHandle {
    let unit = Arc::new(PostgreSQLTransactionUnit::with_schema(pool.clone(), schema));
    let counting = Counting::new(schema, "a");
    let mut registry = ProjectionRegistry::new();
    registry
        .register(TransactionalRunner::new(
            Count0(counting.clone()),
            unit.clone(),
        ))
        .unwrap();
    registry
        .register(TransactionalRunner::new(Count1(counting), unit))
        .unwrap();
    let cluster = ClusterNode::new(pool.clone(), "a")
        .unwrap()
        .schema(schema)
        .lease(Duration::from_secs(2))
        .heartbeat(Duration::from_millis(200));
    ProjectionCoordinator::new(registry, store.clone() as Arc<dyn EventStore>)
        .batch_size(20)
        .poll_interval(Duration::from_millis(100))
        .cluster(cluster)
        .start()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_waits_out_its_database_and_takes_its_projections_back() {
    let server = Arc::new(
        tokio::task::spawn_blocking(ThrowawayCluster::start)
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("cannot start a throwaway cluster: {e}")),
    );
    let pool = PgPoolOptions::new()
        .max_connections(6)
        .acquire_timeout(Duration::from_secs(1))
        .connect(&server.url())
        .await
        .unwrap();
    let schema = Schema::named("outage").unwrap();
    nodes::prepare(&pool, &schema).await.unwrap();
    let store = Arc::new(PostgreSQLEventStore::with_schema(
        pool.clone(),
        schema.clone(),
    ));
    let handle = node(&pool, &schema, &store);
    until("a holding both leases", || async { held(&pool).await == 2 }).await;
    let head = append(&store, 20).await;
    until("both caught up", || async {
        checkpoint(&pool, "count_0").await >= head as i64
            && checkpoint(&pool, "count_1").await >= head as i64
    })
    .await;

    // The database goes away for longer than a lease.
    let stopping = Arc::clone(&server);
    tokio::task::spawn_blocking(move || stopping.stop())
        .await
        .unwrap()
        .unwrap();
    until("the node saying why", || async {
        handle
            .cluster()
            .is_some_and(|view| view.last_error.is_some())
    })
    .await;
    until(
        "the workers standing by (their leases lapsed here)",
        || async {
            handle.status().iter().all(|s| {
                matches!(
                    s.state,
                    WorkerState::Standby { .. } | WorkerState::Degraded { .. }
                )
            })
        },
    )
    .await;
    let error = handle.cluster().unwrap().last_error.unwrap();
    eprintln!("while the database was away, the node said: {error}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let starting = Arc::clone(&server);
    tokio::task::spawn_blocking(move || starting.start_again())
        .await
        .unwrap()
        .unwrap();

    // Back: the node takes its projections again and applies what comes, once.
    until("a holding both leases again", || async {
        held(&pool).await == 2
    })
    .await;
    let head = append(&store, 20).await;
    until("both caught up again", || async {
        checkpoint(&pool, "count_0").await >= head as i64
            && checkpoint(&pool, "count_1").await >= head as i64
    })
    .await;
    until("the heartbeat's error cleared", || async {
        handle
            .cluster()
            .is_some_and(|view| view.last_error.is_none())
    })
    .await;
    let tally = nodes::tally(&pool, &schema).await.unwrap();
    assert_eq!(tally.len(), 2, "{tally:?}");
    for (projection, rows, repeated, applications) in tally {
        assert_eq!((rows, repeated, applications), (40, 0, 40), "{projection}");
    }
    assert!(handle.shutdown(Duration::from_secs(10)).await.is_ok());
}
