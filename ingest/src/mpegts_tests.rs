use super::*;
use proptest::prelude::*;

const PMT_PID: u16 = 0x1000;
const VIDEO_PID: u16 = 0x100;
const AUDIO_PID: u16 = 0x101;

/// A small muxer: just enough MPEG-TS to test the demuxer against.
struct Mux {
    counters: std::collections::HashMap<u16, u8>,
}

impl Mux {
    fn new() -> Self {
        Self {
            counters: Default::default(),
        }
    }

    fn next_counter(&mut self, pid: u16) -> u8 {
        let c = self.counters.entry(pid).or_insert(15);
        *c = (*c + 1) & 0x0f;
        *c
    }

    /// Packets carrying `payload` on `pid`, the first marked as a unit start; the last is
    /// padded with adaptation-field stuffing.
    fn packets(&mut self, pid: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let chunks = payload.chunks(184);
        let mut first = true;
        for chunk in chunks {
            let mut p = vec![SYNC, (pid >> 8) as u8 & 0x1f, pid as u8, 0];
            if first {
                p[1] |= 0x40;
            }
            let counter = self.next_counter(pid);
            if chunk.len() == 184 {
                p[3] = 0x10 | counter;
            } else {
                p[3] = 0x30 | counter;
                let stuffing = 184 - chunk.len() - 1;
                p.push(stuffing as u8);
                if stuffing > 0 {
                    p.push(0);
                    p.extend(std::iter::repeat_n(0xff, stuffing - 1));
                }
            }
            p.extend_from_slice(chunk);
            assert_eq!(p.len(), PACKET_SIZE);
            out.extend(p);
            first = false;
        }
        out
    }

    fn section(&mut self, pid: u16, table_id: u8, body: &[u8]) -> Vec<u8> {
        let length = 5 + body.len() + 4;
        let mut s = vec![
            table_id,
            0xb0 | (length >> 8) as u8,
            length as u8,
            0,
            1,
            0xc1,
            0,
            0,
        ];
        s.extend_from_slice(body);
        let crc = crc32_mpeg2(&s);
        s.extend(crc.to_be_bytes());
        let mut payload = vec![0];
        payload.extend(s);
        self.packets(pid, &payload)
    }

    fn pat(&mut self) -> Vec<u8> {
        let body = [0, 1, 0xe0 | (PMT_PID >> 8) as u8, PMT_PID as u8];
        self.section(PAT_PID, 0, &body)
    }

    fn pmt(&mut self, audio_type: u8, audio_descriptors: &[u8]) -> Vec<u8> {
        let mut body = vec![0xe0 | (VIDEO_PID >> 8) as u8, VIDEO_PID as u8, 0xf0, 0];
        body.extend([
            0x1b,
            0xe0 | (VIDEO_PID >> 8) as u8,
            VIDEO_PID as u8,
            0xf0,
            0,
        ]);
        body.extend([
            audio_type,
            0xe0 | (AUDIO_PID >> 8) as u8,
            AUDIO_PID as u8,
            0xf0,
            audio_descriptors.len() as u8,
        ]);
        body.extend_from_slice(audio_descriptors);
        self.section(PMT_PID, 2, &body)
    }

    fn pes(
        &mut self,
        pid: u16,
        stream_id: u8,
        pts: u64,
        dts: Option<u64>,
        data: &[u8],
        sized: bool,
    ) -> Vec<u8> {
        let mut header = vec![0, 0, 1, stream_id, 0, 0, 0x80];
        let optional = match dts {
            Some(dts) => [encode_time(0x3, pts), encode_time(0x1, dts)].concat(),
            None => encode_time(0x2, pts).to_vec(),
        };
        header.push(if dts.is_some() { 0xc0 } else { 0x80 });
        header.push(optional.len() as u8);
        header.extend(optional);
        if sized {
            let len = header.len() - 6 + data.len();
            header[4..6].copy_from_slice(&(len as u16).to_be_bytes());
        }
        header.extend_from_slice(data);
        self.packets(pid, &header)
    }
}

