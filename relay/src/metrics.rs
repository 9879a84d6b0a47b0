//! The relay's counters, for `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use cluster::Tier;

/// Counters and gauges, updated without a lock.
#[derive(Default)]
pub(crate) struct Metrics {
    /// Track subscriptions this node holds to upstream nodes (catalogs included).
    pub(crate) upstream_subscriptions: AtomicU64,
    /// Track subscriptions other nodes (or outside clients) hold to this node.
    pub(crate) downstream_subscribers: AtomicU64,
    /// MoQ sessions from other nodes or clients.
    pub(crate) downstream_sessions: AtomicU64,
    /// Requests for a channel already on this node (published here or already pulled).
    pub(crate) hits: AtomicU64,
    /// Requests that needed a new upstream pull.
    pub(crate) misses: AtomicU64,
    /// Payload bytes received from upstream nodes.
    pub(crate) bytes_in: AtomicU64,
    /// Payload bytes sent to downstream nodes.
    pub(crate) bytes_out: AtomicU64,
    /// Pulls moved to another upstream after theirs died, drained or refused.
    pub(crate) failovers: AtomicU64,
    /// Keyframe requests sent upstream.
    pub(crate) keyframe_requests_up: AtomicU64,
    /// Keyframe requests received from downstream nodes.
    pub(crate) keyframe_requests_down: AtomicU64,
}

/// Adds one to a counter or gauge.
pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Takes one from a gauge.
pub(crate) fn dec(c: &AtomicU64) {
    c.fetch_sub(1, Ordering::Relaxed);
}

/// Holds a gauge up while alive.
pub(crate) struct Held<'a>(&'a AtomicU64);

impl<'a> Held<'a> {
    pub(crate) fn new(gauge: &'a AtomicU64) -> Self {
        inc(gauge);
        Self(gauge)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        dec(self.0);
    }
}

impl Metrics {
    /// Prometheus text.
    pub(crate) fn render(&self, tier: Tier, cache_bytes: u64) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let tier = match tier {
            Tier::Primary => "primary",
            Tier::Secondary => "secondary",
        };
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        metric(
            "starling_relay_upstream_subscriptions",
            "gauge",
            "Track subscriptions this node holds to upstream nodes (one per track however many watch).",
            &[("", get(&self.upstream_subscriptions))],
        );
        metric(
            "starling_relay_downstream_subscribers",
            "gauge",
            "Track subscriptions downstream nodes or clients hold to this node.",
            &[("", get(&self.downstream_subscribers))],
        );
        metric(
            "starling_relay_downstream_sessions",
            "gauge",
            "MoQ sessions from downstream nodes or clients.",
            &[("", get(&self.downstream_sessions))],
        );
        metric(
            "starling_relay_cache_requests_total",
            "counter",
            "Requests for a channel: hit when it was already on this node, miss when it needed a new upstream pull.",
            &[
                ("{result=\"hit\"}", get(&self.hits)),
                ("{result=\"miss\"}", get(&self.misses)),
            ],
        );
        let inn = format!("{{direction=\"in\",tier=\"{tier}\"}}");
        let out_labels = format!("{{direction=\"out\",tier=\"{tier}\"}}");
        metric(
            "starling_relay_bytes_total",
            "counter",
            "Media payload bytes received from upstream (in) and sent downstream (out) by this node, labelled with its tier.",
            &[
                (&inn, get(&self.bytes_in)),
                (&out_labels, get(&self.bytes_out)),
            ],
        );
        metric(
            "starling_relay_failovers_total",
            "counter",
            "Pulls moved to another upstream path after theirs died, drained or refused.",
            &[("", get(&self.failovers))],
        );
        metric(
            "starling_relay_keyframe_requests_total",
            "counter",
            "Keyframe requests sent upstream (up) and received from downstream (down).",
            &[
                ("{direction=\"up\"}", get(&self.keyframe_requests_up)),
                ("{direction=\"down\"}", get(&self.keyframe_requests_down)),
            ],
        );
        metric(
            "starling_relay_cache_bytes",
            "gauge",
            "Bytes of groups held in the relay's cache for downstream nodes.",
            &[("", cache_bytes)],
        );
        out
    }
}
