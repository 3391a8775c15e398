//! `catch-up` and `rebuild`: passes to the head of the store, showing progress as a bar on a
//! terminal and as plain lines otherwise.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Failed, Outcome, say, summary, unknown};
use crate::coordinator::worker::{Pass, step};
use crate::coordinator::{ProjectionCoordinator, ProjectionReport, refuse_if_ambiguous};
use crate::runner::RunnerError;

/// How often a plain progress line is written, at most.
const LINE_EVERY: Duration = Duration::from_secs(1);

/// Progress of one pass: a bar on a terminal, lines otherwise.
struct Shown {
    label: String,
    start: u64,
    head: u64,
    started: Instant,
    bar: Option<ProgressBar>,
    last_line: Option<Instant>,
}

impl Shown {
    fn new(label: String, start: u64, head: u64, terminal: bool) -> Self {
        let bar = terminal.then(|| {
            let bar = ProgressBar::with_draw_target(
                Some(head.saturating_sub(start)),
                ProgressDrawTarget::stderr(),
            );
            let style = ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} events, {per_sec}, ETA {eta}",
            )
            .map(|style| style.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_prefix(label.clone());
            bar
        });
        Self {
            label,
            start,
            head,
            started: Instant::now(),
            bar,
            last_line: None,
        }
    }

    fn at(&mut self, checkpoint: u64, done: bool) {
        self.head = self.head.max(checkpoint);
        let position = checkpoint.saturating_sub(self.start);
        let total = self.head.saturating_sub(self.start);
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            bar.set_position(position);
            if done {
                bar.finish();
                // The bar stays; what follows starts on a line of its own.
                let _ = writeln!(std::io::stderr().lock());
            }
            return;
        }
        let due = self.last_line.is_none_or(|at| at.elapsed() >= LINE_EVERY);
        if !(done || due) {
            return;
        }
        self.last_line = Some(Instant::now());
        let elapsed = self.started.elapsed().as_secs_f64();
        let rate = if elapsed > 0.0 {
            position as f64 / elapsed
        } else {
            0.0
        };
        let percent = position
            .saturating_mul(100)
            .checked_div(total)
            .unwrap_or(100);
        let tail = if done {
            format!("done in {elapsed:.1} s")
        } else if rate > 0.0 {
            let left = total.saturating_sub(position) as f64 / rate;
            format!("{rate:.0} events/s, ETA {left:.0} s")
        } else {
            "starting".to_owned()
        };
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "{}: {position}/{total} events ({percent}%), {tail}",
            self.label
        );
    }
}

/// Catches up (or rebuilds, when `rebuild`) each of `names`, one after the other.
pub(super) async fn passes(
    coordinator: &mut ProjectionCoordinator,
    names: &[String],
    rebuild: bool,
) -> Result<Outcome, Failed> {
    refuse_if_ambiguous()?;
    let store = Arc::clone(coordinator.store());
    let batch_size = coordinator.configured_batch_size();
    let terminal = std::io::stderr().is_terminal();
    let mut outcome = Outcome::Ok;
    for name in names {
        let projection = coordinator
            .registry_mut()
            .get_mut(name)
            .ok_or_else(|| unknown(name))?;
        let verb = if rebuild { "rebuild" } else { "catch-up" };
        if rebuild {
            projection.reset().await?;
        }
        let storage = |source| RunnerError::Storage {
            projection: name.clone(),
            source,
        };
        let head = store.head_position().await.map_err(storage)?;
        let start = projection.checkpoint().await?.unwrap_or(0);
        let mut shown = Shown::new(format!("{verb} {name}"), start, head, terminal);
        let mut report = ProjectionReport::named(name);
        loop {
            match step(&mut **projection, &*store, batch_size, &mut report).await {
                Ok((pass, batch)) => {
                    let checkpoint = batch.checkpoint.unwrap_or(start);
                    shown.at(checkpoint, pass == Pass::CaughtUp);
                    if pass == Pass::CaughtUp {
                        break;
                    }
                }
                Err(error) => {
                    let checkpoint = projection.checkpoint().await.ok().flatten();
                    shown.at(checkpoint.unwrap_or(start), true);
                    report.error = Some(error);
                    break;
                }
            }
        }
        report.stopped = projection.stopped().cloned();
        if report.stopped.is_some() {
            // The stop is reported as where it stopped, not as an error besides.
            report.error = None;
        }
        say(&summary(&report));
        if !report.is_ok() {
            outcome = Outcome::Failures;
        }
    }
    Ok(outcome)
}
