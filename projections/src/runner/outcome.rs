use uuid::Uuid;

pub use crate::checkpoint::StoppedAt;
use crate::event::{RegistryError, UpcasterError};
use crate::failure::FailureKind;
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
    /// Its handler is live-only and the event is replayed (at or below the replay horizon):
    /// nothing ran, the checkpoint moved past it.
    LiveOnlyPassed,
    /// Of a tenant the projection is not limited to (see
    /// [`Runner::tenant`](super::Runner::tenant)): nothing ran, the checkpoint moved past it.
    OtherTenant,
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
    /// Events whose handler is live-only, passed over because they are replayed (at or below
    /// the replay horizon; see "Live-only handlers" in [`Runner`](super::Runner)).
    pub live_only_passed: u64,
    /// Events of tenants the projection is not limited to (see
    /// [`Runner::tenant`](super::Runner::tenant)), passed over.
    pub other_tenant: u64,
    /// Dead-letter entries written, in order.
    pub dead_lettered: Vec<i64>,
    /// Events the batch ended at without applying or dead-lettering them: the projection
    /// stopped before them, or the infrastructure failed (0 or 1 per batch).
    pub failed: u64,
    /// The checkpoint after the batch.
    pub checkpoint: Option<u64>,
}

impl BatchOutcome {
    /// The outcome of a batch of one event.
    pub fn single(&self) -> EventOutcome {
        if let Some(&entry_id) = self.dead_lettered.first() {
            EventOutcome::DeadLettered { entry_id }
        } else if self.applied > 0 {
            EventOutcome::Applied
        } else if self.not_subscribed > 0 {
            EventOutcome::NotSubscribed
        } else if self.live_only_passed > 0 {
            EventOutcome::LiveOnlyPassed
        } else if self.other_tenant > 0 {
            EventOutcome::OtherTenant
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
    /// The progress of a batch could not be committed. With one transaction per batch the
    /// batch rolled back and nothing of it was applied; with repositories the events were
    /// applied, this process will not apply them again, and their checkpoint is written with
    /// the next commit. Nothing was dead-lettered.
    #[error(
        "projection `{projection}` could not commit its progress up to position {position:?}: {source}"
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
        "projection `{projection}` gave up on event {event_id} ({handler_error}) and could not dead-letter it: {source}"
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
    /// The projection is paused and applies nothing until resumed.
    #[error("projection `{projection}` is paused: {reason}")]
    Paused {
        /// The projection.
        projection: String,
        /// Why, as given.
        reason: String,
    },
    /// A handler failed because the infrastructure did (a connection lost, the database
    /// restarting): the event is not at fault, nothing was dead-lettered, the checkpoint is
    /// before it. Try again later.
    #[error("projection `{projection}`: infrastructure failure, will try again: {source}")]
    Infrastructure {
        /// The projection.
        projection: String,
        /// The event being applied, if any.
        event_id: Option<Uuid>,
        /// The handler's error.
        #[source]
        source: HandlerError,
    },
    /// Reading or writing storage failed.
    #[error("projection `{projection}`: storage failed: {source}")]
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
    /// The projection's worker did not end by itself: it was aborted at the shutdown deadline
    /// with its batch in hand unfinished, or it panicked outside any handler.
    #[error("the worker of projection `{projection}` was aborted: {reason}")]
    Aborted {
        /// The projection.
        projection: String,
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
    /// Two event types of the program claim one wire name (the
    /// [global registry](crate::EventRegistry::global) does not
    /// [check](crate::EventRegistry::check)): stored events of that name would not decode,
    /// and an event of one type would reach the handler of the other and be ignored. The
    /// runner applies nothing (and resets and replays nothing) until every event type has a
    /// wire name of its own; nothing is recorded in storage.
    #[error("projection `{projection}` refuses to run: {source}")]
    AmbiguousEventType {
        /// The projection.
        projection: String,
        /// The contested wire name and the Rust types that claim it.
        #[source]
        source: RegistryError,
    },
    /// The stored checkpoint went back while the batch was in hand: the projection was reset
    /// elsewhere (a rebuild by another process, or of another partition of it). Nothing of the
    /// batch was applied; read again from the new checkpoint.
    #[error(
        "projection `{projection}` was reset elsewhere: its checkpoint went from {from} back to {to:?}"
    )]
    CheckpointMovedBack {
        /// The projection.
        projection: String,
        /// The checkpoint the batch was read after.
        from: u64,
        /// The checkpoint now.
        to: Option<u64>,
    },
    /// The projection belongs to another node of the cluster: what was asked (a rebuild, a
    /// replay) must be asked of its owner.
    #[error("projection `{projection}` is owned by {}: ask its owner", owner.as_deref().map_or_else(|| "no node right now".to_owned(), |o| format!("node `{o}`")))]
    NotOwner {
        /// The projection (or partition).
        projection: String,
        /// The node that owns it, as last seen.
        owner: Option<String>,
    },
    /// The upcasters of an event type are wrong (see
    /// [`EventRegistry::check_upcasters`](crate::EventRegistry::check_upcasters)): stored
    /// events of older versions could not be read. Like `AmbiguousEventType`, the runner
    /// applies nothing until they are fixed, and nothing is recorded in storage.
    #[error("projection `{projection}` refuses to run: {source}")]
    InvalidUpcasters {
        /// The projection.
        projection: String,
        /// What is wrong.
        #[source]
        source: UpcasterError,
    },
}

impl RunnerError {
    /// Whose fault it is: what a worker does next.
    /// - [`FailureKind::Infrastructure`]: wait (backing off) and try the batch again;
    /// - [`FailureKind::Setup`]: the projection cannot go on until its setup is fixed (a
    ///   storage failure of that kind, `AmbiguousEventType`), or it stopped (`Stopped`,
    ///   `Paused`);
    /// - [`FailureKind::Event`]: an operation on one event or entry failed (`Replay`, `Reset`).
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::Stopped { .. }
            | Self::Paused { .. }
            | Self::AmbiguousEventType { .. }
            | Self::InvalidUpcasters { .. } => FailureKind::Setup,
            Self::Infrastructure { .. } | Self::Aborted { .. } => FailureKind::Infrastructure,
            Self::Checkpoint { source, .. }
            | Self::DeadLetter { source, .. }
            | Self::Storage { source, .. } => source.kind(),
            Self::Replay { .. } | Self::Reset { .. } => FailureKind::Event,
            Self::NotOwner { .. } => FailureKind::Setup,
            Self::CheckpointMovedBack { .. } => FailureKind::Infrastructure,
        }
    }

    /// Whether this node lost the projection's lease to another node while the batch ran
    /// ([`StorageError::Fenced`]): nothing of the batch was committed.
    pub fn is_fenced(&self) -> bool {
        match self {
            Self::Checkpoint { source, .. }
            | Self::DeadLetter { source, .. }
            | Self::Storage { source, .. } => source.is_fenced(),
            _ => false,
        }
    }

    /// Whether the projection is halted (paused or stopped) after this error.
    pub fn is_halt(&self) -> bool {
        matches!(self, Self::Stopped { .. } | Self::Paused { .. })
    }
}
