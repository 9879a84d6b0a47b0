//! Waking many waiters without a lock on the waiting side.
//!
//! tokio's `Notify` keeps its waiters in a list behind one mutex, which every waiter takes
//! each time its future is polled while pending, so the viewers of a track would all take one
//! lock for every frame. Here a waiter is registered once (when its track consumer, or its
//! wait for a broadcast's end, is made) and waits by storing its waker in its own
//! [`AtomicWaker`]; the list's lock is taken by the producer to wake everyone, and by a waiter
//! only to come and go.

use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use futures::task::AtomicWaker;

/// The waiters of one producer.
#[derive(Clone, Default)]
pub(crate) struct Wakers(Arc<Mutex<Vec<Arc<AtomicWaker>>>>);

impl Wakers {
    fn lock(&self) -> MutexGuard<'_, Vec<Arc<AtomicWaker>>> {
        // Every change is one push or one removal: a poisoned list is still whole.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new waiter, woken by every [`Wakers::wake_all`] from now on while it waits.
    pub(crate) fn waiter(&self) -> Waiter {
        let waker = Arc::new(AtomicWaker::new());
        self.lock().push(waker.clone());
        Waiter {
            waker,
            wakers: self.clone(),
        }
    }

    /// Wakes every waiter that is waiting. Call after the change it should see. The list
    /// stays locked meanwhile (tens of nanoseconds a waiter): a consumer joining waits that long.
    pub(crate) fn wake_all(&self) {
        for waker in self.lock().iter() {
            waker.wake();
        }
    }
}

/// One waiter: register the task's waker, then check for the change; a change made after the
/// registration wakes the task.
pub(crate) struct Waiter {
    waker: Arc<AtomicWaker>,
    wakers: Wakers,
}

impl Waiter {
    pub(crate) fn register(&self, waker: &Waker) {
        self.waker.register(waker);
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.wakers
            .lock()
            .retain(|waker| !Arc::ptr_eq(waker, &self.waker));
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::Poll;

    use super::*;

    #[tokio::test]
    async fn a_change_after_registering_wakes_the_waiter_and_a_dropped_waiter_leaves() {
        let wakers = Wakers::default();
        let changed = Arc::new(AtomicBool::new(false));
        let waiter = wakers.waiter();
        let gone = wakers.waiter();
        drop(gone);
        assert_eq!(wakers.lock().len(), 1);
        let task = tokio::spawn({
            let changed = changed.clone();
            async move {
                poll_fn(|cx| {
                    waiter.register(cx.waker());
                    if changed.load(Ordering::Acquire) {
                        Poll::Ready(())
                    } else {
                        Poll::Pending
                    }
                })
                .await;
                drop(waiter);
            }
        });
        tokio::task::yield_now().await;
        changed.store(true, Ordering::Release);
        wakers.wake_all();
        tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .expect("woken")
            .expect("task");
        assert!(wakers.lock().is_empty());
    }
}
