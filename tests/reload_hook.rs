//! A failing before-reload hook cancels only that reload: the cluster keeps serving, and the
//! next reload (hook passing) succeeds. Runs the master on the library API, in this process.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flora_cluster::control::{self, Outcome, Request};
use flora_cluster::Master;
use support::{get, wait_for, TestDir, DEMO_BIN, START_TIMEOUT};

#[test]
fn failing_before_reload_hook_cancels_only_the_reload() {
    let dir = TestDir::new("hook");
    let port = support::free_port();
    let socket = dir.scratch("control.sock");
    let fail = Arc::new(AtomicBool::new(true));
    let hook_fail = fail.clone();
    let master = Master::builder()
        .name(dir.name.clone())
        .runtime_dir(dir.runtime_dir())
        .control_socket(&socket)
        .workers(2)
        .shutdown_timeout(Duration::from_secs(5))
        .program([
            "/usr/bin/env".to_string(),
            format!("PORT={port}"),
            DEMO_BIN.to_string(),
        ])
        .before_reload(move |generation| {
            let fail = hook_fail.load(Ordering::SeqCst);
            async move {
                if fail {
                    Err(format!(
                        "database migration for generation {generation} failed"
                    ))
                } else {
                    Ok(())
                }
            }
        })
        .build()
        .unwrap();
    let runner = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(master.run())
    });

    wait_for(START_TIMEOUT, "cluster serving", || {
        get(port, "/pid").ok().map(|r| r.pid())
    });
    let workers = |socket: &std::path::Path| -> Vec<u64> {
        let status = control::call(socket, &Request::Status, Duration::from_secs(5))
            .unwrap()
            .status
            .unwrap();
        status["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["pid"].as_u64().unwrap())
            .collect()
    };
    let before = wait_for(START_TIMEOUT, "2 workers in the status", || {
        Some(workers(&socket)).filter(|w| w.len() == 2)
    });
    let reply = control::call(&socket, &Request::Reload, Duration::from_secs(30)).unwrap();
    let outcome = reply.reload.expect("reload outcome");
    assert_eq!(outcome.outcome, Outcome::Rollback);
    assert!(
        outcome
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("before-reload hook failed: database migration"),
        "{outcome:?}"
    );
    assert!(get(port, "/").is_ok());
    assert_eq!(
        workers(&socket),
        before,
        "the serving workers are untouched"
    );
    for _ in 0..20 {
        assert!(before.contains(&u64::from(get(port, "/pid").unwrap().pid())));
    }
    let status = control::call(&socket, &Request::Status, Duration::from_secs(5))
        .unwrap()
        .status
        .unwrap();
    assert_eq!(status["generation"], 1);

    fail.store(false, Ordering::SeqCst);
    let reply = control::call(&socket, &Request::Reload, Duration::from_secs(30)).unwrap();
    assert_eq!(reply.reload.unwrap().outcome, Outcome::Success);

    let reply = control::call(&socket, &Request::Stop, Duration::from_secs(5)).unwrap();
    assert!(reply.ok);
    assert!(control::wait_gone(&socket, Duration::from_secs(20)));
    runner.join().unwrap().unwrap();
}
