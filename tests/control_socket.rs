//! The control socket is private (0600) and survives garbage: bad lines get an error reply,
//! oversized ones close that client, and the master keeps serving other clients.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use support::TestDir;

#[test]
fn garbage_gets_errors_and_the_master_carries_on() {
    let dir = TestDir::new("ctl");
    let cluster = dir.start(support::free_port(), 1, &[]);
    cluster.wait_ready(1);
    let sock = dir.runtime_dir().join(format!("{}.sock", dir.name));
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // The lock file and the segment are private too, and owned by the running user.
    for path in [dir.lock_path(), dir.segment_path()] {
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o600,
            "{}",
            path.display()
        );
        assert_eq!(
            std::os::unix::fs::MetadataExt::uid(&meta),
            nix::unistd::geteuid().as_raw()
        );
    }

    let stream = UnixStream::connect(&sock).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut ask = |line: &[u8]| {
        (&stream).write_all(line).unwrap();
        let mut reply = String::new();
        reader.read_line(&mut reply).unwrap();
        serde_json::from_str::<serde_json::Value>(&reply).unwrap()
    };
    for bad in [
        &b"hello\n"[..],
        b"{\"cmd\":\"explode\"}\n",
        b"{\"cmd\":\"scale\",\"workers\":\"x\"}\n",
        b"\xff\xfe\n",
    ] {
        let r = ask(bad);
        assert_eq!(r["ok"], false, "{r}");
        assert!(
            r["error"].as_str().unwrap().starts_with("bad request"),
            "{r}"
        );
    }
    let r = ask(b"{\"cmd\":\"status\"}\n");
    assert_eq!(r["ok"], true);
    assert_eq!(r["status"]["instance"], dir.name.as_str());

    // An oversized line is refused and that client dropped.
    let big = UnixStream::connect(&sock).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = (&big).write_all(&vec![b'x'; 200 * 1024]);
    let mut reply = String::new();
    let _ = BufReader::new(&big).read_line(&mut reply);
    assert!(reply.contains("too long"), "{reply:?}");

    // `status` reads the scoreboard: a table, or the JSON document with --json.
    // A partial frame (the client stops mid-line and closes its side) gets an error, not a hang.
    let partial = UnixStream::connect(&sock).unwrap();
    partial
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    (&partial).write_all(b"{\"cmd\":\"sta").unwrap();
    partial.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = String::new();
    let _ = BufReader::new(&partial).read_line(&mut reply);
    assert!(reply.contains("unterminated"), "{reply:?}");

    let out = dir.ctl(&["status"]);
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(&format!("instance {}", dir.name)) && table.contains("SLOT"),
        "{table}"
    );
    let out = dir.ctl(&["status", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["schema_version"], 1);
    assert_eq!(doc["workers"].as_array().unwrap().len(), 1);
    // With only --control-socket it asks the master.
    let out = std::process::Command::new(support::MASTER_BIN)
        .arg("status")
        .arg("--control-socket")
        .arg(&sock)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"phase\": \"running\""),
        "{out:?}"
    );
    let out = std::process::Command::new(support::MASTER_BIN)
        .args(["reload", "--control-socket", "/nonexistent/flora.sock"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is the master running"));
}
