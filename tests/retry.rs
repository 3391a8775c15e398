//! Retry policies: validation, backoff sequences, jitter bounds, filters, and the attempt
//! counts and waits the runner actually produces (with paused tokio time).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Balances, Permanent, Transient, deposit, positioned};
use projections::retry::{RetryConfigError, RetryPolicy};
use projections::runner::EventOutcome;
use projections::{
    ExponentialBackoffRetryPolicy, FilteredRetryPolicy, HandlerError, NoRetryPolicy,
    ProjectionRunner, RetryConfig,
};
use uuid::Uuid;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn default_policy_waits_2_4_8_seconds_for_3_retries() {
    let policy = ExponentialBackoffRetryPolicy::default();
    assert_eq!(policy.max_retries(), 3);
    let waits: Vec<_> = (0..3).map(|n| policy.backoff(n)).collect();
    assert_eq!(waits, vec![secs(2), secs(4), secs(8)]);
}

#[test]
fn backoff_is_capped_at_max_delay() {
    let config = RetryConfig::new(10, secs(1), secs(5), 3.0, 0.0).unwrap();
    let waits: Vec<_> = (0..5).map(|n| config.delay(n)).collect();
    assert_eq!(waits, vec![secs(1), secs(3), secs(5), secs(5), secs(5)]);
    // Huge attempt numbers stay at the cap instead of overflowing.
    assert_eq!(config.delay(10_000), secs(5));
}

#[test]
fn jitter_stays_within_its_fraction_and_never_above_the_cap() {
    let config = RetryConfig::new(5, secs(4), secs(10), 2.0, 0.5).unwrap();
    for _ in 0..2_000 {
        let first = config.delay(0);
        assert!(first >= secs(2) && first <= secs(6), "{first:?}");
        let capped = config.delay(3); // base 32 s, capped to 10 s, jitter must not lift it
        assert!(capped >= secs(5) && capped <= secs(10), "{capped:?}");
    }
}

#[test]
fn each_bad_value_has_its_own_error() {
    assert_eq!(
        RetryConfig::builder().max_retries(-1).build(),
        Err(RetryConfigError::NegativeRetries(-1))
    );
    assert_eq!(
        RetryConfig::builder().initial_delay(Duration::ZERO).build(),
        Err(RetryConfigError::NonPositiveInitialDelay(Duration::ZERO))
    );
    assert_eq!(
        RetryConfig::builder().max_delay(Duration::ZERO).build(),
        Err(RetryConfigError::NonPositiveMaxDelay(Duration::ZERO))
    );
    assert_eq!(
        RetryConfig::builder()
            .initial_delay(secs(10))
            .max_delay(secs(5))
            .build(),
        Err(RetryConfigError::MaxBelowInitial {
            initial: secs(10),
            max: secs(5)
        })
    );
    assert_eq!(
        RetryConfig::builder().exponential_base(1.0).build(),
        Err(RetryConfigError::BaseNotAboveOne(1.0))
    );
    assert!(matches!(
        RetryConfig::builder().exponential_base(f64::NAN).build(),
        Err(RetryConfigError::BaseNotAboveOne(_))
    ));
    assert_eq!(
        RetryConfig::builder().jitter(1.5).build(),
        Err(RetryConfigError::JitterOutOfRange(1.5))
    );
    assert_eq!(
        RetryConfig::builder().jitter(-0.1).build(),
        Err(RetryConfigError::JitterOutOfRange(-0.1))
    );
    let message = RetryConfig::builder()
        .jitter(2.0)
        .build()
        .unwrap_err()
        .to_string();
    assert!(message.contains("jitter"), "{message}");
}

#[test]
fn filtered_policy_retries_only_accepted_errors() {
    let policy = FilteredRetryPolicy::new(ExponentialBackoffRetryPolicy::default())
        .retry_on::<Transient>()
        .retry_if(|e| e.to_string().contains("deadlock"));
    assert!(policy.should_retry(0, &HandlerError::new(Transient)));
    assert!(policy.should_retry(0, &HandlerError::new("deadlock detected")));
    assert!(!policy.should_retry(0, &HandlerError::new(Permanent("no".into()))));
    // Accepted errors still stop when the base policy says so.
    assert!(!policy.should_retry(3, &HandlerError::new(Transient)));
}

