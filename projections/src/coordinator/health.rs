use std::fmt;

use serde::Serialize;

use crate::checkpoint::{CheckpointData, LagMetrics};
use crate::runner::StoppedAt;

/// How one projection is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProjectionStatus {
    /// Caught up, no failed dead letters.
    Healthy,
    /// Behind the store by `events_behind` relevant events.
    Lagging {
        /// Relevant events after the checkpoint.
        events_behind: u64,
    },
    /// Has failed dead-letter entries waiting for an operator.
    Failing {
        /// Failed entries of this projection.
        dead_letters: u64,
    },
    /// Stopped under the stop policy; applies nothing until resumed.
    Stopped {
        /// Where and why.
        reason: String,
    },
    /// Its state could not be read.
    Unknown {
        /// Why.
        error: String,
    },
}

impl ProjectionStatus {
    /// Severity, for the overall status: higher is worse.
    fn severity(&self) -> u8 {
        match self {
            Self::Healthy => 0,
            Self::Lagging { .. } => 1,
            Self::Failing { .. } => 2,
            Self::Unknown { .. } => 3,
            Self::Stopped { .. } => 4,
        }
    }

    pub(crate) fn of(stopped: Option<&StoppedAt>, dead_letters: u64, lag: &LagMetrics) -> Self {
        if let Some(at) = stopped {
            Self::Stopped {
                reason: at.to_string(),
            }
        } else if dead_letters > 0 {
            Self::Failing { dead_letters }
        } else if lag.events_behind > 0 {
            Self::Lagging {
                events_behind: lag.events_behind,
            }
        } else {
            Self::Healthy
        }
    }
}

impl fmt::Display for ProjectionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Healthy => f.write_str("healthy"),
            Self::Lagging { events_behind } => write!(f, "lagging ({events_behind} events behind)"),
            Self::Failing { dead_letters } => write!(f, "failing ({dead_letters} dead letters)"),
            Self::Stopped { reason } => write!(f, "stopped: {reason}"),
            Self::Unknown { error } => write!(f, "unknown: {error}"),
        }
    }
}

/// One projection in a [`HealthReport`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ProjectionHealth {
    /// The projection.
    pub name: String,
    /// Its status.
    pub status: ProjectionStatus,
    /// Its checkpoint.
    pub checkpoint: Option<CheckpointData>,
    /// Its lag.
    pub lag: Option<LagMetrics>,
    /// Its failed dead-letter entries.
    pub dead_letters: u64,
}

/// The health of every projection of a coordinator.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct HealthReport {
    /// The worst status among the projections (healthy when there are none).
    pub status: ProjectionStatus,
    /// Per projection, in registration order.
    pub projections: Vec<ProjectionHealth>,
}

impl HealthReport {
    pub(crate) fn new(projections: Vec<ProjectionHealth>) -> Self {
        let status = projections
            .iter()
            .map(|p| &p.status)
            .max_by_key(|s| s.severity())
            .cloned()
            .unwrap_or(ProjectionStatus::Healthy);
        Self {
            status,
            projections,
        }
    }

    /// Whether every projection is healthy.
    pub fn is_healthy(&self) -> bool {
        self.status == ProjectionStatus::Healthy
    }
}
