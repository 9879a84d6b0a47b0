//! FLV tag bodies as RTMP carries them (legacy and enhanced RTMP), and the decoder
//! configurations and access units they hold.
#![no_main]

use bytes::Bytes;
use ingest::rtmp::flv::{self, VideoTag};
use libfuzzer_sys::fuzz_target;
use media::bitstream::{avc, hevc};

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    let _ = flv::audio(&body);
    match flv::video(&body) {
        Ok(VideoTag::AvcSequenceHeader(record)) => {
            if let Ok(config) = avc::AvcConfig::parse(&record) {
                let _ = avc::avcc_to_annexb(&record, &config);
            }
        }
        Ok(VideoTag::HevcSequenceHeader(record)) => {
            if let Ok(config) = hevc::HevcConfig::parse(&record) {
                let _ = hevc::to_annexb(&record, &config);
            }
        }
        Ok(VideoTag::HevcFrame { data, .. }) => {
            let config = hevc::HevcConfig {
                length_size: 4,
                parameter_sets: vec![data.clone()],
            };
            let _ = hevc::to_annexb(&data, &config);
        }
        _ => {}
    }
});
