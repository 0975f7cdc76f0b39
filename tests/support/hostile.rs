//! Acting as another local user (`nobody`, via `setpriv`) and running a command with a deadline,
//! for the tests of paths another user plants or repoints.

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use super::{kill_and_reap, wait_child};

/// uid and gid of `nobody`.
pub const NOBODY: u32 = 65534;

/// Panics unless the tests run as root (they plant files as `nobody` and chown).
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (scripts/test.sh runs as root in CI)"
    );
}

/// Runs `argv` as `nobody` to completion; panics unless it succeeds.
pub fn as_nobody(argv: &[&str]) {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(argv)
        .output()
        .expect("run setpriv");
    assert!(
        out.status.success(),
        "as nobody {argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `flora-cluster ARGS` to completion within `timeout` (killed and reaped after it, then
/// `None`); returns the exit status and stderr (kept in `log`).
pub fn run_bounded(
    args: &[&std::ffi::OsStr],
    log: &Path,
    timeout: Duration,
) -> Option<(ExitStatus, String)> {
    let mut child = Command::new(super::MASTER_BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("stderr log"))
        .spawn()
        .expect("spawn flora-cluster");
    let status = wait_child(&mut child, timeout);
    if status.is_none() {
        kill_and_reap(&mut child);
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    status.map(|s| (s, text))
}

/// `mode` bits of `path` (not following a symlink).
pub fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777
}

/// Sets `mode` on `path`.
pub fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}
