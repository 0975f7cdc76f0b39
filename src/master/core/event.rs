//! What goes into the core ([`Event`]) and what comes out of it ([`Action`]).

use std::process::ExitStatus;
use std::time::Duration;

use crate::canary::GenerationFigures;
use crate::control::{ReloadOutcome, Reply, Request};

/// The master's phase, published on [`crate::Master::phase`] once it is true.
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

/// What a signal asks the master to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalEvent {
    /// SIGTERM, SIGINT or SIGQUIT: stop gracefully (a second one: stop at once).
    Stop,
    /// SIGHUP: reload the workers.
    Reload,
    /// SIGUSR2: upgrade the master (the binary it was started from).
    Upgrade,
}

/// Who waits for a reply: an id the shell maps to its reply channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WaiterId(pub u64);

/// A lifecycle hook the shell runs off the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// `before_reload(generation)`: an error cancels that reload.
    BeforeReload {
        /// The generation about to start.
        generation: u64,
    },
    /// `before_shutdown(0)`: the stop goes on whatever it returns.
    BeforeShutdown,
}

/// A signal for one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Sig {
    /// SIGTERM: stop now (for workers that may not read their control channel).
    Term,
    /// SIGKILL.
    Kill,
}

/// Something that happened, fed to [`super::Core::handle`].
#[derive(Debug, Clone)]
pub enum Event {
    /// The master is set up: start the first generation.
    Start,
    /// A generation's program copy is made (`Ok`) or failed; answers [`Action::Prepare`].
    Prepared {
        /// The generation.
        generation: u64,
        /// Why it failed.
        result: Result<(), String>,
    },
    /// The worker of [`Action::Spawn`] runs. The shell feeds this (or [`Event::SpawnFailed`])
    /// before any other event.
    Spawned {
        /// Its slot.
        slot: usize,
        /// Its pid.
        pid: u32,
    },
    /// [`Action::Spawn`] failed.
    SpawnFailed {
        /// The slot.
        slot: usize,
        /// Why.
        error: String,
    },
    /// A worker said it is ready.
    WorkerReady {
        /// Its slot.
        slot: usize,
        /// Its pid.
        pid: u32,
    },
    /// A worker broke its control channel (garbage, not a plain close).
    WorkerBroken {
        /// Its slot.
        slot: usize,
        /// Its pid.
        pid: u32,
        /// What was wrong.
        error: String,
    },
    /// A worker exited (reaped).
    WorkerExited {
        /// Its slot.
        slot: usize,
        /// Its pid.
        pid: u32,
        /// How, when known.
        status: Option<ExitStatus>,
    },
    /// Time passed: [`super::Core::poll_timeout`] was reached.
    Tick,
    /// A request from the control socket or the HTTP actions.
    Control {
        /// The request.
        request: Request,
        /// Who gets the [`Action::Reply`].
        waiter: WaiterId,
    },
    /// A signal.
    Signal(SignalEvent),
    /// A worker's heartbeat arrived on its control channel (its event loop turns). The
    /// shell feeds it as it comes; the core keeps the time it was handled (a worker's ready
    /// counts as a beat too) and its request count for `--max-requests`.
    Heartbeat {
        /// Its slot.
        slot: usize,
        /// Its pid.
        pid: u32,
        /// How late the worker's heartbeat timer fired (event-loop lag).
        lag: Duration,
        /// Requests the worker process finished so far (its own count).
        requests: u64,
    },
    /// The master sampled a worker's resident memory (`/proc/<pid>/statm`, about every second);
    /// the core counts the samples over `--max-memory` in a row.
    MemorySample {
        /// Its slot.
        slot: usize,
        /// Its pid.
        pid: u32,
        /// Resident set size in bytes.
        rss: u64,
    },
    /// The figures of a canary reload's two generations over the observation window;
    /// answers [`Action::JudgeCanary`] at once.
    CanaryFigures {
        /// The canaries' generation.
        generation: u64,
        /// The old generation's figures (its crashes are counted by the core).
        old: GenerationFigures,
        /// The canaries' figures.
        new: GenerationFigures,
    },
    /// The load as the master sampled it (about every 250 ms, with autoscaling on): the
    /// autoscaler's signal.
    Load {
        /// Ready workers with at least one request in flight (the core caps it at its own
        /// count of ready workers).
        busy: usize,
        /// Requests in flight in those workers.
        in_flight: u64,
        /// Connections waiting in the listen queues, summed over the listeners.
        queued: u64,
    },
    /// A hook of [`Action::RunHook`] finished (an error also for a panic or a timeout).
    HookDone {
        /// Which.
        hook: Hook,
        /// Its result.
        result: Result<(), String>,
    },
    /// The new master of an upgrade was started (the answer to [`Action::SpawnUpgrade`]).
    UpgradeSpawned {
        /// Its pid.
        pid: u32,
    },
    /// The new master has every worker of its generation ready and waits for the commit.
    UpgradeReady {
        /// Its version.
        version: String,
    },
    /// The new master took over (the answer to [`Action::CommitUpgrade`]).
    UpgradeCommitted,
    /// The upgrade failed: the new master could not start, exited, refused the state, broke
    /// the protocol or hung up. Rolls back.
    UpgradeFailed {
        /// Why.
        reason: String,
    },
    /// The new master of an upgrade that failed is gone (its lent slots are free again).
    UpgradeGone,
    /// A worker of the previous master (after a takeover) exited: its slot is free.
    ForeignExited {
        /// Its slot.
        slot: usize,
    },
}

