//! A worker's inherited descriptors stay in the worker: a program it starts sees neither the
//! control socket, nor the scoreboard, nor a listener. `Worker::from_env()` takes them over
//! once per process; a second call is refused and leaves the worker working.

mod support;

use support::{get, TestDir};

/// `(fd, target)` of every line `… N -> TARGET` of an `ls -l /proc/self/fd` listing.
fn parse_listing(text: &str) -> Vec<(u32, String)> {
    text.lines()
        .filter_map(|l| {
            let (left, target) = l.split_once(" -> ")?;
            let fd = left.split_whitespace().last()?.parse().ok()?;
            Some((fd, target.to_string()))
        })
        .collect()
}

/// `(fd, target)` of every descriptor `pid` holds.
fn fd_table(pid: u32) -> Vec<(u32, String)> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read an fd dir")
        .filter_map(|e| {
            let e = e.ok()?;
            let fd = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some((fd, target.to_string_lossy().into_owned()))
        })
        .collect()
}

#[test]
fn a_program_started_by_a_worker_inherits_no_flora_descriptor() {
    // Descriptors this test process itself passes down (from whatever started it) are not
    // flora's: the master and its workers inherit them unchanged.
    let from_above = fd_table(std::process::id());
    let dir = TestDir::new("fds-child");
    let port = support::free_port();
    let cluster = dir.start(port, 1, &[]);
    let pid = cluster.wait_ready(1)[0];
    // What must not leak: the worker's control socket, its listener, its segment.
    let flora: Vec<(u32, String)> = fd_table(pid)
        .into_iter()
        .filter(|(fd, t)| *fd > 2 && !from_above.contains(&(*fd, t.clone())))
        .filter(|(_, t)| {
            t.starts_with("socket:") || t.contains("scoreboard") || t.contains("memfd:")
        })
        .collect();
    assert!(
        flora
            .iter()
            .filter(|(_, t)| t.starts_with("socket:"))
            .count()
            >= 2,
        "worker {pid} holds no control socket and listener: {flora:?}"
    );

    let resp = get(port, "/child-fds").expect("GET /child-fds");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let child = parse_listing(&resp.text());
    assert!(
        child.iter().any(|(fd, _)| *fd == 1),
        "not a listing:\n{}",
        resp.text()
    );
    // Past stdio the program holds only what came from above and the directory `ls` opened.
    let leaked: Vec<_> = child
        .iter()
        .filter(|(fd, t)| {
            *fd > 2 && !t.starts_with("/proc/") && !from_above.contains(&(*fd, t.clone()))
        })
        .collect();
    assert!(
        leaked.is_empty(),
        "descriptors inherited from the worker: {leaked:?}\nworker's own: {flora:?}\nlisting:\n{}",
        resp.text()
    );
    for (_, t) in &flora {
        assert!(
            child.iter().all(|(_, c)| c != t),
            "{t} reached the program:\n{}",
            resp.text()
        );
    }
}

#[test]
fn a_second_from_env_is_refused_and_the_worker_keeps_working() {
    let dir = TestDir::new("fds-twice");
    let port = support::free_port();
    let cluster = dir.start(port, 1, &[]);
    cluster.wait_ready(1);
    let resp = get(port, "/from-env-again").expect("GET /from-env-again");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(
        resp.text().contains("already set up"),
        "unexpected error: {}",
        resp.text()
    );
    // The control channel still answers (a registration is a round trip to the master) ...
    let reg = get(port, "/m/register?kind=counter&name=after_twice_total").expect("register");
    assert_eq!(reg.status, 200, "{}", reg.text());
    // ... and the worker still serves.
    assert_eq!(get(port, "/").expect("GET /").text(), "Hello World\n");
}
