//! The MPEG-TS demuxer on what ffmpeg's muxer (the one OBS uses for SRT) really writes.

use std::process::Command;

use ingest::mpegts::{Demuxer, StreamKind, PACKET_SIZE};

fn ffmpeg_ts(audio: &[&str]) -> Vec<u8> {
    let path = std::env::temp_dir().join(format!(
        "starling-ts-{}-{}.ts",
        std::process::id(),
        audio[1]
    ));
    let ok = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "2",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-bf",
            "0",
            "-g",
            "30",
        ])
        .args(audio)
        .args(["-f", "mpegts"])
        .arg(&path)
        .status()
        .expect("ffmpeg (scripts/test installs it)")
        .success();
    assert!(ok, "ffmpeg failed");
    let ts = std::fs::read(&path).expect("ts file");
    let _ = std::fs::remove_file(&path);
    ts
}

#[test]
fn ffmpeg_video_units_come_out_at_their_padded_packet_not_a_frame_later() {
    for audio in [&["-c:a", "aac"][..], &["-c:a", "libopus"][..]] {
        let ts = ffmpeg_ts(audio);
        let mut demux = Demuxer::new();
        let mut out = Vec::new();
        let (mut early, mut late) = (0, 0);
        for packet in ts.chunks(PACKET_SIZE) {
            let before = out.len();
            demux.push(packet, &mut out);
            let unit_start = packet[1] & 0x40 != 0;
            for unit in &out[before..] {
                if unit.kind == StreamKind::H264 {
                    // Emitted by a unit start on some PID means it waited for the next one.
                    if unit_start {
                        late += 1
                    } else {
                        early += 1
                    }
                }
            }
        }
        demux.flush(&mut out);
        let video = out.iter().filter(|u| u.kind == StreamKind::H264).count();
        let audio_units = out.iter().filter(|u| u.kind != StreamKind::H264).count();
        assert_eq!(video, 60, "{audio:?}: every frame");
        assert!(audio_units > 0, "{audio:?}: audio too");
        assert!(
            early >= 55,
            "{audio:?}: {early} frames at their last packet, {late} a frame later"
        );
        eprintln!("{audio:?}: {early} frames at their last packet, {late} a frame later");
        let stats = demux.stats();
        assert_eq!(
            (stats.continuity_errors, stats.dropped_units),
            (0, 0),
            "{audio:?}"
        );
    }
}
