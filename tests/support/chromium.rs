//! Headless Chromium for the status-page tests: one run in its own process group with a
//! fresh profile, killed (the whole group) and reaped if it hangs; test artifacts.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::{kill_and_reap, wait_child, wait_until};

/// The browser, as the Debian package installs it.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Longest one headless Chromium run may take: a cold start on a busy 2-core machine takes a
/// few seconds, so this only catches a hung browser (it is then killed and reaped).
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for Chromium's helper processes to exit after the browser did.
const HELPERS_EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Fails unless the browser is installed.
pub fn require() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: scripts/test.sh installs it (Debian package `chromium`)"
    );
}

/// Pids of the processes in process group `pgid` (field 5 of `/proc/PID/stat`).
fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let pgrp = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = &stat[stat.rfind(')')? + 1..];
        rest.split_whitespace().nth(2)?.parse().ok()
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pgrp(pid) == Some(pgid) && super::proc_state(pid) != Some('Z'))
        .collect()
}

/// Runs headless Chromium on `url` with `mode` (`--screenshot=…` or `--dump-dom`), in its own
/// process group with a fresh profile under `scratch`; returns its stdout. A run over
/// [`CHROMIUM_TIMEOUT`] is killed (the whole group) and reaped, and fails the test.
pub fn run(scratch: &Path, tag: &str, mode: &str, url: &str) -> String {
    require();
    let profile = scratch.join(format!("chromium-profile-{tag}"));
    let (out, err) = (
        scratch.join(format!("chromium-{tag}.out")),
        scratch.join(format!("chromium-{tag}.err")),
    );
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
        ])
        .args(["--no-first-run", "--disable-background-networking"])
        .args(["--disable-component-update", "--disable-sync"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--window-size=1280,1000", mode, url])
        .stdin(Stdio::null())
        .stdout(File::create(&out).expect("chromium stdout file"))
        .stderr(File::create(&err).expect("chromium stderr file"))
        .process_group(0)
        .spawn()
        .expect("spawn chromium");
    let pgid = child.id();
    let log = || std::fs::read_to_string(&err).unwrap_or_default();
    let Some(status) = wait_child(&mut child, CHROMIUM_TIMEOUT) else {
        // The leader still runs, so the group id is still ours: end the browser and helpers.
        let _ = killpg(Pid::from_raw(pgid as i32), Signal::SIGKILL);
        kill_and_reap(&mut child);
        panic!(
            "chromium {mode} did not finish in {CHROMIUM_TIMEOUT:?}:\n{}",
            log()
        );
    };
    wait_until(HELPERS_EXIT_TIMEOUT, "chromium helpers to exit", || {
        group_members(pgid).is_empty()
    });
    assert!(status.success(), "chromium {mode}: {status}\n{}", log());
    std::fs::read_to_string(&out).expect("chromium stdout")
}

/// `target/test-artifacts/NAME` (the directory is created).
pub fn artifact(name: &str) -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir above CARGO_TARGET_TMPDIR");
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    dir.join(name)
}
