//! The master's end of the control socket: accepts clients, reads one JSON request per line,
//! hands it to the event loop and writes the reply. Bounded: line length, idle time and the
//! number of clients at once; garbage gets an error reply, never a crash.
//!
//! The socket is bound relative to its directory's descriptor: an existing entry that is not a
//! socket of ours is refused and left alone, and only our socket is removed at exit.

use std::ffi::OsStr;
use std::io::ErrorKind;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Semaphore};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::UnlinkatFlags;

use super::instance::{is_kind, kind_of, RuntimeDir};
use crate::control::{Command, Reply, Request, MAX_LINE};
pub use crate::unix_socket::SocketFile;

/// Clients served at once; more wait in the socket's backlog.
const MAX_CLIENTS: usize = 32;
/// A client that sends nothing for this long is dropped.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

fn refuse(kind: std::io::ErrorKind, reason: String) -> std::io::Error {
    std::io::Error::new(kind, reason)
}

/// Binds the socket at `path` (mode 0600). Something else at that path is refused and left
/// alone; a socket of ours is replaced only when no live master answers on it.
///
/// # Errors
/// The refusal, or the failing call.
pub fn bind(path: &Path) -> std::io::Result<(UnixListener, SocketFile)> {
    let name = path
        .file_name()
        .ok_or_else(|| refuse(ErrorKind::InvalidInput, "needs a file name".into()))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let dir = nix::fcntl::open(parent, flags, Mode::empty())?;
    bind_at(dir, name, path)
}

/// Binds socket `name` in the held runtime directory.
///
/// # Errors
/// As [`bind`].
pub fn bind_in(dir: &RuntimeDir, name: &str) -> std::io::Result<(UnixListener, SocketFile)> {
    let full = dir.entry_path(name);
    bind_at(dir.fd().try_clone_to_owned()?, OsStr::new(name), &full)
}

/// A path that reaches entry `name` through the descriptor `dir` (not re-resolving the
/// directory's own path) when `/proc` is there, else `full`.
fn through(dir: &OwnedFd, name: &OsStr, full: &Path) -> PathBuf {
    let proc = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    if proc.is_dir() {
        proc.join(name)
    } else {
        full.to_owned()
    }
}

/// Whether something accepts (or queues) connections on the socket at `path`.
fn answers(path: &Path) -> bool {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let Ok(addr) = UnixAddr::new(path) else {
        return false;
    };
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let Ok(sock) = socket(AddressFamily::Unix, SockType::Stream, flags, None) else {
        return false;
    };
    // A full backlog (EAGAIN) still means a live listener.
    matches!(
        connect(sock.as_raw_fd(), &addr),
        Ok(()) | Err(Errno::EAGAIN | Errno::EINPROGRESS)
    )
}

fn bind_at(dir: OwnedFd, name: &OsStr, full: &Path) -> std::io::Result<(UnixListener, SocketFile)> {
    use nix::sys::stat::{fstatat, umask};
    let at = through(&dir, name, full);
    match fstatat(&dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
        Ok(st) => {
            if !is_kind(&st, SFlag::S_IFSOCK) {
                return Err(refuse(
                    ErrorKind::AlreadyExists,
                    format!(
                        "exists and is {}, not a socket; refusing to replace it",
                        kind_of(&st)
                    ),
                ));
            }
            let euid = nix::unistd::geteuid().as_raw();
            if st.st_uid != euid {
                return Err(refuse(
                    ErrorKind::PermissionDenied,
                    format!(
                        "is a socket of uid {}, not ours ({euid}); refusing to replace it",
                        st.st_uid
                    ),
                ));
            }
            if answers(&at) {
                return Err(refuse(
                    ErrorKind::AddrInUse,
                    "a running master answers on it; stop it or pick another --control-socket"
                        .into(),
                ));
            }
            match nix::unistd::unlinkat(&dir, name, UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    // Created 0600 from the start: no window where others could connect.
    let old = umask(Mode::from_bits_truncate(0o177));
    let bound = std::os::unix::net::UnixListener::bind(&at);
    umask(old);
    let listener = bound?;
    listener.set_nonblocking(true)?;
    let st = fstatat(&dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    let file = SocketFile::from_parts(dir, name, full, (st.st_dev, st.st_ino));
    Ok((UnixListener::from_std(listener)?, file))
}

/// Serves clients until the task is dropped.
pub async fn serve(listener: UnixListener, commands: mpsc::UnboundedSender<Command>) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::debug!("control socket accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let commands = commands.clone();
        tokio::spawn(async move {
            if let Err(e) = client(stream, commands).await {
                tracing::debug!("control client: {e}");
            }
            drop(permit);
        });
    }
}

async fn client(
    stream: UnixStream,
    commands: mpsc::UnboundedSender<Command>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut line = Vec::new();
        let n = tokio::time::timeout(
            IDLE_TIMEOUT,
            (&mut reader)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut line),
        )
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "idle client"))??;
        if n == 0 {
            return Ok(());
        }
        let (reply, last) = if line.len() > MAX_LINE || !line.ends_with(b"\n") {
            (Reply::error(format!("request too long or unterminated (limit {MAX_LINE} bytes, one JSON object per line)")), true)
        } else {
            match serde_json::from_slice::<Request>(&line) {
                Ok(req) => (dispatch(req, &commands).await, false),
                Err(e) => (Reply::error(format!("bad request: {e}")), false),
            }
        };
        let mut out = serde_json::to_vec(&reply).unwrap_or_else(|_| br#"{"ok":false}"#.to_vec());
        out.push(b'\n');
        write.write_all(&out).await?;
        if last {
            return Ok(());
        }
    }
}

async fn dispatch(req: Request, commands: &mpsc::UnboundedSender<Command>) -> Reply {
    let (tx, rx) = oneshot::channel();
    if commands.send(Command { req, reply: tx }).is_err() {
        return Reply::error("the master is shutting down");
    }
    rx.await
        .unwrap_or_else(|_| Reply::error("the master is shutting down"))
}
