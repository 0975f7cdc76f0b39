//! The reload transaction (diagram in the module docs of [`super`]): spawn generation g+1
//! into free slots, commit when every new worker is ready, roll back when one exits, a spawn
//! or the program copy fails, the before-reload hook fails or a deadline passes. Requests
//! during a reload (or the start) are coalesced into one more reload after it; every waiter
//! gets the outcome of the reload it ended up in.

use std::time::{Duration, Instant};

use super::canary::CanaryTx;
use super::workers::SpawnKind;
use super::{Action, Core, Hook, Level, Notify, Stop, WaiterId};
use crate::control::{Outcome, ReloadOutcome, Reply};

/// Beyond the shutdown timeout, how long a reload waits for draining workers to free slots.
pub(super) const SLOT_WAIT_MARGIN: Duration = Duration::from_secs(2);

/// Where a reload stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    /// The before-reload hook runs (bounded by the shell).
    Hook,
    /// The previous generation still drains out of the slots this one needs.
    WaitingForSlots {
        /// Rollback then.
        deadline: Instant,
    },
    /// The program copy is being made (a deadline carried over from waiting for slots).
    Preparing {
        /// Rollback then.
        deadline: Option<Instant>,
    },
    /// The new workers are spawned into `slots`; waiting for them to be ready.
    Starting {
        /// The new generation's slots.
        slots: Vec<usize>,
        /// Rollback then.
        deadline: Instant,
    },
    /// Canary: the new workers serve next to the old generation until `until`.
    Observing {
        /// The canaries' slots.
        slots: Vec<usize>,
        /// The comparison then.
        until: Instant,
    },
    /// Canary: the shell is asked for the figures (answered at once).
    Judging {
        /// The canaries' slots.
        slots: Vec<usize>,
    },
}

/// One reload in progress.
#[derive(Debug)]
pub(super) struct ReloadTx {
    pub(super) generation: u64,
    started: Instant,
    waiters: Vec<WaiterId>,
    pub(super) step: Step,
    /// Rolling: new workers started at a time (`None`: all at once). Per reload, so that
    /// another kind of reload can choose its own.
    pub(super) batch: Option<usize>,
    /// Rolling: the new generation's slots of the batches already ready (they serve).
    pub(super) done: Vec<usize>,
    /// A canary reload's state (`canary.rs`).
    pub(super) canary: Option<CanaryTx>,
}

impl ReloadTx {
    /// When it rolls back unless it has moved on.
    pub(super) fn deadline(&self) -> Option<Instant> {
        match &self.step {
            Step::Hook | Step::Judging { .. } => None,
            Step::Observing { until, .. } => Some(*until),
            Step::Preparing { deadline } => *deadline,
            Step::WaitingForSlots { deadline } | Step::Starting { deadline, .. } => Some(*deadline),
        }
    }
}

impl Core {
    /// Whether `generation` is the one a reload is starting.
    pub(super) fn reloading(&self, generation: u64) -> bool {
        self.reload
            .as_ref()
            .is_some_and(|r| r.generation == generation)
    }

    pub(super) fn request_reload(&mut self, waiter: Option<WaiterId>) {
        if self.stop != Stop::No {
            if let Some(w) = waiter {
                self.reply(w, Reply::error("the cluster is stopping"));
            }
        } else if self.reload.is_some() || self.start_deadline.is_some() {
            let msg = "reload requested while another is in progress: queued";
            self.log(Level::Info, msg.into());
            self.queued.get_or_insert_with(Vec::new).extend(waiter);
        } else if self.restoring > 0 {
            let msg = "reload requested while a rollback restores old workers: queued";
            self.log(Level::Info, msg.into());
            self.queued.get_or_insert_with(Vec::new).extend(waiter);
        } else if !self.recycles.is_empty() {
            let msg = "reload requested during a worker recycle: queued until it ends";
            self.log(Level::Info, msg.into());
            self.queued.get_or_insert_with(Vec::new).extend(waiter);
        } else {
            self.begin_reload(waiter.into_iter().collect());
        }
    }

    /// Begins a reload (asked for now, or queued behind the start or another reload); once a
    /// stop was asked for, answers its waiters instead, like a new request.
    pub(super) fn begin_reload(&mut self, waiters: Vec<WaiterId>) {
        self.begin_reload_with(waiters, None);
    }

