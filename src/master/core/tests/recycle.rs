//! Graceful recycles: the replacement is ready before the old worker drains; failures,
//! races with exits, reloads, scaling and stops; the per-worker jitter.

use super::*;

const MIB: u64 = 1 << 20;
const LIMIT: u64 = 100 * MIB;
const OVER: u64 = 120 * MIB;

fn memory(slots: usize, workers: usize) -> Settings {
    let mut cfg = settings(slots, workers);
    cfg.guards.max_memory = Some(LIMIT);
    cfg
}

/// Three samples over the limit for the worker in `slot`; the actions of the last.
fn over(sim: &mut Sim, slot: usize) -> Vec<Action> {
    sim.sample(slot, OVER);
    sim.sample(slot, OVER);
    sim.sample(slot, OVER)
}

/// Ready, not draining workers of the serving generation.
fn serving(sim: &Sim) -> usize {
    let g = sim.core.generation();
    let ok = |w: &&super::super::Worker| w.ready && !w.draining && w.generation == g;
    sim.core.workers.values().filter(ok).count()
}

#[test]
fn a_spike_shorter_than_memory_samples_does_not_recycle() {
    let mut sim = Sim::running(memory(4, 2));
    for rss in [OVER, OVER, LIMIT, OVER, OVER, 50 * MIB] {
        assert!(recycles(&sim.sample(0, rss)).is_empty());
    }
    // Exactly the limit is not over it.
    for _ in 0..5 {
        assert!(recycles(&sim.sample(1, LIMIT)).is_empty());
    }
    let out = over(&mut sim, 0);
    assert_eq!(
        recycles(&out),
        [(
            0,
            RecycleReason::Memory,
            "rss 120.0 MiB over 100.0 MiB for 3 samples".into()
        )]
    );
    assert_eq!(spawns(&out), [(2, 1)]);
}

#[test]
fn the_replacement_is_ready_before_the_old_worker_drains() {
    let mut sim = Sim::running(memory(4, 2));
    let out = over(&mut sim, 0);
    let record = out
        .iter()
        .position(|a| matches!(a, Action::RecordRecycle { .. }));
    let spawn = out.iter().position(|a| matches!(a, Action::Spawn { .. }));
    assert!(record < spawn, "the record comes first");
    assert!(drains(&out).is_empty(), "the old one serves on");
    assert_eq!(serving(&sim), 2);
    let doc = sim.core.status();
    assert_eq!(
        doc["recycles"],
        serde_json::json!([{"slot": 0, "replacement": 2, "reason": "memory"}])
    );
    let ready = sim.ready(2);
    assert_eq!(drains(&ready), [0]);
    assert_eq!(serving(&sim), 2);
    assert_eq!(sim.core.status()["recycles"], serde_json::json!([]));
    assert!(logs(&ready, Level::Info)
        .iter()
        .any(|l| l.contains("replacement in slot 2 is ready; draining")));
    // Its exit frees the slot: no respawn.
    assert!(spawns(&sim.exit(0, Some(0))).is_empty());
    assert!(sim.core.recycles.is_empty());
    assert_eq!(sim.core.free_slots(), [0, 3]);
    // The replacement starts with a clean count.
    assert!(recycles(&sim.sample(2, OVER)).is_empty());
}

#[test]
fn max_requests_counts_the_latest_heartbeat() {
    let mut cfg = settings(4, 2);
    cfg.guards.max_requests = Some(100);
    let mut sim = Sim::running(cfg);
    assert!(recycles(&sim.beat(0, 99)).is_empty());
    let out = sim.beat(0, 1);
    assert_eq!(
        recycles(&out),
        [(
            0,
            RecycleReason::MaxRequests,
            "served 100 requests (limit 100)".into()
        )]
    );
}

