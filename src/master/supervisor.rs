//! The master's state machine: workers by slot, which generation owns each slot, respawn with
//! backoff, the reload transaction, scaling and stopping. Driven by the event loop in
//! [`super::Master::run`]; it never blocks (sends and hooks run in tasks that report back).
//!
//! Slot ownership: `owner[slot]` is the generation that wants a worker in that slot. A slot is
//! free when it has no owner and no live worker (a draining worker keeps its slot until it exits).
//!
//! Reload: spawn generation g+1 into free slots → all ready before the deadline → drain g
//! (success); a new worker exits, a spawn fails or the deadline passes → stop g+1 (rollback).
//! Requests during a reload are coalesced into one more reload after it; every waiter gets the
//! outcome of the reload it ended up in.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::backoff::Backoff;
use super::control_server::Command;
use super::instance::RuntimeDir;
use super::listeners::Listeners;
use super::spawn::{self, describe_exit, SpawnSpec};
use super::{program, reaper, systemd, Hooks, Phase};

#[path = "reload.rs"]
mod reload;
use crate::config::Config;
use crate::control::{Outcome, ReloadOutcome, Reply, Request};
use crate::ipc::{self, Channel, ToMaster, ToWorker};
use crate::scoreboard::Scoreboard;

/// Events from worker and hook tasks to the loop.
#[derive(Debug)]
pub(super) enum Event {
    Control {
        slot: usize,
        pid: u32,
        msg: ToMaster,
    },
    ControlBroken {
        slot: usize,
        pid: u32,
        error: String,
    },
    Exited {
        slot: usize,
        pid: u32,
        status: Option<ExitStatus>,
    },
    ReloadHookDone {
        generation: u64,
        result: Result<(), String>,
    },
    ShutdownHookDone {
        result: Result<(), String>,
    },
    /// A generation's program copy is made (off the loop).
    Prepared {
        generation: u64,
        result: Result<SpawnSpec, String>,
    },
    /// A worker's listen address resolved (off the loop).
    Resolved {
        slot: usize,
        pid: u32,
        id: Option<u64>,
        addr: String,
        result: Result<SocketAddr, String>,
    },
}

/// How long a host name in a worker's `listen()` may take to resolve; the loop never waits.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

type Waiter = Option<oneshot::Sender<Reply>>;

#[derive(Debug)]
struct WorkerProc {
    pid: u32,
    generation: u64,
    spawned_at: Instant,
    ready: bool,
    draining: bool,
    kill_at: Option<Instant>,
    channel: Arc<Channel>,
    signals: mpsc::UnboundedSender<Signal>,
}

impl WorkerProc {
    fn kill(&self, sig: Signal) {
        let _ = self.signals.send(sig);
    }

    /// SIGTERM now (a worker that never became ready may not read its control channel);
    /// SIGKILL at `kill_at`.
    fn terminate(&mut self, kill_at: Instant) {
        if self.draining {
            return;
        }
        self.draining = true;
        self.kill_at = Some(kill_at);
        self.kill(Signal::SIGTERM);
    }

    /// Asks for a drain over the control channel (SIGTERM if that fails); SIGKILL at `kill_at`.
    fn drain(&mut self, kill_at: Instant) {
        if self.draining {
            return;
        }
        self.draining = true;
        self.kill_at = Some(kill_at);
        let channel = self.channel.clone();
        let signals = self.signals.clone();
        tokio::spawn(async move {
            if channel.send(&ToWorker::Shutdown, None).await.is_err() {
                let _ = signals.send(Signal::SIGTERM);
            }
        });
    }
}

#[derive(Debug)]
struct ReloadTx {
    generation: u64,
    started: Instant,
    /// None while the before-reload hook runs.
    deadline: Option<Instant>,
    slots: Vec<usize>,
    waiters: Vec<Waiter>,
    /// Waiting for draining workers to free the slots this generation needs.
    waiting_for_slots: bool,
}

/// Beyond the shutdown timeout, how long a reload waits for draining workers to free slots.
const SLOT_WAIT_MARGIN: Duration = Duration::from_secs(2);

