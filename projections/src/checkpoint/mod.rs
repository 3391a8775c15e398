//! Checkpoints: how far each projection has got, as a global position.

mod halt;
mod lag;

#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) use halt::StoredHalt;
pub use halt::{Halt, StoppedAt};
pub use lag::LagMetrics;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::storage::{BoxFuture, StorageError};

/// A projection's checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CheckpointData {
    /// The projection's stable name.
    pub projection_name: String,
    /// The id of the last event the checkpoint moved over, for display.
    pub last_event_id: Option<Uuid>,
    /// The type of that event, for display.
    pub last_event_type: Option<String>,
    /// The global position: every event at or below it is done.
    pub position: u64,
    /// When the checkpoint last moved.
    pub last_processed_at: Option<DateTime<Utc>>,
    /// How many events the projection has applied since its last reset.
    pub events_processed: u64,
    /// Paused or stopped: the projection applies nothing until resumed. Survives restarts.
    #[serde(default)]
    pub halt: Option<Halt>,
}

/// A move of a checkpoint.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CheckpointUpdate {
    /// The new position; a position at or below the stored one leaves the position as it is.
    pub position: u64,
    /// The event at that position, for display.
    pub event_id: Option<Uuid>,
    /// Its type, for display.
    pub event_type: Option<String>,
    /// Events applied since the previous update, added to the counter.
    pub events_applied: u64,
    /// When the move happened.
    pub at: DateTime<Utc>,
}

impl CheckpointUpdate {
    /// A move to `position`.
    pub fn new(position: u64) -> Self {
        Self {
            position,
            event_id: None,
            event_type: None,
            events_applied: 0,
            at: Utc::now(),
        }
    }

    /// Names the event at the new position.
    #[must_use]
    pub fn with_event(mut self, event_id: Uuid, event_type: impl Into<String>) -> Self {
        self.event_id = Some(event_id);
        self.event_type = Some(event_type.into());
        self
    }

    /// This update followed by `next`: the furthest position (with its event), the events of
    /// both, the later time.
    pub(crate) fn merged(self, next: Option<CheckpointUpdate>) -> CheckpointUpdate {
        let Some(next) = next else { return self };
        let applied = self.events_applied + next.events_applied;
        let mut merged = if next.position >= self.position {
            next
        } else {
            self
        };
        merged.events_applied = applied;
        merged
    }

    /// Counts `events` applied since the previous update.
    #[must_use]
    pub fn with_events_applied(mut self, events: u64) -> Self {
        self.events_applied = events;
        self
    }
}

/// Where checkpoints are kept. The in-memory and PostgreSQL implementations pass the same
/// conformance suite.
pub trait CheckpointRepository: Send + Sync {
    /// The position of `projection`, if it has a checkpoint.
    fn get_checkpoint<'a>(
        &'a self,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, StorageError>>;

    /// Everything known about the checkpoint of `projection`.
    fn get_checkpoint_data<'a>(
        &'a self,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<Option<CheckpointData>, StorageError>>;

    /// Moves the checkpoint of `projection` forward. It never moves backwards: an update at
    /// or below the stored position only adds to the counter.
    fn update_checkpoint<'a>(
        &'a self,
        projection: &'a str,
        update: CheckpointUpdate,
    ) -> BoxFuture<'a, Result<(), StorageError>>;

    /// Records that `projection` is paused or stopped (`Some`), or clears it (`None`). Creates
    /// the checkpoint (at position 0) if there is none; the position never moves here.
    fn set_halt<'a>(
        &'a self,
        projection: &'a str,
        halt: Option<&'a Halt>,
    ) -> BoxFuture<'a, Result<(), StorageError>>;

    /// Deletes the checkpoint of `projection`, and its halt with it.
    fn reset_checkpoint<'a>(
        &'a self,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<(), StorageError>>;

    /// Every checkpoint, sorted by projection name.
    fn get_all_checkpoints(&self) -> BoxFuture<'_, Result<Vec<CheckpointData>, StorageError>>;

    /// The replay horizon of `projection`: events at or below it are replayed, and its
    /// live-only handlers do not run for them (see [`runner`](crate::runner), "Live-only
    /// handlers"). `None` if it has none. Deleted with the checkpoint.
    ///
    /// By default `None`: a store that keeps no horizon.
    fn get_replay_horizon<'a>(
        &'a self,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, StorageError>> {
        let _ = projection;
        Box::pin(std::future::ready(Ok(None)))
    }

    /// Records `head` as the replay horizon of `projection` unless it has one already, and
    /// returns the horizon stored. Creates the checkpoint (at position 0) if there is none;
    /// the position never moves here.
    ///
    /// By default a [`StorageError::Invalid`] (a wrong setup): a store that keeps no horizon
    /// cannot run a projection with live-only handlers safely, since a restart in the middle
    /// of a replay would fire them.
    fn set_replay_horizon<'a>(
        &'a self,
        projection: &'a str,
        head: u64,
    ) -> BoxFuture<'a, Result<u64, StorageError>> {
        let _ = (projection, head);
        Box::pin(std::future::ready(Err(StorageError::Invalid {
            what: "checkpoint store",
            reason: "it keeps no replay horizon, which a projection with live-only handlers needs"
                .to_owned(),
        })))
    }
}
