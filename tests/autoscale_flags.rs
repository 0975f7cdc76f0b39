//! Autoscaling's flags: a bad combination or value (one bound alone, min over max, zero,
//! a start count outside the bounds, too few slots, a bad idle time) makes `flora-cluster
//! run` exit 2 at once with a message naming the setting, never a panic, and nothing
//! started. While autoscaling, a manual `scale` outside the bounds is refused with the
//! bounds, and one within them moves the target (counted as `manual`).

mod support;

use std::time::Duration;

use support::status_server::{scrape, status_port};
use support::TestDir;

/// A rejected command line exits at once.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// `(flags, words the error must name)`.
const BAD: &[(&[&str], &[&str])] = &[
    (&["--workers-min", "2"], &["workers_max", "--workers-max"]),
    (&["--workers-max", "4"], &["workers_min", "--workers-min"]),
    (
        &["--workers-min", "4", "--workers-max", "2"],
        &["workers_min", "at most workers_max (2)"],
    ),
    (
        &["--workers-min", "0", "--workers-max", "2"],
        &["workers_min", "1..="],
    ),
    (
        &["--workers-min", "-1", "--workers-max", "2"],
        &["--workers-min"],
    ),
    (
        &["--workers-min", "1", "--workers-max", "many"],
        &["--workers-max"],
    ),
    (
        &["--workers-min", "1", "--workers-max", "99999"],
        &["workers_max", "1..="],
    ),
    (
        &["--workers-min", "2", "--workers-max", "4", "--workers", "6"],
        &["workers", "2..=4"],
    ),
    (
        &["--workers-min", "2", "--workers-max", "4", "--workers", "1"],
        &["workers", "2..=4"],
    ),
    (
        &["--workers-min", "2", "--workers-max", "6", "--slots", "4"],
        &["slots", "6 slots"],
    ),
    (
        &["--scale-down-after", "5"],
        &["scale_down_after", "--workers-min"],
    ),
    (
        &[
            "--workers-min",
            "1",
            "--workers-max",
            "2",
            "--scale-down-after",
            "0",
        ],
        &["--scale-down-after"],
    ),
    (
        &[
            "--workers-min",
            "1",
            "--workers-max",
            "2",
            "--scale-down-after",
            "-3",
        ],
        &["--scale-down-after"],
    ),
    (
        &[
            "--workers-min",
            "1",
            "--workers-max",
            "2",
            "--scale-down-after",
            "nan",
        ],
        &["--scale-down-after"],
    ),
];

#[test]
fn bad_autoscale_flags_exit_2_naming_the_setting() {
    let dir = TestDir::new("autoscale-flags");
    for (args, names) in BAD {
        let (status, stderr) = dir
            .master(support::free_port())
            .args(args)
            .demo(&[])
            .run_to_exit(EXIT_TIMEOUT);
        support::cluster::assert_refused(&dir, &args, status, &stderr, names);
    }
}

#[test]
fn bad_autoscale_keys_in_a_config_file_name_key_and_line() {
    let dir = TestDir::new("autoscale-config");
    for (text, names) in [
        (
            "workers_min = 3\nworkers_max = 2\n",
            &["workers_min", "line 1"][..],
        ),
        (
            "workers_min = 1\nworkers_max = 2\nscale_down_after = 0\n",
            &["scale_down_after", "line 3"],
        ),
    ] {
        let path = dir.scratch("autoscale.toml");
        std::fs::write(&path, text).expect("write config");
        let path = path.to_string_lossy().into_owned();
        let (status, stderr) = dir
            .master(support::free_port())
            .args(&["--config", &path])
            .demo(&[])
            .run_to_exit(EXIT_TIMEOUT);
        assert_eq!(
            status.code(),
            Some(support::cluster::EXIT_USAGE),
            "{text:?}: {stderr}"
        );
        for name in names {
            assert!(stderr.contains(name), "{text:?}: lacks {name:?}:\n{stderr}");
        }
    }
}

#[test]
fn a_manual_scale_while_autoscaling_stays_within_the_bounds() {
    let dir = TestDir::new("autoscale-manual");
    let cluster = dir
        .master(support::free_port())
        .args(&["--workers-min", "2", "--workers-max", "4", "--workers", "3"])
        .demo(&[])
        .start();
    cluster.wait_ready(3);
    assert_eq!(
        cluster.snapshot().target_workers,
        3,
        "--workers is the start count"
    );
    for n in ["1", "5"] {
        let out = dir.ctl(&["scale", n]);
        assert_eq!(out.status.code(), Some(1), "scale {n}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("within 2..=4"), "scale {n}: {stderr}");
    }
    assert_eq!(cluster.snapshot().target_workers, 3);
    let out = dir.ctl(&["scale", "4"]);
    assert!(out.status.success(), "{out:?}");
    cluster.wait_ready(4);
    let expo = scrape(status_port(&cluster), None).expo;
    let manual = expo.value(
        "flora_scale_events_total",
        &[("direction", "up"), ("reason", "manual")],
    );
    assert_eq!(manual, Some(1.0));
    assert_eq!(cluster.snapshot().target_workers, 4);
}
