//! Bus to MoQ: what downstream nodes subscribe to. Every broadcast request under this node's
//! route reaches [`serve_requests`]; the channel is served from the bus, where it is published
//! here or pulled from upstream first (so a secondary pulls on its first downstream request).
//! Tracks are made on demand, one pump per track however many downstream sessions read it
//! (moq-net shares an accepted broadcast among every request for its path), and each pump
//! ends when no one reads its track.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use media::{tracks, BroadcastConsumer, ChannelName, Codec, Timeline, TrackConsumer};
use moq_net::{broadcast, frame, origin, track, Timescale, Timestamp};
use tracing::debug;

use crate::catalog::{self, Catalog};
use crate::metrics::{inc, Held};
use crate::{wire, Shared};

/// How often a served catalog is compared with the bus.
const CATALOG_POLL: Duration = Duration::from_millis(250);

/// Answers broadcast requests from downstream sessions until the origin closes.
pub(crate) async fn serve_requests(shared: Arc<Shared>, dynamic: origin::Dynamic) {
    while let Ok(request) = dynamic.requested_broadcast().await {
        tokio::spawn(export(shared.clone(), request));
    }
}

async fn export(shared: Arc<Shared>, request: origin::Request) {
    let channel = request
        .path()
        .as_str()
        .strip_prefix(crate::NAMESPACE)
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|rest| ChannelName::new(rest).ok());
    let Some(name) = channel else {
        request.reject(moq_net::Error::NotFound);
        return;
    };
    let bus = match shared.bus.subscribe(&name) {
        Some(local) => {
            inc(&shared.metrics.hits);
            local
        }
        None => match shared.pull(name.clone()).await {
            Some(pulled) => pulled,
            None => {
                request.reject(moq_net::Error::NotFound);
                return;
            }
        },
    };
    let mut info = broadcast::Info::new();
    info.pool = shared.pool.clone();
    let served = info.produce();
    let mut requested = served.dynamic();
    request.accept(&served);
    let demand = served.demand();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut idle_since: Option<Instant> = None;
    // The track pumps live as long as the served broadcast: moq-net answers later subscribers
    // of a track from the producer it has, so a pump must not end while it may be asked again.
    let mut pumps = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            track = requested.requested_track() => match track {
                Ok(track) => { pumps.spawn(export_track(shared.clone(), bus.clone(), track)); }
                Err(_) => break,
            },
            Some(_) = pumps.join_next() => {}
            () = bus.closed() => break,
            _ = tick.tick() => {
                // Let the bus go once no downstream session has read it for the linger time.
                if demand.is_used() {
                    idle_since = None;
                } else if idle_since.get_or_insert_with(Instant::now).elapsed() > shared.config.linger() {
                    break;
                }
            }
        }
    }
    pumps.abort_all();
    debug!(channel = %name, "relay: no longer serving downstream");
}

