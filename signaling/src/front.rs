//! The front's routes on the public name (TLS ended at the front): each publisher and viewer is
//! sent with a `307` to the node that should serve them, and the node's `Location`s point at
//! the node, so PATCH and DELETE go straight there.
//! - `POST /whip/{channel}`: the key is checked here, then `307` to the channel's origin (a
//!   publisher coming back) or the ingest node placement picks, with a short-lived token in the
//!   query ([`admission::token`]) because Firefox and Safari drop `Authorization` on a
//!   cross-origin redirect.
//! - `POST /whep/{channel}`, `GET /watch/{channel}`: `307` to the primary chosen for the viewer
//!   ([`cluster::choose_viewer`]).
//! - `OPTIONS` is answered here: a CORS preflight cannot be redirected.
//! - When the chosen node is this one, it serves the request itself; everything else (pages,
//!   API, metrics) is this node's own routes.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use admission::{Admission, Refusal};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use cluster::{NodeId, NodeInfo, Role, RoutingTable};
use media::ChannelName;
use tower::ServiceExt;
use tracing::{debug, warn};

use crate::rate::RatePerIp;

/// The front's settings (`[front]`): a node with the `signaling` role and a public name is
/// the front for that name.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FrontConfig {
    /// The one name publishers and viewers know (`live.example.com`). None: no front here.
    pub public_name: Option<String>,
    /// A plain-HTTP listener (port 80) that redirects everything to HTTPS at the public name.
    pub redirect_http: Option<std::net::SocketAddr>,
    /// Seconds a publish token in a WHIP redirect is good for.
    pub token_secs: u64,
    /// Seconds a passed-through connection (TLS, RTMP) may stay silent both ways.
    pub idle_secs: u64,
    /// New connections (HTTPS, RTMP(S)) one client address may open at once ...
    pub new_connections_burst: u32,
    /// ... and per minute after that (0: no limit).
    pub new_connections_per_minute: u32,
    /// WHIP/WHEP posts at the public name one client address may make at once ...
    pub posts_burst: u32,
    /// ... and per minute after that (0: no limit).
    pub posts_per_minute: u32,
}

impl Default for FrontConfig {
    fn default() -> Self {
        Self {
            public_name: None,
            redirect_http: None,
            token_secs: 60,
            idle_secs: 60,
            new_connections_burst: 60,
            new_connections_per_minute: 600,
            posts_burst: 20,
            posts_per_minute: 120,
        }
    }
}

/// The front's parts.
pub struct Front {
    /// This node.
    pub me: NodeId,
    /// The region newcomers are placed near (the front's own).
    pub region: Option<String>,
    /// The cluster as this node sees it.
    pub routing: Arc<RoutingTable>,
    /// Who may publish (the channels and keys every node has).
    pub admission: Admission,
    /// This node's own routes.
    pub node: Router,
    /// How long a publish token is good for.
    pub token_lifetime: Duration,
    /// WHIP/WHEP posts per client address.
    pub posts: Arc<RatePerIp>,
    /// What the front did.
    pub metrics: Arc<FrontMetrics>,
}

/// What the front counted, for `/metrics`.
#[derive(Debug, Default)]
pub struct FrontMetrics {
    redirects: [AtomicU64; 3],
    served_here: AtomicU64,
    refused: AtomicU64,
    no_node: AtomicU64,
}

const ROUTES: [&str; 3] = ["whip", "whep", "watch"];

