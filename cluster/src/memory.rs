//! The registry in memory: one node's own view, with the same rules as the shared backends
//! (TTL expiry, atomic channel claims, events). Time is tokio's, so tests run on virtual time.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use media::ChannelName;
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::model::{NodeId, NodeInfo};
use crate::registry::{
    check_certificate, worth_announcing, Certificate, Claim, Event, Registry, RegistryError,
    EVENT_BACKLOG, MAX_CERTIFICATES, MAX_CHANNELS, MAX_NODES, MIN_TTL,
};

struct Entry {
    info: NodeInfo,
    expires: Instant,
}

#[derive(Default)]
struct State {
    nodes: BTreeMap<NodeId, Entry>,
    channels: BTreeMap<ChannelName, NodeId>,
    certificates: BTreeMap<String, Certificate>,
}

/// The in-memory registry. Expired nodes (and their channels) are dropped, with their events,
/// whenever the registry is used.
pub struct MemoryRegistry {
    state: Mutex<State>,
    events: broadcast::Sender<Event>,
}

impl Default for MemoryRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State::default()),
            events: broadcast::channel(EVENT_BACKLOG).0,
        }
    }

    /// The state with expired nodes and their channels removed.
    fn live(&self) -> MutexGuard<'_, State> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let expired: Vec<NodeId> = state
            .nodes
            .iter()
            .filter(|(_, e)| e.expires <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.remove(&mut state, &id);
        }
        state
    }

    fn remove(&self, state: &mut State, id: &NodeId) {
        if state.nodes.remove(id).is_none() {
            return;
        }
        let owned: Vec<ChannelName> = state
            .channels
            .iter()
            .filter(|(_, owner)| *owner == id)
            .map(|(c, _)| c.clone())
            .collect();
        for channel in owned {
            state.channels.remove(&channel);
            self.emit(Event::ChannelReleased {
                channel,
                node: id.clone(),
            });
        }
        self.emit(Event::NodeGone(id.clone()));
    }

    fn emit(&self, event: Event) {
        // No subscriber is fine.
        let _ = self.events.send(event);
    }
}

impl Registry for MemoryRegistry {
    async fn register(&self, mut node: NodeInfo, ttl: Duration) -> Result<bool, RegistryError> {
        let mut state = self.live();
        // Draining is set by operators; a renewal keeps it.
        if let Some(old) = state.nodes.get(&node.id) {
            node.draining = old.info.draining;
        }
        let expires = Instant::now() + ttl.max(MIN_TTL);
        let id = node.id.clone();
        let fresh = !state.nodes.contains_key(&id);
        let event = match state.nodes.get(&id) {
            Some(old) if worth_announcing(&old.info, &node) => {
                Some(Event::NodeChanged(node.clone()))
            }
            Some(_) => None,
            None if state.nodes.len() >= MAX_NODES => {
                return Err(RegistryError::Unavailable("too many nodes".into()))
            }
            None => Some(Event::NodeUp(node.clone())),
        };
        state.nodes.insert(
            id,
            Entry {
                info: node,
                expires,
            },
        );
        if let Some(event) = event {
            self.emit(event);
        }
        Ok(fresh)
    }

