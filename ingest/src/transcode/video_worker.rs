//! The video re-encoder on a thread of its own, one per channel that needs it, never on the
//! async workers; a node-wide [`Budget`] caps how many run at once (`[transcode]
//! max_channels`). Access units wait in a bounded queue; when it is full the re-encoder has
//! fallen behind, and input is dropped up to the next keyframe (a decoder cannot start
//! elsewhere). Its output goes to the channel's `video` track, whose codec it sets from the
//! parameter sets of its first keyframe.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use media::bitstream::avc;
use media::{Codec, Frame, TrackProducer, VideoCodec};
use serde::Deserialize;
use tracing::{debug, info, warn};

use super::video::{LayerSpec, Reencode, Source, VideoError, VideoSettings};

/// Access units waiting for the re-encoder (about a second at 30 fps).
const QUEUE: usize = 32;
/// Keyframes made on viewers' requests, at most one in this time (each costs the bits of a
/// keyframe in every output).
const FORCED_KEYFRAME_INTERVAL: Duration = Duration::from_millis(500);
/// Arrival times kept to stamp output frames with their input's (more than any reorder depth).
const ARRIVALS: usize = 64;

/// `[transcode]`: video re-encoding on ingest nodes.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TranscodeConfig {
    /// Channels re-encoded at once on this node (about 40% of a core each at 720p30); past
    /// it, a stream with B-frames is passed on as it is, with a notice naming the setting.
    pub max_channels: usize,
    /// Bits per second of re-encoded video.
    pub bitrate: usize,
    /// x264 preset.
    pub preset: String,
    /// Lower layers every H.264 channel gets (empty: none), besides `video` at the source's
    /// size; each ladder takes one of `max_channels`.
    pub ladder: Vec<LayerSpec>,
    /// A channel's own ladder instead of the node's (an empty one: none for that channel).
    pub channels: BTreeMap<String, ChannelTranscode>,
    /// H.264 made for viewers that cannot decode a channel's H.265 or AV1 stops this long
    /// after the last of them leaves.
    pub on_demand_idle_secs: u64,
}

/// `[transcode.channels.NAME]`: one channel's transcoding.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelTranscode {
    /// This channel's ladder.
    pub ladder: Vec<LayerSpec>,
}

/// Layers in a ladder at most (besides `video`).
pub const MAX_LAYERS: usize = 3;

impl Default for TranscodeConfig {
    fn default() -> Self {
        Self {
            max_channels: 2,
            bitrate: 2_500_000,
            preset: "veryfast".into(),
            ladder: Vec::new(),
            channels: BTreeMap::new(),
            on_demand_idle_secs: 30,
        }
    }
}

impl TranscodeConfig {
    /// The ladder `channel` gets.
    pub fn ladder_for(&self, channel: &str) -> &[LayerSpec] {
        self.channels
            .get(channel)
            .map_or(&self.ladder, |c| &c.ladder)
    }

    /// Checks what `serve` would otherwise find out at a publisher's first frame.
    pub fn validate(&self) -> Result<(), String> {
        let ladders = std::iter::once(("transcode.ladder".to_owned(), &self.ladder)).chain(
            self.channels
                .iter()
                .map(|(name, c)| (format!("transcode.channels.{name}.ladder"), &c.ladder)),
        );
        for (key, ladder) in ladders {
            if ladder.len() > MAX_LAYERS {
                return Err(format!("{key}: at most {MAX_LAYERS} layers"));
            }
            for (i, layer) in ladder.iter().enumerate() {
                let name = &layer.track;
                if !name.starts_with("video.") || name.len() > 32 {
                    return Err(format!(
                        "{key}: track {name:?} must be a layer name like \"video.m\""
                    ));
                }
                if ladder[..i].iter().any(|l| &l.track == name) {
                    return Err(format!("{key}: track {name:?} twice"));
                }
                if !(16..=2160).contains(&layer.height) {
                    return Err(format!("{key}: {name} height must be 16 to 2160"));
                }
                if !(30_000..=20_000_000).contains(&layer.bitrate) {
                    return Err(format!(
                        "{key}: {name} bitrate must be 30000 to 20000000 bits/s"
                    ));
                }
            }
        }
        const PRESETS: &[&str] = &[
            "ultrafast",
            "superfast",
            "veryfast",
            "faster",
            "fast",
            "medium",
            "slow",
            "slower",
            "veryslow",
        ];
        if !PRESETS.contains(&self.preset.as_str()) {
            return Err(format!(
                "transcode.preset {:?} is not an x264 preset ({})",
                self.preset,
                PRESETS.join(", ")
            ));
        }
        if !(100_000..=50_000_000).contains(&self.bitrate) {
            return Err("transcode.bitrate must be 100000 to 50000000 bits/s".into());
        }
        Ok(())
    }
}

