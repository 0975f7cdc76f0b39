//! Starting masters and watching them: [`TestDir`] (one private directory and instance name
//! per test), [`MasterCommand`] (the one way tests start a master), [`Cluster`] (a running
//! master, stopped and reaped on drop) and [`run_master_to_exit`] for command lines that must
//! fail or finish.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use flora_cluster::scoreboard::{Scoreboard, ScoreboardReader, SlotState, Snapshot};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

use super::{
    kill_and_reap, pid_alive, proc_cmdline, send_signal, wait_child, wait_for, wait_until,
    DEMO_BIN, EXIT_TIMEOUT, MASTER_BIN, SHUTDOWN_TIMEOUT_SECS, START_TIMEOUT,
};

/// A fresh private directory for one test: `run/` is the master's runtime dir, `logs/` holds
/// the masters' stdout and stderr.
#[derive(Debug)]
pub struct TestDir {
    dir: TempDir,
    /// Unique instance name for this test.
    pub name: String,
}

/// Numbers instance names, master logs and one-shot logs apart within this process.
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

    /// A master for this test's instance whose workers serve `port`: the one way tests start
    /// masters (see [`MasterCommand`]).
    pub fn master(&self, port: u16) -> MasterCommand<'_> {
        MasterCommand {
            dir: self,
            port,
            wrapper: Vec::new(),
            args: Vec::new(),
            program: vec![DEMO_BIN.into()],
            env: Vec::new(),
            runtime_dir: None,
        }
    }

    /// Starts a master with `workers` demo workers on `port`, passing `demo_args` to them.
    pub fn start(&self, port: u16, workers: usize, demo_args: &[&str]) -> Cluster {
        self.start_with(port, &["--workers", &workers.to_string()], demo_args)
    }

    /// Starts a master with explicit master flags (besides name and runtime dir; a shutdown
    /// timeout is added unless given) running `flora-demo demo_args`.
    pub fn start_with(&self, port: u16, master_args: &[&str], demo_args: &[&str]) -> Cluster {
        self.master(port).args(master_args).demo(demo_args).start()
    }

    /// Starts a master running `program` (any argv) instead of the demo binary.
    pub fn start_program(&self, port: u16, master_args: &[&str], program: &[&str]) -> Cluster {
        self.master(port).args(master_args).program(program).start()
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

/// How a test starts a master: `[WRAPPER…] flora-cluster run ARGS --name N --runtime-dir D
/// [--shutdown-timeout 10] [--status-addr 127.0.0.1:0] -- PROGRAM…`, with `HOST=127.0.0.1`
/// and `PORT` set for the workers. The defaults in brackets are added unless `ARGS` gives
/// those flags: a drain that fits the test deadlines, and a free status port published in
/// the scoreboard (see [`Cluster::status_url`]). The program defaults to the demo worker.
#[derive(Debug)]
#[must_use]
pub struct MasterCommand<'a> {
    dir: &'a TestDir,
    port: u16,
    wrapper: Vec<OsString>,
    args: Vec<OsString>,
    program: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    runtime_dir: Option<PathBuf>,
}

