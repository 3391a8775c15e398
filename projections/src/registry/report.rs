use std::fmt;

use uuid::Uuid;

use crate::projection::HandlerError;
use crate::runner::{BatchOutcome, RunnerError};

/// What one projection did with a dispatch.
#[derive(Debug)]
#[non_exhaustive]
pub struct ProjectionDispatch {
    /// The projection.
    pub name: String,
    /// Its outcome.
    pub result: Result<BatchOutcome, RunnerError>,
}

/// What one handler did with one event.
#[derive(Debug)]
#[non_exhaustive]
pub struct HandlerDispatch {
    /// The handler's type.
    pub handler: &'static str,
    /// The event.
    pub event_id: Uuid,
    /// Its outcome.
    pub result: Result<(), HandlerError>,
}

/// Every outcome of a dispatch. Each failure is also logged at `warn`.
#[derive(Debug, Default)]
#[non_exhaustive]
#[must_use = "a projection's or handler's failure is only reported here: look at `failures()`"]
pub struct DispatchReport {
    /// One entry per projection that received events.
    pub projections: Vec<ProjectionDispatch>,
    /// One entry per (handler, event).
    pub handlers: Vec<HandlerDispatch>,
}

/// One failure in a [`DispatchReport`].
#[derive(Debug)]
pub enum DispatchFailure<'a> {
    /// A projection's runner failed.
    Projection(&'a str, &'a RunnerError),
    /// A handler failed.
    Handler(&'a str, Uuid, &'a HandlerError),
}

impl fmt::Display for DispatchFailure<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Projection(name, error) => write!(f, "projection `{name}`: {error}"),
            Self::Handler(name, event, error) => {
                write!(f, "handler `{name}` on event {event}: {error}")
            }
        }
    }
}

impl DispatchReport {
    /// Whether everything succeeded.
    pub fn is_ok(&self) -> bool {
        self.failures().next().is_none()
    }

    /// Every failure.
    pub fn failures(&self) -> impl Iterator<Item = DispatchFailure<'_>> {
        let projections = self.projections.iter().filter_map(|p| {
            p.result
                .as_ref()
                .err()
                .map(|e| DispatchFailure::Projection(&p.name, e))
        });
        let handlers = self.handlers.iter().filter_map(|h| {
            h.result
                .as_ref()
                .err()
                .map(|e| DispatchFailure::Handler(h.handler, h.event_id, e))
        });
        projections.chain(handlers)
    }

    /// Applications by projections (an event applied by two projections counts twice).
    pub fn applied(&self) -> u64 {
        self.projections
            .iter()
            .filter_map(|p| p.result.as_ref().ok())
            .map(|o| o.applied)
            .sum()
    }

    /// The outcome of projection `name`.
    pub fn projection(&self, name: &str) -> Option<&Result<BatchOutcome, RunnerError>> {
        self.projections
            .iter()
            .find(|p| p.name == name)
            .map(|p| &p.result)
    }
}
