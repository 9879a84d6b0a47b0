use super::*;

fn rtp(seq: u16, ts: u32, marker: bool, payload: &[u8]) -> Rtp {
    Rtp {
        payload_type: 96,
        marker,
        seq,
        timestamp: ts,
        ssrc: 1235,
        payload: Bytes::copy_from_slice(payload),
    }
}

/// A frame as ftl-sdk sends it: SPS and PPS as single NAL units, then an IDR slice in FU-A.
fn keyframe_packets(first_seq: u16, ts: u32) -> Vec<Rtp> {
    let slice: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
    let mut packets = vec![
        rtp(first_seq, ts, false, &[0x67, 0x42, 0xc0, 0x1f]),
        rtp(
            first_seq.wrapping_add(1),
            ts,
            false,
            &[0x68, 0xce, 0x3c, 0x80],
        ),
    ];
    let chunks: Vec<&[u8]> = slice.chunks(1000).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let (start, end) = (i == 0, i + 1 == chunks.len());
        let mut p = vec![0x7c, (u8::from(start) << 7) | (u8::from(end) << 6) | 5];
        p.extend_from_slice(chunk);
        packets.push(rtp(first_seq.wrapping_add(2 + i as u16), ts, end, &p));
    }
    packets
}

fn delta_packet(seq: u16, ts: u32) -> Rtp {
    rtp(seq, ts, true, &[0x41, 0x9a, 1, 2, 3])
}

#[test]
fn rtp_headers_parse_with_csrcs_extensions_and_padding() {
    let mut d = vec![0xb1, 0xe0, 0x12, 0x34, 0, 0, 0x03, 0xe8, 0, 0, 0x04, 0xd3];
    d.extend([9, 9, 9, 9]); // one CSRC
    d.extend([0xbe, 0xde, 0, 1, 7, 7, 7, 7]); // an extension of one word
    d.extend([0x65, 1, 2]);
    d.extend([0, 0, 3]); // padding
    let p = Rtp::parse(&Bytes::from(d)).expect("rtp");
    assert_eq!(
        (p.payload_type, p.marker, p.seq, p.timestamp, p.ssrc),
        (96, true, 0x1234, 1000, 1235)
    );
    assert_eq!(&p.payload[..], &[0x65, 1, 2]);
    assert!(Rtp::parse(&Bytes::from_static(&[0x80, 0, 0])).is_none());
    assert!(
        Rtp::parse(&Bytes::from_static(&[0x40; 20])).is_none(),
        "version 1"
    );
    let mut bad_padding = vec![0xa0, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
    bad_padding.push(200);
    assert!(Rtp::parse(&Bytes::from(bad_padding)).is_none());
}

#[test]
fn frames_come_out_whole_and_in_order_across_reordering() {
    let now = Instant::now();
    let mut v = VideoReceiver::default();
    let mut packets = keyframe_packets(65530, 0);
    packets.push(delta_packet(65535, 3000));
    packets.push(delta_packet(0, 6000)); // the sequence wraps
    packets.swap(1, 3);
    for p in packets {
        v.push(p, now); // the swap makes a gap, asked for, then filled
    }
    let (frames, nacks) = v.poll(now);
    assert!(nacks.is_empty());
    assert_eq!(frames.len(), 3);
    assert!(frames[0].keyframe);
    let units = media::bitstream::avc::annexb_nal_units(&frames[0].data);
    assert_eq!(units.len(), 3);
    assert_eq!(
        units[2].len(),
        1 + 3000,
        "the FU-A fragments join into one slice"
    );
    assert_eq!((frames[1].timestamp, frames[2].timestamp), (3000, 6000));
}

#[test]
fn a_gap_is_nacked_then_filled_by_the_resend() {
    let now = Instant::now();
    let mut v = VideoReceiver::default();
    let packets = keyframe_packets(100, 0);
    let mut lost = None;
    for p in packets {
        if p.seq == 103 {
            lost = Some(p);
            continue;
        }
        let nacks = v.push(p, now);
        if !nacks.is_empty() {
            assert_eq!(nacks, vec![103]);
        }
    }
    assert!(v.poll(now).0.is_empty(), "incomplete");
    let (_, again) = v.poll(now + NACK_RETRY);
    assert_eq!(again, vec![103], "asked again");
    v.push(lost.expect("lost packet"), now + NACK_RETRY);
    let (frames, _) = v.poll(now + NACK_RETRY);
    assert_eq!(frames.len(), 1);
    assert!(frames[0].keyframe);
}

#[test]
fn a_frame_never_completed_is_given_up_and_the_stream_waits_for_a_keyframe() {
    let now = Instant::now();
    let mut v = VideoReceiver::default();
    for p in keyframe_packets(10, 0).into_iter().filter(|p| p.seq != 13) {
        v.push(p, now);
    }
    v.push(delta_packet(15, 3000), now);
    assert!(v.poll(now).0.is_empty());
    let later = now + GIVE_UP;
    let (frames, _) = v.poll(later);
    assert!(
        frames.is_empty(),
        "the delta frame after a lost keyframe is not decodable"
    );
    assert_eq!(v.lost_frames, 1);
    for p in keyframe_packets(16, 6000) {
        v.push(p, later);
    }
    let (frames, _) = v.poll(later);
    assert_eq!(frames.len(), 1);
    assert!(frames[0].keyframe);
}

#[test]
fn garbage_payloads_drop_frames_not_the_receiver() {
    let now = Instant::now();
    let mut v = VideoReceiver::default();
    v.push(rtp(1, 0, true, &[0x7c, 0x05, 1, 2]), now); // a fragment without its start
    v.push(rtp(2, 1, true, &[]), now);
    v.push(rtp(3, 2, true, &[30, 1]), now); // NAL type 30: not H.264 RTP
    v.push(rtp(4, 3, true, &[0x78, 0, 9]), now); // a STAP-A unit longer than the packet
    let (frames, _) = v.poll(now);
    assert!(frames.is_empty());
    for p in keyframe_packets(5, 4) {
        v.push(p, now);
    }
    assert_eq!(v.poll(now).0.len(), 1);
}

#[test]
fn a_huge_gap_is_bounded() {
    let now = Instant::now();
    let mut v = VideoReceiver::default();
    v.push(delta_packet(0, 0), now);
    let nacks = v.push(delta_packet(30000, 1), now);
    assert!(nacks.len() <= MAX_MISSING);
    assert!(v.missing.len() <= MAX_MISSING);
}

#[test]
fn nacks_pack_neighbours_into_bitmasks() {
    let n = nack(1235, &[100, 101, 103, 117, 200]);
    assert_eq!(&n[..4], &[0x81, 205, 0, 5]);
    assert_eq!(&n[8..12], &1235u32.to_be_bytes());
    // PID 100 with 101 and 103 (bits 0 and 2), PID 117, PID 200.
    assert_eq!(&n[12..16], &[0, 100, 0, 0b101]);
    assert_eq!(&n[16..20], &[0, 117, 0, 0]);
    assert_eq!(&n[20..24], &[0, 200, 0, 0]);
}
