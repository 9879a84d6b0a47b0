//! Server-added latency: from a frame's arrival at the ingest to the first packet of it
//! leaving the UDP socket. Every frame of a session is counted in a histogram of fixed size
//! (~1 KiB, made at the first sample), whose buckets are at most 1/8 of their value wide.

use std::time::Duration;

/// Exact buckets below this many microseconds.
const EXACT: u32 = 16;
/// Buckets per power of two above [`EXACT`].
const STEPS: u32 = 8;
const BUCKETS: usize = (EXACT + (32 - 4) * STEPS) as usize;

/// A histogram of latencies, in microseconds.
#[derive(Debug, Default)]
pub(crate) struct Latency {
    counts: Vec<u32>,
}

fn bucket(us: u32) -> usize {
    if us < EXACT {
        return us as usize;
    }
    let exponent = 31 - us.leading_zeros(); // 4..=31
    let step = (us >> (exponent - 3)) & (STEPS - 1);
    (EXACT + (exponent - 4) * STEPS + step) as usize
}

/// The middle of a bucket.
fn value(bucket: usize) -> u32 {
    let b = bucket as u32;
    if b < EXACT {
        return b;
    }
    let exponent = 4 + (b - EXACT) / STEPS;
    let step = (b - EXACT) % STEPS;
    let width = 1u32 << (exponent - 3);
    (STEPS + step) * width + width / 2
}

impl Latency {
    pub(crate) fn record(&mut self, d: Duration) {
        let us = u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS];
        }
        if let Some(count) = self.counts.get_mut(bucket(us)) {
            *count = count.saturating_add(1);
        }
    }

    /// (count, p50, p99) in microseconds.
    pub(crate) fn summary(&self) -> Option<(usize, u32, u32)> {
        let total: usize = self.counts.iter().map(|&c| c as usize).sum();
        if total == 0 {
            return None;
        }
        let at = |q: f64| {
            let rank = ((total - 1) as f64 * q).round() as u64;
            let mut seen = 0u64;
            for (b, &count) in self.counts.iter().enumerate() {
                seen += u64::from(count);
                if seen > rank {
                    return value(b);
                }
            }
            value(BUCKETS - 1)
        };
        Some((total, at(0.5), at(0.99)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_within_an_eighth() {
        let mut l = Latency::default();
        assert_eq!(l.summary(), None);
        for us in 1..=10_000u64 {
            l.record(Duration::from_micros(us));
        }
        let (n, p50, p99) = l.summary().expect("samples");
        assert_eq!(n, 10_000);
        assert!((4_500..=5_600).contains(&p50), "{p50}");
        assert!((8_900..=11_000).contains(&p99), "{p99}");
    }

    #[test]
    fn every_value_lands_in_a_bucket_near_it() {
        for us in [
            0,
            1,
            15,
            16,
            17,
            100,
            1_000,
            65_535,
            1 << 20,
            u32::MAX - 1,
            u32::MAX,
        ] {
            let b = bucket(us);
            assert!(b < BUCKETS, "{us} -> {b}");
            let v = f64::from(value(b));
            assert!(
                (v - f64::from(us)).abs() <= f64::from(us) / 8.0 + 1.0,
                "{us} -> {v}"
            );
        }
        let huge = Duration::from_secs(10_000);
        let mut l = Latency::default();
        l.record(huge);
        assert_eq!(l.summary().map(|s| s.0), Some(1));
    }
}
