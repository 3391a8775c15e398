//! Faults of the database itself (the server stops, crashes, or drops connections), against a
//! throwaway PostgreSQL cluster of each test's own (`common::cluster`), never the shared server.
//!
//! Run with `cargo test -p projections-tests --features postgres --test pg_faults`. Needs the
//! PostgreSQL server binaries (`initdb`, `pg_ctl`) on the machine; every test fails, rather than
//! skips, without them. Every wait is bounded, so a broken machine fails fast.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::time::Duration;

use common::cluster::ThrowawayCluster;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

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
