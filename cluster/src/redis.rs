//! The registry in Redis, shared by every node of a cluster, reached over TLS with client
//! certificates (plain TCP only when asked for explicitly).
//!
//! Keys (under a prefix, `starling:` by default):
//! - `node:{id}`: the node's registration as JSON, expiring after its TTL unless renewed;
//! - `channel:{name}`: the id of the node that owns the channel, expiring with the same TTL,
//!   renewed with the node; `owned:{id}` lists a node's channels, so they go with it;
//! - `draining`: the set of drained node ids (the operator's, kept across renewals);
//! - `certificates`: a hash of public name -> TLS certificate chain and key (JSON);
//! - the pub/sub channel `events` carries [`Event`]s as JSON; expiries come from Redis's own
//!   notifications (`redis_events`).
//!
//! Claims, releases and deregistration are Lua scripts, so each is atomic.

use std::sync::Mutex;
use std::time::Duration;

use media::ChannelName;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Client, Script};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tracing::debug;

use crate::model::{NodeId, NodeInfo};
use crate::registry::{
    check_certificate, Certificate, Claim, Event, Registry, RegistryError, EVENT_BACKLOG,
    MAX_CHANNELS, MAX_NODES, MIN_TTL,
};

/// PEM files for mutual TLS with Redis.
#[derive(Clone)]
pub struct TlsFiles {
    /// The CA that signed the Redis server's certificate.
    pub ca: Vec<u8>,
    /// This node's client certificate.
    pub client_cert: Vec<u8>,
    /// Its private key.
    pub client_key: Vec<u8>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsFiles(<redacted>)")
    }
}

/// The registry in Redis.
pub struct RedisRegistry {
    conn: ConnectionManager,
    prefix: String,
    ttl: Mutex<Duration>,
    events: broadcast::Sender<Event>,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for RedisRegistry {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

pub(crate) fn unavailable(err: impl std::fmt::Display) -> RegistryError {
    RegistryError::Unavailable(err.to_string())
}

impl RedisRegistry {
    /// Connects to `url` (`rediss://host:port` with `tls`; `redis://` only without it, which
    /// the caller must have been told to allow) and starts following events.
    pub async fn connect(
        url: &str,
        tls: Option<TlsFiles>,
        prefix: &str,
    ) -> Result<Self, RegistryError> {
        let client = match tls {
            Some(files) => Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: Some(redis::ClientTlsConfig {
                        client_cert: files.client_cert,
                        client_key: files.client_key,
                    }),
                    root_cert: Some(files.ca),
                },
            ),
            None => Client::open(url),
        }
        .map_err(unavailable)?;
        // Retries are ours (with backoff and one log line), so a Redis that is down is
        // reported at once rather than after the crate's six tries.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1))
            .set_connection_timeout(Some(Duration::from_secs(2)));
        let conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(unavailable)?;
        let events = broadcast::channel(EVENT_BACKLOG).0;
        let source = crate::redis_events::Source {
            client,
            conn: conn.clone(),
            prefix: prefix.to_owned(),
        };
        let pubsub = source.subscribe().await?;
        let listener = tokio::spawn(source.forward(pubsub, events.clone()));
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
            ttl: Mutex::new(Duration::from_secs(5)),
            events,
            listener,
        })
    }

    fn node_key(&self, id: &NodeId) -> String {
        format!("{}node:{id}", self.prefix)
    }

    fn channel_key(&self, channel: &ChannelName) -> String {
        format!("{}channel:{channel}", self.prefix)
    }

    fn certificates_key(&self) -> String {
        format!("{}certificates", self.prefix)
    }

    fn draining_key(&self) -> String {
        format!("{}draining", self.prefix)
    }

    fn owned_key(&self, id: &NodeId) -> String {
        format!("{}owned:{id}", self.prefix)
    }

    fn ttl_ms(&self) -> u64 {
        let ttl = *self.ttl.lock().unwrap_or_else(|e| e.into_inner());
        u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
    }

    async fn publish(&self, event: &Event) {
        let Some(json) = WireEvent::from_event(event).and_then(|w| serde_json::to_string(&w).ok())
        else {
            return;
        };
        let mut conn = self.conn.clone();
        let sent: redis::RedisResult<i64> =
            conn.publish(format!("{}events", self.prefix), json).await;
        if let Err(err) = sent {
            debug!(%err, "registry: event not published");
        }
    }

    /// Every value under `pattern`, at most `limit` keys.
    async fn scan_values(
        &self,
        pattern: &str,
        limit: usize,
    ) -> Result<Vec<(String, String)>, RegistryError> {
        let mut conn = self.conn.clone();
        let mut keys: Vec<String> = Vec::new();
        {
            let mut iter = conn
                .scan_match::<_, String>(pattern)
                .await
                .map_err(unavailable)?;
            while let Some(key) = iter.next_item().await {
                keys.push(key.map_err(unavailable)?);
                if keys.len() >= limit {
                    break;
                }
            }
        }
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<String>> = conn.mget(&keys).await.map_err(unavailable)?;
        Ok(keys
            .into_iter()
            .zip(values)
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect())
    }
}

