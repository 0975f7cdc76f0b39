//! Workers by slot: spawning one at a time, readiness, exits, respawn with backoff, timers
//! and scaling.

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use super::guards::Watch;
use super::{Action, Core, Level, Notify, Phase, Sig, Stop};
use crate::control::Reply;

/// Why a spawn was asked for: decides what its failure means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SpawnKind {
    /// The first generation: the start fails.
    Start,
    /// A reload's new generation: the reload rolls back.
    Reload,
    /// A respawn after an exit: retried with backoff.
    Respawn,
    /// A scale-up: retried with backoff.
    Scale,
    /// A recycle's replacement: the recycle fails, the old worker keeps serving.
    Recycle,
}

/// One worker process (or the spawn that will be one).
#[derive(Debug)]
pub(super) struct Worker {
    /// `None` until [`super::Event::Spawned`].
    pub(super) pid: Option<u32>,
    pub(super) generation: u64,
    pub(super) spawned_at: Instant,
    pub(super) ready: bool,
    pub(super) draining: bool,
    /// SIGKILL then.
    pub(super) kill_at: Option<Instant>,
    /// A signal asked for before the pid was known.
    deferred: Option<Sig>,
    /// What the guards keep of it (heartbeat, requests, memory, limits).
    pub(super) watch: Watch,
}

impl Worker {
    /// `starting`, `ready` or `draining`.
    pub(super) fn state(&self) -> &'static str {
        if self.draining {
            "draining"
        } else if self.ready {
            "ready"
        } else {
            "starting"
        }
    }
}

/// A short description of an exit status.
pub(super) fn describe_exit(status: Option<&ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    let Some(status) = status else {
        return "unknown status".into();
    };
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => {
            let name = nix::sys::signal::Signal::try_from(sig)
                .map_or_else(|_| sig.to_string(), |s| s.as_str().to_string());
            format!("killed by {name}")
        }
        _ => "unknown status".into(),
    }
}

impl Core {
    /// The live worker in `slot` with `pid`.
    pub(super) fn worker_mut(&mut self, slot: usize, pid: u32) -> Option<&mut super::Worker> {
        self.workers.get_mut(&slot).filter(|w| w.pid == Some(pid))
    }

    pub(super) fn free_slots(&self) -> Vec<usize> {
        (0..self.owner.len())
            .filter(|s| {
                self.owner[*s].is_none() && !self.workers.contains_key(s) && !self.held.contains(s)
            })
            .collect()
    }

    /// Queues a spawn of `generation` into `slot`.
    pub(super) fn queue_spawn(&mut self, slot: usize, generation: u64, kind: SpawnKind) {
        self.spawn_queue.push_back((slot, generation, kind));
    }

    /// Sends the next queued spawn that is still wanted, unless one is out.
    pub(super) fn spawn_next(&mut self) {
        while self.spawning.is_none() {
            let Some((slot, generation, kind)) = self.spawn_queue.pop_front() else {
                return;
            };
            let wanted = self.stop != Stop::Stopping
                && self.owner.get(slot) == Some(&Some(generation))
                && !self.workers.contains_key(&slot);
            if !wanted {
                continue;
            }
            if kind == SpawnKind::Respawn {
                self.out.push(Action::SlotRestarted { slot });
            }
            let watch = self.new_watch();
            self.workers.insert(
                slot,
                Worker {
                    pid: None,
                    generation,
                    spawned_at: self.now,
                    ready: false,
                    draining: false,
                    kill_at: None,
                    deferred: None,
                    watch,
                },
            );
            self.spawning = Some((slot, kind));
            self.out.push(Action::Spawn { slot, generation });
        }
    }

    pub(super) fn spawn_first_generation(&mut self) {
        let generation = self.generation;
        // After a takeover the previous master's slots are held: start in the free ones.
        let slots: Vec<usize> = self.free_slots().into_iter().take(self.target).collect();
        for slot in slots {
            self.owner[slot] = Some(generation);
            self.queue_spawn(slot, generation, SpawnKind::Start);
        }
        self.spawn_next();
    }