async fn export_track(shared: Arc<Shared>, bus: BroadcastConsumer, request: track::Request) {
    let name = request.name().to_owned();
    if name == catalog::TRACK {
        let track = request.accept(track::Info::default().with_priority(255));
        let _held = Held::new(&shared.metrics.downstream_subscribers);
        export_catalog(&bus, track).await;
        return;
    }
    if bus.peek_track(&name).is_none() {
        request.reject(moq_net::Error::NotFound);
        return;
    }
    // Audio before video when the link is short (audio gaps are heard, video ones less).
    let priority = if tracks::is_video(&name) { 100 } else { 200 };
    let track = request.accept(
        track::Info::default()
            .with_timescale(Timescale::MICRO)
            .with_priority(priority),
    );
    let _held = Held::new(&shared.metrics.downstream_subscribers);
    // H.264 made here only while it is read: the bus track is read only while a downstream
    // node subscribes, so the transcoder stops when they all let go (the MoQ track stays, for
    // moq-net to answer a later subscriber from).
    let on_demand = name == tracks::VIDEO_H264;
    // One clock across the publishers that feed the track: one back within the grace period
    // starts its own again, and moq-net ages groups (and viewers downstream time frames) by it.
    let mut timeline: Option<Timeline> = None;
    loop {
        if on_demand && track.used().await.is_err() {
            break;
        }
        // While the publisher is away (within the grace period), its next track of this
        // name: the MoQ track goes on, so downstream nodes keep their subscription (moq-net
        // answers later subscribers from a finished track, so it must not end). None once the
        // broadcast is over.
        let Some(consumer) = bus.live_track(&name).await else {
            break;
        };
        let timeline = match timeline.as_mut() {
            Some(t) => {
                t.source_changed();
                t
            }
            None => timeline.insert(Timeline::new(clock_rate(consumer.codec().as_ref()))),
        };
        let ended = if on_demand {
            tokio::select! {
                ended = pump(&shared, consumer, &track, timeline) => Some(ended),
                _ = track.unused() => None,
            }
        } else {
            Some(pump(&shared, consumer, &track, timeline).await)
        };
        match ended {
            None => debug!(track = %name, "relay: no one downstream reads it now"),
            Some(Ok(())) if !bus.is_closed() => {
                debug!(track = %name, "relay: the publisher left; serving its next track");
            }
            Some(ended) => {
                if let Err(err) = ended {
                    debug!(%err, track = %name, "relay: downstream track ended");
                }
                break;
            }
        }
    }
    let _ = track.finish();
}

/// Copies a bus track into a MoQ track: a group per bus group (from a keyframe), each frame
/// a wire header and the payload (not copied), until the bus track ends; timestamps on
/// `timeline`.
async fn pump(
    shared: &Shared,
    mut consumer: TrackConsumer,
    track: &track::Producer,
    timeline: &mut Timeline,
) -> Result<(), moq_net::Error> {
    let clock = clock_rate(consumer.codec().as_ref());
    let mut group: Option<moq_net::group::Producer> = None;
    while let Some(frame) = consumer.next_frame().await {
        if frame.keyframe || group.is_none() {
            if let Some(done) = group.take() {
                let _ = done.finish();
            }
            group = Some(track.append_group()?);
        }
        let Some(open) = group.as_mut() else {
            continue;
        };
        let ts = timeline.map(frame.timestamp, frame.keyframe, frame.arrived);
        let header = wire::header(ts, frame.keyframe);
        let size = (header.len() + frame.payload.len()) as u64;
        let timestamp = Timestamp::from_scale(ts, clock).unwrap_or_else(|_| Timestamp::now());
        let mut out = open.create_frame(frame::Info { size, timestamp })?;
        out.write(header)?;
        out.write(frame.payload.clone())?;
        out.finish()?;
        shared.metrics.bytes_out.fetch_add(
            frame.payload.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
    if let Some(done) = group.take() {
        let _ = done.finish();
    }
    Ok(())
}

/// The catalog as a track: a group per version, sent whenever the bus's changes.
async fn export_catalog(bus: &BroadcastConsumer, track: track::Producer) {
    let mut sent: Option<Catalog> = None;
    let mut tick = tokio::time::interval(CATALOG_POLL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = bus.closed() => break,
        }
        let now = Catalog::of(bus);
        if sent.as_ref() == Some(&now) {
            continue;
        }
        let bytes: Bytes = now.encode();
        let Ok(mut group) = track.append_group() else {
            break;
        };
        if group.write_frame(Timestamp::now(), bytes).is_err() {
            break;
        }
        let _ = group.finish();
        sent = Some(now);
    }
    let _ = track.finish();
}

/// Units a second of a track's timestamps (the bus's convention: 90 kHz video, the sample
/// rate for audio; Opus is 48 kHz).
fn clock_rate(codec: Option<&Codec>) -> u64 {
    match codec {
        Some(Codec::Audio(_)) => 48_000,
        _ => 90_000,
    }
}
