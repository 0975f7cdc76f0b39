//! Canary reloads: ready → observe → judge → promote (rolling K at a time) or roll back;
//! a crash while observed, a spawn failure, a stop, a reload or another canary asked for
//! meanwhile, requests refused up front.

use super::*;
use crate::canary::Verdict;
use crate::control::Outcome;

const SECS: f64 = 10.0;
const WINDOW: Duration = Duration::from_secs(10);

fn canary(k: usize) -> Request {
    Request::canary(k, SECS)
}

/// 4 workers in 6 slots, a canary of `k` asked for: its workers spawned.
fn asked(k: usize) -> (Sim, WaiterId, Vec<Action>) {
    let mut sim = Sim::running(settings(6, 4));
    let (w, out) = sim.control(canary(k));
    (sim, w, out)
}

/// Serving (ready, not draining) workers of generation `g`.
fn serving(sim: &Sim, g: u64) -> usize {
    let ok = |w: &&super::super::Worker| w.ready && !w.draining && w.generation == g;
    sim.core.workers.values().filter(ok).count()
}

fn baselines(actions: &[Action]) -> Vec<(u64, u64)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::CanaryBaseline {
                generation, old, ..
            } => Some((*generation, *old)),
            _ => None,
        })
        .collect()
}

fn judged(actions: &[Action]) -> bool {
    has(actions, |a| matches!(a, Action::JudgeCanary { .. }))
}

fn report(sim: &Sim, w: WaiterId) -> crate::canary::CanaryReport {
    let r = sim.reply(w).reload.as_ref().expect("an outcome");
    r.canary.clone().expect("a canary report")
}

#[test]
fn ready_canaries_are_observed_next_to_the_whole_old_generation() {
    let (mut sim, w, out) = asked(1);
    assert_eq!(spawns(&out), [(4, 2)]);
    let out = sim.ready(4);
    assert_eq!(baselines(&out), [(2, 1)]);
    assert!(
        drains(&out).is_empty(),
        "no old worker retires before the verdict"
    );
    assert_eq!((serving(&sim, 1), serving(&sim, 2)), (4, 1));
    assert!(logs(&out, Level::Info)
        .iter()
        .any(|l| l.contains("observing them next to generation 1 for 10s")));
    assert_eq!(sim.core.poll_timeout(), Some(sim.now + WINDOW));
    // Before the end of the window: nothing.
    let out = sim.advance(WINDOW - Duration::from_millis(1));
    assert!(!judged(&out) && drains(&out).is_empty());
    assert!(!sim.replies.contains_key(&w));
    let status = sim.core.status();
    assert_eq!(status["reload"]["canary"]["workers"], 1);
    assert_eq!(status["reload"]["canary"]["observing"], true);
}

#[test]
fn a_good_canary_is_promoted_and_rolls_on_k_at_a_time() {
    let (mut sim, w, _) = asked(1);
    sim.ready(4);
    let out = sim.advance(WINDOW);
    assert!(judged(&out));
    assert!(logs(&out, Level::Info)
        .iter()
        .any(|l| l.starts_with("canary promoted: within the limits | old gen 1: 100 requests")));
    // The canary counts as the first batch: one old worker drains, the next batch waits.
    assert_eq!(drains(&out), [0]);
    assert!(spawns(&out).is_empty());
    for (new, old) in [(0, 1), (1, 2), (2, 3)] {
        assert_eq!(spawns(&sim.exit(new, Some(0))), [(new, 2)]);
        let out = sim.ready(new);
        assert!(baselines(&out).is_empty(), "observed once");
        assert_eq!(drains(&out), [old]);
    }
    assert_eq!(sim.reload_reason(w), "success");
    assert_eq!(serving(&sim, 2), 4);
    let r = report(&sim, w);
    assert_eq!(r.verdict, Some(Verdict::Promote));
    assert_eq!(r.new.unwrap().generation, 2);
    assert_eq!(r.old.unwrap().generation, 1);
    assert!(has(&sim.all, |a| matches!(
        a,
        Action::RecordReload(o) if o.canary.is_some() && o.outcome == Outcome::Success
    )));
}

