//! Events: the [`Event`] trait, the [`Envelope`] that carries an event's metadata, the
//! type-erased [`AnyEvent`] that is decoded once and shared, and the [`EventRegistry`] that
//! decodes stored events by wire name.

mod any;
mod envelope;
mod metadata;
mod registry;
pub mod upcast;

pub use any::AnyEvent;
pub use envelope::Envelope;
#[doc(hidden)]
pub use envelope::{EventParam, EventsParam};
pub use metadata::EventMetadata;
pub(crate) use metadata::{EARLIEST_OCCURRED_AT_MICROS, to_microseconds};
pub use registry::{DecodeError, EventRegistration, EventRegistry, RegistryError};
pub use upcast::{Upcaster, UpcasterError};

use serde::{Serialize, de::DeserializeOwned};

/// A domain event payload.
///
/// Implement it with `#[derive(Event)]`, which also registers the type with the
/// [`EventRegistry`] so stored events decode to it with no registration call:
///
/// ```
/// use projections::Event;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, Serialize, Deserialize, Event)]
/// #[event(name = "order.created", aggregate = "Order", version = 2)]
/// struct OrderCreated {
///     customer_id: String,
/// }
///
/// assert_eq!(OrderCreated::EVENT_TYPE, "order.created");
/// assert_eq!(OrderCreated::AGGREGATE_TYPE, "Order");
/// assert_eq!(OrderCreated::EVENT_VERSION, 2);
/// ```
///
/// The wire name defaults to the type name, the aggregate type to the empty string, the
/// version to 1. An aggregate type names a stream category, stored with every event and
/// filtered on in SQL: `#[derive(Event)]` accepts an ASCII letter followed by ASCII letters,
/// digits or `_`, at most 63 characters (`"Order"`, `"order_line"`), and rejects anything else
/// at compile time.
///
/// **Forward compatibility:** decoding ignores fields that the Rust type does not declare, so a
/// reader built before a field was added still decodes newer events. A field added later must
/// carry `#[serde(default)]` (or be an `Option`) so that events stored before it still decode.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event",
    label = "not an event",
    note = "declare it with `#[derive(projections::Event)]` (plus `Serialize`, `Deserialize` and `Clone`)"
)]
pub trait Event: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// The wire name stored with each event and used to decode it.
    const EVENT_TYPE: &'static str;
    /// The aggregate type this event belongs to (for example `"Order"`).
    const AGGREGATE_TYPE: &'static str;
    /// The schema version of the payload.
    const EVENT_VERSION: u32;
}
