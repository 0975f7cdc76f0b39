//! Unit tests of the family model: the built-in list in order, labels and values per
//! source, the app's families grouped by name.
use super::*;
use crate::exporter::procfs::ProcStats;
use crate::metrics::{Counter, Gauge, Histogram};
use crate::scoreboard::{Aggregation, MetricSpec, Scoreboard, SlotState};

const STATS: ProcStats = ProcStats {
    cpu_seconds: 2.5,
    rss_bytes: 4096,
};

/// Slot 0 ready (pid 40, two 200s, one 503), slot 1 spawned and not ready (pid 41), slot 2
/// never used; the app registered `jobs_total{q="a"}`, `depth`, `t` (buckets 1, 2) and
/// `jobs_total{q="b"}` in that order, and set only some of them.
fn doc() -> StatusDoc {
    let dir = tempfile::tempdir().expect("tempdir");
    let sb = Scoreboard::create(&dir.path().join("s"), "t", 3).expect("create");
    sb.slot_spawned(0, 40, 3);
    sb.slot_spawned(1, 41, 3);
    let w = sb.writer(0).expect("writer");
    w.set_state(SlotState::Ready);
    let conn = w.conn_open(([127, 0, 0, 1], 1).into());
    for status in [200, 200, 503] {
        conn.request_begin("GET", "/", 11).finish(status, 1);
    }
    let jobs = MetricSpec::counter("jobs_total", "Jobs.");
    let a = sb.register(&jobs.clone().label("q", "a")).expect("a");
    sb.register(&MetricSpec::gauge("depth", "Depth.", Aggregation::Max))
        .expect("depth");
    let t = sb
        .register(&MetricSpec::histogram("t", "Time.", &[1.0, 2.0]))
        .expect("t");
    let b = sb.register(&jobs.label("q", "b")).expect("b");
    Counter::new(w.clone(), a).add(3);
    Counter::new(w.clone(), b).add(4);
    Histogram::new(w.clone(), t, &[1.0, 2.0]).observe(1.5);
    let mut snap = sb.snapshot();
    snap.slots[1].started_unix_ms = 1_000;
    StatusDoc::build_with(snap, |pid| (pid == 40 || pid == 41).then_some(STATS))
}

fn labels(s: &Sample<'_>) -> Vec<(String, String)> {
    s.labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn family<'a>(f: &'a Families<'_>, name: &str) -> &'a Family<'a> {
    f.list.iter().find(|f| f.name == name).expect(name)
}

#[test]
fn builtin_families_follow_the_list() {
    let doc = doc();
    let f = Families::of(&doc);
    let got: Vec<(&str, Kind)> = f.builtin().iter().map(|f| (f.name, f.kind)).collect();
    let want: Vec<(&str, Kind)> = crate::scoreboard::families::written(false)
        .map(|b| (b.name, b.kind))
        .collect();
    assert!(
        want.len() < BUILTIN.len(),
        "the route families are left out"
    );
    assert_eq!(got, want);
    assert_eq!(f.start_unix_ms, doc.started_unix_ms);
    for fam in f.builtin() {
        assert_eq!(fam.unit, unit_of(fam.name), "{}", fam.name);
    }
}

#[test]
fn per_worker_samples_cover_the_used_slots() {
    let doc = doc();
    let f = Families::of(&doc);
    let requests = family(&f, "flora_http_requests_total");
    // Only the codes seen: slot 0 answered 200 twice and 503 once, slot 1 nothing.
    let got: Vec<_> = requests
        .samples
        .iter()
        .map(|s| (labels(s), s.value))
        .collect();
    let series = |code: &str, n| {
        let l = [("worker", "0"), ("code", code)].map(|(k, v)| (k.to_string(), v.to_string()));
        (l.to_vec(), Value::Int(n))
    };
    assert_eq!(got, [series("200", 2), series("503", 1)]);
    // Present for every used slot, 0 without TLS.
    let tls = family(&f, "flora_tls_handshake_failures_total");
    let values: Vec<_> = tls.samples.iter().map(|s| s.value).collect();
    assert_eq!(values, [Value::Int(0), Value::Int(0)]);
    let info = family(&f, "flora_worker_info");
    let want = [("worker", "1"), ("pid", "41"), ("generation", "3")];
    assert_eq!(
        labels(&info.samples[1]),
        want.map(|(k, v)| (k.into(), v.into()))
    );
    let Value::Histogram(h) = family(&f, "flora_http_request_duration_seconds").samples[0].value
    else {
        panic!("not a histogram")
    };
    assert_eq!((h.count(), h.bounds.len() + 1), (3, h.counts.len()));
}

