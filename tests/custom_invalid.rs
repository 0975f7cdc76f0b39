//! Invalid custom-metric registrations are refused with 422 and a message naming the problem;
//! the worker and the cluster keep serving and nothing partial shows in `/metrics`. Filling
//! the registry (`MAX_SERIES` series) ends in a clear "full" error, and the scrape stays valid.

mod support;

use support::tools::{self, Lints};
use support::TestDir;
use support::{http, status_server, workers};

/// Series the registry holds (`scoreboard::raw::MAX_SERIES`).
const MAX_SERIES: usize = flora_cluster::scoreboard::MAX_SERIES;

/// A registration that must fail: its query, the words its message must contain, and the
/// names that must not appear anywhere in the outputs afterwards.
struct Bad {
    query: String,
    needles: &'static [&'static str],
    absent: &'static str,
}

fn bad(query: &str, needles: &'static [&'static str], absent: &'static str) -> Bad {
    Bad {
        query: query.to_string(),
        needles,
        absent,
    }
}

fn cases() -> Vec<Bad> {
    let long_help = "h".repeat(129);
    vec![
        bad(
            "kind=counter&name=bad-name",
            &[
                "invalid metric name",
                "bad-name",
                "[a-zA-Z_:][a-zA-Z0-9_:]*",
            ],
            "bad-name",
        ),
        bad(
            "kind=counter&name=flora_x_total",
            &["flora_x_total", "clashes", "built-in"],
            "flora_x_total",
        ),
        bad(
            "kind=counter&name=jobs",
            &["\"jobs\"", "counter names end in _total"],
            "jobs",
        ),
        bad(
            "kind=gauge&name=x_total",
            &["\"x_total\"", "_total", "reserved"],
            "x_total",
        ),
        bad(
            "kind=gauge&name=lbl_worker&label=worker:1",
            &["invalid label", "\"worker\"", "reserved label name"],
            "lbl_worker",
        ),
        bad(
            "kind=gauge&name=lbl_five&label=a:1&label=b:2&label=c:3&label=d:4&label=e:5",
            &["invalid label", "lbl_five", "at most 4 labels"],
            "lbl_five",
        ),
        Bad {
            query: format!("kind=gauge&name=long_help&help={long_help}"),
            needles: &["help of \"long_help\"", "129 bytes", "limit is 128"],
            absent: "long_help",
        },
        bad(
            "kind=histogram&name=dup_buckets&buckets=1,1",
            &["invalid buckets", "dup_buckets", "strictly increasing"],
            "dup_buckets",
        ),
    ]
}

/// Status and body of `GET /m/register?query` on `c`.
fn register(c: &mut support::Http, query: &str) -> (u16, String) {
    let r = workers::call(c, &format!("/m/register?{query}"));
    (r.status, r.text())
}

/// Every output the master serves, for "this name is absent" checks.
fn outputs(status: u16) -> (status_server::Scrape, serde_json::Value, String) {
    let s = status_server::scrape(status, None);
    let doc = http::get_json(status, "/server-status.json");
    let auto = http::get_with(status, "/server-status?auto", &[]).text();
    (s, doc, auto)
}

fn assert_absent(status: u16, name: &str) {
    let (s, doc, auto) = outputs(status);
    let in_metrics = s
        .text
        .lines()
        .any(|l| l.split(['{', ' ']).any(|w| w == name));
    assert!(!in_metrics, "{name} appears in /metrics:\n{}", s.text);
    assert!(
        status_server::custom_series(&doc, name, &[]).is_empty()
            && !doc["custom"].to_string().contains(&format!("\"{name}\"")),
        "{name} appears in the JSON: {}",
        doc["custom"]
    );
    assert!(
        !auto
            .lines()
            .any(|l| l.split(['{', ':']).next() == Some(name)),
        "{name} in ?auto:\n{auto}"
    );
}

fn assert_promtool_clean(status: u16) -> status_server::Scrape {
    let s = status_server::scrape(status, None);
    tools::assert_promtool(&s.text, Lints::None, "scrape");
    assert!(s.expo.duplicate_series().is_empty(), "{}", s.text);
    s
}

