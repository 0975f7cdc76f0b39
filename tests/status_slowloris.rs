//! The status server keeps answering scrapes while 600 slowloris clients hold connections:
//! each sends a partial request head, one more byte every [`TRICKLE`], and reconnects as soon
//! as it is dropped. Scrapes of `/metrics` with a 1 s budget (connect, request, whole answer)
//! must all succeed; their latency is printed (p50 and max).

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::TestDir;
use support::{http, status_server};

/// Slowloris sockets held open (and reopened) at once.
const ATTACKERS: usize = 600;
/// Threads driving them.
const THREADS: usize = 4;
/// Gap between two bytes on one slowloris socket.
const TRICKLE: Duration = Duration::from_millis(500);
/// Budget of one scrape: connect, send, read the whole answer.
const SCRAPE_BUDGET: Duration = Duration::from_secs(1);
/// Scrapes made under attack.
const SCRAPES: usize = 30;
/// Gap between two scrapes (Prometheus scrapes every 15 s; this is much denser).
const SCRAPE_GAP: Duration = Duration::from_millis(200);
/// Longest wait for every slowloris socket to have connected once.
const RAMP_TIMEOUT: Duration = Duration::from_secs(30);
/// Open files this test needs: the slowloris sockets plus a margin.
const NOFILE: u64 = 4096;

/// One slowloris socket: connected, or waiting to reconnect.
struct Slow {
    stream: Option<TcpStream>,
    next_byte: Instant,
}

/// Drives `count` slowloris sockets against `addr` until `stop`.
fn slowloris(
    addr: SocketAddr,
    count: usize,
    stop: Arc<AtomicBool>,
    connects: Arc<AtomicUsize>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut socks: Vec<Slow> = (0..count)
            .map(|_| Slow {
                stream: None,
                next_byte: Instant::now(),
            })
            .collect();
        let mut buf = [0u8; 512];
        while !stop.load(Ordering::Relaxed) {
            for s in &mut socks {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let alive = s.stream.as_mut().is_some_and(|st| match st.read(&mut buf) {
                    Ok(0) => false,
                    Ok(_) => true,
                    Err(e) => e.kind() == ErrorKind::WouldBlock,
                });
                if !alive {
                    s.stream = open(addr);
                    if s.stream.is_some() {
                        connects.fetch_add(1, Ordering::Relaxed);
                        s.next_byte = Instant::now() + TRICKLE;
                    }
                    continue;
                }
                if Instant::now() >= s.next_byte {
                    let ok = s.stream.as_mut().is_some_and(|st| st.write(b"a").is_ok());
                    if !ok {
                        s.stream = None;
                    }
                    s.next_byte = Instant::now() + TRICKLE;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

/// Connects and sends the start of a request head that never ends.
fn open(addr: SocketAddr) -> Option<TcpStream> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .ok()?;
    s.set_nonblocking(true).ok()?;
    Some(s)
}

/// One scrape within [`SCRAPE_BUDGET`]: its latency, or why it failed.
fn scrape(addr: SocketAddr) -> Result<Duration, String> {
    let start = Instant::now();
    let mut s =
        TcpStream::connect_timeout(&addr, SCRAPE_BUDGET).map_err(|e| format!("connect: {e}"))?;
    let left = |start: Instant| {
        SCRAPE_BUDGET
            .checked_sub(start.elapsed())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| "budget spent".to_string())
    };
    s.set_write_timeout(Some(left(start)?))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut body = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        s.set_read_timeout(Some(left(start)?))
            .map_err(|e| e.to_string())?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => body.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("read after {:?}: {e}", start.elapsed())),
        }
    }
    let resp = http::parse_response(&body, false).map_err(|e| e.to_string())?;
    if resp.status != 200 || !resp.text().contains("flora_http_requests_total") {
        return Err(format!("answer {}: {}", resp.status, resp.text()));
    }
    Ok(start.elapsed())
}

fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < NOFILE {
        setrlimit(Resource::RLIMIT_NOFILE, NOFILE.min(hard), hard).expect("setrlimit");
    }
}

#[test]
fn scrapes_succeed_while_600_slowloris_sockets_reconnect() {
    raise_nofile();
    let dir = TestDir::new("slowloris");
    let cluster = dir.start(support::free_port(), 1, &[]);
    cluster.wait_ready(1);
    let addr = SocketAddr::from(([127, 0, 0, 1], status_server::status_port(&cluster)));
    scrape(addr).expect("a scrape before the attack");

    let stop = Arc::new(AtomicBool::new(false));
    let connects = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| slowloris(addr, ATTACKERS / THREADS, stop.clone(), connects.clone()))
        .collect();
    let ramp = Instant::now();
    while connects.load(Ordering::Relaxed) < ATTACKERS && ramp.elapsed() < RAMP_TIMEOUT {
        std::thread::sleep(support::POLL_INTERVAL);
    }
    let ramped = connects.load(Ordering::Relaxed);

    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    for i in 0..SCRAPES {
        match scrape(addr) {
            Ok(d) => latencies.push(d),
            Err(e) => failures.push(format!("scrape {i}: {e}")),
        }
        std::thread::sleep(SCRAPE_GAP);
    }
    let reconnects = connects.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("slowloris thread");
    }
    latencies.sort();
    let p50 = latencies
        .get(latencies.len() / 2)
        .copied()
        .unwrap_or_default();
    let max = latencies.last().copied().unwrap_or_default();
    eprintln!(
        "slowloris: {ramped} connects before the scrapes, {reconnects} in all; {} of {SCRAPES} \
         scrapes ok, latency p50 {p50:?} max {max:?}",
        latencies.len()
    );
    assert!(
        ramped >= ATTACKERS,
        "only {ramped} slowloris connects in {RAMP_TIMEOUT:?}"
    );
    assert!(
        failures.is_empty(),
        "{} scrapes failed under attack:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The server is still in good shape once the attack stops.
    scrape(addr).expect("a scrape after the attack");
}
