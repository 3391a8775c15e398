//! What every storage trait shares: boxed futures (so the traits can be used as trait objects)
//! and the storage error.

use std::future::Future;
use std::pin::Pin;

use crate::failure::FailureKind;
use crate::projection::BoxError;

/// A boxed, sendable future: what the storage traits return, so they can be trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A storage operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The entry does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// A dead-letter entry cannot move to the requested status from its current one.
    #[error("dead-letter entry {id} cannot go from {from} to {to}")]
    InvalidTransition {
        /// The entry.
        id: i64,
        /// Its current status.
        from: &'static str,
        /// The requested status.
        to: &'static str,
    },
    /// A value from configuration is not acceptable (an identifier, a limit).
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was rejected.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A stored value cannot be read (a status, a time, a count out of range, a missing
    /// row the schema needs): someone must repair the data or the schema, so it is a
    /// [`FailureKind::Setup`] failure, never waited out.
    #[error("unreadable stored data: {0}")]
    Unreadable(String),
    /// The backend (database, network) failed.
    #[error("storage backend failed: {0}")]
    Backend(#[source] BoxError),
    /// This node no longer owns the lease it wrote under: another node took it over (or a
    /// rebuild moved its fence on). The batch's transaction commits nothing; the node steps
    /// back until it holds the lease again.
    #[error(
        "node `{node}` no longer owns `{lease}` (its fencing token {token}; now {})",
        match (owner, current) {
            (Some(owner), Some(current)) => format!("`{owner}` with token {current}"),
            _ => "nobody".to_owned(),
        }
    )]
    Fenced {
        /// The lease (a projection or a partition).
        lease: String,
        /// This node.
        node: String,
        /// The token this node held.
        token: i64,
        /// The owner the fence names now.
        owner: Option<String>,
        /// The token the fence holds now.
        current: Option<i64>,
    },
}

impl StorageError {
    /// Wraps a backend error.
    pub fn backend(error: impl Into<BoxError>) -> Self {
        Self::Backend(error.into())
    }

    /// Whether this node lost the lease it wrote under ([`StorageError::Fenced`]).
    pub fn is_fenced(&self) -> bool {
        matches!(self, Self::Fenced { .. })
    }

    /// Whose fault this failure is. A storage failure is never an event's: a wrong setup
    /// (missing table, permission denied, an invalid identifier, unreadable stored data) is
    /// [`FailureKind::Setup`], anything else is [`FailureKind::Infrastructure`] (waited out and
    /// retried).
    pub fn kind(&self) -> FailureKind {
        if matches!(self, Self::Unreadable(_)) {
            return FailureKind::Setup;
        }
        match crate::failure::classify(self) {
            FailureKind::Setup => FailureKind::Setup,
            _ => FailureKind::Infrastructure,
        }
    }
}