/// How many re-encoders may run at once, and how many do.
#[derive(Debug)]
pub struct Budget {
    config: TranscodeConfig,
    running: AtomicUsize,
}

/// One re-encoder's place in the [`Budget`]; given back when dropped.
#[derive(Debug)]
pub struct Slot(Arc<Budget>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Budget {
    /// At most `config.max_channels` at once.
    pub fn new(config: TranscodeConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            running: AtomicUsize::new(0),
        })
    }

    /// A place, unless all are taken.
    pub fn try_take(self: &Arc<Self>) -> Option<Slot> {
        self.running
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.config.max_channels).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self.clone()))
    }

    /// Re-encoders allowed at once.
    pub fn max_channels(&self) -> usize {
        self.config.max_channels
    }

    /// Re-encoders running now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    /// The ladder `channel` gets (see [`TranscodeConfig::ladder_for`]).
    pub fn ladder_for(&self, channel: &str) -> Vec<LayerSpec> {
        self.config.ladder_for(channel).to_vec()
    }

    /// How long on-demand H.264 runs on without viewers.
    pub fn on_demand_idle(&self) -> Duration {
        Duration::from_secs(self.config.on_demand_idle_secs)
    }

    fn settings(&self) -> VideoSettings {
        VideoSettings {
            bitrate: self.config.bitrate,
            preset: self.config.preset.clone(),
            ..VideoSettings::default()
        }
    }
}

enum Command {
    Frame(Frame),
    /// From now on, also the source's size without B-frames, onto `video`.
    ReencodeFull,
}

/// Where one of the re-encoder's outputs goes.
struct Destination {
    track: Arc<TrackProducer>,
    /// Its codec is set (from its first keyframe's parameter sets); frames go out from then.
    configured: bool,
    /// It is `video` at the source's size: once configured, the source's frames stop there.
    full: bool,
    /// The parameter sets its codec was set from.
    params: Option<ParameterSets>,
}

type ParameterSets = (Vec<Bytes>, Vec<Bytes>);

/// Sets `to`'s codec from a keyframe's parameter sets, the first time and whenever they
/// change (the source changed resolution); `video`'s re-encode is then shown to viewers.
fn configure(to: &mut Destination, keyframe: &Bytes, shown: &AtomicBool) {
    let (sps, pps) = avc::annexb_parameter_sets(keyframe);
    if sps.is_empty() || pps.is_empty() || to.params.as_ref() == Some(&(sps.clone(), pps.clone())) {
        return;
    }
    let codec = VideoCodec::H264 {
        sps: sps.clone(),
        pps: pps.clone(),
    };
    info!(track = %to.track.name(), codec = %codec.describe(), "video re-encoded");
    to.track.set_codec(Codec::Video(codec));
    to.params = Some((sps, pps));
    if !to.configured {
        to.track.accept_keyframe_requests();
        to.configured = true;
        if to.full {
            shown.store(true, Ordering::Relaxed);
        }
    }
}

/// A channel's re-encoder thread. Dropping it ends the thread once the queue is drained.
pub struct VideoWorker {
    tx: SyncSender<Command>,
    started: Arc<AtomicBool>,
    /// Dropping input until the next keyframe (the queue overflowed).
    resync: bool,
    dropped: u64,
    /// A [`VideoWorker::reencode_full`] not queued yet (the queue was full).
    full_pending: bool,
    /// The thread's queue was found closed (it ended by itself).
    ended: bool,
    ending: Arc<Ending>,
    thread: JoinHandle<()>,
}

/// A re-encoder told to stop: its thread ends after at most one more access unit.
pub struct Stopping(JoinHandle<()>);

impl Stopping {
    /// Whether the thread has ended (and written its last, and cleared its tracks).
    pub fn finished(&self) -> bool {
        self.0.is_finished()
    }
}

/// Told to the thread by [`VideoWorker::stop_clearing`].
#[derive(Default)]
struct Ending {
    /// Stop at the next access unit, leaving the rest of the queue.
    stop: AtomicBool,
    /// Then drop the groups its tracks have cached.
    clear: AtomicBool,
}

impl VideoWorker {
    /// Starts re-encoding H.264 into `video`, in `slot` of the node's budget.
    pub fn start(video: Arc<TrackProducer>, slot: Slot) -> Result<Self, VideoError> {
        let mut worker = Self::start_ladder(video, Vec::new(), slot)?;
        worker.reencode_full();
        Ok(worker)
    }

    /// Starts transcoding `source` video to H.264 at its size onto `out`, in `slot` of the
    /// node's budget.
    pub fn start_h264(
        source: Source,
        out: Arc<TrackProducer>,
        slot: Slot,
    ) -> Result<Self, VideoError> {
        let mut worker = Self::spawn(source, out, Vec::new(), slot)?;
        worker.reencode_full();
        Ok(worker)
    }

