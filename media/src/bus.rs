//! The bus: live broadcasts by channel name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

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
}

pub(crate) struct BusShared {
    broadcasts: Mutex<HashMap<ChannelName, Arc<BroadcastShared>>>,
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
}

impl Bus {
    /// An empty bus whose tracks keep at most `limits`.
    pub fn new(limits: TrackLimits) -> Self {
        Self {
            shared: Arc::new(BusShared {
                broadcasts: Mutex::default(),
            }),
            limits,
        }
    }

    /// Starts a broadcast on `name`; fails if the channel is already live.
    pub fn publish(&self, name: ChannelName) -> Result<BroadcastProducer, BusError> {
        let mut map = self.shared.lock();
        if map.contains_key(&name) {
            return Err(BusError::AlreadyLive(name));
        }
        let shared = Arc::new(BroadcastShared::new(name.clone()));
        map.insert(name, shared.clone());
        Ok(BroadcastProducer::new(
            shared,
            Arc::downgrade(&self.shared),
            self.limits,
        ))
    }

    /// The live broadcast on `name`, if any.
    pub fn subscribe(&self, name: &ChannelName) -> Option<BroadcastConsumer> {
        self.shared
            .lock()
            .get(name)
            .cloned()
            .map(BroadcastConsumer::new)
    }

    /// Every live broadcast, sorted by name.
    pub fn live(&self) -> Vec<LiveBroadcast> {
        let all: Vec<_> = self.shared.lock().values().cloned().collect();
        let mut live: Vec<_> = all
            .iter()
            .map(|b| LiveBroadcast {
                name: b.name.clone(),
                started: b.started,
                tracks: b.track_infos(),
                notice: b.notice(),
            })
            .collect();
        live.sort_by(|a, b| a.name.cmp(&b.name));
        live
    }
}
