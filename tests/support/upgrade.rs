//! Master upgrades from the outside: copies of the master binary to upgrade to, running
//! `flora-cluster upgrade` and reading its line, the pids that tell which master serves
//! (lock file, `status --json`), the processes of one test (marked by an environment
//! variable every master and worker inherits), and `wrk --latency` for the p99.
//!
//! A master started by an upgrade is the child of the one before it; once that one exits it
//! is reparented (not to the test), so the tests stop it by pid and wait for its exit in
//! `/proc` instead of reaping it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::{pid_alive, send_signal, wait_child, wait_until, TestDir, EXIT_TIMEOUT, MASTER_BIN};

/// The variable whose value marks every process of one test (masters and workers inherit it).
pub const MARK_VAR: &str = "FLORA_UPTEST_MARK";

/// Copies the master binary to `dir`'s scratch area as `file`, mode 0755; returns its path.
pub fn copy_master(dir: &TestDir, file: &str) -> PathBuf {
    let path = dir.scratch(file);
    std::fs::copy(MASTER_BIN, &path).expect("copy the master binary");
    set_mode(&path, 0o755);
    path
}

/// Writes an executable shell script `file` (mode 0755) with `body` after the `#!` line.
pub fn script(dir: &TestDir, file: &str, body: &str) -> PathBuf {
    let path = dir.scratch(file);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    set_mode(&path, 0o755);
    path
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .expect("chmod");
}

/// `flora-cluster upgrade [--binary PATH]` for `dir`'s instance, run to completion.
pub fn upgrade(dir: &TestDir, binary: Option<&Path>) -> Output {
    let mut args = vec!["upgrade".to_string()];
    if let Some(b) = binary {
        args.extend(["--binary".to_string(), b.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    dir.ctl(&args)
}

/// A successful upgrade's line: `upgraded: master A -> B (..) in N ms; old master exited
/// after M ms more`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upgraded {
    /// The old master.
    pub from: u32,
    /// The new master.
    pub to: u32,
    /// "in N ms": from the request to the commit.
    pub ms: u64,
    /// "M ms more": from the commit until the old master was gone (`None` when the CLI
    /// stopped waiting while it still drained).
    pub exit_ms: Option<u64>,
}

impl Upgraded {
    /// Parses the CLI's stdout; panics (with it) when it is not a success line.
    pub fn parse(stdout: &str) -> Self {
        Self::try_parse(stdout).unwrap_or_else(|| panic!("not an upgrade success line: {stdout:?}"))
    }

    fn try_parse(stdout: &str) -> Option<Self> {
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("upgraded: master "))?;
        let num = |s: &str| s.trim().parse::<u64>().ok();
        let (from, rest) = line.split_once(" -> ")?;
        let (to, rest) = rest.split_once(' ')?;
        let ms = num(rest.split_once(") in ")?.1.split_once(" ms")?.0)?;
        let exit_ms = rest
            .split_once("exited after ")
            .and_then(|(_, r)| num(r.split_once(" ms")?.0));
        Some(Self {
            from: from.trim().parse().ok()?,
            to: to.trim().parse().ok()?,
            ms,
            exit_ms,
        })
    }
}

/// The output's stdout and stderr, for messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The pid written in the instance's lock file.
pub fn lock_pid(dir: &TestDir) -> u32 {
    let text = std::fs::read_to_string(dir.lock_path()).expect("read the lock file");
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("lock file holds {text:?}"))
}

