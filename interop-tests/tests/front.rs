//! The front (one public name for everyone), as operators run it: a TLS Redis, a front
//! (`roles = ["signaling"]`, `[front] public_name = "live.test"`, HTTPS on 443) and two nodes
//! with names of their own, each `starling serve` on its default addresses in a network
//! namespace of its own, joined to the test's by a veth pair; the test's namespace routes
//! between them and holds Redis (at 10.202.0.1), Chromium, ffmpeg, curl and openssl. Every name
//! has a certificate from the test's own CA, stored in the registry with `starling cluster
//! put-certificate`. Names resolve through the test's hosts file (mounted over `/etc/hosts` in
//! each process's own mount namespace), Chromium's `--host-resolver-rules` and curl's
//! `--resolve`. Publishers and viewers know only `live.test`.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use interop_tests::cluster::{Cluster, ONE_AT_A_TIME};
use interop_tests::ftl::{ffmpeg_rtp, Control};
use interop_tests::{Browser, Ffmpeg, Server, FAST_X264};
use serde_json::Value;

const PUBLIC: &str = "live.test";
/// Where Redis is, on the test namespace's loopback (every server's namespace routes there).
const SERVICES: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 202, 0, 1);
const NODES: [&str; 2] = ["node-a", "node-b"];
const CHANNELS: &str = "\n[channels.alice]\nkey = \"k-alice\"\n[channels.bob]\nkey = \"k-bob\"\n\
                        [channels.carol]\nkey = \"k-carol\"\n[channels.dave]\nkey = \"k-dave\"\n[channels.erin]\nkey = \"k-erin\"\n[ftl.channels]\n\"4321\" = \"carol\"\n";

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The test's CA, and a certificate of it for `name` (with `org` in its subject) at
/// `dir/{name}.crt` and `.key`.
fn certificate(dir: &Path, name: &str, org: &str) -> Result<()> {
    let ca = dir.join("ca.crt");
    if !ca.exists() {
        run(Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=starling-test-ca", "-keyout"])
            .arg(dir.join("ca.key"))
            .arg("-out")
            .arg(&ca))?;
    }
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(&ext, format!("subjectAltName=DNS:{name}\n"))?;
    run(Command::new("openssl")
        .args([
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-subj", &format!("/O={org}/CN={name}"), "-keyout"])
        .arg(dir.join(format!("{name}.key")))
        .arg("-out")
        .arg(dir.join(format!("{name}.csr"))))?;
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-in"])
        .arg(dir.join(format!("{name}.csr")))
        .arg("-CA")
        .arg(&ca)
        .arg("-CAkey")
        .arg(dir.join("ca.key"))
        .args(["-CAcreateserial", "-extfile"])
        .arg(&ext)
        .arg("-out")
        .arg(dir.join(format!("{name}.crt"))))?;
    Ok(())
}

fn put_certificate(cluster: &Cluster, dir: &Path, name: &str) -> Result<()> {
    let chain = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    cluster.cli(&[
        "put-certificate",
        name,
        chain.to_str().context("path")?,
        key.to_str().context("path")?,
    ])?;
    Ok(())
}

/// `openssl s_client` to `port` asking for `name` (none: no SNI), verifying with the test's
/// CA: whether the handshake verified, and what it printed.
fn s_client(to: SocketAddr, name: Option<&str>, ca: &Path) -> Result<(bool, String)> {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &to.to_string()])
        .arg("-CAfile")
        .arg(ca)
        .arg("-verify_return_error");
    match name {
        Some(name) => cmd.args(["-servername", name]),
        None => cmd.arg("-noservername"),
    };
    let out = cmd.stdin(Stdio::null()).output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let verified = out.status.success() && text.contains("Verify return code: 0 (ok)");
    Ok((verified, text))
}

/// curl printing `status redirect_url` and nothing else.
fn curl_status() -> Command {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
    ])
    .args(["--max-time", "10"]);
    cmd
}

/// curl to the public name through the front: `status redirect_url`.
fn curl(front: &Server, ca: &Path, args: &[&str], path: &str) -> Result<String> {
    run(curl_status()
        .arg("--resolve")
        .arg(format!("{PUBLIC}:443:{}", front.http.ip()))
        .arg("--cacert")
        .arg(ca)
        .args(args)
        .arg(format!("https://{PUBLIC}{path}")))
}

