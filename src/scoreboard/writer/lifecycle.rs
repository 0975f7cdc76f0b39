//! Master-side writes: the master writes a slot only around its worker's life (spawned,
//! exited, restarted), and keeps its own record of those fields (the segment's truth).

use std::sync::atomic::Ordering::*;

use crate::scoreboard::raw::layout::LANE_OWN;
use crate::scoreboard::{mono_ns, segment::SlotTruth, unix_ms, Scoreboard, SlotState};

/// Master-side writes: the master writes a slot only around its worker's life.
impl Scoreboard {
    /// A worker was spawned into `index`.
    pub(crate) fn slot_spawned(&self, index: usize, pid: u32, generation: u64) {
        let Some(s) = self.slot(index) else { return };
        if self.slot_foreign(index) {
            return; // another master writes it (an upgrade)
        }
        let started = unix_ms();
        self.with_slot_truth(index, |t| {
            t.pid = pid;
            t.generation = generation;
            t.started_unix_ms = started;
            t.state = SlotState::Starting;
        });
        s.pid.store(u64::from(pid), Relaxed);
        s.generation.store(generation, Relaxed);
        s.started_unix_ms.store(started, Relaxed);
        s.started_mono_ns.store(mono_ns(), Relaxed);
        // The owner's lane was released when the slot's last worker was gone (`slot_exited`;
        // a new segment starts released): resetting it here could race with the new worker,
        // already running, claiming it.
        self.reset_gauges(index);
        s.state.store(SlotState::Starting.to_raw(), Release);
    }

    /// The worker of `index` is gone: reset its gauges and connection table, keep counters.
    pub(crate) fn slot_exited(&self, index: usize, wait_status: i32) {
        let Some(s) = self.slot(index) else { return };
        if self.slot_foreign(index) {
            return;
        }
        self.with_slot_truth(index, |t| {
            t.pid = 0;
            t.state = SlotState::Dead;
        });
        s.state.store(SlotState::Dead.to_raw(), Release);
        s.pid.store(0, Relaxed);
        s.last_exit
            .store(u64::from(wait_status as u32) + 1, Relaxed);
        for lane in &s.counters {
            lane.conns_open.store(0, Relaxed);
            lane.requests_active.store(0, Relaxed);
        }
        s.counters[LANE_OWN].owner.store(0, Relaxed);
        for e in &s.conns {
            // A worker killed mid-write leaves the seqlock odd: make it even again.
            let seq = e.seq.load(Relaxed);
            e.seq.store((seq | 1).wrapping_add(1), Relaxed);
            e.in_use.store(0, Relaxed);
            e.inflight.store(0, Relaxed);
        }
        for last in &s.last {
            let seq = last.seq.load(Relaxed);
            if seq & 1 == 1 {
                last.seq.store(seq.wrapping_add(1), Relaxed);
            }
        }
        s.conn_bitmap.store(0, Release);
    }

    /// A slot the other master of an upgrade wrote is this master's again (its worker is
    /// gone): its record says so, and the segment keeps what the other master wrote last.
    pub(crate) fn release_foreign(&self, index: usize) {
        let released = self.with_slot_truth(index, |t| {
            let was = t.foreign;
            t.foreign = false;
            if was && t.state != SlotState::Empty {
                t.pid = 0;
                t.state = SlotState::Dead;
            }
            was
        });
        if released == Some(true) {
            self.restamp();
        }
    }

    /// Counts a respawn of `index`.
    pub(crate) fn slot_restarted(&self, index: usize) {
        let Some(s) = self.slot(index) else { return };
        if self.slot_foreign(index) {
            return;
        }
        match self.with_slot_truth(index, |t| {
            t.restarts += 1;
            t.restarts
        }) {
            Some(n) => s.restarts.store(n, Relaxed),
            None => {
                s.restarts.fetch_add(1, Relaxed);
            }
        }
    }

    /// Updates the creator's record of slot `index` (none in other processes).
    fn with_slot_truth<T>(&self, index: usize, f: impl FnOnce(&mut SlotTruth) -> T) -> Option<T> {
        let truth = self.segment().truth.as_ref()?;
        let mut slots = truth.slots();
        slots.get_mut(index).map(f)
    }
}
