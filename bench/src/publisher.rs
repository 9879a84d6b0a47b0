//! The synthetic WHIP publisher: H.264 access units from a file made by ffmpeg, looped, paced
//! at the file's frame rate, each stamped with its send time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::{Event, Rtc};

use crate::h264;
use crate::peer::Peer;

pub async fn run(endpoint: String, units: Vec<Vec<u8>>, fps: u32, until: Instant) -> Result<u64> {
    let rtc = Rtc::builder()
        .clear_codecs()
        .enable_h264(true)
        .build(Instant::now());
    let (mut rtc, socket, local) = Peer::bind(rtc).await?;
    let mut api = rtc.sdp_api();
    let mid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let (offer, pending) = api.apply().context("offer")?;
    let mut peer = Peer::negotiate(
        rtc,
        socket,
        local,
        offer.to_sdp_string(),
        pending,
        &endpoint,
    )
    .await?;

    // Like a real encoder, a keyframe request is answered with the next frame: the file's
    // position jumps to its nearest keyframe.
    let keyframes: Vec<usize> = (0..units.len())
        .filter(|&i| h264::is_keyframe(&units[i]))
        .collect();
    anyhow::ensure!(!keyframes.is_empty(), "the stream has no keyframe");
    let (connected, wanted) = (AtomicBool::new(false), AtomicBool::new(false));
    let mut on_event = |_: &mut Rtc, e: Event| match e {
        Event::Connected => connected.store(true, Ordering::Relaxed),
        Event::KeyframeRequest(_) => wanted.store(true, Ordering::Relaxed),
        _ => {}
    };
    let frame_time = Duration::from_secs(1) / fps;
    let mut next = Instant::now();
    let (mut sent, mut at) = (0u64, 0usize);
    while Instant::now() < until {
        peer.run_until(next.min(until), &mut on_event).await?;
        next += frame_time;
        if !connected.load(Ordering::Relaxed) {
            continue;
        }
        if wanted.swap(false, Ordering::Relaxed) && !keyframes.contains(&at) {
            at = keyframes
                .iter()
                .copied()
                .find(|&k| k > at)
                .unwrap_or(keyframes[0]);
        }
        write(&mut peer.rtc, mid, sent, fps, &units[at])?;
        sent += 1;
        at = (at + 1) % units.len();
    }
    peer.hang_up().await;
    Ok(sent)
}

fn write(rtc: &mut Rtc, mid: Mid, n: u64, fps: u32, unit: &[u8]) -> Result<()> {
    let writer = rtc.writer(mid).context("no writer")?;
    let pt = writer
        .payload_params()
        .find(|p| p.spec().codec == Codec::H264)
        .map(|p| p.pt())
        .context("no H.264 payload type")?;
    let time = MediaTime::new(n * 90_000 / u64::from(fps), Frequency::NINETY_KHZ);
    let frame = h264::stamped(unit, h264::now_micros());
    writer.write(pt, Instant::now(), time, frame)?;
    Ok(())
}
