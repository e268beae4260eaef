//! Rate limits per user and per client IP (governor), answered with `RESOURCE_EXHAUSTED` and a
//! retry delay; and what every front end shares about overload (timeout, concurrency limit,
//! load shedding): the errors tower's layers produce, turned into stable codes.
//!
//! Limits are per gateway process. A client spread over several gateways gets each gateway's
//! allowance, which is fine: the limits protect the gateway and the nodes behind it from one
//! noisy caller, they are not a billing quota.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bongsu_proto::model::UserId;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::config::Config;
use crate::errors::{ApiError, Result};

/// Forgotten keys are swept out after this many checks of one limiter, which bounds memory by
/// the keys seen recently rather than by every address that ever connected.
const SWEEP_EVERY: u64 = 16 * 1024;

/// How long a shed request is told to wait before retrying.
pub const OVERLOAD_RETRY_AFTER: Duration = Duration::from_secs(1);

/// One keyed limiter and the count of checks since it was last swept.
struct Keyed<K: Hash + Eq + Clone, C: Clock> {
    limiter: RateLimiter<K, DashMapStateStore<K>, C, NoOpMiddleware<C::Instant>>,
    checks: AtomicU64,
    what: &'static str,
}

impl<K: Hash + Eq + Clone, C: Clock> Keyed<K, C> {
    fn new(quota: Quota, clock: C, what: &'static str) -> Self {
        Keyed {
            limiter: RateLimiter::dashmap_with_clock(quota, clock),
            checks: AtomicU64::new(0),
            what,
        }
    }

    fn check(&self, key: &K) -> Result<()> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep();
        }
        self.limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.limiter.clock().now());
            ApiError::exhausted(format!("too many {}; retry later", self.what), wait)
        })
    }

    /// Drops keys whose state is indistinguishable from a fresh one (their bucket is full).
    fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// The gateway's rate limits, checked by every front end (HTTP, WebSocket, gRPC).
///
/// The clock is a parameter only so tests can move time by hand.
pub struct RateLimits<C: Clock = DefaultClock> {
    user: Option<Keyed<UserId, C>>,
    ip: Option<Keyed<IpAddr, C>>,
    auth: Option<Keyed<IpAddr, C>>,
}

impl RateLimits {
    pub fn new(config: &Config) -> Self {
        RateLimits::with_clock(config, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimits<C> {
    /// Limits from `config`; a rate of 0 turns that limit off.
    pub fn with_clock(config: &Config, clock: C) -> Self {
        let per_second_burst_2x = |rate: u32| {
            let rate = NonZeroU32::new(rate)?;
            let burst = rate.saturating_mul(NonZeroU32::MIN.saturating_add(1));
            Some(Quota::per_second(rate).allow_burst(burst))
        };
        RateLimits {
            user: per_second_burst_2x(config.user_rate)
                .map(|q| Keyed::new(q, clock.clone(), "requests from this user")),
            ip: per_second_burst_2x(config.ip_rate)
                .map(|q| Keyed::new(q, clock.clone(), "requests from this address")),
            // Sign-in attempts get no extra burst: guessing passwords should stay slow.
            auth: NonZeroU32::new(config.auth_rate_per_min).map(|n| {
                Keyed::new(
                    Quota::per_minute(n),
                    clock.clone(),
                    "sign-in attempts from this address",
                )
            }),
        }
    }

    /// One request by `user`; `RESOURCE_EXHAUSTED` with `retry_after` when over the limit.
    pub fn check_user(&self, user: &UserId) -> Result<()> {
        self.user.as_ref().map_or(Ok(()), |l| l.check(user))
    }

    /// One request from `ip`.
    pub fn check_ip(&self, ip: IpAddr) -> Result<()> {
        self.ip
            .as_ref()
            .map_or(Ok(()), |l| l.check(&client_key(ip)))
    }

    /// One sign-up, sign-in or refresh attempt from `ip` (a much lower limit).
    pub fn check_auth(&self, ip: IpAddr) -> Result<()> {
        self.auth
            .as_ref()
            .map_or(Ok(()), |l| l.check(&client_key(ip)))
    }

    /// Forgets every key whose allowance is full again (also done every few thousand checks).
    pub fn sweep(&self) {
        self.user.iter().for_each(Keyed::sweep);
        self.ip.iter().for_each(Keyed::sweep);
        self.auth.iter().for_each(Keyed::sweep);
    }

    /// Keys held by the user, IP and auth limiters, for tests and metrics.
    pub fn tracked_keys(&self) -> (usize, usize, usize) {
        (
            self.user.as_ref().map_or(0, |l| l.limiter.len()),
            self.ip.as_ref().map_or(0, |l| l.limiter.len()),
            self.auth.as_ref().map_or(0, |l| l.limiter.len()),
        )
    }
}

/// The key one client is limited under. An IPv6 host usually owns a whole /64, so limiting
/// single addresses would let it rotate through 2^64 fresh allowances; IPv4-mapped IPv6
/// addresses count as the IPv4 address they carry.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                IpAddr::V6(seg.into())
            }
        },
    }
}

