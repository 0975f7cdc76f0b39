//! Tests of the core: a small simulated shell ([`Sim`]) drives it with events, answers its
//! spawns at once (as the real shell does) and checks the invariants after every action.

mod autoscale;
mod canary;
mod heartbeat;
mod prop;
mod prop_autoscale;
mod prop_upgrade;
mod recycle;
mod reload;
mod rolling;
mod start_stop;
mod upgrade;
mod upgrade_during;
mod upgrade_new_master;
mod workers;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use super::{
    Action, Core, Event, Hook, KillReason, Level, Phase, RecycleReason, Settings, Sig, SignalEvent,
    Stop, WaiterId,
};
use crate::canary::GenerationFigures;
use crate::control::{Reply, Request};

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

fn settings(slots: usize, workers: usize) -> Settings {
    Settings {
        name: "t".into(),
        master_pid: 1,
        slots,
        workers,
        ready_timeout: READY_TIMEOUT,
        shutdown_timeout: SHUTDOWN_TIMEOUT,
        before_reload: false,
        before_shutdown: false,
        guards: Default::default(),
        reload_batch: None,
        canary_limits: Default::default(),
        autoscale: None,
        upgrade_refused: None,
    }
}

/// A simulated shell: live processes by slot, replies by waiter, hooks and copies pending.
struct Sim {
    core: Core,
    now: Instant,
    slots: usize,
    next_pid: u32,
    next_waiter: u64,
    live: BTreeMap<usize, u32>,
    replies: BTreeMap<WaiterId, Vec<Reply>>,
    waiters: Vec<WaiterId>,
    prepares: VecDeque<u64>,
    hooks: VecDeque<Hook>,
    /// Answer copies at once.
    auto_prepare: bool,
    /// Spawns fail with this.
    spawn_error: Option<String>,
    stopping_began: bool,
    generation: u64,
    /// Everything the core did.
    all: Vec<Action>,
    /// Pids with their `RecordKill` out (one each).
    recorded: BTreeSet<u32>,
    /// Pids the core may SIGKILL without a record: a broken channel, a second stop.
    excused: BTreeSet<u32>,
    /// Pids that got SIGKILL.
    sigkilled: BTreeSet<u32>,
    /// The requests each live worker reported so far.
    requests: BTreeMap<u32, u64>,
    /// The (old, new) figures the shell answers a canary's judging with (generations set
    /// from the action).
    canary_figures: (GenerationFigures, GenerationFigures),
    /// Upgrades: the slots lent to a new master that may still run, its pid once started,
    /// and whether the shell answers `SpawnUpgrade` at once (as the real one does).
    lent: Option<Vec<usize>>,
    new_master: Option<u32>,
    auto_upgrade: bool,
}

impl Sim {
    fn new(cfg: Settings) -> Self {
        let now = Instant::now();
        Self {
            slots: cfg.slots,
            core: Core::new(cfg, 42, now),
            now,
            next_pid: 100,
            next_waiter: 1,
            live: BTreeMap::new(),
            replies: BTreeMap::new(),
            waiters: Vec::new(),
            prepares: VecDeque::new(),
            hooks: VecDeque::new(),
            auto_prepare: true,
            spawn_error: None,
            stopping_began: false,
            generation: 0,
            all: Vec::new(),
            recorded: BTreeSet::new(),
            excused: BTreeSet::new(),
            sigkilled: BTreeSet::new(),
            requests: BTreeMap::new(),
            canary_figures: (
                GenerationFigures::new(0, 100, 0, Some(0.01)),
                GenerationFigures::new(0, 100, 0, Some(0.01)),
            ),
            lent: None,
            new_master: None,
            auto_upgrade: true,
        }
    }

    /// Started with every worker of generation 1 ready.
    fn running(cfg: Settings) -> Self {
        let mut sim = Self::new(cfg);
        sim.feed(Event::Start);
        sim.ready_all();
        assert_eq!(sim.core.phase, Phase::Running);
        sim
    }

    /// Feeds `ev` and what answers it; returns every action of this step.
    fn feed(&mut self, ev: Event) -> Vec<Action> {
        self.excuse(&ev);
        let mut step = Vec::new();
        let mut queue = VecDeque::from([ev]);
        loop {
            while let Some(ev) = queue.pop_front() {
                for action in self.core.handle(ev, self.now) {
                    queue.extend(self.check(&action));
                    step.push(action);
                }
            }
            let next = self.auto_prepare.then(|| self.prepares.pop_front());
            match next.flatten() {
                Some(generation) => queue.push_back(Event::Prepared {
                    generation,
                    result: Ok(()),
                }),
                None => break,
            }
        }
        self.all.extend(step.iter().cloned());
        step
    }