/// The front's HTTPS: 443, as a front runs.
fn door(front: &Server) -> SocketAddr {
    SocketAddr::new(front.http.ip(), 443)
}

fn json(server: &Server, path: &str) -> Result<Value> {
    let (status, body) = server.get(path)?;
    ensure!(status == 200, "{path}: {status}");
    Ok(serde_json::from_str(&body)?)
}

/// The node holding `channel`'s publisher, as the front's routing table says.
fn origin(front: &Server, channel: &str) -> Result<Option<String>> {
    let channels = json(front, "/api/cluster/channels")?;
    Ok(channels.as_array().and_then(|a| {
        a.iter()
            .find(|c| c["channel"] == channel)
            .and_then(|c| c["node"].as_str().map(str::to_owned))
    }))
}

/// `host:port` of a node's HTTPS, from the front's `/api/nodes`.
fn https_of(front: &Server, id: &str) -> Result<String> {
    let nodes = json(front, "/api/nodes")?;
    let node = nodes
        .as_array()
        .and_then(|a| a.iter().find(|n| n["id"] == id))
        .with_context(|| format!("{id} in /api/nodes"))?;
    Ok(format!(
        "{}:{}",
        node["public_host"].as_str().context("host")?,
        node["ports"]["https"]
    ))
}

struct Set {
    dir: PathBuf,
    hosts: PathBuf,
    cluster: Cluster,
    front: Server,
    nodes: Vec<Server>,
    /// Chromium's `--host-resolver-rules` for every name.
    rules: String,
}

/// The hosts file every process reads: each name at its server's address.
fn write_hosts(path: &Path, names: &[(String, IpAddr)]) -> Result<()> {
    let mut text = String::from("127.0.0.1 localhost\n::1 localhost\n");
    for (name, ip) in names {
        text.push_str(&format!("{ip} {name}\n"));
    }
    // Written in place: the servers see the file they mounted, not a new one.
    std::fs::write(path, text)?;
    Ok(())
}

fn set_up() -> Result<Set> {
    interop_tests::route_between_namespaces(SERVICES)?;
    let cluster = Cluster::start_at(&SERVICES.to_string())?;
    let dir = cluster.dir.join("front");
    std::fs::create_dir_all(&dir)?;
    let hosts = dir.join("hosts");
    write_hosts(&hosts, &[])?;
    let mut names: Vec<String> = NODES.iter().map(|n| format!("{n}.{PUBLIC}")).collect();
    names.push(format!("front.{PUBLIC}"));
    names.push(PUBLIC.to_owned());
    for name in &names {
        certificate(&dir, name, "starling-test")?;
        put_certificate(&cluster, &dir, name)?;
    }
    let front = cluster.node_isolated(
        "front",
        &format!(
            "public_host = \"front.{PUBLIC}\"\nroles = [\"signaling\"]\n{CHANNELS}\
             [https]\nlisten = \"0.0.0.0:443\"\n\
             [front]\npublic_name = \"{PUBLIC}\"\nredirect_http = \"0.0.0.0:80\"\n\
             posts_burst = 8\nposts_per_minute = 600\n"
        ),
        &hosts,
    )?;
    let mut at = vec![
        (format!("front.{PUBLIC}"), front.http.ip()),
        (PUBLIC.to_owned(), front.http.ip()),
    ];
    write_hosts(&hosts, &at)?;
    let mut nodes = Vec::new();
    for id in NODES {
        let node = cluster.node_isolated(
            id,
            &format!(
                "public_host = \"{id}.{PUBLIC}\"\nroles = [\"ingest\", \"sfu\", \"relay\"]\n\
                 {CHANNELS}"
            ),
            &hosts,
        )?;
        at.push((format!("{id}.{PUBLIC}"), node.http.ip()));
        write_hosts(&hosts, &at)?;
        nodes.push(node);
    }
    front.wait_for(Duration::from_secs(15), || {
        let nodes = json(&front, "/api/nodes")?;
        Ok(nodes.as_array().is_some_and(|a| {
            a.len() == 3 && a.iter().all(|n| n["ports"]["https"].as_u64() != Some(0))
        }))
    })?;
    let rules = at
        .iter()
        .map(|(name, ip)| format!("MAP {name} {ip}"))
        .collect::<Vec<_>>()
        .join(", ");
    Ok(Set {
        dir,
        hosts,
        cluster,
        front,
        nodes,
        rules,
    })
}

