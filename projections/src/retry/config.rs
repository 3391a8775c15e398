use std::time::Duration;

/// The numbers of an exponential backoff.
///
/// The wait before retry `n` (0-based) is `initial_delay * exponential_base^n`, capped at
/// `max_delay`; jitter then moves it by up to `jitter` of itself either way, never above the
/// cap. Build it with [`RetryConfig::new`] or [`RetryConfig::builder`]; both validate.
///
/// ```
/// use std::time::Duration;
/// use projections::retry::RetryConfig;
///
/// let config = RetryConfig::builder()
///     .max_retries(5)
///     .initial_delay(Duration::from_secs(1))
///     .jitter(0.1)
///     .build()
///     .unwrap();
/// assert_eq!(config.max_retries(), 5);
/// assert!(RetryConfig::builder().exponential_base(1.0).build().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryConfig {
    max_retries: u32,
    initial_delay: Duration,
    max_delay: Duration,
    exponential_base: f64,
    jitter: f64,
}

/// A [`RetryConfig`] value that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RetryConfigError {
    /// The initial delay is zero.
    #[error("initial_delay must be positive, got {0:?}")]
    NonPositiveInitialDelay(Duration),
    /// The maximum delay is zero.
    #[error("max_delay must be positive, got {0:?}")]
    NonPositiveMaxDelay(Duration),
    /// The cap is below the first delay.
    #[error("max_delay ({max:?}) must not be below initial_delay ({initial:?})")]
    MaxBelowInitial {
        /// The initial delay.
        initial: Duration,
        /// The cap.
        max: Duration,
    },
    /// The base does not grow the delay.
    #[error("exponential_base must be a number above 1, got {0}")]
    BaseNotAboveOne(f64),
    /// The jitter is not a fraction.
    #[error("jitter must be between 0 and 1 inclusive, got {0}")]
    JitterOutOfRange(f64),
    /// A negative retry count (from configuration read as a signed number).
    #[error("max_retries must not be negative, got {0}")]
    NegativeRetries(i64),
}

impl Default for RetryConfig {
    /// 3 retries, 2 s, doubling, capped at 60 s, no jitter: waits of 2, 4 and 8 s.
    fn default() -> Self {
        Self {
            max_retries: 3,
            initial_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(60),
            exponential_base: 2.0,
            jitter: 0.0,
        }
    }
}

impl RetryConfig {
    /// A validated configuration.
    pub fn new(
        max_retries: u32,
        initial_delay: Duration,
        max_delay: Duration,
        exponential_base: f64,
        jitter: f64,
    ) -> Result<Self, RetryConfigError> {
        if initial_delay.is_zero() {
            return Err(RetryConfigError::NonPositiveInitialDelay(initial_delay));
        }
        if max_delay.is_zero() {
            return Err(RetryConfigError::NonPositiveMaxDelay(max_delay));
        }
        if max_delay < initial_delay {
            return Err(RetryConfigError::MaxBelowInitial {
                initial: initial_delay,
                max: max_delay,
            });
        }
        // Written so that NaN is rejected too.
        if exponential_base.partial_cmp(&1.0) != Some(std::cmp::Ordering::Greater)
            || !exponential_base.is_finite()
        {
            return Err(RetryConfigError::BaseNotAboveOne(exponential_base));
        }
        if !(0.0..=1.0).contains(&jitter) {
            return Err(RetryConfigError::JitterOutOfRange(jitter));
        }
        Ok(Self {
            max_retries,
            initial_delay,
            max_delay,
            exponential_base,
            jitter,
        })
    }

    /// Starts from the defaults.
    pub fn builder() -> RetryConfigBuilder {
        RetryConfigBuilder {
            max_retries: i64::from(Self::default().max_retries),
            config: Self::default(),
        }
    }

    /// Retries after the first attempt.
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// The wait before the first retry.
    pub fn initial_delay(&self) -> Duration {
        self.initial_delay
    }

    /// The longest wait.
    pub fn max_delay(&self) -> Duration {
        self.max_delay
    }

    /// The growth factor.
    pub fn exponential_base(&self) -> f64 {
        self.exponential_base
    }

    /// The jitter fraction.
    pub fn jitter(&self) -> f64 {
        self.jitter
    }

    /// The wait before retry `attempt` (0-based) without jitter.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let factor = self
            .exponential_base
            .powi(attempt.min(i32::MAX as u32) as i32);
        let seconds = self.initial_delay.as_secs_f64() * factor;
        if !seconds.is_finite() || seconds >= self.max_delay.as_secs_f64() {
            self.max_delay
        } else {
            Duration::from_secs_f64(seconds)
        }
    }

    /// The wait before retry `attempt` (0-based), jitter included, never above `max_delay`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self.base_delay(attempt);
        if self.jitter == 0.0 {
            return base;
        }
        // Uniform in [-jitter, +jitter] of the base.
        let offset = (fastrand::f64() * 2.0 - 1.0) * self.jitter;
        let seconds = (base.as_secs_f64() * (1.0 + offset)).max(0.0);
        Duration::from_secs_f64(seconds).min(self.max_delay)
    }
}

/// Builds a [`RetryConfig`]; [`RetryConfigBuilder::build`] validates.
#[derive(Debug, Clone)]
pub struct RetryConfigBuilder {
    max_retries: i64,
    config: RetryConfig,
}

impl RetryConfigBuilder {
    /// Retries after the first attempt (negative values are rejected by `build`).
    pub fn max_retries(mut self, retries: i64) -> Self {
        self.max_retries = retries;
        self
    }

    /// The wait before the first retry.
    pub fn initial_delay(mut self, delay: Duration) -> Self {
        self.config.initial_delay = delay;
        self
    }

    /// The longest wait.
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.config.max_delay = delay;
        self
    }

    /// The growth factor, above 1.
    pub fn exponential_base(mut self, base: f64) -> Self {
        self.config.exponential_base = base;
        self
    }

    /// The jitter fraction, in `0..=1`.
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.config.jitter = jitter;
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<RetryConfig, RetryConfigError> {
        let retries = u32::try_from(self.max_retries)
            .map_err(|_| RetryConfigError::NegativeRetries(self.max_retries))?;
        let c = self.config;
        RetryConfig::new(
            retries,
            c.initial_delay,
            c.max_delay,
            c.exponential_base,
            c.jitter,
        )
    }
}