pub(super) struct Supervisor {
    sb: Scoreboard,
    pub(super) listeners: Listeners,
    events: mpsc::UnboundedSender<Event>,
    phase: watch::Sender<Phase>,
    hooks: Hooks,
    name: String,
    dir: Arc<RuntimeDir>,
    program: Vec<String>,
    pub(super) target: usize,
    generation: u64,
    next_generation: u64,
    ready_timeout: Duration,
    shutdown_timeout: Duration,
    show_query: bool,
    /// uid and gid of the workers (`--user`/`--group`).
    pub(super) credentials: Option<(u32, u32)>,
    specs: HashMap<u64, Arc<SpawnSpec>>,
    /// Generations whose program copy is being made.
    preparing: HashSet<u64>,
    workers: HashMap<usize, WorkerProc>,
    owner: Vec<Option<u64>>,
    backoff: Vec<Backoff>,
    respawn_at: HashMap<usize, Instant>,
    start_deadline: Option<Instant>,
    reload: Option<ReloadTx>,
    queued: Option<Vec<Waiter>>,
    last_reload: Option<ReloadOutcome>,
    stopping: bool,
    stop_requested: bool,
    pub(super) failure: Option<String>,
}

impl Supervisor {
    pub(super) fn new(
        cfg: &Config,
        dir: Arc<RuntimeDir>,
        sb: Scoreboard,
        events: mpsc::UnboundedSender<Event>,
        phase: watch::Sender<Phase>,
        hooks: Hooks,
    ) -> Self {
        let seed = u64::from(std::process::id()) ^ crate::scoreboard::mono_ns();
        let slots = sb.slot_count();
        Self {
            backoff: (0..slots)
                .map(|i| Backoff::new(seed.wrapping_add(i as u64 * 0x9e37_79b9)))
                .collect(),
            owner: vec![None; slots],
            sb,
            listeners: Listeners::default(),
            events,
            phase,
            hooks,
            name: cfg.name.clone(),
            dir,
            program: cfg.program.clone(),
            target: cfg.worker_count(),
            generation: 0,
            next_generation: 1,
            ready_timeout: cfg.ready_timeout(),
            shutdown_timeout: cfg.shutdown_timeout(),
            show_query: cfg.show_query_strings,
            credentials: None,
            specs: HashMap::new(),
            preparing: HashSet::new(),
            workers: HashMap::new(),
            respawn_at: HashMap::new(),
            start_deadline: None,
            reload: None,
            queued: None,
            last_reload: None,
            stopping: false,
            stop_requested: false,
            failure: None,
        }
    }

    /// Periodic chores: systemd's STATUS line, and reaping orphans when running as PID 1.
    pub(super) fn housekeeping(&mut self) {
        // Heals a header a worker scribbled, for readers in other processes.
        self.sb.restamp();
        if reaper::is_init() {
            reaper::reap_orphans(|pid| self.workers.values().any(|w| w.pid == pid));
        }
        if std::env::var_os("NOTIFY_SOCKET").is_some() {
            systemd::notify(&format!("STATUS={}", self.status_line()));
        }
    }

    /// One line for systemd's status: workers, generation, requests.
    fn status_line(&self) -> String {
        let snap = self.sb.snapshot();
        let t = &snap.totals;
        format!(
            "{}/{} workers ready, generation {}, {} requests, {} in flight, {} connections",
            t.workers_ready,
            self.target,
            self.generation,
            t.counters.requests_total,
            t.counters.requests_active,
            t.counters.conns_open
        )
    }

    pub(super) fn finished(&self) -> bool {
        self.stopping && self.workers.is_empty() && self.preparing.is_empty()
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.respawn_at
            .values()
            .copied()
            .chain(self.start_deadline)
            .chain(self.reload.as_ref().and_then(|r| r.deadline))
            .chain(self.workers.values().filter_map(|w| w.kill_at))
            .min()
    }

