//! Harness for end-to-end tests: starts the real `starling` binary on free ports, pushes with
//! ffmpeg, watches with headless Chromium over WebDriver. Every child process is killed on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

pub mod cluster;
pub mod ftl;
mod shim;
pub use shim::{Shim, SHIM_STATE};

/// An RTMP client's handshake (rml_rtmp's); the bytes the server sent after it.
pub fn rtmp_handshake(stream: &mut TcpStream) -> Result<Vec<u8>> {
    use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
    let mut handshake = Handshake::new(PeerType::Client);
    stream.write_all(&handshake.generate_outbound_p0_and_p1()?)?;
    let mut buf = vec![0u8; 8192];
    loop {
        let n = stream.read(&mut buf)?;
        ensure!(n > 0, "closed during the handshake");
        match handshake.process_bytes(&buf[..n])? {
            HandshakeProcessResult::InProgress { response_bytes } => {
                stream.write_all(&response_bytes)?
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                stream.write_all(&response_bytes)?;
                return Ok(remaining_bytes);
            }
        }
    }
}

/// The release build of `starling` (`cargo build --release`; scripts/test makes it).
pub fn release_bin() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("release/starling")
}

/// The `starling` binary built by `cargo build` (or `$STARLING_BIN`).
pub fn starling_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("STARLING_BIN") {
        return bin.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("debug/starling")
}

/// `N` different free TCP ports: all are held until all are known, since a port picked by
/// binding and releasing can come back at the next pick.
pub fn free_tcp_ports<const N: usize>() -> [u16; N] {
    let held = [(); N].map(|_| TcpListener::bind("127.0.0.1:0").expect("free tcp port"));
    held.map(|l| l.local_addr().expect("bound address").port())
}

fn free_udp() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free udp port")
}

/// Lets servers in namespaces of their own reach each other and the test's services: packets
/// between veth pairs are forwarded by the test's namespace, which also gets `extra` (e.g.
/// `10.202.0.1`) on its loopback for services every namespace reaches (a Redis). Only in a
/// namespace of the test's own (scripts/test makes one): never on the machine's.
pub fn route_between_namespaces(extra: std::net::Ipv4Addr) -> Result<()> {
    // The test's own namespace has loopback and the veth pairs of tests only.
    let links = Command::new("ip").args(["-o", "link", "show"]).output()?;
    for line in String::from_utf8_lossy(&links.stdout).lines() {
        let name = line.split(':').nth(1).unwrap_or_default().trim();
        let name = name.split('@').next().unwrap_or_default();
        ensure!(
            name == "lo" || name.starts_with("st"),
            "run this test in a network namespace of its own (scripts/test does, or \
             unshare -n); this one has {name}"
        );
    }
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")?;
    let out = Command::new("ip")
        .args(["addr", "add", &format!("{extra}/32"), "dev", "lo"])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success() || err.contains("exists"),
        "ip addr add {extra}: {err}"
    );
    Ok(())
}

