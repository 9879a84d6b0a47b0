//! FTL's RTP reordering, NACK bookkeeping and H.264 depacketising on arbitrary datagrams.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ingest::ftl::fuzzing::media_datagrams(data));
