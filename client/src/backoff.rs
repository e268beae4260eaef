//! Exponential backoff with jitter, for retries and reconnects.
//!
//! Jitter matters here: when a gateway dies, every device connected to it reconnects at once,
//! and without it they would all hit the next gateway in the same instant, again and again.

use std::time::Duration;

/// Delays that double from `initial` up to `max`, each drawn at random from its upper half
/// ("equal jitter"): never shorter than half the nominal delay, so retries still slow down.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// The delay before the next attempt, with fresh randomness.
    pub fn next_delay(&mut self) -> Duration {
        let d = delay(self.initial, self.max, self.attempt, rand::random::<f64>());
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// Starts over after a success, so that the next failure is retried quickly.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Attempts made since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

/// The delay of attempt `n` (0-based) for a random `unit` in `[0, 1)`.
fn delay(initial: Duration, max: Duration, n: u32, unit: f64) -> Duration {
    // 2^20 times any sensible initial delay is past any sensible maximum; capping the exponent
    // keeps the multiplication from overflowing.
    let nominal = initial.saturating_mul(1u32 << n.min(20)).min(max);
    let half = nominal / 2;
    half + half.mul_f64(unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn doubles_up_to_the_cap_within_the_upper_half() {
        let table = [
            // (attempt, unit, expected)
            (0, 0.0, MS(50)),
            (0, 1.0, MS(100)),
            (1, 0.0, MS(100)),
            (1, 0.5, MS(150)),
            (2, 1.0, MS(400)),
            (5, 0.0, MS(1000)),
            (6, 1.0, MS(2000)),
            (40, 1.0, MS(2000)),
            (u32::MAX, 0.0, MS(1000)),
        ];
        for (n, unit, want) in table {
            assert_eq!(
                delay(MS(100), MS(2000), n, unit),
                want,
                "attempt {n} unit {unit}"
            );
        }
    }

    #[test]
    fn random_delays_stay_in_bounds_and_reset_starts_over() {
        let mut b = Backoff::new(MS(10), MS(80));
        let mut last_nominal = MS(0);
        for n in 0..10 {
            let d = b.next_delay();
            let nominal = MS(10).saturating_mul(1 << n).min(MS(80));
            assert!(d >= nominal / 2 && d <= nominal, "attempt {n}: {d:?}");
            assert!(nominal >= last_nominal);
            last_nominal = nominal;
        }
        assert_eq!(b.attempts(), 10);
        b.reset();
        assert!(b.next_delay() <= MS(10));
    }
}
