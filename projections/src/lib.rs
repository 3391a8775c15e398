#![doc = include_str!("../../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod backend;
pub mod bluegreen;
pub mod checkpoint;
#[cfg(feature = "cli")]
pub mod cli;
pub mod cluster;
pub mod coordinator;
pub mod dlq;
pub mod event;
pub mod failure;
#[cfg(feature = "http")]
pub mod http;
mod join;
pub mod memory;
pub mod metrics;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod projection;
pub mod registry;
pub mod retry;
pub mod runner;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod storage;
pub mod store;
#[cfg(feature = "otel")]
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod transactional;

pub use backend::Storage;
pub use checkpoint::{CheckpointData, CheckpointRepository, Halt, LagMetrics, StoppedAt};
pub use coordinator::ProjectionCoordinator;
pub use dlq::{DLQEntry, DLQRepository, DLQStats, DLQStatus};
pub use event::{
    AnyEvent, DecodeError, Envelope, Event, EventMetadata, EventRegistry, RegistryError,
};
pub use failure::FailureKind;
pub use memory::{InMemoryCheckpointRepository, InMemoryDLQRepository, InMemoryEventStore};
// What a user must know, at the root: the three kinds of projection and the handler's error.
// The rest of handling events is behind its module: `projection` (the connection a handler may
// take, handler results, the unregistered-event policy) and `registry` (the push-mode handlers
// of the `SubscriberRegistry`).
pub use projection::{DatabaseProjection, HandlerError, Projection, SyncProjection};
pub use projections_macros::Event;

/// Declares a projection from an impl block: its `#[handles(E)]` methods become the dispatch
/// table, checked at compile time; its `#[reset]` method clears the read model for a rebuild.
///
/// Arguments, all optional: `name = "..."` (the stable name of its checkpoint; default: the
/// type's name), `unregistered = ignore | warn | error` (what to do with an event of an
/// aggregate type it follows that it has no handler for; see the crate documentation), `sync`
/// (every handler is a plain `fn`).
///
/// ```
/// use projections::{Envelope, Event, projection};
///
/// #[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Event)]
/// #[event(aggregate = "Account")]
/// struct Deposited { cents: i64 }
///
/// #[derive(Default)]
/// struct Balance { cents: i64 }
///
/// #[projection(name = "balance", unregistered = warn)]
/// impl Balance {
///     #[handles(Deposited)]
///     async fn deposited(&mut self, event: &Envelope<Deposited>) {
///         self.cents += event.cents;
///     }
///
///     #[reset]
///     async fn clear(&mut self) {
///         self.cents = 0;
///     }
/// }
///
/// use projections::Projection;
/// assert_eq!(Balance::default().subscribed_to(), ["Deposited"]);
/// ```
pub use projections_macros::projection;

/// Inside a [`#[projection]`](macro@projection) impl block: makes the method the handler of event
/// type `E`.
///
/// The handler takes `&mut self`, then optionally the batch's connection
/// (`conn: &mut PgConnection`, for a database projection), then `event: &Envelope<E>`, and
/// returns `()` or `Result<(), impl Into<BoxError>>`. An error's kind decides what happens
/// ([`failure`]).
///
/// ```
/// # use projections::{Envelope, Event, projection};
/// # #[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Event)]
/// # struct Withdrawn { cents: i64 }
/// # #[derive(Default)] struct Balance { cents: i64 }
/// #[projection]
/// impl Balance {
///     #[handles(Withdrawn)]
///     async fn withdrawn(&mut self, event: &Envelope<Withdrawn>) -> Result<(), String> {
///         if event.cents > self.cents {
///             return Err(format!("overdrawn by {}", event.cents - self.cents));
///         }
///         self.cents -= event.cents;
///         Ok(())
///     }
/// }
/// ```
///
/// **Set-based**: a handler whose last parameter is `events: &[Envelope<E>]` takes each run
/// of consecutive `E` events of a batch in one call, in order; per-event and set-based
/// handlers mix in one projection. When the call fails, the runner finds the failing event
/// (see [`runner`], "Set-based handlers").
///
/// **Live-only**: `#[handles(E, live_only)]` runs for live events only, never while the
/// projection replays (its first start over a store that already holds events, a rebuild):
/// for side effects such as e-mails. See [`runner`], "Live-only handlers".
///
/// ```
/// # use projections::{Envelope, Event, projection};
/// # #[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Event)]
/// # struct Deposited { cents: i64 }
/// #[derive(Default)]
/// struct Ledger { cents: i64, receipts: Vec<i64> }
///
/// #[projection]
/// impl Ledger {
///     #[handles(Deposited)]
///     async fn deposited(&mut self, events: &[Envelope<Deposited>]) {
///         self.cents += events.iter().map(|e| e.cents).sum::<i64>();
///     }
/// }
///
/// #[derive(Default)]
/// struct Receipts(Vec<i64>);
///
/// #[projection]
/// impl Receipts {
///     #[handles(Deposited, live_only)]
///     async fn send_receipt(&mut self, event: &Envelope<Deposited>) {
///         self.0.push(event.cents); // a real one sends an e-mail
///     }
/// }
/// ```
///
/// Outside a `#[projection]` impl block it is a compile error.
pub use projections_macros::handles;

/// Inside a [`#[projection]`](macro@projection) impl block: makes the method the one that clears the
/// read model when the projection is rebuilt (`Runner::reset`, `rebuild_projection`).
///
/// It takes `&mut self`, and the connection for a database projection (the reset runs in the
/// transaction that deletes the checkpoint), and returns like a handler.
///
/// ```
/// # use projections::{Envelope, Event, projection};
/// # #[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Event)]
/// # struct Visited;
/// #[derive(Default)]
/// struct Visits(u64);
///
/// #[projection]
/// impl Visits {
///     #[handles(Visited)]
///     async fn visited(&mut self, _event: &Envelope<Visited>) { self.0 += 1; }
///
///     #[reset]
///     async fn clear(&mut self) { self.0 = 0; }
/// }
/// ```
///
/// Outside a `#[projection]` impl block it is a compile error.
pub use projections_macros::reset;

