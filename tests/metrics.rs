//! The runner's counters and histogram, recorded through the `metrics` facade into the
//! crate's Prometheus recorder: each counts what the batch did, per projection.
//!
//! Run with `cargo test -p projections-tests --features metrics --test metrics`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::time::Duration;

use common::{Balances, deposit, positioned, rename, withdraw};
use projections::metrics::PrometheusRecorder;
use projections::retry::RetryConfig;
use projections::{ExponentialBackoffRetryPolicy, ProjectionRunner};
use uuid::Uuid;

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn counters_count_what_each_batch_did() {
    let recorder = PrometheusRecorder::new();
    let handle = recorder.handle();
    // A runtime on this thread, so the thread's recorder sees every record.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let retry = RetryConfig::new(
                2,
                Duration::from_millis(10),
                Duration::from_secs(1),
                2.0,
                0.0,
            )
            .unwrap();
            let mut runner = ProjectionRunner::builder(Balances::default())
                .retry_policy(ExponentialBackoffRetryPolicy::new(retry))
                .build();
            let account = Uuid::new_v4();
            let events = positioned(
                vec![
                    deposit(account, 5),
                    rename(account),       // not subscribed
                    withdraw(account, 13), // poison: 2 retries, then a dead letter
                    deposit(account, 1),
                ],
                1,
            );
            runner.handle_batch(&events).await.unwrap();
            // Delivered again: every event at or below the checkpoint.
            runner.handle_batch(&events[..2]).await.unwrap();
        });
    });
    let text = handle.render();
    let series = |name: &str, extra: &str| format!("{name}{{projection=\"balances\"{extra}}}");
    assert_eq!(
        sample(&text, &series("projections_events_applied_total", "")),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, &series("projections_events_retried_total", "")),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, &series("projections_events_dead_lettered_total", "")),
        Some(1.0),
        "{text}"
    );
    let skipped = "projections_events_skipped_total";
    assert_eq!(
        sample(&text, &series(skipped, ",reason=\"not_subscribed\"")),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, &series(skipped, ",reason=\"redelivered\"")),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            &series("projections_batch_duration_seconds_count", "")
        ),
        Some(2.0),
        "one observation per batch: {text}"
    );
}
