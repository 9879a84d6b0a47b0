//! `POST /whip/{channel}` (RFC 9725): a publisher's SDP offer in with `Authorization: Bearer
//! <key>`; `201` with the answer and `Location` out.

use admission::{AuthError, Refusal};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tracing::{info, info_span, warn, Instrument};

use super::{
    answer, created, new_rtc, offer_ufrag, parse_offer, register, require_sdp, text, Role,
};
use crate::publisher::Publisher;
use crate::Sfu;

pub(super) async fn offer(
    State(sfu): State<Sfu>,
    Path(channel): Path<String>,
    client: Option<axum::Extension<crate::ClientAddr>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: String,
) -> Response {
    let offer = match require_sdp(&headers).and_then(|()| parse_offer(&body)) {
        Ok(offer) => offer,
        Err(response) => return *response,
    };
    if !sfu
        .inner
        .takes_publishers
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node takes no publishers (its roles leave out ingest)",
        );
    }
    let token = bearer(&headers);
    if sfu.publishers() >= sfu.inner.config.max_publishers {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node takes no more publishers",
        );
    }
    let pending = match super::pending_place(&sfu, client.as_deref()) {
        Ok(place) => place,
        Err(response) => return *response,
    };
    let admission = &sfu.inner.admission;
    // Sent by the front: a publish token in the query stands for the key (a cross-origin
    // redirect loses `Authorization` in some browsers).
    let sent_token = query
        .as_deref()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")));
    let authorized = match (token, sent_token) {
        (None, Some(sent)) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            admission.authorize_token(&channel, sent, now)
        }
        _ => admission.authorize(&channel, token),
    };
    let name = match authorized {
        Ok(name) => name,
        Err(refusal) => return refused(&refusal),
    };
    // In a cluster the channel must be ours before the publisher is admitted.
    let claim = match admission.claim(&name).await {
        Ok(claim) => claim,
        Err(refusal) => return refused(&refusal),
    };
    let broadcast = match admission.bus().publish(name) {
        Ok(b) => b,
        Err(err) => return refused(&err.into()),
    };
    let mut rtc = new_rtc(&sfu, Role::Publisher);
    let super::Negotiated { answer, ufrag, .. } = match answer(&mut rtc, offer) {
        Ok(a) => a,
        Err(response) => return *response, // dropping the broadcast frees the channel
    };
    let (id, mut io) = register(
        &sfu,
        broadcast.name().clone(),
        ufrag,
        offer_ufrag(&body),
        None,
    );
    io.pending = pending;
    let span = info_span!("whip", channel = %broadcast.name(), peer = crate::peer_number());
    span.in_scope(|| info!(resumed = broadcast.generation() > 1, "publisher joining"));
    let publisher = Publisher {
        rtc,
        io,
        broadcast,
        sfu: sfu.clone(),
        _claim: claim,
    };
    tokio::spawn(publisher.run().instrument(span));
    created(format!("/whip/{channel}/{id}"), answer)
}

/// The bearer token, if the request has one (also the front's, which checks WHIP keys).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The response for a refused publisher. Logs the channel and reason, never the token.
fn refused(refusal: &Refusal) -> Response {
    warn!(reason = %refusal, "WHIP publish refused");
    refusal_response(refusal)
}

/// What a WHIP publisher is told when refused (also by the front): `400` for a bad name, `401`
/// for a missing or wrong key, `409` when the channel is live, here or on another node.
pub fn refusal_response(refusal: &Refusal) -> Response {
    match refusal {
        Refusal::Auth(AuthError::BadName) => text(StatusCode::BAD_REQUEST, refusal.to_string()),
        Refusal::Auth(_) => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            format!("{refusal}\n"),
        )
            .into_response(),
        Refusal::Live(_) | Refusal::Elsewhere(_) => text(StatusCode::CONFLICT, refusal.to_string()),
        _ => text(StatusCode::FORBIDDEN, refusal.to_string()),
    }
}
