//! Each generation runs its own copy of the worker program.
//!
//! At the start of a generation the program file on disk (resolved through `PATH` when it has
//! no `/`) is copied into the runtime directory, and every worker of that generation —
//! including later respawns — runs the copy, with `argv[0]` still the original path. So a reload
//! picks up a replaced binary or script, and a broken file on disk cannot poison the respawns of
//! the generation that is serving. Copies of generations that are gone are removed.
//!
//! When the runtime directory is mounted `noexec` (a container's `/dev/shm` often is) or the copy
//! fails (a small tmpfs), the generation runs the file in place and a warning says that its
//! respawns are no longer protected from changes on disk; pick an exec-capable `--runtime-dir`
//! to get the protection back.

use std::path::{Path, PathBuf};

/// Finds `program` like a shell does: as a path when it contains `/`, else in `PATH`.
pub fn resolve(program: &str) -> std::io::Result<PathBuf> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{program} not found in PATH"),
            )
        })
}

/// The file a generation executes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// Path to execute.
    pub exe: PathBuf,
    /// Whether it is our copy (removed when the generation is gone) or the user's file.
    pub copied: bool,
}

fn is_noexec(dir: &Path) -> bool {
    nix::sys::statvfs::statvfs(dir)
        .is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_NOEXEC))
}

/// Resolves `program` and copies it for `generation` when the runtime directory allows it;
/// with `owner` (unprivileged workers) the copy belongs to that user, mode 0500.
///
/// # Errors
/// When the program cannot be found: a generation cannot start without it.
pub fn prepare(
    program: &str,
    dir: &Path,
    name: &str,
    generation: u64,
    owner: Option<(u32, u32)>,
) -> std::io::Result<Prepared> {
    let src = resolve(program)?;
    if !src.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} is not a file", src.display()),
        ));
    }
    let in_place = |why: String| {
        tracing::warn!(
            "generation {generation} runs {} in place ({why}): its respawns are not protected from changes on disk",
            src.display()
        );
        Prepared {
            exe: src.clone(),
            copied: false,
        }
    };
    if is_noexec(dir) {
        return Ok(in_place(format!("{} is mounted noexec", dir.display())));
    }
    let copied = snapshot(&src, dir, name, generation).and_then(|exe| {
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&exe, Some(uid), Some(gid))?;
            std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o500))?;
        }
        Ok(exe)
    });
    match copied {
        Ok(exe) => Ok(Prepared { exe, copied: true }),
        Err(e) => Ok(in_place(format!(
            "cannot copy it into {}: {e}",
            dir.display()
        ))),
    }
}

/// Copies `src` to `<dir>/<name>.gen<generation>.<file name>` (mode 0700).
fn snapshot(src: &Path, dir: &Path, name: &str, generation: u64) -> std::io::Result<PathBuf> {
    let file = src
        .file_name()
        .map_or_else(|| "program".into(), |f| f.to_string_lossy().into_owned());
    let dst = dir.join(format!("{name}.gen{generation}.{file}"));
    let tmp = dir.join(format!(".{name}.gen{generation}.{file}.tmp"));
    if let Err(e) = std::fs::copy(src, &tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    std::fs::rename(&tmp, &dst)?;
    Ok(dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_and_resolves() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("w.sh");
        std::fs::write(&src, "#!/bin/sh\necho one\n").unwrap();
        let p = prepare(src.to_str().unwrap(), dir.path(), "x", 3, None).unwrap();
        assert!(p.copied);
        std::fs::write(&src, "broken").unwrap();
        assert_eq!(
            std::fs::read_to_string(&p.exe).unwrap(),
            "#!/bin/sh\necho one\n"
        );
        assert!(p.exe.ends_with("x.gen3.w.sh"));
        assert!(prepare("/nonexistent/prog", dir.path(), "x", 4, None).is_err());
        // An unusable runtime dir falls back to running the file in place.
        let fallback = prepare(
            src.to_str().unwrap(),
            &dir.path().join("missing"),
            "x",
            5,
            None,
        )
        .unwrap();
        assert_eq!(
            fallback,
            Prepared {
                exe: src.clone(),
                copied: false
            }
        );
        assert!(resolve("sh").is_ok());
        assert!(resolve("surely-no-such-program-here").is_err());
    }
}
