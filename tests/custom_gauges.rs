//! Custom gauges combine the live workers' values by their aggregation (sum, max, min, latest);
//! a SIGKILLed worker's value drops out (and its respawned worker starts unset), and so do the
//! values of a generation retired by a reload, unless the gauge was registered to count dead
//! workers; a gauge no live worker set has no sample.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::status_server::Scrape;
use support::tools::{self, Lints};
use support::{cluster, http, status_server, workers};
use support::{Cluster, Http, TestDir, START_TIMEOUT};

/// Each worker's value: slot 0, slot 1 (distinct, so every aggregation tells them apart).
const V: [f64; 2] = [10.5, -2.25];
/// Gauges by aggregation, and their value with both workers live.
const AGGS: [(&str, f64); 4] = [
    ("sum", V[0] + V[1]),
    ("max", V[0]),
    ("min", V[1]),
    // Set on slot 0 first, then slot 1: slot 1's value is the latest.
    ("latest", V[1]),
];
/// Slot 0's second value of the "latest" gauge.
const LATEST_AGAIN: f64 = 3.5;
/// The gauge that keeps counting a dead worker's last value (sum).
const DEAD: &str = "pool_dead_depth";
const DEAD_V: [f64; 2] = [4.0, 6.0];
/// Registered, never set.
const UNSET: &str = "pool_unset";
/// Value the respawned worker sets on the sum gauge.
const RESPAWN_V: f64 = 1.0;
/// Longest wait for a combined value.
const VALUE_TIMEOUT: Duration = Duration::from_secs(20);

fn gauge(agg: &str) -> String {
    format!("pool_{agg}_depth")
}

/// The combined values `want` (name → value; `None` = no sample / JSON null), waited for in
/// `/metrics`, then checked in `/server-status.json`.
fn wait_values(status: u16, want: &BTreeMap<String, Option<f64>>) -> Scrape {
    let s = support::poll(VALUE_TIMEOUT, &format!("gauge values {want:?}"), || {
        let s = status_server::scrape(status, None);
        let got: BTreeMap<String, Option<f64>> = want
            .keys()
            .map(|n| (n.clone(), s.expo.value(n, &[])))
            .collect();
        if &got == want {
            Ok(s)
        } else {
            Err(format!("got {got:?}\n{}", s.text))
        }
    });
    for name in want.keys() {
        assert!(s.expo.named(name).count() <= 1, "{name}\n{}", s.text);
        assert_eq!(s.expo.type_of(name), Some("gauge"), "{name}\n{}", s.text);
    }
    let doc = http::get_json(status, "/server-status.json");
    for (name, v) in want {
        assert_eq!(
            status_server::custom_value(&doc, name, &[]),
            Some(*v),
            "{name} in JSON: {}",
            doc["custom"]
        );
    }
    s
}

fn register(c: &mut Http, slot: usize, query: &str) {
    let target = format!("/m/register?kind=gauge&{query}");
    let body = workers::call_ok(c, &target);
    assert_eq!(body.trim(), "registered", "slot {slot}: {target}");
}

fn set(c: &mut Http, name: &str, v: f64) {
    assert_eq!(
        workers::call_ok(c, &format!("/m/set?name={name}&v={v}")).trim(),
        "ok"
    );
}

