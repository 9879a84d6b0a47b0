//! Media out in str0m's RTP mode, for the codecs that allow it (H.264, Opus): a frame is
//! packetized once, into RTP payloads kept on the bus frame and shared by every viewer of the
//! track (and by their resend buffers); each viewer only writes its own header (payload type,
//! sequence number, timestamp) and encrypts. Other codecs (VP8's picture ids, VP9, AV1, H.265)
//! are packetized per viewer by str0m in frame mode.

use std::sync::Arc;

use media::Frame;
use str0m::format::Codec;
use str0m::media::{Mid, Pt};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::unversioned::{H264Packetizer, OpusPacketizer, Packetizer};
use str0m::Rtc;

/// Largest RTP payload: with the RTP header, extensions and the SRTP tag a packet stays under
/// 1200 bytes, like str0m's own packetizing.
const PAYLOAD_MTU: usize = 1100;

/// Whether viewers of a stream in this codec can take shared RTP payloads.
pub(crate) fn shareable(codec: Codec) -> bool {
    matches!(codec, Codec::H264 | Codec::Opus)
}

/// A frame's RTP payloads in a codec, in order.
struct Payloads(Codec, Vec<Arc<[u8]>>);

fn packetize(codec: Codec, data: &[u8]) -> Payloads {
    let packets = match codec {
        // A fresh packetizer per frame: what one frame yields depends on that frame alone
        // (parameter sets travel in the keyframe's access unit).
        Codec::H264 => H264Packetizer::default().packetize(PAYLOAD_MTU, data),
        Codec::Opus => OpusPacketizer.packetize(PAYLOAD_MTU, data),
        _ => Ok(Vec::new()),
    };
    Payloads(
        codec,
        packets
            .unwrap_or_default()
            .into_iter()
            .map(Arc::from)
            .collect(),
    )
}

/// One media line's sequence numbers.
pub(crate) struct Numbering {
    next: u64,
}

impl Numbering {
    pub(crate) fn new() -> Self {
        // A random start below 2^15, so the first packets never wrap the 16-bit counter.
        Self {
            next: u64::from(rand::random::<u16>() & 0x7fff),
        }
    }

    /// Numbers for `count` packets: the first is returned.
    pub(crate) fn take(&mut self, count: u64) -> u64 {
        let first = self.next;
        self.next += count;
        first
    }
}

/// The frame's payloads in `codec`, packetized by the first viewer that asks (`None` if they
/// were made in another codec: a track has one codec, so this is a bug, not a viewer's doing).
pub(crate) fn payloads(codec: Codec, frame: &Frame) -> Option<&[Arc<[u8]>]> {
    frame
        .derived
        .get_or_init(|| packetize(codec, &frame.payload))
        .filter(|p| p.0 == codec)
        .map(|p| p.1.as_slice())
}

/// Packets written into str0m at a time. str0m queues what it is given until it is polled, and
/// its queue keeps the capacity of its largest burst: a whole keyframe written at once left
/// ~180 kB per viewer (heaptrack). Writing in chunks, polled out in between, keeps it small.
const CHUNK: usize = 16;

/// A frame still to write, from packet `next` on (0 for a frame not started).
pub(crate) struct Backlog {
    pub(crate) frame: Frame,
    pub(crate) rtp_time: u64,
    pub(crate) next: usize,
}

/// What a write did.
pub(crate) enum Written {
    /// Nothing could be sent (no payloads, no stream).
    Nothing,
    /// The whole frame is in.
    All,
    /// Packets from `next` on are still to write.
    Part(Backlog),
}

/// Writes up to [`CHUNK`] more of the frame's shared payloads on `mid`.
pub(crate) fn write(
    rtc: &mut Rtc,
    mid: Mid,
    pt: Pt,
    codec: Codec,
    numbering: &mut Numbering,
    todo: Backlog,
) -> Written {
    let Backlog {
        frame,
        rtp_time,
        next: from,
    } = todo;
    let Some(payloads) = payloads(codec, &frame) else {
        return Written::Nothing;
    };
    let mut api = rtc.direct_api();
    let Some(stream) = api.stream_tx_by_mid(mid, None) else {
        return Written::Nothing;
    };
    if payloads.is_empty() {
        return Written::Nothing;
    }
    let video = codec != Codec::Opus;
    let end = payloads.len().min(from + CHUNK);
    for (i, payload) in payloads.iter().enumerate().take(end).skip(from) {
        let write = RtpWrite::new(
            pt,
            SeqNo::from(numbering.take(1)),
            rtp_time as u32,
            frame.arrived,
            Arc::clone(payload),
        )
        // The marker closes a video frame; str0m keeps the packet for resends (NACK/RTX).
        .marker(video && i + 1 == payloads.len())
        .nackable(true);
        stream.write_rtp(write);
    }
    if end == payloads.len() {
        return Written::All;
    }
    Written::Part(Backlog {
        rtp_time,
        next: end,
        frame,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Instant;

    #[test]
    fn a_frame_is_packetized_once_into_payloads_under_the_mtu() {
        // SPS, PPS and a 5000-byte IDR slice in one access unit.
        let mut au = vec![
            0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1f, 0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80,
        ];
        au.extend([0, 0, 0, 1, 0x65]);
        au.extend(std::iter::repeat_n(0xab, 5000));
        let frame = Frame::new(0, true, Bytes::from(au), Instant::now());
        let clone = frame.clone();

        let first = frame
            .derived
            .get_or_init(|| packetize(Codec::H264, &frame.payload))
            .expect("payloads");
        assert!(first.1.len() >= 5, "{} payloads", first.1.len());
        assert!(first.1.iter().all(|p| p.len() <= PAYLOAD_MTU));
        // The first payload aggregates the parameter sets (STAP-A, type 24).
        assert_eq!(first.1[0][0] & 0x1f, 24);

        let again = clone
            .derived
            .get_or_init(|| Payloads(Codec::H264, Vec::new()))
            .expect("payloads");
        assert!(Arc::ptr_eq(&first.1[1], &again.1[1]), "shared, not redone");
        assert!(
            payloads(Codec::Opus, &clone).is_none(),
            "made in another codec"
        );
    }
}
