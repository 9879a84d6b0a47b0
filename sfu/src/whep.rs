//! WHEP: `POST /whep/{channel}` (SDP offer in, 201 + answer + `Location`), `DELETE` on the
//! `Location` to hang up.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::Router;
use media::ChannelName;
use str0m::change::SdpOffer;
use str0m::{Candidate, Rtc};
use tokio::sync::{mpsc, Notify};
use tracing::{info, info_span, Instrument};

use crate::session::{Session, SessionHandle, QUEUE};
use crate::{SessionId, Sfu};

/// Largest SDP offer accepted.
const MAX_OFFER: usize = 64 * 1024;

/// The WHEP routes.
pub fn router(sfu: Sfu) -> Router {
    Router::new()
        .route("/whep/{channel}", post(offer))
        .route("/whep/{channel}/{session}", delete(hang_up))
        .route("/metrics", axum::routing::get(metrics))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_OFFER))
        .with_state(sfu)
}

fn text(status: StatusCode, message: impl Into<String>) -> Response {
    let mut body = message.into();
    body.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn offer(
    State(sfu): State<Sfu>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let is_sdp = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().starts_with("application/sdp"));
    if !is_sdp {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the SDP offer as application/sdp",
        );
    }
    let Some(broadcast) = ChannelName::new(&channel)
        .ok()
        .and_then(|name| sfu.inner.bus.subscribe(&name))
    else {
        return text(StatusCode::NOT_FOUND, "channel is not live");
    };
    let offer = match SdpOffer::from_sdp_string(&body) {
        Ok(offer) => offer,
        Err(err) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("malformed SDP offer: {err}"),
            )
        }
    };
    if !body
        .lines()
        .any(|l| l.starts_with("m=video") || l.starts_with("m=audio"))
    {
        return text(
            StatusCode::BAD_REQUEST,
            "the offer has no audio or video to receive",
        );
    }
    if sfu.viewers() >= sfu.inner.config.max_viewers {
        return text(StatusCode::SERVICE_UNAVAILABLE, "this node is full");
    }

    let mut rtc = Rtc::builder()
        .set_ice_lite(true)
        .clear_codecs()
        .enable_h264(true)
        .enable_opus(true, false)
        .build(Instant::now());
    for addr in sfu.candidates() {
        if let Ok(candidate) = Candidate::host(*addr, "udp") {
            rtc.add_local_candidate(candidate);
        }
    }
    let answer = match rtc.sdp_api().accept_offer(offer) {
        Ok(answer) => answer.to_sdp_string(),
        Err(err) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("cannot answer the offer: {err}"),
            )
        }
    };
    let Some(ufrag) = answer.lines().find_map(|l| l.strip_prefix("a=ice-ufrag:")) else {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "answer without ICE credentials",
        );
    };

    let id = SessionId::random();
    let (tx, rx) = mpsc::channel(QUEUE);
    let hangup = Arc::new(Notify::new());
    let handle = SessionHandle {
        tx,
        hangup: hangup.clone(),
        channel: broadcast.name().clone(),
    };
    sfu.sessions().insert(id, handle);
    sfu.routes().add_ufrag(ufrag.trim().to_owned(), id);
    let span = info_span!("viewer", channel = %broadcast.name(), session = %id);
    span.in_scope(|| info!("viewer joining"));
    let session = Session {
        id,
        rtc,
        rx,
        hangup,
        broadcast,
        sfu: sfu.clone(),
        awaiting_send: None,
        latency: Default::default(),
        joined: Instant::now(),
    };
    tokio::spawn(session.run().instrument(span));

    let location = format!("/whep/{channel}/{id}");
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

async fn hang_up(
    State(sfu): State<Sfu>,
    Path((channel, session)): Path<(String, String)>,
) -> Response {
    let found = SessionId::parse(&session).and_then(|id| {
        let sessions = sfu.sessions();
        sessions
            .get(&id)
            .filter(|s| s.channel.as_str() == channel)
            .map(|s| s.hangup.clone())
    });
    match found {
        Some(hangup) => {
            hangup.notify_one();
            StatusCode::OK.into_response()
        }
        None => text(StatusCode::NOT_FOUND, "no such session"),
    }
}

/// Prometheus text exposition of the node's gauges.
async fn metrics(State(sfu): State<Sfu>) -> Response {
    let body = format!(
        "# HELP starling_viewers WebRTC viewer sessions on this node.\n\
         # TYPE starling_viewers gauge\n\
         starling_viewers {}\n\
         # HELP starling_live_channels Channels with a publisher on this node.\n\
         # TYPE starling_live_channels gauge\n\
         starling_live_channels {}\n",
        sfu.viewers(),
        sfu.inner.bus.live().len()
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
