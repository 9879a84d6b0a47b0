//! WHEP viewer: receives video and audio for the run's duration and reports what arrived:
//! packets, frames (RTP timestamps closed by a marker bit), keyframes, and the time from the
//! POST to the first keyframe.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Result;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use serde_json::json;
use tokio::sync::Mutex;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use crate::Args;
use crate::keyframe;
use crate::peer::Peer;

#[derive(Default)]
struct Counts {
    video_packets: AtomicU64,
    frames: AtomicU64,
    keyframes: AtomicU64,
    audio_packets: AtomicU64,
    /// Milliseconds from the POST to the first keyframe's last packet, plus one (0 = none).
    first_keyframe_ms: AtomicU64,
    codecs: Mutex<Vec<String>>,
}

pub async fn run(args: &Args) -> Result<()> {
    let mut media = MediaEngine::default();
    media.register_default_codecs()?;
    let mut peer = Peer::new(media, &args.dtls, &args.url).await?;
    for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
        peer.pc
            .add_transceiver_from_kind(
                kind,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    ..Default::default()
                }),
            )
            .await?;
    }

    let started = Instant::now();
    let resource = peer.negotiate(&args.url, None).await?;
    let connect_ms = started.elapsed().as_millis();
    let counts = Arc::new(Counts::default());
    let deadline = tokio::time::sleep(args.duration);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            Some(track) = peer.tracks.recv() => {
                tokio::spawn(receive(track, Arc::clone(&counts), started));
            }
        }
    }
    let connected_at_end = peer.is_connected();
    let delete = peer.hang_up(&resource, None).await?;
    let first_keyframe = counts.first_keyframe_ms.load(Ordering::Relaxed);
    println!(
        "{}",
        json!({
            "connect_ms": connect_ms,
            "connected_at_end": connected_at_end,
            "codecs": *counts.codecs.lock().await,
            "video_packets": counts.video_packets.load(Ordering::Relaxed),
            "frames": counts.frames.load(Ordering::Relaxed),
            "keyframes": counts.keyframes.load(Ordering::Relaxed),
            "audio_packets": counts.audio_packets.load(Ordering::Relaxed),
            "first_keyframe_ms": first_keyframe.checked_sub(1),
            "delete_status": delete,
        })
    );
    Ok(())
}

async fn receive(track: Arc<dyn TrackRemote>, counts: Arc<Counts>, started: Instant) {
    let Some(ssrc) = track.ssrcs().await.first().copied() else {
        return;
    };
    let kind = track.kind().await;
    let mime = track
        .codec(ssrc)
        .await
        .map(|codec| codec.mime_type)
        .unwrap_or_default();
    counts.codecs.lock().await.push(mime.clone());
    let mut keyframe = keyframe::Detector::new(&mime);
    while let Some(event) = track.poll().await {
        let TrackRemoteEvent::OnRtpPacket(packet) = event else {
            continue;
        };
        if kind == RtpCodecKind::Audio {
            counts.audio_packets.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        counts.video_packets.fetch_add(1, Ordering::Relaxed);
        keyframe.packet(&packet.payload);
        if packet.header.marker {
            counts.frames.fetch_add(1, Ordering::Relaxed);
            if keyframe.end_of_frame() {
                counts.keyframes.fetch_add(1, Ordering::Relaxed);
                let ms = started.elapsed().as_millis() as u64 + 1;
                let _ = counts.first_keyframe_ms.compare_exchange(
                    0,
                    ms,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
        }
    }
}
