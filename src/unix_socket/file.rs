//! The socket file a master made (or took over in an upgrade): removed at its drop only
//! while the name still holds that very socket.

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstatat, Mode};
use nix::unistd::UnlinkatFlags;

/// A socket file the master created. Dropping it removes the file, but only while the name
/// still holds that very socket (same device and inode): never someone else's file.
#[derive(Debug)]
pub struct SocketFile {
    dir: OwnedFd,
    name: OsString,
    path: PathBuf,
    dev: u64,
    ino: u64,
    /// Whether dropping it removes the file (not once a successor owns it).
    armed: bool,
}

impl SocketFile {
    /// The file `name` in `dir` (`path` for messages) with device and inode `id`.
    pub(crate) fn from_parts(dir: OwnedFd, name: &OsStr, path: &Path, id: (u64, u64)) -> Self {
        Self {
            dir,
            name: name.to_owned(),
            path: path.to_owned(),
            dev: id.0,
            ino: id.1,
            armed: true,
        }
    }

    /// The socket file at `path` that a predecessor made (device and inode `id`). Disarmed:
    /// dropping it leaves the file until [`Self::arm`] (the successor arms it once it took
    /// over; until then the predecessor still owns it).
    ///
    /// # Errors
    /// When the parent directory cannot be opened.
    pub(crate) fn adopt(path: &Path, id: (u64, u64)) -> std::io::Result<Self> {
        let name = path.file_name().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "needs a file name")
        })?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let dir = nix::fcntl::open(parent, flags, Mode::empty())?;
        let mut file = Self::from_parts(dir, name, path, id);
        file.armed = false;
        Ok(file)
    }

    /// Removes the file when dropped (if the name still holds this socket).
    pub(crate) fn arm(&mut self) {
        self.armed = true;
    }

    /// Leaves the file in place when dropped: a successor master serves it now.
    pub(crate) fn disarm(&mut self) {
        self.armed = false;
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Device and inode of the socket file.
    pub fn id(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }

    /// Whether the path still names this socket (not removed or replaced meanwhile).
    pub fn is_in_place(&self) -> bool {
        fstatat(
            &self.dir,
            self.name.as_os_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .is_ok_and(|st| st.st_dev == self.dev && st.st_ino == self.ino)
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if self.armed && self.is_in_place() {
            let _ =
                nix::unistd::unlinkat(&self.dir, self.name.as_os_str(), UnlinkatFlags::NoRemoveDir);
        }
    }
}
