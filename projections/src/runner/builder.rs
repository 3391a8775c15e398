use std::sync::Arc;

use super::{FailurePolicy, ProjectionRunner};
use crate::checkpoint::CheckpointRepository;
use crate::dlq::DLQRepository;
use crate::memory::{InMemoryCheckpointRepository, InMemoryDLQRepository};
use crate::projection::Projection;
use crate::retry::{ExponentialBackoffRetryPolicy, RetryPolicy};

/// Configures a [`ProjectionRunner`]. Anything left unset gets its default: in-memory
/// checkpoints and dead letters, [`ExponentialBackoffRetryPolicy::default`], dead-letter on
/// terminal failure, tracing on.
///
/// ```
/// # use std::sync::Arc;
/// # use projections::{Envelope, Event, projection};
/// # use projections::retry::NoRetryPolicy;
/// # use projections::runner::{FailurePolicy, ProjectionRunner};
/// # use projections::memory::InMemoryCheckpointRepository;
/// # #[derive(Clone, serde::Serialize, serde::Deserialize, Event)] struct Ping;
/// # #[derive(Default)] struct Pings(u32);
/// # #[projection] impl Pings { #[handles(Ping)] async fn on(&mut self, _e: &Envelope<Ping>) { self.0 += 1 } }
/// let checkpoints = Arc::new(InMemoryCheckpointRepository::new());
/// let runner = ProjectionRunner::builder(Pings::default())
///     .checkpoints(checkpoints)
///     .retry_policy(NoRetryPolicy)
///     .on_failure(FailurePolicy::Stop)
///     .build();
/// assert_eq!(runner.name(), "Pings");
/// ```
pub struct RunnerBuilder<P> {
    projection: P,
    checkpoints: Option<Arc<dyn CheckpointRepository>>,
    dead_letters: Option<Arc<dyn DLQRepository>>,
    retry: Option<Arc<dyn RetryPolicy>>,
    on_failure: FailurePolicy,
    tracing: bool,
}

impl<P: Projection> RunnerBuilder<P> {
    pub(super) fn new(projection: P) -> Self {
        Self {
            projection,
            checkpoints: None,
            dead_letters: None,
            retry: None,
            on_failure: FailurePolicy::default(),
            tracing: true,
        }
    }

    /// Where checkpoints are kept.
    pub fn checkpoints(mut self, repository: Arc<dyn CheckpointRepository>) -> Self {
        self.checkpoints = Some(repository);
        self
    }

    /// Where dead letters are kept.
    pub fn dead_letters(mut self, repository: Arc<dyn DLQRepository>) -> Self {
        self.dead_letters = Some(repository);
        self
    }

    /// How failed events are retried.
    pub fn retry_policy(mut self, policy: impl RetryPolicy + 'static) -> Self {
        self.retry = Some(Arc::new(policy));
        self
    }

    /// What happens when the retry policy gives up.
    pub fn on_failure(mut self, policy: FailurePolicy) -> Self {
        self.on_failure = policy;
        self
    }

    /// Whether to open `tracing` spans per event (on by default; off saves a little per event).
    pub fn tracing(mut self, enabled: bool) -> Self {
        self.tracing = enabled;
        self
    }

    /// The runner.
    pub fn build(self) -> ProjectionRunner<P> {
        let name = self.projection.name().to_owned();
        ProjectionRunner {
            projection: self.projection,
            name,
            checkpoints: self
                .checkpoints
                .unwrap_or_else(|| Arc::new(InMemoryCheckpointRepository::new())),
            dead_letters: self
                .dead_letters
                .unwrap_or_else(|| Arc::new(InMemoryDLQRepository::new())),
            retry: self
                .retry
                .unwrap_or_else(|| Arc::new(ExponentialBackoffRetryPolicy::default())),
            on_failure: self.on_failure,
            tracing: self.tracing,
            position: None,
            loaded: false,
            pending: super::Pending::default(),
            stopped: None,
        }
    }
}
