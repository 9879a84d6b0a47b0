//! Datagrams on the SRT port, screened by the front before srt-tokio's listener sees them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ingest::srt::fuzzing::screen(data));
