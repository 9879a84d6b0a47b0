//! What a node says about itself.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A node's name in the cluster, unique among live nodes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(String);

impl NodeId {
    /// A node id: 1-64 characters of `A-Z a-z 0-9 _ - .`.
    pub fn new(id: &str) -> Option<Self> {
        let ok = (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        ok.then(|| Self(id.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a node does (`starling serve --roles`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Takes publishers (RTMP, SRT, FTL, WHIP).
    Ingest,
    /// Serves WebRTC viewers.
    Sfu,
    /// The public front: SNI proxy and redirects.
    Signaling,
    /// Moves broadcasts between nodes.
    Relay,
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ingest" => Ok(Role::Ingest),
            "sfu" => Ok(Role::Sfu),
            "signaling" => Ok(Role::Signaling),
            "relay" => Ok(Role::Relay),
            other => Err(format!(
                "unknown role {other:?} (ingest, sfu, signaling, relay)"
            )),
        }
    }
}

/// A relay node's tier. Primaries face viewers and pull through secondaries (shields), which
/// pull from the origin (the node holding the channel's publisher) or from a secondary in the
/// origin's region.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Viewer-facing.
    #[default]
    Primary,
    /// A shield between primaries and origins.
    Secondary,
}

impl FromStr for Tier {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "primary" => Ok(Tier::Primary),
            "secondary" => Ok(Tier::Secondary),
            other => Err(format!("unknown tier {other:?} (primary, secondary)")),
        }
    }
}

/// Where a node listens (0: not listening). Ports a node of an older version did not list
/// read as 0.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Ports {
    /// HTTP.
    pub http: u16,
    /// HTTPS.
    pub https: u16,
    /// RTMP.
    pub rtmp: u16,
    /// RTMPS (RTMP over TLS).
    pub rtmps: u16,
    /// SRT (UDP).
    pub srt: u16,
    /// FTL control.
    pub ftl: u16,
    /// WebRTC media (UDP).
    pub webrtc: u16,
    /// MoQ relay (UDP).
    pub relay: u16,
}

/// How busy a node is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Load {
    /// WebRTC viewers connected.
    pub viewers: u32,
    /// Publishers ingesting.
    pub ingest_streams: u32,
    /// Media sent, bits per second.
    pub bitrate_out: u64,
}

/// A node's registration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its id.
    pub id: NodeId,
    /// What it does.
    pub roles: Vec<Role>,
    /// Where it is (placement prefers the viewer's or publisher's region).
    pub region: String,
    /// The host name clients reach it by.
    pub public_host: String,
    /// Its listeners.
    pub ports: Ports,
    /// Its load, as of its last renewal.
    pub load: Load,
    /// Draining: no new placements; its viewers move elsewhere.
    pub draining: bool,
    /// Its relay tier.
    #[serde(default)]
    pub tier: Tier,
    /// SHA-256 of its relay certificate (hex): the certificate its peers pin, and the only
    /// one its peers accept from it as a client. Empty: it takes no part in the relay.
    #[serde(default)]
    pub relay_fingerprint: String,
}

impl NodeInfo {
    /// Whether the node has `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}
