use std::any::{Any, TypeId};
use std::fmt;
use std::sync::Arc;

use uuid::Uuid;

use super::{Envelope, Event, EventMetadata};

/// The object-safe face of an [`Envelope`] of any event type.
trait ErasedEnvelope: Any + Send + Sync {
    fn metadata(&self) -> &EventMetadata;
    fn metadata_mut(&mut self) -> &mut EventMetadata;
    fn payload_json(&self) -> Result<serde_json::Value, serde_json::Error>;
    fn payload_type_name(&self) -> &'static str;
    fn clone_arc(&self) -> Arc<dyn ErasedEnvelope>;
}

impl<E: Event> ErasedEnvelope for Envelope<E> {
    fn metadata(&self) -> &EventMetadata {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut EventMetadata {
        &mut self.metadata
    }

    fn payload_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::to_value(&self.payload)
    }

    fn payload_type_name(&self) -> &'static str {
        std::any::type_name::<E>()
    }

    fn clone_arc(&self) -> Arc<dyn ErasedEnvelope> {
        Arc::new(self.clone())
    }
}

/// An event of any type, decoded once and shared by every projection.
///
/// Cloning is a reference-count increment. Generated dispatch recovers the typed
/// [`Envelope`] with [`AnyEvent::downcast`].
///
/// ```
/// # use projections::{AnyEvent, Envelope, Event};
/// # use serde::{Deserialize, Serialize};
/// #[derive(Clone, Serialize, Deserialize, Event)]
/// struct Pinged { n: u32 }
///
/// let event = AnyEvent::new(Envelope::new(uuid::Uuid::nil(), Pinged { n: 7 }));
/// assert_eq!(event.event_type(), "Pinged");
/// assert_eq!(event.downcast::<Pinged>().map(|e| e.n), Some(7));
/// ```
#[derive(Clone)]
pub struct AnyEvent {
    // Cached beside the shared envelope so that the hot path (routing, skipping, checkpoint)
    // reads inline values instead of calling through the vtable.
    type_id: TypeId,
    event_type: &'static str,
    position: Option<u64>,
    event_id: Uuid,
    inner: Arc<dyn ErasedEnvelope>,
}

impl AnyEvent {
    /// Erases the type of `envelope`.
    ///
    /// Routing is by the payload's type: [`AnyEvent::event_type`] is `E::EVENT_TYPE`, whatever
    /// string the metadata carries.
    pub fn new<E: Event>(envelope: Envelope<E>) -> Self {
        Self {
            type_id: TypeId::of::<Envelope<E>>(),
            event_type: E::EVENT_TYPE,
            position: envelope.metadata.position,
            event_id: envelope.metadata.event_id,
            inner: Arc::new(envelope),
        }
    }

    /// The typed envelope, if this event is an `E`.
    #[inline]
    pub fn downcast<E: Event>(&self) -> Option<&Envelope<E>> {
        if self.type_id == TypeId::of::<Envelope<E>>() {
            let any: &dyn Any = &*self.inner;
            any.downcast_ref::<Envelope<E>>()
        } else {
            None
        }
    }

    /// Whether this event is an `E`.
    #[inline]
    pub fn is<E: Event>(&self) -> bool {
        self.type_id == TypeId::of::<Envelope<E>>()
    }

    /// The event's metadata.
    #[inline]
    pub fn metadata(&self) -> &EventMetadata {
        self.inner.metadata()
    }

    /// The wire name of the payload's type.
    #[inline]
    pub fn event_type(&self) -> &'static str {
        self.event_type
    }

    /// The event's id.
    #[inline]
    pub fn event_id(&self) -> Uuid {
        self.event_id
    }

    /// The global position, once stored.
    #[inline]
    pub fn position(&self) -> Option<u64> {
        self.position
    }

    /// The Rust type name of the payload, for diagnostics.
    pub fn payload_type_name(&self) -> &'static str {
        self.inner.payload_type_name()
    }

    /// The payload as JSON.
    pub fn payload_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        self.inner.payload_json()
    }

    /// The whole event, metadata and payload, as JSON (`{"metadata": ..., "payload": ...}`),
    /// the form kept in dead-letter entries.
    pub fn to_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        Ok(serde_json::json!({
            "metadata": serde_json::to_value(self.metadata())?,
            "payload": self.payload_json()?,
        }))
    }

    /// Changes the metadata, copying the event only if it is shared.
    pub fn map_metadata(mut self, change: impl FnOnce(&mut EventMetadata)) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(unique) => change(unique.metadata_mut()),
            None => {
                let mut copy = self.inner.clone_arc();
                if let Some(unique) = Arc::get_mut(&mut copy) {
                    change(unique.metadata_mut());
                }
                self.inner = copy;
            }
        }
        let metadata = self.inner.metadata();
        self.position = metadata.position;
        self.event_id = metadata.event_id;
        self
    }
}

impl<E: Event> From<Envelope<E>> for AnyEvent {
    fn from(envelope: Envelope<E>) -> Self {
        Self::new(envelope)
    }
}

impl fmt::Debug for AnyEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let meta = self.metadata();
        f.debug_struct("AnyEvent")
            .field("event_type", &meta.event_type)
            .field("event_id", &meta.event_id)
            .field("aggregate_id", &meta.aggregate_id)
            .field("position", &meta.position)
            .finish_non_exhaustive()
    }
}
