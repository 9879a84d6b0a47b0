//! One FTL publisher: the control conversation over TCP, then media on its leased UDP port
//! until it disconnects, goes quiet, or its control connection closes.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::timeout_at;
use tracing::{debug, info, warn};

use super::control::{code, Action, Control, Media, CHALLENGE_LEN, MAX_LINE};
use super::media::{self, Rtp, Unwrap, VideoReceiver};
use super::{FtlConfig, Lease, Ports};
use crate::{Claimed, Ingest, Publish, Refusal};

/// How often incomplete video is revisited (NACK retries, giving up).
const TICK: Duration = Duration::from_millis(20);
/// The largest Opus packet (RFC 6716); ftl-sdk's speed test sends bigger junk on the audio SSRC.
const MAX_OPUS: usize = 1275;
/// ftl-sdk's ping packets on the media port (RTP-looking, byte 1 = marker | 122): echoed.
const PING_BYTE: u8 = 250;
/// Its sender reports (byte 1 = 200): ignored.
const SENDER_REPORT_BYTE: u8 = 200;

/// Reads `\n`-ended lines (a `\r` before it is dropped), each at most [`MAX_LINE`] bytes.
pub(super) struct Lines {
    pub(super) read: OwnedReadHalf,
    pub(super) buf: Vec<u8>,
}

#[derive(Debug)]
pub(super) enum LineError {
    Closed,
    TooLong,
}