fn encode_time(prefix: u8, t: u64) -> [u8; 5] {
    [
        prefix << 4 | ((t >> 29) as u8 & 0x0e) | 1,
        (t >> 22) as u8,
        ((t >> 14) as u8 & 0xfe) | 1,
        (t >> 7) as u8,
        ((t << 1) as u8 & 0xfe) | 1,
    ]
}

fn video_au(n: u8, len: usize) -> Vec<u8> {
    let mut au = vec![0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x65];
    au.extend(std::iter::repeat_n(n, len));
    au
}

fn demux_all(ts: &[u8]) -> (Vec<Unit>, Demuxer) {
    let mut d = Demuxer::new();
    let mut out = Vec::new();
    d.push(ts, &mut out);
    d.flush(&mut out);
    (out, d)
}

fn stream_with_aac() -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut mux = Mux::new();
    let mut ts = mux.pat();
    ts.extend(mux.pmt(0x0f, &[]));
    let aus: Vec<Vec<u8>> = (0..3)
        .map(|i| video_au(i, 1000 + 300 * usize::from(i)))
        .collect();
    for (i, au) in aus.iter().enumerate() {
        let pts = 90_000 + 3000 * i as u64;
        ts.extend(mux.pes(VIDEO_PID, 0xe0, pts, Some(pts - 3000), au, false));
        ts.extend(mux.pes(
            AUDIO_PID,
            0xc0,
            pts,
            None,
            &[0xff, 0xf1, i as u8, 7, 7],
            true,
        ));
    }
    (ts, aus)
}

#[test]
fn video_and_audio_units_come_out_whole_with_their_times() {
    let (ts, aus) = stream_with_aac();
    let (units, d) = demux_all(&ts);
    assert_eq!(
        d.streams(),
        vec![(VIDEO_PID, StreamKind::H264), (AUDIO_PID, StreamKind::Aac)]
    );
    let video: Vec<&Unit> = units
        .iter()
        .filter(|u| u.kind == StreamKind::H264)
        .collect();
    let audio: Vec<&Unit> = units.iter().filter(|u| u.kind == StreamKind::Aac).collect();
    assert_eq!(video.len(), 3);
    assert_eq!(audio.len(), 3);
    for (i, (v, au)) in video.iter().zip(&aus).enumerate() {
        assert_eq!(&v.data[..], &au[..]);
        assert_eq!(v.pts, Some(WRAP + 90_000 + 3000 * i as u64));
        assert_eq!(v.dts, Some(WRAP + 87_000 + 3000 * i as u64));
    }
    assert_eq!(&audio[1].data[..], &[0xff, 0xf1, 1, 7, 7]);
    assert_eq!(d.stats().continuity_errors, 0);
    assert_eq!(d.stats().dropped_units, 0);
}

#[test]
fn audio_with_a_stated_length_is_emitted_without_waiting_for_the_next_unit() {
    let mut mux = Mux::new();
    let mut ts = mux.pat();
    ts.extend(mux.pmt(0x0f, &[]));
    ts.extend(mux.pes(AUDIO_PID, 0xc0, 1000, None, &[1; 400], true));
    let mut d = Demuxer::new();
    let mut out = Vec::new();
    d.push(&ts, &mut out);
    assert_eq!(out.len(), 1, "no flush needed");
    assert_eq!(out[0].data.len(), 400);
}

#[test]
fn any_split_of_the_input_gives_the_same_units() {
    let (ts, _) = stream_with_aac();
    let (whole, _) = demux_all(&ts);
    for step in [1, 7, 100, 187, 188, 189, 1316] {
        let mut d = Demuxer::new();
        let mut out = Vec::new();
        for piece in ts.chunks(step) {
            d.push(piece, &mut out);
        }
        d.flush(&mut out);
        assert_eq!(out, whole, "pieces of {step}");
    }
}

