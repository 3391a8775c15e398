//! What a runner does with one item of a batch, decided from the item, the checkpoint and the
//! subscription list. Shared by every runner so they cannot disagree.

use uuid::Uuid;

use super::BatchItem;
use crate::event::{AnyEvent, EventRegistry};
use crate::store::UndecodableEvent;

pub(crate) enum Step<'a> {
    /// At or below the checkpoint: nothing runs, nothing moves.
    Skip,
    /// Not this projection's business: the checkpoint moves past it.
    PassOver {
        position: Option<u64>,
        event_id: Uuid,
        event_type: &'a str,
    },
    /// Run the handler.
    Apply(&'a AnyEvent),
    /// A stored event that does not decode and may concern this projection.
    Undecodable(&'a UndecodableEvent),
}

pub(crate) fn classify<'a, T: BatchItem>(
    item: &'a T,
    checkpoint: Option<u64>,
    subscribed: &[&'static str],
) -> Step<'a> {
    let (position, event_type) = match item.decoded() {
        Ok(event) => (event.position(), event.event_type()),
        Err(raw) => (Some(raw.position), raw.event_type.as_str()),
    };
    if let (Some(position), Some(checkpoint)) = (position, checkpoint)
        && position <= checkpoint
    {
        return Step::Skip;
    }
    let is_subscribed = is_listed(subscribed, event_type);
    match item.decoded() {
        Ok(event) if is_subscribed => Step::Apply(event),
        Ok(event) => Step::PassOver {
            position,
            event_id: event.event_id(),
            event_type,
        },
        // A payload that does not decode for a type this projection does not handle is not
        // its business; an unknown type might be, so it is never passed over silently.
        Err(raw) if !is_subscribed && EventRegistry::global().contains(&raw.event_type) => {
            Step::PassOver {
                position,
                event_id: raw.event_id,
                event_type,
            }
        }
        Err(raw) => Step::Undecodable(raw),
    }
}

/// Whether `event_type` is in `list`. Wire names usually come from the same constant, so the
/// pointer is compared before the text.
#[inline]
pub(crate) fn is_listed(list: &[&'static str], event_type: &str) -> bool {
    list.iter()
        .any(|listed| std::ptr::eq(*listed, event_type) || *listed == event_type)
}

/// A stored event's payload does not decode.
#[derive(Debug, thiserror::Error)]
#[error("stored event does not decode: {0}")]
pub(crate) struct DecodeFailure(pub(crate) String);

/// The whole event as JSON for a dead-letter entry, even when the payload will not serialise.
pub(crate) fn event_data(event: &AnyEvent) -> serde_json::Value {
    event.to_json().unwrap_or_else(|e| {
        serde_json::json!({ "metadata": event.metadata(), "unserialisable_payload": e.to_string() })
    })
}
