//! Unit tests of the runtime dir and the instance lock (real files in a temp dir).

use super::*;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn chmod(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

fn refusal(r: Result<RuntimeDir>) -> String {
    match r {
        Err(e @ Error::RuntimeDir { .. }) => e.to_string(),
        other => panic!("expected a runtime dir error, got {other:?}"),
    }
}

#[test]
fn the_held_dir_can_be_shared_with_blocking_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<RuntimeDir>();
}

#[test]
fn private_dir_is_created_and_checked() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("a/b");
    let dir = RuntimeDir::open(&d).unwrap();
    assert_eq!(mode(&d), 0o700);
    assert_eq!(dir.path(), d);
    dir.verify().unwrap();
    chmod(&d, 0o770);
    assert!(refusal(RuntimeDir::open(&d)).contains("writable by others"));
    std::fs::write(t.path().join("file"), "").unwrap();
    assert!(refusal(RuntimeDir::open(&t.path().join("file"))).contains("not a directory"));
}

#[test]
fn symlink_at_the_last_component_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let real = t.path().join("real");
    std::fs::create_dir(&real).unwrap();
    chmod(&real, 0o700);
    let link = t.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    assert!(refusal(RuntimeDir::open(&link)).contains("symlink"));
    assert_eq!(std::fs::read_dir(&real).unwrap().count(), 0);
}

#[test]
fn parent_that_others_can_write_is_refused_unless_sticky() {
    let t = tempfile::tempdir().unwrap();
    let open = t.path().join("open");
    std::fs::create_dir(&open).unwrap();
    chmod(&open, 0o777);
    assert!(refusal(RuntimeDir::open(&open.join("rt"))).contains("sticky"));
    chmod(&open, 0o1777);
    RuntimeDir::open(&open.join("rt")).unwrap();
}

#[test]
fn foreign_owner_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        return; // needs chown
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("theirs");
    std::fs::create_dir(&d).unwrap();
    chmod(&d, 0o700);
    std::os::unix::fs::chown(&d, Some(65534), Some(65534)).unwrap();
    assert!(refusal(RuntimeDir::open(&d)).contains("owned by uid 65534"));
    // A parent owned by another user could swap the directory.
    let inner = d.join("rt");
    assert!(refusal(RuntimeDir::open(&inner)).contains("could replace"));
}

#[test]
fn verify_sees_a_moved_or_replaced_dir() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("rt");
    let dir = RuntimeDir::open(&d).unwrap();
    let moved = t.path().join("moved");
    std::fs::rename(&d, &moved).unwrap();
    assert!(dir.verify().is_err(), "path gone");
    std::os::unix::fs::symlink(&moved, &d).unwrap();
    let e = dir.verify().unwrap_err().to_string();
    assert!(e.contains("no longer names"), "{e}");
    // Operations still land in the held directory.
    dir.create_new("x", 0o600).unwrap();
    assert!(moved.join("x").exists());
    std::fs::remove_file(&d).unwrap();
    std::fs::rename(&moved, &d).unwrap();
    dir.verify().unwrap();
}

#[test]
fn entries_are_never_followed() {
    let t = tempfile::tempdir().unwrap();
    let dir = RuntimeDir::open(&t.path().join("rt")).unwrap();
    let victim = t.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    std::os::unix::fs::symlink(&victim, dir.entry_path("x")).unwrap();
    assert!(dir.create_new("x", 0o600).is_err());
    assert!(dir.open_existing("x").is_err());
    assert!(dir.entry_path("x").symlink_metadata().unwrap().is_symlink());
    dir.unlink("x").unwrap();
    dir.unlink("x").unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
}

#[test]
fn symlink_is_published_and_removed() {
    let t = tempfile::tempdir().unwrap();
    let dir = RuntimeDir::open(&t.path().join("rt")).unwrap();
    std::fs::write(dir.entry_path("x.scoreboard"), "stale").unwrap();
    let target = Path::new("/proc/self/fd/0");
    dir.replace_symlink("x.scoreboard", target).unwrap();
    let p = dir.entry_path("x.scoreboard");
    assert_eq!(std::fs::read_link(&p).unwrap(), target);
    dir.replace_symlink("x.scoreboard", Path::new("/proc/self/fd/1"))
        .unwrap();
    // Only our own link is removed.
    dir.remove_symlink("x.scoreboard", target).unwrap();
    assert!(p.symlink_metadata().is_ok());
    dir.remove_symlink("x.scoreboard", Path::new("/proc/self/fd/1"))
        .unwrap();
    assert!(p.symlink_metadata().is_err());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn second_lock_is_refused_and_the_file_is_kept() {
    let t = tempfile::tempdir().unwrap();
    let dir = RuntimeDir::open(&t.path().join("rt")).unwrap();
    let first = InstanceLock::acquire(&dir, "x").unwrap();
    let path = dir.entry_path("x.lock");
    assert_eq!(mode(&path), 0o600);
    match InstanceLock::acquire(&dir, "x") {
        Err(Error::AlreadyRunning { pid, .. }) => assert_eq!(pid, std::process::id()),
        other => panic!("expected AlreadyRunning, got {other:?}"),
    }
    drop(first);
    assert!(path.exists(), "the lock file is kept");
    let again = InstanceLock::acquire(&dir, "x").unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("{}\n", std::process::id())
    );
    drop(again);
}

