//! MoQ to bus: a channel pulled from an upstream node onto this node's bus, once however many
//! viewers or downstream nodes want it (one upstream subscription per track), kept while
//! anyone reads it and for the linger time after, and moved to another path when its
//! upstream dies or drains, into the same bus tracks: viewers keep their PeerConnection and
//! see at most a short freeze.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use media::{tracks, BroadcastProducer, ChannelName, Frame, TrackProducer};
use moq_net::{broadcast, track};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info};

use crate::catalog::{self, Catalog};
use crate::metrics::{inc, Held};
use crate::{wire, Shared};

/// How long a pull may take to learn its tracks before the viewer hears "not live".
pub(crate) const READY_WITHIN: Duration = Duration::from_secs(5);
/// An upstream that failed is not tried again for this long (others are, then the origin).
const AVOID_FOR: Duration = Duration::from_secs(10);
/// How far behind live (in media time) an upstream subscription's groups may be. It is also
/// where a new subscription starts: at the oldest group still this fresh, so at the latest
/// group, or the one before if that began within it (streams of two groups may cross).
/// Larger, a subscription would start with seconds of old groups to replay.
const MAX_AGE: Duration = Duration::from_millis(500);
/// Keyframe requests for one track go upstream at most this often.
const KEYFRAME_EVERY: Duration = Duration::from_millis(300);
/// A channel no longer in the routing table for this long is over.
const GONE_AFTER: Duration = Duration::from_secs(3);

/// Where a pull is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PullState {
    /// Finding an upstream and its catalog.
    Starting,
    /// Its tracks are on the bus.
    Ready,
    /// Not live anywhere reachable, or over.
    Over,
}

/// A new upstream replays groups from its cache; those older than the bus's current group by
/// less than this (in track ticks: 5 s of 90 kHz video, 9 s of 48 kHz audio) are skipped.
const REPLAY_WINDOW: u64 = 450_000;
/// Groups at the start of an upstream subscription checked for replay (its start reaches
/// back at most [`MAX_AGE`]).
const REPLAY_GROUPS: usize = 4;

/// What the bus already has of a group an upstream sends.
enum Replayed {
    /// All of it: skip the group.
    Group,
    /// Its first frames.
    Frames(usize),
}

/// One track pulled.
struct Pulled {
    writer: Arc<Writer>,
    last_keyframe_request: Option<Instant>,
}

/// Writes a pulled track to the bus, across upstreams.
struct Writer {
    producer: TrackProducer,
    /// Timestamp of the keyframe that started the bus's current group, and the frames written
    /// since (it included): a new upstream replays that group from its start, and those
    /// frames are skipped rather than written twice.
    group: std::sync::Mutex<Option<(u64, usize)>>,
}

