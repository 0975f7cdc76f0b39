//! Cost of a scrape: snapshot reads, the metric-family model and every renderer (Prometheus
//! text, OpenMetrics, OTLP, JSON, HTML, `?auto`) for 8 and 64 workers with 200 custom metrics.
//!
//! `cargo bench --bench render`.
#![allow(missing_docs, reason = "criterion macros generate undocumented items")]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use flora_cluster::exporter::family::Families;
use flora_cluster::exporter::html::{self, HtmlOptions};
use flora_cluster::exporter::procfs::ProcStats;
use flora_cluster::exporter::{apache, otlp, prometheus, Format, StatusDoc};
use flora_cluster::scoreboard::{Aggregation, MetricSpec, Scoreboard, ScoreboardReader, SlotState};

/// A segment with `workers` busy slots, 4 open connections each (one with a request in
/// flight), and 200 custom series (counters, gauges and histograms, some with labels), and a
/// read-only reader of it. Snapshots are taken through the reader, as `flora-cluster status`
/// does: the creator shows only the slots its master spawned workers into (none here).
fn busy_segment(
    workers: usize,
) -> (
    tempfile::TempDir,
    ScoreboardReader,
    Vec<flora_cluster::scoreboard::ConnGuard>,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("render.scoreboard");
    let sb = Scoreboard::create(&path, "bench", workers * 2 + 2).expect("segment");
    for i in 0..200 {
        let spec = match i % 4 {
            0 => MetricSpec::counter(format!("app_events_{i}_total"), "Events.")
                .label("route", format!("/r{i}")),
            1 => MetricSpec::counter(format!("app_jobs_{i}_total"), "Jobs."),
            2 => MetricSpec::gauge(format!("app_depth_{i}"), "Depth.", Aggregation::Max),
            _ => MetricSpec::histogram(format!("app_seconds_{i}"), "Time.", &[0.01, 0.1, 1.0]),
        };
        sb.register(&spec).expect("register");
    }
    let mut conns = Vec::new();
    for slot in 0..workers {
        let w = sb.writer(slot).expect("slot");
        w.set_state(SlotState::Ready);
        for c in 0..4u16 {
            let conn = w.conn_open(SocketAddr::from(([127, 0, 0, 1], 40_000 + c)));
            for _ in 0..10 {
                conn.request_begin("GET", "/api/users/42", 11)
                    .finish(200, 512);
            }
            if c == 0 {
                std::mem::forget(conn.request_begin("POST", "/api/orders", 11));
            }
            conns.push(conn);
        }
    }
    let reader = Scoreboard::open_read_only(&path).expect("reader");
    (dir, reader, conns)
}

fn renderers(c: &mut Criterion) {
    let mut g = c.benchmark_group("render");
    for workers in [8usize, 64] {
        let (_dir, sb, _conns) = busy_segment(workers);
        let stats = |_pid: u32| {
            Some(ProcStats {
                cpu_seconds: 1.5,
                rss_bytes: 8 << 20,
            })
        };
        g.bench_function(format!("snapshot/{workers}w"), |b| {
            b.iter(|| black_box(sb.snapshot()))
        });
        let snap = sb.snapshot();
        let slots = snap.slots.clone();
        let doc = StatusDoc::build_with(snap, stats);
        g.bench_function(format!("families/{workers}w_200m"), |b| {
            b.iter(|| black_box(Families::of(&doc).list.len()))
        });
        g.bench_function(format!("prometheus_text/{workers}w_200m"), |b| {
            b.iter(|| black_box(prometheus::render(&doc, Format::Text)))
        });
        g.bench_function(format!("openmetrics/{workers}w_200m"), |b| {
            b.iter(|| black_box(prometheus::render(&doc, Format::OpenMetrics)))
        });
        g.bench_function(format!("otlp/{workers}w_200m"), |b| {
            b.iter(|| black_box(otlp::encode(&doc, &[], 1)))
        });
        g.bench_function(format!("json/{workers}w_200m"), |b| {
            b.iter(|| black_box(serde_json::to_vec(&doc).expect("json")))
        });
        g.bench_function(format!("html/{workers}w_200m"), |b| {
            b.iter(|| black_box(html::render(&doc, &HtmlOptions::default())))
        });
        g.bench_function(format!("auto/{workers}w_200m"), |b| {
            b.iter(|| black_box(apache::render(&doc, &slots)))
        });
        g.bench_function(format!("scrape_end_to_end_text/{workers}w_200m"), |b| {
            b.iter(|| {
                let doc = StatusDoc::build_with(sb.snapshot(), stats);
                black_box(prometheus::render(&doc, Format::Text))
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = renderers
}
criterion_main!(benches);
