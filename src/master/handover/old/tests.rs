use std::os::unix::fs::PermissionsExt;

use super::check_binary;

fn file(dir: &std::path::Path, name: &str, mode: u32) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

#[test]
fn only_a_safe_binary_may_become_the_master() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(check_binary(&file(dir.path(), "ok", 0o755)), Ok(()));
    let cases = [
        (file(dir.path(), "noexec", 0o644), "not executable"),
        (file(dir.path(), "gw", 0o775), "writable by group or others"),
        (file(dir.path(), "ow", 0o757), "writable by group or others"),
        (dir.path().to_owned(), "not a regular file"),
        (dir.path().join("missing"), "cannot use"),
        ("relative/flora-cluster".into(), "not an absolute path"),
    ];
    for (path, why) in cases {
        let err = check_binary(&path).unwrap_err();
        assert!(err.contains(why), "{}: {err}", path.display());
    }
}
