//! OpenTelemetry export of the crate's `tracing` spans (cargo feature `otel`).
//!
//! The runtime opens these spans (when tracing is on, the default):
//!
//! | span | where | fields |
//! |---|---|---|
//! | `projection.handle` | one event in a runner | `projection`, `event_type`, `event_id`, `position`, `attempts`, `outcome` |
//! | `projection.handler` | one attempt of the handler | `attempt` |
//! | `projection.registry.dispatch` | a registry fan-out | `event_type`, `event_id`, `position` or `event_count` |
//! | `projection.coordinate` | one coordinator pass | `projections` |
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
