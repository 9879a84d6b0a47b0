//! What a relay peer sends that Starling parses itself: frame objects (header and payload),
//! catalogs (JSON, bounded) and keyframe requests.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| relay::fuzzing::peer_input(data));
