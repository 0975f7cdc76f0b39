//! A worker is untrusted code: one running as `nobody` under a root master truncates, grows
//! and scribbles the scoreboard descriptor it inherits — header, registry, its own slot —
//! every time it starts. The master stays up, keeps serving `/metrics` with valid exposition
//! and the real registry, respawns and reloads keep working, and it stops with exit 0.
//! (Needs root for `--user nobody`, as CI and these machines run.)

mod support;

use std::time::Duration;

use support::status_server::{scrape, status_port};
use support::tools::{assert_promtool, Lints};
use support::workers::send_requests;
use support::{get, kill9, wait_until, TestDir, EXIT_TIMEOUT, START_TIMEOUT};

/// Runs in slot 0 before the demo worker starts: tries to resize the segment, then scribbles
/// the header (first 512 bytes), the registry (the tail) and its own slot.
const HOSTILE: &str = r#"
import mmap, os, sys
fd = int(os.environ["FLORA_SCOREBOARD_FD"])
size = os.fstat(fd).st_size
for n in (0, 8, size * 2):
    try:
        os.ftruncate(fd, n)
        print(f"HOSTILE truncate {n} done", file=sys.stderr)
    except OSError as e:
        print(f"HOSTILE truncate {n} refused errno {e.errno}", file=sys.stderr)
m = mmap.mmap(fd, size)
m[0:512] = b"\xab" * 512
reg = 64 + 256 * 576
m[size - reg:size] = os.urandom(reg)
m[512:512 + 4096] = os.urandom(4096)
m.close()
print(f"HOSTILE scribbled {size} bytes", file=sys.stderr)
"#;

fn metrics_text(status: u16) -> String {
    let s = scrape(status, None);
    // Lint problems are allowed (a scribbled name may be camel case); parse errors are not.
    assert_promtool(&s.text, Lints::Any, "scrape");
    s.text
}

#[test]
fn scribbling_worker_cannot_hurt_the_master() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (scripts/test.sh runs as root in CI)"
    );
    let dir = TestDir::new("hostile");
    let port = support::free_port();
    let listen = format!("127.0.0.1:{port}");
    let prelude = format!("if [ \"$FLORA_SLOT\" = 0 ]; then python3 - <<'PY'\n{HOSTILE}\nPY\nfi");
    let script = dir.demo_script("hostile.sh", &prelude, "");
    let mut cluster = dir.start_program(
        port,
        &["--workers", "2", "--user", "nobody", "--listen", &listen],
        &[script.to_str().expect("utf-8 path")],
    );
    cluster.wait_ready(2);
    wait_until(START_TIMEOUT, "the hostile worker ran", || {
        cluster.stderr().contains("HOSTILE scribbled")
    });
    let log = cluster.stderr();
    for n in ["truncate 0 refused", "truncate 8 refused"] {
        assert!(log.contains(n), "expected {n:?} in:\n{log}");
    }
    assert!(!log.contains(" done"), "a resize went through:\n{log}");

    // Registered after the registry was scribbled: a fresh series, correct cells.
    let r = get(port, "/m/register?kind=counter&name=jobs_total&help=Jobs").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    for _ in 0..2 {
        // Reaches one worker or the other: each registers on first use.
        let _ = get(port, "/m/register?kind=counter&name=jobs_total&help=Jobs");
    }
    let status = status_port(&cluster);
    send_requests(port, 200);
    let text = metrics_text(status);
    assert!(text.contains("# TYPE jobs_total counter"), "{text}");
    assert!(text.contains("flora_generation 1"), "{text}");

    // Respawns of the scribbling slot keep working (each scribbles again).
    for round in 0..2 {
        let pid = cluster.wait_ready(2)[0];
        kill9(pid);
        wait_until(START_TIMEOUT, "slot 0 respawned", || {
            let s = cluster.snapshot();
            s.slots[0].pid != 0 && s.slots[0].pid != pid && s.slots[0].state.as_str() == "ready"
        });
        send_requests(port, 50);
        let text = metrics_text(status);
        assert!(
            text.contains(&format!(
                "flora_worker_restarts_total{{worker=\"0\"}} {}",
                round + 1
            )),
            "restarts after round {round}:\n{text}"
        );
    }
    // A reload starts a whole new generation over the scribbled header.
    dir.reload_ok();
    let text = metrics_text(status);
    assert!(text.contains("flora_generation 2"), "{text}");
    send_requests(port, 50);

    cluster.signal(nix::sys::signal::Signal::SIGTERM);
    let st = cluster.wait_exit(EXIT_TIMEOUT + Duration::from_secs(5));
    assert_eq!(st.code(), Some(0), "master exit: {}", cluster.stderr());
}
