//! The bearer token of the status server's actions (`--status-token-file`).
//!
//! The file is opened `O_NOFOLLOW|O_NONBLOCK` and checked with `fstat` on that descriptor: it
//! must be a regular file owned by the master's effective user with no group or other
//! permission bits. A symlink, FIFO, device or directory is a configuration error, never
//! followed or waited on.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::SFlag;

use super::instance::{is_kind, kind_of};
use crate::config::ConfigError;
use crate::error::{Error, Result};

/// A token shorter than this is refused: it must not be guessable.
const MIN_LEN: usize = 16;
/// A token file larger than this is refused (a token is one short line).
const MAX_FILE: u64 = 4096;

fn invalid(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Config(ConfigError::Invalid {
        key: "status_token_file",
        line: None,
        reason: format!("{}: {reason}", path.display()),
    })
}

/// Opens the token file without following a symlink or blocking on a FIFO.
fn open(path: &Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(code) if code == Errno::ELOOP as i32 => invalid(
                path,
                "is a symlink; give the token file itself (a regular file, mode 0600)",
            ),
            _ => invalid(path, e),
        })
}

/// Reads the HTTP action token: a regular file of the master's user, private (mode 0600 or
/// stricter), holding at least 16 characters.
///
/// # Errors
/// [`Error::Config`] naming the file and what is wrong with it.
pub fn read_token(path: &Path) -> Result<String> {
    let file = open(path)?;
    let st = nix::sys::stat::fstat(&file).map_err(|e| invalid(path, e))?;
    if !is_kind(&st, SFlag::S_IFREG) {
        return Err(invalid(
            path,
            format!("is {}, not a regular file", kind_of(&st)),
        ));
    }
    let euid = nix::unistd::geteuid().as_raw();
    if st.st_uid != euid {
        return Err(invalid(
            path,
            format!(
                "owned by uid {}, not by the master's user (uid {euid}): chown it",
                st.st_uid
            ),
        ));
    }
    if st.st_mode & 0o077 != 0 {
        return Err(invalid(
            path,
            format!(
                "is readable by others (mode {:o}): chmod 600 it",
                st.st_mode & 0o777
            ),
        ));
    }
    let mut text = String::new();
    file.take(MAX_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| invalid(path, e))?;
    if text.len() as u64 > MAX_FILE {
        return Err(invalid(path, format!("larger than {MAX_FILE} bytes")));
    }
    let token = text.trim();
    if token.chars().count() < MIN_LEN {
        return Err(invalid(
            path,
            format!("the token must have at least {MIN_LEN} characters"),
        ));
    }
    Ok(token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const GOOD: &str = "0123456789abcdef0123\n";

    fn write(p: &Path, text: &str, mode: u32) {
        std::fs::write(p, text).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn refusal(p: &Path) -> String {
        match read_token(p) {
            Err(e @ Error::Config(_)) => e.to_string(),
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn a_private_regular_file_is_read() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("token");
        write(&p, GOOD, 0o600);
        assert_eq!(read_token(&p).unwrap(), GOOD.trim());
        write(&p, "short\n", 0o600);
        assert!(refusal(&p).contains("at least 16"));
        write(&p, GOOD, 0o640);
        assert!(refusal(&p).contains("readable by others"));
        write(&p, &"x".repeat(5000), 0o600);
        assert!(refusal(&p).contains("larger than"));
    }

    #[test]
    fn symlink_fifo_and_directory_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("real");
        write(&real, GOOD, 0o600);
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(refusal(&link).contains("is a symlink"));
        let fifo = t.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(refusal(&fifo).contains("is a FIFO"));
        let dir = t.path().join("dir");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(refusal(&dir).contains("is a directory"));
        assert!(refusal(Path::new("/dev/null")).contains("character device"));
        assert!(refusal(&t.path().join("missing")).contains("missing"));
    }

    #[test]
    fn a_file_of_another_user_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            return; // needs chown
        }
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("token");
        write(&p, GOOD, 0o600);
        std::os::unix::fs::chown(&p, Some(65534), None).unwrap();
        assert!(refusal(&p).contains("owned by uid 65534"));
    }
}
