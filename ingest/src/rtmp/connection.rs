//! One RTMP connection: handshake, connect, publish, media, end.

use std::time::Instant;

use bytes::Bytes;
use media::ChannelName;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;
use tracing::{debug, info, warn};

use super::flv::{self, AudioTag, VideoTag};
use super::guard::{self, Guard};
use super::RtmpConfig;

use crate::{Claimed, Ingest, Publish};

const READ_BUFFER: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("handshake: {0}")]
    Handshake(String),
    #[error("rtmp session: {0}")]
    Session(String),
    #[error("publish refused: {0}")]
    Refused(String),
    #[error("input refused: {0}")]
    Input(#[from] guard::Refused),
}

/// What an RTMP connection runs over: TCP, or TLS over TCP (RTMPS).
pub(super) trait Stream:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send
{
}
impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for S {}

/// Drives one connection to its end and logs how it ended.
pub(super) async fn run<S: Stream>(mut stream: S, config: &RtmpConfig, ingest: &Ingest) {
    let mut conn = Connection {
        publish: None,
        pending: None,
        claim: None,
        unsupported_logged: false,
        start: None,
    };
    match conn.drive(&mut stream, config, ingest).await {
        Ok(()) => info!("rtmp connection closed"),
        Err(ConnectionError::Refused(why)) => warn!(reason = %why, "rtmp publish refused"),
        Err(ConnectionError::Input(why)) => warn!(reason = %why, "rtmp connection refused"),
        Err(err) => info!(%err, "rtmp connection ended"),
    }
    if let Some(publish) = conn.publish.take() {
        info!(channel = %publish.broadcast().name(), video_frames = publish.video_frames(), "channel ended");
    }
    let _ = stream.shutdown().await;
}

struct Connection {
    publish: Option<Publish>,
    /// An authorised publish request waiting for its channel to be claimed in the cluster.
    pending: Option<(u32, ChannelName)>,
    /// The channel held in the cluster registry while publishing.
    claim: Option<Claimed>,
    unsupported_logged: bool,
    /// First RTMP timestamp seen, to make this publisher's timestamps start near zero.
    start: Option<u32>,
}

impl Connection {
    async fn drive<S: Stream>(
        &mut self,
        stream: &mut S,
        config: &RtmpConfig,
        ingest: &Ingest,
    ) -> Result<(), ConnectionError> {
        let mut buf = vec![0u8; READ_BUFFER];
        let remaining = timeout(config.handshake_timeout(), handshake(stream, &mut buf))
            .await
            .map_err(|_| ConnectionError::Timeout)??;
        let (mut session, results) = ServerSession::new(ServerSessionConfig::new())
            .map_err(|e| ConnectionError::Session(e.to_string()))?;
        self.handle(stream, &mut session, results, ingest).await?;
        // Every byte goes through the guard before the session parses it.
        let mut guard = Guard::new();
        let results = guard
            .parse(&mut session, &remaining, false)?
            .map_err(|e| ConnectionError::Session(e.to_string()))?;
        self.handle(stream, &mut session, results, ingest).await?;
        let handshake_deadline = Instant::now() + config.handshake_timeout();
        loop {
            // Until publishing starts the handshake deadline applies; after, the idle timeout.
            let wait = match self.publish {
                Some(_) => config.idle_timeout(),
                None => handshake_deadline.saturating_duration_since(Instant::now()),
            };
            let n = timeout(wait, stream.read(&mut buf))
                .await
                .map_err(|_| ConnectionError::Timeout)??;
            if n == 0 {
                return Ok(());
            }
            let results = guard
                .parse(&mut session, &buf[..n], self.publish.is_some())?
                .map_err(|e| ConnectionError::Session(e.to_string()))?;
            self.handle(stream, &mut session, results, ingest).await?;
        }
    }

