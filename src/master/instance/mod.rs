//! The instance's runtime directory, its exclusive lock, and the files inside it.
//!
//! The directory is opened once ([`RuntimeDir::open`]: `O_DIRECTORY|O_NOFOLLOW`, owner and mode
//! checked with `fstat` on the descriptor) and every later operation is relative to that
//! descriptor (`openat`, `unlinkat`, `renameat`, `symlinkat`, always `O_NOFOLLOW`, `O_EXCL` for
//! new files). A symlink planted in its place, or a file planted inside it, is never followed.
//!
//! The master holds an exclusive `flock` on `<dir>/<name>.lock` for its whole life (the
//! descriptor is close-on-exec, so workers never hold it). The file is never removed: a new
//! master whose lock succeeds knows that any segment left behind belongs to a dead master and
//! replaces it; one whose lock fails refuses to start.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use nix::unistd::UnlinkatFlags;

use crate::error::{Error, Result};
use crate::scoreboard::raw::fd as lock_fd;

/// Where instances keep their files when nothing else is configured.
pub fn default_runtime_dir() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("flora-cluster");
    }
    let uid = nix::unistd::getuid().as_raw();
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    base.join(format!("flora-cluster-{uid}"))
}

/// What kind of file `st` describes, for messages ("a symlink", "a FIFO", …).
pub fn kind_of(st: &FileStat) -> &'static str {
    match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => "a regular file",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFLNK => "a symlink",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        _ => "a special file",
    }
}

/// Whether `st` is of type `kind` (`SFlag::S_IFREG`, …).
pub fn is_kind(st: &FileStat, kind: SFlag) -> bool {
    st.st_mode & SFlag::S_IFMT.bits() == kind.bits()
}

