//! A rate per client address: at most `burst` at once, refilled at `per_minute`. The front
//! counts new connections and WHIP/WHEP posts with it. IPv6 counts by its /64. Pure: time is an
//! argument. The table is bounded: when full, addresses whose bucket is full again (idle long
//! enough to have nothing to remember) are forgotten, and if none are, the newcomer is refused
//! (a flood of distinct addresses cannot grow memory).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Addresses remembered at most.
pub const MAX_ADDRESSES: usize = 65_536;

/// One limit (e.g. "WHIP/WHEP posts"); cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct RatePerIp {
    burst: f64,
    per_second: f64,
    capacity: usize,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
    refused: AtomicU64,
}

impl RatePerIp {
    /// `burst` at once, `per_minute` on average; 0 for either: no limit.
    pub fn new(burst: u32, per_minute: u32) -> Self {
        Self::with_capacity(burst, per_minute, MAX_ADDRESSES)
    }

    fn with_capacity(burst: u32, per_minute: u32, capacity: usize) -> Self {
        Self {
            burst: f64::from(burst),
            per_second: f64::from(per_minute) / 60.0,
            capacity,
            buckets: Mutex::default(),
            refused: AtomicU64::new(0),
        }
    }

    /// Takes one for `ip` at `now`; false (and counted) when it has none left.
    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        if self.burst == 0.0 || self.per_second == 0.0 {
            return true;
        }
        let ip = admission::limits::client_key(ip);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.contains_key(&ip) && buckets.len() >= self.capacity {
            let (burst, rate) = (self.burst, self.per_second);
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < burst
            });
            if buckets.len() >= self.capacity {
                drop(buckets);
                self.refused.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        }
        let (tokens, at) = buckets.entry(ip).or_insert((self.burst, now));
        let refilled = *tokens + now.saturating_duration_since(*at).as_secs_f64() * self.per_second;
        *tokens = refilled.min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            drop(buckets);
            self.refused.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Refusals so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_burst_then_the_rate() {
        let rate = RatePerIp::new(3, 60);
        let t = Instant::now();
        assert!((0..3).all(|_| rate.allow(ip("192.0.2.1"), t)));
        assert!(!rate.allow(ip("192.0.2.1"), t));
        assert!(rate.allow(ip("192.0.2.2"), t), "others are not touched");
        assert!(rate.allow(ip("192.0.2.1"), t + Duration::from_secs(1)));
        assert!(!rate.allow(ip("192.0.2.1"), t + Duration::from_secs(1)));
        assert_eq!(rate.refused(), 2);
        // One /64 is one client.
        assert!(rate.allow(ip("2001:db8::1"), t));
        let rate = RatePerIp::new(1, 60);
        assert!(rate.allow(ip("2001:db8::1"), t));
        assert!(!rate.allow(ip("2001:db8::2"), t));
    }

    #[test]
    fn zero_is_no_limit() {
        let rate = RatePerIp::new(0, 0);
        assert!((0..1000).all(|_| rate.allow(ip("192.0.2.1"), Instant::now())));
    }

    #[test]
    fn the_table_is_bounded() {
        let rate = RatePerIp::with_capacity(2, 60, 4);
        let t = Instant::now();
        for n in 0..4 {
            assert!(rate.allow(IpAddr::from([10, 0, 0, n]), t));
        }
        // Full of addresses still remembered: a fifth is refused, not stored.
        assert!(!rate.allow(ip("10.0.0.9"), t));
        // Once their buckets refilled, they are forgotten and room is made.
        assert!(rate.allow(ip("10.0.0.9"), t + Duration::from_secs(5)));
        assert!(rate.buckets.lock().unwrap().len() <= 4);
    }
}
