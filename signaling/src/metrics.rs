//! `GET /metrics`: the node's numbers in Prometheus' text format, put together from the SFU's,
//! the bus's, the per-address caps' refusals and whatever other components add (the relay's).

use std::sync::Arc;

use admission::Limits;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use media::Bus;

/// A component's part of `/metrics`: Prometheus text, each line ending in `\n`.
pub type MetricsSource = Arc<dyn Fn() -> String + Send + Sync>;

/// What `/metrics` reads.
#[derive(Clone)]
pub(crate) struct Sources {
    pub(crate) bus: Bus,
    pub(crate) sfu: sfu::Sfu,
    pub(crate) limits: Arc<Limits>,
    pub(crate) more: Vec<MetricsSource>,
}

impl Sources {
    /// The exposition, every source in turn.
    pub(crate) fn render(&self) -> String {
        let mut body = self.sfu.metrics();
        body.push_str(&format!(
            "# HELP starling_live_channels Channels with a publisher on this node.\n\
             # TYPE starling_live_channels gauge\n\
             starling_live_channels {}\n",
            self.bus.live().len()
        ));
        body.push_str(
            "# HELP starling_refused_per_ip_total Connections or offers refused because their client address held its cap.\n\
             # TYPE starling_refused_per_ip_total counter\n",
        );
        for (listener, refused) in self.limits.refused() {
            body.push_str(&format!(
                "starling_refused_per_ip_total{{listener=\"{listener}\"}} {refused}\n"
            ));
        }
        for source in &self.more {
            body.push_str(&source());
        }
        body
    }
}

pub(crate) async fn metrics(State(sources): State<Sources>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/plain; version=0.0.4"),
            // As when the SFU served it: a dashboard page on another origin may read it.
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        sources.render(),
    )
        .into_response()
}