impl FrontMetrics {
    /// Prometheus text; `posts` is the per-address limit of WHIP/WHEP posts.
    pub fn render(&self, posts: &RatePerIp, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "# HELP starling_front_redirects_total Requests at the public name sent to a node.\n\
             # TYPE starling_front_redirects_total counter"
        );
        for (route, n) in ROUTES.iter().zip(&self.redirects) {
            let _ = writeln!(
                out,
                "starling_front_redirects_total{{route=\"{route}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP starling_front_served_here_total Requests at the public name this node served itself.\n\
             # TYPE starling_front_served_here_total counter\n\
             starling_front_served_here_total {}\n\
             # HELP starling_front_refused_total WHIP posts refused at the front (name or key).\n\
             # TYPE starling_front_refused_total counter\n\
             starling_front_refused_total {}\n\
             # HELP starling_front_no_node_total Requests with no node to send them to.\n\
             # TYPE starling_front_no_node_total counter\n\
             starling_front_no_node_total {}\n\
             # HELP starling_front_posts_limited_total WHIP/WHEP posts refused: too many from one address.\n\
             # TYPE starling_front_posts_limited_total counter\n\
             starling_front_posts_limited_total {}",
            self.served_here.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            self.no_node.load(Ordering::Relaxed),
            posts.refused(),
        );
    }
}

/// The front's router for the public name.
pub fn router(front: Arc<Front>) -> Router {
    let node = front.node.clone();
    Router::new()
        .route("/whip/{channel}", post(whip).options(preflight))
        .route("/whep/{channel}", post(whep).options(preflight))
        .route("/watch/{channel}", get(watch))
        .with_state(front)
        .fallback_service(node)
}