#[test]
fn lock_symlink_fifo_and_foreign_file_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let dir = RuntimeDir::open(&t.path().join("rt")).unwrap();
    let victim = t.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    std::os::unix::fs::symlink(&victim, dir.entry_path("a.lock")).unwrap();
    let e = InstanceLock::acquire(&dir, "a").unwrap_err().to_string();
    assert!(e.contains("a.lock") && e.contains("symlink"), "{e}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");

    nix::unistd::mkfifo(&dir.entry_path("b.lock"), Mode::from_bits_truncate(0o600)).unwrap();
    let e = InstanceLock::acquire(&dir, "b").unwrap_err().to_string();
    assert!(e.contains("FIFO"), "{e}");

    std::fs::hard_link(&victim, dir.entry_path("c.lock")).unwrap();
    let e = InstanceLock::acquire(&dir, "c").unwrap_err().to_string();
    assert!(e.contains("hard links"), "{e}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");

    if nix::unistd::geteuid().is_root() {
        std::fs::write(dir.entry_path("d.lock"), "").unwrap();
        std::os::unix::fs::chown(dir.entry_path("d.lock"), Some(65534), None).unwrap();
        let e = InstanceLock::acquire(&dir, "d").unwrap_err().to_string();
        assert!(e.contains("owned by uid 65534"), "{e}");
    }
}

/// A lock passed on (one open file description in two holders) stays held when the first
/// holder goes: no third master can take it in between, the successor's pid is what others
/// see, and the kernel frees it when the last holder closes it.
#[test]
fn a_shared_lock_outlives_the_holder_that_shared_it() {
    let t = tempfile::tempdir().unwrap();
    let dir = RuntimeDir::open(&t.path().join("rt")).unwrap();
    let mut first = InstanceLock::acquire(&dir, "x").unwrap();
    let passed = first.share().try_clone_to_owned().unwrap();
    let second = InstanceLock::adopt(passed).unwrap();
    drop(first);
    second.write_pid(4242).unwrap();
    match InstanceLock::acquire(&dir, "x") {
        Err(Error::AlreadyRunning { pid, .. }) => assert_eq!(pid, 4242),
        other => panic!("a third master took a shared lock: {other:?}"),
    }
    drop(second);
    let again = InstanceLock::acquire(&dir, "x").expect("free once every holder closed it");
    drop(again);
}

/// A successor that gives up (its copy dropped) leaves the lock with the predecessor.
#[test]
fn a_successor_that_goes_away_leaves_the_lock_held() {
    let t = tempfile::tempdir().unwrap();
    let dir = RuntimeDir::open(&t.path().join("rt")).unwrap();
    let mut first = InstanceLock::acquire(&dir, "x").unwrap();
    let second = InstanceLock::adopt(first.share().try_clone_to_owned().unwrap()).unwrap();
    drop(second);
    assert!(matches!(
        InstanceLock::acquire(&dir, "x"),
        Err(Error::AlreadyRunning { .. })
    ));
    drop(first);
}

/// Only a descriptor of the locked description is adopted: another open of the same file
/// (excluded by the lock), a FIFO and a directory are refused with the reason.
#[test]
fn adopt_refuses_what_is_not_the_held_lock() {
    let t = tempfile::tempdir().unwrap();
    let dir = RuntimeDir::open(&t.path().join("rt")).unwrap();
    let held = InstanceLock::acquire(&dir, "x").unwrap();
    let other = std::fs::File::open(dir.entry_path("x.lock")).unwrap();
    let e = InstanceLock::adopt(other.into()).unwrap_err().to_string();
    assert!(e.contains("does not hold the lock"), "{e}");
    let fifo = t.path().join("fifo");
    nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let e = InstanceLock::adopt(f.into()).unwrap_err().to_string();
    assert!(e.contains("FIFO"), "{e}");
    let d = std::fs::File::open(t.path()).unwrap();
    let e = InstanceLock::adopt(d.into()).unwrap_err().to_string();
    assert!(e.contains("not a regular file"), "{e}");
    drop(held);
}
