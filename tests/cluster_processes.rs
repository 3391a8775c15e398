//! Nodes as real processes: the `cluster-node` binary (tests/bin/cluster_node.rs), several
//! at once against the PostgreSQL server (`DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`), each test in a schema of its own. The tests
//! SIGKILL owners while events are appended, pause one past its lease (`SIGSTOP`) and wake it
//! (`SIGCONT`), and add and remove a node; the read model counts applications per event, so
//! "exactly once" is checked, not assumed.
//!
//! Run with `cargo test -p projections-tests --features postgres --test cluster_processes`
//! (cargo builds the binary first). Takeover times are printed (`--nocapture` shows them).
//! The kill test uses 2 s leases so that twenty kills fit in a test run; set
//! `CLUSTER_KILL_LEASE_MS` (and `CLUSTER_KILLS`) to run it with other values, such as the
//! default lease of 5 000 ms.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "common/fixture.rs"]
mod fixture;
#[path = "common/nodes.rs"]
mod nodes;

use std::collections::HashMap;
use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use nodes::{Beat, PROJECTIONS};
use projections::postgres::Schema;
use projections::runner::Partition;
use projections::{AnyEvent, Envelope, EventStore, ExpectedVersion};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

/// The longest any one step may take.
const STEP: Duration = Duration::from_secs(30);

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn within<T>(what: &str, limit: Duration, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within {limit:?}"))
}

/// A schema of the test's own (`common::fixture::Fixture`), and the nodes the test runs on it.
struct Test(fixture::Fixture);

impl std::ops::Deref for Test {
    type Target = fixture::Fixture;
    fn deref(&self) -> &fixture::Fixture {
        &self.0
    }
}

impl Test {
    async fn new() -> Self {
        Self(fixture::Fixture::new("clp", 8).await)
    }

    fn node(&self, id: &str, options: &[&str]) -> Node {
        Node::start(&self.schema, id, options)
    }

    /// Live owners, by lease.
    async fn owners(&self) -> HashMap<String, Option<String>> {
        nodes::owners(&self.pool, &self.schema)
            .await
            .unwrap()
            .into_iter()
            .collect()
    }

    async fn leases_of(&self, node: &str) -> Vec<String> {
        let mut leases: Vec<String> = self
            .owners()
            .await
            .into_iter()
            .filter(|(_, owner)| owner.as_deref() == Some(node))
            .map(|(lease, _)| lease)
            .collect();
        leases.sort();
        leases
    }