#[test]
fn age_recycles_at_the_deadline_which_poll_timeout_names() {
    let mut cfg = settings(4, 1);
    cfg.guards.max_age = Some(Duration::from_secs(60));
    let mut sim = Sim::running(cfg);
    let t0 = sim.now;
    assert_eq!(sim.core.poll_timeout(), Some(t0 + Duration::from_secs(60)));
    assert!(recycles(&sim.advance(Duration::from_millis(59_999))).is_empty());
    let out = sim.advance(Duration::from_millis(1));
    assert_eq!(
        recycles(&out),
        [(0, RecycleReason::Age, "lived 60.0s (limit 60.0s)".into())]
    );
    // Now the replacement's ready deadline is the next timer.
    assert_eq!(sim.core.poll_timeout(), Some(sim.now + READY_TIMEOUT));
}

#[test]
fn jitter_stays_within_bounds_varies_between_workers_and_replays_from_the_seed() {
    let mut cfg = settings(16, 16);
    cfg.guards.max_requests = Some(1000);
    cfg.guards.max_requests_jitter = 100;
    cfg.guards.max_age = Some(Duration::from_secs(3600));
    cfg.guards.max_age_jitter = Duration::from_secs(600);
    let limits = |sim: &Sim| -> Vec<(u64, Duration)> {
        sim.core
            .workers
            .values()
            .map(|w| {
                let age = w.watch.retire_at.expect("an age limit") - w.spawned_at;
                (w.watch.requests_limit.expect("a request limit"), age)
            })
            .collect()
    };
    let sim = Sim::running(cfg.clone());
    let got = limits(&sim);
    for (requests, age) in &got {
        assert!((1000..=1100).contains(requests), "{requests}");
        let (lo, hi) = (Duration::from_secs(3600), Duration::from_secs(4200));
        assert!(*age >= lo && *age <= hi, "{age:?}");
    }
    let distinct = |v: Vec<u64>| v.iter().collect::<BTreeSet<_>>().len();
    assert!(distinct(got.iter().map(|l| l.0).collect()) > 8);
    assert!(distinct(got.iter().map(|l| l.1.as_nanos() as u64).collect()) > 8);
    assert_eq!(
        limits(&Sim::running(cfg)),
        got,
        "the same seed draws the same"
    );
}

#[test]
fn without_jitter_every_worker_gets_the_limit() {
    let mut cfg = settings(4, 3);
    cfg.guards.max_requests = Some(7);
    let sim = Sim::running(cfg);
    assert!(sim
        .core
        .workers
        .values()
        .all(|w| w.watch.requests_limit == Some(7)));
}

#[test]
fn a_failed_spawn_keeps_the_old_worker_and_retries_after_the_ready_timeout() {
    let mut sim = Sim::running(memory(4, 2));
    sim.spawn_error = Some("fork: no memory".into());
    let out = over(&mut sim, 0);
    assert_eq!(recycles(&out).len(), 1);
    let err = logs(&out, Level::Error);
    assert!(
        err[0].starts_with("recycle (memory) failed: cannot spawn its replacement: fork: no memory; the worker keeps serving"),
        "{err:?}"
    );
    assert!(drains(&out).is_empty() && sim.core.recycles.is_empty());
    assert_eq!(sim.core.free_slots(), [2, 3]);
    sim.spawn_error = None;
    // No retry before the backoff, however many samples.
    sim.now += READY_TIMEOUT - Duration::from_millis(1);
    assert!(recycles(&sim.sample(0, OVER)).is_empty());
    assert_eq!(
        sim.core.poll_timeout(),
        Some(sim.now + Duration::from_millis(1))
    );
    let retry = sim.advance(Duration::from_millis(1));
    // The same recycle again: spawned, but not counted a second time.
    assert!(recycles(&retry).is_empty());
    assert_eq!(spawns(&retry), [(2, 1)]);
}

#[test]
fn a_replacement_that_exits_before_it_is_ready_fails_the_recycle() {
    let mut sim = Sim::running(memory(4, 2));
    over(&mut sim, 0);
    let out = sim.exit(2, Some(3));
    assert!(
        spawns(&out).is_empty(),
        "the replacement's slot is not respawned"
    );
    assert!(logs(&out, Level::Error)[0]
        .contains("its replacement in slot 2 exited before it was ready (exit code 3)"));
    assert!(sim.core.recycles.is_empty());
    assert_eq!(sim.core.free_slots(), [2, 3]);
    assert_eq!(serving(&sim), 2);
    assert!(sim.live.contains_key(&0));
}

