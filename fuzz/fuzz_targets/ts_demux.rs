//! The MPEG-TS demuxer on arbitrary bytes, fed in two pieces at a point the input chooses.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let mut demux = ingest::mpegts::Demuxer::new();
    let mut out = Vec::new();
    demux.push(&data[..split], &mut out);
    demux.push(&data[split..], &mut out);
    demux.flush(&mut out);
    for unit in &out {
        let _ = ingest::es::adts_frames(&unit.data);
        let _ = ingest::es::opus_packets(&unit.data);
    }
});
