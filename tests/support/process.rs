//! Process probes and signals, always by pid.

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use super::POLL_INTERVAL;

/// Whether `pid` names a live process (exists and is not a zombie).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if raw <= 0 {
        return false;
    }
    match signal::kill(Pid::from_raw(raw), None) {
        Ok(()) | Err(nix::errno::Errno::EPERM) => !matches!(proc_state(pid), None | Some('Z')),
        Err(_) => false,
    }
}

/// The state letter of `/proc/PID/stat` (R, S, Z, …), or `None` when there is no such process.
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ...": comm may hold spaces and parentheses, so split at the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.trim_start().chars().next()
}

/// The command line of `pid`, arguments joined by spaces (empty when unreadable).
pub fn proc_cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// Pids of live processes whose command line contains `marker`.
pub fn pids_with_cmdline(marker: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id())
        .filter(|pid| proc_cmdline(*pid).contains(marker) && pid_alive(*pid))
        .collect()
}

/// Sends `sig` to `pid`.
///
/// # Panics
/// When the signal cannot be sent.
pub fn send_signal(pid: u32, sig: Signal) {
    let raw = i32::try_from(pid).expect("pid fits i32");
    signal::kill(Pid::from_raw(raw), sig).unwrap_or_else(|e| panic!("kill -{sig} {pid}: {e}"));
}

/// Sends SIGKILL to `pid`.
pub fn kill9(pid: u32) {
    send_signal(pid, Signal::SIGKILL);
}

/// Sends SIGTERM to `pid`.
pub fn term(pid: u32) {
    send_signal(pid, Signal::SIGTERM);
}

/// Waits for `child` to exit, at most `timeout`; `None` when it is still running.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) => {}
            Err(e) => panic!("try_wait: {e}"),
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Stops `child` for good: SIGKILL by pid, then wait (reaps it).
pub fn kill_and_reap(child: &mut Child) -> ExitStatus {
    if let Ok(Some(st)) = child.try_wait() {
        return st;
    }
    let _ = signal::kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
    child.wait().expect("wait after SIGKILL")
}
