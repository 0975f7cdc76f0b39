//! The master's own sockets across upgrades (issue 17): during 3 upgrades a loop asking the
//! control socket for the status and scraping `/metrics` every 20 ms never fails, and sees
//! each master in turn; a `--listen unix:PATH` socket file keeps its inode and serves across
//! every upgrade and is removed when the last master stops.

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flora_cluster::control::{self, Request};
use support::http::request;
use support::status_server::status_port;
use support::upgrade::{
    copy_master, marked_pids, stop_master, text, upgrade, Current, Upgraded, MARK_VAR,
};
use support::{wait_until, TestDir};

/// Upgrades in the run.
const UPGRADES: usize = 3;
/// Rounds of the probe loop at most, whatever happens.
const MAX_ROUNDS: usize = 10_000;

/// `GET /` over the Unix socket at `path` (one connection).
fn get_unix(path: &Path) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(path).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out).into_owned();
    if text.starts_with("HTTP/1.1 200") {
        Ok(text)
    } else {
        Err(text)
    }
}

#[test]
fn control_socket_metrics_and_a_unix_listener_survive_upgrades() {
    let dir = TestDir::new("up-sockets");
    let sock = dir.scratch("app.sock");
    let addr = format!("unix:{}", sock.display());
    let mut cluster = dir
        .master(0)
        .args(&["--workers", "2", "--listen", &addr])
        .env("LISTEN", &addr)
        .env(MARK_VAR, &dir.name)
        .start();
    cluster.wait_ready(2);
    let inode = std::fs::symlink_metadata(&sock).unwrap().ino();
    get_unix(&sock).expect("GET / over the unix socket");
    let metrics_port = status_port(&cluster);
    let ctl = control::socket_path(&dir.runtime_dir(), &dir.name);

    let stop = Arc::new(AtomicBool::new(false));
    let probe = {
        let (stop, ctl, sock) = (stop.clone(), ctl.clone(), sock.clone());
        std::thread::spawn(move || {
            let (mut failures, mut masters, mut rounds) = (Vec::new(), Vec::<u64>::new(), 0);
            while !stop.load(Ordering::Relaxed) && rounds < MAX_ROUNDS {
                rounds += 1;
                match control::call(&ctl, &Request::Status, Duration::from_secs(5)) {
                    Ok(r) if r.ok => {
                        let pid = r.status.as_ref().and_then(|s| s["master"]["pid"].as_u64());
                        if let Some(p) = pid.filter(|p| masters.last() != Some(p)) {
                            masters.push(p);
                        }
                    }
                    Ok(r) => failures.push(format!("control: {:?}", r.error)),
                    Err(e) => failures.push(format!("control: {e}")),
                }
                match request(metrics_port, "GET", "/metrics", &[]) {
                    Ok(r) if r.status == 200 => {}
                    Ok(r) => failures.push(format!("/metrics: status {}", r.status)),
                    Err(e) => failures.push(format!("/metrics: {e}")),
                }
                if let Err(e) = get_unix(&sock) {
                    failures.push(format!("unix GET /: {e}"));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (failures, masters, rounds)
        })
    };

    let mut master = cluster.pid;
    let current = Current::new(&dir.name, master);
    for i in 1..=UPGRADES {
        let out = upgrade(
            &dir,
            Some(&copy_master(&dir, &format!("flora-cluster-{i}"))),
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let up = Upgraded::parse(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(up.from, master);
        master = up.to;
        current.set(master);
        let meta = std::fs::symlink_metadata(&sock).expect("the socket file after an upgrade");
        assert_eq!(meta.ino(), inode, "the same socket file");
    }
    // A few more rounds against the last master.
    let seen_last = || {
        control::call(&ctl, &Request::Status, Duration::from_secs(5))
            .ok()
            .and_then(|r| r.status?["master"]["pid"].as_u64())
            == Some(u64::from(master))
    };
    wait_until(
        Duration::from_secs(10),
        "the last master answers",
        seen_last,
    );
    stop.store(true, Ordering::Relaxed);
    let (failures, masters, rounds) = probe.join().unwrap();
    eprintln!("{rounds} probe rounds; masters seen in turn: {masters:?}");
    assert!(
        failures.is_empty(),
        "{} failures: {failures:?}",
        failures.len()
    );
    assert_eq!(masters.len(), 1 + UPGRADES, "{masters:?}");
    assert!(cluster.wait_exit(support::EXIT_TIMEOUT).success());

    stop_master(master, &dir.name);
    assert!(!sock.exists(), "the socket file outlived the last master");
    assert!(marked_pids(&dir.name).is_empty());
}
