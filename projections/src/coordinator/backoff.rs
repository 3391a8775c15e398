//! Waiting out a failing infrastructure: capped exponential backoff with jitter.

use std::time::Duration;

/// How long a worker waits before trying again after an infrastructure failure: `initial`,
/// doubling up to `max`, each delay shortened by up to a quarter at random so that workers
/// (and nodes) do not retry in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InfrastructureBackoff {
    /// The first delay.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Default for InfrastructureBackoff {
    /// 100 ms, doubling up to 10 s.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

impl InfrastructureBackoff {
    /// The delay after `failures` consecutive failures (1 for the first).
    pub fn delay(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(20);
        let full = self
            .initial
            .saturating_mul(1 << exponent)
            .min(self.max.max(self.initial));
        let cut = full.mul_f64(fastrand::f64() * 0.25);
        full.saturating_sub(cut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_at_most_a_quarter_off() {
        let backoff = InfrastructureBackoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for (failures, full) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (40, 1000),
        ] {
            let delay = backoff.delay(failures);
            let full = Duration::from_millis(full);
            assert!(
                delay <= full && delay >= full.mul_f64(0.75),
                "{failures}: {delay:?}"
            );
        }
    }
}
