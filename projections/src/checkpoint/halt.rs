//! A projection held before an event: paused by an operator, or stopped by a failure. Kept
//! with the checkpoint, so it survives a restart.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::failure::FailureKind;
use crate::failure::storable::{storable_message, without_nul};
use crate::storage::StorageError;

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
    /// A pause, now. The reason is made storable as a dead letter's message is (NUL
    /// characters replaced, at most 16 KiB; see
    /// [`FailedEvent::new`](crate::dlq::FailedEvent::new)).
    pub fn paused(reason: impl Into<String>) -> Self {
        Self::Paused {
            reason: storable_message(reason.into()),
            at: Utc::now(),
        }
    }

    /// This halt as every backend stores it: the reason or error and the event type made
    /// storable (as in [`Halt::paused`] and [`StoppedAt::new`]), for a halt built by hand.
    pub(crate) fn storable(&self) -> Self {
        let mut halt = self.clone();
        match &mut halt {
            Self::Paused { reason, .. } => *reason = storable_message(std::mem::take(reason)),
            Self::Stopped(stopped) => {
                stopped.error = storable_message(std::mem::take(&mut stopped.error));
                stopped.event_type = stopped.event_type.take().map(without_nul);
            }
        }
        halt
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
    /// A stop now, at no particular event. The error is made storable as a dead letter's
    /// message is (NUL characters replaced, at most 16 KiB; see
    /// [`FailedEvent::new`](crate::dlq::FailedEvent::new)).
    pub fn new(kind: FailureKind, error: impl Into<String>) -> Self {
        Self {
            position: None,
            event_id: None,
            event_type: None,
            error: storable_message(error.into()),
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
        self.event_type = Some(without_nul(event_type.into()));
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

/// A halt as its columns hold it, before it is checked: what each backend reads, so the
/// checks and their errors are written once. Unused when no database backend is compiled in.
#[cfg_attr(not(any(feature = "postgres", feature = "sqlite")), allow(dead_code))]
pub(crate) struct StoredHalt {
    pub(crate) state: String,
    pub(crate) reason: Option<String>,
    pub(crate) at: Option<DateTime<Utc>>,
    pub(crate) kind: Option<String>,
    pub(crate) attempts: Option<i64>,
    pub(crate) position: Option<i64>,
    pub(crate) event_id: Option<Uuid>,
    pub(crate) event_type: Option<String>,
}

#[cfg_attr(not(any(feature = "postgres", feature = "sqlite")), allow(dead_code))]
impl StoredHalt {
    /// The halt of `projection`, or [`StorageError::Unreadable`] naming what is wrong.
    pub(crate) fn into_halt(self, projection: &str) -> Result<Halt, StorageError> {
        let invalid = |what: &str| {
            StorageError::Unreadable(format!(
                "the stored halt of projection {projection} is invalid: {what}"
            ))
        };
        let reason = self.reason.ok_or_else(|| invalid("no halt_reason"))?;
        let at = self.at.ok_or_else(|| invalid("no halt_at"))?;
        match self.state.as_str() {
            "paused" => Ok(Halt::Paused { reason, at }),
            "stopped" => {
                let kind = self.kind.ok_or_else(|| invalid("no halt_failure_kind"))?;
                let kind = FailureKind::parse(&kind)
                    .ok_or_else(|| invalid(&format!("unknown failure kind `{kind}`")))?;
                let attempts = self.attempts.ok_or_else(|| invalid("no halt_attempts"))?;
                let attempts = u32::try_from(attempts)
                    .map_err(|_| invalid(&format!("halt_attempts {attempts} is not a u32")))?;
                let position = self
                    .position
                    .map(|p| {
                        u64::try_from(p)
                            .map_err(|_| invalid(&format!("negative halt_position {p}")))
                    })
                    .transpose()?;
                Ok(Halt::Stopped(StoppedAt {
                    position,
                    event_id: self.event_id,
                    event_type: self.event_type,
                    error: reason,
                    kind,
                    attempts,
                    at,
                }))
            }
            other => Err(invalid(&format!("unknown halt_state `{other}`"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_make_the_texts_storable() {
        let Halt::Paused { reason, .. } = Halt::paused("a\0b") else {
            unreachable!("a pause");
        };
        assert_eq!(reason, "a\u{FFFD}b");
        let stopped = StoppedAt::new(FailureKind::Event, "x".repeat(1 << 20)).with_event(
            Some(3),
            Uuid::nil(),
            "t\0",
        );
        assert!(stopped.error.len() <= 16 * 1024);
        assert!(stopped.error.ends_with("more bytes]"));
        assert_eq!(stopped.event_type.as_deref(), Some("t\u{FFFD}"));
    }

    #[test]
    fn storable_fixes_a_halt_built_by_hand_and_keeps_a_clean_one() {
        let at = Utc::now();
        let by_hand = Halt::Paused {
            reason: "\0".to_owned(),
            at,
        };
        assert_eq!(
            by_hand.storable(),
            Halt::Paused {
                reason: "\u{FFFD}".to_owned(),
                at
            }
        );
        let mut stopped = StoppedAt::new(FailureKind::Setup, "no table").with_attempts(2);
        stopped.error.push('\0');
        stopped.event_type = Some("\0".to_owned());
        let Halt::Stopped(stored) = Halt::Stopped(stopped.clone()).storable() else {
            unreachable!("a stop");
        };
        assert_eq!(stored.error, "no table\u{FFFD}");
        assert_eq!(stored.event_type.as_deref(), Some("\u{FFFD}"));
        assert_eq!(
            (stored.kind, stored.attempts, stored.at),
            (stopped.kind, 2, stopped.at)
        );

        let clean = Halt::Stopped(StoppedAt::new(FailureKind::Event, "bad").with_event(
            Some(1),
            Uuid::new_v4(),
            "t",
        ));
        assert_eq!(clean.storable(), clean);
    }
}
