//! Media a viewer's task seals and sends itself, past str0m's per-packet path: H.264 video and
//! Opus audio in RTP mode, one layer (no bandwidth estimate), over an AEAD SRTP profile
//! ([`crate::srtp`]).
//!
//! Packets are sealed here straight from the frame's shared payloads into the send batch: one
//! copy, no per-packet record in str0m. str0m still sends a frame's first packet every
//! [`STR0M_EVERY`]: its sender reports then map RTP time to wallclock (what a browser syncs
//! audio to video with; it extrapolates from the latest packet it sent), and its media address
//! is where ours go. Sent video is kept here as a small record (the payload is shared) for
//! NACKs, which are read from the viewer's SRTCP and answered over RTX, as str0m would.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use media::Frame;
use str0m::format::Codec;
use str0m::media::{Mid, Pt};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::Rtc;
use tracing::debug;

use crate::dtls::PeerFinished;
use crate::egress::{Batch, Path};
use crate::rtp_out::{self, Numbering};
use crate::srtp::{Keys, Opener, Sealer, TAG_LEN};

/// RTCP transport-layer feedback, and its generic NACK format (RFC 4585 §6.2.1).
const RTPFB: u8 = 205;
const NACK_FMT: u8 = 1;
/// Times one packet is resent at most, however often it is asked for (a resend lost on the
/// way is asked for again; a viewer asking for ever gets nothing more).
const MAX_RESENDS_PER_PACKET: u8 = 3;
/// Header extensions copied from str0m's packet, at most (it writes a few bytes: the MID).
const MAX_EXT: usize = 32;
const HEADER_MAX: usize = 12 + MAX_EXT;
/// How often str0m sends a frame's first packet.
const STR0M_EVERY: Duration = Duration::from_millis(500);
/// After an ICE restart str0m sends every frame's first packet for this long: the address
/// it sends to moves to the newly nominated path, and ours follows at each of its packets.
const STR0M_AFTER_RESTART: Duration = Duration::from_secs(5);

/// One packet kept for resends: 32 bytes, its payload shared with the frame. Its sequence
/// number is its place in the queue (numbers are consecutive).
struct Kept {
    payload: Arc<[u8]>,
    time: u32,
    /// When it was sent: milliseconds since the sender was made.
    at: u32,
    marker: bool,
    /// In the resend queue now.
    queued: bool,
    resends: u8,
}

/// Sent video kept for resends: consecutive sequence numbers from `front`, bounded in count
/// and age.
struct Store {
    kept: VecDeque<Kept>,
    /// Sequence number of the first kept packet.
    front: u64,
    /// What `Kept::at` counts from.
    epoch: Instant,
    max_packets: usize,
    max_age_ms: u32,
}

impl Store {
    fn new(max_packets: usize, max_age: Duration) -> Store {
        Store {
            kept: VecDeque::new(),
            front: 0,
            epoch: Instant::now(),
            max_packets,
            max_age_ms: u32::try_from(max_age.as_millis()).unwrap_or(u32::MAX),
        }
    }

    fn millis(&self, now: Instant) -> u32 {
        u32::try_from(now.duration_since(self.epoch).as_millis()).unwrap_or(u32::MAX)
    }

    /// Keeps packet `seq`; a number that does not follow the last kept starts the store anew.
    fn keep(&mut self, seq: u64, packet: Kept) {
        if seq != self.front + self.kept.len() as u64 {
            self.kept.clear();
            self.front = seq;
        }
        while self.kept.len() >= self.max_packets
            || self
                .kept
                .front()
                .is_some_and(|k| packet.at.saturating_sub(k.at) > self.max_age_ms)
        {
            self.kept.pop_front();
            self.front += 1;
        }
        if self.kept.len() == self.kept.capacity() {
            // Grow by a quarter, not double: live video needs about as much as it kept so far.
            let room = (self.kept.len() / 4).clamp(16, self.max_packets.max(16));
            self.kept.reserve_exact(room);
        }
        self.kept.push_back(packet);
    }