#[test]
fn a_replacement_not_ready_in_time_is_stopped_and_the_old_one_serves_on() {
    let mut sim = Sim::running(memory(4, 2));
    over(&mut sim, 0);
    let late = sim.advance(READY_TIMEOUT);
    assert_eq!(signals(&late), [(2, Sig::Term)]);
    assert!(logs(&late, Level::Error)[0].contains("was not ready within 30s"));
    assert!(drains(&late).is_empty());
    // It ignores SIGTERM: killed after the shutdown timeout, with its record.
    let kill = sim.advance(SHUTDOWN_TIMEOUT);
    assert_eq!(signals(&kill), [(2, Sig::Kill)]);
    assert_eq!(kills(&kill)[0].1, KillReason::ShutdownTimeout);
    assert!(spawns(&sim.exit(2, None)).is_empty());
    assert_eq!(serving(&sim), 2);
}

#[test]
fn when_the_old_worker_exits_during_its_recycle_the_replacement_takes_its_place() {
    let mut sim = Sim::running(memory(4, 2));
    over(&mut sim, 0);
    let out = sim.exit(0, Some(1));
    assert!(spawns(&out).is_empty(), "the old slot is not respawned");
    assert!(logs(&out, Level::Warn)[0].contains("its replacement in slot 2 takes its place"));
    assert!(sim.core.recycles.is_empty());
    assert!(drains(&sim.ready(2)).is_empty());
    assert_eq!(serving(&sim), 2);
    // It is a regular worker now: a crash respawns its slot.
    assert_eq!(spawns(&sim.exit(2, Some(1))), [(2, 1)]);
}

#[test]
fn a_reload_during_a_recycle_is_queued_until_it_ends() {
    let mut sim = Sim::running(memory(6, 2));
    over(&mut sim, 0);
    let (w, out) = sim.control(Request::Reload);
    assert!(spawns(&out).is_empty() && !sim.replies.contains_key(&w));
    assert!(logs(&out, Level::Info)[0].contains("during a worker recycle: queued"));
    let ready = sim.ready(2);
    assert_eq!(drains(&ready), [0]);
    assert_eq!(spawns(&ready), [(3, 2), (4, 2)], "the reload begins");
    sim.ready(3);
    let commit = sim.ready(4);
    assert_eq!(drains(&commit), [1, 2]);
    assert_eq!(sim.reload_reason(w), "success");
}

#[test]
fn a_failed_recycle_also_begins_the_queued_reload() {
    let mut sim = Sim::running(memory(6, 2));
    over(&mut sim, 0);
    let (w, _) = sim.control(Request::Reload);
    let out = sim.exit(2, Some(1));
    // The failed replacement's slot is free again at once.
    assert_eq!(spawns(&out), [(2, 2), (3, 2)]);
    sim.ready(2);
    sim.ready(3);
    assert_eq!(sim.reload_reason(w), "success");
}

#[test]
fn no_recycle_begins_during_the_start_or_a_reload() {
    let mut sim = Sim::new(memory(6, 2));
    sim.feed(Event::Start);
    sim.ready(0);
    assert!(recycles(&over(&mut sim, 0)).is_empty(), "during the start");
    // The start is over: the recycle that waited begins.
    assert_eq!(recycles(&sim.ready(1)).len(), 1);
    sim.ready(2);
    sim.exit(0, Some(0));
    sim.control(Request::Reload);
    assert!(recycles(&over(&mut sim, 1)).is_empty(), "during a reload");
    assert!(recycles(&over(&mut sim, 2)).is_empty(), "during a reload");
}

#[test]
fn scale_during_a_recycle_is_refused() {
    let mut sim = Sim::running(memory(6, 2));
    over(&mut sim, 0);
    let (w, out) = sim.control(Request::Scale { workers: 3 });
    assert!(spawns(&out).is_empty());
    assert_eq!(
        sim.reply(w).error.as_deref(),
        Some("a worker recycle is in progress; scale again when it is done")
    );
    sim.ready(2);
    let (w, _) = sim.control(Request::Scale { workers: 3 });
    assert!(sim.reply(w).ok);
}