    /// The SIGKILLs that come without a kill record: a broken channel, a second stop.
    fn excuse(&mut self, ev: &Event) {
        let stop = matches!(
            ev,
            Event::Signal(SignalEvent::Stop)
                | Event::Control {
                    request: Request::Stop,
                    ..
                }
        );
        match ev {
            Event::WorkerBroken { pid, .. } => drop(self.excused.insert(*pid)),
            _ if stop && self.core.stop != Stop::No => self.excused.extend(self.live.values()),
            _ => {}
        }
    }

    /// Checks one action against the invariants; returns the shell's answer to it.
    fn check(&mut self, action: &Action) -> Option<Event> {
        match action {
            Action::Spawn { slot, .. } => {
                assert!(!self.stopping_began, "spawn after stopping began");
                assert!(*slot < self.slots, "spawn into slot {slot}");
                assert!(
                    !self.live.contains_key(slot),
                    "second process in slot {slot}"
                );
                let lent = self.lent.as_ref().is_some_and(|l| l.contains(slot));
                assert!(
                    !lent && !self.core.held.contains(slot),
                    "spawn into held {slot}"
                );
                if let Some(error) = self.spawn_error.clone() {
                    return Some(Event::SpawnFailed { slot: *slot, error });
                }
                let pid = self.next_pid;
                self.next_pid += 1;
                self.live.insert(*slot, pid);
                return Some(Event::Spawned { slot: *slot, pid });
            }
            Action::Signal { slot, pid, sig } => {
                assert_eq!(
                    self.live.get(slot),
                    Some(pid),
                    "{action:?} to a dead worker"
                );
                if *sig == Sig::Kill {
                    assert!(
                        self.recorded.contains(pid) || self.excused.contains(pid),
                        "SIGKILL of {pid} without a kill record"
                    );
                    self.sigkilled.insert(*pid);
                }
            }
            Action::Drain { slot, pid } => {
                assert_eq!(
                    self.live.get(slot),
                    Some(pid),
                    "{action:?} to a dead worker"
                );
            }
            Action::RecordKill { slot, pid, .. } => {
                assert_eq!(
                    self.live.get(slot),
                    Some(pid),
                    "{action:?} of a dead worker"
                );
                assert!(self.recorded.insert(*pid), "second kill record for {pid}");
            }
            Action::RecordRecycle { slot, pid, .. } => {
                assert_eq!(
                    self.live.get(slot),
                    Some(pid),
                    "{action:?} of a dead worker"
                );
            }
            Action::Reply { waiter, reply } => {
                let got = self.replies.entry(*waiter).or_default();
                got.push(reply.clone());
                assert_eq!(got.len(), 1, "{waiter:?} answered twice: {got:?}");
            }
            Action::SetPhase(Phase::Stopping) => self.stopping_began = true,
            Action::SetGeneration(g) => {
                assert!(*g >= self.generation, "generation went back to {g}");
                self.generation = *g;
            }
            Action::Prepare { generation } => self.prepares.push_back(*generation),
            Action::RunHook { hook, .. } => self.hooks.push_back(*hook),
            Action::SpawnUpgrade { .. } | Action::AbortUpgrade { .. } => {
                return self.check_upgrade(action);
            }
            Action::JudgeCanary { generation, old } => {
                let (mut o, mut n) = self.canary_figures;
                (o.generation, n.generation) = (*old, *generation);
                return Some(Event::CanaryFigures {
                    generation: *generation,
                    old: o,
                    new: n,
                });
            }
            _ => {}
        }
        None
    }

    /// A new master is started in the lent slots (none may be lent already), or, when
    /// aborted, one never started lends nothing any more.
    fn check_upgrade(&mut self, action: &Action) -> Option<Event> {
        match action {
            Action::SpawnUpgrade { lent, workers, .. } => {
                assert!(self.lent.is_none(), "a second new master: {action:?}");
                assert!(
                    lent.iter().all(|s| !self.live.contains_key(s)),
                    "{action:?}"
                );
                let live: Vec<(usize, u32)> = self.live.iter().map(|(s, p)| (*s, *p)).collect();
                assert_eq!(*workers, live, "the workers handed over");
                self.lent = Some(lent.clone());
                if !self.auto_upgrade {
                    return None;
                }
                let pid = self.next_pid;
                self.next_pid += 1;
                self.new_master = Some(pid);
                return Some(Event::UpgradeSpawned { pid });
            }
            Action::AbortUpgrade { .. } if self.new_master.is_none() => self.lent = None,
            _ => {}
        }
        None
    }

    /// The new master of a failed upgrade exits.
    fn upgrade_gone(&mut self) -> Vec<Action> {
        (self.lent, self.new_master) = (None, None);
        self.feed(Event::UpgradeGone)
    }

