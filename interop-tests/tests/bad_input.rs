//! Bad input gets a clear answer and disturbs nothing else.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use anyhow::Result;
use interop_tests::{Ffmpeg, Server, FAST_X264};

#[test]
fn garbage_on_the_rtmp_port_does_not_stop_other_publishers() -> Result<()> {
    let server = Server::start_isolated(None, &[])?;
    // Garbage instead of a handshake, a handshake cut short, and an idle connection.
    let mut garbage = TcpStream::connect(server.rtmp)?;
    garbage.write_all(&[0xff; 4096])?;
    let mut short = TcpStream::connect(server.rtmp)?;
    short.write_all(&[3, 0, 0])?;
    let _idle = TcpStream::connect(server.rtmp)?;
    let _ffmpeg = Ffmpeg::push_rtmp(&server.rtmp_url("ok"), FAST_X264)?;
    server.wait_for(Duration::from_secs(20), || {
        Ok(server.channel("ok")?.is_some())
    })?;
    Ok(())
}

#[test]
fn wrong_key_is_refused_and_never_logged() -> Result<()> {
    let server = Server::start_isolated(Some("[channels.alice]\nkey = \"right-key\"\n"), &[])?;
    let refused = Ffmpeg::push_rtmp(&server.rtmp_url("alice?key=hunter2-wrong"), FAST_X264)?;
    let (ok, stderr) = refused.wait_exit(Duration::from_secs(20))?;
    assert!(!ok, "ffmpeg should fail when the publish is refused");
    assert!(server.channel("alice")?.is_none());
    let unknown = Ffmpeg::push_rtmp(&server.rtmp_url("mallory"), FAST_X264)?;
    assert!(
        !unknown.wait_exit(Duration::from_secs(20))?.0,
        "unconfigured channel refused"
    );

    server.wait_for(Duration::from_secs(5), || {
        Ok(server.log().contains("wrong key for channel alice"))
    })?;
    let log = server.log();
    assert!(
        log.contains("stream key names no configured channel"),
        "log says why: {log}"
    );
    assert!(
        !log.contains("mallory"),
        "an unknown stream key may hold a secret; not logged"
    );
    assert!(
        !log.contains("hunter2") && !log.contains("right-key"),
        "a key reached the log:\n{log}"
    );
    eprintln!("ffmpeg said: {stderr}");

    // Both forms of the right key publish.
    let _ok = Ffmpeg::push_rtmp(&server.rtmp_url("alice-right-key"), FAST_X264)?;
    server.wait_for(Duration::from_secs(20), || {
        Ok(server.channel("alice")?.is_some())
    })?;
    assert!(
        !server.log().contains("right-key"),
        "the key reached the log"
    );
    Ok(())
}

#[test]
fn second_publisher_on_a_live_channel_is_refused() -> Result<()> {
    let server = Server::start_isolated(None, &[])?;
    let _first = Ffmpeg::push_rtmp(&server.rtmp_url("solo"), FAST_X264)?;
    server.wait_for(Duration::from_secs(20), || {
        Ok(server.channel("solo")?.is_some())
    })?;
    let second = Ffmpeg::push_rtmp(&server.rtmp_url("solo"), FAST_X264)?;
    assert!(
        !second.wait_exit(Duration::from_secs(20))?.0,
        "second publisher refused"
    );
    assert!(server.log().contains("channel solo is already live"));
    assert!(
        server.channel("solo")?.is_some(),
        "the first publisher is undisturbed"
    );
    Ok(())
}

#[test]
fn whep_errors_are_clear() -> Result<()> {
    let server = Server::start_isolated(None, &[])?;
    let (status, body) = server.post("/whep/nobody", "application/sdp", "v=0\r\n")?;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("not live"));
    let (status, _) = server.post("/whep/..%2Fetc", "application/sdp", "v=0\r\n")?;
    assert_eq!(status, 404);

    let _ffmpeg = Ffmpeg::push_rtmp(&server.rtmp_url("live"), FAST_X264)?;
    server.wait_for(Duration::from_secs(20), || {
        Ok(server.channel("live")?.is_some())
    })?;
    let (status, body) = server.post("/whep/live", "application/sdp", "this is not sdp")?;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("malformed SDP offer"), "{body}");
    let (status, body) = server.post("/whep/live", "text/plain", "v=0\r\n")?;
    assert_eq!(status, 415, "{body}");
    let (status, _) = server.post("/whep/live", "application/sdp", &"a".repeat(100_000))?;
    assert_eq!(status, 413, "oversized offers are refused");
    let (status, _) = interop_tests::http(
        server.http,
        "DELETE",
        "/whep/live/00000000000000000000000000000000",
        None,
        "",
    )?;
    assert_eq!(status, 404);
    // The server still serves.
    assert_eq!(server.get("/healthz")?.0, 200);
    Ok(())
}

#[test]
fn a_publisher_that_stops_sending_times_out_and_frees_the_channel() -> Result<()> {
    let server = Server::start_isolated(Some("[rtmp]\nidle_timeout_secs = 2\n"), &[])?;
    let stalled = Ffmpeg::push_rtmp(&server.rtmp_url("stall"), FAST_X264)?;
    server.wait_for(Duration::from_secs(20), || {
        Ok(server.channel("stall")?.is_some())
    })?;
    stalled.freeze()?;
    // The publisher is dropped; viewers wait out the reconnect grace period.
    server.wait_for(Duration::from_secs(10), || {
        Ok(server
            .channel("stall")?
            .is_none_or(|c| c["state"] == "reconnecting"))
    })?;
    assert!(server.log().contains("timed out"), "the log says why");
    // The channel is free for the next publisher.
    let _next = Ffmpeg::push_rtmp(&server.rtmp_url("stall"), FAST_X264)?;
    server.wait_for(Duration::from_secs(20), || {
        Ok(server.channel("stall")?.is_some())
    })?;
    Ok(())
}
