//! A node's routing table: its own copy of the registry's nodes and channel origins, kept
//! current by the registry's events rather than by polling, and reread whole when events may
//! have been missed. Routing reads it without a network round trip, and keeps working from it
//! while the registry is unreachable.

use std::collections::BTreeMap;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use media::ChannelName;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::model::{NodeId, NodeInfo, Role};
use crate::registry::{Event, Registry, RegistryError, MAX_CHANNELS, MAX_NODES};

#[derive(Default)]
struct Table {
    nodes: BTreeMap<NodeId, NodeInfo>,
    channels: BTreeMap<ChannelName, NodeId>,
}

/// The routing table. Cheap to read from many tasks; written by [`RoutingTable::follow`].
#[derive(Default)]
pub struct RoutingTable {
    table: RwLock<Table>,
}

impl RoutingTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The live nodes, sorted by id.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.read().nodes.values().cloned().collect()
    }

    /// Every owned channel with its origin, sorted by channel.
    pub fn channels(&self) -> Vec<(ChannelName, NodeId)> {
        let table = self.read();
        table
            .channels
            .iter()
            .map(|(c, n)| (c.clone(), n.clone()))
            .collect()
    }

    /// The node holding the channel's publisher, if any.
    pub fn origin(&self, channel: &ChannelName) -> Option<NodeInfo> {
        let table = self.read();
        let id = table.channels.get(channel)?;
        table.nodes.get(id).cloned()
    }

    /// The node for a newcomer needing `role`, near `region` ([`crate::choose`]).
    pub fn place(&self, role: Role, region: Option<&str>) -> Option<NodeInfo> {
        let nodes = self.nodes();
        crate::choose(&nodes, role, region).cloned()
    }

    /// Applies one change. Within the registry's bounds; what a peer sends beyond them is
    /// dropped.
    pub fn apply(&self, event: &Event) {
        let mut table = self.write();
        match event {
            Event::NodeUp(node) | Event::NodeChanged(node) => {
                if table.nodes.len() < MAX_NODES || table.nodes.contains_key(&node.id) {
                    table.nodes.insert(node.id.clone(), node.clone());
                }
            }
            Event::NodeGone(id) => {
                table.nodes.remove(id);
                table.channels.retain(|_, owner| owner != id);
            }
            Event::ChannelClaimed { channel, node } => {
                if table.channels.len() < MAX_CHANNELS || table.channels.contains_key(channel) {
                    table.channels.insert(channel.clone(), node.clone());
                }
            }
            Event::ChannelReleased { channel, node } => {
                if table.channels.get(channel) == Some(node) {
                    table.channels.remove(channel);
                }
            }
            Event::Resync => {}
        }
    }

    /// Rereads the whole table from `registry`; on failure the table is left as it was.
    pub async fn resync(&self, registry: &impl Registry) -> Result<(), RegistryError> {
        let nodes = registry.nodes().await?;
        let channels = registry.channels().await?;
        let mut table = self.write();
        table.nodes = nodes
            .into_iter()
            .take(MAX_NODES)
            .map(|n| (n.id.clone(), n))
            .collect();
        table.channels = channels.into_iter().take(MAX_CHANNELS).collect();
        Ok(())
    }

    /// Keeps the table current from `registry`'s events for as long as the registry lives:
    /// reread whole at the start, after a [`Event::Resync`], and when this follower fell too
    /// far behind. While the registry is unreachable the table keeps what it had; rereading is
    /// retried with backoff, and the outage is logged once.
    pub async fn follow(&self, registry: &impl Registry) {
        // Subscribed before the first read, so nothing between the two is missed.
        let mut events = registry.events();
        let mut stale = true;
        let mut failing = false;
        let mut delay = RETRY_FIRST;
        let mut retry_at = Instant::now();
        loop {
            if stale && Instant::now() >= retry_at {
                match self.resync(registry).await {
                    Ok(()) => {
                        stale = false;
                        delay = RETRY_FIRST;
                        if std::mem::take(&mut failing) {
                            info!("routing: table reread from the registry");
                        }
                    }
                    Err(err) => {
                        if !std::mem::replace(&mut failing, true) {
                            warn!(%err, "routing: cannot reread the registry; routing from the table as it was");
                        }
                        retry_at = Instant::now() + delay;
                        delay = (delay * 2).min(RETRY_MAX);
                    }
                }
            }
            // While stale, events still apply, and the next reread waits for its time.
            let event = if stale {
                tokio::select! {
                    event = events.recv() => event,
                    _ = tokio::time::sleep_until(retry_at) => continue,
                }
            } else {
                events.recv().await
            };
            match event {
                Ok(Event::Resync) | Err(RecvError::Lagged(_)) => stale = true,
                Ok(event) => self.apply(&event),
                Err(RecvError::Closed) => return,
            }
        }
    }
}

