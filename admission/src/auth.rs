//! Who may publish: channel names, their secret keys, and stream-key parsing.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use aws_lc_rs::hmac;
use media::ChannelName;
use serde::Deserialize;

/// A channel's publishing secret. Its `Debug` never shows the value, so it cannot reach a log.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct StreamKey(String);

impl StreamKey {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// Constant-time comparison with what a client sent.
    pub fn matches(&self, offered: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), offered.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl StreamKey {
    /// Whether `tag` is the HMAC-SHA512 of `message` under this key (FTL's handshake), checked
    /// in constant time.
    pub fn verifies_hmac_sha512(&self, message: &[u8], tag: &[u8]) -> bool {
        let key = hmac::Key::new(hmac::HMAC_SHA512, self.0.as_bytes());
        hmac::verify(&key, message, tag).is_ok()
    }

    /// The HMAC-SHA512 of `message` under this key: what an FTL client answers the challenge
    /// with, for a front that speaks FTL to the node holding the channel.
    pub fn hmac_sha512(&self, message: &[u8]) -> Vec<u8> {
        let key = hmac::Key::new(hmac::HMAC_SHA512, self.0.as_bytes());
        hmac::sign(&key, message).as_ref().to_vec()
    }

    /// The HMAC-SHA256 of `message` under this key, to sign tokens with.
    pub fn hmac_sha256(&self, message: &[u8]) -> [u8; 32] {
        let key = hmac::Key::new(hmac::HMAC_SHA256, self.0.as_bytes());
        let mut tag = [0u8; 32];
        // SHA-256 tags are 32 bytes.
        tag.copy_from_slice(hmac::sign(&key, message).as_ref());
        tag
    }
}

impl fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StreamKey(<redacted>)")
    }
}

/// One configured channel: its key inline or in a file (for container secrets).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// The secret key.
    pub key: Option<StreamKey>,
    /// A file holding the secret key (trailing whitespace ignored).
    pub key_file: Option<PathBuf>,
}

/// Why a publish was refused. Never holds the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// The stream key does not name a valid channel.
    #[error("stream key does not name a valid channel")]
    BadName,
    /// The stream key names no configured channel. The name is not kept: a mistyped stream
    /// key may hold the secret.
    #[error("stream key names no configured channel")]
    UnknownChannel,
    /// No key was given for a channel that needs one.
    #[error("no key given for channel {0}")]
    MissingKey(ChannelName),
    /// The key is wrong.
    #[error("wrong key for channel {0}")]
    WrongKey(ChannelName),
}

/// A configuration problem found at start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A configured channel name is invalid.
    #[error("configured channel {0:?}: {1}")]
    Name(String, media::InvalidName),
    /// A channel has neither `key` nor `key_file`, or both.
    #[error("channel {0}: set exactly one of key or key_file")]
    KeySource(String),
    /// A key file could not be read.
    #[error("channel {0}: cannot read key_file {1}: {2}")]
    KeyFile(String, PathBuf, std::io::Error),
}

/// The publishing policy: open (no channels configured) or a fixed set of channels with keys.
#[derive(Clone, Debug, Default)]
pub struct Publishers {
    channels: BTreeMap<ChannelName, StreamKey>,
}

impl Publishers {
    /// Builds the policy from configuration, reading key files.
    pub fn from_config(config: &BTreeMap<String, ChannelConfig>) -> Result<Self, ConfigError> {
        let mut channels = BTreeMap::new();
        for (name, c) in config {
            let channel = ChannelName::new(name).map_err(|e| ConfigError::Name(name.clone(), e))?;
            let key = match (&c.key, &c.key_file) {
                (Some(key), None) => key.clone(),
                (None, Some(path)) => std::fs::read_to_string(path)
                    .map(|s| StreamKey::new(s.trim_end()))
                    .map_err(|e| ConfigError::KeyFile(name.clone(), path.clone(), e))?,
                _ => return Err(ConfigError::KeySource(name.clone())),
            };
            channels.insert(channel, key);
        }
        Ok(Self { channels })
    }

    /// A policy with the given channels and keys.
    pub fn with_channels(channels: impl IntoIterator<Item = (ChannelName, StreamKey)>) -> Self {
        Self {
            channels: channels.into_iter().collect(),
        }
    }

