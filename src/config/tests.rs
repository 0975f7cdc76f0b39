//! Unit tests of config parsing and validation.
use super::*;

#[test]
fn errors_name_key_and_line() {
    for (text, needles) in [
        ("workers = 2\nbogus = 1\n", vec!["bogus", "line 2"]),
        ("workers = \"two\"\n", vec!["workers", "line 1"]),
        ("name = \"x\"\n\nworkers = 0\n", vec!["workers", "line 3"]),
        ("ready_timeout = -1\n", vec!["ready_timeout", "line 1"]),
        ("name = \"../etc\"\n", vec!["name"]),
        ("workers = 4\nslots = 2\n", vec!["slots", "line 2"]),
        ("route_limit = 0\n", vec!["route_limit", "line 1"]),
        (
            "workers = 1\nroute_limit = 1025\n",
            vec!["route_limit", "1024"],
        ),
        (
            "status_addr = \"everywhere\"\n",
            vec!["status_addr", "line 1"],
        ),
    ] {
        let msg = Config::from_toml_str(text).unwrap_err().to_string();
        for n in needles {
            assert!(msg.contains(n), "{msg:?} lacks {n:?}");
        }
    }
}

#[test]
fn durations_reject_nan_infinities_and_out_of_range() {
    for key in ["ready_timeout", "shutdown_timeout", "otlp_interval"] {
        for bad in ["nan", "-nan", "inf", "-inf", "-1.0", "0.0", "1e30"] {
            let text = format!("workers = 1\n{key} = {bad}\n");
            let msg = Config::from_toml_str(&text).unwrap_err().to_string();
            assert!(msg.contains(key) && msg.contains("line 2"), "{text}: {msg}");
        }
    }
}

#[test]
fn duration_accessors_never_panic_on_unvalidated_values() {
    for (secs, want) in [
        (f64::NAN, Duration::from_secs(86_400)),
        (f64::INFINITY, Duration::from_secs(86_400)),
        (1e300, Duration::from_secs(86_400)),
        (f64::NEG_INFINITY, Duration::ZERO),
        (-1.0, Duration::ZERO),
        (1.5, Duration::from_millis(1500)),
    ] {
        let c = Config {
            ready_timeout: secs,
            shutdown_timeout: secs,
            ..Config::default()
        };
        assert_eq!(c.ready_timeout(), want, "{secs}");
        assert_eq!(c.shutdown_timeout(), want, "{secs}");
    }
}

#[test]
fn defaults_and_values() {
    let c = Config::from_toml_str(
        "name = \"web\"\nworkers = 3\nready_timeout = 5\nshutdown_timeout = 2.5\nprogram = [\"./w\", \"-v\"]\n",
    )
    .unwrap();
    assert_eq!(c.slot_count(), 8);
    assert_eq!(c.shutdown_timeout(), Duration::from_millis(2500));
    assert!(c.validate().is_ok());
    assert!(Config::default().validate().is_err());
    // Management endpoints bind to loopback unless told otherwise.
    let addr = Config::default().status_socket_addr().unwrap();
    assert!(addr.ip().is_loopback());
    assert!(Config::default().worker_count() >= 1);
}

#[test]
fn sizes_parse_with_both_unit_systems() {
    for (text, want) in [
        ("4096", 4096),
        ("4096B", 4096),
        ("1K", 1_000),
        ("1KB", 1_000),
        ("512M", 512_000_000),
        ("512mb", 512_000_000),
        ("1G", 1_000_000_000),
        ("2GB", 2_000_000_000),
        ("1KiB", 1024),
        ("100MiB", 100 << 20),
        ("100 mib", 100 << 20),
        ("1.5GiB", 3 << 29),
        ("0.5K", 500),
        ("1TiB", 1 << 40),
        (" 7 ", 7),
    ] {
        assert_eq!(parse_size(text), Ok(want), "{text}");
    }
    assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
}

#[test]
fn sizes_reject_garbage_zero_fractions_and_overflow() {
    for bad in [
        "",
        " ",
        "0",
        "0MiB",
        "-1",
        "-1MiB",
        "+5",
        "nan",
        "NaN",
        "inf",
        "-inf",
        "1e9",
        "1.5",
        "1..5M",
        ".M",
        "12XB",
        "MiB",
        "1 2M",
        "18446744073709551616",
        "20000000000GiB",
        "99999999999999999999999TiB",
        "17179869184.5GiB",
    ] {
        let err = parse_size(bad).expect_err(bad);
        assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
    }
}

