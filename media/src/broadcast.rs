//! A broadcast: one channel's named tracks.

use std::collections::BTreeMap;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::SystemTime;

use tokio::sync::Notify;

use crate::bus::BusShared;
use crate::{ChannelName, TrackConsumer, TrackLimits, TrackProducer};

pub(crate) struct BroadcastShared {
    pub(crate) name: ChannelName,
    pub(crate) started: SystemTime,
    state: Mutex<BroadcastState>,
    notify: Notify,
}

#[derive(Default)]
struct BroadcastState {
    /// Consumer handles of each track, by name; cloning one makes a new consumer.
    tracks: BTreeMap<String, TrackConsumer>,
    closed: bool,
    /// A short note for viewers about the publisher's settings (e.g. B-frames present).
    notice: Option<String>,
}

impl BroadcastShared {
    pub(crate) fn new(name: ChannelName) -> Self {
        Self {
            name,
            started: SystemTime::now(),
            state: Mutex::new(BroadcastState::default()),
            notify: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BroadcastState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn notice(&self) -> Option<String> {
        self.lock().notice.clone()
    }

    pub(crate) fn track_names(&self) -> Vec<String> {
        self.lock().tracks.keys().cloned().collect()
    }

    pub(crate) fn track_infos(&self) -> Vec<crate::TrackInfo> {
        let tracks: Vec<_> = self.lock().tracks.values().cloned().collect();
        tracks
            .iter()
            .map(|t| crate::TrackInfo {
                name: t.name().to_owned(),
                codec: t.codec().map(|c| c.describe()),
                latest_group: t.latest_group(),
            })
            .collect()
    }
}

/// Publishes one broadcast on the bus. Dropping it ends the broadcast and frees the name.
pub struct BroadcastProducer {
    shared: Arc<BroadcastShared>,
    bus: Weak<BusShared>,
    limits: TrackLimits,
}

impl BroadcastProducer {
    pub(crate) fn new(
        shared: Arc<BroadcastShared>,
        bus: Weak<BusShared>,
        limits: TrackLimits,
    ) -> Self {
        Self {
            shared,
            bus,
            limits,
        }
    }

    /// The channel this broadcast is on.
    pub fn name(&self) -> &ChannelName {
        &self.shared.name
    }

    /// Creates (or replaces) a track with the bus's limits.
    pub fn create_track(&self, name: &str) -> TrackProducer {
        let producer = TrackProducer::new(name, self.limits);
        self.shared
            .lock()
            .tracks
            .insert(name.to_owned(), producer.consume());
        self.shared.notify.notify_waiters();
        producer
    }

    /// Sets a note shown to viewers, e.g. which encoder setting to change.
    pub fn set_notice(&self, notice: Option<String>) {
        self.shared.lock().notice = notice;
    }

    /// A consumer of this broadcast.
    pub fn consume(&self) -> BroadcastConsumer {
        BroadcastConsumer {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for BroadcastProducer {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.notify.notify_waiters();
        if let Some(bus) = self.bus.upgrade() {
            bus.remove(&self.shared);
        }
    }
}

/// Reads one broadcast.
#[derive(Clone)]
pub struct BroadcastConsumer {
    shared: Arc<BroadcastShared>,
}

impl BroadcastConsumer {
    pub(crate) fn new(shared: Arc<BroadcastShared>) -> Self {
        Self { shared }
    }

    /// The channel.
    pub fn name(&self) -> &ChannelName {
        &self.shared.name
    }

    /// A consumer of the named track starting at its latest group, if the track exists.
    pub fn track(&self, name: &str) -> Option<TrackConsumer> {
        self.shared.lock().tracks.get(name).cloned()
    }

    /// Names of the tracks.
    pub fn track_names(&self) -> Vec<String> {
        self.shared.track_names()
    }

    /// The publisher's notice for viewers, if any.
    pub fn notice(&self) -> Option<String> {
        self.shared.notice()
    }

    /// True once the publisher has gone.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// Resolves when the publisher has gone.
    pub async fn closed(&self) {
        loop {
            let mut notified = pin!(self.shared.notify.notified());
            notified.as_mut().enable();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }
}
