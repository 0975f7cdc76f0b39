//! Unix domain socket addresses (`unix:/run/app/http.sock`): parsing, the mode and owner
//! options, and a bind that is safe in a directory other users can reach ([`bind`]).
//!
//! ```
//! use flora_cluster::unix_socket::{unix_path, UnixOptions};
//! use std::path::Path;
//!
//! assert_eq!(unix_path("unix:/run/app/http.sock").unwrap().unwrap(), Path::new("/run/app/http.sock"));
//! assert!(unix_path("127.0.0.1:8080").is_none(), "not a unix address");
//! assert!(unix_path("unix:app.sock").unwrap().is_err(), "relative");
//!
//! let opts = UnixOptions::resolve(Some("0640"), None).unwrap();
//! assert_eq!(opts.mode, 0o640);
//! ```
//!
//! # The bind, step by step
//! 1. The path is absolute, without `..`, and fits `sun_path` (107 bytes and a NUL).
//! 2. The parent directory is opened once; everything after is relative to that descriptor.
//!    A parent that others may write without the sticky bit is refused (they could swap the
//!    socket under nginx).
//! 3. The final name is looked at without following it: nothing there is fine; a socket on
//!    which `connect` gets `ECONNREFUSED` is stale and will be replaced; a socket that accepts
//!    is "in use"; anything else (file, FIFO, directory, symlink, device) is refused and left
//!    alone.
//! 4. The socket is bound inside a fresh private directory (mode 0700) next to the final name,
//!    so nobody can connect before its mode and owner are set; then it listens.
//! 5. It is moved into place atomically: `link` (fails if a name appeared meanwhile) for a
//!    free name, `renameat2(RENAME_EXCHANGE)` for a stale socket, after which the object taken
//!    out must be the very stale socket inspected in 3 (same device and inode), else the swap
//!    is undone. So a non-socket is never removed, even one planted during the bind.
//!
//! The kernel keeps the bound name of step 4 as the socket's own address (`getsockname`);
//! clients connect by the final path.

mod bind;
mod file;
#[cfg(test)]
mod tests;

use std::path::{Component, Path, PathBuf};

pub use bind::bind;
pub use file::SocketFile;

/// Prefix of a Unix socket address in `listen()` and `--listen`.
pub const PREFIX: &str = "unix:";
/// Longest path a `sockaddr_un` holds (108 bytes of `sun_path` with the terminating NUL).
pub const MAX_PATH_LEN: usize = 107;
/// Mode of a new socket file unless configured: owner and group may connect.
pub const DEFAULT_MODE: u32 = 0o660;