#[test]
fn a_canary_as_large_as_the_target_commits_at_promotion() {
    let mut sim = Sim::running(settings(8, 4));
    let (w, out) = sim.control(canary(4));
    assert_eq!(spawns(&out).len(), 4);
    sim.ready_all();
    assert_eq!(serving(&sim, 1), 4, "observed next to all 4 old workers");
    let out = sim.advance(WINDOW);
    assert!(has(&out, |a| matches!(a, Action::SetGeneration(2))));
    assert_eq!(drains(&out), [0, 1, 2, 3]);
    assert_eq!(sim.reload_reason(w), "success");
}

#[test]
fn a_bad_canary_is_rolled_back_with_its_figures_and_the_old_generation_untouched() {
    let (mut sim, w, _) = asked(2);
    sim.canary_figures.1 = GenerationFigures::new(0, 100, 30, Some(0.01));
    sim.ready(4);
    sim.ready(5);
    let old_pids: Vec<u32> = (0..4).map(|s| sim.pid(s)).collect();
    let out = sim.advance(WINDOW);
    assert_eq!(drains(&out), [4, 5], "only the canaries drain");
    assert!(spawns(&out).is_empty());
    assert!(logs(&out, Level::Warn)
        .iter()
        .any(|l| l.starts_with("canary rolled back: 5xx ratio 0.3000 over 0.0100")));
    let reason = sim.reload_reason(w);
    assert!(reason.starts_with("canary: 5xx ratio 0.3000"), "{reason}");
    let r = report(&sim, w);
    assert_eq!(r.verdict, Some(Verdict::Rollback));
    let new = r.new.unwrap();
    assert_eq!((new.generation, new.requests, new.errors_5xx), (2, 100, 30));
    assert_eq!(r.limits.max_error_ratio, 0.01);
    assert_eq!(sim.core.generation(), 1);
    assert_eq!((0..4).map(|s| sim.pid(s)).collect::<Vec<_>>(), old_pids);
    assert_eq!(serving(&sim, 1), 4);
    assert_eq!(sim.core.restoring, 0, "no old worker was retired");
    let status = sim.core.status();
    assert_eq!(status["last_canary"]["verdict"], "rollback");
    assert_eq!(status["last_canary"]["new"]["errors_5xx"], 30);
    assert_eq!(status["canary_verdicts"]["rollback"], 1);
    assert_eq!(status["canary_verdicts"]["promote"], 0);
}

#[test]
fn too_few_requests_rolls_back() {
    let (mut sim, w, _) = asked(1);
    sim.canary_figures.1 = GenerationFigures::new(0, 3, 0, Some(0.01));
    sim.ready(4);
    sim.advance(WINDOW);
    assert!(sim
        .reload_reason(w)
        .starts_with("canary: too few requests to judge: 100 old, 3 canary"));
}

#[test]
fn a_canary_crash_while_observed_rolls_back_at_once() {
    let (mut sim, w, _) = asked(2);
    sim.ready(4);
    sim.ready(5);
    let out = sim.exit(5, Some(1));
    assert!(!judged(&out));
    assert_eq!(drains(&out), [4]);
    let reason = sim.reload_reason(w);
    assert!(
        reason.starts_with("canary: crash: canary worker in slot 5"),
        "{reason}"
    );
    let r = report(&sim, w);
    assert_eq!(
        (r.verdict, r.old, r.new),
        (Some(Verdict::Rollback), None, None)
    );
    assert!(r.reason.starts_with("crash: canary worker"), "{}", r.reason);
    assert_eq!(serving(&sim, 1), 4);
    assert_eq!(sim.core.poll_timeout(), Some(sim.now + SHUTDOWN_TIMEOUT));
}

#[test]
fn old_workers_crashing_while_observed_are_counted_and_respawned() {
    let (mut sim, w, _) = asked(1);
    sim.ready(4);
    let out = sim.exit(0, Some(1));
    assert_eq!(spawns(&out), [(0, 1)], "respawned at once (first exit)");
    sim.ready(0);
    let out = sim.advance(WINDOW);
    // Judged after the window (the old generation's crash is no fault of the canary's).
    let line = logs(&out, Level::Info)
        .into_iter()
        .find(|l| l.starts_with("canary promoted"))
        .expect("promoted");
    assert!(
        line.contains("old gen 1: 100 requests, 0 5xx (0.00%), p99 10.0 ms, 1 crashes"),
        "{line}"
    );
    assert!(!sim.replies.contains_key(&w), "rolling on");
}

