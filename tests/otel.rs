//! The `otel` feature: the runner's spans reach an OpenTelemetry exporter with their
//! attributes; per-event spans are at DEBUG, the batch span at INFO.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{Balances, deposit, positioned};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use projections::ProjectionRunner;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;
use uuid::Uuid;

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

#[tokio::test]
async fn runner_spans_are_exported_with_projection_event_handler_and_batch() {
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
    // Again: at the checkpoint, skipped; nothing to write.
    runner.handle(event).await.unwrap();
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let handles = named(&spans, "projection.handle");
    assert_eq!(handles.len(), 1, "one event applied, one skipped");
    let handle = handles[0];
    assert_eq!(attribute(handle, "projection").as_deref(), Some("balances"));
    assert_eq!(
        attribute(handle, "event_type").as_deref(),
        Some("Deposited")
    );
    assert_eq!(
        attribute(handle, "event_id"),
        Some(event.event_id().to_string())
    );
    assert_eq!(attribute(handle, "position").as_deref(), Some("7"));
    assert_eq!(attribute(handle, "handler").as_deref(), Some("deposited"));
    assert_eq!(attribute(handle, "attempts").as_deref(), Some("1"));
    assert_eq!(attribute(handle, "outcome").as_deref(), Some("applied"));

    let handler = named(&spans, "projection.handler");
    assert_eq!(handler.len(), 1);
    assert_eq!(
        attribute(handler[0], "handler").as_deref(),
        Some("deposited")
    );
    assert_eq!(attribute(handler[0], "attempt").as_deref(), Some("1"));
    assert_eq!(handler[0].parent_span_id, handle.span_context.span_id());

    let batches = named(&spans, "projection.batch");
    assert_eq!(batches.len(), 2);
    let (applied, skipped) = (batches[0], batches[1]);
    assert_eq!(handle.parent_span_id, applied.span_context.span_id());
    for (key, value) in [
        ("projection", "balances"),
        ("events", "1"),
        ("applied", "1"),
        ("skipped", "0"),
        ("dead_lettered", "0"),
        ("failed", "0"),
        ("checkpoint", "7"),
        ("checkpoint_written", "true"),
    ] {
        assert_eq!(attribute(applied, key).as_deref(), Some(value), "{key}");
    }
    for (key, value) in [
        ("events", "1"),
        ("applied", "0"),
        ("skipped", "1"),
        ("checkpoint", "7"),
        ("checkpoint_written", "false"),
    ] {
        assert_eq!(attribute(skipped, key).as_deref(), Some(value), "{key}");
    }
    assert_eq!(attribute(applied, "error"), None);
}

#[tokio::test]
async fn at_info_only_the_batch_span_is_recorded() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let layer = projections::telemetry::layer()
        .with_tracer(provider.tracer("test"))
        .with_filter(LevelFilter::INFO);
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));

    let mut runner = ProjectionRunner::new(Balances::default());
    let account = Uuid::new_v4();
    let events = positioned((1..=50).map(|n| deposit(account, n)).collect(), 1);
    let outcome = runner.handle_batch(&events).await.unwrap();
    assert_eq!(outcome.applied, 50);
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let names: Vec<_> = spans.iter().map(|s| s.name.to_string()).collect();
    assert_eq!(names, ["projection.batch"], "no span per event at INFO");
    assert_eq!(attribute(&spans[0], "events").as_deref(), Some("50"));
    assert_eq!(attribute(&spans[0], "applied").as_deref(), Some("50"));
    assert_eq!(attribute(&spans[0], "checkpoint").as_deref(), Some("50"));
    assert_eq!(
        attribute(&spans[0], "checkpoint_written").as_deref(),
        Some("true")
    );
}
