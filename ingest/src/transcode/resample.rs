//! A streaming linear-interpolation resampler for interleaved f32 audio.
//!
//! Linear interpolation is enough for first light (it only runs when the encoder is not
//! already at 48 kHz, which OBS's default is); a windowed-sinc resampler is the upgrade.

/// Converts interleaved audio from `from` Hz to `to` Hz, keeping state across calls so packet
/// boundaries are seamless and no samples are gained or lost over time.
#[derive(Debug)]
pub struct Resampler {
    from: u64,
    to: u64,
    channels: usize,
    /// Output frames produced so far; output frame `n` sits at input position `n * from / to`.
    produced: u64,
    /// Input frames consumed in earlier calls.
    consumed: u64,
    /// The last input frame of the previous call, for interpolating across the boundary.
    last: Vec<f32>,
}

impl Resampler {
    /// A resampler from `from` Hz to `to` Hz for `channels` interleaved channels.
    pub fn new(from: u32, to: u32, channels: usize) -> Self {
        Self {
            from: u64::from(from),
            to: u64::from(to),
            channels,
            produced: 0,
            consumed: 0,
            last: vec![0.0; channels],
        }
    }

    /// Appends the resampled form of `input` (interleaved) to `output`.
    pub fn process(&mut self, input: &[f32], output: &mut Vec<f32>) {
        let ch = self.channels;
        let frames = (input.len() / ch) as u64;
        if self.from == self.to {
            output.extend_from_slice(&input[..frames as usize * ch]);
            self.consumed += frames;
            self.produced += frames;
            return;
        }
        let end = self.consumed + frames;
        loop {
            // Position of the next output frame in input frames, as integer + fraction.
            let num = self.produced * self.from;
            let pos = num / self.to;
            if pos + 1 >= end {
                break;
            }
            let frac = (num % self.to) as f32 / self.to as f32;
            for c in 0..ch {
                let a = self.sample(input, pos, c);
                let b = self.sample(input, pos + 1, c);
                output.push(a + (b - a) * frac);
            }
            self.produced += 1;
        }
        if frames > 0 {
            let last = (frames as usize - 1) * ch;
            self.last.copy_from_slice(&input[last..last + ch]);
        }
        self.consumed = end;
    }

    /// Input frame `pos` (absolute), from this call's input or the previous call's last frame.
    fn sample(&self, input: &[f32], pos: u64, c: usize) -> f32 {
        if pos < self.consumed {
            self.last[c]
        } else {
            input[(pos - self.consumed) as usize * self.channels + c]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_length_tracks_the_ratio_without_drift() {
        let mut r = Resampler::new(44_100, 48_000, 2);
        let mut out = Vec::new();
        let input = vec![0.5f32; 1024 * 2];
        for _ in 0..10_000 {
            r.process(&input, &mut out);
        }
        let expected = 10_000 * 1024 * 48_000 / 44_100;
        assert!(
            (out.len() / 2).abs_diff(expected) <= 2,
            "{} vs {expected}",
            out.len() / 2
        );
        assert!(out.iter().all(|s| (*s - 0.5).abs() < 1e-6));
    }

    #[test]
    fn a_ramp_stays_a_ramp_across_calls() {
        let mut r = Resampler::new(32_000, 48_000, 1);
        let mut out = Vec::new();
        let ramp: Vec<f32> = (0..300).map(|i| i as f32).collect();
        for chunk in ramp.chunks(7) {
            r.process(chunk, &mut out);
        }
        for (n, s) in out.iter().enumerate() {
            assert!((s - n as f32 * 32.0 / 48.0).abs() < 1e-3, "sample {n}: {s}");
        }
    }

    #[test]
    fn same_rate_is_a_copy() {
        let mut r = Resampler::new(48_000, 48_000, 2);
        let mut out = Vec::new();
        r.process(&[1.0, 2.0, 3.0, 4.0], &mut out);
        assert_eq!(out, vec![1.0, 2.0, 3.0, 4.0]);
    }
}
