//! Bad command lines and bad config files make `flora-cluster run` exit non-zero at once,
//! with an error on stderr that names the problem, and start no worker.

mod support;

use std::ffi::OsStr;
use std::time::Duration;

use support::TestDir;

/// A bad command line is rejected before anything starts.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `flora-cluster run <args> --runtime-dir <dir> --name <name> [-- flora-demo --body MARKER]`
/// and checks it fails with stderr mentioning one of `expect` (case-insensitive).
fn rejects(tag: &str, args: &[&str], with_program: bool, expect: &[&str]) {
    rejects_in(&TestDir::new(tag), args, with_program, expect);
}

/// [`rejects`] in a given test dir (for tests that put a config file there first).
fn rejects_in(dir: &TestDir, args: &[&str], with_program: bool, expect: &[&str]) {
    // A marker only our workers would carry on their command line.
    let marker = format!("cli-marker-{}", dir.name);
    let runtime = dir.runtime_dir();
    let mut full: Vec<&OsStr> = vec![OsStr::new("run")];
    full.extend(args.iter().map(OsStr::new));
    full.extend([
        OsStr::new("--runtime-dir"),
        runtime.as_os_str(),
        OsStr::new("--name"),
        OsStr::new(&dir.name),
    ]);
    if with_program {
        full.extend([
            OsStr::new("--"),
            OsStr::new(support::DEMO_BIN),
            OsStr::new("--body"),
            OsStr::new(&marker),
        ]);
    }
    let (status, stderr) =
        support::run_master_to_exit(&full, support::free_port(), &dir.scratch(""), EXIT_TIMEOUT);
    assert!(
        !status.success(),
        "{args:?}: exit {status:?}; stderr:\n{stderr}"
    );
    assert!(!stderr.trim().is_empty(), "{args:?}: nothing on stderr");
    let lower = stderr.to_lowercase();
    assert!(
        expect.iter().any(|w| lower.contains(&w.to_lowercase())),
        "{args:?}: stderr mentions none of {expect:?}:\n{stderr}"
    );
    assert!(
        !lower.contains("panicked"),
        "{args:?}: the master panicked:\n{stderr}"
    );
    let left = support::pids_with_cmdline(&marker);
    assert!(left.is_empty(), "{args:?}: workers left running: {left:?}");
    assert!(
        !dir.segment_path().exists(),
        "{args:?}: a segment was created for a rejected command line"
    );
}

#[test]
fn zero_workers_is_rejected() {
    rejects("cli-w0", &["--workers", "0"], true, &["worker"]);
}

#[test]
fn non_numeric_workers_is_rejected() {
    rejects("cli-wabc", &["--workers", "abc"], true, &["abc"]);
    rejects("cli-wabc-short", &["-w", "abc"], true, &["abc"]);
}

#[test]
fn unknown_flag_is_rejected() {
    rejects("cli-unknown", &["--frobnicate"], true, &["frobnicate"]);
}

#[test]
fn missing_program_is_rejected() {
    rejects(
        "cli-noprog",
        &["--workers", "1"],
        false,
        &["program", "command", "required"],
    );
}

#[test]
fn config_with_unknown_key_is_rejected() {
    let dir = TestDir::new("cli-cfg-key");
    let cfg = dir.scratch("unknown.toml");
    std::fs::write(&cfg, "frobnicate_level = 3\n").expect("write config");
    let cfg = cfg.to_str().expect("utf-8 path").to_owned();
    rejects_in(&dir, &["--config", &cfg], true, &["frobnicate_level"]);
}

#[test]
fn config_with_bad_value_type_is_rejected() {
    let dir = TestDir::new("cli-cfg-type");
    let cfg = dir.scratch("badtype.toml");
    std::fs::write(&cfg, "workers = \"many\"\n").expect("write config");
    let cfg = cfg.to_str().expect("utf-8 path").to_owned();
    rejects_in(
        &dir,
        &["--config", &cfg],
        true,
        &["workers", "invalid type"],
    );
}

#[test]
fn missing_config_file_is_rejected() {
    let dir = TestDir::new("cli-cfg-missing");
    let cfg = dir.scratch("nope.toml");
    let cfg = cfg.to_str().expect("utf-8 path").to_owned();
    rejects_in(&dir, &["--config", &cfg], true, &["nope.toml"]);
}
