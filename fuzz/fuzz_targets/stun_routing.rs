//! Datagrams on the WebRTC port: STUN parsing and routing to sessions.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sfu::fuzzing::route(data));
