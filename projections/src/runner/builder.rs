use super::{FailurePolicy, ProjectionRunner, Repositories, Runner};
use crate::projection::Projection;
use crate::retry::RetryPolicy;
use crate::store::TenantFilter;

/// Configures a [`ProjectionRunner`]. Anything left unset gets its default: in-memory
/// [`Repositories`], [`ExponentialBackoffRetryPolicy::default`](crate::ExponentialBackoffRetryPolicy),
/// dead-letter on terminal failure, tracing on.
///
/// ```
/// # use projections::{Envelope, Event, projection};
/// # use projections::retry::NoRetryPolicy;
/// # use projections::runner::{FailurePolicy, ProjectionRunner, Repositories};
/// # #[derive(Clone, serde::Serialize, serde::Deserialize, Event)] struct Ping;
/// # #[derive(Default)] struct Pings(u32);
/// # #[projection] impl Pings { #[handles(Ping)] async fn on(&mut self, _e: &Envelope<Ping>) { self.0 += 1 } }
/// let runner = ProjectionRunner::builder(Pings::default())
///     .storage(Repositories::in_memory())
///     .retry_policy(NoRetryPolicy)
///     .on_failure(FailurePolicy::Stop)
///     .build();
/// assert_eq!(runner.name(), "Pings");
/// ```
pub struct RunnerBuilder<P> {
    runner: ProjectionRunner<P>,
}

impl<P: Projection> RunnerBuilder<P> {
    pub(super) fn new(projection: P) -> Self {
        Self {
            runner: Runner::<P, Repositories>::new(projection),
        }
    }

    /// Where checkpoints, dead letters and halts are kept, both from one backend: a
    /// [`Repositories`] or a [`Storage`](crate::Storage).
    pub fn storage(mut self, storage: impl Into<Repositories>) -> Self {
        let storage = storage.into();
        self.runner.storage = storage;
        self
    }

    /// How failed events are retried.
    pub fn retry_policy(self, policy: impl RetryPolicy + 'static) -> Self {
        Self {
            runner: self.runner.retry_policy(policy),
        }
    }

    /// What happens when the retry policy gives up.
    pub fn on_failure(self, policy: FailurePolicy) -> Self {
        Self {
            runner: self.runner.on_failure(policy),
        }
    }

    /// Whether to open `tracing` spans (on by default; see [`Runner::tracing`]).
    pub fn tracing(self, enabled: bool) -> Self {
        Self {
            runner: self.runner.tracing(enabled),
        }
    }

    /// The aggregate types the projection follows: an event of one of them that it has no
    /// handler for meets its unregistered-event policy (see
    /// [`Runner::follows_aggregates`]).
    pub fn follows_aggregates<I>(self, aggregates: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        Self {
            runner: self.runner.follows_aggregates(aggregates),
        }
    }

    /// Limits the projection to the events of the tenants `filter` admits; the others are
    /// passed over and the checkpoint moves past them (see [`Runner::tenant`]).
    pub fn tenant(self, filter: TenantFilter) -> Self {
        Self {
            runner: self.runner.tenant(filter),
        }
    }

    /// The runner.
    pub fn build(self) -> ProjectionRunner<P> {
        self.runner
    }
}
