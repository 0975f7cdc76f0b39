//! The master's decisions as a pure state machine: events in, actions out.
//!
//! [`Core`] owns all master state: the phase, the generations, which generation owns each
//! slot, the workers by slot (pid, generation, ready, draining, kill deadline, what the
//! guards keep of it), the reload transaction and the reloads queued behind it, the
//! recycles, the respawn timers and the stop. Its
//! [`Core::handle`] takes an [`Event`] and the current time and returns [`Action`]s; it makes
//! no syscalls, reads no clock and runs no tasks. Time comes in as an argument and goes out
//! as [`Core::poll_timeout`]. The shell (`super::shell`) runs the actions and feeds back
//! what happens. This is the pattern of quinn-proto's `Connection`.
//!
//! Contract with the shell: an [`Action::Spawn`] is answered with [`Event::Spawned`] or
//! [`Event::SpawnFailed`] before any other event; the core sends one spawn at a time, so
//! a failure stops the rest of its batch (as a reload must). Every waiter of an
//! [`Event::Control`] gets exactly one [`Action::Reply`].
//!
//! # Master phases
//! ```text
//!                 every worker of the
//!                 first generation ready
//!   Start ──► Starting ─────────────────────► Running
//!               │   │                            │
//!               │   └── stop ──┐   ┌── stop ─────┘
//!               │              ▼   ▼
//!               │      with a before_shutdown hook: StopRequested
//!               │      (the hook runs; start-up and reloads go on)
//!               │              │ hook done, or a second stop (kills at once)
//!               │              ▼
//!   start fails └──────────► Stopping ◄──── a stop without a hook
//!   (a start-up worker         │            (a second stop here kills at once)
//!    exits, a spawn or the     │ every worker exited, no program copy in flight
//!    copy fails, timeout)      ▼
//!                           Stopped (`finished()`)
//! ```
//! `StopRequested` is internal; [`Phase`] publishes the other four. Every way into
//! `Stopping` goes through one function, `enter_stopping`: it clears the
//! respawn timers, the start deadline, the spawn queue, the reload and the queue of reloads
//! (answering every waiter), and drains every worker (or kills it, for a second stop).
//! Nothing is spawned after it.
//!
//! # The reload transaction
//! ```text
//!  request ──► queued (coalesced into one) while a reload or the start runs
//!     │
//!     ▼
//!   Hook: before_reload(g+1) runs (skipped without a hook) ──── error ────────────────┐
//!     │ ok                                                                            │
//!     ▼                                                                               │
//!  free slots for the target? ── no, not even once the draining workers exit ────────┤
//!     │ yes               │ once they exit                                            │
//!     │                   ▼                                                           │
//!     │         WaitingForSlots ── deadline: shutdown timeout + 2 s ─────────────────┤
//!     │                   │ a draining worker exits: check again                      │
//!     ▼                   ▼                                                           │
//!   Preparing: the program copy is made off the loop ──── copy fails ────────────────┤
//!     │                                                                               │
//!     ▼                                                                               │
//!   Starting: g+1 spawned into the free slots ── a new worker exits, a spawn fails,   │
//!     │                                          or the ready timeout passes ────────┤
//!     │ every new worker ready                                                        ▼
//!     ▼                                                                   rollback: g+1 stops
//!   commit: g+1 serves, g drains                                          (ready ones drain,
//!     │                                                                    the rest SIGTERM)
//!     └─────► record, answer every waiter, then begin the queued reload ◄────────────┘
//! ```
//! A stop at any step answers the reload's waiters and the queued ones with
//! "the cluster is stopping".
//!
//! # Rolling reloads (`reload_batch` = K, `rolling.rs`)
//! The same transaction, with `Starting` one batch at a time; at most target + K workers
//! live (draining ones included), so K free slots are enough:
//! ```text
//!   Starting: min(K, workers left) of g+1 spawn into free slots
//!     │ the batch is ready                          a failure in any batch (exit, spawn,
//!     ▼                                             ready timeout, slot wait) ──► rollback:
//!   last batch? ── yes ──► commit (the rest of g drains)   g+1 stops; g respawns the workers
//!     │ no                                                  its batches retired into free
//!     ▼                                                     slots, now or as slots free
//!   as many workers of g drain (not ready ones first)       (`restoring`); reloads asked for
//!     │                                                     meanwhile wait for it, a scale
//!     ▼                                                     is refused, a stop ends it
//!   WaitingForSlots until live + batch ≤ target + K ──► Starting (next batch)
//! ```
//!
//! # Canary reloads (`Request::Canary`, `canary.rs`)
//! A rolling reload with batch K whose first batch is observed before anything old stops.
//! Refused up front (no waiter queued) while a reload, the start, a restore or a recycle runs.
//! ```text
//!   Hook ─► Preparing ─► Starting: K of g+1 spawn into free slots (all of g serves on)
//!                          │ all K ready                  an exit, spawn failure or the
//!                          ▼                              ready timeout ──► rollback
//!   CanaryBaseline ──► Observing until now + S ── a canary exits ──► rollback ("crash")
//!                          │ S passed                     (old workers that exit are
//!                          ▼                               respawned and counted)
//!   JudgeCanary ──► Judging ── CanaryFigures (answered at once) ──► judge (pure)
//!                                │ promote                  │ rollback
//!                                ▼                          ▼
//!             rolling from batch 2 (the canaries       the K canaries drain; g was
//!             are batch 1: K old drain, …, commit)     never touched (nothing to restore)
//! ```
//! The reply's `ReloadOutcome.canary` has the figures and the verdict (or, if it ended before
//! the comparison, its reason). Reloads asked for meanwhile are queued; a stop answers.
//!
//! # Worker guards (`guards/`, checked after every event)
//! The heartbeat kill, for a ready, not draining worker of any generation (none is
//! checked before it is ready; its ready counts as a beat):
//! ```text
//!   ready ──► beating ◄── Heartbeat (the core's `now` when it is handled)
//!               │ no heartbeat for heartbeat_timeout (the deadline is in poll_timeout)
//!               ▼
//!   RecordKill(heartbeat), SIGTERM ──► it exits ──► respawned like any exit (the backoff
//!               │                                   resets after a long life); logged
//!               │ still there after the shutdown timeout        as a kill
//!               ▼
//!             SIGKILL (no second record)
//! ```
//! A worker still there at its drain deadline gets `RecordKill(shutdown_timeout)` before
//! its SIGKILL: one record per worker, before every SIGKILL of a deadline. (A second stop
//! and a broken control channel SIGKILL without one.)
//!
//! A recycle: RSS over `max_memory` for `memory_samples` samples in a row, the request
//! count of the latest heartbeat at the worker's limit, or its age past its limit (both
//! limits with a jitter drawn per worker). Only for a ready, not draining, not killed
//! worker of the serving generation; never during the start, a reload (or one queued) or a
//! stop, nor while fewer healthy workers serve than the target; at most `max_recycling` at
//! once.
//! ```text
//!   due ── no free slot ──► waits (warned once per worker); tried after every event
//!    │ a free slot
//!    ▼
//!   RecordRecycle; the replacement (same generation) spawns into the free slot
//!    │             │ its spawn fails, it exits before it is ready, or ready_timeout passes
//!    │             ▼
//!    │   failed: its slot is freed (a live replacement gets SIGTERM), the old worker
//!    │   serves on; no new try before ready_timeout
//!    │
//!    │ the old worker exits first: the replacement takes its place (no respawn)
//!    │ the replacement is ready
//!    ▼
//!   the old worker drains like after a reload; its slot is freed when it exits
//!    └──► a reload asked for during the recycle begins
//! ```
//! A scale request during a recycle is refused; a stop drops the recycles (the
//! replacement drains with everything else).
//!
//! # Autoscaling (`autoscale.rs`, with `Settings::autoscale`)
//! Each [`Event::Load`] sample: in flight ≥ 3/4 per ready worker for `up_after` (every worker
//! ready, cooldown over) → scale to target + 1; idle (peak in flight of the last
//! `scale_down_after` ≤ (target − 1) / 2, no queue) → target − 1; each through the `scale` path above (refused now: tried again at
//! a later sample) and one [`Action::RecordScale`]. A manual `scale` while autoscaling must
//! stay within the bounds. Diagram and hysteresis in `autoscale.rs`.

