use uuid::Uuid;

use crate::checkpoint::CheckpointUpdate;

/// Progress inside one commit: where the checkpoint goes and how many events were applied.
#[derive(Default)]
pub(super) struct Progress {
    pub(super) position: Option<u64>,
    event_id: Option<Uuid>,
    /// The type of the event at `position`; a buffer reused from event to event, so moving
    /// the checkpoint allocates nothing per event.
    event_type: String,
    applied: u64,
    moved: bool,
    /// Whether the last event moved past is the one at `position` (`event_id`): a flag, so
    /// moving past a stored event writes one byte more than before, not an id.
    last_is_checkpoint: bool,
    /// Otherwise, the id of the last event moved past (one without a position, or the last
    /// one before this progress).
    last_other: Option<Uuid>,
}

impl Progress {
    /// Progress from the checkpoint `position`, the last event moved past being `last_event`.
    pub(super) fn from(position: Option<u64>, last_event: Option<Uuid>) -> Self {
        Self {
            position,
            last_other: last_event,
            ..Self::default()
        }
    }

    /// The id of the last event moved past, with a position or not.
    #[inline]
    pub(super) fn last_event(&self) -> Option<Uuid> {
        if self.last_is_checkpoint {
            self.event_id
        } else {
            self.last_other
        }
    }

    /// Moves past an event (applied or not); positions never go backwards.
    #[inline]
    pub(super) fn advance(
        &mut self,
        position: Option<u64>,
        event_id: Uuid,
        event_type: &str,
        applied: bool,
    ) {
        if let Some(position) = position
            && self.position.is_none_or(|p| position > p)
        {
            self.position = Some(position);
            self.event_id = Some(event_id);
            self.event_type.clear();
            self.event_type.push_str(event_type);
            self.moved = true;
            self.last_is_checkpoint = true;
        } else {
            self.last_other = Some(event_id);
            self.last_is_checkpoint = false;
        }
        if applied {
            self.applied += 1;
            self.moved = true;
        }
    }

    /// Moves the position on to `position`, where no event is (a read got there without
    /// finding another event for the projection); never backwards. The last event moved past
    /// stays what it was.
    pub(super) fn reach(&mut self, position: u64) {
        if self.position.is_some_and(|p| position <= p) {
            return;
        }
        if self.last_is_checkpoint {
            self.last_other = self.event_id;
            self.last_is_checkpoint = false;
        }
        self.position = Some(position);
        self.event_id = None;
        self.event_type.clear();
        self.moved = true;
    }

    /// The checkpoint write this progress needs, if any.
    pub(super) fn update(&self) -> Option<CheckpointUpdate> {
        if !self.moved {
            return None;
        }
        let mut update =
            CheckpointUpdate::new(self.position.unwrap_or(0)).with_events_applied(self.applied);
        if let Some(id) = self.event_id {
            update = update.with_event(id, self.event_type.clone());
        }
        Some(update)
    }
}