    /// Waits until every node of `shares` holds that many leases.
    async fn balanced(&self, shares: &[(&str, usize)]) {
        within("the nodes holding their shares", STEP, async {
            loop {
                let owners = self.owners().await;
                let fair = shares.iter().all(|(node, share)| {
                    owners
                        .values()
                        .filter(|o| o.as_deref() == Some(*node))
                        .count()
                        == *share
                });
                if fair {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
    }

    async fn caught_up(&self, names: &[&str], head: u64) {
        within("every projection catching up", STEP * 2, async {
            for name in names {
                while self.checkpoint(name).await < head as i64 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        })
        .await;
    }

    /// Appends batches of 5 events every 20 ms until `stop`; counts them in `appended` and
    /// keeps the last position in `head`.
    fn appender(
        &self,
        stop: Arc<AtomicBool>,
        appended: Arc<AtomicU64>,
        head: Arc<AtomicU64>,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        tokio::spawn(async move {
            let mut n = 0_i64;
            while !stop.load(Ordering::SeqCst) {
                let aggregate = Uuid::new_v4();
                let events: Vec<AnyEvent> = (0..5)
                    .map(|i| Envelope::new(aggregate, Beat { n: n + i }).into())
                    .collect();
                let appended_now = store
                    .append(aggregate, ExpectedVersion::NoStream, events)
                    .await
                    .unwrap();
                n += 5;
                appended.fetch_add(5, Ordering::SeqCst);
                head.store(appended_now.last_position, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    }

    /// Every projection of `names` applied `expected` events, each exactly once.
    async fn assert_exactly_once(&self, names: &[&str], expected: u64) {
        let tally = nodes::tally(&self.pool, &self.schema).await.unwrap();
        for name in names {
            let row = tally.iter().find(|(p, ..)| p == name);
            let (rows, repeated, applications) = row.map_or((0, 0, 0), |r| (r.1, r.2, r.3));
            assert_eq!(
                (rows, repeated, applications),
                (expected as i64, 0, expected as i64),
                "{name}: (events applied, events applied more than once, applications)"
            );
        }
    }
}

/// A running `cluster-node` process and what it has said so far.
struct Node {
    id: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
    log: Vec<String>,
    statuses: HashMap<String, Value>,
}

impl Node {
    fn start(schema: &Schema, id: &str, options: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cluster-node"))
            .args([&fixture::database_url(), schema.name().unwrap(), id])
            .args(options)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start cluster-node: {e}"));
        let (sender, lines) = mpsc::unbounded_channel();
        forward(child.stdout.take().unwrap(), "", sender.clone());
        forward(child.stderr.take().unwrap(), "stderr: ", sender);
        Self {
            id: id.to_owned(),
            stdin: child.stdin.take(),
            child,
            lines,
            log: Vec::new(),
            statuses: HashMap::new(),
        }
    }

    /// Takes in what the node said, until `done` or `limit`.
    async fn expect(&mut self, what: &str, limit: Duration, mut done: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + limit;
        while !done(self) {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => self.take(line),
                Ok(None) | Err(_) => {
                    if done(self) {
                        return;
                    }
                    let from = self.log.len().saturating_sub(30);
                    panic!(
                        "{what}: not within {limit:?}; node {} said:\n{}",
                        self.id,
                        self.log[from..].join("\n")
                    );
                }
            }
        }
    }

    /// Takes in what the node said so far.
    fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.take(line);
        }
    }

    fn take(&mut self, line: String) {
        if let Some(json) = line.strip_prefix("status ")
            && let Ok(status) = serde_json::from_str::<Value>(json)
        {
            let name = status["name"].as_str().unwrap_or_default().to_owned();
            self.statuses.insert(name, status);
        }
        self.log.push(line);
    }

    fn state(&self, projection: &str) -> Option<&str> {
        self.statuses.get(projection)?["state"]["state"].as_str()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// SIGKILL, and waits for the process to end.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Closes its standard input (a graceful shutdown) and waits for it to end.
    async fn leave(mut self) {
        drop(self.stdin.take());
        self.expect("leaving", STEP, |node| node.log.iter().any(|l| l == "left"))
            .await;
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn forward(
    output: impl Read + Send + 'static,
    prefix: &'static str,
    lines: mpsc::UnboundedSender<String>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines() {
            let Ok(line) = line else { break };
            if lines.send(format!("{prefix}{line}")).is_err() {
                break;
            }
        }
    });
}

/// Median and maximum of `times`.
fn summary(times: &[Duration]) -> (Duration, Duration) {
    let mut sorted = times.to_vec();
    sorted.sort();
    (sorted[sorted.len() / 2], sorted[sorted.len() - 1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_killed_twenty_times_lose_no_event_and_apply_none_twice() {
    let test = Test::new().await;
    let lease = env_u64("CLUSTER_KILL_LEASE_MS", 2_000);
    let kills = env_u64("CLUSTER_KILLS", 20);
    let heartbeat = (lease / 8).max(50);
    let lease_arg = lease.to_string();
    let heartbeat_arg = heartbeat.to_string();
    let options = [
        "--lease-ms",
        &lease_arg,
        "--heartbeat-ms",
        &heartbeat_arg,
        "--pace-ms",
        "1",
    ];
    let ids = ["a", "b", "c"];
    let mut nodes: Vec<Node> = ids.iter().map(|id| test.node(id, &options)).collect();
    test.balanced(&[("a", 2), ("b", 2), ("c", 2)]).await;

    let (stop, appended, head) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let appender = test.appender(stop.clone(), appended.clone(), head.clone());
    let mut takeovers = Vec::new();
    for kill in 0..kills as usize {
        let victim = kill % ids.len();
        let id = ids[victim];
        let held = test.leases_of(id).await;
        assert!(!held.is_empty(), "{id} holds nothing before kill {kill}");
        tokio::time::sleep(Duration::from_millis(fastrand::u64(50..400))).await;
        nodes[victim].kill();
        let killed = Instant::now();
        within(
            "the others taking the killed node's projections",
            STEP,
            async {
                loop {
                    let owners = test.owners().await;
                    let taken = held.iter().all(|lease| {
                        owners
                            .get(lease)
                            .and_then(|o| o.as_deref())
                            .is_some_and(|owner| owner != id)
                    });
                    if taken {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
        )
        .await;
        takeovers.push(killed.elapsed());
        nodes[victim] = test.node(id, &options);
        test.balanced(&[("a", 2), ("b", 2), ("c", 2)]).await;
    }
    stop.store(true, Ordering::SeqCst);
    appender.await.unwrap();
    test.caught_up(&PROJECTIONS, head.load(Ordering::SeqCst))
        .await;
    test.assert_exactly_once(&PROJECTIONS, appended.load(Ordering::SeqCst))
        .await;

    let (median, max) = summary(&takeovers);
    eprintln!(
        "takeover after SIGKILL, lease {lease} ms, heartbeat {heartbeat} ms, {kills} kills, \
         {} events: median {median:?}, max {max:?}, all {takeovers:?}",
        appended.load(Ordering::SeqCst)
    );
    assert!(max < Duration::from_secs(10), "a takeover took {max:?}");
    for node in nodes {
        node.leave().await;
    }
    test.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_owner_commits_nothing_when_it_wakes_and_stands_by() {
    let test = Test::new().await;
    // One projection, slow batches (5 ms an event, 20 a batch): the pause most likely catches
    // the owner inside a batch's transaction.
    let options = [
        "--projections",
        "1",
        "--lease-ms",
        "2000",
        "--heartbeat-ms",
        "250",
        "--pace-ms",
        "5",
        "--batch",
        "20",
    ];
    let mut a = test.node("a", &options);
    test.balanced(&[("a", 1)]).await;
    let mut b = test.node("b", &options);
    b.expect("b standing by", STEP, |node| {
        node.state("count_0") == Some("standby")
    })
    .await;
    let (stop, appended, head) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let appender = test.appender(stop.clone(), appended.clone(), head.clone());
    tokio::time::sleep(Duration::from_millis(800)).await;

    a.signal("STOP");
    let paused = Instant::now();
    test.balanced(&[("b", 1)]).await;
    let takeover = paused.elapsed();
    let b_acquired: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(&format!(
        "SELECT acquired_at FROM \"{}\".projection_leases WHERE lease_name = 'count_0'",
        test.schema.name().unwrap()
    ))
    .fetch_one(&test.pool)
    .await
    .unwrap();
    // b applies events after the takeover.
    let taken_at = test.checkpoint("count_0").await;
    within("b applying", STEP, async {
        while test.checkpoint("count_0").await <= taken_at + 20 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;

    a.drain();
    let said_before = a.log.len();
    a.signal("CONT");
    a.expect("a standing by after it woke", STEP, |node| {
        node.log[said_before..]
            .iter()
            .any(|line| line.starts_with("status ") && line.contains("\"standby\""))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    appender.await.unwrap();
    test.caught_up(&["count_0"], head.load(Ordering::SeqCst))
        .await;

    // Nothing a wrote is younger than b's lease, until a took the lease back (the lower id
    // has the larger share: with one projection over two nodes, a's share is it).
    let schema = test.schema.name().unwrap();
    let late: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM \"{schema}\".cluster_applied c, \"{schema}\".projection_leases l
          WHERE l.lease_name = 'count_0' AND c.projection = 'count_0' AND c.node = 'a'
            AND c.applied_at >= $1
            AND (l.owner <> 'a' OR c.applied_at < l.acquired_at)"
    ))
    .bind(b_acquired)
    .fetch_one(&test.pool)
    .await
    .unwrap();
    assert_eq!(late, 0, "the paused node committed after the takeover");
    test.assert_exactly_once(&["count_0"], appended.load(Ordering::SeqCst))
        .await;
    eprintln!("takeover from a paused owner (lease 2000 ms): {takeover:?}");
    assert!(takeover < Duration::from_secs(10), "{takeover:?}");
    a.leave().await;
    b.leave().await;
    test.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_joins_gets_work_and_gives_it_back_when_it_leaves() {
    let test = Test::new().await;
    let options = [
        "--lease-ms",
        "2000",
        "--heartbeat-ms",
        "250",
        "--pace-ms",
        "1",
    ];
    let nodes: Vec<Node> = ["a", "b", "c"]
        .iter()
        .map(|id| test.node(id, &options))
        .collect();
    test.balanced(&[("a", 2), ("b", 2), ("c", 2)]).await;
    let (stop, appended, head) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let appender = test.appender(stop.clone(), appended.clone(), head.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Six over four: shares of 2, 2, 1 and 1 in id order, so c hands one to d.
    let d = test.node("d", &options);
    let joined = Instant::now();
    test.balanced(&[("a", 2), ("b", 2), ("c", 1), ("d", 1)])
        .await;
    let moved = joined.elapsed();
    tokio::time::sleep(Duration::from_millis(800)).await;
    d.leave().await;
    let left = Instant::now();
    test.balanced(&[("a", 2), ("b", 2), ("c", 2)]).await;
    let back = left.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    appender.await.unwrap();
    test.caught_up(&PROJECTIONS, head.load(Ordering::SeqCst))
        .await;
    test.assert_exactly_once(&PROJECTIONS, appended.load(Ordering::SeqCst))
        .await;
    eprintln!("join: work moved in {moved:?}; leave: given back in {back:?}");
    for node in nodes {
        node.leave().await;
    }
    test.drop_schema().await;
}

/// Appends `beats` numbered beats for each of `aggregates` new aggregates, an aggregate's
/// beats in one append; returns the head.
async fn append_sequences(test: &Test, aggregates: usize, beats: i64) -> u64 {
    let mut head = 0;
    for _ in 0..aggregates {
        let id = Uuid::new_v4();
        let events: Vec<AnyEvent> = (0..beats)
            .map(|n| Envelope::new(id, Beat { n }).into())
            .collect();
        head = test
            .store
            .append(id, ExpectedVersion::NoStream, events)
            .await
            .unwrap()
            .last_position;
    }
    head
}

/// Starts `nodes` nodes (one runtime thread each) running four partitions of `sequenced`
/// with a CPU-heavy handler, waits for the shares, appends the work, and returns how long
/// the nodes took to apply it; checks the order of every aggregate and that each event was
/// applied once.
async fn partitioned_run(nodes: &[&str], aggregates: usize, work: &str) -> Duration {
    let test = Test::new().await;
    nodes::prepare_sequences(&test.pool, &test.schema)
        .await
        .unwrap();
    let options = [
        "--partitions",
        "4",
        "--threads",
        "1",
        "--work",
        work,
        "--lease-ms",
        "2000",
        "--heartbeat-ms",
        "250",
        "--batch",
        "100",
    ];
    let running: Vec<Node> = nodes.iter().map(|id| test.node(id, &options)).collect();
    let share = 4 / nodes.len();
    let shares: Vec<(&str, usize)> = nodes.iter().map(|id| (*id, share)).collect();
    test.balanced(&shares).await;
    let started = Instant::now();
    let head = append_sequences(&test, aggregates, 10).await;
    let names: Vec<String> = Partition::all(4)
        .unwrap()
        .map(|p| p.name_for("sequenced"))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    test.caught_up(&names, head).await;
    let took = started.elapsed();
    assert_eq!(
        nodes::sequences(&test.pool, &test.schema, 9).await.unwrap(),
        (aggregates as i64, aggregates as i64, aggregates as i64 * 10),
        "(aggregates, aggregates with all ten beats in order, beats applied)"
    );
    let dead: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM \"{}\".projection_dead_letters",
        test.schema.name().unwrap()
    ))
    .fetch_one(&test.pool)
    .await
    .unwrap();
    assert_eq!(dead, 0, "an event out of order or failing");
    for node in running {
        node.leave().await;
    }
    test.drop_schema().await;
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_projection_keeps_order_and_spreads_over_two_nodes() {
    let aggregates = env_u64("CLUSTER_SCALING_AGGREGATES", 100) as usize;
    let work = std::env::var("CLUSTER_SCALING_WORK").unwrap_or_else(|_| "300000".to_owned());
    let one = partitioned_run(&["a"], aggregates, &work).await;
    let two = partitioned_run(&["a", "b"], aggregates, &work).await;
    eprintln!(
        "partitioned projection, 4 partitions, {} events, CPU-heavy handler ({work} rounds): \
         1 node {one:?}, 2 nodes {two:?}, speed-up {:.2}x",
        aggregates * 10,
        one.as_secs_f64() / two.as_secs_f64()
    );
}