    /// Starts a ladder's `layers` (each onto its track) from H.264, in `slot` of the node's
    /// budget; `video` is re-encoded too once [`VideoWorker::reencode_full`] asks.
    pub fn start_ladder(
        video: Arc<TrackProducer>,
        layers: Vec<(LayerSpec, Arc<TrackProducer>)>,
        slot: Slot,
    ) -> Result<Self, VideoError> {
        Self::spawn(Source::H264, video, layers, slot)
    }

    fn spawn(
        source: Source,
        video: Arc<TrackProducer>,
        layers: Vec<(LayerSpec, Arc<TrackProducer>)>,
        slot: Slot,
    ) -> Result<Self, VideoError> {
        let settings = slot.0.settings();
        // Fails here, before a thread starts, if libavcodec has no decoder for the source.
        drop(Reencode::decoder_only(source)?);
        let mut destinations = Vec::new();
        for (_, track) in &layers {
            destinations.push(Destination {
                track: track.clone(),
                configured: false,
                full: false,
                params: None,
            });
        }
        let (tx, rx) = mpsc::sync_channel::<Command>(QUEUE);
        let ending = Arc::new(Ending::default());
        let ended = ending.clone();
        let started = Arc::new(AtomicBool::new(false));
        let shown = started.clone();
        let thread = std::thread::Builder::new()
            .name("video-reencode".into())
            .spawn(move || {
                let _slot = slot;
                // Made on this thread: libswscale's context may not move between threads.
                let mut reencode = match Reencode::decoder_only(source) {
                    Ok(reencode) => reencode,
                    Err(err) => return warn!(%err, "video re-encoder did not start"),
                };
                for (spec, _) in &layers {
                    reencode.add_layer(spec, &settings.preset);
                }
                let mut arrivals: VecDeque<(u64, Instant)> = VecDeque::with_capacity(ARRIVALS);
                let mut waiting_for_keyframe = true;
                let mut last_forced: Option<Instant> = None;
                for command in rx {
                    if ending.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let input = match command {
                        Command::ReencodeFull => {
                            reencode.add_full(settings.clone());
                            // The new encoder opens on a keyframe; the layers' next picture
                            // is one too, so `video` and the layers switch on the same one.
                            reencode.keyframe_next();
                            destinations.push(Destination {
                                track: video.clone(),
                                configured: false,
                                full: true,
                                params: None,
                            });
                            continue;
                        }
                        Command::Frame(input) => input,
                    };
                    if waiting_for_keyframe && !input.keyframe {
                        continue;
                    }
                    waiting_for_keyframe = false;
                    // A viewer's request (the bus makes one of many) is a keyframe in every
                    // output at the next picture, at most one a FORCED_KEYFRAME_INTERVAL.
                    let due = last_forced.is_none_or(|at| {
                        input.arrived.duration_since(at) >= FORCED_KEYFRAME_INTERVAL
                    });
                    if due
                        && destinations
                            .iter()
                            .any(|d| d.configured && d.track.take_keyframe_request())
                    {
                        reencode.keyframe_next();
                        last_forced = Some(input.arrived);
                    }
                    if arrivals.len() == ARRIVALS {
                        arrivals.pop_front();
                    }
                    arrivals.push_back((input.timestamp, input.arrived));
                    let frames = match reencode.push(&input.payload, input.timestamp) {
                        Ok(frames) => frames,
                        Err(err) => {
                            debug!(%err, "video access unit not re-encoded");
                            continue;
                        }
                    };
                    for (index, frame) in frames {
                        let Some(to) = destinations.get_mut(index) else {
                            continue;
                        };
                        let arrived = arrivals
                            .iter()
                            .find(|(pts, _)| *pts == frame.pts)
                            .map_or(input.arrived, |(_, at)| *at);
                        if frame.keyframe {
                            configure(to, &frame.data, &shown);
                        }
                        if !to.configured {
                            continue;
                        }
                        to.track
                            .write(Frame::new(frame.pts, frame.keyframe, frame.data, arrived));
                    }
                }
                // Written last by this thread: nothing of this run stays for a later one.
                if ending.clear.load(Ordering::Relaxed) {
                    for to in &destinations {
                        to.track.clear();
                    }
                }
            })
            .map_err(|e| VideoError::Setup(format!("no re-encoder thread: {e}")))?;
        Ok(Self {
            tx,
            started,
            resync: false,
            dropped: 0,
            full_pending: false,
            ended: false,
            ending: ended,
            thread,
        })
    }

    /// Re-encodes the source's size too, without B-frames, onto `video`.
    pub fn reencode_full(&mut self) {
        self.full_pending = !matches!(
            self.tx.try_send(Command::ReencodeFull),
            Ok(()) | Err(TrySendError::Disconnected(_))
        );
    }

