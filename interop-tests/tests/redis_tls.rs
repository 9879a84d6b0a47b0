//! `deploy/redis-tls-certs` against a real `redis-server`: the certificates, bundle and
//! redis.conf it makes give a TLS Redis that takes our client certificate and nothing else.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

fn make_certs(dir: &Path, port: u16) -> Result<()> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/redis-tls-certs");
    let out = Command::new(script)
        .arg(dir)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

struct Redis(Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis_cli(dir: &Path, port: u16, client: Option<&Path>) -> Result<String> {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["--tls", "--cacert"]).arg(dir.join("ca.crt"));
    if let Some(client) = client {
        cmd.arg("--cert").arg(client.join("client.crt"));
        cmd.arg("--key").arg(client.join("client.key"));
    }
    let out = cmd
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "PING"])
        .output()
        .context("redis-cli (scripts/test installs redis-server)")?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

#[test]
fn the_deploy_certificates_make_a_redis_that_only_takes_our_clients() -> Result<()> {
    let base = std::env::temp_dir().join(format!("starling-redis-tls-{}", std::process::id()));
    let (ours, theirs) = (base.join("ours"), base.join("theirs"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    make_certs(&ours, port)?;
    make_certs(&theirs, port)?;

    // The bundle holds exactly what a node needs.
    let listing = Command::new("python3")
        .args(["-m", "zipfile", "-l"])
        .arg(ours.join("bundle.zip"))
        .output()?;
    let listing = String::from_utf8_lossy(&listing.stdout);
    for name in ["ca.crt", "client.crt", "client.key"] {
        ensure!(listing.contains(name), "{name} missing: {listing}");
    }
    ensure!(
        !listing.contains("ca.key"),
        "the CA key stays out of the bundle"
    );

    let redis = Redis(
        Command::new("redis-server")
            .arg(ours.join("redis.conf"))
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&ours)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("redis-server (scripts/test installs it)")?,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("redis-server did not listen on {port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let ok = redis_cli(&ours, port, Some(&ours))?;
    ensure!(ok.trim() == "PONG", "our client: {ok}");
    let anonymous = redis_cli(&ours, port, None)?;
    ensure!(
        !anonymous.contains("PONG"),
        "no client certificate: {anonymous}"
    );
    let stranger = redis_cli(&ours, port, Some(&theirs))?;
    ensure!(
        !stranger.contains("PONG"),
        "a client of another CA: {stranger}"
    );
    drop(redis);
    let _ = std::fs::remove_dir_all(&base);
    Ok(())
}