/// `(toml, key)`: every bad guard value is refused, naming the key and its line.
const BAD_GUARDS: &[(&str, &str)] = &[
    ("request_timeout = 0", "request_timeout"),
    ("request_timeout = -1", "request_timeout"),
    ("request_timeout = nan", "request_timeout"),
    ("request_timeout = inf", "request_timeout"),
    ("request_timeout = 1e30", "request_timeout"),
    ("heartbeat_timeout = 0.5", "heartbeat_timeout"),
    ("heartbeat_timeout = 0", "heartbeat_timeout"),
    ("heartbeat_timeout = -inf", "heartbeat_timeout"),
    ("heartbeat_timeout = nan", "heartbeat_timeout"),
    ("max_memory = 0", "max_memory"),
    ("max_memory = -1", "max_memory"),
    ("max_memory = 1.5", "max_memory"),
    ("max_memory = \"lots\"", "max_memory"),
    ("max_memory = \"0MiB\"", "max_memory"),
    ("max_memory = \"99999999999999TiB\"", "max_memory"),
    ("max_memory = true", "max_memory"),
    ("max_requests = 0", "max_requests"),
    ("max_requests = -3", "max_requests"),
    ("max_requests = 1.5", "max_requests"),
    (
        "max_requests = 10\nmax_requests_jitter = -1",
        "max_requests_jitter",
    ),
    ("max_requests_jitter = 5", "max_requests_jitter"),
    ("max_worker_age = 0", "max_worker_age"),
    ("max_worker_age = nan", "max_worker_age"),
    ("max_worker_age = 1e12", "max_worker_age"),
    (
        "max_worker_age = 60\nmax_worker_age_jitter = -1",
        "max_worker_age_jitter",
    ),
    (
        "max_worker_age = 60\nmax_worker_age_jitter = nan",
        "max_worker_age_jitter",
    ),
    (
        "max_worker_age = 60\nmax_worker_age_jitter = inf",
        "max_worker_age_jitter",
    ),
    ("max_worker_age_jitter = 5", "max_worker_age_jitter"),
    ("max_recycling = 0", "max_recycling"),
    ("max_recycling = 100000", "max_recycling"),
    ("max_recycling = -1", "max_recycling"),
];

#[test]
fn guards_reject_bad_values_naming_key_and_line() {
    for (bad, key) in BAD_GUARDS {
        let text = format!("workers = 2\n{bad}\n");
        let msg = Config::from_toml_str(&text).expect_err(bad).to_string();
        assert!(msg.contains(key), "{bad}: {msg}");
        let line = text.lines().position(|l| l.starts_with(key)).expect("key") + 1;
        assert!(msg.contains(&format!("line {line}")), "{bad}: {msg}");
    }
}

#[test]
fn guards_are_off_by_default_and_map_to_durations() {
    let c = Config::default();
    assert!(!c.recycles());
    assert_eq!(c.request_timeout(), None);
    assert_eq!(c.heartbeat_timeout(), None);
    assert_eq!(c.max_worker_age(), None);
    assert_eq!(c.max_worker_age_jitter(), Duration::ZERO);
    assert_eq!(
        (c.max_memory, c.max_requests, c.max_recycling),
        (None, None, 1)
    );
    // The lag gauge is always on: a heartbeat every second without a timeout.
    assert_eq!(c.heartbeat_interval(), Duration::from_secs(1));
    let c = Config::from_toml_str(concat!(
        "workers = 2\nrequest_timeout = 2.5\nheartbeat_timeout = 2\n",
        "max_memory = \"100MiB\"\nmax_requests = 1000\nmax_requests_jitter = 0\n",
        "max_worker_age = 3600\nmax_worker_age_jitter = 0\nmax_recycling = 2\n",
    ))
    .expect("valid");
    assert_eq!(c.request_timeout(), Some(Duration::from_millis(2500)));
    assert_eq!(c.heartbeat_interval(), Duration::from_millis(500));
    assert_eq!(c.max_memory, Some(100 << 20));
    assert_eq!(c.max_worker_age(), Some(Duration::from_secs(3600)));
    assert!(c.recycles());
    let c = Config::from_toml_str("max_memory = 4096\nheartbeat_timeout = 60\n").expect("valid");
    assert_eq!(c.max_memory, Some(4096));
    assert_eq!(c.heartbeat_interval(), Duration::from_secs(1));
}

