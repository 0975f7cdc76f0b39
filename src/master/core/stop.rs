//! Stopping: the one way into [`Stop::Stopping`] ([`Core::enter_stopping`]), the
//! before-shutdown hook, a failed start, and the control requests.

use super::{Action, Core, Hook, Level, Phase, Sig, Stop, WaiterId};
use crate::control::{Reply, Request};

/// How the workers are told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StopHow {
    /// Drain within the shutdown timeout, then SIGKILL.
    Drain,
    /// SIGKILL at once (a second stop).
    Kill,
}

impl Core {
    pub(super) fn on_control(&mut self, request: Request, waiter: WaiterId) {
        match request {
            Request::Reload if self.refuse_during_upgrade(Some(waiter), "reload") => {}
            Request::Scale { .. } if self.refuse_during_upgrade(Some(waiter), "scale") => {}
            Request::Canary { .. } if self.refuse_during_upgrade(Some(waiter), "reload") => {}
            Request::Upgrade {
                binary,
                timeout_secs,
            } => {
                let timeout = timeout_secs
                    .filter(|t| t.is_finite() && *t > 0.0 && *t <= 86_400.0)
                    .map(std::time::Duration::from_secs_f64);
                if timeout_secs.is_some() && timeout.is_none() {
                    let msg = "timeout_secs must be a number of seconds in (0, 86400]";
                    self.reply(waiter, Reply::error(msg));
                } else {
                    self.request_upgrade(binary, timeout, Some(waiter));
                }
            }
            Request::Reload => self.request_reload(Some(waiter)),
            Request::Stop => {
                self.reply(waiter, Reply::ok());
                self.request_stop("stop requested on the control socket");
            }
            Request::Scale { workers } => {
                let reply = self.manual_scale(workers);
                self.reply(waiter, reply);
            }
            Request::Canary { .. } => match request.canary_spec(&self.cfg.canary_limits) {
                Some(spec) => self.request_canary(spec, waiter),
                None => self.reply(waiter, Reply::error("not a canary request")),
            },
            Request::Status => {
                let reply = Reply {
                    ok: true,
                    status: Some(self.status()),
                    ..Reply::default()
                };
                self.reply(waiter, reply);
            }
        }
    }

    /// A stop: runs the before-shutdown hook first when there is one; a second stop (while
    /// the hook runs or the workers drain) kills at once.
    pub(super) fn request_stop(&mut self, why: &str) {
        if self.commit_sent() {
            // The new master may be taking over right now: wait for its answer (bounded by
            // the commit deadline), then stop or retire.
            self.log(
                Level::Info,
                format!("{why}: the upgrade's commit is out; stopping once it is answered"),
            );
            self.stop_after_upgrade = true;
            return;
        }
        if self.upgrading() {
            self.fail_upgrade("the cluster is stopping".into());
        }
        match self.stop {
            Stop::No if self.cfg.before_shutdown => {
                self.stop = Stop::Requested;
                self.log(
                    Level::Info,
                    format!("{why}: running the before-shutdown hook"),
                );
                let timeout = self.cfg.shutdown_timeout;
                let hook = Hook::BeforeShutdown;
                self.out.push(Action::RunHook { hook, timeout });
            }
            Stop::No => self.enter_stopping(why, StopHow::Drain),
            Stop::Requested | Stop::Stopping => {
                let n = self.workers.len();
                self.log(
                    Level::Warn,
                    format!("second stop request: killing {n} workers now"),
                );
                self.enter_stopping(why, StopHow::Kill);
            }
        }
    }

    pub(super) fn on_shutdown_hook(&mut self, result: Result<(), String>) {
        if self.stop == Stop::No {
            return;
        }
        if let Err(e) = result {
            self.log(
                Level::Error,
                format!("before-shutdown hook failed: {e}; stopping anyway"),
            );
        }
        self.enter_stopping("stop requested", StopHow::Drain);
    }

    pub(super) fn fail_start(&mut self, reason: String) {
        self.log(Level::Error, format!("start failed: {reason}"));
        self.failure.get_or_insert(reason);
        self.enter_stopping("start failed", StopHow::Drain);
    }

    /// The one way into `Stopping`: no more respawns, start deadline, spawns, recycles or
    /// reloads (every waiter answered); every worker drains (or is killed).
    pub(super) fn enter_stopping(&mut self, why: &str, how: StopHow) {
        if self.stop == Stop::Stopping {
            if how == StopHow::Kill {
                self.kill_all();
            }
            return;
        }
        if how == StopHow::Drain {
            let (n, t) = (self.workers.len(), self.cfg.shutdown_timeout);
            self.log(
                Level::Info,
                format!("{why}: draining {n} workers (timeout {t:?})"),
            );
        }
        self.stop = Stop::Stopping;
        self.set_phase(Phase::Stopping);
        self.respawn_at.clear();
        self.start_deadline = None;
        self.spawn_queue.clear();
        // Replacements, ready or not, drain with everything else.
        self.recycles.clear();
        self.restoring = 0;
        self.cancel_reloads(&Reply::error("the cluster is stopping"));
        match how {
            StopHow::Drain => {
                let kill_at = self.now + self.cfg.shutdown_timeout;
                let slots: Vec<usize> = self.workers.keys().copied().collect();
                for slot in slots {
                    self.drain(slot, kill_at);
                }
            }
            StopHow::Kill => self.kill_all(),
        }
    }

    fn kill_all(&mut self) {
        let slots: Vec<usize> = self.workers.keys().copied().collect();
        for slot in slots {
            if let Some(w) = self.workers.get_mut(&slot) {
                w.draining = true;
            }
            self.signal(slot, Sig::Kill);
        }
    }
}