/// The effective uid every owner check compares with.
fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// The runtime directory, held open for the master's life (`Send + Sync`: share it in an `Arc`).
#[derive(Debug)]
pub struct RuntimeDir {
    fd: OwnedFd,
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl RuntimeDir {
    /// Creates `path` (mode 0700) if missing and opens it, refusing a symlink at its last
    /// component, a directory not owned by our effective uid or writable by group or others,
    /// and a parent that someone else could rename it in (writable by others without the
    /// sticky bit, or owned by another user than us or root).
    ///
    /// # Errors
    /// [`Error::RuntimeDir`] saying what is wrong.
    pub fn open(path: &Path) -> Result<Self> {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let fail = |reason: String| Error::RuntimeDir {
            path: path.clone(),
            reason,
        };
        let (Some(parent), Some(last)) = (path.parent(), path.file_name()) else {
            return Err(fail("needs a path that ends in a directory name".into()));
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| fail(format!("create {}: {e}", parent.display())))?;
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let pfd = nix::fcntl::open(parent, flags, Mode::empty())
            .map_err(|e| fail(format!("open {}: {e}", parent.display())))?;
        check_parent(&nix::sys::stat::fstat(&pfd).map_err(|e| fail(e.to_string()))?)
            .map_err(|why| fail(format!("{}: {why}", parent.display())))?;
        match nix::sys::stat::mkdirat(&pfd, last, Mode::from_bits_truncate(0o700)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(fail(format!("create: {e}"))),
        }
        let fd = nix::fcntl::openat(&pfd, last, flags | OFlag::O_NOFOLLOW, Mode::empty()).map_err(
            |e| match e {
                // A symlink gives ELOOP or, with O_DIRECTORY, ENOTDIR: say which it was.
                Errno::ELOOP | Errno::ENOTDIR => {
                    match nix::sys::stat::fstatat(&pfd, last, AtFlags::AT_SYMLINK_NOFOLLOW) {
                        Ok(st) if is_kind(&st, SFlag::S_IFLNK) => {
                            fail("is a symlink; refusing to follow it".into())
                        }
                        Ok(st) => fail(format!("is {}, not a directory", kind_of(&st))),
                        Err(e) => fail(e.to_string()),
                    }
                }
                e => fail(e.to_string()),
            },
        )?;
        let st = nix::sys::stat::fstat(&fd).map_err(|e| fail(e.to_string()))?;
        check_private_dir(&st).map_err(fail)?;
        Ok(Self {
            fd,
            path,
            dev: st.st_dev,
            ino: st.st_ino,
        })
    }

    /// The directory's (absolute) path, as opened.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The held descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The path of entry `name`: only for others to open (readers, `exec`); the master's
    /// own operations go through the descriptor.
    pub fn entry_path(&self, name: impl AsRef<OsStr>) -> PathBuf {
        self.path.join(name.as_ref())
    }

    /// Checks that [`RuntimeDir::path`] still names the held directory (not a symlink, same
    /// device and inode): run before anything is executed through that path.
    ///
    /// # Errors
    /// When it was moved or replaced, or cannot be checked.
    pub fn verify(&self) -> std::io::Result<()> {
        let moved = || {
            std::io::Error::other(format!(
                "runtime directory {} no longer names the directory the master opened \
                 (moved, or replaced by a symlink); refusing to run anything from it",
                self.path.display()
            ))
        };
        let st = nix::sys::stat::lstat(&self.path).map_err(|_| moved())?;
        if !is_kind(&st, SFlag::S_IFDIR) || st.st_dev != self.dev || st.st_ino != self.ino {
            return Err(moved());
        }
        Ok(())
    }

    /// Sets the directory's mode through the descriptor (0711 lets `--user` workers reach
    /// their program copy without listing the directory).
    ///
    /// # Errors
    /// The `fchmod` error.
    pub fn set_mode(&self, mode: u32) -> std::io::Result<()> {
        nix::sys::stat::fchmod(&self.fd, Mode::from_bits_truncate(mode))?;
        Ok(())
    }

    /// Whether the directory's filesystem is mounted `noexec`.
    pub fn is_noexec(&self) -> bool {
        nix::sys::statvfs::fstatvfs(&self.fd)
            .is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_NOEXEC))
    }

    /// Creates entry `name` (`O_CREAT|O_EXCL|O_NOFOLLOW`), read-write, with `mode`.
    ///
    /// # Errors
    /// `AlreadyExists` when anything is there, else the `openat` error.
    pub fn create_new(&self, name: &str, mode: u32) -> std::io::Result<File> {
        let flags =
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::openat(&self.fd, name, flags, Mode::from_bits_truncate(mode))?;
        Ok(File::from(fd))
    }

    /// Opens existing entry `name` read-write without following a symlink and without
    /// blocking on a FIFO; the caller checks what it got with `fstat`.
    ///
    /// # Errors
    /// The `openat` error (`ELOOP` for a symlink).
    pub fn open_existing(&self, name: &str) -> std::io::Result<File> {
        let flags = OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::openat(&self.fd, name, flags, Mode::empty())?;
        Ok(File::from(fd))
    }

    /// Removes entry `name` (not a directory); nothing there is fine.
    ///
    /// # Errors
    /// The `unlinkat` error other than `ENOENT`.
    pub fn unlink(&self, name: impl AsRef<OsStr>) -> std::io::Result<()> {
        match nix::unistd::unlinkat(&self.fd, name.as_ref(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Renames entry `from` to `to`, replacing `to` atomically.
    ///
    /// # Errors
    /// The `renameat` error.
    pub fn rename(&self, from: &str, to: &str) -> std::io::Result<()> {
        nix::fcntl::renameat(&self.fd, from, &self.fd, to)?;
        Ok(())
    }

    /// Publishes `name` as a symlink to `target` (e.g. `/proc/<pid>/fd/<n>` of a memfd),
    /// replacing a stale entry atomically: the link is made under a temporary name with
    /// `symlinkat` and renamed over `name`, so readers never see it missing.
    ///
    /// # Errors
    /// The `symlinkat` or `renameat` error (a directory named `name` is not replaced).
    pub fn replace_symlink(&self, name: &str, target: &Path) -> std::io::Result<()> {
        let tmp = format!(".{name}.link");
        self.unlink(&tmp)?;
        nix::unistd::symlinkat(target, &self.fd, tmp.as_str())?;
        self.rename(&tmp, name).inspect_err(|_| {
            let _ = self.unlink(&tmp);
        })
    }

    /// Removes `name` if it is a symlink to `target` (what [`RuntimeDir::replace_symlink`]
    /// made); anything else there is left alone.
    ///
    /// # Errors
    /// The `unlinkat` error.
    pub fn remove_symlink(&self, name: &str, target: &Path) -> std::io::Result<()> {
        match nix::fcntl::readlinkat(&self.fd, name) {
            Ok(t) if Path::new(&t) == target => self.unlink(name),
            _ => Ok(()),
        }
    }
}

/// The parent must not let anyone else rename or replace the runtime dir.
fn check_parent(st: &FileStat) -> Result<(), String> {
    let mode = st.st_mode;
    if st.st_uid != euid() && st.st_uid != 0 {
        return Err(format!(
            "owned by uid {}, who could replace the runtime directory; pick another --runtime-dir",
            st.st_uid
        ));
    }
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Err(format!(
            "writable by others without the sticky bit (mode {:o}), so the runtime directory \
             could be replaced; pick another --runtime-dir",
            mode & 0o7777
        ));
    }
    Ok(())
}

/// The runtime dir itself: a directory of ours that nobody else can write.
fn check_private_dir(st: &FileStat) -> Result<(), String> {
    if !is_kind(st, SFlag::S_IFDIR) {
        return Err(format!("is {}, not a directory", kind_of(st)));
    }
    if st.st_uid != euid() {
        return Err(format!(
            "owned by uid {}, not by us ({})",
            st.st_uid,
            euid()
        ));
    }
    if st.st_mode & 0o022 != 0 {
        return Err(format!(
            "writable by others (mode {:o})",
            st.st_mode & 0o777
        ));
    }
    Ok(())
}

/// The held instance lock. Dropping it releases the lock unless it was shared with a
/// successor; the file stays (removing it before the release would let two masters each lock
/// a different file of the same name).
///
/// The lock belongs to the open file description, not to a descriptor: a descriptor passed
/// to another process (`SCM_RIGHTS`) or inherited shares it, so both hold the one lock and no
/// third master can take it in between. Hence no unlock on drop once it is shared: the kernel
/// releases it when the last descriptor closes.
#[derive(Debug)]
pub struct InstanceLock {
    file: File,
    mode: LockMode,
}

/// Who else holds the lock's open file description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LockMode {
    /// Only this process: dropping the lock unlocks.
    Held,
    /// Shared with another process (handed over, or adopted from a predecessor): dropping
    /// only closes this descriptor.
    Shared,
}

