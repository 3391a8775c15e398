use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::RetryConfig;
use crate::projection::HandlerError;

/// Decides whether a failed event is tried again, and after how long.
///
/// `attempt` is 0 for the first failure. The runner never makes more than
/// `max_retries() + 1` attempts, whatever `should_retry` answers.
pub trait RetryPolicy: Send + Sync + fmt::Debug {
    /// Retries allowed after the first attempt.
    fn max_retries(&self) -> u32;

    /// Whether to try again after failed attempt `attempt` with `error`.
    fn should_retry(&self, attempt: u32, error: &HandlerError) -> bool;

    /// How long to wait before the next attempt, after failed attempt `attempt`.
    fn backoff(&self, attempt: u32) -> Duration;
}

/// Exponential backoff; the default policy (3 retries after 2, 4 and 8 s).
#[derive(Debug, Clone, Default)]
pub struct ExponentialBackoffRetryPolicy {
    config: RetryConfig,
}

impl ExponentialBackoffRetryPolicy {
    /// A policy with `config`.
    pub fn new(config: RetryConfig) -> Self {
        Self { config }
    }

    /// Its configuration.
    pub fn config(&self) -> &RetryConfig {
        &self.config
    }
}

impl RetryPolicy for ExponentialBackoffRetryPolicy {
    fn max_retries(&self) -> u32 {
        self.config.max_retries()
    }

    fn should_retry(&self, attempt: u32, _error: &HandlerError) -> bool {
        attempt < self.config.max_retries()
    }

    fn backoff(&self, attempt: u32) -> Duration {
        self.config.delay(attempt)
    }
}

/// Never retries: the first failure goes to the terminal-failure policy.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRetryPolicy;

impl RetryPolicy for NoRetryPolicy {
    fn max_retries(&self) -> u32 {
        0
    }

    fn should_retry(&self, _attempt: u32, _error: &HandlerError) -> bool {
        false
    }

    fn backoff(&self, _attempt: u32) -> Duration {
        Duration::ZERO
    }
}

/// Whether an error's chain holds a given error type.
type ErrorKindTest = fn(&HandlerError) -> bool;

type ErrorPredicate = Arc<dyn Fn(&HandlerError) -> bool + Send + Sync>;

/// Retries only the errors it accepts, as its base policy says; every other error goes straight
/// to the terminal-failure policy.
///
/// An error is accepted if one of the listed error types appears in its source chain, or if a
/// predicate accepts it.
///
/// ```
/// use projections::retry::{ExponentialBackoffRetryPolicy, FilteredRetryPolicy, RetryPolicy};
/// use projections::HandlerError;
///
/// let policy = FilteredRetryPolicy::new(ExponentialBackoffRetryPolicy::default())
///     .retry_on::<std::io::Error>();
/// let transient = HandlerError::new(std::io::Error::other("connection reset"));
/// let permanent = HandlerError::new("order not found");
/// assert!(policy.should_retry(0, &transient));
/// assert!(!policy.should_retry(0, &permanent));
/// ```
#[derive(Clone)]
pub struct FilteredRetryPolicy<P> {
    base: P,
    kinds: Vec<(&'static str, ErrorKindTest)>,
    predicates: Vec<ErrorPredicate>,
}

impl<P: RetryPolicy> FilteredRetryPolicy<P> {
    /// Retries nothing until told what to retry.
    pub fn new(base: P) -> Self {
        Self {
            base,
            kinds: Vec::new(),
            predicates: Vec::new(),
        }
    }

    /// Also retries errors whose source chain holds an `E`.
    #[must_use]
    pub fn retry_on<E: std::error::Error + 'static>(mut self) -> Self {
        self.kinds
            .push((std::any::type_name::<E>(), |error| error.is::<E>()));
        self
    }

    /// Also retries errors that `predicate` accepts.
    #[must_use]
    pub fn retry_if(
        mut self,
        predicate: impl Fn(&HandlerError) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.predicates.push(Arc::new(predicate));
        self
    }

    /// Whether `error` is of a retryable kind.
    pub fn accepts(&self, error: &HandlerError) -> bool {
        self.kinds.iter().any(|(_, is)| is(error)) || self.predicates.iter().any(|p| p(error))
    }
}

impl<P: RetryPolicy> RetryPolicy for FilteredRetryPolicy<P> {
    fn max_retries(&self) -> u32 {
        self.base.max_retries()
    }

    fn should_retry(&self, attempt: u32, error: &HandlerError) -> bool {
        self.accepts(error) && self.base.should_retry(attempt, error)
    }

    fn backoff(&self, attempt: u32) -> Duration {
        self.base.backoff(attempt)
    }
}

impl<P: fmt::Debug> fmt::Debug for FilteredRetryPolicy<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kinds: Vec<_> = self.kinds.iter().map(|(name, _)| *name).collect();
        f.debug_struct("FilteredRetryPolicy")
            .field("base", &self.base)
            .field("retry_on", &kinds)
            .field("predicates", &self.predicates.len())
            .finish()
    }
}
