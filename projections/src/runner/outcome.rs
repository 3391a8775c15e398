use uuid::Uuid;

pub use crate::checkpoint::StoppedAt;
use crate::projection::HandlerError;
use crate::storage::StorageError;

/// What the runner did with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome {
    /// The handler ran and succeeded.
    Applied,
    /// The event is at or below the checkpoint: nothing ran (idempotent redelivery).
    Skipped,
    /// The projection does not subscribe to the event's type: nothing ran, the checkpoint
    /// moved past it.
    NotSubscribed,
    /// The retry policy gave up; the event is in the dead-letter queue under `entry_id` and
    /// the checkpoint moved past it.
    DeadLettered {
        /// The dead-letter entry.
        entry_id: i64,
    },
}

/// What the runner did with a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchOutcome {
    /// Events whose handler succeeded.
    pub applied: u64,
    /// Events at or below the checkpoint.
    pub skipped: u64,
    /// Events of types the projection does not subscribe to.
    pub not_subscribed: u64,
    /// Dead-letter entries written, in order.
    pub dead_lettered: Vec<i64>,
    /// The checkpoint after the batch.
    pub checkpoint: Option<u64>,
}

impl BatchOutcome {
    pub(crate) fn record(&mut self, outcome: EventOutcome) {
        match outcome {
            EventOutcome::Applied => self.applied += 1,
            EventOutcome::Skipped => self.skipped += 1,
            EventOutcome::NotSubscribed => self.not_subscribed += 1,
            EventOutcome::DeadLettered { entry_id } => self.dead_lettered.push(entry_id),
        }
    }

    /// The outcome of a batch of one event.
    pub fn single(&self) -> EventOutcome {
        if let Some(&entry_id) = self.dead_lettered.first() {
            EventOutcome::DeadLettered { entry_id }
        } else if self.applied > 0 {
            EventOutcome::Applied
        } else if self.not_subscribed > 0 {
            EventOutcome::NotSubscribed
        } else {
            EventOutcome::Skipped
        }
    }
}

/// Why a runner did not finish a batch. Every variant leaves the checkpoint before the first
/// event whose effect is not recorded, so nothing is skipped silently.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunnerError {
    /// The projection is stopped (stop policy) and applies nothing until resumed.
    #[error("projection `{projection}` is stopped: {at}")]
    Stopped {
        /// The projection.
        projection: String,
        /// Where and why.
        at: StoppedAt,
        /// The error that stopped it, when this call is the one that stopped it.
        #[source]
        source: Option<HandlerError>,
    },
    /// Events were applied but the checkpoint could not be written; the handler is not run
    /// again and nothing was dead-lettered.
    #[error(
        "projection `{projection}` applied events up to position {position:?} but could not record its checkpoint"
    )]
    Checkpoint {
        /// The projection.
        projection: String,
        /// The position it could not record.
        position: Option<u64>,
        /// The storage error.
        #[source]
        source: StorageError,
    },
    /// The retry policy gave up on an event and the dead-letter write failed; the checkpoint
    /// stays before the event.
    #[error(
        "projection `{projection}` gave up on event {event_id} ({handler_error}) and could not dead-letter it"
    )]
    DeadLetter {
        /// The projection.
        projection: String,
        /// The event.
        event_id: Uuid,
        /// The handler's error, as text.
        handler_error: String,
        /// The storage error.
        #[source]
        source: StorageError,
    },
    /// Reading or writing storage failed.
    #[error("projection `{projection}`: storage failed")]
    Storage {
        /// The projection.
        projection: String,
        /// The storage error.
        #[source]
        source: StorageError,
    },
    /// A dead-letter entry could not be replayed.
    #[error(
        "dead-letter entry {entry_id} cannot be replayed by projection `{projection}`: {reason}"
    )]
    Replay {
        /// The projection.
        projection: String,
        /// The entry.
        entry_id: i64,
        /// Why.
        reason: String,
    },
    /// The handler failed during a reset.
    #[error("projection `{projection}` could not reset its read model")]
    Reset {
        /// The projection.
        projection: String,
        /// The handler's error.
        #[source]
        source: HandlerError,
    },
}
