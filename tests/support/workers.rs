//! Requests to the demo workers: bursts that show which worker answered, exact request
//! counts, keep-alive connections spread over chosen slots, and background traffic.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::http::bad_data;
use super::{get, wait_until, Http, Response, POLL_INTERVAL};

/// Opens `n` connections at once, then sends `GET /pid` on each and reads every answer while
/// all are still open. Returns the pid that answered on each connection. Holding them all
/// open makes every worker that spreads load take some of them.
pub fn pid_burst(port: u16, n: usize) -> io::Result<Vec<u32>> {
    let mut conns = (0..n)
        .map(|_| Http::connect(port))
        .collect::<io::Result<Vec<_>>>()?;
    for c in &mut conns {
        c.send_get("/pid")?;
    }
    let mut pids = Vec::with_capacity(n);
    for c in &mut conns {
        let r = c.read_response()?;
        if r.status != 200 {
            return Err(bad_data(format!("/pid answered {}", r.status)));
        }
        pids.push(r.pid());
    }
    for c in conns {
        c.close();
    }
    Ok(pids)
}

/// Sends bursts of `/pid` requests until every pid of `want` has answered at least once
/// (panics after `timeout`). Returns how many requests it sent.
pub fn wait_pids_answer(port: u16, want: &[u32], timeout: Duration) -> usize {
    let mut seen = BTreeSet::new();
    let mut sent = 0;
    wait_until(timeout, &format!("pids {want:?} to answer /pid"), || {
        let pids = pid_burst(port, 8).expect("/pid burst");
        sent += pids.len();
        seen.extend(pids);
        want.iter().all(|p| seen.contains(p))
    });
    sent
}

/// Sends exactly `k` `GET /` requests to the workers on `port`, each answered 200: half on
/// one keep-alive connection, the rest one per new connection.
pub fn send_requests(port: u16, k: u64) {
    let keepalive = k / 2;
    let mut c = Http::connect(port).expect("connect to the workers");
    for i in 0..keepalive {
        let r = c
            .get("/")
            .unwrap_or_else(|e| panic!("keep-alive request {i}: {e}"));
        assert_eq!(r.status, 200, "keep-alive request {i}");
    }
    c.close();
    for i in keepalive..k {
        let r = get(port, "/").unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(r.status, 200, "request {i}");
    }
}

/// Client threads sending requests to the workers until stopped: one on a keep-alive
/// connection (`/`, `/pid`), one sending `/slow?ms=50` on new connections, so scrapes see
/// requests in flight. Stopped and joined on drop.
#[derive(Debug)]
pub struct Traffic {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Traffic {
    /// Starts the client threads against 127.0.0.1:`port`.
    pub fn start(port: u16) -> Self {
        let mut t = Self {
            stop: Arc::new(AtomicBool::new(false)),
            sent: Arc::new(AtomicU64::new(0)),
            errors: Arc::new(Mutex::new(Vec::new())),
            threads: Vec::new(),
        };
        t.spawn(port, false);
        t.spawn(port, true);
        t
    }

    fn spawn(&mut self, port: u16, slow: bool) {
        let (stop, sent, errors) = (self.stop.clone(), self.sent.clone(), self.errors.clone());
        self.threads.push(std::thread::spawn(move || {
            let mut conn: Option<Http> = None;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let result = if slow {
                    get(port, "/slow?ms=50")
                } else {
                    let path = if n % 3 == 0 { "/pid" } else { "/" };
                    let c = match conn.take() {
                        Some(c) => Ok(c),
                        None => Http::connect(port),
                    };
                    c.and_then(|mut c| {
                        let r = c.get(path);
                        conn = Some(c);
                        r
                    })
                };
                n += 1;
                match result {
                    Ok(r) if r.status == 200 => {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => errors.lock().unwrap().push(format!("status {}", r.status)),
                    Err(e) => {
                        conn = None;
                        errors.lock().unwrap().push(e.to_string());
                    }
                }
            }
            if let Some(c) = conn {
                c.close();
            }
        }));
    }

    /// Requests answered 200 so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Errors seen so far.
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }

    /// Stops and joins the threads; returns how many requests were answered 200.
    pub fn stop(mut self) -> u64 {
        self.halt();
        self.sent()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Longest wait for one keep-alive connection to each wanted worker slot.
pub const SPREAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections held open at most while looking for the wanted slots (each worker's table
/// shows 64; the fairness rule makes a loaded worker yield long before that).
const SPREAD_MAX_SPARE: usize = 120;

/// Sends `GET target` on `c` and returns the response; panics on an I/O error.
pub fn call(c: &mut Http, target: &str) -> Response {
    c.get(target)
        .unwrap_or_else(|e| panic!("GET {target} on a keep-alive connection: {e}"))
}

/// Sends `GET target` on `c`; panics unless it answers 200. Returns the body.
pub fn call_ok(c: &mut Http, target: &str) -> String {
    let r = call(c, target);
    assert_eq!(r.status, 200, "GET {target}: {}", r.text());
    r.text()
}

/// The worker slot `c` reached (`GET /slot`).
pub fn slot_of(c: &mut Http) -> usize {
    let body = call_ok(c, "/slot");
    body.trim()
        .parse()
        .unwrap_or_else(|_| panic!("/slot answered {body:?}"))
}

/// Opens keep-alive connections to the workers on `port`, all held open at once so the
/// workers' fairness rule spreads them, until it holds one to each slot of `slots`. Returns
/// those connections by slot; the spare ones are closed. Panics after [`SPREAD_TIMEOUT`].
pub fn conns_by_slot(port: u16, slots: &[usize]) -> BTreeMap<usize, Http> {
    let deadline = std::time::Instant::now() + SPREAD_TIMEOUT;
    let mut held: BTreeMap<usize, Http> = BTreeMap::new();
    let mut spare: Vec<Http> = Vec::new();
    let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
    while slots.iter().any(|s| !held.contains_key(s)) {
        assert!(
            std::time::Instant::now() < deadline,
            "no connection reached slots {slots:?} in {SPREAD_TIMEOUT:?} (connections per \
             slot: {seen:?})"
        );
        if spare.len() >= SPREAD_MAX_SPARE {
            // Start over: the workers saw the burst end and compare afresh.
            for c in spare.drain(..) {
                c.close();
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        let mut c = Http::connect(port).expect("connect to the workers");
        let slot = slot_of(&mut c);
        *seen.entry(slot).or_default() += 1;
        if slots.contains(&slot) && !held.contains_key(&slot) {
            held.insert(slot, c);
        } else {
            spare.push(c);
        }
    }
    for c in spare {
        c.close();
    }
    held
}