    pub(super) fn on_spawned(&mut self, slot: usize, pid: u32) {
        if self.spawning.is_none_or(|(s, _)| s != slot) {
            return;
        }
        self.spawning = None;
        if let Some(w) = self.workers.get_mut(&slot) {
            w.pid = Some(pid);
            let (generation, deferred) = (w.generation, w.deferred.take());
            let msg = "worker spawned".to_string();
            self.log_about(Level::Info, msg, Some(slot), Some(pid), Some(generation));
            if let Some(sig) = deferred {
                self.out.push(Action::Signal { slot, pid, sig });
            }
        }
        self.spawn_next();
    }

    pub(super) fn on_spawn_failed(&mut self, slot: usize, error: &str) {
        let Some((_, kind)) = self.spawning.filter(|(s, _)| *s == slot) else {
            return;
        };
        self.spawning = None;
        let generation = self.workers.remove(&slot).map(|w| w.generation);
        if let (SpawnKind::Recycle, Some(old)) = (kind, self.replaced_by(slot)) {
            self.recycle_failed(old, &format!("cannot spawn its replacement: {error}"));
            self.spawn_next();
            return;
        }
        match kind {
            SpawnKind::Start => self.fail_start(format!("slot {slot}: {error}")),
            SpawnKind::Reload if generation.is_some_and(|g| self.reloading(g)) => {
                self.rollback(format!("cannot spawn a new worker in slot {slot}: {error}"));
            }
            SpawnKind::Reload => {}
            // A replacement whose old worker exited owns its slot: retried like a respawn.
            SpawnKind::Respawn | SpawnKind::Scale | SpawnKind::Recycle
                if self.stop != Stop::Stopping =>
            {
                let delay = self.backoff[slot].on_exit(Duration::ZERO);
                let msg = if kind == SpawnKind::Respawn {
                    self.out.push(Action::SlotExited { slot, status: -1 });
                    format!("respawn failed: {error}; retrying in {delay:.1?}")
                } else {
                    format!("spawn failed: {error}")
                };
                self.log_about(Level::Error, msg, Some(slot), None, None);
                self.respawn_at.insert(slot, self.now + delay);
            }
            SpawnKind::Respawn | SpawnKind::Scale | SpawnKind::Recycle => {}
        }
        self.spawn_next();
    }

    pub(super) fn on_ready(&mut self, slot: usize, pid: u32) {
        let now = self.now;
        let Some(w) = self.worker_mut(slot, pid) else {
            return;
        };
        if !w.ready {
            w.ready = true;
            // Ready counts as a heartbeat: none is checked before.
            w.watch.last_beat = Some(now);
            let generation = w.generation;
            let msg = "worker ready".to_string();
            self.log_about(Level::Info, msg, Some(slot), Some(pid), Some(generation));
        }
        self.check_started();
        self.check_reload_ready();
        self.on_replacement_ready(slot);
    }

    /// A worker that broke its channel is replaced (unless it is on its way out anyway).
    pub(super) fn on_broken(&mut self, slot: usize, pid: u32, error: &str) {
        if self.worker_mut(slot, pid).is_none_or(|w| w.draining) {
            return;
        }
        let msg = format!("worker sent garbage on its control channel ({error}); replacing it");
        self.log_about(Level::Error, msg, Some(slot), Some(pid), None);
        self.signal(slot, Sig::Kill);
    }

    fn check_started(&mut self) {
        if self.start_deadline.is_none() || self.stop == Stop::Stopping {
            return;
        }
        let generation = self.generation;
        let ready = self.count_ready(generation);
        if ready >= self.target {
            self.start_deadline = None;
            self.log(
                Level::Info,
                format!("cluster ready: {ready} workers serving"),
            );
            self.set_phase(Phase::Running);
            self.out.push(Action::Notify(Notify::Ready));
            if let Some(q) = self.queued.take() {
                self.begin_reload(q);
            }
        }
    }

    pub(super) fn count_ready(&self, generation: u64) -> usize {
        let mine = |w: &&super::Worker| w.ready && w.generation == generation;
        self.workers.values().filter(mine).count()
    }

