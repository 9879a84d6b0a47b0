//! The bus: live broadcasts by channel name.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::broadcast::BroadcastShared;
use crate::{BroadcastConsumer, BroadcastProducer, ChannelName, TrackLimits};

/// Why a broadcast could not be published.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BusError {
    /// Another publisher holds the channel.
    #[error("channel {0} is already live")]
    AlreadyLive(ChannelName),
}

/// A track as listed by [`Bus::live`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct TrackInfo {
    /// The track's name.
    pub name: String,
    /// Its codec, e.g. `H.264 High@4.1`, once known.
    pub codec: Option<String>,
    /// Payload bitrate over the last two seconds, in bits per second.
    pub bitrate: Option<u64>,
    /// Sequence number of its latest group (keyframe), if any.
    pub latest_group: Option<u64>,
}

/// A live broadcast as listed by [`Bus::live`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct LiveBroadcast {
    /// The channel.
    pub name: ChannelName,
    /// When publishing started.
    pub started: SystemTime,
    /// The tracks.
    pub tracks: Vec<TrackInfo>,
    /// The publisher's notice for viewers, if any.
    pub notice: Option<String>,
    /// What the server makes of the stream for its viewers, if anything.
    pub transcoding: Option<String>,
    /// False while the publisher is away within the reconnect grace period.
    pub publishing: bool,
    /// Pulled from another node by the relay: its publisher is not here.
    pub relayed: bool,
}

/// What a pull from another node resolves to: the broadcast, once its tracks are known here.
pub type Pull = Pin<Box<dyn Future<Output = Option<BroadcastConsumer>> + Send>>;

/// Where the bus looks for a channel that is not published on this node: the relay, which
/// pulls it from another node onto this bus ([`Bus::publish_relayed`]).
pub trait Remote: Send + Sync + 'static {
    /// Pulls `name` here if it is live elsewhere; `None` if it is not live anywhere reachable.
    fn pull(&self, name: ChannelName) -> Pull;

    /// A broadcast it pulled earlier served another consumer here (a cache hit).
    fn served_again(&self, _name: &ChannelName) {}
}

/// The bus's settings: per-track memory limits and the publisher reconnect grace period.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// Payload bytes kept across all cached groups of one track.
    pub max_bytes: usize,
    /// Groups kept per track.
    pub max_groups: usize,
    /// Seconds viewers stay connected, waiting, after a publisher drops; a publisher that
    /// comes back on the same channel within it resumes the same broadcast. 0 ends at once.
    pub reconnect_grace_secs: u64,
}

impl Default for BusConfig {
    fn default() -> Self {
        let limits = TrackLimits::default();
        Self {
            max_bytes: limits.max_bytes,
            max_groups: limits.max_groups,
            reconnect_grace_secs: 10,
        }
    }
}

impl BusConfig {
    /// The per-track limits.
    pub fn limits(&self) -> TrackLimits {
        TrackLimits {
            max_bytes: self.max_bytes,
            max_groups: self.max_groups,
        }
    }
}

pub(crate) struct BusShared {
    broadcasts: Mutex<HashMap<ChannelName, Arc<BroadcastShared>>>,
    remote: OnceLock<Arc<dyn Remote>>,
}

impl BusShared {
    fn lock(&self) -> MutexGuard<'_, HashMap<ChannelName, Arc<BroadcastShared>>> {
        self.broadcasts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes `broadcast` if it is still the one published under its name.
    pub(crate) fn remove(&self, broadcast: &Arc<BroadcastShared>) {
        let mut map = self.lock();
        if map
            .get(&broadcast.name)
            .is_some_and(|b| Arc::ptr_eq(b, broadcast))
        {
            map.remove(&broadcast.name);
        }
    }
}

/// The in-process media bus. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    shared: Arc<BusShared>,
    limits: TrackLimits,
    grace: Duration,
}