    /// The packet numbered `seq`, while it is kept and young enough to resend at `now`.
    fn get_mut(&mut self, seq: u64, now: Instant) -> Option<&mut Kept> {
        let now = self.millis(now);
        let index = usize::try_from(seq.checked_sub(self.front)?).ok()?;
        let max_age = self.max_age_ms;
        self.kept
            .get_mut(index)
            .filter(|k| now.saturating_sub(k.at) <= max_age)
    }

    /// The latest sequence number kept.
    fn latest(&self) -> Option<u64> {
        let len = self.kept.len() as u64;
        (len > 0).then(|| self.front + len - 1)
    }
}

/// A frame to send here, from payload `from` on (1 when str0m sent the first).
struct Pending {
    frame: Frame,
    time: u32,
    pt: u8,
    from: usize,
    /// Sequence number of payload 0.
    seq: u64,
}

/// What a write did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Wrote {
    Nothing,
    /// All of the frame is to send here.
    Here,
    /// Its first packet went to str0m, to send at its next poll.
    WithStr0m,
}

/// Retransmission stream (RFC 4588). This task numbers it alone: str0m sends on it only
/// packets from its resend cache (none: the video it is given is not nackable) and padding,
/// which it makes only for a bandwidth estimate (which a one-layer viewer does not run).
struct Rtx {
    ssrc: u32,
    pt: u8,
    next: Numbering,
}

pub(crate) struct MediaOut {
    codec: Codec,
    ssrc: u32,
    /// `None` without RTX: NACKs are not answered (as str0m does not without RTX).
    rtx: Option<Rtx>,
    sealer: Sealer,
    opener: Opener,
    /// Told at the first SRTCP that opens, then dropped.
    peer_finished: Option<PeerFinished>,
    store: Store,
    pending: Option<Pending>,
    resends: VecDeque<u64>,
    /// When str0m was last given a packet.
    str0m_wrote: Option<Instant>,
    /// str0m gets every frame's first packet until then (after an ICE restart).
    str0m_until: Option<Instant>,
    /// Where str0m sends this viewer's media (and from which of our addresses).
    destination: Option<Path>,
    /// The header extensions str0m wrote on the latest first packet (the MID, until the
    /// viewer's receiver report shows it knows the SSRC): repeated on the rest of the frame, so
    /// its packets carry the same header and have one length (one GSO send).
    ext: [u8; MAX_EXT],
    ext_len: usize,
    /// Packets resent over RTX, for the log.
    pub(crate) resent: u64,
}

impl MediaOut {
    /// The sender for the line `mid` sent with `pt` in `codec`, if str0m knows its stream.
    pub(crate) fn new(
        rtc: &mut Rtc,
        mid: Mid,
        pt: Pt,
        codec: Codec,
        keys: &Keys,
    ) -> Option<MediaOut> {
        let rtx_pt = crate::http::negotiated(rtc, mid)
            .iter()
            .find(|p| p.pt() == pt)
            .and_then(|p| p.resend());
        let mut api = rtc.direct_api();
        let stream = api.stream_tx_by_mid(mid, None)?;
        let rtx = match (stream.rtx(), rtx_pt) {
            (Some(ssrc), Some(pt)) => Some(Rtx {
                ssrc: *ssrc,
                pt: *pt,
                next: Numbering::new(),
            }),
            _ => None,
        };
        Some(MediaOut {
            codec,
            ssrc: *stream.ssrc(),
            rtx,
            sealer: keys.rtp_sealer(),
            opener: keys.rtcp_opener(),
            peer_finished: Some(keys.peer_finished.clone()),
            store: Store::new(crate::http::RESEND_MAX_PACKETS, crate::http::RESEND_WINDOW),
            pending: None,
            resends: VecDeque::new(),
            str0m_wrote: None,
            str0m_until: None,
            destination: None,
            ext: [0; MAX_EXT],
            ext_len: 0,
            resent: 0,
        })
    }

