//! The dead-letter queue: events a projection gave up on, with the reason, kept until an
//! operator replays or resolves them.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::failure::storable::{
    storable_json, storable_message, storable_source_chain, without_nul,
};
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
    ///
    /// Recording a failure must never fail because of what the failure says, whatever the
    /// backend, so the record is made storable here, once for every backend:
    ///
    /// - every NUL character becomes U+FFFD (the replacement character), in the error's
    ///   message, in each message of its source chain, in `event_type`, in `projection_name`,
    ///   and in every string and object key of `event_data`. PostgreSQL refuses NUL in `text`
    ///   and `\u0000` in `jsonb`, so a handler error that quotes binary input could otherwise
    ///   not be dead-lettered at all;
    /// - each message (the error's and each source's) is at most 16 KiB: a longer one is cut
    ///   at a character boundary and ends with `… [cut: N more bytes]`, `N` being the bytes
    ///   left out, so that a multi-megabyte message does not bloat the queue;
    /// - the chain has at most 32 entries: when the error has more sources, the last entry is
    ///   `… [cut: N more sources]` in their place.
    ///
    /// An ordinary error (short, without NUL, with a short chain) is recorded exactly.
    pub fn new(
        event_id: Uuid,
        projection_name: impl Into<String>,
        event_type: impl Into<String>,
        mut event_data: serde_json::Value,
        error: &(dyn std::error::Error + 'static),
        attempts: u32,
    ) -> Self {
        storable_json(&mut event_data);
        Self {
            event_id,
            position: None,
            projection_name: without_nul(projection_name.into()),
            event_type: without_nul(event_type.into()),
            event_data,
            error_message: storable_message(error.to_string()),
            error_chain: storable_source_chain(error),
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::error::Error;
    use std::fmt;

    use serde_json::json;

    use super::*;

    /// An error with a chain of sources, outermost first.
    #[derive(Debug)]
    struct Chained {
        message: String,
        source: Option<Box<Chained>>,
    }

    impl Chained {
        fn new(messages: &[String]) -> Self {
            let (message, sources) = messages.split_first().expect("a message");
            Self {
                message: message.clone(),
                source: (!sources.is_empty()).then(|| Box::new(Self::new(sources))),
            }
        }
    }

    impl fmt::Display for Chained {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&self.message)
        }
    }

    impl Error for Chained {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.source.as_deref().map(|e| e as &(dyn Error + 'static))
        }
    }

    /// An error that is its own source.
    #[derive(Debug)]
    struct Looping;

    impl fmt::Display for Looping {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("again")
        }
    }

    impl Error for Looping {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(self)
        }
    }

    fn failed(error: &(dyn Error + 'static)) -> FailedEvent {
        FailedEvent::new(Uuid::nil(), "p", "t", json!({}), error, 1)
    }

    #[test]
    fn an_ordinary_error_is_recorded_exactly() {
        let error = Chained::new(&["outer ä✓".to_owned(), "inner".to_owned()]);
        let data = json!({ "payload": { "sku": "SKU-1", "tags": ["a"] } });
        let failure = FailedEvent::new(Uuid::nil(), "p", "t", data.clone(), &error, 2);
        assert_eq!(failure.error_message, "outer ä✓");
        assert_eq!(failure.error_chain, ["inner"]);
        assert_eq!(failure.event_data, data);
        assert_eq!(
            (
                failure.projection_name.as_str(),
                failure.event_type.as_str()
            ),
            ("p", "t")
        );
    }

    #[test]
    fn nul_is_replaced_everywhere() {
        let error = Chained::new(&["bad\0input".to_owned(), "\0cause".to_owned()]);
        let failure = FailedEvent::new(
            Uuid::nil(),
            "proj\0ection",
            "type\0",
            json!({ "payload": { "na\0me": "va\0lue", "list": ["\0", 1, { "\0": null }] } }),
            &error,
            1,
        );
        assert_eq!(failure.error_message, "bad\u{FFFD}input");
        assert_eq!(failure.error_chain, ["\u{FFFD}cause"]);
        assert_eq!(failure.projection_name, "proj\u{FFFD}ection");
        assert_eq!(failure.event_type, "type\u{FFFD}");
        assert_eq!(
            failure.event_data,
            json!({
                "payload": {
                    "na\u{FFFD}me": "va\u{FFFD}lue",
                    "list": ["\u{FFFD}", 1, { "\u{FFFD}": null }],
                },
            })
        );
    }

    #[test]
    fn long_messages_are_capped_with_a_note() {
        let huge = "✓".repeat(2 * 1024 * 1024);
        let error = Chained::new(&[huge.clone(), format!("cause {huge}")]);
        let failure = failed(&error);
        for message in [&failure.error_message, &failure.error_chain[0]] {
            assert!(message.len() <= 16 * 1024, "{} bytes kept", message.len());
            let (kept, note) = message.rsplit_once("… [cut: ").expect("a note");
            assert!(!kept.is_empty());
            let cut: usize = note
                .strip_suffix(" more bytes]")
                .and_then(|n| n.parse().ok())
                .expect("the number of bytes cut");
            let original = if message == &failure.error_message {
                huge.len()
            } else {
                huge.len() + "cause ".len()
            };
            assert_eq!(kept.len() + cut, original);
        }
        assert!(huge.starts_with(failure.error_message.split('…').next().unwrap()));
    }

    #[test]
    fn the_chain_keeps_at_most_32_entries() {
        let messages: Vec<String> = (0..41).map(|n| format!("m{n}")).collect();
        let failure = failed(&Chained::new(&messages));
        assert_eq!(failure.error_message, "m0");
        assert_eq!(failure.error_chain.len(), 32);
        assert_eq!(failure.error_chain[..31], messages[1..32]);
        assert_eq!(failure.error_chain[31], "… [cut: 9 more sources]");

        // Exactly 32 sources: all kept.
        let failure = failed(&Chained::new(&messages[..33]));
        assert_eq!(failure.error_chain, messages[1..33]);
    }

    #[test]
    fn a_looping_chain_ends() {
        let failure = failed(&Looping);
        assert_eq!(failure.error_chain.len(), 32);
        assert!(failure.error_chain[..31].iter().all(|m| m == "again"));
        assert!(failure.error_chain[31].starts_with("… [cut: at least "));
    }
}
