//! AAC -> Opus, because browsers do not play AAC over WebRTC: symphonia decodes AAC-LC, a
//! linear resampler brings it to 48 kHz, libopus encodes 20 ms stereo packets.

mod clock;
pub mod on_demand;
mod resample;
pub mod video;
pub mod video_worker;
mod worker;

use bytes::Bytes;
use media::bitstream::aac::AudioSpecificConfig;
use symphonia_codec_aac::AacDecoder;
use symphonia_core::codecs::audio::well_known::CODEC_ID_AAC;
use symphonia_core::codecs::audio::{AudioCodecParameters, AudioDecoder, AudioDecoderOptions};
use symphonia_core::packet::PacketRef;
use symphonia_core::units::{Duration, Timestamp};

pub use clock::AudioClock;
pub use resample::Resampler;
pub use worker::AacWorker;

/// Opus output rate.
pub const OPUS_RATE: u32 = 48_000;
/// Samples per channel in one 20 ms Opus packet.
const FRAME: usize = 960;
/// Opus packets per audio group (about a second), so a joining viewer gets audio quickly.
const PACKETS_PER_GROUP: u64 = 50;
/// Samples (per channel) one AAC frame may decode to: 1024 for AAC-LC, 2048 with SBR.
const MAX_FRAME_SAMPLES: usize = 2048;

/// Why audio could not be transcoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TranscodeError {
    /// The AudioSpecificConfig is malformed or not AAC-LC mono/stereo.
    #[error("unsupported AAC configuration: {0}")]
    Config(String),
    /// A frame did not decode.
    #[error("AAC decode: {0}")]
    Decode(String),
    /// A frame decoded to more samples than any AAC frame holds.
    #[error("AAC frame of {0} samples")]
    TooLong(usize),
    /// libopus refused.
    #[error("Opus encode: {0}")]
    Encode(#[from] opus::Error),
}

/// One encoded Opus packet.
#[derive(Debug)]
pub struct OpusPacket {
    /// Timestamp at 48 kHz.
    pub timestamp: u64,
    /// True every [`PACKETS_PER_GROUP`] packets: starts a group on the bus.
    pub group_start: bool,
    /// The Opus packet.
    pub data: Bytes,
}

/// A running AAC -> Opus transcoder for one publisher.
pub struct AacToOpus {
    config: AudioSpecificConfig,
    decoder: AacDecoder,
    resampler: Resampler,
    encoder: opus::Encoder,
    clock: AudioClock,
    /// Interleaved stereo samples at 48 kHz waiting to fill a packet.
    pending: Vec<f32>,
    decoded: Vec<f32>,
    packets: u64,
}

impl AacToOpus {
    /// Sets up from an AudioSpecificConfig.
    pub fn new(asc: &[u8]) -> Result<Self, TranscodeError> {
        let config =
            AudioSpecificConfig::parse(asc).map_err(|e| TranscodeError::Config(e.to_string()))?;
        if !(1..=2).contains(&config.channels) {
            return Err(TranscodeError::Config(format!(
                "{} channels",
                config.channels
            )));
        }
        let mut params = AudioCodecParameters::new();
        params.for_codec(CODEC_ID_AAC).with_extra_data(asc.into());
        let decoder = AacDecoder::try_new(&params, &AudioDecoderOptions::default())
            .map_err(|e| TranscodeError::Config(e.to_string()))?;
        let mut encoder =
            opus::Encoder::new(OPUS_RATE, opus::Channels::Stereo, opus::Application::Audio)?;
        encoder.set_bitrate(opus::Bitrate::Bits(128_000))?;
        Ok(Self {
            config,
            decoder,
            resampler: Resampler::new(config.sample_rate, OPUS_RATE, 2),
            encoder,
            clock: AudioClock::new(OPUS_RATE),
            pending: Vec::with_capacity(4 * FRAME),
            decoded: Vec::with_capacity(4096),
            packets: 0,
        })
    }

    /// The input format, e.g. `AAC 44100 Hz 2 ch`.
    pub fn describe(&self) -> String {
        format!(
            "AAC {} Hz {} ch",
            self.config.sample_rate, self.config.channels
        )
    }

    /// Decodes one raw AAC access unit at `timestamp_ms` and returns the Opus packets it
    /// completes (usually one; zero or two at packet boundaries).
    pub fn push(
        &mut self,
        aac: &[u8],
        timestamp_ms: u64,
    ) -> Result<Vec<OpusPacket>, TranscodeError> {
        let packet = PacketRef::new(0, Timestamp::new(0), Duration::new(1024), aac);
        let buffer = self
            .decoder
            .decode_ref(&packet)
            .map_err(|e| TranscodeError::Decode(e.to_string()))?;
        if buffer.frames() > MAX_FRAME_SAMPLES {
            return Err(TranscodeError::TooLong(buffer.frames()));
        }
        self.decoded.clear();
        buffer.copy_to_vec_interleaved(&mut self.decoded);
        if self.config.channels == 1 {
            self.decoded = self.decoded.iter().flat_map(|s| [*s, *s]).collect();
        }
        let before = self.pending.len();
        self.resampler.process(&self.decoded, &mut self.pending);
        let produced = ((self.pending.len() - before) / 2) as u64;
        self.clock.input(timestamp_ms, produced);

        let mut out = Vec::new();
        let mut encoded = [0u8; 1500];
        let mut consumed = 0;
        while self.pending.len() - consumed >= 2 * FRAME {
            let len = self
                .encoder
                .encode_float(&self.pending[consumed..consumed + 2 * FRAME], &mut encoded)?;
            consumed += 2 * FRAME;
            out.push(OpusPacket {
                timestamp: self.clock.output(FRAME as u64),
                group_start: self.packets.is_multiple_of(PACKETS_PER_GROUP),
                data: Bytes::copy_from_slice(&encoded[..len]),
            });
            self.packets += 1;
        }
        self.pending.drain(..consumed);
        Ok(out)
    }
}