mod autoscale;
mod canary;
mod event;
mod guards;
mod reload;
mod rolling;
mod settings;
mod status;
mod stop;
mod upgrade;
mod workers;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

pub use autoscale::Autoscale;
pub use event::{
    Action, Event, Hook, KillReason, Level, Log, Notify, Phase, RecycleReason, ScaleDirection,
    ScaleReason, Sig, SignalEvent, WaiterId,
};
pub use guards::Guards;
pub use settings::Settings;

use super::backoff::Backoff;
use crate::control::{ReloadOutcome, Reply};
use guards::{Jitter, Recycle};
use reload::ReloadTx;
use workers::{SpawnKind, Worker};

/// Where the stop stands (orthogonal to starting/running: a start goes on while the
/// before-shutdown hook runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// No stop asked for.
    No,
    /// The before-shutdown hook runs.
    Requested,
    /// Draining; nothing is spawned any more.
    Stopping,
}

/// The master's state machine (see the module docs).
#[derive(Debug)]
pub struct Core {
    cfg: Settings,
    /// The time of the event being handled.
    now: Instant,
    /// Actions of the event being handled.
    out: Vec<Action>,
    /// The phase as last published.
    phase: Phase,
    stop: Stop,
    /// Set while the first generation starts.
    start_deadline: Option<Instant>,
    /// Why the start failed.
    failure: Option<String>,
    target: usize,
    /// The serving generation.
    generation: u64,
    next_generation: u64,
    /// Generations whose program copy is made.
    prepared: BTreeSet<u64>,
    /// Generations whose program copy is being made.
    preparing: BTreeSet<u64>,
    /// The generation that wants a worker in each slot. A slot is free when it has no owner
    /// and no worker (a draining worker keeps its slot until it exits).
    owner: Vec<Option<u64>>,
    workers: BTreeMap<usize, Worker>,
    /// Spawns not sent yet: one [`Action::Spawn`] is out at a time.
    spawn_queue: VecDeque<(usize, u64, SpawnKind)>,
    /// The slot whose spawn is out, and why it was spawned.
    spawning: Option<(usize, SpawnKind)>,
    backoff: Vec<Backoff>,
    respawn_at: BTreeMap<usize, Instant>,
    reload: Option<ReloadTx>,
    /// Reloads asked for during a reload or the start (`Some` even without waiters).
    queued: Option<Vec<WaiterId>>,
    last_reload: Option<ReloadOutcome>,
    /// The last canary reload's report, and the verdicts so far.
    last_canary: Option<crate::canary::CanaryReport>,
    canary_counts: crate::canary::CanaryCounts,
    /// Workers of the serving generation a rolling rollback still has to respawn (each
    /// waits for a free slot).
    restoring: usize,
    /// Recycles under way, by the slot of the worker being replaced.
    recycles: BTreeMap<usize, Recycle>,
    /// Draws the guards' per-worker jitter.
    jitter: Jitter,
    /// What the autoscaler remembers between load samples.
    autoscale: autoscale::ScaleState,
    /// The master upgrade under way (`upgrade.rs`).
    upgrade: Option<upgrade::UpgradeTx>,
    /// Slots the other master of an upgrade holds: lent to a new master, or (after a
    /// takeover) the previous master's workers'. Never free.
    held: upgrade::Held,
    /// Handed over to a new master: only drains.
    retiring: bool,
    /// A failed upgrade's new master may still run (until [`Event::UpgradeGone`]): the
    /// master does not finish before it is gone.
    abandoned: bool,
    /// A stop arrived while the upgrade's commit was out: carried out once it is answered.
    stop_after_upgrade: bool,
}

