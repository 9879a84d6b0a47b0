//! Video a viewer's task seals and sends itself, past str0m's per-packet path: for H.264 in RTP
//! mode, one layer (no bandwidth estimate), over an AEAD SRTP profile ([`crate::srtp`]).
//!
//! str0m still sends each frame's first packet: its sender reports then map RTP time to
//! wallclock (what a browser syncs audio to video with), and its media address is where the
//! rest goes. The other packets are sealed here straight from the frame's shared payloads into
//! the send batch: one copy, no per-packet record in str0m. What is sent is kept here as a
//! small record (the payload is shared) for NACKs, which are read from the viewer's SRTCP and
//! answered over RTX, as str0m would.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use media::Frame;
use str0m::media::{Mid, Pt};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::Rtc;
use tracing::debug;

use crate::egress::Batch;
use crate::rtp_out::{self, Numbering};
use crate::srtp::{Keys, Opener, Sealer, TAG_LEN};

/// RTCP transport-layer feedback, and its generic NACK format (RFC 4585 §6.2.1).
const RTPFB: u8 = 205;
const NACK_FMT: u8 = 1;
/// Resends waiting at most (one NACK names at most 17 packets per entry; this bounds a flood).
const MAX_RESENDS: usize = 256;

/// One packet kept for resends: ~40 bytes, its payload shared with the frame.
struct Kept {
    seq: u64,
    time: u32,
    pt: u8,
    marker: bool,
    at: Instant,
    payload: Arc<[u8]>,
}

/// The rest of a frame to send after str0m's first packet.
struct Pending {
    frame: Frame,
    time: u32,
    pt: u8,
    /// Sequence number of payload 1.
    first_seq: u64,
}

/// Retransmission stream (RFC 4588).
struct Rtx {
    ssrc: u32,
    pt: u8,
    next: Numbering,
}

pub(crate) struct VideoOut {
    ssrc: u32,
    rtx: Option<Rtx>,
    sealer: Sealer,
    opener: Opener,
    kept: VecDeque<Kept>,
    keep_packets: usize,
    keep_for: Duration,
    pending: Option<Pending>,
    resends: VecDeque<u64>,
    /// Where str0m sends this viewer's media.
    destination: Option<SocketAddr>,
    /// Packets resent over RTX, for the log.
    pub(crate) resent: u64,
}

impl VideoOut {
    /// The sender for the video line `mid` sent with `pt`, if str0m knows its stream.
    pub(crate) fn new(
        rtc: &mut Rtc,
        mid: Mid,
        pt: Pt,
        keys: &Keys,
        keep_packets: usize,
        keep_for: Duration,
    ) -> Option<VideoOut> {
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
        Some(VideoOut {
            ssrc: *stream.ssrc(),
            rtx,
            sealer: keys.rtp_sealer(),
            opener: keys.rtcp_opener(),
            kept: VecDeque::new(),
            keep_packets,
            keep_for,
            pending: None,
            resends: VecDeque::new(),
            destination: None,
            resent: 0,
        })
    }

    /// Writes `frame`: its first packet to str0m (sent at the next poll), the rest kept to
    /// send after it ([`VideoOut::send`]). Whether anything was written.
    pub(crate) fn write(
        &mut self,
        rtc: &mut Rtc,
        mid: Mid,
        pt: Pt,
        numbering: &mut Numbering,
        frame: Frame,
        time: u64,
    ) -> bool {
        let Some(payloads) = rtp_out::payloads(str0m::format::Codec::H264, &frame) else {
            return false;
        };
        let Some(first) = payloads.first() else {
            return false;
        };
        let mut api = rtc.direct_api();
        let Some(stream) = api.stream_tx_by_mid(mid, None) else {
            return false;
        };
        let time = time as u32;
        let count = payloads.len() as u64;
        let seq = numbering.take(count);
        let now = Instant::now();
        stream.write_rtp(
            RtpWrite::new(pt, SeqNo::from(seq), time, frame.arrived, Arc::clone(first))
                .marker(count == 1),
        );
        for (i, payload) in payloads.iter().enumerate() {
            self.keep(Kept {
                seq: seq + i as u64,
                time,
                pt: *pt,
                marker: i + 1 == payloads.len(),
                at: now,
                payload: Arc::clone(payload),
            });
        }
        if count > 1 {
            self.pending = Some(Pending {
                frame,
                time,
                pt: *pt,
                first_seq: seq + 1,
            });
        }
        true
    }

    fn keep(&mut self, packet: Kept) {
        while self.kept.len() >= self.keep_packets
            || self
                .kept
                .front()
                .is_some_and(|k| packet.at.duration_since(k.at) > self.keep_for)
        {
            self.kept.pop_front();
        }
        self.kept.push_back(packet);
    }

