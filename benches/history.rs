//! Cost of the master's history: one reading a second (a snapshot plus the ring's push), the
//! ring as arrays, and the status page and JSON with a full ring of 900 samples.
//!
//! `cargo bench --bench history`.
#![allow(missing_docs, reason = "criterion macros generate undocumented items")]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use flora_cluster::exporter::html::{self, HtmlOptions};
use flora_cluster::exporter::StatusDoc;
use flora_cluster::scoreboard::{History, HistorySeries, Reading, Scoreboard, SlotState};

/// A busy reading: every figure moves each second; the 900th is now.
fn reading(i: u64) -> Reading {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut histogram = vec![0; 17];
    histogram[2] = 900 * i;
    histogram[9] = 100 * i + i % 13;
    Reading {
        unix_ms: now.saturating_sub(900_000) + i * 1_000,
        requests: 1_000 * i + i % 13,
        classes: [0, 990 * i + i % 13, 0, 7 * i, 3 * i, 0],
        histogram,
        in_flight: i % 40,
        workers: [8, 0, 0],
        queue_length: Some(i % 5),
        queue_drops: Some(i / 100),
    }
}

fn full_ring() -> History {
    let mut h = History::new();
    for i in 0..=900 {
        h.record(reading(i));
    }
    h
}

fn history(c: &mut Criterion) {
    let mut g = c.benchmark_group("history");
    let mut h = full_ring();
    let mut i = 901;
    g.bench_function("record_into_full_ring", |b| {
        b.iter(|| {
            h.record(reading(i));
            i += 1;
        })
    });
    let sb = Scoreboard::create_sealed("bench", 8).expect("segment");
    for slot in 0..8 {
        sb.writer(slot).expect("slot").set_state(SlotState::Ready);
    }
    g.bench_function("sample_history/8w", |b| b.iter(|| sb.sample_history()));
    let h = full_ring();
    g.bench_function("series/900", |b| b.iter(|| black_box(h.series())));
    let series: HistorySeries = h.series();
    g.bench_function("json/900", |b| {
        b.iter(|| black_box(serde_json::to_vec(&series).expect("json")))
    });
    g.bench_function("fit_64k/900", |b| {
        b.iter(|| black_box(series.fit(60 * 1024)))
    });
    let doc = StatusDoc::build_with(sb.snapshot(), |_| None).with_history(series.clone());
    let empty = StatusDoc::build_with(sb.snapshot(), |_| None);
    g.bench_function("html_with_900/8w", |b| {
        b.iter(|| black_box(html::render(&doc, &HtmlOptions::default())))
    });
    g.bench_function("html_without/8w", |b| {
        b.iter(|| black_box(html::render(&empty, &HtmlOptions::default())))
    });
    let with = html::render(&doc, &HtmlOptions::default()).len();
    let without = html::render(&empty, &HtmlOptions::default()).len();
    eprintln!("page: {with} bytes with 900 samples, {without} without");
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = history
}
criterion_main!(benches);