/// Runs one deposit through a runner whose projection fails `failures` times, and returns the
/// outcome, the handler calls and the paused-clock time it took.
async fn run_with(
    policy: impl RetryPolicy + 'static,
    failures: u32,
) -> (EventOutcome, u32, Duration) {
    let projection = Balances {
        fail_next: failures,
        ..Balances::default()
    };
    let calls = projection.calls.clone();
    let mut runner = ProjectionRunner::builder(projection)
        .retry_policy(policy)
        .build();
    let event = &positioned(vec![deposit(Uuid::new_v4(), 5)], 1)[0];
    let start = tokio::time::Instant::now();
    let outcome = runner.handle(event).await.unwrap();
    (outcome, calls.load(Ordering::SeqCst), start.elapsed())
}

#[tokio::test(start_paused = true)]
async fn default_policy_makes_4_attempts_waiting_2_4_8_seconds() {
    let (outcome, calls, elapsed) = run_with(ExponentialBackoffRetryPolicy::default(), 100).await;
    assert!(matches!(outcome, EventOutcome::DeadLettered { .. }));
    assert_eq!(calls, 4);
    assert_eq!(elapsed, secs(14));
}

#[tokio::test(start_paused = true)]
async fn a_retry_that_succeeds_applies_the_event_once() {
    let (outcome, calls, elapsed) = run_with(ExponentialBackoffRetryPolicy::default(), 2).await;
    assert_eq!(outcome, EventOutcome::Applied);
    assert_eq!(calls, 3);
    assert_eq!(elapsed, secs(6));
}

#[tokio::test(start_paused = true)]
async fn no_retry_policy_makes_one_attempt_and_never_waits() {
    let (outcome, calls, elapsed) = run_with(NoRetryPolicy, 100).await;
    assert!(matches!(outcome, EventOutcome::DeadLettered { .. }));
    assert_eq!(calls, 1);
    assert_eq!(elapsed, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn filtered_policy_sends_unaccepted_errors_straight_to_the_failure_policy() {
    let policy = FilteredRetryPolicy::new(ExponentialBackoffRetryPolicy::default())
        .retry_on::<std::io::Error>();
    let (outcome, calls, elapsed) = run_with(policy, 100).await;
    assert!(matches!(outcome, EventOutcome::DeadLettered { .. }));
    assert_eq!(calls, 1, "Transient is not an io::Error, so no retry");
    assert_eq!(elapsed, Duration::ZERO);

    let policy =
        FilteredRetryPolicy::new(ExponentialBackoffRetryPolicy::default()).retry_on::<Transient>();
    let (_, calls, elapsed) = run_with(policy, 100).await;
    assert_eq!(calls, 4);
    assert_eq!(elapsed, secs(14));
}

/// A policy that always says "retry", with a 1 s wait.
#[derive(Debug)]
struct Relentless;

impl RetryPolicy for Relentless {
    fn max_retries(&self) -> u32 {
        2
    }
    fn should_retry(&self, _attempt: u32, _error: &HandlerError) -> bool {
        true
    }
    fn backoff(&self, _attempt: u32) -> Duration {
        secs(1)
    }
}

#[tokio::test(start_paused = true)]
async fn a_policy_that_always_retries_still_ends_after_max_retries_plus_one_attempts() {
    let (outcome, calls, elapsed) = run_with(Relentless, 100).await;
    assert!(matches!(outcome, EventOutcome::DeadLettered { .. }));
    assert_eq!(calls, 3);
    assert_eq!(elapsed, secs(2));
}

#[tokio::test(start_paused = true)]
async fn custom_config_backoff_sequence_is_followed() {
    let config = RetryConfig::new(3, Duration::from_millis(100), secs(1), 3.0, 0.0).unwrap();
    // Waits 0.1 + 0.3 + 0.9 s.
    let (_, calls, elapsed) = run_with(ExponentialBackoffRetryPolicy::new(config), 100).await;
    assert_eq!(calls, 4);
    assert_eq!(elapsed, Duration::from_millis(1_300));
}
