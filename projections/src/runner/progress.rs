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
}

impl Progress {
    /// Progress from the checkpoint `position`.
    pub(super) fn from(position: Option<u64>) -> Self {
        Self {
            position,
            ..Self::default()
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
        }
        if applied {
            self.applied += 1;
            self.moved = true;
        }
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