/// The stable error for what tower's shared layers fail a request with: a deadline that passed
/// (`UNAVAILABLE`: the cluster could not answer in time) or load shedding (`UNAVAILABLE` with
/// `Retry-After`). Overload is `UNAVAILABLE` rather than `RESOURCE_EXHAUSTED` because it is the
/// gateway that is full, not the caller that asked too much: any other gateway may serve the
/// same request at once, and clients already retry `UNAVAILABLE` with backoff.
pub fn tower_error(
    err: &(dyn std::error::Error + Send + Sync + 'static),
    timeout: Duration,
) -> ApiError {
    if err.is::<tower::timeout::error::Elapsed>() {
        ApiError::unavailable(format!(
            "the request did not finish within {} ms",
            timeout.as_millis()
        ))
    } else if err.is::<tower::load_shed::error::Overloaded>() {
        ApiError {
            retry_after: Some(OVERLOAD_RETRY_AFTER),
            ..ApiError::unavailable("this gateway is at its concurrency limit; retry shortly")
        }
    } else {
        ApiError::unavailable(format!("the request failed: {err}"))
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use bongsu_proto::ErrorCode;
    use clap::Parser;
    use governor::clock::FakeRelativeClock;

    use super::*;

    #[derive(clap::Parser)]
    struct Args {
        #[command(flatten)]
        config: Config,
    }

    fn config(extra: &[&str]) -> Config {
        let mut args = vec!["gw", "--nodes=127.0.0.1:1"];
        args.extend_from_slice(extra);
        Args::parse_from(args).config
    }

    #[test]
    fn user_limit_allows_a_burst_of_twice_the_rate_then_says_when_to_retry() {
        let clock = FakeRelativeClock::default();
        let limits = RateLimits::with_clock(&config(&["--user-rate=2"]), clock.clone());
        let (a, b) = (UserId::from_u128(1), UserId::from_u128(2));
        for i in 0..4 {
            assert_eq!(
                limits.check_user(&a),
                Ok(()),
                "request {i} is within the burst"
            );
        }
        let err = limits
            .check_user(&a)
            .expect_err("the fifth request is over the burst");
        assert_eq!(err.code, ErrorCode::ResourceExhausted);
        let wait = err.retry_after.expect("a retry delay");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert_eq!(err.retry_after_secs(), Some(1));
        // Another user is not affected, and the first one may go on after the delay.
        assert_eq!(limits.check_user(&b), Ok(()));
        clock.advance(wait);
        assert_eq!(limits.check_user(&a), Ok(()));
    }

    #[test]
    fn auth_limit_is_per_minute_without_extra_burst() {
        let clock = FakeRelativeClock::default();
        let limits = RateLimits::with_clock(&config(&["--auth-rate-per-min=3"]), clock.clone());
        let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        for _ in 0..3 {
            assert_eq!(limits.check_auth(ip), Ok(()));
        }
        let err = limits
            .check_auth(ip)
            .expect_err("the fourth attempt in a minute");
        assert_eq!(err.code, ErrorCode::ResourceExhausted);
        assert_eq!(err.retry_after_secs(), Some(20));
        // Auth attempts and ordinary requests are counted apart.
        assert_eq!(limits.check_ip(ip), Ok(()));
    }

    #[test]
    fn a_rate_of_zero_turns_a_limit_off() {
        let limits = RateLimits::with_clock(
            &config(&["--user-rate=0", "--ip-rate=0", "--auth-rate-per-min=0"]),
            FakeRelativeClock::default(),
        );
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        for _ in 0..1000 {
            assert_eq!(limits.check_user(&UserId::from_u128(7)), Ok(()));
            assert_eq!(limits.check_ip(ip), Ok(()));
            assert_eq!(limits.check_auth(ip), Ok(()));
        }
    }

    #[test]
    fn ipv6_clients_are_limited_per_slash_64() {
        let limits =
            RateLimits::with_clock(&config(&["--ip-rate=1"]), FakeRelativeClock::default());
        let host = |last: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, last));
        assert_eq!(limits.check_ip(host(1)), Ok(()));
        assert_eq!(limits.check_ip(host(2)), Ok(()));
        assert!(
            limits.check_ip(host(3)).is_err(),
            "same /64, burst of 2 used up"
        );
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        assert_eq!(client_key(mapped), IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    }

    #[test]
    fn memory_stays_bounded_by_recent_keys() {
        let clock = FakeRelativeClock::default();
        let limits = RateLimits::with_clock(&config(&["--ip-rate=100"]), clock.clone());
        for i in 0..1000u32 {
            assert_eq!(limits.check_ip(IpAddr::V4(Ipv4Addr::from(i))), Ok(()));
        }
        assert_eq!(limits.tracked_keys().1, 1000);
        // A second later every bucket is full again: nothing distinguishes those keys from
        // ones never seen, so a sweep forgets them.
        clock.advance(Duration::from_secs(1));
        limits.sweep();
        assert_eq!(limits.tracked_keys().1, 0);
        // Sweeps also happen by themselves as checks go by.
        for i in 0..SWEEP_EVERY as u32 {
            clock.advance(Duration::from_millis(1));
            let _ = limits.check_ip(IpAddr::V4(Ipv4Addr::from(i)));
        }
        assert!(
            limits.tracked_keys().1 < SWEEP_EVERY as usize,
            "{:?}",
            limits.tracked_keys()
        );
    }

    #[test]
    fn tower_errors_become_unavailable() {
        let t = Duration::from_millis(250);
        let shed = tower_error(&tower::load_shed::error::Overloaded::new(), t);
        assert_eq!(shed.code, ErrorCode::Unavailable);
        assert_eq!(shed.retry_after_secs(), Some(1));
        let late = tower_error(&tower::timeout::error::Elapsed::new(), t);
        assert_eq!(late.code, ErrorCode::Unavailable);
        assert!(late.message.contains("250 ms"), "{}", late.message);
    }
}
