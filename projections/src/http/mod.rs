//! Health over HTTP (feature `http`): an [`axum`] router over a running coordinator's
//! [`CoordinatorHandle`], for load balancers, orchestrators and Prometheus.
//!
//! | path | answers |
//! |---|---|
//! | `GET /health` | `200` while the process serves: it is alive |
//! | `GET /ready` | `200` when no projection is stopped (or its worker ended) and none lags past the thresholds; `503` otherwise, with every reason |
//! | `GET /metrics` | the Prometheus text of a [`PrometheusHandle`], when one is given; `404` otherwise |
//! | `GET /projections` | every projection's status ([`ProjectionSnapshot`]) as JSON |
//!
//! Every answer reads the workers' published status: none waits for a batch or the database.
//!
//! ```no_run
//! # async fn example(handle: projections::coordinator::CoordinatorHandle) -> std::io::Result<()> {
//! use projections::http::{self, HttpOptions};
//! use projections::metrics::PrometheusRecorder;
//!
//! let metrics = PrometheusRecorder::install_once().map_err(std::io::Error::other)?;
//! let options = HttpOptions::new().max_lag_events(1_000).metrics(metrics);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9090").await?;
//! http::serve(listener, handle, options, projections::CancellationToken::new()).await
//! # }
//! ```

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::coordinator::{CoordinatorHandle, ProjectionSnapshot, WorkerState};
use crate::metrics::PrometheusHandle;

/// What `/ready` checks, and what `/metrics` renders.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpOptions {
    /// Not ready while a projection is more than this many relevant events behind (`None`:
    /// no limit).
    pub max_lag_events: Option<u64>,
    /// Not ready while a projection's oldest unprocessed event is older than this (`None`: no
    /// limit).
    pub max_lag: Option<Duration>,
    /// What `/metrics` renders.
    pub metrics: Option<PrometheusHandle>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpOptions {
    /// No lag limit in events, 60 s in time, no `/metrics`.
    pub fn new() -> Self {
        Self {
            max_lag_events: None,
            max_lag: Some(Duration::from_secs(60)),
            metrics: None,
        }
    }

    /// Not ready past `events` relevant events behind.
    #[must_use]
    pub fn max_lag_events(mut self, events: u64) -> Self {
        self.max_lag_events = Some(events);
        self
    }

    /// Not ready while the oldest unprocessed event is older than `lag`; `None` for no limit.
    #[must_use]
    pub fn max_lag(mut self, lag: Option<Duration>) -> Self {
        self.max_lag = lag;
        self
    }

    /// Serves `handle`'s metrics on `/metrics`.
    #[must_use]
    pub fn metrics(mut self, handle: PrometheusHandle) -> Self {
        self.metrics = Some(handle);
        self
    }
}

/// Whether the projections are ready, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Readiness {
    /// Every projection runs and none lags past the limits.
    pub ready: bool,
    /// One sentence per projection that is not ready.
    pub reasons: Vec<String>,
}

/// The readiness of `projections` under the limits of `options`: not ready while one is
/// stopped, its worker has ended, or it lags past a limit. A paused projection is ready (an
/// operator chose to hold it).
pub fn readiness(projections: &[ProjectionSnapshot], options: &HttpOptions) -> Readiness {
    let mut reasons = Vec::new();
    for p in projections {
        match &p.state {
            WorkerState::Stopped { at } => {
                reasons.push(format!("projection `{}` is stopped: {at}", p.name));
                continue;
            }
            WorkerState::Finished => {
                reasons.push(format!("projection `{}` is not running", p.name));
                continue;
            }
            _ => {}
        }
        if let Some(limit) = options.max_lag_events
            && p.events_behind > limit
        {
            reasons.push(format!(
                "projection `{}` is {} events behind (limit {limit})",
                p.name, p.events_behind
            ));
        }
        if let Some(limit) = options.max_lag
            && p.seconds_behind > limit.as_secs_f64()
        {
            reasons.push(format!(
                "projection `{}` is {:.1} s behind (limit {} s)",
                p.name,
                p.seconds_behind,
                limit.as_secs_f64()
            ));
        }
    }
    Readiness {
        ready: reasons.is_empty(),
        reasons,
    }
}

#[derive(Clone)]
struct Shared {
    handle: CoordinatorHandle,
    options: HttpOptions,
}

/// The router: `/health`, `/ready`, `/metrics`, `/projections`. Merge it into an application's
/// own router, or [`serve`] it alone.
pub fn router(handle: CoordinatorHandle, options: HttpOptions) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/projections", get(projections))
        .with_state(Shared { handle, options })
}

/// Serves [`router`] on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    handle: CoordinatorHandle,
    options: HttpOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(handle, options))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn health() -> Response {
    json(StatusCode::OK, &serde_json::json!({ "status": "alive" }))
}

async fn ready(State(shared): State<Shared>) -> Response {
    let readiness = readiness(&shared.handle.status(), &shared.options);
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(status, &readiness)
}

async fn metrics(State(shared): State<Shared>) -> Response {
    match &shared.options.metrics {
        Some(metrics) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            metrics.render(),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "metrics are not served: give HttpOptions::metrics a PrometheusHandle\n",
        )
            .into_response(),
    }
}

async fn projections(State(shared): State<Shared>) -> Response {
    json(StatusCode::OK, &shared.handle.status())
}

fn json(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot serialise the answer: {error}\n"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::StoppedAt;
    use crate::failure::FailureKind;

    fn snapshot(name: &str, state: WorkerState, events: u64, seconds: f64) -> ProjectionSnapshot {
        let mut s = ProjectionSnapshot::new(name);
        s.state = state;
        s.events_behind = events;
        s.seconds_behind = seconds;
        s
    }

    #[test]
    fn ready_unless_stopped_ended_or_lagging_past_a_limit() {
        let options = HttpOptions::new().max_lag_events(100);
        let fine = [
            snapshot("a", WorkerState::Live, 0, 0.0),
            snapshot("b", WorkerState::CatchingUp, 100, 59.0),
            snapshot("c", WorkerState::Paused { reason: "x".into() }, 0, 0.0),
        ];
        assert_eq!(
            readiness(&fine, &options),
            Readiness {
                ready: true,
                reasons: vec![]
            }
        );
        let at = StoppedAt::new(FailureKind::Event, "bad event");
        let bad = [
            snapshot("a", WorkerState::Stopped { at }, 0, 0.0),
            snapshot("b", WorkerState::CatchingUp, 101, 61.0),
            snapshot("c", WorkerState::Finished, 0, 0.0),
        ];
        let readiness = readiness(&bad, &options);
        assert!(!readiness.ready);
        assert_eq!(readiness.reasons.len(), 4, "{:?}", readiness.reasons);
        assert!(readiness.reasons[0].starts_with("projection `a` is stopped: "));
        assert_eq!(
            readiness.reasons[1],
            "projection `b` is 101 events behind (limit 100)"
        );
        assert_eq!(
            readiness.reasons[2],
            "projection `b` is 61.0 s behind (limit 60 s)"
        );
        assert_eq!(readiness.reasons[3], "projection `c` is not running");
    }
}
