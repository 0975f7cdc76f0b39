//! The new master's core after a takeover ([`Core::resume`]): generation g + 1 in the free
//! slots only, the old master's slots held until its workers exit.

use super::upgrade::*;
use super::*;

/// A new master of 6 slots taking over generation 3 (target 2) from workers in `foreign`.
fn resumed(foreign: &[usize]) -> (Sim, Vec<Action>) {
    let mut sim = Sim::new(settings(6, 2));
    sim.core.resume(3, 2, foreign);
    let out = sim.feed(Event::Start);
    (sim, out)
}

#[test]
fn the_start_spawns_the_next_generation_into_free_slots_only() {
    let (mut sim, out) = resumed(&[0, 1]);
    assert!(has(&out, |a| matches!(a, Action::SetGeneration(4))));
    assert!(has(&out, |a| matches!(a, Action::SetTarget(2))));
    assert_eq!(spawns(&out), [(2, 4), (3, 4)]);
    assert_eq!(sim.core.phase, Phase::Starting);
    sim.ready(2);
    let out = sim.ready(3);
    assert!(has(&out, |a| matches!(a, Action::SetPhase(Phase::Running))));
    assert_eq!(sim.core.generation(), 4);
    assert_eq!(sim.core.free_slots(), [4, 5]);
}

#[test]
fn foreign_slots_in_the_middle_are_skipped() {
    let (_, out) = resumed(&[0, 2, 4]);
    assert_eq!(spawns(&out), [(1, 4), (3, 4)]);
}

#[test]
fn a_foreign_exit_frees_its_slot_for_a_later_scale_up() {
    let (mut sim, _) = resumed(&[0, 1]);
    sim.ready_all();
    // Scale to 5: only 2 free slots (4, 5) for 3 more workers.
    let (w, out) = sim.control(Request::Scale { workers: 5 });
    assert!(spawns(&out).is_empty());
    assert_eq!(
        sim.error_of(w),
        "not enough free slots: 2 free, 3 needed (the scoreboard has 6; start with a larger --slots)"
    );
    let out = sim.feed(Event::ForeignExited { slot: 1 });
    assert!(
        spawns(&out).is_empty(),
        "a freed slot is not filled by itself"
    );
    assert_eq!(sim.core.free_slots(), [1, 4, 5]);
    let (w, out) = sim.control(Request::Scale { workers: 3 });
    assert!(sim.reply(w).ok);
    assert_eq!(spawns(&out), [(1, 4)]);
}

#[test]
fn a_foreign_exit_of_a_slot_not_held_changes_nothing() {
    let (mut sim, _) = resumed(&[0, 1]);
    sim.ready_all();
    for slot in [2, 5, 99] {
        let out = sim.feed(Event::ForeignExited { slot });
        assert!(out.is_empty(), "{out:?}");
    }
    // Twice for the same slot: freed once.
    sim.feed(Event::ForeignExited { slot: 0 });
    assert!(sim.feed(Event::ForeignExited { slot: 0 }).is_empty());
    assert_eq!(sim.core.free_slots(), [0, 4, 5]);
}

#[test]
fn a_foreign_exit_during_the_start_frees_the_slot_too() {
    let (mut sim, _) = resumed(&[0, 1]);
    let out = sim.feed(Event::ForeignExited { slot: 0 });
    assert!(spawns(&out).is_empty());
    sim.ready_all();
    assert_eq!(sim.core.free_slots(), [0, 4, 5]);
}

#[test]
fn foreign_slots_beyond_the_slot_count_are_ignored_and_the_target_is_capped() {
    let mut sim = Sim::new(settings(4, 2));
    sim.core.resume(1, 9, &[1, 4, 7]);
    assert_eq!(sim.core.target(), 4);
    assert_eq!(sim.core.held.iter().copied().collect::<Vec<_>>(), [1]);
    let out = sim.feed(Event::Start);
    assert_eq!(spawns(&out), [(0, 2), (2, 2), (3, 2)]);
}

#[test]
fn a_reload_of_the_new_master_spawns_around_the_foreign_slots() {
    let (mut sim, _) = resumed(&[0, 1]);
    sim.ready_all();
    let (w, out) = sim.control(Request::Reload);
    assert_eq!(spawns(&out), [(4, 5), (5, 5)]);
    sim.ready_all();
    assert_eq!(sim.reload_reason(w), "success");
}

#[test]
fn the_new_master_refuses_an_upgrade_while_old_workers_hold_slots() {
    let (mut sim, _) = resumed(&[0, 1]);
    sim.ready_all();
    let (w, out) = sim.control(upgrade(None));
    assert!(spawn_upgrades(&out).is_empty());
    assert_eq!(
        sim.error_of(w),
        "the other master of the last upgrade still holds 2 slots while it stops; try again in a moment"
    );
    sim.feed(Event::ForeignExited { slot: 0 });
    sim.feed(Event::ForeignExited { slot: 1 });
    let (_, out) = sim.control(upgrade(None));
    let (_, lent, workers, generation, target) = spawn_upgrades(&out).remove(0);
    assert_eq!(lent, [0, 1, 4, 5]);
    assert_eq!(workers, [(2, sim.pid(2)), (3, sim.pid(3))]);
    assert_eq!((generation, target), (4, 2));
}

#[test]
fn a_reload_right_after_the_takeover_waits_for_the_old_workers_to_exit() {
    let mut sim = Sim::new(settings(4, 2));
    sim.core.resume(1, 2, &[0, 1]);
    sim.feed(Event::Start);
    sim.ready_all();
    let (w, out) = sim.control(Request::Reload);
    assert!(spawns(&out).is_empty());
    // One slot is not enough for the two new workers.
    assert!(spawns(&sim.feed(Event::ForeignExited { slot: 1 })).is_empty());
    let out = sim.feed(Event::ForeignExited { slot: 0 });
    assert_eq!(spawns(&out), [(0, 3), (1, 3)]);
    sim.ready_all();
    assert_eq!(sim.reload_reason(w), "success");
}
