//! Processes that die: the `fault-node` binary (tests/bin/fault_node.rs) runs a coordinator of
//! transactional projections on a throwaway PostgreSQL cluster (`common::cluster`) and reports
//! on stdout; these tests read its reports, SIGKILL it at chosen or random moments, start it
//! again, and check what the database holds.
//!
//! Run with `cargo test -p projections-tests --features postgres --test pg_process_kills`
//! (cargo builds the binary first). Needs the PostgreSQL server binaries, as `pg_faults` does.
//! Every wait is bounded; a node still running when a test ends (or fails) is killed.
//!
//! The read model is `common::faults`' table: one row per (projection, event) under a primary
//! key, written with a plain `INSERT`, so an event applied twice fails (and would be
//! dead-lettered).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::faults::{self, POISON, append_ticks};
use common::rig::{Rig, within};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The longest any one step may take.
const STEP: Duration = Duration::from_secs(15);

impl Rig {
    /// Starts a node in `mode` on this cluster.
    fn node(&self, mode: &str) -> Node {
        Node::start(&self.cluster.url(), mode)
    }

    async fn positions(&self, projection: &str) -> Vec<i64> {
        within(
            "reading the read model",
            STEP,
            faults::applied_positions(&self.pool, projection),
        )
        .await
        .unwrap()
    }

    async fn tally(&self, projection: &str) -> faults::Tally {
        within("counting", STEP, faults::tally(&self.pool, projection))
            .await
            .unwrap()
    }

    async fn dead_letters(&self) -> Vec<(String, Option<i64>, i32, String)> {
        within(
            "reading dead letters",
            STEP,
            faults::dead_letter_summary(&self.pool),
        )
        .await
        .unwrap()
    }
}

/// A running `fault-node` process and what it has said so far.
struct Node {
    child: Child,
    /// Lines of stdout, and of stderr prefixed with `stderr: `, as they come.
    lines: mpsc::UnboundedReceiver<String>,
    /// Every line received so far.
    log: Vec<String>,
    /// The last status of each projection.
    statuses: HashMap<String, Value>,
}

impl Node {
    fn start(url: &str, mode: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fault-node"))
            .args([url, mode])
            // Held open: the node exits by itself when the test process is gone.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start fault-node: {e}"));
        let (sender, lines) = mpsc::unbounded_channel();
        forward(child.stdout.take().unwrap(), "", sender.clone());
        forward(child.stderr.take().unwrap(), "stderr: ", sender);
        Self {
            child,
            lines,
            log: Vec::new(),
            statuses: HashMap::new(),
        }
    }

