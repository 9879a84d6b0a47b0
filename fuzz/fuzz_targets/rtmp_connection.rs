//! An RTMP connection's bytes as a whole: handshake, the guard, chunk stream, AMF0 commands,
//! FLV tags.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ingest::rtmp::fuzzing::connection(data));
