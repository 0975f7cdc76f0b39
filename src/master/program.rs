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
//!
//! Copies are made through the held runtime directory's descriptor ([`RuntimeDir`]) and run
//! through a path inside it; before a copy is made or run, that path must still name the held
//! directory ([`RuntimeDir::verify`]), otherwise nothing is run from it.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::Mode;

use super::instance::RuntimeDir;

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

/// Opens the program without blocking (a FIFO would hang the master) and checks that it is a
/// regular file.
fn open_program(src: &Path) -> std::io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(src)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} is not a file", src.display()),
        ));
    }
    Ok(file)
}

/// Resolves `program` and copies it into the held runtime directory for `generation` when
/// that directory allows it; with `owner` (unprivileged workers) the copy gets that group and
/// mode 0550, so the workers can run it but not change it. Blocking: call it from a blocking
/// thread if the caller must not wait.
///
/// # Errors
/// When the program cannot be found (a generation cannot start without it), or when the
/// runtime directory's path no longer names the held directory (nothing may run from it).
pub fn prepare(
    program: &str,
    dir: &RuntimeDir,
    name: &str,
    generation: u64,
    owner: Option<(u32, u32)>,
) -> std::io::Result<Prepared> {
    let src = resolve(program)?;
    let mut file = open_program(&src)?;
    dir.verify()?;
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
    if dir.is_noexec() {
        return Ok(in_place(format!(
            "{} is mounted noexec",
            dir.path().display()
        )));
    }
    let file_name = src
        .file_name()
        .map_or_else(|| "program".into(), |f| f.to_string_lossy().into_owned());
    let dst = format!("{name}.gen{generation}.{file_name}");
    match snapshot(&mut file, dir, &dst, owner) {
        Ok(()) => Ok(Prepared {
            exe: dir.entry_path(&dst),
            copied: true,
        }),
        Err(e) => Ok(in_place(format!(
            "cannot copy it into {}: {e}",
            dir.path().display()
        ))),
    }
}

/// Copies `src` to entry `dst` of `dir`: written under a temporary name created with
/// `O_EXCL|O_NOFOLLOW`, content copied descriptor to descriptor, mode and owner set on the
/// descriptor, then renamed into place.
fn snapshot(
    src: &mut File,
    dir: &RuntimeDir,
    dst: &str,
    owner: Option<(u32, u32)>,
) -> std::io::Result<()> {
    let tmp = format!(".{dst}.tmp");
    dir.unlink(&tmp)?;
    let mut out = dir.create_new(&tmp, 0o700)?;
    let written = std::io::copy(src, &mut out).and_then(|_| {
        if let Some((_, gid)) = owner {
            nix::unistd::fchown(&out, None, Some(nix::unistd::Gid::from_raw(gid)))?;
            nix::sys::stat::fchmod(&out, Mode::from_bits_truncate(0o550))?;
        }
        Ok(())
    });
    drop(out);
    if let Err(e) = written.and_then(|()| dir.rename(&tmp, dst)) {
        let _ = dir.unlink(&tmp);
        return Err(e);
    }
    Ok(())
}

/// Removes a copy made by [`prepare`] (through the held directory).
pub fn remove(dir: &RuntimeDir, prepared_exe: &Path) {
    if prepared_exe.parent() == Some(dir.path()) {
        if let Some(file) = prepared_exe.file_name() {
            let _ = dir.unlink(file);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(t: &tempfile::TempDir) -> RuntimeDir {
        RuntimeDir::open(&t.path().join("rt")).unwrap()
    }

    #[test]
    fn copies_and_resolves() {
        let t = tempfile::tempdir().unwrap();
        let dir = held(&t);
        let src = t.path().join("w.sh");
        std::fs::write(&src, "#!/bin/sh\necho one\n").unwrap();
        let p = prepare(src.to_str().unwrap(), &dir, "x", 3, None).unwrap();
        assert!(p.copied);
        std::fs::write(&src, "broken").unwrap();
        assert_eq!(
            std::fs::read_to_string(&p.exe).unwrap(),
            "#!/bin/sh\necho one\n"
        );
        assert_eq!(p.exe, dir.entry_path("x.gen3.w.sh"));
        assert!(prepare("/nonexistent/prog", &dir, "x", 4, None).is_err());
        assert!(resolve("sh").is_ok());
        assert!(resolve("surely-no-such-program-here").is_err());
        remove(&dir, &p.exe);
        assert!(!p.exe.exists());
    }

    #[test]
    fn a_failed_copy_runs_the_file_in_place() {
        let t = tempfile::tempdir().unwrap();
        let dir = held(&t);
        let src = t.path().join("w.sh");
        std::fs::write(&src, "#!/bin/sh\n").unwrap();
        // Something that cannot be replaced sits at the temporary name.
        std::fs::create_dir(dir.entry_path(".x.gen5.w.sh.tmp")).unwrap();
        let p = prepare(src.to_str().unwrap(), &dir, "x", 5, None).unwrap();
        assert_eq!(
            p,
            Prepared {
                exe: src.clone(),
                copied: false
            }
        );
    }

    #[test]
    fn a_planted_temporary_symlink_is_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let dir = held(&t);
        let src = t.path().join("w.sh");
        std::fs::write(&src, "#!/bin/sh\n").unwrap();
        let victim = t.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.entry_path(".x.gen6.w.sh.tmp")).unwrap();
        let p = prepare(src.to_str().unwrap(), &dir, "x", 6, None).unwrap();
        assert!(p.copied);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    }

    #[test]
    fn a_moved_runtime_dir_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let dir = held(&t);
        let src = t.path().join("w.sh");
        std::fs::write(&src, "#!/bin/sh\n").unwrap();
        std::fs::rename(dir.path(), t.path().join("moved")).unwrap();
        let other = t.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::os::unix::fs::symlink(&other, dir.path()).unwrap();
        let e = prepare(src.to_str().unwrap(), &dir, "x", 7, None).unwrap_err();
        assert!(e.to_string().contains("no longer names"), "{e}");
        assert_eq!(std::fs::read_dir(&other).unwrap().count(), 0);
    }

    #[test]
    fn a_fifo_program_is_refused_without_blocking() {
        let t = tempfile::tempdir().unwrap();
        let dir = held(&t);
        let fifo = t.path().join("fifo");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o700)).unwrap();
        assert!(prepare(fifo.to_str().unwrap(), &dir, "x", 8, None).is_err());
    }

    #[test]
    fn unprivileged_workers_get_a_copy_they_cannot_change() {
        if !nix::unistd::geteuid().is_root() {
            return; // needs chown
        }
        use std::os::unix::fs::MetadataExt;
        let t = tempfile::tempdir().unwrap();
        let dir = held(&t);
        let src = t.path().join("w.sh");
        std::fs::write(&src, "#!/bin/sh\n").unwrap();
        let p = prepare(src.to_str().unwrap(), &dir, "x", 9, Some((65534, 65534))).unwrap();
        let meta = std::fs::metadata(&p.exe).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (0, 65534, 0o550)
        );
    }
}
