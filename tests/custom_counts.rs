//! A custom counter counts every add exactly once, summed over every slot for the slot's
//! lifetime: concurrent adds from many connections, a SIGKILLed worker (its count stays, the
//! respawned worker registers the same series and continues the slot's count), a reload (the
//! old generation's counts stay), and deferred adds (`RequestInfo::add`, applied when the
//! request ends).

mod support;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use flora_cluster::scoreboard::SlotState;
use support::{cluster, http, status_server, workers};
use support::{Cluster, Http, TestDir, START_TIMEOUT};

const NAME: &str = "jobs_done_total";
const REGISTER: &str = "/m/register?kind=counter&name=jobs_done_total&label=queue:mail";
const LABELS: [(&str, &str); 1] = [("queue", "mail")];
/// Adds each client thread sends.
const ADDS_PER_THREAD: u64 = 60;
/// Client threads besides the one per slot (each on its own new connection).
const EXTRA_THREADS: u64 = 3;
/// Deferred adds and their amount.
const DEFERS: u64 = 9;
const DEFER_N: u64 = 11;
/// Longest wait for a count to show (adds are visible when `/m/add` answers: a safety net).
const COUNT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a reached total must stay put (no late or double counting).
const STABLE_WINDOW: Duration = Duration::from_millis(300);

/// What this test expects: the sum per slot.
#[derive(Debug, Default)]
struct Expected {
    per_slot: BTreeMap<usize, u64>,
}

impl Expected {
    fn add(&mut self, slot: usize, n: u64) {
        *self.per_slot.entry(slot).or_default() += n;
    }

    fn total(&self) -> u64 {
        self.per_slot.values().sum()
    }
}

/// Sends `ADDS_PER_THREAD` adds of `n` on `c`; returns (slot, total added).
fn add_many(c: &mut Http, n: u64) -> (usize, u64) {
    let slot = workers::slot_of(c);
    for i in 0..ADDS_PER_THREAD {
        let r = workers::call(c, &format!("/m/add?name={NAME}&n={n}"));
        assert_eq!(r.status, 200, "add {i} on slot {slot}: {}", r.text());
    }
    (slot, ADDS_PER_THREAD * n)
}

/// Adds concurrently: one thread per held connection plus `EXTRA_THREADS` threads on new
/// connections (whichever worker takes them; all have registered). Amounts differ per thread
/// so a lost or doubled add shows.
fn add_phase(port: u16, conns: &mut BTreeMap<usize, Http>, base: u64, want: &mut Expected) {
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for (i, c) in conns.values_mut().enumerate() {
            let results = &results;
            s.spawn(move || {
                let r = add_many(c, base + 2 * i as u64);
                results.lock().unwrap().push(r);
            });
        }
        for t in 0..EXTRA_THREADS {
            let results = &results;
            s.spawn(move || {
                let mut c = Http::connect(port).expect("connect");
                let r = add_many(&mut c, base + 100 + t);
                c.close();
                results.lock().unwrap().push(r);
            });
        }
    });
    for (slot, n) in results.into_inner().unwrap() {
        want.add(slot, n);
    }
}

/// Polls `/metrics` until the counter reads `want`'s total (never above it), checks it holds,
/// and that the JSON status agrees per slot.
fn assert_counted(status: u16, want: &Expected) {
    let total = want.total() as f64;
    support::poll(COUNT_TIMEOUT, &format!("{NAME} == {total}"), || {
        let s = status_server::scrape(status, None);
        let got = s.expo.value(NAME, &LABELS);
        assert!(
            got.is_some_and(|v| v <= total),
            "{got:?} counted, {total} added\n{}",
            s.text
        );
        (got == Some(total))
            .then_some(())
            .ok_or(format!("{got:?}\n{}", s.text))
    });
    support::hold_for(STABLE_WINDOW, || {
        let s = status_server::scrape(status, None);
        assert_eq!(s.expo.value(NAME, &LABELS), Some(total), "{}", s.text);
        assert_eq!(s.expo.named(NAME).count(), 1, "{}", s.text);
    });
    let doc = http::get_json(status, "/server-status.json");
    assert_eq!(
        status_server::custom_value(&doc, NAME, &LABELS),
        Some(Some(total))
    );
    let per_slot: BTreeMap<usize, f64> = want
        .per_slot
        .iter()
        .filter(|(_, n)| **n != 0)
        .map(|(s, n)| (*s, *n as f64))
        .collect();
    assert_eq!(
        status_server::custom_per_worker(&doc, NAME, &LABELS),
        per_slot,
        "{}",
        doc["custom"]
    );
}

