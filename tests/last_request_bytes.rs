//! The status's last request of a worker shows the body bytes its response sent (hyper drops a
//! `Full` body at its end without polling it again: that end still records the bytes).

mod support;

use std::time::Duration;

use support::{wait_for, Http, TestDir};

/// Longest wait for a finished request to show as the slot's last one.
const SHOW_TIMEOUT: Duration = Duration::from_secs(10);

fn last_request_of(cluster: &support::Cluster, path: &str) -> u64 {
    wait_for(SHOW_TIMEOUT, &format!("{path} as the last request"), || {
        cluster.snapshot().slots[0]
            .last_request
            .clone()
            .filter(|l| l.path == path)
    })
    .bytes_sent
}

#[test]
fn last_request_shows_the_body_bytes_sent() {
    let dir = TestDir::new("last-bytes");
    let port = support::free_port();
    let body = "x".repeat(1234);
    let cluster = dir.start(port, 1, &["--body", &body]);
    cluster.wait_ready(1);
    let mut c = Http::connect(port).expect("connect");
    let resp = c.get("/first").expect("GET /first");
    assert_eq!(resp.body.len(), 1234);
    assert_eq!(last_request_of(&cluster, "/first"), 1234);
    // The next request on the same keep-alive connection, with another size.
    let pid = c.get("/pid").expect("GET /pid");
    assert_eq!(
        last_request_of(&cluster, "/pid"),
        pid.body.len() as u64,
        "body {:?}",
        pid.text()
    );
    c.close();
}
