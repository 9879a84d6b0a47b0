//! The TLS listeners of `starling serve`, and the fronts: HTTPS on every node, RTMPS on ingest
//! nodes; on a front (the signaling role and `[front] public_name`) the HTTPS listener is the
//! public name's door, and without the ingest role the RTMP, RTMPS and FTL ports pass
//! publishers to ingest nodes. Bound first (errors name the address), spawned once the node's
//! routes exist.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::FutureExt;
use signaling::certs::Certificates;
use signaling::front::{Front, FrontMetrics};
use signaling::https::{Https, HttpsMetrics, Names};
use signaling::rate::RatePerIp;
use signaling::tcp_front::TcpFront;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::config::Config;

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("{what} {addr}"))
}

/// The listeners, bound.
pub struct Fronts {
    front: bool,
    https: TcpListener,
    rtmps: Option<TcpListener>,
    rtmp_front: Option<TcpListener>,
    ftl_front: Option<TcpListener>,
    redirect: Option<TcpListener>,
    https_metrics: Arc<HttpsMetrics>,
    front_metrics: Arc<FrontMetrics>,
    posts: Arc<RatePerIp>,
    new_connections: Arc<RatePerIp>,
    tcp: Vec<Arc<TcpFront>>,
}

/// What the listeners serve with.
pub struct Parts {
    pub certs: Arc<Certificates>,
    pub routing: Arc<cluster::RoutingTable>,
    /// This node's routes.
    pub node: axum::Router,
    pub admission: admission::Admission,
    pub ingest: Option<ingest::Ingest>,
    pub me: cluster::NodeId,
    pub own_name: String,
}

impl Fronts {
    /// Binds what this node's roles call for: `ingest` serves publishers itself; `front` (the
    /// signaling role with a public name) fronts the cluster.
    pub async fn bind(config: &Config, ingest: bool, front: bool) -> anyhow::Result<Self> {
        let https = bind(config.https.listen, "HTTPS").await?;
        let rtmps = if ingest || front {
            Some(bind(config.rtmp.tls_listen, "RTMPS").await?)
        } else {
            None
        };
        let (rtmp_front, ftl_front) = if front && !ingest {
            (
                Some(bind(config.rtmp.listen, "RTMP front").await?),
                Some(bind(config.ftl.listen, "FTL front").await?),
            )
        } else {
            (None, None)
        };
        let redirect = match config.front.redirect_http.filter(|_| front) {
            Some(addr) => Some(bind(addr, "HTTP redirect").await?),
            None => None,
        };
        let f = &config.front;
        Ok(Self {
            front,
            https,
            rtmps,
            rtmp_front,
            ftl_front,
            redirect,
            https_metrics: Arc::default(),
            front_metrics: Arc::default(),
            posts: Arc::new(RatePerIp::new(f.posts_burst, f.posts_per_minute)),
            new_connections: Arc::new(RatePerIp::new(
                f.new_connections_burst,
                f.new_connections_per_minute,
            )),
            tcp: Vec::new(),
        })
    }

    /// The HTTPS and RTMPS addresses.
    pub fn addrs(&self) -> anyhow::Result<(SocketAddr, Option<SocketAddr>)> {
        Ok((
            self.https.local_addr()?,
            self.rtmps
                .as_ref()
                .map(TcpListener::local_addr)
                .transpose()?,
        ))
    }

    /// The front's RTMP, FTL and port-80 addresses, when it has them.
    pub fn front_addrs(&self) -> [Option<SocketAddr>; 3] {
        let at = |l: &Option<TcpListener>| l.as_ref().and_then(|l| l.local_addr().ok());
        [
            at(&self.rtmp_front),
            at(&self.ftl_front),
            at(&self.redirect),
        ]
    }

    /// The TCP fronts (RTMP, RTMPS) a front without ingest runs; made before
    /// [`Fronts::metrics`] so their counters are shown.
    pub fn prepare(&mut self, config: &Config, routing: &Arc<cluster::RoutingTable>) {
        if self.rtmp_front.is_none() {
            return;
        }
        let idle = Duration::from_secs(config.front.idle_secs.max(1));
        let make = |protocol, port: fn(&cluster::Ports) -> u16| {
            Arc::new(TcpFront {
                protocol,
                port,
                routing: routing.clone(),
                region: config.region.clone(),
                idle,
                new_connections: self.new_connections.clone(),
                passed: Default::default(),
                failed: Default::default(),
            })
        };
        self.tcp = vec![make("rtmp", |p| p.rtmp), make("rtmps", |p| p.rtmps)];
    }