    /// Writes `frame` at RTP time `time`: all of it to send here ([`MediaOut::send`]), or,
    /// every [`STR0M_EVERY`] and whenever `to_str0m` (the timeline was rebased), its first
    /// packet to str0m (sent at its next poll) and the rest here after it.
    pub(crate) fn write(
        &mut self,
        rtc: &mut Rtc,
        mid: Mid,
        pt: Pt,
        numbering: &mut Numbering,
        (frame, time): (Frame, u64),
        to_str0m: bool,
    ) -> Wrote {
        let Some(payloads) = rtp_out::payloads(self.codec, &frame) else {
            return Wrote::Nothing;
        };
        let Some(first) = payloads.first() else {
            return Wrote::Nothing;
        };
        let video = self.codec != Codec::Opus;
        let time = time as u32;
        let count = payloads.len() as u64;
        let now = Instant::now();
        let str0m_due = to_str0m
            || self.destination.is_none()
            || self.str0m_until.is_some_and(|until| now < until)
            || self
                .str0m_wrote
                .is_none_or(|at| now.duration_since(at) >= STR0M_EVERY);
        let seq = if str0m_due {
            let mut api = rtc.direct_api();
            let Some(stream) = api.stream_tx_by_mid(mid, None) else {
                return Wrote::Nothing;
            };
            let seq = numbering.take(count);
            // Not nackable: str0m keeps no record of it, and never resends on the RTX stream.
            stream.write_rtp(
                RtpWrite::new(pt, SeqNo::from(seq), time, frame.arrived, Arc::clone(first))
                    .marker(video && count == 1),
            );
            self.str0m_wrote = Some(now);
            seq
        } else {
            numbering.take(count)
        };
        let from = usize::from(str0m_due);
        if video {
            let at = self.store.millis(now);
            for (i, payload) in payloads.iter().enumerate() {
                self.store.keep(
                    seq + i as u64,
                    Kept {
                        payload: Arc::clone(payload),
                        time,
                        at,
                        marker: i + 1 == payloads.len(),
                        queued: false,
                        resends: 0,
                    },
                );
            }
        }
        if from < payloads.len() {
            self.pending = Some(Pending {
                frame,
                time,
                pt: *pt,
                from,
                seq,
            });
        }
        if str0m_due {
            Wrote::WithStr0m
        } else {
            Wrote::Here
        }
    }

    /// The join burst (the cached group) is past: the queue gives back the room it took, to
    /// grow only as far as live video needs.
    pub(crate) fn joined(&mut self) {
        self.store.kept.shrink_to_fit();
    }

    /// Notes a datagram str0m sent: media goes to the same address, and the first packet of a
    /// frame lends its header extensions to the rest.
    pub(crate) fn sent_to(&mut self, datagram: &[u8], destination: Path) {
        // RTP and RTCP (version 2), not STUN or DTLS.
        if datagram.first().is_some_and(|b| b >> 6 == 2) {
            self.destination = Some(destination);
        }
        if let Some(ext) = extensions(datagram, self.ssrc) {
            if ext.len() <= MAX_EXT {
                self.ext[..ext.len()].copy_from_slice(ext);
                self.ext_len = ext.len();
            }
        }
    }

    /// The media address may change (ICE restart): for a while str0m sends every frame's
    /// first packet, and its address is ours.
    pub(crate) fn forget_destination(&mut self) {
        self.destination = None;
        self.str0m_until = Some(Instant::now() + STR0M_AFTER_RESTART);
    }

    /// A header for this stream's packets: version 2, the extensions str0m wrote.
    fn header(&self, pt: u8, marker: bool, seq: u16, time: u32) -> ([u8; HEADER_MAX], usize) {
        let mut h = [0u8; HEADER_MAX];
        h[..12].copy_from_slice(&plain_header(pt, marker, seq, time, self.ssrc));
        if self.ext_len > 0 {
            h[0] |= 0x10;
            h[12..12 + self.ext_len].copy_from_slice(&self.ext[..self.ext_len]);
        }
        (h, 12 + self.ext_len)
    }

