//! Custom metrics in the master's `/metrics` are valid exposition in both formats: the text
//! format passes `promtool check metrics` with no duplicate or scattered series, OpenMetrics
//! parses with the Python reference parser with the right types (a counter family named
//! without `_total`, histograms with cumulative buckets), and label values are escaped.
//!
//! The demo takes label values raw from its query (no percent-decoding) and hyper refuses `"`
//! in a request target, so the escaping checked here is the backslash's: `a\b`, a literal
//! backslash-n `c\nd` (which must not come back as a newline) and braces.

mod support;

use std::collections::BTreeMap;

use support::status_server::Scrape;
use support::tools::{self, Lints, OmFamily};
use support::{status_server, workers};
use support::{Http, TestDir};

/// Label values of the counter's series, as sent and as they must read back.
const SHOPS: [&str; 4] = ["main", r"a\b", r"c\nd", "e{f}|g"];
/// What each series reads: slot 0 adds i+1, slot 1 adds 10 × (i+1).
fn shop_total(i: usize) -> f64 {
    11.0 * (i + 1) as f64
}
/// The gauges' values on slot 0 and slot 1.
const G: [f64; 2] = [1.5, 4.0];
/// Gauges by aggregation with their combined value (`latest`: slot 1 sets last).
const GAUGES: [(&str, &str, f64); 5] = [
    ("pool_sum_depth", "agg=sum", G[0] + G[1]),
    ("pool_max_depth", "agg=max", G[1]),
    ("pool_min_depth", "agg=min", G[0]),
    ("pool_latest_depth", "agg=latest", G[1]),
    ("pool_dead_depth", "agg=sum&dead=1", G[0] + G[1]),
];
/// Registered, never set: a family without samples.
const UNSET: &str = "pool_idle_depth";
/// Histogram observations per slot, series `queue="mail"`.
const OBS: [&[f64]; 2] = [&[0.05, 0.5, 5.0], &[0.1, 2.0]];
/// Buckets of `job_seconds` (le 0.1, le 1, +Inf), cumulative, for `queue="mail"`.
const MAIL_BUCKETS: [(&str, f64); 3] = [("0.1", 2.0), ("1", 3.0), ("+Inf", 5.0)];

fn ok(c: &mut Http, target: &str) {
    let body = workers::call_ok(c, target);
    assert!(
        body.trim() == "ok" || body.trim() == "registered",
        "{target}: {body}"
    );
}

fn populate(conns: &mut BTreeMap<usize, Http>) {
    for (slot, c) in conns.iter_mut() {
        let slot = *slot;
        // The demo remembers one handle per name: register each series right before using it.
        for (i, shop) in SHOPS.iter().enumerate() {
            ok(
                c,
                &format!("/m/register?kind=counter&name=shop_orders_total&label=shop:{shop}"),
            );
            let n = (i + 1) * if slot == 0 { 1 } else { 10 };
            ok(c, &format!("/m/add?name=shop_orders_total&n={n}"));
        }
        for (name, agg, _) in GAUGES {
            ok(c, &format!("/m/register?kind=gauge&name={name}&{agg}"));
        }
        ok(c, &format!("/m/register?kind=gauge&name={UNSET}&agg=max"));
        ok(
            c,
            "/m/register?kind=histogram&name=job_seconds&buckets=0.1,1&label=queue:mail",
        );
        for v in OBS[slot] {
            ok(c, &format!("/m/observe?name=job_seconds&v={v}"));
        }
        ok(
            c,
            r"/m/register?kind=histogram&name=job_seconds&buckets=0.1,1&label=queue:a\b",
        );
        if slot == 1 {
            ok(c, "/m/observe?name=job_seconds&v=0.7");
        }
    }
    // Gauges last, slot 0 then slot 1, so slot 1's value is the latest.
    for slot in [0, 1] {
        let c = conns.get_mut(&slot).expect("connection");
        for (name, _, _) in GAUGES {
            ok(c, &format!("/m/set?name={name}&v={}", G[slot]));
        }
    }
}

