//! Timestamps for transcoded audio: count output samples, anchored to the input's timestamps.
//!
//! Counting samples keeps the output free of drift (it advances exactly as much audio as was
//! encoded); re-anchoring when the input's clock and the sample count disagree by more than
//! [`AudioClock::RESYNC_MS`] handles gaps and jumps in the input.

/// Maps input timestamps (milliseconds, as RTMP carries them) and sample counts to output
/// timestamps at `rate` Hz.
#[derive(Debug)]
pub struct AudioClock {
    rate: u64,
    /// Input timestamp (ms) and output timestamp (samples) of the anchor.
    anchor: Option<(u64, u64)>,
    /// Input samples (at `rate`) seen since the anchor.
    input_since_anchor: u64,
    /// Output samples timestamped since the anchor.
    output_since_anchor: u64,
    resyncs: u64,
}

impl AudioClock {
    /// How far the input's timestamps may disagree with its sample count before re-anchoring.
    pub const RESYNC_MS: u64 = 200;

    /// A clock producing timestamps at `rate` Hz.
    pub fn new(rate: u32) -> Self {
        Self {
            rate: u64::from(rate),
            anchor: None,
            input_since_anchor: 0,
            output_since_anchor: 0,
            resyncs: 0,
        }
    }

    /// Records an input frame at `timestamp_ms` carrying `samples` samples (already at the
    /// output rate). Returns true if the clock re-anchored (a gap or a jump in the input).
    pub fn input(&mut self, timestamp_ms: u64, samples: u64) -> bool {
        let mut resynced = false;
        match self.anchor {
            None => self.anchor = Some((timestamp_ms, timestamp_ms * self.rate / 1000)),
            Some((anchor_ms, _)) => {
                let expected_ms = anchor_ms + self.input_since_anchor * 1000 / self.rate;
                if timestamp_ms.abs_diff(expected_ms) > Self::RESYNC_MS {
                    // Keep output monotonic: never re-anchor behind what was already emitted.
                    let emitted = self.next_output();
                    let at = (timestamp_ms * self.rate / 1000).max(emitted);
                    self.anchor = Some((timestamp_ms, at));
                    self.input_since_anchor = 0;
                    self.output_since_anchor = 0;
                    self.resyncs += 1;
                    resynced = true;
                }
            }
        }
        self.input_since_anchor += samples;
        resynced
    }

    /// The timestamp for the next `samples` output samples, advancing the clock.
    pub fn output(&mut self, samples: u64) -> u64 {
        let ts = self.next_output();
        self.output_since_anchor += samples;
        ts
    }

    fn next_output(&self) -> u64 {
        self.anchor.map_or(0, |(_, out)| out) + self.output_since_anchor
    }

    /// How many times the clock re-anchored.
    pub fn resyncs(&self) -> u64 {
        self.resyncs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ten minutes of 44.1 kHz AAC (1024 samples a frame, RTMP millisecond timestamps rounded
    /// as encoders do) resampled to 48 kHz Opus in 960-sample packets: the output stays within
    /// one packet of the input's clock and never re-anchors.
    #[test]
    fn no_drift_over_ten_minutes() {
        let mut clock = AudioClock::new(48_000);
        let (mut in_samples, mut out_ready, mut last_out) = (0u64, 0u64, 0u64);
        let frames = 10 * 60 * 44_100 / 1024;
        for n in 0..frames {
            let ts_ms = (n * 1024 * 1000 + 22_050) / 44_100;
            // Samples this frame contributes at 48 kHz (exact, in integer arithmetic).
            let before = in_samples * 48_000 / 44_100;
            in_samples += 1024;
            let at_48k = in_samples * 48_000 / 44_100 - before;
            assert!(!clock.input(ts_ms, at_48k), "resync at frame {n}");
            out_ready += at_48k;
            while out_ready >= 960 {
                out_ready -= 960;
                let ts = clock.output(960);
                assert!(ts >= last_out);
                last_out = ts;
            }
            let input_clock = ts_ms * 48;
            assert!(
                last_out.abs_diff(input_clock) <= 2 * 960,
                "drift at frame {n}: {last_out} vs {input_clock}"
            );
        }
        assert_eq!(clock.resyncs(), 0);
    }

    #[test]
    fn a_gap_reanchors_forward() {
        let mut clock = AudioClock::new(48_000);
        clock.input(1000, 960);
        assert_eq!(clock.output(960), 48_000);
        assert!(clock.input(5000, 960), "a 4 s gap must re-anchor");
        assert_eq!(clock.output(960), 5000 * 48);
    }

    #[test]
    fn a_jump_back_never_makes_output_go_backwards() {
        let mut clock = AudioClock::new(48_000);
        clock.input(10_000, 960);
        let first = clock.output(960);
        assert!(clock.input(0, 960));
        assert!(clock.output(960) >= first + 960);
    }
}