/// A CORS preflight, answered at the front for every method the node's resources take.
async fn preflight() -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            (
                header::ACCESS_CONTROL_ALLOW_METHODS,
                "GET, POST, PATCH, DELETE, OPTIONS",
            ),
            (
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                "Authorization, Content-Type, If-Match",
            ),
            (header::ACCESS_CONTROL_MAX_AGE, "86400"),
        ],
    )
        .into_response()
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    let mut body = body.into();
    body.push('\n');
    (status, [(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")], body).into_response()
}

fn client_ip(request: &Request) -> Option<IpAddr> {
    request
        .extensions()
        .get::<sfu::ClientAddr>()
        .map(|c| c.0.ip())
}

/// `https://host[:port]` of a node.
pub fn node_origin(node: &NodeInfo) -> String {
    match node.ports.https {
        443 => format!("https://{}", node.public_host),
        port => format!("https://{}:{port}", node.public_host),
    }
}

impl Front {
    /// False (and a `429` to send) when `request`'s address posted too often.
    fn limited(&self, request: &Request) -> Option<Response> {
        let ip = client_ip(request)?;
        if self.posts.allow(ip, Instant::now()) {
            return None;
        }
        Some(
            (
                StatusCode::TOO_MANY_REQUESTS,
                [
                    (header::RETRY_AFTER, "5"),
                    (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
                ],
                "too many requests from this address\n",
            )
                .into_response(),
        )
    }

    /// `request` served here, or a `307` to `node` at `path_and_query`.
    async fn send(
        &self,
        route: usize,
        node: Option<NodeInfo>,
        path_and_query: String,
        request: Request,
    ) -> Response {
        let Some(node) = node else {
            self.metrics.no_node.fetch_add(1, Ordering::Relaxed);
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "no node can take this now; try again shortly",
            );
        };
        if node.id == self.me {
            self.metrics.served_here.fetch_add(1, Ordering::Relaxed);
            return match self.node.clone().oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
        }
        self.metrics.redirects[route].fetch_add(1, Ordering::Relaxed);
        let location = format!("{}{path_and_query}", node_origin(&node));
        debug!(node = %node.id, route = ROUTES[route], "front: redirected");
        let Ok(location) = HeaderValue::from_str(&location) else {
            return text(StatusCode::INTERNAL_SERVER_ERROR, "bad node address");
        };
        (
            StatusCode::TEMPORARY_REDIRECT,
            [
                (header::LOCATION, location),
                (
                    header::ACCESS_CONTROL_ALLOW_ORIGIN,
                    HeaderValue::from_static("*"),
                ),
                (
                    header::ACCESS_CONTROL_EXPOSE_HEADERS,
                    HeaderValue::from_static("Location"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
        )
            .into_response()
    }

    /// The node for a viewer of `channel`.
    fn viewer_node(&self, channel: &ChannelName) -> Option<NodeInfo> {
        let origin = self.routing.origin(channel).map(|n| n.id);
        let nodes = self.routing.nodes();
        cluster::choose_viewer(&nodes, origin.as_ref(), self.region.as_deref()).cloned()
    }
}

fn query(request: &Request) -> String {
    request
        .uri()
        .query()
        .map_or_else(String::new, |q| format!("?{q}"))
}

async fn whip(
    State(front): State<Arc<Front>>,
    Path(channel): Path<String>,
    request: Request,
) -> Response {
    if let Some(limited) = front.limited(&request) {
        return limited;
    }
    let name = match front
        .admission
        .authorize(&channel, sfu::bearer(request.headers()))
    {
        Ok(name) => name,
        Err(refusal) => {
            front.metrics.refused.fetch_add(1, Ordering::Relaxed);
            warn!(reason = %refusal, "front: WHIP publish refused");
            return refused(&refusal);
        }
    };
    // A publisher coming back goes to the node that holds its channel.
    let node = front
        .routing
        .origin(&name)
        .filter(|n| n.has(Role::Ingest))
        .or_else(|| front.routing.place(Role::Ingest, front.region.as_deref()));
    let mut path = format!("/whip/{name}");
    let publishers = front.admission.publishers();
    if let Some(key) = publishers.key(&name) {
        let expires = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + front.token_lifetime.as_secs();
        path.push_str("?token=");
        path.push_str(&admission::token::sign(key, &name, expires));
    }
    front.send(0, node, path, request).await
}

/// The SFU's answer to a refused publisher, readable by a page on another origin.
fn refused(refusal: &Refusal) -> Response {
    let mut response = sfu::refusal_response(refusal);
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

async fn whep(
    State(front): State<Arc<Front>>,
    Path(channel): Path<String>,
    request: Request,
) -> Response {
    if let Some(limited) = front.limited(&request) {
        return limited;
    }
    to_viewer_node(&front, 1, &channel, request).await
}

async fn watch(
    State(front): State<Arc<Front>>,
    Path(channel): Path<String>,
    request: Request,
) -> Response {
    to_viewer_node(&front, 2, &channel, request).await
}

/// A viewer's request (`ROUTES[route]`) to the node chosen for it, the query kept.
async fn to_viewer_node(front: &Front, route: usize, channel: &str, request: Request) -> Response {
    let Ok(name) = ChannelName::new(channel) else {
        return text(StatusCode::BAD_REQUEST, "invalid channel name");
    };
    let node = front.viewer_node(&name);
    let path = format!("/{}/{name}{}", ROUTES[route], query(&request));
    front.send(route, node, path, request).await
}

/// Port 80 (`[front] redirect_http`): every request to the same path on HTTPS at the public
/// name (`308`, which keeps a POST a POST).
pub fn https_redirect(public_name: String, https_port: u16) -> Router {
    let origin = match https_port {
        443 => format!("https://{public_name}"),
        port => format!("https://{public_name}:{port}"),
    };
    Router::new().fallback(move |request: Request| {
        let target = format!(
            "{origin}{}",
            request.uri().path_and_query().map_or("/", |p| p.as_str())
        );
        async move {
            match HeaderValue::from_str(&target) {
                Ok(location) => (
                    StatusCode::PERMANENT_REDIRECT,
                    [(header::LOCATION, location)],
                )
                    .into_response(),
                Err(_) => StatusCode::BAD_REQUEST.into_response(),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use cluster::{Event, Load, NodeInfo, Ports};

    fn node(id: &str, roles: &[Role], viewers: u32) -> NodeInfo {
        NodeInfo {
            id: NodeId::new(id).unwrap(),
            roles: roles.to_vec(),
            region: "eu".into(),
            public_host: format!("{id}.live.test"),
            ports: Ports {
                https: if id == "b" { 443 } else { 8443 },
                ..Ports::default()
            },
            load: Load {
                viewers,
                ..Load::default()
            },
            draining: false,
            tier: Default::default(),
            relay_fingerprint: String::new(),
        }
    }

    /// A front `me` over nodes `a` (ingest, sfu, 500 viewers) and `b` (sfu, 0 viewers); its own
    /// routes answer `200 here`.
    fn front(me: &str, publishers: admission::Publishers) -> Router {
        let routing = Arc::new(RoutingTable::new());
        routing.apply(&Event::NodeUp(node("a", &[Role::Ingest, Role::Sfu], 500)));
        routing.apply(&Event::NodeUp(node("b", &[Role::Sfu], 0)));
        let bus = media::Bus::with_config(Default::default());
        router(Arc::new(Front {
            me: NodeId::new(me).unwrap(),
            region: Some("eu".into()),
            routing,
            admission: Admission::new(bus, publishers),
            node: Router::new().fallback(|| async { "here" }),
            token_lifetime: Duration::from_secs(60),
            posts: Arc::new(RatePerIp::new(0, 0)),
            metrics: Arc::default(),
        }))
    }

    async fn send(app: &Router, method: &str, uri: &str, auth: Option<&str>) -> Response {
        let mut request = axum::http::Request::builder().method(method).uri(uri);
        if let Some(key) = auth {
            request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        app.clone()
            .oneshot(request.body(Body::from("v=0")).unwrap())
            .await
            .unwrap()
    }

    fn location(response: &Response) -> &str {
        response.headers()[header::LOCATION].to_str().unwrap()
    }

    #[tokio::test]
    async fn viewers_and_publishers_are_sent_to_their_nodes() {
        let keys = admission::Publishers::with_channels([(
            ChannelName::new("alice").unwrap(),
            admission::StreamKey::new("k"),
        )]);
        let app = front("f", keys);
        // A viewer: the lighter primary, its port left out when it is 443; the query kept.
        let whep = send(&app, "POST", "/whep/alice?x=1", None).await;
        assert_eq!(whep.status(), StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(location(&whep), "https://b.live.test/whep/alice?x=1");
        let watch = send(&app, "GET", "/watch/alice", None).await;
        assert_eq!(location(&watch), "https://b.live.test/watch/alice");
        // A publisher: its key checked here, then the ingest node with a token.
        let whip = send(&app, "POST", "/whip/alice", Some("k")).await;
        assert_eq!(whip.status(), StatusCode::TEMPORARY_REDIRECT);
        assert!(location(&whip).starts_with("https://a.live.test:8443/whip/alice?token="));
        let wrong = send(&app, "POST", "/whip/alice", Some("nope")).await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
        let bad = send(&app, "POST", "/whep/..", None).await;
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        // Preflights are answered here; everything else is the front's own.
        let options = send(&app, "OPTIONS", "/whip/alice", None).await;
        assert_eq!(options.status(), StatusCode::NO_CONTENT);
        assert_eq!(send(&app, "GET", "/", None).await.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn a_front_chosen_itself_serves_the_request() {
        let app = front("b", admission::Publishers::default());
        let whep = send(&app, "POST", "/whep/alice", None).await;
        assert_eq!(whep.status(), StatusCode::OK, "served by b's own routes");
        // Open publishing: no token to carry.
        let whip = send(&app, "POST", "/whip/alice", None).await;
        assert_eq!(location(&whip), "https://a.live.test:8443/whip/alice");
    }

    #[tokio::test]
    async fn port_80_sends_everything_to_https_at_the_public_name() {
        let app = https_redirect("live.test".into(), 443);
        let moved = send(&app, "POST", "/whip/alice?x=1", None).await;
        assert_eq!(moved.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(location(&moved), "https://live.test/whip/alice?x=1");
    }
}
