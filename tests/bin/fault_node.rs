//! `fault-node DATABASE_URL MODE`: a process running a coordinator on a database, for the
//! tests that SIGKILL it (`tests/pg_process_kills.rs`). It reports on stdout, one line each:
//!
//! - `ready` once its coordinator runs;
//! - `status <json>` each time a projection's worker publishes (a `ProjectionSnapshot`);
//! - `handled <projection> <position>` at each handler call, `panicking ledger <position>`
//!   before the poison panic (modes that announce).
//!
//! Modes (every projection transactional, one transaction per batch, on `PostgreSQLTransactionUnit`):
//! - `stop-on-poison`: `ledger`, failing on the poison tick, no retries, `FailurePolicy::Stop`;
//! - `panic-on-poison`: `ledger`, panicking on the poison tick, no retries, dead letters; and
//!   `steady`, beside it;
//! - `catch-up`: `ledger` (quiet, 1 ms every 4 events, batches of 100), nothing poisonous.
//!
//! It runs until killed, or until its standard input closes (the test that started it is
//! gone); it expects the read model's table to exist (`common::faults::prepare`).

#[path = "../common/faults.rs"]
mod faults;

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::Duration;

use faults::{Ledger, OnPoison, Steady};
use projections::coordinator::{InfrastructureBackoff, ProjectionCoordinator};
use projections::postgres::PostgreSQLEventStore;
use projections::transactional::{PostgreSQLTransactionUnit, TransactionalRunner};
use projections::{FailurePolicy, NoRetryPolicy, ProjectionRegistry};
use sqlx::postgres::PgPoolOptions;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(mode)) = (args.next(), args.next()) else {
        return Err(
            "usage: fault-node DATABASE_URL stop-on-poison|panic-on-poison|catch-up".into(),
        );
    };
    exit_when_stdin_closes();

    let pool = PgPoolOptions::new()
        .max_connections(6)
        .acquire_timeout(Duration::from_secs(2))
        .connect(&url)
        .await?;
    let unit = Arc::new(PostgreSQLTransactionUnit::new(pool.clone()));
    let mut registry = ProjectionRegistry::new();
    let mut batch_size = 20;
    match mode.as_str() {
        "stop-on-poison" => registry.register(
            TransactionalRunner::new(Ledger::new(OnPoison::Fail).announce(), unit)
                .retry_policy(NoRetryPolicy)
                .on_failure(FailurePolicy::Stop),
        )?,
        "panic-on-poison" => {
            registry.register(
                TransactionalRunner::new(Ledger::new(OnPoison::Panic).announce(), unit.clone())
                    .retry_policy(NoRetryPolicy),
            )?;
            registry.register(TransactionalRunner::new(Steady { announce: true }, unit))?;
        }
        "catch-up" => {
            batch_size = 100;
            registry.register(
                TransactionalRunner::new(
                    Ledger::new(OnPoison::Apply).pace_every(Duration::from_millis(1), 4),
                    unit,
                )
                .retry_policy(NoRetryPolicy)
                .tracing(false),
            )?;
        }
        other => return Err(format!("unknown mode `{other}`").into()),
    }

    let store = Arc::new(PostgreSQLEventStore::new(pool));
    let handle = ProjectionCoordinator::new(registry, store)
        .batch_size(batch_size)
        .poll_interval(Duration::from_millis(50))
        .infrastructure_backoff(InfrastructureBackoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(500),
        })
        .start()?;
    let mut reporters = Vec::new();
    for name in handle.names() {
        let mut status = handle.watch(name)?;
        reporters.push(tokio::spawn(async move {
            loop {
                let snapshot = status.borrow_and_update().clone();
                match serde_json::to_string(&snapshot) {
                    Ok(json) => say(&format!("status {json}")),
                    Err(error) => eprintln!("fault-node: cannot serialise a status: {error}"),
                }
                if status.changed().await.is_err() {
                    break;
                }
            }
        }));
    }
    say("ready");
    for reporter in reporters {
        reporter.await?;
    }
    Ok(())
}

/// One line on stdout, flushed (the test reads it as it comes).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // A test that stopped reading is gone; nothing to tell.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Ends the process when standard input reaches its end: the test holding the other end died
/// without killing this process.
fn exit_when_stdin_closes() {
    std::thread::spawn(|| {
        let mut lines = std::io::stdin().lock().lines();
        while let Some(Ok(_)) = lines.next() {}
        std::process::exit(0);
    });
}
