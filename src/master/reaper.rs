//! As PID 1 (a container's entry point) the master inherits every orphaned process of the
//! container and must reap them, or they stay zombies. tokio reaps the master's own workers
//! (never `waitpid(-1)`, which would steal their statuses); this reaps only zombie children
//! that are *not* workers, found by scanning `/proc`.

use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

/// Whether this process is PID 1 of its namespace (then orphans are reparented to it).
pub fn is_init() -> bool {
    std::process::id() == 1
}

/// `(pid, parent pid, state)` from the text of `/proc/PID/stat`.
fn parse_stat(text: &str) -> Option<(u32, u32, char)> {
    let pid = text.split_whitespace().next()?.parse().ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((pid, ppid, state))
}

/// Reaps zombie children of this process for which `is_worker` is false; returns how many.
pub fn reap_orphans(is_worker: impl Fn(u32) -> bool) -> usize {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut reaped = 0;
    for entry in dir.flatten() {
        let Some(text) = entry
            .file_name()
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| std::fs::read_to_string(format!("/proc/{n}/stat")).ok())
        else {
            continue;
        };
        let Some((pid, ppid, state)) = parse_stat(&text) else {
            continue;
        };
        if ppid == me && state == 'Z' && !is_worker(pid) {
            let reaped_ok = waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG)).is_ok();
            if reaped_ok {
                tracing::debug!(pid, "reaped an orphaned process");
                reaped += 1;
            }
        }
    }
    reaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_lines() {
        assert_eq!(parse_stat("42 (a b) Z 1 42 42 0"), Some((42, 1, 'Z')));
        assert_eq!(parse_stat("7 (x) S 3 1"), Some((7, 3, 'S')));
        assert_eq!(parse_stat("garbage"), None);
        assert!(!is_init());
    }

    #[test]
    fn reaps_a_zombie_child_but_not_a_worker() {
        let mut zombie = std::process::Command::new("true").spawn().unwrap();
        let pid = zombie.id();
        // Wait until it has exited (a zombie) without reaping it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|t| parse_stat(&t))
            .is_some_and(|(_, _, s)| s != 'Z')
        {
            assert!(std::time::Instant::now() < deadline);
            std::thread::yield_now();
        }
        assert_eq!(
            reap_orphans(|p| p == pid),
            0,
            "a worker is left to its owner"
        );
        assert_eq!(reap_orphans(|_| false), 1);
        assert!(std::fs::metadata(format!("/proc/{pid}")).is_err());
        // The Child handle must not wait on a reaped pid: forget it.
        let _ = zombie.try_wait();
    }
}
