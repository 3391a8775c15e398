//! Metrics through the [`metrics`](https://docs.rs/metrics) facade (feature `metrics`): what
//! every projection does, per projection (label `projection`), under Prometheus-style names
//! with their unit. Nothing is exported unless the program installs a recorder: this crate's
//! own [`PrometheusRecorder`], or any exporter of the facade.
//!
//! | name | kind | what |
//! |---|---|---|
//! | `projections_events_applied_total` | counter | events whose handler succeeded |
//! | `projections_events_skipped_total` | counter | events nothing ran for; label `reason`: `redelivered` (at or below the checkpoint), `not_subscribed` or `other_tenant` (passed over by the tenant filter) |
//! | `projections_events_retried_total` | counter | handler attempts after a failure |
//! | `projections_events_dead_lettered_total` | counter | events sent to the dead-letter queue |
//! | `projections_batch_duration_seconds` | histogram | time to run and commit a batch |
//! | `projections_lag_events` | gauge | relevant events after the checkpoint |
//! | `projections_lag_seconds` | gauge | age of the oldest unprocessed relevant event |
//! | `projections_checkpoint_position` | gauge | the checkpoint's position |
//! | `projections_dead_letters` | gauge | dead-letter entries whose event is not applied |
//! | `projections_state` | gauge | 1 for the worker's state (label `state`), 0 for the others |
//! | `projections_owned` | gauge | 1 while a worker of this process runs the projection (on a cluster: while this node holds its lease) |
//!
//! Counters and the histogram are recorded by the runner (so by every way of running it); the
//! gauges by the coordinator's workers, from the same status snapshot that
//! [`CoordinatorHandle::status`](crate::coordinator::CoordinatorHandle::status) returns.
//!
//! ```
//! # #[cfg(feature = "metrics")] {
//! use projections::metrics::PrometheusRecorder;
//! let recorder = PrometheusRecorder::new();
//! let handle = recorder.handle();
//! // In a program: `recorder.install()?` once, then serve `handle.render()`.
//! assert!(handle.render().is_empty());
//! # }
//! ```

#[cfg(feature = "metrics")]
mod prometheus;
#[cfg(feature = "metrics")]
pub use prometheus::{InstallError, PrometheusHandle, PrometheusRecorder};

#[cfg(feature = "metrics")]
use std::time::Duration;

use crate::coordinator::ProjectionSnapshot;
#[cfg(feature = "metrics")]
use crate::coordinator::WorkerState;

/// Events whose handler succeeded (counter).
pub const EVENTS_APPLIED: &str = "projections_events_applied_total";
/// Events nothing ran for (counter, label `reason`).
pub const EVENTS_SKIPPED: &str = "projections_events_skipped_total";
/// Handler attempts after a failure (counter).
pub const EVENTS_RETRIED: &str = "projections_events_retried_total";
/// Events sent to the dead-letter queue (counter).
pub const EVENTS_DEAD_LETTERED: &str = "projections_events_dead_lettered_total";
/// Time to run and commit a batch (histogram, seconds).
pub const BATCH_DURATION: &str = "projections_batch_duration_seconds";
/// Relevant events after the checkpoint (gauge).
pub const LAG_EVENTS: &str = "projections_lag_events";
/// Age of the oldest unprocessed relevant event (gauge, seconds).
pub const LAG_SECONDS: &str = "projections_lag_seconds";
/// The checkpoint's position (gauge).
pub const CHECKPOINT_POSITION: &str = "projections_checkpoint_position";
/// Dead-letter entries whose event is not applied (gauge).
pub const DEAD_LETTERS: &str = "projections_dead_letters";
/// 1 for the worker's state, 0 for the others (gauge, label `state`).
pub const STATE: &str = "projections_state";
/// 1 while a worker of this process runs the projection (gauge).
pub const OWNED: &str = "projections_owned";

/// Gives every metric of this crate its description and unit, for recorders that show them.
/// [`PrometheusRecorder::install`] calls it; call it after installing another recorder.
pub fn describe() {
    #[cfg(feature = "metrics")]
    {
        use ::metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
        describe_counter!(
            EVENTS_APPLIED,
            Unit::Count,
            "Events whose handler succeeded."
        );
        describe_counter!(
            EVENTS_SKIPPED,
            Unit::Count,
            "Events nothing ran for: redelivered (at or below the checkpoint) or not subscribed."
        );
        describe_counter!(
            EVENTS_RETRIED,
            Unit::Count,
            "Handler attempts after a failure."
        );
        describe_counter!(
            EVENTS_DEAD_LETTERED,
            Unit::Count,
            "Events sent to the dead-letter queue."
        );
        describe_histogram!(
            BATCH_DURATION,
            Unit::Seconds,
            "Time to run and commit a batch."
        );
        describe_gauge!(
            LAG_EVENTS,
            Unit::Count,
            "Relevant events after the checkpoint."
        );
        describe_gauge!(
            LAG_SECONDS,
            Unit::Seconds,
            "Age of the oldest unprocessed relevant event."
        );
        describe_gauge!(CHECKPOINT_POSITION, "The checkpoint's position.");
        describe_gauge!(
            DEAD_LETTERS,
            Unit::Count,
            "Dead-letter entries whose event is not applied."
        );
        describe_gauge!(STATE, "1 for the worker's state, 0 for the others.");
        describe_gauge!(
            OWNED,
            "1 while a worker of this process runs the projection."
        );
    }
}