/// Registers a function that brings the stored payload of an event type from version `from`
/// to `from + 1`, so events written before the type changed still decode to it.
///
/// The event's current version is `#[event(version = N)]`; a stored event of an older version
/// goes through the upcasters from its version to `N`, in order, before it decodes, and its
/// envelope then says version `N`. (A type that declares no upcaster decodes every stored
/// version directly, as it always did: additive changes need none.) Two forms, mixed freely in
/// one chain:
///
/// - **JSON**: `fn(serde_json::Value) -> serde_json::Value` (or `-> Result<serde_json::Value,
///   E>`), for renamed or moved fields without keeping the old struct;
/// - **typed**: `fn(Old) -> New` (or `-> Result<New, E>`), where `Old` is the payload of
///   version `from` (`Deserialize`) and `New` that of `from + 1` (`Serialize`; the event type
///   itself for the last step).
///
/// The attribute registers the function at compile time, like `#[derive(Event)]`; reading a
/// version that is not older than the current one is a compile error. At start-up the
/// coordinator and every runner check the chains ([`EventRegistry::check_upcasters`]): a gap
/// or two upcasters of one version stop them before any event is read. A stored version with
/// no chain to the current one, or an upcaster that fails, is a [`DecodeError`] naming the
/// type and the versions, and the event goes through the failure policy like any event that
/// does not decode.
///
/// ```rust,standalone_crate
/// use projections::{Event, EventMetadata, EventRegistry, upcast};
/// use serde::{Deserialize, Serialize};
///
/// /// Version 3: the customer became a struct, and orders have a currency.
/// #[derive(Debug, Clone, Serialize, Deserialize, Event)]
/// #[event(aggregate = "Order", version = 3)]
/// struct OrderPlaced {
///     customer: Customer,
///     cents: i64,
///     currency: String,
/// }
///
/// #[derive(Debug, Clone, Serialize, Deserialize)]
/// struct Customer {
///     id: String,
/// }
///
/// /// Version 1 called the amount `total`: renamed in JSON, no struct kept.
/// #[upcast(OrderPlaced, from = 1)]
/// fn total_renamed(mut payload: serde_json::Value) -> serde_json::Value {
///     if let Some(total) = payload.get_mut("total").map(serde_json::Value::take) {
///         payload["cents"] = total;
///     }
///     payload
/// }
///
/// /// Version 2, kept as a struct: a customer id and an amount.
/// #[derive(Deserialize)]
/// struct OrderPlacedV2 {
///     customer_id: String,
///     cents: i64,
/// }
///
/// #[upcast(OrderPlaced, from = 2)]
/// fn customer_and_currency(old: OrderPlacedV2) -> OrderPlaced {
///     OrderPlaced {
///         customer: Customer { id: old.customer_id },
///         cents: old.cents,
///         currency: "EUR".into(),
///     }
/// }
///
/// let stored = serde_json::json!({ "customer_id": "ada", "total": 1200 });
/// let metadata = EventMetadata::new("OrderPlaced", 1, uuid::Uuid::nil(), "Order");
/// let event = EventRegistry::global().decode(metadata, &stored).unwrap();
/// let order = event.downcast::<OrderPlaced>().unwrap();
/// assert_eq!((order.customer.id.as_str(), order.cents), ("ada", 1200));
/// assert_eq!(order.metadata.event_version, 3);
/// ```
pub use projections_macros::upcast;
pub use registry::{ProjectionRegistry, SubscriberRegistry};
pub use retry::{
    ExponentialBackoffRetryPolicy, FilteredRetryPolicy, NoRetryPolicy, RetryConfig, RetryPolicy,
};
pub use runner::{FailurePolicy, ProjectionRunner};
pub use storage::StorageError;
pub use store::{EventStore, ExpectedVersion, StoredEvent};
/// What [`ProjectionCoordinator::run`] waits on to shut down.
pub use tokio_util::sync::CancellationToken;

#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use sqlx;
#[cfg(feature = "postgres")]
pub use sqlx::PgConnection;
#[cfg(feature = "sqlite")]
pub use sqlx::SqliteConnection;

/// What generated code names. Not a public API: it may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use crate::event::upcast::{json_step, typed_step};
    pub use crate::event::{EventParam, EventRegistration, EventsParam, Upcaster};
    pub use crate::projection::{HandlerInfo, IntoHandlerResult, UnregisteredEventPolicy};
    pub use inventory;
    pub use serde_json;

    /// The run handed to a set-based handler of `E`: copies of the envelopes, contiguous as a
    /// slice needs them. `None` when the run is empty or holds another type.
    pub fn run_of<E: crate::Event>(
        events: &[&crate::AnyEvent],
    ) -> ::core::option::Option<::std::vec::Vec<crate::Envelope<E>>> {
        if events.is_empty() {
            return None;
        }
        events.iter().map(|e| e.downcast::<E>().cloned()).collect()
    }

    /// Checks, where the user wrote the type, that it is an event.
    pub const fn assert_event<E: crate::Event>() {}

    /// Checks, where the user wrote the type, that it may be injected.
    pub const fn assert_injectable<C: crate::projection::Injectable + ?Sized>() {}

    /// Checks, where the user wrote the return type, that it is a handler result.
    pub const fn assert_handler_result<R: crate::projection::IntoHandlerResult>() {}
}
