//! Taking ownership of descriptors: fds inherited at `exec` (their numbers come in
//! environment variables) or received over `SCM_RIGHTS`, clearing close-on-exec in a forked
//! child only, and registering an owned fd with tokio's reactor, and `flock` without an unlock on drop. These are the `unsafe` parts
//! of fd handling; `ipc`, the worker and the master reach them here, not through the layout.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Takes ownership of a file descriptor this process inherited from its master (its number
/// came in an environment variable).
///
/// # Errors
/// `EBADF` when `fd` is not open in this process, or is one of stdin/stdout/stderr.
pub fn adopt_inherited_fd(fd: RawFd) -> std::io::Result<OwnedFd> {
    if fd <= 2 {
        return Err(std::io::Error::from_raw_os_error(nix::libc::EBADF));
    }
    // SAFETY: the borrow lives only for the fcntl(F_GETFD) below, which reads the
    // descriptor's flags and fails with EBADF when the descriptor is not open. The descriptor
    // table is this process's own: no other process can close or replace the fd meanwhile.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_GETFD).map_err(std::io::Error::from)?;
    // SAFETY: the fd is open (checked above) and, by the master/worker protocol, was
    // passed to this process to own: nothing else in the process refers to it. Callers
    // adopt each inherited fd once (the worker takes them at start-up). The master keeps its
    // own copy of the open file, which does not make this process's descriptor shared.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Runs `check` on a descriptor this process inherited (its number came in an environment
/// variable) without taking ownership of it: a descriptor that is not what the caller
/// expects stays open and untouched, since it may belong to something else in this process
/// (a stale variable inherited by a program a worker started).
///
/// # Errors
/// `EBADF` as [`adopt_inherited_fd`], else what `check` returns.
pub fn check_inherited_fd<T>(
    fd: RawFd,
    check: impl FnOnce(std::os::fd::BorrowedFd<'_>) -> std::io::Result<T>,
) -> std::io::Result<T> {
    if fd <= 2 {
        return Err(std::io::Error::from_raw_os_error(nix::libc::EBADF));
    }
    // SAFETY: the borrow lives only for the fcntl(F_GETFD) below, which fails with EBADF when
    // the descriptor is not open, and for `check`, which gets it only for that call and
    // cannot keep it (the lifetime ends with this function). Nothing here closes it.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_GETFD).map_err(std::io::Error::from)?;
    check(borrowed)
}

/// Takes ownership of descriptors received in an `SCM_RIGHTS` control message.
pub fn adopt_received_fds(fds: &[RawFd]) -> Vec<OwnedFd> {
    fds.iter()
        .map(|&fd| {
            // SAFETY: the kernel installed these descriptors into this process for this
            // message only; nothing else in this process refers to them, so we are their
            // sole owner (the sender's copies are its own descriptors, not these numbers).
            unsafe { OwnedFd::from_raw_fd(fd) }
        })
        .collect()
}

/// Makes `fds` survive the `exec` of the child that `cmd` starts: their close-on-exec flag is
/// cleared in the child after `fork`, never in the parent, where a `fork` by any other thread
/// would inherit them.
pub fn inherit_in_child(cmd: &mut tokio::process::Command, fds: Vec<RawFd>) {
    // SAFETY: the closure runs in the forked child between fork and exec. It only calls
    // fcntl(2), which is async-signal-safe, and neither allocates nor takes a lock (the Vec was
    // built before the fork and is only iterated). The descriptors are open in the parent for
    // the whole spawn (the caller borrows them across `spawn`), so the child's copies are
    // open too; clearing FD_CLOEXEC on them touches only the child's descriptor table.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &fds {
                if nix::libc::fcntl(fd, nix::libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Descriptor owners whose `as_raw_fd` returns the same open descriptor for their whole life.
pub trait OwnsFd: std::os::fd::AsRawFd + private::Sealed {}
impl OwnsFd for OwnedFd {}
impl OwnsFd for std::net::TcpListener {}
impl OwnsFd for std::os::unix::net::UnixListener {}
mod private {
    pub trait Sealed {}
    impl Sealed for std::os::fd::OwnedFd {}
    impl Sealed for std::net::TcpListener {}
    impl Sealed for std::os::unix::net::UnixListener {}
}

/// Registers an owned descriptor with the tokio reactor.
///
/// # Errors
/// The registration error (no reactor, or epoll refused the descriptor).
pub fn register_async<T: OwnsFd>(inner: T) -> std::io::Result<tokio::io::unix::AsyncFd<T>> {
    // SAFETY: `T` owns its descriptor (OwnedFd, TcpListener, UnixListener: sealed above), so it stays open
    // and refers to the same file description until the AsyncFd — which owns `T` — drops it,
    // and `as_raw_fd` keeps returning that same number. Descriptor numbers are per process:
    // another process holding the same file cannot close this one.
    unsafe { tokio::io::unix::AsyncFd::register(inner) }.map_err(std::io::Error::from)
}

/// `flock(fd, LOCK_EX | LOCK_NB)`: `Ok(true)` when the lock is held (also when this open file
/// description held it already), `Ok(false)` when another description holds it.
///
/// Unlike nix's `Flock`, nothing here unlocks on drop: a lock shared with another process
/// through a passed descriptor (one open file description) must outlive this copy.
pub fn try_lock_exclusive(fd: BorrowedFd<'_>) -> std::io::Result<bool> {
    // SAFETY: flock only reads its integer arguments; `fd` is borrowed, so it is open for the
    // whole call. Nothing is shared with another process but the kernel's lock state, which
    // the kernel keeps consistent itself.
    let r = unsafe { nix::libc::flock(fd.as_raw_fd(), nix::libc::LOCK_EX | nix::libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    match std::io::Error::last_os_error() {
        e if e.raw_os_error() == Some(nix::libc::EWOULDBLOCK) => Ok(false),
        e => Err(e),
    }
}

/// `flock(fd, LOCK_UN)`: releases the lock of `fd`'s open file description for every
/// descriptor that shares it.
pub fn unlock(fd: BorrowedFd<'_>) -> std::io::Result<()> {
    // SAFETY: as in `try_lock_exclusive`: integer arguments, a borrowed (open) descriptor.
    let r = unsafe { nix::libc::flock(fd.as_raw_fd(), nix::libc::LOCK_UN) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