    async fn deregister(&self, id: &NodeId) -> Result<(), RegistryError> {
        let mut state = self.live();
        self.remove(&mut state, id);
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, RegistryError> {
        Ok(self.live().nodes.values().map(|e| e.info.clone()).collect())
    }

    async fn set_draining(&self, id: &NodeId, draining: bool) -> Result<bool, RegistryError> {
        let mut state = self.live();
        let Some(entry) = state.nodes.get_mut(id) else {
            return Ok(false);
        };
        if entry.info.draining != draining {
            entry.info.draining = draining;
            let info = entry.info.clone();
            self.emit(Event::NodeChanged(info));
        }
        Ok(true)
    }

    async fn claim_channel(
        &self,
        channel: &ChannelName,
        node: &NodeId,
    ) -> Result<Claim, RegistryError> {
        let mut state = self.live();
        if !state.nodes.contains_key(node) {
            return Err(RegistryError::NotRegistered(node.clone()));
        }
        match state.channels.get(channel) {
            Some(owner) if owner == node => Ok(Claim::Owned),
            Some(owner) => Ok(Claim::OwnedBy(owner.clone())),
            None if state.channels.len() >= MAX_CHANNELS => {
                Err(RegistryError::Unavailable("too many channels".into()))
            }
            None => {
                state.channels.insert(channel.clone(), node.clone());
                self.emit(Event::ChannelClaimed {
                    channel: channel.clone(),
                    node: node.clone(),
                });
                Ok(Claim::Owned)
            }
        }
    }

    async fn release_channel(
        &self,
        channel: &ChannelName,
        node: &NodeId,
    ) -> Result<bool, RegistryError> {
        let mut state = self.live();
        if state.channels.get(channel) != Some(node) {
            return Ok(false);
        }
        state.channels.remove(channel);
        self.emit(Event::ChannelReleased {
            channel: channel.clone(),
            node: node.clone(),
        });
        Ok(true)
    }

    async fn channels(&self) -> Result<Vec<(ChannelName, NodeId)>, RegistryError> {
        Ok(self
            .live()
            .channels
            .iter()
            .map(|(c, n)| (c.clone(), n.clone()))
            .collect())
    }

    async fn put_certificate(
        &self,
        name: &str,
        certificate: Certificate,
    ) -> Result<(), RegistryError> {
        check_certificate(name, &certificate)?;
        let mut state = self.live();
        if !state.certificates.contains_key(name) && state.certificates.len() >= MAX_CERTIFICATES {
            return Err(RegistryError::Invalid("too many certificates".into()));
        }
        state
            .certificates
            .insert(name.to_ascii_lowercase(), certificate);
        Ok(())
    }

    async fn certificate(&self, name: &str) -> Result<Option<Certificate>, RegistryError> {
        Ok(self
            .live()
            .certificates
            .get(&name.to_ascii_lowercase())
            .cloned())
    }

    fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance;

    #[tokio::test]
    async fn meets_the_registry_contract() {
        conformance::registration_and_draining(&MemoryRegistry::new()).await;
        conformance::channels_are_claimed_atomically(&MemoryRegistry::new()).await;
        conformance::events_follow_changes(&MemoryRegistry::new()).await;
        conformance::certificates_are_stored_by_name(&MemoryRegistry::new()).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_that_stops_renewing_vanishes_with_its_channels_within_its_ttl() {
        let registry = MemoryRegistry::new();
        let mut events = registry.events();
        let a = conformance::node("a");
        registry
            .register(a.clone(), Duration::from_secs(5))
            .await
            .expect("register");
        let channel = ChannelName::new("studio").expect("name");
        registry
            .claim_channel(&channel, &a.id)
            .await
            .expect("claim");
        // Renewed every second for 10 s: still there.
        for _ in 0..10 {
            tokio::time::advance(Duration::from_secs(1)).await;
            registry
                .register(a.clone(), Duration::from_secs(5))
                .await
                .expect("renew");
        }
        assert_eq!(registry.nodes().await.expect("nodes").len(), 1);
        // It stops renewing: gone after the TTL, and its channel with it.
        tokio::time::advance(Duration::from_millis(4900)).await;
        assert_eq!(registry.nodes().await.expect("nodes").len(), 1);
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(registry.nodes().await.expect("nodes").is_empty());
        assert!(registry.channels().await.expect("channels").is_empty());
        let mut seen = Vec::new();
        while let Ok(e) = events.try_recv() {
            seen.push(e);
        }
        assert!(seen.contains(&Event::NodeGone(a.id.clone())), "{seen:?}");
        assert!(
            seen.contains(&Event::ChannelReleased {
                channel,
                node: a.id
            }),
            "{seen:?}"
        );
    }
}
