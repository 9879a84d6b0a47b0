//! FTL media, pure: RTP packets in (H.264 per RFC 6184, single NAL units and FU-A as ftl-sdk
//! sends them, STAP-A too), whole access units out in order, and NACKs for what is missing.
//! ftl-sdk keeps its last 2048 packets per stream and resends one as it was on a generic NACK.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

pub(super) use crate::unwrap::Unwrap;

/// A missing packet is asked for again after this long, up to [`MAX_NACKS`] times.
const NACK_RETRY: Duration = Duration::from_millis(80);
const MAX_NACKS: u8 = 3;
/// A frame still incomplete this long after its gap was seen is given up.
const GIVE_UP: Duration = Duration::from_millis(400);
/// Packets held while waiting for a missing one, at most (~5 MB of video).
const MAX_HELD: usize = 4096;
/// Missing packets tracked at once, at most.
const MAX_MISSING: usize = 512;
/// Largest access unit assembled.
const MAX_FRAME: usize = 8 << 20;

/// The fields of an RTP packet that matter here.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Rtp {
    pub(super) payload_type: u8,
    pub(super) marker: bool,
    pub(super) seq: u16,
    pub(super) timestamp: u32,
    pub(super) ssrc: u32,
    pub(super) payload: Bytes,
}

impl Rtp {
    /// Parses an RTP packet (version 2; CSRCs, a header extension and padding skipped).
    pub(super) fn parse(datagram: &Bytes) -> Option<Self> {
        let b = datagram.get(..12)?;
        if b[0] >> 6 != 2 {
            return None;
        }
        let mut start = 12 + 4 * usize::from(b[0] & 0x0f);
        if b[0] & 0x10 != 0 {
            let ext = datagram.get(start..start + 4)?;
            start += 4 + 4 * usize::from(u16::from_be_bytes([ext[2], ext[3]]));
        }
        let mut end = datagram.len();
        if b[0] & 0x20 != 0 {
            end = end.checked_sub(usize::from(*datagram.last()?))?;
        }
        if start > end {
            return None;
        }
        Some(Self {
            payload_type: b[1] & 0x7f,
            marker: b[1] & 0x80 != 0,
            seq: u16::from_be_bytes([b[2], b[3]]),
            timestamp: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            ssrc: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
            payload: datagram.slice(start..end),
        })
    }
}

struct Held {
    timestamp: u32,
    marker: bool,
    payload: Bytes,
}

struct Missing {
    since: Instant,
    last_nack: Instant,
    nacks: u8,
}

/// One access unit, in Annex B.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct VideoFrame {
    pub(super) timestamp: u32,
    pub(super) keyframe: bool,
    pub(super) data: Bytes,
}

/// Reorders a video stream's packets, asks for the missing ones, and assembles frames.
#[derive(Default)]
pub(super) struct VideoReceiver {
    seqs: Unwrap,
    held: BTreeMap<u64, Held>,
    missing: BTreeMap<u64, Missing>,
    /// The first packet of the next frame to assemble.
    next: Option<u64>,
    highest: Option<u64>,
    /// After a frame was given up, frames wait for the next keyframe.
    need_keyframe: bool,
    /// Frames given up so far.
    pub(super) lost_frames: u64,
}

impl VideoReceiver {
    /// Takes one packet; returns the sequence numbers to ask for now.
    pub(super) fn push(&mut self, rtp: Rtp, now: Instant) -> Vec<u16> {
        let seq = self.seqs.extend(u64::from(rtp.seq), 16);
        let next = *self.next.get_or_insert(seq);
        if seq < next || self.held.contains_key(&seq) {
            return Vec::new(); // late or duplicate
        }
        self.missing.remove(&seq);
        let mut nacks = Vec::new();
        if let Some(highest) = self.highest.filter(|h| seq > h + 1) {
            for gap in (highest + 1..seq).take(MAX_MISSING) {
                if self.missing.len() >= MAX_MISSING {
                    break;
                }
                self.missing.insert(
                    gap,
                    Missing {
                        since: now,
                        last_nack: now,
                        nacks: 1,
                    },
                );
                nacks.push(gap as u16);
            }
        }
        self.highest = Some(self.highest.map_or(seq, |h| h.max(seq)));
        self.held.insert(
            seq,
            Held {
                timestamp: rtp.timestamp,
                marker: rtp.marker,
                payload: rtp.payload,
            },
        );
        nacks
    }

    /// Frames now complete, in order, and the sequence numbers to ask for again.
    pub(super) fn poll(&mut self, now: Instant) -> (Vec<VideoFrame>, Vec<u16>) {
        let mut frames = Vec::new();
        loop {
            if let Some(frame) = self.take_frame() {
                if let Some(frame) = frame {
                    frames.push(frame);
                }
                continue;
            }
            if !self.give_up_stale(now) {
                break;
            }
        }
        let mut nacks = Vec::new();
        for (seq, m) in &mut self.missing {
            if m.nacks < MAX_NACKS && now.duration_since(m.last_nack) >= NACK_RETRY {
                m.nacks += 1;
                m.last_nack = now;
                nacks.push(*seq as u16);
            }
        }
        (frames, nacks)
    }

