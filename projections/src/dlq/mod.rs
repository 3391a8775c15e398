//! The dead-letter queue: events a projection gave up on, with the reason, kept until an
//! operator replays or resolves them.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::storage::{BoxFuture, StorageError};

/// Where a dead-letter entry stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DLQStatus {
    /// Waiting for an operator.
    Failed,
    /// Being replayed.
    Retrying,
    /// Done with: replayed successfully or dismissed.
    Resolved,
}

impl DLQStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Retrying => "retrying",
            Self::Resolved => "resolved",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "failed" => Some(Self::Failed),
            "retrying" => Some(Self::Retrying),
            "resolved" => Some(Self::Resolved),
            _ => None,
        }
    }

    /// Whether an entry may move from `self` to `to`. A resolved entry only comes back to
    /// `failed` through a new failure ([`DLQRepository::add_failed_event`]).
    pub fn can_become(self, to: DLQStatus) -> bool {
        matches!(
            (self, to),
            (Self::Failed, Self::Retrying)
                | (Self::Failed, Self::Resolved)
                | (Self::Retrying, Self::Resolved)
                | (Self::Retrying, Self::Failed)
        )
    }
}

impl fmt::Display for DLQStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure to record.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FailedEvent {
    /// The event's id.
    pub event_id: Uuid,
    /// Its global position, if stored.
    pub position: Option<u64>,
    /// The projection that gave up.
    pub projection_name: String,
    /// The event's wire name.
    pub event_type: String,
    /// The whole event as JSON (`{"metadata": ..., "payload": ...}`).
    pub event_data: serde_json::Value,
    /// The error's message.
    pub error_message: String,
    /// The messages of the error's sources, outermost first.
    pub error_chain: Vec<String>,
    /// Attempts made this time.
    pub attempts: u32,
    /// When it failed.
    pub failed_at: DateTime<Utc>,
}

impl FailedEvent {
    /// A failure of `event_id` in `projection_name` with `error`; the message and the source
    /// chain are taken from the error.
    pub fn new(
        event_id: Uuid,
        projection_name: impl Into<String>,
        event_type: impl Into<String>,
        event_data: serde_json::Value,
        error: &(dyn std::error::Error + 'static),
        attempts: u32,
    ) -> Self {
        let mut error_chain = Vec::new();
        let mut source = error.source();
        while let Some(cause) = source {
            error_chain.push(cause.to_string());
            source = cause.source();
        }
        Self {
            event_id,
            position: None,
            projection_name: projection_name.into(),
            event_type: event_type.into(),
            event_data,
            error_message: error.to_string(),
            error_chain,
            attempts,
            failed_at: Utc::now(),
        }
    }

    /// Sets the event's position.
    #[must_use]
    pub fn with_position(mut self, position: Option<u64>) -> Self {
        self.position = position;
        self
    }
}

/// A dead-letter entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DLQEntry {
    /// The entry's id.
    pub id: i64,
    /// The event's id.
    pub event_id: Uuid,
    /// The event's global position, if it was stored.
    pub position: Option<u64>,
    /// The projection that gave up.
    pub projection_name: String,
    /// The event's wire name.
    pub event_type: String,
    /// The whole event as JSON.
    pub event_data: serde_json::Value,
    /// The last error's message.
    pub error_message: String,
    /// The last error's sources, outermost first.
    pub error_chain: Vec<String>,
    /// Attempts over every failure of this event in this projection.
    pub attempts: u32,
    /// The first failure.
    pub first_failed_at: DateTime<Utc>,
    /// The last failure.
    pub last_failed_at: DateTime<Utc>,
    /// Where it stands.
    pub status: DLQStatus,
    /// When it was resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// Who resolved it.
    pub resolved_by: Option<String>,
}

/// Counts over the whole queue.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DLQStats {
    /// Entries waiting for an operator.
    pub failed: u64,
    /// Entries being replayed.
    pub retrying: u64,
    /// Entries done with.
    pub resolved: u64,
    /// Projections with failed or retrying entries.
    pub affected_projections: u64,
    /// The first failure among failed or retrying entries.
    pub oldest_failure: Option<DateTime<Utc>>,
}

/// Which entries to list.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct DLQFilter {
    /// Only this projection's entries.
    pub projection_name: Option<String>,
    /// Only entries with this status.
    pub status: Option<DLQStatus>,
    /// At most this many (oldest first); `None` for all.
    pub limit: Option<usize>,
}

impl DLQFilter {
    /// Every entry.
    pub fn all() -> Self {
        Self::default()
    }

    /// The failed entries of `projection`.
    pub fn failed_in(projection: impl Into<String>) -> Self {
        Self {
            projection_name: Some(projection.into()),
            status: Some(DLQStatus::Failed),
            limit: None,
        }
    }

    /// Only this projection's entries.
    #[must_use]
    pub fn projection(mut self, projection: impl Into<String>) -> Self {
        self.projection_name = Some(projection.into());
        self
    }

    /// Only entries with `status`.
    #[must_use]
    pub fn status(mut self, status: DLQStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// At most `limit` entries.
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }
}

/// Where dead letters are kept. The in-memory and PostgreSQL implementations pass the same
/// conformance suite.
pub trait DLQRepository: Send + Sync {
    /// Records a failure. One entry per (event, projection): a second failure adds its
    /// attempts, replaces the error, sets the status back to failed and clears the resolved
    /// fields. Returns the entry's id.
    fn add_failed_event(&self, failure: FailedEvent) -> BoxFuture<'_, Result<i64, StorageError>>;

    /// Entries matching `filter`, oldest first.
    fn get_failed_events(
        &self,
        filter: DLQFilter,
    ) -> BoxFuture<'_, Result<Vec<DLQEntry>, StorageError>>;

    /// One entry.
    fn get_by_id(&self, id: i64) -> BoxFuture<'_, Result<Option<DLQEntry>, StorageError>>;

    /// Marks an entry as being replayed.
    fn mark_retrying(&self, id: i64) -> BoxFuture<'_, Result<(), StorageError>>;

    /// Marks an entry as done with, by `resolved_by`.
    fn mark_resolved<'a>(
        &'a self,
        id: i64,
        resolved_by: &'a str,
    ) -> BoxFuture<'a, Result<(), StorageError>>;

    /// Counts over the whole queue.
    fn get_stats(&self) -> BoxFuture<'_, Result<DLQStats, StorageError>>;

    /// Failed or retrying entries per projection, sorted by projection name.
    fn get_projection_counts(&self) -> BoxFuture<'_, Result<Vec<(String, u64)>, StorageError>>;

    /// Deletes resolved entries resolved more than `days` days ago; returns how many.
    fn delete_resolved(&self, older_than_days: u32) -> BoxFuture<'_, Result<u64, StorageError>>;
}