#[test]
fn a_canary_never_ready_rolls_back_at_the_ready_timeout_without_observing() {
    let (mut sim, w, _) = asked(1);
    let out = sim.advance(READY_TIMEOUT);
    assert!(baselines(&out).is_empty() && !judged(&out));
    assert!(sim.reload_reason(w).starts_with("only 0 of 1 new workers"));
    let r = report(&sim, w);
    assert_eq!(r.verdict, Some(Verdict::Rollback));
    assert!(r.reason.starts_with("only 0 of 1"));
}

#[test]
fn a_spawn_failure_rolls_back() {
    let mut sim = Sim::running(settings(6, 4));
    sim.spawn_error = Some("no such file".into());
    let (w, _) = sim.control(canary(1));
    assert!(sim
        .reload_reason(w)
        .starts_with("cannot spawn a new worker in slot 4"));
    assert_eq!(serving(&sim, 1), 4);
}

#[test]
fn a_stop_while_observed_answers_the_waiter() {
    let (mut sim, w, _) = asked(1);
    sim.ready(4);
    let (_, out) = sim.control(Request::Stop);
    assert!(!judged(&out));
    assert_eq!(
        sim.reply(w).error.as_deref(),
        Some("the cluster is stopping")
    );
    assert_eq!(drains(&out).len(), 5);
    sim.exit_all();
    assert!(sim.core.finished());
}

#[test]
fn a_reload_asked_for_while_observed_is_queued_behind_it() {
    let (mut sim, w, _) = asked(1);
    sim.ready(4);
    let (queued, out) = sim.control(Request::Reload);
    assert!(spawns(&out).is_empty());
    sim.canary_figures.1 = GenerationFigures::new(0, 100, 50, None);
    let out = sim.advance(WINDOW);
    assert!(sim.reload_reason(w).starts_with("canary: 5xx ratio"));
    // The queued plain reload begins (generation 3, all at once: needs 4 free slots).
    assert!(logs(&out, Level::Info)
        .iter()
        .any(|l| l == "reload: starting generation 3"));
    assert!(!sim.replies.contains_key(&queued) || sim.reply(queued).reload.is_some());
}

#[test]
fn a_canary_during_a_reload_or_another_canary_is_refused() {
    let (mut sim, _, _) = asked(1);
    let (w, _) = sim.control(canary(1));
    let e = sim.reply(w).error.clone().unwrap();
    assert!(e.starts_with("a reload or start is in progress"), "{e}");
}

#[test]
fn bad_canary_requests_are_refused_with_clear_errors() {
    let mut sim = Sim::running(settings(5, 4));
    let mut refused = |req: Request| {
        let (w, out) = sim.control(req);
        assert!(spawns(&out).is_empty());
        sim.reply(w).error.clone().expect("an error")
    };
    assert!(refused(canary(0)).contains("at least 1"));
    assert!(refused(canary(5)).contains("at most the worker count 4"));
    assert!(refused(canary(2)).starts_with("not enough free slots for 2 canary workers: 1 free"));
    assert!(refused(Request::canary(1, f64::NAN)).contains("canary seconds NaN"));
    let bad_ratio = Request::Canary {
        workers: 1,
        secs: 1.0,
        max_error_ratio: Some(2.0),
        max_p99_ratio: None,
        min_requests: None,
    };
    assert!(refused(bad_ratio).contains("[0, 1]"));
    assert!(sim.core.reload.is_none());
}

#[test]
fn figures_for_another_generation_or_out_of_turn_are_ignored() {
    let (mut sim, w, _) = asked(1);
    sim.ready(4);
    let figs = GenerationFigures::new(2, 100, 100, None);
    let ev = Event::CanaryFigures {
        generation: 2,
        old: figs,
        new: figs,
    };
    let out = sim.feed(ev);
    assert!(drains(&out).is_empty(), "not judging yet");
    assert!(!sim.replies.contains_key(&w));
}
