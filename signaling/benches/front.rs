//! What the front adds (issue 18). One process on loopback, one tokio `current_thread` runtime
//! (one core for the client, the front and the node together):
//! - a node: [`Https`] that is no front, whose `POST /whep/{channel}` answers `201` with a
//!   2 KiB body at once. It stands in for the SFU's answer, so only TCP, TLS, HTTP and the
//!   redirect are measured, not ICE, DTLS or SDP work. Its `POST /sink` counts a body's bytes.
//! - a front: [`Https`] with the public name `live.bench` and [`front::router`], whose routing
//!   table holds the front and the node under two names: `node-a.bench` (the one WHEP viewers
//!   are sent to) and `localhost` (the only name the front's pass-through can resolve here).
//!
//! Every join opens fresh connections with a full TLS 1.3 handshake (no session resumption, as
//! a browser's first join) and posts a 4 KiB offer. The client trusts the two self-signed
//! certificates as roots (a benchmark; certificates are still verified). Rows:
//! - direct: TLS to the node, `POST` -> `201`;
//! - via the front: TLS to the front (`live.bench`), `POST` -> `307`, then TLS to the node and
//!   the `POST` again -> `201`, as a browser follows it;
//! - via the front, node's name at the front: the same, but the node's name resolves to the
//!   front, which passes the second connection through to the node untouched.
//!
//! Then 256 MiB pushed through one TLS connection (`POST /sink`), straight to the node and
//! passed through the front. `cargo bench -p signaling --bench front`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{header, Request, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use cluster::{Event, Load, NodeId, NodeInfo, Ports, Role, RoutingTable};
use hyper::body::{Frame, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use media::ChannelName;
use rustls_pki_types::{CertificateDer, ServerName};
use signaling::certs::{Certificates, Fetch};
use signaling::front::{self, Front};
use signaling::https::{Https, Names};
use signaling::listener::{Http, HttpConfig};
use signaling::rate::RatePerIp;
use tokio::net::{TcpListener, TcpStream};

/// Joins measured per row (after [`WARMUP`] of each, not counted).
const JOINS: usize = 500;
const WARMUP: usize = 20;
/// Bytes pushed per throughput run, and runs per path.
const PUSH: u64 = 256 << 20;
const PUSH_RUNS: usize = 5;
const CHUNK: usize = 64 << 10;

const FRONT: &str = "live.bench";
const NODE: &str = "node-a.bench";
/// The node's second registered name: resolvable, so the front can pass connections to it.
const TUNNEL: &str = "localhost";

fn sdp(len: usize) -> Bytes {
    let mut s = String::from("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n");
    while s.len() < len {
        s.push_str("a=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host\r\n");
    }
    s.truncate(len);
    Bytes::from(s)
}

/// The node's routes: an instant WHEP answer, and a sink.
fn node_routes() -> Router {
    let answer = sdp(2048);
    Router::new()
        .route(
            "/whep/{channel}",
            post(move || {
                let answer = answer.clone();
                async move {
                    (
                        StatusCode::CREATED,
                        [
                            (header::LOCATION, "/whep/resource/1"),
                            (header::CONTENT_TYPE, "application/sdp"),
                        ],
                        answer,
                    )
                        .into_response()
                }
            }),
        )
        .route("/sink", post(sink))
}

/// Reads the whole body; its length.
async fn sink(mut body: Body) -> String {
    use axum::body::HttpBody;
    let mut n = 0u64;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        match frame {
            Ok(frame) => n += frame.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => break,
        }
    }
    n.to_string()
}

fn no_registry() -> Fetch {
    Arc::new(|_name| Box::pin(async { Ok(None) }))
}

