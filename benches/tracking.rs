//! The tracking hot path: what a worker pays per connection and per request.
//!
//! `cargo bench --bench tracking`. Compare `request/begin_end` with `baseline/two_clock_reads`
//! (the two timestamps any latency metric needs) to see the scoreboard's own cost.
#![allow(missing_docs, reason = "criterion macros generate undocumented items")]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use flora_cluster::scoreboard::Scoreboard;

fn segment(slots: usize) -> (tempfile::TempDir, Scoreboard) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sb =
        Scoreboard::create(&dir.path().join("bench.scoreboard"), "bench", slots).expect("segment");
    (dir, sb)
}

fn peer() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 40000))
}

fn single_thread(c: &mut Criterion) {
    let (_dir, sb) = segment(4);
    let w = sb.writer(0).expect("slot");
    let mut g = c.benchmark_group("tracking");
    g.bench_function("baseline/two_clock_reads", |b| {
        b.iter(|| {
            let t = Instant::now();
            black_box(t.elapsed())
        })
    });
    g.bench_function("baseline/two_scoreboard_clock_reads", |b| {
        // The clock the tracking uses (TSC-based once calibrated): what a request pays for time.
        std::thread::sleep(std::time::Duration::from_millis(50));
        b.iter(|| {
            let t = flora_cluster::scoreboard::now_ns();
            black_box(flora_cluster::scoreboard::now_ns() - t)
        })
    });
    g.bench_function("conn/open_close", |b| {
        b.iter(|| drop(black_box(w.conn_open(peer()))))
    });
    let conn = w.conn_open(peer());
    g.bench_function("request/begin_end", |b| {
        b.iter(|| {
            conn.request_begin(black_box("GET"), black_box("/api/users/42"), 11)
                .finish(200, 12)
        })
    });
    g.bench_function("request/begin_info_end", |b| {
        b.iter(|| {
            let r = conn.request_begin("GET", "/api/users/42", 11);
            r.set_info("user", "42");
            r.finish(200, 12)
        })
    });
    g.bench_function("conn_and_request/open_begin_end_close", |b| {
        b.iter(|| {
            let conn = w.conn_open(peer());
            conn.request_begin("GET", "/", 11).finish(200, 12);
        })
    });
    // Per-route metrics on: the route resolved through the per-process cache, its cells counted.
    let (_rdir, rsb) = {
        let dir = tempfile::tempdir().expect("tempdir");
        let sb =
            Scoreboard::create_with_routes(&dir.path().join("r"), "bench", 4, 64).expect("segment");
        (dir, sb)
    };
    let rconn = rsb.writer(0).expect("slot").conn_open(peer());
    g.bench_function("request/begin_route_end", |b| {
        b.iter(|| {
            let mut r = rconn.request_begin("GET", "/api/users/42", 11);
            r.set_route(black_box("/api/users/{id}"));
            r.finish(200, 12)
        })
    });
    g.bench_function("bytes/add_in_out", |b| {
        b.iter(|| {
            w.add_bytes_in(black_box(100));
            w.add_bytes_out(black_box(200));
        })
    });
    g.finish();
}

fn two_threads(c: &mut Criterion) {
    let (_dir, sb) = segment(4);
    let mut g = c.benchmark_group("tracking_2_threads_one_slot");
    g.bench_function("request/begin_end", |b| {
        b.iter_custom(|iters| {
            let per = iters.div_ceil(2);
            let start = Instant::now();
            std::thread::scope(|s| {
                for t in 0..2u16 {
                    let w = sb.writer(0).expect("slot");
                    s.spawn(move || {
                        let conn = w.conn_open(SocketAddr::from(([127, 0, 0, 1], 40000 + t)));
                        for _ in 0..per {
                            conn.request_begin("GET", "/api/users/42", 11)
                                .finish(200, 12);
                        }
                    });
                }
            });
            // Per request across both threads (wall time / total requests × 2 threads).
            start.elapsed().mul_f64(iters as f64 / (2 * per) as f64)
        })
    });
    g.finish();
}

fn custom_metrics(c: &mut Criterion) {
    // A standalone worker registers into its private one-slot segment.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _guard = rt.enter();
    let worker = flora_cluster::Worker::from_env().expect("standalone worker");
    let counter = rt
        .block_on(worker.counter("bench_jobs_total", "Jobs."))
        .expect("counter");
    let gauge = rt
        .block_on(worker.gauge(
            "bench_depth",
            "Depth.",
            flora_cluster::scoreboard::Aggregation::Max,
        ))
        .expect("gauge");
    let hist = rt
        .block_on(worker.histogram("bench_seconds", "Time.", &[0.001, 0.01, 0.1, 1.0]))
        .expect("histogram");
    let conn = worker.slot_writer().conn_open(peer());
    let mut g = c.benchmark_group("custom");
    g.bench_function("counter/inc", |b| b.iter(|| counter.inc()));
    g.bench_function("gauge/set", |b| b.iter(|| gauge.set(black_box(3.0))));
    g.bench_function("gauge/add", |b| b.iter(|| gauge.add(black_box(1.0))));
    g.bench_function("histogram/observe", |b| {
        b.iter(|| hist.observe(black_box(0.005)))
    });
    let req = conn.request_begin("GET", "/x", 11);
    g.bench_function("request_info/set", |b| {
        b.iter(|| req.set_info(black_box("user"), black_box("42")))
    });
    g.finish();
    // The same updates from 2 threads at once on the one slot (cells shared by both threads).
    let mut g = c.benchmark_group("custom_2_threads_one_slot");
    g.bench_function("counter/inc", |b| {
        b.iter_custom(|iters| on_two_threads(iters, || counter.inc()))
    });
    g.bench_function("gauge/add", |b| {
        b.iter_custom(|iters| on_two_threads(iters, || gauge.add(black_box(1.0))))
    });
    g.bench_function("histogram/observe", |b| {
        b.iter_custom(|iters| on_two_threads(iters, || hist.observe(black_box(0.005))))
    });
    g.finish();
}

/// Runs `op` `iters` times split over 2 threads; the time per operation across both threads.
fn on_two_threads(iters: u64, op: impl Fn() + Sync) -> std::time::Duration {
    let per = iters.div_ceil(2);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..per {
                    op();
                }
            });
        }
    });
    start.elapsed().mul_f64(iters as f64 / (2 * per) as f64)
}

fn snapshot(c: &mut Criterion) {
    let mut g = c.benchmark_group("snapshot");
    for slots in [8usize, 64] {
        let (_dir, sb) = segment(slots);
        let conns: Vec<_> = (0..slots)
            .flat_map(|i| {
                let w = sb.writer(i).expect("slot");
                (0..4).map(move |_| w.conn_open(peer()))
            })
            .collect();
        let _inflight: Vec<_> = conns
            .iter()
            .map(|c| c.request_begin("GET", "/x", 11))
            .collect();
        g.bench_function(format!("read/{slots}_slots_4_conns_each"), |b| {
            b.iter(|| black_box(sb.snapshot()))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = single_thread, two_threads, custom_metrics, snapshot
}
criterion_main!(benches);