    pub(super) fn on_exit(&mut self, slot: usize, pid: u32, status: Option<ExitStatus>) {
        if self.workers.get(&slot).is_none_or(|w| w.pid != Some(pid)) {
            return;
        }
        let Some(w) = self.workers.remove(&slot) else {
            return;
        };
        let raw = status.map_or(-1, std::os::unix::process::ExitStatusExt::into_raw);
        self.out.push(Action::SlotExited { slot, status: raw });
        let how = describe_exit(status.as_ref());
        let (s, p, g) = (Some(slot), Some(pid), Some(w.generation));
        if self.stop == Stop::Stopping || w.draining {
            self.log_about(Level::Info, format!("worker exited ({how})"), s, p, g);
            self.forget_unused_generations();
            self.slot_freed();
        } else if let Some(old) = self.replaced_by(slot) {
            let why = format!("its replacement in slot {slot} exited before it was ready ({how})");
            self.recycle_failed(old, &why);
        } else if self.recycles.contains_key(&slot) {
            self.on_recycled_exit(slot, &w, &how);
        } else if self.start_deadline.is_some() && !w.ready && w.generation == self.generation {
            self.fail_start(format!(
                "worker in slot {slot} (pid {pid}) exited during start-up ({how})"
            ));
        } else if self.reloading(w.generation) {
            let reason = self.new_worker_exit_reason(slot, pid, &how);
            self.rollback(reason);
        } else if self.owner[slot] != Some(w.generation) {
            let msg = format!("retired worker exited ({how})");
            self.log_about(Level::Info, msg, s, p, g);
            self.forget_unused_generations();
            self.slot_freed();
        } else {
            self.canary_note_exit(w.generation);
            self.respawn_later(slot, &w, &how);
        }
    }

    /// A serving worker died: respawn it after the slot's backoff delay (at once the first
    /// time).
    fn respawn_later(&mut self, slot: usize, w: &Worker, how: &str) {
        let lived = self.now.saturating_duration_since(w.spawned_at);
        let delay = self.backoff[slot].on_exit(lived);
        let msg = match w.watch.killed {
            Some(reason) => format!(
                "killed worker exited ({}: {how}) after {lived:.1?}; respawning in {delay:.1?}",
                reason.as_str()
            ),
            None => format!(
                "worker exited unexpectedly ({how}) after {lived:.1?}; respawning in {delay:.1?}"
            ),
        };
        self.log_about(Level::Warn, msg, Some(slot), w.pid, Some(w.generation));
        self.respawn_at.insert(slot, self.now + delay);
        if delay.is_zero() {
            self.on_tick();
        }
    }

