//! Calls into third-party parsers of what peers send that can panic on it: rml_rtmp 0.8
//! (`drain(..3)` on a short command, a length underflow in its chunk deserializer) and
//! srt-protocol 0.4 (`unimplemented!` on handshake extensions). [`guarded`] turns such a panic
//! into `None`, so the caller refuses that input and nothing else is disturbed, and keeps the
//! panic's message and backtrace out of the node's output (a stranger could fill it).

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// Set while a guarded call runs on this thread.
    static GUARDED: Cell<bool> = const { Cell::new(false) };
}

/// Prints other panics as before; keeps guarded ones quiet.
fn quiet_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !GUARDED.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Runs `parse` (synchronous: no await inside); `None` if it panicked. What it had mutated may
/// be half-done: the caller drops it.
pub(crate) fn guarded<T>(parse: impl FnOnce() -> T) -> Option<T> {
    quiet_hook();
    let was = GUARDED.with(|g| g.replace(true));
    let result = panic::catch_unwind(AssertUnwindSafe(parse));
    GUARDED.with(|g| g.set(was));
    result.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_becomes_none_and_the_thread_goes_on() {
        let short: Vec<u8> = std::hint::black_box(vec![1, 2]);
        assert_eq!(guarded(|| short.len()), Some(2));
        assert_eq!(guarded(|| short[..3].len()), None);
        assert_eq!(guarded(|| 7), Some(7));
        assert!(!GUARDED.with(Cell::get));
    }
}
