//! The node's HTTP router, put together here from the pages, the SFU's WHIP/WHEP handlers,
//! the cluster API, health and `/metrics`.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use admission::Limits;
use axum::routing::get;
use axum::Router;
use cluster::RoutingTable;
use media::Bus;

use crate::metrics::{MetricsSource, Sources};

/// What the node's routes serve from.
pub struct NodeRoutes {
    /// The node's media bus: the channel list and pages, `starling_live_channels`.
    pub bus: Bus,
    /// The SFU: `POST /whip/{channel}`, `POST /whep/{channel}`, their sessions; its metrics.
    pub sfu: sfu::Sfu,
    /// This node's view of the cluster: `/api/nodes`, `/api/cluster/channels`.
    pub routing: Arc<RoutingTable>,
    /// Whether this node's last registration reached the registry: `/healthz`.
    pub registered: Arc<AtomicBool>,
    /// The per-address caps of the node's listeners: their refusals in `/metrics`.
    pub limits: Arc<Limits>,
    /// More of `/metrics`, after the SFU's and the caps' (the relay's).
    pub metrics: Vec<MetricsSource>,
}

/// Every HTTP route of a node: `GET /`, `/watch/{channel}`, `/publish/{channel}`,
/// `/api/channels[/{channel}]`, WHIP and WHEP, `/api/nodes`, `/api/cluster/channels`,
/// `/healthz` and `/metrics`.
pub fn node_routes(node: NodeRoutes) -> Router {
    let sources = Sources {
        bus: node.bus.clone(),
        sfu: node.sfu.clone(),
        limits: node.limits,
        more: node.metrics,
    };
    crate::pages::router(node.bus)
        .merge(sfu::whip_whep_routes(node.sfu))
        .merge(crate::api::routes(node.routing, node.registered))
        .route("/metrics", get(crate::metrics::metrics).with_state(sources))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use axum::body::Body;
    use axum::http::{header, Method, Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    async fn node() -> (NodeRoutes, Arc<AtomicBool>) {
        let bus = Bus::with_config(Default::default());
        let admission = admission::Admission::new(bus.clone(), Default::default());
        let config = sfu::WebRtcConfig {
            listen: ([127, 0, 0, 1], 0).into(),
            ..Default::default()
        };
        let sfu = sfu::Sfu::start(config, admission.clone())
            .await
            .expect("sfu");
        let registered = Arc::new(AtomicBool::new(false));
        let node = NodeRoutes {
            bus,
            sfu,
            routing: Arc::new(RoutingTable::new()),
            registered: registered.clone(),
            limits: admission.limits().clone(),
            metrics: vec![Arc::new(|| "starling_relay_test 7\n".to_owned())],
        };
        (node, registered)
    }

    async fn request(app: &Router, method: Method, uri: &str) -> (StatusCode, String) {
        let res = app
            .clone()
            .oneshot(
                Request::builder()
                    .method(method)
                    .uri(uri)
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn every_route_of_the_node_answers() {
        let (node, registered) = node().await;
        let limits = node.limits.clone();
        let app = node_routes(node);
        let get = |uri| request(&app, Method::GET, uri);
        assert_eq!(
            get("/healthz").await,
            (
                StatusCode::OK,
                "ok\nregistry: unavailable (retrying)\n".into()
            )
        );
        registered.store(true, Ordering::Relaxed);
        assert_eq!(get("/healthz").await.1, "ok\nregistry: ok\n");
        assert_eq!(get("/api/nodes").await, (StatusCode::OK, "[]".into()));
        assert_eq!(
            get("/api/cluster/channels").await,
            (StatusCode::OK, "[]".into())
        );
        assert_eq!(get("/").await.0, StatusCode::OK);
        assert_eq!(get("/api/channels").await, (StatusCode::OK, "[]".into()));
        assert_eq!(get("/watch/alice").await.0, StatusCode::OK);

        let http = limits.per_ip("http", 1);
        let _held = http.try_acquire([192, 0, 2, 1].into()).expect("place");
        assert!(http.try_acquire([192, 0, 2, 1].into()).is_err());
        let (status, metrics) = get("/metrics").await;
        assert_eq!(status, StatusCode::OK);
        for line in [
            "starling_viewers 0\n",
            "starling_webrtc_publishers 0\n",
            "starling_live_channels 0\n",
            "starling_webrtc_bound_addresses 0\n",
            "starling_publisher_keyframe_requests_total 0\n",
            "starling_refused_per_ip_total{listener=\"webrtc\"} 0\n",
            "starling_refused_per_ip_total{listener=\"http\"} 1\n",
            "starling_relay_test 7\n",
        ] {
            assert!(metrics.contains(line), "{line} in {metrics}");
        }

        // The SFU's routes: a preflight, and an offer that is not SDP.
        let (status, _) = request(&app, Method::OPTIONS, "/whip/alice").await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = request(&app, Method::POST, "/whep/alice").await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[tokio::test]
    async fn metrics_are_prometheus_text() {
        let (node, _) = node().await;
        let res = node_routes(node)
            .oneshot(
                Request::get("/metrics")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        assert_eq!(
            res.headers().get(header::CONTENT_TYPE).expect("type"),
            "text/plain; version=0.0.4"
        );
    }
}