#[test]
fn cluster_and_process_samples() {
    let doc = doc();
    let f = Families::of(&doc);
    let workers: Vec<_> = family(&f, "flora_workers")
        .samples
        .iter()
        .map(|s| s.value)
        .collect();
    assert_eq!(workers, [Value::Int(1), Value::Int(1), Value::Int(0)]);
    let reloads = &family(&f, "flora_reloads_total").samples;
    assert_eq!(
        labels(&reloads[1]),
        [("outcome".to_string(), "rollback".to_string())]
    );
    let start = &family(&f, "flora_start_time_seconds").samples[0];
    assert!(start.labels.is_empty());
    assert_eq!(
        start.value,
        Value::Float(doc.started_unix_ms as f64 / 1000.0)
    );
    // No master process here (its pid is ours): the workers' CPU starts with their process.
    let cpu = &family(&f, "process_cpu_seconds_total").samples;
    let starts: Vec<_> = cpu.iter().map(|s| s.start_unix_ms).collect();
    assert_eq!(
        starts,
        [Some(doc.workers[0].slot.started_unix_ms), Some(1_000)]
    );
    assert_eq!(cpu[0].value, Value::Float(2.5));
    let rss = &family(&f, "process_resident_memory_bytes").samples[1];
    assert_eq!(rss.value, Value::Int(4096));
}

#[test]
fn app_families_are_grouped_by_name_in_registration_order() {
    let doc = doc();
    let f = Families::of(&doc);
    let got: Vec<(&str, Kind, usize)> = f
        .custom()
        .iter()
        .map(|f| (f.name, f.kind, f.samples.len()))
        .collect();
    // `depth` was never set: declared, without a sample.
    let want = [
        ("jobs_total", Kind::Counter, 2),
        ("depth", Kind::Gauge, 0),
        ("t", Kind::Histogram, 1),
    ];
    assert_eq!(got, want);
    let jobs = &f.custom()[0];
    assert_eq!(jobs.samples[1].value, Value::Int(4));
    assert_eq!(
        labels(&jobs.samples[1]),
        [("q".to_string(), "b".to_string())]
    );
    let Value::Histogram(h) = f.custom()[2].samples[0].value else {
        panic!("not a histogram")
    };
    assert_eq!(
        (h.bounds, h.counts, h.sum),
        (&[1.0, 2.0][..], &[0, 1, 0][..], 1.5)
    );
    let app = Families::of_app(&doc);
    assert!(app.builtin().is_empty());
    assert_eq!(app.custom().len(), 3);
}

#[test]
fn gauges_are_floats_and_labels_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sb = Scoreboard::create(&dir.path().join("s"), "t", 1).expect("create");
    sb.slot_spawned(0, 7, 1);
    let w = sb.writer(0).expect("writer");
    let spec = MetricSpec::gauge("g", "G.", Aggregation::Sum)
        .label("z", "1")
        .label("a", "\"");
    Gauge::new(w, sb.register(&spec).expect("g"), Aggregation::Sum).set(0.5);
    let doc = StatusDoc::build_with(sb.snapshot(), |_| None);
    let f = Families::of(&doc);
    let s = &f.custom()[0].samples[0];
    assert_eq!(s.value, Value::Float(0.5));
    let want = [("a", "\""), ("z", "1")].map(|(k, v)| (k.to_string(), v.to_string()));
    assert_eq!(labels(s), want);
    let fixed = Labels::new([("a", LabelValue::Int(7)), ("b", LabelValue::Str("x"))]);
    let pairs: Vec<String> = fixed.iter().map(|(k, v)| format!("{k}={v}")).collect();
    assert_eq!(pairs, ["a=7", "b=x"]);
    assert!(Labels::NONE.is_empty() && !fixed.is_empty());
}

#[test]
fn units_from_names() {
    for (name, unit) in [
        ("flora_http_request_duration_seconds", "s"),
        ("process_cpu_seconds_total", "s"),
        ("flora_http_sent_bytes_total", "By"),
        ("process_resident_memory_bytes", "By"),
        ("flora_workers", ""),
        ("jobs_total", ""),
    ] {
        assert_eq!(unit_of(name), unit, "{name}");
    }
}

#[test]
fn route_families_only_with_route_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sb = Scoreboard::create_with_routes(&dir.path().join("s"), "t", 1, 2).expect("create");
    sb.slot_spawned(0, 7, 1);
    let conn = sb
        .writer(0)
        .expect("writer")
        .conn_open(([127, 0, 0, 1], 1).into());
    for (route, status) in [("/a/{id}", 200), ("/a/{id}", 404), ("/b", 200), ("/c", 200)] {
        let mut req = conn.request_begin("GET", "/x", 11);
        req.set_route(route);
        req.finish(status, 0);
    }
    let doc = StatusDoc::build_with(sb.snapshot(), |_| None);
    let f = Families::of(&doc);
    assert_eq!(f.builtin().len(), BUILTIN.len());
    let series: Vec<_> = family(&f, "flora_http_route_requests_total")
        .samples
        .iter()
        .map(|s| (labels(s), s.value))
        .collect();
    let want = |route: &str, code: &str, n| {
        let l = [("route", route), ("code", code)].map(|(k, v)| (k.to_string(), v.to_string()));
        (l.to_vec(), Value::Int(n))
    };
    assert_eq!(
        series,
        [
            want("/a/{id}", "200", 1),
            want("/a/{id}", "404", 1),
            want("/b", "200", 1),
            want("other", "200", 1)
        ]
    );
    let durations = &family(&f, "flora_http_route_request_duration_seconds").samples;
    assert_eq!(durations.len(), 3);
    let overflow = &family(&f, "flora_http_route_overflow_total").samples;
    assert_eq!(overflow[0].value, Value::Int(1));
}

