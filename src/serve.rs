//! `starling serve`: every role in one process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use futures::FutureExt;
use tokio::net::TcpListener;
use tracing::{error, info, warn};

use crate::config::Config;

/// Flags of `starling serve`; each overrides the config file and environment.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// HTTP listen address (player, WHEP, API, health).
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// HTTPS listen address (the same routes over TLS; on a front, the public name's door).
    #[arg(long, value_name = "ADDR")]
    https: Option<SocketAddr>,
    /// RTMP listen address.
    #[arg(long, value_name = "ADDR")]
    rtmp: Option<SocketAddr>,
    /// RTMPS (RTMP over TLS) listen address.
    #[arg(long, value_name = "ADDR")]
    rtmps: Option<SocketAddr>,
    /// SRT listen address (UDP).
    #[arg(long, value_name = "ADDR")]
    srt: Option<SocketAddr>,
    /// FTL control listen address (TCP); media comes on UDP ports of `ftl.media_port_first`.
    #[arg(long, value_name = "ADDR")]
    ftl: Option<SocketAddr>,
    /// WebRTC media UDP listen address (all viewers share it).
    #[arg(long, value_name = "ADDR")]
    webrtc: Option<SocketAddr>,
    /// MoQ relay QUIC (UDP) listen address, for other nodes of the cluster.
    #[arg(long, value_name = "ADDR")]
    relay: Option<SocketAddr>,
    /// What this node does, any of ingest,sfu,relay,signaling (default: all).
    #[arg(long, value_name = "ROLES", value_delimiter = ',')]
    roles: Option<Vec<cluster::Role>>,
    /// This node's id in the cluster registry (default: the host's name).
    #[arg(long, value_name = "ID")]
    node_id: Option<String>,
    /// This node's region, for placement.
    #[arg(long, value_name = "NAME")]
    region: Option<String>,
    /// Host name clients use to reach this node, shown in the printed URLs.
    #[arg(long, value_name = "NAME")]
    public_host: Option<String>,
    /// The one public name of the cluster: with the signaling role, this node is its front.
    #[arg(long, value_name = "NAME")]
    public_name: Option<String>,
    /// Log lines as readable text (coloured on a terminal only) or JSON objects, one a line.
    #[arg(long, value_enum, default_value_t, env = "STARLING_LOG_FORMAT")]
    log_format: crate::logging::LogFormat,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    crate::logging::init(args.log_format);
    let mut config = Config::load(args.config.as_deref())?;
    config.http.listen = args.http.unwrap_or(config.http.listen);
    config.https.listen = args.https.unwrap_or(config.https.listen);
    config.rtmp.listen = args.rtmp.unwrap_or(config.rtmp.listen);
    config.rtmp.tls_listen = args.rtmps.unwrap_or(config.rtmp.tls_listen);
    config.front.public_name = args.public_name.or(config.front.public_name);
    config.srt.listen = args.srt.unwrap_or(config.srt.listen);
    config.ftl.listen = args.ftl.unwrap_or(config.ftl.listen);
    config.webrtc.listen = args.webrtc.unwrap_or(config.webrtc.listen);
    config.relay.listen = args.relay.unwrap_or(config.relay.listen);
    config.roles = args.roles.unwrap_or(config.roles);
    config.public_host = args.public_host.or(config.public_host);
    config.node_id = args.node_id.or(config.node_id);
    config.region = args.region.or(config.region);
    // The banner is for people; JSON logs are for machines and get the same in `listening`.
    let banner = args.log_format == crate::logging::LogFormat::Text;
    tokio::runtime::Runtime::new()?.block_on(serve(config, banner))
}

