//! `POST /whep/{channel}`: a viewer's SDP offer in, `201` with the answer and `Location` out.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use media::{tracks, BroadcastConsumer, ChannelName};
use str0m::format::Codec;
use str0m::media::MediaKind;
use tracing::{info, info_span, Instrument};

use super::{
    answer, created, keep_for_resends, new_rtc, offer_ufrag, parse_offer, register, require_sdp,
    send_video_unpaced, str0m_codec, text, Role,
};
use crate::layers::LayerStatus;
use crate::viewer::Viewer;
use crate::Sfu;

pub(super) async fn offer(
    State(sfu): State<Sfu>,
    Path(channel): Path<String>,
    client: Option<axum::Extension<crate::ClientAddr>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if let Err(response) = require_sdp(&headers) {
        return *response;
    }
    if !sfu
        .inner
        .takes_viewers
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node serves no viewers (its roles leave out sfu)",
        );
    }
    // Live here, or pulled from another node by the relay.
    let found = match ChannelName::new(&channel) {
        Ok(name) => sfu.inner.bus.find(&name).await,
        Err(_) => None,
    };
    let Some(broadcast) = found else {
        return text(StatusCode::NOT_FOUND, "channel is not live");
    };
    let offer = match parse_offer(&body) {
        Ok(offer) => offer,
        Err(response) => return *response,
    };
    if sfu.viewers() >= sfu.inner.config.max_viewers {
        return text(StatusCode::SERVICE_UNAVAILABLE, "this node is full");
    }
    let pending = match super::pending_place(&sfu, client.as_deref()) {
        Ok(place) => place,
        Err(response) => return *response,
    };
    wait_for_video_codec(&broadcast).await;
    // Bandwidth estimation only serves the choice between simulcast layers; one layer
    // does without its per-packet cost.
    let layered = broadcast
        .track_names()
        .iter()
        .filter(|n| tracks::is_video(n))
        .count()
        > 1;
    let video_codec = broadcast
        .track_names()
        .iter()
        .filter(|n| tracks::is_video(n))
        .find_map(|n| broadcast.peek_track(n).and_then(|t| t.codec()));
    // A browser that cannot decode H.265 or AV1 gets H.264 made for it, where the ingest
    // node offers that (it starts transcoding when the track has a viewer).
    let transcoded_from = video_codec
        .as_ref()
        .filter(|c| !offers(&body, str0m_codec(c)) && offers(&body, Codec::H264))
        .filter(|_| broadcast.peek_track(tracks::VIDEO_H264).is_some())
        .map(media::Codec::describe);
    let layered = layered && transcoded_from.is_none();
    let video_codec = match transcoded_from {
        Some(_) => None,
        None => video_codec,
    };
    // H.264 goes out as RTP payloads packetized once for every viewer (rtp_out).
    let rtp_mode = transcoded_from.is_some()
        || video_codec
            .as_ref()
            .is_some_and(|c| crate::rtp_out::shareable(str0m_codec(c)));
    let mut rtc = new_rtc(
        &sfu,
        Role::Viewer {
            bwe: layered,
            rtp_mode,
        },
    );
    let super::Negotiated {
        answer,
        ufrag,
        added,
    } = match answer(&mut rtc, offer) {
        Ok(a) => a,
        Err(response) => return *response,
    };
    let own_media = rtp_mode && !layered;
    // The layers of a ladder made here keyframe with the source, so what a resend dropped past
    // the cap, or an unpaced burst, loses costs a viewer at most a group; the cap also keeps
    // resends from flooding a squeezed link that pacing no longer guards. A WebRTC publisher's
    // layers keyframe only on request: its viewers stay paced, resends uncapped (see
    // `keep_for_resends` and `send_video_unpaced`). A ladder that starts later is followed by
    // the viewer task (`Viewer::follow_own_ladder`).
    let own_ladder = layered && broadcast.transcoding().is_some();
    keep_for_resends(&mut rtc, &added, true, own_ladder);
    if own_ladder {
        send_video_unpaced(&mut rtc, &added);
    }

    // A viewer that cannot decode the stream's video hears why now, not as a black screen.
    if let Some(codec) = video_codec {
        let want = str0m_codec(&codec);
        for (mid, _) in added.iter().filter(|(_, k)| *k == MediaKind::Video) {
            let offered: Vec<_> = super::negotiated(&rtc, *mid)
                .iter()
                .map(|p| p.spec().codec)
                .collect();
            if !offered.contains(&want) {
                let offered: Vec<String> = offered.iter().map(|c| format!("{c:?}")).collect();
                let offered = if offered.is_empty() {
                    "none".to_owned()
                } else {
                    offered.join(", ")
                };
                return text(
                    StatusCode::NOT_ACCEPTABLE,
                    format!(
                        "this stream is {}; the offer cannot receive it (offered: {offered})",
                        codec.describe()
                    ),
                );
            }
        }
    }

    let status = Arc::new(Mutex::new(LayerStatus::default()));
    let (id, mut io) = register(
        &sfu,
        broadcast.name().clone(),
        ufrag,
        offer_ufrag(&body),
        Some(status.clone()),
    );
    io.pending = pending;
    let span = info_span!("viewer", channel = %broadcast.name(), peer = crate::peer_number());
    span.in_scope(|| match &transcoded_from {
        Some(from) => info!(from = %from, "viewer joining; it gets H.264 transcoded for it"),
        None => info!("viewer joining"),
    });
    let viewer = Viewer {
        rtc,
        io,
        broadcast,
        status,
        added,
        joined: Instant::now(),
        rtp_mode,
        own_media,
        own_ladder,
        keys: None,
        video_track: transcoded_from.is_some().then_some(tracks::VIDEO_H264),
    };
    tokio::spawn(viewer.run().instrument(span));
    let mut response = created(format!("/whep/{channel}/{id}"), answer);
    if let Some(from) = transcoded_from {
        let why = format!(
            "This stream is {from}, which this browser cannot decode: the server transcodes it \
             to H.264 for viewers like this one (a little more latency)."
        );
        if let Ok(value) = axum::http::HeaderValue::from_str(&why) {
            response
                .headers_mut()
                .insert(super::TRANSCODED_HEADER, value);
        }
    }
    response
}

