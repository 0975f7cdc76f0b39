//! Clients for the guards' tests: one request on a fresh connection (retried only when the
//! server closed it before the request was sent), a bounded-rate request loop on a thread,
//! and `wrk` with its error lines parsed.

use std::io::{self, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::support::http::{connect, parse_response};
use crate::support::tools::require_tool;
use crate::support::{kill_and_reap, send_signal, wait_child, Response};

/// Tries of one fresh-connection request whose connection the server closed before the
/// request was written (a draining worker closes a connection that sent nothing yet).
const UNSENT_TRIES: u32 = 5;
/// Longest `wrk` may take to print its report after SIGINT.
const WRK_STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// How one fresh-connection request went.
#[derive(Debug)]
pub struct Fresh {
    /// The answer.
    pub resp: Response,
    /// Connections the server closed before the request was sent (retried: never sent).
    pub unsent: u32,
}

/// `GET path` on a new connection (`Connection: close`), read to the end. The request is
/// written only once the connection is seen open (not closed by the server before it was
/// sent); a connection closed before the request was written is replaced (at most
/// [`UNSENT_TRIES`] times). A request that was written is never retried: any error after
/// that is returned.
pub fn fresh_get(port: u16, path: &str) -> Result<Fresh, String> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    let mut unsent = 0;
    loop {
        let mut s = connect(port).map_err(|e| format!("connect: {e}"))?;
        if closed_before_send(&s).map_err(|e| format!("probe: {e}"))? {
            unsent += 1;
            if unsent >= UNSENT_TRIES {
                return Err(format!("{unsent} connections closed before the request"));
            }
            continue;
        }
        s.write_all(req.as_bytes())
            .map_err(|e| format!("write {path}: {e}"))?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .map_err(|e| format!("read {path} ({} bytes read): {e}", raw.len()))?;
        let resp = parse_response(&raw, false).map_err(|e| format!("{path}: {e}"))?;
        return Ok(Fresh { resp, unsent });
    }
}

/// Whether the server already closed `s` (end of file or reset waiting, nothing sent yet).
fn closed_before_send(s: &std::net::TcpStream) -> io::Result<bool> {
    s.set_nonblocking(true)?;
    let mut b = [0u8; 1];
    let closed = match s.peek(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => true,
        Err(e) => return Err(e),
    };
    s.set_nonblocking(false)?;
    Ok(closed)
}

/// What a [`RateLoop`] saw.
#[derive(Debug, Default, Clone)]
pub struct LoopResult {
    /// Requests answered 200.
    pub ok: u64,
    /// Every other outcome (status or error), in order.
    pub failures: Vec<String>,
    /// Connections closed before their request was sent (replaced, not failures).
    pub unsent: u64,
    /// The body of each 200 answer, counted (e.g. the pids that answered `/pid`).
    pub bodies: std::collections::BTreeMap<String, u64>,
}

/// `GET path` on fresh connections at a bounded rate on a thread, until stopped (or
/// `max_run` passed). Stopped and joined on drop.
#[derive(Debug)]
pub struct RateLoop {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    result: Arc<Mutex<LoopResult>>,
    thread: Option<JoinHandle<()>>,
}

impl RateLoop {
    /// Starts sending `path` to 127.0.0.1:`port` about `per_sec` times a second (slower
    /// when the answers are slower; it never bursts to catch up), for at most `max_run`.
    pub fn start(port: u16, path: &str, per_sec: u32, max_run: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let result = Arc::new(Mutex::new(LoopResult::default()));
        let (st, okc, res, path) = (stop.clone(), ok.clone(), result.clone(), path.to_string());
        let gap = Duration::from_secs(1) / per_sec.max(1);
        let thread = std::thread::spawn(move || {
            let begun = Instant::now();
            let mut next = begun;
            while !st.load(Ordering::Relaxed) && begun.elapsed() < max_run {
                let now = Instant::now();
                if next > now {
                    // Pacing, not waiting for a condition.
                    std::thread::sleep(next - now);
                }
                next = next.max(now) + gap;
                let outcome = fresh_get(port, &path);
                let mut r = res.lock().unwrap_or_else(PoisonError::into_inner);
                match outcome {
                    Ok(f) => {
                        r.unsent += u64::from(f.unsent);
                        if f.resp.status == 200 {
                            r.ok += 1;
                            okc.fetch_add(1, Ordering::Relaxed);
                            *r.bodies.entry(f.resp.text()).or_default() += 1;
                        } else {
                            r.failures.push(format!(
                                "{path}: status {} {:?}",
                                f.resp.status,
                                f.resp.text()
                            ));
                        }
                    }
                    Err(e) => r.failures.push(e),
                }
            }
        });
        Self {
            stop,
            ok,
            result,
            thread: Some(thread),
        }
    }

