//! Rolling reloads (`reload_batch`): batches, the peak of target + K, every rollback and
//! the old workers it respawns, queued reloads, stops.

use super::*;
use crate::control::Outcome;

/// `slots` slots, `workers` workers, K = `batch`, running.
fn rolling(slots: usize, workers: usize, batch: usize) -> Sim {
    let mut cfg = settings(slots, workers);
    cfg.reload_batch = Some(batch);
    Sim::running(cfg)
}

/// Workers alive and not draining.
fn not_draining(sim: &Sim) -> usize {
    sim.core.workers.values().filter(|w| !w.draining).count()
}

/// Ready, not draining workers of generation `g`.
fn serving(sim: &Sim, g: u64) -> usize {
    let ok = |w: &&super::super::Worker| w.ready && !w.draining && w.generation == g;
    sim.core.workers.values().filter(ok).count()
}

fn outcome(sim: &Sim, w: WaiterId) -> Outcome {
    sim.reply(w).reload.as_ref().expect("an outcome").outcome
}

#[test]
fn one_at_a_time_needs_one_spare_slot_and_never_runs_more_than_target_plus_one() {
    let mut sim = rolling(5, 4, 1);
    let (w, out) = sim.control(Request::Reload);
    assert_eq!(spawns(&out), [(4, 2)]);
    // Each ready batch drains one old worker; its exit frees the slot for the next.
    for (new, old) in [(4, 0), (0, 1), (1, 2)] {
        let out = sim.ready(new);
        assert_eq!(drains(&out), [old]);
        assert!(spawns(&out).is_empty(), "the next batch waits for a slot");
        assert!(sim.live.len() <= 5 && not_draining(&sim) <= 5);
        assert_eq!(serving(&sim, 1) + serving(&sim, 2), 4);
        assert!(!sim.replies.contains_key(&w));
        assert_eq!(spawns(&sim.exit(old, Some(0))), [(old, 2)]);
    }
    let commit = sim.ready(2);
    assert!(has(&commit, |a| matches!(a, Action::SetGeneration(2))));
    assert_eq!(drains(&commit), [3]);
    assert_eq!(sim.reload_reason(w), "success");
    assert_eq!(serving(&sim, 2), 4);
}

#[test]
fn the_whole_generation_at_once_would_not_fit_in_the_same_slots() {
    let mut sim = Sim::running(settings(5, 4));
    let (w, _) = sim.control(Request::Reload);
    assert!(sim.reload_reason(w).starts_with("not enough free slots"));
}

#[test]
fn a_batch_waits_for_the_peak_even_with_free_slots() {
    let mut sim = rolling(10, 4, 1);
    let (w, out) = sim.control(Request::Reload);
    assert_eq!(spawns(&out), [(4, 2)]);
    let out = sim.ready(4);
    assert_eq!(drains(&out), [0]);
    assert!(spawns(&out).is_empty(), "5 live: the next batch waits");
    assert!(logs(&out, Level::Info)
        .iter()
        .any(|l| l.contains("1 of 4 new workers ready; 1 old worker drains")));
    assert_eq!(spawns(&sim.exit(0, Some(0))), [(0, 2)]);
    assert!(!sim.replies.contains_key(&w));
}

#[test]
fn batches_of_two() {
    let mut sim = rolling(6, 4, 2);
    let (w, out) = sim.control(Request::Reload);
    assert_eq!(spawns(&out), [(4, 2), (5, 2)]);
    sim.ready(4);
    assert_eq!(drains(&sim.ready(5)), [0, 1]);
    assert!(spawns(&sim.exit(0, Some(0))).is_empty(), "two slots needed");
    assert_eq!(spawns(&sim.exit(1, Some(0))), [(0, 2), (1, 2)]);
    sim.ready(0);
    assert_eq!(drains(&sim.ready(1)), [2, 3]);
    assert_eq!(sim.reload_reason(w), "success");
}

#[test]
fn a_batch_larger_than_what_is_left_takes_only_the_rest() {
    let mut sim = rolling(8, 3, 2);
    let (w, out) = sim.control(Request::Reload);
    assert_eq!(spawns(&out), [(3, 2), (4, 2)]);
    sim.ready(3);
    sim.ready(4);
    // 5 live, 2 of them draining: the last batch, of one, waits until 4 + 1 fit.
    assert!(not_draining(&sim) == 3 && sim.live.len() == 5);
    assert_eq!(spawns(&sim.exit(0, Some(0))), [(0, 2)]);
    let commit = sim.ready(0);
    assert_eq!(drains(&commit), [2]);
    assert_eq!(sim.reload_reason(w), "success");
}

