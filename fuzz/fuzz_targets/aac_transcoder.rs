//! An AudioSpecificConfig to transcoder set-up, then AAC frames through it: the first byte is
//! the configuration's length, frames follow in pieces of the second byte's size.
#![no_main]

use ingest::transcode::AacToOpus;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&len, rest)) = data.split_first() else {
        return;
    };
    let (asc, rest) = rest.split_at(usize::from(len % 8).min(rest.len()));
    let Ok(mut transcoder) = AacToOpus::new(asc) else {
        return;
    };
    let Some((&size, frames)) = rest.split_first() else {
        return;
    };
    for (i, frame) in frames.chunks(usize::from(size).max(1)).enumerate() {
        let _ = transcoder.push(frame, i as u64 * 23);
    }
});
