//! The writer's tests over a real segment: lanes, threads, a new worker in a used slot.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::*;

use super::lane::thread_token;
use super::ConnGuard;
use crate::scoreboard::raw::layout::{LANE_OWN, LANE_SHARED};
use crate::scoreboard::status::index;
use crate::scoreboard::Scoreboard;

fn segment(slots: usize) -> (tempfile::TempDir, Scoreboard) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sb = Scoreboard::create(&dir.path().join("s"), "t", slots).expect("segment");
    (dir, sb)
}

fn peer() -> SocketAddr {
    "127.0.0.1:4000".parse().expect("addr")
}

#[test]
fn first_writing_thread_owns_the_plain_lane_others_share_the_atomic_one() {
    let (_dir, sb) = segment(1);
    let w = sb.writer(0).expect("writer");
    let conn = w.conn_open(peer());
    conn.request_begin("GET", "/", 11).finish(200, 1);
    let slot = sb.slot(0).expect("slot");
    assert_eq!(slot.counters[LANE_OWN].owner.load(Relaxed), thread_token());
    assert_eq!(slot.counters[LANE_OWN].status[index(200)].load(Relaxed), 1);
    let w2 = w.clone();
    std::thread::spawn(move || {
        w2.conn_open(peer())
            .request_begin("GET", "/b", 11)
            .finish(404, 0);
    })
    .join()
    .expect("thread");
    assert_eq!(
        slot.counters[LANE_SHARED].status[index(404)].load(Relaxed),
        1
    );
    assert_eq!(slot.counters[LANE_OWN].status[index(404)].load(Relaxed), 0);
    // The other thread's request finished last: it is the slot's last request.
    let snap = sb.snapshot();
    let last = snap.slots[0].last_request.as_ref().expect("last request");
    assert_eq!((last.path.as_str(), last.status), ("/b", 404));
    assert_eq!(snap.slots[0].counters.requests_total, 2);
    drop(conn);
    assert_eq!(sb.snapshot().slots[0].counters.conns_open, 0);
}

#[test]
fn threads_on_one_slot_lose_no_count() {
    let (_dir, sb) = segment(1);
    let w = sb.writer(0).expect("writer");
    const THREADS: u64 = 4;
    const EACH: u64 = 5_000;
    // Connections opened on one thread and closed on another: the gauge is raised on one
    // lane and lowered on the other, and still sums to zero.
    let conns: Vec<ConnGuard> = (0..THREADS).map(|_| w.conn_open(peer())).collect();
    let handles: Vec<_> = conns
        .into_iter()
        .map(|conn| {
            std::thread::spawn(move || {
                for i in 0..EACH {
                    let mut r = conn.request_begin("GET", "/x", if i % 2 == 0 { 11 } else { 20 });
                    r.set_status(200);
                    r.finish_with_bytes(3);
                    conn.writer().add_bytes_out(10);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    let s = &sb.snapshot().slots[0];
    assert_eq!(s.counters.requests_total, THREADS * EACH);
    assert_eq!(s.counters.status[1], THREADS * EACH);
    assert_eq!(
        s.counters.histogram.counts.iter().sum::<u64>(),
        THREADS * EACH
    );
    assert_eq!(s.counters.bytes_out, THREADS * EACH * 10);
    assert_eq!(
        (
            s.counters.requests_active,
            s.counters.conns_open,
            s.counters.conns_total
        ),
        (0, 0, THREADS)
    );
}

#[test]
fn a_new_worker_claims_the_owner_lane_afresh() {
    let (_dir, sb) = segment(1);
    let w = sb.writer(0).expect("writer");
    w.conn_open(peer())
        .request_begin("GET", "/", 11)
        .finish(200, 0);
    let owner = &sb.slot(0).expect("slot").counters[LANE_OWN].owner;
    assert_ne!(owner.load(Relaxed), 0);
    sb.slot_exited(0, 0);
    assert_eq!(owner.load(Relaxed), 0);
    owner.store(12345, Relaxed); // a foreign token: this thread must use the shared lane
    w.conn_open(peer())
        .request_begin("GET", "/", 11)
        .finish(200, 0);
    let slot = sb.slot(0).expect("slot");
    assert_eq!(
        slot.counters[LANE_SHARED].status[index(200)].load(Relaxed),
        1
    );
    sb.slot_spawned(0, 1, 2);
    assert_eq!(
        owner.load(Relaxed),
        12345,
        "a spawn leaves the lane to the running worker"
    );
    assert_eq!(sb.snapshot().slots[0].counters.requests_total, 2);
}

#[test]
fn unix_clients_show_as_unix_in_the_table_and_the_last_request() {
    let (_dir, sb) = segment(1);
    let w = sb.writer(0).expect("writer");
    let tcp = w.conn_open(peer());
    let unix = w.conn_open_unix();
    let req = unix.request_begin("GET", "/over-unix", 11);
    let snap = sb.snapshot();
    let clients: Vec<String> = snap.slots[0]
        .connections
        .iter()
        .map(|c| c.client.to_string())
        .collect();
    assert_eq!(clients, ["127.0.0.1:4000", "unix"]);
    req.finish(200, 0);
    let snap = sb.snapshot();
    let last = snap.slots[0].last_request.as_ref().expect("last");
    assert_eq!(last.client.to_string(), "unix");
    let json = serde_json::to_value(&snap.slots[0]).expect("json");
    assert_eq!(json["connections"][1]["client"], "unix");
    assert_eq!(json["connections"][0]["client"], "127.0.0.1:4000");
    drop((tcp, unix));
}

#[test]
fn tls_handshake_failures_count_from_every_thread() {
    let (_dir, sb) = segment(2);
    let w = sb.writer(1).expect("writer");
    w.tls_handshake_failed();
    let w2 = w.clone();
    std::thread::spawn(move || w2.tls_handshake_failed())
        .join()
        .expect("thread");
    let snap = sb.snapshot();
    assert_eq!(snap.slots[1].counters.tls_handshake_failures, 2);
    assert_eq!(snap.slots[0].counters.tls_handshake_failures, 0);
    assert_eq!(snap.totals.counters.tls_handshake_failures, 2);
}

#[test]
fn a_connection_route_is_display_only_a_request_route_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sb = Scoreboard::create_with_routes(&dir.path().join("s"), "t", 1, 4).expect("segment");
    let conn = sb.writer(0).expect("writer").conn_open(peer());
    let req = conn.request_begin("GET", "/u/7", 11);
    conn.set_route("/u/{id}");
    let snap = sb.snapshot();
    let shown = snap.slots[0].connections[0]
        .request
        .as_ref()
        .expect("in flight");
    assert_eq!(
        (shown.path.as_str(), shown.route.as_str()),
        ("/u/7", "/u/{id}")
    );
    req.finish(200, 0);
    assert!(sb.snapshot().routes.is_empty(), "shown, not counted");
    let mut req = conn.request_begin("GET", "/u/8", 11);
    let snap = sb.snapshot();
    let shown = snap.slots[0].connections[0]
        .request
        .as_ref()
        .expect("in flight");
    assert_eq!(shown.route, "", "a new request starts without a route");
    req.set_route("/u/{id}");
    req.finish(201, 0);
    let snap = sb.snapshot();
    assert_eq!(snap.routes.len(), 1);
    assert_eq!(
        snap.routes[0].codes.seen().collect::<Vec<_>>(),
        [("201", 1)]
    );
    let last = snap.slots[0].last_request.as_ref().expect("last");
    assert_eq!(
        (last.path.as_str(), last.route.as_str()),
        ("/u/8", "/u/{id}")
    );
}
