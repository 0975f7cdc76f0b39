//! The safe bind of a Unix listening socket (the steps are in the module docs).

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};
use nix::unistd::UnlinkatFlags;

use super::{SocketFile, UnixOptions, UnixSocketError};

/// The socket's name inside its private directory.
const INNER: &str = "s";
/// Names tried for the private directory before giving up (leftovers of a crashed master).
const TMP_ATTEMPTS: u32 = 16;

/// Numbers private directories apart within this process.
static NEXT_TMP: AtomicU32 = AtomicU32::new(0);

/// What holds the final name before the bind.
enum Existing {
    Nothing,
    Stale(FileStat),
}

/// Binds a listening Unix socket at `path` (checked by [`super::unix_path`]) with the mode
/// and owner of `opts`, replacing only a stale socket (see the module docs). The listener is
/// non-blocking and close-on-exec.
///
/// ```
/// use flora_cluster::unix_socket::{bind, UnixOptions};
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("app.sock");
/// let (listener, file) = bind(&path, &UnixOptions::default()).unwrap();
/// assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());
/// assert!(bind(&path, &UnixOptions::default()).is_err(), "in use");
/// drop((listener, file)); // the file is removed
/// assert!(!path.exists());
/// ```
///
/// # Errors
/// [`UnixSocketError`]: a missing or unsafe parent, a name held by something else or by a
/// live socket, a failing call.
pub fn bind(
    path: &Path,
    opts: &UnixOptions,
) -> Result<(UnixListener, SocketFile), UnixSocketError> {
    let io = |context| {
        move |e: Errno| UnixSocketError::Io {
            path: path.to_owned(),
            context,
            source: e.into(),
        }
    };
    let (dir, name) = open_parent(path)?;
    let existing = inspect(&dir, name, path)?;
    let tmp = PrivateDir::create(&dir, path)?;
    let sock = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(io("socket"))?;
    let addr = UnixAddr::new(&tmp.bind_path(path)?).map_err(io("socket address"))?;
    socket::bind(sock.as_raw_fd(), &addr).map_err(io("bind"))?;
    if let Some(uid_gid) = opts.uid.or(opts.gid).map(|_| (opts.uid, opts.gid)) {
        nix::unistd::fchownat(
            &tmp.fd,
            INNER,
            uid_gid.0.map(nix::unistd::Uid::from_raw),
            uid_gid.1.map(nix::unistd::Gid::from_raw),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(io("chown"))?;
    }
    // Inside our private directory nothing else can put a symlink in the way.
    nix::sys::stat::fchmodat(
        &tmp.fd,
        INNER,
        Mode::from_bits_truncate(opts.mode),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .map_err(io("chmod"))?;
    let st = fstatat(&tmp.fd, INNER, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(io("stat"))?;
    socket::listen(&sock, crate::config::backlog_arg(opts.backlog)).map_err(io("listen"))?;
    put_in_place(&tmp, &dir, name, path, existing)?;
    drop(tmp);
    let file = SocketFile::from_parts(dir, name, path, (st.st_dev, st.st_ino));
    Ok((UnixListener::from(sock), file))
}

/// Opens the parent directory (following symlinks above the final name: `/var/run` is one)
/// and checks that others cannot swap entries in it.
fn open_parent(path: &Path) -> Result<(OwnedFd, &OsStr), UnixSocketError> {
    let refuse = |reason: String| UnixSocketError::Parent {
        path: path.to_owned(),
        reason,
    };
    let name = path
        .file_name()
        .ok_or_else(|| refuse("no file name".into()))?;
    let parent = path.parent().unwrap_or(Path::new("/"));
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let dir = nix::fcntl::open(parent, flags, Mode::empty()).map_err(|e| match e {
        Errno::ENOENT => refuse(format!("{} does not exist", parent.display())),
        Errno::ENOTDIR => refuse(format!("{} is not a directory", parent.display())),
        e => refuse(format!("{}: {e}", parent.display())),
    })?;
    let st = fstat(&dir).map_err(|e| refuse(e.to_string()))?;
    if st.st_mode & 0o002 != 0 && st.st_mode & 0o1000 == 0 {
        return Err(refuse(format!(
            "{} is writable by every user without the sticky bit; anyone could replace the socket",
            parent.display()
        )));
    }
    Ok((dir, name))
}

/// Looks at the final name without following it (step 3 of the module docs).
fn inspect(dir: &OwnedFd, name: &OsStr, path: &Path) -> Result<Existing, UnixSocketError> {
    let st = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(Existing::Nothing),
        Err(e) => {
            return Err(UnixSocketError::Io {
                path: path.to_owned(),
                context: "stat",
                source: e.into(),
            })
        }
    };
    if st.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFSOCK.bits() {
        return Err(UnixSocketError::NotASocket {
            path: path.to_owned(),
            kind: kind_of(&st),
        });
    }
    match probe(&through(dir, name, path)) {
        Errno::ECONNREFUSED => Ok(Existing::Stale(st)),
        Errno::ENOENT => Ok(Existing::Nothing),
        Errno::UnknownErrno | Errno::EAGAIN | Errno::EINPROGRESS => Err(UnixSocketError::InUse {
            path: path.to_owned(),
        }),
        e => Err(UnixSocketError::Io {
            path: path.to_owned(),
            context: "connect to the existing socket",
            source: e.into(),
        }),
    }
}

/// Connects to the socket at `at`: `UnknownErrno` when it accepted, else the error
/// (`ECONNREFUSED`: nobody listens; `EAGAIN`: a full backlog, so someone does).
fn probe(at: &Path) -> Errno {
    let Ok(addr) = UnixAddr::new(at) else {
        return Errno::ENAMETOOLONG;
    };
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    match socket::socket(AddressFamily::Unix, SockType::Stream, flags, None) {
        Ok(sock) => match socket::connect(sock.as_raw_fd(), &addr) {
            Ok(()) => Errno::UnknownErrno,
            Err(e) => e,
        },
        Err(e) => e,
    }
}

/// A path to entry `name` of the held directory `dir` that does not re-resolve the
/// directory's own path (`/proc/self/fd/N/name`), or `full` without `/proc`.
fn through(dir: &OwnedFd, name: &OsStr, full: &Path) -> PathBuf {
    let proc = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    let at = proc.join(name);
    if proc.is_dir() && at.as_os_str().len() <= super::MAX_PATH_LEN {
        at
    } else {
        full.to_owned()
    }
}

/// What kind of file `st` describes, for messages.
fn kind_of(st: &FileStat) -> &'static str {
    match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => "a regular file",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFLNK => "a symlink",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        _ => "a special file",
    }
}

