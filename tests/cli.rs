//! The embeddable command line, run as a real process: `ops-cli` (tests/bin/ops_cli.rs) on a
//! SQLite file of the test's own. Each subcommand's output and exit code are checked (0 ok, 1
//! failures found, 2 usage); `rebuild` draws a progress bar on a pseudo-terminal (`script`)
//! and writes plain lines when piped; `run` shuts down gracefully on SIGTERM.
//!
//! Run with `cargo test -p projections-tests --features cli,sqlite --test cli`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use projections::sqlite::SqliteEventStore;
use projections::{Envelope, Event, EventStore, ExpectedVersion};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "ops.deposited", aggregate = "Account")]
struct Deposited {
    amount: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "ops.withdrawn", aggregate = "Account")]
struct Withdrawn {
    amount: i64,
}

const BIN: &str = env!("CARGO_BIN_EXE_ops-cli");

/// A database file of the test's own, removed when it passes.
struct Db {
    dir: PathBuf,
    path: PathBuf,
}

impl Db {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("ops-cli-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ops.db");
        Self { dir, path }
    }

    /// Five deposits of 10 and the poison withdrawal of 13, on one account.
    async fn with_events(self) -> Self {
        let store = SqliteEventStore::open(&self.path).await.unwrap();
        let account = Uuid::new_v4();
        let mut events: Vec<_> = (0..5)
            .map(|_| Envelope::new(account, Deposited { amount: 10 }).into())
            .collect();
        events.push(Envelope::new(account, Withdrawn { amount: 13 }).into());
        store
            .append(account, ExpectedVersion::NoStream, events)
            .await
            .unwrap();
        store.pool().close().await;
        self
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command.args(args).env("OPS_DB", &self.path);
        command
    }

    fn run(&self, args: &[&str]) -> Run {
        Run::of(self.command(args).output().unwrap())
    }

    fn run_with(&self, args: &[&str], env: (&str, &str)) -> Run {
        Run::of(self.command(args).env(env.0, env.1).output().unwrap())
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// What a finished process said.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn of(output: Output) -> Self {
        Self {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    #[track_caller]
    fn expect(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// The cells of the status table's row of `projection`.
fn row<'a>(table: &'a str, projection: &str) -> Vec<&'a str> {
    let line = table
        .lines()
        .find(|l| l.starts_with(projection))
        .unwrap_or_else(|| panic!("no row for {projection} in:\n{table}"));
    line.split_whitespace().collect()
}

#[tokio::test]
async fn status_catch_up_and_the_dead_letter_workflow() {
    let db = Db::new().with_events().await;

    // Nothing applied yet: lagging, which is not a failure.
    let status = db.run(&["status"]).expect(0);
    assert!(status.stdout.starts_with("PROJECTION"), "{}", status.stdout);
    let balances = row(&status.stdout, "balances");
    assert_eq!(
        balances[..5],
        ["balances", "lagging", "-", "6", "6"],
        "{}",
        status.stdout
    );
    assert_eq!(balances[6], "0", "no dead letters: {}", status.stdout);

    // Piped: progress as plain lines on stderr; the poison event is dead-lettered (exit 1).
    let catch_up = db.run(&["catch-up", "balances"]).expect(1);
    assert!(
        catch_up
            .stderr
            .contains("catch-up balances: 6/6 events (100%), done in"),
        "{}",
        catch_up.stderr
    );
    assert!(!catch_up.stderr.contains('\x1b'), "{}", catch_up.stderr);
    assert_eq!(
        catch_up.stdout,
        "balances: 5 applied, 0 skipped, 1 dead-lettered\n"
    );

    let status = db.run(&["status"]).expect(1);
    let balances = row(&status.stdout, "balances");
    assert_eq!(
        balances[..7],
        ["balances", "failing", "6", "6", "0", "0.0", "1"]
    );
    assert!(
        status
            .stdout
            .contains("dead letter 1: unlucky withdrawal on")
    );
    assert_eq!(row(&status.stdout, "tally")[1], "lagging");
    let json: serde_json::Value =
        serde_json::from_str(&db.run(&["status", "--json"]).expect(1).stdout).unwrap();
    assert_eq!(json[0]["name"], "balances");
    assert_eq!(json[0]["dead_letters"], 1);
    assert_eq!(json[0]["checkpoint"], 6);
    assert_eq!(json[1]["lag_events"], 5, "tally follows deposits only");

    let list = db.run(&["dlq", "list"]).expect(1);
    let lines: Vec<_> = list.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", list.stdout);
    assert!(lines[0].trim_start().starts_with("ID  PROJECTION"));
    let entry: Vec<_> = lines[1].split_whitespace().collect();
    assert_eq!(
        entry[..6],
        ["1", "balances", "6", "ops.withdrawn", "failed", "1"]
    );

    let show = db.run(&["dlq", "show", "1"]).expect(0);
    for expected in [
        "entry:          1",
        "projection:     balances",
        "status:         failed",
        "`ops.withdrawn` at position 6",
        "attempts:       1",
        "first failure:  ",
        "error:          unlucky withdrawal on ",
        "\"amount\": 13",
    ] {
        assert!(
            show.stdout.contains(expected),
            "{expected:?} in:\n{}",
            show.stdout
        );
    }

    let stats = db.run(&["dlq", "stats"]).expect(1);
    let lines: Vec<_> = stats.stdout.lines().collect();
    assert!(
        lines[1].starts_with("balances"),
        "most failures first:\n{}",
        stats.stdout
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>()[1..3],
        ["1", "0"]
    );
    assert!(lines[2].starts_with("tally"), "{}", stats.stdout);

    // The replay fails while the bug is there, and says why.
    let replay = db.run(&["dlq", "replay", "1"]).expect(1);
    assert!(
        replay.stdout.starts_with("entry 1 (balances): failed: ")
            && replay.stdout.contains("unlucky withdrawal"),
        "{}",
        replay.stdout
    );
    // With the fix deployed, replaying the projection's entries applies them.
    let replay = db
        .run_with(
            &["dlq", "replay", "--projection", "balances"],
            ("OPS_FIX", "1"),
        )
        .expect(0);
    assert_eq!(
        replay.stdout,
        "entry 1 (position 6): applied\nbalances: 1 replayed, 1 applied, 0 failed\n"
    );
    assert_eq!(
        db.run(&["dlq", "list", "--status", "failed"])
            .expect(0)
            .stdout,
        "no dead letters\n"
    );
    let resolved = db.run(&["dlq", "list", "--status", "resolved"]).expect(0);
    assert!(
        resolved.stdout.contains(" resolved "),
        "{}",
        resolved.stdout
    );
    let catch_up = db.run(&["catch-up"]).expect(0);
    assert_eq!(
        catch_up.stdout,
        "balances: 0 applied, 0 skipped, 0 dead-lettered\ntally: 5 applied, 0 skipped, 0 dead-lettered\n"
    );
    assert_eq!(
        row(&db.run(&["status"]).expect(0).stdout, "balances")[1],
        "healthy"
    );
}

#[tokio::test]
async fn resolve_pause_resume_and_migrate() {
    let db = Db::new().with_events().await;
    db.run(&["catch-up", "balances"]).expect(1);
    let resolve = db
        .run(&["dlq", "resolve", "1", "--reason", "refunded by hand"])
        .expect(0);
    assert_eq!(
        resolve.stdout,
        "entry 1 (balances): resolved: refunded by hand\n"
    );
    let show = db.run(&["dlq", "show", "1"]).expect(0);
    assert!(show.stdout.contains("status:         resolved"));
    assert!(
        show.stdout.contains("by operator: refunded by hand"),
        "{}",
        show.stdout
    );
    // Resolved twice: a failure, in one line.
    let again = db
        .run(&["dlq", "resolve", "1", "--reason", "again"])
        .expect(1);
    assert!(again.stderr.starts_with("error: "), "{}", again.stderr);
    assert_eq!(again.stderr.lines().count(), 1, "{}", again.stderr);

    let pause = db
        .run(&["pause", "tally", "--reason", "maintenance"])
        .expect(0);
    assert_eq!(pause.stdout, "paused tally: maintenance\n");
    let status = db.run(&["status"]).expect(0);
    let tally = row(&status.stdout, "tally");
    assert_eq!(tally[1], "paused");
    assert!(
        status.stdout.contains("paused: maintenance"),
        "{}",
        status.stdout
    );
    // A paused projection applies nothing (its checkpoint row, made by the pause, is at 0).
    let paused = db.run(&["catch-up", "tally"]).expect(1);
    assert!(
        paused.stdout.contains("is paused: maintenance"),
        "{}",
        paused.stdout
    );
    assert_eq!(row(&db.run(&["status"]).expect(0).stdout, "tally")[2], "0");
    assert_eq!(
        db.run(&["resume", "tally"]).expect(0).stdout,
        "resumed tally\n"
    );
    db.run(&["catch-up", "tally"]).expect(0);
    assert_eq!(
        row(&db.run(&["status"]).expect(0).stdout, "tally")[1],
        "healthy"
    );

    assert_eq!(db.run(&["migrate"]).expect(0).stdout, "migrated\n");
}

#[tokio::test]
async fn usage_errors_exit_2_with_one_line() {
    let db = Db::new().with_events().await;
    for args in [
        &["pause", "nope"][..],
        &["rebuild", "nope"],
        &["dlq", "list", "--projection", "nope"],
    ] {
        let run = db.run(args).expect(2);
        assert_eq!(
            run.stderr, "error: no projection named `nope` is registered\n",
            "{args:?}"
        );
    }
    let run = db.run(&["dlq", "show", "99"]).expect(2);
    assert_eq!(
        run.stderr,
        "error: no dead-letter entry 99 of a projection of this program\n"
    );
    // Parse errors are clap's, with the same code.
    db.run(&["frobnicate"]).expect(2);
    db.run(&["rebuild"]).expect(2);
    db.run(&["dlq", "replay"]).expect(2);
    db.run(&["dlq", "list", "--status", "lost"]).expect(2);
}

/// Runs `args` on a pseudo-terminal (`script`), returning everything it wrote and its code.
fn on_a_terminal(db: &Path, args: &str) -> Run {
    let command = format!("{BIN} {args}");
    let output = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("OPS_DB", db)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `script` (util-linux): {e}"));
    Run::of(output)
}

#[tokio::test]
async fn rebuild_draws_a_bar_on_a_terminal_and_writes_lines_when_piped() {
    let db = Db::new().with_events().await;
    db.run(&["catch-up"]).expect(1);

    let piped = db.run(&["rebuild", "tally"]).expect(0);
    assert_eq!(
        piped.stdout,
        "tally: 5 applied, 0 skipped, 0 dead-lettered\n"
    );
    let last = piped.stderr.lines().last().unwrap();
    assert!(
        last.starts_with("rebuild tally: 6/6 events (100%), done in"),
        "{}",
        piped.stderr
    );
    assert!(!piped.stderr.contains('\x1b') && !piped.stderr.contains('\r'));

    let terminal = on_a_terminal(&db.path, "rebuild tally").expect(0);
    let text = &terminal.stdout;
    assert!(text.contains("rebuild tally ["), "{text:?}");
    assert!(text.contains("] 6/6 events"), "{text:?}");
    assert!(text.contains("====="), "a drawn bar: {text:?}");
    assert!(
        text.contains('\x1b') || text.contains('\r'),
        "terminal control: {text:?}"
    );
    assert!(
        !text.contains("(100%), done in"),
        "no plain lines: {text:?}"
    );
    assert!(text.contains("tally: 5 applied, 0 skipped, 0 dead-lettered"));

    // Both projections at once.
    let all = db.run(&["rebuild", "--all"]).expect(1);
    assert_eq!(
        all.stdout,
        "balances: 5 applied, 0 skipped, 1 dead-lettered\ntally: 5 applied, 0 skipped, 0 dead-lettered\n"
    );
}

#[tokio::test]
async fn run_serves_live_and_shuts_down_on_sigterm() {
    let db = Db::new().with_events().await;
    let mut child = db
        .command(&["run"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert_eq!(first, "running 2 projection(s); stop with Ctrl-C");

    // Live: the workers catch up while it runs (seen from another process).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = db.run(&["status", "--json"]);
        let json: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
        if json[1]["checkpoint"] == 6 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not caught up: {}",
            status.stdout
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A pause from another process reaches the running worker (it reads the stored halt
    // every poll interval, 50 ms): a deposit appended afterwards reaches balances only.
    db.run(&["pause", "tally"]).expect(0);
    std::thread::sleep(Duration::from_millis(500));
    let store = SqliteEventStore::open(&db.path).await.unwrap();
    let account = Uuid::new_v4();
    let deposit = Envelope::new(account, Deposited { amount: 1 }).into();
    store
        .append(account, ExpectedVersion::NoStream, vec![deposit])
        .await
        .unwrap();
    loop {
        let status = db.run(&["status", "--json"]);
        let json: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
        if json[0]["checkpoint"] == 7 {
            assert_eq!(json[1]["state"], "paused", "{}", status.stdout);
            break;
        }
        assert!(Instant::now() < deadline, "not live: {}", status.stdout);
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert_eq!(
        rest,
        [
            "shutting down",
            "balances: 6 applied, 0 skipped, 1 dead-lettered",
            "tally: 5 applied, 0 skipped, 0 dead-lettered",
        ],
        "{status:?}"
    );
    assert_eq!(status.code(), Some(1), "a dead letter was written");
}

#[tokio::test]
async fn status_watch_refreshes_until_interrupted() {
    let db = Db::new().with_events().await;
    let mut child = db
        .command(&["status", "--watch", "--interval", "0.1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut tables = 0;
    while tables < 2 {
        let line = lines.next().unwrap().unwrap();
        assert!(
            !line.contains('\x1b'),
            "no screen control when piped: {line:?}"
        );
        if line.starts_with("PROJECTION") {
            tables += 1;
        }
    }
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    // Lagging is no failure: interrupted, it exits 0.
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
