//! A test cluster: a TLS Redis requiring client certificates, and the HTTPS server of its
//! client bundle, both set up by deploy/redis-tls-certs; nodes join it as `starling serve`.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::{starling_bin, Server};

/// A child process killed on drop.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn wait_listening(port: u16) -> Result<()> {
    wait_listening_at("127.0.0.1", port)
}

pub fn wait_listening_at(host: &str, port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect((host, port)).is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on {port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

pub fn redis_server(dir: &Path) -> Result<Killed> {
    Ok(Killed(
        Command::new("redis-server")
            .arg(dir.join("redis.conf"))
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .context("redis-server (scripts/test installs it)")?,
    ))
}

/// A TLS Redis requiring client certificates and the HTTPS server of its client bundle,
/// both set up by deploy/redis-tls-certs.
pub struct Cluster {
    pub dir: PathBuf,
    /// The address Redis and the bundle server are reached at.
    pub host: String,
    pub redis_port: u16,
    pub bundle_port: u16,
    redis: Option<Killed>,
    _bundle: Killed,
}

pub const TOKEN: &str = "t0ken-1f3a9c";

/// One cluster at a time: free ports are picked by binding and releasing, so two set-ups
/// at once could pick the same one.
pub static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Cluster {
    pub fn start() -> Result<Self> {
        Self::start_at("127.0.0.1")
    }

    /// Redis and the bundle server reached at `host` (an address of the test's namespace that
    /// servers in namespaces of their own reach, see `route_between_namespaces`).
    pub fn start_at(host: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("starling-cluster-it-{}", std::process::id()));
        // Two different ports (with the same one twice, the bundle fetch reached Redis).
        let [redis_port, bundle_port] = crate::free_tcp_ports::<2>();
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let ok = Command::new(root.join("../deploy/redis-tls-certs"))
            .arg(&dir)
            .args(["--host", host, "--port", &redis_port.to_string()])
            .output()?
            .status
            .success();
        ensure!(ok, "deploy/redis-tls-certs failed");
        let redis = redis_server(&dir)?;
        // The bundle server reuses Redis's certificate (its name is 127.0.0.1 too).
        let mut bundle = Killed(
            Command::new("python3")
                .arg(root.join("bundle_server.py"))
                .arg(bundle_port.to_string())
                .args([
                    dir.join("redis.crt"),
                    dir.join("redis.key"),
                    dir.join("bundle.zip"),
                ])
                .env("BUNDLE_TOKEN", TOKEN)
                .env("BUNDLE_HOST", host)
                .spawn()?,
        );
        wait_listening(redis_port)?;
        wait_listening_at(host, bundle_port)?;
        // Listening on its port, and not something else there after it failed to bind.
        ensure!(
            bundle.0.try_wait()?.is_none(),
            "the bundle server exited at start"
        );
        Ok(Self {
            dir,
            host: host.to_owned(),
            redis_port,
            bundle_port,
            redis: Some(redis),
            _bundle: bundle,
        })
    }

    pub fn config(&self, node: &str) -> String {
        format!(
            "node_id = \"{node}\"\nredis_url = \"rediss://{}:{}\"\n",
            self.host, self.redis_port
        )
    }

    pub fn env(&self, token: &str) -> Vec<(String, String)> {
        vec![
            (
                "STARLING_REDIS_TLS_BUNDLE_URL".into(),
                format!(
                    "https://{}:{}/bundle.zip?access_token={token}",
                    self.host, self.bundle_port
                ),
            ),
            // The bundle server's certificate comes from a private CA: trusted this way.
            ("SSL_CERT_FILE".into(), self.ca().display().to_string()),
        ]
    }

    /// `starling cluster ARGS` with this cluster's configuration; its stdout, or an error
    /// with its output if it failed.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let config = self.dir.join("cli.toml");
        std::fs::write(&config, self.config("cli"))?;
        let out = Command::new(starling_bin())
            .args(["cluster", "--config"])
            .arg(&config)
            .args(args)
            .envs(self.env(TOKEN))
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        ensure!(
            out.status.success(),
            "{args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(stdout)
    }

    /// Stops Redis (as an outage would), or starts it again on the same port.
    pub fn set_redis(&mut self, up: bool) -> Result<()> {
        self.redis = None;
        if up {
            self.redis = Some(redis_server(&self.dir)?);
            wait_listening(self.redis_port)?;
        }
        Ok(())
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    pub fn node(&self, id: &str) -> Result<Server> {
        self.node_with(id, "")
    }

    /// A node with more configuration after the cluster's (e.g. `[relay]` settings).
    pub fn node_with(&self, id: &str, more: &str) -> Result<Server> {
        self.node_resolving(id, more, None)
    }

    /// A node in a network namespace of its own on its default ports (see
    /// `Server::start_isolated_resolving`), resolving names with `hosts`.
    pub fn node_isolated(&self, id: &str, more: &str, hosts: &Path) -> Result<Server> {
        let env = self.env(TOKEN);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let config = format!("{}{more}", self.config(id));
        Server::start_isolated_resolving(Some(&config), &env, hosts)
    }

    /// [`Cluster::node_with`], resolving names with the test's `hosts` file.
    pub fn node_resolving(&self, id: &str, more: &str, hosts: Option<&Path>) -> Result<Server> {
        let env = self.env(TOKEN);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let config = format!("{}{more}", self.config(id));
        Server::start_with_hosts(Some(&config), &env, hosts)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
