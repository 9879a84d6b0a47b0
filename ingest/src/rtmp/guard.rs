//! Checks an RTMP connection's bytes before rml_rtmp's session parses them: a second chunk
//! deserializer (rml_rtmp's own) takes the same bytes apart into messages, and each AMF
//! message must pass the bounded walk of [`super::amf0`] and a size cap first. Before its
//! publish starts a connection may send only a little: a handshake and a few commands.

use rml_rtmp::chunk_io::ChunkDeserializer;
use rml_rtmp::sessions::{ServerSession, ServerSessionError, ServerSessionResult};

use super::amf0;

/// Bytes a connection may send before it is publishing. OBS sends about 4 KiB (handshake,
/// connect, createStream, publish).
pub(crate) const MAX_BEFORE_PUBLISH: usize = 64 * 1024;
/// Largest AMF message (command or data): `onMetaData` is a few hundred bytes.
pub(crate) const MAX_AMF_MESSAGE: usize = 64 * 1024;

const SET_CHUNK_SIZE: u8 = 1;
const AMF3_DATA: u8 = 15;
const AMF3_COMMAND: u8 = 17;
const AMF0_DATA: u8 = 18;
const AMF0_COMMAND: u8 = 20;
/// rml_rtmp refuses larger chunk sizes (the top bit must be clear).
const MAX_CHUNK_SIZE: u32 = 0x7fff_ffff;

/// Why a connection's input was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    /// More than [`MAX_BEFORE_PUBLISH`] bytes before publishing.
    #[error("more than {MAX_BEFORE_PUBLISH} bytes before publishing")]
    TooMuchBeforePublish,
    /// An AMF message over [`MAX_AMF_MESSAGE`].
    #[error("AMF message of {0} bytes (at most {MAX_AMF_MESSAGE})")]
    AmfTooLarge(usize),
    /// An AMF message the bounded walk refused.
    #[error(transparent)]
    Amf0(#[from] amf0::Amf0Error),
    /// A command without its name, transaction id and command object (rml_rtmp 0.8 panics
    /// on one: it drains the first three values unchecked).
    #[error("AMF command of {0} values (at least 3)")]
    ShortCommand(usize),
    /// The chunk stream itself is malformed.
    #[error("malformed chunk stream")]
    Chunks,
    /// rml_rtmp panicked on it (caught).
    #[error("input the RTMP parser cannot take")]
    Unparsable,
}

/// The check of one connection's input.
pub(crate) struct Guard {
    chunks: ChunkDeserializer,
    before_publish: usize,
}

impl Guard {
    pub(crate) fn new() -> Self {
        Self {
            chunks: ChunkDeserializer::new(),
            before_publish: 0,
        }
    }

    /// Checks the next `bytes` read after the handshake, then has `session` parse them: its
    /// results, or why the bytes were refused. A panic in rml_rtmp (in the check's chunk
    /// deserializer or the session's) is caught and refuses them.
    pub(crate) fn parse(
        &mut self,
        session: &mut ServerSession,
        bytes: &[u8],
        publishing: bool,
    ) -> Result<Result<Vec<ServerSessionResult>, ServerSessionError>, Refused> {
        crate::untrusted::guarded(|| {
            self.check(bytes, publishing)?;
            Ok(session.handle_input(bytes))
        })
        .unwrap_or(Err(Refused::Unparsable))
    }

