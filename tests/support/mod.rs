//! Helpers shared by the integration tests: a guard around a real `flora-cluster` master,
//! a deadline-bounded polling helper, a tiny blocking HTTP/1.1 client and process probes.
//!
//! Every wait here is a poll of a condition with a deadline; nothing sleeps in place of
//! waiting. Every process a test starts is killed by pid and reaped by its guard.

#![allow(
    dead_code,
    unused_imports,
    reason = "each test binary includes this module and uses only part of it"
)]

pub mod hostile;
mod http;
mod process;
pub mod tools;

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use http::{get, pid_burst, wait_pids_answer, Http, Response, IO_TIMEOUT};
pub use process::{
    kill9, kill_and_reap, pid_alive, pids_with_cmdline, proc_cmdline, proc_state, send_signal,
    term, wait_child,
};

use flora_cluster::scoreboard::{Scoreboard, ScoreboardReader, SlotState, Snapshot};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

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
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Polls `cond` every [`POLL_INTERVAL`] until it holds, or panics naming `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    wait_for(timeout, what, || cond().then_some(()));
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

/// A fresh private directory for one test: `run/` is the master's runtime dir, `logs/` holds
/// the masters' stdout and stderr.
#[derive(Debug)]
pub struct TestDir {
    dir: TempDir,
    /// Unique instance name for this test.
    pub name: String,
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

impl TestDir {
    /// Creates the directory; `tag` goes into the instance name (one per test).
    pub fn new(tag: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("flora-{tag}-"))
            .tempdir()
            .expect("tempdir");
        std::fs::create_dir(dir.path().join("run")).expect("mkdir run");
        std::fs::create_dir(dir.path().join("logs")).expect("mkdir logs");
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let name = format!("{tag}-{}-{n}", std::process::id());
        Self { dir, name }
    }

    /// The runtime dir handed to the master.
    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// The scoreboard segment path of this test's instance.
    pub fn segment_path(&self) -> PathBuf {
        self.runtime_dir().join(format!("{}.scoreboard", self.name))
    }

    /// The lock file path of this test's instance.
    pub fn lock_path(&self) -> PathBuf {
        self.runtime_dir().join(format!("{}.lock", self.name))
    }

    /// A scratch path outside the runtime dir.
    pub fn scratch(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// Starts a master with `workers` demo workers on `port`, passing `demo_args` to them.
    pub fn start(&self, port: u16, workers: usize, demo_args: &[&str]) -> Cluster {
        Cluster::spawn(self, port, &["--workers", &workers.to_string()], demo_args)
    }

    /// Starts a master with explicit master flags (besides name and runtime dir; a shutdown
    /// timeout is added unless given) running `flora-demo demo_args`.
    pub fn start_with(&self, port: u16, master_args: &[&str], demo_args: &[&str]) -> Cluster {
        Cluster::spawn(self, port, master_args, demo_args)
    }

    /// Starts a master running `program` (any argv) instead of the demo binary.
    pub fn start_program(&self, port: u16, master_args: &[&str], program: &[&str]) -> Cluster {
        Cluster::spawn_argv(self, port, master_args, program)
    }

    /// Writes an executable shell script `file` (in the scratch area) that execs the demo
    /// worker with `demo_args` after running `prelude` (shell lines).
    pub fn demo_script(&self, file: &str, prelude: &str, demo_args: &str) -> PathBuf {
        let path = self.scratch(file);
        let tmp = self.scratch(&format!(".{file}.tmp"));
        std::fs::write(
            &tmp,
            format!("#!/bin/sh\n{prelude}\nexec {DEMO_BIN} {demo_args}\n"),
        )
        .expect("write script");
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod script");
        // Replace atomically, as a deploy would.
        std::fs::rename(&tmp, &path).expect("install script");
        path
    }

    /// `flora-cluster reload` for this instance; panics with its output unless it succeeded.
    pub fn reload_ok(&self) -> std::process::Output {
        let out = self.ctl(&["reload"]);
        assert!(
            out.status.success(),
            "reload failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs `flora-cluster ARGS --name N --runtime-dir D` (a control command) to completion.
    pub fn ctl(&self, args: &[&str]) -> std::process::Output {
        let mut child = Command::new(MASTER_BIN)
            .args(args)
            .args(["--name", &self.name])
            .arg("--runtime-dir")
            .arg(self.runtime_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn flora-cluster client");
        if wait_child(&mut child, Duration::from_secs(60)).is_none() {
            kill_and_reap(&mut child);
            panic!("flora-cluster {args:?} did not finish in 60 s");
        }
        child.wait_with_output().expect("client output")
    }
}

/// A running `flora-cluster run` master. On drop: SIGTERM, bounded wait, then SIGKILL and
/// wait; demo workers it leaves behind are SIGKILLed by pid.
#[derive(Debug)]
pub struct Cluster {
    child: Option<Child>,
    /// Pid of the master.
    pub pid: u32,
    /// Port the workers serve on.
    pub port: u16,
    /// Segment path.
    pub segment: PathBuf,
    stderr_path: PathBuf,
    exit: Option<ExitStatus>,
    seen_workers: Mutex<BTreeSet<u32>>,
    scoreboard: Mutex<Option<ScoreboardReader>>,
}

impl Cluster {
    fn spawn(dir: &TestDir, port: u16, master_args: &[&str], demo_args: &[&str]) -> Self {
        let mut argv = vec![DEMO_BIN];
        argv.extend_from_slice(demo_args);
        Self::spawn_argv(dir, port, master_args, &argv)
    }

    fn spawn_argv(dir: &TestDir, port: u16, master_args: &[&str], program: &[&str]) -> Self {
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let logs = dir.dir.path().join("logs");
        let stderr_path = logs.join(format!("master-{n}.stderr"));
        let stdout_path = logs.join(format!("master-{n}.stdout"));
        let mut cmd = Command::new(MASTER_BIN);
        cmd.arg("run")
            .args(master_args)
            .args(["--name", &dir.name])
            .arg("--runtime-dir")
            .arg(dir.runtime_dir());
        if !master_args.contains(&"--shutdown-timeout") {
            cmd.args(["--shutdown-timeout", SHUTDOWN_TIMEOUT_SECS]);
        }
        // A free port for the status server unless the test picks one; the bound address is
        // published in the scoreboard (`Snapshot::status_addr`, see `Cluster::status_url`).
        if !master_args.contains(&"--status-addr") {
            cmd.args(["--status-addr", "127.0.0.1:0"]);
        }
        cmd.arg("--")
            .args(program)
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(File::create(&stdout_path).expect("stdout log"))
            .stderr(File::create(&stderr_path).expect("stderr log"));
        let child = cmd.spawn().expect("spawn flora-cluster");
        Self {
            pid: child.id(),
            child: Some(child),
            port,
            segment: dir.segment_path(),
            stderr_path,
            exit: None,
            seen_workers: Mutex::new(BTreeSet::new()),
            scoreboard: Mutex::new(None),
        }
    }

    /// Everything the master wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The address workers serve on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The master's exit status if it has exited (reaps it).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            if let Some(child) = self.child.as_mut() {
                self.exit = child.try_wait().expect("try_wait master");
            }
        }
        self.exit
    }

    /// Waits for the master to exit, at most `timeout`; panics if it does not.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(st) = self.exit {
            return st;
        }
        let child = self.child.as_mut().expect("master child");
        let st = wait_child(child, timeout)
            .unwrap_or_else(|| panic!("master {} still running after {timeout:?}", self.pid));
        self.exit = Some(st);
        st
    }

    /// Sends `sig` to the master.
    pub fn signal(&self, sig: Signal) {
        send_signal(self.pid, sig);
    }

    /// SIGKILLs the master and reaps it (its workers are *not* touched).
    pub fn kill9_and_reap(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("master child");
        let st = kill_and_reap(child);
        self.exit = Some(st);
        st
    }

    /// The segment, opened read-only (polls until this master has created it: a stale
    /// segment of a dead master may sit at the same path until this one replaces it).
    pub fn scoreboard(&self) -> ScoreboardReader {
        let mut cached = self.scoreboard.lock().expect("scoreboard lock");
        if let Some(sb) = cached.as_ref() {
            return sb.clone();
        }
        let sb = wait_for(START_TIMEOUT, "this master's scoreboard segment", || {
            Scoreboard::open_read_only(&self.segment)
                .ok()
                .filter(|sb| sb.snapshot().master_pid == self.pid)
        });
        *cached = Some(sb.clone());
        sb
    }

    /// A fresh snapshot of the segment; remembers every worker pid it shows.
    pub fn snapshot(&self) -> Snapshot {
        let snap = self.scoreboard().snapshot();
        let mut seen = self.seen_workers.lock().expect("seen lock");
        seen.extend(snap.slots.iter().map(|s| s.pid).filter(|p| *p != 0));
        snap
    }

    /// `http://ADDR` of the master's status server (waits until it is published).
    pub fn status_url(&self) -> String {
        let addr = wait_for(START_TIMEOUT, "status server address", || {
            Some(self.snapshot().status_addr).filter(|a| !a.is_empty())
        });
        format!("http://{addr}")
    }

    /// Waits until slots `0..n` are all Ready with a live pid; returns those pids by slot.
    pub fn wait_ready(&self, n: usize) -> Vec<u32> {
        wait_for(START_TIMEOUT, &format!("{n} ready workers"), || {
            let snap = self.snapshot();
            if snap.slots.len() < n {
                return None;
            }
            let pids: Vec<u32> = snap.slots[..n]
                .iter()
                .filter(|s| s.state == SlotState::Ready && s.pid != 0 && pid_alive(s.pid))
                .map(|s| s.pid)
                .collect();
            (pids.len() == n).then_some(pids)
        })
    }

    /// Waits until every pid in `pids` is gone (or a zombie), at most `timeout`.
    pub fn wait_pids_gone(pids: &[u32], timeout: Duration) {
        wait_until(timeout, &format!("pids {pids:?} to exit"), || {
            pids.iter().all(|p| !pid_alive(*p))
        });
    }

    /// Dumps the master's stderr to the test output (shown when a test fails).
    fn dump_stderr(&self) {
        eprintln!(
            "----- master {} stderr -----\n{}\n----- end -----",
            self.pid,
            self.stderr()
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_stderr();
        }
        if let Some(child) = self.child.as_mut() {
            if self.exit.is_none() && matches!(child.try_wait(), Ok(None)) {
                let _ = signal::kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
                if wait_child(child, EXIT_TIMEOUT).is_none() {
                    eprintln!("master {} ignored SIGTERM: SIGKILL", self.pid);
                }
            }
            kill_and_reap(child);
        }
        // Workers the master failed to stop: kill them by pid, but only if that pid still
        // runs the demo binary (never a reused pid).
        let seen = self
            .seen_workers
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        for pid in seen {
            if pid_alive(pid) && proc_cmdline(pid).contains("flora-demo") {
                eprintln!("worker {pid} outlived its master: SIGKILL");
                let _ = signal::kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
    }
}

/// Runs the master binary with `args` to completion (at most `timeout`; then it is killed and
/// the call panics). Returns the exit status and stderr.
pub fn run_master_to_exit(
    args: &[&std::ffi::OsStr],
    port: u16,
    log_dir: &Path,
    timeout: Duration,
) -> (ExitStatus, String) {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let stderr_path = log_dir.join(format!("oneshot-{n}.stderr"));
    let mut child = Command::new(MASTER_BIN)
        .args(args)
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&stderr_path).expect("stderr log"))
        .spawn()
        .expect("spawn flora-cluster");
    let status = wait_child(&mut child, timeout);
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    match status {
        Some(st) => (st, stderr),
        None => {
            kill_and_reap(&mut child);
            panic!("flora-cluster {args:?} still running after {timeout:?}; stderr:\n{stderr}");
        }
    }
}
