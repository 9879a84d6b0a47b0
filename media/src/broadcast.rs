//! A broadcast: one channel's named tracks.

use std::collections::BTreeMap;
use std::future::poll_fn;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Notify;

use crate::bus::BusShared;
use crate::wakers::Wakers;
use crate::{ChannelName, TrackConsumer, TrackLimits, TrackProducer};

pub(crate) struct BroadcastShared {
    pub(crate) name: ChannelName,
    /// Pulled from another node by the relay, not published here.
    pub(crate) relayed: bool,
    pub(crate) started: SystemTime,
    /// How long viewers wait for a publisher that left to come back.
    grace: Duration,
    state: Mutex<BroadcastState>,
    notify: Notify,
    /// A publisher is connected: what a viewer's wait for the end checks, every time its task
    /// wakes, without a lock. Written under `state`'s lock.
    publishing: AtomicBool,
    /// Waiters for the end ([`BroadcastConsumer::closed`]), woken without a shared lock.
    wakers: Wakers,
    /// Wakes the publisher when a consumer asks any of its tracks for a keyframe.
    keyframe_notify: Arc<Notify>,
    /// [`BroadcastConsumer`]s alive: the relay lets a pulled broadcast go when none is left.
    consumers: AtomicUsize,
}

#[derive(Default)]
struct BroadcastState {
    /// When the publisher left, while waiting for it to come back.
    left_at: Option<Instant>,
    /// Publishers so far (1 for the first; a reconnect within the grace period adds one).
    generation: u64,
    /// Consumer handles of each track, by name; cloning one makes a new consumer.
    tracks: BTreeMap<String, TrackConsumer>,
    closed: bool,
    /// A short note for viewers about the publisher's settings (e.g. B-frames present).
    notice: Option<String>,
    /// What the server makes of the stream for its viewers, and why (e.g. a ladder's layers).
    transcoding: Option<String>,
}

impl BroadcastShared {
    pub(crate) fn new(name: ChannelName, grace: Duration, relayed: bool) -> Self {
        Self {
            name,
            relayed,
            started: SystemTime::now(),
            grace,
            state: Mutex::new(BroadcastState {
                generation: 1,
                ..BroadcastState::default()
            }),
            notify: Notify::new(),
            publishing: AtomicBool::new(true),
            wakers: Wakers::default(),
            keyframe_notify: Arc::new(Notify::new()),
            consumers: AtomicUsize::new(0),
        }
    }

    /// Ended: its publisher left and the grace period is over (or there is none).
    pub(crate) fn is_closed(&self) -> bool {
        let state = self.lock();
        state.closed || self.grace_over(&state)
    }

    fn grace_over(&self, state: &BroadcastState) -> bool {
        state.left_at.is_some_and(|t| t.elapsed() >= self.grace)
    }

    /// True while a publisher is connected.
    pub(crate) fn is_publishing(&self) -> bool {
        self.publishing.load(Ordering::Acquire)
    }

    /// A new publisher takes over a broadcast whose publisher left within the grace period.
    /// Returns false if the broadcast is live or over.
    pub(crate) fn resume(&self) -> bool {
        let mut state = self.lock();
        if state.closed || state.left_at.is_none() || self.grace_over(&state) {
            return false;
        }
        state.left_at = None;
        state.generation += 1;
        state.tracks.clear();
        state.notice = None;
        state.transcoding = None;
        self.publishing.store(true, Ordering::Release);
        drop(state);
        self.notify.notify_waiters();
        true
    }

    /// Ends the broadcast now, whatever its producer does (a relayed broadcast a local
    /// publisher takes over: its viewers see the end and join again).
    pub(crate) fn end(&self) {
        let mut state = self.lock();
        state.closed = true;
        self.publishing.store(false, Ordering::Release);
        drop(state);
        self.notify.notify_waiters();
        self.wakers.wake_all();
    }