#[test]
fn guard_families_have_every_reason_and_a_lag_per_live_worker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s");
    let sb = Scoreboard::create(&path, "t", 3).expect("create");
    sb.slot_spawned(0, 40, 1);
    sb.slot_spawned(1, 41, 1);
    let minute = std::time::Duration::from_secs(60);
    sb.record_heartbeat(1, 41, std::time::Duration::from_millis(250), minute);
    sb.record_recycle(0, "age");
    sb.record_kill(0, 40, "heartbeat", "no heartbeat for 3s");
    sb.record_kill(0, 40, "heartbeat", "no heartbeat for 3s");
    let doc = StatusDoc::build_with(sb.snapshot(), |_| None);
    let f = Families::of(&doc);
    let by_reason = |name| -> Vec<(Vec<(String, String)>, Value<'_>)> {
        family(&f, name)
            .samples
            .iter()
            .map(|s| (labels(s), s.value))
            .collect()
    };
    let reason = |r: &str, n| (vec![("reason".to_string(), r.to_string())], Value::Int(n));
    assert_eq!(
        by_reason("flora_worker_recycles_total"),
        [
            reason("memory", 0),
            reason("max_requests", 0),
            reason("age", 1)
        ]
    );
    assert_eq!(
        by_reason("flora_worker_kills_total"),
        [reason("heartbeat", 2), reason("shutdown_timeout", 0)]
    );
    let lag = family(&f, "flora_worker_event_loop_lag_seconds");
    assert_eq!(lag.unit, "s");
    let [one] = &lag.samples[..] else {
        panic!("one worker sent a heartbeat: {:?}", lag.samples)
    };
    assert_eq!(labels(one), [("worker".to_string(), "1".to_string())]);
    assert_eq!(one.value, Value::Float(0.25));
    // A reader without the master's records writes no guard samples rather than zeros.
    let reader = Scoreboard::open_read_only(&path).expect("open");
    let doc = StatusDoc::build_with(reader.snapshot(), |_| None);
    let f = Families::of(&doc);
    for name in [
        "flora_worker_recycles_total",
        "flora_worker_kills_total",
        "flora_worker_event_loop_lag_seconds",
    ] {
        assert!(family(&f, name).samples.is_empty(), "{name}");
    }
}

#[test]
fn canary_reloads_by_verdict_from_the_masters_records() {
    use crate::canary::{CanaryLimits, CanaryReport, Verdict};
    let sb = Scoreboard::create_sealed("canary-family", 1).expect("create");
    let values = |sb: &Scoreboard| -> Vec<(Vec<(String, String)>, u64)> {
        let doc = StatusDoc::build_with(sb.snapshot(), |_| None);
        let f = Families::of(&doc);
        let fam = family(&f, "flora_canary_reloads_total");
        let int = |v: &Value| match v {
            Value::Int(n) => *n,
            other => panic!("not an integer: {other:?}"),
        };
        fam.samples
            .iter()
            .map(|s| (labels(s), int(&s.value)))
            .collect()
    };
    let verdict = |v: &str| vec![("verdict".to_string(), v.to_string())];
    // Both verdicts from the start, at 0.
    assert_eq!(
        values(&sb),
        [(verdict("promote"), 0), (verdict("rollback"), 0)]
    );
    let report = |v| CanaryReport {
        workers: 1,
        secs: 1.0,
        limits: CanaryLimits::default(),
        old: None,
        new: None,
        verdict: v,
        reason: "x".into(),
    };
    sb.record_canary(&report(Some(Verdict::Rollback)));
    sb.record_canary(&report(None));
    sb.record_canary(&report(Some(Verdict::Rollback)));
    assert_eq!(values(&sb)[1], (verdict("rollback"), 2));
    assert_eq!(values(&sb)[0].1, 0);
}

