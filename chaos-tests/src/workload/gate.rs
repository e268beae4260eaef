//! The one byte-rate gate every writer passes before a send: a token bucket in bytes, shared
//! by all writers, so that the workload as a whole offers a set number of body bytes per
//! second however many writers there are and whichever shards are slow.
//!
//! It starts open (no limit: the calibration measures what the cluster acknowledges when
//! writers send without a pause) and is then set to a rate ([`RateGate::set_rate`]).
//!
//! A send reserves its bytes at once and waits until the bucket has paid for them: the bucket
//! may go into debt, and each later reservation waits behind the debt, so senders are spaced
//! evenly in the order they arrived and a large body costs as much as its bytes. An idle gate
//! saves up at most [`BURST`] worth of its rate.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How much an idle gate may save up, as time at its rate.
pub const BURST: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct Bucket {
    /// Bytes per second; `None` while the gate is open.
    rate: Option<f64>,
    /// Bytes available (negative: owed by the reservations already made).
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
}

/// See the module docs.
#[derive(Debug)]
pub struct RateGate {
    bucket: Mutex<Bucket>,
}

impl Default for RateGate {
    fn default() -> Self {
        Self::open()
    }
}

impl RateGate {
    /// A gate that lets everything through.
    pub fn open() -> Self {
        Self {
            bucket: Mutex::new(Bucket {
                rate: None,
                tokens: 0.0,
                at: Instant::now(),
            }),
        }
    }

    /// From now on, `bytes_per_s` (at least 1) bytes per second, starting with an empty
    /// bucket.
    pub fn set_rate(&self, bytes_per_s: u64) {
        self.set_rate_at(bytes_per_s, Instant::now());
    }

    /// The rate, or `None` while the gate is open.
    pub fn rate(&self) -> Option<u64> {
        self.bucket
            .lock()
            .expect("gate lock")
            .rate
            .map(|r| r as u64)
    }

    fn set_rate_at(&self, bytes_per_s: u64, now: Instant) {
        let mut b = self.bucket.lock().expect("gate lock");
        b.rate = Some(bytes_per_s.max(1) as f64);
        b.tokens = 0.0;
        b.at = now;
    }

    /// Reserves `bytes` at `now` and returns how long the caller must wait before sending
    /// them.
    fn reserve_at(&self, bytes: u64, now: Instant) -> Duration {
        let mut b = self.bucket.lock().expect("gate lock");
        let Some(rate) = b.rate else {
            return Duration::ZERO;
        };
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.at = b.at.max(now);
        b.tokens = (b.tokens + elapsed * rate).min(rate * BURST.as_secs_f64());
        b.tokens -= bytes as f64;
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / rate)
        }
    }

    /// Waits until `bytes` may be sent.
    pub async fn pass(&self, bytes: u64) {
        let wait = self.reserve_at(bytes, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whole milliseconds, rounded (the waits are computed in floating point).
    fn ms(d: Duration) -> u64 {
        (d.as_secs_f64() * 1000.0).round() as u64
    }

    #[test]
    fn an_open_gate_never_waits() {
        let g = RateGate::open();
        let t = Instant::now();
        for _ in 0..1000 {
            assert_eq!(g.reserve_at(1 << 20, t), Duration::ZERO);
        }
        assert_eq!(g.rate(), None);
    }

    #[test]
    fn reservations_queue_behind_each_other_at_the_rate() {
        let g = RateGate::open();
        let t0 = Instant::now();
        g.set_rate_at(1_000_000, t0);
        assert_eq!(g.rate(), Some(1_000_000));
        // Ten 100 kB sends at once: each waits 100 ms longer than the one before.
        let waits: Vec<u64> = (0..10).map(|_| ms(g.reserve_at(100_000, t0))).collect();
        assert_eq!(waits, [100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]);
        // Half a second later the debt is half paid.
        assert_eq!(ms(g.reserve_at(0, t0 + Duration::from_millis(500))), 500);
    }

    #[test]
    fn an_idle_gate_saves_up_one_burst_only() {
        let g = RateGate::open();
        let t0 = Instant::now();
        g.set_rate_at(1_000_000, t0);
        // Idle for ten seconds: 100 ms worth (100 kB) is saved, not 10 MB.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(g.reserve_at(100_000, t1), Duration::ZERO);
        assert_eq!(ms(g.reserve_at(100_000, t1)), 100);
    }

    #[test]
    fn the_rate_holds_over_time() {
        // Sends of mixed sizes, each made as soon as the gate allows: the bytes passed over a
        // simulated minute match the rate.
        let g = RateGate::open();
        let t0 = Instant::now();
        let rate = 2_500_000u64;
        g.set_rate_at(rate, t0);
        let sizes = [300u64, 65_536, 8_000, 700, 40_000, 12_345, 64];
        let (mut now, mut sent, mut i) = (t0, 0u64, 0usize);
        while now < t0 + Duration::from_secs(60) {
            let size = sizes[i % sizes.len()];
            i += 1;
            now += g.reserve_at(size, now);
            sent += size;
        }
        let per_s = sent as f64 / now.duration_since(t0).as_secs_f64();
        assert!(
            (per_s - rate as f64).abs() / (rate as f64) < 0.01,
            "{per_s} bytes/s"
        );
    }

    #[tokio::test]
    async fn pass_sleeps_for_the_reservation() {
        let g = RateGate::open();
        g.set_rate(10_000);
        let t = Instant::now();
        // 1 kB, then 1 kB more, at 10 kB/s: 100 ms each.
        g.pass(1_000).await;
        g.pass(1_000).await;
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(195) && took < Duration::from_millis(400),
            "{took:?}"
        );
    }
}
