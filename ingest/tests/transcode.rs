//! AAC -> Opus on real AAC from ffmpeg (installed by scripts/test): every input second becomes
//! a second of 48 kHz Opus with evenly spaced timestamps.

use std::process::Command;

use ingest::transcode::AacToOpus;

/// `seconds` of a sine as ADTS AAC-LC at `rate` Hz, `channels` channels.
fn adts(seconds: u32, rate: u32, channels: u32) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i"])
        .arg(format!(
            "sine=frequency=440:sample_rate={rate}:duration={seconds}"
        ))
        .args([
            "-ac",
            &channels.to_string(),
            "-c:a",
            "aac",
            "-f",
            "adts",
            "-",
        ])
        .output()
        .expect("ffmpeg runs (scripts/test installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Splits ADTS into raw access units; builds the AudioSpecificConfig from the first header.
fn split_adts(mut data: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut frames = Vec::new();
    let mut asc = Vec::new();
    while data.len() > 7 {
        assert_eq!(data[0], 0xff, "ADTS sync");
        let protection_absent = data[1] & 1 == 1;
        let profile = (data[2] >> 6) + 1;
        let sf_index = (data[2] >> 2) & 0x0f;
        let channels = ((data[2] & 1) << 2) | (data[3] >> 6);
        let len = (usize::from(data[3] & 3) << 11)
            | (usize::from(data[4]) << 3)
            | usize::from(data[5] >> 5);
        let header = if protection_absent { 7 } else { 9 };
        if asc.is_empty() {
            asc = vec![
                (profile << 3) | (sf_index >> 1),
                ((sf_index & 1) << 7) | (channels << 3),
            ];
        }
        frames.push(data[header..len].to_vec());
        data = &data[len..];
    }
    (asc, frames)
}

fn check(rate: u32, channels: u32) {
    let (asc, frames) = split_adts(&adts(10, rate, channels));
    let mut t = AacToOpus::new(&asc).expect("AAC-LC config accepted");
    let mut packets = Vec::new();
    for (n, frame) in frames.iter().enumerate() {
        let ts_ms = n as u64 * 1024 * 1000 / u64::from(rate);
        packets.extend(t.push(frame, ts_ms).expect("decodes"));
    }
    // 10 s (plus encoder priming frames) of 20 ms packets.
    assert!(
        (495..=510).contains(&packets.len()),
        "{} packets",
        packets.len()
    );
    for pair in packets.windows(2) {
        assert_eq!(
            pair[1].timestamp - pair[0].timestamp,
            960,
            "even 20 ms steps"
        );
    }
    assert!(packets[0].group_start);
    assert!(packets
        .iter()
        .all(|p| !p.data.is_empty() && p.data.len() < 1500));
}

#[test]
fn aac_44100_stereo_to_opus() {
    check(44_100, 2);
}

#[test]
fn aac_48000_mono_to_opus() {
    check(48_000, 1);
}

#[test]
fn garbage_aac_is_an_error_not_a_panic() {
    let mut t = AacToOpus::new(&[0x12, 0x10]).unwrap();
    for junk in [
        &[][..],
        &[0xff; 3],
        &[0x21, 0x1b, 0x94, 0x00, 0xff, 0xff, 0xff, 0xff],
    ] {
        let _ = t.push(junk, 0);
    }
    assert!(AacToOpus::new(&[0x12]).is_err());
    assert!(AacToOpus::new(&[0x2a, 0x10]).is_err(), "not AAC-LC");
    // AAC-LC stereo at an explicit 1 Hz: 50 frames of 6 bytes once made 400 MB of samples.
    let err = AacToOpus::new(&[0x17, 0x80, 0x00, 0x00, 0x90]).err();
    assert!(
        err.is_some_and(|e| e.to_string().contains("sample rate")),
        "1 Hz refused"
    );
}