    /// Checks the next `bytes` read after the handshake, before the session parses them.
    pub(crate) fn check(&mut self, bytes: &[u8], publishing: bool) -> Result<(), Refused> {
        if !publishing {
            self.before_publish += bytes.len();
            if self.before_publish > MAX_BEFORE_PUBLISH {
                return Err(Refused::TooMuchBeforePublish);
            }
        }
        let mut input = bytes;
        loop {
            let message = self
                .chunks
                .get_next_message(input)
                .map_err(|_| Refused::Chunks)?;
            input = &[];
            let Some(message) = message else {
                return Ok(());
            };
            let data = &message.data[..];
            match message.type_id {
                SET_CHUNK_SIZE => {
                    // Follow the peer's chunk size as the session does; an invalid one the
                    // session refuses itself.
                    if let Some(size) = data.get(..4) {
                        let size = u32::from_be_bytes([size[0], size[1], size[2], size[3]]);
                        if size <= MAX_CHUNK_SIZE {
                            let _ = self.chunks.set_max_chunk_size(size as usize);
                        }
                    }
                }
                AMF0_DATA | AMF0_COMMAND | AMF3_DATA | AMF3_COMMAND => {
                    if data.len() > MAX_AMF_MESSAGE {
                        return Err(Refused::AmfTooLarge(data.len()));
                    }
                    // rml_rtmp reads an AMF3 command with a leading zero as AMF0 after it.
                    let body = match (message.type_id, data.first()) {
                        (AMF3_COMMAND, Some(0)) => &data[1..],
                        _ => data,
                    };
                    let values = amf0::check(body)?;
                    if matches!(message.type_id, AMF0_COMMAND | AMF3_COMMAND) && values < 3 {
                        return Err(Refused::ShortCommand(values));
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rml_rtmp::chunk_io::ChunkSerializer;
    use rml_rtmp::messages::MessagePayload;
    use rml_rtmp::time::RtmpTimestamp;

    fn chunks(type_id: u8, data: Vec<u8>) -> Vec<u8> {
        let payload = MessagePayload {
            timestamp: RtmpTimestamp::new(0),
            type_id,
            message_stream_id: 0,
            data: data.into(),
        };
        ChunkSerializer::new()
            .serialize(&payload, false, false)
            .expect("serialize")
            .bytes
    }

    fn nested(depth: usize) -> Vec<u8> {
        let mut bytes = vec![0x02, 0, 7];
        bytes.extend_from_slice(b"connect");
        bytes.extend_from_slice(&[0x00, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0]); // transaction 1
        for _ in 0..depth {
            bytes.extend_from_slice(&[0x0a, 0, 0, 0, 1]);
        }
        bytes.push(0x05);
        bytes
    }

    #[test]
    fn a_deeply_nested_command_is_refused_before_the_session_parses_it() {
        let mut guard = Guard::new();
        assert_eq!(guard.check(&chunks(AMF0_COMMAND, nested(3)), false), Ok(()));
        let mut guard = Guard::new();
        assert!(matches!(
            guard.check(&chunks(AMF0_COMMAND, nested(10_000)), true),
            Err(Refused::Amf0(amf0::Amf0Error::TooDeep))
        ));
        // The same as a "fake AMF3" command, which rml_rtmp reads as AMF0 after a zero.
        let mut guard = Guard::new();
        let mut amf3 = vec![0];
        amf3.extend(nested(100));
        assert!(matches!(
            guard.check(&chunks(AMF3_COMMAND, amf3), true),
            Err(Refused::Amf0(amf0::Amf0Error::TooDeep))
        ));
    }

    #[test]
    fn a_command_needs_its_name_transaction_and_object() {
        // "connect" and a transaction id, no command object: rml_rtmp would panic on it.
        let short = vec![
            0x02, 0, 7, b'c', b'o', b'n', b'n', b'e', b'c', b't', 0x00, 0x3f, 0xf0, 0, 0, 0, 0, 0,
            0,
        ];
        let mut guard = Guard::new();
        assert_eq!(
            guard.check(&chunks(AMF0_COMMAND, short.clone()), false),
            Err(Refused::ShortCommand(2))
        );
        // As data (onMetaData and the like) any number of values is fine.
        let mut guard = Guard::new();
        assert_eq!(guard.check(&chunks(AMF0_DATA, short), true), Ok(()));
    }

    /// rml_rtmp's chunk deserializer subtracts a message's new length from what it holds of
    /// it, unchecked: a chunk that shortens a message already begun panics it (found by the
    /// fuzz target). Caught, and the input refused.
    #[test]
    fn input_that_panics_rml_rtmp_is_refused() {
        let crash = include_bytes!("../../tests/data/rtmp_chunk_length_underflow.bin");
        let (mut session, _) =
            ServerSession::new(rml_rtmp::sessions::ServerSessionConfig::new()).expect("session");
        let mut guard = Guard::new();
        let mut refused = None;
        for part in crash.chunks(usize::from(crash[0]).max(1) * 16) {
            match guard.parse(&mut session, part, false) {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => break,
                Err(why) => {
                    refused = Some(why);
                    break;
                }
            }
        }
        assert_eq!(refused, Some(Refused::Unparsable));
    }

    #[test]
    fn sizes_are_capped() {
        let mut guard = Guard::new();
        assert_eq!(
            guard.check(&vec![0u8; MAX_BEFORE_PUBLISH + 1], false),
            Err(Refused::TooMuchBeforePublish)
        );
        let mut guard = Guard::new();
        let mut big = vec![0x02, 0xff, 0xff];
        big.resize(MAX_AMF_MESSAGE + 1, b'a');
        assert_eq!(
            guard.check(&chunks(AMF0_DATA, big), true),
            Err(Refused::AmfTooLarge(MAX_AMF_MESSAGE + 1))
        );
        // Media is not capped here.
        let mut guard = Guard::new();
        assert_eq!(guard.check(&chunks(9, vec![0x17; 1 << 20]), true), Ok(()));
    }

    #[test]
    fn input_split_anywhere_is_checked_the_same() {
        let mut bytes = chunks(SET_CHUNK_SIZE, 4096u32.to_be_bytes().to_vec());
        let mut big = ChunkSerializer::new();
        big.set_max_chunk_size(4096, RtmpTimestamp::new(0))
            .expect("chunk size");
        let payload = MessagePayload {
            timestamp: RtmpTimestamp::new(0),
            type_id: AMF0_COMMAND,
            message_stream_id: 0,
            data: nested(2000).into(),
        };
        bytes.extend(big.serialize(&payload, false, false).expect("ser").bytes);
        for split in [1, 7, 100, 3000] {
            let mut guard = Guard::new();
            let results: Vec<_> = bytes
                .chunks(split)
                .map(|part| guard.check(part, true))
                .collect();
            assert!(
                results.contains(&Err(Refused::Amf0(amf0::Amf0Error::TooDeep))),
                "split {split}: {results:?}"
            );
        }
    }
}
