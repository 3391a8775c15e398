//! Retry policies: how often and how long to wait before a failed event is tried again.
//!
//! The runner asks the policy after each failed attempt. Whatever the policy answers, an event
//! gets at most `max_retries() + 1` attempts; then the runner's terminal-failure policy
//! (dead letter or stop) decides.

mod config;
mod policy;

pub use config::{RetryConfig, RetryConfigError};
pub use policy::{ExponentialBackoffRetryPolicy, FilteredRetryPolicy, NoRetryPolicy, RetryPolicy};