    /// Takes in the lines that came until `deadline`, until `done` says so; `false` when the
    /// deadline passed (or the node's output ended) first.
    async fn read_until(&mut self, deadline: Instant, mut done: impl FnMut(&Self) -> bool) -> bool {
        loop {
            if done(self) {
                return true;
            }
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => self.take(line),
                Ok(None) | Err(_) => return done(self),
            }
        }
    }

    fn take(&mut self, line: String) {
        if let Some(json) = line.strip_prefix("status ") {
            let status: Value = serde_json::from_str(json)
                .unwrap_or_else(|e| panic!("a status that is not JSON ({e}): {json}"));
            let name = status["name"].as_str().unwrap_or_default().to_owned();
            self.statuses.insert(name, status);
        }
        self.log.push(line);
    }

    /// Waits (up to `limit`) until `done`; fails with what the node said.
    async fn expect(&mut self, what: &str, limit: Duration, done: impl FnMut(&Self) -> bool) {
        if !self.read_until(Instant::now() + limit, done).await {
            panic!(
                "{what}: not within {limit:?}; the node said:\n{}",
                self.log_tail()
            );
        }
    }

    /// Takes in whatever the node says during `time`.
    async fn listen(&mut self, time: Duration) {
        self.read_until(Instant::now() + time, |_| false).await;
    }

    fn status(&self, projection: &str) -> Option<&Value> {
        self.statuses.get(projection)
    }

    /// The state's name (`live`, `stopped`, ...) of `projection`'s last status.
    fn state(&self, projection: &str) -> Option<&str> {
        self.status(projection)?["state"]["state"].as_str()
    }

    fn checkpoint(&self, projection: &str) -> Option<u64> {
        self.status(projection)?["checkpoint"].as_u64()
    }

    fn said(&self, line: &str) -> bool {
        self.log.iter().any(|l| l == line)
    }

    /// Positions of the handler calls the node announced for `projection`
    /// (`handled <projection> <position>`), in order.
    fn handled(&self, projection: &str) -> Vec<u64> {
        self.announced(&format!("handled {projection} "))
    }

    /// Positions of the panics the node announced (`panicking ledger <position>`).
    fn panicked(&self) -> Vec<u64> {
        self.announced("panicking ledger ")
    }

    fn announced(&self, prefix: &str) -> Vec<u64> {
        self.log
            .iter()
            .filter_map(|l| l.strip_prefix(prefix)?.parse().ok())
            .collect()
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGKILL, and waits for the process to end.
    fn kill(&mut self) {
        // An error means the process has already ended.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log_tail(&self) -> String {
        let from = self.log.len().saturating_sub(40);
        self.log[from..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends each line of `output` to `lines`, prefixed, from a thread of its own.
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

/// A projection with `FailurePolicy::Stop` stops at a poison event (position 6 of 9). The
/// process is SIGKILLed while stopped; a new process comes back stopped at the same event from
/// the stored halt: its status says stopped, with the same event, error and time, and it does
/// not run the handler at all. Nothing after the poison event is applied by either.
///
/// Depends on `CheckpointRepository::set_halt` storing the halt in PostgreSQL (a stub on
/// main): without it the new process runs the handler on the poison event again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_projection_stays_stopped_across_a_sigkill() {
    within("the test", Duration::from_secs(60), async {
        let rig = Rig::start(4, Duration::from_secs(2)).await;
        // Positions 1..=9; the poison at 6.
        append_ticks(&rig.store(), [1, 2, 3, 4, 5, POISON, 7, 8, 9], 1)
            .await
            .unwrap();

        let mut first = rig.node("stop-on-poison");
        first
            .expect("the first process stops", STEP, |n| {
                n.state("ledger") == Some("stopped")
            })
            .await;
        let stopped = first.status("ledger").unwrap()["state"]["at"].clone();
        assert_eq!(stopped["position"], 6, "{stopped}");
        assert_eq!(stopped["kind"], "event", "{stopped}");
        assert!(
            stopped["error"].as_str().unwrap().contains("poison"),
            "{stopped}"
        );
        let handled = first.handled("ledger");
        assert_eq!(
            handled.iter().filter(|&&p| p == 6).count(),
            1,
            "the poison event is tried once (no retries): {handled:?}"
        );
        assert!(
            handled.iter().all(|&p| p <= 6),
            "nothing after the poison event is handled: {handled:?}"
        );
        assert_eq!(rig.positions("ledger").await, vec![1, 2, 3, 4, 5]);
        assert_eq!(rig.tally("ledger").await.checkpoint, Some(5));

        first.kill();

        let mut second = rig.node("stop-on-poison");
        second
            .expect("the restarted process reports stopped", STEP, |n| {
                n.state("ledger") == Some("stopped")
            })
            .await;
        // Long enough for a few polls, were it to go on.
        second.listen(Duration::from_millis(1000)).await;
        let again = second.handled("ledger");
        assert!(
            again.is_empty(),
            "the restarted process ran the handler again, at positions {again:?}: the stop was \
             not read back from storage (PostgreSQL set_halt). It said:\n{}",
            second.log_tail()
        );
        assert_eq!(
            second.state("ledger"),
            Some("stopped"),
            "it stays stopped:\n{}",
            second.log_tail()
        );
        let restored = second.status("ledger").unwrap()["state"]["at"].clone();
        for field in [
            "position",
            "event_id",
            "event_type",
            "kind",
            "error",
            "attempts",
        ] {
            assert_eq!(
                restored[field], stopped[field],
                "the stored stop's {field}: {restored} vs {stopped}"
            );
        }
        let time = |at: &Value| {
            chrono::DateTime::parse_from_rfc3339(at["at"].as_str().unwrap())
                .unwrap()
                .timestamp_micros()
        };
        assert_eq!(
            time(&restored),
            time(&stopped),
            "the stop is the stored one, not a new one"
        );
        assert_eq!(rig.positions("ledger").await, vec![1, 2, 3, 4, 5]);
        let tally = rig.tally("ledger").await;
        assert_eq!((tally.checkpoint, tally.dead_letters), (Some(5), 0));
    })
    .await;
}

/// A handler panics on one event (position 5 of 9; no retries, dead letters): the event is
/// dead-lettered, the same projection goes on past it, the other projection of the process
/// (`steady`) applies everything, and the process stays up. SIGKILLed and started again (with
/// three new events), the process does not panic again (the event is behind the checkpoint),
/// applies exactly the new events, and the dead letter is still the only one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_dead_letters_its_event_and_the_process_goes_on() {
    within("the test", Duration::from_secs(60), async {
        let rig = Rig::start(4, Duration::from_secs(2)).await;
        append_ticks(&rig.store(), [1, 2, 3, 4, POISON, 6, 7, 8, 9], 1)
            .await
            .unwrap();

        let mut first = rig.node("panic-on-poison");
        first
            .expect("both projections at position 9", STEP, |n| {
                n.checkpoint("ledger") >= Some(9) && n.checkpoint("steady") >= Some(9)
            })
            .await;
        assert!(first.is_running(), "the panic must not end the process");
        assert_eq!(first.panicked(), vec![5], "one panic, no retries");
        assert_eq!(first.status("ledger").unwrap()["dead_letters"], 1);
        assert!(
            first.log.iter().any(|l| l.contains("tick 13 is poison")),
            "the panic's message reaches stderr:\n{}",
            first.log_tail()
        );
        assert_eq!(rig.positions("ledger").await, vec![1, 2, 3, 4, 6, 7, 8, 9]);
        assert_eq!(rig.positions("steady").await, (1..=9).collect::<Vec<_>>());
        let dead_letters = rig.dead_letters().await;
        assert_eq!(dead_letters.len(), 1, "{dead_letters:?}");
        let (projection, position, attempts, error) = &dead_letters[0];
        assert_eq!(
            (projection.as_str(), *position, *attempts),
            ("ledger", Some(5), 1)
        );
        assert!(
            error.contains("panicked") && error.contains("poison"),
            "{error}"
        );

        first.kill();
        append_ticks(&rig.store(), [10, 11, 12], 1).await.unwrap();

        let mut second = rig.node("panic-on-poison");
        second
            .expect("both projections at position 12", STEP, |n| {
                n.checkpoint("ledger") >= Some(12) && n.checkpoint("steady") >= Some(12)
            })
            .await;
        assert!(second.is_running());
        assert!(
            second.panicked().is_empty(),
            "the dead-lettered event must not be handled again:\n{}",
            second.log_tail()
        );
        assert_eq!(second.handled("ledger"), vec![10, 11, 12]);
        assert_eq!(second.handled("steady"), vec![10, 11, 12]);
        assert_eq!(
            rig.positions("ledger").await,
            vec![1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12]
        );
        assert_eq!(rig.positions("steady").await, (1..=12).collect::<Vec<_>>());
        assert_eq!(rig.dead_letters().await.len(), 1);
        assert!(second.said("ready"));
    })
    .await;
}

/// The guarantee of the transactional runner, by SIGKILL: a process catching up 5,000 events
/// (batches of 100, 1 ms every 4 events, so a batch is nearly always in flight) is killed 10 times,
/// each 100-600 ms after it is ready, then run to the end. Every event is applied exactly once:
/// one row each, none missing, no dead letter (an event applied twice would have failed and
/// been dead-lettered), and the checkpoint counts 5,000 applied events. After each kill, the
/// read model holds exactly the events up to the checkpoint (a batch commits whole or not at
/// all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkills_at_random_moments_lose_nothing_and_apply_nothing_twice() {
    within("the test", Duration::from_secs(90), async {
        const EVENTS: i64 = 5_000;
        let rig = Rig::start(4, Duration::from_secs(2)).await;
        let head = within(
            "appending",
            STEP,
            append_ticks(&rig.store(), 1..=EVENTS, 100),
        )
        .await
        .unwrap();
        assert_eq!(head, 5_000);

        let mut progress = Vec::new();
        for _ in 0..10 {
            let mut node = rig.node("catch-up");
            node.expect("ready", STEP, |n| n.said("ready")).await;
            tokio::time::sleep(Duration::from_millis(fastrand::u64(100..=600))).await;
            node.kill();
            let tally = rig.tally("ledger").await;
            let checkpoint = tally.checkpoint.unwrap_or(0);
            assert_eq!(
                (tally.rows, tally.dead_letters),
                (checkpoint, 0),
                "after a kill, the read model holds exactly the events up to the checkpoint"
            );
            progress.push(checkpoint);
        }
        eprintln!("checkpoint after each kill: {progress:?}");
        let mid_catch_up = progress.iter().filter(|&&c| c < EVENTS).count();
        assert!(
            mid_catch_up >= 5,
            "most kills must land before the end of the catch-up: {progress:?}"
        );
        assert!(
            progress.windows(2).all(|w| w[0] <= w[1]),
            "the checkpoint never goes back: {progress:?}"
        );

        let mut last = rig.node("catch-up");
        last.expect(
            "the last process at the head",
            Duration::from_secs(40),
            |n| n.checkpoint("ledger") >= Some(5_000),
        )
        .await;
        last.kill();
        let tally = rig.tally("ledger").await;
        let dead_letters = rig.dead_letters().await;
        assert_eq!(
            tally,
            faults::Tally {
                rows: EVENTS,
                events: EVENTS,
                head: EVENTS,
                missing: 0,
                dead_letters: 0,
                checkpoint: Some(EVENTS),
                events_processed: Some(EVENTS),
            },
            "dead letters: {dead_letters:?}"
        );
    })
    .await;
}
