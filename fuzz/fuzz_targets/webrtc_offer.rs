//! WHIP/WHEP offers and trickle-ICE fragments, up to the answer.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sfu::fuzzing::offer(data));
