//! Wrapping counters made monotonic: RTP sequence numbers (16 bits), RTP timestamps (32 bits),
//! MPEG-TS times (33 bits).

/// Unwraps a wrapping counter (16-bit sequence numbers, 32-bit timestamps) to 64 bits.
#[derive(Default)]
pub(crate) struct Unwrap {
    last: Option<u64>,
}

impl Unwrap {
    pub(crate) fn extend(&mut self, value: u64, bits: u32) -> u64 {
        let span = 1u64 << bits;
        let extended = match self.last {
            None => value + span, // room below for late, earlier values
            Some(last) => {
                let base = last - last % span;
                [base.saturating_sub(span), base, base + span]
                    .into_iter()
                    .map(|b| b + value)
                    .min_by_key(|v| v.abs_diff(last))
                    .unwrap_or(base + value)
            }
        };
        if self.last.is_none_or(|l| extended > l) {
            self.last = Some(extended);
        }
        extended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_unwrap_both_ways() {
        let mut u = Unwrap::default();
        let a = u.extend(65535, 16);
        assert_eq!(u.extend(0, 16), a + 1);
        assert_eq!(u.extend(65534, 16), a - 1, "late value before the wrap");
        let mut t = Unwrap::default();
        let x = t.extend(u64::from(u32::MAX - 10), 32);
        assert_eq!(t.extend(5, 32), x + 16);
    }
}