impl Lines {
    pub(super) async fn next(&mut self) -> Result<String, LineError> {
        loop {
            if let Some(at) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=at).collect();
                return Ok(String::from_utf8_lossy(&line).trim_end().to_owned());
            }
            if self.buf.len() > MAX_LINE {
                return Err(LineError::TooLong);
            }
            let mut chunk = [0u8; 1024];
            match self.read.read(&mut chunk).await {
                Ok(0) | Err(_) => return Err(LineError::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// What the handshake settles.
struct Streaming {
    publish: Publish,
    media: Media,
    lease: Lease,
    /// The channel held in the cluster registry while streaming.
    _claim: Claimed,
}

/// Drives one control connection to its end and logs how it ended.
pub(super) async fn run(
    stream: TcpStream,
    config: &FtlConfig,
    ingest: &Ingest,
    ports: &Arc<Ports>,
) {
    let (Ok(peer), Ok(local)) = (stream.peer_addr(), stream.local_addr()) else {
        return;
    };
    let mut challenge = [0u8; CHALLENGE_LEN];
    if aws_lc_rs::rand::fill(&mut challenge).is_err() {
        warn!("no randomness for the FTL challenge");
        return;
    }
    let (read, mut write) = stream.into_split();
    let mut lines = Lines {
        read,
        buf: Vec::new(),
    };
    let mut control = Control::new(challenge);
    let deadline = Instant::now() + config.handshake_timeout();
    let handshake = timeout_at(
        deadline.into(),
        handshake(
            &mut control,
            &mut lines,
            &mut write,
            config,
            ingest,
            ports,
            local.ip(),
        ),
    )
    .await;
    let streaming = match handshake {
        Err(_) => {
            let _ = write.write_all(b"410\n").await;
            return info!("ftl handshake timed out");
        }
        Ok(Err(why)) => return warn!(reason = why, "ftl publish refused"),
        Ok(Ok(s)) => s,
    };
    let channel = streaming.publish.broadcast().name().clone();
    info!(%channel, vendor = %streaming.media.vendor, port = streaming.lease.port, "ftl publisher live");
    let (reason, publish, lost) = stream_media(
        streaming,
        &mut control,
        &mut lines,
        &mut write,
        peer.ip(),
        config,
    )
    .await;
    info!(
        %channel,
        reason,
        video_frames = publish.video_frames(),
        lost_frames = lost,
        "ftl publisher left; channel ended"
    );
    let _ = write.shutdown().await;
}

/// Runs the conversation up to streaming; `Err` says why it ended (the client was told).
async fn handshake(
    control: &mut Control,
    lines: &mut Lines,
    write: &mut OwnedWriteHalf,
    config: &FtlConfig,
    ingest: &Ingest,
    ports: &Arc<Ports>,
    local_ip: IpAddr,
) -> Result<Streaming, &'static str> {
    let mut channel = None;
    let mut claim = None;
    loop {
        let line = match lines.next().await {
            Ok(line) => line,
            Err(LineError::Closed) => return Err("closed during the handshake"),
            Err(LineError::TooLong) => {
                let _ = write
                    .write_all(format!("{}\n", code::BAD_REQUEST).as_bytes())
                    .await;
                return Err("control line too long");
            }
        };
        let mut action = control.on_line(&line);
        if let Action::Authenticate { channel_id, tag } = &action {
            let name = config.channel_name(*channel_id);
            let admitted = match ingest.authorize_hmac(&name, control.challenge(), tag) {
                Ok(n) => ingest.claim(&n).await.map(|held| (n, held)),
                Err(refusal) => Err(refusal),
            };
            let result = match admitted {
                Ok((n, held)) => {
                    channel = Some(n);
                    claim = Some(held);
                    Ok(())
                }
                Err(Refusal::Auth(err)) => {
                    debug!(%err, "ftl key check");
                    Err(code::INVALID_STREAM_KEY)
                }
                Err(Refusal::Live(_) | Refusal::Elsewhere(_)) => Err(code::CHANNEL_IN_USE),
                // A refusal admission may add later.
                Err(refusal) => {
                    debug!(%refusal, "ftl publish refused");
                    Err(code::BAD_REQUEST)
                }
            };
            action = control.authenticated(result);
        }
        let mut started = None;
        if let Action::StartMedia(media) = action {
            let (result, ready) = start_media(channel.take(), ingest, ports, local_ip).await;
            action = control.media_port(result);
            started = ready.map(|(publish, lease)| Streaming {
                publish,
                media,
                lease,
                _claim: claim.take().unwrap_or_else(Claimed::nothing),
            });
        }
        match action {
            Action::Reply(reply) => {
                write
                    .write_all(reply.as_bytes())
                    .await
                    .map_err(|_| "closed during the handshake")?;
                if let Some(streaming) = started {
                    return Ok(streaming);
                }
            }
            Action::Refuse(reply) => {
                let _ = write.write_all(reply.as_bytes()).await;
                return Err(match reply.trim() {
                    "405" => "wrong key or unknown channel (405)",
                    "406" => "channel already live (406)",
                    "500" => "no free media port (500)",
                    _ => "bad request (400)",
                });
            }
            Action::Disconnect => return Err("disconnected during the handshake"),
            Action::Nothing | Action::Authenticate { .. } | Action::StartMedia(_) => {}
        }
    }
}

/// Leases a media port and starts the broadcast: the port, or the code to refuse with.
async fn start_media(
    channel: Option<::media::ChannelName>,
    ingest: &Ingest,
    ports: &Arc<Ports>,
    local_ip: IpAddr,
) -> (Result<u16, u16>, Option<(Publish, Lease)>) {
    let Some(channel) = channel else {
        return (Err(code::BAD_REQUEST), None);
    };
    let Some(lease) = ports.lease(local_ip).await else {
        warn!("ftl: every media port is in use");
        return (Err(code::INTERNAL_SERVER_ERROR), None);
    };
    match ingest.start_authorized(channel) {
        Ok(publish) => (Ok(lease.port), Some((publish, lease))),
        Err(_) => (Err(code::CHANNEL_IN_USE), None),
    }
}

/// Media until the end; returns why it ended, the publish, and the video frames lost.
async fn stream_media(
    streaming: Streaming,
    control: &mut Control,
    lines: &mut Lines,
    write: &mut OwnedWriteHalf,
    peer_ip: IpAddr,
    config: &FtlConfig,
) -> (&'static str, Publish, u64) {
    let Streaming {
        mut publish,
        media,
        lease,
        _claim,
    } = streaming;
    let mut feed = Feed {
        media,
        video: VideoReceiver::default(),
        video_clock: Unwrap::default(),
        audio_clock: Unwrap::default(),
        video_seen: false,
        source: None,
    };
    let mut buf = vec![0u8; 2048];
    let mut tick = tokio::time::interval(TICK);
    let mut last_media = Instant::now();
    let reason = loop {
        tokio::select! {
            line = lines.next() => match line {
                Err(_) => break "control connection closed",
                Ok(line) => match control.on_line(&line) {
                    Action::Reply(reply) if write.write_all(reply.as_bytes()).await.is_err() => {
                        break "control connection closed";
                    }
                    Action::Disconnect => break "publisher disconnected",
                    _ => {}
                },
            },
            received = lease.socket.recv_from(&mut buf) => {
                let Ok((n, from)) = received else { continue };
                if from.ip() != peer_ip {
                    continue; // media only from the control connection's address
                }
                last_media = Instant::now();
                let datagram = Bytes::copy_from_slice(&buf[..n]);
                if let Some(reply) = feed.packet(&mut publish, datagram, last_media) {
                    let _ = lease.socket.send_to(&reply, from).await;
                }
                feed.source = Some(from);
            }
            _ = tick.tick() => {
                let now = Instant::now();
                if let (Some(nack), Some(to)) = (feed.poll(&mut publish, now), feed.source) {
                    let _ = lease.socket.send_to(&nack, to).await;
                }
                if now.duration_since(last_media) > config.idle_timeout() {
                    let _ = write.write_all(format!("{}\n", code::NO_MEDIA_TIMEOUT).as_bytes()).await;
                    break "no media within the idle timeout (408)";
                }
            }
        }
    };
    let lost = feed.video.lost_frames;
    (reason, publish, lost)
}

/// One publisher's media state.
struct Feed {
    media: Media,
    video: VideoReceiver,
    video_clock: Unwrap,
    audio_clock: Unwrap,
    /// Audio before the first video packet is ftl-sdk's speed test: junk.
    video_seen: bool,
    /// Where its media comes from: NACKs go back there.
    source: Option<SocketAddr>,
}

/// Headroom added to the media clocks, so packets a little out of order stay positive.
const HEADROOM_90K: u64 = 90_000;

impl Feed {
    /// Takes one datagram; returns what to send back at once (a NACK, a ping echo).
    fn packet(&mut self, publish: &mut Publish, datagram: Bytes, now: Instant) -> Option<Vec<u8>> {
        match datagram.get(1) {
            Some(&PING_BYTE) => return Some(datagram.to_vec()),
            Some(&SENDER_REPORT_BYTE) | None => return None,
            _ => {}
        }
        let rtp = Rtp::parse(&datagram)?;
        let key = (rtp.payload_type, rtp.ssrc);
        if Some(key) == self.media.video {
            self.video_seen = true;
            let ssrc = rtp.ssrc;
            let missing = self.video.push(rtp, now);
            self.deliver(publish, now);
            return (!missing.is_empty()).then(|| media::nack(ssrc, &missing));
        }
        if Some(key) == self.media.audio
            && (self.video_seen || self.media.video.is_none())
            && rtp.payload.len() <= MAX_OPUS
        {
            let t = self.audio_clock.extend(u64::from(rtp.timestamp), 32);
            let t = (t + HEADROOM_90K * 8 / 15).saturating_sub(1 << 32);
            publish.opus_packet(rtp.payload, t, now);
        }
        None
    }

    /// Revisits incomplete video: delivers what completed, returns a NACK to send again.
    fn poll(&mut self, publish: &mut Publish, now: Instant) -> Option<Vec<u8>> {
        let (_, ssrc) = self.media.video?;
        let again = self.deliver(publish, now);
        (!again.is_empty()).then(|| media::nack(ssrc, &again))
    }

    fn deliver(&mut self, publish: &mut Publish, now: Instant) -> Vec<u16> {
        let (frames, again) = self.video.poll(now);
        for frame in frames {
            let t = self.video_clock.extend(u64::from(frame.timestamp), 32);
            let t = (t + HEADROOM_90K).saturating_sub(1 << 32);
            publish.h264_annexb(&frame.data, t, t, now);
        }
        again
    }
}
