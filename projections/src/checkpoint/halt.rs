//! A projection held before an event: paused by an operator, or stopped by a failure. Kept
//! with the checkpoint, so it survives a restart.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::failure::FailureKind;

/// Why a projection applies nothing until an operator resumes it. Stored with its checkpoint
/// ([`CheckpointRepository::set_halt`](super::CheckpointRepository::set_halt)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Halt {
    /// Paused by an operator.
    Paused {
        /// Why, as given.
        reason: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Stopped by a failure (the stop policy, or a wrong setup) or by an operator.
    Stopped(StoppedAt),
}

impl Halt {
    /// A pause, now.
    pub fn paused(reason: impl Into<String>) -> Self {
        Self::Paused {
            reason: reason.into(),
            at: Utc::now(),
        }
    }

    /// The stored name of the state: `paused` or `stopped`.
    pub fn state(&self) -> &'static str {
        match self {
            Self::Paused { .. } => "paused",
            Self::Stopped(_) => "stopped",
        }
    }

    /// When it began.
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Self::Paused { at, .. } => *at,
            Self::Stopped(stopped) => stopped.at,
        }
    }

    /// Where it stopped, if it stopped.
    pub fn stopped(&self) -> Option<&StoppedAt> {
        match self {
            Self::Stopped(at) => Some(at),
            Self::Paused { .. } => None,
        }
    }
}

impl fmt::Display for Halt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Paused { reason, at } => write!(f, "paused at {at}: {reason}"),
            Self::Stopped(stopped) => write!(f, "stopped: {stopped}"),
        }
    }
}

/// Where and why a projection stopped. The checkpoint stays before `position`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StoppedAt {
    /// The position of the event that failed, if it was one (the checkpoint stays below it).
    pub position: Option<u64>,
    /// The event's id, if an event failed (a wrong setup may stop a projection before any).
    pub event_id: Option<Uuid>,
    /// The event's type.
    pub event_type: Option<String>,
    /// The last error's message (or the operator's reason).
    pub error: String,
    /// Whose fault it was.
    pub kind: FailureKind,
    /// Attempts made.
    pub attempts: u32,
    /// When it stopped.
    pub at: DateTime<Utc>,
}

impl StoppedAt {
    /// A stop now, at no particular event.
    pub fn new(kind: FailureKind, error: impl Into<String>) -> Self {
        Self {
            position: None,
            event_id: None,
            event_type: None,
            error: error.into(),
            kind,
            attempts: 0,
            at: Utc::now(),
        }
    }

    /// At `event_id` of `event_type`, stored at `position`.
    #[must_use]
    pub fn with_event(
        mut self,
        position: Option<u64>,
        event_id: Uuid,
        event_type: impl Into<String>,
    ) -> Self {
        self.position = position;
        self.event_id = Some(event_id);
        self.event_type = Some(event_type.into());
        self
    }

    /// After `attempts` attempts.
    #[must_use]
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts;
        self
    }
}

impl fmt::Display for StoppedAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.event_id, &self.event_type) {
            (Some(id), Some(event_type)) => write!(f, "event {id} `{event_type}`")?,
            (Some(id), None) => write!(f, "event {id}")?,
            _ => f.write_str("the projection")?,
        }
        if let Some(position) = self.position {
            write!(f, " at position {position}")?;
        }
        if self.attempts > 0 {
            write!(f, " failed after {} attempt(s)", self.attempts)?;
        } else {
            f.write_str(" stopped")?;
        }
        write!(f, " ({} failure): {}", self.kind, self.error)
    }
}
