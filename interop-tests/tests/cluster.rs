//! This node in the cluster registry: `GET /api/nodes` (the in-memory registry of one node).

use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Result};
use interop_tests::{starling_bin, Ffmpeg, Server, FAST_X264};

#[test]
fn the_node_lists_itself_with_its_ports_and_load() -> Result<()> {
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
    Ok(())
}

#[test]
fn a_malformed_node_id_stops_the_start_with_the_reason() -> Result<()> {
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
    Ok(())
}
