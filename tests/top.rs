//! `flora-cluster top` on a real terminal: driven in tmux (`send-keys`, `capture-pane`), it
//! shows a slow request with its infos while it runs, pauses on `p`, redraws for a new size
//! at once, and on `q`, Ctrl-C, SIGTERM or SIGHUP exits with the terminal restored (tmux says the
//! pane left the alternate screen and shows the cursor; the tty is back in canonical mode).
//! `top --once` prints one frame with a row per worker to a pipe, without escapes; bad
//! `--interval` values, a missing instance and the live view without a terminal are refused.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use support::tools::require_tool;
use support::{kill_and_reap, wait_child, Http, TestDir, MASTER_BIN};

/// How long the slow request sleeps: it must stay in flight while top looks at it.
const SLOW_MS: u64 = 30_000;
/// Longest wait for the pane to show what the test waits for.
const PANE_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest run of one tmux or `top --once` command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// A tmux server on a private socket, with one 160×40 session running `sh`; killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(tag: &str) -> Self {
        require_tool("tmux", "tmux");
        let t = Self {
            socket: format!("flora-{tag}-{}", std::process::id()),
        };
        let out = t.cmd(&[
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            "160",
            "-y",
            "40",
            "env PS1='shell$ ' /bin/sh",
        ]);
        assert!(out.status.success(), "tmux new-session: {out:?}");
        t
    }

    /// `tmux -L SOCKET -f /dev/null ARGS` to completion.
    fn cmd(&self, args: &[&str]) -> Output {
        let mut child = Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tmux");
        if wait_child(&mut child, COMMAND_TIMEOUT).is_none() {
            kill_and_reap(&mut child);
            panic!("tmux {args:?} did not finish in {COMMAND_TIMEOUT:?}");
        }
        child.wait_with_output().expect("tmux output")
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "top"];
        args.extend(keys);
        assert!(self.cmd(&args).status.success());
    }

    fn pane(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
    }

    /// A pane format such as `#{alternate_on}`.
    fn format(&self, f: &str) -> String {
        let out = self.cmd(&["display-message", "-p", "-t", "top", f]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Waits until the pane shows every one of `want`; returns the pane.
    fn wait_for(&self, want: &[&str]) -> String {
        support::poll(PANE_TIMEOUT, &format!("the pane to show {want:?}"), || {
            let pane = self.pane();
            if want.iter().all(|w| pane.contains(w)) {
                Ok(pane)
            } else {
                Err(pane)
            }
        })
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // Ends the session's shell and whatever runs in it (SIGHUP), then the server.
        let _ = self.cmd(&["kill-server"]);
    }
}

/// `flora-cluster top --name N --runtime-dir D` as a shell line, quoted.
fn top_line(dir: &TestDir) -> String {
    format!(
        "{MASTER_BIN} top --name '{}' --runtime-dir '{}'",
        dir.name,
        dir.runtime_dir().display()
    )
}

/// Whether the terminal of the pane is back in canonical mode with echo (as `sh` left it).
fn tty_is_cooked(tmux: &Tmux) -> Result<(), String> {
    let tty = tmux.format("#{pane_tty}");
    let out = Command::new("stty")
        .args(["-a", "-F", &tty])
        .output()
        .expect("stty");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let flags: Vec<&str> = text.split_whitespace().collect();
    if ["icanon", "echo", "isig"].iter().all(|f| flags.contains(f)) {
        Ok(())
    } else {
        Err(text)
    }
}

/// Waits until top has left the screen: the exit line printed, the pane out of the alternate
/// screen with its cursor shown, the tty cooked.
fn wait_restored(tmux: &Tmux, exit_line: &str) -> String {
    let pane = tmux.wait_for(&[exit_line]);
    support::poll(PANE_TIMEOUT, "the terminal restored", || {
        let (alt, cursor) = (
            tmux.format("#{alternate_on}"),
            tmux.format("#{cursor_flag}"),
        );
        if (alt.as_str(), cursor.as_str()) != ("0", "1") {
            return Err(format!("alternate_on {alt} cursor_flag {cursor}"));
        }
        tty_is_cooked(tmux)
    });
    assert!(!pane.contains("flora-cluster top  instance"), "{pane}");
    assert!(pane.contains("shell$ "), "{pane}");
    pane
}

#[test]
fn top_shows_a_slow_request_pauses_and_restores_the_terminal_on_q_ctrl_c_and_signals() {
    let dir = TestDir::new("top");
    let cluster = dir.start(support::free_port(), 2, &[]);
    let pids = cluster.wait_ready(2);
    let mut slow = Http::connect(cluster.port).expect("connect");
    slow.send_get(&format!("/info?ms={SLOW_MS}&who=top-test"))
        .expect("send the slow request");

    let tmux = Tmux::start("top");
    tmux.keys(&[&format!("{}; echo top-exit-1=$?", top_line(&dir)), "Enter"]);
    let pane = tmux.wait_for(&["GET /info [/info]", "who=top-test", "LONGEST-RUNNING"]);
    for pid in &pids {
        assert!(pane.contains(&format!(" {pid} ")), "worker {pid}:\n{pane}");
    }
    assert!(pane.contains("q quit"), "{pane}");
    assert_eq!(tmux.format("#{alternate_on}"), "1");
    tmux.keys(&["p"]);
    tmux.wait_for(&["PAUSED"]);
    tmux.keys(&["h"]);
    tmux.wait_for(&["sort workers by resident memory"]);
    tmux.keys(&["q"]);
    wait_restored(&tmux, "top-exit-1=0");

    // A resize redraws at once (the next sample is a minute away): the key line moves to
    // the new bottom row, the header stays on the top one (tmux alone would crop the old
    // frame's top rows to keep the cursor in view). Then Ctrl-C (raw mode: a key, not a signal) quits as `q` does.
    tmux.keys(&[
        &format!("{} --interval 60; echo top-exit-2=$?", top_line(&dir)),
        "Enter",
    ]);
    tmux.wait_for(&["who=top-test"]);
    assert!(tmux
        .cmd(&["resize-window", "-t", "top", "-x", "100", "-y", "20"])
        .status
        .success());
    support::poll(PANE_TIMEOUT, "a frame of 20 rows", || {
        let pane = tmux.pane();
        let lines: Vec<&str> = pane.lines().collect();
        match lines.iter().rposition(|l| !l.trim().is_empty()) {
            Some(19)
                if lines[0].starts_with("flora-cluster top  instance")
                    && lines[19].starts_with("q quit") =>
            {
                Ok(())
            }
            _ => Err(pane.clone()),
        }
    });
    tmux.keys(&["C-c"]);
    wait_restored(&tmux, "top-exit-2=0");

    // SIGTERM and SIGHUP: the terminal restored, the exit status 128 + the signal.
    for (run, sig) in [(3, Signal::SIGTERM), (4, Signal::SIGHUP)] {
        let pid_file = dir.scratch(&format!("top-{run}.pid"));
        tmux.keys(&[
            &format!(
                "sh -c 'echo $$ > {}; exec {}'; echo top-exit-{run}=$?",
                pid_file.display(),
                top_line(&dir).replace('\'', "")
            ),
            "Enter",
        ]);
        tmux.wait_for(&["who=top-test"]);
        support::send_signal(read_pid(&pid_file), sig);
        wait_restored(&tmux, &format!("top-exit-{run}={}", 128 + sig as i32));
    }
    drop(tmux);
    drop(slow);
}

fn read_pid(path: &Path) -> u32 {
    support::poll(PANE_TIMEOUT, "the pid file", || {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .ok_or_else(String::new)
    })
}

/// Runs `flora-cluster top ARGS` with stdout to a pipe.
fn top_to_pipe(args: &[&str], runtime_dir: PathBuf) -> Output {
    let mut child = Command::new(MASTER_BIN)
        .arg("top")
        .args(args)
        .arg("--runtime-dir")
        .arg(runtime_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn top");
    if wait_child(&mut child, COMMAND_TIMEOUT).is_none() {
        kill_and_reap(&mut child);
        panic!("top {args:?} did not finish in {COMMAND_TIMEOUT:?}");
    }
    child.wait_with_output().expect("top output")
}

#[test]
fn top_once_prints_a_row_per_worker_and_bad_flags_are_refused() {
    let dir = TestDir::new("top-once");
    let cluster = dir.start(support::free_port(), 3, &[]);
    let pids = cluster.wait_ready(3);
    let mut slow = Http::connect(cluster.port).expect("connect");
    slow.send_get(&format!("/info?ms={SLOW_MS}&who=once"))
        .expect("send the slow request");
    // The request is in flight once the scoreboard shows it.
    support::wait_until(PANE_TIMEOUT, "the slow request in flight", || {
        cluster.snapshot().totals.counters.requests_active == 1
    });

    let out = top_to_pipe(
        &["--once", "--interval", "0.2", "--name", &dir.name],
        dir.runtime_dir(),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(!text.contains('\x1b'), "{text:?}");
    assert!(!text.contains("q quit"), "{text}");
    assert!(text.contains("workers 3/3 ready  every 0.2s"), "{text}");
    for pid in &pids {
        let row = text.lines().find(|l| l.contains(&format!(" {pid} ")));
        let row = row.unwrap_or_else(|| panic!("no row for worker {pid}:\n{text}"));
        assert!(row.contains(" ready "), "{row}");
    }
    assert!(text.contains("GET /info [/info]"), "{text}");
    assert!(text.contains("who=once"), "{text}");
    // Not a terminal: 120 columns.
    assert!(text.lines().all(|l| l.chars().count() <= 120), "{text}");

    for (bad, says) in [
        ("0", "must be"),
        ("0.05", "at least 0.1"),
        ("NaN", ""),
        ("-1", ""),
        ("soon", "not a number"),
    ] {
        let out = top_to_pipe(
            &["--once", "--interval", bad, "--name", &dir.name],
            dir.runtime_dir(),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--interval {bad}: {err}");
        assert!(
            err.contains("--interval") && err.contains(says),
            "{bad}: {err}"
        );
    }
    // The live view without a terminal: refused, pointing at --once.
    let out = top_to_pipe(&["--name", &dir.name], dir.runtime_dir());
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("use --once"));
    // No such instance: exit 1, saying what to check.
    let out = top_to_pipe(&["--once", "--name", "nobody-here"], dir.runtime_dir());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--runtime-dir"));
    drop(slow);
}