impl InstanceLock {
    /// Takes the lock of instance `name` in `dir`, or tells who holds it. The lock file must
    /// be a regular file of ours (never a symlink); the pid is written once the lock is held.
    ///
    /// # Errors
    /// [`Error::AlreadyRunning`], or [`Error::Io`] naming the lock file.
    pub fn acquire(dir: &RuntimeDir, name: &str) -> Result<Self> {
        let file_name = format!("{name}.lock");
        let io = |source| Error::Io {
            context: format!("lock file {}", dir.entry_path(&file_name).display()),
            source,
        };
        let file = open_lock_file(dir, &file_name).map_err(io)?;
        let st = nix::sys::stat::fstat(&file).map_err(|e| io(e.into()))?;
        check_lock_file(&st).map_err(|why| io(std::io::Error::other(why)))?;
        if !lock_fd::try_lock_exclusive(file.as_fd()).map_err(io)? {
            let mut text = String::new();
            let _ = (&file).take(64).read_to_string(&mut text);
            return Err(Error::AlreadyRunning {
                name: name.to_string(),
                pid: text.trim().parse().unwrap_or(0),
            });
        }
        let lock = Self {
            file,
            mode: LockMode::Held,
        };
        nix::sys::stat::fchmod(&lock.file, Mode::from_bits_truncate(0o600))
            .map_err(|e| io(e.into()))?;
        lock.write_pid(std::process::id()).map_err(io)?;
        Ok(lock)
    }

    /// Writes `pid` as the lock file's content (the master that answers for the instance).
    ///
    /// # Errors
    /// The write.
    pub fn write_pid(&self, pid: u32) -> std::io::Result<()> {
        let text = format!("{pid}\n");
        self.file.set_len(0)?;
        self.file.write_all_at(text.as_bytes(), 0)
    }

    /// The descriptor to pass to a successor (its copy shares the lock).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// The successor took over: from now on dropping this copy no longer unlocks (the
    /// successor's copy keeps the lock).
    pub fn hand_over(&mut self) {
        self.mode = LockMode::Shared;
    }

    /// [`Self::fd`] and [`Self::hand_over`] at once.
    #[cfg(test)]
    pub fn share(&mut self) -> BorrowedFd<'_> {
        self.hand_over();
        self.file.as_fd()
    }

    /// Takes a lock descriptor a predecessor passed: it must be a regular file of ours whose
    /// open file description holds the lock (taking it again on the same description succeeds;
    /// a description another master's lock excludes fails; a free lock is taken).
    ///
    /// # Errors
    /// [`Error::Io`] when the descriptor is not such a file, or its description does not hold
    /// the lock.
    pub fn adopt(fd: OwnedFd) -> Result<Self> {
        let io = |source| Error::Io {
            context: "the instance lock passed by the previous master".into(),
            source,
        };
        let st = nix::sys::stat::fstat(&fd).map_err(|e| io(e.into()))?;
        check_lock_file(&st).map_err(|why| io(std::io::Error::other(why)))?;
        if !lock_fd::try_lock_exclusive(fd.as_fd()).map_err(io)? {
            return Err(io(std::io::Error::other(
                "its description does not hold the lock (another master does)",
            )));
        }
        Ok(Self {
            file: File::from(fd),
            mode: LockMode::Shared,
        })
    }
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        if self.mode == LockMode::Held {
            // A library user's process may go on after the master: release now, not at exit.
            let _ = lock_fd::unlock(self.file.as_fd());
        }
    }
}

/// Opens the existing lock file, or creates it with `O_EXCL` (0600).
fn open_lock_file(dir: &RuntimeDir, name: &str) -> std::io::Result<File> {
    let symlink = || std::io::Error::other("is a symlink; refusing to follow it");
    for _ in 0..2 {
        match dir.open_existing(name) {
            Ok(f) => return Ok(f),
            Err(e) if e.raw_os_error() == Some(Errno::ELOOP as i32) => return Err(symlink()),
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            Err(_) => {}
        }
        match dir.create_new(name, 0o600) {
            Ok(f) => return Ok(f),
            // Created by someone else meanwhile: open that one (and check it).
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("appears and disappears; refusing it"))
}

/// The lock file must be one regular file of ours.
fn check_lock_file(st: &FileStat) -> Result<(), String> {
    if !is_kind(st, SFlag::S_IFREG) {
        return Err(format!("is {}, not a regular file", kind_of(st)));
    }
    if st.st_uid != euid() {
        return Err(format!(
            "owned by uid {}, not by us ({})",
            st.st_uid,
            euid()
        ));
    }
    if st.st_nlink != 1 {
        return Err(format!("has {} hard links; refusing it", st.st_nlink));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
