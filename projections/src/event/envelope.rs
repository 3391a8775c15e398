use std::ops::Deref;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Event, EventMetadata};

/// A typed event: its payload and its [`EventMetadata`].
///
/// Handlers receive `&Envelope<E>`. Payload fields are reached through `Deref`
/// (`event.customer_id`), metadata through the accessors (`event.aggregate_id()`,
/// `event.occurred_at()`, `event.position()`) or the public `metadata` field.
///
/// ```
/// # use projections::{Envelope, Event};
/// # use serde::{Deserialize, Serialize};
/// #[derive(Clone, Serialize, Deserialize, Event)]
/// #[event(aggregate = "Order")]
/// struct OrderShipped { tracking_number: String }
///
/// let order = uuid::Uuid::new_v4();
/// let shipped = Envelope::new(order, OrderShipped { tracking_number: "TRK-1".into() })
///     .with_actor("warehouse")
///     .with_metadata("source", "scanner");
/// assert_eq!(shipped.tracking_number, "TRK-1");
/// assert_eq!(shipped.aggregate_id(), order);
/// assert_eq!(shipped.event_type(), "OrderShipped");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<E> {
    /// The event's metadata.
    pub metadata: EventMetadata,
    /// The event's payload.
    pub payload: E,
}

impl<E: Event> Envelope<E> {
    /// A new event on `aggregate_id`: fresh event and correlation ids, now as its time.
    pub fn new(aggregate_id: Uuid, payload: E) -> Self {
        Self {
            metadata: EventMetadata::new(
                E::EVENT_TYPE,
                E::EVENT_VERSION,
                aggregate_id,
                E::AGGREGATE_TYPE,
            ),
            payload,
        }
    }
}

impl<E> Envelope<E> {
    /// Builds an envelope from parts, for example when decoding a stored event.
    pub fn from_parts(metadata: EventMetadata, payload: E) -> Self {
        Self { metadata, payload }
    }

    /// Marks this event as caused by `cause`: takes its event id as causation id and its
    /// correlation id.
    #[must_use]
    pub fn with_causation<C>(mut self, cause: &Envelope<C>) -> Self {
        self.metadata.causation_id = Some(cause.metadata.event_id);
        self.metadata.correlation_id = cause.metadata.correlation_id;
        self
    }

    /// Adds (or replaces) one metadata entry.
    #[must_use]
    pub fn with_metadata(
        mut self,
        key: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> Self {
        self.metadata.metadata.insert(key.into(), value.into());
        self
    }

    /// Sets the aggregate version this event brings its aggregate to.
    #[must_use]
    pub fn with_aggregate_version(mut self, version: u64) -> Self {
        self.metadata.aggregate_version = version;
        self
    }

    /// Sets the tenant.
    #[must_use]
    pub fn with_tenant(mut self, tenant_id: Uuid) -> Self {
        self.metadata.tenant_id = Some(tenant_id);
        self
    }

    /// Sets who caused the event.
    #[must_use]
    pub fn with_actor(mut self, actor_id: impl Into<String>) -> Self {
        self.metadata.actor_id = Some(actor_id.into());
        self
    }

    /// Sets when the event happened, truncated to the microsecond as every store keeps it
    /// (see [`EventMetadata::occurred_at`]), so that `occurred_at()` returns the same time
    /// before and after a round trip through any store.
    #[must_use]
    pub fn with_occurred_at(mut self, occurred_at: DateTime<Utc>) -> Self {
        self.metadata.occurred_at = super::metadata::to_microseconds(occurred_at);
        self
    }

    /// The event's unique id.
    pub fn event_id(&self) -> Uuid {
        self.metadata.event_id
    }

    /// The event's wire name.
    pub fn event_type(&self) -> &str {
        &self.metadata.event_type
    }

    /// The aggregate this event belongs to.
    pub fn aggregate_id(&self) -> Uuid {
        self.metadata.aggregate_id
    }

    /// The aggregate's version after this event.
    pub fn aggregate_version(&self) -> u64 {
        self.metadata.aggregate_version
    }

    /// When the event happened.
    pub fn occurred_at(&self) -> DateTime<Utc> {
        self.metadata.occurred_at
    }

    /// The global position, once stored.
    pub fn position(&self) -> Option<u64> {
        self.metadata.position
    }

    /// Whether `cause` caused this event.
    pub fn is_caused_by<C>(&self, cause: &Envelope<C>) -> bool {
        self.metadata.causation_id == Some(cause.metadata.event_id)
    }

    /// Whether both events belong to one correlation.
    pub fn is_correlated_with<C>(&self, other: &Envelope<C>) -> bool {
        self.metadata.correlation_id == other.metadata.correlation_id
    }
}

impl<E> Deref for Envelope<E> {
    type Target = E;

    fn deref(&self) -> &E {
        &self.payload
    }
}

/// The event parameter of a handler of `E`: `&Envelope<E>`, however it is spelled (an alias, a
/// renamed import). `#[projection]` converts the envelope to the parameter's type as written, so
/// a wrong type is reported once, where the user wrote it. Not a public API.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "a handler of `{E}` takes `&Envelope<{E}>` as its event parameter, not `{Self}`",
    label = "expected `&Envelope<{E}>`",
    note = "the event parameter is the event with its metadata, `event: &Envelope<{E}>`, for the `{E}` of `#[handles({E})]`"
)]
pub trait EventParam<'e, E> {
    /// The envelope as the parameter's type, which is the same type.
    fn from_envelope(envelope: &'e Envelope<E>) -> Self;
}

// A blanket impl rather than one for `&Envelope<E>`: a mismatch is then reported with the
// message above alone, without "but `EventParam<'_, OtherEvent>` is implemented for it".
#[diagnostic::do_not_recommend]
impl<'e, E: 'e, P: SameType<&'e Envelope<E>>> EventParam<'e, E> for P {
    #[inline(always)]
    fn from_envelope(envelope: &'e Envelope<E>) -> Self {
        P::same(envelope)
    }
}

/// The events parameter of a set-based handler of `E`: `&[Envelope<E>]`, however it is spelled.
/// Like [`EventParam`], checked where the user wrote the type. Not a public API.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "a set-based handler of `{E}` takes `&[Envelope<{E}>]` as its events parameter, not `{Self}`",
    label = "expected `&[Envelope<{E}>]`",
    note = "a set-based handler takes the run of consecutive `{E}` events of a batch, `events: &[Envelope<{E}>]`, for the `{E}` of `#[handles({E})]`"
)]
pub trait EventsParam<'e, E> {
    /// The envelopes as the parameter's type, which is the same type.
    fn from_envelopes(envelopes: &'e [Envelope<E>]) -> Self;
}

#[diagnostic::do_not_recommend]
impl<'e, E: 'e, P: SameType<&'e [Envelope<E>]>> EventsParam<'e, E> for P {
    #[inline(always)]
    fn from_envelopes(envelopes: &'e [Envelope<E>]) -> Self {
        P::same(envelopes)
    }
}

/// Implemented by `T` for `T` alone. Public in a private module: nameable only here.
pub trait SameType<T> {
    /// `value`, as `Self`, which is `T`.
    fn same(value: T) -> Self;
}

impl<T> SameType<T> for T {
    #[inline(always)]
    fn same(value: T) -> T {
        value
    }
}
