//! The listeners' accept queues: what the master samples from the kernel (`master::listen_queue`)
//! and keeps in its own memory and in the segment's header, for readers in other processes.

use serde::Serialize;

use super::super::raw::layout::{ListenQueueEntry, QUEUE_DROPS, QUEUE_USED};
use super::super::strings;
use super::read::read_consistent;

/// One listening socket's accept queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ListenQueueSnapshot {
    /// The listener's address: `127.0.0.1:8080`, `[::1]:8080` or `unix:/path`.
    pub listener: String,
    /// Connections waiting for a worker's `accept` at the last sample.
    pub length: u64,
    /// The highest length sampled since the last scrape of `/metrics` (or since the start).
    pub peak: u64,
    /// The backlog limit (`--backlog`, capped by `net.core.somaxconn`).
    pub limit: u64,
    /// Connections the listener dropped since the master started (TCP only: the kernel
    /// counts none for a Unix listener, whose clients wait or get `EAGAIN` instead).
    pub drops: Option<u64>,
}

impl ListenQueueSnapshot {
    /// The length as a share of the limit (0 when the limit is unknown).
    pub fn fill_ratio(&self) -> f64 {
        if self.limit == 0 {
            0.0
        } else {
            self.length as f64 / self.limit as f64
        }
    }
}

/// The used entries of the header's table, each read under its seqlock (a reader in another
/// process: any worker may have scribbled them, so names are validated and torn entries
/// skipped).
pub(super) fn read(entries: &[ListenQueueEntry]) -> Vec<ListenQueueSnapshot> {
    use std::sync::atomic::Ordering::Relaxed;
    entries
        .iter()
        .filter_map(|e| {
            read_consistent(&e.seq, || {
                let flags = e.flags.load(Relaxed);
                (flags & QUEUE_USED != 0).then(|| {
                    let name = strings::read_strict(&e.name)?;
                    Some(ListenQueueSnapshot {
                        listener: name,
                        length: e.length.load(Relaxed),
                        peak: e.peak.load(Relaxed),
                        limit: e.limit.load(Relaxed),
                        drops: (flags & QUEUE_DROPS != 0).then(|| e.drops.load(Relaxed)),
                    })
                })
            })
            .flatten()
            .flatten()
        })
        .collect()
}
