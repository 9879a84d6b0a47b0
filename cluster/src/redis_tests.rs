//! The Redis backend against a real `redis-server` with TLS and client certificates, set up by
//! `deploy/redis-tls-certs` (scripts/test installs redis-server).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;
use crate::conformance;

/// One Redis at a time: free ports are picked by binding and releasing, so two set-ups at once
/// could pick the same one.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Redis {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn certs(dir: &Path, port: u16) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/redis-tls-certs");
    let out = Command::new(script)
        .arg(dir)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .output()
        .expect("deploy/redis-tls-certs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn redis_tls() -> Redis {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let dir = std::env::temp_dir().join(format!("starling-cluster-{}-{port}", std::process::id()));
    certs(&dir, port);
    let child = Command::new("redis-server")
        .arg(dir.join("redis.conf"))
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (scripts/test installs it)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    Redis { child, dir, port }
}

fn files(dir: &Path) -> TlsFiles {
    let read = |name: &str| std::fs::read(dir.join(name)).expect(name);
    TlsFiles {
        ca: read("ca.crt"),
        client_cert: read("client.crt"),
        client_key: read("client.key"),
    }
}

async fn registry(redis: &Redis, prefix: &str) -> RedisRegistry {
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    RedisRegistry::connect(&url, Some(files(&redis.dir)), prefix)
        .await
        .expect("connect over TLS with our client certificate")
}

#[tokio::test(flavor = "multi_thread")]
async fn meets_the_registry_contract_over_tls() {
    let _one = ONE_AT_A_TIME.lock().await;
    let redis = redis_tls();
    conformance::registration_and_draining(&registry(&redis, "t1:").await).await;
    conformance::channels_are_claimed_atomically(&registry(&redis, "t2:").await).await;
    conformance::events_follow_changes(&registry(&redis, "t3:").await).await;
    conformance::certificates_are_stored_by_name(&registry(&redis, "t4:").await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_share_it_and_a_silent_one_expires_with_its_channels() {
    let _one = ONE_AT_A_TIME.lock().await;
    let redis = redis_tls();
    let (a, b) = (
        registry(&redis, "ttl:").await,
        registry(&redis, "ttl:").await,
    );
    let mut events = b.events();
    let node = conformance::node("a");
    a.register(node.clone(), Duration::from_secs(1))
        .await
        .expect("register");
    let channel = ChannelName::new("studio").expect("name");
    assert_eq!(
        a.claim_channel(&channel, &node.id).await.ok(),
        Some(Claim::Owned)
    );
    // The other node sees it at once, through the shared registry and its events.
    assert_eq!(b.nodes().await.expect("nodes").len(), 1);
    assert_eq!(
        b.channels().await.expect("channels"),
        vec![(channel.clone(), node.id.clone())]
    );
    let up = tokio::time::timeout(Duration::from_secs(5), events.recv()).await;
    assert_eq!(
        up.expect("event in time").expect("event"),
        Event::NodeUp(node.clone())
    );
    // Renewing keeps both alive past the TTL; then it stops: both go within the TTL.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        a.register(node.clone(), Duration::from_secs(1))
            .await
            .expect("renew");
    }
    assert_eq!(b.channels().await.expect("channels").len(), 1);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(b.nodes().await.expect("nodes").is_empty());
    assert!(b.channels().await.expect("channels").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_certificate_from_another_ca_is_refused() {
    let _one = ONE_AT_A_TIME.lock().await;
    let redis = redis_tls();
    let other = std::env::temp_dir().join(format!("starling-cluster-other-{}", std::process::id()));
    certs(&other, redis.port);
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let mut stranger = files(&redis.dir);
    let theirs = files(&other);
    stranger.client_cert = theirs.client_cert;
    stranger.client_key = theirs.client_key;
    let began = Instant::now();
    let refused = RedisRegistry::connect(&url, Some(stranger), "x:").await;
    let err = refused
        .err()
        .expect("connected with another CA's client certificate");
    eprintln!("refused after {:?}: {err}", began.elapsed());
    // And without any client certificate, over plain TCP to the TLS port: refused too.
    let plain = tokio::time::timeout(
        Duration::from_secs(2),
        RedisRegistry::connect(&format!("redis://127.0.0.1:{}", redis.port), None, "x:"),
    )
    .await;
    assert!(!matches!(plain, Ok(Ok(_))), "plain TCP got in");
    let _ = std::fs::remove_dir_all(&other);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_routing_table_sees_silent_nodes_expire_and_rereads_after_a_lost_subscription() {
    let _one = ONE_AT_A_TIME.lock().await;
    let redis = redis_tls();
    // deploy/redis-tls-certs's redis.conf announces expiries; a Redis without that line is
    // asked to (CONFIG SET) by each registry that connects.
    let a = registry(&redis, "rt:").await;
    let mut conn = a.conn.clone();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("")
        .query_async(&mut conn)
        .await
        .expect("config set");
    let b = registry(&redis, "rt:").await;
    // The registry asks from its event task, just after it connects: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let flags: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("notify-keyspace-events")
            .query_async(&mut conn)
            .await
            .expect("config get");
        if flags
            .get(1)
            .is_some_and(|f| f.contains('E') && f.contains('x'))
        {
            break;
        }
        assert!(Instant::now() < deadline, "expiries announced: {flags:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let table = std::sync::Arc::new(crate::RoutingTable::new());
    let b = std::sync::Arc::new(b);
    let follower = tokio::spawn({
        let (table, b) = (table.clone(), b.clone());
        async move { table.follow(&*b).await }
    });
    let ids = |t: &crate::RoutingTable| -> Vec<String> {
        t.nodes().iter().map(|n| n.id.to_string()).collect()
    };
    let settles = |want: Vec<&'static str>, within: Duration| {
        let table = table.clone();
        async move {
            let deadline = Instant::now() + within;
            while ids(&table) != want {
                assert!(Instant::now() < deadline, "table {:?}", ids(&table));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    // A node registers and then falls silent (kill -9): Redis announces the expiry, and the
    // table drops it within about its TTL, without rereading.
    let silent = conformance::node("silent");
    a.register(silent.clone(), Duration::from_secs(1))
        .await
        .expect("register");
    settles(vec!["silent"], Duration::from_secs(3)).await;
    let began = Instant::now();
    settles(vec![], Duration::from_secs(3)).await;
    eprintln!(
        "silent node left the table {:?} after its last renewal",
        began.elapsed()
    );

    // The table's subscription is cut, and a node appears meanwhile without any event (as if
    // its announcement were lost): the resubscribed follower rereads and finds it.
    let _: () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn)
        .await
        .map(|_: i64| ())
        .expect("client kill");
    let unheard = conformance::node("unheard");
    let _: () = conn
        .set_options(
            "rt:node:unheard",
            serde_json::to_string(&unheard).expect("json"),
            redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(30_000)),
        )
        .await
        .expect("set");
    settles(vec!["unheard"], Duration::from_secs(5)).await;
    // And it hears events again.
    a.register(conformance::node("later"), Duration::from_secs(30))
        .await
        .expect("register");
    settles(vec!["later", "unheard"], Duration::from_secs(3)).await;
    follower.abort();
}
