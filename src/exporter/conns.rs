//! The status server's connection table. At most [`super::MAX_CONNECTIONS`] clients are
//! held; when the table is full, a new client takes the place of the one that has gone
//! longest without a request in progress (a client still sending its request head, or an idle
//! keep-alive one). A slowloris client never holds a place against a scraper: the scraper's
//! request arrives whole and is answered at once, while the stalled clients are the oldest
//! idle ones.
//!
//! A new connection cannot be evicted before its first read (it is not *settled*): whatever
//! the client sent with its connect is parsed first, and a whole request head makes it busy.
//! When no place can be freed (every client settling or busy, a passing state) the server
//! stops accepting until one can: new clients wait in the listen queue, never get closed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::sync::{oneshot, Notify};

/// What one connection shares with the table.
#[derive(Debug)]
pub(crate) struct ConnState {
    /// The connection has been read once (before that it cannot be evicted).
    settled: AtomicBool,
    /// A request is being answered (set while the handler runs).
    busy: AtomicBool,
    /// When the connection was accepted or last finished a request, ms since `start`.
    idle_since_ms: AtomicU64,
    /// The table's start.
    start: Instant,
    /// The table's wake-up for an accept loop waiting for a place.
    changed: Arc<Notify>,
}

#[derive(Debug)]
struct Entry {
    state: Arc<ConnState>,
    evict: oneshot::Sender<()>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    conns: HashMap<u64, Entry>,
}

/// The held connections.
#[derive(Debug)]
pub(crate) struct Table {
    inner: Mutex<Inner>,
    start: Instant,
    capacity: usize,
    changed: Arc<Notify>,
}

/// A place in the table, given back on drop.
#[derive(Debug)]
pub(crate) struct Place {
    table: Arc<Table>,
    id: u64,
    /// Shared with the table.
    pub(crate) state: Arc<ConnState>,
    /// Fires when the table drops this connection for a newer one.
    pub(crate) evicted: oneshot::Receiver<()>,
}

/// Marks a connection busy for as long as it lives.
#[derive(Debug)]
pub(crate) struct Busy(Arc<ConnState>);

fn ms_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Table {
    /// A table of `capacity` places.
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner::default()),
            start: Instant::now(),
            capacity,
            changed: Arc::new(Notify::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update is one map call: the table is consistent even after a panic.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for a new connection, evicting the settled connection idle longest when the
    /// table is full; waits while no place can be freed.
    pub(crate) async fn admit(self: &Arc<Self>) -> Place {
        loop {
            // Registered before the check, so a change in between is not missed.
            let changed = self.changed.notified();
            if let Some(place) = self.try_admit() {
                return place;
            }
            changed.await;
        }
    }

    /// [`Table::admit`] without waiting: `None` when no place can be freed now.
    pub(crate) fn try_admit(self: &Arc<Self>) -> Option<Place> {
        let mut inner = self.lock();
        if inner.conns.len() >= self.capacity {
            let victim = inner
                .conns
                .iter()
                .filter(|(_, e)| e.state.settled.load(Relaxed) && !e.state.busy.load(Relaxed))
                .min_by_key(|(id, e)| (e.state.idle_since_ms.load(Relaxed), **id))
                .map(|(id, _)| *id)?;
            if let Some(e) = inner.conns.remove(&victim) {
                let _ = e.evict.send(());
            }
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let state = Arc::new(ConnState {
            settled: AtomicBool::new(false),
            busy: AtomicBool::new(false),
            idle_since_ms: AtomicU64::new(ms_since(self.start)),
            start: self.start,
            changed: self.changed.clone(),
        });
        let (evict, evicted) = oneshot::channel();
        inner.conns.insert(
            id,
            Entry {
                state: state.clone(),
                evict,
            },
        );
        Some(Place {
            table: self.clone(),
            id,
            state,
            evicted,
        })
    }

    /// Connections held now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().conns.len()
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.table.lock().conns.remove(&self.id);
        self.table.changed.notify_one();
    }
}

impl ConnState {
    /// The connection has been read once: from now on it may be evicted while idle.
    pub(crate) fn settle(&self) {
        if !self.settled.swap(true, Relaxed) {
            self.changed.notify_one();
        }
    }

    /// Marks the connection busy until the guard is dropped (then idle from that moment).
    pub(crate) fn busy(self: &Arc<Self>) -> Busy {
        self.busy.store(true, Relaxed);
        Busy(self.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.idle_since_ms.store(ms_since(self.0.start), Relaxed);
        self.0.busy.store(false, Relaxed);
        self.0.changed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_table_evicts_the_longest_idle_and_spares_new_and_busy_ones() {
        let t = Table::new(3);
        let mut a = t.try_admit().expect("a");
        let mut b = t.try_admit().expect("b");
        let c = t.try_admit().expect("c");
        assert!(
            t.try_admit().is_none(),
            "nobody settled yet: no place can be freed"
        );
        for p in [&a, &b, &c] {
            p.state.settle();
        }
        let _busy_a = a.state.busy();
        // Full: the oldest idle one (b) makes room; a is busy.
        let mut d = t.try_admit().expect("d");
        assert_eq!(t.len(), 3);
        assert!(b.evicted.try_recv().is_ok(), "b evicted");
        assert!(a.evicted.try_recv().is_err(), "busy a kept");
        drop(b);
        assert_eq!(t.len(), 3, "an evicted place is already gone");
        let _busy_c = c.state.busy();
        d.state.settle();
        let _busy_d = d.state.busy();
        assert!(t.try_admit().is_none(), "all busy");
        assert!(d.evicted.try_recv().is_err());
        drop(c);
        assert!(t.try_admit().is_some());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn admit_waits_until_a_place_can_be_freed() {
        let t = Table::new(1);
        let first = t.admit().await;
        let waiting = tokio::spawn({
            let t = t.clone();
            async move { t.admit().await.id }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        first.state.settle();
        let id = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("admitted once the first one settled")
            .expect("task");
        assert_eq!(id, 1);
    }
}
