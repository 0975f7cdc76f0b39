//! A burst of connections is spread over the workers: none takes more than 2/3 of it.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::{wait_until, Http, TestDir};

const ROUNDS: usize = 20;
/// Connections opened in one burst.
const BURST: usize = 50;
/// Most connections of one burst a worker may hold (2/3 of the burst).
const MAX_PER_WORKER: usize = BURST * 2 / 3;
/// Longest wait for the scoreboard to show the burst's connections closed.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn bursts_of_connections_are_spread_over_workers() {
    let dir = TestDir::new("fairness");
    let cluster = dir.start(support::free_port(), 2, &[]);
    let pids = cluster.wait_ready(2);
    let mut rounds = Vec::new();

    for round in 0..ROUNDS {
        // Connect all first: the whole burst waits in the accept queue together.
        let mut conns: Vec<Http> = (0..BURST)
            .map(|_| Http::connect(cluster.port).expect("connect"))
            .collect();
        for c in &mut conns {
            c.send_get("/pid").expect("send GET /pid");
        }
        let mut per_pid: BTreeMap<u32, usize> = BTreeMap::new();
        for c in &mut conns {
            let r = c.read_response().expect("read /pid");
            assert_eq!(r.status, 200);
            let pid = r.pid();
            assert!(
                pids.contains(&pid),
                "round {round}: unknown pid {pid} (workers {pids:?})"
            );
            *per_pid.entry(pid).or_default() += 1;
        }
        // All replies are read while all 50 are still open; now close the burst.
        for c in conns {
            c.close();
        }
        let counts: Vec<usize> = pids
            .iter()
            .map(|p| per_pid.get(p).copied().unwrap_or(0))
            .collect();
        rounds.push(counts.clone());
        assert!(
            counts.iter().all(|n| *n <= MAX_PER_WORKER),
            "round {round}: a worker took more than {MAX_PER_WORKER} of {BURST} connections: \
             {counts:?} (rounds so far: {rounds:?})"
        );
        wait_until(
            CLOSE_TIMEOUT,
            "both slots to show 0 open connections",
            || {
                cluster.snapshot().slots[..2]
                    .iter()
                    .all(|s| s.counters.conns_open == 0)
            },
        );
    }
    eprintln!("connections per worker per round: {rounds:?}");
    assert_eq!(
        cluster.wait_ready(2),
        pids,
        "a worker changed during the test"
    );
    let snap = cluster.snapshot();
    assert_eq!(
        snap.totals.counters.conns_total,
        (ROUNDS * BURST) as u64,
        "connections counted"
    );
}
