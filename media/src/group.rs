//! A group: a keyframe and the frames that depend on it, written by its track's producer and
//! read by the track's consumers without a lock.
//!
//! Frames are appended into write-once slots and never move, so a consumer that has found its
//! group reads the next frame with a few atomic loads and takes no lock. A group links the
//! next one weakly, so a consumer holding an old group does not keep the later ones.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

use crate::Frame;

/// Slots in the first bucket; each next bucket doubles.
const FIRST_BUCKET: usize = 8;
/// Buckets per group: they hold [`CAPACITY`] frames.
const BUCKETS: usize = 12;
/// Frames one group holds at most (32,760: over nine minutes of 60 fps video). The track trims
/// a full group as it trims one over its byte budget.
pub(crate) const CAPACITY: usize = FIRST_BUCKET * ((1 << BUCKETS) - 1);

pub(crate) struct Group {
    pub(crate) seq: u64,
    /// When its keyframe arrived.
    pub(crate) started: Instant,
    /// Frames trimmed from the front of this group before this copy of it was made: the frame
    /// at slot `i` is the group's frame `dropped + i`.
    pub(crate) dropped: usize,
    buckets: [OnceLock<Box<[OnceLock<Frame>]>>; BUCKETS],
    /// The group after this one, set when it starts: once set, no frame is added here.
    next: OnceLock<Weak<Group>>,
    /// Evicted from the cache, or replaced by a trimmed copy: readers must look again.
    gone: AtomicBool,
}

impl Group {
    pub(crate) fn new(seq: u64, started: Instant, dropped: usize) -> Arc<Self> {
        Arc::new(Self {
            seq,
            started,
            dropped,
            buckets: Default::default(),
            next: OnceLock::new(),
            gone: AtomicBool::new(false),
        })
    }

    /// The frame in slot `index`, once written.
    pub(crate) fn frame(&self, index: usize) -> Option<&Frame> {
        let (bucket, offset) = locate(index)?;
        self.buckets[bucket].get()?.get(offset)?.get()
    }

    /// Writes slot `index`, the one after the last written. Only the track's producer writes,
    /// under the track's lock. Returns the frame back if the group is full.
    pub(crate) fn push(&self, index: usize, frame: Frame) -> Result<(), Frame> {
        let Some((bucket, offset)) = locate(index) else {
            return Err(frame);
        };
        let slots = self.buckets[bucket].get_or_init(|| {
            (0..FIRST_BUCKET << bucket)
                .map(|_| OnceLock::new())
                .collect()
        });
        slots[offset].set(frame)
    }

    /// The group after this one, if it has started.
    pub(crate) fn next(&self) -> Option<&Weak<Group>> {
        self.next.get()
    }

    /// Links the group that follows. Set once; a replaced group is never linked.
    pub(crate) fn set_next(&self, next: &Arc<Group>) {
        let _ = self.next.set(Arc::downgrade(next));
    }

    pub(crate) fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }

    /// Marks the group evicted or replaced, before the producer lets it go.
    pub(crate) fn set_gone(&self) {
        self.gone.store(true, Ordering::Release);
    }
}

/// Bucket and offset of slot `index`: bucket `b` holds `FIRST_BUCKET << b` slots and starts at
/// `FIRST_BUCKET * (2^b - 1)`.
fn locate(index: usize) -> Option<(usize, usize)> {
    let n = index / FIRST_BUCKET + 1;
    let bucket = (usize::BITS - 1 - n.leading_zeros()) as usize;
    (bucket < BUCKETS).then(|| (bucket, index - FIRST_BUCKET * ((1 << bucket) - 1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn frame(ts: u64) -> Frame {
        Frame::new(ts, ts == 0, Bytes::new(), Instant::now())
    }

    #[test]
    fn slots_cover_every_index_once_up_to_capacity() {
        let mut seen = std::collections::HashSet::new();
        for index in 0..CAPACITY {
            let (bucket, offset) = locate(index).unwrap();
            assert!(offset < FIRST_BUCKET << bucket, "{index}");
            assert!(seen.insert((bucket, offset)), "{index}");
        }
        assert_eq!(locate(CAPACITY), None);
    }

    #[test]
    fn frames_are_read_where_written_and_a_full_group_refuses_more() {
        let group = Group::new(0, Instant::now(), 0);
        for ts in 0..CAPACITY as u64 {
            assert!(group.frame(ts as usize).is_none());
            group.push(ts as usize, frame(ts)).unwrap();
        }
        for ts in [0, 7, 8, 1000, CAPACITY as u64 - 1] {
            assert_eq!(group.frame(ts as usize).unwrap().timestamp, ts);
        }
        assert!(group.push(CAPACITY, frame(0)).is_err());
        assert!(group.frame(CAPACITY).is_none());
    }
}
