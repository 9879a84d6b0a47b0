//! The SFU's HTTP routes: WHEP for viewers, WHIP for publishers (RFC 9725), and the session
//! resources behind their `Location`s. Every route answers CORS preflights, so a page on another
//! origin can publish and watch. `signaling` puts them in the node's router.

mod resource;
mod whep;
pub(crate) mod whip;

use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::MediaKind;
use str0m::rtp::{Extension, ExtensionMap};
use str0m::{Candidate, Rtc};

use crate::Sfu;

/// Largest SDP offer or PATCH body accepted.
const MAX_BODY: usize = 64 * 1024;

/// The WHEP and WHIP routes: `POST /whep/{channel}` and `POST /whip/{channel}`, `PATCH` and
/// `DELETE` on the sessions' `Location`s, a viewer's layer, and their CORS preflights.
pub fn whip_whep_routes(sfu: Sfu) -> Router {
    Router::new()
        .route("/whep/{channel}", post(whep::offer).options(preflight))
        .route("/whip/{channel}", post(whip::offer).options(preflight))
        .route(
            "/whep/{channel}/{session}",
            axum::routing::patch(resource::patch)
                .delete(resource::hang_up)
                .options(preflight),
        )
        .route(
            "/whip/{channel}/{session}",
            axum::routing::patch(resource::patch)
                .delete(resource::hang_up)
                .options(preflight),
        )
        .route(
            "/whep/{channel}/{session}/layer",
            get(resource::layer)
                .post(resource::set_layer)
                .options(preflight),
        )
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(cors))
        .with_state(sfu)
}

/// On a WHEP answer whose video is transcoded for this viewer: why, for the player to show.
pub(crate) const TRANSCODED_HEADER: &str = "starling-transcoded";

/// CORS on every response: WHIP/WHEP clients are often pages on another origin.
async fn cors(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, ETag, Link, Accept-Patch, Starling-Transcoded"),
    );
    response
}

async fn preflight() -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (
                header::ACCESS_CONTROL_ALLOW_METHODS,
                "GET, POST, PATCH, DELETE, OPTIONS",
            ),
            (
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                "Authorization, Content-Type, If-Match",
            ),
            (header::ACCESS_CONTROL_MAX_AGE, "86400"),
            (
                header::HeaderName::from_static("accept-post"),
                "application/sdp",
            ),
            (
                header::HeaderName::from_static("accept-patch"),
                "application/trickle-ice-sdpfrag",
            ),
        ],
    )
        .into_response()
}

pub(crate) fn text(status: StatusCode, message: impl Into<String>) -> Response {
    let mut body = message.into();
    body.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn has_content_type(headers: &HeaderMap, want: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with(want))
}

/// `415` unless the body is declared as SDP.
fn require_sdp(headers: &HeaderMap) -> Result<(), Box<Response>> {
    if has_content_type(headers, "application/sdp") {
        return Ok(());
    }
    Err(Box::new(text(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "send the SDP offer as application/sdp",
    )))
}

/// Parses an offer body; the error is the response to send.
fn parse_offer(body: &str) -> Result<SdpOffer, Box<Response>> {
    let offer = SdpOffer::from_sdp_string(body).map_err(|err| {
        Box::new(text(
            StatusCode::BAD_REQUEST,
            format!("malformed SDP offer: {}", parse_error(&err.to_string())),
        ))
    })?;
    if !body
        .lines()
        .any(|l| l.starts_with("m=video") || l.starts_with("m=audio"))
    {
        return Err(Box::new(text(
            StatusCode::BAD_REQUEST,
            "the offer has no audio or video",
        )));
    }
    Ok(offer)
}

/// Sent video packets a viewer keeps for NACK resends, at most, and for how long. str0m's
/// record of a kept packet is ~450 bytes (the payload itself is shared), so at 2.5 Mbit/s
/// (~280 packets a second, keyframes in bursts) this is ~110 KiB per viewer, the largest part
/// of a viewer's memory. Half a second is a few round trips for a NACK.
pub(crate) const RESEND_MAX_PACKETS: usize = 256;
pub(crate) const RESEND_WINDOW: Duration = Duration::from_millis(500);
/// str0m's default cap on resends, kept for a viewer of a ladder made here (see
/// [`keep_for_resends`]): queued resends are dropped once they pass this share of what was
/// sent in the last second.
const RESEND_SHARE_CAP: f32 = 0.15;
/// What is kept while the cached group goes out at join.
const RESEND_MAX_JOINING: usize = 64;