/// How loud a [`Log`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Normal progress.
    Info,
    /// Something to look at.
    Warn,
    /// Something failed.
    Error,
}

/// A log line with the worker it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    /// How loud.
    pub level: Level,
    /// The text.
    pub message: String,
    /// The worker's slot.
    pub slot: Option<usize>,
    /// The worker's pid.
    pub pid: Option<u32>,
    /// The generation.
    pub generation: Option<u64>,
}

/// What systemd is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notify {
    /// `READY=1` with the status line.
    Ready,
    /// `RELOADING=1` towards `generation`.
    Reloading {
        /// The generation being started.
        generation: u64,
    },
    /// `RELOADING=1`: a new master is being started.
    Upgrading,
    /// `READY=1` and `MAINPID=` this master again after a failed upgrade.
    UpgradeRolledBack,
}

/// Why the master kills a worker (`flora_worker_kills_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KillReason {
    /// Its heartbeat stopped for longer than the heartbeat timeout (a blocked event loop).
    Heartbeat,
    /// It was still draining when the shutdown timeout ran out.
    ShutdownTimeout,
}

impl KillReason {
    /// Every reason, in label order.
    #[cfg(test)]
    pub const ALL: [Self; 2] = [Self::Heartbeat, Self::ShutdownTimeout];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Heartbeat => "heartbeat",
            Self::ShutdownTimeout => "shutdown_timeout",
        }
    }
}

/// Why the master recycles a worker (`flora_worker_recycles_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecycleReason {
    /// Its resident memory stayed over `--max-memory`.
    Memory,
    /// It served `--max-requests` (plus its jitter) requests.
    MaxRequests,
    /// It lived `--max-worker-age` (plus its jitter).
    Age,
}

impl RecycleReason {
    /// Every reason, in label order.
    #[cfg(test)]
    pub const ALL: [Self; 3] = [Self::Memory, Self::MaxRequests, Self::Age];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::MaxRequests => "max_requests",
            Self::Age => "age",
        }
    }
}

/// Which way the target moved (`flora_scale_events_total{direction}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScaleDirection {
    /// One worker more (or a manual scale up).
    Up,
    /// One worker fewer (or a manual scale down).
    Down,
}

impl ScaleDirection {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
        }
    }
}

/// Why the target moved (`flora_scale_events_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScaleReason {
    /// The requests in flight per ready worker stayed at or over the threshold.
    Busy,
    /// Connections waited in a listen queue.
    Queue,
    /// The cluster stayed idle for `scale_down_after`.
    Idle,
    /// A `scale` request while autoscaling.
    Manual,
}

impl ScaleReason {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Busy => "busy",
            Self::Queue => "queue",
            Self::Idle => "idle",
            Self::Manual => "manual",
        }
    }
}

