//! Retries of API writes: each failure waits longer (doubling to a ceiling, jittered into the
//! upper half so replicas spread out), a success starts over. A write that fails must never be
//! repeated at once: during an API server outage that is hundreds of requests a second.

use std::time::Duration;

use portcullis_support::backoff::Backoff;

#[derive(Clone, Debug)]
pub struct Retry {
    backoff: Backoff,
    failures: u32,
}

impl Retry {
    /// Waits from about `initial` doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Retry {
        Retry {
            backoff: Backoff {
                initial,
                max: max.max(initial),
            },
            failures: 0,
        }
    }

    /// Records a failure; the wait before the next attempt, given a random `unit` in [0, 1).
    pub fn failed(&mut self, unit: f64) -> Duration {
        let wait = self.backoff.delay(self.failures, unit.clamp(0.0, 1.0));
        self.failures = self.failures.saturating_add(1);
        wait
    }

    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_to_the_ceiling_with_jitter_and_start_over_after_a_success() {
        let ms = Duration::from_millis;
        let mut retry = Retry::new(ms(200), Duration::from_secs(5));
        let highest: Vec<Duration> = (0..8).map(|_| retry.failed(1.0)).collect();
        assert_eq!(
            highest,
            [
                ms(200),
                ms(400),
                ms(800),
                ms(1600),
                ms(3200),
                ms(5000),
                ms(5000),
                ms(5000)
            ]
        );
        // Jitter: never below half the ceiling, so a failure is never retried at once.
        let mut retry = Retry::new(ms(200), Duration::from_secs(5));
        assert_eq!(retry.failed(0.0), ms(100));
        assert_eq!(retry.failed(0.5), ms(300));
        assert_eq!(retry.failures(), 2);
        retry.succeeded();
        assert_eq!(retry.failed(1.0), ms(200));
        // Thousands of failures neither overflow nor exceed the ceiling.
        let mut retry = Retry::new(ms(200), Duration::from_secs(5));
        for _ in 0..10_000 {
            assert!(retry.failed(1.0) <= Duration::from_secs(5));
        }
        // A ceiling below the start is raised to it.
        assert_eq!(Retry::new(ms(200), ms(10)).failed(1.0), ms(200));
    }

    #[test]
    fn the_bound_an_outage_sees() {
        // Over 14 s of failures, at most a dozen attempts (the hot loop made ~900 a second).
        let mut retry = Retry::new(Duration::from_millis(200), Duration::from_secs(5));
        let mut elapsed = Duration::ZERO;
        let mut attempts = 0;
        while elapsed < Duration::from_secs(14) {
            attempts += 1;
            elapsed += retry.failed(0.0);
        }
        assert!(attempts <= 12, "{attempts}");
    }
}
