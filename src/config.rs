//! The configuration file: TOML first, then `STARLING_*` environment variables
//! (`STARLING_HTTP__LISTEN=0.0.0.0:9090`), then command-line flags.

use std::collections::BTreeMap;
use std::path::Path;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;

/// Everything `starling serve` reads.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP listener: player, WHEP, API, health.
    pub http: signaling::listener::HttpConfig,
    /// HTTPS listener: the same routes over TLS; on a front, the public name's front door.
    pub https: signaling::https::HttpsConfig,
    /// The front: one public name for everyone (needs the signaling role).
    pub front: signaling::front::FrontConfig,
    /// RTMP ingest.
    pub rtmp: ingest::RtmpConfig,
    /// SRT ingest.
    pub srt: ingest::SrtConfig,
    /// FTL ingest.
    pub ftl: ingest::FtlConfig,
    /// WebRTC media.
    pub webrtc: sfu::WebRtcConfig,
    /// Video re-encoding on ingest nodes (B-frames removed).
    pub transcode: ingest::TranscodeConfig,
    /// The media bus: memory limits of each track, publisher reconnect grace period.
    pub bus: media::BusConfig,
    /// The relay between nodes: QUIC address, tier, cache, trusted outside clients.
    pub relay: relay::RelayConfig,
    /// What this node does (default: everything).
    pub roles: Vec<cluster::Role>,
    /// The host name clients use to reach this node (used in printed URLs).
    pub public_host: Option<String>,
    /// This node's id in the cluster (default: the host's name).
    pub node_id: Option<String>,
    /// This node's region, for placement.
    pub region: Option<String>,
    /// The cluster registry's Redis (`rediss://host:port`; env `STARLING_REDIS_URL`). None:
    /// the registry is this node's own, in memory.
    pub redis_url: Option<String>,
    /// HTTPS URL of the Redis TLS bundle with its token (env `STARLING_REDIS_TLS_BUNDLE_URL`).
    pub redis_tls_bundle_url: Option<crate::registry::Secret>,
    /// The Redis TLS files by path, instead of the bundle URL.
    pub redis_tls: Option<crate::registry::TlsPaths>,
    /// Allow a Redis over plain TCP (a warning says so).
    pub redis_insecure: bool,
    /// Channels allowed to publish, with their keys. Empty: anyone may publish any name.
    pub channels: BTreeMap<String, admission::ChannelConfig>,
}

const SECTIONS: [&str; 19] = [
    "http",
    "transcode",
    "https",
    "front",
    "relay",
    "roles",
    "rtmp",
    "srt",
    "ftl",
    "webrtc",
    "bus",
    "public_host",
    "node_id",
    "region",
    "redis_url",
    "redis_tls_bundle_url",
    "redis_tls",
    "redis_insecure",
    "channels",
];

impl Config {
    /// Loads `file` (if any), then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut figment = Figment::new();
        if let Some(file) = file {
            anyhow::ensure!(
                file.exists(),
                "config file {} does not exist",
                file.display()
            );
            figment = figment.merge(Toml::file(file));
        }
        // Only keys of known sections, so unrelated STARLING_* variables are not errors.
        let env = Env::prefixed("STARLING_")
            .filter(|key| {
                let section = key.as_str().split("__").next().unwrap_or_default();
                SECTIONS.iter().any(|s| s.eq_ignore_ascii_case(section))
            })
            .split("__");
        figment.merge(env).extract().map_err(redacted)
    }
}

