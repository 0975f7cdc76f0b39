//! Opening a file that is not a valid scoreboard segment is an error, never a panic; and the
//! segment of a live cluster is private to its user (mode 0600).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use flora_cluster::scoreboard::Scoreboard;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use support::TestDir;

/// Offset of the little-endian u64 layout version, right after the 8-byte magic.
const VERSION_OFFSET: usize = 8;

/// Deterministic pseudo-random bytes (xorshift), so a failure can be replayed.
fn garbage(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes `bytes` to `path` and opens it; returns the error message (panics if it opened).
fn open_err(path: &Path, bytes: &[u8], what: &str) -> String {
    std::fs::write(path, bytes).expect("write test file");
    match Scoreboard::open_read_only(path) {
        Ok(sb) => panic!("{what}: opened as a segment with {} slots", sb.slot_count()),
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.is_empty(), "{what}: empty error message");
            assert!(
                !msg.starts_with(|c: char| c.is_uppercase()),
                "{what}: error message {msg:?} does not start lowercase"
            );
            msg
        }
    }
}

fn assert_mentions(msg: &str, words: &[&str], what: &str) {
    assert!(
        words.iter().any(|w| msg.contains(w)),
        "{what}: error {msg:?} mentions none of {words:?}"
    );
}

#[test]
fn garbage_empty_and_missing_files_are_rejected() {
    let dir = TestDir::new("badseg-garbage");
    let path = dir.scratch("bad.scoreboard");

    assert!(
        Scoreboard::open_read_only(&dir.scratch("missing")).is_err(),
        "missing file"
    );
    let msg = open_err(&path, &[], "empty file");
    assert_mentions(&msg, &["truncated", "too small"], "empty file");
    for (len, seed) in [(1, 1), (15, 2), (4096, 3), (1 << 20, 4)] {
        let what = format!("{len} garbage bytes");
        let msg = open_err(&path, &garbage(len, seed), &what);
        if len >= 4096 {
            assert_mentions(&msg, &["magic"], &what);
        }
    }
    let msg = open_err(&path, &vec![0u8; 64 * 1024], "zeroed file");
    assert_mentions(&msg, &["magic"], "zeroed file");
    // A directory is not a segment either.
    assert!(
        Scoreboard::open_read_only(&dir.runtime_dir()).is_err(),
        "a directory opened"
    );
}

#[test]
fn damaged_copies_of_a_live_segment_are_rejected() {
    let dir = TestDir::new("badseg-live");
    let cluster = dir.start(support::free_port(), 2, &[]);
    let pids = cluster.wait_ready(2);
    let live = std::fs::read(dir.segment_path()).expect("read the live segment");
    let path = dir.scratch("copy.scoreboard");

    // The intact copy opens: the failures below come from the damage, not from copying.
    std::fs::write(&path, &live).expect("write copy");
    let copy = Scoreboard::open_read_only(&path).expect("an intact copy of a live segment");
    let snap = copy.snapshot();
    let live_slots = cluster.snapshot().slots.len();
    assert_eq!(snap.slots.len(), live_slots, "slot count of the copy");
    let copied: Vec<u32> = snap.slots[..2].iter().map(|s| s.pid).collect();
    assert_eq!(copied, pids, "pids in the copy");

    for cut in [8, 16, 64, live.len() / 2, live.len() - 1] {
        let what = format!("first {cut} of {} bytes", live.len());
        let msg = open_err(&path, &live[..cut], &what);
        assert_mentions(&msg, &["truncated", "too small"], &what);
    }
    let old = u64::from_le_bytes(live[VERSION_OFFSET..VERSION_OFFSET + 8].try_into().unwrap());
    for version in [0, old + 1, old.wrapping_sub(1), u64::MAX] {
        if version == old {
            continue;
        }
        let mut bytes = live.clone();
        bytes[VERSION_OFFSET..VERSION_OFFSET + 8].copy_from_slice(&version.to_le_bytes());
        let what = format!("version {version} (real {old})");
        let msg = open_err(&path, &bytes, &what);
        assert_mentions(&msg, &["version"], &what);
    }
    let mut bytes = live.clone();
    bytes[0] ^= 0xff;
    let msg = open_err(&path, &bytes, "damaged magic");
    assert_mentions(&msg, &["magic"], "damaged magic");
}

#[test]
fn live_segment_is_mode_0600() {
    let dir = TestDir::new("badseg-mode");
    let cluster = dir.start(support::free_port(), 1, &[]);
    cluster.wait_ready(1);
    let mode = std::fs::metadata(dir.segment_path())
        .expect("stat segment")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "segment mode {:o}", mode & 0o777);
}

#[test]
fn random_damage_to_a_live_segment_never_panics() {
    let dir = TestDir::new("badseg-fuzz");
    let cluster = dir.start(support::free_port(), 2, &[]);
    cluster.wait_ready(2);
    let live = std::fs::read(dir.segment_path()).expect("read the live segment");
    let path = dir.scratch("fuzz.scoreboard");
    let header_zone = live.len().min(4096);
    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    });
    let damage = (
        proptest::collection::vec((0..header_zone, any::<u8>()), 1..8),
        prop_oneof![Just(live.len()), 0..=live.len()],
    );
    runner
        .run(&damage, |(writes, cut)| {
            let mut bytes = live.clone();
            for (off, val) in writes {
                bytes[off] = val;
            }
            bytes.truncate(cut);
            std::fs::write(&path, &bytes).expect("write fuzz file");
            // Ok or Err are both fine; a panic (or a crash in snapshot) is the failure.
            if let Ok(sb) = Scoreboard::open_read_only(&path) {
                let snap = sb.snapshot();
                prop_assert!(snap.slots.iter().enumerate().all(|(i, s)| s.index == i));
            }
            Ok(())
        })
        .expect("damaged segment handling");
}
