//! The listener table across a master upgrade: described and sent by the old master,
//! adopted by the new one (same sockets: nothing is closed, nothing queued is lost).

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;

use super::{unix_name, Listeners};
use crate::master::handover::wire::FdRole;
use crate::unix_socket::SocketFile;

impl Listeners {
    /// Every listener with its description, for a successor.
    pub fn describe(&self) -> Vec<(FdRole, BorrowedFd<'_>)> {
        let mut out = Vec::new();
        for (key, l) in &self.bound {
            let mut requested: Vec<String> = self
                .by_request
                .iter()
                .filter(|(_, a)| *a == key)
                .map(|(r, _)| r.clone())
                .collect();
            requested.sort();
            let role = FdRole::Tcp {
                requested,
                local: *key,
            };
            out.push((role, l.as_fd()));
        }
        for (path, (l, file)) in &self.unix {
            let role = FdRole::Unix {
                path: path.clone(),
                file: file.as_ref().map(SocketFile::id),
            };
            out.push((role, l.as_fd()));
        }
        out
    }

    /// Takes a listener a predecessor described (other roles are not listeners: refused).
    ///
    /// # Errors
    /// When the descriptor does not match its description.
    pub fn adopt_described(&mut self, role: &FdRole, fd: OwnedFd) -> io::Result<()> {
        let mismatch = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
        match role {
            FdRole::Tcp { requested, local } => {
                let l = TcpListener::from(fd);
                let actual = l.local_addr()?;
                // The table is keyed by the address asked for: `:0` stands for the port the
                // kernel chose.
                let same = actual == *local || (local.port() == 0 && local.ip() == actual.ip());
                if !same {
                    return Err(mismatch(format!(
                        "listener described as {local} is bound to {actual}"
                    )));
                }
                l.set_nonblocking(true)?;
                self.watch(&local.to_string(), l.as_fd());
                self.bound.insert(*local, l);
                for r in requested {
                    self.by_request.insert(r.clone(), *local);
                }
            }
            FdRole::Unix { path, file } => {
                // A safe bind names the socket in a private directory and moves the file into
                // place: its bound name is not `path`, the file at `path` (by id) is the check.
                let bound = super::unix_path_of(&fd);
                let not_there = || {
                    mismatch(format!(
                        "listener described as unix:{} is not bound there",
                        path.display()
                    ))
                };
                let file = match file {
                    Some(id) if bound.is_some() && file_is(path, *id) => {
                        Some(SocketFile::adopt(path, *id)?)
                    }
                    None if bound.as_deref() == Some(path.as_path()) => None,
                    _ => return Err(not_there()),
                };
                let l = UnixListener::from(fd);
                l.set_nonblocking(true)?;
                self.watch(&unix_name(path), l.as_fd());
                self.unix.insert(path.clone(), (l, file));
            }
            other => return Err(mismatch(format!("{other:?} is not a listener"))),
        }
        Ok(())
    }

    /// Leaves every Unix socket file in place at drop: a successor serves them now.
    pub fn disarm(&mut self) {
        for (_, file) in self.unix.values_mut() {
            if let Some(f) = file {
                f.disarm();
            }
        }
    }

    /// Removes the Unix socket files this master made or took over when it drops the table
    /// (after a takeover: adopted files are left alone until then).
    pub fn arm(&mut self) {
        for (_, file) in self.unix.values_mut() {
            if let Some(f) = file {
                f.arm();
            }
        }
    }
}

/// Whether `path` names the socket file with device and inode `id`.
fn file_is(path: &std::path::Path, id: (u64, u64)) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    std::fs::symlink_metadata(path)
        .is_ok_and(|m| m.file_type().is_socket() && (m.dev(), m.ino()) == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_described_table_is_adopted_with_the_same_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.sock");
        let mut old = Listeners::default();
        let (tcp, _) = old.get_or_bind("127.0.0.1:0").unwrap();
        old.get_or_bind(&format!("unix:{}", path.display()))
            .unwrap();
        let described: Vec<(FdRole, OwnedFd)> = old
            .describe()
            .into_iter()
            .map(|(r, fd)| (r, fd.try_clone_to_owned().unwrap()))
            .collect();
        assert_eq!(described.len(), 2);
        let mut new = Listeners::default();
        for (role, fd) in described {
            new.adopt_described(&role, fd).unwrap();
        }
        let (again, _) = new.get_or_bind("127.0.0.1:0").unwrap();
        assert_eq!(again, tcp, "the same socket, not a new one");
        assert_eq!(new.bound.len(), 1);
        assert!(new.declared(&format!("unix:{}", path.display())));
        // The old master hands over: its drop leaves the file to the new one.
        old.disarm();
        drop(old);
        assert!(path.exists());
        assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());
        new.arm();
        drop(new);
        assert!(!path.exists(), "the last master removes it");
    }

    #[test]
    fn a_new_master_that_never_took_over_leaves_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.sock");
        let mut old = Listeners::default();
        old.get_or_bind(&format!("unix:{}", path.display()))
            .unwrap();
        let mut new = Listeners::default();
        for (role, fd) in old.describe() {
            new.adopt_described(&role, fd.try_clone_to_owned().unwrap())
                .unwrap();
        }
        drop(new);
        assert!(path.exists(), "a rolled-back new master removes nothing");
        drop(old);
        assert!(!path.exists());
    }

    #[test]
    fn a_wrong_description_is_refused() {
        let mut old = Listeners::default();
        old.get_or_bind("127.0.0.1:0").unwrap();
        let (_, fd) = old.describe().pop().unwrap();
        let fd = fd.try_clone_to_owned().unwrap();
        let role = FdRole::Tcp {
            requested: vec![],
            local: "127.0.0.1:1".parse().unwrap(),
        };
        let err = Listeners::default().adopt_described(&role, fd).unwrap_err();
        assert!(err.to_string().contains("bound to"), "{err}");
        let fd = old
            .describe()
            .pop()
            .unwrap()
            .1
            .try_clone_to_owned()
            .unwrap();
        assert!(Listeners::default()
            .adopt_described(&FdRole::Lock, fd)
            .is_err());
    }
}
