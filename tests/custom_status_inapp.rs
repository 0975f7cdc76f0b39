//! `Worker::status()` (the demo's `/status`) reads the same shared memory the master reads:
//! with no traffic in between it equals the master's `/server-status.json` but for the
//! `/status` request itself, which is in flight while the worker reads and finished when the
//! master reads. Standalone (no master) it shows the worker's private one-slot scoreboard,
//! custom metrics included.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::tools::ChildGuard;
use support::{http, status_server, workers};
use support::{Http, TestDir, DEMO_BIN};

/// Longest wait for the finished `/status` request to show in the master's totals, or for
/// the standalone worker to answer.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the master's totals must stay put afterwards (nothing else is counted).
const STABLE_WINDOW: Duration = Duration::from_millis(300);

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("/status is not JSON ({e}): {body}"))
}

fn total(doc: &Value, key: &str) -> u64 {
    doc["totals"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("totals.{key} missing: {}", doc["totals"]))
}

/// Per-slot `requests_total` of the slots in use: `slots` (snapshot) or `workers` (master).
fn per_slot_requests(doc: &Value, key: &str) -> Vec<(u64, u64)> {
    doc[key]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["state"] != "empty")
        .map(|s| {
            (
                s["index"].as_u64().expect("index"),
                s["requests_total"].as_u64().expect("requests_total"),
            )
        })
        .collect()
}

#[test]
fn in_app_status_equals_the_masters_view() {
    let dir = TestDir::new("custom-inapp");
    let cluster = dir.start(support::free_port(), 2, &[]);
    cluster.wait_ready(2);
    let status = status_server::status_port(&cluster);
    let mut conns = workers::conns_by_slot(cluster.port, &[0, 1]);
    for (slot, c) in conns.iter_mut() {
        for (register, update) in [
            (
                "kind=counter&name=orders_total&label=shop:a",
                "add?name=orders_total&n=3",
            ),
            (
                "kind=gauge&name=queue_depth&agg=max",
                "set?name=queue_depth&v=2.5",
            ),
            (
                "kind=histogram&name=job_seconds&buckets=0.1,1",
                "observe?name=job_seconds&v=0.5",
            ),
        ] {
            let r = workers::call_ok(c, &format!("/m/register?{register}"));
            assert_eq!(r.trim(), "registered", "slot {slot}: {register}");
            workers::call_ok(c, &format!("/m/{update}"));
        }
    }

    // Nothing else talks to the workers from here on.
    let c0 = conns.get_mut(&0).expect("slot 0");
    let inapp = json(&workers::call_ok(c0, "/status"));
    let n = total(&inapp, "requests_total");
    assert_eq!(
        total(&inapp, "requests_active"),
        1,
        "the /status request itself is in flight: {}",
        inapp["totals"]
    );
    let first = http::get_json(status, "/server-status.json");
    let seen = total(&first, "requests_total");
    assert!(
        seen == n || seen == n + 1,
        "the master counts {seen} requests, the worker {n} (+1 for /status at most)"
    );
    let master = support::poll(SETTLE_TIMEOUT, "the /status request counted", || {
        let doc = http::get_json(status, "/server-status.json");
        let seen = total(&doc, "requests_total");
        assert!(
            seen <= n + 1,
            "{seen} requests counted, the worker saw {n} + /status"
        );
        (seen == n + 1).then_some(doc).ok_or(format!("{seen}"))
    });
    support::hold_for(STABLE_WINDOW, || {
        let doc = http::get_json(status, "/server-status.json");
        assert_eq!(total(&doc, "requests_total"), n + 1);
        assert_eq!(total(&doc, "requests_active"), 0);
    });

    // Slot 0 answered /status; slot 1 is unchanged.
    let mut want = per_slot_requests(&inapp, "slots");
    for (slot, n) in &mut want {
        if *slot == 0 {
            *n += 1;
        }
    }
    assert_eq!(per_slot_requests(&master, "workers"), want);
    assert_eq!(
        inapp["custom"], master["custom"],
        "custom metrics: in-app vs master"
    );
    assert_eq!(
        status_server::custom_value(&inapp, "orders_total", &[("shop", "a")]),
        Some(Some(6.0))
    );
    assert_eq!(
        status_server::custom_value(&inapp, "queue_depth", &[]),
        Some(Some(2.5))
    );
    assert_eq!(
        status_server::custom_value(&inapp, "job_seconds", &[]),
        Some(Some(2.0))
    );
    let c1 = conns.get_mut(&1).expect("slot 1");
    let other = json(&workers::call_ok(c1, "/status"));
    assert_eq!(other["custom"], master["custom"], "slot 1's in-app view");
    for c in conns.into_values() {
        c.close();
    }
}

#[test]
fn standalone_worker_shows_its_own_one_slot_status() {
    let dir = TestDir::new("custom-standalone");
    let port = support::free_port();
    let mut cmd = Command::new(DEMO_BIN);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("FLORA_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("HOST", "127.0.0.1").env("PORT", port.to_string());
    let mut demo = ChildGuard::spawn("standalone flora-demo", &mut cmd, dir.scratch("demo.log"));
    let mut c = support::poll(SETTLE_TIMEOUT, "the standalone demo to answer", || {
        demo.assert_running();
        Http::connect(port).map_err(|e| e.to_string())
    });
    assert_eq!(
        workers::call_ok(&mut c, "/pid").trim(),
        demo.pid().to_string()
    );
    assert_eq!(workers::call_ok(&mut c, "/slot").trim(), "0");
    for _ in 0..2 {
        let r = workers::call_ok(&mut c, "/m/register?kind=counter&name=solo_jobs_total");
        assert_eq!(r.trim(), "registered");
    }
    let r = workers::call(&mut c, "/m/register?kind=counter&name=flora_solo_total");
    assert_eq!(r.status, 422, "{}", r.text());
    workers::call_ok(&mut c, "/m/add?name=solo_jobs_total&n=5");
    workers::call_ok(&mut c, "/m/add?name=solo_jobs_total&n=3");

    let doc = json(&workers::call_ok(&mut c, "/status"));
    assert_eq!(doc["slots"].as_array().map(Vec::len), Some(1), "{doc}");
    assert_eq!(doc["custom"].as_array().map(Vec::len), Some(1), "{doc}");
    assert_eq!(
        status_server::custom_value(&doc, "solo_jobs_total", &[]),
        Some(Some(8.0))
    );
    assert_eq!(
        status_server::custom_per_worker(&doc, "solo_jobs_total", &[]),
        [(0, 8.0)].into()
    );
    // /pid, /slot, 2 registers, the refused one, 2 adds finished; /status is in flight.
    assert_eq!(total(&doc, "requests_total"), 7, "{}", doc["totals"]);
    assert_eq!(total(&doc, "requests_active"), 1, "{}", doc["totals"]);
    assert_eq!(doc["slots"][0]["state"], "ready", "{doc}");
    assert_eq!(
        doc["slots"][0]["pid"],
        demo.pid(),
        "the standalone worker's own slot shows its pid (0 means no worker): {doc}"
    );
    c.close();
    demo.assert_running();
}