/// Claims a channel for a registered node: `{1}` owned, `{0, owner}` taken, `{-1}` no node.
const CLAIM: &str = r"
if redis.call('EXISTS', KEYS[2]) == 0 then return {-1} end
local owner = redis.call('GET', KEYS[1])
if owner == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('SADD', KEYS[3], ARGV[3])
  return {1}
end
if owner == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {2}
end
return {0, owner}
";

/// Releases a channel if the node owns it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[2])
  return 1
end
return 0
";

/// Registers or renews a node and the channels it still owns; returns the old registration.
const REGISTER: &str = r"
local old = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
for _, channel in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local key = ARGV[3] .. channel
  if redis.call('GET', key) == ARGV[4] then
    redis.call('PEXPIRE', key, ARGV[2])
  else
    redis.call('SREM', KEYS[2], channel)
  end
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return old
";

/// Removes a node and its channels; returns the channels it owned.
const DEREGISTER: &str = r"
local released = {}
for _, channel in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local key = ARGV[1] .. channel
  if redis.call('GET', key) == ARGV[2] then
    redis.call('DEL', key)
    table.insert(released, channel)
  end
end
redis.call('DEL', KEYS[1], KEYS[2])
return released
";

impl Registry for RedisRegistry {
    async fn register(&self, mut node: NodeInfo, ttl: Duration) -> Result<bool, RegistryError> {
        *self.ttl.lock().unwrap_or_else(|e| e.into_inner()) = ttl.max(MIN_TTL);
        // Draining is the operator's, kept in its own set.
        let mut conn = self.conn.clone();
        node.draining = conn
            .sismember(self.draining_key(), node.id.as_str())
            .await
            .map_err(unavailable)?;
        let json = serde_json::to_string(&node).map_err(unavailable)?;
        let old: Option<String> = Script::new(REGISTER)
            .key(self.node_key(&node.id))
            .key(self.owned_key(&node.id))
            .arg(json)
            .arg(self.ttl_ms())
            .arg(format!("{}channel:", self.prefix))
            .arg(node.id.as_str())
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let fresh = old.is_none();
        let old: Option<NodeInfo> = old.and_then(|o: String| serde_json::from_str(&o).ok());
        let event = match old {
            None => Some(Event::NodeUp(node)),
            Some(old) if crate::registry::worth_announcing(&old, &node) => {
                Some(Event::NodeChanged(node))
            }
            Some(_) => None,
        };
        if let Some(event) = event {
            self.publish(&event).await;
        }
        Ok(fresh)
    }

    async fn deregister(&self, id: &NodeId) -> Result<(), RegistryError> {
        let mut conn = self.conn.clone();
        let existed: bool = conn.exists(self.node_key(id)).await.map_err(unavailable)?;
        let _: i64 = conn
            .srem(self.draining_key(), id.as_str())
            .await
            .map_err(unavailable)?;
        let released: Vec<String> = Script::new(DEREGISTER)
            .key(self.node_key(id))
            .key(self.owned_key(id))
            .arg(format!("{}channel:", self.prefix))
            .arg(id.as_str())
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        for channel in released.iter().filter_map(|c| ChannelName::new(c).ok()) {
            self.publish(&Event::ChannelReleased {
                channel,
                node: id.clone(),
            })
            .await;
        }
        if existed {
            self.publish(&Event::NodeGone(id.clone())).await;
        }
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, RegistryError> {
        let pattern = format!("{}node:*", self.prefix);
        let mut nodes: Vec<NodeInfo> = self
            .scan_values(&pattern, MAX_NODES)
            .await?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_str(&v).ok())
            .collect();
        let mut conn = self.conn.clone();
        let draining: Vec<String> = conn
            .smembers(self.draining_key())
            .await
            .map_err(unavailable)?;
        for node in &mut nodes {
            node.draining = draining.iter().any(|d| d == node.id.as_str());
        }
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }

    async fn set_draining(&self, id: &NodeId, draining: bool) -> Result<bool, RegistryError> {
        let mut conn = self.conn.clone();
        let Some(json): Option<String> = conn.get(self.node_key(id)).await.map_err(unavailable)?
        else {
            return Ok(false);
        };
        let changed: i64 = if draining {
            conn.sadd(self.draining_key(), id.as_str()).await
        } else {
            conn.srem(self.draining_key(), id.as_str()).await
        }
        .map_err(unavailable)?;
        if changed == 1 {
            let mut node: NodeInfo = serde_json::from_str(&json).map_err(unavailable)?;
            node.draining = draining;
            self.publish(&Event::NodeChanged(node)).await;
        }
        Ok(true)
    }

