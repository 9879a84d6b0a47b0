//! FTL's control conversation (ftl-sdk, OBS up to 29), pure: lines in, replies and decisions
//! out. The client speaks `HMAC`, then `CONNECT {channel_id} ${hmac-sha512 hex}`, then its
//! attribute lines (`Key: Value`, unanswered) and `.`; we answer with a challenge, `200`, and
//! `200 hi. Use UDP port N`; then `PING {channel_id}` gets `201` until `DISCONNECT`. Every reply
//! ends in a bare `\n` (ftl-sdk reads up to it; the challenge line must not have `\r`).

use std::collections::BTreeMap;

/// ftl-sdk's response codes that a server sends.
pub(super) mod code {
    pub(crate) const OK: u16 = 200;
    pub(crate) const PING: u16 = 201;
    pub(crate) const BAD_REQUEST: u16 = 400;
    pub(crate) const INVALID_STREAM_KEY: u16 = 405;
    pub(crate) const CHANNEL_IN_USE: u16 = 406;
    pub(crate) const NO_MEDIA_TIMEOUT: u16 = 408;
    pub(crate) const INTERNAL_SERVER_ERROR: u16 = 500;
}

/// Bytes of random challenge (256 hex digits on the wire, as Janus sends).
pub(super) const CHALLENGE_LEN: usize = 128;
/// Longest control line read; a longer one is refused.
pub(super) const MAX_LINE: usize = 1024;
/// Attribute lines kept, at most.
const MAX_ATTRIBUTES: usize = 64;

/// What the driver does after a line.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Action {
    /// Send this reply.
    Reply(String),
    /// Check `channel_id`'s key against `tag` (the HMAC of the challenge) and answer with
    /// [`Control::authenticated`].
    Authenticate { channel_id: u32, tag: Vec<u8> },
    /// The attributes are complete: set up media and answer with [`Control::media_port`].
    StartMedia(Media),
    /// Send this reply, then close.
    Refuse(String),
    /// The client said goodbye.
    Disconnect,
    /// Nothing to say (attribute lines, blank lines).
    Nothing,
}

/// What the client announced about its media.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Media {
    /// Video payload type and SSRC, if it sends H.264.
    pub(super) video: Option<(u8, u32)>,
    /// Audio payload type and SSRC, if it sends Opus.
    pub(super) audio: Option<(u8, u32)>,
    /// `VendorName VendorVersion`, for the log.
    pub(super) vendor: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Hello,
    Connect,
    Authenticating,
    Attributes,
    StartingMedia,
    Streaming,
}

/// One control connection's conversation.
pub(super) struct Control {
    state: State,
    challenge: [u8; CHALLENGE_LEN],
    channel_id: Option<u32>,
    attributes: BTreeMap<String, String>,
}

impl Control {
    /// A conversation that will challenge the client with `challenge` (random bytes).
    pub(super) fn new(challenge: [u8; CHALLENGE_LEN]) -> Self {
        Self {
            state: State::Hello,
            challenge,
            channel_id: None,
            attributes: BTreeMap::new(),
        }
    }

    /// The challenge the HMAC must be computed over.
    pub(super) fn challenge(&self) -> &[u8] {
        &self.challenge
    }

    /// Whether the client is streaming (the handshake is done).
    #[cfg(test)]
    pub(super) fn streaming(&self) -> bool {
        self.state == State::Streaming
    }

    /// One line from the client, without its line ending.
    pub(super) fn on_line(&mut self, line: &str) -> Action {
        let line = line.trim();
        if line.is_empty() {
            return Action::Nothing;
        }
        match self.state {
            State::Hello if line == "HMAC" => {
                self.state = State::Connect;
                Action::Reply(format!("{} {}\n", code::OK, hex(&self.challenge)))
            }
            State::Connect => match parse_connect(line) {
                Some((channel_id, tag)) => {
                    self.state = State::Authenticating;
                    self.channel_id = Some(channel_id);
                    Action::Authenticate { channel_id, tag }
                }
                None => refuse(code::BAD_REQUEST),
            },
            State::Attributes if line == "." => {
                self.state = State::StartingMedia;
                match self.media() {
                    Ok(media) => Action::StartMedia(media),
                    Err(()) => refuse(code::BAD_REQUEST),
                }
            }
            State::Attributes => {
                let Some((key, value)) = line.split_once(':') else {
                    return refuse(code::BAD_REQUEST);
                };
                if self.attributes.len() >= MAX_ATTRIBUTES {
                    return refuse(code::BAD_REQUEST);
                }
                self.attributes
                    .insert(key.trim().to_owned(), value.trim().to_owned());
                Action::Nothing
            }
            State::Streaming if line == "DISCONNECT" => Action::Disconnect,
            State::Streaming => match line.strip_prefix("PING") {
                Some(_) => Action::Reply(format!("{}\n", code::PING)),
                None => Action::Nothing,
            },
            State::Hello | State::Authenticating | State::StartingMedia => {
                refuse(code::BAD_REQUEST)
            }
        }
    }