/// Step 5: `link` onto a free name, or exchange with the stale socket and check what came out.
fn put_in_place(
    tmp: &PrivateDir,
    dir: &OwnedFd,
    name: &OsStr,
    path: &Path,
    existing: Existing,
) -> Result<(), UnixSocketError> {
    let io = |context| {
        move |e: Errno| UnixSocketError::Io {
            path: path.to_owned(),
            context,
            source: e.into(),
        }
    };
    let changed = || UnixSocketError::Changed {
        path: path.to_owned(),
    };
    match existing {
        Existing::Nothing => {
            match nix::unistd::linkat(tmp.fd.as_fd(), INNER, dir, name, AtFlags::empty()) {
                Ok(()) => Ok(()),
                Err(Errno::EEXIST) => Err(changed()),
                Err(e) => Err(io("link into place")(e)),
            }
        }
        Existing::Stale(old) => {
            let swapped = match exchange(tmp, dir, name) {
                // The stale socket went away meanwhile: the name is free now.
                Err(Errno::ENOENT) => return put_in_place(tmp, dir, name, path, Existing::Nothing),
                other => other.map_err(io("rename into place"))?,
            };
            if !swapped {
                return Ok(());
            }
            let out = fstatat(&tmp.fd, INNER, AtFlags::AT_SYMLINK_NOFOLLOW);
            if out.is_ok_and(|st| st.st_dev == old.st_dev && st.st_ino == old.st_ino) {
                return Ok(());
            }
            // Not the socket we inspected: put it back untouched.
            exchange(tmp, dir, name).map_err(io("undo the rename"))?;
            Err(changed())
        }
    }
}

/// Swaps the socket with the stale one (`true`). Where the file system cannot (`EINVAL`), a
/// plain rename replaces it (`false`: nothing to check afterwards; a narrow window remains).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn exchange(tmp: &PrivateDir, dir: &OwnedFd, name: &OsStr) -> nix::Result<bool> {
    use nix::fcntl::RenameFlags;
    match nix::fcntl::renameat2(&tmp.fd, INNER, dir, name, RenameFlags::RENAME_EXCHANGE) {
        Err(Errno::EINVAL) => nix::fcntl::renameat(&tmp.fd, INNER, dir, name).map(|()| false),
        other => other.map(|()| true),
    }
}

/// Without `renameat2`: a plain rename (`false`, as above).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn exchange(tmp: &PrivateDir, dir: &OwnedFd, name: &OsStr) -> nix::Result<bool> {
    nix::fcntl::renameat(&tmp.fd, INNER, dir, name).map(|()| false)
}

/// A fresh directory (mode 0700) beside the final name where the socket is bound, chmodded
/// and chowned before anyone else can reach it; removed with its content on drop.
struct PrivateDir {
    parent: OwnedFd,
    name: String,
    fd: OwnedFd,
}