    async fn claim_channel(
        &self,
        channel: &ChannelName,
        node: &NodeId,
    ) -> Result<Claim, RegistryError> {
        let mut conn = self.conn.clone();
        let result: Vec<redis::Value> = Script::new(CLAIM)
            .key(self.channel_key(channel))
            .key(self.node_key(node))
            .key(self.owned_key(node))
            .arg(node.as_str())
            .arg(self.ttl_ms())
            .arg(channel.to_string())
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let code = match result.first() {
            Some(redis::Value::Int(code)) => *code,
            _ => return Err(unavailable("unexpected reply to a claim")),
        };
        match code {
            1 => {
                self.publish(&Event::ChannelClaimed {
                    channel: channel.clone(),
                    node: node.clone(),
                })
                .await;
                Ok(Claim::Owned)
            }
            2 => Ok(Claim::Owned),
            -1 => Err(RegistryError::NotRegistered(node.clone())),
            _ => {
                let owner = match result.get(1) {
                    Some(redis::Value::BulkString(b)) => {
                        String::from_utf8_lossy(b.as_ref()).into_owned()
                    }
                    _ => String::new(),
                };
                NodeId::new(&owner)
                    .map(Claim::OwnedBy)
                    .ok_or_else(|| unavailable("a channel owned by a malformed node id"))
            }
        }
    }

    async fn release_channel(
        &self,
        channel: &ChannelName,
        node: &NodeId,
    ) -> Result<bool, RegistryError> {
        let mut conn = self.conn.clone();
        let released: i64 = Script::new(RELEASE)
            .key(self.channel_key(channel))
            .key(self.owned_key(node))
            .arg(node.as_str())
            .arg(channel.to_string())
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if released == 1 {
            self.publish(&Event::ChannelReleased {
                channel: channel.clone(),
                node: node.clone(),
            })
            .await;
        }
        Ok(released == 1)
    }

    async fn channels(&self) -> Result<Vec<(ChannelName, NodeId)>, RegistryError> {
        let prefix = format!("{}channel:", self.prefix);
        let mut channels: Vec<(ChannelName, NodeId)> = self
            .scan_values(&format!("{prefix}*"), MAX_CHANNELS)
            .await?
            .into_iter()
            .filter_map(|(k, v)| {
                let name = ChannelName::new(k.strip_prefix(&prefix)?).ok()?;
                Some((name, NodeId::new(&v)?))
            })
            .collect();
        channels.sort();
        Ok(channels)
    }

    async fn put_certificate(
        &self,
        name: &str,
        certificate: Certificate,
    ) -> Result<(), RegistryError> {
        check_certificate(name, &certificate)?;
        let json = serde_json::to_string(&certificate).map_err(unavailable)?;
        let mut conn = self.conn.clone();
        let _: () = conn
            .hset(self.certificates_key(), name.to_ascii_lowercase(), json)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn certificate(&self, name: &str) -> Result<Option<Certificate>, RegistryError> {
        let mut conn = self.conn.clone();
        let json: Option<String> = conn
            .hget(self.certificates_key(), name.to_ascii_lowercase())
            .await
            .map_err(unavailable)?;
        json.map(|j| serde_json::from_str(&j).map_err(unavailable))
            .transpose()
    }

    fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
}

/// An [`Event`] as JSON on the wire.
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum WireEvent {
    NodeUp { node: NodeInfo },
    NodeChanged { node: NodeInfo },
    NodeGone { id: NodeId },
    ChannelClaimed { channel: String, node: NodeId },
    ChannelReleased { channel: String, node: NodeId },
}

impl WireEvent {
    /// The event as sent to other nodes; `Resync` is each node's own.
    fn from_event(event: &Event) -> Option<Self> {
        Some(match event {
            Event::NodeUp(node) => WireEvent::NodeUp { node: node.clone() },
            Event::NodeChanged(node) => WireEvent::NodeChanged { node: node.clone() },
            Event::NodeGone(id) => WireEvent::NodeGone { id: id.clone() },
            Event::ChannelClaimed { channel, node } => WireEvent::ChannelClaimed {
                channel: channel.to_string(),
                node: node.clone(),
            },
            Event::ChannelReleased { channel, node } => WireEvent::ChannelReleased {
                channel: channel.to_string(),
                node: node.clone(),
            },
            Event::Resync => return None,
        })
    }

    pub(crate) fn into_event(self) -> Option<Event> {
        Some(match self {
            WireEvent::NodeUp { node } => Event::NodeUp(node),
            WireEvent::NodeChanged { node } => Event::NodeChanged(node),
            WireEvent::NodeGone { id } => Event::NodeGone(id),
            WireEvent::ChannelClaimed { channel, node } => Event::ChannelClaimed {
                channel: ChannelName::new(&channel).ok()?,
                node,
            },
            WireEvent::ChannelReleased { channel, node } => Event::ChannelReleased {
                channel: ChannelName::new(&channel).ok()?,
                node,
            },
        })
    }
}

#[cfg(test)]
#[path = "redis_tests.rs"]
mod tests;