async fn serve(config: Config, banner: bool) -> anyhow::Result<()> {
    let publishers = admission::Publishers::from_config(&config.channels)?;
    if publishers.is_open() {
        warn!("no channels configured: publishing is open to any name");
    }
    let bus = media::Bus::with_config(config.bus);

    let roles = Roles::from(&config.roles);
    let http = TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("HTTP {}", config.http.listen))?;
    // Publishers' listeners only on a node with the ingest role.
    let (rtmp, ftl) = if roles.ingest {
        let rtmp = TcpListener::bind(config.rtmp.listen)
            .await
            .with_context(|| format!("RTMP {}", config.rtmp.listen))?;
        let ftl = TcpListener::bind(config.ftl.listen)
            .await
            .with_context(|| format!("FTL {}", config.ftl.listen))?;
        (Some(rtmp), Some(ftl))
    } else {
        (None, None)
    };
    // HTTPS on every node; RTMPS where publishers come; the fronts on a front.
    let is_front = roles.signaling && config.front.public_name.is_some();
    let mut fronts = crate::fronts::Fronts::bind(&config, roles.ingest, is_front).await?;
    config.srt.validate().map_err(anyhow::Error::msg)?;
    config.transcode.validate().map_err(anyhow::Error::msg)?;
    let node_id = crate::node::node_id(config.node_id.as_deref())?;
    let registry = crate::registry::open(
        config.redis_url.as_deref(),
        config.redis_tls_bundle_url.as_ref(),
        config.redis_tls.as_ref(),
        config.redis_insecure,
        // A Redis down at start does not stop the node: it is retried in the background.
        crate::registry::Connect::InBackground,
    )
    .await?;
    let registry = Arc::new(registry);
    let mut admission = admission::Admission::new(bus.clone(), publishers);
    // In a cluster, a publisher is admitted once its channel is claimed for this node.
    if !matches!(*registry, crate::registry::Backend::Memory(_)) {
        admission = admission.with_claims(crate::node::claims(registry.clone(), node_id.clone()));
    }
    let ingest = ingest::Ingest::new(admission.clone()).with_transcoding(
        ingest::transcode::video_worker::Budget::new(config.transcode.clone()),
    );
    // This node's view of the cluster, kept current by the registry's events.
    let routing = Arc::new(cluster::RoutingTable::new());
    tokio::spawn({
        let (routing, registry) = (routing.clone(), registry.clone());
        async move { routing.follow(&*registry).await }
    });
    let sfu = sfu::Sfu::start(config.webrtc.clone(), admission.clone()).await?;
    sfu.set_roles(roles.sfu, roles.ingest);
    // The relay: other nodes pull what is published here; viewers here watch what is
    // published elsewhere.
    let relay = if roles.relay {
        let me = relay::Me {
            id: node_id.clone(),
            region: config
                .region
                .clone()
                .unwrap_or_else(|| "default".to_owned()),
        };
        let relay = relay::Relay::start(config.relay.clone(), me, bus.clone(), routing.clone())
            .context("relay")?;
        relay.serve_bus();
        Some(relay)
    } else {
        None
    };
    let http_addr = http.local_addr()?;
    let rtmp_addr = rtmp.as_ref().map(TcpListener::local_addr).transpose()?;
    let ftl_addr = ftl.as_ref().map(TcpListener::local_addr).transpose()?;

    let host = config
        .public_host
        .clone()
        .unwrap_or_else(|| display_host(http_addr));
    let (https_addr, rtmps_addr) = fronts.addrs()?;
    let certs = tls_certificates(&config, &host, &registry)?;
    if banner {
        println!("Starling is running.");
        if let (Some(rtmp), Some(ftl)) = (rtmp_addr, ftl_addr) {
            println!(
                "  OBS server (RTMP):  rtmp://{host}:{}/live   stream key: CHANNEL (or CHANNEL?key=SECRET)",
                rtmp.port()
            );
            println!(
                "  SRT:                srt://{host}:{}?streamid=publish:CHANNEL?key=SECRET (MPEG-TS)",
                config.srt.listen.port()
            );
            println!(
                "  FTL (OBS <= 29):    {host}:{} (media on UDP {}+)   stream key: CHANNEL_ID-SECRET",
                ftl.port(),
                config.ftl.media_port_first
            );
        }
        println!(
            "  Watch:              http://{host}:{}/watch/CHANNEL",
            http_addr.port()
        );
        println!(
            "  Publish (browser):  http://{host}:{}/publish/CHANNEL   WHIP: http://{host}:{}/whip/CHANNEL",
            http_addr.port(),
            http_addr.port()
        );
        println!("  Channels:           http://{host}:{}/", http_addr.port());
        println!(
            "  HTTPS:              https://{host}:{}/ ({})",
            https_addr.port(),
            match certs.origin() {
                signaling::certs::Origin::Files => "certificate from [https] files",
                signaling::certs::Origin::SelfSigned(_) =>
                    "self-signed; registry certificates by name come first",
            }
        );
        if let (Some(rtmps), true) = (rtmps_addr, roles.ingest) {
            println!("  OBS server (RTMPS): rtmps://{host}:{}/live", rtmps.port());
        }
        if let Some(name) = config.front.public_name.as_deref().filter(|_| is_front) {
            println!(
                "  Front for {name}: https {}, rtmp/rtmps/ftl passed to ingest nodes{}",
                https_addr.port(),
                if roles.ingest {
                    " (this node ingests)"
                } else {
                    ""
                }
            );
        }
        println!(
            "  WebRTC media:       udp {} (candidates {:?})",
            sfu.local_addr(),
            sfu.candidates()
        );
        if let Some(relay) = &relay {
            println!(
                "  Relay (MoQ/QUIC):   udp {} ({:?} tier, certificate sha256 {})",
                relay
                    .local_addr()
                    .map_or_else(|| "?".to_owned(), |a| a.to_string()),
                relay.tier(),
                relay.fingerprint()
            );
        }
    }
    let [rtmp_front, ftl_front, redirect_http] = fronts.front_addrs();
    info!(
        http = %http_addr,
        https = %https_addr,
        rtmps = ?rtmps_addr,
        front = is_front,
        rtmp_front = ?rtmp_front,
        ftl_front = ?ftl_front,
        redirect_http = ?redirect_http,
        rtmp = ?rtmp_addr,
        srt = %config.srt.listen,
        webrtc = %sfu.local_addr(),
        relay = ?relay.as_ref().and_then(relay::Relay::local_addr),
        roles = ?roles.list(),
        "listening"
    );

    // The listeners: the first to end (an error) ends the node, as a signal does.
    let mut listeners = tokio::task::JoinSet::new();
    if let (Some(rtmp), Some(ftl)) = (rtmp, ftl) {
        listeners.spawn(
            ingest::ftl::serve(ftl, config.ftl.clone(), ingest.clone()).map(|()| anyhow::Ok(())),
        );
        let srt_listen = config.srt.listen;
        listeners.spawn(
            ingest::srt::serve(config.srt.clone(), ingest.clone())
                .map(move |r| r.with_context(|| format!("SRT {srt_listen}"))),
        );
        listeners
            .spawn(ingest::rtmp::serve(rtmp, config.rtmp.clone(), ingest.clone()).map(|()| Ok(())));
    }
    let ports = cluster::Ports {
        http: http_addr.port(),
        https: https_addr.port(),
        rtmp: rtmp_addr.map_or(0, |a| a.port()),
        // A front's RTMPS is a pass-through, not a place to publish.
        rtmps: rtmps_addr.filter(|_| roles.ingest).map_or(0, |a| a.port()),
        srt: if roles.ingest {
            config.srt.listen.port()
        } else {
            0
        },
        ftl: ftl_addr.map_or(0, |a| a.port()),
        webrtc: sfu.local_addr().port(),
        relay: relay
            .as_ref()
            .and_then(relay::Relay::local_addr)
            .map_or(0, |a| a.port()),
    };
    let region = config.region.as_deref().unwrap_or("default");
    let mut me = crate::node::info(node_id.clone(), region, &host, ports);
    me.roles = roles.list();
    if let Some(relay) = &relay {
        me.tier = relay.tier();
        me.relay_fingerprint = relay.fingerprint().to_owned();
    }
    let status = {
        let (sfu, bus) = (sfu.clone(), bus.clone());
        let mut bitrate = crate::node::Bitrate::default();
        move || {
            let channels: Vec<media::ChannelName> = bus
                .live()
                .into_iter()
                .filter(|b| b.publishing && !b.relayed)
                .map(|b| b.name)
                .collect();
            crate::node::Status {
                load: cluster::Load {
                    viewers: u32::try_from(sfu.viewers()).unwrap_or(u32::MAX),
                    ingest_streams: u32::try_from(channels.len()).unwrap_or(u32::MAX),
                    bitrate_out: bitrate.update(sfu.bytes_sent(), std::time::Instant::now()),
                },
                channels,
            }
        }
    };
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let registered = Arc::new(AtomicBool::new(false));
    let renew_task = tokio::spawn(crate::node::renew(
        registry,
        me,
        status,
        registered.clone(),
        stopped,
    ));
    let mut metrics: Vec<signaling::MetricsSource> = Vec::new();
    fronts.prepare(&config, &routing);
    metrics.push(fronts.metrics());
    if let Some(relay) = &relay {
        let relay = relay.clone();
        metrics.push(Arc::new(move || relay.metrics()));
    }
    let app = signaling::node_routes(signaling::NodeRoutes {
        bus,
        sfu: sfu.clone(),
        routing: routing.clone(),
        registered,
        limits: admission.limits().clone(),
        metrics,
    });
    let http_limits = admission
        .limits()
        .per_ip("http", config.http.max_connections_per_ip);
    let parts = crate::fronts::Parts {
        certs: certs.clone(),
        routing,
        node: app.clone(),
        admission: admission.clone(),
        ingest: roles.ingest.then(|| ingest.clone()),
        me: node_id.clone(),
        own_name: host.clone(),
    };
    fronts.spawn(&config, parts, &mut listeners);
    tokio::spawn(certs.follow());
    listeners.spawn(async move {
        signaling::listener::serve(http, app, &config.http, http_limits).await;
        Ok(())
    });

    let ended = tokio::select! {
        Some(listener) = listeners.join_next() => match listener {
            Ok(Ok(())) => Err(anyhow::anyhow!("a listener stopped")),
            Ok(Err(err)) => Err(err),
            Err(join) => Err(anyhow::Error::new(join).context("a listener failed")),
        },
        signal = shutdown_signal() => {
            info!(signal, "shutting down");
            Ok(())
        }
    };
    if let Err(err) = &ended {
        error!(err = format!("{err:#}"), "shutting down");
    }
    // Whatever ended the node: stop accepting, hang up every WebRTC session, and deregister,
    // which releases this node's channel claims. A few seconds at most.
    listeners.abort_all();
    if let Some(relay) = &relay {
        relay.close();
    }
    sfu.close_all(SHUTDOWN_GRACE).await;
    let _ = stop.send(());
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, renew_task).await;
    info!("stopped");
    ended
}

