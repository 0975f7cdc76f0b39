//! The master's I/O shell around the pure [`Core`]: it runs the event loop (signals, worker
//! tasks, control commands, timers), turns what happens into core [`Event`]s and carries out
//! the core's [`Action`]s: processes, signals, control-channel messages, the scoreboard,
//! systemd, hooks and program copies. It decides nothing itself; it never blocks (sends,
//! hooks, copies and name lookups run in tasks that report back as [`TaskEvent`]s).

mod autoscale;
mod canary;
mod guards;
mod history;
mod listen;
mod notify;
mod procfs;
mod procs;
mod takeover;
mod tasks;
mod upgrade;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use super::core::{self, Action, Core, Event, Hook, Level, Log, Notify, Phase, WaiterId};
use super::instance::RuntimeDir;
use super::listeners::Listeners;
use super::signals::SignalSource;
use super::spawn::SpawnSpec;
use super::{program, reaper, systemd, Hooks};
use crate::config::Config;
use crate::control::{Command, Reply};
use crate::ipc::ToMaster;
use crate::scoreboard::Scoreboard;
use procs::Proc;

/// How often the master refreshes systemd's STATUS line and, as PID 1, reaps orphans.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(2);

/// What the shell's tasks report to the loop.
#[derive(Debug)]
pub(super) enum TaskEvent {
    /// A message on a worker's control channel.
    Control {
        slot: usize,
        pid: u32,
        msg: ToMaster,
    },
    /// A worker's control channel broke (garbage, not a close).
    ControlBroken {
        slot: usize,
        pid: u32,
        error: String,
    },
    /// A worker was reaped.
    Exited {
        slot: usize,
        pid: u32,
        status: Option<ExitStatus>,
    },
    /// A hook finished.
    HookDone {
        hook: Hook,
        result: Result<(), String>,
    },
    /// A generation's program copy is made (off the loop).
    Prepared {
        generation: u64,
        result: Result<SpawnSpec, String>,
    },
    /// The handover of an upgrade (old master's side).
    Upgrade(super::handover::old::Report),
    /// The old master spoke (new master's side).
    Takeover(super::handover::new::Later),
    /// A worker of the previous master is gone (after a takeover).
    ForeignExited { slot: usize },
    /// A worker's listen address resolved (off the loop).
    Resolved {
        slot: usize,
        pid: u32,
        id: Option<u64>,
        addr: String,
        result: Result<SocketAddr, String>,
    },
}

/// The shell: the core plus everything it must not touch.
pub(super) struct Shell {
    core: Core,
    sb: Scoreboard,
    pub(super) listeners: Listeners,
    tasks: mpsc::UnboundedSender<TaskEvent>,
    phase: watch::Sender<Phase>,
    hooks: Hooks,
    name: String,
    dir: Arc<RuntimeDir>,
    program: Vec<String>,
    shutdown_timeout: Duration,
    show_query: bool,
    /// uid and gid of the workers (`--user`/`--group`).
    credentials: Option<(u32, u32)>,
    /// Certificate and key files for the workers (TLS).
    tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// `--request-timeout`, for the workers' environment.
    request_timeout: Option<Duration>,
    /// The workers' heartbeat interval, for their environment.
    heartbeat_interval: Duration,
    /// `--max-requests` (told to the workers: they report promptly once past it).
    max_requests: Option<u64>,
    /// Whether to sample the workers' memory (`--max-memory`).
    sample_memory: bool,
    /// Whether to sample the load (autoscaling).
    autoscale: bool,
    /// Program copies by generation.
    specs: HashMap<u64, Arc<SpawnSpec>>,
    /// Live worker processes by slot.
    procs: HashMap<usize, Proc>,
    /// Reply channels of the core's waiters.
    waiters: HashMap<WaiterId, oneshot::Sender<Reply>>,
    next_waiter: u64,
    /// The control socket, status server and OTLP push.
    pub(super) fronts: Option<super::fronts::Fronts>,
    /// The binary and arguments this master was started with (for an upgrade).
    pub(super) origin: super::handover::old::Origin,
    /// The status address as configured.
    status_requested: Option<String>,
    /// The new master of an upgrade under way.
    new_master: Option<super::handover::old::Handle>,
    /// Slots lent to it.
    lent: Vec<usize>,
    /// Handed over to a new master.
    retired: bool,
    /// A takeover from an old master (this is the new one).
    takeover: Option<takeover::Takeover>,
    /// The old master's workers as handed over (slot, pid).
    pub(super) foreign: Vec<(usize, u32)>,
    /// The scoreboard's link for other readers (once this master serves).
    pub(super) published: Option<super::PublishedSegment>,
    /// The instance lock (last: released after everything else at drop).
    pub(super) lock: Option<super::instance::InstanceLock>,
}

