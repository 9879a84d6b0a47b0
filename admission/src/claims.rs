//! Channel ownership across a cluster: before a publisher is admitted, its node claims the
//! channel in the registry, atomically, so two nodes never both hold a channel's publisher.
//! The claim goes when the publisher does. On one node (no registry) there is nothing to claim.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use media::ChannelName;

/// Why a claim was refused: the node that holds the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldElsewhere(pub String);

/// The registry's side of claims (implemented by the binary over `cluster::Registry`).
pub trait Claims: Send + Sync + 'static {
    /// Makes this node the channel's origin, or says which node is.
    fn claim<'a>(
        &'a self,
        channel: &'a ChannelName,
    ) -> Pin<Box<dyn Future<Output = Result<(), HeldElsewhere>> + Send + 'a>>;

    /// Lets the channel go (the publisher left); must not block.
    fn release(&self, channel: ChannelName);
}

/// A channel held by this node for as long as the value lives.
#[must_use = "the claim is released when this is dropped"]
pub struct Claimed {
    held: Option<(Arc<dyn Claims>, ChannelName)>,
}

impl Claimed {
    /// Nothing claimed (one node, no registry).
    pub fn nothing() -> Self {
        Self { held: None }
    }

    pub(crate) fn new(claims: Arc<dyn Claims>, channel: ChannelName) -> Self {
        Self {
            held: Some((claims, channel)),
        }
    }
}

impl Drop for Claimed {
    fn drop(&mut self) {
        if let Some((claims, channel)) = self.held.take() {
            claims.release(channel);
        }
    }
}

impl std::fmt::Debug for Claimed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claimed")
            .field("channel", &self.held.as_ref().map(|(_, c)| c))
            .finish()
    }
}
