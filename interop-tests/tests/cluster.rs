//! This node in the cluster registry: `GET /api/nodes` (the in-memory registry of one node).

use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Result};
use interop_tests::{starling_bin, Ffmpeg, Server, FAST_X264};

#[tokio::test(flavor = "multi_thread")]
async fn the_node_lists_itself_with_its_ports_and_load() -> Result<()> {
    let server = Server::start(Some("node_id = \"edge-1\"\nregion = \"eu\"\n"))?;
    let nodes = || -> Result<serde_json::Value> {
        let (status, body) = server.get("/api/nodes")?;
        ensure!(status == 200, "{status} {body}");
        Ok(serde_json::from_str(&body)?)
    };
    server.wait_for(Duration::from_secs(5), || {
        Ok(nodes()?.as_array().is_some_and(|a| a.len() == 1))
    })?;
    let node = &nodes()?[0];
    assert_eq!(node["id"], "edge-1");
    assert_eq!(node["region"], "eu");
    assert_eq!(node["draining"], false);
    ensure!(
        node["roles"]
            .as_array()
            .is_some_and(|r| r.contains(&"sfu".into())),
        "{node}"
    );
    for (name, addr) in [
        ("http", server.http),
        ("rtmp", server.rtmp),
        ("srt", server.srt),
        ("ftl", server.ftl),
        ("webrtc", server.webrtc),
    ] {
        assert_eq!(node["ports"][name], addr.port(), "{name}: {node}");
    }
    assert_eq!(node["load"]["ingest_streams"], 0);

    // A publisher shows in the load within a renewal or two.
    let _ffmpeg = Ffmpeg::push_rtmp(&server.rtmp_url("alice"), FAST_X264)?;
    server.wait_for(Duration::from_secs(20), || {
        Ok(nodes()?[0]["load"]["ingest_streams"] == 1)
    })?;
    assert_eq!(nodes()?[0]["load"]["bitrate_out"], 0, "nobody watches yet");

    // A viewer: counted, and what is sent to it is the node's bitrate out.
    let browser = interop_tests::Browser::start().await?;
    browser.client.goto(&server.url("/watch/alice")).await?;
    browser.wait_playing(Duration::from_secs(30)).await?;
    server.wait_for(Duration::from_secs(5), || {
        let load = &nodes()?[0]["load"];
        Ok(load["viewers"] == 1 && load["bitrate_out"].as_u64().is_some_and(|b| b > 50_000))
    })?;
    eprintln!("load with one viewer: {}", nodes()?[0]["load"]);
    browser.close().await
}

#[test]
fn a_malformed_node_id_or_a_missing_registry_is_refused_with_the_reason() -> Result<()> {
    let out = Command::new(starling_bin())
        .args([
            "serve",
            "--node-id",
            "not a valid id!",
            "--http",
            "127.0.0.1:0",
        ])
        .args([
            "--rtmp",
            "127.0.0.1:0",
            "--srt",
            "127.0.0.1:0",
            "--ftl",
            "127.0.0.1:0",
        ])
        .args(["--webrtc", "127.0.0.1:0"])
        .output()?;
    ensure!(!out.status.success(), "it started");
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(err.contains("node id"), "{err}");

    // The cluster commands need a shared registry.
    let out = Command::new(starling_bin())
        .args(["cluster", "nodes"])
        .output()?;
    ensure!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(err.contains("no cluster registry is configured"), "{err}");
    Ok(())
}

mod redis {
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::time::{Duration, Instant};

    use anyhow::{bail, ensure, Context, Result};
    use interop_tests::{starling_bin, Server};

    use interop_tests::cluster::{Cluster, ONE_AT_A_TIME, TOKEN};