    /// True when any name may publish (no channels configured).
    pub fn is_open(&self) -> bool {
        self.channels.is_empty()
    }

    /// The key of a configured channel (none when the policy is open or the channel unknown),
    /// for a front that proves it to another node or signs tokens with it.
    pub fn key(&self, channel: &ChannelName) -> Option<&StreamKey> {
        self.channels.get(channel)
    }

    /// Checks a publisher's channel and key.
    pub fn authorize(&self, channel: &str, key: Option<&str>) -> Result<ChannelName, AuthError> {
        let name = ChannelName::new(channel).map_err(|_| AuthError::BadName)?;
        if self.is_open() {
            return Ok(name);
        }
        let Some(expected) = self.channels.get(&name) else {
            return Err(AuthError::UnknownChannel);
        };
        match key {
            None | Some("") => Err(AuthError::MissingKey(name)),
            Some(k) if expected.matches(k) => Ok(name),
            Some(_) => Err(AuthError::WrongKey(name)),
        }
    }

    /// Checks a publisher that proves its key with an HMAC-SHA512 of `challenge` (FTL).
    pub fn authorize_hmac(
        &self,
        channel: &str,
        challenge: &[u8],
        tag: &[u8],
    ) -> Result<ChannelName, AuthError> {
        let name = ChannelName::new(channel).map_err(|_| AuthError::BadName)?;
        if self.is_open() {
            return Ok(name);
        }
        let Some(expected) = self.channels.get(&name) else {
            return Err(AuthError::UnknownChannel);
        };
        if expected.verifies_hmac_sha512(challenge, tag) {
            Ok(name)
        } else {
            Err(AuthError::WrongKey(name))
        }
    }

    /// Checks an RTMP-style stream key: `{channel}?key={secret}`, or `{channel}-{secret}` split
    /// at the last `-` when the part before it is a configured channel, or a bare `{channel}`.
    pub fn authorize_stream_key(&self, stream_key: &str) -> Result<ChannelName, AuthError> {
        let (channel, key) = self.split_stream_key(stream_key);
        self.authorize(channel, key)
    }

