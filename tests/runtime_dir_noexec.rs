//! A runtime dir on a `noexec` mount still works: each generation runs the program in place
//! (with a warning) instead of a copy it could not execute. (Needs root to mount a tmpfs.)

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sys::signal::Signal;
use support::hostile::require_root;
use support::TestDir;

/// A tmpfs mounted for one test; unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, options: &str) -> Self {
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount tmpfs on {}", at.display());
        Self(at.to_owned())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn noexec_runtime_dir_runs_the_program_in_place() {
    require_root();
    let dir = TestDir::new("rt-noexec");
    let _mount = Mount::tmpfs(&dir.runtime_dir(), "size=16m,mode=0700,noexec");
    let mut cluster = dir.start(support::free_port(), 1, &[]);
    let pids = cluster.wait_ready(1);
    let exe = std::fs::read_link(format!("/proc/{}/exe", pids[0])).unwrap();
    assert_eq!(exe, Path::new(support::DEMO_BIN));
    assert!(
        cluster.stderr().contains("is mounted noexec"),
        "{}",
        cluster.stderr()
    );
    dir.reload_ok();
    cluster.signal(Signal::SIGTERM);
    assert!(cluster.wait_exit(support::EXIT_TIMEOUT).success());
}
