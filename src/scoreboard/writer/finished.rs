//! The requests this process finished: its own count, in process memory only (never in the
//! shared segment, which any worker can write). The master decides `--max-requests` from it
//! (sent in each heartbeat), so no other process may be able to change it.
//!
//! One cell per thread that finished a request, written by that thread alone with a plain
//! load and store (no locked instruction, like the slot's owner lane), read by summing the
//! cells. A cell outlives its thread (it is leaked on purpose: its count must not go away),
//! so the memory kept is one word per thread that ever finished a request.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};

/// Every thread's cell, for [`total`].
static CELLS: Mutex<Vec<&'static AtomicU64>> = Mutex::new(Vec::new());

thread_local! {
    /// This thread's cell once it finished a request (`const`: reading it is one load).
    static MINE: Cell<Option<&'static AtomicU64>> = const { Cell::new(None) };
}

/// Counts one finished request of the calling thread.
#[inline]
pub(super) fn count_one() {
    let _ = MINE.try_with(|mine| match mine.get() {
        // The only writer of this cell: a plain load and store.
        Some(cell) => cell.store(cell.load(Relaxed).wrapping_add(1), Relaxed),
        None => first(mine),
    });
}

/// The calling thread's first finished request: its cell is made and registered.
#[cold]
#[inline(never)]
fn first(mine: &Cell<Option<&'static AtomicU64>>) {
    let cell: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(1)));
    CELLS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(cell);
    mine.set(Some(cell));
}

/// Requests finished by this process so far (every thread's count).
pub(super) fn total() -> u64 {
    CELLS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .fold(0u64, |sum, c| sum.wrapping_add(c.load(Relaxed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_of_every_thread_add_up_and_stay_after_the_thread_ended() {
        // Other tests of this binary count too: measure the difference.
        let before = total();
        let threads: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..1000).for_each(|_| count_one())))
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        count_one();
        let after = total();
        assert!(after - before >= 4001, "{before} -> {after}");
    }
}