/// A configuration error that names the key and where it came from, but not the value found
/// there, which may be a secret (`STARLING_SRT__PASSPHRASE=1234567890` reads as a number).
fn redacted(err: figment::Error) -> anyhow::Error {
    use figment::error::Kind;
    let lines: Vec<String> = err
        .into_iter()
        .map(|e| {
            let what = match &e.kind {
                Kind::InvalidType(_, expected) => format!("invalid type: expected {expected}"),
                Kind::InvalidValue(_, expected) => format!("invalid value: expected {expected}"),
                Kind::UnknownVariant(_, expected) => {
                    format!("unknown variant: expected one of {}", expected.join(", "))
                }
                Kind::ISizeOutOfRange(_) | Kind::USizeOutOfRange(_) => {
                    "number out of range".to_owned()
                }
                Kind::Unsupported(_) => "unsupported value".to_owned(),
                Kind::UnsupportedKey(_, need) => format!("unsupported key: need {need}"),
                other => other.to_string(),
            };
            let key = e.path.join(".");
            let from = e
                .metadata
                .as_ref()
                .map_or_else(String::new, |m| match &m.source {
                    Some(source) => format!(" in {} ({source})", m.name),
                    None => format!(" in {}", m.name),
                });
            format!("{what} for `{key}`{from}")
        })
        .collect();
    anyhow::anyhow!("invalid configuration: {}", lines.join("; "))
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature
mod tests {
    use super::*;

    #[test]
    fn defaults_without_file() {
        figment::Jail::expect_with(|_| {
            let c = Config::load(None).unwrap();
            assert_eq!(c.http.listen.port(), 8080);
            assert_eq!(c.rtmp.listen.port(), 1935);
            assert_eq!(c.webrtc.listen.port(), 8189);
            assert!(c.channels.is_empty());
            Ok(())
        });
    }

    #[test]
    fn file_then_env() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "s.toml",
                "[http]\nlisten = \"127.0.0.1:1\"\n[channels.alice]\nkey = \"k\"\n",
            )?;
            jail.set_env("STARLING_HTTP__LISTEN", "127.0.0.1:2");
            jail.set_env("STARLING_UNRELATED", "x");
            let c = Config::load(Some(Path::new("s.toml"))).unwrap();
            assert_eq!(c.http.listen.port(), 2);
            assert!(c.channels.contains_key("alice"));
            Ok(())
        });
    }

    #[test]
    fn a_type_error_names_the_key_but_not_the_value() {
        figment::Jail::expect_with(|jail| {
            // All digits reads as a number: refused, without the digits.
            jail.set_env("STARLING_SRT__PASSPHRASE", "1234567890");
            let err = format!("{:#}", Config::load(None).unwrap_err());
            assert!(err.contains("srt.passphrase"), "{err}");
            assert!(!err.contains("1234567890"), "{err}");
            // Quoted, it is the string it is.
            jail.set_env("STARLING_SRT__PASSPHRASE", "\"1234567890\"");
            let c = Config::load(None).unwrap();
            assert_eq!(c.srt.passphrase.as_deref(), Some("1234567890"));
            // A secret pasted into the wrong variable is not echoed.
            jail.set_env("STARLING_RTMP__MAX_CONNECTIONS", "s3cr3t-value");
            let err = format!("{:#}", Config::load(None).unwrap_err());
            assert!(err.contains("rtmp.max_connections"), "{err}");
            assert!(err.contains("STARLING_"), "{err}");
            assert!(!err.contains("s3cr3t"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn unknown_key_is_an_error() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("s.toml", "[http]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n")?;
            assert!(Config::load(Some(Path::new("s.toml"))).is_err());
            Ok(())
        });
    }

    #[test]
    fn a_ladder_node_wide_and_per_channel() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "s.toml",
                "[transcode]\nladder = [{ track = \"video.m\", height = 360, bitrate = 600000 }]\n\
                 [transcode.channels.radio]\nladder = []\n",
            )?;
            let c = Config::load(Some(Path::new("s.toml"))).unwrap();
            assert_eq!(c.transcode.validate(), Ok(()));
            assert_eq!(c.transcode.ladder_for("news")[0].height, 360);
            assert!(c.transcode.ladder_for("radio").is_empty());
            jail.create_file(
                "bad.toml",
                "[transcode]\nladder = [{ track = \"video.m\", height = 360 }]\n",
            )?;
            let err = format!(
                "{:#}",
                Config::load(Some(Path::new("bad.toml"))).unwrap_err()
            );
            assert!(err.contains("bitrate"), "{err}");
            Ok(())
        });
    }
}
