//! The accept queue of each listener, against the kernel: with every worker stopped
//! (`SIGSTOP`) nobody accepts, so connections pile up in the master's listening socket.
//! `flora_listen_queue_length` must then equal `ss`'s Recv-Q for that socket, the limit its
//! `--backlog`, drops must appear once the queue is full (TCP), the peak must hold until the
//! scrape after the queue drained, and JSON, `?auto` and the status page must say the same.
//! A Unix-socket listener reports its queue the same way (and no drops: the kernel counts none).

mod support;

use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
use support::backlog::{tcp_connects, Stopped};
use support::exposition::Exposition;
use support::status_server::{auto_value, scrape, status_port};
use support::tools::PrometheusServer;
use support::{free_port, poll, wait_until, Cluster, TestDir};

/// Longest wait for the queue and the metrics to agree.
const SETTLE: Duration = Duration::from_secs(20);

/// `ss`'s Recv-Q and Send-Q (queue length and limit) of the TCP listener on `port`.
fn ss_tcp(port: u16) -> Option<(u64, u64)> {
    let out = Command::new("ss")
        .args(["-ltnH", "sport", "=", &format!(":{port}")])
        .output()
        .expect("run ss");
    assert!(out.status.success(), "ss failed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // State Recv-Q Send-Q Local Peer
    let cols: Vec<&str> = text.lines().next()?.split_whitespace().collect();
    Some((cols.get(1)?.parse().ok()?, cols.get(2)?.parse().ok()?))
}

/// A Unix listener's queue in `ss`. The kernel keeps the name the socket was bound at: the
/// master binds it in a private directory it holds open (`/proc/self/fd/N/s`) and then links
/// it into place, so the listener is found by the master's pid and that name.
fn ss_unix(master: u32) -> Option<(u64, u64)> {
    let out = Command::new("ss")
        .args(["-xlnpH"])
        .output()
        .expect("run ss");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let owner = format!("pid={master},");
    text.lines().find_map(|l| {
        // Netid State Recv-Q Send-Q Local Port Peer Port Process
        let cols: Vec<&str> = l.split_whitespace().collect();
        let ours = l.contains(&owner) && cols.get(4)?.ends_with("/s");
        ours.then_some(())?;
        Some((cols.get(2)?.parse().ok()?, cols.get(3)?.parse().ok()?))
    })
}

/// The value of `family{listener="name"}`, if the scrape has it.
fn value(expo: &Exposition, family: &str, listener: &str) -> Option<f64> {
    expo.named(family)
        .find(|s| s.has_labels(&[("listener", listener)]))
        .map(|s| s.value)
}

/// Scrapes until the queue length in `/metrics` equals `ss`'s Recv-Q read just before and
/// just after (the workers are stopped, so both settle); returns that length and the scrape.
fn agreed_length(
    status: u16,
    listener: &str,
    ss_now: impl Fn() -> Option<(u64, u64)>,
) -> (u64, Exposition) {
    poll(SETTLE, "flora_listen_queue_length = ss Recv-Q", || {
        let before = ss_now().ok_or_else(|| "ss shows no such listener".to_string())?;
        let s = scrape(status, None);
        let after = ss_now().ok_or_else(|| "ss shows no such listener".to_string())?;
        let metric = value(&s.expo, "flora_listen_queue_length", listener)
            .ok_or_else(|| format!("no flora_listen_queue_length for {listener}"))?;
        if before.0 == after.0 && metric == before.0 as f64 && before.0 > 0 {
            Ok((before.0, s.expo))
        } else {
            Err(format!("ss {before:?}/{after:?}, metric {metric}"))
        }
    })
}

#[test]
fn a_tcp_listeners_queue_matches_ss_and_counts_drops() {
    let dir = TestDir::new("listen-queue-tcp");
    let port = free_port();
    let cluster = dir.start_with(port, &["--workers", "2", "--backlog", "16"], &[]);
    let status = status_port(&cluster);
    let listener = format!("127.0.0.1:{port}");
    let pids = cluster.wait_ready(2);
    // The limit is known before any load.
    poll(SETTLE, "flora_listen_queue_limit 16", || {
        let expo = scrape(status, None).expo;
        match value(&expo, "flora_listen_queue_limit", &listener) {
            Some(16.0) => Ok(()),
            other => Err(format!("limit {other:?}")),
        }
    });
    let drops_before = value(
        &scrape(status, None).expo,
        "flora_listen_drops_total",
        &listener,
    )
    .expect("a TCP listener has a drop counter");

    let stopped = Stopped::all(pids);
    let conns = tcp_connects(port, 100);
    let (length, expo) = agreed_length(status, &listener, || ss_tcp(port));
    // The kernel queues one past the limit.
    assert!(
        (16..=17).contains(&length),
        "queue length {length} with --backlog 16"
    );
    assert_eq!(
        ss_tcp(port).map(|q| q.1),
        Some(16),
        "ss Send-Q is the limit"
    );
    assert_eq!(
        value(&expo, "flora_listen_queue_limit", &listener),
        Some(16.0)
    );
    let peak = value(&expo, "flora_listen_queue_peak", &listener).expect("peak");
    assert!(peak >= length as f64, "peak {peak} below length {length}");
    // 83 SYNs found the queue full: dropped (and retried by the kernel).
    poll(SETTLE, "drops counted", || {
        let d = value(
            &scrape(status, None).expo,
            "flora_listen_drops_total",
            &listener,
        )
        .ok_or_else(|| "no drop counter".to_string())?;
        if d > drops_before {
            Ok(())
        } else {
            Err(format!("drops {d}"))
        }
    });
    // The other outputs say the same while the workers are stopped.
    let json = support::http::get_json(status, "/server-status.json");
    let q = json["listen_queues"]
        .as_array()
        .and_then(|a| a.iter().find(|q| q["listener"] == listener.as_str()))
        .unwrap_or_else(|| panic!("no {listener} in listen_queues: {json}"));
    assert_eq!(q["length"].as_u64(), Some(length));
    assert_eq!(q["limit"].as_u64(), Some(16));
    assert!(q["drops"].as_u64().is_some_and(|d| d > 0));
    let auto = support::get(status, "/server-status?auto")
        .expect("?auto")
        .text();
    assert_eq!(auto_value(&auto, "ListenQueue"), Some(length as f64));
    assert_eq!(auto_value(&auto, "ListenQueueLimit"), Some(16.0));
    let html = support::get(status, "/server-status").expect("page").text();
    assert!(html.contains("<table id=\"listeners\">"), "listeners table");
    assert!(html.contains(&format!("<code>{listener}</code>")));

    // The workers resume and empty the queue: the length drops to 0, the peak of the
    // stopped period shows once more, then the next scrape starts from the current length.
    drop(stopped);
    let seen_peak = poll(SETTLE, "queue drained", || {
        let expo = scrape(status, None).expo;
        match value(&expo, "flora_listen_queue_length", &listener) {
            Some(0.0) => Ok(value(&expo, "flora_listen_queue_peak", &listener)),
            other => Err(format!("length {other:?}")),
        }
    });
    assert!(
        seen_peak.is_some_and(|p| p >= 1.0),
        "the scrape that saw the drain still shows the peak: {seen_peak:?}"
    );
    drop(conns);
    wait_until(SETTLE, "peak back to the current length", || {
        let expo = scrape(status, None).expo;
        value(&expo, "flora_listen_queue_peak", &listener) == Some(0.0)
    });
    stop(cluster);
}

#[test]
fn a_unix_listeners_queue_matches_ss() {
    let dir = TestDir::new("listen-queue-unix");
    let sock = dir.scratch("app.sock");
    let listener = format!("unix:{}", sock.display());
    let cluster = dir
        .master(0)
        .args(&["--workers", "2", "--backlog", "8", "--listen", &listener])
        .env("LISTEN", &listener)
        .start();
    let status = status_port(&cluster);
    let stopped = Stopped::all(cluster.wait_ready(2));
    // A full Unix queue refuses at once (EAGAIN) instead of dropping.
    let addr = UnixAddr::new(&sock).expect("unix addr");
    let mut conns = Vec::new();
    let mut refused = 0;
    for _ in 0..20 {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .expect("socket");
        match connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr) {
            Ok(()) => conns.push(fd),
            Err(nix::errno::Errno::EAGAIN) => refused += 1,
            Err(e) => panic!("connect {listener}: {e}"),
        }
    }
    assert!(refused > 0, "20 connects to a backlog of 8 all went in");
    let (length, expo) = agreed_length(status, &listener, || ss_unix(cluster.pid));
    assert_eq!(length, conns.len() as u64, "every accepted connect waits");
    assert_eq!(ss_unix(cluster.pid).map(|q| q.1), Some(8));
    assert_eq!(
        value(&expo, "flora_listen_queue_limit", &listener),
        Some(8.0)
    );
    assert_eq!(
        value(&expo, "flora_listen_drops_total", &listener),
        None,
        "the kernel counts no drops on a Unix listener"
    );
    drop(stopped);
    wait_until(SETTLE, "unix queue drained", || {
        let expo = scrape(status, None).expo;
        value(&expo, "flora_listen_queue_length", &listener) == Some(0.0)
    });
    drop(conns);
    stop(cluster);
}