fn register_all(conns: &mut BTreeMap<usize, Http>) {
    for (slot, c) in conns.iter_mut() {
        assert_eq!(
            workers::call_ok(c, REGISTER).trim(),
            "registered",
            "slot {slot}"
        );
    }
}

fn ready_slots_of(cluster: &Cluster, generation: u64) -> Vec<usize> {
    cluster
        .snapshot()
        .slots
        .iter()
        .filter(|s| s.generation == generation && s.state == SlotState::Ready)
        .map(|s| s.index)
        .collect()
}

#[test]
fn custom_counter_is_exact_across_kill_respawn_and_reload() {
    let dir = TestDir::new("custom-counts");
    let cluster = dir.start(support::free_port(), 3, &[]);
    let pids = cluster.wait_ready(3);
    let status = status_server::status_port(&cluster);
    let mut want = Expected::default();

    let mut conns = workers::conns_by_slot(cluster.port, &[0, 1, 2]);
    register_all(&mut conns);
    add_phase(cluster.port, &mut conns, 3, &mut want);
    assert_counted(status, &want);

    // Deferred adds count when their request ends, once each.
    for i in 0..DEFERS {
        let slot = (i % 3) as usize;
        let c = conns.get_mut(&slot).expect("connection to the slot");
        let body = workers::call_ok(c, &format!("/m/defer?name={NAME}&n={DEFER_N}"));
        assert_eq!(body.trim(), "ok", "defer {i}");
        want.add(slot, DEFER_N);
    }
    assert_counted(status, &want);

    // SIGKILL slot 1: its count stays in the slot; the respawned worker continues it.
    for c in std::mem::take(&mut conns).into_values() {
        c.close();
    }
    let before = want.total() as f64;
    support::kill9(pids[1]);
    let respawned = cluster::wait_respawn(&cluster, 1, pids[1]);
    let s = status_server::scrape(status, None);
    assert_eq!(
        s.expo.value(NAME, &LABELS),
        Some(before),
        "the count of the killed worker must stay\n{}",
        s.text
    );
    let mut c1 = workers::conns_by_slot(cluster.port, &[1])
        .remove(&1)
        .expect("slot 1 connection");
    assert_eq!(
        workers::call_ok(&mut c1, "/pid").trim(),
        respawned.to_string()
    );
    let r = workers::call(&mut c1, &format!("/m/add?name={NAME}&n=1"));
    assert_eq!(
        r.status,
        404,
        "a respawned worker has not registered yet: {}",
        r.text()
    );
    assert_eq!(workers::call_ok(&mut c1, REGISTER).trim(), "registered");
    let doc = http::get_json(status, "/server-status.json");
    assert_eq!(
        status_server::custom_series(&doc, NAME, &LABELS).len(),
        1,
        "the respawned worker gets the same series: {}",
        doc["custom"]
    );
    for _ in 0..ADDS_PER_THREAD {
        workers::call_ok(&mut c1, &format!("/m/add?name={NAME}&n=13"));
    }
    want.add(1, ADDS_PER_THREAD * 13);
    c1.close();
    assert_counted(status, &want);

    // Reload: generation 2 registers again (same series) and adds; nothing old is lost.
    dir.reload_ok();
    Cluster::wait_pids_gone(&[pids[0], respawned, pids[2]], START_TIMEOUT);
    let new_slots = support::wait_for(START_TIMEOUT, "3 ready workers of generation 2", || {
        let slots = ready_slots_of(&cluster, 2);
        (slots.len() == 3).then_some(slots)
    });
    assert_counted(status, &want);
    let mut conns = workers::conns_by_slot(cluster.port, &new_slots);
    register_all(&mut conns);
    add_phase(cluster.port, &mut conns, 17, &mut want);
    assert_counted(status, &want);
    let doc = http::get_json(status, "/server-status.json");
    assert_eq!(
        status_server::custom_series(&doc, NAME, &LABELS).len(),
        1,
        "{}",
        doc["custom"]
    );
    for c in conns.into_values() {
        c.close();
    }
}
