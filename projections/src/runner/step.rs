//! What a runner does with one item of a batch, decided from the item, the checkpoint and the
//! subscription list. Shared by every runner so they cannot disagree.

use uuid::Uuid;

use super::BatchItem;
use super::partition::Partition;
use super::progress::Progress;
use crate::event::{AnyEvent, EventRegistry};
use crate::store::{TenantFilter, UndecodableEvent, stored_tenant};

pub(crate) enum Step<'a> {
    /// At or below the checkpoint, or (without a position) the event the runner last moved
    /// past: nothing runs, nothing moves.
    Skip,
    /// Not this projection's business: the checkpoint moves past it.
    PassOver {
        position: Option<u64>,
        event_id: Uuid,
        event_type: &'a str,
    },
    /// Of a tenant the projection is not limited to: the checkpoint moves past it.
    OtherTenant {
        position: Option<u64>,
        event_id: Uuid,
        event_type: &'a str,
    },
    /// Run the handler.
    Apply(&'a AnyEvent),
    /// Of a type the projection has no handler for, while it follows some aggregate types:
    /// its unregistered-event policy decides if the event is of one of them (see
    /// [`follows`]), else it is passed over.
    NotHandled(&'a AnyEvent),
    /// A stored event that does not decode and may concern this projection.
    Undecodable(&'a UndecodableEvent),
}

/// Whether the projection, following the aggregate types `followed`, meets its policy for
/// `event`, which it has no handler for (and whose type is not among those it already let
/// pass, `passed_over`).
#[cold]
pub(super) fn follows(followed: &[String], passed_over: &[&'static str], event: &AnyEvent) -> bool {
    if is_listed(passed_over, event.event_type()) {
        return false;
    }
    let aggregate = event.metadata().aggregate_type.as_str();
    // An event with no aggregate type belongs to no stream anyone follows.
    !aggregate.is_empty() && followed.iter().any(|followed| followed == aggregate)
}

/// Who a projection is: the types it handles, whether it follows aggregate types, the
/// tenants it is limited to, the partition it applies if it is partitioned.
#[derive(Clone, Copy)]
pub(super) struct Scope<'a> {
    pub(super) subscribed: &'a [&'static str],
    pub(super) following: bool,
    pub(super) tenant: &'a TenantFilter,
    pub(super) partition: Option<Partition>,
}

/// What to do with `item`, after `progress`, for a projection of `scope`.
#[inline]
pub(super) fn classify<'a, T: BatchItem>(
    item: &'a T,
    progress: &Progress,
    scope: Scope<'_>,
) -> Step<'a> {
    match item.decoded() {
        Ok(event) => classify_event(event, progress, scope),
        Err(raw) => classify_undecodable(raw, progress.position, scope),
    }
}

#[inline]
fn classify_event<'a>(event: &'a AnyEvent, progress: &Progress, scope: Scope<'_>) -> Step<'a> {
    let Scope {
        subscribed,
        following,
        tenant,
        partition,
    } = scope;
    let done = match event.position() {
        Some(position) => progress
            .position
            .is_some_and(|checkpoint| position <= checkpoint),
        // Nothing to compare with the checkpoint: only the immediate repeat is recognised.
        None => progress.last_event() == Some(event.event_id()),
    };
    if done {
        Step::Skip
    } else if partition.is_some_and(|p| !p.contains(event.metadata().aggregate_id)) {
        // Another partition's aggregate.
        Step::PassOver {
            position: event.position(),
            event_id: event.event_id(),
            event_type: event.event_type(),
        }
    } else if !tenant.admits(event.metadata().tenant_id) {
        Step::OtherTenant {
            position: event.position(),
            event_id: event.event_id(),
            event_type: event.event_type(),
        }
    } else if is_listed(subscribed, event.event_type()) {
        Step::Apply(event)
    } else if following {
        Step::NotHandled(event)
    } else {
        Step::PassOver {
            position: event.position(),
            event_id: event.event_id(),
            event_type: event.event_type(),
        }
    }
}

fn classify_undecodable<'a>(
    raw: &'a UndecodableEvent,
    checkpoint: Option<u64>,
    scope: Scope<'_>,
) -> Step<'a> {
    if checkpoint.is_some_and(|checkpoint| raw.position <= checkpoint) {
        return Step::Skip;
    }
    // A tenant that cannot be read from the stored row is not passed over.
    if stored_tenant(raw).is_some_and(|tenant| !scope.tenant.admits(tenant)) {
        return Step::OtherTenant {
            position: Some(raw.position),
            event_id: raw.event_id,
            event_type: &raw.event_type,
        };
    }
    let subscribed = scope.subscribed;
    // A payload that does not decode for a type this projection does not handle is not its
    // business; an unknown type might be, so it is never passed over silently.
    if !is_listed(subscribed, &raw.event_type) && EventRegistry::global().contains(&raw.event_type)
    {
        Step::PassOver {
            position: Some(raw.position),
            event_id: raw.event_id,
            event_type: &raw.event_type,
        }
    } else {
        Step::Undecodable(raw)
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
