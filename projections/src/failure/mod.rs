//! Whose fault a failure is, and so what the runtime does about it.
//!
//! | kind | examples | what happens |
//! |---|---|---|
//! | [`FailureKind::Event`] | the handler rejects the event, it does not decode, the handler panics, a constraint or data error (SQLSTATE classes 22, 23) | the retry policy, then the failure policy: dead letter (and move past it) or stop |
//! | [`FailureKind::Infrastructure`] | connection refused or reset, pool timeout, the database shutting down or restarting, serialization failure, deadlock (SQLSTATE classes 08, 40, 53, 55, 57, 58, XX) | never dead-lettered, the checkpoint never moves: back off (capped, with jitter) and try again until it clears; the projection reports itself degraded meanwhile |
//! | [`FailureKind::Setup`] | undefined table or column, permission denied, wrong password (SQLSTATE classes 42, 28, 3D, 3F, 0A) | the projection stops with the error in its status, before the event; nothing is dead-lettered; `resume` once fixed |
//!
//! A handler states the kind of its own error with [`HandlerError::infrastructure`],
//! [`HandlerError::setup`] or [`HandlerError::event`]; any other error is classified by
//! [`classify`], which looks through the error's source chain.

mod classify;
pub(crate) mod storable;

pub use classify::{classify, sqlite_code_kind, sqlstate_kind};

use serde::{Deserialize, Serialize};
use std::fmt;

#[allow(unused_imports)] // for the docs
use crate::projection::HandlerError;

/// Whose fault a failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureKind {
    /// The event is bad: retried as the retry policy says, then dead-lettered or stopped at.
    Event,
    /// The infrastructure is failing: waited out and retried, never dead-lettered.
    Infrastructure,
    /// The setup is wrong: the projection stops until an operator resumes it.
    Setup,
}

impl FailureKind {
    /// The stored name: `event`, `infrastructure` or `setup`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Event => "event",
            Self::Infrastructure => "infrastructure",
            Self::Setup => "setup",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "event" => Some(Self::Event),
            "infrastructure" => Some(Self::Infrastructure),
            "setup" => Some(Self::Setup),
            _ => None,
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The message a caught panic carried (`panic!("...")` gives a `&str` or a `String`), for the
/// error that records it.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&'static str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}
