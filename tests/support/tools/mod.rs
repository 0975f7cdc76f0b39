//! Real external tools the tests check outputs with, one file each: `promtool`
//! ([`assert_promtool`]), Python's `prometheus_client` OpenMetrics parser, a `prometheus`
//! server and `prometheus-apache-exporter`. Here: finding a tool, running one to completion
//! ([`run_tool`]) and [`ChildGuard`] around tool servers.
//!
//! A missing tool fails the test with a message naming what installs it (scripts/test.sh);
//! nothing is skipped. Every child process sits in a [`ChildGuard`] (SIGTERM, bounded wait,
//! SIGKILL, reap on drop).

mod apache;
mod openmetrics;
mod prometheus;
mod promtool;

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

pub use apache::ApacheExporter;
pub use openmetrics::{
    parse_openmetrics_with_python, python_with_prometheus_client, OmFamily, PYTHON_ENV,
};
pub use prometheus::PrometheusServer;
pub use promtool::{assert_promtool, promtool, Lints};

use super::http::request;
use super::{kill_and_reap, wait_child, wait_for};

/// Longest run of one tool invocation (`promtool`, the Python parser): they take milliseconds.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a started tool server (prometheus, apache exporter) to answer HTTP.
pub const TOOL_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a tool server to exit after SIGTERM before it is SIGKILLed.
pub const TOOL_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The path of `cmd` on `PATH`; panics (the test fails) when it is missing, naming the
/// Debian `package` that scripts/test.sh installs.
pub fn require_tool(cmd: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(cmd))
        .find(|p| is_executable(p))
        .unwrap_or_else(|| {
            panic!(
                "`{cmd}` is not on PATH: scripts/test.sh installs it (Debian package \
                 `{package}`; run scripts/test.sh as root once, or \
                 `apt-get install --no-install-recommends {package}`)"
            )
        })
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What a finished tool printed.
#[derive(Debug)]
pub struct ToolOutput {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `cmd` with `input` on stdin to completion, at most `timeout` (then it is killed and
/// the call panics). Stdout and stderr are drained by threads, so big outputs cannot block.
pub fn run_tool(cmd: &mut Command, input: &[u8], timeout: Duration) -> ToolOutput {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    // A tool that exits early closes its stdin: the write error is not the test's concern.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out_reader = drain(child.stdout.take().expect("stdout"));
    let err_reader = drain(child.stderr.take().expect("stderr"));
    let Some(status) = wait_child(&mut child, timeout) else {
        kill_and_reap(&mut child);
        panic!("{cmd:?} did not finish in {timeout:?}");
    };
    let _ = writer.join();
    ToolOutput {
        status,
        stdout: out_reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
    }
}

fn drain(mut r: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// A tool server child: stdout and stderr go to one log file. On drop: SIGTERM, wait up to
/// [`TOOL_STOP_TIMEOUT`], SIGKILL, reap; the log is printed when the test is failing.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    name: String,
    log: PathBuf,
}

impl ChildGuard {
    /// Spawns `cmd` (stdin closed, output to `log`).
    pub fn spawn(name: &str, cmd: &mut Command, log: PathBuf) -> Self {
        let out = File::create(&log).expect("create tool log");
        let err = out.try_clone().expect("clone tool log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
        Self {
            child,
            name: name.to_string(),
            log,
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the child logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the log when the child has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(st)) = self.child.try_wait() {
            panic!(
                "{} exited early ({st}); its log:\n{}",
                self.name,
                self.log()
            );
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- {} log -----\n{}\n----- end -----",
                self.name,
                self.log()
            );
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let pid = Pid::from_raw(self.child.id() as i32);
            let _ = signal::kill(pid, Signal::SIGTERM);
            if wait_child(&mut self.child, TOOL_STOP_TIMEOUT).is_none() {
                eprintln!("{} ignored SIGTERM: SIGKILL", self.name);
            }
        }
        kill_and_reap(&mut self.child);
    }
}

/// Polls `GET path` on 127.0.0.1:`port` until it answers 200, checking that `guard` runs.
pub(super) fn wait_http_ok(guard: &mut ChildGuard, port: u16, path: &str) {
    let what = format!("{} to answer GET {path} on port {port}", guard.name);
    wait_until_with(guard, &what, |_| {
        request(port, "GET", path, &[]).is_ok_and(|r| r.status == 200)
    });
}

fn wait_until_with(guard: &mut ChildGuard, what: &str, mut cond: impl FnMut(&ChildGuard) -> bool) {
    wait_for(TOOL_START_TIMEOUT, what, || {
        guard.assert_running();
        cond(&*guard).then_some(())
    });
}