    /// [`Self::begin_reload`], as a canary reload with `canary`.
    pub(super) fn begin_reload_with(&mut self, waiters: Vec<WaiterId>, canary: Option<CanaryTx>) {
        if self.stop != Stop::No {
            self.answer_all(waiters, &Reply::error("the cluster is stopping"));
            return;
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        let msg = match &canary {
            Some(c) => format!(
                "canary reload: starting {} workers of generation {generation}",
                c.spec.workers
            ),
            None => format!("reload: starting generation {generation}"),
        };
        self.log_about(Level::Info, msg, None, None, Some(generation));
        self.out
            .push(Action::Notify(Notify::Reloading { generation }));
        self.reload = Some(ReloadTx {
            generation,
            started: self.now,
            waiters,
            step: Step::Hook,
            batch: canary
                .as_ref()
                .map_or(self.cfg.reload_batch, |c| Some(c.spec.workers)),
            done: Vec::new(),
            canary,
        });
        if self.cfg.before_reload {
            let hook = Hook::BeforeReload { generation };
            let timeout = self.cfg.ready_timeout;
            self.out.push(Action::RunHook { hook, timeout });
        } else {
            self.spawn_reload_generation();
        }
    }

    pub(super) fn on_reload_hook(&mut self, generation: u64, result: Result<(), String>) {
        let at_hook = self
            .reload
            .as_ref()
            .is_some_and(|r| r.generation == generation && r.step == Step::Hook);
        if !at_hook {
            return;
        }
        match result {
            Ok(()) => self.spawn_reload_generation(),
            Err(e) => self.rollback(format!("before-reload hook failed: {e}")),
        }
    }

    /// A slot was freed: a rollback owed old workers respawns one, a reload waiting for
    /// slots checks again, a reload queued behind the restoring begins.
    pub(super) fn slot_freed(&mut self) {
        if self.restoring > 0 {
            self.restore_old();
            if self.restoring == 0 && self.reload.is_none() && self.recycles.is_empty() {
                if let Some(q) = self.queued.take() {
                    self.begin_reload(q);
                }
            }
            return;
        }
        let waiting = self
            .reload
            .as_ref()
            .is_some_and(|r| matches!(r.step, Step::WaitingForSlots { .. }));
        if waiting {
            self.spawn_reload_generation();
        }
    }

    /// Moves the reload on from the hook, from waiting for slots or from preparing.
    pub(super) fn spawn_reload_generation(&mut self) {
        let starting = self.reload.as_ref().is_none_or(|tx| {
            matches!(
                tx.step,
                Step::Starting { .. } | Step::Observing { .. } | Step::Judging { .. }
            )
        });
        if !starting {
            self.spawn_batch();
        }
    }

    /// Spawns the next batch (the whole generation unless rolling) into free slots, or
    /// waits for draining workers to free them, or rolls back when they never will.
    pub(super) fn spawn_batch(&mut self) {
        let Some(tx) = self.reload.as_ref() else {
            return;
        };
        let (generation, step) = (tx.generation, tx.step.clone());
        let need = self.batch_size();
        let free = self.free_slots();
        // Slots held by the other master of an upgrade free too, once it is done with them.
        let draining = self.workers.values().filter(|w| w.draining).count() + self.held.len();
        let room = free.len() >= need && !self.over_peak(need);
        if !room && draining > 0 && free.len() + draining >= need {
            if !matches!(step, Step::WaitingForSlots { .. }) {
                self.wait_for_slots(generation, draining);
            }
        } else if !room && free.len() >= need {
            let live = self.workers.len();
            self.rollback(format!(
                "{live} workers live and none draining: no room for a batch of {need} under the rolling peak"
            ));
        } else if !room {
            self.rollback(format!(
                "not enough free slots for a new generation: {} free, {need} needed (start with a larger --slots)",
                free.len()
            ));
        } else if !self.prepared.contains(&generation) {
            // Copied off the loop; `on_prepared` comes back here.
            let deadline = self.reload.as_ref().and_then(ReloadTx::deadline);
            self.set_step(Step::Preparing { deadline });
            self.prepare(generation);
        } else {
            let slots = free[..need].to_vec();
            for &slot in &slots {
                self.owner[slot] = Some(generation);
                self.queue_spawn(slot, generation, SpawnKind::Reload);
            }
            let deadline = self.now + self.cfg.ready_timeout;
            self.set_step(Step::Starting { slots, deadline });
            self.spawn_next();
        }
    }

    /// The previous generation still drains out of the slots this one needs: wait for its
    /// exits (each checks again), at most until it must be gone.
    fn wait_for_slots(&mut self, generation: u64, draining: usize) {
        let msg = match self.held.len() {
            0 => format!("reload waits for {draining} draining workers to free their slots"),
            held => format!(
                "reload waits for {} draining workers and the other master of the upgrade \
                 ({held} slots) to free their slots",
                draining - held
            ),
        };
        self.log_about(Level::Info, msg, None, None, Some(generation));
        let deadline = self.now + self.cfg.shutdown_timeout + SLOT_WAIT_MARGIN;
        self.set_step(Step::WaitingForSlots { deadline });
    }

    fn set_step(&mut self, step: Step) {
        if let Some(tx) = self.reload.as_mut() {
            tx.step = step;
        }
    }

    /// Rolls the reload back when its deadline has passed.
    pub(super) fn reload_deadline(&mut self) {
        if self.canary_due() {
            return;
        }
        let Some(tx) = self
            .reload
            .as_ref()
            .filter(|r| r.deadline().is_some_and(|d| d <= self.now))
        else {
            return;
        };
        let reason = match &tx.step {
            Step::Starting { slots, .. } => {
                let total = slots.len();
                let g = tx.generation;
                let ready_in = |s: &usize| {
                    self.workers
                        .get(s)
                        .is_some_and(|w| w.ready && w.generation == g)
                };
                let ready = slots.iter().filter(|s| ready_in(s)).count();
                let t = self.cfg.ready_timeout;
                let batch = self.batch_label();
                format!("only {ready} of {total} new workers{batch} were ready after {t:?}")
            }
            Step::WaitingForSlots { .. } => {
                let draining = self.workers.values().filter(|w| w.draining).count();
                let t = self.cfg.shutdown_timeout + SLOT_WAIT_MARGIN;
                let held = match self.held.len() {
                    0 => String::new(),
                    n => format!(", {n} slots still held by the other master of an upgrade"),
                };
                format!("waited {t:?} for draining workers to free the slots it needs; {draining} still draining{held}")
            }
            Step::Hook | Step::Preparing { .. } | Step::Observing { .. } | Step::Judging { .. } => {
                let t = self.cfg.shutdown_timeout + SLOT_WAIT_MARGIN;
                format!(
                    "the program copy was not made within {t:?} of waiting for draining workers"
                )
            }
        };
        self.rollback(reason);
    }

    /// Checks whether every new worker is ready: then commits.
    pub(super) fn check_reload_ready(&mut self) {
        let Some(tx) = &self.reload else { return };
        let Step::Starting { slots, .. } = &tx.step else {
            return;
        };
        let generation = tx.generation;
        let all_ready = !slots.is_empty()
            && slots.iter().all(|s| {
                self.workers
                    .get(s)
                    .is_some_and(|w| w.ready && w.generation == generation)
            });
        if all_ready && !self.canary_ready() && !self.batch_ready() {
            self.commit();
        }
    }

    /// The new generation serves; the old one drains.
    fn commit(&mut self) {
        let Some(tx) = self.reload.take() else { return };
        let old = self.generation;
        self.generation = tx.generation;
        self.out.push(Action::SetGeneration(tx.generation));
        let kill_at = self.now + self.cfg.shutdown_timeout;
        for slot in 0..self.owner.len() {
            if self.owner[slot] == Some(old) {
                self.owner[slot] = None;
                self.respawn_at.remove(&slot);
                self.drain(slot, kill_at);
            }
        }
        self.finish_reload(tx, Outcome::Success, None);
    }

    /// The new generation stops; the old one keeps serving.
    pub(super) fn rollback(&mut self, reason: String) {
        let Some(tx) = self.reload.take() else { return };
        let kill_at = self.now + self.cfg.shutdown_timeout;
        for slot in 0..self.owner.len() {
            if self.owner[slot] == Some(tx.generation) {
                self.release_slot(slot, kill_at);
            }
        }
        let reason = match self.restore_after_rollback() {
            0 => reason,
            1 => format!("{reason}; 1 old worker respawns"),
            n => format!("{reason}; {n} old workers respawn"),
        };
        self.finish_reload(tx, Outcome::Rollback, Some(reason));
    }

    fn finish_reload(&mut self, tx: ReloadTx, outcome: Outcome, reason: Option<String>) {
        let canary = tx
            .canary
            .as_ref()
            .map(|c| c.report(outcome, reason.as_deref()));
        if let Some(c) = &canary {
            self.canary_counts.count(c);
            self.last_canary = Some(c.clone());
        }
        let result = ReloadOutcome {
            outcome,
            generation: tx.generation,
            reason,
            duration_ms: self.now.saturating_duration_since(tx.started).as_millis() as u64,
            canary,
        };
        let g = Some(tx.generation);
        let msg = match outcome {
            Outcome::Success => format!(
                "reload succeeded in {} ms: generation {} serving, the previous one draining",
                result.duration_ms, tx.generation
            ),
            Outcome::Rollback => format!(
                "reload rolled back: {}; generation {} keeps serving",
                result.reason.as_deref().unwrap_or("?"),
                self.generation
            ),
        };
        let level = match outcome {
            Outcome::Success => Level::Info,
            Outcome::Rollback => Level::Error,
        };
        self.log_about(level, msg, None, None, g);
        self.out.push(Action::RecordReload(result.clone()));
        self.last_reload = Some(result.clone());
        self.out.push(Action::Notify(Notify::Ready));
        let reply = Reply {
            ok: true,
            reload: Some(result),
            ..Reply::default()
        };
        self.answer_all(tx.waiters, &reply);
        self.forget_unused_generations();
        if self.restoring == 0 {
            if let Some(q) = self.queued.take() {
                self.begin_reload(q);
            }
        }
    }

    /// Takes the reload and the queue away, answering their waiters with `reply`.
    pub(super) fn cancel_reloads(&mut self, reply: &Reply) {
        if let Some(tx) = self.reload.take() {
            self.answer_all(tx.waiters, reply);
        }
        if let Some(q) = self.queued.take() {
            self.answer_all(q, reply);
        }
    }
}