#[test]
fn scale_events_have_every_direction_and_reason_pair() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s");
    let sb = Scoreboard::create(&path, "t", 3).expect("create");
    sb.record_scale("up", "busy");
    sb.record_scale("up", "busy");
    sb.record_scale("down", "idle");
    // A pair that cannot happen is not counted.
    sb.record_scale("down", "busy");
    let doc = StatusDoc::build_with(sb.snapshot(), |_| None);
    let f = Families::of(&doc);
    let got: Vec<(Vec<(String, String)>, Value<'_>)> = family(&f, "flora_scale_events_total")
        .samples
        .iter()
        .map(|s| (labels(s), s.value))
        .collect();
    let want = |d: &str, r: &str, n| {
        let labels = vec![
            ("direction".to_string(), d.to_string()),
            ("reason".to_string(), r.to_string()),
        ];
        (labels, Value::Int(n))
    };
    assert_eq!(
        got,
        [
            want("up", "busy", 2),
            want("up", "queue", 0),
            want("up", "manual", 0),
            want("down", "idle", 1),
            want("down", "manual", 0),
        ]
    );
    // A reader without the master's records writes no samples rather than zeros.
    let reader = Scoreboard::open_read_only(&path).expect("open");
    let doc = StatusDoc::build_with(reader.snapshot(), |_| None);
    let f = Families::of(&doc);
    assert!(family(&f, "flora_scale_events_total").samples.is_empty());
}

#[test]
fn master_upgrades_by_outcome_and_the_masters_info() {
    use crate::exporter::prometheus::{render, Format};
    use crate::scoreboard::{UpgradeOutcomeKind, UpgradeRecord};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s");
    let sb = Scoreboard::create(&path, "t", 1).expect("create");
    let values = |doc: &StatusDoc| -> Vec<(Vec<(String, String)>, Value<'static>)> {
        let f = Families::of(doc);
        let fam = family(&f, "flora_master_upgrades_total");
        assert_eq!(fam.kind, Kind::Counter);
        let int = |v: &Value| match v {
            Value::Int(n) => Value::Int(*n),
            other => panic!("not an integer: {other:?}"),
        };
        fam.samples
            .iter()
            .map(|s| (labels(s), int(&s.value)))
            .collect()
    };
    let outcome = |o: &str, n| (vec![("outcome".to_string(), o.to_string())], Value::Int(n));
    // Both outcomes from the start, at 0.
    let doc = StatusDoc::build_with(sb.snapshot(), |_| None);
    assert_eq!(
        values(&doc),
        [outcome("success", 0), outcome("rollback", 0)]
    );
    let rec = |outcome| UpgradeRecord {
        outcome,
        from_pid: 1,
        to_pid: None,
        from_version: "0.1.0".into(),
        to_version: None,
        duration_ms: 3,
        reason: None,
        finished_unix_ms: 4,
    };
    sb.record_upgrade(rec(UpgradeOutcomeKind::Rollback));
    sb.record_upgrade(rec(UpgradeOutcomeKind::Success));
    sb.record_upgrade(rec(UpgradeOutcomeKind::Rollback));
    let doc = StatusDoc::build_with(sb.snapshot(), |_| None);
    assert_eq!(
        values(&doc),
        [outcome("success", 1), outcome("rollback", 2)]
    );
    // The master that answers: this process, this build.
    let f = Families::of(&doc);
    let info = family(&f, "flora_master_info");
    assert_eq!(info.kind, Kind::Info);
    let [one] = &info.samples[..] else {
        panic!("one master: {:?}", info.samples)
    };
    let (version, pid) = (env!("CARGO_PKG_VERSION"), std::process::id().to_string());
    let want = [("version", version), ("pid", pid.as_str())];
    assert_eq!(labels(one), want.map(|(k, v)| (k.into(), v.into())));
    assert_eq!(one.value, Value::Int(1));
    // Both text formats.
    let text = render(&doc, Format::Text);
    let series = format!("flora_master_info{{version=\"{version}\",pid=\"{pid}\"}} 1");
    for line in [
        "# TYPE flora_master_upgrades_total counter",
        "flora_master_upgrades_total{outcome=\"success\"} 1",
        "flora_master_upgrades_total{outcome=\"rollback\"} 2",
        "# TYPE flora_master_info gauge",
        &series,
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?}\n{text}");
    }
    let om = render(&doc, Format::OpenMetrics);
    for line in [
        "# TYPE flora_master_upgrades counter",
        "flora_master_upgrades_total{outcome=\"rollback\"} 2",
        "# TYPE flora_master info",
        &series,
    ] {
        assert!(om.lines().any(|l| l == line), "no {line:?}\n{om}");
    }
    // A reader without the master's records writes no samples rather than zeros.
    let reader = Scoreboard::open_read_only(&path).expect("open");
    let doc = StatusDoc::build_with(reader.snapshot(), |_| None);
    let f = Families::of(&doc);
    assert!(family(&f, "flora_master_upgrades_total").samples.is_empty());
    assert!(family(&f, "flora_master_info").samples.is_empty());
}