#[test]
fn garbage_between_packets_is_skipped_and_counted() {
    let (ts, _) = stream_with_aac();
    let (whole, _) = demux_all(&ts);
    let mut noisy = vec![1, 2, 3, 4, 5];
    for p in ts.chunks(PACKET_SIZE) {
        noisy.extend_from_slice(p);
        noisy.extend([0x00, 0x11]);
    }
    let (units, d) = demux_all(&noisy);
    assert_eq!(units, whole);
    assert_eq!(d.stats().garbage, 5 + 2 * (ts.len() / PACKET_SIZE) as u64);
}

#[test]
fn a_lost_packet_drops_only_the_unit_it_cut() {
    let mut mux = Mux::new();
    let mut ts = mux.pat();
    ts.extend(mux.pmt(0x0f, &[]));
    let first = mux.pes(VIDEO_PID, 0xe0, 0, None, &video_au(1, 2000), false);
    // Lose the third packet of the first access unit.
    for (i, p) in first.chunks(PACKET_SIZE).enumerate() {
        if i != 2 {
            ts.extend_from_slice(p);
        }
    }
    let second = video_au(2, 2000);
    ts.extend(mux.pes(VIDEO_PID, 0xe0, 3000, None, &second, false));
    let (units, d) = demux_all(&ts);
    assert_eq!(units.len(), 1);
    assert_eq!(&units[0].data[..], &second[..]);
    assert_eq!(d.stats().continuity_errors, 1);
    assert_eq!(d.stats().dropped_units, 1);
}

#[test]
fn a_duplicated_packet_is_read_once() {
    let mut mux = Mux::new();
    let mut ts = mux.pat();
    ts.extend(mux.pmt(0x0f, &[]));
    let au = video_au(1, 1000);
    let packets = mux.pes(VIDEO_PID, 0xe0, 0, None, &au, false);
    for (i, p) in packets.chunks(PACKET_SIZE).enumerate() {
        ts.extend_from_slice(p);
        if i == 1 {
            ts.extend_from_slice(p);
        }
    }
    let (units, d) = demux_all(&ts);
    assert_eq!(units.len(), 1);
    assert_eq!(&units[0].data[..], &au[..]);
    assert_eq!(d.stats().continuity_errors, 0);
}

#[test]
fn times_keep_growing_across_the_33_bit_wrap() {
    let mut mux = Mux::new();
    let mut ts = mux.pat();
    ts.extend(mux.pmt(0x0f, &[]));
    let times = [WRAP - 6000, WRAP - 3000, 0, 3000];
    for t in times {
        ts.extend(mux.pes(AUDIO_PID, 0xc0, t, None, &[0xff, 0xf1, 0, 0], true));
    }
    let (units, _) = demux_all(&ts);
    let pts: Vec<u64> = units.iter().filter_map(|u| u.pts).collect();
    assert_eq!(pts.len(), 4);
    assert!(pts.windows(2).all(|w| w[1] == w[0] + 3000), "{pts:?}");
}

#[test]
fn opus_is_recognised_by_its_registration_descriptor() {
    let mut mux = Mux::new();
    let mut ts = mux.pat();
    ts.extend(mux.pmt(0x06, &[0x05, 4, b'O', b'p', b'u', b's', 0x7f, 2, 0x80, 2]));
    let (_, d) = demux_all(&ts);
    assert_eq!(d.streams()[1], (AUDIO_PID, StreamKind::Opus));

    // Private data without the registration is not followed.
    let mut mux = Mux::new();
    let mut ts = mux.pat();
    ts.extend(mux.pmt(0x06, &[]));
    let (_, d) = demux_all(&ts);
    assert_eq!(d.streams(), vec![(VIDEO_PID, StreamKind::H264)]);
}

#[test]
fn a_table_with_a_wrong_crc_is_refused() {
    let mut mux = Mux::new();
    let mut ts = mux.pat();
    let mut pmt = mux.pmt(0x0f, &[]);
    pmt[PACKET_SIZE - 6] ^= 0xff; // a byte of the section body, just before its CRC
    ts.extend(pmt);
    let (_, d) = demux_all(&ts);
    assert!(d.streams().is_empty());
    assert_eq!(d.stats().bad_sections, 1);
}

