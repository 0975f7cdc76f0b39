//! The worker guards' flags: every bad value (zero, negative, NaN, infinite, garbage,
//! overflow, a jitter without its limit, a recycle guard without a spare slot) makes
//! `flora-cluster run` exit 2 at once with a message naming the flag or key, never a panic,
//! and nothing started. Good values start the cluster, reach the workers' environment, and
//! `flora-cluster status` shows the guards' records it gets from the master.

mod support;

use std::time::Duration;

use support::TestDir;

/// A rejected command line exits at once.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// `(flags, words the error must name)`.
const BAD: &[(&[&str], &[&str])] = &[
    (&["--request-timeout", "0"], &["--request-timeout"]),
    (&["--request-timeout", "-1"], &["--request-timeout"]),
    (&["--request-timeout", "nan"], &["--request-timeout"]),
    (&["--request-timeout", "inf"], &["--request-timeout"]),
    (&["--request-timeout", "1e30"], &["--request-timeout"]),
    (
        &["--request-timeout", "soon"],
        &["--request-timeout", "soon"],
    ),
    (
        &["--heartbeat-timeout", "0.5"],
        &["--heartbeat-timeout", "at least 1"],
    ),
    (&["--heartbeat-timeout", "0"], &["--heartbeat-timeout"]),
    (&["--heartbeat-timeout", "-inf"], &["--heartbeat-timeout"]),
    (&["--heartbeat-timeout", "NaN"], &["--heartbeat-timeout"]),
    (&["--max-memory", "0"], &["--max-memory", "at least 1 byte"]),
    (&["--max-memory", "-1"], &["--max-memory"]),
    (&["--max-memory", "lots"], &["--max-memory", "MiB"]),
    (&["--max-memory", "1.5"], &["--max-memory", "fraction"]),
    (&["--max-memory", "12XB"], &["--max-memory"]),
    (&["--max-memory", "nan"], &["--max-memory"]),
    (
        &["--max-memory", "99999999999999TiB"],
        &["--max-memory", "more than"],
    ),
    (&["--max-requests", "0"], &["--max-requests"]),
    (&["--max-requests", "-5"], &["--max-requests"]),
    (&["--max-requests", "many"], &["--max-requests", "many"]),
    (
        &["--max-requests", "18446744073709551616"],
        &["--max-requests"],
    ),
    (
        &["--max-requests-jitter", "5"],
        &["max_requests_jitter", "--max-requests"],
    ),
    (
        &["--max-requests", "9", "--max-requests-jitter", "-1"],
        &["--max-requests-jitter"],
    ),
    (&["--max-worker-age", "0"], &["--max-worker-age"]),
    (&["--max-worker-age", "inf"], &["--max-worker-age"]),
    (
        &["--max-worker-age-jitter", "5"],
        &["max_worker_age_jitter", "--max-worker-age"],
    ),
    (
        &["--max-worker-age", "60", "--max-worker-age-jitter", "-1"],
        &["--max-worker-age-jitter"],
    ),
    (
        &["--max-worker-age", "60", "--max-worker-age-jitter", "nan"],
        &["--max-worker-age-jitter"],
    ),
    (&["--max-recycling", "0"], &["max_recycling", "1..="]),
    (&["--max-recycling", "-1"], &["--max-recycling"]),
    (&["--max-recycling", "100000"], &["max_recycling"]),
    (
        &["--workers", "2", "--slots", "2", "--max-requests", "10"],
        &["--slots 3", "spare slot"],
    ),
    (
        &["--workers", "2", "--slots", "2", "--max-memory", "1GiB"],
        &["--slots 3", "--max-memory"],
    ),
    (
        &["--workers", "2", "--slots", "2", "--max-worker-age", "60"],
        &["--slots 3"],
    ),
];

/// Runs `flora-cluster run ARGS … -- flora-demo` and checks it exits 2 at once, naming
/// `names`, with no panic and no segment.
fn rejected(dir: &TestDir, args: &[&str], names: &[&str]) {
    let (status, stderr) = dir
        .master(support::free_port())
        .args(args)
        .demo(&[])
        .run_to_exit(EXIT_TIMEOUT);
    support::cluster::assert_refused(dir, &args, status, &stderr, names);
}