    /// Deadlines that have passed: the start, the reload, drains, respawns.
    pub(super) fn on_tick(&mut self) {
        if self.start_deadline.is_some_and(|d| d <= self.now) {
            let ready = self.workers.values().filter(|w| w.ready).count();
            let (target, t) = (self.target, self.cfg.ready_timeout);
            self.fail_start(format!(
                "only {ready} of {target} workers were ready after {t:?}"
            ));
        }
        self.reload_deadline();
        self.check_upgrade_deadline();
        self.recycle_timeouts();
        self.kill_overdue();
        let now = self.now;
        let due: Vec<usize> = self
            .respawn_at
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(s, _)| *s)
            .collect();
        for slot in due {
            self.respawn_at.remove(&slot);
            if let Some(generation) = self.owner[slot] {
                self.queue_spawn(slot, generation, SpawnKind::Respawn);
            }
        }
        self.spawn_next();
    }

    /// SIGKILLs the workers still draining (or killed) at their deadline, each after its
    /// kill record.
    fn kill_overdue(&mut self) {
        let now = self.now;
        let due: Vec<(usize, Option<u32>)> = self
            .workers
            .iter()
            .filter(|(_, w)| w.kill_at.is_some_and(|t| t <= now))
            .map(|(s, w)| (*s, w.pid))
            .collect();
        for (slot, pid) in due {
            let msg = self.record_overdue_kill(slot);
            self.log_about(Level::Warn, msg, Some(slot), pid, None);
            self.signal(slot, Sig::Kill);
        }
    }

    /// Sends `sig` to the worker in `slot` (once its pid is known); SIGKILL ends its drain
    /// deadline.
    pub(super) fn signal(&mut self, slot: usize, sig: Sig) {
        let Some(w) = self.workers.get_mut(&slot) else {
            return;
        };
        if sig == Sig::Kill {
            w.kill_at = None;
        }
        match w.pid {
            Some(pid) => self.out.push(Action::Signal { slot, pid, sig }),
            None => w.deferred = w.deferred.max(Some(sig)),
        }
    }

    /// Asks the worker in `slot` to drain (over its channel); SIGKILL at `kill_at`.
    pub(super) fn drain(&mut self, slot: usize, kill_at: Instant) {
        let Some(w) = self.workers.get_mut(&slot).filter(|w| !w.draining) else {
            return;
        };
        w.draining = true;
        w.kill_at = Some(w.kill_at.map_or(kill_at, |k| k.min(kill_at)));
        match w.pid {
            Some(pid) => self.out.push(Action::Drain { slot, pid }),
            None => w.deferred = w.deferred.max(Some(Sig::Term)),
        }
    }

    /// Gives `slot` up (no owner, no respawn) and stops its worker: a ready one may be
    /// serving, so it drains like any old worker; one never ready gets SIGTERM now; both are
    /// SIGKILLed at `kill_at`.
    pub(super) fn release_slot(&mut self, slot: usize, kill_at: Instant) {
        self.owner[slot] = None;
        self.respawn_at.remove(&slot);
        match self.workers.get(&slot) {
            Some(w) if w.ready => self.drain(slot, kill_at),
            Some(_) => self.terminate(slot, kill_at),
            None => {}
        }
    }

    /// SIGTERM now (a worker that never became ready may not read its channel); SIGKILL at
    /// `kill_at`.
    pub(super) fn terminate(&mut self, slot: usize, kill_at: Instant) {
        let Some(w) = self.workers.get_mut(&slot).filter(|w| !w.draining) else {
            return;
        };
        w.draining = true;
        w.kill_at = Some(w.kill_at.map_or(kill_at, |k| k.min(kill_at)));
        self.signal(slot, Sig::Term);
    }

    /// Changes the worker count of the serving generation.
    pub(super) fn scale(&mut self, n: usize) -> Reply {
        let max = crate::config::MAX_WORKERS;
        if n == 0 || n > max {
            return Reply::error(format!("invalid worker count {n}: must be 1..={max}"));
        }
        if self.stop != Stop::No {
            return Reply::error("the cluster is stopping");
        }
        if self.reload.is_some() || self.start_deadline.is_some() {
            return Reply::error("a reload or start is in progress; scale again when it is done");
        }
        if !self.recycles.is_empty() {
            return Reply::error("a worker recycle is in progress; scale again when it is done");
        }
        if self.restoring > 0 {
            return Reply::error(
                "a rollback is respawning old workers; scale again when it is done",
            );
        }
        let generation = self.generation;
        let mine: Vec<usize> = (0..self.owner.len())
            .filter(|&s| self.owner[s] == Some(generation))
            .collect();
        if n > mine.len() {
            if let Err(refused) = self.scale_up(n - mine.len()) {
                return Reply::error(refused);
            }
        } else {
            let kill_at = self.now + self.cfg.shutdown_timeout;
            for &slot in &mine[n..] {
                self.owner[slot] = None;
                self.respawn_at.remove(&slot);
                self.drain(slot, kill_at);
            }
        }
        self.log(Level::Info, format!("scaled to {n} workers"));
        self.target = n;
        self.out.push(Action::SetTarget(n));
        Reply {
            ok: true,
            workers: Some(n),
            ..Reply::default()
        }
    }

    /// Spawns `add` more workers of the serving generation into free slots.
    fn scale_up(&mut self, add: usize) -> Result<(), String> {
        let free = self.free_slots();
        if free.len() < add {
            return Err(format!(
                "not enough free slots: {} free, {add} needed (the scoreboard has {}; start with a larger --slots)",
                free.len(),
                self.owner.len()
            ));
        }
        let generation = self.generation;
        for &slot in &free[..add] {
            self.owner[slot] = Some(generation);
            self.queue_spawn(slot, generation, SpawnKind::Scale);
        }
        self.spawn_next();
        Ok(())
    }
}
