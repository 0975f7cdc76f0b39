//! Helpers shared by the integration tests, one room per concern:
//!
//! - [`cluster`]: starting a real `flora-cluster` master ([`TestDir::master`], the one way
//!   tests do it) and the [`Cluster`] guard around it;
//! - [`http`]: a tiny blocking HTTP/1.1 client and one-shot raw requests;
//! - [`otlp`]: a real OTLP/HTTP receiver and readers of what it got;
//! - [`status_server`]: the master's status server (`/metrics` scrapes, status documents);
//! - [`workers`]: requests to the demo workers (load, spreading over slots, traffic);
//! - [`exposition`]: a parser of the text exposition formats;
//! - [`tools`]: real external tools (`promtool`, Python's OpenMetrics parser, `prometheus`,
//!   `prometheus-apache-exporter`) and the one `promtool` assertion;
//! - [`tls`]: test certificates (rcgen) and curl over HTTPS;
//! - `process` and [`hostile`]: process probes and signals; acting as another user;
//! - [`backlog`]: stopped workers and pending connects, to fill an accept queue;
//! - [`upgrade`]: master upgrades from the outside (binary copies, the CLI's line, pids).
//! - [`chromium`]: headless Chromium runs and test artifacts;
//! - [`png`]: decoding a screenshot to count its pixels.
//!
//! Every wait here is a poll of a condition with a deadline; nothing sleeps in place of
//! waiting. Every process a test starts is killed by pid and reaped by its guard.

#![allow(
    dead_code,
    unused_imports,
    reason = "each test binary includes this module and uses only part of it"
)]

pub mod backlog;
pub mod chromium;
pub mod cluster;
pub mod exposition;
pub mod guards;
pub mod hostile;
pub mod http;
pub mod otlp;
pub mod png;
mod process;
pub mod self_worker;
pub mod status_server;
pub mod tls;
pub mod tools;
pub mod upgrade;
pub mod workers;

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use cluster::{run_master_to_exit, Cluster, MasterCommand, TestDir};
pub use http::{get, Http, Response, IO_TIMEOUT};
pub use process::{
    kill9, kill_and_reap, pid_alive, pids_with_cmdline, proc_cmdline, proc_state, send_signal,
    term, wait_child,
};
pub use workers::{pid_burst, wait_pids_answer};

/// The master binary under test.
pub const MASTER_BIN: &str = env!("CARGO_BIN_EXE_flora-cluster");
/// The demo worker binary.
pub const DEMO_BIN: &str = env!("CARGO_BIN_EXE_flora-demo");

/// Longest wait for a cluster to start and all its workers to be ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for a master to exit after a stop signal (its drain is short when idle).
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause between two checks of a polled condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// Drain time given to the master in tests (keeps a stuck drain inside the test deadlines).
pub const SHUTDOWN_TIMEOUT_SECS: &str = "10";

/// Polls `cond` every [`POLL_INTERVAL`] until it returns `Some`, or panics naming `what`
/// after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
    poll(timeout, what, || cond().ok_or_else(String::new))
}

/// Polls `cond` every [`POLL_INTERVAL`] until it holds, or panics naming `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    wait_for(timeout, what, || cond().then_some(()));
}

/// Polls `cond` every [`POLL_INTERVAL`] until it returns `Ok`; after `timeout` panics
/// naming `what` and showing the last non-empty `Err` (the context a failure needs, e.g. a
/// scrape).
pub fn poll<T>(timeout: Duration, what: &str, mut cond: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match cond() {
            Ok(v) => return v,
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            let seen = if last.is_empty() {
                String::new()
            } else {
                format!("; last observation:\n{last}")
            };
            panic!("timed out after {timeout:?} waiting for {what}{seen}");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Runs `check` every [`POLL_INTERVAL`] for the whole of `window` (the check asserts).
/// Used to show that something *stays* true, not to wait for something.
pub fn hold_for(window: Duration, mut check: impl FnMut()) {
    let end = Instant::now() + window;
    loop {
        check();
        if Instant::now() >= end {
            return;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago, below the kernel's ephemeral range:
/// a port the kernel handed out for `:0` could be handed out again — to another test's
/// `:0` bind or to an outgoing connection — before the master binds it ("address in use").
/// Ports below the range are never handed out; a per-process counter keeps this process's
/// tests apart, the bind check skips ports anything else holds.
pub fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<usize>().ok())
        .unwrap_or(32768);
    const FIRST: usize = 10_000;
    if low <= FIRST + 1000 {
        // An unusual range: fall back to the kernel's choice.
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        return l.local_addr().expect("local_addr").port();
    }
    let span = low - FIRST;
    let start = (std::process::id() as usize).wrapping_mul(7919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(FIRST + (start + n) % span).expect("port below 65536");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 127.0.0.1:{FIRST}..{low}");
}
