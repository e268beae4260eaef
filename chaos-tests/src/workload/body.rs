//! The message bodies writers send: sizes drawn from [`BodyMix`], content derived from the
//! writer's seeded random stream, so that a run with the same seed sends the same bytes.

use rand::Rng;

/// Bodies of the first class are shorter than this (1 KiB).
pub const SMALL_BELOW: usize = 1024;
/// Bodies of the second class are shorter than this (16 KiB).
pub const MEDIUM_BELOW: usize = 16 * 1024;
/// The shortest body: room for the `w{writer} n{number} ` prefix.
pub const MIN_BODY: usize = 32;

/// How writers draw the sizes of message bodies, so that the chaos runs carry real payloads
/// and not only chat-line-sized ones:
///
/// - 60 %: under 1 KiB (`MIN_BODY..1024` bytes);
/// - 30 %: from 1 KiB up to 16 KiB (`1024..16384`);
/// - 10 %: from 16 KiB up to the largest body the nodes accept (`16384..=max`), a quarter of
///   these (2.5 % of all bodies) exactly `max` long, so that every run sends bodies at the
///   limit.
///
/// Every size is uniform within its class. With the node's 64 KiB limit the mean body is
/// about 7.6 KB, and the 10 % of large bodies carry over 60 % of the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyMix {
    /// The largest body, inclusive: the limit the nodes enforce.
    pub max: usize,
}

/// Draws out of 1000: the small class, the medium class, the large class below the limit,
/// and bodies at the limit.
const SMALL_PER_MILLE: u32 = 600;
const MEDIUM_PER_MILLE: u32 = 300;
const LARGE_PER_MILLE: u32 = 75;
const AT_LIMIT_PER_MILLE: u32 = 25;

impl BodyMix {
    /// A mix up to `max` bytes (inclusive), which must be at least 16 KiB.
    pub fn new(max: usize) -> Self {
        assert!(
            max >= MEDIUM_BELOW,
            "the largest body ({max} bytes) must be at least {MEDIUM_BELOW}"
        );
        Self { max }
    }

    /// The mix up to the largest body a cluster accepts: the limit the node writes into the
    /// cluster configuration at init (`max_body_bytes`, which becomes every replica's
    /// `SmConfig`), 64 KiB. A body of exactly this size is accepted; one byte more is
    /// `MESSAGE_TOO_LARGE`.
    pub fn cluster_default() -> Self {
        Self::new(bongsu_proto::model::DEFAULT_MAX_BODY_BYTES)
    }

    /// Draws one body size.
    pub fn size(&self, rng: &mut impl Rng) -> usize {
        let draw = rng.random_range(0..1000u32);
        if draw < SMALL_PER_MILLE {
            rng.random_range(MIN_BODY..SMALL_BELOW)
        } else if draw < SMALL_PER_MILLE + MEDIUM_PER_MILLE {
            rng.random_range(SMALL_BELOW..MEDIUM_BELOW)
        } else if draw < SMALL_PER_MILLE + MEDIUM_PER_MILLE + LARGE_PER_MILLE {
            rng.random_range(MEDIUM_BELOW..=self.max)
        } else {
            self.max
        }
    }

    /// The expected body size, in bytes.
    pub fn mean(&self) -> f64 {
        let mid = |lo: usize, hi: usize| (lo + hi) as f64 / 2.0;
        (SMALL_PER_MILLE as f64 * mid(MIN_BODY, SMALL_BELOW - 1)
            + MEDIUM_PER_MILLE as f64 * mid(SMALL_BELOW, MEDIUM_BELOW - 1)
            + LARGE_PER_MILLE as f64 * mid(MEDIUM_BELOW, self.max)
            + AT_LIMIT_PER_MILLE as f64 * self.max as f64)
            / 1000.0
    }

    /// Writer `w`'s `n`-th body: a size from the mix, starting with `w{w} n{n} ` and filled up
    /// with printable ASCII from `rng` (valid UTF-8, as text messages must be, and not
    /// trivially compressible).
    pub fn body(&self, rng: &mut impl Rng, w: u32, n: u64) -> Vec<u8> {
        let size = self.size(rng);
        fill(rng, format!("w{w} n{n} ").into_bytes(), size)
    }
}

const ALPHABET: &[u8; 64] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .";

