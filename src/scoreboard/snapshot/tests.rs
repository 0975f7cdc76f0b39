//! Unit tests of reading a segment into a snapshot.
use super::super::Scoreboard;
use super::*;

#[test]
fn tracks_connections_requests_and_last() {
    let dir = tempfile::tempdir().unwrap();
    let sb = Scoreboard::create(&dir.path().join("s"), "t", 2).unwrap();
    let w = sb.writer(1).unwrap();
    let conn = w.conn_open("[::1]:5555".parse().unwrap());
    let mut req = conn.request_begin("POST", "/a/b", 11);
    assert!(req.set_info("user", "42"));
    let snap = sb.snapshot();
    let c = &snap.slots[1].connections[0];
    assert_eq!(c.client, "[::1]:5555".parse::<SocketAddr>().unwrap());
    let r = c.request.as_ref().unwrap();
    assert_eq!(
        (r.method.as_str(), r.path.as_str(), r.version.as_str()),
        ("POST", "/a/b", "HTTP/1.1")
    );
    assert_eq!(r.infos, vec![("user".to_string(), "42".to_string())]);
    assert_eq!(snap.totals.counters.requests_active, 1);
    req.set_status(503);
    drop(req);
    let snap = sb.snapshot();
    assert_eq!(snap.totals.counters.requests_total, 1);
    assert_eq!(snap.totals.counters.status[4], 1);
    assert_eq!(snap.totals.counters.histogram.count(), 1);
    assert!(snap.slots[1].connections[0].request.is_none());
    let last = snap.slots[1].last_request.clone().unwrap();
    assert_eq!((last.status, last.path.as_str()), (503, "/a/b"));
    drop(conn);
    let snap = sb.snapshot();
    assert!(snap.slots[1].connections.is_empty());
    assert_eq!(snap.totals.counters.conns_open, 0);
    assert_eq!(snap.totals.counters.conns_total, 1);
}

#[test]
fn overflow_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let sb = Scoreboard::create(&dir.path().join("s"), "t", 1).unwrap();
    let w = sb.writer(0).unwrap();
    let conns: Vec<_> = (0..super::super::CONN_ENTRIES + 3)
        .map(|i| w.conn_open(SocketAddr::from(([127, 0, 0, 1], i as u16))))
        .collect();
    let snap = sb.snapshot();
    assert_eq!(snap.slots[0].connections.len(), super::super::CONN_ENTRIES);
    assert_eq!(snap.slots[0].counters.conn_overflow, 3);
    assert_eq!(snap.slots[0].counters.conns_open, conns.len() as u64);
    drop(conns);
    assert_eq!(sb.snapshot().slots[0].counters.conns_open, 0);
    // Freed entries are reused.
    let _c = w.conn_open("127.0.0.1:1".parse().unwrap());
    assert_eq!(sb.snapshot().slots[0].connections.len(), 1);
}

#[test]
fn master_reset_keeps_counters() {
    let dir = tempfile::tempdir().unwrap();
    let sb = Scoreboard::create(&dir.path().join("s"), "t", 1).unwrap();
    let w = sb.writer(0).unwrap();
    let conn = w.conn_open("127.0.0.1:1".parse().unwrap());
    conn.request_begin("GET", "/", 11).finish(200, 5);
    // The worker dies with a request in flight on an open connection.
    std::mem::forget(conn.request_begin("GET", "/slow", 11));
    std::mem::forget(conn);
    sb.slot_exited(0, 9);
    let s = &sb.snapshot().slots[0];
    assert_eq!((s.counters.conns_open, s.counters.requests_active), (0, 0));
    assert_eq!((s.counters.conns_total, s.counters.requests_total), (1, 1));
    assert!(s.connections.is_empty());
    assert_eq!(s.state, SlotState::Dead);
}

#[test]
fn no_torn_entries_under_concurrent_writes() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let sb = Scoreboard::create(&dir.path().join("s"), "t", 1).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // Each request's path is one character repeated `k` times and its method is `M{k}`:
    // a torn read would mix two requests.
    let writers: Vec<_> = (0..2)
        .map(|t| {
            let w = sb.writer(0).unwrap();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let conn = w.conn_open(SocketAddr::from(([127, 0, 0, 1], 1000 + t)));
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let k = (n % 100) as usize + 1;
                    let c = char::from(b'a' + (n % 26) as u8);
                    let req = conn.request_begin(
                        &format!("M{k}"),
                        &format!("/{}", c.to_string().repeat(k)),
                        11,
                    );
                    req.set_info("k", &k.to_string());
                    req.finish(200, 0);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut checked = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(700);
    while std::time::Instant::now() < deadline {
        for c in &sb.snapshot().slots[0].connections {
            if let Some(r) = &c.request {
                let k: usize = r.method[1..].parse().unwrap();
                assert_eq!(r.path.len(), k + 1, "torn: {r:?}");
                let first = r.path.as_bytes()[1];
                assert!(r.path.bytes().skip(1).all(|b| b == first), "torn: {r:?}");
                if let Some((_, v)) = r.infos.iter().find(|(key, _)| key == "k") {
                    assert_eq!(v.parse::<usize>().unwrap(), k, "torn info: {r:?}");
                }
                checked += 1;
            }
        }
        if let Some(last) = &sb.snapshot().slots[0].last_request {
            let first = last.path.as_bytes()[1];
            assert!(
                last.path.bytes().skip(1).all(|b| b == first),
                "torn last: {last:?}"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    let written: u64 = writers.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(checked > 0 && written > 0);
    assert_eq!(sb.snapshot().totals.counters.requests_total, written);
}