/// What a session does, which decides what str0m keeps for it.
#[derive(Clone, Copy)]
pub(crate) enum Role {
    /// Receives media; answers with transport-wide congestion control feedback, which the
    /// browser's own bandwidth estimate needs.
    Publisher,
    /// Sends media. `bwe`: estimate its bandwidth (to choose between simulcast layers), which
    /// needs transport-wide sequence numbers and a record of every packet sent. `rtp_mode`:
    /// frames go out as shared RTP payloads (`rtp_out`).
    Viewer { bwe: bool, rtp_mode: bool },
}

/// ICE-lite, and every codec Starling moves.
fn every_codec(builder: str0m::RtcConfig) -> str0m::RtcConfig {
    builder
        .set_ice_lite(true)
        .clear_codecs()
        .enable_h264(true)
        .enable_vp8(true)
        .enable_vp9(true)
        .enable_av1(true)
        .enable_h265(true)
        .enable_opus(true, false)
}

/// An ICE-lite `Rtc` that knows every codec Starling moves, with our host candidates.
fn new_rtc(sfu: &Sfu, role: Role) -> Rtc {
    let (bwe, rtp_mode, twcc) = match role {
        Role::Publisher => (false, false, true),
        Role::Viewer { bwe, rtp_mode } => (bwe, rtp_mode, bwe),
    };
    let mut exts = ExtensionMap::empty();
    for (id, ext) in ExtensionMap::standard().iter() {
        // Without an estimate to feed, the viewer's transport-wide sequence numbers (and the
        // 1000-packet send record str0m keeps for them, ~95 KiB) buy nothing.
        let for_estimate = matches!(
            ext,
            Extension::TransportSequenceNumber | Extension::AbsoluteSendTime
        );
        if twcc || !for_estimate {
            exts.set(id, ext.clone());
        }
    }
    let mut builder = every_codec(Rtc::builder())
        .set_rtp_mode(rtp_mode)
        .set_crypto_provider(crate::dtls::crypto_provider(matches!(
            role,
            Role::Viewer { .. }
        )))
        .set_extension_map(exts)
        .set_send_buffer_video(RESEND_MAX_PACKETS);
    if let Some(cert) = crate::dtls::certificate() {
        builder = builder.set_dtls_cert(cert);
    }
    if bwe {
        builder = builder.enable_bwe(Some(str0m::bwe::Bitrate::kbps(2_500)));
    }
    let mut rtc = builder.build(Instant::now());
    for addr in sfu.candidates() {
        if let Ok(candidate) = Candidate::host(*addr, "udp") {
            rtc.add_local_candidate(candidate);
        }
    }
    rtc
}

/// Keeps sent video for [`RESEND_WINDOW`] rather than str0m's 3 s, and, but for `capped`,
/// without str0m's cap on the share of resends, whose two per-packet histories cost ~22 KiB a
/// viewer: resends stay bounded by what is kept (a packet is only resent while kept, once per
/// NACK). `capped`: a viewer of the layers of a ladder this node's re-encoder makes. Squeezed
/// below its layer, NACKs for what the link dropped were answered with resends the link
/// dropped too (a 1.3 Mbit/s layer in 800 kbit/s: resends grew to 1.4 of the 2.3 Mbit/s sent,
/// and the viewer decoded nothing for seconds after moving down); those layers keyframe with
/// the source, so a resend dropped by the cap costs at most a group. A WebRTC publisher's
/// layers keyframe only on request: there the cap left a squeezed viewer frozen (the WHIP
/// throttled test failed 3 of 5 runs with it, none of 4 without).
///
/// `joining`: the viewer is about to get the cached group in one burst, which would grow the
/// buffer to its cap for good (str0m's buffer never shrinks); it keeps [`RESEND_MAX_JOINING`]
/// until the viewer task makes it anew after the burst. A burst longer than the cap wraps it
/// either way, so this loses no resend that the full cap would have kept for long.
pub(crate) fn keep_for_resends(
    rtc: &mut Rtc,
    added: &[(str0m::media::Mid, MediaKind)],
    joining: bool,
    capped: bool,
) {
    let packets = if joining {
        RESEND_MAX_JOINING
    } else {
        RESEND_MAX_PACKETS
    };
    let mut api = rtc.direct_api();
    for (mid, _) in added.iter().filter(|(_, kind)| *kind == MediaKind::Video) {
        if let Some(stream) = api.stream_tx_by_mid(*mid, None) {
            stream.set_rtx_cache(packets, RESEND_WINDOW, capped.then_some(RESEND_SHARE_CAP));
        }
    }
}

