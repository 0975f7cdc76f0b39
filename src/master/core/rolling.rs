//! Rolling reloads (`reload_batch` = K): the new generation starts K workers at a time in
//! free slots; once a batch is ready, K old workers drain and the next batch spawns when
//! their slots are free, so at most target + K workers live. A rollback drains the new
//! workers and respawns the old workers its batches retired (`restoring`), into free slots
//! now or as draining workers exit.

use super::reload::Step;
use super::workers::SpawnKind;
use super::{Core, Level, Stop};

impl Core {
    /// Workers the next batch spawns: the whole generation unless rolling.
    pub(super) fn batch_size(&self) -> usize {
        let Some(tx) = self.reload.as_ref() else {
            return self.target;
        };
        let left = self.target.saturating_sub(tx.done.len());
        match tx.batch {
            Some(k) => left.min(k.max(1)),
            None => left,
        }
    }

    /// Whether `need` more workers would pass a rolling reload's peak of target + K.
    pub(super) fn over_peak(&self, need: usize) -> bool {
        let peak = |k: usize| self.target + k.max(1);
        self.reload
            .as_ref()
            .and_then(|tx| tx.batch)
            .is_some_and(|k| self.workers.len() + need > peak(k))
    }

    /// " (batch i)" while rolling, for messages.
    pub(super) fn batch_label(&self) -> String {
        match self
            .reload
            .as_ref()
            .and_then(|tx| Some((tx.batch?, tx.done.len())))
        {
            Some((k, done)) => format!(" (batch {})", done / k.max(1) + 1),
            None => String::new(),
        }
    }

    /// The current batch is ready. Rolling with workers left to start: as many old workers
    /// drain, the next batch follows, and this returns true; otherwise false (commit).
    pub(super) fn batch_ready(&mut self) -> bool {
        let target = self.target;
        let Some(tx) = self.reload.as_mut() else {
            return false;
        };
        let Step::Starting { slots, .. } = &tx.step else {
            return false;
        };
        if tx.batch.is_none() || tx.done.len() + slots.len() >= target {
            return false;
        }
        let batch = slots.clone();
        tx.done.extend(&batch);
        let (generation, done) = (tx.generation, tx.done.len());
        let msg = match batch.len() {
            1 => format!("reload: {done} of {target} new workers ready; 1 old worker drains"),
            n => format!("reload: {done} of {target} new workers ready; {n} old workers drain"),
        };
        self.log_about(Level::Info, msg, None, None, Some(generation));
        self.retire_old(batch.len());
        self.spawn_batch();
        true
    }

    /// `n` workers of the serving generation give up their slots: ones not ready first
    /// (they serve nobody, SIGTERM), then ready ones (drained).
    fn retire_old(&mut self, n: usize) {
        let old = self.generation;
        let kill_at = self.now + self.cfg.shutdown_timeout;
        let mut mine: Vec<usize> = (0..self.owner.len())
            .filter(|&s| self.owner[s] == Some(old))
            .collect();
        mine.sort_by_key(|s| self.workers.get(s).is_some_and(|w| w.ready));
        for &slot in mine.iter().take(n) {
            self.release_slot(slot, kill_at);
        }
    }

    /// After a rollback: the serving generation gets back the slots its batches gave up.
    /// Returns how many workers it respawns.
    pub(super) fn restore_after_rollback(&mut self) -> usize {
        let g = self.generation;
        let owned = self.owner.iter().filter(|o| **o == Some(g)).count();
        self.restoring = self.target.saturating_sub(owned);
        let n = self.restoring;
        self.restore_old();
        n
    }

    /// Spawns workers of the serving generation into free slots while a rollback is owed
    /// some.
    pub(super) fn restore_old(&mut self) {
        if self.restoring == 0 || self.stop == Stop::Stopping {
            return;
        }
        let g = self.generation;
        for slot in self.free_slots().into_iter().take(self.restoring) {
            self.owner[slot] = Some(g);
            self.queue_spawn(slot, g, SpawnKind::Scale);
            self.restoring -= 1;
        }
        if self.restoring == 0 {
            self.log(Level::Info, "rollback: every old worker respawns".into());
        }
        self.spawn_next();
    }
}