#[test]
fn gauges_aggregate_live_workers_and_dead_ones_only_when_asked() {
    let dir = TestDir::new("custom-gauges");
    let cluster = dir.start(support::free_port(), 2, &[]);
    let pids = cluster.wait_ready(2);
    let status = status_server::status_port(&cluster);
    let mut conns = workers::conns_by_slot(cluster.port, &[0, 1]);

    for (slot, c) in conns.iter_mut() {
        for (agg, _) in AGGS {
            register(c, *slot, &format!("name={}&agg={agg}", gauge(agg)));
        }
        register(c, *slot, &format!("name={DEAD}&agg=sum&dead=1"));
        register(c, *slot, &format!("name={UNSET}&agg=max"));
    }
    let mut want: BTreeMap<String, Option<f64>> =
        AGGS.iter().map(|(a, _)| (gauge(a), None)).collect();
    want.insert(DEAD.into(), None);
    want.insert(UNSET.into(), None);
    wait_values(status, &want);

    // Slot 0 first, then slot 1, one answered request after the other.
    for slot in [0, 1] {
        let c = conns.get_mut(&slot).expect("connection");
        for (agg, _) in AGGS {
            set(c, &gauge(agg), V[slot]);
        }
        set(c, DEAD, DEAD_V[slot]);
    }
    for (agg, v) in AGGS {
        want.insert(gauge(agg), Some(v));
    }
    want.insert(DEAD.into(), Some(DEAD_V[0] + DEAD_V[1]));
    let s = wait_values(status, &want);
    assert!(
        !s.text.lines().any(|l| l.starts_with(&format!("{UNSET} "))),
        "an unset gauge has no sample\n{}",
        s.text
    );
    let doc = http::get_json(status, "/server-status.json");
    for (agg, _) in AGGS {
        let m = status_server::custom_series(&doc, &gauge(agg), &[]);
        assert_eq!(m[0]["aggregation"], agg, "{}", doc["custom"]);
        assert_eq!(
            status_server::custom_per_worker(&doc, &gauge(agg), &[]),
            BTreeMap::from([(0, V[0]), (1, V[1])]),
            "{}",
            doc["custom"]
        );
    }
    // "latest" follows the most recent set, whichever worker: slot 0, then slot 1 again.
    set(
        conns.get_mut(&0).expect("slot 0"),
        &gauge("latest"),
        LATEST_AGAIN,
    );
    want.insert(gauge("latest"), Some(LATEST_AGAIN));
    wait_values(status, &want);
    set(conns.get_mut(&1).expect("slot 1"), &gauge("latest"), V[1]);
    want.insert(gauge("latest"), Some(V[1]));
    wait_values(status, &want);

    // SIGKILL slot 1: its values leave every aggregation but the count-dead gauge.
    for c in std::mem::take(&mut conns).into_values() {
        c.close();
    }
    support::kill9(pids[1]);
    for (agg, _) in AGGS {
        want.insert(gauge(agg), Some(V[0]));
    }
    // Slot 0's own latest value is the one it set last.
    want.insert(gauge("latest"), Some(LATEST_AGAIN));
    wait_values(status, &want);
    let respawned = cluster::wait_respawn(&cluster, 1, pids[1]);
    // The respawned worker starts unset: the values stay those of slot 0 alone.
    let s = wait_values(status, &want);
    let doc = http::get_json(status, "/server-status.json");
    assert_eq!(
        status_server::custom_per_worker(&doc, &gauge("sum"), &[]),
        BTreeMap::from([(0, V[0])]),
        "{}\n{}",
        doc["custom"],
        s.text
    );
    assert_eq!(
        status_server::custom_per_worker(&doc, DEAD, &[]),
        BTreeMap::from([(0, DEAD_V[0]), (1, DEAD_V[1])]),
        "{}",
        doc["custom"]
    );

    let mut c1 = workers::conns_by_slot(cluster.port, &[1])
        .remove(&1)
        .expect("slot 1 connection");
    assert_eq!(
        workers::call_ok(&mut c1, "/pid").trim(),
        respawned.to_string()
    );
    register(&mut c1, 1, &format!("name={}&agg=sum", gauge("sum")));
    set(&mut c1, &gauge("sum"), RESPAWN_V);
    want.insert(gauge("sum"), Some(V[0] + RESPAWN_V));
    wait_values(status, &want);
    let s = status_server::scrape(status, None);
    tools::assert_promtool(&s.text, Lints::None, "scrape");
    c1.close();

    // Reload: the new generation runs in other slots and sets nothing; the retired slots'
    // values no longer count (no sample at all), except for the count-dead gauge.
    dir.reload_ok();
    Cluster::wait_pids_gone(&[pids[0], respawned], START_TIMEOUT);
    for (agg, _) in AGGS {
        want.insert(gauge(agg), None);
    }
    let s = wait_values(status, &want);
    for (agg, _) in AGGS {
        let name = gauge(agg);
        assert!(
            s.expo.named(&name).next().is_none(),
            "{name} has no sample\n{}",
            s.text
        );
    }
    let doc = http::get_json(status, "/server-status.json");
    assert_eq!(
        status_server::custom_per_worker(&doc, DEAD, &[]),
        BTreeMap::from([(0, DEAD_V[0]), (1, DEAD_V[1])]),
        "{}",
        doc["custom"]
    );
}