    fn split_stream_key<'a>(&self, stream_key: &'a str) -> (&'a str, Option<&'a str>) {
        if let Some((channel, query)) = stream_key.split_once('?') {
            let key = query.split('&').find_map(|kv| kv.strip_prefix("key="));
            return (channel, key);
        }
        // The last `-` first; earlier ones too, so keys may contain `-`.
        for (at, _) in stream_key.rmatch_indices('-') {
            let channel = &stream_key[..at];
            if ChannelName::new(channel).is_ok_and(|c| self.channels.contains_key(&c)) {
                return (channel, Some(&stream_key[at + 1..]));
            }
        }
        (stream_key, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Publishers {
        Publishers::with_channels([
            (ChannelName::new("alice").unwrap(), StreamKey::new("s3cret")),
            (ChannelName::new("bob-tv").unwrap(), StreamKey::new("k-1")),
        ])
    }

    fn name(n: &str) -> ChannelName {
        ChannelName::new(n).unwrap()
    }

    #[test]
    fn open_policy_accepts_any_valid_name() {
        let open = Publishers::default();
        assert!(open.is_open());
        assert_eq!(open.authorize_stream_key("alice"), Ok(name("alice")));
        assert_eq!(open.authorize_stream_key("alice?key=x"), Ok(name("alice")));
        assert_eq!(
            open.authorize_stream_key("my-stream"),
            Ok(name("my-stream"))
        );
        assert_eq!(open.authorize_stream_key("../etc"), Err(AuthError::BadName));
        assert_eq!(open.authorize_stream_key(""), Err(AuthError::BadName));
    }

    #[test]
    fn query_form() {
        let p = policy();
        assert_eq!(
            p.authorize_stream_key("alice?key=s3cret"),
            Ok(name("alice"))
        );
        assert_eq!(
            p.authorize_stream_key("alice?x=1&key=s3cret"),
            Ok(name("alice"))
        );
        assert_eq!(
            p.authorize_stream_key("alice?key=nope"),
            Err(AuthError::WrongKey(name("alice")))
        );
        assert_eq!(
            p.authorize_stream_key("alice?key="),
            Err(AuthError::MissingKey(name("alice")))
        );
        assert_eq!(
            p.authorize_stream_key("alice"),
            Err(AuthError::MissingKey(name("alice")))
        );
    }

    #[test]
    fn dash_form_splits_at_last_dash_of_a_configured_channel() {
        let p = policy();
        assert_eq!(p.authorize_stream_key("alice-s3cret"), Ok(name("alice")));
        // Keys may contain `-`: the longest configured prefix wins.
        assert_eq!(p.authorize_stream_key("bob-tv-k-1"), Ok(name("bob-tv")));
        assert_eq!(
            p.authorize_stream_key("alice-s3cret-x"),
            Err(AuthError::WrongKey(name("alice")))
        );
        assert_eq!(p.authorize_stream_key("bob-tv?key=k-1"), Ok(name("bob-tv")));
        assert_eq!(
            p.authorize_stream_key("alice-wrong"),
            Err(AuthError::WrongKey(name("alice")))
        );
        assert_eq!(
            p.authorize_stream_key("carol-x"),
            Err(AuthError::UnknownChannel)
        );
    }

    #[test]
    fn errors_and_debug_never_show_the_key() {
        let p = policy();
        let err = p.authorize_stream_key("alice?key=hunter2").unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
        assert!(!format!("{err:?}").contains("hunter2"));
        assert!(!format!("{p:?}").contains("s3cret"));
    }

    #[test]
    fn key_file_is_read_and_trimmed() {
        let dir = std::env::temp_dir().join(format!("starling-key-{}", std::process::id()));
        std::fs::write(&dir, "from-file\n").unwrap();
        let mut config = BTreeMap::new();
        config.insert(
            "alice".to_owned(),
            ChannelConfig {
                key: None,
                key_file: Some(dir.clone()),
            },
        );
        let p = Publishers::from_config(&config).unwrap();
        assert_eq!(
            p.authorize_stream_key("alice?key=from-file"),
            Ok(name("alice"))
        );
        config.insert("bob".to_owned(), ChannelConfig::default());
        assert!(matches!(
            Publishers::from_config(&config),
            Err(ConfigError::KeySource(_))
        ));
        std::fs::remove_file(&dir).unwrap();
        config.remove("bob");
        assert!(matches!(
            Publishers::from_config(&config),
            Err(ConfigError::KeyFile(..))
        ));
    }

    #[test]
    fn an_hmac_of_the_challenge_proves_the_key() {
        let challenge = [7u8; 128];
        let key = hmac::Key::new(hmac::HMAC_SHA512, b"s3cret");
        let tag = hmac::sign(&key, &challenge);
        let p = policy();
        assert_eq!(
            p.authorize_hmac("alice", &challenge, tag.as_ref()),
            Ok(ChannelName::new("alice").unwrap())
        );
        let wrong = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA512, b"guess"), &challenge);
        assert!(matches!(
            p.authorize_hmac("alice", &challenge, wrong.as_ref()),
            Err(AuthError::WrongKey(_))
        ));
        assert_eq!(
            p.authorize_hmac("nobody", &challenge, tag.as_ref()),
            Err(AuthError::UnknownChannel)
        );
        assert!(p.authorize_hmac("alice", &challenge, &[]).is_err());
    }

    #[test]
    fn a_channel_key_signs_what_it_verifies() {
        let p = policy();
        let key = p.key(&name("alice")).unwrap();
        assert!(p.key(&name("carol")).is_none());
        assert!(Publishers::default().key(&name("alice")).is_none());
        let challenge = [9u8; 128];
        let tag = key.hmac_sha512(&challenge);
        assert_eq!(tag.len(), 64);
        assert!(key.verifies_hmac_sha512(&challenge, &tag));
        assert_eq!(
            p.authorize_hmac("alice", &challenge, &tag),
            Ok(name("alice"))
        );
        assert_eq!(format!("{key:?}"), "StreamKey(<redacted>)");
        // RFC 4231, test case 2.
        let jefe = StreamKey::new("Jefe");
        let tag = jefe.hmac_sha256(b"what do ya want for nothing?");
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