impl Core {
    /// A core that has started nothing yet (feed [`Event::Start`]); `seed` varies the
    /// respawn jitter and the guards' per-worker jitter between masters.
    pub fn new(cfg: Settings, seed: u64, now: Instant) -> Self {
        let slots = cfg.slots;
        Self {
            target: cfg.workers.min(slots),
            cfg,
            now,
            out: Vec::new(),
            phase: Phase::Starting,
            stop: Stop::No,
            start_deadline: None,
            failure: None,
            generation: 0,
            next_generation: 1,
            prepared: BTreeSet::new(),
            preparing: BTreeSet::new(),
            owner: vec![None; slots],
            workers: BTreeMap::new(),
            spawn_queue: VecDeque::new(),
            spawning: None,
            backoff: (0..slots)
                .map(|i| Backoff::new(seed.wrapping_add(i as u64 * 0x9e37_79b9)))
                .collect(),
            respawn_at: BTreeMap::new(),
            reload: None,
            queued: None,
            last_reload: None,
            last_canary: None,
            canary_counts: Default::default(),
            restoring: 0,
            recycles: BTreeMap::new(),
            jitter: Jitter::new(seed),
            autoscale: autoscale::ScaleState::default(),
            upgrade: None,
            held: upgrade::Held::new(),
            retiring: false,
            abandoned: false,
            stop_after_upgrade: false,
        }
    }