    /// True once the re-encoded video is on `video`: the source's frames go elsewhere.
    pub fn started(&self) -> bool {
        self.started.load(Ordering::Relaxed)
    }

    /// Queues one access unit; dropped (up to the next keyframe) if the re-encoder is behind.
    pub fn push(&mut self, frame: &Frame) {
        if self.full_pending {
            self.reencode_full();
        }
        if self.resync && !frame.keyframe {
            self.dropped += 1;
            return;
        }
        match self.tx.try_send(Command::Frame(frame.clone())) {
            Ok(()) => self.resync = false,
            Err(TrySendError::Full(_)) => {
                self.resync = true;
                self.dropped += 1;
                if self.dropped.is_power_of_two() {
                    warn!(
                        dropped = self.dropped,
                        "video re-encoder behind; frames dropped up to the next keyframe"
                    );
                }
            }
            Err(TrySendError::Disconnected(_)) => self.ended = true,
        }
    }

    /// Stops the thread at its next access unit and has it drop what its tracks cache, so a
    /// later run's viewers (here or pulled by the relay) never join at a picture from this one.
    pub fn stop_clearing(self) -> Stopping {
        self.ending.clear.store(true, Ordering::Relaxed);
        self.ending.stop.store(true, Ordering::Relaxed);
        Stopping(self.thread)
    }

    /// False once the thread has ended by itself (its decoder or encoder could not be set
    /// up, or it panicked).
    pub fn is_running(&self) -> bool {
        !self.ended && !self.thread.is_finished()
    }

    /// Has the thread stop at its next access unit, as if it had ended by itself.
    #[cfg(test)]
    pub(crate) fn end_for_test(&self) {
        self.ending.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_caps_and_gives_back() {
        let budget = Budget::new(TranscodeConfig {
            max_channels: 2,
            ..TranscodeConfig::default()
        });
        let a = budget.try_take().unwrap();
        let _b = budget.try_take().unwrap();
        assert!(budget.try_take().is_none());
        assert_eq!(budget.running(), 2);
        drop(a);
        assert!(budget.try_take().is_some());
        let none = Budget::new(TranscodeConfig {
            max_channels: 0,
            ..TranscodeConfig::default()
        });
        assert!(none.try_take().is_none());
    }

    fn layer(track: &str, height: u32, bitrate: usize) -> LayerSpec {
        LayerSpec {
            track: track.into(),
            height,
            bitrate,
        }
    }

    #[test]
    fn a_channel_has_its_own_ladder_or_the_nodes() {
        let mut channels = BTreeMap::new();
        channels.insert("radio".to_owned(), ChannelTranscode::default());
        channels.insert(
            "big".to_owned(),
            ChannelTranscode {
                ladder: vec![
                    layer("video.m", 540, 1_200_000),
                    layer("video.l", 270, 400_000),
                ],
            },
        );
        let config = TranscodeConfig {
            ladder: vec![layer("video.m", 360, 600_000)],
            channels,
            ..TranscodeConfig::default()
        };
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.ladder_for("news"), [layer("video.m", 360, 600_000)]);
        assert!(config.ladder_for("radio").is_empty());
        assert_eq!(config.ladder_for("big").len(), 2);
        assert!(TranscodeConfig::default().ladder_for("any").is_empty());
    }

    #[test]
    fn a_ladder_that_could_not_work_is_refused_at_start() {
        let with = |ladder: Vec<LayerSpec>| TranscodeConfig {
            ladder,
            ..TranscodeConfig::default()
        };
        let refused = [
            (with(vec![layer("video", 360, 600_000)]), "layer name"),
            (
                with(vec![layer("original.video", 360, 600_000)]),
                "layer name",
            ),
            (
                with(vec![
                    layer("video.m", 360, 600_000),
                    layer("video.m", 180, 200_000),
                ]),
                "twice",
            ),
            (with(vec![layer("video.m", 8, 600_000)]), "height"),
            (with(vec![layer("video.m", 360, 1_000)]), "bitrate"),
            (
                with(vec![
                    layer("video.a", 360, 600_000),
                    layer("video.b", 360, 600_000),
                    layer("video.c", 360, 600_000),
                    layer("video.d", 360, 600_000),
                ]),
                "at most",
            ),
            (
                TranscodeConfig {
                    preset: "warp".into(),
                    ..TranscodeConfig::default()
                },
                "preset",
            ),
        ];
        for (config, why) in refused {
            let err = config.validate().unwrap_err();
            assert!(err.contains(why), "{err}");
        }
        let mut channels = BTreeMap::new();
        channels.insert(
            "x".to_owned(),
            ChannelTranscode {
                ladder: vec![layer("video", 360, 600_000)],
            },
        );
        let err = TranscodeConfig {
            channels,
            ..TranscodeConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.contains("transcode.channels.x.ladder"), "{err}");
    }
}