/// Something for the shell to do, in order.
#[derive(Debug, Clone)]
pub enum Action {
    /// Start a worker of `generation` in `slot`; answer with [`Event::Spawned`] or
    /// [`Event::SpawnFailed`] before feeding anything else.
    Spawn {
        /// The slot.
        slot: usize,
        /// The generation (already prepared).
        generation: u64,
    },
    /// Send `sig` to the worker `pid` in `slot`.
    Signal {
        /// The slot.
        slot: usize,
        /// Its pid (the shell ignores a slot that holds another pid by now).
        pid: u32,
        /// The signal.
        sig: Sig,
    },
    /// Ask the worker to drain over its control channel (SIGTERM if that fails).
    Drain {
        /// The slot.
        slot: usize,
        /// Its pid.
        pid: u32,
    },
    /// Answer a waiter.
    Reply {
        /// Who.
        waiter: WaiterId,
        /// The answer.
        reply: Reply,
    },
    /// Tell systemd.
    Notify(Notify),
    /// Write a log line.
    Log(Log),
    /// Publish the master's phase.
    SetPhase(Phase),
    /// Run a hook off the loop, bounded by `timeout`; answer with [`Event::HookDone`].
    RunHook {
        /// Which.
        hook: Hook,
        /// Longest time it may take.
        timeout: Duration,
    },
    /// Make the program copy of `generation` off the loop; answer with [`Event::Prepared`].
    Prepare {
        /// The generation.
        generation: u64,
    },
    /// `generation` is not needed any more: remove its program copy.
    DropGeneration {
        /// The generation.
        generation: u64,
    },
    /// Scoreboard: the serving generation.
    SetGeneration(u64),
    /// Scoreboard: the worker count wanted.
    SetTarget(usize),
    /// Scoreboard: the worker in `slot` exited with `status` (raw wait status, -1 unknown).
    SlotExited {
        /// The slot.
        slot: usize,
        /// Raw wait status.
        status: i32,
    },
    /// Scoreboard: `slot` is being respawned (counts a restart).
    SlotRestarted {
        /// The slot.
        slot: usize,
    },
    /// Scoreboard: a reload ended.
    RecordReload(ReloadOutcome),
    /// A canary reload's workers are all ready: remember both generations' counters now (the
    /// start of the observation window).
    CanaryBaseline {
        /// The canaries' generation.
        generation: u64,
        /// The generation they are compared with.
        old: u64,
        /// How long the observation lasts, seconds.
        secs: f64,
    },
    /// The observation window ended: answer at once with [`Event::CanaryFigures`], the
    /// growth of both generations' counters since [`Action::CanaryBaseline`].
    JudgeCanary {
        /// The canaries' generation.
        generation: u64,
        /// The generation they are compared with.
        old: u64,
    },
    /// The worker in `slot` is about to be killed: save what the scoreboard and `/proc` show
    /// of it (the kill record: in-flight requests, threads' `wchan`, `syscall`, state), count
    /// `flora_worker_kills_total{reason}` and show the reason on the slot. Comes before the
    /// [`Action::Signal`] that kills it, once per worker: a heartbeat kill's record (before
    /// its SIGTERM) also stands for the SIGKILL that follows if it does not exit.
    RecordKill {
        /// The slot.
        slot: usize,
        /// Its pid.
        pid: u32,
        /// Why.
        reason: KillReason,
        /// One line for the log and the record (e.g. "no heartbeat for 3.0s").
        detail: String,
    },
    /// A recycle of the worker in `slot` begins (its replacement is spawned next): count
    /// `flora_worker_recycles_total{reason}` and show the reason on the slot. A failed
    /// recycle is tried again later, with a new record.
    RecordRecycle {
        /// The slot of the worker being replaced.
        slot: usize,
        /// Its pid.
        pid: u32,
        /// Why.
        reason: RecycleReason,
        /// One line for the log (e.g. "rss 120.0 MiB over 100.0 MiB for 3 samples").
        detail: String,
    },
    /// The target moved while autoscaling (after its [`Action::SetTarget`]): count
    /// `flora_scale_events_total{direction,reason}`.
    RecordScale {
        /// Up or down.
        direction: ScaleDirection,
        /// Why.
        reason: ScaleReason,
    },
    /// Start the new master of an upgrade; answered with [`Event::UpgradeSpawned`] or
    /// [`Event::UpgradeFailed`].
    SpawnUpgrade {
        /// Its binary (`None`: the one this master was started from).
        binary: Option<std::path::PathBuf>,
        /// The free slots it may start its workers in.
        lent: Vec<usize>,
        /// Slot and pid of every worker of this master (foreign to the new one).
        workers: Vec<(usize, u32)>,
        /// The serving generation.
        generation: u64,
        /// The worker count wanted.
        target: usize,
    },
    /// Stop accepting on the control socket and the status server and hand over: send the
    /// final state with the upgrade's record (for the new master to keep); answered with
    /// [`Event::UpgradeCommitted`] or [`Event::UpgradeFailed`].
    CommitUpgrade(crate::control::UpgradeReport),
    /// Tell the new master to give up (or stop it); accept again if the commit had stopped
    /// accepting.
    AbortUpgrade {
        /// Why.
        reason: String,
        /// SIGKILL it at once: the commit went out, so it may be serving already, and two
        /// masters must never both serve.
        kill: bool,
    },
    /// Count and keep an upgrade's outcome.
    RecordUpgrade(crate::control::UpgradeReport),
    /// The new master serves: at exit, leave the shared files (sockets, lock, scoreboard
    /// link) to it, and tell systemd nothing more.
    Retire,
}