    async fn handle<S: Stream>(
        &mut self,
        stream: &mut S,
        session: &mut ServerSession,
        results: Vec<ServerSessionResult>,
        ingest: &Ingest,
    ) -> Result<(), ConnectionError> {
        let mut out = Vec::new();
        let mut queue = std::collections::VecDeque::from(results);
        let mut refused = None;
        while let Some(result) = queue.pop_front() {
            match result {
                ServerSessionResult::OutboundResponse(packet) => {
                    out.extend_from_slice(&packet.bytes)
                }
                ServerSessionResult::RaisedEvent(event) => match self.event(session, event, ingest)
                {
                    Ok(more) => queue.extend(more),
                    Err((more, why)) => {
                        queue.extend(more);
                        refused = Some(why);
                    }
                },
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        if let Some((request_id, channel)) = self.pending.take() {
            let started = match ingest.claim(&channel).await {
                Ok(claim) => ingest.start_authorized(channel).map(|p| (p, claim)),
                Err(refusal) => Err(refusal),
            };
            let answer = match started {
                Ok((publish, claim)) => {
                    info!(channel = %publish.broadcast().name(), "publishing");
                    self.publish = Some(publish);
                    self.claim = Some(claim);
                    session.accept_request(request_id)
                }
                Err(refusal) => {
                    refused = Some(refusal.to_string());
                    session.reject_request(request_id, refusal.code(), &refusal.to_string())
                }
            };
            let results = answer.map_err(|e| ConnectionError::Session(e.to_string()))?;
            for result in results {
                if let ServerSessionResult::OutboundResponse(packet) = result {
                    out.extend_from_slice(&packet.bytes);
                }
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
        }
        match refused {
            // The refusal's response has been written; now hang up.
            Some(why) => Err(ConnectionError::Refused(why)),
            None => Ok(()),
        }
    }

    /// Reacts to one session event; `Err` carries the responses to send before hanging up.
    fn event(
        &mut self,
        session: &mut ServerSession,
        event: ServerSessionEvent,
        ingest: &Ingest,
    ) -> Result<Vec<ServerSessionResult>, (Vec<ServerSessionResult>, String)> {
        let now = Instant::now();
        let session_err =
            |e: rml_rtmp::sessions::ServerSessionError| (Vec::new(), format!("rtmp session: {e}"));
        match event {
            ServerSessionEvent::ConnectionRequested {
                request_id,
                app_name,
            } => {
                debug!(app = %app_name, "connect");
                session.accept_request(request_id).map_err(session_err)
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id,
                stream_key,
                ..
            } => {
                if self.publish.is_some() {
                    let r = session.reject_request(
                        request_id,
                        "NetStream.Publish.BadName",
                        "already publishing",
                    );
                    return Err((
                        r.unwrap_or_default(),
                        "second publish on one connection".into(),
                    ));
                }
                match ingest.authorize_stream_key(&stream_key) {
                    Ok(channel) => {
                        // Started and accepted once the channel is claimed (see `handle`).
                        self.pending = Some((request_id, channel));
                        Ok(Vec::new())
                    }
                    Err(refusal) => {
                        let r = session.reject_request(
                            request_id,
                            refusal.code(),
                            &refusal.to_string(),
                        );
                        Err((r.unwrap_or_default(), refusal.to_string()))
                    }
                }
            }
            ServerSessionEvent::VideoDataReceived {
                data, timestamp, ..
            } => {
                self.video(data, timestamp.value, now);
                Ok(Vec::new())
            }
            ServerSessionEvent::AudioDataReceived {
                data, timestamp, ..
            } => {
                self.audio(data, timestamp.value, now);
                Ok(Vec::new())
            }
            ServerSessionEvent::PublishStreamFinished { .. } => {
                self.claim = None;
                if let Some(publish) = self.publish.take() {
                    info!(channel = %publish.broadcast().name(), "publisher finished");
                }
                Ok(Vec::new())
            }
            ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
                debug!(
                    width = ?metadata.video_width,
                    height = ?metadata.video_height,
                    fps = ?metadata.video_frame_rate,
                    encoder = ?metadata.encoder,
                    "stream metadata"
                );
                Ok(Vec::new())
            }
            _ => Ok(Vec::new()),
        }
    }

    /// Milliseconds since this publisher's first timestamp, tolerant of 32-bit wrap.
    fn relative_ms(&mut self, timestamp: u32) -> u64 {
        let start = *self.start.get_or_insert(timestamp);
        u64::from(timestamp.wrapping_sub(start))
    }

    fn video(&mut self, data: Bytes, timestamp: u32, now: Instant) {
        let ms = self.relative_ms(timestamp);
        let Some(publish) = &mut self.publish else {
            return;
        };
        match flv::video(&data) {
            Ok(VideoTag::AvcSequenceHeader(record)) => publish.avc_config(&record),
            Ok(VideoTag::AvcFrame { cts_ms, data }) => publish.avc_frame(&data, ms, cts_ms, now),
            Ok(VideoTag::HevcSequenceHeader(record)) => publish.hevc_config(&record),
            Ok(VideoTag::HevcFrame { cts_ms, data }) => publish.hevc_frame(&data, ms, cts_ms, now),
            Ok(VideoTag::Av1SequenceHeader(record)) => publish.av1_config(&record),
            Ok(VideoTag::Av1Frame { keyframe, data }) => {
                publish.av1_frame(&data, ms, keyframe, now)
            }
            Ok(VideoTag::Ignored) => {}
            Ok(VideoTag::Unsupported(codec)) => {
                if !std::mem::replace(&mut self.unsupported_logged, true) {
                    warn!(%codec, "unsupported video codec; send H.264, H.265 or AV1");
                }
            }
            Err(err) => debug!(%err, "bad video message"),
        }
    }

    fn audio(&mut self, data: Bytes, timestamp: u32, now: Instant) {
        let ms = self.relative_ms(timestamp);
        let Some(publish) = &mut self.publish else {
            return;
        };
        match flv::audio(&data) {
            Ok(AudioTag::AacSequenceHeader(asc)) => publish.aac_config(&asc),
            Ok(AudioTag::AacFrame(data)) => publish.aac_frame(&data, ms, now),
            Ok(AudioTag::Unsupported(format)) => {
                if !std::mem::replace(&mut self.unsupported_logged, true) {
                    warn!(format, "unsupported audio format; send AAC");
                }
            }
            Err(err) => debug!(%err, "bad audio message"),
        }
    }
}

async fn handshake<S: Stream>(stream: &mut S, buf: &mut [u8]) -> Result<Vec<u8>, ConnectionError> {
    let mut handshake = Handshake::new(PeerType::Server);
    loop {
        let n = stream.read(buf).await?;
        if n == 0 {
            return Err(ConnectionError::Handshake("closed during handshake".into()));
        }
        let processed = crate::untrusted::guarded(|| handshake.process_bytes(&buf[..n]))
            .ok_or_else(|| ConnectionError::Handshake("unparsable".into()))?;
        match processed.map_err(|e| ConnectionError::Handshake(e.to_string()))? {
            HandshakeProcessResult::InProgress { response_bytes } => {
                stream.write_all(&response_bytes).await?
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                stream.write_all(&response_bytes).await?;
                return Ok(remaining_bytes);
            }
        }
    }
}
