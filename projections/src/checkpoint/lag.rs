use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How far a projection is behind its event store.
///
/// Definitions, all computed from positions and the store's own clock, never from the
/// client-supplied `occurred_at`:
/// - `events_behind`: events the projection subscribes to with a position above its checkpoint
///   and at or below the head;
/// - `oldest_unprocessed_age`: time since the store recorded the oldest of those events (`None`
///   when there are none), how long the oldest pending work has waited;
/// - `since_last_progress`: time since the checkpoint last moved (`None` if it never did);
/// - `held_back`: what keeps committed events from the projection (an append still in flight
///   on PostgreSQL), if anything does: which backend, since when, its statement's first
///   characters, and how many of `events_behind` wait for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LagMetrics {
    /// The projection's stable name.
    pub projection_name: String,
    /// Its checkpoint position (0 when it has none).
    pub checkpoint_position: u64,
    /// The store's last position.
    pub head_position: u64,
    /// Relevant events after the checkpoint.
    pub events_behind: u64,
    /// Age of the oldest relevant event after the checkpoint.
    pub oldest_unprocessed_age: Option<Duration>,
    /// Time since the checkpoint last moved.
    pub since_last_progress: Option<Duration>,
    /// Events applied since the last reset.
    pub events_processed: u64,
    /// What keeps committed events from the projection, if anything does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_back: Option<crate::store::ReadHold>,
}

impl LagMetrics {
    /// Whether the projection has caught up with every relevant event.
    pub fn is_caught_up(&self) -> bool {
        self.events_behind == 0
    }

    /// Builds the metrics from a checkpoint and the store's backlog, at `now`.
    pub fn compute(
        projection_name: &str,
        checkpoint: Option<&super::CheckpointData>,
        backlog: &crate::store::Backlog,
        now: DateTime<Utc>,
    ) -> Self {
        let age = |t: DateTime<Utc>| (now - t).to_std().unwrap_or(Duration::ZERO);
        Self {
            projection_name: projection_name.to_owned(),
            checkpoint_position: checkpoint.map_or(0, |c| c.position),
            head_position: backlog.head_position,
            events_behind: backlog.events,
            oldest_unprocessed_age: backlog.oldest_stored_at.map(age),
            since_last_progress: checkpoint.and_then(|c| c.last_processed_at).map(age),
            events_processed: checkpoint.map_or(0, |c| c.events_processed),
            held_back: backlog.held_back.clone(),
        }
    }
}
