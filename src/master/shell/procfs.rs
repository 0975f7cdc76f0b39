//! What the master reads of its workers in `/proc`: the resident memory (`statm`) it samples
//! for `--max-memory`, and each thread's name, state, `wchan` and `syscall` for a kill record.
//!
//! Every read is bounded (a few hundred bytes per file, [`MAX_THREADS`] threads), and a
//! process or thread that is gone mid-read is not an error: it is left out.

use std::io::Read;
use std::path::Path;

use crate::scoreboard::ThreadSnapshot;

/// Threads listed in a kill record (a runtime's worker and blocking threads fit easily).
pub(super) const MAX_THREADS: usize = 128;
/// Longest read of one `/proc` file.
const MAX_FILE_BYTES: u64 = 1024;

/// Up to [`MAX_FILE_BYTES`] of a `/proc` file as text, trimmed.
fn read_small(path: &Path) -> Option<String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_FILE_BYTES)
        .read_to_string(&mut text)
        .ok()?;
    Some(text.trim().to_string())
}

fn page_size() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
        Ok(Some(p)) if p > 0 => p as u64,
        _ => 4096,
    }
}

/// Resident bytes from the text of `/proc/<pid>/statm` (its second field, in pages).
pub(super) fn parse_statm(text: &str, page: u64) -> Option<u64> {
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    pages.checked_mul(page)
}

/// The resident memory of `pid` in bytes; `None` when it is gone.
pub(super) fn rss(pid: u32) -> Option<u64> {
    if pid == 0 {
        return None;
    }
    let text = read_small(Path::new(&format!("/proc/{pid}/statm")))?;
    parse_statm(&text, page_size())
}

/// The state letter from the text of `/proc/<pid>/task/<tid>/stat` (after the name, which
/// may hold spaces and parentheses).
pub(super) fn parse_state(stat: &str) -> Option<String> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().next().map(str::to_string)
}

/// When `pid` started (clock ticks after boot, field 22 of `/proc/<pid>/stat`): tells a
/// process from a later one with the same pid. `None` when it is gone or a zombie.
pub(super) fn start_time(pid: u32) -> Option<u64> {
    let stat = read_small(Path::new(&format!("/proc/{pid}/stat")))?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    if fields.next()? == "Z" {
        return None;
    }
    // Field 3 is the state; the start time is field 22.
    fields.nth(18)?.parse().ok()
}

/// The threads of `pid` (at most [`MAX_THREADS`], by tid); empty when it is gone.
pub(super) fn threads(pid: u32) -> Vec<ThreadSnapshot> {
    let dir = format!("/proc/{pid}/task");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut tids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .take(MAX_THREADS * 4)
        .collect();
    tids.sort_unstable();
    tids.truncate(MAX_THREADS);
    tids.into_iter()
        .filter_map(|tid| thread(&Path::new(&dir).join(tid.to_string()), tid))
        .collect()
}

/// One thread, `None` when it exited before its name could be read.
fn thread(dir: &Path, tid: u32) -> Option<ThreadSnapshot> {
    let name = read_small(&dir.join("comm"))?;
    let field = |file: &str| read_small(&dir.join(file)).unwrap_or_default();
    let state = read_small(&dir.join("stat"))
        .as_deref()
        .and_then(parse_state)
        .unwrap_or_default();
    Some(ThreadSnapshot {
        tid,
        name,
        state,
        wchan: field("wchan"),
        syscall: field("syscall"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    #[test]
    fn parses_statm_and_stat() {
        assert_eq!(
            parse_statm("2000 300 100 10 0 500 0", 4096),
            Some(300 * 4096)
        );
        assert_eq!(parse_statm("garbage", 4096), None);
        assert_eq!(parse_statm("1 18446744073709551615", 4096), None);
        let stat = "42 (odd (name) x) D 1 42 42 0 -1";
        assert_eq!(parse_state(stat).as_deref(), Some("D"));
        assert_eq!(parse_state("no parens"), None);
    }

    #[test]
    fn start_times_tell_processes_apart() {
        let me = start_time(std::process::id()).unwrap();
        assert_eq!(start_time(std::process::id()), Some(me));
        assert_eq!(start_time(u32::MAX), None);
    }

    #[test]
    fn reads_this_process_and_tolerates_a_gone_one() {
        assert!(rss(std::process::id()).is_some_and(|b| b > 0));
        assert_eq!(rss(0), None);
        // Pids are at most 2^22: this one does not exist.
        assert_eq!(rss(u32::MAX - 1), None);
        assert!(threads(u32::MAX - 1).is_empty());
    }

    #[test]
    fn reads_the_threads_of_this_process() {
        let (tx, rx) = mpsc::channel::<()>();
        let (ready_tx, ready_rx) = mpsc::channel::<u32>();
        let waiter = std::thread::Builder::new()
            .name("guard-probe".into())
            .spawn(move || {
                let _ = ready_tx.send(nix::unistd::gettid().as_raw() as u32);
                let _ = rx.recv();
            })
            .expect("spawn");
        let tid = ready_rx.recv().expect("tid");
        // Wait (bounded) until the thread sleeps in its receive.
        let deadline = Instant::now() + Duration::from_secs(10);
        let probe = loop {
            let all = threads(std::process::id());
            let me = all.iter().find(|t| t.tid == tid).cloned();
            match me {
                Some(t) if t.state == "S" || Instant::now() > deadline => break t,
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        assert_eq!(probe.name, "guard-probe");
        assert_eq!(probe.state, "S", "{probe:?}");
        assert!(!probe.wchan.is_empty(), "{probe:?}");
        // A sleeping thread is in a system call: its number first.
        let nr = probe.syscall.split_whitespace().next().unwrap_or("");
        assert!(nr.parse::<u64>().is_ok(), "{probe:?}");
        let all = threads(std::process::id());
        let main = all.iter().find(|t| t.tid == std::process::id());
        assert!(main.is_some(), "{all:?}");
        assert!(all.windows(2).all(|w| w[0].tid < w[1].tid));
        drop(tx);
        waiter.join().expect("join");
    }
}