/// What one batch did, for the counters and the histogram.
#[cfg(feature = "metrics")]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BatchCounts {
    pub(crate) applied: u64,
    pub(crate) skipped: u64,
    pub(crate) not_subscribed: u64,
    pub(crate) other_tenant: u64,
    pub(crate) dead_lettered: u64,
}

#[cfg(feature = "metrics")]
impl BatchCounts {
    /// The counts of `outcome` so far.
    pub(crate) fn of(outcome: &crate::runner::BatchOutcome) -> Self {
        Self {
            applied: outcome.applied,
            skipped: outcome.skipped,
            not_subscribed: outcome.not_subscribed,
            other_tenant: outcome.other_tenant,
            dead_lettered: outcome.dead_lettered.len() as u64,
        }
    }

    /// What was added to `outcome` since `self` was taken from it.
    pub(crate) fn since(self, outcome: &crate::runner::BatchOutcome) -> Self {
        Self {
            applied: outcome.applied.saturating_sub(self.applied),
            skipped: outcome.skipped.saturating_sub(self.skipped),
            not_subscribed: outcome.not_subscribed.saturating_sub(self.not_subscribed),
            other_tenant: outcome.other_tenant.saturating_sub(self.other_tenant),
            dead_lettered: (outcome.dead_lettered.len() as u64).saturating_sub(self.dead_lettered),
        }
    }
}

/// Records a batch of projection `name` that took `took`.
#[cfg(feature = "metrics")]
pub(crate) fn batch(name: &str, counts: BatchCounts, took: Duration) {
    {
        let projection = name.to_owned();
        let add = |metric: &'static str, n: u64| {
            if n > 0 {
                ::metrics::counter!(metric, "projection" => projection.clone()).increment(n);
            }
        };
        add(EVENTS_APPLIED, counts.applied);
        add(EVENTS_DEAD_LETTERED, counts.dead_lettered);
        for (reason, n) in [
            ("redelivered", counts.skipped),
            ("not_subscribed", counts.not_subscribed),
            ("other_tenant", counts.other_tenant),
        ] {
            if n > 0 {
                ::metrics::counter!(EVENTS_SKIPPED, "projection" => projection.clone(), "reason" => reason)
                    .increment(n);
            }
        }
        ::metrics::histogram!(BATCH_DURATION, "projection" => projection)
            .record(took.as_secs_f64());
    }
}

/// Records one more attempt of a failed handler of projection `name`.
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
#[inline]
pub(crate) fn retried(name: &str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(EVENTS_RETRIED, "projection" => name.to_owned()).increment(1);
}

/// Sets the gauges of a projection from its worker's snapshot.
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn snapshot(snapshot: &ProjectionSnapshot) {
    #[cfg(feature = "metrics")]
    {
        let projection = || snapshot.name.clone();
        ::metrics::gauge!(LAG_EVENTS, "projection" => projection())
            .set(snapshot.events_behind as f64);
        ::metrics::gauge!(LAG_SECONDS, "projection" => projection()).set(snapshot.seconds_behind);
        if let Some(checkpoint) = snapshot.checkpoint {
            ::metrics::gauge!(CHECKPOINT_POSITION, "projection" => projection())
                .set(checkpoint as f64);
        }
        ::metrics::gauge!(DEAD_LETTERS, "projection" => projection())
            .set(snapshot.dead_letters as f64);
        let current = snapshot.state.label();
        for state in WorkerState::LABELS {
            let value = if state == current { 1.0 } else { 0.0 };
            ::metrics::gauge!(STATE, "projection" => projection(), "state" => state).set(value);
        }
        // On a cluster, a worker standing by for another node does not own it.
        let owned = !matches!(
            snapshot.state,
            WorkerState::Finished | WorkerState::Standby { .. }
        );
        ::metrics::gauge!(OWNED, "projection" => projection()).set(if owned { 1.0 } else { 0.0 });
    }
}