impl Bus {
    /// An empty bus whose tracks keep at most `limits`, with no reconnect grace period.
    pub fn new(limits: TrackLimits) -> Self {
        Self {
            shared: Arc::new(BusShared {
                broadcasts: Mutex::default(),
                remote: OnceLock::new(),
            }),
            limits,
            grace: Duration::ZERO,
        }
    }

    /// A bus with `config`'s limits and reconnect grace period.
    pub fn with_config(config: BusConfig) -> Self {
        Self {
            grace: Duration::from_secs(config.reconnect_grace_secs),
            ..Self::new(config.limits())
        }
    }

    /// How long a broadcast waits for its publisher to come back.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Starts a broadcast on `name`; fails if the channel is already live. A publisher that
    /// comes back within the grace period resumes the same broadcast, so its viewers stay.
    pub fn publish(&self, name: ChannelName) -> Result<BroadcastProducer, BusError> {
        self.publish_as(name, false)
    }

    /// Starts a broadcast pulled from another node (the relay's). Listed with `relayed: true`,
    /// so this node never claims it as its origin; a local publisher cannot take it while live.
    pub fn publish_relayed(&self, name: ChannelName) -> Result<BroadcastProducer, BusError> {
        self.publish_as(name, true)
    }

    fn publish_as(&self, name: ChannelName, relayed: bool) -> Result<BroadcastProducer, BusError> {
        let mut map = self.shared.lock();
        if let Some(existing) = map.get(&name) {
            // A publisher here takes over from a copy pulled from another node (the channel's
            // origin moved here): the copy ends.
            if existing.relayed && !relayed {
                existing.end();
                map.remove(&name);
            }
        }
        if let Some(existing) = map.get(&name) {
            if existing.is_publishing() {
                return Err(BusError::AlreadyLive(name));
            }
            if existing.resume() {
                return Ok(BroadcastProducer::new(
                    existing.clone(),
                    Arc::downgrade(&self.shared),
                    self.limits,
                ));
            }
        }
        // A relayed broadcast ends with its pull: the relay itself rides out an upstream's loss.
        let grace = if relayed { Duration::ZERO } else { self.grace };
        let shared = Arc::new(BroadcastShared::new(name.clone(), grace, relayed));
        map.insert(name, shared.clone());
        Ok(BroadcastProducer::new(
            shared,
            Arc::downgrade(&self.shared),
            self.limits,
        ))
    }

    /// The live broadcast on `name`, if any.
    pub fn subscribe(&self, name: &ChannelName) -> Option<BroadcastConsumer> {
        let mut map = self.shared.lock();
        map.retain(|_, b| !b.is_closed());
        map.get(name).cloned().map(BroadcastConsumer::new)
    }

    /// Where channels not published here are looked for (set once, by the relay).
    pub fn set_remote(&self, remote: Arc<dyn Remote>) {
        let _ = self.shared.remote.set(remote);
    }

    /// The broadcast on `name`: live here, or pulled from another node through the
    /// [`Remote`] if one is set.
    pub async fn find(&self, name: &ChannelName) -> Option<BroadcastConsumer> {
        let remote = self.shared.remote.get();
        if let Some(local) = self.subscribe(name) {
            if let Some(remote) = remote.filter(|_| local.is_relayed()) {
                remote.served_again(name);
            }
            return Some(local);
        }
        let remote = remote?.clone();
        remote.pull(name.clone()).await
    }

    /// Every live broadcast, sorted by name; those whose publisher is away within the grace
    /// period are listed with `publishing: false`.
    pub fn live(&self) -> Vec<LiveBroadcast> {
        let all: Vec<_> = {
            let mut map = self.shared.lock();
            map.retain(|_, b| !b.is_closed());
            map.values().cloned().collect()
        };
        let mut live: Vec<_> = all
            .iter()
            .map(|b| LiveBroadcast {
                name: b.name.clone(),
                started: b.started,
                tracks: b.track_infos(),
                notice: b.notice(),
                transcoding: b.transcoding(),
                publishing: b.is_publishing(),
                relayed: b.relayed,
            })
            .collect();
        live.sort_by(|a, b| a.name.cmp(&b.name));
        live
    }
}