    /// Notes where str0m sent a datagram: media goes to the same address.
    pub(crate) fn sent_to(&mut self, datagram: &[u8], destination: SocketAddr) {
        // RTP and RTCP (version 2), not STUN or DTLS.
        if datagram.first().is_some_and(|b| b >> 6 == 2) {
            self.destination = Some(destination);
        }
    }

    /// Sends what is waiting: the rest of the latest frame, then resends asked for.
    pub(crate) async fn send(&mut self, out: &mut Batch) {
        let Some(destination) = self.destination else {
            self.pending = None;
            self.resends.clear();
            return;
        };
        if let Some(p) = self.pending.take() {
            if let Some(payloads) = rtp_out::payloads(str0m::format::Codec::H264, &p.frame) {
                let last = payloads.len().saturating_sub(1);
                for (i, payload) in payloads.iter().enumerate().skip(1) {
                    let seq = p.first_seq + (i as u64 - 1);
                    let header = header(p.pt, i == last, seq as u16, p.time, self.ssrc);
                    let (sealer, ssrc) = (&mut self.sealer, self.ssrc);
                    out.push_with(destination, sealed_len(payload.len()), |buf| {
                        sealer.seal(&header, ssrc, seq, payload, buf)
                    })
                    .await;
                }
            }
        }
        while let Some(seq) = self.resends.pop_front() {
            self.resend(seq, destination, out).await;
        }
    }

    async fn resend(&mut self, seq: u64, destination: SocketAddr, out: &mut Batch) {
        let Some(front) = self.kept.front().map(|k| k.seq) else {
            return;
        };
        let Some(kept) = seq
            .checked_sub(front)
            .and_then(|i| self.kept.get(i as usize))
            .filter(|k| k.seq == seq)
        else {
            return;
        };
        match self.rtx.as_mut() {
            Some(rtx) => {
                // RFC 4588: the original sequence number, then the original payload.
                let mut payload = Vec::with_capacity(2 + kept.payload.len());
                payload.extend_from_slice(&(seq as u16).to_be_bytes());
                payload.extend_from_slice(&kept.payload);
                let rtx_seq = rtx.next.take(1);
                let header = header(rtx.pt, kept.marker, rtx_seq as u16, kept.time, rtx.ssrc);
                let (sealer, ssrc) = (&mut self.sealer, rtx.ssrc);
                out.push_with(destination, sealed_len(payload.len()), |buf| {
                    sealer.seal(&header, ssrc, rtx_seq, &payload, buf)
                })
                .await;
            }
            None => {
                // Without RTX the packet goes again as it was (same index: same bytes).
                let header = header(kept.pt, kept.marker, seq as u16, kept.time, self.ssrc);
                let (sealer, ssrc, payload) = (&mut self.sealer, self.ssrc, &kept.payload);
                out.push_with(destination, sealed_len(payload.len()), |buf| {
                    sealer.seal(&header, ssrc, seq, payload, buf)
                })
                .await;
            }
        }
        self.resent += 1;
    }

    /// Reads a datagram the viewer sent: if it is SRTCP carrying NACKs for our video, the
    /// packets still kept are queued to resend. Whether any were.
    pub(crate) fn on_datagram(&mut self, datagram: &[u8]) -> bool {
        if !is_rtcp(datagram) {
            return false;
        }
        let Some(rtcp) = self.opener.open(datagram) else {
            return false;
        };
        let Some(latest) = self.kept.back().map(|k| k.seq) else {
            return false;
        };
        let before = self.resends.len();
        for lost in nacked(&rtcp, self.ssrc) {
            if self.resends.len() >= MAX_RESENDS {
                debug!("NACKs past the resend queue; dropped");
                break;
            }
            let Some(seq) = extend(latest, lost) else {
                continue;
            };
            if !self.resends.contains(&seq) {
                self.resends.push_back(seq);
            }
        }
        let queued = self.resends.len() - before;
        if queued > 0 {
            debug!(packets = queued, "NACK answered");
        }
        queued > 0
    }
}

/// Bytes of a sealed packet with a plain 12-byte header.
fn sealed_len(payload: usize) -> usize {
    12 + payload + TAG_LEN
}

/// A 12-byte RTP header: version 2, no padding, extensions or CSRCs.
fn header(pt: u8, marker: bool, seq: u16, time: u32, ssrc: u32) -> [u8; 12] {
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
        let Some(packet) = rtcp.get(..len) else { break };
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
        rtcp = &rtcp[len..];
    }
    lost
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let h = header(96, true, 0x1234, 0x0102_0304, 0xAABB_CCDD);
        assert_eq!(
            h,
            [0x80, 0xE0, 0x12, 0x34, 1, 2, 3, 4, 0xAA, 0xBB, 0xCC, 0xDD]
        );
    }
}