async fn browser(rules: &str) -> Result<Browser> {
    Browser::start_with(&[
        format!("--host-resolver-rules={rules}"),
        "--ignore-certificate-errors".to_owned(),
    ])
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn one_public_name_for_publishers_and_viewers() -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let set = set_up()?;
    let Set {
        dir,
        hosts,
        cluster,
        front,
        nodes,
        rules,
    } = &set;
    let ca = dir.join("ca.crt");

    // TLS: a node's own name passes through the front untouched, to the node's certificate;
    // the public name is the front's own; any other name, or none, is refused.
    let mut seen = String::new();
    front
        .wait_for(Duration::from_secs(10), || {
            let (ok, text) = s_client(door(front), Some("node-b.live.test"), &ca)?;
            seen = text;
            Ok(
                ok && seen.contains("CN=node-b.live.test")
                    || seen.contains("CN = node-b.live.test"),
            )
        })
        .with_context(|| format!("node-b through the front: {seen}"))?;
    let (ok, text) = s_client(door(front), Some(PUBLIC), &ca)?;
    ensure!(ok && text.contains("live.test"), "the public name: {text}");
    for name in [Some("elsewhere.example"), None] {
        let (ok, text) = s_client(door(front), name, &ca)?;
        ensure!(
            !ok && !text.contains("BEGIN CERTIFICATE"),
            "{name:?} refused: {text}"
        );
    }
    ensure!(front.metric("starling_https_connections_total{outcome=\"passed_through\"}")? >= 1.0);
    ensure!(front.metric("starling_https_connections_total{outcome=\"refused_name\"}")? >= 2.0);
    // Half a ClientHello, then silence: held at most 5 s (checked at the end); meanwhile
    // everything else goes on.
    let mut slow = TcpStream::connect(door(front))?;
    slow.write_all(&[22, 3, 1, 2, 0])?;
    slow.set_read_timeout(Some(Duration::from_secs(30)))?;
    let slow_since = std::time::Instant::now();
    // Not TLS at all: closed, and nothing else disturbed.
    let mut junk = TcpStream::connect(door(front))?;
    junk.set_read_timeout(Some(Duration::from_secs(10)))?;
    junk.write_all(b"GET / HTTP/1.1\r\nHost: live.test\r\n\r\n")?;
    ensure!(junk.read(&mut [0; 64]).unwrap_or(0) == 0, "junk is closed");

    // HTTP at the public name: CORS preflights answered by the front; a wrong key refused
    // there; the right key redirected to a node with a publish token; port 80 to HTTPS.
    let options = curl(front, &ca, &["-X", "OPTIONS"], "/whip/alice")?;
    ensure!(options.starts_with("204"), "{options}");
    let sdp = ["-H", "Content-Type: application/sdp", "--data", "v=0"];
    let wrong = curl(
        front,
        &ca,
        &[&sdp[..], &["-H", "Authorization: Bearer nope"]].concat(),
        "/whip/alice",
    )?;
    ensure!(wrong.starts_with("401"), "{wrong}");
    let right = curl(
        front,
        &ca,
        &[&sdp[..], &["-H", "Authorization: Bearer k-alice"]].concat(),
        "/whip/alice",
    )?;
    ensure!(
        right.starts_with("307 https://node-") && right.contains("/whip/alice?token="),
        "{right}"
    );
    ensure!(
        !right.contains("k-alice"),
        "the key never travels in the redirect"
    );

    // The token in the redirect is what the node takes instead of `Authorization` (which
    // Firefox and Safari drop across origins): a real offer with the token alone is admitted;
    // a token altered, or one for another channel, is not.
    let offer = dir.join("offer.sdp");
    std::fs::write(&offer, interop_tests::sdp_offer(true, true, true, false))?;
    let erin = curl(
        front,
        &ca,
        &[&sdp[..], &["-H", "Authorization: Bearer k-erin"]].concat(),
        "/whip/erin",
    )?;
    let location = erin.split_once(' ').map(|(_, l)| l).unwrap_or_default();
    let node_host = location
        .strip_prefix("https://")
        .and_then(|l| l.split('/').next())
        .context("the node in the redirect")?;
    let node_ip = nodes
        .iter()
        .zip(NODES)
        .find(|(_, id)| node_host.starts_with(id))
        .map(|(n, _)| n.http.ip())
        .context("a node of ours")?;
    let post_to_node = |url: &str| {
        run(curl_status()
            .arg("--resolve")
            .arg(format!("{node_host}:{node_ip}"))
            .arg("--cacert")
            .arg(&ca)
            .args(["-H", "Content-Type: application/sdp", "--data-binary"])
            .arg(format!("@{}", offer.display()))
            .arg(url))
    };
    let last = if location.ends_with('0') { "1" } else { "0" };
    let tampered = format!("{}{last}", &location[..location.len() - 1]);
    ensure!(post_to_node(&tampered)?.starts_with("401"), "altered token");
    ensure!(
        post_to_node(&location.replace("/whip/erin", "/whip/alice"))?.starts_with("401"),
        "another channel's token"
    );
    let admitted = post_to_node(location)?;
    ensure!(admitted.starts_with("201"), "the token admits: {admitted}");
    // A client posting too fast is told to slow down (8 at once, then 10 a second here).
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(curl(front, &ca, &sdp, "/whep/alice")?);
    }
    ensure!(
        statuses.iter().any(|s| s.starts_with("429")),
        "{statuses:?}"
    );
    ensure!(front.metric("starling_front_posts_limited_total")? >= 1.0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let moved = run(curl_status().arg(format!("http://{}:80/watch/alice", front.http.ip())))?;
    ensure!(
        moved == format!("308 https://{PUBLIC}/watch/alice"),
        "{moved}"
    );

    // Chromium publishes over WHIP from a page the front serves, to the public name, with its
    // key; it ends on the ingest node placement chose.
    let publisher = browser(rules).await?;
    publisher
        .client
        .goto(&format!(
            "https://{PUBLIC}/publish/alice?autostart=1&simulcast=0&codec=h264&key=k-alice"
        ))
        .await?;
    let mut state = Value::Null;
    for _ in 0..100 {
        state = publisher
            .eval("return JSON.parse(JSON.stringify(window.starlingPublish || {}));")
            .await?;
        if state["state"] == "live" || state["state"] == "error" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ensure!(state["state"] == "live", "publisher: {state}");
    let mut alice_origin = None;
    front.wait_for(Duration::from_secs(10), || {
        alice_origin = origin(front, "alice")?;
        Ok(alice_origin.is_some())
    })?;
    let alice_origin = alice_origin.context("alice's origin")?;
    let at = https_of(front, &alice_origin)?;
    let resource = state["resource"].as_str().unwrap_or_default();
    ensure!(
        resource.starts_with(&format!("https://{at}/whip/alice/")),
        "the publisher's session is on {alice_origin} ({at}): {resource}"
    );

    // Another Chromium watches through the public name: the front sends it to a primary; with
    // equal load, the one that carries the channel already.
    let viewer = browser(rules).await?;
    viewer
        .client
        .goto(&format!("https://{PUBLIC}/watch/alice"))
        .await?;
    viewer.wait_playing(Duration::from_secs(30)).await?;
    let page = viewer.eval("return location.host;").await?;
    ensure!(page == at.as_str(), "viewer on {page}, expected {at}");
    eprintln!("alice: published on {alice_origin} ({resource}), watched on {page}");
    publisher.close().await?;

    // RTMPS to the public name: passed through to an ingest node, whose TLS serves the public
    // name's certificate; a viewer on the other node decodes it over the relay.
    let _rtmps = Ffmpeg::push_rtmp_resolving(
        &format!("rtmps://{PUBLIC}:1936/live/bob?key=k-bob"),
        FAST_X264,
        hosts,
    )?;
    let mut bob_origin = None;
    front.wait_for(Duration::from_secs(20), || {
        bob_origin = origin(front, "bob")?;
        Ok(bob_origin.is_some())
    })?;
    let bob_origin = bob_origin.context("bob's origin")?;
    let other = NODES
        .iter()
        .find(|n| **n != bob_origin)
        .context("another node")?;
    viewer
        .client
        .goto(&format!("https://{}/watch/bob", https_of(front, other)?))
        .await?;
    let playing = viewer.wait_playing(Duration::from_secs(30)).await?;
    eprintln!(
        "bob: RTMPS through the front to {bob_origin}, watched on {other}: {} frames decoded",
        playing["video"]["framesDecoded"]
    );

    // Plain RTMP to the public name: passed to an ingest node likewise.
    let _rtmp = Ffmpeg::push_rtmp_resolving(
        &format!("rtmp://{PUBLIC}/live/dave?key=k-dave"),
        FAST_X264,
        hosts,
    )?;
    front.wait_for(Duration::from_secs(20), || {
        Ok(origin(front, "dave")?.is_some())
    })?;
    ensure!(
        front
            .metric("starling_front_tcp_connections_total{protocol=\"rtmp\",outcome=\"passed\"}")?
            >= 1.0
    );

    // FTL through the front: a wrong key is refused there; the right one streams to the
    // channel's node, media relayed by the front, and a viewer decodes it.
    let mut wrong = Control::connect(front.ftl)?;
    let (reply, port) = wrong.handshake(4321, "nope")?;
    ensure!(reply == "405\n" && port.is_none(), "{reply:?}");
    let mut control = Control::connect(front.ftl)?;
    let (reply, port) = control.handshake(4321, "k-carol")?;
    let port = port.with_context(|| format!("no media port in {reply:?}"))?;
    let _ftl = Killed(ffmpeg_rtp(&format!("{}:{port}", front.http.ip()), 4321)?);
    front.wait_for(Duration::from_secs(20), || {
        Ok(origin(front, "carol")?.is_some())
    })?;
    viewer
        .client
        .goto(&format!("https://{PUBLIC}/watch/carol"))
        .await?;
    viewer.wait_playing(Duration::from_secs(30)).await?;
    eprintln!(
        "carol: FTL through the front to {:?}, watched on {}",
        origin(front, "carol")?,
        viewer.eval("return location.host;").await?
    );
    control.send("PING 4321")?;
    ensure!(control.reply()? == "201\n", "PING through the front");
    viewer.close().await?;

    // A certificate put in the registry is served without a restart.
    certificate(dir, "node-a.live.test", "rotated")?;
    put_certificate(cluster, dir, "node-a.live.test")?;
    let mut seen = String::new();
    front
        .wait_for(Duration::from_secs(10), || {
            let (ok, text) = s_client(nodes[0].https, Some("node-a.live.test"), &ca)?;
            seen = text;
            Ok(ok && seen.contains("rotated"))
        })
        .with_context(|| format!("the new certificate: {seen}"))?;

    ensure!(
        slow.read(&mut [0; 16]).unwrap_or(0) == 0,
        "the silent client is closed"
    );
    ensure!(slow_since.elapsed() < Duration::from_secs(30));
    ensure!(front.metric("starling_https_connections_total{outcome=\"refused_hello\"}")? >= 2.0);

    for server in [front, &nodes[0], &nodes[1]] {
        let log = server.log();
        for secret in ["k-alice", "k-bob", "k-carol", "k-dave", "k-erin", "token="] {
            ensure!(!log.contains(secret), "{secret} in a log");
        }
    }
    Ok(())
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A single node on its defaults, as a user runs it (every listener on `0.0.0.0`, in a
/// namespace of its own reached over a veth pair): HTTPS on 8443 and RTMPS on 1936, with a
/// self-signed certificate it says it made.
#[test]
fn a_node_on_its_defaults_serves_https_and_rtmps() -> Result<()> {
    let server = Server::start_isolated(None, &[])?;
    ensure!(server.https.port() == 8443 && server.rtmps.port() == 1936);
    let health = run(Command::new("curl")
        .args(["-sk", "--max-time", "10"])
        .arg(format!("https://{}/healthz", server.https)))?;
    ensure!(health.starts_with("ok"), "{health}");
    let _push = Ffmpeg::push_rtmp(&format!("rtmps://{}/live/plain", server.rtmps), FAST_X264)?;
    server.wait_for(Duration::from_secs(20), || {
        Ok(server.channel("plain")?.is_some())
    })?;
    ensure!(
        server.log().contains("self-signed certificate"),
        "it says the certificate is self-signed"
    );
    Ok(())
}
