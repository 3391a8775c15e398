//! OpenTelemetry export of the crate's `tracing` spans (cargo feature `otel`).
//!
//! The runtime opens these spans (when tracing is on, the default):
//!
//! | span | level | where | fields |
//! |---|---|---|---|
//! | `projection.worker` | INFO | a coordinator's worker, for its life | `projection` |
//! | `projection.coordinate` | INFO | one coordinator pass (`catch_up`) | `projections` |
//! | `projection.batch` | INFO | one batch in a runner | `projection`, `events`, `applied`, `skipped`, `not_subscribed`, `other_tenant`, `dead_lettered`, `failed`, `checkpoint` (after the batch), `checkpoint_written`, `error` |
//! | `projection.handle` | DEBUG | one event in a runner | `projection`, `event_type`, `event_id`, `position`, `handler` (the `#[handles]` method), `attempts`, `outcome` |
//! | `projection.handler` | DEBUG | one attempt of the handler | `handler`, `attempt` |
//! | `projection.handle_set` | DEBUG | one call of a set-based handler | `projection`, `event_type`, `events`, `first_position`, `last_position` |
//! | `projection.registry.dispatch` | DEBUG | a registry fan-out | `event_type`, `event_id`, `position` or `event_count` |
//!
//! A service that records spans at INFO gets one span per batch, none per event. In push
//! mode (`ProjectionRegistry::dispatch`) each dispatch is a batch of the events handed in.
//!
//! To export them, add [`layer`] to your subscriber with your tracer:
//!
//! ```ignore
//! use tracing_subscriber::prelude::*;
//! let tracer = my_tracer_provider.tracer("my-service");
//! tracing_subscriber::registry()
//!     .with(projections::telemetry::layer().with_tracer(tracer))
//!     .init();
//! ```

pub use tracing_opentelemetry::{OpenTelemetryLayer, layer};