/// Runs batches until slot 1 holds the third new worker, not yet ready.
fn third_batch_started(sim: &mut Sim) {
    for (new, old) in [(4, 0), (0, 1)] {
        sim.ready(new);
        sim.exit(old, Some(0));
    }
    assert_eq!(sim.core.workers[&1].generation, 2);
}

#[test]
fn a_failure_in_the_third_batch_restores_every_old_worker() {
    let mut sim = rolling(5, 4, 1);
    let (w, _) = sim.control(Request::Reload);
    third_batch_started(&mut sim);
    let pid = sim.pid(1);
    let out = sim.exit(1, Some(3));
    assert_eq!(outcome(&sim, w), Outcome::Rollback);
    assert_eq!(
        sim.reload_reason(w),
        format!("new worker in slot 1 (pid {pid}) exited during start-up (exit code 3); 2 old workers respawn")
    );
    // The two ready new workers drain; one old worker respawns into the freed slot now.
    assert_eq!(drains(&out), [0, 4]);
    assert_eq!(spawns(&out), [(1, 1)]);
    assert!(not_draining(&sim) <= 5);
    assert_eq!(sim.core.generation(), 1);
    // The other respawns once a drained new worker frees its slot.
    assert!(spawns(&sim.exit(4, Some(0))).contains(&(4, 1)));
    sim.ready_all();
    sim.exit(0, Some(0));
    assert_eq!(serving(&sim, 1), 4);
    assert_eq!(sim.core.restoring, 0);
}

#[test]
fn the_ready_timeout_of_a_later_batch_rolls_back_and_names_the_batch() {
    let mut sim = rolling(5, 4, 1);
    let (w, _) = sim.control(Request::Reload);
    sim.ready(4);
    sim.exit(0, Some(0));
    let out = sim.advance(READY_TIMEOUT);
    assert_eq!(
        sim.reload_reason(w),
        "only 0 of 1 new workers (batch 2) were ready after 30s; 1 old worker respawns"
    );
    assert_eq!(signals(&out), [(0, Sig::Term)]);
    assert_eq!(drains(&out), [4]);
    sim.exit(0, None);
    sim.ready_all();
    assert_eq!(serving(&sim, 1), 4);
}

#[test]
fn a_spawn_failure_in_a_later_batch_rolls_back_and_the_restore_retries() {
    let mut sim = rolling(5, 4, 1);
    let (w, _) = sim.control(Request::Reload);
    sim.ready(4);
    sim.spawn_error = Some("no such file".into());
    let out = sim.exit(0, Some(0));
    assert_eq!(spawns(&out), [(0, 2), (0, 1)]);
    assert_eq!(
        sim.reload_reason(w),
        "cannot spawn a new worker in slot 0: no such file; 1 old worker respawns"
    );
    // The restore's spawn failed too: retried with backoff like any respawn.
    sim.spawn_error = None;
    let retry = sim.advance(Duration::from_secs(60));
    assert_eq!(spawns(&retry), [(0, 1)]);
    sim.exit(4, Some(0));
    sim.ready_all();
    assert_eq!(serving(&sim, 1), 4);
}

#[test]
fn a_ready_new_worker_of_an_earlier_batch_dying_rolls_back() {
    let mut sim = rolling(5, 4, 1);
    let (w, _) = sim.control(Request::Reload);
    sim.ready(4);
    sim.exit(0, Some(0));
    let out = sim.exit(4, Some(1));
    assert!(sim.reload_reason(w).contains("new worker in slot 4"));
    // The batch still starting gets SIGTERM; two slots are free: both old workers back.
    assert_eq!(signals(&out), [(0, Sig::Term)]);
    assert_eq!(spawns(&out), [(4, 1)]);
    sim.exit(0, None);
    sim.ready_all();
    assert_eq!(serving(&sim, 1), 4);
}

#[test]
fn an_old_worker_dying_during_a_rolling_reload_is_respawned() {
    let mut sim = rolling(5, 4, 1);
    let (w, _) = sim.control(Request::Reload);
    assert_eq!(spawns(&sim.exit(2, Some(1))), [(2, 1)]);
    // Not ready yet: it is the one retired first.
    let out = sim.ready(4);
    assert_eq!(signals(&out), [(2, Sig::Term)]);
    sim.exit(2, None);
    assert!(!sim.replies.contains_key(&w));
}

