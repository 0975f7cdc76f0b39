//! Canary reloads (diagram in the module docs of [`super`]): a reload whose first batch of K
//! workers serves next to the whole old generation for S seconds before the verdict. The
//! shell measures both generations ([`Action::CanaryBaseline`], [`Action::JudgeCanary`]
//! answered by [`Event::CanaryFigures`](super::Event::CanaryFigures)); the verdict is the
//! pure [`crate::canary::judge`]. Promote: the reload goes on rolling, K at a time, the
//! canaries being its first batch. Rollback: the canaries drain, the old generation was never
//! touched.

use std::time::Duration;

use super::reload::{ReloadTx, Step};
use super::{Action, Core, Level, Stop, WaiterId};
use crate::canary::{judge, CanaryReport, CanarySpec, GenerationFigures, Verdict};
use crate::control::{Outcome, Reply};

/// A canary reload's own state, in its [`ReloadTx`].
#[derive(Debug, Clone)]
pub(super) struct CanaryTx {
    pub(super) spec: CanarySpec,
    /// The generation serving when it began (the one compared against).
    pub(super) old: u64,
    /// Old workers that exited unexpectedly while the canaries were observed.
    old_crashes: u64,
    /// The figures and the verdict, once judged.
    judged: Option<Judged>,
}

#[derive(Debug, Clone)]
struct Judged {
    old: GenerationFigures,
    new: GenerationFigures,
    verdict: Verdict,
    reason: String,
}

impl CanaryTx {
    /// The report for the reload's outcome: the figures once judged; otherwise the reason the
    /// reload ended before the verdict.
    pub(super) fn report(&self, outcome: Outcome, reason: Option<&str>) -> CanaryReport {
        let (old, new, verdict, reason) = match &self.judged {
            Some(j) => (Some(j.old), Some(j.new), Some(j.verdict), j.reason.clone()),
            None => (
                None,
                None,
                (outcome == Outcome::Rollback).then_some(Verdict::Rollback),
                reason
                    .map_or("ended before the comparison", |r| {
                        r.strip_prefix("canary: ").unwrap_or(r)
                    })
                    .to_string(),
            ),
        };
        CanaryReport {
            workers: self.spec.workers,
            secs: self.spec.secs,
            limits: self.spec.limits,
            old,
            new,
            verdict,
            reason,
        }
    }
}

impl ReloadTx {
    /// Whether the canaries are being observed (not judged yet).
    pub(super) fn observing(&self) -> bool {
        matches!(self.step, Step::Observing { .. })
    }
}

impl Core {
    /// A canary request: refused (with a clear error) when it cannot run now, else begun.
    /// Unlike a plain reload it is not queued behind another reload.
    pub(super) fn request_canary(&mut self, spec: CanarySpec, waiter: WaiterId) {
        let k = spec.workers;
        let refused = if let Err(e) = spec.validate() {
            Some(e)
        } else if self.stop != Stop::No {
            Some("the cluster is stopping".into())
        } else if k > self.target {
            Some(format!(
                "canary workers {k} must be at most the worker count {}",
                self.target
            ))
        } else if self.reload.is_some() || self.start_deadline.is_some() || self.restoring > 0 {
            Some("a reload or start is in progress; ask for the canary when it is done".into())
        } else if !self.recycles.is_empty() {
            Some("a worker recycle is in progress; ask for the canary when it is done".into())
        } else {
            let free = self.free_slots().len();
            let draining = self.workers.values().filter(|w| w.draining).count();
            (free + draining < k).then(|| {
                format!(
                    "not enough free slots for {k} canary workers: {free} free, {draining} draining (start with a larger --slots)"
                )
            })
        };
        if let Some(e) = refused {
            self.reply(waiter, Reply::error(e));
            return;
        }
        let canary = CanaryTx {
            spec,
            old: self.generation,
            old_crashes: 0,
            judged: None,
        };
        self.begin_reload_with(vec![waiter], Some(canary));
    }

    /// The canaries are all ready: observe them (returns true), unless judged already.
    pub(super) fn canary_ready(&mut self) -> bool {
        let now = self.now;
        let Some(tx) = self.reload.as_mut() else {
            return false;
        };
        let (Some(c), Step::Starting { slots, .. }) = (&tx.canary, &tx.step) else {
            return false;
        };
        if c.judged.is_some() {
            return false;
        }
        let window = Duration::from_secs_f64(c.spec.secs);
        let (old, generation, k, secs) = (c.old, tx.generation, slots.len(), c.spec.secs);
        tx.step = Step::Observing {
            slots: slots.clone(),
            until: now + window,
        };
        self.out.push(Action::CanaryBaseline {
            generation,
            old,
            secs,
        });
        let msg = format!(
            "canary: {k} workers of generation {generation} ready; observing them next to generation {old} for {window:?}"
        );
        self.log_about(Level::Info, msg, None, None, Some(generation));
        true
    }

    /// At the end of the observation: asks the shell for the figures (returns true).
    pub(super) fn canary_due(&mut self) -> bool {
        let now = self.now;
        let Some(tx) = self.reload.as_mut() else {
            return false;
        };
        let (Some(c), Step::Observing { slots, until }) = (&tx.canary, &tx.step) else {
            return false;
        };
        if *until > now {
            return false;
        }
        let (old, generation) = (c.old, tx.generation);
        tx.step = Step::Judging {
            slots: slots.clone(),
        };
        self.out.push(Action::JudgeCanary { generation, old });
        true
    }

    /// The shell's figures: judge, then promote (go on rolling) or roll back.
    pub(super) fn on_canary_figures(
        &mut self,
        generation: u64,
        mut old: GenerationFigures,
        new: GenerationFigures,
    ) {
        let deadline = self.now + self.cfg.ready_timeout;
        let Some(tx) = self.reload.as_mut().filter(|t| t.generation == generation) else {
            return;
        };
        let (Some(c), Step::Judging { slots }) = (tx.canary.as_mut(), &tx.step) else {
            return;
        };
        old.crashes = c.old_crashes;
        let (verdict, reason) = judge(&c.spec.limits, &old, &new);
        c.judged = Some(Judged {
            old,
            new,
            verdict,
            reason: reason.clone(),
        });
        // Judged: the report has the figures (the outcome does not matter to it).
        let line = c.report(Outcome::Success, None).summary();
        let slots = slots.clone();
        tx.step = Step::Starting { slots, deadline };
        match verdict {
            Verdict::Promote => {
                self.log_about(Level::Info, line, None, None, Some(generation));
                self.check_reload_ready();
            }
            Verdict::Rollback => {
                self.log_about(Level::Warn, line, None, None, Some(generation));
                self.rollback(format!("canary: {reason}"));
            }
        }
    }

    /// An old worker exited unexpectedly: counted while the canaries are observed.
    pub(super) fn canary_note_exit(&mut self, generation: u64) {
        if let Some(tx) = self.reload.as_mut().filter(|t| t.observing()) {
            if let Some(c) = tx.canary.as_mut().filter(|c| c.old == generation) {
                c.old_crashes += 1;
            }
        }
    }

    /// The rollback reason for a new worker's exit: a crash while observed, or one during
    /// start-up.
    pub(super) fn new_worker_exit_reason(&self, slot: usize, pid: u32, how: &str) -> String {
        if self.reload.as_ref().is_some_and(ReloadTx::observing) {
            format!("canary: crash: canary worker in slot {slot} (pid {pid}) exited during observation ({how})")
        } else {
            format!("new worker in slot {slot} (pid {pid}) exited during start-up ({how})")
        }
    }
}