/// A channel that started this recently may not know its video codec yet (it comes with the
/// publisher's sequence header or first frame).
const YOUNG: Duration = Duration::from_secs(3);
/// How long a viewer of such a channel waits for it, so the answer is made for the codec.
const CODEC_WAIT: Duration = Duration::from_secs(1);

/// Waits (at most [`CODEC_WAIT`]) for a young channel's video codec.
async fn wait_for_video_codec(broadcast: &BroadcastConsumer) {
    if broadcast.age() > YOUNG {
        return;
    }
    let deadline = Instant::now() + CODEC_WAIT;
    let known = || {
        broadcast
            .track_names()
            .iter()
            .filter(|n| tracks::is_video(n))
            .any(|n| broadcast.peek_track(n).is_some_and(|t| t.codec().is_some()))
    };
    while !known() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether the SDP offers `codec` (an `a=rtpmap` line of its encoding name).
fn offers(sdp: &str, codec: Codec) -> bool {
    let name = match codec {
        Codec::H264 => "H264",
        Codec::H265 => "H265",
        Codec::Av1 => "AV1",
        Codec::Vp8 => "VP8",
        Codec::Vp9 => "VP9",
        _ => return true,
    };
    sdp.lines()
        .filter_map(|l| l.strip_prefix("a=rtpmap:"))
        .filter_map(|l| l.split_whitespace().nth(1))
        .any(|encoding| {
            encoding
                .split('/')
                .next()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
}

#[cfg(test)]
mod tests {
    use str0m::format::Codec;

    #[test]
    fn an_offer_lists_its_codecs_by_rtpmap() {
        let sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=rtpmap:96 VP8/90000\r\n\
                   a=rtpmap:97 h264/90000\r\na=fmtp:97 a=rtpmap:98 H265/90000\r\n";
        assert!(super::offers(sdp, Codec::Vp8));
        assert!(super::offers(sdp, Codec::H264));
        assert!(!super::offers(sdp, Codec::H265));
        assert!(!super::offers(sdp, Codec::Av1));
        assert!(!super::offers("", Codec::H264));
    }
}
