//! The `otel` feature: the runner's spans reach an OpenTelemetry exporter with their
//! attributes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{Balances, deposit, positioned};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use projections::ProjectionRunner;
use tracing_subscriber::prelude::*;
use uuid::Uuid;

#[tokio::test]
async fn runner_spans_are_exported_with_projection_event_and_attempts() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(projections::telemetry::layer().with_tracer(provider.tracer("test")));
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut runner = ProjectionRunner::new(Balances::default());
    let event = &positioned(vec![deposit(Uuid::new_v4(), 3)], 7)[0];
    runner.handle(event).await.unwrap();
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let handle = spans
        .iter()
        .find(|s| s.name == "projection.handle")
        .expect("handle span");
    let attribute = |key: &str| {
        handle
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    };
    assert_eq!(attribute("projection").as_deref(), Some("balances"));
    assert_eq!(attribute("event_type").as_deref(), Some("Deposited"));
    assert_eq!(attribute("event_id"), Some(event.event_id().to_string()));
    assert_eq!(attribute("position").as_deref(), Some("7"));
    assert_eq!(attribute("attempts").as_deref(), Some("1"));
    assert_eq!(attribute("outcome").as_deref(), Some("applied"));
    assert!(spans.iter().any(|s| s.name == "projection.handler"));
}