/// The certificates this node serves: the registry's by name (its own name and the public
/// name followed from the start), else `[https]` files, else self-signed (said at start).
fn tls_certificates(
    config: &Config,
    host: &str,
    registry: &Arc<crate::registry::Backend>,
) -> anyhow::Result<Arc<signaling::certs::Certificates>> {
    let mut names = vec![host.to_owned()];
    names.extend(config.front.public_name.clone());
    let files = match (&config.https.certificate, &config.https.key) {
        (Some(chain), Some(key)) => Some((chain.as_path(), key.as_path())),
        (None, None) => None,
        _ => anyhow::bail!("[https] needs both certificate and key, or neither"),
    };
    let certs = signaling::certs::Certificates::new(
        files,
        &names,
        signaling::certs::fetch_from(registry.clone()),
    )
    .context("HTTPS certificate")?;
    if let signaling::certs::Origin::SelfSigned(names) = certs.origin() {
        warn!(
            ?names,
            "HTTPS/RTMPS: self-signed certificate (browsers warn); put one in the registry \
             (starling cluster put-certificate) or set [https] certificate and key"
        );
    }
    for name in &names {
        certs.watch(name);
    }
    Ok(Arc::new(certs))
}

/// How long shutdown waits for sessions to end and for the registry.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// SIGTERM (systemd, Kubernetes, `docker stop`) or SIGINT (Ctrl-C): its name.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot listen for signals; stop the node with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// A host to print: the bound IP, or `localhost` when bound to every interface.
fn display_host(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        "localhost".to_owned()
    } else {
        addr.ip().to_string()
    }
}

/// What this node does (`--roles`, `roles = [...]`; all when none are given).
#[derive(Clone, Copy, Debug)]
struct Roles {
    ingest: bool,
    sfu: bool,
    signaling: bool,
    relay: bool,
}

impl From<&Vec<cluster::Role>> for Roles {
    fn from(roles: &Vec<cluster::Role>) -> Self {
        let has = |r| roles.is_empty() || roles.contains(&r);
        Self {
            ingest: has(cluster::Role::Ingest),
            sfu: has(cluster::Role::Sfu),
            signaling: has(cluster::Role::Signaling),
            relay: has(cluster::Role::Relay),
        }
    }
}

impl Roles {
    fn list(self) -> Vec<cluster::Role> {
        [
            (self.ingest, cluster::Role::Ingest),
            (self.sfu, cluster::Role::Sfu),
            (self.signaling, cluster::Role::Signaling),
            (self.relay, cluster::Role::Relay),
        ]
        .into_iter()
        .filter_map(|(on, role)| on.then_some(role))
        .collect()
    }
}
