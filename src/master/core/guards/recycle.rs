//! Graceful recycles: a replacement of the same generation starts in a free slot and
//! becomes ready, then the old worker drains like after a reload. Never during the start,
//! a reload (or one queued) or a stop; at most `max_recycling` at once; a failed
//! replacement leaves the old worker serving and is retried after the ready timeout.

use std::time::Instant;

use super::super::workers::{SpawnKind, Worker};
use super::super::{Action, Core, Level, RecycleReason, Stop};
use super::mib;

/// One recycle under way, by the slot of the worker it replaces.
#[derive(Debug, Clone)]
pub(in crate::master::core) struct Recycle {
    /// The replacement's slot.
    pub(in crate::master::core) replacement: usize,
    pub(in crate::master::core) reason: RecycleReason,
    /// The replacement must be ready by then.
    pub(in crate::master::core) deadline: Instant,
}

impl Core {
    /// Whether a recycle may begin now: not during the start, a reload or a stop, nor while
    /// fewer healthy workers serve than the target (one killed, crashed or still starting).
    fn recycles_allowed(&self) -> bool {
        let generation = self.generation;
        let healthy = self
            .workers
            .values()
            .filter(|w| {
                w.ready && !w.draining && w.watch.killed.is_none() && w.generation == generation
            })
            .count();
        self.stop == Stop::No
            && self.start_deadline.is_none()
            && self.reload.is_none()
            && self.queued.is_none()
            && self.upgrade.is_none()
            && healthy >= self.target
    }

    /// Whether the worker in `slot` may be recycled at all: a ready, serving worker of the
    /// serving generation, not killed, not in a recycle, not waiting to retry one.
    fn recyclable(&self, slot: usize, w: &Worker) -> bool {
        w.ready
            && !w.draining
            && w.pid.is_some()
            && w.watch.killed.is_none()
            && w.generation == self.generation
            && self.owner[slot] == Some(w.generation)
            && !self.recycles.contains_key(&slot)
            && w.watch.retry_at.is_none_or(|t| t <= self.now)
    }

    /// Why `w` is due for a recycle, with the log line.
    fn recycle_due(&self, w: &Worker) -> Option<(RecycleReason, String)> {
        let g = &self.cfg.guards;
        let watch = &w.watch;
        if let Some(max) = g.max_memory {
            let n = g.memory_samples.max(1);
            if watch.over_memory >= n {
                let detail = format!("rss {} over {} for {n} samples", mib(watch.rss), mib(max));
                return Some((RecycleReason::Memory, detail));
            }
        }
        if let Some(limit) = watch.requests_limit.filter(|l| watch.requests >= *l) {
            let detail = format!("served {} requests (limit {limit})", watch.requests);
            return Some((RecycleReason::MaxRequests, detail));
        }
        let retire = watch.retire_at.filter(|t| *t <= self.now)?;
        let lived = self.now.saturating_duration_since(w.spawned_at);
        let limit = retire.saturating_duration_since(w.spawned_at);
        let detail = format!("lived {lived:.1?} (limit {limit:.1?})");
        Some((RecycleReason::Age, detail))
    }

    /// Begins the recycles that are due, up to `max_recycling` at once, in slot order.
    pub(in crate::master::core) fn begin_due_recycles(&mut self) {
        if self.recycles.len() >= self.cfg.guards.max_recycling || !self.recycles_allowed() {
            return;
        }
        let due: Vec<(usize, RecycleReason, String)> = self
            .workers
            .iter()
            .filter(|(s, w)| self.recyclable(**s, w))
            .filter_map(|(s, w)| self.recycle_due(w).map(|(r, d)| (*s, r, d)))
            .collect();
        for (slot, reason, detail) in due {
            if self.recycles.len() >= self.cfg.guards.max_recycling {
                return;
            }
            self.begin_recycle(slot, reason, detail);
        }
    }

    /// `RecordRecycle`, then the replacement is spawned into a free slot; without one,
    /// waits (warned once per worker) and tries again after later events.
    fn begin_recycle(&mut self, slot: usize, reason: RecycleReason, detail: String) {
        let Some(w) = self.workers.get(&slot) else {
            return;
        };
        let (pid, generation) = (w.pid, w.generation);
        let Some(free) = self.free_slots().first().copied() else {
            let w = self.workers.get_mut(&slot);
            if let Some(w) = w.filter(|w| !w.watch.wait_logged) {
                w.watch.wait_logged = true;
                let msg = format!(
                    "recycle ({detail}) waits: no free slot for its replacement (start with a larger --slots)"
                );
                self.log_about(Level::Warn, msg, Some(slot), pid, Some(generation));
            }
            return;
        };
        let Some(pid) = pid else { return };
        let msg = format!("recycling worker ({detail}): its replacement starts in slot {free}");
        // Counted once per worker: a retry after a failed replacement is the same recycle.
        let first = self
            .workers
            .get_mut(&slot)
            .is_some_and(|w| !std::mem::replace(&mut w.watch.recycle_recorded, true));
        if first {
            self.out.push(Action::RecordRecycle {
                slot,
                pid,
                reason,
                detail,
            });
        }
        self.log_about(Level::Info, msg, Some(slot), Some(pid), Some(generation));
        let deadline = self.now + self.cfg.ready_timeout;
        self.recycles.insert(
            slot,
            Recycle {
                replacement: free,
                reason,
                deadline,
            },
        );
        self.owner[free] = Some(generation);
        self.queue_spawn(free, generation, SpawnKind::Recycle);
        self.spawn_next();
    }

