//! `cluster-node DATABASE_URL SCHEMA NODE_ID [OPTIONS]`: one node of a cluster, for the tests
//! that start, pause, kill and stop several of them (`tests/cluster_processes.rs`).
//!
//! It runs the counting projections of `common::nodes` (transactional, on
//! `PostgreSQLTransactionUnit`) as node `NODE_ID` of a cluster coordinated through `SCHEMA`, and
//! reports on stdout, one line each: `ready` once its coordinator runs, `status <json>` each
//! time a projection's worker publishes, and `left` after a graceful shutdown.
//!
//! Options: `--lease-ms N`, `--heartbeat-ms N`, `--pace-ms N` (a pause per event),
//! `--work N` (CPU work per event), `--projections K` (the first K of six), `--batch N`,
//! `--partitions N` (instead of the counters: the order-checking `sequenced` projection in N
//! partitions), `--threads N` (the runtime's worker threads, 2 by default).
//!
//! It shuts down gracefully (giving its leases back) when its standard input closes.

#[path = "../common/nodes.rs"]
mod nodes;

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::Duration;

use nodes::{Count0, Count1, Count2, Count3, Count4, Count5, Counting, Sequenced};
use projections::ProjectionRegistry;
use projections::cluster::ClusterNode;
use projections::coordinator::{InfrastructureBackoff, ProjectionCoordinator};
use projections::postgres::{PostgreSQLEventStore, Schema};
use projections::runner::Partition;
use projections::transactional::{PostgreSQLTransactionUnit, TransactionalRunner};
use sqlx::postgres::PgPoolOptions;

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Options {
    url: String,
    schema: Schema,
    node: String,
    lease: Duration,
    heartbeat: Duration,
    pace: Duration,
    work: u32,
    projections: usize,
    batch: usize,
    partitions: u32,
    threads: usize,
}

fn options() -> Result<Options, Error> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(schema), Some(node)) = (args.next(), args.next(), args.next()) else {
        return Err("usage: cluster-node DATABASE_URL SCHEMA NODE_ID [--lease-ms N] [--heartbeat-ms N] [--pace-ms N] [--work N] [--projections K] [--batch N]".into());
    };
    let mut options = Options {
        url,
        schema: Schema::named(&schema)?,
        node,
        lease: Duration::from_secs(5),
        heartbeat: Duration::from_secs(1),
        pace: Duration::ZERO,
        work: 0,
        projections: 6,
        batch: 50,
        partitions: 0,
        threads: 2,
    };
    while let Some(flag) = args.next() {
        let value: u64 = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?
            .parse()?;
        match flag.as_str() {
            "--lease-ms" => options.lease = Duration::from_millis(value),
            "--heartbeat-ms" => options.heartbeat = Duration::from_millis(value),
            "--pace-ms" => options.pace = Duration::from_millis(value),
            "--work" => options.work = u32::try_from(value)?,
            "--projections" => options.projections = usize::try_from(value)?.min(6),
            "--batch" => options.batch = usize::try_from(value)?,
            "--partitions" => options.partitions = u32::try_from(value)?,
            "--threads" => options.threads = usize::try_from(value)?.max(1),
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    Ok(options)
}

fn main() -> Result<(), Error> {
    let options = options()?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.threads)
        .enable_all()
        .build()?
        .block_on(run(options))
}

async fn run(options: Options) -> Result<(), Error> {
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&options.url)
        .await?;
    let unit = Arc::new(PostgreSQLTransactionUnit::with_schema(
        pool.clone(),
        &options.schema,
    ));
    let mut counting = Counting::new(&options.schema, &options.node);
    counting.pace = options.pace;
    counting.work = options.work;
    let mut registry = ProjectionRegistry::new();
    macro_rules! register {
        ($($index:literal => $ty:ident),*) => {
            $(
                if $index < options.projections {
                    registry.register(
                        TransactionalRunner::new($ty(counting.clone()), unit.clone()).tracing(false),
                    )?;
                }
            )*
        };
    }
    if options.partitions > 0 {
        for partition in Partition::all(options.partitions)? {
            registry.register(
                TransactionalRunner::new(Sequenced(counting.clone()), unit.clone())
                    .partition(partition)
                    .tracing(false),
            )?;
        }
    } else {
        register!(0 => Count0, 1 => Count1, 2 => Count2, 3 => Count3, 4 => Count4, 5 => Count5);
    }

    let node = ClusterNode::new(pool.clone(), options.node.clone())?
        .schema(&options.schema)
        .lease(options.lease)
        .heartbeat(options.heartbeat);
    let store = Arc::new(PostgreSQLEventStore::with_schema(
        pool,
        options.schema.clone(),
    ));
    let handle = ProjectionCoordinator::new(registry, store)
        .batch_size(options.batch)
        .poll_interval(Duration::from_millis(100))
        .infrastructure_backoff(InfrastructureBackoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(500),
        })
        .cluster(node)
        .start()?;
    for name in handle.names() {
        let mut status = handle.watch(name)?;
        tokio::spawn(async move {
            loop {
                let snapshot = status.borrow_and_update().clone();
                match serde_json::to_string(&snapshot) {
                    Ok(json) => say(&format!("status {json}")),
                    Err(error) => eprintln!("cluster-node: cannot serialise a status: {error}"),
                }
                if status.changed().await.is_err() {
                    break;
                }
            }
        });
    }
    say("ready");
    stdin_closed().await;
    let report = handle.shutdown(Duration::from_secs(10)).await;
    if !report.is_ok() {
        eprintln!("cluster-node: shutdown: {report:?}");
    }
    say("left");
    Ok(())
}

/// One line on stdout, flushed (the test reads it as it comes).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Resolves when standard input reaches its end: the test asks the node to leave (or died).
async fn stdin_closed() {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut lines = std::io::stdin().lock().lines();
        while let Some(Ok(_)) = lines.next() {}
        let _ = sender.send(());
    });
    let _ = receiver.await;
}
