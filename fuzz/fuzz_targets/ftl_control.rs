//! FTL's control conversation on arbitrary lines.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ingest::ftl::fuzzing::control_lines(data));
