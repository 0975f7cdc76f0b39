//! The master: owns the listening sockets and the scoreboard, spawns and supervises the
//! workers, and stops them in order.
//!
//! ```no_run
//! use flora_cluster::Master;
//! use std::time::Duration;
//!
//! # async fn run() -> Result<(), flora_cluster::Error> {
//! Master::builder()
//!     .name("hello")
//!     .workers(3)
//!     .program(["./target/debug/examples/hello"])
//!     .shutdown_timeout(Duration::from_secs(10))
//!     .build()?
//!     .run()
//!     .await
//! # }
//! ```
//!
//! # Lifecycle
//! Each worker moves through `Starting → Ready → Draining → Exited` ([`crate::scoreboard::SlotState`] in the
//! scoreboard). The master publishes its own [`Phase`] on a watch channel, only once it is
//! true. A worker that dies while its generation serves is respawned into the same slot
//! ([`backoff`]). SIGTERM, SIGINT and SIGQUIT drain every worker within the shutdown timeout
//! and then kill what is left; a second one kills at once.
//!
//! # Platform
//! Linux only: it relies on `SOCK_SEQPACKET`, `SCM_RIGHTS`, `PR_SET_PDEATHSIG`, `flock` and a
//! tmpfs for the scoreboard.

pub mod backoff;
mod instance;
mod listeners;
pub mod signals;
mod spawn;

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::ipc::{self, Channel, ToMaster, ToWorker};
use crate::scoreboard::Scoreboard;
use backoff::Backoff;
pub use instance::default_runtime_dir;
use instance::{InstanceLock, InstancePaths};
use listeners::Listeners;
use signals::{SignalEvent, SignalSource, UnixSignals};
use spawn::{describe_exit, SpawnSpec};

/// The master's phase, published on [`Master::phase`] once it is true.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// Creating the scoreboard and starting the first generation.
    Starting,
    /// Every worker of the first generation was ready.
    Running,
    /// Draining the workers.
    Stopping,
    /// Everything stopped.
    Stopped,
}

/// Builder of a [`Master`]; every setting defaults as in [`Config`].
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct MasterBuilder {
    config: Config,
}

impl MasterBuilder {
    /// Starts from a whole [`Config`].
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Instance name. Defaults to `flora`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Worker count. Defaults to the number of CPUs.
    pub fn workers(mut self, n: usize) -> Self {
        self.config.workers = Some(n);
        self
    }

    /// The worker program and its arguments.
    pub fn program<I, S>(mut self, argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.program = argv.into_iter().map(Into::into).collect();
        self
    }

    /// How long a new worker may take to become ready. Defaults to 30 s.
    pub fn ready_timeout(mut self, t: Duration) -> Self {
        self.config.ready_timeout = t.as_secs_f64();
        self
    }

    /// How long a worker may drain before it is killed. Defaults to 30 s.
    pub fn shutdown_timeout(mut self, t: Duration) -> Self {
        self.config.shutdown_timeout = t.as_secs_f64();
        self
    }

    /// Directory of the scoreboard and lock. Defaults to [`default_runtime_dir`].
    pub fn runtime_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.runtime_dir = Some(dir.into());
        self
    }

    /// Binds `addr` before the workers start.
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.config.listen.push(addr.into());
        self
    }

    /// Validates and builds.
    ///
    /// # Errors
    /// [`Error::Config`] naming the invalid setting.
    pub fn build(self) -> Result<Master> {
        self.config.validate()?;
        let (phase, _) = watch::channel(Phase::Starting);
        Ok(Master {
            config: self.config,
            phase,
        })
    }
}

/// A configured master, ready to [`Master::run`].
#[derive(Debug)]
pub struct Master {
    config: Config,
    phase: watch::Sender<Phase>,
}

impl Master {
    /// A builder with default settings.
    pub fn builder() -> MasterBuilder {
        MasterBuilder::default()
    }

