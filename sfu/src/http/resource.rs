//! The session resource behind a WHEP/WHIP `Location`: `PATCH` for trickle ICE and ICE
//! restart (RFC 9725 section 4.3), `DELETE` to hang up, and a viewer's `layer`.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use str0m::IceCreds;
use tokio::sync::mpsc;

use super::{has_content_type, text};
use crate::peer::Control;
use crate::sdpfrag::{self, SdpFrag};
use crate::{SessionId, Sfu};

/// The control channel of the session at `channel/session`, if it exists.
fn find(sfu: &Sfu, channel: &str, session: &str) -> Option<(SessionId, mpsc::Sender<Control>)> {
    let id = SessionId::parse(session)?;
    let peers = sfu.peers();
    let peer = peers.get(&id).filter(|p| p.channel.as_str() == channel)?;
    Some((id, peer.control.clone()))
}

pub(super) async fn hang_up(
    State(sfu): State<Sfu>,
    Path((channel, session)): Path<(String, String)>,
) -> Response {
    match find(&sfu, &channel, &session) {
        Some((_, control)) => {
            let _ = control.send(Control::HangUp).await;
            StatusCode::OK.into_response()
        }
        None => text(StatusCode::NOT_FOUND, "no such session"),
    }
}

pub(super) async fn patch(
    State(sfu): State<Sfu>,
    Path((channel, session)): Path<(String, String)>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if !has_content_type(&headers, "application/trickle-ice-sdpfrag") {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send application/trickle-ice-sdpfrag",
        );
    }
    let Some((id, control)) = find(&sfu, &channel, &session) else {
        return text(StatusCode::NOT_FOUND, "no such session");
    };
    let frag = match SdpFrag::parse(&body) {
        Ok(frag) => frag,
        Err(err) => return text(StatusCode::BAD_REQUEST, err.to_string()),
    };
    let current = sfu
        .peers()
        .get(&id)
        .map(|p| {
            p.remote_ufrag
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        })
        .unwrap_or_default();
    if let Some(remote) = frag.restart(&current) {
        // ICE restart: new credentials both ways; the new local ufrag routes to this session.
        let local = IceCreds::new();
        if let Some(peer) = sfu.peers().get(&id) {
            *peer.remote_ufrag.lock().unwrap_or_else(|e| e.into_inner()) = remote.ufrag.clone();
        }
        sfu.routes().add_ufrag(local.ufrag.clone(), id);
        let candidates: Vec<_> = sfu
            .candidates()
            .iter()
            .filter_map(|a| str0m::Candidate::host(*a, "udp").ok())
            .collect();
        let body = sdpfrag::answer(&local, &candidates);
        let _ = control
            .send(Control::IceRestart {
                remote,
                local: local.clone(),
            })
            .await;
        if !frag.candidates.is_empty() {
            let _ = control.send(Control::Candidates(frag.candidates)).await;
        }
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/trickle-ice-sdpfrag")],
            body,
        )
            .into_response();
    }
    if !frag.candidates.is_empty() {
        let _ = control.send(Control::Candidates(frag.candidates)).await;
    }
    StatusCode::NO_CONTENT.into_response()
}

pub(super) async fn layer(
    State(sfu): State<Sfu>,
    Path((channel, session)): Path<(String, String)>,
) -> Response {
    let status = SessionId::parse(&session).and_then(|id| {
        let peers = sfu.peers();
        let peer = peers.get(&id).filter(|p| p.channel.as_str() == channel)?;
        let layers = peer.layers.as_ref()?;
        let status = layers.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Some(status)
    });
    match status {
        Some(status) => Json(status).into_response(),
        None => text(StatusCode::NOT_FOUND, "no such viewer"),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LayerChoice {
    /// A track name such as `video.l`, or `auto` / null for automatic.
    layer: Option<String>,
}

pub(super) async fn set_layer(
    State(sfu): State<Sfu>,
    Path((channel, session)): Path<(String, String)>,
    Json(choice): Json<LayerChoice>,
) -> Response {
    let preferred = choice.layer.filter(|l| l != "auto");
    if preferred
        .as_deref()
        .is_some_and(|l| !media::tracks::is_video(l))
    {
        return text(
            StatusCode::BAD_REQUEST,
            "layer must be auto or a video track name",
        );
    }
    let Some((_, control)) = find(&sfu, &channel, &session) else {
        return text(StatusCode::NOT_FOUND, "no such viewer");
    };
    let _ = control.send(Control::Layer(preferred)).await;
    StatusCode::NO_CONTENT.into_response()
}
