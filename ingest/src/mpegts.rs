//! MPEG-TS demuxing (ISO/IEC 13818-1): 188-byte transport packets in, one unit per PES packet
//! out (an H.264 or H.265 access unit, a run of ADTS AAC frames, or Opus access units), with
//! presentation times unwrapped past the 33-bit wrap. Pure, bounded and total: any bytes give
//! some (possibly empty) output and counted errors, never a panic, so it can be fuzzed.
//!
//! A unit whose PES length is known (audio) is emitted as soon as its last byte arrives. A video
//! PES states no length: it ends when the next one starts on its PID, one frame later, or, with
//! muxers that pad the last packet of each PES (ffmpeg's, so OBS's), at that padded packet: a
//! frame interval sooner. A stream whose muxer pads in the middle of a PES is noticed (more
//! payload after such an end) and goes back to waiting for the next start.

use bytes::{Bytes, BytesMut};

use crate::unwrap::Unwrap;

/// Size of one transport packet.
pub const PACKET_SIZE: usize = 188;
const SYNC: u8 = 0x47;
const PAT_PID: u16 = 0;
const NULL_PID: u16 = 0x1fff;
/// Largest video PES kept (a 4K keyframe is a few MB at most).
const MAX_VIDEO_PES: usize = 8 << 20;
/// Largest audio PES kept.
const MAX_AUDIO_PES: usize = 256 << 10;
/// Elementary streams followed per program, at most.
const MAX_STREAMS: usize = 8;
/// The timestamp wrap: 33 bits of a 90 kHz clock (~26.5 hours).
const WRAP: u64 = 1 << 33;

/// What an elementary stream carries (from its PMT `stream_type` and descriptors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// H.264 Annex B (stream type 0x1b).
    H264,
    /// H.265 Annex B (0x24).
    H265,
    /// AAC in ADTS frames (0x0f).
    Aac,
    /// Opus access units with their control headers (0x06 with an `Opus` registration).
    Opus,
}

impl StreamKind {
    fn is_video(self) -> bool {
        matches!(self, StreamKind::H264 | StreamKind::H265)
    }
}

/// One PES packet's payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    /// What the payload is.
    pub kind: StreamKind,
    /// Presentation time, 90 kHz, unwrapped: it keeps growing past the 33-bit wrap. It starts
    /// at the stream's first raw value plus 2^33, so earlier units stay positive.
    pub pts: Option<u64>,
    /// Decode time, on the same timeline (only when the PES carries one apart from the PTS).
    pub dts: Option<u64>,
    /// The elementary stream bytes.
    pub data: Bytes,
}

/// What went wrong so far; the demuxer survives all of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Transport packets read.
    pub packets: u64,
    /// Packets lost or reordered on a PID (continuity counter jumps).
    pub continuity_errors: u64,
    /// Bytes skipped to find the next sync byte, plus packets marked erroneous.
    pub garbage: u64,
    /// Units thrown away: cut by a continuity error, too large, or with a broken header.
    pub dropped_units: u64,
    /// PAT/PMT sections refused (bad CRC, cut short, or too many streams).
    pub bad_sections: u64,
}

/// One elementary stream being reassembled.
struct Stream {
    pid: u16,
    kind: StreamKind,
    /// Continuity counter of the last packet with payload.
    counter: Option<u8>,
    /// The PES being gathered; `None` until a unit start is seen (or after an error).
    pes: Option<BytesMut>,
    /// A padded packet ends a video PES (see the module's doc); off once a muxer is seen to pad
    /// mid-PES.
    padding_ends: bool,
    /// The last PES was ended by padding and nothing has started since.
    ended_by_padding: bool,
}

/// The demuxer: feed it bytes in any pieces with [`Demuxer::push`].
#[derive(Default)]
pub struct Demuxer {
    pmt_pid: Option<u16>,
    streams: Vec<Stream>,
    /// A transport packet split across two pushes.
    partial: Vec<u8>,
    /// Times unwrapped on one timeline shared by all streams, so audio and video stay aligned.
    clock: Unwrap,
    stats: Stats,
}

impl Demuxer {
    /// A demuxer that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Errors and counts so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The streams the program map announced, by PID.
    pub fn streams(&self) -> Vec<(u16, StreamKind)> {
        self.streams.iter().map(|s| (s.pid, s.kind)).collect()
    }