#[test]
fn recycles_need_a_spare_slot() {
    for guard in [
        "max_memory = \"1GiB\"",
        "max_requests = 10",
        "max_worker_age = 60",
    ] {
        let text = format!("workers = 3\nslots = 3\n{guard}\n");
        let msg = Config::from_toml_str(&text).expect_err(guard).to_string();
        assert!(
            msg.contains("slots") && msg.contains("--slots 4") && msg.contains("line 2"),
            "{guard}: {msg}"
        );
        let text = format!("workers = 3\nslots = 4\n{guard}\n");
        assert!(Config::from_toml_str(&text).is_ok(), "{guard}");
    }
    // Guards that recycle nothing need no spare slot.
    let text = "workers = 3\nslots = 3\nheartbeat_timeout = 5\nrequest_timeout = 1\n";
    assert!(Config::from_toml_str(text).is_ok());
}

#[test]
fn guard_accessors_never_panic_on_unvalidated_values() {
    let c = Config {
        request_timeout: Some(f64::NAN),
        heartbeat_timeout: Some(-1.0),
        max_worker_age: Some(f64::INFINITY),
        max_worker_age_jitter: Some(f64::NEG_INFINITY),
        ..Config::default()
    };
    assert_eq!(c.request_timeout(), Some(Duration::from_secs(86_400)));
    assert_eq!(c.heartbeat_timeout(), Some(Duration::ZERO));
    assert_eq!(c.heartbeat_interval(), Duration::from_millis(1));
    assert_eq!(c.max_worker_age(), Some(Duration::from_secs(86_400)));
    assert_eq!(c.max_worker_age_jitter(), Duration::ZERO);
}

#[test]
fn guard_flag_parsers() {
    assert_eq!(parse_heartbeat_seconds("1"), Ok(1.0));
    assert_eq!(parse_heartbeat_seconds("2.5"), Ok(2.5));
    for bad in ["0.999", "0", "-1", "nan", "inf", "soon", "1e30"] {
        assert!(parse_heartbeat_seconds(bad).is_err(), "{bad}");
    }
    assert_eq!(parse_jitter_seconds("0"), Ok(0.0));
    assert_eq!(parse_jitter_seconds("30.5"), Ok(30.5));
    for bad in ["-0.1", "nan", "-inf", "inf", "1e30", "x"] {
        assert!(parse_jitter_seconds(bad).is_err(), "{bad}");
    }
}

#[test]
fn reload_batch_is_checked_against_the_workers_and_slots() {
    assert_eq!(Config::default().reload_batch, None);
    let c = Config::from_toml_str("workers = 4\nreload_batch = 1\n").expect("valid");
    assert_eq!(c.reload_batch, Some(1));
    // Larger than the workers: the last batch is what is left, so 2 × 4 slots are enough.
    Config::from_toml_str("workers = 4\nslots = 8\nreload_batch = 9\n").expect("valid");
    for (bad, key, says) in [
        ("workers = 4\nreload_batch = 0\n", "reload_batch", "1..="),
        (
            "workers = 4\nreload_batch = 100000\n",
            "reload_batch",
            "1..=",
        ),
        ("workers = 4\nreload_batch = -1\n", "reload_batch", ""),
        (
            "workers = 4\nslots = 5\nreload_batch = 2\n",
            "slots",
            "use --slots 6",
        ),
    ] {
        let msg = Config::from_toml_str(bad).expect_err(bad).to_string();
        assert!(msg.contains(key) && msg.contains(says), "{bad}: {msg}");
    }
}

#[test]
fn canary_limits_table_is_optional_partial_and_checked() {
    use crate::canary::CanaryLimits;
    assert_eq!(Config::default().canary, CanaryLimits::default());
    let c = Config::from_toml_str("[canary]\nmax_error_ratio = 0.0\n").expect("valid");
    assert_eq!(c.canary.max_error_ratio, 0.0);
    assert_eq!(
        c.canary.max_p99_ratio,
        CanaryLimits::default().max_p99_ratio
    );
    for (bad, says) in [
        ("[canary]\nmax_error_ratio = 1.5\n", "[0, 1]"),
        ("[canary]\nmax_p99_ratio = 0\n", "p99 ratio 0"),
        ("[canary]\nmax_p99_ratio = nan\n", "p99 ratio NaN"),
        ("[canary]\nbogus = 1\n", "bogus"),
    ] {
        let msg = Config::from_toml_str(bad).expect_err(bad).to_string();
        assert!(msg.contains(says), "{bad}: {msg}");
    }
}
