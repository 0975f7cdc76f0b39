//! A worker out of file descriptors (EMFILE on accept) keeps running and serves again as soon
//! as descriptors free up; connections that waited in the backlog are served then.

mod support;

use std::net::TcpStream;

use support::{get, wait_for, Http, TestDir, START_TIMEOUT};

#[test]
fn worker_survives_emfile_and_serves_when_fds_free_up() {
    let dir = TestDir::new("emfile");
    let port = support::free_port();
    // A tiny descriptor limit for the worker: a few dozen connections exhaust it.
    let script = dir.demo_script("worker.sh", "ulimit -n 48", "");
    let cluster = dir.start_program(port, &["--workers", "1"], &[script.to_str().unwrap()]);
    let pid = cluster.wait_ready(1)[0];

    // Hold far more connections than the worker can accept.
    let held: Vec<TcpStream> = (0..80)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    assert!(
        held.len() > 48,
        "the backlog takes them even when the worker cannot accept"
    );
    // A request on one of the last connections waits in the backlog...
    let mut late = Http::connect(port).expect("connect");
    late.send_get("/pid").expect("send");
    // ...until descriptors free up.
    drop(held);
    let answer = late
        .read_response()
        .expect("the waiting request is answered once fds are free");
    assert_eq!(answer.pid(), pid);
    let fresh = wait_for(START_TIMEOUT, "fresh requests served", || {
        get(port, "/pid").ok()
    });
    assert_eq!(
        fresh.pid(),
        pid,
        "the same worker process: it did not crash"
    );
    assert_eq!(cluster.snapshot().slots[0].restarts, 0);
}
