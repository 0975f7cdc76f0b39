//! A broken upgrade rolls back (issue 17): a new binary that exits at start, one that never
//! says hello, a new master whose workers never get ready, and one that refuses the state
//! (the config file's slots changed) each make `flora-cluster upgrade` exit 1 with the
//! reason; the same master serves on under light load with no failed request, the lock file
//! keeps its pid, and no new master or worker is left. A later reload and upgrade succeed and
//! the rollbacks are counted. Also: too few free slots are refused at once, SIGUSR2 upgrades.

mod support;

use std::path::Path;

use nix::sys::signal::Signal;
use support::status_server::{scrape, status_port};
use support::upgrade::{
    copy_master, lock_pid, marked_pids, ppid, script, status_master_pid, stop_master, text,
    upgrade, Current, Trickle, Upgraded, MARK_VAR,
};
use support::{pid_alive, wait_for, Cluster, TestDir, START_TIMEOUT};

const WORKERS: usize = 2;

/// A cluster of `WORKERS` marked workers running `program` with extra master flags.
fn start(dir: &TestDir, port: u16, flags: &[&str], program: Option<&Path>) -> Cluster {
    let mut args = vec!["--workers", "2"];
    args.extend_from_slice(flags);
    let cmd = dir.master(port).args(&args).env(MARK_VAR, &dir.name);
    let cmd = match program {
        Some(p) => cmd.program(&[p]),
        None => cmd,
    };
    let cluster = cmd.start();
    cluster.wait_ready(WORKERS);
    cluster
}

/// Waits until the marked processes are exactly `master` and `WORKERS` children of it.
fn wait_only(dir: &TestDir, master: u32) {
    wait_for(START_TIMEOUT, "only the master and its workers", || {
        let pids = marked_pids(&dir.name);
        let ok = pids.len() == 1 + WORKERS
            && pids
                .iter()
                .all(|p| *p == master || ppid(*p) == Some(master));
        ok.then_some(())
    });
}

/// Runs an upgrade to `binary` under light load and checks the rollback: exit 1, `reason`
/// parts in the line, the same master serving with no failure, its pid in the lock file and
/// `status --json`, nothing left of the new master. Returns the CLI's line.
fn rolls_back(dir: &TestDir, cluster: &Cluster, binary: &Path, reason: &[&str]) -> String {
    let load = Trickle::start(cluster.port);
    load.wait_more(10);
    let out = upgrade(dir, Some(binary));
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    eprintln!("{line}");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        line.starts_with("upgrade rolled back: ")
            && line.ends_with(&format!("master {} serves on", cluster.pid)),
        "{line}"
    );
    for part in reason {
        assert!(line.contains(part), "{line:?} lacks {part:?}");
    }
    wait_only(dir, cluster.pid);
    load.wait_more(20);
    let (answered, failures) = load.stop();
    assert!(
        failures.is_empty(),
        "{answered} answered, failed: {failures:?}"
    );
    assert_eq!(lock_pid(dir), cluster.pid);
    assert_eq!(status_master_pid(dir), cluster.pid);
    line
}

#[test]
fn a_binary_that_exits_at_start_rolls_back() {
    let dir = TestDir::new("up-exit");
    let cluster = start(&dir, support::free_port(), &[], None);
    let bad = script(&dir, "exits", "exit 3");
    rolls_back(
        &dir,
        &cluster,
        &bad,
        &["exited (exit code 3)", "before it said hello"],
    );
}

#[test]
fn a_binary_that_never_says_hello_rolls_back() {
    let dir = TestDir::new("up-mute");
    let cluster = start(&dir, support::free_port(), &[], None);
    // `exec`: the process the master started is the sleeper (a shell's child would outlive
    // the SIGTERM the master sends it).
    let mute = script(&dir, "mute", "exec sleep 60");
    rolls_back(
        &dir,
        &cluster,
        &mute,
        &["did not answer within 10 s", "said hello"],
    );
}

#[test]
fn new_workers_that_never_get_ready_roll_back() {
    let dir = TestDir::new("up-unready");
    let port = support::free_port();
    let worker = dir.demo_script("worker.sh", "", "");
    let cluster = start(
        &dir,
        port,
        &["--ready-timeout", "2", "--shutdown-timeout", "3"],
        Some(&worker),
    );
    // The new master starts its workers from the same path: now they never get ready.
    dir.demo_script("worker.sh", "", "--never-ready");
    let good = copy_master(&dir, "flora-cluster-copy");
    rolls_back(
        &dir,
        &cluster,
        &good,
        &["gave up", "workers were ready after 2s"],
    );
}

#[test]
fn a_new_master_refusing_the_state_rolls_back_then_reload_and_upgrade_succeed() {
    let dir = TestDir::new("up-refuse");
    let port = support::free_port();
    let config = dir.scratch("flora.toml");
    std::fs::write(&config, "slots = 8\n").unwrap();
    let config_arg = config.display().to_string();
    let cluster = start(&dir, port, &["--config", &config_arg], None);
    let current = Current::new(&dir.name, cluster.pid);
    // The running master has 8 slots; its successor would read 10 from the file.
    std::fs::write(&config, "slots = 10\n").unwrap();
    let good = copy_master(&dir, "flora-cluster-copy");
    rolls_back(&dir, &cluster, &good, &["refused", "--slots 10 is not 8"]);

    std::fs::write(&config, "slots = 8\n").unwrap();
    dir.reload_ok();
    let out = upgrade(&dir, Some(&good));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let up = Upgraded::parse(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(up.from, cluster.pid);
    current.set(up.to);
    assert_eq!(lock_pid(&dir), up.to);
    wait_only(&dir, up.to);
    let sp = status_port(&cluster);
    let s = scrape(sp, None);
    let count = |outcome: &str| {
        s.expo
            .value("flora_master_upgrades_total", &[("outcome", outcome)])
            .unwrap_or_else(|| panic!("no {outcome} count:\n{}", s.text))
    };
    assert_eq!(count("rollback"), 1.0, "{}", s.text);
    assert_eq!(count("success"), 1.0, "{}", s.text);
    stop_master(up.to, &dir.name);
}

#[test]
fn too_few_free_slots_are_refused_at_once() {
    let dir = TestDir::new("up-slots");
    let cluster = start(&dir, support::free_port(), &["--slots", "2"], None);
    let good = copy_master(&dir, "flora-cluster-copy");
    let out = upgrade(&dir, Some(&good));
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("2 free slots") && all.contains("0 are free") && all.contains("--slots 2"),
        "{all}"
    );
    wait_only(&dir, cluster.pid);
    assert_eq!(lock_pid(&dir), cluster.pid);
}

#[test]
fn sigusr2_upgrades_to_the_binary_the_master_was_started_from() {
    let dir = TestDir::new("up-usr2");
    let mut cluster = start(&dir, support::free_port(), &[], None);
    let old = cluster.pid;
    let current = Current::new(&dir.name, old);
    let load = Trickle::start(cluster.port);
    load.wait_more(10);
    cluster.signal(Signal::SIGUSR2);
    let new = wait_for(START_TIMEOUT, "a new master in the lock file", || {
        let p = lock_pid(&dir);
        (p != old).then_some(p)
    });
    current.set(new);
    assert!(cluster.wait_exit(support::EXIT_TIMEOUT).success());
    assert!(pid_alive(new));
    assert_eq!(status_master_pid(&dir), new);
    wait_only(&dir, new);
    load.wait_more(20);
    let (answered, failures) = load.stop();
    assert!(
        failures.is_empty(),
        "{answered} answered, failed: {failures:?}"
    );
    stop_master(new, &dir.name);
}
