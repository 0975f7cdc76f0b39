//! The write side of the segment's seqlocks (connection entries, last requests, the
//! header's last reload): claim `seq` even→odd, a `Release` fence, `Relaxed` data stores, then
//! `Release`-store the next even value. Readers retry while `seq` is odd or has moved.

use std::sync::atomic::{fence, AtomicU64, Ordering::*};

/// Runs `f` under the seqlock `seq` if no other writer holds it. Returns whether it ran.
#[inline]
pub(crate) fn try_write(seq: &AtomicU64, f: impl FnOnce()) -> bool {
    let s = seq.load(Relaxed);
    if s & 1 == 1 || seq.compare_exchange(s, s + 1, Relaxed, Relaxed).is_err() {
        return false;
    }
    fence(Release);
    f();
    seq.store(s.wrapping_add(2), Release);
    true
}

/// Runs `f` under the seqlock `seq` whatever state another writer left it in (the master
/// rewriting a header that a worker may have scribbled): readers retry while it is odd.
pub(crate) fn force_write(seq: &AtomicU64, f: impl FnOnce()) {
    let s = seq.load(Relaxed) | 1;
    seq.store(s, Relaxed);
    fence(Release);
    f();
    seq.store(s.wrapping_add(1), Release);
}

/// Runs `f` under the seqlock `seq` for its one writer: plain stores, no CAS. Skips (returns
/// false) when the seqlock is held, which only a rare second writer can do (an app setting
/// infos from another task while the request ends): the pair can then tear the shown
/// strings for one read, never the counters.
#[inline]
pub(crate) fn write_owned(seq: &AtomicU64, f: impl FnOnce()) -> bool {
    let s = seq.load(Relaxed);
    if s & 1 == 1 {
        return false;
    }
    seq.store(s.wrapping_add(1), Relaxed);
    fence(Release);
    f();
    seq.store(s.wrapping_add(2), Release);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqlock_skips_when_held() {
        let seq = AtomicU64::new(0);
        assert!(try_write(&seq, || {
            assert!(!try_write(&seq, || ()));
        }));
        assert_eq!(seq.load(Relaxed), 2);
    }

    #[test]
    fn owned_seqlock_writes_and_skips_when_held() {
        let seq = AtomicU64::new(4);
        assert!(write_owned(&seq, || assert_eq!(seq.load(Relaxed), 5)));
        assert_eq!(seq.load(Relaxed), 6);
        seq.store(7, Relaxed);
        assert!(!write_owned(&seq, || panic!("ran under a held seqlock")));
        assert_eq!(seq.load(Relaxed), 7);
    }
}
