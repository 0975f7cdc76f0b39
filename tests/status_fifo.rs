//! `flora-cluster status` never hangs on a scoreboard path that is a FIFO: it fails at once
//! naming the path.

mod support;

use std::ffi::OsStr;
use std::time::Duration;

use support::hostile::run_bounded;
use support::TestDir;

/// The refusal needs no waiting at all.
const STATUS_TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn status_on_a_fifo_scoreboard_fails_at_once() {
    let dir = TestDir::new("status-fifo");
    let fifo = dir.segment_path();
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let run = dir.runtime_dir();
    let args: Vec<&OsStr> = vec![
        OsStr::new("status"),
        OsStr::new("--name"),
        OsStr::new(&dir.name),
        OsStr::new("--runtime-dir"),
        run.as_os_str(),
    ];
    let (status, stderr) = run_bounded(&args, &dir.scratch("status.stderr"), STATUS_TIMEOUT)
        .expect("`flora-cluster status` hung on a FIFO");
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains(&fifo.display().to_string()), "{stderr}");
}
