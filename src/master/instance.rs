//! The instance's runtime directory, its exclusive lock, and the paths inside it.
//!
//! The master holds an exclusive `flock` on `<dir>/<name>.lock` for its whole life (the
//! descriptor is close-on-exec, so workers never hold it). A new master whose lock succeeds
//! knows that any segment left behind belongs to a dead master and replaces it; one whose
//! lock fails refuses to start.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::stat::{FileStat, SFlag};

use crate::error::{Error, Result};

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

/// Paths of one instance.
#[derive(Debug, Clone)]
pub struct InstancePaths {
    /// Scoreboard segment.
    pub scoreboard: PathBuf,
    /// Lock file.
    pub lock: PathBuf,
}

impl InstancePaths {
    /// Paths of instance `name` in `dir`.
    pub fn new(dir: &Path, name: &str) -> Self {
        Self {
            scoreboard: dir.join(format!("{name}.scoreboard")),
            lock: dir.join(format!("{name}.lock")),
        }
    }
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

/// Creates `dir` (mode 0700) if missing and checks that it is ours and private.
pub fn prepare_dir(dir: &Path) -> Result<()> {
    let fail = |reason: String| Error::RuntimeDir {
        path: dir.to_owned(),
        reason,
    };
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) => return Err(fail(e.to_string())),
    }
    let meta = std::fs::metadata(dir).map_err(|e| fail(e.to_string()))?;
    if !meta.is_dir() {
        return Err(fail("not a directory".into()));
    }
    let uid = nix::unistd::getuid().as_raw();
    if meta.uid() != uid {
        return Err(fail(format!(
            "owned by uid {}, not by us ({uid})",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(fail(format!(
            "writable by others (mode {:o})",
            meta.mode() & 0o777
        )));
    }
    Ok(())
}

/// The held instance lock; released (and the file removed) on drop.
#[derive(Debug)]
pub struct InstanceLock {
    _lock: Flock<File>,
    path: PathBuf,
}

impl InstanceLock {
    /// Takes the lock of instance `name`, or tells who holds it.
    pub fn acquire(path: &Path, name: &str) -> Result<Self> {
        let io = |context: &str, source| Error::Io {
            context: format!("{context} {}", path.display()),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| io("open lock file", e))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(Error::AlreadyRunning {
                    name: name.to_string(),
                    pid: text.trim().parse().unwrap_or(0),
                });
            }
            Err((_, e)) => return Err(io("lock", e.into())),
        };
        lock.set_len(0).map_err(|e| io("write lock file", e))?;
        lock.rewind().map_err(|e| io("write lock file", e))?;
        writeln!(lock, "{}", std::process::id()).map_err(|e| io("write lock file", e))?;
        Ok(Self {
            _lock: lock,
            path: path.to_owned(),
        })
    }
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        let first = InstanceLock::acquire(&p, "x").unwrap();
        match InstanceLock::acquire(&p, "x") {
            Err(Error::AlreadyRunning { pid, .. }) => assert_eq!(pid, std::process::id()),
            other => panic!("expected AlreadyRunning, got {other:?}"),
        }
        drop(first);
        assert!(InstanceLock::acquire(&p, "x").is_ok());
    }

    #[test]
    fn private_dir_is_created() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("a/b");
        prepare_dir(&d).unwrap();
        assert_eq!(
            std::fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700
        );
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(prepare_dir(&d).is_err());
    }
}
