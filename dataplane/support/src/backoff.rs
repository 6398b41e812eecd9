//! Retry pacing shared by every loop that reconnects or re-writes: the dataplane's sync
//! client and the controller's API writes.

use std::time::Duration;

/// Exponential backoff with jitter: each wait is drawn from [d/2, d], d doubling from
/// `initial` to `max`; it starts over after a stream that delivered a table.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// The wait before attempt `failures + 1`, given a random `unit` in [0, 1).
    pub fn delay(&self, failures: u32, unit: f64) -> Duration {
        let ceiling = self
            .initial
            .saturating_mul(1u32 << failures.min(20))
            .min(self.max);
        ceiling.mul_f64(0.5 + unit / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_ceiling_with_jitter_in_the_upper_half() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        assert_eq!(b.delay(0, 0.0), Duration::from_millis(50));
        assert_eq!(b.delay(0, 0.999_999).as_millis(), 99);
        assert_eq!(b.delay(3, 0.0), Duration::from_millis(400));
        assert_eq!(b.delay(10, 0.0), Duration::from_secs(1));
        assert_eq!(b.delay(u32::MAX, 0.0), Duration::from_secs(1));
    }
}
