//! WHIP (RFC 9725) and WHEP over HTTP with offers from str0m, an independent client: status
//! codes, CORS, trickle and ICE-restart PATCH, DELETE, and a viewer that cannot decode.

use std::time::Duration;

use anyhow::Result;
use interop_tests::{request, sdp_offer, Ffmpeg, Server};

const CONFIG: &str = "[bus]\nreconnect_grace_secs = 0\n[channels.alice]\nkey = \"s3cret\"\n[channels.bob]\nkey = \"b0b\"\n";

fn whip(
    server: &Server,
    channel: &str,
    auth: Option<&str>,
    ct: &str,
    body: &str,
) -> Result<interop_tests::Reply> {
    let mut headers = vec![("Content-Type", ct)];
    let bearer;
    if let Some(token) = auth {
        bearer = format!("Bearer {token}");
        headers.push(("Authorization", &bearer));
    }
    request(
        server.http,
        "POST",
        &format!("/whip/{channel}"),
        &headers,
        body,
    )
}

#[test]
fn whip_status_codes_cors_patch_and_delete() -> Result<()> {
    let server = Server::start_isolated(Some(CONFIG), &[])?;
    let offer = sdp_offer(true, true, true, false);

    // Preflight from a page on another origin.
    let pre = request(
        server.http,
        "OPTIONS",
        "/whip/alice",
        &[("Origin", "http://x.test")],
        "",
    )?;
    assert_eq!(pre.status, 204, "{pre:?}");
    assert_eq!(pre.header("access-control-allow-origin"), Some("*"));
    assert!(pre
        .header("access-control-allow-headers")
        .is_some_and(|h| h.contains("Authorization")));

    let none = whip(&server, "alice", None, "application/sdp", &offer)?;
    assert_eq!(none.status, 401, "{none:?}");
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    let wrong = whip(&server, "alice", Some("hunter2"), "application/sdp", &offer)?;
    assert_eq!(wrong.status, 401, "{wrong:?}");
    assert_eq!(
        whip(&server, "alice", Some("s3cret"), "text/plain", &offer)?.status,
        415
    );
    let garbage = whip(
        &server,
        "alice",
        Some("s3cret"),
        "application/sdp",
        "v=0\r\nnonsense",
    )?;
    assert_eq!(garbage.status, 400, "{garbage:?}");
    assert!(
        garbage.body.contains("malformed SDP offer"),
        "{}",
        garbage.body
    );
    let bad_name = whip(&server, "..%2F", Some("s3cret"), "application/sdp", &offer)?;
    assert!(
        bad_name.status == 400 || bad_name.status == 401,
        "{bad_name:?}"
    );

    let ok = whip(&server, "alice", Some("s3cret"), "application/sdp", &offer)?;
    assert_eq!(ok.status, 201, "{ok:?}");
    assert_eq!(ok.header("content-type"), Some("application/sdp"));
    assert!(ok.body.contains("a=ice-lite") && ok.body.contains("a=setup:passive"));
    assert_eq!(ok.header("access-control-allow-origin"), Some("*"));
    let location = ok.header("location").expect("Location").to_owned();
    assert!(location.starts_with("/whip/alice/"), "{location}");
    assert!(server.channel("alice")?.is_some(), "the channel is live");

    let second = whip(&server, "alice", Some("s3cret"), "application/sdp", &offer)?;
    assert_eq!(second.status, 409, "a second publisher: {second:?}");

    // Trickle: a candidate for the current ufrag.
    let ufrag = offer
        .lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .unwrap()
        .trim();
    let trickle = format!(
        "a=ice-ufrag:{ufrag}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=candidate:1 1 udp 2113929471 127.0.0.1 40000 typ host\r\n"
    );
    let frag = [("Content-Type", "application/trickle-ice-sdpfrag")];
    let r = request(server.http, "PATCH", &location, &frag, &trickle)?;
    assert_eq!(r.status, 204, "{r:?}");
    // ICE restart: new credentials in, ours out.
    let restart = "a=ice-ufrag:newu\r\na=ice-pwd:0123456789abcdefghijkl\r\n";
    let r = request(server.http, "PATCH", &location, &frag, restart)?;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.body.contains("a=ice-ufrag:") && r.body.contains("a=ice-pwd:"),
        "{}",
        r.body
    );
    assert!(
        !ok.body.contains(
            r.body
                .lines()
                .find(|l| l.starts_with("a=ice-ufrag:"))
                .unwrap()
        ),
        "new local credentials"
    );
    let bad = request(
        server.http,
        "PATCH",
        &location,
        &frag,
        "a=candidate:nonsense\r\n",
    )?;
    assert_eq!(bad.status, 400, "{bad:?}");
    let wrong_type = request(
        server.http,
        "PATCH",
        &location,
        &[("Content-Type", "application/sdp")],
        "",
    )?;
    assert_eq!(wrong_type.status, 415);
    let missing = "/whip/alice/00000000000000000000000000000000";
    assert_eq!(
        request(server.http, "PATCH", missing, &frag, &trickle)?.status,
        404
    );

    // DELETE ends the publish and frees the channel.
    assert_eq!(
        request(server.http, "DELETE", &location, &[], "")?.status,
        200
    );
    server.wait_for(Duration::from_secs(10), || {
        Ok(server.channel("alice")?.is_none())
    })?;
    assert_eq!(
        request(server.http, "DELETE", &location, &[], "")?.status,
        404
    );
    let again = whip(&server, "alice", Some("s3cret"), "application/sdp", &offer)?;
    assert_eq!(again.status, 201, "the channel is free again: {again:?}");

    // A publisher that sends nothing after answering is dropped; the key is never logged.
    assert!(!server.log().contains("s3cret") && !server.log().contains("hunter2"));
    Ok(())
}

#[test]
fn whep_refuses_a_viewer_that_cannot_decode_the_stream() -> Result<()> {
    let server = Server::start_isolated(Some(CONFIG), &[])?;
    let _ffmpeg = Ffmpeg::push_rtmp(&server.rtmp_url("bob?key=b0b"), &["-bf", "0", "-g", "30"])?;
    server.wait_for(Duration::from_secs(20), || {
        Ok(server.channel("bob")?.is_some_and(|c| {
            c["tracks"].as_array().is_some_and(|t| {
                t.iter()
                    .any(|t| t["codec"].as_str().is_some_and(|c| c.starts_with("H.264")))
            })
        }))
    })?;
    let vp8 = sdp_offer(false, true, true, true);
    let r = request(
        server.http,
        "POST",
        "/whep/bob",
        &[("Content-Type", "application/sdp")],
        &vp8,
    )?;
    assert_eq!(r.status, 406, "{r:?}");
    assert!(
        r.body.contains("H.264") && r.body.contains("Vp8"),
        "{}",
        r.body
    );
    let any = sdp_offer(false, true, true, false);
    let r = request(
        server.http,
        "POST",
        "/whep/bob",
        &[("Content-Type", "application/sdp")],
        &any,
    )?;
    assert_eq!(r.status, 201, "{r:?}");
    Ok(())
}