    /// `/metrics` lines of the HTTPS listener and the fronts.
    pub fn metrics(&self) -> signaling::MetricsSource {
        let (https, front, posts, tcp, new_connections) = (
            self.https_metrics.clone(),
            self.front_metrics.clone(),
            self.posts.clone(),
            self.tcp.clone(),
            self.new_connections.clone(),
        );
        let is_front = self.front;
        Arc::new(move || {
            let mut out = String::new();
            https.render(&mut out);
            if is_front {
                front.render(&posts, &mut out);
                out.push_str(
                    "# HELP starling_front_tcp_connections_total RTMP(S) connections the front passed to ingest nodes.\n\
                     # TYPE starling_front_tcp_connections_total counter\n",
                );
                for t in &tcp {
                    t.render(&mut out);
                }
                out.push_str(&format!(
                    "# HELP starling_front_connections_limited_total New connections refused: too many from one address.\n\
                     # TYPE starling_front_connections_limited_total counter\n\
                     starling_front_connections_limited_total {}\n",
                    new_connections.refused()
                ));
            }
            out
        })
    }

    /// Starts every listener on `listeners`.
    pub fn spawn(self, config: &Config, parts: Parts, listeners: &mut JoinSet<anyhow::Result<()>>) {
        let https_port = self.https.local_addr().map_or(443, |a| a.port());
        let http = signaling::listener::Http::new(&config.http);
        let node = http.bounded(parts.node.clone());
        let limits = parts.admission.limits().clone();
        let timeout = Duration::from_secs(config.https.hello_timeout_secs.max(1));
        let front_router = self.front.then(|| {
            http.bounded(signaling::front::router(Arc::new(Front {
                me: parts.me.clone(),
                region: config.region.clone(),
                routing: parts.routing.clone(),
                admission: parts.admission.clone(),
                node: parts.node.clone(),
                token_lifetime: Duration::from_secs(config.front.token_secs.max(1)),
                posts: self.posts.clone(),
                metrics: self.front_metrics.clone(),
            })))
        });
        let https = Arc::new(Https {
            names: Names {
                me: parts.me.clone(),
                own: parts.own_name.clone(),
                public: config.front.public_name.clone().filter(|_| self.front),
            },
            certs: parts.certs.clone(),
            routing: parts.routing.clone(),
            node,
            front: front_router,
            tls: parts.certs.server_config(&[b"http/1.1"]),
            http,
            // Only a front limits the rate of new connections; a node serves what it is sent.
            new_connections: if self.front {
                self.new_connections.clone()
            } else {
                Arc::new(RatePerIp::new(0, 0))
            },
            hello_timeout: timeout,
            idle: Duration::from_secs(config.front.idle_secs.max(1)),
            metrics: self.https_metrics.clone(),
        });
        let per_ip = limits.per_ip("https", config.https.max_connections_per_ip);
        let max = config.https.max_connections;
        listeners.spawn(https.serve(self.https, max, per_ip).map(|()| Ok(())));

        let tls = parts.certs.server_config(&[]);
        match (self.rtmps, &parts.ingest) {
            // An ingest node ends RTMPS itself.
            (Some(rtmps), Some(ingest)) => {
                let certs = parts.certs.clone();
                let accept = move |stream| {
                    let (certs, tls) = (certs.clone(), tls.clone());
                    async move { certs.accept(stream, &tls, timeout).await }
                };
                listeners.spawn(
                    ingest::rtmp::serve_tls(rtmps, config.rtmp.clone(), ingest.clone(), accept)
                        .map(|()| Ok(())),
                );
            }
            // A front passes RTMP and RTMPS to an ingest node.
            (Some(rtmps), None) => {
                let max = config.rtmp.max_connections;
                let per_ip = config.rtmp.max_connections_per_ip;
                for (listener, front) in [self.rtmp_front, Some(rtmps)].into_iter().zip(self.tcp) {
                    if let Some(listener) = listener {
                        let per_ip = limits.per_ip(front.protocol, per_ip);
                        listeners.spawn(front.serve(listener, max, per_ip).map(|()| Ok(())));
                    }
                }
            }
            (None, _) => {}
        }
        if let Some(ftl) = self.ftl_front {
            let routing = parts.routing.clone();
            let region = config.region.clone();
            let pick: ingest::ftl::Pick = Arc::new(move |channel| {
                let node = routing
                    .origin(channel)
                    .filter(|n| n.has(cluster::Role::Ingest) && n.ports.ftl != 0)
                    .or_else(|| {
                        let nodes: Vec<_> = routing
                            .nodes()
                            .into_iter()
                            .filter(|n| n.ports.ftl != 0)
                            .collect();
                        cluster::choose(&nodes, cluster::Role::Ingest, region.as_deref()).cloned()
                    })?;
                Some((node.public_host, node.ports.ftl))
            });
            listeners.spawn(
                ingest::ftl::serve_front(ftl, config.ftl.clone(), parts.admission.clone(), pick)
                    .map(|()| Ok(())),
            );
        }
        if let (Some(redirect), Some(name)) = (self.redirect, config.front.public_name.clone()) {
            let app = signaling::front::https_redirect(name, https_port);
            let per_ip = limits.per_ip("http-redirect", config.http.max_connections_per_ip);
            let http = config.http.clone();
            listeners.spawn(async move {
                signaling::listener::serve(redirect, app, &http, per_ip).await;
                Ok(())
            });
        }
    }
}
