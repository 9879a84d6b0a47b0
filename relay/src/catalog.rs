//! The catalog track: what the bus keeps beside a broadcast's frames (each track's codec and
//! parameter sets, whether its publisher honours keyframe requests, the notice for viewers), as
//! JSON, one frame a version. The relay passes codec descriptions on; it parses no bitstream.

use bytes::Bytes;
use media::{tracks, AudioCodec, BroadcastConsumer, Codec, VideoCodec};
use serde::{Deserialize, Serialize};

/// The catalog's track name (bus tracks are `video*` and `audio*`).
pub const TRACK: &str = "catalog";

/// A catalog is at most this large on the wire.
pub const MAX_BYTES: usize = 64 * 1024;
/// Tracks in one broadcast, at most.
pub const MAX_TRACKS: usize = 32;

/// One version of a broadcast's catalog.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// The tracks, by bus name.
    pub tracks: Vec<CatalogTrack>,
    /// The publisher's note for viewers.
    #[serde(default)]
    pub notice: Option<String>,
    /// What the origin makes of the stream for viewers.
    #[serde(default)]
    pub transcoding: Option<String>,
}

/// One track of a catalog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogTrack {
    /// The bus track name (`video`, `video.l`, `audio.opus`, ...).
    pub name: String,
    /// Its codec, once known.
    pub codec: Option<WireCodec>,
    /// Its publisher sends a keyframe when asked (a WebRTC publisher).
    #[serde(default)]
    pub keyframes_on_request: bool,
}

/// A codec description on the wire. Parameter sets are hex.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum WireCodec {
    /// H.264 with its parameter sets.
    H264 {
        /// SPS NAL units.
        sps: Vec<String>,
        /// PPS NAL units.
        pps: Vec<String>,
    },
    /// H.265.
    H265,
    /// VP8.
    Vp8,
    /// VP9.
    Vp9,
    /// AV1.
    Av1,
    /// Opus.
    Opus {
        /// 1 or 2.
        channels: u8,
    },
    /// AAC with its AudioSpecificConfig.
    Aac {
        /// The AudioSpecificConfig.
        config: String,
    },
}

impl WireCodec {
    /// The wire form of a bus codec; `None` for one this version cannot carry.
    pub fn from_codec(codec: &Codec) -> Option<Self> {
        let hex_all = |v: &[Bytes]| v.iter().map(hex::encode).collect();
        Some(match codec {
            Codec::Video(VideoCodec::H264 { sps, pps }) => WireCodec::H264 {
                sps: hex_all(sps),
                pps: hex_all(pps),
            },
            Codec::Video(VideoCodec::H265) => WireCodec::H265,
            Codec::Video(VideoCodec::Vp8) => WireCodec::Vp8,
            Codec::Video(VideoCodec::Vp9) => WireCodec::Vp9,
            Codec::Video(VideoCodec::Av1) => WireCodec::Av1,
            Codec::Audio(AudioCodec::Opus { channels }) => WireCodec::Opus {
                channels: *channels,
            },
            Codec::Audio(AudioCodec::Aac { config }) => WireCodec::Aac {
                config: hex::encode(config),
            },
            _ => return None,
        })
    }

    /// The bus codec; `None` if a parameter set is not hex.
    pub fn to_codec(&self) -> Option<Codec> {
        let unhex = |v: &[String]| -> Option<Vec<Bytes>> {
            v.iter()
                .map(|h| hex::decode(h).ok().map(Bytes::from))
                .collect()
        };
        Some(match self {
            WireCodec::H264 { sps, pps } => Codec::Video(VideoCodec::H264 {
                sps: unhex(sps)?,
                pps: unhex(pps)?,
            }),
            WireCodec::H265 => Codec::Video(VideoCodec::H265),
            WireCodec::Vp8 => Codec::Video(VideoCodec::Vp8),
            WireCodec::Vp9 => Codec::Video(VideoCodec::Vp9),
            WireCodec::Av1 => Codec::Video(VideoCodec::Av1),
            WireCodec::Opus { channels } => Codec::Audio(AudioCodec::Opus {
                channels: (*channels).clamp(1, 2),
            }),
            WireCodec::Aac { config } => Codec::Audio(AudioCodec::Aac {
                config: Bytes::from(hex::decode(config).ok()?),
            }),
        })
    }
}