/// A viewer of the layers of a ladder this node's re-encoder makes gets its video as it comes,
/// not through str0m's pacer. That pacer sends at 1.1x the estimate (libwebrtc's at 2.5x) and
/// lets media wait up to 2 s: when a squeezed link recovers, the estimate lags what the layer
/// and audio need, video queues there for a second or more, and drains in one burst once a
/// probe lifts the estimate; Chromium then skips the late frames (`framesDropped`) and counts
/// a freeze. Measured with the ladder's throttled test: paced, 4 of 23 runs froze on the way
/// up (each at such a burst, no packet lost); unpaced, 0 of 20. Probes are still paced.
/// Not for WHIP simulcast viewers: without the resend cap (see [`keep_for_resends`]), their
/// resends flooded the 300 kbit/s link unpaced, and the WHIP throttled test failed 2 of 11
/// runs with no picture on the lower layer.
pub(crate) fn send_video_unpaced(rtc: &mut Rtc, added: &[(str0m::media::Mid, MediaKind)]) {
    let mut api = rtc.direct_api();
    for (mid, _) in added.iter().filter(|(_, kind)| *kind == MediaKind::Video) {
        if let Some(stream) = api.stream_tx_by_mid(*mid, None) {
            stream.set_unpaced(true);
        }
    }
}

/// A negotiated session: the answer SDP, our ICE ufrag, and the media lines.
struct Negotiated {
    answer: String,
    ufrag: String,
    added: Vec<(str0m::media::Mid, MediaKind)>,
}

/// Answers `offer`.
fn answer(rtc: &mut Rtc, offer: SdpOffer) -> Result<Negotiated, Box<Response>> {
    let answer = rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(|err| {
            Box::new(text(
                StatusCode::BAD_REQUEST,
                format!("cannot answer the offer: {err}"),
            ))
        })?
        .to_sdp_string();
    let ufrag = answer
        .lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .map(|u| u.trim().to_owned())
        .ok_or_else(|| {
            Box::new(text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "answer without ICE credentials",
            ))
        })?;
    let added = media_lines(&answer);
    Ok(Negotiated {
        answer,
        ufrag,
        added,
    })
}