#[test]
fn a_reload_during_a_rolling_one_is_queued_and_runs_after() {
    let mut sim = rolling(5, 2, 1);
    let (a, _) = sim.control(Request::Reload);
    let (b, out) = sim.control(Request::Reload);
    assert!(spawns(&out).is_empty());
    sim.ready(2);
    sim.exit(0, Some(0));
    let commit = sim.ready(0);
    assert_eq!(sim.reload_reason(a), "success");
    assert_eq!(drains(&commit), [1]);
    // Generation 3 waits for the drained worker: 3 live + 1 would pass 2 + 1.
    assert!(spawns(&commit).is_empty());
    assert_eq!(spawns(&sim.exit(1, Some(0))), [(1, 3)]);
    assert_eq!(drains(&sim.ready(1)), [0]);
    assert_eq!(spawns(&sim.exit(0, Some(0))), [(0, 3)]);
    sim.ready(0);
    assert_eq!(sim.reload_reason(b), "success");
    assert_eq!(sim.core.generation(), 3);
}

#[test]
fn a_reload_during_the_restore_waits_for_it() {
    let mut sim = rolling(5, 4, 1);
    let (w, _) = sim.control(Request::Reload);
    third_batch_started(&mut sim);
    sim.exit(1, Some(3));
    assert_eq!(outcome(&sim, w), Outcome::Rollback);
    assert_eq!(sim.core.restoring, 1);
    let (again, out) = sim.control(Request::Reload);
    assert!(spawns(&out).is_empty());
    assert!(logs(&out, Level::Info)
        .iter()
        .any(|l| l.contains("restores old workers: queued")));
    let (scale, _) = sim.control(Request::Scale { workers: 2 });
    assert!(sim
        .reply(scale)
        .error
        .as_deref()
        .is_some_and(|e| e.contains("rollback")));
    // Slot 4 frees: the last old worker respawns, then the queued reload begins.
    let out = sim.exit(4, Some(0));
    assert_eq!(spawns(&out), [(4, 1)]);
    assert!(has(&out, |a| matches!(
        a,
        Action::Notify(super::super::Notify::Reloading { generation: 3 })
    )));
    assert!(!sim.replies.contains_key(&again));
}

#[test]
fn a_stop_during_a_rolling_reload_answers_and_spawns_nothing() {
    let mut sim = rolling(5, 4, 1);
    let (w, _) = sim.control(Request::Reload);
    sim.ready(4);
    let (q, _) = sim.control(Request::Reload);
    sim.signal(SignalEvent::Stop);
    for waiter in [w, q] {
        assert_eq!(
            sim.reply(waiter).error.as_deref(),
            Some("the cluster is stopping")
        );
    }
    assert!(spawns(&sim.exit_all()).is_empty());
    assert!(sim.core.finished());
}

#[test]
fn a_stop_during_the_restore_spawns_nothing() {
    let mut sim = rolling(5, 4, 1);
    sim.control(Request::Reload);
    third_batch_started(&mut sim);
    sim.exit(1, Some(3));
    assert_eq!(sim.core.restoring, 1);
    sim.signal(SignalEvent::Stop);
    assert_eq!(sim.core.restoring, 0);
    assert!(spawns(&sim.exit_all()).is_empty());
    assert!(sim.core.finished());
}

#[test]
fn the_before_reload_hook_runs_once_not_per_batch() {
    let mut cfg = settings(5, 2);
    cfg.reload_batch = Some(1);
    cfg.before_reload = true;
    let mut sim = Sim::running(cfg);
    let (w, out) = sim.control(Request::Reload);
    assert!(spawns(&out).is_empty());
    assert_eq!(spawns(&sim.hook_done(Ok(()))), [(2, 2)]);
    sim.ready(2);
    let next = sim.exit(0, Some(0));
    assert_eq!(spawns(&next), [(0, 2)]);
    assert!(!has(&next, |a| matches!(a, Action::RunHook { .. })));
    assert!(sim.hooks.is_empty());
    sim.ready(0);
    assert_eq!(sim.reload_reason(w), "success");
}

#[test]
fn the_status_document_shows_the_batch() {
    let mut sim = rolling(5, 4, 1);
    let (w, _) = sim.control(Request::Status);
    let doc = sim.reply(w).status.clone().expect("a status");
    assert_eq!(doc["reload_batch"], 1);
    assert!(doc["reload"].is_null(), "no reload under way");
    // Under way: the first batch serves, then the second.
    sim.control(Request::Reload);
    let progress = |sim: &mut Sim| {
        let (w, _) = sim.control(Request::Status);
        sim.reply(w).status.clone().expect("a status")["reload"].clone()
    };
    let want = |serving: usize| serde_json::json!({"generation": 2, "batch": 1, "serving": serving, "of": 4});
    assert_eq!(progress(&mut sim), want(0));
    sim.ready(4);
    assert_eq!(progress(&mut sim), want(1));
    sim.exit(0, Some(0));
    sim.ready(0);
    assert_eq!(progress(&mut sim), want(2));
    let mut sim = Sim::running(settings(5, 4));
    let (w, _) = sim.control(Request::Status);
    let doc = sim.reply(w).status.clone().expect("a status");
    assert!(doc["reload_batch"].is_null());
}