/// A real Prometheus scrapes through a pile-up and its drain: it sees the burst in the
/// peak, the drop counter never goes down (`resets()` = 0), and it ends on exactly the value
/// `/metrics` shows.
#[test]
fn prometheus_sees_the_burst_and_monotonic_drops() {
    let dir = TestDir::new("listen-queue-prom");
    let port = free_port();
    let cluster = dir.start_with(port, &["--workers", "2", "--backlog", "8"], &[]);
    let status = status_port(&cluster);
    let listener = format!("127.0.0.1:{port}");
    let pids = cluster.wait_ready(2);
    let prom = PrometheusServer::start("flora", &format!("127.0.0.1:{status}"));
    wait_until(PROM_TIMEOUT, "Prometheus' first scrape", || {
        prom.query_scalar("up{job=\"flora\"}") == Some(1.0)
    });
    let stopped = Stopped::all(pids);
    let conns = tcp_connects(port, 40);
    let peak = format!("max_over_time(flora_listen_queue_peak{{listener=\"{listener}\"}}[5m])");
    wait_until(PROM_TIMEOUT, "Prometheus sees the full queue", || {
        prom.query_scalar(&peak).is_some_and(|v| v >= 8.0)
    });
    let drops = format!("flora_listen_drops_total{{listener=\"{listener}\"}}");
    wait_until(PROM_TIMEOUT, "Prometheus sees drops", || {
        prom.query_scalar(&drops).is_some_and(|v| v > 0.0)
    });
    drop(stopped);
    drop(conns);
    wait_until(SETTLE, "queue drained", || {
        value(
            &scrape(status, None).expo,
            "flora_listen_queue_length",
            &listener,
        ) == Some(0.0)
    });
    // No connect is left to retry: the counter stops, and Prometheus reaches its value.
    poll(
        PROM_TIMEOUT,
        "Prometheus ends on the /metrics value",
        || {
            let want = value(
                &scrape(status, None).expo,
                "flora_listen_drops_total",
                &listener,
            );
            let got = prom.query_scalar(&drops);
            if want.is_some() && want == got {
                Ok(())
            } else {
                Err(format!("/metrics {want:?}, Prometheus {got:?}"))
            }
        },
    );
    let resets = format!("sum(resets({drops}[5m]))");
    assert_eq!(
        prom.query_scalar(&resets),
        Some(0.0),
        "{resets}; targets {}",
        prom.targets()
    );
    stop(cluster);
}

/// Longest wait for Prometheus to scrape what the test made happen.
const PROM_TIMEOUT: Duration = Duration::from_secs(40);

/// Stops the master and checks it exits cleanly.
fn stop(mut cluster: Cluster) {
    cluster.signal(Signal::SIGTERM);
    assert!(cluster.wait_exit(SETTLE).success(), "{}", cluster.stderr());
}