impl Writer {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(u64, usize)>> {
        self.group.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the bus has of a group starting at this frame: all of it (a group before the
    /// one it is in, within [`REPLAY_WINDOW`] ticks), its first frames (the group it is in),
    /// or nothing (a newer group; or much older, a publisher that started its clock again).
    fn replayed(&self, timestamp: u64, keyframe: bool) -> Replayed {
        match *self.lock() {
            Some((key, written)) if keyframe && key == timestamp => Replayed::Frames(written),
            Some((key, _)) if timestamp < key && key - timestamp < REPLAY_WINDOW => Replayed::Group,
            _ => Replayed::Frames(0),
        }
    }

    fn write(&self, frame: Frame) {
        {
            let mut group = self.lock();
            if frame.keyframe {
                *group = Some((frame.timestamp, 1));
            } else if let Some((_, written)) = group.as_mut() {
                *written += 1;
            }
        }
        self.producer.write(frame);
    }
}

/// Why an attempt through one upstream ended.
enum Ended {
    /// No one reads the channel here any more.
    Unused,
    /// The channel is no longer live in the cluster.
    Over,
    /// The upstream died, drained, refused or ended the track: try another path.
    Lost(String),
}

/// Runs one pull until it is unused or over; `state` tells waiting viewers when it is ready.
pub(crate) async fn run(shared: Arc<Shared>, name: ChannelName, state: watch::Sender<PullState>) {
    let producer = match shared.bus.publish_relayed(name.clone()) {
        Ok(p) => p,
        Err(err) => {
            debug!(%err, channel = %name, "relay: not pulled");
            state.send_replace(PullState::Over);
            return;
        }
    };
    let mut tracks: HashMap<String, Pulled> = HashMap::new();
    let mut avoid: Vec<(cluster::NodeId, Instant)> = Vec::new();
    let mut gone_since: Option<Instant> = None;
    let mut backoff = Duration::from_millis(100);
    let started = Instant::now();
    let mut last_failure = String::from("no origin for it in the routing table");
    loop {
        avoid.retain(|(_, since)| since.elapsed() < AVOID_FOR);
        let Some(origin) = shared.routing.origin(&name) else {
            // A pulled channel's publisher may come back to its origin within the grace period.
            let gone = gone_since.get_or_insert_with(Instant::now);
            let wait = match *state.borrow() {
                PullState::Ready => shared.bus.grace().max(GONE_AFTER),
                _ => GONE_AFTER,
            };
            if gone.elapsed() > wait || *state.borrow() == PullState::Starting {
                break;
            }
            tokio::time::sleep(backoff).await;
            continue;
        };
        gone_since = None;
        let nodes = shared.routing.nodes();
        let me = shared.me(&nodes);
        let avoided: Vec<_> = avoid.iter().map(|(id, _)| id.clone()).collect();
        let path = cluster::upstreams(&me, &origin, &nodes, &avoided)
            .into_iter()
            .next()
            .cloned();
        let Some(upstream) = path else {
            last_failure = format!("no path to the origin {}", origin.id);
            if *state.borrow() == PullState::Starting && started.elapsed() > READY_WITHIN {
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
            continue;
        };
        let was_ready = *state.borrow() == PullState::Ready;
        let ended = attempt(
            &shared,
            &name,
            (&origin.id, &upstream),
            &producer,
            &mut tracks,
            &state,
        )
        .await;
        match ended {
            Ended::Unused => {
                debug!(channel = %name, "relay: pull unused; let go");
                break;
            }
            Ended::Over => break,
            Ended::Lost(why) => {
                if was_ready || *state.borrow() == PullState::Ready {
                    inc(&shared.metrics.failovers);
                    info!(channel = %name, upstream = %upstream.id, %why, "relay: upstream lost; moving to another path");
                } else {
                    debug!(channel = %name, upstream = %upstream.id, %why, "relay: upstream refused");
                }
                avoid.push((upstream.id.clone(), Instant::now()));
                last_failure = format!("{}: {why}", upstream.id);
                if *state.borrow() == PullState::Starting && started.elapsed() > READY_WITHIN {
                    break;
                }
            }
        }
    }
    if *state.borrow() == PullState::Starting {
        // Not live anywhere is the common case (a player polling a channel before it starts).
        if shared.routing.origin(&name).is_some() {
            info!(channel = %name, why = %last_failure, "relay: cannot pull the channel");
        } else {
            debug!(channel = %name, "relay: not live in the cluster");
        }
    }
    state.send_replace(PullState::Over);
    shared.forget_pull(&name);
    drop(producer);
}

/// Pulls the channel of `origin` through `upstream` until it fails or the pull is no longer
/// wanted.
async fn attempt(
    shared: &Arc<Shared>,
    name: &ChannelName,
    (origin, upstream): (&cluster::NodeId, &cluster::NodeInfo),
    producer: &BroadcastProducer,
    tracks: &mut HashMap<String, Pulled>,
    state: &watch::Sender<PullState>,
) -> Ended {
    let peer = match shared.peers.session(shared, upstream).await {
        Ok(peer) => peer,
        Err(err) => return Ended::Lost(err),
    };
    let served = match tokio::time::timeout(
        READY_WITHIN,
        peer.origin.consume().routed_broadcast(crate::path(name)),
    )
    .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(err)) => return Ended::Lost(err.to_string()),
        Err(_) => return Ended::Lost("no route in time".into()),
    };
    let mut catalog_sub = match subscribe(&served, catalog::TRACK).await {
        Ok(s) => s,
        Err(err) => return Ended::Lost(err.to_string()),
    };
    let _catalog_held = Held::new(&shared.metrics.upstream_subscriptions);
    let mut pumps: JoinSet<Result<(), String>> = JoinSet::new();
    let mut running: Vec<String> = Vec::new();
    let mut on_demand = OnDemandPull::default();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut idle_since: Option<Instant> = None;
    let mut origin_gone: Option<Instant> = None;
    loop {
        tokio::select! {
            version = next_catalog(&mut catalog_sub) => match version {
                Ok(catalog) => {
                    apply(producer, tracks, &catalog);
                    start_pumps(shared, &served, tracks, &mut running, &mut pumps, &mut on_demand);
                    if *state.borrow() == PullState::Starting {
                        // The keyframe channel is dialled now, so a viewer's first request
                        // does not wait for a handshake.
                        if tracks.values().any(|t| t.writer.producer.consume().accepts_keyframe_requests()) {
                            let (shared, upstream) = (shared.clone(), upstream.clone());
                            tokio::spawn(async move {
                                let _ = shared.peers.control(&shared, &upstream).await;
                            });
                        }
                        state.send_replace(PullState::Ready);
                        info!(channel = %name, upstream = %upstream.id, "relay: pulled");
                    }
                }
                Err(err) => return Ended::Lost(format!("catalog: {err}")),
            },
            Some(done) = pumps.join_next() => {
                // The on-demand track's pump, stopped for want of viewers here: not an end.
                if done.as_ref().is_err_and(|e| e.is_cancelled()) {
                    on_demand.stopped(tracks);
                    continue;
                }
                let why = match done {
                    Ok(Ok(())) => "track ended".to_owned(),
                    Ok(Err(err)) => err,
                    Err(join) => join.to_string(),
                };
                return Ended::Lost(why);
            }
            err = peer.session.closed() => return Ended::Lost(format!("session closed: {err}")),
            // A viewer here wants a keyframe: ask upstream now, not at the next tick.
            () = producer.keyframe_requested() => {
                forward_keyframe_requests(shared, name, upstream, tracks);
            }
            _ = tick.tick() => {
                match shared.routing.origin(name) {
                    // The publisher left the origin, its claim with it: it may come back
                    // within the grace period (the origin serves its new tracks on the same
                    // ones), or elsewhere.
                    None => {
                        let gone = origin_gone.get_or_insert_with(Instant::now);
                        if gone.elapsed() > shared.bus.grace().max(GONE_AFTER) {
                            return Ended::Over;
                        }
                    }
                    // Back on another node: the pull ends, and viewers here hear the stream
                    // ended (their players join again); following it would need the new
                    // origin's tracks, not ours.
                    Some(now) if &now.id != origin => return Ended::Over,
                    Some(_) => origin_gone = None,
                }
                if shared.routing.nodes().iter().any(|n| n.id == upstream.id && n.draining) {
                    return Ended::Lost("upstream draining".into());
                }
                forward_keyframe_requests(shared, name, upstream, tracks);
                on_demand.stop_if_unread(shared, tracks, &mut running);
                start_pumps(shared, &served, tracks, &mut running, &mut pumps, &mut on_demand);
                if producer.consumers() == 0 {
                    if idle_since.get_or_insert_with(Instant::now).elapsed() > shared.config.linger() {
                        return Ended::Unused;
                    }
                } else {
                    idle_since = None;
                }
            }
        }
    }
}

async fn subscribe(
    served: &broadcast::Consumer,
    name: &str,
) -> Result<track::Ordered, moq_net::Error> {
    let sub = served
        .track(name)?
        .subscribe(track::Subscription::default().with_max_age(MAX_AGE))
        .await?;
    Ok(sub.ordered())
}

/// The next version of the catalog (the first frame of the next group).
async fn next_catalog(sub: &mut track::Ordered) -> Result<Catalog, String> {
    let mut group = loop {
        match sub.next_group().await {
            Ok(Some(group)) => break group,
            Ok(None) => return Err("catalog track ended".into()),
            Err(err) if behind(&err) => continue,
            Err(err) => return Err(err.to_string()),
        }
    };
    let frame = group
        .read_frame()
        .await
        .map_err(|e| e.to_string())?
        .ok_or("empty catalog group")?;
    Catalog::decode(&frame.payload).map_err(|e| e.to_string())
}

/// Starts pulling the catalog's tracks not pulled yet: all of them, but for one the origin
/// makes only while it is read ([`tracks::VIDEO_H264`]), which waits for a viewer here.
fn start_pumps(
    shared: &Arc<Shared>,
    served: &broadcast::Consumer,
    tracks: &HashMap<String, Pulled>,
    running: &mut Vec<String>,
    pumps: &mut JoinSet<Result<(), String>>,
    on_demand: &mut OnDemandPull,
) {
    for (name, pulled) in tracks {
        let is_on_demand = name == tracks::VIDEO_H264;
        if running.contains(name) || (is_on_demand && pulled.writer.producer.consumers() == 0) {
            continue;
        }
        running.push(name.clone());
        let handle = pumps.spawn(pump(
            shared.clone(),
            served.clone(),
            name.clone(),
            pulled.writer.clone(),
        ));
        if is_on_demand {
            on_demand.pump = Some(handle);
            on_demand.unread_since = None;
        }
    }
}

/// The pull of the on-demand track ([`tracks::VIDEO_H264`]), which ends when no viewer here
/// has read it for the linger time, so the origin can stop making it.
#[derive(Default)]
struct OnDemandPull {
    pump: Option<tokio::task::AbortHandle>,
    unread_since: Option<Instant>,
}

impl OnDemandPull {
    fn stop_if_unread(
        &mut self,
        shared: &Shared,
        tracks: &HashMap<String, Pulled>,
        running: &mut Vec<String>,
    ) {
        if self.pump.is_none() {
            return;
        }
        let read = tracks
            .get(tracks::VIDEO_H264)
            .is_some_and(|t| t.writer.producer.consumers() > 0);
        if read {
            self.unread_since = None;
            return;
        }
        let since = *self.unread_since.get_or_insert_with(Instant::now);
        if since.elapsed() > shared.config.linger() {
            if let Some(pump) = self.pump.take() {
                pump.abort();
            }
            running.retain(|n| n != tracks::VIDEO_H264);
            debug!("relay: no viewer here reads the on-demand track; its pull stopped");
        }
    }

