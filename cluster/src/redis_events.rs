//! The Redis registry's events: its own pub/sub channel, where nodes announce changes, and
//! Redis's expiry notifications, since a node that stops renewing goes without a word. A lost
//! subscription is made again with backoff, and then followers are told to resync, since what
//! happened meanwhile is lost.

use std::time::Duration;

use futures::StreamExt;
use redis::aio::{ConnectionManager, PubSub};
use redis::Client;
use tokio::sync::broadcast;
use tracing::{debug, info, warn};

use crate::model::NodeId;
use crate::registry::Event;

use crate::redis::{unavailable, WireEvent};

/// How often followers resync when Redis will not announce expiries.
const RESYNC_WITHOUT_EXPIRIES: Duration = Duration::from_secs(2);

/// Where the events come from.
pub(crate) struct Source {
    pub(crate) client: Client,
    pub(crate) conn: ConnectionManager,
    pub(crate) prefix: String,
}

impl Source {
    /// Subscribes to the events and expiries: the first time when connecting, so a registry
    /// that cannot subscribe does not connect.
    pub(crate) async fn subscribe(&self) -> Result<PubSub, crate::RegistryError> {
        let mut pubsub = self.client.get_async_pubsub().await.map_err(unavailable)?;
        pubsub
            .subscribe(format!("{}events", self.prefix))
            .await
            .map_err(unavailable)?;
        pubsub
            .psubscribe("__keyevent@*__:expired")
            .await
            .map_err(unavailable)?;
        Ok(pubsub)
    }

    /// Forwards events from `pubsub`, then from each new subscription, until the registry is
    /// dropped (which aborts this task).
    pub(crate) async fn forward(self, mut pubsub: PubSub, events: broadcast::Sender<Event>) {
        let mut expiries = self.announce_expiries().await;
        loop {
            self.relay(pubsub, expiries, &events).await;
            warn!("registry: lost the event subscription; subscribing again");
            let mut delay = Duration::from_millis(250);
            pubsub = loop {
                tokio::time::sleep(delay).await;
                match self.subscribe().await {
                    Ok(pubsub) => break pubsub,
                    Err(err) => {
                        debug!(%err, "registry: cannot subscribe yet");
                        delay = (delay * 2).min(Duration::from_secs(2));
                    }
                }
            };
            info!("registry: subscribed to events again; resynchronising");
            // A restarted Redis has its configuration back from its file.
            expiries = self.announce_expiries().await;
            let _ = events.send(Event::Resync);
        }
    }

    /// Relays one subscription's messages until it ends; without expiry notifications it asks
    /// for a resync every few seconds instead, so dead nodes still leave the tables.
    async fn relay(&self, pubsub: PubSub, expiries: bool, events: &broadcast::Sender<Event>) {
        let mut messages = pubsub.into_on_message();
        let mut resync = tokio::time::interval(RESYNC_WITHOUT_EXPIRIES);
        loop {
            let message = tokio::select! {
                message = messages.next() => message,
                _ = resync.tick(), if !expiries => {
                    let _ = events.send(Event::Resync);
                    continue;
                }
            };
            let Some(message) = message else { return };
            let Ok(payload) = message.get_payload::<String>() else {
                continue;
            };
            let event = if message.from_pattern() {
                self.expired(&payload)
            } else {
                serde_json::from_str::<WireEvent>(&payload)
                    .ok()
                    .and_then(WireEvent::into_event)
            };
            match event {
                Some(event) => {
                    let _ = events.send(event);
                }
                None => debug!("registry: a message this node does not read"),
            }
        }
    }

    /// A node's registration expired: it is gone (its channels expire with it).
    fn expired(&self, key: &str) -> Option<Event> {
        let id = key.strip_prefix(&self.prefix)?.strip_prefix("node:")?;
        NodeId::new(id).map(Event::NodeGone)
    }

    /// Asks Redis to announce expired keys (`notify-keyspace-events` with `E` and `x`), unless
    /// it already does; whether it will. deploy/redis-tls-certs writes them into redis.conf,
    /// since managed Redis services often refuse `CONFIG SET`.
    async fn announce_expiries(&self) -> bool {
        let mut conn = self.conn.clone();
        let current: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("notify-keyspace-events")
            .query_async(&mut conn)
            .await;
        let flags = match current {
            Ok(reply) => reply.get(1).cloned().unwrap_or_default(),
            Err(_) => String::new(),
        };
        let (has_e, has_x) = (
            flags.contains('E'),
            flags.contains('x') || flags.contains('A'),
        );
        if has_e && has_x {
            return true;
        }
        let mut wanted = flags;
        if !has_e {
            wanted.push('E');
        }
        if !has_x {
            wanted.push('x');
        }
        let set: redis::RedisResult<()> = redis::cmd("CONFIG")
            .arg("SET")
            .arg("notify-keyspace-events")
            .arg(&wanted)
            .query_async(&mut conn)
            .await;
        match set {
            Ok(()) => true,
            Err(err) => {
                warn!(%err, "registry: Redis will not announce expired keys (set \
                    notify-keyspace-events Ex in redis.conf); nodes reread the registry every 2 s \
                    instead");
                false
            }
        }
    }
}
