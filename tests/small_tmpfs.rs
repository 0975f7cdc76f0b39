//! A runtime dir on a tiny, then full, tmpfs. The master's segment is a sealed memfd with
//! every page allocated at start, so nothing the master maps lives on that tmpfs: it starts
//! with many slots, and a reload and a scale-up (first writes into new slots) after the
//! tmpfs filled up work — no SIGBUS. A segment *file* on a tmpfs too small for it is refused
//! at creation naming the place and the bytes. (Mounts a tmpfs: needs root, as CI runs.)

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use flora_cluster::scoreboard::{Scoreboard, ScoreboardError};
use support::{get, TestDir, EXIT_TIMEOUT};

/// A 2 MiB tmpfs mounted at a fresh directory; unmounted on drop.
struct SmallTmpfs(PathBuf);

impl SmallTmpfs {
    fn mount(at: PathBuf) -> Self {
        std::fs::create_dir_all(&at).expect("mkdir mount point");
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs"])
            .arg(&at)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount tmpfs at {} (needs root)", at.display());
        Self(at)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// Fills the file system up to its last byte.
    fn fill(&self) {
        let filler = self.0.join("filler");
        let chunk = vec![0u8; 64 * 1024];
        let mut f = std::fs::File::create(&filler).expect("create filler");
        while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
        let _ = std::io::Write::write_all(&mut f, &[0u8; 512]);
        let st = nix::sys::statvfs::statvfs(&self.0).expect("statvfs");
        assert!(
            st.blocks_available() == 0,
            "tmpfs still has {} free blocks",
            st.blocks_available()
        );
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn full_tmpfs_cannot_fault_the_master() {
    assert!(nix::unistd::geteuid().is_root(), "this test needs root");
    let dir = TestDir::new("tmpfs");
    let fs = SmallTmpfs::mount(dir.runtime_dir());
    let port = support::free_port();
    // 200 slots: a 9 MiB segment, more than the whole tmpfs.
    let mut cluster = dir.start_with(port, &["--workers", "2", "--slots", "200"], &[]);
    cluster.wait_ready(2);
    fs.fill();
    assert_eq!(get(port, "/").unwrap().status, 200);

    // First writes into slots never used before: a reload's new generation, then a scale-up.
    dir.reload_ok();
    let out = dir.ctl(&["scale", "6"]);
    assert!(out.status.success(), "scale: {out:?}");
    support::wait_until(support::START_TIMEOUT, "6 ready workers", || {
        cluster.snapshot().totals.workers_ready == 6
    });
    for _ in 0..20 {
        assert_eq!(get(port, "/").unwrap().status, 200);
    }
    cluster.signal(nix::sys::signal::Signal::SIGTERM);
    let st = cluster.wait_exit(EXIT_TIMEOUT);
    assert_eq!(st.code(), Some(0), "master exit: {}", cluster.stderr());
}

#[test]
fn segment_file_too_big_for_its_tmpfs_is_refused_at_creation() {
    assert!(nix::unistd::geteuid().is_root(), "this test needs root");
    let dir = TestDir::new("tmpfs-file");
    let fs = SmallTmpfs::mount(dir.scratch("small"));
    let path = fs.path().join("big.scoreboard");
    match Scoreboard::create(&path, "big", 200) {
        Err(e @ ScoreboardError::NoSpace { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&fs.path().display().to_string()), "{msg}");
            assert!(msg.contains("bytes needed"), "{msg}");
        }
        other => panic!("expected NoSpace, got {other:?}"),
    }
    assert!(!path.exists(), "a half-made segment file was left behind");
    // One that fits is fine, and fully backed.
    let small = Scoreboard::create(&path, "small", 2).expect("a 2-slot segment fits");
    assert_eq!(small.snapshot().slots.len(), 2);
}