#[test]
fn bad_guard_flags_exit_2_naming_the_flag() {
    let dir = TestDir::new("guard-flags");
    for (args, names) in BAD {
        rejected(&dir, args, names);
    }
}

#[test]
fn bad_guard_keys_in_a_config_file_exit_2_naming_key_and_line() {
    let dir = TestDir::new("guard-config");
    for (text, names) in [
        ("max_memory = \"lots\"\n", &["max_memory", "line 1"][..]),
        (
            "workers = 1\nmax_requests = 0\n",
            &["max_requests", "line 2"],
        ),
        (
            "heartbeat_timeout = 0.25\n",
            &["heartbeat_timeout", "line 1"],
        ),
        (
            "max_worker_age_jitter = 3\n",
            &["max_worker_age_jitter", "line 1"],
        ),
        (
            "workers = 1\nslots = 1\nmax_worker_age = 5\n",
            &["slots", "line 2", "--slots 2"],
        ),
    ] {
        let path = dir.scratch("guards.toml");
        std::fs::write(&path, text).expect("write config");
        let path = path.to_string_lossy().into_owned();
        rejected(&dir, &["--config", &path], names);
    }
}

/// `KEY=VALUE` lines of a process's environment.
fn environ(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    raw.split(|&b| b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

#[test]
fn guard_settings_reach_the_workers_and_the_status() {
    let dir = TestDir::new("guard-env");
    let cluster = dir
        .master(support::free_port())
        .args(&[
            "--workers",
            "2",
            "--request-timeout",
            "2.5",
            "--heartbeat-timeout",
            "2",
            "--max-memory",
            "1GiB",
            "--max-requests",
            "100000",
            "--max-requests-jitter",
            "10",
            "--max-worker-age",
            "3600",
        ])
        .demo(&[])
        .start();
    let pids = cluster.wait_ready(2);
    for pid in &pids {
        let env = environ(*pid);
        for want in ["FLORA_REQUEST_TIMEOUT_MS=2500", "FLORA_HEARTBEAT_MS=500"] {
            assert!(
                env.iter().any(|v| v == want),
                "worker {pid} lacks {want}: {env:?}"
            );
        }
    }
    // The terminal status and its JSON carry the master's records (nothing happened yet).
    let out = dir.ctl(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("recycles memory 0 max_requests 0 age 0  kills 0")
            && text.contains("LAST GUARD"),
        "{text}"
    );
    let out = dir.ctl(&["status", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        doc["guards"]["kills"],
        serde_json::json!({"heartbeat": 0, "shutdown_timeout": 0})
    );
    assert_eq!(doc["guards"]["kill_records"], serde_json::json!([]));
    let worker = &doc["workers"][0];
    assert!(
        worker
            .get("last_guard_event")
            .is_some_and(serde_json::Value::is_null),
        "{worker}"
    );
    // A ready worker's lag is shown from its readiness on.
    let lag = worker["event_loop_lag_seconds"].as_f64();
    assert!(lag.is_some_and(|l| l >= 0.0), "{worker}");
}

#[test]
fn without_guards_the_heartbeat_still_runs_and_no_timeout_is_inherited() {
    let dir = TestDir::new("guard-noenv");
    // A value in the master's own environment must not reach the workers.
    let cluster = dir
        .master(support::free_port())
        .args(&["--workers", "1"])
        .env("FLORA_REQUEST_TIMEOUT_MS", "1")
        .demo(&[])
        .start();
    let pids = cluster.wait_ready(1);
    let env = environ(pids[0]);
    assert!(
        env.iter().any(|v| v == "FLORA_HEARTBEAT_MS=1000"),
        "{env:?}"
    );
    assert!(
        !env.iter()
            .any(|v| v.starts_with("FLORA_REQUEST_TIMEOUT_MS=")),
        "{env:?}"
    );
}