/// Errors of Unix socket addresses, options and binds.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnixSocketError {
    /// The path is not one a socket can be bound at safely.
    #[error("unix socket path {path:?}: {reason}")]
    BadPath {
        /// The path as given.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The parent directory cannot be used.
    #[error("unix socket {path}: parent directory: {reason}")]
    Parent {
        /// The socket path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Something that is not a socket has the name; it is left alone.
    #[error("unix socket {path}: exists and is {kind}, not a socket; refusing to replace it")]
    NotASocket {
        /// The socket path.
        path: PathBuf,
        /// What is there ("a regular file", "a symlink", …).
        kind: &'static str,
    },
    /// A live socket has the name: something accepts connections on it.
    #[error("unix socket {path}: in use (something accepts connections on it); stop it or pick another path")]
    InUse {
        /// The socket path.
        path: PathBuf,
    },
    /// The name changed while the socket was being put in place; nothing was replaced.
    #[error("unix socket {path}: the name changed while binding; nothing was replaced")]
    Changed {
        /// The socket path.
        path: PathBuf,
    },
    /// `--unix-mode` is not an octal mode up to 0777.
    #[error("invalid unix socket mode {0:?}: use octal permission bits up to 0777, e.g. 0660")]
    Mode(String),
    /// `--unix-owner` is not `user`, `user:group` or `:group`, or names nobody.
    #[error("invalid unix socket owner {spec:?}: {reason}")]
    Owner {
        /// The spec as given.
        spec: String,
        /// What is wrong.
        reason: String,
    },
    /// A system call failed.
    #[error("unix socket {path}: {context}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// What was being done.
        context: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl From<UnixSocketError> for std::io::Error {
    fn from(e: UnixSocketError) -> Self {
        let kind = match &e {
            UnixSocketError::InUse { .. } => std::io::ErrorKind::AddrInUse,
            UnixSocketError::NotASocket { .. } | UnixSocketError::Changed { .. } => {
                std::io::ErrorKind::AlreadyExists
            }
            UnixSocketError::Io { source, .. } => source.kind(),
            _ => std::io::ErrorKind::InvalidInput,
        };
        Self::new(kind, e)
    }
}

/// The checked path of a `unix:` address; `None` when `addr` is not one (a TCP address).
///
/// ```
/// use flora_cluster::unix_socket::unix_path;
/// assert!(unix_path("unix:/run/a/../b.sock").unwrap().is_err());
/// assert!(unix_path(&format!("unix:/{}", "x".repeat(200))).unwrap().is_err());
/// ```
///
/// # Errors
/// [`UnixSocketError::BadPath`]: relative, `..`, no file name, a NUL byte, or longer than
/// [`MAX_PATH_LEN`] bytes.
pub fn unix_path(addr: &str) -> Option<Result<&Path, UnixSocketError>> {
    addr.strip_prefix(PREFIX).map(check_path)
}

fn check_path(text: &str) -> Result<&Path, UnixSocketError> {
    let bad = |reason: String| UnixSocketError::BadPath {
        path: text.to_string(),
        reason,
    };
    let path = Path::new(text);
    if !path.is_absolute() {
        return Err(bad("must be absolute (unix:/run/app/http.sock)".into()));
    }
    if text.contains('\0') {
        return Err(bad("contains a NUL byte".into()));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(bad("must not contain `..`".into()));
    }
    if text.ends_with('/') || path.file_name().is_none() {
        return Err(bad("needs a file name".into()));
    }
    if text.len() > MAX_PATH_LEN {
        return Err(bad(format!(
            "is {} bytes; a unix socket path holds at most {MAX_PATH_LEN} (sun_path)",
            text.len()
        )));
    }
    Ok(path)
}

/// Mode and owner given to the socket files the master creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnixOptions {
    /// Permission bits. Defaults to [`DEFAULT_MODE`] (0660).
    pub mode: u32,
    /// New owner uid. Defaults to none (the master's user).
    pub uid: Option<u32>,
    /// New group gid. Defaults to none (the master's group).
    pub gid: Option<u32>,
    /// Accept-queue limit. Defaults to [`crate::config::DEFAULT_BACKLOG`].
    pub backlog: u32,
}

impl Default for UnixOptions {
    fn default() -> Self {
        Self {
            mode: DEFAULT_MODE,
            uid: None,
            gid: None,
            backlog: crate::config::DEFAULT_BACKLOG,
        }
    }
}

impl UnixOptions {
    /// Options from `--unix-mode` and `--unix-owner` (`user`, `user:group`, `:group`, names
    /// or numeric ids), with user and group names looked up now.
    ///
    /// # Errors
    /// [`UnixSocketError::Mode`], or [`UnixSocketError::Owner`] for bad syntax or an unknown name.
    pub fn resolve(mode: Option<&str>, owner: Option<&str>) -> Result<Self, UnixSocketError> {
        let mode = mode.map_or(Ok(DEFAULT_MODE), parse_mode)?;
        let (user, group) = owner.map_or(Ok((None, None)), split_owner)?;
        let spec = owner.unwrap_or_default();
        let uid = user.map(|u| lookup_user(spec, u)).transpose()?;
        let gid = group.map(|g| lookup_group(spec, g)).transpose()?;
        Ok(Self {
            mode,
            uid,
            gid,
            ..Self::default()
        })
    }
}

impl UnixOptions {
    /// The options a [`Config`](crate::Config) gives (`unix_mode`, `unix_owner`), names looked up now.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`](crate::config::ConfigError::Invalid) naming the key.
    pub fn from_config(cfg: &crate::Config) -> Result<Self, crate::config::ConfigError> {
        let resolved = Self::resolve(cfg.unix_mode.as_deref(), cfg.unix_owner.as_deref());
        resolved
            .map(|o| Self {
                backlog: cfg.listen_backlog(),
                ..o
            })
            .map_err(|e| crate::config::ConfigError::Invalid {
                key: match e {
                    UnixSocketError::Mode(_) => "unix_mode",
                    _ => "unix_owner",
                },
                line: None,
                reason: e.to_string(),
            })
    }
}

/// Checks the Unix settings of a configuration (syntax only): the `unix:` addresses in
/// `listen`, `unix_mode`, `unix_owner`. Returns the key at fault with the error.
pub(crate) fn check_config(cfg: &crate::Config) -> Result<(), (&'static str, UnixSocketError)> {
    if let Some(Err(e)) = cfg.listen.iter().find_map(|a| unix_path(a)) {
        return Err(("listen", e));
    }
    if let Some(mode) = cfg.unix_mode.as_deref() {
        parse_mode(mode).map_err(|e| ("unix_mode", e))?;
    }
    if let Some(owner) = cfg.unix_owner.as_deref() {
        split_owner(owner).map_err(|e| ("unix_owner", e))?;
    }
    Ok(())
}

/// Parses an octal mode (`0660`, `660`, `0o660`), at most `0o777`.
///
/// # Errors
/// [`UnixSocketError::Mode`].
pub fn parse_mode(text: &str) -> Result<u32, UnixSocketError> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o777 && !digits.is_empty() && !digits.starts_with('+') => Ok(m),
        _ => Err(UnixSocketError::Mode(text.to_string())),
    }
}

/// Splits `user`, `user:group` or `:group` (syntax only: names or numeric ids).
///
/// # Errors
/// [`UnixSocketError::Owner`].
pub fn split_owner(spec: &str) -> Result<(Option<&str>, Option<&str>), UnixSocketError> {
    let bad = |reason: &str| UnixSocketError::Owner {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let name_ok = |n: &str| {
        (1..=32).contains(&n.len())
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && !n.starts_with('-')
    };
    if group.is_some_and(|g| !name_ok(g)) || (!user.is_empty() && !name_ok(user)) {
        return Err(bad("use user, user:group or :group (names or numeric ids)"));
    }
    if user.is_empty() && group.is_none() {
        return Err(bad("empty"));
    }
    Ok(((!user.is_empty()).then_some(user), group))
}

fn lookup_user(spec: &str, name: &str) -> Result<u32, UnixSocketError> {
    if let Ok(uid) = name.parse::<u32>() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) => Ok(u.uid.as_raw()),
        _ => Err(UnixSocketError::Owner {
            spec: spec.to_string(),
            reason: format!("no such user {name:?}"),
        }),
    }
}

fn lookup_group(spec: &str, name: &str) -> Result<u32, UnixSocketError> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        _ => Err(UnixSocketError::Owner {
            spec: spec.to_string(),
            reason: format!("no such group {name:?}"),
        }),
    }
}
