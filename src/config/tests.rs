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
