//! One continuous timeline out of a source's timestamps, across the sources that feed one
//! output: layer switches, publishers that reconnect, a relay's track that goes on under a
//! returning publisher. Pure: time comes in as arguments.

use std::time::{Duration, Instant};

/// A source whose keyframe lands further ahead than this of where its last frame and the wall
/// clock put it started its clock again.
const CLOCK_JUMP: Duration = Duration::from_secs(3);

/// Maps a source's timestamps onto one continuous output timeline: when the source changes
/// (another layer, a reconnected publisher), the first frame of the new source is placed after
/// the last frame sent by the wall-clock time between them. A source can also change under the
/// same track: a publisher back within the grace period, seen through a relay whose track goes
/// on. Its clock shows it at its first keyframe: at or before a frame already mapped (B-frames
/// reorder only within a group), or [`CLOCK_JUMP`] ahead of where the wall clock puts it. (A
/// stalled source whose late frames come in a burst is no new source: they stay late.)
#[derive(Debug)]
pub struct Timeline {
    clock_rate: u64,
    offset: i64,
    /// The last frame's output timestamp, and when it arrived.
    last: Option<(u64, Instant)>,
    /// The highest output timestamp so far (B-frames come out of order).
    highest: u64,
    rebase: bool,
    /// The last frame mapped found the source's clock jumped, and rebased.
    jumped: bool,
}

impl Timeline {
    /// An empty timeline for timestamps of `clock_rate` units a second.
    pub fn new(clock_rate: u64) -> Self {
        Self {
            clock_rate,
            offset: 0,
            last: None,
            highest: 0,
            rebase: false,
            jumped: false,
        }
    }

    /// The next frame comes from a new source.
    pub fn source_changed(&mut self) {
        self.rebase = true;
    }

    /// The output timestamp of a frame with source timestamp `ts` that arrived at `arrived`.
    pub fn map(&mut self, ts: u64, keyframe: bool, arrived: Instant) -> u64 {
        let rebase = std::mem::take(&mut self.rebase);
        self.jumped = false;
        if let Some((_, at)) = self.last {
            let elapsed = arrived.saturating_duration_since(at);
            let target = self.highest + self.ticks(elapsed).max(1);
            let out = ts as i64 + self.offset;
            self.jumped = !rebase
                && keyframe
                && (out <= self.highest as i64 || out > (target + self.ticks(CLOCK_JUMP)) as i64);
            if rebase || self.jumped {
                self.offset = target as i64 - ts as i64;
            }
        }
        let out = (ts as i64 + self.offset).max(0) as u64;
        self.last = Some((out, arrived));
        self.highest = self.highest.max(out);
        out
    }

    /// Whether the last frame mapped was rebased because the source's clock jumped.
    pub fn jumped(&self) -> bool {
        self.jumped
    }

    fn ticks(&self, d: Duration) -> u64 {
        d.as_micros() as u64 * self.clock_rate / 1_000_000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_continues_across_sources() {
        let t0 = Instant::now();
        let mut t = Timeline::new(90_000);
        assert_eq!(t.map(1_000, true, t0), 1_000);
        assert_eq!(t.map(4_000, false, t0 + Duration::from_millis(33)), 4_000);
        // A reconnected publisher starts again at 0, 2 s later.
        t.source_changed();
        let at = t0 + Duration::from_millis(2_033);
        assert_eq!(t.map(0, true, at), 4_000 + 180_000);
        assert_eq!(t.map(3_000, false, at + Duration::from_millis(33)), 187_000);
        // A layer with a far-off clock.
        t.source_changed();
        let next = t.map(9_000_000_000, true, at + Duration::from_millis(66));
        assert_eq!(next, 187_000 + 2_970);
        assert!(!t.jumped(), "a new source is no jump");
    }

    #[test]
    fn a_source_clock_that_jumps_is_a_new_source() {
        let t0 = Instant::now();
        let mut t = Timeline::new(90_000);
        assert_eq!(t.map(900_000, true, t0), 900_000);
        // B-frames: a frame 100 ms behind the last is reordered, not a jump.
        let b = t0 + Duration::from_millis(33);
        assert_eq!(t.map(900_000 - 9_000, false, b), 891_000);
        assert!(!t.jumped());
        // The publisher came back through a relay on the same track, its clock half a second
        // behind (seen in a test), 1.5 s on: its keyframe goes after what was sent.
        let back = b + Duration::from_millis(1_500);
        assert_eq!(t.map(855_000, true, back), 900_000 + 135_000);
        assert!(t.jumped());
        assert_eq!(
            t.map(858_000, false, back + Duration::from_millis(33)),
            1_038_000
        );
        assert!(!t.jumped());
        // ... or far ahead, at its keyframe; a late frame after a stall stays late.
        let later = back + Duration::from_millis(66);
        assert_eq!(t.map(50_000_000, true, later), 1_038_000 + 2_970);
        assert!(t.jumped());
        let stalled = later + Duration::from_secs(5);
        assert_eq!(t.map(50_003_000, false, stalled), 1_040_970 + 3_000);
        assert!(!t.jumped());
    }
}
