//! Server-added latency: from a frame's arrival at the ingest to the first packet of it
//! leaving the UDP socket. Bounded: keeps the latest [`Latency::CAP`] samples.

use std::time::Duration;

/// A bounded sample of latencies, in microseconds.
#[derive(Debug, Default)]
pub(crate) struct Latency {
    samples: Vec<u32>,
    next: usize,
}

impl Latency {
    pub(crate) const CAP: usize = 4096;

    pub(crate) fn record(&mut self, d: Duration) {
        let us = u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
        if self.samples.len() < Self::CAP {
            self.samples.push(us);
        } else {
            self.samples[self.next] = us;
            self.next = (self.next + 1) % Self::CAP;
        }
    }

    /// (count, p50, p99) in microseconds.
    pub(crate) fn summary(&self) -> Option<(usize, u32, u32)> {
        if self.samples.is_empty() {
            return None;
        }
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        Some((sorted.len(), at(0.5), at(0.99)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_bound() {
        let mut l = Latency::default();
        assert_eq!(l.summary(), None);
        for us in 1..=10_000u64 {
            l.record(Duration::from_micros(us));
        }
        let (n, p50, p99) = l.summary().unwrap();
        assert_eq!(n, Latency::CAP);
        assert!(p50 > 5_904 && p99 > p50, "{p50} {p99}");
    }
}