    /// Starts copying the program for `generation` off the loop; [`Event::Prepared`] reports
    /// back. Returns false when it is already prepared (or being prepared).
    fn prepare_generation(&mut self, generation: u64) -> bool {
        if self.specs.contains_key(&generation) || !self.preparing.insert(generation) {
            return false;
        }
        let program = self.program.clone();
        let (dir, name) = (self.dir.clone(), self.name.clone());
        let base = SpawnSpec {
            exe: std::path::PathBuf::new(),
            copied: false,
            argv0: String::new(),
            args: Vec::new(),
            instance: self.name.clone(),
            shutdown_timeout: self.shutdown_timeout,
            show_query: self.show_query,
            credentials: self.credentials,
        };
        let events = self.events.clone();
        tokio::spawn(async move {
            let job = tokio::task::spawn_blocking(move || {
                let (argv0, args) = program.split_first().ok_or("no program")?;
                let prepared = program::prepare(argv0, &dir, &name, generation, base.credentials)
                    .map_err(|e| format!("cannot prepare program {argv0:?}: {e}"))?;
                Ok(SpawnSpec {
                    exe: prepared.exe,
                    copied: prepared.copied,
                    argv0: argv0.clone(),
                    args: args.to_vec(),
                    ..base
                })
            });
            let result = job
                .await
                .unwrap_or_else(|e| Err(format!("program copy failed: {e}")));
            let _ = events.send(Event::Prepared { generation, result });
        });
        true
    }

    fn on_prepared(&mut self, generation: u64, result: Result<SpawnSpec, String>) {
        self.preparing.remove(&generation);
        let spec = match result {
            Ok(spec) => spec,
            Err(e) => {
                if self.start_deadline.is_some() && generation == self.generation {
                    self.fail_start(e);
                } else if self
                    .reload
                    .as_ref()
                    .is_some_and(|r| r.generation == generation)
                {
                    self.rollback(e);
                }
                return;
            }
        };
        let wanted = generation == self.generation
            || self
                .reload
                .as_ref()
                .is_some_and(|r| r.generation == generation);
        if self.stopping || !wanted {
            if spec.copied {
                program::remove(&self.dir, &spec.exe);
            }
            return;
        }
        self.specs.insert(generation, Arc::new(spec));
        if generation == self.generation && self.start_deadline.is_some() {
            self.spawn_first_generation();
        } else {
            self.spawn_reload_generation();
        }
    }

    /// Drops program copies of generations that have no worker and no slot any more.
    fn forget_unused_generations(&mut self) {
        let used: Vec<u64> = self
            .workers
            .values()
            .map(|w| w.generation)
            .chain(self.owner.iter().flatten().copied())
            .chain(self.reload.as_ref().map(|r| r.generation))
            .collect();
        self.specs.retain(|g, spec| {
            let keep = used.contains(g);
            if !keep && spec.copied {
                program::remove(&self.dir, &spec.exe);
            }
            keep
        });
    }

    pub(super) fn remove_program_copies(&mut self) {
        for spec in self.specs.values().filter(|s| s.copied) {
            program::remove(&self.dir, &spec.exe);
        }
        self.specs.clear();
    }

    pub(super) fn start_first_generation(&mut self) {
        let generation = self.next_generation;
        self.next_generation += 1;
        self.generation = generation;
        self.sb.set_generation(generation);
        self.sb.set_target_workers(self.target);
        self.start_deadline = Some(Instant::now() + self.ready_timeout);
        self.prepare_generation(generation);
    }

    fn spawn_first_generation(&mut self) {
        let generation = self.generation;
        for slot in 0..self.target {
            self.owner[slot] = Some(generation);
            if let Err(e) = self.spawn_into(slot, generation) {
                self.fail_start(format!("slot {slot}: {e}"));
                return;
            }
        }
    }

