//! The master's record of its listeners' accept queues: the latest sample, the peak since the
//! last scrape of `/metrics`, the limit, and the drops as a 64-bit total (the kernel's counter
//! is 32 bits wide and wraps). Kept in the creator's memory ([`super::Truth`]) and stamped
//! into the segment's header table for readers in other processes.

use std::sync::atomic::{AtomicU64, Ordering};

use super::super::raw::layout::{ListenQueueEntry, QUEUE_DROPS, QUEUE_USED};
use super::super::snapshot::ListenQueueSnapshot;
use super::super::{seqlock, strings};

/// One reading of a listener, as the sampler gets it from the kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueSample {
    /// Connections waiting for `accept`.
    pub length: u32,
    /// The backlog limit.
    pub limit: u32,
    /// The kernel's drop counter (32 bits, wraps); `None` when it counts none.
    pub drops: Option<u32>,
}

/// One listener's record as it crosses a master upgrade ([`super::Carried`]): the 64-bit
/// total and the kernel's counter at the last sample, so the next master's first sample adds
/// only what the kernel counted since.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub(crate) struct CarriedQueue {
    pub listener: String,
    pub length: u64,
    pub peak: u64,
    pub limit: u64,
    pub drops: Option<u64>,
    pub raw_drops: Option<u32>,
}

#[derive(Debug, Clone, Default)]
struct Listener {
    shown: ListenQueueSnapshot,
    /// The kernel's counter at the last sample.
    raw_drops: Option<u32>,
}

/// Every listener's queue, in the order they were first sampled.
#[derive(Debug, Default)]
pub(crate) struct QueueTruth {
    listeners: Vec<Listener>,
}

impl QueueTruth {
    /// Takes one sample of `listener`. The first sample of a TCP listener starts its drop
    /// total at the kernel's count (a socket bound by this master starts at 0).
    pub(crate) fn observe(&mut self, listener: &str, sample: QueueSample) {
        let at = match self
            .listeners
            .iter()
            .position(|l| l.shown.listener == listener)
        {
            Some(at) => at,
            None => {
                self.listeners.push(Listener {
                    shown: ListenQueueSnapshot {
                        listener: listener.to_string(),
                        ..ListenQueueSnapshot::default()
                    },
                    raw_drops: None,
                });
                self.listeners.len() - 1
            }
        };
        let l = &mut self.listeners[at];
        let length = u64::from(sample.length);
        l.shown.length = length;
        l.shown.peak = l.shown.peak.max(length);
        l.shown.limit = u64::from(sample.limit);
        if let Some(raw) = sample.drops {
            let added = match l.raw_drops {
                Some(last) => u64::from(raw.wrapping_sub(last)),
                None => u64::from(raw),
            };
            l.shown.drops = Some(l.shown.drops.unwrap_or(0).saturating_add(added));
            l.raw_drops = Some(raw);
        }
    }

    /// A scrape of `/metrics` read the peaks: each starts again from the current length.
    pub(crate) fn scraped(&mut self) {
        for l in &mut self.listeners {
            l.shown.peak = l.shown.length;
        }
    }

    /// Every listener's record, to carry to the next master.
    pub(crate) fn carry(&self) -> Vec<CarriedQueue> {
        let carry = |l: &Listener| CarriedQueue {
            listener: l.shown.listener.clone(),
            length: l.shown.length,
            peak: l.shown.peak,
            limit: l.shown.limit,
            drops: l.shown.drops,
            raw_drops: l.raw_drops,
        };
        self.listeners.iter().map(carry).collect()
    }

    /// Takes the carried records: each replaces this master's record of its listener (drops
    /// and the kernel's last count together), other listeners are kept.
    pub(crate) fn import(&mut self, carried: Vec<CarriedQueue>) {
        for c in carried {
            let l = Listener {
                shown: ListenQueueSnapshot {
                    listener: c.listener,
                    length: c.length,
                    peak: c.peak,
                    limit: c.limit,
                    drops: c.drops,
                },
                raw_drops: c.raw_drops,
            };
            match self
                .listeners
                .iter_mut()
                .find(|x| x.shown.listener == l.shown.listener)
            {
                Some(x) => *x = l,
                None => self.listeners.push(l),
            }
        }
    }

    /// Every listener's figures.
    pub(crate) fn shown(&self) -> Vec<ListenQueueSnapshot> {
        self.listeners.iter().map(|l| l.shown.clone()).collect()
    }