/// `master_pid` of `flora-cluster status --json`.
pub fn status_master_pid(dir: &TestDir) -> u32 {
    let out = dir.ctl(&["status", "--json"]);
    assert!(out.status.success(), "status --json: {}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    doc["master_pid"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .unwrap_or_else(|| panic!("no master_pid in {doc}"))
}

/// Live processes whose environment holds `MARK_VAR=mark` (this process excluded).
pub fn marked_pids(mark: &str) -> Vec<u32> {
    let needle = format!("{MARK_VAR}={mark}");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
                && pid_alive(*pid)
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// The parent pid of `pid` (`None` when it is gone).
pub fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Stops a master that is not our child (started by an upgrade): SIGTERM by pid, then waits
/// until it and every process marked `mark` are gone (SIGKILL after [`EXIT_TIMEOUT`]).
pub fn stop_master(pid: u32, mark: &str) {
    assert!(
        try_stop(pid, mark),
        "processes of the test left: {:?}",
        marked_pids(mark)
    );
}

/// [`stop_master`] without panicking; returns whether everything is gone.
fn try_stop(pid: u32, mark: &str) -> bool {
    let gone_within = |d: Duration, cond: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + d;
        while !cond() && std::time::Instant::now() < deadline {
            std::thread::sleep(super::POLL_INTERVAL);
        }
        cond()
    };
    if pid_alive(pid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    gone_within(EXIT_TIMEOUT, &|| !pid_alive(pid));
    for p in marked_pids(mark) {
        eprintln!(
            "process {p} ({}) still running: SIGKILL",
            super::proc_cmdline(p)
        );
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p as i32), Signal::SIGKILL);
    }
    gone_within(EXIT_TIMEOUT, &|| marked_pids(mark).is_empty())
}

/// The test's current master (it changes with each upgrade): when the test fails, its drop
/// stops that master and every process marked `mark`, so nothing outlives the test.
#[derive(Debug)]
pub struct Current {
    mark: String,
    pid: std::cell::Cell<u32>,
}

impl Current {
    /// Starts tracking `pid`, the master of the processes marked `mark`.
    pub fn new(mark: &str, pid: u32) -> Self {
        Self {
            mark: mark.to_string(),
            pid: std::cell::Cell::new(pid),
        }
    }

    /// The master serving now.
    pub fn set(&self, pid: u32) {
        self.pid.set(pid);
    }
}

impl Drop for Current {
    fn drop(&mut self) {
        if std::thread::panicking() && !try_stop(self.pid.get(), &self.mark) {
            eprintln!("processes left: {:?}", marked_pids(&self.mark));
        }
    }
}

/// A running `wrk --latency -tC -cC -dSECS` (keep-alive, one connection per thread) with a
/// script that stops each thread right after a response once a flag file exists: no request
/// is left in flight, so the server's count equals wrk's exactly. Killed and reaped on drop.
#[derive(Debug)]
pub struct LatencyWrk {
    child: Option<Child>,
    out: PathBuf,
    flag: PathBuf,
}

/// The script: every 20th response, look for the flag; then stop this thread (its one
/// connection has no request out: the next one is written only after this callback). The
/// process runs on until SIGINT or its duration.
const STOP_SCRIPT: &str = r#"local n = 0
function response(status, headers, body)
  n = n + 1
  if n % 20 == 0 then
    local f = io.open(FLAG, "r")
    if f then
      f:close()
      wrk.thread:stop()
    end
  end
end
"#;

/// wrk's report with its latency percentiles.
#[derive(Debug, Clone)]
pub struct LatencyReport {
    /// The counts and errors.
    pub report: super::guards::client::WrkReport,
    /// The 99th percentile, in microseconds.
    pub p99_us: f64,
}

impl LatencyWrk {
    /// Starts wrk against `http://127.0.0.1:PORT/` with `conns` connections (one thread
    /// each) for at most `secs` seconds, writing its report to `out` (its script and flag
    /// go beside it).
    pub fn start(port: u16, conns: u32, secs: u64, out: PathBuf) -> Self {
        let wrk = super::tools::require_tool("wrk", "wrk");
        let flag = out.with_extension("stop");
        let script = out.with_extension("lua");
        let lua_path = format!("{:?}", flag.display().to_string());
        std::fs::write(&script, format!("local FLAG = {lua_path}\n{STOP_SCRIPT}"))
            .expect("write the wrk script");
        let child = Command::new(wrk)
            .args([
                "--latency".to_string(),
                format!("-t{conns}"),
                format!("-c{conns}"),
                format!("-d{secs}s"),
                "-s".to_string(),
                script.display().to_string(),
                format!("http://127.0.0.1:{port}/"),
            ])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("wrk log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn wrk");
        Self {
            child: Some(child),
            out,
            flag,
        }
    }

