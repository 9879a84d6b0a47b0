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
use crate::peer::{Control, IceRestart, PeerHandle};
use crate::sdpfrag::{self, SdpFrag};
use crate::{SessionId, Sfu};

/// Looks at the session at `channel/session`, if it exists, under the peers lock.
fn with_peer<T>(
    sfu: &Sfu,
    channel: &str,
    session: &str,
    look: impl FnOnce(SessionId, &PeerHandle) -> Option<T>,
) -> Option<T> {
    let id = SessionId::parse(session)?;
    let peers = sfu.peers();
    let peer = peers.get(&id).filter(|p| p.channel.as_str() == channel)?;
    look(id, peer)
}

/// The control channel of the session at `channel/session`, if it exists.
fn find(sfu: &Sfu, channel: &str, session: &str) -> Option<(SessionId, mpsc::Sender<Control>)> {
    with_peer(sfu, channel, session, |id, peer| {
        Some((id, peer.control.clone()))
    })
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
    if find(&sfu, &channel, &session).is_none() {
        return text(StatusCode::NOT_FOUND, "no such session");
    }
    let frag = match SdpFrag::parse(&body) {
        Ok(frag) => frag,
        Err(err) => return text(StatusCode::BAD_REQUEST, err.to_string()),
    };
    // Trickle or restart is decided against the remote ufrag, which a restart replaces.
    let found = with_peer(&sfu, &channel, &session, |id, peer| {
        let mut ufrag = peer.remote_ufrag.lock().unwrap_or_else(|e| e.into_inner());
        let restart = frag.restart(&ufrag);
        if let Some(remote) = &restart {
            *ufrag = remote.ufrag.clone();
        }
        Some((id, peer.control.clone(), restart))
    });
    let Some((id, control, restart)) = found else {
        return text(StatusCode::NOT_FOUND, "no such session");
    };
    if let Some(remote) = restart {
        // ICE restart: new credentials both ways; the new local ufrag routes to this session.
        let local = IceCreds::new();
        sfu.routes().add_ufrag(local.ufrag.clone(), id);
        let candidates: Vec<_> = sfu
            .candidates()
            .iter()
            .filter_map(|a| str0m::Candidate::host(*a, "udp").ok())
            .collect();
        let body = sdpfrag::answer(&local, &candidates);
        let _ = control
            .send(Control::IceRestart(Box::new(IceRestart {
                remote,
                local: local.clone(),
            })))
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
    let status = with_peer(&sfu, &channel, &session, |_, peer| {
        let layers = peer.layers.as_ref()?;
        Some(layers.lock().unwrap_or_else(|e| e.into_inner()).clone())
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