/// `program`, resolving names with `hosts` if given: an `/etc/hosts` of the test's, mounted
/// over the real one in a mount namespace of the program's own (the machine's is untouched).
pub fn with_hosts(program: impl AsRef<std::ffi::OsStr>, hosts: Option<&Path>) -> Command {
    match hosts {
        Some(hosts) => {
            let mut cmd = Command::new("unshare");
            cmd.args(["-m", "--", "sh", "-c"])
                .arg("mount --bind \"$0\" /etc/hosts && exec \"$@\"")
                .arg(hosts)
                .arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// A running `starling serve` on loopback.
pub struct Server {
    child: Child,
    /// HTTP address.
    pub http: SocketAddr,
    /// HTTPS address.
    pub https: SocketAddr,
    /// RTMP address.
    pub rtmp: SocketAddr,
    /// RTMPS address.
    pub rtmps: SocketAddr,
    /// SRT (UDP) address.
    pub srt: SocketAddr,
    /// FTL control (TCP) address.
    pub ftl: SocketAddr,
    /// WebRTC UDP address.
    pub webrtc: SocketAddr,
    /// MoQ relay (QUIC) address.
    pub relay: SocketAddr,
    log: Arc<Mutex<String>>,
    /// The veth pair of a server in its own namespace; it goes with the namespace.
    _link: Option<Veth>,
}

/// Where a server listens.
struct Listeners {
    http: SocketAddr,
    https: SocketAddr,
    rtmp: SocketAddr,
    rtmps: SocketAddr,
    srt: SocketAddr,
    ftl: SocketAddr,
    webrtc: SocketAddr,
    relay: SocketAddr,
}

/// A veth pair between the test's network namespace and a server's: a /29 of 10.201.0.0/16
/// per pair, unique among the pairs of this process (and, by the process id, of others). The
/// test's end has two addresses: its own, and a stranger's (for hostile clients, so the
/// per-address caps they hit do not touch the test's own requests).
#[derive(Debug)]
struct Veth {
    host: String,
    peer: String,
    ours: std::net::Ipv4Addr,
    server: std::net::Ipv4Addr,
    stranger: std::net::Ipv4Addr,
}

impl Veth {
    fn next() -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pid = std::process::id();
        let slot = (pid.wrapping_mul(64).wrapping_add(n)) % 8_192;
        let base = u32::from(std::net::Ipv4Addr::new(10, 201, 0, 0)) + slot * 8;
        Self {
            host: format!("st{}h{n}", pid % 100_000),
            peer: format!("st{}s{n}", pid % 100_000),
            ours: (base + 1).into(),
            server: (base + 2).into(),
            stranger: (base + 3).into(),
        }
    }

    /// Makes the pair, with the server's end in the namespace of process `pid`, once that
    /// process has made its namespace (`unshare` may not have yet when it is spawned).
    fn attach(&self, pid: u32) -> Result<()> {
        let ours = std::fs::read_link("/proc/self/ns/net")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_link(format!("/proc/{pid}/ns/net"))? == ours {
            ensure!(
                Instant::now() < deadline,
                "the server made no network namespace"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let pid = pid.to_string();
        let ours = format!("{}/29", self.ours);
        let stranger = format!("{}/29", self.stranger);
        let steps: [&[&str]; 4] = [
            &[
                "link", "add", &self.host, "type", "veth", "peer", "name", &self.peer, "netns",
                &pid,
            ],
            &["addr", "add", &ours, "dev", &self.host],
            &["addr", "add", &stranger, "dev", &self.host],
            &["link", "set", &self.host, "up"],
        ];
        for args in steps {
            let out = Command::new("ip").args(args).output().context("run ip")?;
            ensure!(
                out.status.success(),
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        // Usually gone with the server's namespace already.
        let _ = Command::new("ip")
            .args(["link", "del", &self.host])
            .stderr(Stdio::null())
            .status();
    }
}

impl Server {
    /// Starts a server with an optional TOML config body.
    pub fn start(config: Option<&str>) -> Result<Self> {
        Self::start_with_env(config, &[])
    }

    /// Starts a server with a config body and environment variables (secrets go there).
    /// Free ports are found by binding and releasing them, so another process may take one
    /// before the server binds it: then it is started again on other ports.
    pub fn start_with_env(config: Option<&str>, env: &[(&str, &str)]) -> Result<Self> {
        Self::start_with_hosts(config, env, None)
    }

    /// [`Server::start_with_env`], resolving names with `hosts` (an `/etc/hosts` file of the
    /// test's, mounted over the real one in a mount namespace of the server's own).
    pub fn start_with_hosts(
        config: Option<&str>,
        env: &[(&str, &str)],
        hosts: Option<&std::path::Path>,
    ) -> Result<Self> {
        let mut attempt = 0;
        loop {
            match Self::start_once(config, env, hosts) {
                Err(err)
                    if attempt < 3 && format!("{err:#}").contains("Address already in use") =>
                {
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    fn start_once(
        config: Option<&str>,
        env: &[(&str, &str)],
        hosts: Option<&std::path::Path>,
    ) -> Result<Self> {
        let [http, https, rtmp, rtmps, ftl] = free_tcp_ports::<5>();
        let http: SocketAddr = format!("127.0.0.1:{http}").parse()?;
        let https: SocketAddr = format!("127.0.0.1:{https}").parse()?;
        let rtmp: SocketAddr = format!("127.0.0.1:{rtmp}").parse()?;
        let rtmps: SocketAddr = format!("127.0.0.1:{rtmps}").parse()?;
        let srt: SocketAddr = format!("127.0.0.1:{}", free_udp()).parse()?;
        let ftl: SocketAddr = format!("127.0.0.1:{ftl}").parse()?;
        let webrtc: SocketAddr = format!("127.0.0.1:{}", free_udp()).parse()?;
        let relay: SocketAddr = format!("127.0.0.1:{}", free_udp()).parse()?;
        let mut cmd = with_hosts(starling_bin(), hosts);
        cmd.arg("serve");
        for (flag, addr) in [
            ("--http", http),
            ("--https", https),
            ("--rtmp", rtmp),
            ("--rtmps", rtmps),
            ("--srt", srt),
            ("--ftl", ftl),
            ("--webrtc", webrtc),
            ("--relay", relay),
        ] {
            cmd.arg(flag).arg(addr.to_string());
        }
        let addrs = Listeners {
            http,
            https,
            rtmp,
            rtmps,
            srt,
            ftl,
            webrtc,
            relay,
        };
        Self::spawn(starling_bin(), cmd, addrs, config, env, |_| Ok(None))
    }

    /// Starts a server the way a user runs it: `starling serve` with no address flags (every
    /// listener on `0.0.0.0` and its default port), in a network namespace of its own, joined
    /// to the test's by a veth pair. The test reaches it at its veth address, not loopback.
    /// Needs root (scripts/test runs as root, inside a namespace of its own).
    pub fn start_isolated(config: Option<&str>, env: &[(&str, &str)]) -> Result<Self> {
        Self::start_isolated_bin(&starling_bin(), config, env)
    }

    /// [`Server::start_isolated`] with another build of the binary (the release one).
    pub fn start_isolated_bin(
        bin: &std::path::Path,
        config: Option<&str>,
        env: &[(&str, &str)],
    ) -> Result<Self> {
        Self::start_isolated_with(bin, &["serve"], config, env, None)
    }

    /// [`Server::start_isolated`], resolving names with the test's `hosts` file (mounted over
    /// `/etc/hosts` in a mount namespace of the server's own). Its namespace routes through
    /// the test's (see [`route_between_namespaces`]), so servers reach each other.
    pub fn start_isolated_resolving(
        config: Option<&str>,
        env: &[(&str, &str)],
        hosts: &Path,
    ) -> Result<Self> {
        Self::start_isolated_with(&starling_bin(), &["serve"], config, env, Some(hosts))
    }

    /// The newcomer's way: `scripts/serve` (build prerequisites, then `cargo run --release --
    /// serve`), in a namespace of its own as [`Server::start_isolated`].
    pub fn start_isolated_script(config: Option<&str>, env: &[(&str, &str)]) -> Result<Self> {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/serve");
        Self::start_isolated_with(&script, &[], config, env, None)
    }

    /// `program args... [--config FILE]` in a namespace of its own (see
    /// [`Server::start_isolated`]).
    fn start_isolated_with(
        bin: &std::path::Path,
        args: &[&str],
        config: Option<&str>,
        env: &[(&str, &str)],
        hosts: Option<&Path>,
    ) -> Result<Self> {
        let link = Veth::next();
        let mut cmd = Command::new("unshare");
        // The namespace is made by `unshare`; the script waits for its end of the veth pair
        // (moved in from outside), gives it its address and a default route through the
        // test's namespace, and becomes the server.
        let mount = match hosts {
            Some(_) => "mount --bind \"$HOSTS_FILE\" /etc/hosts; ",
            None => "",
        };
        cmd.args(["-n", "-m", "--", "bash", "-c"]).arg(format!(
            "set -e; ip link set lo up; \
             for _ in $(seq 200); do ip link show {peer} >/dev/null 2>&1 && break; sleep 0.05; done; \
             ip addr add {ip}/29 dev {peer}; ip link set {peer} up; \
             ip route add default via {ours}; {mount}exec \"$@\"",
            peer = link.peer,
            ip = link.server,
            ours = link.ours,
        ));
        if let Some(hosts) = hosts {
            cmd.env("HOSTS_FILE", hosts);
        }
        cmd.arg("_").arg(bin).args(args);
        let at = |port| SocketAddr::new(link.server.into(), port);
        let addrs = Listeners {
            http: at(8080),
            https: at(8443),
            rtmp: at(1935),
            rtmps: at(1936),
            srt: at(9000),
            ftl: at(8084),
            webrtc: at(8189),
            relay: at(4443),
        };
        Self::spawn(bin.to_owned(), cmd, addrs, config, env, |child| {
            link.attach(child.id())?;
            Ok(Some(link))
        })
    }

    fn spawn(
        bin: PathBuf,
        mut cmd: Command,
        addrs: Listeners,
        config: Option<&str>,
        env: &[(&str, &str)],
        attach: impl FnOnce(&Child) -> Result<Option<Veth>>,
    ) -> Result<Self> {
        anyhow::ensure!(
            bin.exists(),
            "{} is missing: run `cargo build` first (scripts/test does)",
            bin.display()
        );
        if let Some(config) = config {
            let path = std::env::temp_dir().join(format!(
                "starling-test-{}-{}-{}.toml",
                std::process::id(),
                addrs.http.ip(),
                addrs.http.port()
            ));
            std::fs::write(&path, config)?;
            cmd.arg("--config").arg(path);
        }
        cmd.envs(env.iter().copied());
        // No NO_COLOR: a piped log must be plain by itself.
        cmd.env(
            "RUST_LOG",
            "info,sfu=debug,ingest=debug,relay=debug,str0m=warn",
        );
        let mut child = cmd
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn starling")?;
        let log = Arc::new(Mutex::new(String::new()));
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    log.lock().unwrap().push_str(&(line + "\n"));
                }
            });
        }
        let link = match attach(&child) {
            Ok(link) => link,
            Err(err) => {
                let _ = child.kill();
                return Err(err);
            }
        };
        let Listeners {
            http,
            https,
            rtmp,
            rtmps,
            srt,
            ftl,
            webrtc,
            relay,
        } = addrs;
        let mut server = Self {
            child,
            http,
            https,
            rtmp,
            rtmps,
            srt,
            ftl,
            webrtc,
            relay,
            log,
            _link: link,
        };
        // Long enough for `scripts/serve` to check the build; a server that exits is seen at once.
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if server
                .get("/healthz")
                .is_ok_and(|(status, _)| status == 200)
            {
                break;
            }
            if server.child.try_wait()?.is_some() {
                // Give the log readers a moment to catch the last lines.
                std::thread::sleep(Duration::from_millis(100));
                bail!("server exited at start:\n{}", server.log());
            }
            if Instant::now() > deadline {
                bail!("server did not become healthy in 90 s:\n{}", server.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    /// A second address of the test's end of the veth pair (servers in their own namespace
    /// only): hostile clients bind it, so the caps they hit spare the test's own requests.
    pub fn stranger(&self) -> Option<std::net::IpAddr> {
        self._link.as_ref().map(|l| l.stranger.into())
    }

    /// The server's resident memory, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS")
    }

    /// A value of `/metrics`: the sample named exactly `name` (with its labels).
    pub fn metric(&self, name: &str) -> Result<f64> {
        let (_, body) = self.get("/metrics")?;
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .with_context(|| format!("no {name} in /metrics:\n{body}"))
    }

    /// The server's process id (for signals and `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM (what systemd and Kubernetes send) and waits up to `limit` for the exit;
    /// whether it exited, and with success.
    pub fn terminate(&mut self, limit: Duration) -> Result<Option<bool>> {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?
            .success();
        ensure!(ok, "kill -TERM failed");
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status.success()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(None)
    }

    /// Kills the server at once (SIGKILL): no shutdown, no goodbye to the registry.
    pub fn kill_now(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The value of the field `key=` in a log line, if it has one.
    pub fn log_field<T: std::str::FromStr>(line: &str, key: &str) -> Option<T> {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))?
            .parse()
            .ok()
    }

    /// Everything the server printed so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// `rtmp://.../live/{key}`.
    pub fn rtmp_url(&self, stream_key: &str) -> String {
        format!("rtmp://{}/live/{}", self.rtmp, stream_key)
    }

    /// `srt://...?streamid={stream_id}` for ffmpeg.
    pub fn srt_url(&self, stream_id: &str) -> String {
        format!("srt://{}?streamid={}", self.srt, stream_id)
    }

    /// `http://.../{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// A GET; returns status and body.
    pub fn get(&self, path: &str) -> Result<(u16, String)> {
        http(self.http, "GET", path, None, "")
    }

    /// A POST with a content type; returns status and body.
    pub fn post(&self, path: &str, content_type: &str, body: &str) -> Result<(u16, String)> {
        http(self.http, "POST", path, Some(content_type), body)
    }

    /// The channel's API entry, if live.
    pub fn channel(&self, name: &str) -> Result<Option<Value>> {
        let (status, body) = self.get(&format!("/api/channels/{name}"))?;
        Ok(if status == 200 {
            Some(serde_json::from_str(&body)?)
        } else {
            None
        })
    }

    /// Polls `check` every 100 ms until it is true or `limit` passes.
    pub fn wait_for(&self, limit: Duration, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(true) = check() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "condition not met within {limit:?}; server log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The whole process group: `scripts/serve` runs the server under cargo.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 request over loopback (`Connection: close`).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> Result<(u16, String)> {
    let headers: Vec<(&str, &str)> = content_type
        .map(|ct| ("Content-Type", ct))
        .into_iter()
        .collect();
    let r = request(addr, method, path, &headers, body)?;
    Ok((r.status, r.body))
}

/// An HTTP response: status, header block (lower-cased names) and body.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The header lines, names lower-cased.
    pub headers: String,
    /// The body.
    pub body: String,
}

impl Reply {
    /// The value of header `name` (lower case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            (n.trim() == name).then(|| v.trim())
        })
    }
}

/// An HTTP/1.1 request with any headers.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Reply> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    request_on(stream, addr, method, path, headers, body)
}

/// An HTTP/1.1 request on a connection already made (from a chosen source address, say).
pub fn request_on(
    mut stream: TcpStream,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Reply> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let headers = head
        .lines()
        .skip(1)
        .map(|l| match l.split_once(':') {
            Some((n, v)) => format!("{}:{v}\n", n.to_ascii_lowercase()),
            None => format!("{l}\n"),
        })
        .collect();
    Ok(Reply {
        status,
        headers,
        body: body.to_owned(),
    })
}

/// An SDP offer from str0m (an independent client) with the given media and codecs.
pub fn sdp_offer(send: bool, video: bool, audio: bool, vp8_only: bool) -> String {
    use str0m::media::{Direction, MediaKind};
    let mut builder = str0m::Rtc::builder();
    if vp8_only {
        builder = builder
            .clear_codecs()
            .enable_vp8(true)
            .enable_opus(true, false);
    }
    let mut rtc = builder.build(Instant::now());
    let mut api = rtc.sdp_api();
    let dir = if send {
        Direction::SendOnly
    } else {
        Direction::RecvOnly
    };
    if video {
        api.add_media(MediaKind::Video, dir, None, None, None);
    }
    if audio {
        api.add_media(MediaKind::Audio, dir, None, None, None);
    }
    let (offer, _) = api.apply().expect("an offer");
    offer.to_sdp_string()
}

/// x264 settings for a quick, low-latency test stream: no B-frames, a keyframe every second.
pub const FAST_X264: &[&str] = &[
    "-preset",
    "ultrafast",
    "-tune",
    "zerolatency",
    "-bf",
    "0",
    "-g",
    "30",
];

/// An ffmpeg process pushing a generated test stream over RTMP.
pub struct Ffmpeg {
    child: Child,
}

impl Ffmpeg {
    /// Pushes `testsrc2` + `sine` as H.264 (with `x264_args`) + AAC to `url`, in real time.
    pub fn push_rtmp(url: &str, x264_args: &[&str]) -> Result<Self> {
        Self::push(url, "flv", x264_args, &["-c:a", "aac", "-b:a", "96k"], None)
    }

    /// [`Ffmpeg::push_rtmp`] resolving names with the test's `hosts` file (see
    /// [`Server::start_with_hosts`]), e.g. to `rtmps://` a front's public name.
    pub fn push_rtmp_resolving(url: &str, x264_args: &[&str], hosts: &Path) -> Result<Self> {
        Self::push(
            url,
            "flv",
            x264_args,
            &["-c:a", "aac", "-b:a", "96k"],
            Some(hosts),
        )
    }

    /// Pushes the same test stream as MPEG-TS over SRT to `url`, with audio encoded by
    /// `audio_args` (e.g. `-c:a aac` or `-c:a libopus`).
    pub fn push_srt(url: &str, x264_args: &[&str], audio_args: &[&str]) -> Result<Self> {
        Self::push(url, "mpegts", x264_args, audio_args, None)
    }

    fn push(
        url: &str,
        format: &str,
        x264_args: &[&str],
        audio_args: &[&str],
        hosts: Option<&Path>,
    ) -> Result<Self> {
        let mut args: Vec<&str> = vec![
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-re",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-pix_fmt",
            "yuv420p",
        ];
        args.extend_from_slice(x264_args);
        args.extend_from_slice(audio_args);
        args.extend_from_slice(&["-t", "120", "-f", format, url]);
        let child = with_hosts("ffmpeg", hosts)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn ffmpeg (scripts/test installs it)")?;
        Ok(Self { child })
    }

    /// Waits up to `limit` for ffmpeg to exit; returns its success and stderr.
    pub fn wait_exit(mut self, limit: Duration) -> Result<(bool, String)> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    e.read_to_string(&mut err)?;
                }
                return Ok((status.success(), err));
            }
            if Instant::now() > deadline {
                bail!("ffmpeg still running after {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Freezes ffmpeg (SIGSTOP): the connection stays open but nothing more is sent.
    pub fn freeze(&self) -> Result<()> {
        let ok = Command::new("kill")
            .args(["-STOP", &self.child.id().to_string()])
            .status()?
            .success();
        anyhow::ensure!(ok, "kill -STOP failed");
        Ok(())
    }

    /// Stops pushing.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it has exited, and if so whether successfully.
    pub fn exited(&mut self) -> Result<Option<bool>> {
        Ok(self.child.try_wait()?.map(|status| status.success()))
    }
}

impl Drop for Ffmpeg {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Headless Chromium driven over WebDriver, with the flags DESIGN.md section 6 lists.
pub struct Browser {
    driver: Child,
    /// The WebDriver client.
    pub client: fantoccini::Client,
    profile: PathBuf,
}

impl Browser {
    /// Starts chromedriver and a fresh Chromium.
    pub async fn start() -> Result<Self> {
        Self::start_with(&[]).await
    }

    /// [`Browser::start`] with more Chromium flags (`--host-resolver-rules=...`, say).
    pub async fn start_with(extra: &[String]) -> Result<Self> {
        let [port] = free_tcp_ports::<1>();
        // Its own process group: dropped with Chromium and every helper process of it, even
        // when a test fails before closing the session.
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawn chromedriver (scripts/test installs chromium-driver)")?;
        let profile =
            std::env::temp_dir().join(format!("starling-chromium-{}-{port}", std::process::id()));
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--no-first-run".to_owned(),
            "--allow-loopback-in-peer-connection".to_owned(),
            "--disable-features=WebRtcHideLocalIpsWithMdns".to_owned(),
            "--use-fake-device-for-media-stream".to_owned(),
            "--use-fake-ui-for-media-stream".to_owned(),
            "--autoplay-policy=no-user-gesture-required".to_owned(),
            format!("--user-data-dir={}", profile.display()),
        ];
        args.extend_from_slice(extra);
        let caps = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args },
        });
        let caps = caps.as_object().cloned().context("caps")?;
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = loop {
            match fantoccini::ClientBuilder::rustls()?
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(err) if Instant::now() > deadline => {
                    bail!("cannot start Chromium via chromedriver: {err}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        Ok(Self {
            driver,
            client,
            profile,
        })
    }

    /// Ends the browser session (Chromium exits), then chromedriver.
    pub async fn close(self) -> Result<()> {
        self.client.clone().close().await?;
        Ok(())
    }

    /// Runs `script` (which must `return` a value) in the page.
    pub async fn eval(&self, script: &str) -> Result<Value> {
        Ok(self.client.execute(script, vec![]).await?)
    }

    /// The player's state: `window.starling` with inbound video and audio stats.
    pub async fn player(&self) -> Result<Value> {
        self.eval("const s = window.starling || {}; return JSON.parse(JSON.stringify({state: s.state, ttffMs: s.ttffMs, sessions: s.sessions, video: s.video || null, audio: s.audio || null, layer: s.layer || null}));").await
    }

    /// Evaluates `script` until `check` accepts its value (every 250 ms, up to `limit`).
    pub async fn wait_until(
        &self,
        script: &str,
        limit: Duration,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let v = self.eval(script).await?;
            if check(&v) {
                return Ok(v);
            }
            ensure!(
                Instant::now() < deadline,
                "{what} not reached in {limit:?}: {v}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// A Chromium tab watching `channel` through `shim` (a bare WHEP viewer whose answer
    /// points at the shim), once it decodes; and its first state (see [`SHIM_STATE`]).
    pub async fn watch_through(
        server: &Server,
        channel: &str,
        shim: &Shim,
    ) -> Result<(Self, Value)> {
        let viewer = Self::start().await?;
        viewer.client.goto(&server.url("/healthz")).await?;
        viewer.eval(&shim::viewer_script(channel, shim)).await?;
        let state = viewer
            .wait_until(
                SHIM_STATE,
                Duration::from_secs(30),
                "decoding via the shim",
                |v| num(v, "video.framesDecoded") > 10.0,
            )
            .await?;
        Ok((viewer, state))
    }

    /// The player's state once it shows the track its video comes from (the page asks the
    /// session's layer endpoint now and then, so it can lag the first frames).
    pub async fn player_with_layer(&self) -> Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let p = self.player().await?;
            if p["layer"]["current"].is_string() || Instant::now() > deadline {
                return Ok(p);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the page's player decodes video and receives audio; its state then.
    pub async fn wait_playing(&self, limit: Duration) -> Result<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let p = self.player().await?;
            if num(&p, "video.framesDecoded") > 0.0 && num(&p, "audio.totalSamplesReceived") > 0.0 {
                return Ok(p);
            }
            ensure!(Instant::now() < deadline, "no video and audio: {p}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Checks, `secs` after `first`, that video kept decoding (15+ frames a second) and audio
    /// kept playing out (48,000+ samples a second); the state then.
    pub async fn keeps_playing(&self, first: &Value, secs: u64) -> Result<Value> {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let later = self.player().await?;
        let s = secs as f64;
        ensure!(
            num(&later, "video.framesDecoded") > num(first, "video.framesDecoded") + 15.0 * s,
            "video keeps decoding: {first} -> {later}"
        );
        ensure!(
            num(&later, "audio.totalSamplesReceived")
                > num(first, "audio.totalSamplesReceived") + 32_000.0 * s,
            "audio keeps playing out: {first} -> {later}"
        );
        Ok(later)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// A number from a JSON path like `video.framesDecoded`, or 0.
pub fn num(v: &Value, path: &str) -> f64 {
    path.split('.')
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_f64)
        .unwrap_or(0.0)
}

/// This host's address on the route to `to` (loopback for a loopback server, the veth address
/// for a server in a namespace of its own).
pub fn local_ip_towards(to: SocketAddr) -> Result<std::net::IpAddr> {
    let probe = UdpSocket::bind("0.0.0.0:0")?;
    probe.connect(to)?;
    Ok(probe.local_addr()?.ip())
}

/// A WHEP viewer on str0m that offers H.265 only; counts the H.265 frames it receives.
pub fn watch_h265(server: &Server, channel: &str, until: Instant) -> Result<(u64, u64)> {
    watch_h265_at(server.http, server.webrtc, channel, until)
}

/// [`watch_h265`] of the node whose HTTP and WebRTC listeners are `http` and `webrtc` (for a
/// thread of its own, which cannot borrow the [`Server`]).
pub fn watch_h265_at(
    http: SocketAddr,
    webrtc: SocketAddr,
    channel: &str,
    until: Instant,
) -> Result<(u64, u64)> {
    use media::bitstream::{avc, hevc};
    use str0m::change::SdpAnswer;
    use str0m::format::Codec;
    use str0m::media::{Direction, MediaKind};
    use str0m::net::{Protocol, Receive};
    use str0m::{Candidate, Event, Input, Output, Rtc};
    let mut rtc = Rtc::builder()
        .clear_codecs()
        .enable_h265(true)
        .build(Instant::now());
    let socket = UdpSocket::bind((local_ip_towards(webrtc)?, 0))?;
    let local = socket.local_addr()?;
    rtc.add_local_candidate(Candidate::host(local, "udp")?);
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, pending) = api.apply().context("offer")?;
    let reply = request(
        http,
        "POST",
        &format!("/whep/{channel}"),
        &[("Content-Type", "application/sdp")],
        &offer.to_sdp_string(),
    )?;
    ensure!(reply.status == 201, "WHEP: {} {}", reply.status, reply.body);
    rtc.sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&reply.body)?)?;
    let (mut frames, mut keyframes) = (0, 0);
    let mut buf = vec![0u8; 2048];
    while Instant::now() < until {
        let timeout = match rtc.poll_output()? {
            Output::Transmit(t) => {
                socket.send_to(&t.contents, t.destination)?;
                continue;
            }
            Output::Event(Event::MediaData(data)) => {
                ensure!(data.params.spec().codec == Codec::H265, "{:?}", data.params);
                frames += 1;
                // An IRAP picture's slice (types 16-21) somewhere in the Annex B frame.
                let units = avc::annexb_nal_units(&bytes::Bytes::copy_from_slice(&data.data));
                keyframes += u64::from(units.iter().any(|u| hevc::is_irap(u)));
                continue;
            }
            Output::Event(_) => continue,
            Output::Timeout(t) => t,
        };
        let wait = timeout
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(1), Duration::from_millis(50));
        socket.set_read_timeout(Some(wait))?;
        match socket.recv_from(&mut buf) {
            Ok((n, source)) => rtc.handle_input(Input::Receive(
                Instant::now(),
                Receive {
                    proto: Protocol::Udp,
                    source,
                    destination: local,
                    contents: buf[..n].try_into()?,
                },
            ))?,
            Err(_) => rtc.handle_input(Input::Timeout(Instant::now()))?,
        }
    }
    Ok((frames, keyframes))
}