impl MasterCommand<'_> {
    /// Adds master flags (before `--`).
    pub fn args<S: AsRef<OsStr>>(mut self, args: &[S]) -> Self {
        self.args.extend(args.iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Runs `flora-demo demo_args` as the workers.
    pub fn demo(self, demo_args: &[&str]) -> Self {
        let mut argv = vec![DEMO_BIN];
        argv.extend_from_slice(demo_args);
        self.program(&argv)
    }

    /// Runs `argv` (any program) as the workers.
    pub fn program<S: AsRef<OsStr>>(mut self, argv: &[S]) -> Self {
        self.program = argv.iter().map(|a| a.as_ref().to_owned()).collect();
        self
    }

    /// Starts the master through `wrapper` (e.g. `unshare …`, `systemd-socket-activate …`),
    /// which must exec or run the master binary it is given as its next arguments.
    pub fn through<S: AsRef<OsStr>>(mut self, wrapper: &[S]) -> Self {
        self.wrapper = wrapper.iter().map(|a| a.as_ref().to_owned()).collect();
        self
    }

    /// Another runtime dir than the test's own (a planted or odd one the master must refuse).
    pub fn runtime_dir(mut self, dir: &Path) -> Self {
        self.runtime_dir = Some(dir.to_owned());
        self
    }

    /// Sets an environment variable of the master (after the defaults, so it wins).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    fn has_flag(&self, flag: &str) -> bool {
        self.args.iter().any(|a| a == flag)
    }

    /// The full command line, environment included.
    fn command(&self) -> Command {
        let mut cmd = match self.wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(MASTER_BIN);
                c
            }
            None => Command::new(MASTER_BIN),
        };
        cmd.arg("run")
            .args(&self.args)
            .args(["--name", &self.dir.name])
            .arg("--runtime-dir")
            .arg(
                self.runtime_dir
                    .clone()
                    .unwrap_or_else(|| self.dir.runtime_dir()),
            );
        if !self.has_flag("--shutdown-timeout") {
            cmd.args(["--shutdown-timeout", SHUTDOWN_TIMEOUT_SECS]);
        }
        if !self.has_flag("--status-addr") {
            cmd.args(["--status-addr", "127.0.0.1:0"]);
        }
        cmd.arg("--")
            .args(&self.program)
            .env("HOST", "127.0.0.1")
            .env("PORT", self.port.to_string())
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Runs the master to its exit (a command line it must refuse, or a run that ends by
    /// itself), at most `timeout` (then it is killed and the call panics). Returns the exit
    /// status and stderr.
    pub fn run_to_exit(self, timeout: Duration) -> (ExitStatus, String) {
        run_to_exit(self.command(), &self.dir.scratch(""), timeout)
    }

    /// Starts the master; the returned [`Cluster`] stops it (and strays) on drop.
    pub fn start(self) -> Cluster {
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let logs = self.dir.dir.path().join("logs");
        let stderr_path = logs.join(format!("master-{n}.stderr"));
        let stdout_path = logs.join(format!("master-{n}.stdout"));
        let child = self
            .command()
            .stdin(Stdio::null())
            .stdout(File::create(&stdout_path).expect("stdout log"))
            .stderr(File::create(&stderr_path).expect("stderr log"))
            .spawn()
            .expect("spawn flora-cluster");
        Cluster {
            pid: child.id(),
            child: Some(child),
            port: self.port,
            segment: self.dir.segment_path(),
            stderr_path,
            exit: None,
            seen_workers: Mutex::new(BTreeSet::new()),
            scoreboard: Mutex::new(None),
        }
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

    /// Ready workers of `generation`, by pid (sorted).
    pub fn ready_pids_of(&self, generation: u64) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .snapshot()
            .slots
            .iter()
            .filter(|s| s.generation == generation && s.state == SlotState::Ready && s.pid != 0)
            .map(|s| s.pid)
            .collect();
        pids.sort_unstable();
        pids
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
    let mut cmd = Command::new(MASTER_BIN);
    cmd.args(args)
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string());
    run_to_exit(cmd, log_dir, timeout)
}

/// Runs `cmd` (stdout discarded, stderr logged in `log_dir`) to completion, at most `timeout`
/// (then it is killed and the call panics). Returns the exit status and stderr.
fn run_to_exit(mut cmd: Command, log_dir: &Path, timeout: Duration) -> (ExitStatus, String) {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let stderr_path = log_dir.join(format!("oneshot-{n}.stderr"));
    let mut child = cmd
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
            panic!("{cmd:?} still running after {timeout:?}; stderr:\n{stderr}");
        }
    }
}

/// Waits until `slot` has a Ready worker other than `old_pid`; returns its pid.
pub fn wait_respawn(cluster: &Cluster, slot: usize, old_pid: u32) -> u32 {
    wait_for(
        START_TIMEOUT,
        &format!("slot {slot} respawned and ready"),
        || {
            let s = cluster.snapshot().slots[slot].clone();
            let ok =
                s.pid != old_pid && s.pid != 0 && s.state == SlotState::Ready && pid_alive(s.pid);
            ok.then_some(s.pid)
        },
    )
}

/// Exit code of a usage error (a refused flag or configuration).
pub const EXIT_USAGE: i32 = 2;

/// Checks a master run that had to be refused at once: exit [`EXIT_USAGE`], stderr naming
/// every one of `names`, no panic, and no segment made in `dir`.
pub fn assert_refused(
    dir: &TestDir,
    what: &dyn std::fmt::Debug,
    status: ExitStatus,
    stderr: &str,
    names: &[&str],
) {
    assert_eq!(
        status.code(),
        Some(EXIT_USAGE),
        "{what:?}: exit {status:?}; stderr:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{what:?} panicked:\n{stderr}");
    for name in names {
        assert!(
            stderr.contains(name),
            "{what:?}: stderr lacks {name:?}:\n{stderr}"
        );
    }
    assert!(
        !dir.segment_path().exists(),
        "{what:?}: a segment was created"
    );
}