    /// The slot of the worker that the one in `slot` replaces.
    pub(in crate::master::core) fn replaced_by(&self, slot: usize) -> Option<usize> {
        self.recycles
            .iter()
            .find(|(_, r)| r.replacement == slot)
            .map(|(old, _)| *old)
    }

    /// The worker in `slot` turned ready: if it is a replacement, the old one drains.
    pub(in crate::master::core) fn on_replacement_ready(&mut self, slot: usize) {
        let Some(old) = self.replaced_by(slot) else {
            return;
        };
        let Some(r) = self.recycles.remove(&old) else {
            return;
        };
        self.owner[old] = None;
        self.respawn_at.remove(&old);
        let (pid, generation) = self
            .workers
            .get(&old)
            .map_or((None, None), |w| (w.pid, Some(w.generation)));
        let msg = format!(
            "recycle ({}): its replacement in slot {slot} is ready; draining",
            r.reason.as_str()
        );
        self.log_about(Level::Info, msg, Some(old), pid, generation);
        self.drain(old, self.now + self.cfg.shutdown_timeout);
        self.recycle_ended();
    }

    /// The recycle of the worker in `old` failed: its replacement's slot is freed (the
    /// replacement, if it still runs, is stopped), the old one keeps serving and may be
    /// recycled again after the ready timeout.
    pub(in crate::master::core) fn recycle_failed(&mut self, old: usize, why: &str) {
        let Some(r) = self.recycles.remove(&old) else {
            return;
        };
        let rep = r.replacement;
        self.owner[rep] = None;
        self.respawn_at.remove(&rep);
        let shutdown_at = self.now + self.cfg.shutdown_timeout;
        self.terminate(rep, shutdown_at);
        let retry = self.cfg.ready_timeout;
        let retry_at = self.now + retry;
        let w = self.workers.get_mut(&old);
        let (pid, generation) = w.map_or((None, None), |w| {
            w.watch.retry_at = Some(retry_at);
            (w.pid, Some(w.generation))
        });
        let msg = format!(
            "recycle ({}) failed: {why}; the worker keeps serving, next try in {retry:?}",
            r.reason.as_str()
        );
        self.log_about(Level::Error, msg, Some(old), pid, generation);
        self.recycle_ended();
    }

    /// The worker in `old` exited during its recycle: its replacement takes its place
    /// (no respawn of the old slot).
    pub(in crate::master::core) fn on_recycled_exit(&mut self, old: usize, w: &Worker, how: &str) {
        let Some(r) = self.recycles.remove(&old) else {
            return;
        };
        self.owner[old] = None;
        let msg = format!(
            "worker exited during its recycle ({how}); its replacement in slot {} takes its place",
            r.replacement
        );
        self.log_about(Level::Warn, msg, Some(old), w.pid, Some(w.generation));
        self.recycle_ended();
    }

    /// Fails the recycles whose replacement was not ready in time.
    pub(in crate::master::core) fn recycle_timeouts(&mut self) {
        let now = self.now;
        let late: Vec<(usize, usize)> = self
            .recycles
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(old, r)| (*old, r.replacement))
            .collect();
        for (old, rep) in late {
            let t = self.cfg.ready_timeout;
            self.recycle_failed(
                old,
                &format!("its replacement in slot {rep} was not ready within {t:?}"),
            );
        }
    }

    /// When the last recycle ends, a reload queued behind it begins.
    fn recycle_ended(&mut self) {
        let idle = self.reload.is_none() && self.start_deadline.is_none() && self.restoring == 0;
        if self.recycles.is_empty() && idle {
            if let Some(q) = self.queued.take() {
                self.begin_reload(q);
            }
        }
    }

    /// Replacement deadlines, and the future times a recycle may become due (ages, retries).
    pub(in crate::master::core) fn recycle_deadlines(&self) -> impl Iterator<Item = Instant> + '_ {
        let now = self.now;
        let later = self
            .workers
            .values()
            .filter(|w| w.ready && !w.draining)
            .flat_map(|w| [w.watch.retire_at, w.watch.retry_at])
            .flatten()
            .filter(move |t| *t > now);
        self.recycles.values().map(|r| r.deadline).chain(later)
    }
}