/// An [`Https`] listening on a free loopback port.
async fn listen(
    names: Names,
    certs: Arc<Certificates>,
    routing: Arc<RoutingTable>,
    node: Router,
    front: Option<Router>,
) -> SocketAddr {
    let http = Http::new(&HttpConfig::default());
    let https = Arc::new(Https {
        names,
        tls: certs.server_config(&[b"http/1.1"]),
        certs,
        routing,
        node: http.bounded(node),
        front: front.map(|f| http.bounded(f)),
        http,
        new_connections: Arc::new(RatePerIp::new(0, 0)),
        hello_timeout: Duration::from_secs(5),
        idle: Duration::from_secs(60),
        metrics: Arc::default(),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound");
    let limits = admission::limits::Limits::default();
    tokio::spawn(https.serve(listener, 4096, limits.per_ip("https", 0)));
    addr
}

fn node_info(id: &str, host: &str, roles: Vec<Role>, https: u16) -> NodeInfo {
    NodeInfo {
        id: NodeId::new(id).expect("id"),
        roles,
        region: "eu".into(),
        public_host: host.into(),
        ports: Ports {
            https,
            ..Ports::default()
        },
        load: Load::default(),
        draining: false,
        tier: Default::default(),
        relay_fingerprint: String::new(),
    }
}

/// Opens fresh TLS connections and posts over them.
struct Client {
    tls: tokio_rustls::TlsConnector,
}

impl Client {
    fn new(roots: &[CertificateDer<'static>]) -> Self {
        let mut store = rustls::RootCertStore::empty();
        for cert in roots {
            store.add(cert.clone()).expect("a usable certificate");
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS 1.2 and 1.3")
            .with_root_certificates(store)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.resumption = rustls::client::Resumption::disabled();
        Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        }
    }

    /// TCP to `addr`, a full TLS handshake asking for `name`, HTTP/1.1 on it.
    async fn connect(&self, addr: SocketAddr, name: &str) -> SendRequest<Body> {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        let server_name = ServerName::try_from(name.to_owned()).expect("name");
        let tls = self.tls.connect(server_name, tcp).await.expect("handshake");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("http/1.1");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        sender
    }

    /// A fresh connection, one `POST`: the status, `Location`, and the body read to its end.
    async fn post(
        &self,
        addr: SocketAddr,
        name: &str,
        path: &str,
        body: Body,
    ) -> (StatusCode, Option<String>, Bytes) {
        let mut sender = self.connect(addr, name).await;
        let request = Request::post(path)
            .header(header::HOST, name)
            .header(header::CONTENT_TYPE, "application/sdp")
            .body(body)
            .expect("request");
        let response = sender.send_request(request).await.expect("response");
        let status = response.status();
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(str::to_owned);
        let body = axum::body::to_bytes(Body::new(response.into_body()), usize::MAX)
            .await
            .expect("body");
        (status, location, body)
    }
}

/// Where a host name leads: DNS and the port at once, since everything listens on one address.
type Resolve = [(&'static str, SocketAddr)];

/// A join straight to the node: its time.
async fn join_direct(client: &Client, node: SocketAddr, offer: &Bytes) -> Duration {
    let start = Instant::now();
    let (status, _, _) = client
        .post(node, NODE, "/whep/alice", Body::from(offer.clone()))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    start.elapsed()
}

/// A join at the front, following its `307`: the time to the `307`, and the whole join.
async fn join_front(
    client: &Client,
    front: SocketAddr,
    channel: &str,
    resolve: &Resolve,
    offer: &Bytes,
) -> (Duration, Duration) {
    let start = Instant::now();
    let path = format!("/whep/{channel}");
    let (status, location, _) = client
        .post(front, FRONT, &path, Body::from(offer.clone()))
        .await;
    let redirected = start.elapsed();
    assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);
    let location: Uri = location.expect("Location").parse().expect("a URL");
    let host = location.host().expect("host");
    let (_, addr) = resolve
        .iter()
        .find(|(name, _)| *name == host)
        .expect("a known host");
    let path = location.path_and_query().expect("path").as_str();
    let (status, _, _) = client
        .post(*addr, host, path, Body::from(offer.clone()))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    (redirected, start.elapsed())
}

/// [`PUSH`] zero bytes, [`CHUNK`] at a time (one shared buffer: the client copies nothing).
struct Zeros {
    left: u64,
    chunk: Bytes,
}

impl hyper::body::Body for Zeros {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len() as u64);
        self.left -= n;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n as usize)))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// [`PUSH`] bytes through one connection to `addr` asking for [`TUNNEL`]: MB/s, counted from
/// the first byte of the request (the handshake is not counted) to the node's answer.
async fn push(client: &Client, addr: SocketAddr) -> f64 {
    let mut sender = client.connect(addr, TUNNEL).await;
    let body = Zeros {
        left: PUSH,
        chunk: Bytes::from(vec![0u8; CHUNK]),
    };
    let request = Request::post("/sink")
        .header(header::HOST, TUNNEL)
        .body(Body::new(body))
        .expect("request");
    let start = Instant::now();
    let response = sender.send_request(request).await.expect("response");
    let body = axum::body::to_bytes(Body::new(response.into_body()), 64)
        .await
        .expect("body");
    let took = start.elapsed();
    assert_eq!(
        body,
        PUSH.to_string().as_bytes(),
        "the node read every byte"
    );
    PUSH as f64 / took.as_secs_f64() / 1e6
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn run() {
    // The node: TLS ends here whatever the name.
    let node_certs = Arc::new(
        Certificates::new(None, &[NODE.to_owned()], no_registry()).expect("node certificate"),
    );
    let node_names = Names {
        me: NodeId::new("node-a").expect("id"),
        own: NODE.into(),
        public: None,
    };
    let node = listen(
        node_names,
        node_certs.clone(),
        Arc::new(RoutingTable::new()),
        node_routes(),
        None,
    )
    .await;

    // The front, and the cluster as it sees it: itself, and the node under two names (the
    // second, `localhost`, is the origin of channel `tunnel`, so viewers of it go there).
    let routing = Arc::new(RoutingTable::new());
    routing.apply(&Event::NodeUp(node_info(
        "front",
        "front.bench",
        vec![Role::Signaling],
        443,
    )));
    routing.apply(&Event::NodeUp(node_info(
        "node-a",
        NODE,
        vec![Role::Sfu],
        node.port(),
    )));
    routing.apply(&Event::NodeUp(node_info(
        "node-b",
        TUNNEL,
        vec![Role::Sfu],
        node.port(),
    )));
    routing.apply(&Event::ChannelClaimed {
        channel: ChannelName::new("tunnel").expect("name"),
        node: NodeId::new("node-b").expect("id"),
    });
    let front_certs = Arc::new(
        Certificates::new(
            None,
            &[FRONT.to_owned(), "front.bench".to_owned()],
            no_registry(),
        )
        .expect("front certificate"),
    );
    let admission = admission::Admission::new(
        media::Bus::with_config(Default::default()),
        admission::Publishers::default(),
    );
    let front_routes = front::router(Arc::new(Front {
        me: NodeId::new("front").expect("id"),
        region: None,
        routing: routing.clone(),
        admission,
        node: Router::new(),
        token_lifetime: Duration::from_secs(60),
        posts: Arc::new(RatePerIp::new(0, 0)),
        metrics: Arc::default(),
    }));
    let front_names = Names {
        me: NodeId::new("front").expect("id"),
        own: "front.bench".into(),
        public: Some(FRONT.into()),
    };
    let front = listen(
        front_names,
        front_certs.clone(),
        routing,
        Router::new(),
        Some(front_routes),
    )
    .await;

    let client = Client::new(&[
        node_certs.for_name(None).cert[0].clone(),
        front_certs.for_name(None).cert[0].clone(),
    ]);
    let offer = sdp(4096);
    // Node names in DNS: each node's own address, or the front's (passed through).
    let own = [(NODE, node)];
    let at_front = [(TUNNEL, front)];

    let (mut direct, mut via, mut via_pass, mut redirect) = (vec![], vec![], vec![], vec![]);
    for i in 0..WARMUP + JOINS {
        let d = join_direct(&client, node, &offer).await;
        let (r, v) = join_front(&client, front, "alice", &own, &offer).await;
        let (_, p) = join_front(&client, front, "tunnel", &at_front, &offer).await;
        if i >= WARMUP {
            direct.push(d);
            via.push(v);
            via_pass.push(p);
            redirect.push(r);
        }
    }
    for v in [&mut direct, &mut via, &mut via_pass, &mut redirect] {
        v.sort();
    }

    println!("WHEP joins ({JOINS} each, interleaved; fresh TCP + TLS 1.3 per connection; 4 KiB offer, 2 KiB answer)");
    println!("| path | p50 | p95 | added p50 | added p95 | p50 ratio |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let row = |name: &str, s: &[Duration]| {
        let (p50, p95) = (quantile(s, 0.5), quantile(s, 0.95));
        let (d50, d95) = (quantile(&direct, 0.5), quantile(&direct, 0.95));
        println!(
            "| {name} | {:.2} ms | {:.2} ms | {:+.2} ms | {:+.2} ms | {:.2}x |",
            ms(p50),
            ms(p95),
            ms(p50) - ms(d50),
            ms(p95) - ms(d95),
            ms(p50) / ms(d50)
        );
    };
    row("direct: POST -> 201", &direct);
    row("front: POST -> 307 only", &redirect);
    row("front: 307, then POST -> 201 at the node", &via);
    row("front: 307, then POST -> 201 passed through", &via_pass);

    let (mut straight, mut passed) = (vec![], vec![]);
    for _ in 0..PUSH_RUNS {
        straight.push(push(&client, node).await);
        passed.push(push(&client, front).await);
    }
    let (straight, passed) = (median(straight), median(passed));
    // Everything shares one core: the front's own cost per byte is the difference in time.
    let front_alone = if passed < straight {
        format!("{:.0}", 1.0 / (1.0 / passed - 1.0 / straight))
    } else {
        "not measurable (no slower than direct)".to_owned()
    };
    println!();
    println!(
        "Pass-through: {} MiB through one TLS connection, median of {PUSH_RUNS} (client, front and node on one core)",
        PUSH >> 20
    );
    println!("| path | MB/s |");
    println!("| --- | --- |");
    println!("| client -> node | {straight:.0} |");
    println!(
        "| client -> front (pass-through) -> node | {passed:.0} ({:.2}x) |",
        passed / straight
    );
    println!("| the front's copy alone, from the difference in time | {front_alone} |");
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}