    /// The outcome of [`Action::Authenticate`]: `Ok` goes on to the attributes.
    pub(super) fn authenticated(&mut self, result: Result<(), u16>) -> Action {
        match result {
            Ok(()) => {
                self.state = State::Attributes;
                Action::Reply(format!("{}\n", code::OK))
            }
            Err(code) => refuse(code),
        }
    }

    /// The outcome of [`Action::StartMedia`]: the UDP port media goes to, or a refusal.
    pub(super) fn media_port(&mut self, result: Result<u16, u16>) -> Action {
        match result {
            Ok(port) => {
                self.state = State::Streaming;
                Action::Reply(format!("{} hi. Use UDP port {port}\n", code::OK))
            }
            Err(code) => refuse(code),
        }
    }

    fn media(&self) -> Result<Media, ()> {
        let get = |k: &str| self.attributes.get(k).map(String::as_str);
        let stream = |on: &str, codec: &str, want: &str, pt: &str, ssrc: &str| {
            if get(on) != Some("true") {
                return Ok(None);
            }
            if !get(codec).is_some_and(|c| c.eq_ignore_ascii_case(want)) {
                return Err(());
            }
            let pt = get(pt)
                .and_then(|p| p.parse::<u8>().ok())
                .filter(|p| *p < 128);
            let ssrc = get(ssrc).and_then(|s| s.parse::<u32>().ok());
            match (pt, ssrc) {
                (Some(pt), Some(ssrc)) => Ok(Some((pt, ssrc))),
                _ => Err(()),
            }
        };
        let video = stream(
            "Video",
            "VideoCodec",
            "H264",
            "VideoPayloadType",
            "VideoIngestSSRC",
        )?;
        let audio = stream(
            "Audio",
            "AudioCodec",
            "OPUS",
            "AudioPayloadType",
            "AudioIngestSSRC",
        )?;
        if video.is_none() && audio.is_none() {
            return Err(());
        }
        if let (Some(v), Some(a)) = (video, audio) {
            if v.1 == a.1 {
                return Err(());
            }
        }
        let vendor = [get("VendorName"), get("VendorVersion")]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Media {
            video,
            audio,
            vendor,
        })
    }
}

fn refuse(code: u16) -> Action {
    Action::Refuse(format!("{code}\n"))
}

