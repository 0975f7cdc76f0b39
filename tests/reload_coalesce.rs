//! Reload requests during a reload are coalesced into one more reload, and every caller is
//! answered.

mod support;

use support::TestDir;

#[test]
fn overlapping_reloads_are_coalesced_and_all_answered() {
    let dir = TestDir::new("coalesce");
    let port = support::free_port();
    // Each start takes ~1 s, so the three requests below overlap the first reload.
    let script = dir.demo_script("worker.sh", "sleep 1", "");
    let cluster = dir.start_program(port, &["--workers", "2"], &[script.to_str().unwrap()]);
    cluster.wait_ready(2);
    let outputs: Vec<std::process::Output> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3).map(|_| s.spawn(|| dir.ctl(&["reload"]))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for out in &outputs {
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("reload succeeded"), "{stdout}");
    }
    // One reload started at once, the other two were coalesced into a single second one.
    let snap = cluster.snapshot();
    assert_eq!(snap.generation, 3, "expected exactly two reloads");
    let gens: Vec<String> = outputs
        .iter()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .collect();
    let count = |g: &str| gens.iter().filter(|o| o.contains(g)).count();
    assert_eq!(
        (count("generation 2 "), count("generation 3 ")),
        (1, 2),
        "{gens:?}"
    );
}
