//! Every duration flag and config value (timeouts, intervals) rejects NaN, infinities, negative,
//! zero and absurdly large values: exit 2 with a message naming the flag or key, never a panic,
//! and nothing started.

mod support;

use std::ffi::OsStr;
use std::time::Duration;

use support::TestDir;

/// A rejected command line exits at once.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Values no duration may take.
const BAD: [&str; 7] = ["nan", "NaN", "inf", "-inf", "-1", "0", "1e30"];

/// Runs `flora-cluster args…` and checks it exits 2 with stderr naming `names` and no panic.
fn rejected(dir: &TestDir, args: &[&OsStr], names: &[&str]) {
    let (status, stderr) =
        support::run_master_to_exit(args, support::free_port(), &dir.scratch(""), EXIT_TIMEOUT);
    support::cluster::assert_refused(dir, &args, status, &stderr, names);
}

#[test]
fn client_commands_reject_bad_timeouts() {
    let dir = TestDir::new("dur-client");
    let runtime = dir.runtime_dir();
    for cmd in [&["reload"][..], &["stop"], &["scale", "2"], &["status"]] {
        for bad in BAD {
            let mut args: Vec<&OsStr> = cmd.iter().map(OsStr::new).collect();
            args.extend([
                OsStr::new("--timeout"),
                OsStr::new(bad),
                OsStr::new("--name"),
                OsStr::new(&dir.name),
                OsStr::new("--runtime-dir"),
                runtime.as_os_str(),
            ]);
            rejected(&dir, &args, &["--timeout", bad]);
        }
    }
}

#[test]
fn run_flags_reject_bad_durations() {
    let dir = TestDir::new("dur-run");
    let runtime = dir.runtime_dir();
    for flag in ["--ready-timeout", "--shutdown-timeout", "--otlp-interval"] {
        for bad in BAD {
            let args = [
                OsStr::new("run"),
                OsStr::new(flag),
                OsStr::new(bad),
                OsStr::new("--name"),
                OsStr::new(&dir.name),
                OsStr::new("--runtime-dir"),
                runtime.as_os_str(),
                OsStr::new("--"),
                OsStr::new(support::DEMO_BIN),
            ];
            rejected(&dir, &args, &[flag, bad]);
        }
    }
}

#[test]
fn config_files_reject_bad_durations() {
    let dir = TestDir::new("dur-config");
    let runtime = dir.runtime_dir();
    let cfg = dir.scratch("durations.toml");
    for key in ["ready_timeout", "shutdown_timeout", "otlp_interval"] {
        for bad in ["nan", "inf", "-inf", "-1.0", "0.0", "1e30"] {
            std::fs::write(&cfg, format!("workers = 1\n{key} = {bad}\n")).expect("write config");
            let args = [
                OsStr::new("run"),
                OsStr::new("--config"),
                cfg.as_os_str(),
                OsStr::new("--name"),
                OsStr::new(&dir.name),
                OsStr::new("--runtime-dir"),
                runtime.as_os_str(),
                OsStr::new("--"),
                OsStr::new(support::DEMO_BIN),
            ];
            rejected(&dir, &args, &[key, "line 2"]);
        }
    }
}