    fn pid(&self, slot: usize) -> u32 {
        self.live[&slot]
    }

    /// The worker in `slot` says it is ready, then sends its first heartbeat at once (as a
    /// worker does).
    fn ready(&mut self, slot: usize) -> Vec<Action> {
        let pid = self.pid(slot);
        let mut out = self.feed(Event::WorkerReady { slot, pid });
        out.extend(self.beat(slot, 0));
        out
    }

    fn ready_all(&mut self) -> Vec<Action> {
        let slots: Vec<usize> = self.live.keys().copied().collect();
        slots.into_iter().flat_map(|s| self.ready(s)).collect()
    }

    /// The process in `slot` exits with `code` (or is killed by SIGKILL for `None`).
    fn exit(&mut self, slot: usize, code: Option<i32>) -> Vec<Action> {
        let pid = self.live.remove(&slot).expect("a live worker");
        let raw = code.map_or(9, |c| c << 8);
        let status = Some(ExitStatus::from_raw(raw));
        self.feed(Event::WorkerExited { slot, pid, status })
    }

    fn exit_all(&mut self) -> Vec<Action> {
        let slots: Vec<usize> = self.live.keys().copied().collect();
        slots
            .into_iter()
            .flat_map(|s| self.exit(s, Some(0)))
            .collect()
    }

    /// A heartbeat from the worker in `slot` that served `more` requests since its last.
    fn beat(&mut self, slot: usize, more: u64) -> Vec<Action> {
        let pid = self.pid(slot);
        let requests = self.requests.entry(pid).or_default();
        *requests += more;
        let requests = *requests;
        let lag = Duration::ZERO;
        self.feed(Event::Heartbeat {
            slot,
            pid,
            lag,
            requests,
        })
    }

    /// A memory sample of the worker in `slot`.
    fn sample(&mut self, slot: usize, rss: u64) -> Vec<Action> {
        let pid = self.pid(slot);
        self.feed(Event::MemorySample { slot, pid, rss })
    }

    fn advance(&mut self, d: Duration) -> Vec<Action> {
        self.now += d;
        self.feed(Event::Tick)
    }

    fn control(&mut self, request: Request) -> (WaiterId, Vec<Action>) {
        let waiter = WaiterId(self.next_waiter);
        self.next_waiter += 1;
        self.waiters.push(waiter);
        (waiter, self.feed(Event::Control { request, waiter }))
    }

    fn signal(&mut self, ev: SignalEvent) -> Vec<Action> {
        self.feed(Event::Signal(ev))
    }

    /// The oldest pending hook finishes with `result`.
    fn hook_done(&mut self, result: Result<(), String>) -> Vec<Action> {
        let hook = self.hooks.pop_front().expect("a running hook");
        self.feed(Event::HookDone { hook, result })
    }

    /// The oldest pending program copy finishes with `result`.
    fn prepared(&mut self, result: Result<(), String>) -> Vec<Action> {
        let generation = self.prepares.pop_front().expect("a copy in flight");
        self.feed(Event::Prepared { generation, result })
    }

    fn reply(&self, waiter: WaiterId) -> &Reply {
        &self.replies[&waiter][0]
    }

    /// The rollback reason or success of `waiter`'s reload.
    fn reload_reason(&self, waiter: WaiterId) -> String {
        let r = self
            .reply(waiter)
            .reload
            .as_ref()
            .expect("a reload outcome");
        r.reason.clone().unwrap_or_else(|| "success".into())
    }
}

fn spawns(actions: &[Action]) -> Vec<(usize, u64)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Spawn { slot, generation } => Some((*slot, *generation)),
            _ => None,
        })
        .collect()
}

fn signals(actions: &[Action]) -> Vec<(usize, Sig)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Signal { slot, sig, .. } => Some((*slot, *sig)),
            _ => None,
        })
        .collect()
}

fn drains(actions: &[Action]) -> Vec<usize> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Drain { slot, .. } => Some(*slot),
            _ => None,
        })
        .collect()
}

fn logs(actions: &[Action], level: Level) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Log(l) if l.level == level => Some(l.message.clone()),
            _ => None,
        })
        .collect()
}

fn kills(actions: &[Action]) -> Vec<(usize, KillReason, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::RecordKill {
                slot,
                reason,
                detail,
                ..
            } => Some((*slot, *reason, detail.clone())),
            _ => None,
        })
        .collect()
}

fn recycles(actions: &[Action]) -> Vec<(usize, RecycleReason, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::RecordRecycle {
                slot,
                reason,
                detail,
                ..
            } => Some((*slot, *reason, detail.clone())),
            _ => None,
        })
        .collect()
}

fn has(actions: &[Action], want: impl Fn(&Action) -> bool) -> bool {
    actions.iter().any(want)
}
