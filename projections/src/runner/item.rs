use crate::event::AnyEvent;
use crate::store::{StoredEvent, UndecodableEvent};

/// Something a runner can take in a batch: a decoded event, or a stored event that may not
/// have decoded.
pub trait BatchItem: Sync {
    /// The decoded event, or why there is none.
    fn decoded(&self) -> Result<&AnyEvent, &UndecodableEvent>;
}

impl BatchItem for AnyEvent {
    #[inline]
    fn decoded(&self) -> Result<&AnyEvent, &UndecodableEvent> {
        Ok(self)
    }
}

impl BatchItem for StoredEvent {
    #[inline]
    fn decoded(&self) -> Result<&AnyEvent, &UndecodableEvent> {
        match self {
            StoredEvent::Event(event) => Ok(event),
            StoredEvent::Undecodable(raw) => Err(raw),
        }
    }
}