const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::conformance::node;
    use crate::memory::MemoryRegistry;

    const TTL: Duration = Duration::from_secs(5);

    fn ids(table: &RoutingTable) -> Vec<String> {
        table.nodes().iter().map(|n| n.id.to_string()).collect()
    }

    /// Lets the follower run until the table shows `want`.
    async fn settles(table: &RoutingTable, want: impl Fn(&RoutingTable) -> bool) {
        for _ in 0..100 {
            if want(table) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the table did not settle: {:?}", ids(table));
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_follows_registrations_claims_and_departures() {
        let registry = Arc::new(MemoryRegistry::new());
        registry.register(node("a"), TTL).await.expect("register");
        let table = Arc::new(RoutingTable::new());
        let follower = tokio::spawn({
            let (registry, table) = (registry.clone(), table.clone());
            async move { table.follow(&*registry).await }
        });
        // What was there before it started comes from the first read.
        settles(&table, |t| ids(t) == ["a"]).await;

        registry.register(node("b"), TTL).await.expect("register");
        let studio = ChannelName::new("studio").expect("name");
        registry.claim_channel(&studio, &node("b").id).await.ok();
        settles(&table, |t| t.origin(&studio).is_some()).await;
        assert_eq!(ids(&table), ["a", "b"]);
        assert_eq!(table.origin(&studio).map(|n| n.id), Some(node("b").id));

        // Draining and load reach the table, and placement reads them.
        let mut busy = node("a");
        busy.load.viewers = 500;
        registry.register(busy, TTL).await.expect("renew");
        settles(&table, |t| t.nodes()[0].load.viewers == 500).await;
        assert_eq!(
            table.place(Role::Sfu, None).map(|n| n.id),
            Some(node("b").id)
        );
        registry
            .set_draining(&node("b").id, true)
            .await
            .expect("drain");
        settles(&table, |t| t.nodes()[1].draining).await;
        assert_eq!(
            table.place(Role::Sfu, None).map(|n| n.id),
            Some(node("a").id)
        );

        // A node that goes takes its channels out of the table.
        registry
            .deregister(&node("b").id)
            .await
            .expect("deregister");
        settles(&table, |t| ids(t) == ["a"]).await;
        assert!(table.channels().is_empty());
        follower.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_resync_rereads_what_the_events_missed() {
        let registry = MemoryRegistry::new();
        let table = RoutingTable::new();
        registry.register(node("a"), TTL).await.expect("register");
        table.apply(&Event::NodeUp(node("ghost"))); // an event the registry never had
        table.resync(&registry).await.expect("resync");
        assert_eq!(ids(&table), ["a"]);

        // Events for a channel another node claimed meanwhile do not undo it.
        let studio = ChannelName::new("studio").expect("name");
        table.apply(&Event::ChannelClaimed {
            channel: studio.clone(),
            node: node("a").id,
        });
        table.apply(&Event::ChannelReleased {
            channel: studio.clone(),
            node: node("b").id,
        });
        assert_eq!(table.channels().len(), 1, "only its owner releases it");
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_keeps_its_table_while_the_registry_is_unreachable() {
        /// A registry whose reads fail while it is down, and whose events are the test's.
        struct Flaky {
            inner: MemoryRegistry,
            up: std::sync::atomic::AtomicBool,
            events: tokio::sync::broadcast::Sender<Event>,
        }
        impl Flaky {
            fn check(&self) -> Result<(), RegistryError> {
                if self.up.load(std::sync::atomic::Ordering::Relaxed) {
                    Ok(())
                } else {
                    Err(RegistryError::Unavailable("down".into()))
                }
            }
        }
        impl Registry for Flaky {
            async fn register(&self, n: NodeInfo, ttl: Duration) -> Result<bool, RegistryError> {
                self.inner.register(n, ttl).await
            }
            async fn deregister(&self, id: &NodeId) -> Result<(), RegistryError> {
                self.inner.deregister(id).await
            }
            async fn nodes(&self) -> Result<Vec<NodeInfo>, RegistryError> {
                self.check()?;
                self.inner.nodes().await
            }
            async fn set_draining(&self, id: &NodeId, d: bool) -> Result<bool, RegistryError> {
                self.inner.set_draining(id, d).await
            }
            async fn claim_channel(
                &self,
                c: &ChannelName,
                n: &NodeId,
            ) -> Result<crate::Claim, RegistryError> {
                self.inner.claim_channel(c, n).await
            }
            async fn release_channel(
                &self,
                c: &ChannelName,
                n: &NodeId,
            ) -> Result<bool, RegistryError> {
                self.inner.release_channel(c, n).await
            }
            async fn channels(&self) -> Result<Vec<(ChannelName, NodeId)>, RegistryError> {
                self.check()?;
                self.inner.channels().await
            }
            async fn put_certificate(
                &self,
                name: &str,
                c: crate::Certificate,
            ) -> Result<(), RegistryError> {
                self.inner.put_certificate(name, c).await
            }
            async fn certificate(
                &self,
                name: &str,
            ) -> Result<Option<crate::Certificate>, RegistryError> {
                self.inner.certificate(name).await
            }
            fn events(&self) -> tokio::sync::broadcast::Receiver<Event> {
                self.events.subscribe()
            }
        }

        let registry = Arc::new(Flaky {
            inner: MemoryRegistry::new(),
            up: true.into(),
            events: tokio::sync::broadcast::channel(16).0,
        });
        registry
            .register(node("a"), Duration::from_secs(60))
            .await
            .expect("register");
        let table = Arc::new(RoutingTable::new());
        let follower = tokio::spawn({
            let (registry, table) = (registry.clone(), table.clone());
            async move { table.follow(&*registry).await }
        });
        settles(&table, |t| ids(t) == ["a"]).await;

        // Unreachable, and told to resync: the table keeps what it had, and events that do
        // arrive still apply.
        registry
            .up
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let _ = registry.events.send(Event::Resync);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = registry.events.send(Event::NodeUp(node("b")));
        settles(&table, |t| ids(t) == ["a", "b"]).await;
        // A change it hears nothing of waits for the next reread, which waits for the registry.
        let studio = ChannelName::new("studio").expect("name");
        registry.claim_channel(&studio, &node("a").id).await.ok();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(
            table.channels().is_empty(),
            "nothing reread while it is down"
        );
        // Back: a retry rereads it, within the backoff's cap.
        registry
            .up
            .store(true, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(table.origin(&studio).map(|n| n.id), Some(node("a").id));
        assert_eq!(ids(&table), ["a"], "b was only ever an event");
        follower.abort();
    }
}
