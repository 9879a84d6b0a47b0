//! The SRT `streamid` of a publisher, in the two forms encoders send:
//! `publish:{channel}?key={secret}` (also `publish:{channel}`, or just `{channel}?key=...`),
//! and the access-control form of the SRT specification, `#!::r={channel},m=publish,s={secret}`.

/// What a caller asked for.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Request {
    pub(super) channel: String,
    pub(super) key: Option<String>,
    pub(super) mode: Mode,
}

// Never print the key.
impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("channel", &self.channel)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("mode", &self.mode)
            .finish()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    Publish,
    /// `m=request` (play) or anything but publish: this node only ingests over SRT.
    Other,
}

/// Why a stream id is not understood.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum StreamIdError {
    #[error("no stream id (expected publish:CHANNEL?key=SECRET)")]
    Missing,
    #[error("no channel in the stream id")]
    NoChannel,
    #[error("stream id too long")]
    TooLong,
}

/// Longest stream id read (the SRT limit is 512 bytes).
const MAX_LEN: usize = 512;

pub(super) fn parse(id: Option<&str>) -> Result<Request, StreamIdError> {
    let id = id
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or(StreamIdError::Missing)?;
    if id.len() > MAX_LEN {
        return Err(StreamIdError::TooLong);
    }
    let request = match id.strip_prefix("#!::") {
        Some(fields) => access_control(fields),
        None => simple(id),
    };
    if request.channel.is_empty() {
        return Err(StreamIdError::NoChannel);
    }
    Ok(request)
}

/// `r=channel,m=publish,s=secret` (keys in any order; `u=` and others ignored).
fn access_control(fields: &str) -> Request {
    let (mut channel, mut key, mut mode) = (String::new(), None, Mode::Other);
    for field in fields.split(',') {
        let Some((name, value)) = field.split_once('=') else {
            continue;
        };
        match name.trim() {
            "r" => channel = value.trim().to_owned(),
            "s" => key = Some(value.to_owned()),
            "m" if value.trim() == "publish" => mode = Mode::Publish,
            _ => {}
        }
    }
    Request { channel, key, mode }
}

/// `publish:channel?key=secret`, `publish:channel`, `channel?key=secret` or `channel`; the
/// key may also come as `&key=`. Other modes (`play:`, `read:`) are not publishing.
fn simple(id: &str) -> Request {
    let (mode, rest) = match id.split_once(':') {
        Some(("publish", rest)) => (Mode::Publish, rest),
        Some((_, rest)) => (Mode::Other, rest),
        None => (Mode::Publish, id),
    };
    let (channel, query) = rest.split_once('?').unwrap_or((rest, ""));
    let key = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("key="))
        .map(str::to_owned);
    Request {
        channel: channel.trim_matches('/').to_owned(),
        key,
        mode,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(channel: &str, key: Option<&str>, mode: Mode) -> Request {
        Request {
            channel: channel.into(),
            key: key.map(Into::into),
            mode,
        }
    }

    #[test]
    fn both_common_forms_name_the_channel_and_key() {
        let want = req("studio", Some("s3cret"), Mode::Publish);
        assert_eq!(parse(Some("publish:studio?key=s3cret")), Ok(want.clone()));
        assert_eq!(
            parse(Some("#!::r=studio,m=publish,s=s3cret")),
            Ok(want.clone())
        );
        assert_eq!(
            parse(Some("#!::m=publish,s=s3cret,r=studio,u=obs")),
            Ok(want.clone())
        );
        assert_eq!(parse(Some("studio?key=s3cret")), Ok(want));
        assert_eq!(
            parse(Some("publish:studio")),
            Ok(req("studio", None, Mode::Publish))
        );
    }

    #[test]
    fn other_modes_and_bad_ids_are_told_apart() {
        assert_eq!(
            parse(Some("#!::r=studio,m=request")),
            Ok(req("studio", None, Mode::Other))
        );
        assert_eq!(parse(Some("play:studio")).map(|r| r.mode), Ok(Mode::Other));
        assert_eq!(parse(None), Err(StreamIdError::Missing));
        assert_eq!(parse(Some("  ")), Err(StreamIdError::Missing));
        assert_eq!(parse(Some("publish:?key=x")), Err(StreamIdError::NoChannel));
        assert_eq!(parse(Some("#!::m=publish")), Err(StreamIdError::NoChannel));
        assert_eq!(parse(Some(&"a".repeat(600))), Err(StreamIdError::TooLong));
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let r = parse(Some("publish:studio?key=s3cret")).expect("parse");
        assert!(!format!("{r:?}").contains("s3cret"));
    }
}