#[test]
fn invalid_registrations_are_refused_and_leave_nothing_behind() {
    let dir = TestDir::new("custom-invalid");
    let cluster = dir.start(support::free_port(), 2, &[]);
    let pids = cluster.wait_ready(2);
    let status = status_server::status_port(&cluster);
    let mut conns = workers::conns_by_slot(cluster.port, &[0, 1]);
    let c = conns.get_mut(&0).expect("slot 0");

    for case in cases() {
        let (code, body) = register(c, &case.query);
        assert_eq!(code, 422, "{}: {body}", case.query);
        for needle in case.needles {
            assert!(
                body.contains(needle),
                "{}: the message {body:?} lacks {needle:?}",
                case.query
            );
        }
        // The same worker keeps serving on the same connection.
        assert_eq!(workers::call_ok(c, "/pid").trim(), pids[0].to_string());
        assert_absent(status, case.absent);
        let r = workers::call(c, &format!("/m/add?name={}&n=1", case.absent));
        assert_eq!(
            r.status,
            404,
            "a refused metric has no handle: {}",
            r.text()
        );
    }

    // An empty bucket list: the demo cannot parse `buckets=` into a list (400, naming the
    // buckets); a list the registry sees empty would be 422 "give at least one bucket".
    let (code, body) = register(c, "kind=histogram&name=no_buckets&buckets=");
    assert!(
        (code == 400 || code == 422) && body.contains("buckets"),
        "empty buckets: {code} {body}"
    );
    assert_absent(status, "no_buckets");

    // The same name again with another kind or help, from the other worker.
    assert_eq!(
        register(c, "kind=histogram&name=shape_hist&buckets=0.5,1"),
        (200, "registered\n".into())
    );
    assert_eq!(
        register(c, "kind=counter&name=shape_total&help=Orders"),
        (200, "registered\n".into())
    );
    let c1 = conns.get_mut(&1).expect("slot 1");
    for query in [
        "kind=gauge&name=shape_hist",
        "kind=histogram&name=shape_hist&buckets=0.5,2",
        "kind=histogram&name=shape_hist&buckets=0.5,1&help=Other",
        "kind=counter&name=shape_total&help=Other",
    ] {
        let (code, body) = register(c1, query);
        assert_eq!(code, 422, "{query}: {body}");
        let name = if query.contains("shape_hist") {
            "shape_hist"
        } else {
            "shape_total"
        };
        assert!(
            body.contains(&format!("\"{name}\""))
                && body.contains("already registered with a different kind, help or buckets"),
            "{query}: {body}"
        );
    }
    let (s, doc, _) = outputs(status);
    assert_eq!(
        doc["custom"].as_array().map(Vec::len),
        Some(2),
        "only the two valid series: {}",
        doc["custom"]
    );
    assert_eq!(
        s.expo.type_of("shape_hist"),
        Some("histogram"),
        "{}",
        s.text
    );
    assert_eq!(s.expo.type_of("shape_total"), Some("counter"), "{}", s.text);
    assert!(
        s.text.contains("# HELP shape_total Orders\n"),
        "the first help stays:\n{}",
        s.text
    );
    assert_promtool_clean(status);

    // Fill the registry: 2 series so far, 126 more fit.
    let mut registered = 2;
    let full = loop {
        let (code, body) = register(c1, &format!("kind=counter&name=fill_{registered}_total"));
        if code != 200 {
            break (code, body);
        }
        registered += 1;
        assert!(registered <= MAX_SERIES, "series {registered} accepted");
    };
    assert_eq!(registered, MAX_SERIES, "series accepted before full");
    assert_eq!(full.0, 422, "{}", full.1);
    assert!(
        full.1.contains("the custom metric registry is full")
            && full.1.contains(&format!("{MAX_SERIES} series")),
        "{}",
        full.1
    );
    // A series that exists is still found when the registry is full.
    assert_eq!(
        register(c1, "kind=counter&name=fill_2_total"),
        (200, "registered\n".into())
    );
    assert_eq!(
        workers::call_ok(c1, "/m/add?name=fill_2_total&n=4").trim(),
        "ok"
    );
    // Every worker and the cluster keep serving; the scrape is valid with a full registry.
    for (slot, c) in conns.iter_mut() {
        assert_eq!(workers::call_ok(c, "/pid").trim(), pids[*slot].to_string());
    }
    assert_eq!(support::get(cluster.port, "/").expect("GET /").status, 200);
    let s = assert_promtool_clean(status);
    let custom_samples = s
        .expo
        .samples
        .iter()
        .filter(|x| x.name.starts_with("fill_"))
        .count();
    assert_eq!(custom_samples, MAX_SERIES - 2, "{}", s.text);
    assert_eq!(s.expo.value("fill_2_total", &[]), Some(4.0), "{}", s.text);
    assert_absent(status, &format!("fill_{MAX_SERIES}_total"));
    let snap = cluster.snapshot();
    assert!(
        snap.slots[..2].iter().all(|x| x.restarts == 0),
        "no worker restarted: {:?}",
        snap.slots
    );
    for c in conns.into_values() {
        c.close();
    }
}
