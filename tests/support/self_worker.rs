//! Tests whose worker is the test binary itself: started again by the master with only its
//! `worker_entry` test selected, which runs the app on a current-thread runtime.

use std::future::Future;

/// The argv that starts this test binary again, running only its `worker_entry` test.
pub fn self_worker_argv() -> Vec<String> {
    let exe = std::env::current_exe().expect("test binary path");
    vec![
        exe.to_string_lossy().into_owned(),
        "worker_entry".into(),
        "--exact".into(),
        "--test-threads=1".into(),
    ]
}

/// Runs the worker side `app` on a current-thread tokio runtime.
pub fn run_worker<F: Future>(app: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(app)
}
