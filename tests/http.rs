//! Health over HTTP, scraped over a real TCP connection while projections run: `/metrics`
//! shows the counters move, `/ready` flips to 503 with the reason when a projection stops.
//!
//! Run with `cargo test -p projections-tests --features http --test http`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Balances, deposit, withdraw};
use projections::coordinator::{ProjectionCoordinator, WorkerState};
use projections::http::{self, HttpOptions};
use projections::metrics::PrometheusRecorder;
use projections::runner::ProjectionRunner;
use projections::{
    CancellationToken, EventStore, ExpectedVersion, FailurePolicy, InMemoryEventStore,
    NoRetryPolicy, ProjectionRegistry,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

/// `GET path` over HTTP/1.1; the status code and the body.
async fn get(address: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// The value of the series `name{labels}` in a Prometheus text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_and_readiness_flips_when_a_projection_stops() {
    let metrics = PrometheusRecorder::install_once().unwrap();
    let store = Arc::new(InMemoryEventStore::new());
    let account = Uuid::new_v4();
    let deposits: Vec<_> = (0..5).map(|_| deposit(account, 10)).collect();
    store
        .append(account, ExpectedVersion::Any, deposits)
        .await
        .unwrap();

    let mut registry = ProjectionRegistry::new();
    registry
        .register(
            ProjectionRunner::builder(Balances::default())
                .retry_policy(NoRetryPolicy)
                .on_failure(FailurePolicy::Stop)
                .build(),
        )
        .unwrap();
    let handle = ProjectionCoordinator::new(registry, store.clone())
        .poll_interval(Duration::from_millis(20))
        .start()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(http::serve(
        listener,
        handle.clone(),
        HttpOptions::new().max_lag_events(1_000).metrics(metrics),
        shutdown.clone(),
    ));
    handle.wait_for_checkpoint("balances", 5).await.unwrap();

    assert_eq!(get(address, "/health").await.0, 200);
    let (status, body) = get(address, "/ready").await;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"ready":true,"reasons":[]}"#)
    );
    let (status, text) = get(address, "/metrics").await;
    assert_eq!(status, 200);
    let applied = r#"projections_events_applied_total{projection="balances"}"#;
    assert_eq!(sample(&text, applied), Some(5.0), "{text}");
    assert!(text.contains("# TYPE projections_batch_duration_seconds histogram"));
    let live = r#"projections_state{projection="balances",state="live"}"#;
    assert_eq!(sample(&text, live), Some(1.0), "{text}");
    assert_eq!(
        sample(
            &text,
            r#"projections_checkpoint_position{projection="balances"}"#
        ),
        Some(5.0)
    );

    // Three more: the counter moves.
    let more: Vec<_> = (0..3).map(|_| deposit(account, 1)).collect();
    store
        .append(account, ExpectedVersion::Any, more)
        .await
        .unwrap();
    handle.wait_for_checkpoint("balances", 8).await.unwrap();
    let text = get(address, "/metrics").await.1;
    assert_eq!(sample(&text, applied), Some(8.0), "{text}");

    // A poison event stops the projection: not ready, and why.
    store
        .append(account, ExpectedVersion::Any, vec![withdraw(account, 13)])
        .await
        .unwrap();
    let mut status = handle.watch("balances").unwrap();
    status
        .wait_for(|s| matches!(s.state, WorkerState::Stopped { .. }))
        .await
        .unwrap();
    let (code, body) = get(address, "/ready").await;
    assert_eq!(code, 503, "{body}");
    let readiness: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(readiness["ready"], false);
    let reason = readiness["reasons"][0].as_str().unwrap();
    assert!(
        reason.starts_with("projection `balances` is stopped") && reason.contains("unlucky"),
        "{reason}"
    );
    let text = get(address, "/metrics").await.1;
    let stopped = r#"projections_state{projection="balances",state="stopped"}"#;
    assert_eq!(sample(&text, stopped), Some(1.0), "{text}");
    assert_eq!(sample(&text, live), Some(0.0), "{text}");

    let (code, body) = get(address, "/projections").await;
    assert_eq!(code, 200);
    let projections: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(projections[0]["name"], "balances");
    assert_eq!(projections[0]["state"]["state"], "stopped");
    assert_eq!(projections[0]["checkpoint"], 8);

    shutdown.cancel();
    server.await.unwrap().unwrap();
    let _ = handle.shutdown(Duration::from_secs(5)).await;
}
