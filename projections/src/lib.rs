#![doc = include_str!("../../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod checkpoint;
pub mod coordinator;
pub mod dlq;
pub mod event;
pub mod failure;
mod join;
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod projection;
pub mod registry;
pub mod retry;
pub mod runner;
pub mod storage;
pub mod store;
#[cfg(feature = "otel")]
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod transactional;

pub use checkpoint::{CheckpointData, CheckpointRepository, Halt, LagMetrics, StoppedAt};
pub use coordinator::ProjectionCoordinator;
pub use dlq::{DLQEntry, DLQRepository, DLQStats, DLQStatus};
pub use event::{
    AnyEvent, DecodeError, Envelope, Event, EventMetadata, EventRegistry, RegistryError,
};
pub use failure::FailureKind;
pub use memory::{InMemoryCheckpointRepository, InMemoryDLQRepository, InMemoryEventStore};
pub use projection::{
    AsyncEventHandler, BoxError, DatabaseProjection, EventHandler, EventSubscriber, HandlerError,
    HandlerInfo, Injectable, IntoHandlerResult, NoConnection, Projection, SyncEventHandler,
    SyncProjection, UnhandledEventError, UnregisteredEventPolicy,
};
pub use projections_macros::{Event, handles, projection};
pub use registry::{ProjectionRegistry, SubscriberRegistry};
pub use retry::{
    ExponentialBackoffRetryPolicy, FilteredRetryPolicy, NoRetryPolicy, RetryConfig, RetryPolicy,
};
pub use runner::{FailurePolicy, ProjectionRunner};
pub use storage::StorageError;
pub use store::{EventStore, ExpectedVersion, StoredEvent};
/// What [`ProjectionCoordinator::run`] waits on to shut down.
pub use tokio_util::sync::CancellationToken;

#[cfg(feature = "postgres")]
pub use sqlx::{self, PgConnection};

/// What generated code names. Not a public API: it may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use crate::event::{EventParam, EventRegistration};
    pub use crate::projection::IntoHandlerResult;
    pub use inventory;

    /// Checks, where the user wrote the type, that it is an event.
    pub const fn assert_event<E: crate::Event>() {}

    /// Checks, where the user wrote the type, that it may be injected.
    pub const fn assert_injectable<C: crate::Injectable + ?Sized>() {}

    /// Checks, where the user wrote the return type, that it is a handler result.
    pub const fn assert_handler_result<R: crate::IntoHandlerResult>() {}
}
