//! The reload transaction: spawn generation g+1 into free slots (waiting for draining workers
//! when needed), commit when every new worker is ready, roll back when one exits, a spawn fails,
//! the before-reload hook fails or the ready timeout passes. Requests during a reload are
//! coalesced into one more reload after it; every waiter gets the outcome.

#[allow(
    clippy::wildcard_imports,
    reason = "the supervisor's own imports and types"
)]
use super::*;

impl Supervisor {
    pub(in crate::master) fn request_reload(&mut self, waiter: Waiter) {
        if self.stopping || self.stop_requested {
            answer(vec![waiter], Reply::error("the cluster is stopping"));
        } else if self.reload.is_some() || self.start_deadline.is_some() {
            tracing::info!("reload requested while another is in progress: queued");
            self.queued.get_or_insert_with(Vec::new).push(waiter);
        } else {
            self.begin_reload(vec![waiter]);
        }
    }

    pub(super) fn begin_reload(&mut self, waiters: Vec<Waiter>) {
        let generation = self.next_generation;
        self.next_generation += 1;
        tracing::info!(generation, "reload: starting generation {generation}");
        systemd::notify(&format!(
            "{}\nSTATUS=reloading to generation {generation}",
            systemd::reloading_message()
        ));
        self.reload = Some(ReloadTx {
            generation,
            started: Instant::now(),
            deadline: None,
            slots: Vec::new(),
            waiters,
            waiting_for_slots: false,
        });
        match self.hooks.before_reload.clone() {
            Some(hook) => {
                let events = self.events.clone();
                let timeout = self.ready_timeout;
                tokio::spawn(async move {
                    let result = run_hook(hook, generation, timeout).await;
                    let _ = events.send(Event::ReloadHookDone { generation, result });
                });
            }
            None => self.spawn_reload_generation(),
        }
    }

    pub(super) fn on_reload_hook(&mut self, generation: u64, result: Result<(), String>) {
        if self
            .reload
            .as_ref()
            .is_none_or(|r| r.generation != generation)
        {
            return;
        }
        match result {
            Ok(()) => self.spawn_reload_generation(),
            Err(e) => self.rollback(format!("before-reload hook failed: {e}")),
        }
    }

    pub(super) fn spawn_reload_generation(&mut self) {
        let Some(generation) = self.reload.as_ref().map(|r| r.generation) else {
            return;
        };
        let free = self.free_slots();
        let draining = self.workers.values().filter(|w| w.draining).count();
        if free.len() < self.target && free.len() + draining >= self.target {
            // The previous generation is still draining out of the slots we need: wait for
            // its exits (each retries this), at most until it must be gone.
            if let Some(tx) = self.reload.as_mut() {
                if !tx.waiting_for_slots {
                    tracing::info!(
                        generation,
                        "reload waits for {draining} draining workers to free their slots"
                    );
                    tx.waiting_for_slots = true;
                    tx.deadline = Some(Instant::now() + self.shutdown_timeout + SLOT_WAIT_MARGIN);
                }
            }
            return;
        }
        if free.len() < self.target {
            let msg = format!(
                "not enough free slots for a new generation: {} free, {} needed (start with a larger --slots)",
                free.len(),
                self.target
            );
            self.rollback(msg);
            return;
        }
        if !self.specs.contains_key(&generation) {
            // Copied off the loop; `on_prepared` comes back here.
            self.prepare_generation(generation);
            return;
        }
        let slots = free[..self.target].to_vec();
        for &slot in &slots {
            self.owner[slot] = Some(generation);
            if let Some(tx) = self.reload.as_mut() {
                tx.slots.push(slot);
            }
            if let Err(e) = self.spawn_into(slot, generation) {
                self.rollback(format!("cannot spawn a new worker in slot {slot}: {e}"));
                return;
            }
        }
        if let Some(tx) = self.reload.as_mut() {
            tx.waiting_for_slots = false;
            tx.deadline = Some(Instant::now() + self.ready_timeout);
        }
    }

    pub(super) fn check_reload_ready(&mut self) {
        let Some(tx) = &self.reload else { return };
        if tx.deadline.is_none() || tx.waiting_for_slots || tx.slots.is_empty() {
            return;
        }
        let generation = tx.generation;
        let all_ready = tx.slots.iter().all(|s| {
            self.workers
                .get(s)
                .is_some_and(|w| w.ready && w.generation == generation)
        });
        if all_ready {
            self.commit();
        }
    }

    pub(super) fn commit(&mut self) {
        let Some(tx) = self.reload.take() else { return };
        let old = self.generation;
        self.generation = tx.generation;
        self.sb.set_generation(tx.generation);
        let kill_at = Instant::now() + self.shutdown_timeout;
        for slot in 0..self.owner.len() {
            if self.owner[slot] == Some(old) {
                self.owner[slot] = None;
                self.respawn_at.remove(&slot);
                if let Some(w) = self.workers.get_mut(&slot) {
                    w.drain(kill_at);
                }
            }
        }
        self.finish_reload(tx, Outcome::Success, None);
    }

    pub(super) fn rollback(&mut self, reason: String) {
        let Some(tx) = self.reload.take() else { return };
        let kill_at = Instant::now() + self.shutdown_timeout;
        for slot in 0..self.owner.len() {
            if self.owner[slot] == Some(tx.generation) {
                self.owner[slot] = None;
                self.respawn_at.remove(&slot);
                match self.workers.get_mut(&slot) {
                    // Ready ones may be serving: drained like any old worker.
                    Some(w) if w.ready => w.drain(kill_at),
                    // Never ready: SIGTERM now, SIGKILL after the shutdown timeout.
                    Some(w) => w.terminate(kill_at),
                    None => {}
                }
            }
        }
        self.finish_reload(tx, Outcome::Rollback, Some(reason));
    }

    pub(super) fn finish_reload(&mut self, tx: ReloadTx, outcome: Outcome, reason: Option<String>) {
        let result = ReloadOutcome {
            outcome,
            generation: tx.generation,
            reason,
            duration_ms: tx.started.elapsed().as_millis() as u64,
        };
        match outcome {
            Outcome::Success => tracing::info!(
                generation = tx.generation,
                "reload succeeded in {} ms: generation {} serving, the previous one draining",
                result.duration_ms,
                tx.generation
            ),
            Outcome::Rollback => tracing::error!(
                generation = tx.generation,
                "reload rolled back: {}; generation {} keeps serving",
                result.reason.as_deref().unwrap_or("?"),
                self.generation
            ),
        }
        self.sb.record_reload(
            outcome == Outcome::Success,
            tx.generation,
            result.reason.as_deref(),
        );
        self.last_reload = Some(result.clone());
        systemd::notify(&format!("READY=1\nSTATUS={}", self.status_line()));
        answer(
            tx.waiters,
            Reply {
                ok: true,
                reload: Some(result),
                ..Reply::default()
            },
        );
        self.forget_unused_generations();
        if let Some(q) = self.queued.take() {
            self.begin_reload(q);
        }
    }
}
