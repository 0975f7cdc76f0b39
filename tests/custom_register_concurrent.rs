//! Two workers registering the same custom counter at the same moment get one series (the
//! master holds the only registry), and what each adds is summed in every output: `/metrics`,
//! `/server-status.json`, `/server-status?auto`, the HTML status page, the in-app `/status` of
//! both workers and `flora-cluster status` (table and `--json`).

mod support;

use std::collections::BTreeMap;
use std::sync::Barrier;
use std::time::Duration;

use support::status_server::Scrape;
use support::tools::{self, Lints};
use support::{http, status_server, workers};
use support::{Http, TestDir};

/// The counter both workers register.
const NAME: &str = "shop_orders_total";
/// Its one label.
const LABELS: [(&str, &str); 1] = [("shop", "main")];
/// What slot 0 and slot 1 add.
const ADD: [u64; 2] = [5, 7];
/// Extra names registered by both workers at once, one round each (more chances for a race).
const ROUNDS: usize = 12;
/// Longest wait for the adds to show (they are visible when `/m/add` answers: a safety net).
const COUNT_TIMEOUT: Duration = Duration::from_secs(15);

/// Sends `target` on both connections at the same moment (one thread each, released by a
/// barrier after both are connected); returns the answers by slot.
fn at_once(conns: &mut BTreeMap<usize, Http>, target: &str) -> BTreeMap<usize, (u16, String)> {
    let barrier = Barrier::new(conns.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = conns
            .iter_mut()
            .map(|(slot, c)| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let r = workers::call(c, target);
                    (*slot, (r.status, r.text()))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("register thread"))
            .collect()
    })
}

fn series_lines<'a>(s: &'a Scrape, name: &str) -> Vec<&'a str> {
    s.text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .collect()
}

#[test]
fn same_counter_registered_at_once_by_two_workers_is_one_series() {
    let dir = TestDir::new("custom-reg-conc");
    let cluster = dir.start(support::free_port(), 2, &[]);
    cluster.wait_ready(2);
    let status = status_server::status_port(&cluster);
    let mut conns = workers::conns_by_slot(cluster.port, &[0, 1]);

    let register = format!("/m/register?kind=counter&name={NAME}&label=shop:main");
    for (slot, (code, body)) in at_once(&mut conns, &register) {
        assert_eq!(
            (code, body.trim()),
            (200, "registered"),
            "slot {slot}: {register}"
        );
    }
    for i in 0..ROUNDS {
        let target = format!("/m/register?kind=counter&name=race_{i}_total");
        for (slot, (code, body)) in at_once(&mut conns, &target) {
            assert_eq!(code, 200, "slot {slot}: {target}: {body}");
        }
    }

    let s = status_server::scrape(status, None);
    assert_eq!(
        series_lines(&s, NAME),
        vec![format!("{NAME}{{shop=\"main\"}} 0")],
        "exactly one series, at 0, before any add\n{}",
        s.text
    );
    assert_eq!(s.expo.type_of(NAME), Some("counter"), "{}", s.text);
    for i in 0..ROUNDS {
        let name = format!("race_{i}_total");
        assert_eq!(
            series_lines(&s, &name).len(),
            1,
            "{name}: one series\n{}",
            s.text
        );
    }
    assert!(s.expo.duplicate_series().is_empty(), "{}", s.text);
    let doc = http::get_json(status, "/server-status.json");
    assert_eq!(
        status_server::custom_series(&doc, NAME, &LABELS).len(),
        1,
        "one JSON entry: {}",
        doc["custom"]
    );
    assert_eq!(
        doc["custom"].as_array().map(Vec::len),
        Some(1 + ROUNDS),
        "{}",
        doc["custom"]
    );

    for (slot, c) in conns.iter_mut() {
        let body = workers::call_ok(c, &format!("/m/add?name={NAME}&n={}", ADD[*slot]));
        assert_eq!(body.trim(), "ok", "slot {slot}");
    }
    let want = (ADD[0] + ADD[1]) as f64;

    let s = support::poll(COUNT_TIMEOUT, "the sum in /metrics", || {
        let s = status_server::scrape(status, None);
        match s.expo.value(NAME, &LABELS) {
            Some(v) if v == want => Ok(s),
            other => Err(format!("{other:?}\n{}", s.text)),
        }
    });
    assert_eq!(series_lines(&s, NAME).len(), 1, "{}", s.text);
    tools::assert_promtool(&s.text, Lints::None, "scrape");

    let doc = http::get_json(status, "/server-status.json");
    assert_eq!(
        status_server::custom_value(&doc, NAME, &LABELS),
        Some(Some(want))
    );
    assert_eq!(doc["custom"][0]["kind"], "counter", "{}", doc["custom"]);
    assert_eq!(
        status_server::custom_per_worker(&doc, NAME, &LABELS),
        BTreeMap::from([(0, ADD[0] as f64), (1, ADD[1] as f64)]),
        "{}",
        doc["custom"]
    );

    let auto = http::get_with(status, "/server-status?auto", &[]).text();
    assert_eq!(
        status_server::auto_value(&auto, &format!("{NAME}{{shop=\"main\"}}")),
        Some(want),
        "{auto}"
    );

    let html = http::get_with(status, "/server-status", &[]).text();
    let table = html
        .split("<table id=\"custom\">")
        .nth(1)
        .and_then(|t| t.split("</table>").next())
        .unwrap_or_else(|| panic!("no table id=\"custom\" on the page:\n{html}"));
    let row = table
        .split("<tr")
        .find(|r| r.contains(&format!("<code>{NAME}</code>")))
        .unwrap_or_else(|| panic!("no row of {NAME} in the custom table:\n{table}"));
    for cell in [
        "<b>shop</b>=main".to_string(),
        format!(">{want}</td>"),
        format!("<b>0</b>={}", ADD[0]),
        format!("<b>1</b>={}", ADD[1]),
    ] {
        assert!(row.contains(&cell), "the {NAME} row lacks {cell:?}: {row}");
    }

    for (slot, c) in conns.iter_mut() {
        let body = workers::call_ok(c, "/status");
        let inapp: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("slot {slot}: /status is not JSON ({e}): {body}"));
        assert_eq!(
            status_server::custom_value(&inapp, NAME, &LABELS),
            Some(Some(want)),
            "in-app /status of slot {slot}: {}",
            inapp["custom"]
        );
    }

    let out = dir.ctl(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = format!("{NAME} {{shop=main}} counter = {want}");
    assert!(
        text.contains("custom metrics") && text.lines().any(|l| l.trim() == line),
        "`flora-cluster status` lacks {line:?}:\n{text}"
    );
    let out = dir.ctl(&["status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status --json");
    assert_eq!(
        status_server::custom_value(&cli, NAME, &LABELS),
        Some(Some(want))
    );

    for c in conns.into_values() {
        c.close();
    }
}