    fn node_ids(server: &Server) -> Result<Vec<String>> {
        let (_, body) = server.get("/api/nodes")?;
        let nodes: serde_json::Value = serde_json::from_str(&body)?;
        Ok(nodes
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|n| n["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `starling serve` that must not start: its stderr.
    fn refused_start(config: &str, env: &[(String, String)], dir: &Path) -> Result<String> {
        let config_path = dir.join("refused.toml");
        std::fs::write(&config_path, config)?;
        let out = Command::new(starling_bin())
            .args(["serve", "--config"])
            .arg(&config_path)
            .args([
                "--http",
                "127.0.0.1:0",
                "--rtmp",
                "127.0.0.1:0",
                "--srt",
                "127.0.0.1:0",
            ])
            .args(["--ftl", "127.0.0.1:0", "--webrtc", "127.0.0.1:0"])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("NO_COLOR", "1")
            .output()?;
        ensure!(!out.status.success(), "it started");
        Ok(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }

    #[test]
    fn nodes_register_in_tls_redis_with_the_downloaded_bundle_and_a_killed_one_expires(
    ) -> Result<()> {
        let _one = ONE_AT_A_TIME.blocking_lock();
        let cluster = Cluster::start()?;
        let a = cluster.node("node-a")?;
        let mut b = cluster.node("node-b")?;
        a.wait_for(Duration::from_secs(5), || {
            Ok(node_ids(&a)? == ["node-a", "node-b"])
        })?;
        ensure!(node_ids(&b)? == ["node-a", "node-b"], "both see both");
        ensure!(
            !a.log().contains(TOKEN),
            "the bundle URL's token is never logged"
        );

        // The operator's commands, reading the same configuration.
        let table = cluster.cli(&["nodes"])?;
        ensure!(
            table.contains("node-a") && table.contains("node-b"),
            "{table}"
        );
        let json: serde_json::Value = serde_json::from_str(&cluster.cli(&["--json", "nodes"])?)?;
        ensure!(json.as_array().is_some_and(|n| n.len() == 2), "{json}");
        ensure!(cluster.cli(&["drain", "node-b"])?.contains("draining"));
        let draining = |server: &Server| -> Result<bool> {
            let (_, body) = server.get("/api/nodes")?;
            let nodes: serde_json::Value = serde_json::from_str(&body)?;
            Ok(nodes[1]["id"] == "node-b" && nodes[1]["draining"] == true)
        };
        // It stays drained across the node's own renewals.
        std::thread::sleep(Duration::from_millis(2500));
        ensure!(draining(&a)?, "node-b drained");
        ensure!(
            cluster.cli(&["drain", "nobody"]).is_err(),
            "an unknown node"
        );
        cluster.cli(&["undrain", "node-b"])?;
        // The table follows the registry's event, which may take a moment under load.
        a.wait_for(Duration::from_secs(5), || Ok(!draining(&a)?))?;

        // A public name's certificate, stored for every front; a key that is not the
        // certificate's is refused. (Redis's own certificate stands in for a public one.)
        let (chain, key) = (cluster.dir.join("redis.crt"), cluster.dir.join("redis.key"));
        let path = |p: &PathBuf| p.display().to_string();
        let put = [
            "put-certificate",
            "live.example.test",
            &path(&chain),
            &path(&key),
        ];
        ensure!(cluster.cli(&put)?.contains("certificate stored"));
        let stored = cluster.cli(&["certificate", "LIVE.example.test"])?;
        ensure!(stored == std::fs::read_to_string(&chain)?, "{stored}");
        let wrong_key = path(&cluster.dir.join("client.key"));
        let refused = cluster
            .cli(&[
                "put-certificate",
                "x.example.test",
                &path(&chain),
                &wrong_key,
            ])
            .err()
            .context("a mismatched key was stored")?;
        ensure!(refused.to_string().contains("does not belong"), "{refused}");
        ensure!(cluster.cli(&["certificate", "x.example.test"]).is_err());

        // kill -9: no goodbye; it vanishes within the TTL (5 s).
        let killed = Instant::now();
        b.kill_now();
        a.wait_for(Duration::from_secs(8), || Ok(node_ids(&a)? == ["node-a"]))?;
        eprintln!(
            "node-b gone from the registry {:?} after kill -9",
            killed.elapsed()
        );

        // SIGTERM: the node leaves the registry and releases its channel as it stops, not a
        // TTL later: both are gone when the process has exited.
        let mut c = cluster.node("node-c")?;
        let _ffmpeg =
            interop_tests::Ffmpeg::push_rtmp(&c.rtmp_url("leaving"), interop_tests::FAST_X264)?;
        c.wait_for(Duration::from_secs(20), || {
            Ok(cluster.cli(&["channels"])?.contains("leaving"))
        })?;
        ensure!(
            c.terminate(Duration::from_secs(8))? == Some(true),
            "node-c exits with success on SIGTERM: {}",
            c.log()
        );
        let (nodes, channels) = (cluster.cli(&["nodes"])?, cluster.cli(&["channels"])?);
        ensure!(
            !nodes.contains("node-c"),
            "node-c still registered: {nodes}"
        );
        ensure!(
            !channels.contains("leaving"),
            "its channel still claimed: {channels}"
        );
        Ok(())
    }

    #[test]
    fn a_wrong_token_or_an_untrusted_bundle_server_stops_the_start_with_the_reason() -> Result<()> {
        let _one = ONE_AT_A_TIME.blocking_lock();
        let cluster = Cluster::start()?;
        let wrong = refused_start(
            &cluster.config("c"),
            &cluster.env("wrong-token"),
            &cluster.dir,
        )?;
        ensure!(wrong.contains("HTTP 401"), "{wrong}");
        ensure!(
            !wrong.contains("wrong-token"),
            "no token in the error: {wrong}"
        );

        // Without the private CA in SSL_CERT_FILE the bundle server is not trusted.
        let mut env = cluster.env(TOKEN);
        env.retain(|(k, _)| k != "SSL_CERT_FILE");
        env.push(("SSL_CERT_FILE".into(), "/nonexistent".into()));
        let untrusted = refused_start(&cluster.config("c"), &env, &cluster.dir)?;
        ensure!(untrusted.contains("TLS bundle"), "{untrusted}");
        for line in untrusted.lines().filter(|l| l.contains("bundle")) {
            eprintln!("{line}");
        }
        ensure!(
            !untrusted.contains(TOKEN),
            "no token in the error: {untrusted}"
        );

        // Redis without TLS configured: refused unless insecure is asked for.
        let plain = refused_start(&cluster.config("c"), &[], &cluster.dir)?;
        ensure!(plain.contains("Redis needs TLS"), "{plain}");
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn media_keeps_flowing_while_redis_is_down_and_the_node_registers_again() -> Result<()> {
        let _one = ONE_AT_A_TIME.lock().await;
        let mut cluster = Cluster::start()?;
        let node = cluster.node("node-a")?;
        node.wait_for(
            Duration::from_secs(5),
            || Ok(node_ids(&node)? == ["node-a"]),
        )?;
        let _ffmpeg =
            interop_tests::Ffmpeg::push_rtmp(&node.rtmp_url("alice"), interop_tests::FAST_X264)?;
        node.wait_for(Duration::from_secs(20), || {
            Ok(node.channel("alice")?.is_some())
        })?;
        let browser = interop_tests::Browser::start().await?;
        browser.client.goto(&node.url("/watch/alice")).await?;
        let first = browser.wait_playing(Duration::from_secs(30)).await?;

        // Redis goes away for 4 s: the viewer keeps playing; the node says so once, and in
        // /healthz.
        cluster.set_redis(false)?;
        let during = browser.keeps_playing(&first, 4).await?;
        ensure!(node.get("/healthz")?.1.contains("registry: unavailable"));
        ensure!(
            node.log()
                .contains("registry: cannot renew this node; media keeps flowing"),
            "{}",
            node.log()
        );
        // It comes back: the node registers again by itself.
        cluster.set_redis(true)?;
        node.wait_for(Duration::from_secs(10), || {
            Ok(node_ids(&node)? == ["node-a"])
        })?;
        ensure!(
            node.log().contains("registry: reachable again"),
            "{}",
            node.log()
        );
        browser.keeps_playing(&during, 2).await?;
        browser.close().await
    }

    #[test]
    fn a_node_started_while_redis_is_down_serves_and_registers_once_it_is_up() -> Result<()> {
        let _one = ONE_AT_A_TIME.blocking_lock();
        let mut cluster = Cluster::start()?;
        cluster.set_redis(false)?;
        let node = cluster.node("node-a")?; // healthy without Redis
        let (status, health) = node.get("/healthz")?;
        ensure!(
            status == 200 && health.contains("registry: unavailable"),
            "{health}"
        );
        // Said once in the log, at once.
        node.wait_for(Duration::from_secs(3), || {
            Ok(node
                .log()
                .contains("registry: cannot renew this node; media keeps flowing"))
        })?;
        cluster.set_redis(true)?;
        node.wait_for(Duration::from_secs(15), || {
            Ok(node_ids(&node)? == ["node-a"])
        })?;
        node.wait_for(Duration::from_secs(3), || {
            Ok(node.get("/healthz")?.1.contains("registry: ok"))
        })?;
        Ok(())
    }

    #[test]
    fn a_channel_has_one_origin_in_the_cluster_and_is_free_again_when_its_publisher_leaves(
    ) -> Result<()> {
        let _one = ONE_AT_A_TIME.blocking_lock();
        let cluster = Cluster::start()?;
        let (a, b) = (cluster.node("node-a")?, cluster.node("node-b")?);
        a.wait_for(Duration::from_secs(5), || Ok(node_ids(&a)?.len() == 2))?;
        let channels = || -> Result<serde_json::Value> {
            Ok(serde_json::from_str(
                &cluster.cli(&["--json", "channels"])?,
            )?)
        };

        // Two publishers of alice at once, one on each node: exactly one is admitted.
        let push = |node: &Server| {
            interop_tests::Ffmpeg::push_rtmp(&node.rtmp_url("alice"), interop_tests::FAST_X264)
        };
        let (mut on_a, mut on_b) = (push(&a)?, push(&b)?);
        let mut outcome = (None, None);
        a.wait_for(Duration::from_secs(20), || {
            outcome = (on_a.exited()?, on_b.exited()?);
            let live = a.channel("alice")?.is_some() || b.channel("alice")?.is_some();
            Ok(live && (outcome.0.is_some() || outcome.1.is_some()))
        })?;
        std::thread::sleep(Duration::from_secs(2)); // the winner keeps publishing
        let outcome = (on_a.exited()?, on_b.exited()?);
        let (winner, loser, mut publisher) = match outcome {
            (None, Some(false)) => (&a, &b, on_a),
            (Some(false), None) => (&b, &a, on_b),
            other => bail!("not exactly one admitted: {other:?}"),
        };
        let (winner_id, loser_id) = if std::ptr::eq(winner, &a) {
            ("node-a", "node-b")
        } else {
            ("node-b", "node-a")
        };
        eprintln!("of two simultaneous publishers, the one on {winner_id} was admitted");
        let owned = channels()?;
        ensure!(
            owned[0]["channel"] == "alice" && owned[0]["node"] == winner_id,
            "{owned}"
        );
        ensure!(
            loser
                .log()
                .contains(&format!("channel is live on node {winner_id}")),
            "{}",
            loser.log()
        );
        // The loser's node can show the channel, pulled over the relay, but does not publish it.
        ensure!(loser.channel("alice")?.is_none_or(|c| c["relayed"] == true));

        // The publisher leaves: the channel is free, and the other node may take it.
        publisher.kill();
        winner.wait_for(Duration::from_secs(10), || {
            Ok(channels()?.as_array().is_some_and(|c| c.is_empty()))
        })?;
        let _third = push(loser)?;
        loser.wait_for(Duration::from_secs(20), || {
            Ok(channels()?[0]["node"] == loser_id)
        })?;
        Ok(())
    }

    /// `/api/cluster/channels` of a node: (channel, origin) pairs from its routing table.
    fn origins(server: &Server) -> Result<Vec<(String, String)>> {
        let (_, body) = server.get("/api/cluster/channels")?;
        let list: serde_json::Value = serde_json::from_str(&body)?;
        Ok(list
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| {
                        Some((
                            c["channel"].as_str()?.to_owned(),
                            c["node"].as_str()?.to_owned(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn routing_tables_follow_the_cluster_and_a_restarted_redis_gets_its_channels_back(
    ) -> Result<()> {
        let _one = ONE_AT_A_TIME.lock().await;
        let mut cluster = Cluster::start()?;
        let (a, mut b) = (cluster.node("node-a")?, cluster.node("node-b")?);
        a.wait_for(Duration::from_secs(5), || {
            Ok(node_ids(&a)? == ["node-a", "node-b"])
        })?;
        let alice_on_b = vec![("alice".to_owned(), "node-b".to_owned())];

        // node-b takes a publisher and a viewer: node-a's table has the origin and the load,
        // from node-b's announcements.
        let _ffmpeg =
            interop_tests::Ffmpeg::push_rtmp(&b.rtmp_url("alice"), interop_tests::FAST_X264)?;
        a.wait_for(Duration::from_secs(20), || Ok(origins(&a)? == alice_on_b))?;
        let browser = interop_tests::Browser::start().await?;
        browser.client.goto(&b.url("/watch/alice")).await?;
        let first = browser.wait_playing(Duration::from_secs(30)).await?;
        let b_load = || -> Result<serde_json::Value> {
            let (_, body) = a.get("/api/nodes")?;
            let nodes: serde_json::Value = serde_json::from_str(&body)?;
            Ok(nodes[1]["load"].clone())
        };
        a.wait_for(Duration::from_secs(5), || {
            let load = b_load()?;
            Ok(load["viewers"] == 1
                && load["ingest_streams"] == 1
                && load["bitrate_out"].as_u64().is_some_and(|b| b > 0))
        })?;

        // Redis goes away for longer than a TTL: the tables keep routing as they were.
        cluster.set_redis(false)?;
        let during = browser.keeps_playing(&first, 6).await?;
        ensure!(node_ids(&a)? == ["node-a", "node-b"], "{:?}", node_ids(&a)?);
        ensure!(origins(&a)? == alice_on_b);

        // It comes back empty (no persistence): the nodes register anew and node-b claims
        // alice again.
        cluster.set_redis(true)?;
        let in_redis = || -> Result<bool> {
            let json: serde_json::Value =
                serde_json::from_str(&cluster.cli(&["--json", "channels"])?)?;
            Ok(json[0]["channel"] == "alice" && json[0]["node"] == "node-b")
        };
        a.wait_for(Duration::from_secs(15), in_redis)?;
        ensure!(
            b.log().contains("registry: channel claimed again"),
            "{}",
            b.log()
        );
        a.wait_for(Duration::from_secs(10), || {
            Ok(a.log()
                .contains("registry: subscribed to events again; resynchronising"))
        })?;
        // So a second publisher of alice on node-a is refused again.
        let second =
            interop_tests::Ffmpeg::push_rtmp(&a.rtmp_url("alice"), interop_tests::FAST_X264)?;
        let (ok, _) = second.wait_exit(Duration::from_secs(20))?;
        ensure!(!ok, "node-a took a second publisher of alice");
        browser.keeps_playing(&during, 2).await?;
        browser.close().await?;

        // node-a's table follows the new Redis too: node-b dies, and leaves it with its
        // channel within the TTL.
        b.kill_now();
        let killed = std::time::Instant::now();
        a.wait_for(Duration::from_secs(8), || {
            Ok(node_ids(&a)? == ["node-a"] && origins(&a)?.is_empty())
        })?;
        eprintln!(
            "node-b left node-a's table {:?} after kill -9",
            killed.elapsed()
        );
        Ok(())
    }
}