/// `prefix` (cut to `size` if longer), filled up to exactly `size` bytes from `rng`.
fn fill(rng: &mut impl Rng, mut body: Vec<u8>, size: usize) -> Vec<u8> {
    body.truncate(size);
    body.reserve(size - body.len());
    while body.len() < size {
        // Eight characters (six bits each) per draw.
        let mut bits = rng.random::<u64>();
        for _ in 0..8.min(size - body.len()) {
            body.push(ALPHABET[(bits & 63) as usize]);
            bits >>= 6;
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn the_mix_is_the_clusters_limit() {
        let mix = BodyMix::cluster_default();
        assert_eq!(mix.max, 65_536);
        assert_eq!(mix.max, bongsu_proto::model::DEFAULT_MAX_BODY_BYTES);
        // The node accepts a body of exactly the limit and refuses one byte more.
        let kind = bongsu_proto::model::MessageKind::Text;
        let at = vec![b'a'; mix.max];
        assert!(bongsu_proto::model::validate_body(kind, &at, mix.max).is_ok());
        let over = vec![b'a'; mix.max + 1];
        assert!(bongsu_proto::model::validate_body(kind, &over, mix.max).is_err());
    }

    #[test]
    fn sizes_follow_the_mix() {
        let mix = BodyMix::cluster_default();
        let mut rng = StdRng::seed_from_u64(7);
        let n = 200_000;
        let (mut small, mut medium, mut large, mut at_limit) = (0, 0, 0, 0);
        let (mut lo, mut hi, mut total) = (usize::MAX, 0, 0u64);
        for _ in 0..n {
            let s = mix.size(&mut rng);
            assert!((MIN_BODY..=mix.max).contains(&s), "size {s} out of bounds");
            lo = lo.min(s);
            hi = hi.max(s);
            total += s as u64;
            match s {
                _ if s < SMALL_BELOW => small += 1,
                _ if s < MEDIUM_BELOW => medium += 1,
                _ => {
                    large += 1;
                    if s == mix.max {
                        at_limit += 1;
                    }
                }
            }
        }
        let share = |k: u32| k as f64 / n as f64;
        // 200,000 draws: the standard error of a share near 0.5 is about 0.0011.
        assert!((share(small) - 0.60).abs() < 0.01, "small {}", share(small));
        assert!(
            (share(medium) - 0.30).abs() < 0.01,
            "medium {}",
            share(medium)
        );
        assert!(
            (share(large) - 0.10).abs() < 0.005,
            "large {}",
            share(large)
        );
        assert!(
            (share(at_limit) - 0.025).abs() < 0.003,
            "at the limit {}",
            share(at_limit)
        );
        // Both ends are reached.
        assert!(lo < MIN_BODY + 10, "smallest {lo}");
        assert_eq!(hi, mix.max);
        let mean = total as f64 / n as f64;
        assert!(
            (mean - mix.mean()).abs() / mix.mean() < 0.02,
            "mean {mean} vs expected {}",
            mix.mean()
        );
        // The large bodies carry most of the bytes.
        assert!(mix.mean() > 7000.0 && mix.mean() < 8000.0, "{}", mix.mean());
    }

    #[test]
    fn bodies_are_deterministic_text_of_the_drawn_size() {
        let mix = BodyMix::cluster_default();
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (1..=200)
                .map(|n| mix.body(&mut rng, 3, n))
                .collect::<Vec<_>>()
        };
        let a = draw(11);
        assert_eq!(a, draw(11), "the same seed gives the same bodies");
        assert_ne!(a, draw(12), "another seed gives other bodies");
        let mut sizes = StdRng::seed_from_u64(11);
        for (i, b) in a.iter().enumerate() {
            let n = i + 1;
            assert!(b.starts_with(format!("w3 n{n} ").as_bytes()));
            assert!(std::str::from_utf8(b).is_ok(), "body {n} is not UTF-8");
            assert!(b.len() >= MIN_BODY && b.len() <= mix.max);
            // The size is the mix's first draw from the same stream.
            let want = mix.size(&mut sizes);
            assert_eq!(b.len(), want, "body {n}");
            // Skip the filler draws the body took (one u64 per 8 filler bytes).
            let prefix = format!("w3 n{n} ").len().min(want);
            for _ in 0..(want - prefix).div_ceil(8) {
                let _: u64 = sizes.random();
            }
        }
        // Bodies differ beyond their prefix.
        assert_ne!(a[0][12..20], a[1][12..20]);
    }
}