#[test]
fn a_stop_during_a_recycle_drains_the_replacement_with_everything_else() {
    let mut sim = Sim::running(memory(4, 2));
    over(&mut sim, 0);
    let out = sim.signal(SignalEvent::Stop);
    assert_eq!(drains(&out), [0, 1, 2]);
    assert!(sim.core.recycles.is_empty());
    // Nothing more happens for the recycle: no drain of the old one, no spawn.
    let more = sim.ready(2);
    assert!(drains(&more).is_empty() && spawns(&more).is_empty());
    sim.exit_all();
    assert!(sim.core.finished());
}

#[test]
fn at_most_max_recycling_recycles_run_at_once() {
    for (max, first) in [(1, 1), (2, 2)] {
        let mut cfg = memory(8, 3);
        cfg.guards.max_recycling = max;
        let mut sim = Sim::running(cfg);
        for _ in 0..3 {
            for slot in 0..3 {
                sim.sample(slot, OVER);
            }
        }
        assert_eq!(recycles(&sim.all).len(), first, "max_recycling {max}");
        assert_eq!(sim.core.recycles.len(), first);
        // The next begins as soon as one ends.
        let ready = sim.ready(3);
        assert_eq!(recycles(&ready).len(), 1, "max_recycling {max}");
        assert!(sim.core.recycles.len() <= max);
    }
}

#[test]
fn without_a_free_slot_a_recycle_waits_warning_once() {
    let mut cfg = memory(3, 2);
    cfg.guards.max_recycling = 2;
    let mut sim = Sim::running(cfg);
    over(&mut sim, 0);
    let out = over(&mut sim, 1);
    let warn = logs(&out, Level::Warn);
    assert_eq!(warn.len(), 1);
    assert!(warn[0].contains("waits: no free slot for its replacement"));
    assert!(logs(&over(&mut sim, 1), Level::Warn).is_empty(), "once");
    // The first recycle's old worker drains in slot 0, then frees it.
    assert!(recycles(&sim.ready(2)).is_empty());
    let freed = sim.exit(0, Some(0));
    assert_eq!(recycles(&freed).len(), 1);
    assert_eq!(spawns(&freed), [(0, 1)]);
}

#[test]
fn a_killed_worker_is_not_recycled() {
    let mut cfg = memory(4, 2);
    cfg.guards.heartbeat_timeout = Some(Duration::from_secs(2));
    let mut sim = Sim::running(cfg);
    sim.now += Duration::from_secs(2);
    sim.beat(1, 0);
    assert_eq!(kills(&sim.all).len(), 1);
    assert!(recycles(&over(&mut sim, 0)).is_empty());
}

#[test]
fn no_recycle_begins_while_a_heartbeat_killed_worker_is_not_replaced_yet() {
    let mut cfg = memory(5, 2);
    cfg.guards.heartbeat_timeout = Some(Duration::from_secs(2));
    let mut sim = Sim::running(cfg);
    for _ in 0..12 {
        sim.now += Duration::from_secs(1);
        sim.beat(0, 1);
        sim.beat(1, 1);
    }
    // Worker 0 goes silent and is killed; worker 1 is then over its memory limit.
    sim.now += Duration::from_secs(2);
    sim.beat(1, 1);
    sim.advance(Duration::ZERO);
    assert!(sim.core.workers[&0].watch.killed.is_some());
    assert!(recycles(&over(&mut sim, 1)).is_empty(), "one worker short");
    // The killed one exits: its slot respawns first; still none while that one starts.
    let out = sim.exit(0, None);
    assert_eq!(spawns(&out), [(0, 1)]);
    assert!(recycles(&over(&mut sim, 1)).is_empty());
    // Back at full strength: the recycle due begins at once.
    let out = sim.ready(0);
    assert_eq!(recycles(&out).len(), 1);
    assert_eq!(recycles(&out)[0].0, 1);
    assert_eq!(spawns(&out).len(), 1);
}