    /// Writes the figures into the header's table (the first `entries.len()` listeners).
    pub(crate) fn stamp(&self, entries: &[ListenQueueEntry]) {
        let set = |a: &AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
        for (e, l) in entries.iter().zip(&self.listeners) {
            let s = &l.shown;
            seqlock::force_write(&e.seq, || {
                let drops = if s.drops.is_some() { QUEUE_DROPS } else { 0 };
                set(&e.flags, QUEUE_USED | drops);
                set(&e.length, s.length);
                set(&e.peak, s.peak);
                set(&e.limit, s.limit);
                set(&e.drops, s.drops.unwrap_or(0));
                strings::write(&e.name, &s.listener);
            });
        }
        // Entries past the listeners are left unused (a worker may have scribbled them).
        for e in entries.iter().skip(self.listeners.len()) {
            if e.flags.load(Ordering::Relaxed) != 0 {
                seqlock::force_write(&e.seq, || set(&e.flags, 0));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(length: u32, drops: u32) -> QueueSample {
        QueueSample {
            length,
            limit: 128,
            drops: Some(drops),
        }
    }

    #[test]
    fn peak_holds_the_highest_length_until_a_scrape() {
        let mut t = QueueTruth::default();
        for n in [3, 9, 4] {
            t.observe("127.0.0.1:80", tcp(n, 0));
        }
        let s = &t.shown()[0];
        assert_eq!((s.length, s.peak, s.limit), (4, 9, 128));
        t.scraped();
        assert_eq!(t.shown()[0].peak, 4);
        t.observe("127.0.0.1:80", tcp(2, 0));
        assert_eq!(t.shown()[0].peak, 4);
        t.observe("127.0.0.1:80", tcp(7, 0));
        assert_eq!(t.shown()[0].peak, 7);
    }

    #[test]
    fn drops_unwrap_the_kernels_32_bit_counter() {
        let mut t = QueueTruth::default();
        t.observe("a", tcp(0, u32::MAX - 1));
        t.observe("a", tcp(0, 3));
        // u32::MAX - 1 at start, then 5 more across the wrap.
        assert_eq!(t.shown()[0].drops, Some(u64::from(u32::MAX) - 1 + 5));
        t.observe("a", tcp(0, 3));
        assert_eq!(t.shown()[0].drops, Some(u64::from(u32::MAX) + 4));
    }

    /// A reader in another process gets the table from the header; a name a worker
    /// scribbled (not UTF-8) hides that entry, a torn flag word shows nothing made up, and
    /// the master's next sample heals both.
    #[test]
    fn readers_see_the_header_table_and_skip_scribbled_entries() {
        use crate::scoreboard::Scoreboard;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let sb = Scoreboard::create(&path, "t", 2).unwrap();
        let long = format!("unix:/{}", "d".repeat(100));
        sb.record_listen_queues(&[
            ("127.0.0.1:8080".into(), tcp(5, 1)),
            (
                long.clone(),
                QueueSample {
                    length: 1,
                    limit: 8,
                    drops: None,
                },
            ),
        ]);
        let reader = Scoreboard::open_read_only(&path).unwrap();
        let seen = reader.snapshot().listen_queues;
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0], sb.snapshot().listen_queues[0]);
        assert_eq!((seen[0].length, seen[0].drops), (5, Some(1)));
        assert_eq!(seen[1].drops, None);
        // The segment keeps the first bytes of a long name; the master keeps all of it.
        assert!(long.starts_with(&seen[1].listener) && seen[1].listener.len() < long.len());
        assert_eq!(sb.snapshot().listen_queues[1].listener, long);

        let h = sb.inner.header();
        h.listen_queues[0].name.words[0].store(u64::MAX, Ordering::Relaxed);
        h.listen_queues[5]
            .flags
            .store(QUEUE_USED, Ordering::Relaxed);
        let seen = reader.snapshot().listen_queues;
        assert!(seen.iter().all(|q| q.listener != "127.0.0.1:8080"));
        assert!(seen.len() <= 3, "{seen:?}");
        sb.record_listen_queues(&[("127.0.0.1:8080".into(), tcp(6, 1))]);
        let healed = reader.snapshot().listen_queues;
        assert_eq!(healed.len(), 2, "{healed:?}");
        assert_eq!(healed[0].length, 6);
    }

    #[test]
    fn a_unix_listener_has_no_drops_and_listeners_keep_their_order() {
        let mut t = QueueTruth::default();
        t.observe("b", tcp(1, 0));
        t.observe(
            "unix:/run/x.sock",
            QueueSample {
                length: 2,
                limit: 16,
                drops: None,
            },
        );
        t.observe("b", tcp(5, 2));
        let shown = t.shown();
        assert_eq!(shown.len(), 2);
        assert_eq!((shown[0].listener.as_str(), shown[0].drops), ("b", Some(2)));
        assert_eq!(shown[1].listener, "unix:/run/x.sock");
        assert_eq!(shown[1].drops, None);
        assert!((shown[1].fill_ratio() - 0.125).abs() < 1e-12);
    }
}