impl Shell {
    pub(super) fn new(
        cfg: &Config,
        dir: Arc<RuntimeDir>,
        sb: Scoreboard,
        tasks: mpsc::UnboundedSender<TaskEvent>,
        phase: watch::Sender<Phase>,
        hooks: Hooks,
        credentials: Option<(u32, u32)>,
    ) -> Self {
        let settings = core::Settings {
            name: cfg.name.clone(),
            master_pid: std::process::id(),
            slots: sb.slot_count(),
            workers: cfg.worker_count(),
            ready_timeout: cfg.ready_timeout(),
            shutdown_timeout: cfg.shutdown_timeout(),
            before_reload: hooks.before_reload.is_some(),
            before_shutdown: hooks.before_shutdown.is_some(),
            guards: guards_of(cfg),
            reload_batch: cfg.reload_batch,
            canary_limits: cfg.canary,
            autoscale: autoscale::settings_of(cfg),
            upgrade_refused: reaper::is_init().then(|| {
                "the master runs as PID 1, so it cannot hand over and exit: run it under an \
                 init (tini, dumb-init, docker --init) to upgrade it"
                    .to_string()
            }),
        };
        let seed = u64::from(std::process::id()) ^ crate::scoreboard::mono_ns();
        Self {
            core: Core::new(settings, seed, Instant::now()),
            sb,
            listeners: Listeners::default(),
            tasks,
            phase,
            hooks,
            name: cfg.name.clone(),
            dir,
            program: cfg.program.clone(),
            shutdown_timeout: cfg.shutdown_timeout(),
            show_query: cfg.show_query_strings,
            credentials,
            tls: cfg.tls_files(),
            request_timeout: cfg.request_timeout(),
            heartbeat_interval: cfg.heartbeat_interval(),
            max_requests: cfg.max_requests,
            sample_memory: cfg.max_memory.is_some(),
            autoscale: cfg.autoscale_bounds().is_some(),
            specs: HashMap::new(),
            procs: HashMap::new(),
            waiters: HashMap::new(),
            next_waiter: 0,
            fronts: None,
            origin: super::handover::old::Origin::current(),
            status_requested: cfg.status_socket_addr().map(|a| a.to_string()),
            new_master: None,
            lent: Vec::new(),
            retired: false,
            takeover: None,
            foreign: Vec::new(),
            published: None,
            lock: None,
        }
    }

    /// Whether this master handed over to a new one.
    pub(super) fn retired(&self) -> bool {
        self.retired
    }

    /// The core, before the start (a takeover resumes it).
    pub(super) fn core_mut(&mut self) -> &mut Core {
        &mut self.core
    }

    /// Publishes the scoreboard for readers in other processes (replacing a predecessor's
    /// link).
    pub(super) fn publish_segment(&mut self) {
        match super::PublishedSegment::publish(self.dir.clone(), &self.name, &self.sb) {
            Ok(p) => self.published = Some(p),
            Err(e) => tracing::error!("{e}"),
        }
    }

    /// The worker count wanted.
    pub(super) fn target(&self) -> usize {
        self.core.target()
    }

    /// Why the start failed, if it did.
    pub(super) fn failure(&self) -> Option<String> {
        self.core.failure().map(str::to_string)
    }