    /// Reads `data` (whole or partial packets) and appends the units it completes to `out`.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<Unit>) {
        if !self.partial.is_empty() {
            let need = PACKET_SIZE - self.partial.len();
            let take = need.min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() < PACKET_SIZE {
                return;
            }
            let packet = std::mem::take(&mut self.partial);
            self.packet(&packet, out);
        }
        while !data.is_empty() {
            if data[0] != SYNC {
                let skip = data.iter().position(|&b| b == SYNC).unwrap_or(data.len());
                self.stats.garbage += skip as u64;
                data = &data[skip..];
                continue;
            }
            if data.len() < PACKET_SIZE {
                self.partial.extend_from_slice(data);
                return;
            }
            let (packet, rest) = data.split_at(PACKET_SIZE);
            self.packet(packet, out);
            data = rest;
        }
    }

    /// Emits what is gathered on every stream whose PES has no length (video) as if the next
    /// one had started: for the end of input.
    pub fn flush(&mut self, out: &mut Vec<Unit>) {
        for i in 0..self.streams.len() {
            if let Some(pes) = self.streams[i].pes.take() {
                let kind = self.streams[i].kind;
                self.finish(kind, pes.freeze(), out);
            }
        }
    }

    fn packet(&mut self, packet: &[u8], out: &mut Vec<Unit>) {
        self.stats.packets += 1;
        let Some(header) = Header::parse(packet) else {
            self.stats.garbage += 1;
            return;
        };
        if header.error {
            self.stats.garbage += 1;
            return;
        }
        let Some(payload) = header.payload(packet) else {
            if header.discontinuity {
                if let Some(s) = self.stream_mut(header.pid) {
                    s.counter = None;
                }
            }
            return;
        };
        match header.pid {
            PAT_PID => self.section(payload, header.unit_start, Table::Pat),
            NULL_PID => {}
            pid if Some(pid) == self.pmt_pid => {
                self.section(payload, header.unit_start, Table::Pmt)
            }
            pid => self.pes_payload(pid, &header, payload, out),
        }
    }

    fn stream_mut(&mut self, pid: u16) -> Option<&mut Stream> {
        self.streams.iter_mut().find(|s| s.pid == pid)
    }

    fn pes_payload(&mut self, pid: u16, header: &Header, payload: &[u8], out: &mut Vec<Unit>) {
        let Some(index) = self.streams.iter().position(|s| s.pid == pid) else {
            return;
        };
        let stream = &mut self.streams[index];
        let kind = stream.kind;
        let expected = stream.counter.map(|c| (c + 1) & 0x0f);
        if stream.counter == Some(header.counter) && !header.discontinuity {
            return; // a duplicate packet, which the standard allows once
        }
        stream.counter = Some(header.counter);
        if expected.is_some_and(|e| e != header.counter) && !header.discontinuity {
            self.stats.continuity_errors += 1;
            if stream.pes.take().is_some() {
                self.stats.dropped_units += 1;
            }
        }
        let limit = if kind.is_video() {
            MAX_VIDEO_PES
        } else {
            MAX_AUDIO_PES
        };
        if !header.unit_start && stream.pes.is_none() && stream.ended_by_padding {
            // Payload after a padded packet: this muxer pads mid-PES. The frame already
            // emitted was cut; from now on wait for the next unit start.
            stream.padding_ends = false;
            stream.ended_by_padding = false;
            self.stats.dropped_units += 1;
            return;
        }
        if header.unit_start {
            stream.ended_by_padding = false;
            if let Some(done) = stream.pes.take() {
                self.finish(kind, done.freeze(), out);
            }
            let stream = &mut self.streams[index];
            let mut pes = BytesMut::with_capacity(if kind.is_video() { 64 << 10 } else { 2048 });
            pes.extend_from_slice(payload);
            stream.pes = Some(pes);
        } else if let Some(pes) = stream.pes.as_mut() {
            if pes.len() + payload.len() > limit {
                stream.pes = None;
                self.stats.dropped_units += 1;
                return;
            }
            pes.extend_from_slice(payload);
        }
        // A PES that says how long it is ends without waiting for the next one; so does a video
        // PES whose packet was padded, from a muxer that pads only the last packet.
        let stream = &mut self.streams[index];
        let Some(pes) = stream.pes.as_ref() else {
            return;
        };
        let end = match pes_total_len(pes) {
            Some(total) => (pes.len() >= total).then_some(total),
            None if kind.is_video() && stream.padding_ends && header.padded => {
                stream.ended_by_padding = true;
                Some(pes.len())
            }
            None => None,
        };
        if let Some(end) = end {
            if let Some(mut done) = stream.pes.take() {
                done.truncate(end);
                self.finish(kind, done.freeze(), out);
            }
        }
    }

    /// Parses a complete PES packet and emits its payload.
    fn finish(&mut self, kind: StreamKind, pes: Bytes, out: &mut Vec<Unit>) {
        let Some(parsed) = Pes::parse(&pes) else {
            self.stats.dropped_units += 1;
            return;
        };
        if pes_total_len(&pes).is_some_and(|total| pes.len() < total) {
            // Cut short: the rest never came.
            self.stats.dropped_units += 1;
            return;
        }
        if parsed.payload_start >= pes.len() {
            return;
        }
        let pts = parsed.pts.map(|t| self.unwrap_time(t));
        let dts = parsed.dts.map(|t| self.unwrap_time(t));
        out.push(Unit {
            kind,
            pts,
            dts,
            data: pes.slice(parsed.payload_start..),
        });
    }

    /// Places a raw 33-bit time on the shared timeline: the value nearest the last one.
    fn unwrap_time(&mut self, raw: u64) -> u64 {
        self.clock.extend(raw & (WRAP - 1), 33)
    }

    fn section(&mut self, payload: &[u8], unit_start: bool, table: Table) {
        if !unit_start {
            return; // sections spanning packets are not needed for the tables we read
        }
        let Some(&pointer) = payload.first() else {
            return;
        };
        let Some(section) = payload.get(1 + usize::from(pointer)..) else {
            self.stats.bad_sections += 1;
            return;
        };
        let Some(body) = section_body(section, table.id()) else {
            self.stats.bad_sections += 1;
            return;
        };
        match table {
            Table::Pat => {
                // Program entries: number (16), reserved (3), PID (13); number 0 is the NIT.
                self.pmt_pid = body
                    .chunks_exact(4)
                    .find(|e| u16::from_be_bytes([e[0], e[1]]) != 0)
                    .map(|e| u16::from_be_bytes([e[2], e[3]]) & 0x1fff);
            }
            Table::Pmt => self.program_map(body),
        }
    }

    fn program_map(&mut self, body: &[u8]) {
        // PCR PID (2 bytes), program info length (2), program descriptors, then the streams.
        let Some(info_len) = body
            .get(2..4)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]) & 0x0fff))
        else {
            self.stats.bad_sections += 1;
            return;
        };
        let mut rest = body.get(4 + info_len..).unwrap_or_default();
        let mut found = Vec::new();
        while rest.len() >= 5 {
            let stream_type = rest[0];
            let pid = u16::from_be_bytes([rest[1], rest[2]]) & 0x1fff;
            let es_len = usize::from(u16::from_be_bytes([rest[3], rest[4]]) & 0x0fff);
            let Some(descriptors) = rest.get(5..5 + es_len) else {
                self.stats.bad_sections += 1;
                return;
            };
            if let Some(kind) = stream_kind(stream_type, descriptors) {
                if found.len() < MAX_STREAMS {
                    found.push((pid, kind));
                }
            }
            rest = &rest[5 + es_len..];
        }
        // The PMT repeats every ~100 ms: keep the state of streams that did not change.
        let mut streams = Vec::with_capacity(found.len());
        for (pid, kind) in found {
            match self
                .streams
                .iter()
                .position(|s| s.pid == pid && s.kind == kind)
            {
                Some(i) => streams.push(self.streams.swap_remove(i)),
                None => streams.push(Stream {
                    pid,
                    kind,
                    counter: None,
                    pes: None,
                    padding_ends: true,
                    ended_by_padding: false,
                }),
            }
        }
        self.streams = streams;
    }
}

