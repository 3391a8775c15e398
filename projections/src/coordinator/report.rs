//! What the coordinator tells about a pass, a rebuild or a whole run: per projection, every
//! event accounted for.

use crate::runner::{BatchOutcome, RunnerError, StoppedAt};

/// What one projection did in a catch-up, a rebuild or a run.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ProjectionReport {
    /// The projection.
    pub name: String,
    /// Events whose handler succeeded.
    pub applied: u64,
    /// Events at or below the checkpoint (nothing ran).
    pub skipped: u64,
    /// Events of types the projection does not subscribe to (the checkpoint moved past them).
    pub not_subscribed: u64,
    /// Events whose handler is live-only, passed over because they were replayed.
    pub live_only_passed: u64,
    /// Events of tenants the projection is not limited to, passed over (the checkpoint moved
    /// past them).
    pub other_tenant: u64,
    /// Dead-letter entries written, in order.
    pub dead_lettered: Vec<i64>,
    /// Events at which a batch ended without applying or dead-lettering them (a stop, or an
    /// infrastructure failure that was then waited out).
    pub failed: u64,
    /// Where the projection is stopped, if it is, at the end.
    pub stopped: Option<StoppedAt>,
    /// The error that ended the projection's pass, if one did.
    pub error: Option<RunnerError>,
}

impl ProjectionReport {
    pub(crate) fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ..Self::default()
        }
    }

    pub(crate) fn add(&mut self, batch: &BatchOutcome) {
        self.applied += batch.applied;
        self.skipped += batch.skipped;
        self.not_subscribed += batch.not_subscribed;
        self.live_only_passed += batch.live_only_passed;
        self.other_tenant += batch.other_tenant;
        self.dead_lettered.extend_from_slice(&batch.dead_lettered);
        self.failed += batch.failed;
    }

    /// Whether everything was applied: nothing dead-lettered, not stopped, no error.
    pub fn is_ok(&self) -> bool {
        self.dead_lettered.is_empty() && self.stopped.is_none() && self.error.is_none()
    }
}

/// What each projection did, in registration order.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct CatchUpReport {
    /// One report per projection.
    pub projections: Vec<ProjectionReport>,
}

/// What each projection did over a whole [`run`](super::ProjectionCoordinator::run) or until
/// [`shutdown`](super::CoordinatorHandle::shutdown).
pub type RunReport = CatchUpReport;

impl CatchUpReport {
    /// Events applied over all projections.
    pub fn applied(&self) -> u64 {
        self.projections.iter().map(|p| p.applied).sum()
    }

    /// Dead letters written over all projections.
    pub fn dead_lettered(&self) -> usize {
        self.projections.iter().map(|p| p.dead_lettered.len()).sum()
    }

    /// Whether every projection applied everything: `false` when anything was dead-lettered,
    /// a projection stopped, or a pass ended with an error.
    pub fn is_ok(&self) -> bool {
        self.projections.iter().all(ProjectionReport::is_ok)
    }

    /// The report of projection `name`.
    pub fn projection(&self, name: &str) -> Option<&ProjectionReport> {
        self.projections.iter().find(|p| p.name == name)
    }

    /// The projections whose pass ended with an error, with it.
    pub fn failures(&self) -> impl Iterator<Item = (&str, &RunnerError)> {
        self.projections
            .iter()
            .filter_map(|p| p.error.as_ref().map(|e| (p.name.as_str(), e)))
    }
}