    /// Sends what is waiting: the latest frame (or its rest), then resends asked for. Whether a
    /// frame's first packet went out here.
    pub(crate) async fn send(&mut self, out: &mut Batch) -> bool {
        let Some(destination) = self.destination else {
            self.pending = None;
            self.clear_resends();
            return false;
        };
        let mut started = false;
        if let Some(p) = self.pending.take() {
            if let Some(payloads) = rtp_out::payloads(self.codec, &p.frame) {
                let video = self.codec != Codec::Opus;
                let last = payloads.len().saturating_sub(1);
                started = p.from == 0 && !payloads.is_empty();
                for (i, payload) in payloads.iter().enumerate().skip(p.from) {
                    let seq = p.seq + i as u64;
                    let marker = video && i == last;
                    let (header, len) = self.header(p.pt, marker, seq as u16, p.time);
                    let (sealer, ssrc) = (&mut self.sealer, self.ssrc);
                    out.push_with(destination, len + payload.len() + TAG_LEN, |buf| {
                        sealer.seal(&header[..len], ssrc, seq, payload, buf)
                    })
                    .await;
                }
            }
        }
        while let Some(seq) = self.resends.pop_front() {
            self.resend(seq, destination, out).await;
        }
        started
    }

    fn clear_resends(&mut self) {
        while let Some(seq) = self.resends.pop_front() {
            if let Some(k) = self.store.get_mut(seq, Instant::now()) {
                k.queued = false;
            }
        }
    }

    /// Resends a kept packet over RTX (RFC 4588: the original sequence number, then the
    /// original payload, on the RTX stream's own numbers).
    async fn resend(&mut self, seq: u64, destination: Path, out: &mut Batch) {
        let Some(kept) = self.store.get_mut(seq, Instant::now()) else {
            return;
        };
        kept.queued = false;
        kept.resends += 1;
        let (time, marker) = (kept.time, kept.marker);
        let mut payload = Vec::with_capacity(2 + kept.payload.len());
        payload.extend_from_slice(&(seq as u16).to_be_bytes());
        payload.extend_from_slice(&kept.payload);
        let Some(rtx) = self.rtx.as_mut() else {
            return;
        };
        let rtx_seq = rtx.next.take(1);
        let header = plain_header(rtx.pt, marker, rtx_seq as u16, time, rtx.ssrc);
        let (sealer, ssrc) = (&mut self.sealer, rtx.ssrc);
        out.push_with(destination, 12 + payload.len() + TAG_LEN, |buf| {
            sealer.seal(&header, ssrc, rtx_seq, &payload, buf)
        })
        .await;
        self.resent += 1;
    }

    /// Reads a datagram the viewer sent: if it is SRTCP carrying NACKs for our video, the
    /// packets still kept are queued to resend. The first SRTCP that opens
    /// tells the DTLS session the viewer finished its handshake.
    pub(crate) fn on_datagram(&mut self, datagram: &[u8]) {
        if (self.rtx.is_none() && self.peer_finished.is_none()) || !is_rtcp(datagram) {
            return;
        }
        let Some(rtcp) = self.opener.open(datagram) else {
            return;
        };
        if let Some(peer_finished) = self.peer_finished.take() {
            peer_finished.confirm();
        }
        if self.rtx.is_none() {
            return;
        }
        let Some(latest) = self.store.latest() else {
            return;
        };
        let now = Instant::now();
        let mut queued = 0;
        for lost in nacked(&rtcp, self.ssrc) {
            let Some(seq) = extend(latest, lost) else {
                continue;
            };
            let Some(kept) = self.store.get_mut(seq, now) else {
                continue;
            };
            if kept.queued || kept.resends >= MAX_RESENDS_PER_PACKET {
                continue;
            }
            kept.queued = true;
            self.resends.push_back(seq);
            queued += 1;
        }
        if queued > 0 {
            debug!(packets = queued, "NACK answered");
        }
    }
}

/// The header extension block (profile, length, elements) of an RTP packet str0m sent on
/// `ssrc`; empty if it has none; `None` if it is not such a packet.
fn extensions(datagram: &[u8], ssrc: u32) -> Option<&[u8]> {
    if datagram.len() < 12 || datagram[0] >> 6 != 2 || is_rtcp(datagram) {
        return None;
    }
    if datagram[8..12] != ssrc.to_be_bytes() || datagram[0] & 0x0f != 0 {
        return None;
    }
    if datagram[0] & 0x10 == 0 {
        return Some(&[]);
    }
    let words = usize::from(u16::from_be_bytes([*datagram.get(14)?, *datagram.get(15)?]));
    datagram.get(12..16 + 4 * words)
}