fn check_text(s: &Scrape) {
    assert_eq!(
        s.resp.header("content-type"),
        Some(status_server::TEXT_CONTENT_TYPE)
    );
    tools::assert_promtool(&s.text, Lints::None, "scrape");
    assert!(
        s.expo.duplicate_series().is_empty(),
        "{:?}",
        s.expo.duplicate_series()
    );
    assert!(
        s.expo.scattered_families().is_empty(),
        "{:?}",
        s.expo.scattered_families()
    );
    assert_eq!(s.expo.type_of("shop_orders_total"), Some("counter"));
    assert_eq!(s.expo.type_of("job_seconds"), Some("histogram"));
    for (name, _, v) in GAUGES {
        assert_eq!(s.expo.type_of(name), Some("gauge"), "{name}");
        assert_eq!(s.expo.value(name, &[]), Some(v), "{name}\n{}", s.text);
    }
    assert_eq!(s.expo.type_of(UNSET), Some("gauge"));
    assert_eq!(s.expo.named(UNSET).count(), 0, "unset gauge has no sample");
    for (i, shop) in SHOPS.iter().enumerate() {
        let found: Vec<_> = s
            .expo
            .named("shop_orders_total")
            .filter(|x| x.labels == BTreeMap::from([("shop".into(), shop.to_string())]))
            .collect();
        assert_eq!(found.len(), 1, "shop={shop:?}\n{}", s.text);
        assert_eq!(found[0].value, shop_total(i), "shop={shop:?}\n{}", s.text);
    }
    // The escaped lines as they must be written.
    for line in [
        r#"shop_orders_total{shop="a\\b"} 22"#,
        r#"shop_orders_total{shop="c\\nd"} 33"#,
        r#"job_seconds_bucket{queue="a\\b",le="1"} 1"#,
    ] {
        assert!(
            s.text.lines().any(|l| l == line),
            "no line {line:?}\n{}",
            s.text
        );
    }
    for (le, n) in MAIL_BUCKETS {
        let got = s
            .expo
            .value("job_seconds_bucket", &[("queue", "mail"), ("le", le)]);
        assert_eq!(got, Some(n), "le={le}\n{}", s.text);
    }
    assert_eq!(
        s.expo.value("job_seconds_count", &[("queue", "mail")]),
        Some(5.0)
    );
    let sum = s
        .expo
        .value("job_seconds_sum", &[("queue", "mail")])
        .unwrap_or(f64::NAN);
    assert!((sum - 7.65).abs() < 1e-9, "sum {sum}\n{}", s.text);
    assert_eq!(
        s.expo.value("job_seconds_count", &[("queue", r"a\b")]),
        Some(1.0)
    );
    let custom = ["shop_orders_total", "pool_", "job_seconds"];
    for x in s
        .expo
        .samples
        .iter()
        .filter(|x| custom.iter().any(|c| x.name.starts_with(c)))
    {
        assert!(
            !x.labels.contains_key("worker"),
            "combined, no worker label: {x:?}"
        );
    }
}

fn family<'a>(fams: &'a [OmFamily], name: &str) -> &'a OmFamily {
    fams.iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no family {name} in {fams:#?}"))
}

fn check_openmetrics(s: &Scrape) {
    assert_eq!(
        s.resp.header("content-type"),
        Some(status_server::OPENMETRICS_CONTENT_TYPE)
    );
    assert!(s.text.ends_with("# EOF\n"), "{}", s.text);
    let fams = tools::parse_openmetrics_with_python(&s.text)
        .unwrap_or_else(|e| panic!("the OpenMetrics parser rejects the scrape: {e}\n{}", s.text));
    let shop = family(&fams, "shop_orders");
    assert_eq!(shop.typ, "counter");
    for (i, want) in SHOPS.iter().enumerate() {
        let found: Vec<_> = shop
            .samples
            .iter()
            .filter(|x| {
                x.name == "shop_orders_total"
                    && x.labels.get("shop").map(String::as_str) == Some(*want)
            })
            .collect();
        assert_eq!(found.len(), 1, "shop={want:?}: {:?}", shop.samples);
        assert_eq!(found[0].value, shop_total(i), "shop={want:?}");
    }
    assert!(
        fams.iter().all(|f| f.name != "shop_orders_total"),
        "{fams:#?}"
    );
    for (name, _, v) in GAUGES {
        let f = family(&fams, name);
        assert_eq!(f.typ, "gauge", "{name}");
        assert_eq!(f.samples.len(), 1, "{name}: {:?}", f.samples);
        assert_eq!(f.samples[0].value, v, "{name}");
    }
    let hist = family(&fams, "job_seconds");
    assert_eq!(hist.typ, "histogram");
    let mail: Vec<_> = hist
        .samples
        .iter()
        .filter(|x| x.name == "job_seconds_bucket" && x.has_labels(&[("queue", "mail")]))
        .map(|x| x.value)
        .collect();
    assert_eq!(
        mail,
        MAIL_BUCKETS.map(|(_, n)| n).to_vec(),
        "{:?}",
        hist.samples
    );
    let escaped = hist
        .samples
        .iter()
        .find(|x| x.name == "job_seconds_count" && x.has_labels(&[("queue", r"a\b")]));
    assert_eq!(escaped.map(|x| x.value), Some(1.0), "{:?}", hist.samples);
}

#[test]
fn custom_metrics_are_valid_exposition_in_both_formats() {
    let dir = TestDir::new("custom-expo");
    let cluster = dir.start(support::free_port(), 2, &[]);
    cluster.wait_ready(2);
    let status = status_server::status_port(&cluster);
    let mut conns = workers::conns_by_slot(cluster.port, &[0, 1]);
    populate(&mut conns);

    check_text(&status_server::scrape(status, None));
    check_openmetrics(&status_server::scrape(
        status,
        Some(status_server::PROMETHEUS_ACCEPT),
    ));
    for c in conns.into_values() {
        c.close();
    }
}