    /// Whether its run has not ended by itself.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops it between two requests of every connection and parses the report: raises the
    /// flag, waits until `served` (the server's request count) stands still (every thread
    /// stopped), then SIGINT ends wrk's run (it prints its report).
    pub fn stop(mut self, mut served: impl FnMut() -> u64) -> LatencyReport {
        let mut child = self.child.take().expect("wrk child");
        std::fs::write(&self.flag, b"stop").expect("write the stop flag");
        let mut last = u64::MAX;
        wait_until(Duration::from_secs(20), "wrk's threads stopped", || {
            let now = served();
            let still = now == last;
            last = now;
            std::thread::sleep(Duration::from_millis(300));
            still
        });
        if matches!(child.try_wait(), Ok(None)) {
            send_signal(child.id(), Signal::SIGINT);
        }
        let st = wait_child(&mut child, Duration::from_secs(20));
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let st = st.unwrap_or_else(|| {
            super::kill_and_reap(&mut child);
            panic!("wrk did not stop:\n{text}")
        });
        assert!(st.success(), "wrk failed ({st}):\n{text}");
        let p99_us = percentile_us(&text, "99%")
            .unwrap_or_else(|| panic!("no 99% latency in wrk's report:\n{text}"));
        LatencyReport {
            report: super::guards::client::WrkReport::parse(&text),
            p99_us,
        }
    }
}

impl Drop for LatencyWrk {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            super::kill_and_reap(c);
        }
    }
}

/// A latency percentile line of wrk's `--latency` report (`99%  1.23ms`), in microseconds.
pub fn percentile_us(text: &str, which: &str) -> Option<f64> {
    let value = text
        .lines()
        .find_map(|l| l.trim().strip_prefix(which))?
        .trim();
    let split = value.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = value.split_at(split);
    let n: f64 = n.trim().parse().ok()?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        _ => return None,
    };
    Some(n * scale)
}

/// Light load: one keep-alive client sending `GET /` every 20 ms until stopped, counting
/// answers and failures (a `Connection: close` answer is a clean hand-over: it reconnects).
#[derive(Debug)]
pub struct Trickle {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    answered: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

/// Requests a [`Trickle`] sends at most, whatever happens.
const TRICKLE_MAX: u64 = 20_000;

impl Trickle {
    /// Starts it against 127.0.0.1:`port`.
    pub fn start(port: u16) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (s, a) = (stop.clone(), answered.clone());
        let thread = std::thread::spawn(move || {
            let mut failures = Vec::new();
            let mut conn: Option<super::Http> = None;
            for _ in 0..TRICKLE_MAX {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                if conn.is_none() {
                    match super::Http::connect(port) {
                        Ok(c) => conn = Some(c),
                        Err(e) => failures.push(format!("connect: {e}")),
                    }
                }
                if let Some(c) = conn.as_mut() {
                    match c.get("/") {
                        Ok(r) if r.status == 200 => {
                            a.fetch_add(1, Ordering::Relaxed);
                            if r.header("connection") == Some("close") {
                                conn = None;
                            }
                        }
                        Ok(r) => failures.push(format!("status {}", r.status)),
                        Err(e) => {
                            failures.push(format!("request: {e}"));
                            conn = None;
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            failures
        });
        Self {
            stop,
            answered,
            thread: Some(thread),
        }
    }

    /// Answers so far.
    pub fn answered(&self) -> u64 {
        self.answered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until `n` more answers came (the cluster serves), at most 20 s.
    pub fn wait_more(&self, n: u64) {
        let before = self.answered();
        wait_until(Duration::from_secs(20), "answers to the light load", || {
            self.answered() >= before + n
        });
    }

    /// Stops it; returns the answers and the failures.
    pub fn stop(mut self) -> (u64, Vec<String>) {
        self.halt()
    }

    fn halt(&mut self) -> (u64, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let failures = self
            .thread
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default();
        (self.answered(), failures)
    }
}

impl Drop for Trickle {
    fn drop(&mut self) {
        self.halt();
    }
}