    /// The next frame if all its packets are here: `Some(None)` when it was assembled but
    /// dropped (waiting for a keyframe, or malformed), `None` when it is not complete.
    fn take_frame(&mut self) -> Option<Option<VideoFrame>> {
        let start = self.next?;
        let mut end = start;
        loop {
            let held = self.held.get(&end)?;
            if held.marker {
                break;
            }
            end += 1;
        }
        let packets: Vec<Held> = (start..=end).filter_map(|s| self.held.remove(&s)).collect();
        self.next = Some(end + 1);
        let timestamp = packets.first().map_or(0, |p| p.timestamp);
        let Some((data, keyframe)) = depacketize(&packets) else {
            self.lost_frames += 1;
            self.need_keyframe = true;
            return Some(None);
        };
        if self.need_keyframe && !keyframe {
            return Some(None);
        }
        self.need_keyframe = false;
        Some(Some(VideoFrame {
            timestamp,
            keyframe,
            data,
        }))
    }

    /// Gives up the frame at the head if a packet it needs has been missing too long, or too
    /// much is held: skips to the frame after the next marker held. Whether it skipped.
    fn give_up_stale(&mut self, now: Instant) -> bool {
        let Some(start) = self.next else {
            return false;
        };
        let stale = self
            .missing
            .range(start..)
            .next()
            .is_some_and(|(_, m)| now.duration_since(m.since) >= GIVE_UP);
        if !stale && self.held.len() <= MAX_HELD {
            return false;
        }
        // The first frame boundary after the head: the packet after a held marker.
        let Some(resume) = self
            .held
            .range(start..)
            .find(|(_, h)| h.marker)
            .map(|(s, _)| s + 1)
        else {
            // No complete frame end held yet: drop everything up to the highest seen.
            let resume = self.highest.map_or(start, |h| h + 1);
            self.discard_before(resume);
            return false;
        };
        self.discard_before(resume);
        true
    }

    fn discard_before(&mut self, resume: u64) {
        self.held = self.held.split_off(&resume);
        self.missing = self.missing.split_off(&resume);
        self.next = Some(resume);
        self.lost_frames += 1;
        self.need_keyframe = true;
    }
}

/// An access unit from its packets' payloads: Annex B, and whether it has an IDR slice.
fn depacketize(packets: &[Held]) -> Option<(Bytes, bool)> {
    let mut out = BytesMut::new();
    let mut keyframe = false;
    let mut in_fragment = false;
    for p in packets {
        let payload = &p.payload[..];
        let header = *payload.first()?;
        match header & 0x1f {
            1..=23 => {
                keyframe |= header & 0x1f == 5;
                out.put_slice(&[0, 0, 0, 1]);
                out.put_slice(payload);
            }
            24 => {
                // STAP-A: 16-bit sizes, then the units.
                let mut rest = &payload[1..];
                while rest.len() >= 2 {
                    let size = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                    let unit = rest.get(2..2 + size)?;
                    keyframe |= unit.first().is_some_and(|h| h & 0x1f == 5);
                    out.put_slice(&[0, 0, 0, 1]);
                    out.put_slice(unit);
                    rest = &rest[2 + size..];
                }
            }
            28 => {
                let fu = *payload.get(1)?;
                let (start, end) = (fu & 0x80 != 0, fu & 0x40 != 0);
                if start {
                    let nal = (header & 0xe0) | (fu & 0x1f);
                    keyframe |= nal & 0x1f == 5;
                    out.put_slice(&[0, 0, 0, 1, nal]);
                    in_fragment = true;
                } else if !in_fragment {
                    return None; // a fragment without its start
                }
                out.put_slice(&payload[2..]);
                if end {
                    in_fragment = false;
                }
            }
            _ => return None,
        }
        if out.len() > MAX_FRAME {
            return None;
        }
    }
    (!out.is_empty()).then(|| (out.freeze(), keyframe))
}

/// A generic NACK (RFC 4585 6.2.1) for `seqs` of `ssrc`, as ftl-sdk reads it.
pub(super) fn nack(ssrc: u32, seqs: &[u16]) -> Vec<u8> {
    let mut entries: Vec<(u16, u16)> = Vec::new();
    for &seq in seqs {
        match entries.last_mut() {
            Some((pid, blp)) if seq.wrapping_sub(*pid).wrapping_sub(1) < 16 && seq != *pid => {
                *blp |= 1 << seq.wrapping_sub(*pid).wrapping_sub(1);
            }
            _ => entries.push((seq, 0)),
        }
    }
    let mut out = Vec::with_capacity(12 + 4 * entries.len());
    out.extend([0x81, 205]);
    out.extend(((2 + entries.len()) as u16).to_be_bytes());
    out.extend(ssrc.to_be_bytes()); // sender SSRC: as Janus, the media SSRC
    out.extend(ssrc.to_be_bytes());
    for (pid, blp) in entries {
        out.extend(pid.to_be_bytes());
        out.extend(blp.to_be_bytes());
    }
    out
}

#[cfg(test)]
#[path = "media_tests.rs"]
mod tests;
