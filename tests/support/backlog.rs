//! Filling a listener's accept queue: stopping the workers that would accept (continued again
//! on drop) and connecting without waiting for an `accept`.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::signal::Signal;
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};

use super::send_signal;

/// Workers stopped with `SIGSTOP`; continued however the test ends (so the master can stop
/// them).
pub struct Stopped(Vec<u32>);

impl Stopped {
    /// Stops every pid.
    pub fn all(pids: Vec<u32>) -> Self {
        for &pid in &pids {
            send_signal(pid, Signal::SIGSTOP);
        }
        Self(pids)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        for &pid in &self.0 {
            send_signal(pid, Signal::SIGCONT);
        }
    }
}

/// `n` non-blocking TCP connects to 127.0.0.1:`port`; each leaves a SYN behind (queued, or
/// dropped by a full queue and retried by the kernel until the socket is closed).
pub fn tcp_connects(port: u16, n: usize) -> Vec<OwnedFd> {
    let addr = SockaddrIn::new(127, 0, 0, 1, port);
    (0..n)
        .map(|_| {
            let fd = socket(
                AddressFamily::Inet,
                SockType::Stream,
                SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
                None,
            )
            .expect("socket");
            match connect(fd.as_raw_fd(), &addr) {
                Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => {}
                Err(e) => panic!("connect 127.0.0.1:{port}: {e}"),
            }
            fd
        })
        .collect()
}