    /// Its configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A receiver of the master's [`Phase`].
    pub fn phase(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// Runs the cluster until it is stopped by a signal. Spawns from the calling task: run it
    /// on a thread that lives as long as the master (see [`spawn`]).
    ///
    /// # Errors
    /// [`Error::AlreadyRunning`], runtime directory and scoreboard errors at start,
    /// [`Error::StartFailed`] when the first generation does not become ready.
    pub async fn run(self) -> Result<()> {
        let signals = UnixSignals::install().map_err(|source| Error::Io {
            context: "install signal handlers".into(),
            source,
        })?;
        self.run_with_signals(signals).await
    }

    /// [`Master::run`] with another source of signal events (tests).
    ///
    /// # Errors
    /// As [`Master::run`].
    pub async fn run_with_signals<S: SignalSource>(self, mut signals: S) -> Result<()> {
        let cfg = &self.config;
        let dir = cfg.runtime_dir.clone().unwrap_or_else(default_runtime_dir);
        instance::prepare_dir(&dir)?;
        let paths = InstancePaths::new(&dir, &cfg.name);
        let _lock = InstanceLock::acquire(&paths.lock, &cfg.name)?;
        if paths.scoreboard.exists() {
            tracing::info!(
                "replacing the stale scoreboard {} of a dead master",
                paths.scoreboard.display()
            );
            std::fs::remove_file(&paths.scoreboard).map_err(|source| Error::Io {
                context: format!("remove stale {}", paths.scoreboard.display()),
                source,
            })?;
        }
        let sb = Scoreboard::create(&paths.scoreboard, &cfg.name, cfg.slot_count())?;
        let _remove = RemoveOnDrop(paths.scoreboard.clone());
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let mut sup = Supervisor::new(cfg, sb, events_tx, self.phase.clone());
        for addr in &cfg.listen {
            sup.listeners
                .get_or_bind(addr)
                .map_err(|source| Error::Io {
                    context: format!("listen on {addr}"),
                    source,
                })?;
        }
        tracing::info!(
            "master {} of instance {:?} starting {} workers of {:?}",
            std::process::id(),
            cfg.name,
            sup.target,
            cfg.program
        );
        sup.start_first_generation();
        while !sup.finished() {
            let timer = sup.next_deadline();
            tokio::select! {
                ev = signals.next() => sup.on_signal(ev),
                Some(ev) = events.recv() => sup.on_event(ev),
                () = sleep_until_opt(timer) => sup.on_timer(),
            }
        }
        self.phase.send_replace(Phase::Stopped);
        match sup.failure.take() {
            Some(reason) => Err(Error::StartFailed(reason)),
            None => {
                tracing::info!("all workers stopped; master exiting");
                Ok(())
            }
        }
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Events from worker tasks to the loop.
#[derive(Debug)]
enum Event {
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
}

#[derive(Debug)]
struct WorkerProc {
    pid: u32,
    generation: u64,
    spawned_at: Instant,
    ready: bool,
    channel: Arc<Channel>,
    signals: mpsc::UnboundedSender<Signal>,
}

impl WorkerProc {
    fn kill(&self, sig: Signal) {
        let _ = self.signals.send(sig);
    }

    /// Asks for a drain over the control channel; SIGTERM if that fails.
    fn shutdown(&self) {
        let channel = self.channel.clone();
        let signals = self.signals.clone();
        tokio::spawn(async move {
            if channel.send(&ToWorker::Shutdown, None).await.is_err() {
                let _ = signals.send(Signal::SIGTERM);
            }
        });
    }
}

struct Supervisor {
    sb: Scoreboard,
    spec: SpawnSpec,
    listeners: Listeners,
    events: mpsc::UnboundedSender<Event>,
    phase: watch::Sender<Phase>,
    target: usize,
    generation: u64,
    ready_timeout: Duration,
    shutdown_timeout: Duration,
    workers: HashMap<usize, WorkerProc>,
    backoff: Vec<Backoff>,
    respawn_at: HashMap<usize, Instant>,
    start_deadline: Option<Instant>,
    stop_deadline: Option<Instant>,
    stopping: bool,
    failure: Option<String>,
}

impl Supervisor {
    fn new(
        cfg: &Config,
        sb: Scoreboard,
        events: mpsc::UnboundedSender<Event>,
        phase: watch::Sender<Phase>,
    ) -> Self {
        let seed = u64::from(std::process::id()) ^ crate::scoreboard::mono_ns();
        let target = cfg.worker_count();
        sb.set_target_workers(target);
        Self {
            backoff: (0..sb.slot_count())
                .map(|i| Backoff::new(seed.wrapping_add(i as u64 * 0x9e37_79b9)))
                .collect(),
            sb,
            spec: SpawnSpec {
                program: cfg.program.clone(),
                instance: cfg.name.clone(),
                shutdown_timeout: cfg.shutdown_timeout(),
            },
            listeners: Listeners::default(),
            events,
            phase,
            target,
            generation: 0,
            ready_timeout: cfg.ready_timeout(),
            shutdown_timeout: cfg.shutdown_timeout(),
            workers: HashMap::new(),
            respawn_at: HashMap::new(),
            start_deadline: None,
            stop_deadline: None,
            stopping: false,
            failure: None,
        }
    }

    fn finished(&self) -> bool {
        self.stopping && self.workers.is_empty()
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.respawn_at
            .values()
            .copied()
            .chain(self.start_deadline)
            .chain(self.stop_deadline)
            .min()
    }

    fn start_first_generation(&mut self) {
        self.generation = 1;
        self.sb.set_generation(1);
        self.start_deadline = Some(Instant::now() + self.ready_timeout);
        for slot in 0..self.target {
            if let Err(e) = self.spawn_into(slot) {
                self.fail_start(format!("slot {slot}: {e}"));
                return;
            }
        }
    }

    fn spawn_into(&mut self, slot: usize) -> std::io::Result<()> {
        let (master_end, worker_end) = ipc::pair()?;
        let mut child = spawn::spawn(&self.spec, slot, self.generation, worker_end, self.sb.fd())?;
        let pid = child.id().unwrap_or(0);
        self.sb.slot_spawned(slot, pid, self.generation);
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
        tracing::info!(slot, pid, generation = self.generation, "worker spawned");
        self.workers.insert(
            slot,
            WorkerProc {
                pid,
                generation: self.generation,
                spawned_at: Instant::now(),
                ready: false,
                channel,
                signals: sig_tx,
            },
        );
        Ok(())
    }

    fn on_signal(&mut self, ev: SignalEvent) {
        match ev {
            SignalEvent::Stop if self.stopping => {
                tracing::warn!(
                    "second stop signal: killing {} workers now",
                    self.workers.len()
                );
                self.kill_all();
            }
            SignalEvent::Stop => self.begin_stop("stop signal"),
            SignalEvent::Reload => {
                tracing::warn!("reload requested, but this build does not reload yet; ignored");
            }
        }
    }

    fn begin_stop(&mut self, why: &str) {
        tracing::info!(
            "{why}: draining {} workers (timeout {:?})",
            self.workers.len(),
            self.shutdown_timeout
        );
        self.stopping = true;
        self.phase.send_replace(Phase::Stopping);
        self.respawn_at.clear();
        self.start_deadline = None;
        self.stop_deadline = Some(Instant::now() + self.shutdown_timeout);
        for w in self.workers.values() {
            w.shutdown();
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

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Control { slot, pid, msg } => self.on_control(slot, pid, msg),
            Event::ControlBroken { slot, pid, error } => {
                if let Some(w) = self.workers.get(&slot).filter(|w| w.pid == pid) {
                    tracing::error!(
                        slot,
                        pid,
                        "worker sent garbage on its control channel ({error}); replacing it"
                    );
                    w.kill(Signal::SIGKILL);
                }
            }
            Event::Exited { slot, pid, status } => self.on_exit(slot, pid, status),
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
            }
            ToMaster::Listen { addr } => {
                let channel = w.channel.clone();
                let reply = match self.listeners.get_or_bind(&addr) {
                    Ok((local, fd)) => fd.try_clone_to_owned().map(|fd| {
                        (
                            ToWorker::Listening {
                                addr: addr.clone(),
                                local: local.to_string(),
                            },
                            Some(fd),
                        )
                    }),
                    Err(e) => Err(e),
                };
                let (msg, fd): (ToWorker, Option<OwnedFd>) = reply.unwrap_or_else(|e| {
                    tracing::error!(slot, "cannot listen on {addr}: {e}");
                    (
                        ToWorker::ListenFailed {
                            addr,
                            error: e.to_string(),
                        },
                        None,
                    )
                });
                tokio::spawn(async move {
                    let _ = channel.send(&msg, fd.as_ref().map(AsFd::as_fd)).await;
                });
            }
        }
    }

    fn check_started(&mut self) {
        if self.start_deadline.is_none() || self.stopping {
            return;
        }
        let ready = self.workers.values().filter(|w| w.ready).count();
        if ready >= self.target {
            self.start_deadline = None;
            tracing::info!("cluster ready: {ready} workers serving");
            self.phase.send_replace(Phase::Running);
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
        let lived = w.spawned_at.elapsed();
        let was_ready = w.ready;
        let generation = w.generation;
        self.workers.remove(&slot);
        self.sb.slot_exited(slot, raw);
        if self.stopping {
            tracing::info!(slot, pid, generation, "worker exited ({how})");
            return;
        }
        if self.start_deadline.is_some() && !was_ready {
            self.fail_start(format!(
                "worker in slot {slot} (pid {pid}) exited during start-up ({how})"
            ));
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

    fn on_timer(&mut self) {
        let now = Instant::now();
        if self.start_deadline.is_some_and(|d| d <= now) {
            let ready = self.workers.values().filter(|w| w.ready).count();
            let t = self.ready_timeout;
            self.fail_start(format!(
                "only {ready} of {} workers were ready after {t:?}",
                self.target
            ));
        }
        if self.stop_deadline.is_some_and(|d| d <= now) {
            self.stop_deadline = None;
            if !self.workers.is_empty() {
                tracing::warn!(
                    "shutdown timeout: killing {} workers that are still draining",
                    self.workers.len()
                );
                self.kill_all();
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
            self.sb.slot_restarted(slot);
            if let Err(e) = self.spawn_into(slot) {
                let delay = self.backoff[slot].on_exit(Duration::ZERO);
                tracing::error!(slot, "respawn failed: {e}; retrying in {delay:.1?}");
                self.sb.slot_exited(slot, -1);
                self.respawn_at.insert(slot, Instant::now() + delay);
            }
        }
    }
}
