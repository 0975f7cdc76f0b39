//! `RequestInfo::add` made after the response was sent (by a task that kept the request's
//! handle) counts once the connection is closed, even when no other request follows on it.

mod support;

use std::time::Duration;

use support::workers;
use support::{hold_for, wait_until, Http, TestDir};

const NAME: &str = "late_jobs_total";
/// Longest wait for the late add to show.
const COUNT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the count must then stay put (no double counting).
const STABLE_WINDOW: Duration = Duration::from_millis(300);

fn count(cluster: &support::Cluster) -> Option<f64> {
    cluster
        .snapshot()
        .custom
        .iter()
        .find(|m| m.name == NAME)
        .and_then(|m| m.value)
}

#[test]
fn a_late_add_counts_when_the_connection_closes_first() {
    let dir = TestDir::new("defer-close");
    let port = support::free_port();
    let cluster = dir.start(port, 1, &[]);
    cluster.wait_ready(1);
    let mut c = Http::connect(port).expect("connect");
    workers::call_ok(&mut c, &format!("/m/register?kind=counter&name={NAME}"));
    // The add comes 300 ms after the response; the connection is closed before that.
    workers::call_ok(&mut c, &format!("/m/defer-late?name={NAME}&n=7&ms=300"));
    c.close();
    wait_until(COUNT_TIMEOUT, "the late add to count", || {
        count(&cluster) == Some(7.0)
    });
    hold_for(STABLE_WINDOW, || assert_eq!(count(&cluster), Some(7.0)));
}
