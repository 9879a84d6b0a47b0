//! `GET /`, `GET /watch/{channel}`, `GET /api/channels[/{channel}]`.

use std::time::{Duration, SystemTime};

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use media::{Bus, ChannelName, LiveBroadcast};
use serde::Serialize;

const WATCH_HTML: &str = include_str!("watch.html");
const PUBLISH_HTML: &str = include_str!("publish.html");

/// Routes for pages, the channel API and health, over `bus`.
pub fn router(bus: Bus) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/watch/{channel}", get(watch))
        .route("/publish/{channel}", get(publish))
        .route("/api/channels", get(channels))
        .route("/api/channels/{channel}", get(channel))
        .with_state(bus)
}

#[derive(Serialize)]
struct ChannelInfo {
    name: ChannelName,
    live_seconds: u64,
    tracks: Vec<media::TrackInfo>,
    notice: Option<String>,
    /// What the server makes of the stream for its viewers, and why.
    transcoding: Option<String>,
    /// `live`, or `reconnecting` while the publisher is away within the grace period.
    state: &'static str,
    /// Pulled from another node by the relay: its publisher is elsewhere in the cluster.
    relayed: bool,
    watch: String,
}

impl From<LiveBroadcast> for ChannelInfo {
    fn from(b: LiveBroadcast) -> Self {
        let age = SystemTime::now()
            .duration_since(b.started)
            .unwrap_or(Duration::ZERO);
        Self {
            watch: format!("/watch/{}", b.name),
            name: b.name,
            live_seconds: age.as_secs(),
            tracks: b.tracks,
            notice: b.notice,
            transcoding: b.transcoding,
            state: if b.publishing { "live" } else { "reconnecting" },
            relayed: b.relayed,
        }
    }
}

async fn channels(State(bus): State<Bus>) -> Json<Vec<ChannelInfo>> {
    Json(bus.live().into_iter().map(ChannelInfo::from).collect())
}

async fn channel(State(bus): State<Bus>, Path(name): Path<String>) -> Response {
    let Ok(name) = ChannelName::new(&name) else {
        return (StatusCode::NOT_FOUND, "channel is not live\n").into_response();
    };
    // Live here, or on another node of the cluster: then the relay pulls it here now, so the
    // player's WHEP request that follows finds it warm.
    let _held = bus.find(&name).await;
    let live = bus.live().into_iter().find(|b| b.name == name);
    match live {
        Some(b) => Json(ChannelInfo::from(b)).into_response(),
        None => (StatusCode::NOT_FOUND, "channel is not live\n").into_response(),
    }
}

async fn watch(Path(name): Path<String>) -> Response {
    match ChannelName::new(&name) {
        // Channel names are restricted to URL- and HTML-safe characters.
        Ok(name) => Html(WATCH_HTML.replace("{{channel}}", name.as_str())).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}

async fn publish(Path(name): Path<String>) -> Response {
    match ChannelName::new(&name) {
        Ok(name) => Html(PUBLISH_HTML.replace("{{channel}}", name.as_str())).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}

async fn index(State(bus): State<Bus>) -> Response {
    let live = bus.live();
    let mut items = String::new();
    for b in &live {
        items.push_str(&format!(
            "<li><a href=\"/watch/{0}\">{0}</a></li>\n",
            b.name
        ));
    }
    if live.is_empty() {
        items.push_str("<li>No channel is live. Publish one with OBS or ffmpeg (below).</li>\n");
    }
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Starling</title>\
         <meta http-equiv=\"refresh\" content=\"5\"></head>\n<body style=\"font:14px system-ui\">\
         <h1>Starling</h1>\n<h2>Live channels</h2>\n<ul>\n{items}</ul>\n\
         <h2>Publish</h2>\n<p>From the browser: <code>/publish/CHANNEL</code> (WHIP). In OBS: Settings → Stream → Custom. Server <code>rtmp://HOST/live</code>, \
         stream key <code>CHANNEL?key=SECRET</code> (or just <code>CHANNEL</code> when publishing is open).</p>\n\
         <p>With ffmpeg: <code>ffmpeg -re -i input.mp4 -c:v libx264 -bf 0 -c:a aac -f flv \
         rtmp://HOST/live/CHANNEL</code></p>\n</body></html>\n"
    );
    ([(header::CACHE_CONTROL, "no-store")], Html(page)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(bus: &Bus, uri: &str) -> (StatusCode, String) {
        let res = router(bus.clone())
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn lists_live_channels_and_serves_player() {
        let bus = Bus::new(Default::default());
        let (_, body) = get(&bus, "/").await;
        assert!(body.contains("No channel is live"));
        let _alice = bus.publish(ChannelName::new("alice").unwrap()).unwrap();
        let (_, body) = get(&bus, "/").await;
        assert!(body.contains("/watch/alice"));
        let (status, body) = get(&bus, "/api/channels").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("\"name\":\"alice\""));
        assert_eq!(get(&bus, "/api/channels/alice").await.0, StatusCode::OK);
        assert_eq!(
            get(&bus, "/api/channels/bob").await.0,
            StatusCode::NOT_FOUND
        );
        let (status, body) = get(&bus, "/watch/alice").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("const channel = \"alice\""));
        let (status, body) = get(&bus, "/publish/alice").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("/whip/"));
        assert_eq!(
            get(&bus, "/watch/%3Cscript%3E").await.0,
            StatusCode::BAD_REQUEST
        );
    }
}
