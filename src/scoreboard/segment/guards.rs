//! The master's records of what its worker guards did: recycles and kills by reason (they
//! only grow for the master's life), each slot's last guard event and its worker's event-loop
//! lag, and the last [`MAX_KILL_RECORDS`] kill records. They live in the creator's memory
//! ([`super::Truth`]), never in the segment: a worker cannot forge or erase them. Every
//! snapshot the master takes shows them.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::super::snapshot::{
    read_one, GuardEvent, GuardKind, GuardsSnapshot, KillRecord, KilledRequest, ThreadSnapshot,
};
use super::super::{unix_ms, Scoreboard, SlotSnapshot, SlotState};

mod carry;
pub(crate) use carry::CarriedGuards;

/// Kill records kept (the oldest goes first).
pub const MAX_KILL_RECORDS: usize = 16;

/// A worker's last heartbeat as the master saw it arrive.
#[derive(Debug, Clone, Copy)]
struct Heartbeat {
    pid: u32,
    /// How late the worker's timer fired.
    lag: Duration,
    /// When it arrived (the master's clock).
    at: Instant,
    /// How often the worker sends one.
    interval: Duration,
}

/// Requests kept in a kill record (the oldest in flight).
const KILL_RECORD_REQUESTS: usize = 16;

impl Heartbeat {
    /// The lag to show at `now`: the reported one, or how overdue the next heartbeat is when
    /// that is longer (a blocked event loop sends none, so its lag grows until it is killed).
    fn shown(&self, now: Instant) -> Duration {
        let overdue = now
            .saturating_duration_since(self.at)
            .saturating_sub(self.interval);
        self.lag.max(overdue)
    }
}

/// The guard fields of one slot.
#[derive(Debug, Clone, Default)]
struct SlotGuardTruth {
    heartbeat: Option<Heartbeat>,
    last: Option<GuardEvent>,
}

/// What the guards did, as the master records it.
#[derive(Debug, Default)]
pub(crate) struct GuardTruth {
    shown: GuardsSnapshot,
    /// Record ids, parallel to `shown.kill_records`.
    ids: VecDeque<u64>,
    next_id: u64,
    slots: Vec<SlotGuardTruth>,
    /// The counts and first own record id when this master adopted another's records.
    adopted: Option<carry::Adopted>,
}

impl GuardTruth {
    /// The counts and records shown (autoscaling's counts live here too).
    pub(crate) fn shown_mut(&mut self) -> &mut GuardsSnapshot {
        &mut self.shown
    }

    fn slot(&mut self, index: usize) -> &mut SlotGuardTruth {
        if self.slots.len() <= index {
            self.slots.resize_with(index + 1, SlotGuardTruth::default);
        }
        &mut self.slots[index]
    }

    /// Writes each slot's lag (while its heartbeat's worker is the slot's live worker) and
    /// last guard event into `slots`; returns the counts and kill records.
    pub(crate) fn overlay(&self, slots: &mut [SlotSnapshot]) -> GuardsSnapshot {
        let now = Instant::now();
        for (s, g) in slots.iter_mut().zip(&self.slots) {
            let live = !matches!(s.state, SlotState::Dead | SlotState::Empty);
            s.event_loop_lag_seconds = g
                .heartbeat
                .filter(|h| live && h.pid == s.pid && s.pid != 0)
                .map(|h| h.shown(now).as_secs_f64());
            s.last_guard_event = g.last.clone();
        }
        self.shown.clone()
    }
}

/// The master's guard records (a no-op in other processes).
impl Scoreboard {
    fn with_guards<T>(&self, f: impl FnOnce(&mut GuardTruth) -> T) -> Option<T> {
        let truth = self.segment().truth.as_ref()?;
        Some(f(&mut truth.guards()))
    }

    /// A heartbeat of worker `pid` in `slot` arrived: `lag` is how late its timer fired,
    /// `interval` how often it sends one (master). Its `Ready` counts as a first heartbeat
    /// with no lag, so every ready worker shows a lag.
    pub(crate) fn record_heartbeat(
        &self,
        slot: usize,
        pid: u32,
        lag: Duration,
        interval: Duration,
    ) {
        let at = Instant::now();
        self.with_guards(|g| {
            g.slot(slot).heartbeat = Some(Heartbeat {
                pid,
                lag,
                at,
                interval,
            });
        });
    }

    /// A recycle of the worker in `slot` begins, for `reason` (a label of
    /// [`super::super::RecycleCounts::REASONS`]) (master).
    pub(crate) fn record_recycle(&self, slot: usize, reason: &str) {
        self.with_guards(|g| {
            if let Some(n) = g.shown.recycles.get_mut(reason) {
                *n += 1;
            }
            g.slot(slot).last = Some(event(GuardKind::Recycle, reason));
        });
    }

    /// The worker `pid` in `slot` is about to be killed for `reason` (a label of
    /// [`super::super::KillCounts::REASONS`]): counts it, and keeps a record of its requests
    /// in flight as the segment shows them now. Returns the record's id (for
    /// [`Scoreboard::set_kill_threads`]) and the record (master).
    pub(crate) fn record_kill(
        &self,
        slot: usize,
        pid: u32,
        reason: &str,
        detail: &str,
    ) -> Option<(u64, KillRecord)> {
        let shown = read_one(self.segment(), slot);
        let generation = shown.as_ref().map_or(0, |s| s.generation);
        let mut requests: Vec<KilledRequest> = shown
            .into_iter()
            .flat_map(|s| s.connections)
            .filter_map(|c| {
                let client = c.client;
                c.request.map(|request| KilledRequest { request, client })
            })
            .collect();
        // The oldest ones tell what the worker was stuck in; the record stays small.
        requests.sort_by(|a, b| b.request.age_seconds.total_cmp(&a.request.age_seconds));
        requests.truncate(KILL_RECORD_REQUESTS);
        let record = KillRecord {
            slot,
            pid,
            generation,
            reason: reason.to_string(),
            detail: detail.to_string(),
            unix_ms: unix_ms(),
            requests,
            threads: Vec::new(),
        };
        self.with_guards(|g| {
            if let Some(n) = g.shown.kills.get_mut(reason) {
                *n += 1;
            }
            g.slot(slot).last = Some(event(GuardKind::Kill, reason));
            let id = g.next_id;
            g.next_id += 1;
            if g.shown.kill_records.len() >= MAX_KILL_RECORDS {
                g.shown.kill_records.remove(0);
                g.ids.pop_front();
            }
            g.shown.kill_records.push(record.clone());
            g.ids.push_back(id);
            (id, record)
        })
    }

    /// Adds the threads read from `/proc` to kill record `id`, if it is still kept (master).
    pub(crate) fn set_kill_threads(&self, id: u64, threads: Vec<ThreadSnapshot>) {
        self.with_guards(|g| {
            if let Some(i) = g.ids.iter().position(|&x| x == id) {
                g.shown.kill_records[i].threads = threads;
            }
        });
    }
}

fn event(kind: GuardKind, reason: &str) -> GuardEvent {
    GuardEvent {
        kind,
        reason: reason.to_string(),
        unix_ms: unix_ms(),
    }
}

#[cfg(test)]
mod tests;