#[test]
fn an_oversized_video_unit_is_dropped_not_kept() {
    let mut mux = Mux::new();
    let mut ts = mux.pat();
    ts.extend(mux.pmt(0x0f, &[]));
    ts.extend(mux.pes(
        VIDEO_PID,
        0xe0,
        0,
        None,
        &vec![7; MAX_VIDEO_PES + 1000],
        false,
    ));
    let (units, d) = demux_all(&ts);
    assert!(units.is_empty());
    assert_eq!(d.stats().dropped_units, 1);
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4000)) {
        let mut d = Demuxer::new();
        let mut out = Vec::new();
        d.push(&data, &mut out);
        d.flush(&mut out);
    }

    #[test]
    fn a_valid_stream_with_corrupted_bytes_never_panics(
        flips in proptest::collection::vec((0usize..10_000, any::<u8>()), 0..40)
    ) {
        let (mut ts, _) = stream_with_aac();
        for (at, byte) in flips {
            let i = at % ts.len();
            ts[i] = byte;
        }
        let (_, d) = demux_all(&ts);
        prop_assert!(d.stats().packets <= (ts.len() / PACKET_SIZE) as u64 + 1);
    }
}

#[test]
fn a_padded_last_packet_ends_a_video_unit_without_waiting_for_the_next() {
    let mut mux = Mux::new();
    let mut ts = mux.pat();
    ts.extend(mux.pmt(0x0f, &[]));
    let au = video_au(1, 2000); // 2000 + 11 bytes: the last packet is padded
    ts.extend(mux.pes(VIDEO_PID, 0xe0, 3000, None, &au, false));
    let mut d = Demuxer::new();
    let mut out = Vec::new();
    d.push(&ts, &mut out);
    assert_eq!(out.len(), 1, "emitted at its padded packet, no flush");
    assert_eq!(&out[0].data[..], &au[..]);
}

#[test]
fn a_muxer_that_pads_mid_unit_falls_back_to_waiting_for_the_next_unit() {
    let mut mux = Mux::new();
    let mut ts = mux.pat();
    ts.extend(mux.pmt(0x0f, &[]));
    // A PES in three packets whose middle one carries 100 bytes behind stuffing.
    let au = video_au(1, 409); // 14 + 420 bytes of PES: 184, 100, then 150
    let mut pes = vec![0, 0, 1, 0xe0, 0, 0, 0x80, 0x80, 5];
    pes.extend(encode_time(0x2, 3000));
    pes.extend_from_slice(&au);
    let (first, rest) = pes.split_at(184);
    let (middle, last) = rest.split_at(100);
    let mut packet = |start: bool, payload: &[u8]| {
        let counter = mux.next_counter(VIDEO_PID);
        let mut p = vec![
            SYNC,
            (0x40 * u8::from(start)) | (VIDEO_PID >> 8) as u8,
            VIDEO_PID as u8,
        ];
        if payload.len() == 184 {
            p.push(0x10 | counter);
        } else {
            p.extend([0x30 | counter, (183 - payload.len()) as u8, 0]);
            p.extend(std::iter::repeat_n(0xff, 182 - payload.len()));
        }
        p.extend_from_slice(payload);
        assert_eq!(p.len(), PACKET_SIZE);
        p
    };
    ts.extend(packet(true, first));
    ts.extend(packet(false, middle));
    ts.extend(packet(false, last));
    let next = video_au(2, 600);
    ts.extend(mux.pes(VIDEO_PID, 0xe0, 6000, None, &next, false));
    let later = video_au(3, 5000);
    ts.extend(mux.pes(VIDEO_PID, 0xe0, 9000, None, &later, false));
    let (units, d) = demux_all(&ts);
    // The cut first unit went out once; after that units wait for the next start: whole.
    assert_eq!(units.len(), 3);
    assert_eq!(
        units[0].data.len(),
        184 - 14 + 100,
        "cut at the mid-unit padding"
    );
    assert_eq!(&units[1].data[..], &next[..]);
    assert_eq!(&units[2].data[..], &later[..]);
    assert_eq!(d.stats().dropped_units, 1);
}