#[derive(Clone, Copy)]
enum Table {
    Pat,
    Pmt,
}

impl Table {
    fn id(self) -> u8 {
        match self {
            Table::Pat => 0x00,
            Table::Pmt => 0x02,
        }
    }
}

/// The bytes of a long-form section after its 8-byte header and before its CRC, if the
/// section is whole, of table `id`, and its CRC is right.
fn section_body(section: &[u8], id: u8) -> Option<&[u8]> {
    if section.len() < 3 || section[0] != id || section[1] & 0x80 == 0 {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([section[1], section[2]]) & 0x0fff);
    let whole = section.get(..3 + length)?;
    if length < 9 || crc32_mpeg2(whole) != 0 {
        return None;
    }
    whole.get(8..whole.len() - 4)
}

/// CRC-32/MPEG-2 (polynomial 0x04c11db7, no reflection): 0 over a section with its CRC.
fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &byte in data {
        crc ^= u32::from(byte) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
        }
    }
    crc
}

fn stream_kind(stream_type: u8, descriptors: &[u8]) -> Option<StreamKind> {
    match stream_type {
        0x1b => Some(StreamKind::H264),
        0x24 => Some(StreamKind::H265),
        0x0f => Some(StreamKind::Aac),
        0x06 if registered_as(descriptors, b"Opus") => Some(StreamKind::Opus),
        _ => None,
    }
}

