//! The `top` loop: sample the scoreboard and `/proc` every interval, read keys, draw. Signals
//! arrive on a signalfd (blocked otherwise), so that a resize redraws and SIGTERM, SIGHUP or
//! SIGINT restore the terminal before the exit.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::render::render;
use super::term::Screen;
use super::view::{Sample, SortKey, View};
use crate::exporter::procfs;
use crate::scoreboard::raw::tty::window_size;
use crate::scoreboard::{ScoreboardReader, SlotState};

/// Width of `--once` when stdout is not a terminal.
pub const DEFAULT_WIDTH: usize = 120;
/// Height of a terminal that does not say.
const DEFAULT_HEIGHT: usize = 24;

/// How `top` ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// `q`, Ctrl-C, or the end of input.
    Quit,
    /// A signal (its number): the shell's exit status is 128 + it.
    Signal(i32),
}

/// Reads one [`Sample`]: the snapshot, then `/proc` of the master and every live worker.
///
/// ```
/// use flora_cluster::scoreboard::Scoreboard;
///
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("web.scoreboard");
/// let _master = Scoreboard::create(&path, "web", 2).unwrap();
/// let reader = Scoreboard::open_read_only(&path).unwrap();
/// let s = flora_cluster::top::sample(&reader);
/// // The creator's pid is the master's: this process.
/// assert!(s.procs.contains_key(&std::process::id()));
/// ```
pub fn sample(sb: &ScoreboardReader) -> Sample {
    let snap = sb.snapshot();
    let live = snap
        .slots
        .iter()
        .filter(|s| s.pid != 0 && !matches!(s.state, SlotState::Empty | SlotState::Dead))
        .map(|s| s.pid)
        .chain([snap.master_pid]);
    let procs: BTreeMap<u32, _> = live
        .filter_map(|pid| Some((pid, procfs::read(pid)?)))
        .collect();
    Sample { snap, procs }
}

/// Whether the master named in the snapshot still runs (a master of another user, such as
/// root, answers EPERM: it runs).
fn master_alive(s: &Sample) -> bool {
    // A pid from shared memory: never 0 or negative (a process group).
    let Ok(pid @ 1..) = i32::try_from(s.snap.master_pid) else {
        return false;
    };
    let pid = nix::unistd::Pid::from_raw(pid);
    !matches!(
        nix::sys::signal::kill(pid, None),
        Err(nix::errno::Errno::ESRCH)
    )
}

fn view_of(prev: &Sample, cur: &Sample, sort: SortKey) -> View {
    let mut v = View::between(prev, cur, sort);
    v.stale = !master_alive(cur);
    v
}

/// `--once`: one frame from two samples `interval` apart, as text lines of at most `width`
/// (no key line, no height limit).
///
/// ```
/// use std::time::Duration;
/// use flora_cluster::scoreboard::Scoreboard;
///
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("web.scoreboard");
/// let _master = Scoreboard::create(&path, "web", 2).unwrap();
/// let reader = Scoreboard::open_read_only(&path).unwrap();
/// let lines = flora_cluster::top::once(&reader, Duration::from_millis(10), 80);
/// assert!(lines[0].starts_with("flora-cluster top  instance web"));
/// ```
pub fn once(sb: &ScoreboardReader, interval: Duration, width: usize) -> Vec<String> {
    let prev = sample(sb);
    std::thread::sleep(interval);
    let cur = sample(sb);
    let mut v = view_of(&prev, &cur, SortKey::Slot);
    v.once = true;
    render(&v, width, usize::MAX)
}

/// The terminal's size, or 120×24 when it does not say.
fn size() -> (usize, usize) {
    window_size(io::stdout().as_fd()).map_or((DEFAULT_WIDTH, DEFAULT_HEIGHT), |(w, h)| {
        (w as usize, h as usize)
    })
}

/// Runs the live view on the terminal until a quit key or a signal; the terminal is put
/// back on every way out.
///
/// ```no_run
/// use std::time::Duration;
/// use flora_cluster::top::{run, Exit};
///
/// let path = std::path::Path::new("/run/user/1000/flora-cluster/web.scoreboard");
/// let reader = flora_cluster::Scoreboard::open_read_only(path).unwrap();
/// match run(&reader, Duration::from_secs(1)).unwrap() {
///     Exit::Quit => {}
///     Exit::Signal(n) => std::process::exit(128 + n),
/// }
/// ```
///
/// # Errors
/// When stdin is not a terminal, or the terminal cannot be set up or written.
pub fn run(sb: &ScoreboardReader, interval: Duration) -> io::Result<Exit> {
    let mut signals = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGWINCH,
    ] {
        signals.add(s);
    }
    signals.thread_block()?;
    let sigfd = SignalFd::with_flags(&signals, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
    let screen = Screen::enter()?;
    let mut prev = sample(sb);
    let mut cur = prev.clone();
    let mut sort = SortKey::default();
    let (mut paused, mut help) = (false, false);
    let mut next = Instant::now() + interval;
    let mut stdin = io::stdin().lock();
    loop {
        let mut v = view_of(&prev, &cur, sort);
        v.paused = paused;
        v.help = help;
        let (w, h) = size();
        screen.draw(&render(&v, w, h))?;
        let wait = next.saturating_duration_since(Instant::now());
        let timeout = PollTimeout::try_from(wait.as_millis().min(60_000) as u32 + 1)
            .unwrap_or(PollTimeout::MAX);
        let stdin_fd = io::stdin();
        let mut fds = [
            PollFd::new(stdin_fd.as_fd(), PollFlags::POLLIN),
            PollFd::new(sigfd.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        let ready = |f: &PollFd| {
            f.revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP))
        };
        let (keys_ready, signal_ready) = (ready(&fds[0]), ready(&fds[1]));
        if signal_ready {
            while let Ok(Some(info)) = sigfd.read_signal() {
                if info.ssi_signo != Signal::SIGWINCH as u32 {
                    drop(screen);
                    return Ok(Exit::Signal(info.ssi_signo as i32));
                }
            }
        }
        if keys_ready {
            let mut buf = [0u8; 64];
            let n = stdin.read(&mut buf)?;
            if n == 0 {
                return Ok(Exit::Quit);
            }
            for &b in &buf[..n] {
                match b {
                    b'q' | b'Q' | 3 | 4 => return Ok(Exit::Quit),
                    b'p' | b' ' => paused = !paused,
                    b'h' | b'?' => help = !help,
                    other => sort = SortKey::from_key(other as char).unwrap_or(sort),
                }
            }
        }
        if Instant::now() >= next {
            next = Instant::now() + interval;
            if !paused {
                prev = std::mem::replace(&mut cur, sample(sb));
            }
        }
    }
}

/// Writes `lines` to stdout, one per line.
///
/// # Errors
/// When stdout is closed.
pub fn print(lines: &[String]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    for l in lines {
        writeln!(out, "{l}")?;
    }
    out.flush()
}