    fn spawn_into(&mut self, slot: usize, generation: u64) -> std::io::Result<()> {
        let spec = self.specs.get(&generation).cloned().ok_or_else(|| {
            std::io::Error::other(format!("generation {generation} has no program"))
        })?;
        if spec.copied {
            self.dir.verify()?;
        }
        let (master_end, worker_end) = ipc::pair()?;
        // The header a new worker's readers see is the master's, whatever was scribbled on it.
        self.sb.restamp();
        let mut child = spawn::spawn(
            &spec,
            slot,
            generation,
            worker_end,
            self.sb.fd(),
            self.sb.layout(),
        )?;
        let pid = child.id().unwrap_or(0);
        self.sb.slot_spawned(slot, pid, generation);
        let channel = Arc::new(Channel::new(master_end)?);
        let (sig_tx, mut sig_rx) = mpsc::unbounded_channel::<Signal>();
        let events = self.events.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    status = child.wait() => {
                        let _ = events.send(Event::Exited { slot, pid, status: status.ok() });
                        return;
                    }
                    Some(sig) = sig_rx.recv() => {
                        // id() is None once reaped: never signals a recycled pid.
                        if let Some(id) = child.id() {
                            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(id as i32), sig);
                        }
                    }
                }
            }
        });
        let events = self.events.clone();
        let reader = channel.clone();
        tokio::spawn(async move {
            loop {
                match reader.recv::<ToMaster>().await {
                    Ok(Some((msg, _fds))) => {
                        if events.send(Event::Control { slot, pid, msg }).is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    // The worker is gone (killed with unread messages): its exit event follows.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
                    Err(e) => {
                        let _ = events.send(Event::ControlBroken {
                            slot,
                            pid,
                            error: e.to_string(),
                        });
                        return;
                    }
                }
            }
        });
        tracing::info!(slot, pid, generation, "worker spawned");
        self.workers.insert(
            slot,
            WorkerProc {
                pid,
                generation,
                spawned_at: Instant::now(),
                ready: false,
                draining: false,
                kill_at: None,
                channel,
                signals: sig_tx,
            },
        );
        Ok(())
    }

    // ---- stop --------------------------------------------------------------------------

    pub(super) fn request_stop(&mut self, why: &str) {
        if self.stopping || self.stop_requested {
            tracing::warn!(
                "second stop request: killing {} workers now",
                self.workers.len()
            );
            self.stopping = true;
            self.kill_all();
            return;
        }
        self.stop_requested = true;
        match self.hooks.before_shutdown.clone() {
            Some(hook) => {
                let events = self.events.clone();
                let timeout = self.shutdown_timeout;
                tokio::spawn(async move {
                    let result = run_hook(hook, 0, timeout).await;
                    let _ = events.send(Event::ShutdownHookDone { result });
                });
                tracing::info!("{why}: running the before-shutdown hook");
            }
            None => self.begin_stop(why),
        }
    }

    fn begin_stop(&mut self, why: &str) {
        if self.stopping {
            return;
        }
        tracing::info!(
            "{why}: draining {} workers (timeout {:?})",
            self.workers.len(),
            self.shutdown_timeout
        );
        self.stopping = true;
        self.phase.send_replace(Phase::Stopping);
        self.respawn_at.clear();
        self.start_deadline = None;
        if let Some(tx) = self.reload.take() {
            answer(tx.waiters, Reply::error("the cluster is stopping"));
        }
        if let Some(q) = self.queued.take() {
            answer(q, Reply::error("the cluster is stopping"));
        }
        let kill_at = Instant::now() + self.shutdown_timeout;
        for w in self.workers.values_mut() {
            w.drain(kill_at);
        }
    }

    fn kill_all(&mut self) {
        for w in self.workers.values() {
            w.kill(Signal::SIGKILL);
        }
    }

    fn fail_start(&mut self, reason: String) {
        tracing::error!("start failed: {reason}");
        if self.failure.is_none() {
            self.failure = Some(reason);
        }
        self.begin_stop("start failed");
    }

    // ---- events ------------------------------------------------------------------------

    pub(super) fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Control { slot, pid, msg } => self.on_control(slot, pid, msg),
            Event::ControlBroken { slot, pid, error } => {
                // A worker the master is stopping may break its channel on the way out.
                if let Some(w) = self
                    .workers
                    .get(&slot)
                    .filter(|w| w.pid == pid && !w.draining)
                {
                    tracing::error!(
                        slot,
                        pid,
                        "worker sent garbage on its control channel ({error}); replacing it"
                    );
                    w.kill(Signal::SIGKILL);
                }
            }
            Event::Exited { slot, pid, status } => self.on_exit(slot, pid, status),
            Event::ReloadHookDone { generation, result } => self.on_reload_hook(generation, result),
            Event::ShutdownHookDone { result } => {
                if let Err(e) = result {
                    tracing::error!("before-shutdown hook failed: {e}; stopping anyway");
                }
                self.begin_stop("stop requested");
            }
            Event::Prepared { generation, result } => self.on_prepared(generation, result),
            Event::Resolved {
                slot,
                pid,
                id,
                addr,
                result,
            } => self.on_resolved(slot, pid, id, &addr, result),
        }
    }

    fn on_control(&mut self, slot: usize, pid: u32, msg: ToMaster) {
        let Some(w) = self.workers.get_mut(&slot).filter(|w| w.pid == pid) else {
            return;
        };
        match msg {
            ToMaster::Ready => {
                if !w.ready {
                    w.ready = true;
                    tracing::info!(slot, pid, generation = w.generation, "worker ready");
                }
                self.check_started();
                self.check_reload_ready();
            }
            ToMaster::Register { id, spec } => {
                let reply = match self.sb.register(&spec) {
                    Ok(at) => ToWorker::Registered { id, at },
                    Err(error) => {
                        tracing::warn!(slot, "metric registration refused: {error}");
                        ToWorker::RegisterFailed { id, error }
                    }
                };
                let channel = w.channel.clone();
                tokio::spawn(async move {
                    let _ = channel.send(&reply, None).await;
                });
            }
            ToMaster::Listen { id, addr } => self.on_listen(slot, pid, id, addr),
        }
    }

    /// A worker asks for a listener: answered at once when the address is known or an IP
    /// literal; a host name is resolved off the loop with a timeout ([`Event::Resolved`]).
    fn on_listen(&mut self, slot: usize, pid: u32, id: Option<u64>, addr: String) {
        if self.credentials.is_some() && !self.listeners.declared(&addr) {
            let error = format!(
                "workers running as another user get only the addresses the master was given \
                 (--listen or socket activation); {addr} is not one of them"
            );
            return self.reply_listen(slot, pid, id, addr, Err(error));
        }
        if let Some(resolved) = self.listeners.known(&addr) {
            return self.on_resolved(slot, pid, id, &addr, Ok(resolved));
        }
        let events = self.events.clone();
        tokio::spawn(async move {
            let lookup = addr.clone();
            let job = tokio::task::spawn_blocking(move || {
                std::net::ToSocketAddrs::to_socket_addrs(&lookup)
                    .map_err(|e| e.to_string())?
                    .next()
                    .ok_or_else(|| "address resolves to nothing".to_string())
            });
            let result = match tokio::time::timeout(RESOLVE_TIMEOUT, job).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => Err(format!("resolver failed: {e}")),
                Err(_) => Err(format!(
                    "name resolution took longer than {RESOLVE_TIMEOUT:?}"
                )),
            };
            let _ = events.send(Event::Resolved {
                slot,
                pid,
                id,
                addr,
                result,
            });
        });
    }

    fn on_resolved(
        &mut self,
        slot: usize,
        pid: u32,
        id: Option<u64>,
        addr: &str,
        result: Result<SocketAddr, String>,
    ) {
        let bound = result.and_then(|resolved| {
            let (local, fd) = self
                .listeners
                .bind_resolved(addr, resolved)
                .map_err(|e| e.to_string())?;
            let fd = fd.try_clone_to_owned().map_err(|e| e.to_string())?;
            Ok((local, fd))
        });
        self.reply_listen(slot, pid, id, addr.to_string(), bound);
    }

    fn reply_listen(
        &self,
        slot: usize,
        pid: u32,
        id: Option<u64>,
        addr: String,
        bound: Result<(SocketAddr, OwnedFd), String>,
    ) {
        let Some(w) = self.workers.get(&slot).filter(|w| w.pid == pid) else {
            return;
        };
        let channel = w.channel.clone();
        let (msg, fd) = match bound {
            Ok((local, fd)) => (
                ToWorker::Listening {
                    id,
                    addr,
                    local: local.to_string(),
                },
                Some(fd),
            ),
            Err(error) => {
                tracing::error!(slot, "cannot listen on {addr}: {error}");
                (ToWorker::ListenFailed { id, addr, error }, None)
            }
        };
        tokio::spawn(async move {
            let _ = channel.send(&msg, fd.as_ref().map(AsFd::as_fd)).await;
        });
    }

    fn check_started(&mut self) {
        if self.start_deadline.is_none() || self.stopping {
            return;
        }
        let generation = self.generation;
        let ready = self
            .workers
            .values()
            .filter(|w| w.ready && w.generation == generation)
            .count();
        if ready >= self.target {
            self.start_deadline = None;
            tracing::info!("cluster ready: {ready} workers serving");
            self.phase.send_replace(Phase::Running);
            systemd::notify(&format!("READY=1\nSTATUS={}", self.status_line()));
            if let Some(q) = self.queued.take() {
                self.begin_reload(q);
            }
        }
    }

    fn on_exit(&mut self, slot: usize, pid: u32, status: Option<ExitStatus>) {
        let Some(w) = self.workers.get(&slot).filter(|w| w.pid == pid) else {
            return;
        };
        let how = status
            .as_ref()
            .map_or_else(|| "unknown status".into(), describe_exit);
        let raw = status.map_or(-1, std::os::unix::process::ExitStatusExt::into_raw);
        let (lived, was_ready, generation, draining) =
            (w.spawned_at.elapsed(), w.ready, w.generation, w.draining);
        self.workers.remove(&slot);
        self.sb.slot_exited(slot, raw);
        if self.stopping || draining {
            tracing::info!(slot, pid, generation, "worker exited ({how})");
            self.forget_unused_generations();
            if self.reload.as_ref().is_some_and(|r| r.waiting_for_slots) {
                self.spawn_reload_generation();
            }
            return;
        }
        if self.start_deadline.is_some() && !was_ready && generation == self.generation {
            self.fail_start(format!(
                "worker in slot {slot} (pid {pid}) exited during start-up ({how})"
            ));
            return;
        }
        if self
            .reload
            .as_ref()
            .is_some_and(|r| r.generation == generation)
        {
            self.rollback(format!(
                "new worker in slot {slot} (pid {pid}) exited during start-up ({how})"
            ));
            return;
        }
        if self.owner[slot] != Some(generation) {
            tracing::info!(slot, pid, generation, "retired worker exited ({how})");
            self.forget_unused_generations();
            return;
        }
        let delay = self.backoff[slot].on_exit(lived);
        tracing::warn!(
            slot,
            pid,
            generation,
            "worker exited unexpectedly ({how}) after {lived:.1?}; respawning in {delay:.1?}"
        );
        self.respawn_at.insert(slot, Instant::now() + delay);
        if delay.is_zero() {
            self.on_timer();
        }
    }

    pub(super) fn on_timer(&mut self) {
        let now = Instant::now();
        if self.start_deadline.is_some_and(|d| d <= now) {
            let ready = self.workers.values().filter(|w| w.ready).count();
            let t = self.ready_timeout;
            self.fail_start(format!(
                "only {ready} of {} workers were ready after {t:?}",
                self.target
            ));
        }
        if let Some(tx) = self
            .reload
            .as_ref()
            .filter(|r| r.deadline.is_some_and(|d| d <= now))
        {
            let generation = tx.generation;
            let ready = self
                .workers
                .values()
                .filter(|w| w.ready && w.generation == generation)
                .count();
            let total = tx.slots.len();
            self.rollback(format!(
                "only {ready} of {total} new workers were ready after {:?}",
                self.ready_timeout
            ));
        }
        for (slot, w) in &mut self.workers {
            if w.kill_at.is_some_and(|t| t <= now) {
                tracing::warn!(
                    slot,
                    pid = w.pid,
                    "worker still draining after {:?}: killing it",
                    self.shutdown_timeout
                );
                w.kill_at = None;
                w.kill(Signal::SIGKILL);
            }
        }
        let due: Vec<usize> = self
            .respawn_at
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(s, _)| *s)
            .collect();
        for slot in due {
            self.respawn_at.remove(&slot);
            let Some(generation) = self.owner[slot] else {
                continue;
            };
            self.sb.slot_restarted(slot);
            if let Err(e) = self.spawn_into(slot, generation) {
                let delay = self.backoff[slot].on_exit(Duration::ZERO);
                tracing::error!(slot, "respawn failed: {e}; retrying in {delay:.1?}");
                self.sb.slot_exited(slot, -1);
                self.respawn_at.insert(slot, Instant::now() + delay);
            }
        }
    }

    // ---- commands ----------------------------------------------------------------------

    pub(super) fn on_command(&mut self, cmd: Command) {
        match cmd.req {
            Request::Reload => self.request_reload(Some(cmd.reply)),
            Request::Stop => {
                let _ = cmd.reply.send(Reply::ok());
                self.request_stop("stop requested on the control socket");
            }
            Request::Scale { workers } => {
                let _ = cmd.reply.send(self.scale(workers));
            }
            Request::Status => {
                let _ = cmd.reply.send(Reply {
                    ok: true,
                    status: Some(self.status()),
                    ..Reply::default()
                });
            }
        }
    }

    fn status(&self) -> serde_json::Value {
        let mut workers: Vec<_> = self
            .workers
            .iter()
            .map(|(slot, w)| {
                let state = if w.draining {
                    "draining"
                } else if w.ready {
                    "ready"
                } else {
                    "starting"
                };
                serde_json::json!({"slot": slot, "pid": w.pid, "generation": w.generation, "state": state})
            })
            .collect();
        workers.sort_by_key(|v| v["slot"].as_u64());
        serde_json::json!({
            "instance": self.name,
            "master_pid": std::process::id(),
            "phase": format!("{:?}", *self.phase.borrow()).to_lowercase(),
            "generation": self.generation,
            "target_workers": self.target,
            "reload_in_progress": self.reload.is_some(),
            "last_reload": self.last_reload,
            "workers": workers,
        })
    }

    fn scale(&mut self, n: usize) -> Reply {
        if n == 0 || n > crate::config::MAX_WORKERS {
            return Reply::error(format!(
                "invalid worker count {n}: must be 1..={}",
                crate::config::MAX_WORKERS
            ));
        }
        if self.stopping || self.stop_requested {
            return Reply::error("the cluster is stopping");
        }
        if self.reload.is_some() || self.start_deadline.is_some() {
            return Reply::error("a reload or start is in progress; scale again when it is done");
        }
        let generation = self.generation;
        let mut mine: Vec<usize> = (0..self.owner.len())
            .filter(|&s| self.owner[s] == Some(generation))
            .collect();
        if n > mine.len() {
            let free = self.free_slots();
            let add = n - mine.len();
            if free.len() < add {
                return Reply::error(format!(
                    "not enough free slots: {} free, {add} needed (the scoreboard has {}; start with a larger --slots)",
                    free.len(),
                    self.owner.len()
                ));
            }
            for &slot in &free[..add] {
                self.owner[slot] = Some(generation);
                if let Err(e) = self.spawn_into(slot, generation) {
                    tracing::error!(slot, "spawn failed: {e}");
                    self.respawn_at.insert(
                        slot,
                        Instant::now() + self.backoff[slot].on_exit(Duration::ZERO),
                    );
                }
            }
        } else {
            mine.sort_unstable();
            let kill_at = Instant::now() + self.shutdown_timeout;
            for slot in mine.split_off(n) {
                self.owner[slot] = None;
                self.respawn_at.remove(&slot);
                if let Some(w) = self.workers.get_mut(&slot) {
                    w.drain(kill_at);
                }
            }
        }
        tracing::info!("scaled to {n} workers");
        self.target = n;
        self.sb.set_target_workers(n);
        Reply {
            ok: true,
            workers: Some(n),
            ..Reply::default()
        }
    }

    fn free_slots(&self) -> Vec<usize> {
        (0..self.owner.len())
            .filter(|s| self.owner[*s].is_none() && !self.workers.contains_key(s))
            .collect()
    }
}

fn answer(waiters: Vec<Waiter>, reply: Reply) {
    for w in waiters.into_iter().flatten() {
        let _ = w.send(reply.clone());
    }
}

/// Runs a hook in its own task (a panic becomes an error) with a timeout.
async fn run_hook(hook: super::HookFn, generation: u64, timeout: Duration) -> Result<(), String> {
    let task = tokio::spawn(hook(generation));
    match tokio::time::timeout(timeout, task).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(format!("hook panicked: {e}")),
        Err(_) => Err(format!("timed out after {timeout:?}")),
    }
}