/// Whether a descriptor loop holds a registration descriptor (tag 5) for `format`.
fn registered_as(mut descriptors: &[u8], format: &[u8; 4]) -> bool {
    while descriptors.len() >= 2 {
        let (tag, len) = (descriptors[0], usize::from(descriptors[1]));
        let Some(body) = descriptors.get(2..2 + len) else {
            return false;
        };
        if tag == 0x05 && body.starts_with(format) {
            return true;
        }
        descriptors = &descriptors[2 + len..];
    }
    false
}

/// The fields of a transport packet header we use.
struct Header {
    error: bool,
    unit_start: bool,
    pid: u16,
    counter: u8,
    has_payload: bool,
    /// Bytes of adaptation field (with its length byte), 0 when there is none.
    adaptation_len: usize,
    discontinuity: bool,
    /// The adaptation field holds stuffing beyond its flags and PCR/OPCR/splice fields.
    padded: bool,
}

impl Header {
    fn parse(packet: &[u8]) -> Option<Self> {
        if packet.len() != PACKET_SIZE || packet[0] != SYNC {
            return None;
        }
        let control = (packet[3] >> 4) & 0b11;
        let has_adaptation = control & 0b10 != 0;
        let adaptation_len = if has_adaptation {
            1 + usize::from(packet[4])
        } else {
            0
        };
        let discontinuity = has_adaptation && packet[4] > 0 && packet[5] & 0x80 != 0;
        let padded = has_adaptation && {
            let (len, flags) = (usize::from(packet[4]), packet[5]);
            // Flags byte, PCR (6), OPCR (6), splice countdown (1); private data or an
            // extension make the size unknown here: not counted as padding.
            let fields = 1
                + 6 * usize::from(flags & 0x10 != 0)
                + 6 * usize::from(flags & 0x08 != 0)
                + usize::from(flags & 0x04 != 0);
            len > fields && flags & 0x03 == 0
        };
        Some(Self {
            error: packet[1] & 0x80 != 0,
            unit_start: packet[1] & 0x40 != 0,
            pid: u16::from_be_bytes([packet[1], packet[2]]) & 0x1fff,
            counter: packet[3] & 0x0f,
            has_payload: control & 0b01 != 0,
            adaptation_len,
            discontinuity,
            padded,
        })
    }

    fn payload<'a>(&self, packet: &'a [u8]) -> Option<&'a [u8]> {
        if !self.has_payload {
            return None;
        }
        packet
            .get(4 + self.adaptation_len..)
            .filter(|p| !p.is_empty())
    }
}

/// The whole size of a PES packet that states its length (`None` for 0, unbounded video).
fn pes_total_len(pes: &[u8]) -> Option<usize> {
    let len = usize::from(u16::from_be_bytes([*pes.get(4)?, *pes.get(5)?]));
    (len != 0).then_some(6 + len)
}

/// A PES header's times and where its payload starts.
struct Pes {
    pts: Option<u64>,
    dts: Option<u64>,
    payload_start: usize,
}

impl Pes {
    fn parse(pes: &[u8]) -> Option<Self> {
        if pes.get(..3)? != [0, 0, 1] {
            return None;
        }
        let flags = *pes.get(7)?;
        let header_len = usize::from(*pes.get(8)?);
        let payload_start = 9 + header_len;
        let optional = pes.get(9..payload_start)?;
        let pts = if flags & 0x80 != 0 {
            Some(timestamp(optional.get(..5)?))
        } else {
            None
        };
        let dts = if flags & 0xc0 == 0xc0 {
            Some(timestamp(optional.get(5..10)?))
        } else {
            None
        };
        Some(Self {
            pts,
            dts,
            payload_start,
        })
    }
}

/// A 33-bit PES timestamp from its 5 bytes (marker bits ignored).
fn timestamp(b: &[u8]) -> u64 {
    (u64::from(b[0] >> 1) & 0x07) << 30
        | u64::from(b[1]) << 22
        | (u64::from(b[2]) >> 1) << 15
        | u64::from(b[3]) << 7
        | u64::from(b[4]) >> 1
}

#[cfg(test)]
#[path = "mpegts_tests.rs"]
mod tests;
