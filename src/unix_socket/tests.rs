use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use super::*;

fn opts() -> UnixOptions {
    UnixOptions::default()
}

/// Entries of `dir` besides `keep`: leftovers of a bind (private directories).
fn leftovers(dir: &Path, keep: &[&str]) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect()
}

#[test]
fn addresses_parse_or_say_what_is_wrong() {
    assert_eq!(
        unix_path("unix:/run/app/http.sock").unwrap().unwrap(),
        Path::new("/run/app/http.sock")
    );
    assert!(unix_path("127.0.0.1:80").is_none());
    assert!(unix_path("[::1]:80").is_none());
    let long = format!("unix:/{}", "a".repeat(MAX_PATH_LEN));
    let ok_len = format!("unix:/{}", "a".repeat(MAX_PATH_LEN - 1));
    assert!(unix_path(&ok_len).unwrap().is_ok());
    for (addr, needle) in [
        ("unix:app.sock", "absolute"),
        ("unix:./app.sock", "absolute"),
        ("unix:", "absolute"),
        ("unix:/run/../etc/x.sock", ".."),
        ("unix:/run/app/", "file name"),
        ("unix:/", "file name"),
        ("unix:/run/a\0b", "NUL"),
        (long.as_str(), "at most 107"),
    ] {
        let msg = unix_path(addr).unwrap().unwrap_err().to_string();
        assert!(msg.contains(needle), "{addr:?}: {msg}");
    }
}

#[test]
fn modes_and_owners_are_validated() {
    for (text, want) in [("0660", 0o660), ("660", 0o660), ("0o600", 0o600), ("0", 0)] {
        assert_eq!(parse_mode(text).unwrap(), want, "{text}");
    }
    for bad in [
        "",
        "0o",
        "999",
        "01777",
        "4755",
        "rw-rw----",
        "+660",
        "-1",
        "0x1ff",
    ] {
        let msg = parse_mode(bad).unwrap_err().to_string();
        assert!(msg.contains("octal"), "{bad:?}: {msg}");
    }
    assert_eq!(split_owner("www-data").unwrap(), (Some("www-data"), None));
    assert_eq!(split_owner("app:www").unwrap(), (Some("app"), Some("www")));
    assert_eq!(split_owner(":33").unwrap(), (None, Some("33")));
    for bad in ["", ":", "a:", "a b", "-x", "a:b:c", "../x"] {
        assert!(split_owner(bad).is_err(), "{bad:?}");
    }
    let o = UnixOptions::resolve(Some("0600"), Some("root:0")).unwrap();
    assert_eq!((o.mode, o.uid, o.gid), (0o600, Some(0), Some(0)));
    let msg = UnixOptions::resolve(None, Some("no-such-user-flora"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("no such user"), "{msg}");
    let msg = UnixOptions::resolve(None, Some(":no-such-group-flora"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("no such group"), "{msg}");
    assert_eq!(UnixOptions::resolve(None, None).unwrap(), opts());
}

#[test]
fn binds_with_mode_and_removes_only_its_own_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.sock");
    let custom = UnixOptions {
        mode: 0o640,
        ..opts()
    };
    let (listener, file) = bind(&path, &custom).unwrap();
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    assert_eq!(file.id(), (meta.dev(), meta.ino()));
    assert!(listener.set_nonblocking(true).is_ok());
    let _client = UnixStream::connect(&path).unwrap();
    assert!(
        listener.accept().is_ok(),
        "the listener is the file's socket"
    );
    assert!(leftovers(dir.path(), &["app.sock"]).is_empty());
    drop(file);
    assert!(!path.exists(), "removed when the master stops");

    // A file that took the name meanwhile is not ours: left alone.
    let (_l, file) = bind(&path, &opts()).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, "operator's").unwrap();
    drop(file);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "operator's");
}

#[test]
fn a_live_socket_is_in_use_and_a_stale_one_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.sock");
    let live = UnixListener::bind(&path).unwrap();
    let err = bind(&path, &opts()).unwrap_err();
    assert!(matches!(err, UnixSocketError::InUse { .. }), "{err}");
    assert!(err.to_string().contains("in use"));
    let old_ino = std::fs::symlink_metadata(&path).unwrap().ino();
    drop(live); // stale: the file stays, nobody accepts
    assert!(UnixStream::connect(&path).is_err());
    let (listener, _file) = bind(&path, &opts()).unwrap();
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert_ne!(meta.ino(), old_ino, "a new socket");
    let _client = UnixStream::connect(&path).unwrap();
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_ok());
    assert!(leftovers(dir.path(), &["app.sock"]).is_empty());
}