impl PrivateDir {
    fn create(parent: &OwnedFd, path: &Path) -> Result<Self, UnixSocketError> {
        let io = |context| {
            move |e: Errno| UnixSocketError::Io {
                path: path.to_owned(),
                context,
                source: e.into(),
            }
        };
        let parent = parent.try_clone().map_err(|source| UnixSocketError::Io {
            path: path.to_owned(),
            context: "dup the parent directory",
            source,
        })?;
        let mut last = Errno::EEXIST;
        for _ in 0..TMP_ATTEMPTS {
            let n = NEXT_TMP.fetch_add(1, Ordering::Relaxed);
            let name = format!(".flora-bind-{}-{n}", std::process::id());
            match nix::sys::stat::mkdirat(&parent, name.as_str(), Mode::S_IRWXU) {
                Ok(()) => {}
                Err(Errno::EEXIST) => continue,
                Err(e) => {
                    last = e;
                    break;
                }
            }
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let fd = nix::fcntl::openat(&parent, name.as_str(), flags, Mode::empty());
            let fd = match fd.and_then(|fd| check_private(&fd).map(|()| fd)) {
                Ok(fd) => fd,
                Err(e) => {
                    // Only an empty directory goes; one swapped in by someone else is not ours.
                    let _ = nix::unistd::unlinkat(&parent, name.as_str(), UnlinkatFlags::RemoveDir);
                    return Err(io("open the private directory")(e));
                }
            };
            return Ok(Self { parent, name, fd });
        }
        Err(io("create a private directory beside the socket")(last))
    }

    /// The path to bind: through `/proc/self/fd` (short, and not re-resolving the parent) or
    /// the full one.
    fn bind_path(&self, path: &Path) -> Result<PathBuf, UnixSocketError> {
        let full = path
            .parent()
            .unwrap_or(Path::new("/"))
            .join(&self.name)
            .join(INNER);
        let at = through(&self.fd, OsStr::new(INNER), &full);
        if at.as_os_str().len() > super::MAX_PATH_LEN {
            return Err(UnixSocketError::BadPath {
                path: path.display().to_string(),
                reason: "too long to bind through a private directory without /proc".into(),
            });
        }
        Ok(at)
    }
}

/// The directory opened as ours must be ours: owned by us, mode 0700 (a group member of a
/// group-writable parent could swap in a directory of theirs between `mkdirat` and `openat`).
fn check_private(fd: &OwnedFd) -> nix::Result<()> {
    let st = fstat(fd)?;
    let ours = st.st_uid == nix::unistd::geteuid().as_raw() && st.st_mode & 0o7777 == 0o700;
    if ours {
        Ok(())
    } else {
        Err(Errno::EPERM)
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = nix::unistd::unlinkat(&self.fd, INNER, UnlinkatFlags::NoRemoveDir);
        let _ = nix::unistd::unlinkat(&self.parent, self.name.as_str(), UnlinkatFlags::RemoveDir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket bound in a private directory next to `path`, as `bind` does before step 5.
    fn prepared(dir: &OwnedFd, path: &Path) -> (PrivateDir, OwnedFd) {
        let tmp = PrivateDir::create(dir, path).unwrap();
        let sock = socket::socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        let addr = UnixAddr::new(&tmp.bind_path(path).unwrap()).unwrap();
        socket::bind(sock.as_raw_fd(), &addr).unwrap();
        (tmp, sock)
    }

    /// The races `inspect` cannot see: what appears or is swapped in between the look and the
    /// move is never removed.
    #[test]
    fn a_file_planted_after_the_look_is_put_back_untouched() {
        let base = tempfile::tempdir().unwrap();
        let path = base.path().join("app.sock");
        let (dir, name) = open_parent(&path).unwrap();

        // Looked free, then a file appeared: link refuses.
        let (tmp, _s) = prepared(&dir, &path);
        std::fs::write(&path, "planted").unwrap();
        let err = put_in_place(&tmp, &dir, name, &path, Existing::Nothing).unwrap_err();
        assert!(matches!(err, UnixSocketError::Changed { .. }), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "planted");
        drop(tmp);

        // Looked stale (another inode), then a file took the name: swapped back.
        let stale = base.path().join("other.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        let old = fstatat(&dir, "other.sock", AtFlags::AT_SYMLINK_NOFOLLOW).unwrap();
        let (tmp, _s) = prepared(&dir, &path);
        let err = put_in_place(&tmp, &dir, name, &path, Existing::Stale(old)).unwrap_err();
        assert!(matches!(err, UnixSocketError::Changed { .. }), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "planted");
        drop(tmp);
        let mut left: Vec<_> = std::fs::read_dir(base.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["app.sock", "other.sock"], "no private dir left");
    }

    /// Looked stale, then removed by someone else before the swap: the name is free, so the
    /// socket is linked there instead of failing.
    #[test]
    fn a_stale_socket_removed_after_the_look_is_no_error() {
        let base = tempfile::tempdir().unwrap();
        let path = base.path().join("app.sock");
        let (dir, name) = open_parent(&path).unwrap();
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let old = fstatat(&dir, "app.sock", AtFlags::AT_SYMLINK_NOFOLLOW).unwrap();
        std::fs::remove_file(&path).unwrap();
        let (tmp, _s) = prepared(&dir, &path);
        put_in_place(&tmp, &dir, name, &path, Existing::Stale(old)).unwrap();
        let now = fstatat(&dir, "app.sock", AtFlags::AT_SYMLINK_NOFOLLOW).unwrap();
        assert_ne!(now.st_ino, old.st_ino, "our new socket is in place");
    }
}
