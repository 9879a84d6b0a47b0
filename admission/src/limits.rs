//! Per-client-address caps: how many connections (or sessions) one IP address may hold at once
//! on a listener. An IPv6 client counts by its /64, which one host or one home gets whole.
//! Refusals are counted per listener for `/metrics`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The caps of one listener (`protocol`): `limit` at once per client address; 0 is no cap.
#[derive(Clone)]
pub struct PerIp {
    inner: Arc<Inner>,
}

struct Inner {
    limit: usize,
    held: Mutex<HashMap<IpAddr, usize>>,
    refused: Arc<AtomicU64>,
}

/// One connection's (or session's) place under its address's cap; dropping it gives it back.
#[must_use = "the place is given back when the permit is dropped"]
pub struct IpPermit {
    inner: Option<(Arc<Inner>, IpAddr)>,
}

impl std::fmt::Debug for IpPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IpPermit")
    }
}

/// The address a client is counted under: IPv4 (IPv4-mapped too) as is, IPv6 by its /64.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
        v4 => v4,
    }
}

impl PerIp {
    fn new(limit: usize, refused: Arc<AtomicU64>) -> Self {
        Self {
            inner: Arc::new(Inner {
                limit,
                held: Mutex::default(),
                refused,
            }),
        }
    }

    /// A place for one more connection from `ip`, unless it holds its cap already: then the
    /// refusal is counted, and the count so far is the error (to log the 1st, 2nd, 4th, ...).
    pub fn try_acquire(&self, ip: IpAddr) -> Result<IpPermit, u64> {
        if self.inner.limit == 0 {
            return Ok(IpPermit { inner: None });
        }
        let ip = client_key(ip);
        let mut held = self.inner.held.lock().unwrap_or_else(|e| e.into_inner());
        let count = held.entry(ip).or_insert(0);
        if *count >= self.inner.limit {
            drop(held);
            return Err(self.inner.refused.fetch_add(1, Ordering::Relaxed) + 1);
        }
        *count += 1;
        Ok(IpPermit {
            inner: Some((self.inner.clone(), ip)),
        })
    }

    /// The cap per address (0: none).
    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// Addresses holding at least one place (bounded by the connections served at once).
    pub fn addresses(&self) -> usize {
        self.inner
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

impl Drop for IpPermit {
    fn drop(&mut self) {
        let Some((inner, ip)) = self.inner.take() else {
            return;
        };
        let mut held = inner.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = held.get_mut(&ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&ip);
            }
        }
    }
}

/// Every listener's per-address cap, and what each refused, for `/metrics`.
#[derive(Default)]
pub struct Limits {
    refused: Mutex<Vec<(&'static str, Arc<AtomicU64>)>>,
}

impl Limits {
    /// The cap for `protocol`'s listener: `limit` per client address (0: none).
    pub fn per_ip(&self, protocol: &'static str, limit: usize) -> PerIp {
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        let counter = match refused.iter().find(|(p, _)| *p == protocol) {
            Some((_, counter)) => counter.clone(),
            None => {
                let counter = Arc::new(AtomicU64::new(0));
                refused.push((protocol, counter.clone()));
                counter
            }
        };
        PerIp::new(limit, counter)
    }

    /// Refusals so far, by listener.
    pub fn refused(&self) -> Vec<(&'static str, u64)> {
        let refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        refused
            .iter()
            .map(|(p, c)| (*p, c.load(Ordering::Relaxed)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_holds_at_most_its_cap_and_gets_places_back() {
        let limits = Limits::default();
        let cap = limits.per_ip("rtmp", 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let one = cap.try_acquire(a).unwrap();
        let _two = cap.try_acquire(a).unwrap();
        assert!(cap.try_acquire(a).is_err());
        assert!(cap.try_acquire(b).is_ok());
        drop(one);
        assert!(cap.try_acquire(a).is_ok());
        assert_eq!(limits.refused(), vec![("rtmp", 1)]);
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let limits = Limits::default();
        let cap = limits.per_ip("http", 1);
        let _held = cap.try_acquire("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert!(cap
            .try_acquire("2001:db8:1:2::ffff".parse().unwrap())
            .is_err());
        assert!(cap.try_acquire("2001:db8:1:3::1".parse().unwrap()).is_ok());
        let _v4 = cap.try_acquire("192.0.2.9".parse().unwrap()).unwrap();
        assert!(cap
            .try_acquire("::ffff:192.0.2.9".parse().unwrap())
            .is_err());
    }

    #[test]
    fn no_cap_holds_nothing() {
        let limits = Limits::default();
        let cap = limits.per_ip("srt", 0);
        let permits: Vec<_> = (0..100)
            .map(|_| cap.try_acquire("192.0.2.1".parse().unwrap()))
            .collect();
        assert!(permits.iter().all(Result::is_ok));
        assert_eq!(cap.addresses(), 0);
    }
}