    /// Requests answered 200 so far.
    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Failures so far.
    pub fn failures(&self) -> Vec<String> {
        self.lock().failures.clone()
    }

    /// Stops and joins the thread; returns what it saw.
    pub fn stop(mut self) -> LoopResult {
        self.halt();
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LoopResult> {
        self.result.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RateLoop {
    fn drop(&mut self) {
        self.halt();
    }
}

/// `wrk`'s report, parsed.
#[derive(Debug, Clone)]
pub struct WrkReport {
    /// Requests it completed ("N requests in …").
    pub requests: u64,
    /// "Socket errors: connect, read, write, timeout" (zeros when the line is missing: wrk
    /// prints it only when there were some).
    pub socket_errors: [u64; 4],
    /// "Non-2xx or 3xx responses: N" (0 when missing).
    pub non_2xx: u64,
    /// The whole report.
    pub text: String,
}

impl WrkReport {
    /// Parses wrk's standard output.
    pub fn parse(text: &str) -> Self {
        let requests = text
            .lines()
            .find_map(|l| l.trim().split_once(" requests in "))
            .and_then(|(n, _)| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no request count in wrk's report:\n{text}"));
        let mut socket_errors = [0; 4];
        if let Some(line) = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Socket errors:"))
        {
            for (i, name) in ["connect", "read", "write", "timeout"].iter().enumerate() {
                socket_errors[i] = line
                    .split(',')
                    .find_map(|f| f.trim().strip_prefix(name)?.trim().parse().ok())
                    .unwrap_or_else(|| panic!("no {name} count in {line:?}"));
            }
        }
        let non_2xx = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
            .map(|n| {
                n.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("bad Non-2xx line {n:?}"))
            })
            .unwrap_or(0);
        Self {
            requests,
            socket_errors,
            non_2xx,
            text: text.to_string(),
        }
    }

    /// Panics (with the report) unless every request got a 2xx and no socket failed.
    pub fn assert_clean(&self) {
        assert!(
            self.requests > 0 && self.socket_errors == [0; 4] && self.non_2xx == 0,
            "wrk saw failures (socket errors connect/read/write/timeout {:?}, non-2xx {}):\n{}",
            self.socket_errors,
            self.non_2xx,
            self.text
        );
    }
}

/// A running `wrk -tT -cC -dSECS URL` (keep-alive connections). Stopped early with SIGINT
/// (it then prints its report as at the end of its run); killed and reaped on drop.
#[derive(Debug)]
pub struct Wrk {
    child: Child,
    out: Option<JoinHandle<String>>,
    err: Option<JoinHandle<String>>,
}

impl Wrk {
    /// Starts wrk against `http://127.0.0.1:PORT/PATH` with `threads` threads and `conns`
    /// connections for at most `secs` seconds.
    pub fn start(port: u16, path: &str, threads: u32, conns: u32, secs: u64) -> Self {
        let wrk = require_tool("wrk", "wrk");
        let mut child = Command::new(wrk)
            .args([
                format!("-t{threads}"),
                format!("-c{conns}"),
                format!("-d{secs}s"),
                format!("http://127.0.0.1:{port}{path}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wrk");
        let out = drain(child.stdout.take().expect("wrk stdout"));
        let err = drain(child.stderr.take().expect("wrk stderr"));
        Self {
            child,
            out: Some(out),
            err: Some(err),
        }
    }

    /// Whether wrk is still running (its run has not ended by itself).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops wrk now (SIGINT, unless it already finished) and returns its report.
    pub fn stop(mut self) -> WrkReport {
        if matches!(self.child.try_wait(), Ok(None)) {
            send_signal(self.child.id(), Signal::SIGINT);
        }
        self.finish(WRK_STOP_TIMEOUT)
    }

    /// Waits for wrk's run to end (at most `timeout`, then it is killed and the call panics)
    /// and returns its report.
    pub fn finish(mut self, timeout: Duration) -> WrkReport {
        let status = wait_child(&mut self.child, timeout);
        let out = self.out.take().map(join).unwrap_or_default();
        let err = self.err.take().map(join).unwrap_or_default();
        let status = status.unwrap_or_else(|| {
            kill_and_reap(&mut self.child);
            panic!("wrk still running after {timeout:?}:\n{out}{err}")
        });
        assert!(status.success(), "wrk failed ({status}):\n{out}{err}");
        WrkReport::parse(&out)
    }
}

impl Drop for Wrk {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

fn drain(mut r: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

fn join(h: JoinHandle<String>) -> String {
    h.join().unwrap_or_default()
}