/// A 12-byte RTP header: version 2, no padding, extensions or CSRCs.
fn plain_header(pt: u8, marker: bool, seq: u16, time: u32, ssrc: u32) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[0] = 0x80;
    h[1] = (u8::from(marker) << 7) | (pt & 0x7f);
    h[2..4].copy_from_slice(&seq.to_be_bytes());
    h[4..8].copy_from_slice(&time.to_be_bytes());
    h[8..12].copy_from_slice(&ssrc.to_be_bytes());
    h
}

/// RTCP (payload types 192-223 share the first byte's range with RTP; RFC 5761 §4).
fn is_rtcp(datagram: &[u8]) -> bool {
    datagram.len() >= 8 && datagram[0] >> 6 == 2 && (64..96).contains(&(datagram[1] & 0x7f))
}

/// The 16-bit sequence number `lost` as the extended one nearest at or below `latest`
/// (`None` if that would be before the first).
fn extend(latest: u64, lost: u16) -> Option<u64> {
    let candidate = (latest & !0xffff) | u64::from(lost);
    if candidate > latest {
        candidate.checked_sub(0x1_0000)
    } else {
        Some(candidate)
    }
}

/// The sequence numbers a compound RTCP packet NACKs for `ssrc`.
fn nacked(mut rtcp: &[u8], ssrc: u32) -> Vec<u16> {
    let mut lost = Vec::new();
    while rtcp.len() >= 4 {
        let words = usize::from(u16::from_be_bytes([rtcp[2], rtcp[3]]));
        let len = (words + 1) * 4;
        let Some(mut packet) = rtcp.get(..len) else {
            break;
        };
        rtcp = &rtcp[len..];
        if packet[0] & 0x20 != 0 {
            // Padding: its last byte counts it.
            let pad = usize::from(packet[len - 1]);
            let Some(unpadded) = packet.get(..len.saturating_sub(pad).max(4)) else {
                break;
            };
            packet = unpadded;
        }
        let (fmt, pt) = (packet[0] & 0x1f, packet[1]);
        if pt == RTPFB && fmt == NACK_FMT && packet.len() >= 12 {
            let media = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
            if media == ssrc {
                for entry in packet[12..].chunks_exact(4) {
                    let pid = u16::from_be_bytes([entry[0], entry[1]]);
                    let blp = u16::from_be_bytes([entry[2], entry[3]]);
                    lost.push(pid);
                    for bit in 0..16u16 {
                        if blp & (1 << bit) != 0 {
                            lost.push(pid.wrapping_add(bit + 1));
                        }
                    }
                }
            }
        }
    }
    lost
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(store: &Store, at: Instant) -> Kept {
        Kept {
            payload: Arc::from(&[1u8, 2, 3][..]),
            time: 0,
            at: store.millis(at),
            marker: false,
            queued: false,
            resends: 0,
        }
    }

    #[test]
    fn the_store_keeps_the_latest_packets_in_count_and_age() {
        let start = Instant::now();
        let mut store = Store::new(4, Duration::from_millis(500));
        assert_eq!(std::mem::size_of::<Kept>(), 32);
        assert_eq!(store.latest(), None);
        for seq in 100..106 {
            let p = packet(&store, start);
            store.keep(seq, p);
        }
        // At most 4: 102..=105.
        assert_eq!(store.latest(), Some(105));
        assert!(store.get_mut(101, start).is_none());
        assert!(store.get_mut(102, start).is_some());
        assert!(store.get_mut(106, start).is_none());
        // Too old to resend, and pushed out by a younger packet.
        let later = start + Duration::from_millis(600);
        assert!(store.get_mut(105, later).is_none());
        let p = packet(&store, later);
        store.keep(106, p);
        assert_eq!((store.front, store.kept.len()), (106, 1));
        // A gap in the numbers starts the store anew.
        let p = packet(&store, later);
        store.keep(200, p);
        assert_eq!((store.front, store.latest()), (200, Some(200)));
        assert!(store.get_mut(106, later).is_none());
    }

    #[test]
    fn a_nack_names_its_pid_and_the_bits_after_it() {
        // A receiver report (ignored), then a NACK for SSRC 9: 100, 101 and 116; 65535 and 0.
        let mut rtcp = vec![0x80, 201, 0, 1, 0, 0, 0, 1];
        rtcp.extend([0x81, RTPFB, 0, 4, 0, 0, 0, 1, 0, 0, 0, 9]);
        rtcp.extend([0, 100, 0x80, 0x01, 0xff, 0xff, 0, 1]);
        assert_eq!(nacked(&rtcp, 9), vec![100, 101, 116, 65535, 0]);
        assert!(nacked(&rtcp, 10).is_empty(), "another stream's NACK");
        // A length past the end stops the walk.
        assert!(nacked(&[0x81, RTPFB, 0, 40, 0, 0, 0, 1], 9).is_empty());
    }

    #[test]
    fn rtcp_padding_is_not_read_as_a_nack_entry() {
        // A padded NACK: one entry (PID 7), then 4 bytes of padding counting themselves.
        let rtcp = [
            0xA1, RTPFB, 0, 4, 0, 0, 0, 1, 0, 0, 0, 9, 0, 7, 0, 0, 0, 0, 0, 4,
        ];
        assert_eq!(nacked(&rtcp, 9), vec![7]);
        // Padding that claims more than the packet holds reads nothing past it.
        let bad = [0xA1, RTPFB, 0, 3, 0, 0, 0, 1, 0, 0, 0, 9, 0, 7, 0, 0xff];
        assert!(nacked(&bad, 9).len() <= 1);
    }

    #[test]
    fn str0m_extensions_are_found_on_our_stream_only() {
        // X bit, one word of extensions (the one-byte profile, MID "0").
        let mut packet = vec![0x90, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9];
        packet.extend([0xBE, 0xDE, 0, 1, 0x10, b'0', 0, 0]);
        packet.extend([0xAB; 20]);
        assert_eq!(extensions(&packet, 9), Some(&packet[12..20]));
        assert_eq!(extensions(&packet, 10), None, "another SSRC");
        let plain = [0x80, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9, 1, 2];
        assert_eq!(extensions(&plain, 9), Some(&[][..]));
        let truncated = [0x90, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9, 0xBE, 0xDE, 0, 9];
        assert_eq!(extensions(&truncated, 9), None);
        assert_eq!(extensions(&[0x81, 205, 0, 1, 0, 0, 0, 9], 9), None, "RTCP");
    }

    #[test]
    fn a_nacked_number_extends_to_the_latest_cycle_or_the_one_before() {
        assert_eq!(extend(70_000, 4_000), Some(69_536));
        assert_eq!(extend(70_000, 60_000), Some(60_000));
        assert_eq!(extend(1_000, 900), Some(900));
        assert_eq!(extend(1_000, 2_000), None, "before the first packet");
    }

    #[test]
    fn rtcp_is_told_from_rtp_by_payload_type() {
        assert!(is_rtcp(&[0x81, 205, 0, 4, 0, 0, 0, 1]));
        assert!(is_rtcp(&[0x80, 200, 0, 6, 0, 0, 0, 1]));
        assert!(!is_rtcp(&[0x80, 96, 0, 1, 0, 0, 0, 1]));
        assert!(!is_rtcp(&[0x80, 0xe0, 0, 1, 0, 0, 0, 1]), "marker + PT 96");
        assert!(!is_rtcp(&[0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0]), "DTLS");
    }

    #[test]
    fn the_header_carries_marker_payload_type_and_numbers() {
        let h = plain_header(96, true, 0x1234, 0x0102_0304, 0xAABB_CCDD);
        assert_eq!(
            h,
            [0x80, 0xE0, 0x12, 0x34, 1, 2, 3, 4, 0xAA, 0xBB, 0xCC, 0xDD]
        );
    }
}
