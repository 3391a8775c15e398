use std::fmt;

use serde::Serialize;

use super::status::{ProjectionSnapshot, WorkerState};
use crate::checkpoint::Halt;
use crate::checkpoint::{CheckpointData, LagMetrics};
use crate::runner::{RunnerError, RunnerReads};
use crate::store::EventStore;

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
    /// Stopped (failure policy, wrong setup, operator); applies nothing until resumed.
    Stopped {
        /// Where and why.
        reason: String,
    },
    /// Paused by an operator; applies nothing until resumed.
    Paused {
        /// Why, as given.
        reason: String,
    },
    /// The infrastructure is failing; the worker waits and tries again by itself.
    Degraded {
        /// The last error.
        error: String,
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
            Self::Paused { .. } => 2,
            Self::Failing { .. } => 3,
            Self::Degraded { .. } => 4,
            Self::Unknown { .. } => 5,
            Self::Stopped { .. } => 6,
        }
    }

    pub(crate) fn of(halt: Option<&Halt>, dead_letters: u64, lag: &LagMetrics) -> Self {
        if let Some(halt) = halt {
            Self::of_halt(halt)
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

impl ProjectionStatus {
    pub(crate) fn of_halt(halt: &Halt) -> Self {
        match halt {
            Halt::Paused { reason, .. } => Self::Paused {
                reason: reason.clone(),
            },
            Halt::Stopped(at) => Self::Stopped {
                reason: at.to_string(),
            },
        }
    }

    /// From a worker's snapshot.
    pub(crate) fn of_snapshot(snapshot: &ProjectionSnapshot) -> Self {
        match &snapshot.state {
            WorkerState::Stopped { at } => Self::Stopped {
                reason: at.to_string(),
            },
            WorkerState::Paused { reason } => Self::Paused {
                reason: reason.clone(),
            },
            WorkerState::Degraded { error, .. } => Self::Degraded {
                error: error.clone(),
            },
            _ if snapshot.dead_letters > 0 => Self::Failing {
                dead_letters: snapshot.dead_letters,
            },
            _ if snapshot.events_behind > 0 => Self::Lagging {
                events_behind: snapshot.events_behind,
            },
            WorkerState::Finished => Self::Unknown {
                error: "its worker has ended".to_owned(),
            },
            _ => Self::Healthy,
        }
    }
}

impl fmt::Display for ProjectionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Healthy => f.write_str("healthy"),
            Self::Lagging { events_behind } => write!(f, "lagging ({events_behind} events behind)"),
            Self::Failing { dead_letters: 1 } => f.write_str("failing (1 dead letter)"),
            Self::Failing { dead_letters } => write!(f, "failing ({dead_letters} dead letters)"),
            Self::Stopped { reason } => write!(f, "stopped: {reason}"),
            Self::Paused { reason } => write!(f, "paused: {reason}"),
            Self::Degraded { error } => write!(f, "degraded: {error}"),
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

/// The health of one projection, read from storage through `reads`.
pub(crate) async fn health_of(
    reads: &RunnerReads,
    halt: Option<&Halt>,
    store: &dyn EventStore,
) -> ProjectionHealth {
    let name = reads.name().to_owned();
    let state = async {
        let checkpoint = reads.checkpoint_data().await?;
        let lag = reads.lag_metrics(store).await?;
        let dead_letters = reads.dead_letter_count().await?;
        Ok::<_, RunnerError>((checkpoint, lag, dead_letters))
    };
    match state.await {
        Ok((checkpoint, lag, dead_letters)) => {
            // The stored halt is the truth (another process may have paused it).
            let halt = checkpoint.as_ref().and_then(|c| c.halt.as_ref()).or(halt);
            ProjectionHealth {
                status: ProjectionStatus::of(halt, dead_letters, &lag),
                name,
                checkpoint,
                lag: Some(lag),
                dead_letters,
            }
        }
        Err(error) => ProjectionHealth {
            status: match halt {
                Some(halt) => ProjectionStatus::of_halt(halt),
                None => ProjectionStatus::Unknown {
                    error: super::worker::error_chain(&error),
                },
            },
            name,
            checkpoint: None,
            lag: None,
            dead_letters: 0,
        },
    }
}
