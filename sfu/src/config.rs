use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

/// WebRTC media settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebRtcConfig {
    /// UDP address all viewers' media flows through.
    pub listen: SocketAddr,
    /// IP addresses offered to viewers as ICE candidates. Empty: the listen address if it is
    /// specific, otherwise every non-link-local address of this host's interfaces.
    pub candidates: Vec<IpAddr>,
    /// Viewers served at once; more get `503`.
    pub max_viewers: usize,
    /// WebRTC (WHIP) publishers at once; more get `503`.
    pub max_publishers: usize,
    /// Sessions not yet connected (offers answered, no ICE and DTLS yet) from one client
    /// address; more offers get `429` (0: no cap). A viewer not connected within 10 s is dropped.
    pub max_pending_per_ip: usize,
}

impl Default for WebRtcConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8189)),
            candidates: Vec::new(),
            max_viewers: 2000,
            max_publishers: 100,
            max_pending_per_ip: 16,
        }
    }
}

impl WebRtcConfig {
    pub(crate) fn candidate_addrs(&self, bound: SocketAddr) -> Vec<SocketAddr> {
        let port = bound.port();
        if !self.candidates.is_empty() {
            return self
                .candidates
                .iter()
                .map(|ip| SocketAddr::new(*ip, port))
                .collect();
        }
        if !bound.ip().is_unspecified() {
            return vec![bound];
        }
        let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
            .unwrap_or_default()
            .into_iter()
            .map(|i| i.ip())
            .filter(|ip| ip.is_ipv4() == bound.is_ipv4() || bound.is_ipv6())
            .filter(|ip| match ip {
                IpAddr::V4(v4) => !v4.is_link_local(),
                IpAddr::V6(v6) => !v6.is_unicast_link_local(),
            })
            .collect();
        // Loopback last: a viewer on this machine can still use it.
        ips.sort_by_key(|ip| ip.is_loopback());
        ips.dedup();
        ips.into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect()
    }
}
