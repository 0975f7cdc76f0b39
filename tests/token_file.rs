//! `--status-token-file` must be a private regular file of the master's user: a symlink, a
//! file of another user, a FIFO or a directory is a configuration error (exit 2) at once,
//! never followed or waited on. (Needs root to chown the foreign file.)

mod support;

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use support::hostile::{chmod, require_root, NOBODY};
use support::TestDir;

/// A configuration error is reported before anything starts.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(20);

const TOKEN: &str = "0123456789abcdef0123456789\n";

fn refused(dir: &TestDir, token: &Path, why: &str) {
    let (status, stderr) = dir
        .master(support::free_port())
        .args(&[OsStr::new("--workers"), OsStr::new("1")])
        .args(&[OsStr::new("--status-token-file"), token.as_os_str()])
        .run_to_exit(REFUSE_TIMEOUT);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&token.display().to_string()) && stderr.contains(why),
        "{stderr}"
    );
}

fn private_token(dir: &TestDir, name: &str) -> std::path::PathBuf {
    let p = dir.scratch(name);
    std::fs::write(&p, TOKEN).unwrap();
    chmod(&p, 0o600);
    p
}

#[test]
fn symlinked_token_file_is_refused() {
    let dir = TestDir::new("token-link");
    let real = private_token(&dir, "token");
    let link = dir.scratch("token.link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    refused(&dir, &link, "is a symlink");
}

#[test]
fn token_file_of_another_user_is_refused() {
    require_root();
    let dir = TestDir::new("token-owner");
    let p = private_token(&dir, "token");
    std::os::unix::fs::chown(&p, Some(NOBODY), Some(NOBODY)).unwrap();
    refused(&dir, &p, "owned by uid 65534");
}

#[test]
fn fifo_or_directory_as_token_file_is_refused_at_once() {
    let dir = TestDir::new("token-fifo");
    let fifo = dir.scratch("token.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    refused(&dir, &fifo, "is a FIFO, not a regular file");
    let d = dir.scratch("token.d");
    std::fs::create_dir(&d).unwrap();
    chmod(&d, 0o700);
    refused(&dir, &d, "is a directory, not a regular file");
}
