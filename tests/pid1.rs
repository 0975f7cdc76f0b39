//! As PID 1 (a container's entry point) the master reaps orphaned processes that are
//! reparented to it, and still stops cleanly on SIGTERM; a master upgrade is refused.

mod support;

use std::time::Duration;

use support::{get, wait_for, wait_until, TestDir, DEMO_BIN};

/// `(pid, ppid, state, comm)` of every process.
fn processes() -> Vec<(u32, u32, char, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (text.find('('), text.rfind(')')) else {
            continue;
        };
        let comm = text[open + 1..close].to_string();
        let mut rest = text[close + 1..].split_whitespace();
        let state = rest.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = rest.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let pid = text
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        out.push((pid, ppid, state, comm));
    }
    out
}

#[test]
fn master_as_pid1_reaps_orphans() {
    let dir = TestDir::new("pid1");
    let port = support::free_port();
    // Each worker leaves an orphan behind: a subshell starts `sleep` and exits at once, so the
    // sleep is reparented to PID 1 — the master — and becomes its zombie when it ends.
    let script = dir.scratch("worker.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\n( sleep 1.5 & )\nexec {DEMO_BIN}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let unshare = dir
        .master(port)
        .args(&[
            "--workers",
            "2",
            "--status-addr",
            "off",
            "--shutdown-timeout",
            "5",
        ])
        .program(&[&script])
        .through(&["unshare", "--pid", "--fork", "--mount-proc"])
        .start();
    let master = wait_for(
        Duration::from_secs(20),
        "the master inside the namespace",
        || {
            processes()
                .into_iter()
                .find(|p| p.1 == unshare.pid)
                .map(|p| p.0)
        },
    );
    wait_for(Duration::from_secs(20), "serving", || get(port, "/").ok());
    // The orphaned sleeps now have the master as parent.
    wait_until(
        Duration::from_secs(10),
        "orphans reparented to the master",
        || processes().iter().any(|p| p.1 == master && p.3 == "sleep"),
    );
    // When they end, the master reaps them: no zombie child is left.
    wait_until(Duration::from_secs(15), "orphans gone and reaped", || {
        let children: Vec<_> = processes().into_iter().filter(|p| p.1 == master).collect();
        !children.iter().any(|p| p.3 == "sleep" || p.2 == 'Z')
    });
    // A master upgrade is refused as PID 1 (the old master could not exit), at once and
    // saying why; the master serves on.
    let out = dir.ctl(&["upgrade"]);
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("PID 1"), "{text}");
    get(port, "/").expect("still serving");
    // SIGTERM to PID 1 stops everything; unshare then exits too.
    support::send_signal(master, nix::sys::signal::Signal::SIGTERM);
    wait_until(Duration::from_secs(20), "master gone", || {
        !processes().iter().any(|p| p.0 == master)
    });
    drop(unshare);
}
