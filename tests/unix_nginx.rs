//! Deployed as people do: Debian's nginx in front as the reverse proxy, keep-alive connections
//! to a cluster on a Unix socket (`upstream { server unix:PATH; keepalive 16; }`), nginx's
//! workers as `nobody:nogroup` reaching the socket through `--unix-owner :nogroup` and mode
//! 0660. Under `wrk` load through nginx the master reloads three times: no request fails
//! (no non-2xx, no socket error), nginx logs no upstream error (it silently retries a GET cut
//! on a keep-alive connection, so only its log shows a drain that cuts connections), and the
//! scoreboard counted every request.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use support::hostile::{chmod, require_root, NOBODY};
use support::tools::{require_tool, run_tool, ChildGuard, ToolOutput};
use support::{get, send_signal, wait_for, wait_until, TestDir, START_TIMEOUT};

/// Length of the load run: long enough for three reloads on a busy 2-core machine.
const LOAD_SECS: u64 = 8;
/// Longest the `wrk` run may take in all.
const WRK_TIMEOUT: Duration = Duration::from_secs(LOAD_SECS + 30);
/// Reloads during the load.
const RELOADS: usize = 3;
/// Longest nginx may take to stop gracefully after SIGQUIT.
const NGINX_QUIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The nginx configuration: foreground, one worker as nobody, everything under `prefix`.
fn nginx_conf(prefix: &Path, port: u16, sock: &Path) -> String {
    let p = prefix.display();
    format!(
        "daemon off;\nmaster_process on;\nworker_processes 1;\nuser nobody nogroup;\n\
         pid {p}/nginx.pid;\nerror_log {p}/error.log warn;\n\
         events {{ worker_connections 512; }}\n\
         http {{\n  access_log off;\n\
           client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n\
           fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n\
           upstream flora {{ server unix:{sock}; keepalive 16; }}\n\
           server {{\n    listen 127.0.0.1:{port};\n\
             location / {{ proxy_pass http://flora; proxy_http_version 1.1; \
             proxy_set_header Connection \"\"; }}\n  }}\n}}\n",
        sock = sock.display()
    )
}

/// Starts nginx (`-c CONF -p DIR -e DIR/error.log`) in front of `sock` on 127.0.0.1:`port`.
fn start_nginx(prefix: &Path, port: u16, sock: &Path) -> ChildGuard {
    let nginx = require_tool("nginx", "nginx");
    std::fs::create_dir_all(prefix).unwrap();
    let conf = prefix.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(prefix, port, sock)).unwrap();
    let mut cmd = Command::new(nginx);
    cmd.arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(prefix)
        .arg("-e")
        .arg(prefix.join("error.log"));
    ChildGuard::spawn("nginx", &mut cmd, prefix.join("nginx.out"))
}

/// `wrk -t2 -c16 -dLOAD_SECS` against `url` on a thread (it runs while the test reloads).
fn start_wrk(url: String) -> std::thread::JoinHandle<ToolOutput> {
    let wrk = require_tool("wrk", "wrk");
    std::thread::spawn(move || {
        let mut cmd = Command::new(wrk);
        cmd.args(["-t2", "-c16", &format!("-d{LOAD_SECS}s"), &url]);
        run_tool(&mut cmd, b"", WRK_TIMEOUT)
    })
}

/// The request count of a wrk report ("N requests in 8.00s, …").
fn wrk_requests(report: &str) -> u64 {
    report
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no request count in wrk's report:\n{report}"))
}

fn error_lines(log: &PathBuf) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("[error]") || l.contains("[crit]") || l.contains("[alert]"))
        .map(str::to_string)
        .collect()
}

#[test]
fn nginx_in_front_on_a_unix_socket_loses_nothing_across_reloads() {
    require_root();
    let dir = TestDir::new("unix-nginx");
    // nginx's workers (nobody) must traverse to the socket, not list anything.
    chmod(&dir.scratch(""), 0o711);
    let sock = dir.scratch("app.sock");
    let addr = format!("unix:{}", sock.display());
    let cluster = dir
        .master(0)
        .args(&["--workers", "2", "--listen", &addr])
        .args(&["--unix-owner", &format!(":{NOBODY}")])
        .env("LISTEN", &addr)
        .start();
    let first = cluster.wait_ready(2);

    let port = support::free_port();
    let prefix = dir.scratch("nginx");
    let mut nginx = start_nginx(&prefix, port, &sock);
    wait_for(START_TIMEOUT, "nginx to proxy to the cluster", || {
        nginx.assert_running();
        get(port, "/pid").ok().filter(|r| r.status == 200)
    });

    let load = start_wrk(format!("http://127.0.0.1:{port}/"));
    let before = cluster.snapshot().totals.counters.requests_total;
    wait_until(START_TIMEOUT, "load flowing through nginx", || {
        cluster.snapshot().totals.counters.requests_total > before + 1000
    });
    let mut served_by = first;
    for round in 0..RELOADS {
        dir.reload_ok();
        let at = cluster.snapshot().totals.counters.requests_total;
        // The new generation takes traffic before the next reload.
        wait_until(START_TIMEOUT, "requests after a reload", || {
            cluster.snapshot().totals.counters.requests_total > at + 1000
        });
        let ready: Vec<u32> = cluster
            .snapshot()
            .slots
            .iter()
            .filter(|s| s.state == flora_cluster::scoreboard::SlotState::Ready)
            .map(|s| s.pid)
            .collect();
        assert!(
            ready.iter().all(|p| !served_by.contains(p)),
            "reload {round}: a new generation serves"
        );
        served_by = ready;
    }
    assert!(
        !load.is_finished(),
        "wrk ended before the {RELOADS} reloads were done; the run proves nothing"
    );
    let out = load.join().expect("wrk thread");
    nginx.assert_running();
    assert!(
        out.status.success(),
        "wrk failed: {}{}",
        out.stdout,
        out.stderr
    );
    let report = out.stdout;
    eprintln!("{report}");
    assert!(
        !report.contains("Socket errors"),
        "socket errors:\n{report}"
    );
    assert!(!report.contains("Non-2xx"), "failed requests:\n{report}");
    let sent = wrk_requests(&report);
    assert!(sent > 3000, "too little load to mean anything:\n{report}");

    // Every answered request was counted (plus the probe; wrk leaves a few unanswered at its end).
    wait_until(
        START_TIMEOUT,
        "the scoreboard to count every request",
        || cluster.snapshot().totals.counters.requests_total > sent,
    );
    let errors = error_lines(&prefix.join("error.log"));
    eprintln!("{sent} requests through nginx, {RELOADS} reloads");
    // nginx retries a GET that failed on a cached keep-alive connection, so a drain that cuts
    // connections still shows no client error: its error log is where that would surface.
    assert!(
        errors.is_empty(),
        "nginx logged upstream errors during the reloads:\n{}",
        errors.join("\n")
    );

    // nginx stops gracefully (SIGQUIT) before the cluster.
    send_signal(nginx.pid(), Signal::SIGQUIT);
    wait_until(NGINX_QUIT_TIMEOUT, "nginx to quit", || {
        get(port, "/").is_err()
    });
    drop(nginx);
}