    /// Its pump has ended (it can write no more): a viewer who comes later waits for the
    /// origin's next picture, not one of this pull's; unless a new pull has begun since.
    fn stopped(&self, tracks: &HashMap<String, Pulled>) {
        if self.pump.is_none() {
            if let Some(track) = tracks.get(tracks::VIDEO_H264) {
                track.writer.producer.clear();
            }
        }
    }
}

/// Makes the bus match a catalog: new tracks created, codecs and notice set. Tracks already
/// pulled stay (their viewers with them).
fn apply(producer: &BroadcastProducer, tracks: &mut HashMap<String, Pulled>, catalog: &Catalog) {
    for t in &catalog.tracks {
        let pulled = tracks.entry(t.name.clone()).or_insert_with(|| Pulled {
            writer: Arc::new(Writer {
                producer: producer.create_track(&t.name),
                group: std::sync::Mutex::new(None),
            }),
            last_keyframe_request: None,
        });
        if let Some(codec) = t.codec.as_ref().and_then(|c| c.to_codec()) {
            pulled.writer.producer.set_codec(codec);
        }
        if t.keyframes_on_request {
            pulled.writer.producer.accept_keyframe_requests();
        }
    }
    producer.set_notice(catalog.notice.clone());
    producer.set_transcoding(catalog.transcoding.clone());
}

/// Reads one upstream track into its bus track.
async fn pump(
    shared: Arc<Shared>,
    served: broadcast::Consumer,
    name: String,
    writer: Arc<Writer>,
) -> Result<(), String> {
    let mut sub = subscribe(&served, &name).await.map_err(|e| e.to_string())?;
    let _held = Held::new(&shared.metrics.upstream_subscriptions);
    let mut checked = 0usize;
    // The first group comes from the upstream's cache: what it has of it arrives at once. Its
    // frames are stamped as having arrived as long ago as their media time is behind the last
    // of them, so the bus knows the group's age: a viewer here then replays a recent group, or,
    // for a publisher that makes keyframes on request (WebRTC) whose last one is old, asks for
    // a fresh keyframe (up the tiers) and joins at it, as on the origin.
    let mut first_group = true;
    loop {
        let mut group = match sub.next_group().await {
            Ok(Some(group)) => group,
            Ok(None) => break,
            Err(err) if behind(&err) => continue,
            Err(err) => return Err(err.to_string()),
        };
        let mut index = 0usize;
        let mut skip = 0usize;
        let mut replay = Vec::new();
        if std::mem::take(&mut first_group) {
            replay = cached(&mut group).await;
        }
        let mut replay = replay.into_iter();
        loop {
            let (next, arrived) = match replay.next() {
                Some((frame, arrived)) => (Ok(Some(frame)), arrived),
                None => (group.read_frame().await, Instant::now()),
            };
            let frame = match next {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                // Superseded while being read (a newer group is here): on to it.
                Err(err) if behind(&err) => break,
                Err(err) => return Err(err.to_string()),
            };
            let Ok(frame) = wire::decode(frame.payload) else {
                // Once per frame: debug, so a broken peer cannot flood the log.
                debug!(track = %name, "relay: undecodable frame from upstream dropped");
                continue;
            };
            shared
                .metrics
                .bytes_in
                .fetch_add(frame.payload.len() as u64, Ordering::Relaxed);
            if index == 0 && checked < REPLAY_GROUPS {
                // After a failover the new upstream replays recent groups from its cache:
                // skip what the bus has already.
                checked += 1;
                match writer.replayed(frame.timestamp, frame.keyframe) {
                    Replayed::Group => break,
                    Replayed::Frames(n) => skip = n,
                }
            }
            index += 1;
            if skip > 0 {
                skip -= 1;
                continue;
            }
            writer.write(Frame::new(
                frame.timestamp,
                frame.keyframe,
                frame.payload,
                arrived,
            ));
        }
    }
    Ok(())
}

/// Frames of a cached group come closer together than this; live ones further apart.
const BURST_GAP: Duration = Duration::from_millis(25);
/// At most this many frames are read ahead of writing them (a cached group is bounded by the
/// upstream's own cache; this bounds what is held here meanwhile).
const MAX_CACHED_FRAMES: usize = 1024;

/// Reads what the upstream sends of a group at once (its cached part, back to back), each
/// frame with when it may be said to have arrived: now, less how far its media time is behind
/// the last of them. The relay knows no codec clocks, so 90 kHz (video's) is assumed; the age
/// only steers how a viewer of a track with keyframes on request (video) joins.
async fn cached(group: &mut moq_net::group::Consumer) -> Vec<(moq_net::frame::Frame, Instant)> {
    let mut frames: Vec<(moq_net::frame::Frame, u64)> = Vec::new();
    while frames.len() < MAX_CACHED_FRAMES {
        let wait = if frames.is_empty() {
            Duration::from_secs(5)
        } else {
            BURST_GAP
        };
        match tokio::time::timeout(wait, group.read_frame()).await {
            Ok(Ok(Some(frame))) => {
                let ts = wire::decode(frame.payload.clone()).map_or(0, |w| w.timestamp);
                frames.push((frame, ts));
            }
            _ => break,
        }
    }
    let now = Instant::now();
    let last = frames.iter().map(|(_, ts)| *ts).max().unwrap_or(0);
    frames
        .into_iter()
        .map(|(frame, ts)| {
            let behind =
                Duration::from_micros(last.saturating_sub(ts).saturating_mul(1_000_000) / 90_000);
            (
                frame,
                now.checked_sub(behind.min(Duration::from_secs(60)))
                    .unwrap_or(now),
            )
        })
        .collect()
}

/// A group given up for a newer one: the subscription goes on.
fn behind(err: &moq_net::Error) -> bool {
    matches!(
        err,
        moq_net::Error::Old | moq_net::Error::Evicted | moq_net::Error::Lagged
    )
}

/// Sends pending keyframe requests of pulled tracks upstream, at most one per track per
/// [`KEYFRAME_EVERY`]; the bus has already folded many viewers' requests into one.
fn forward_keyframe_requests(
    shared: &Arc<Shared>,
    name: &ChannelName,
    upstream: &cluster::NodeInfo,
    tracks: &mut HashMap<String, Pulled>,
) {
    for (track, pulled) in tracks.iter_mut() {
        if pulled
            .last_keyframe_request
            .is_some_and(|at| at.elapsed() < KEYFRAME_EVERY)
        {
            continue;
        }
        if pulled.writer.producer.take_keyframe_request() {
            pulled.last_keyframe_request = Some(Instant::now());
            inc(&shared.metrics.keyframe_requests_up);
            debug!(channel = %name, %track, upstream = %upstream.id, "relay: keyframe request sent upstream");
            let (shared, name, upstream, track) = (
                shared.clone(),
                name.clone(),
                upstream.clone(),
                track.clone(),
            );
            tokio::spawn(async move {
                if let Err(err) = shared
                    .peers
                    .request_keyframe(&shared, &upstream, &name, &track)
                    .await
                {
                    debug!(%err, "relay: keyframe request not sent");
                }
            });
        }
    }
}