#[test]
fn anything_else_at_the_name_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = dir.path().join("precious");
    std::fs::write(&elsewhere, "data").unwrap();
    type Make<'a> = &'a dyn Fn(&Path);
    let cases: [(&str, Make, &str); 4] = [
        (
            "file",
            &|p| std::fs::write(p, "x").unwrap(),
            "a regular file",
        ),
        (
            "fifo",
            &|p| nix::unistd::mkfifo(p, Mode::S_IRWXU).unwrap(),
            "a FIFO",
        ),
        ("dir", &|p| std::fs::create_dir(p).unwrap(), "a directory"),
        (
            "link",
            &|p| std::os::unix::fs::symlink(&elsewhere, p).unwrap(),
            "a symlink",
        ),
    ];
    use nix::sys::stat::Mode;
    for (name, make, kind) in cases {
        let path = dir.path().join(name);
        make(&path);
        let before = std::fs::symlink_metadata(&path).unwrap().ino();
        let err = bind(&path, &opts()).unwrap_err();
        assert!(
            matches!(err, UnixSocketError::NotASocket { .. }),
            "{name}: {err}"
        );
        assert!(err.to_string().contains(kind), "{name}: {err}");
        assert_eq!(
            std::fs::symlink_metadata(&path).unwrap().ino(),
            before,
            "{name} kept"
        );
    }
    // A symlink to a stale socket elsewhere is refused too: never followed.
    let target = dir.path().join("target.sock");
    drop(UnixListener::bind(&target).unwrap());
    let link = dir.path().join("via-link.sock");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    assert!(bind(&link, &opts()).is_err());
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "data");
    let mut left = leftovers(dir.path(), &[]);
    left.sort();
    assert_eq!(
        left,
        [
            "dir",
            "fifo",
            "file",
            "link",
            "precious",
            "target.sock",
            "via-link.sock"
        ]
    );
}

#[test]
fn parents_must_exist_and_be_safe() {
    let dir = tempfile::tempdir().unwrap();
    let err = bind(&dir.path().join("missing/app.sock"), &opts()).unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = bind(&open.join("app.sock"), &opts()).unwrap_err();
    assert!(err.to_string().contains("writable by every user"), "{err}");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
    assert!(
        bind(&open.join("app.sock"), &opts()).is_ok(),
        "sticky, as /tmp"
    );
}

#[test]
fn owner_is_applied_before_the_socket_appears() {
    if !nix::unistd::geteuid().is_root() {
        return; // chown to another user needs root
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.sock");
    let o = UnixOptions {
        mode: 0o600,
        uid: Some(65534),
        gid: Some(65534),
        backlog: 7,
    };
    let (_l, _f) = bind(&path, &o).unwrap();
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
}

#[test]
fn unix_settings_are_checked_with_their_line() {
    let c = crate::Config::from_toml_str(
            "listen = [\"unix:/run/app/http.sock\"]\nunix_mode = \"0640\"\nunix_owner = \"root:root\"\n",
        )
        .unwrap();
    let o = UnixOptions::from_config(&c).unwrap();
    assert_eq!((o.mode, o.uid, o.gid), (0o640, Some(0), Some(0)));
    assert_eq!(
        UnixOptions::from_config(&crate::Config::default())
            .unwrap()
            .mode,
        0o660
    );
    for (text, needles) in [
        (
            "listen = [\"unix:rel.sock\"]\n",
            vec!["listen", "line 1", "absolute"],
        ),
        (
            "\nunix_mode = \"0999\"\n",
            vec!["unix_mode", "line 2", "octal"],
        ),
        ("unix_mode = \"4755\"\n", vec!["unix_mode", "0777"]),
        ("unix_owner = \"a b\"\n", vec!["unix_owner", "line 1"]),
    ] {
        let msg = crate::Config::from_toml_str(text).unwrap_err().to_string();
        for n in needles {
            assert!(msg.contains(n), "{msg:?} lacks {n:?}");
        }
    }
    let c = crate::Config::from_toml_str("unix_owner = \"no-such-user-flora\"\n").unwrap();
    let msg = UnixOptions::from_config(&c).unwrap_err().to_string();
    assert!(
        msg.contains("unix_owner") && msg.contains("no such user"),
        "{msg}"
    );
}