    /// Handles one event at time `now`; returns what the shell must do, in order.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        self.now = now;
        match event {
            Event::Start => self.start(),
            Event::Prepared { generation, result } => self.on_prepared(generation, result),
            Event::Spawned { slot, pid } => self.on_spawned(slot, pid),
            Event::SpawnFailed { slot, error } => self.on_spawn_failed(slot, &error),
            Event::WorkerReady { slot, pid } => self.on_ready(slot, pid),
            Event::WorkerBroken { slot, pid, error } => self.on_broken(slot, pid, &error),
            Event::WorkerExited { slot, pid, status } => self.on_exit(slot, pid, status),
            Event::Tick => self.on_tick(),
            Event::Control { request, waiter } => self.on_control(request, waiter),
            Event::Signal(SignalEvent::Stop) => self.request_stop("stop signal"),
            Event::Signal(SignalEvent::Reload) => {
                if !self.refuse_during_upgrade(None, "SIGHUP reload") {
                    self.request_reload(None);
                }
            }
            Event::Signal(SignalEvent::Upgrade) => self.request_upgrade(None, None, None),
            Event::UpgradeSpawned { pid } => self.on_upgrade_spawned(pid),
            Event::UpgradeReady { version } => self.on_upgrade_ready(version),
            Event::UpgradeCommitted => self.on_upgrade_committed(),
            Event::UpgradeFailed { reason } => self.fail_upgrade(reason),
            Event::UpgradeGone => self.on_upgrade_gone(),
            Event::ForeignExited { slot } => self.on_foreign_exited(slot),
            Event::HookDone { hook, result } => self.on_hook_done(hook, result),
            Event::Heartbeat {
                slot,
                pid,
                lag,
                requests,
            } => self.on_heartbeat(slot, pid, lag, requests),
            Event::MemorySample { slot, pid, rss } => self.on_memory_sample(slot, pid, rss),
            Event::CanaryFigures {
                generation,
                old,
                new,
            } => self.on_canary_figures(generation, old, new),
            Event::Load {
                busy,
                in_flight,
                queued,
            } => self.on_load(busy, in_flight, queued),
        }
        self.run_guards();
        std::mem::take(&mut self.out)
    }

    /// The next time [`Event::Tick`] is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.respawn_at
            .values()
            .copied()
            .chain(self.start_deadline)
            .chain(self.reload.as_ref().and_then(ReloadTx::deadline))
            .chain(self.upgrade_deadline())
            .chain(self.workers.values().filter_map(|w| w.kill_at))
            .chain(self.guard_deadlines())
            .min()
    }

    /// Whether the master is done: stopping, every worker gone, no program copy in flight,
    /// no failed upgrade's new master left.
    pub fn finished(&self) -> bool {
        self.stop == Stop::Stopping
            && self.workers.is_empty()
            && self.preparing.is_empty()
            && !self.abandoned
    }

    /// Why the start failed, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// The serving generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The worker count wanted.
    pub fn target(&self) -> usize {
        self.target
    }

    fn start(&mut self) {
        let generation = self.next_generation;
        self.next_generation += 1;
        self.generation = generation;
        self.out.push(Action::SetGeneration(generation));
        self.out.push(Action::SetTarget(self.target));
        self.start_deadline = Some(self.now + self.cfg.ready_timeout);
        self.prepare(generation);
    }

    /// Asks for `generation`'s program copy unless it is made or being made.
    fn prepare(&mut self, generation: u64) {
        if !self.prepared.contains(&generation) && self.preparing.insert(generation) {
            self.out.push(Action::Prepare { generation });
        }
    }

    fn on_prepared(&mut self, generation: u64, result: Result<(), String>) {
        if !self.preparing.remove(&generation) {
            return;
        }
        let starting = self.start_deadline.is_some() && generation == self.generation;
        let reloading = self.reloading(generation);
        if let Err(e) = result {
            if starting {
                self.fail_start(e);
            } else if reloading {
                self.rollback(e);
            }
            return;
        }
        if self.stop == Stop::Stopping || !(starting || reloading) {
            self.out.push(Action::DropGeneration { generation });
            return;
        }
        self.prepared.insert(generation);
        if starting {
            self.spawn_first_generation();
        } else {
            self.spawn_reload_generation();
        }
    }

    /// Drops the program copies of generations with no worker and no slot any more.
    fn forget_unused_generations(&mut self) {
        let used: BTreeSet<u64> = self
            .workers
            .values()
            .map(|w| w.generation)
            .chain(self.owner.iter().flatten().copied())
            .chain(self.reload.as_ref().map(|r| r.generation))
            .collect();
        let unused: Vec<u64> = self.prepared.difference(&used).copied().collect();
        for generation in unused {
            self.prepared.remove(&generation);
            self.out.push(Action::DropGeneration { generation });
        }
    }

    fn on_hook_done(&mut self, hook: Hook, result: Result<(), String>) {
        match hook {
            Hook::BeforeReload { generation } => self.on_reload_hook(generation, result),
            Hook::BeforeShutdown => self.on_shutdown_hook(result),
        }
    }

    fn reply(&mut self, waiter: WaiterId, reply: Reply) {
        self.out.push(Action::Reply { waiter, reply });
    }

    fn answer_all(&mut self, waiters: Vec<WaiterId>, reply: &Reply) {
        for waiter in waiters {
            self.reply(waiter, reply.clone());
        }
    }

    fn set_phase(&mut self, phase: Phase) {
        self.phase = phase;
        self.out.push(Action::SetPhase(phase));
    }

    fn log(&mut self, level: Level, message: String) {
        self.log_about(level, message, None, None, None);
    }

    fn log_about(
        &mut self,
        level: Level,
        message: String,
        slot: Option<usize>,
        pid: Option<u32>,
        generation: Option<u64>,
    ) {
        self.out.push(Action::Log(Log {
            level,
            message,
            slot,
            pid,
            generation,
        }));
    }
}