/// The SDP parser's message on one line, without its internal pointer offsets.
fn parse_error(message: &str) -> String {
    message
        .lines()
        .map(|l| l.split(" at PointerOffset").next().unwrap_or(l).trim())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The media lines (mid and kind) of an answer.
fn media_lines(sdp: &str) -> Vec<(str0m::media::Mid, MediaKind)> {
    let mut lines = Vec::new();
    let mut kind = None;
    for line in sdp.lines().map(str::trim) {
        if line.starts_with("m=") {
            kind = match line {
                l if l.starts_with("m=video") => Some(MediaKind::Video),
                l if l.starts_with("m=audio") => Some(MediaKind::Audio),
                _ => None,
            };
        } else if let (Some(k), Some(mid)) = (kind, line.strip_prefix("a=mid:")) {
            lines.push((str0m::media::Mid::from(mid), k));
        }
    }
    lines
}

/// The remote ICE ufrag of an offer.
fn offer_ufrag(body: &str) -> String {
    body.lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .unwrap_or_default()
        .to_owned()
}

/// The payload parameters negotiated on `mid` (in both of str0m's modes, unlike its writer).
pub(crate) fn negotiated(rtc: &Rtc, mid: str0m::media::Mid) -> Vec<str0m::format::PayloadParams> {
    let Some(media) = rtc.media(mid) else {
        return Vec::new();
    };
    rtc.codec_config()
        .params()
        .iter()
        .filter(|p| media.remote_pts().contains(&p.pt()))
        .cloned()
        .collect()
}

/// The str0m codec for a bus codec.
pub(crate) fn str0m_codec(codec: &media::Codec) -> Codec {
    use media::{AudioCodec, VideoCodec};
    match codec {
        media::Codec::Video(VideoCodec::H265) => Codec::H265,
        media::Codec::Video(VideoCodec::Vp8) => Codec::Vp8,
        media::Codec::Video(VideoCodec::Vp9) => Codec::Vp9,
        media::Codec::Video(VideoCodec::Av1) => Codec::Av1,
        media::Codec::Audio(AudioCodec::Opus { .. }) => Codec::Opus,
        _ => Codec::H264,
    }
}

/// Adds a peer to the SFU's table and its ufrag to the UDP routes; returns its id and the
/// receiving ends for its task.
pub(crate) fn register(
    sfu: &Sfu,
    channel: media::ChannelName,
    local_ufrag: String,
    remote_ufrag: String,
    layers: Option<std::sync::Arc<std::sync::Mutex<crate::layers::LayerStatus>>>,
) -> (crate::SessionId, crate::peer::PeerIo) {
    use crate::peer::{PeerHandle, PeerIo, CONTROL_QUEUE, QUEUE};
    use tokio::sync::mpsc;
    let id = crate::SessionId::random();
    let (datagrams_tx, datagrams) = mpsc::channel(QUEUE);
    let (control_tx, control) = mpsc::channel(CONTROL_QUEUE);
    let handle = PeerHandle {
        datagrams: datagrams_tx,
        control: control_tx,
        channel,
        remote_ufrag: std::sync::Mutex::new(remote_ufrag),
        layers,
    };
    sfu.peers().insert(id, handle);
    sfu.routes().add_ufrag(local_ufrag, id);
    let io = PeerIo::new(sfu.clone(), id, datagrams, control);
    (id, io)
}

/// A place under the cap of unconnected sessions from the request's client address, or the
/// `429` that refuses the offer. Requests that came without an address (not through the node's
/// HTTP server) are not capped.
fn pending_place(
    sfu: &Sfu,
    client: Option<&crate::ClientAddr>,
) -> Result<Option<admission::IpPermit>, Box<Response>> {
    let Some(crate::ClientAddr(addr)) = client else {
        return Ok(None);
    };
    match sfu.inner.pending_per_ip.try_acquire(addr.ip()) {
        Ok(place) => Ok(Some(place)),
        Err(refused) => {
            if refused.is_power_of_two() {
                tracing::warn!(client = %addr, refused, "offer refused: too many unconnected sessions from this address");
            }
            Err(Box::new(text(
                StatusCode::TOO_MANY_REQUESTS,
                "too many sessions from this address are still connecting",
            )))
        }
    }
}

/// `201 Created` with the answer and the session's `Location`.
fn created(location: String, answer: String) -> Response {
    (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/sdp".to_owned()),
            (header::LOCATION, location),
        ],
        answer,
    )
        .into_response()
}

/// The offer path for the fuzz targets: what a WHIP/WHEP `POST` body and a trickle `PATCH`
/// body go through, up to the answer.
pub(crate) fn fuzz_offer(body: &str) {
    let _ = crate::sdpfrag::SdpFrag::parse(body);
    let _ = offer_ufrag(body);
    let Ok(offer) = parse_offer(body) else {
        return;
    };
    let mut rtc = every_codec(Rtc::builder()).build(Instant::now());
    if let Ok(candidate) = Candidate::host(([127, 0, 0, 1], 8189).into(), "udp") {
        rtc.add_local_candidate(candidate);
    }
    if let Ok(answered) = answer(&mut rtc, offer) {
        for (mid, _) in &answered.added {
            let _ = negotiated(&rtc, *mid);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parse_errors_lose_pointer_offsets() {
        let m = "SDP parse: Parse error at PointerOffset(0x7f00)\nUnexpected end of input\nExpected `o`\nsdp line\n";
        assert_eq!(
            super::parse_error(m),
            "SDP parse: Parse error; Unexpected end of input; Expected `o`; sdp line"
        );
    }
}
