//! What each worker publishes about itself, for the handle, health and metrics.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::time::Instant;

use crate::bluegreen::VersionStatus;
use crate::runner::StoppedAt;

/// What a projection's worker is doing.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum WorkerState {
    /// Started, not yet through its first batch.
    Starting,
    /// Reading full batches: behind the store.
    CatchingUp,
    /// Caught up, following the store.
    Live,
    /// Paused by an operator; applies nothing until resumed.
    Paused {
        /// Why, as given.
        reason: String,
    },
    /// Stopped before an event (failure policy, wrong setup, operator); applies nothing until
    /// resumed.
    Stopped {
        /// Where and why.
        at: StoppedAt,
    },
    /// The infrastructure is failing: waiting to try again, by itself.
    Degraded {
        /// The last error.
        error: String,
        /// Consecutive failures.
        failures: u32,
    },
    /// Resetting and replaying from the beginning.
    Rebuilding,
    /// On a node of a [cluster](crate::cluster): another node owns the projection (or
    /// nobody yet); this worker applies nothing until this node takes the lease.
    Standby {
        /// The owning node, as last seen.
        owner: Option<String>,
    },
    /// The worker ended (shutdown or stop).
    Finished,
}

impl WorkerState {
    /// Every state's [`label`](Self::label).
    pub const LABELS: [&'static str; 9] = [
        "starting",
        "catching_up",
        "live",
        "paused",
        "stopped",
        "degraded",
        "rebuilding",
        "standby",
        "finished",
    ];

    /// The state's name, without its details: `"live"`, `"stopped"`... (as in the JSON
    /// form's `state` field, and the `state` label of the metrics).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::CatchingUp => "catching_up",
            Self::Live => "live",
            Self::Paused { .. } => "paused",
            Self::Stopped { .. } => "stopped",
            Self::Degraded { .. } => "degraded",
            Self::Rebuilding => "rebuilding",
            Self::Standby { .. } => "standby",
            Self::Finished => "finished",
        }
    }
}

impl fmt::Display for WorkerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Starting => f.write_str("starting"),
            Self::CatchingUp => f.write_str("catching up"),
            Self::Live => f.write_str("live"),
            Self::Paused { reason } => write!(f, "paused: {reason}"),
            Self::Stopped { at } => write!(f, "stopped: {at}"),
            Self::Degraded { error, failures } => {
                write!(f, "degraded ({failures} failures): {error}")
            }
            Self::Rebuilding => f.write_str("rebuilding"),
            Self::Standby { owner: Some(owner) } => write!(f, "standby (owned by {owner})"),
            Self::Standby { owner: None } => f.write_str("standby (no owner yet)"),
            Self::Finished => f.write_str("finished"),
        }
    }
}

/// One projection's status, as its worker last published it. Reading it never waits for the
/// worker or the database.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ProjectionSnapshot {
    /// The projection.
    pub name: String,
    /// What its worker is doing.
    pub state: WorkerState,
    /// Its checkpoint.
    pub checkpoint: Option<u64>,
    /// Relevant events after the checkpoint, when last measured (0 when caught up).
    pub events_behind: u64,
    /// Age of the oldest unprocessed relevant event, when last measured.
    pub seconds_behind: f64,
    /// Failed dead-letter entries of this projection.
    pub dead_letters: u64,
    /// The last error, until a batch succeeds after it (kept while stopped).
    pub last_error: Option<String>,
    /// Events applied per second over the last minute.
    pub events_per_second: f64,
    /// Events applied since the worker started.
    pub applied: u64,
    /// When this snapshot was taken.
    pub updated_at: DateTime<Utc>,
    /// For a version of a blue/green projection: which one, its role, and its progress
    /// (see [`bluegreen`](crate::bluegreen)). `None` for other projections.
    pub version: Option<VersionStatus>,
    /// On a node of a [cluster](crate::cluster): who owns the projection, since when, and
    /// when the lease expires. `None` outside a cluster.
    pub owner: Option<crate::cluster::Ownership>,
}

impl ProjectionSnapshot {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            state: WorkerState::Starting,
            checkpoint: None,
            events_behind: 0,
            seconds_behind: 0.0,
            dead_letters: 0,
            last_error: None,
            events_per_second: 0.0,
            applied: 0,
            updated_at: Utc::now(),
            version: None,
            owner: None,
        }
    }
}

/// Events applied per second over the last minute, in one-second buckets.
#[derive(Debug)]
pub(crate) struct Throughput {
    started: Instant,
    /// (second since start, events applied in it), oldest first, at most 60.
    buckets: VecDeque<(u64, u64)>,
}

const WINDOW_SECONDS: u64 = 60;

impl Throughput {
    pub(crate) fn new() -> Self {
        Self {
            started: Instant::now(),
            buckets: VecDeque::new(),
        }
    }

    fn second(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    pub(crate) fn record(&mut self, applied: u64) {
        let now = self.second();
        match self.buckets.back_mut() {
            Some((second, count)) if *second == now => *count += applied,
            _ => self.buckets.push_back((now, applied)),
        }
        self.forget_before(now);
    }

    fn forget_before(&mut self, now: u64) {
        while let Some(&(second, _)) = self.buckets.front() {
            if second + WINDOW_SECONDS <= now {
                self.buckets.pop_front();
            } else {
                break;
            }
        }
    }

    /// Over the last minute (or since the start, when younger).
    pub(crate) fn per_second(&mut self) -> f64 {
        let now = self.second();
        self.forget_before(now);
        let total: u64 = self.buckets.iter().map(|(_, count)| count).sum();
        let elapsed = self
            .started
            .elapsed()
            .min(Duration::from_secs(WINDOW_SECONDS));
        total as f64 / elapsed.as_secs_f64().max(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn throughput_is_over_the_last_minute() {
        let mut throughput = Throughput::new();
        throughput.record(600);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!((throughput.per_second() - 60.0).abs() < 1e-9);
        tokio::time::advance(Duration::from_secs(55)).await;
        throughput.record(120);
        // The first 600 are more than a minute old.
        assert!((throughput.per_second() - 2.0).abs() < 1e-9);
    }
}
