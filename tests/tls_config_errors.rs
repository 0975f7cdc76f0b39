//! The master checks the certificate files at start: a typo or a wrong key fails fast with a
//! message naming the file, before any worker runs.
#![cfg(feature = "tls")]

mod support;

use std::time::Duration;

use support::tls::write_cert;
use support::TestDir;

/// Longest a refused start may take.
const EXIT_WITHIN: Duration = Duration::from_secs(20);

fn refused(dir: &TestDir, args: &[&std::ffi::OsStr]) -> String {
    let (status, stderr) = dir
        .master(support::free_port())
        .args(args)
        .demo(&[])
        .run_to_exit(EXIT_WITHIN);
    assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
    assert!(
        !stderr.contains("worker"),
        "{args:?} started workers: {stderr}"
    );
    stderr
}

#[test]
fn missing_mismatched_or_half_given_files_fail_the_start() {
    let dir = TestDir::new("tls-config");
    let good = write_cert("flora-a", &dir.scratch("a.pem"), &dir.scratch("a.key"));
    let other = write_cert("flora-b", &dir.scratch("b.pem"), &dir.scratch("b.key"));
    let missing = dir.scratch("typo.pem");
    let flag = |s: &'static str| std::ffi::OsStr::new(s);

    let e = refused(
        &dir,
        &[
            flag("--tls-cert"),
            missing.as_os_str(),
            flag("--tls-key"),
            good.key.as_os_str(),
        ],
    );
    assert!(e.contains("typo.pem") && e.contains("No such file"), "{e}");

    let e = refused(
        &dir,
        &[
            flag("--tls-cert"),
            good.cert.as_os_str(),
            flag("--tls-key"),
            other.key.as_os_str(),
        ],
    );
    assert!(e.contains("does not match") && e.contains("b.key"), "{e}");

    let e = refused(
        &dir,
        &[
            flag("--tls-cert"),
            good.key.as_os_str(),
            flag("--tls-key"),
            good.key.as_os_str(),
        ],
    );
    assert!(e.contains("no certificate"), "{e}");

    let e = refused(&dir, &[flag("--tls-cert"), good.cert.as_os_str()]);
    assert!(e.contains("--tls-key"), "{e}");

    let config = dir.scratch("flora.toml");
    std::fs::write(
        &config,
        format!("workers = 1\ntls_cert = {:?}\n", good.cert),
    )
    .unwrap();
    let e = refused(&dir, &[flag("--config"), config.as_os_str()]);
    assert!(
        e.contains("tls_cert") && e.contains("line 2") && e.contains("tls_key"),
        "{e}"
    );
}