    /// Starts the first generation and runs until every worker is gone after a stop.
    pub(super) async fn run<S: SignalSource>(
        &mut self,
        signals: &mut S,
        inbox: &mut mpsc::UnboundedReceiver<TaskEvent>,
        commands: &mut mpsc::UnboundedReceiver<Command>,
    ) {
        self.feed(Event::Start);
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING_INTERVAL);
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Memory samples only with --max-memory.
        let mut memory = self.sample_memory.then(|| {
            let mut i = tokio::time::interval(guards::MEMORY_SAMPLE_INTERVAL);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        // Load samples only with autoscaling.
        let mut load = self.autoscale.then(|| {
            let mut i = tokio::time::interval(autoscale::LOAD_SAMPLE_INTERVAL);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        while !self.core.finished() {
            let timer = self.core.poll_timeout();
            tokio::select! {
                _ = housekeeping.tick() => self.housekeeping(),
                () = tick_opt(&mut memory) => self.sample_memory(),
                () = tick_opt(&mut load) => self.sample_load(),
                ev = signals.next() => self.feed(Event::Signal(ev)),
                Some(ev) = inbox.recv() => self.on_task(ev),
                Some(cmd) = commands.recv() => self.on_command(cmd),
                () = sleep_until_opt(timer) => self.feed(Event::Tick),
            }
        }
    }

    /// Hands `event` to the core and carries out its actions (and the answers to them).
    fn feed(&mut self, event: Event) {
        let mut todo = VecDeque::from(self.core.handle(event, Instant::now()));
        while let Some(action) = todo.pop_front() {
            if let Some(answer) = self.execute(action) {
                todo.extend(self.core.handle(answer, Instant::now()));
            }
        }
    }

    /// Carries out one action; returns the event that answers it at once, if any.
    fn execute(&mut self, action: Action) -> Option<Event> {
        match action {
            Action::Spawn { slot, generation } => {
                return Some(match self.spawn_worker(slot, generation) {
                    Ok(pid) => Event::Spawned { slot, pid },
                    Err(e) => Event::SpawnFailed {
                        slot,
                        error: e.to_string(),
                    },
                });
            }
            Action::Signal { slot, pid, sig } => self.signal_worker(slot, pid, sig),
            Action::Drain { slot, pid } => self.drain_worker(slot, pid),
            Action::Reply { waiter, reply } => {
                if let Some(tx) = self.waiters.remove(&waiter) {
                    let _ = tx.send(self.with_history(self.with_guards(reply)));
                }
            }
            Action::Notify(Notify::Ready) if self.takeover_ready() => {}
            Action::Notify(n) => self.notify(n),
            Action::Log(l) => log(l),
            Action::SetPhase(p) => {
                if p == Phase::Stopping {
                    self.takeover_stopping();
                }
                self.phase.send_replace(p);
            }
            Action::RunHook { hook, timeout } => return self.run_hook(hook, timeout),
            Action::Prepare { generation } => self.prepare(generation),
            Action::DropGeneration { generation } => self.drop_generation(generation),
            Action::SetGeneration(g) => self.sb.set_generation(g),
            Action::SetTarget(n) => self.sb.set_target_workers(n),
            Action::SlotExited { slot, status } => self.sb.slot_exited(slot, status),
            Action::SlotRestarted { slot } => self.sb.slot_restarted(slot),
            Action::RecordReload(r) => {
                let success = r.outcome == crate::control::Outcome::Success;
                self.sb
                    .record_reload(success, r.generation, r.reason.as_deref());
                if let Some(c) = &r.canary {
                    self.sb.record_canary(c);
                }
            }
            Action::CanaryBaseline {
                generation,
                old,
                secs,
            } => self.canary_baseline(generation, old, secs),
            Action::JudgeCanary { generation, old } => {
                return Some(self.judge_canary(generation, old));
            }
            Action::RecordKill {
                slot,
                pid,
                reason,
                detail,
            } => self.record_kill(slot, pid, reason, &detail),
            Action::RecordRecycle {
                slot,
                pid,
                reason,
                detail,
            } => self.record_recycle(slot, pid, reason, &detail),
            Action::RecordScale { direction, reason } => self.record_scale(direction, reason),
            Action::SpawnUpgrade { .. }
            | Action::CommitUpgrade(_)
            | Action::AbortUpgrade { .. }
            | Action::RecordUpgrade(_)
            | Action::Retire => return self.upgrade_action(action),
        }
        None
    }

    fn on_task(&mut self, ev: TaskEvent) {
        match ev {
            TaskEvent::Control { slot, pid, msg } => match msg {
                ToMaster::Ready => {
                    // Its event loop turns: the lag is shown from now on, heartbeat or not.
                    let interval = self.heartbeat_interval;
                    self.sb
                        .record_heartbeat(slot, pid, Duration::ZERO, interval);
                    self.feed(Event::WorkerReady { slot, pid });
                }
                ToMaster::Heartbeat { lag_us, requests } => {
                    self.on_heartbeat(slot, pid, lag_us, requests);
                }
                ToMaster::Register { id, spec } => self.on_register(slot, pid, id, &spec),
                ToMaster::Listen { id, addr } => self.on_listen(slot, pid, id, addr),
            },
            TaskEvent::ControlBroken { slot, pid, error } => {
                self.feed(Event::WorkerBroken { slot, pid, error });
            }
            TaskEvent::Exited { slot, pid, status } => {
                if self.procs.get(&slot).is_some_and(|p| p.pid == pid) {
                    self.procs.remove(&slot);
                }
                self.feed(Event::WorkerExited { slot, pid, status });
            }
            TaskEvent::HookDone { hook, result } => self.feed(Event::HookDone { hook, result }),
            TaskEvent::Upgrade(r) => self.on_upgrade_report(r),
            TaskEvent::Takeover(later) => self.on_takeover(later),
            TaskEvent::ForeignExited { slot } => self.on_foreign_exited(slot),
            TaskEvent::Prepared { generation, result } => {
                let result = result.map(|spec| {
                    self.specs.insert(generation, Arc::new(spec));
                });
                self.feed(Event::Prepared { generation, result });
            }
            TaskEvent::Resolved {
                slot,
                pid,
                id,
                addr,
                result,
            } => self.on_resolved(slot, pid, id, &addr, result),
        }
    }

    fn on_command(&mut self, cmd: Command) {
        let waiter = WaiterId(self.next_waiter);
        self.next_waiter += 1;
        self.waiters.insert(waiter, cmd.reply);
        self.feed(Event::Control {
            request: cmd.req,
            waiter,
        });
    }

    /// Periodic chores: systemd's STATUS line, and reaping orphans when running as PID 1.
    fn housekeeping(&self) {
        // Heals a header a worker scribbled, for readers in other processes.
        self.sb.restamp();
        if reaper::is_init() {
            reaper::reap_orphans(|pid| self.procs.values().any(|p| p.pid == pid));
        }
        if std::env::var_os("NOTIFY_SOCKET").is_some() {
            systemd::notify(&format!("STATUS={}", self.status_line()));
        }
    }

    /// Removes every program copy (at exit).
    pub(super) fn remove_program_copies(&mut self) {
        for spec in self.specs.values().filter(|s| s.copied) {
            program::remove(&self.dir, &spec.exe);
        }
        self.specs.clear();
    }
}

/// The core's guard limits from the configuration.
fn guards_of(cfg: &Config) -> core::Guards {
    core::Guards {
        heartbeat_timeout: cfg.heartbeat_timeout(),
        max_memory: cfg.max_memory,
        max_requests: cfg.max_requests,
        max_requests_jitter: cfg.max_requests_jitter.unwrap_or(0),
        max_age: cfg.max_worker_age(),
        max_age_jitter: cfg.max_worker_age_jitter(),
        max_recycling: cfg.max_recycling,
        ..core::Guards::default()
    }
}

fn log(l: Log) {
    let Log {
        level,
        message,
        slot,
        pid,
        generation,
    } = l;
    match level {
        Level::Info => tracing::info!(slot, pid, generation, "{message}"),
        Level::Warn => tracing::warn!(slot, pid, generation, "{message}"),
        Level::Error => tracing::error!(slot, pid, generation, "{message}"),
    }
}

/// The next tick of `interval`, or never without one.
async fn tick_opt(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}