/// `CONNECT {channel_id} ${hex}`: the id and the decoded HMAC (64 bytes for SHA-512).
fn parse_connect(line: &str) -> Option<(u32, Vec<u8>)> {
    let rest = line.strip_prefix("CONNECT ")?;
    let (id, tag) = rest.split_once(' ')?;
    let channel_id = id.parse().ok()?;
    let tag = unhex(tag.strip_prefix('$')?)?;
    (tag.len() == 64).then_some((channel_id, tag))
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::hmac;

    fn tag(key: &[u8], challenge: &[u8]) -> String {
        hex(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA512, key), challenge).as_ref())
    }

    const OBS_ATTRIBUTES: &[&str] = &[
        "ProtocolVersion: 0.9",
        "VendorName: OBS Studio",
        "VendorVersion: 29.1.3",
        "Video: true",
        "VideoCodec: H264",
        "VideoHeight: 720",
        "VideoWidth: 1280",
        "VideoPayloadType: 96",
        "VideoIngestSSRC: 1235",
        "Audio: true",
        "AudioCodec: OPUS",
        "AudioPayloadType: 97",
        "AudioIngestSSRC: 1234",
    ];

    #[test]
    fn obs_handshake_from_hmac_to_pings() {
        let challenge = [0xab; CHALLENGE_LEN];
        let mut c = Control::new(challenge);
        let Action::Reply(hello) = c.on_line("HMAC") else {
            panic!("challenge expected");
        };
        assert!(hello.starts_with("200 abab") && hello.ends_with("ab\n"));
        assert_eq!(
            hello.len(),
            4 + 2 * CHALLENGE_LEN + 1,
            "no \\r: ftl-sdk needs an even length"
        );

        let line = format!("CONNECT 1234 ${}", tag(b"s3cret", c.challenge()));
        let Action::Authenticate { channel_id, tag } = c.on_line(&line) else {
            panic!("authentication expected");
        };
        assert_eq!(channel_id, 1234);
        assert_eq!(tag.len(), 64);
        assert_eq!(c.authenticated(Ok(())), Action::Reply("200\n".into()));
        for a in OBS_ATTRIBUTES {
            assert_eq!(c.on_line(a), Action::Nothing);
            assert_eq!(c.on_line(""), Action::Nothing);
        }
        let Action::StartMedia(media) = c.on_line(".") else {
            panic!("media expected");
        };
        assert_eq!(media.video, Some((96, 1235)));
        assert_eq!(media.audio, Some((97, 1234)));
        assert_eq!(media.vendor, "OBS Studio 29.1.3");
        assert_eq!(
            c.media_port(Ok(8085)),
            Action::Reply("200 hi. Use UDP port 8085\n".into())
        );
        assert!(c.streaming());
        assert_eq!(c.on_line("PING 1234"), Action::Reply("201\n".into()));
        assert_eq!(c.on_line("DISCONNECT"), Action::Disconnect);
    }

    #[test]
    fn wrong_or_malformed_steps_are_refused_with_codes() {
        let mut c = Control::new([1; CHALLENGE_LEN]);
        assert_eq!(c.on_line("CONNECT 1 $00"), Action::Refuse("400\n".into()));

        let mut c = Control::new([1; CHALLENGE_LEN]);
        c.on_line("HMAC");
        assert_eq!(c.on_line("CONNECT x $00"), Action::Refuse("400\n".into()));
        let mut c = Control::new([1; CHALLENGE_LEN]);
        c.on_line("HMAC");
        assert_eq!(c.on_line("CONNECT 5 $abc"), Action::Refuse("400\n".into()));
        let mut c = Control::new([1; CHALLENGE_LEN]);
        c.on_line("HMAC");
        let line = format!("CONNECT 5 ${}", "zz".repeat(64));
        assert_eq!(c.on_line(&line), Action::Refuse("400\n".into()));

        // A wrong key is the driver's finding; it comes back as 405.
        let mut c = Control::new([1; CHALLENGE_LEN]);
        c.on_line("HMAC");
        let line = format!("CONNECT 5 ${}", tag(b"guess", &[1; CHALLENGE_LEN]));
        assert!(matches!(c.on_line(&line), Action::Authenticate { .. }));
        assert_eq!(
            c.authenticated(Err(code::INVALID_STREAM_KEY)),
            Action::Refuse("405\n".into())
        );
    }

    #[test]
    fn media_attributes_must_name_codecs_payload_types_and_ssrcs() {
        let start = |attrs: &[&str]| {
            let mut c = Control::new([2; CHALLENGE_LEN]);
            c.on_line("HMAC");
            let line = format!("CONNECT 9 ${}", "00".repeat(64));
            c.on_line(&line);
            c.authenticated(Ok(()));
            for a in attrs {
                c.on_line(a);
            }
            c.on_line(".")
        };
        assert!(matches!(start(OBS_ATTRIBUTES), Action::StartMedia(_)));
        assert_eq!(
            start(&[
                "Video: true",
                "VideoCodec: VP8",
                "VideoPayloadType: 96",
                "VideoIngestSSRC: 1"
            ]),
            Action::Refuse("400\n".into())
        );
        assert_eq!(
            start(&["Video: false", "Audio: false"]),
            Action::Refuse("400\n".into())
        );
        assert_eq!(
            start(&[
                "Audio: true",
                "AudioCodec: OPUS",
                "AudioPayloadType: 300",
                "AudioIngestSSRC: 1"
            ]),
            Action::Refuse("400\n".into())
        );
        let audio_only = start(&[
            "Audio: true",
            "AudioCodec: OPUS",
            "AudioPayloadType: 97",
            "AudioIngestSSRC: 1",
        ]);
        assert!(matches!(
            audio_only,
            Action::StartMedia(Media { video: None, .. })
        ));
        let mut flood = Control::new([2; CHALLENGE_LEN]);
        flood.on_line("HMAC");
        flood.on_line(&format!("CONNECT 9 ${}", "00".repeat(64)));
        flood.authenticated(Ok(()));
        let refused = (0..100)
            .map(|i| flood.on_line(&format!("K{i}: v")))
            .any(|a| matches!(a, Action::Refuse(_)));
        assert!(refused, "attributes are bounded");
    }
}