    fn lock(&self) -> MutexGuard<'_, BroadcastState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn notice(&self) -> Option<String> {
        self.lock().notice.clone()
    }

    pub(crate) fn transcoding(&self) -> Option<String> {
        self.lock().transcoding.clone()
    }

    pub(crate) fn track_names(&self) -> Vec<String> {
        self.lock().tracks.keys().cloned().collect()
    }

    pub(crate) fn track_infos(&self) -> Vec<crate::TrackInfo> {
        let tracks: Vec<_> = self
            .lock()
            .tracks
            .values()
            .map(TrackConsumer::peek)
            .collect();
        tracks
            .iter()
            .map(|t| crate::TrackInfo {
                name: t.name().to_owned(),
                codec: t.codec().map(|c| c.describe()),
                bitrate: t.bitrate(std::time::Instant::now(), Duration::from_secs(2)),
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
        let producer = TrackProducer::new(name, self.limits, self.shared.keyframe_notify.clone());
        self.shared
            .lock()
            .tracks
            .insert(name.to_owned(), producer.consume_uncounted());
        self.shared.notify.notify_waiters();
        producer
    }

    /// Sets a note shown to viewers, e.g. which encoder setting to change.
    pub fn set_notice(&self, notice: Option<String>) {
        self.shared.lock().notice = notice;
    }

    /// Says what the server makes of the stream for its viewers, and why.
    pub fn set_transcoding(&self, transcoding: Option<String>) {
        self.shared.lock().transcoding = transcoding;
    }

    /// Resolves when a consumer has asked one of this broadcast's tracks for a keyframe (see
    /// [`TrackProducer::take_keyframe_request`]).
    pub async fn keyframe_requested(&self) {
        self.shared.keyframe_notify.notified().await;
    }

    /// Publishers of this broadcast so far: 2 after one reconnect within the grace period.
    pub fn generation(&self) -> u64 {
        self.shared.lock().generation
    }

    /// A consumer of this broadcast.
    pub fn consume(&self) -> BroadcastConsumer {
        BroadcastConsumer::new(self.shared.clone())
    }

    /// [`BroadcastConsumer`]s alive now (viewers, the relay's downstream subscribers, and
    /// whoever else holds one).
    pub fn consumers(&self) -> usize {
        self.shared.consumers.load(Ordering::Relaxed)
    }
}

impl Drop for BroadcastProducer {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        if self.shared.grace.is_zero() {
            state.closed = true;
        } else {
            // Viewers wait for the publisher to come back; the bus forgets the broadcast
            // lazily once the grace period is over.
            state.left_at = Some(Instant::now());
        }
        let closed = state.closed;
        self.shared.publishing.store(false, Ordering::Release);
        drop(state);
        self.shared.notify.notify_waiters();
        // Only the publisher leaving ends a wait for the end while it is live.
        self.shared.wakers.wake_all();
        if closed {
            if let Some(bus) = self.bus.upgrade() {
                bus.remove(&self.shared);
            }
        }
    }
}

/// Reads one broadcast. Each one alive is counted ([`BroadcastProducer::consumers`]).
pub struct BroadcastConsumer {
    shared: Arc<BroadcastShared>,
}

impl Clone for BroadcastConsumer {
    fn clone(&self) -> Self {
        Self::new(self.shared.clone())
    }
}