/// Why a received catalog was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// Over [`MAX_BYTES`].
    #[error("catalog over {MAX_BYTES} bytes")]
    TooLarge,
    /// Not a catalog.
    #[error("catalog is not valid: {0}")]
    Invalid(#[from] serde_json::Error),
    /// Over [`MAX_TRACKS`], or a track name that is not a bus track's.
    #[error("catalog lists too many tracks or a bad track name")]
    Tracks,
}

impl Catalog {
    /// The catalog of a bus broadcast as it is now: its live tracks whose codec is known.
    pub fn of(broadcast: &BroadcastConsumer) -> Self {
        let tracks = broadcast
            .track_names()
            .into_iter()
            // The source of a re-encoded `video` serves consumers on its own node only.
            .filter(|name| name != tracks::ORIGINAL_VIDEO)
            .filter_map(|name| {
                let track = broadcast.peek_track(&name)?;
                if track.is_closed() {
                    return None;
                }
                Some(CatalogTrack {
                    codec: track.codec().as_ref().and_then(WireCodec::from_codec),
                    keyframes_on_request: track.accepts_keyframe_requests(),
                    name,
                })
            })
            .take(MAX_TRACKS)
            .collect();
        Self {
            tracks,
            notice: broadcast.notice(),
            transcoding: broadcast.transcoding(),
        }
    }

    /// The catalog as one frame.
    pub fn encode(&self) -> Bytes {
        // A catalog of plain strings and numbers always serialises.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Reads a received catalog, within bounds.
    pub fn decode(bytes: &[u8]) -> Result<Self, CatalogError> {
        if bytes.len() > MAX_BYTES {
            return Err(CatalogError::TooLarge);
        }
        let catalog: Self = serde_json::from_slice(bytes)?;
        let names_ok = catalog
            .tracks
            .iter()
            .all(|t| valid_track_name(&t.name) && t.name != TRACK);
        if catalog.tracks.len() > MAX_TRACKS || !names_ok {
            return Err(CatalogError::Tracks);
        }
        Ok(catalog)
    }
}

/// A bus track name as the relay carries it: 1-64 characters of `A-Z a-z 0-9 _ - .`.
pub fn valid_track_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codecs_cross_unchanged() {
        let codecs = [
            Codec::Video(VideoCodec::H264 {
                sps: vec![Bytes::from_static(&[0x67, 0x42, 0xc0, 0x1f])],
                pps: vec![Bytes::from_static(&[0x68, 0xce])],
            }),
            Codec::Video(VideoCodec::H265),
            Codec::Video(VideoCodec::Av1),
            Codec::Audio(AudioCodec::Opus { channels: 2 }),
            Codec::Audio(AudioCodec::Aac {
                config: Bytes::from_static(&[0x12, 0x10]),
            }),
        ];
        for codec in codecs {
            let wire = WireCodec::from_codec(&codec).expect("carried");
            assert_eq!(wire.to_codec(), Some(codec));
        }
    }

    #[test]
    fn a_catalog_round_trips_and_a_bad_one_is_refused() {
        let catalog = Catalog {
            tracks: vec![CatalogTrack {
                name: "video".into(),
                codec: Some(WireCodec::H265),
                keyframes_on_request: true,
            }],
            notice: Some("B-frames".into()),
            transcoding: Some("a ladder".into()),
        };
        assert_eq!(
            Catalog::decode(&catalog.encode()).expect("decodes"),
            catalog
        );
        let bad_name = br#"{"tracks":[{"name":"../x","codec":null}]}"#;
        assert!(matches!(
            Catalog::decode(bad_name),
            Err(CatalogError::Tracks)
        ));
        assert!(matches!(
            Catalog::decode(&vec![b' '; MAX_BYTES + 1]),
            Err(CatalogError::TooLarge)
        ));
        assert!(Catalog::decode(b"{").is_err());
    }

    #[test]
    fn the_source_of_a_re_encode_stays_on_its_node() {
        let bus = media::Bus::new(media::TrackLimits::default());
        let producer = bus
            .publish(media::ChannelName::new("obs").expect("a name"))
            .expect("publishes");
        let _tracks: Vec<_> = [
            "video",
            "audio.opus",
            tracks::ORIGINAL_VIDEO,
            tracks::VIDEO_H264,
        ]
        .into_iter()
        .map(|name| producer.create_track(name))
        .collect();
        let mut names: Vec<String> = Catalog::of(&producer.consume())
            .tracks
            .into_iter()
            .map(|t| t.name)
            .collect();
        names.sort();
        assert_eq!(names, ["audio.opus", "h264.video", "video"]);
    }
}