impl Drop for BroadcastConsumer {
    fn drop(&mut self) {
        self.shared.consumers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl BroadcastConsumer {
    pub(crate) fn new(shared: Arc<BroadcastShared>) -> Self {
        shared.consumers.fetch_add(1, Ordering::Relaxed);
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

    /// The named track for a look (codec, bitrate, state), not counted as a reader of it (see
    /// [`TrackProducer::consumers`]).
    pub fn peek_track(&self, name: &str) -> Option<TrackConsumer> {
        self.shared.lock().tracks.get(name).map(TrackConsumer::peek)
    }

    /// Names of the tracks.
    pub fn track_names(&self) -> Vec<String> {
        self.shared.track_names()
    }

    /// Pulled from another node by the relay, not published here.
    pub fn is_relayed(&self) -> bool {
        self.shared.relayed
    }

    /// The publisher's notice for viewers, if any.
    pub fn notice(&self) -> Option<String> {
        self.shared.notice()
    }

    /// How long ago publishing started (the first publisher).
    pub fn age(&self) -> Duration {
        SystemTime::now()
            .duration_since(self.shared.started)
            .unwrap_or(Duration::ZERO)
    }

    /// What the server makes of the stream for its viewers, if anything.
    pub fn transcoding(&self) -> Option<String> {
        self.shared.transcoding()
    }

    /// True once the broadcast is over: the publisher left and did not come back within the
    /// grace period.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// True while a publisher is connected (false during the grace period after it left).
    pub fn is_publishing(&self) -> bool {
        self.shared.is_publishing()
    }

    /// Publishers so far: 2 after one reconnect within the grace period.
    pub fn generation(&self) -> u64 {
        self.shared.lock().generation
    }

    /// Resolves when the broadcast is over (see [`BroadcastConsumer::is_closed`]). While
    /// a publisher is connected, polling it takes no lock: a viewer may poll it at every wake.
    pub async fn closed(&self) {
        let waiter = self.shared.wakers.waiter();
        loop {
            poll_fn(|cx| {
                waiter.register(cx.waker());
                if self.shared.is_publishing() {
                    Poll::Pending
                } else {
                    Poll::Ready(())
                }
            })
            .await;
            // The publisher left: over at once, or when the grace period runs out unless it
            // comes back.
            let mut notified = pin!(self.shared.notify.notified());
            notified.as_mut().enable();
            if self.is_closed() {
                return;
            }
            self.wait(notified).await;
        }
    }

    /// A consumer of the named track once it exists and is live (after a publisher
    /// reconnects, its new track); `None` once the broadcast is over.
    pub async fn live_track(&self, name: &str) -> Option<TrackConsumer> {
        self.live_track_where(|n| n == name).await
    }

    /// Like [`BroadcastConsumer::live_track`] for the first live track whose name satisfies
    /// `matches` (e.g. any video layer).
    pub async fn live_track_where(&self, matches: impl Fn(&str) -> bool) -> Option<TrackConsumer> {
        loop {
            let mut notified = pin!(self.shared.notify.notified());
            notified.as_mut().enable();
            if self.is_closed() {
                return None;
            }
            let live = {
                let state = self.shared.lock();
                state
                    .tracks
                    .iter()
                    .filter(|(n, t)| matches(n) && !t.is_closed())
                    .map(|(_, t)| t.clone())
                    .next()
            };
            if live.is_some() {
                return live;
            }
            self.wait(notified).await;
        }
    }

    /// Waits for a change, or for the grace period to run out while the publisher is away.
    async fn wait(&self, notified: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>) {
        let left_at = self.shared.lock().left_at;
        match left_at {
            Some(left) => {
                let deadline = left + self.shared.grace;
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep_until(deadline.into()) => {}
                }
            }
            None => notified.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::task::{Context, Poll};

    use super::*;

    #[test]
    fn waiting_for_the_end_while_live_takes_no_lock() {
        let name = ChannelName::new("t").expect("name");
        let shared = Arc::new(BroadcastShared::new(name, Duration::ZERO, false));
        let consumer = BroadcastConsumer::new(shared.clone());
        // The state stays locked while another thread polls the wait: one that needed the
        // lock would time out here.
        let held = shared.lock();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut ended = pin!(consumer.closed());
                let mut cx = Context::from_waker(std::task::Waker::noop());
                let polls: Vec<_> = (0..3).map(|_| ended.as_mut().poll(&mut cx)).collect();
                let _ = tx.send(polls.iter().all(Poll::is_pending));
            });
            let got = rx.recv_timeout(Duration::from_secs(5));
            drop(held);
            assert_eq!(
                got,
                Ok(true),
                "polled without the lock, and pending while live"
            );
        });
    }
}
