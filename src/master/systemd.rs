//! systemd integration without a library: `sd_notify` (READY, RELOADING, STOPPING, STATUS) over
//! `$NOTIFY_SOCKET`, and socket activation (`LISTEN_PID`/`LISTEN_FDS`/`LISTEN_FDNAMES`).
//!
//! Both are no-ops outside systemd. The variables are removed from the workers' environment
//! (the master is the service's main process; workers must not talk to systemd themselves).

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;

/// Environment variables of the systemd protocols (never passed on to workers).
pub const ENV_VARS: [&str; 5] = [
    "NOTIFY_SOCKET",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "WATCHDOG_USEC",
];

/// First descriptor systemd passes.
const SD_LISTEN_FDS_START: i32 = 3;

/// Sends `state` (newline-separated `KEY=VALUE` lines) to systemd; false when not under systemd
/// or when sending failed.
pub fn notify(state: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return false;
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)
            .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
    } else {
        sock.send_to(state.as_bytes(), &path)
    };
    sent.is_ok()
}

/// `RELOADING=1` with the monotonic timestamp systemd's `Type=notify-reload` wants.
pub fn reloading_message() -> String {
    format!(
        "RELOADING=1\nMONOTONIC_USEC={}",
        crate::scoreboard::mono_ns() / 1000
    )
}

/// Listening sockets systemd passed to this process (socket activation), with their names.
pub fn listen_fds() -> Vec<(OwnedFd, String)> {
    let mine = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    if !mine {
        return Vec::new();
    }
    let n: i32 = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
        .clamp(0, 64);
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .unwrap_or_default()
        .split(':')
        .map(str::to_string)
        .collect();
    (0..n)
        .filter_map(|i| {
            let fd =
                crate::scoreboard::raw::fd::adopt_inherited_fd(SD_LISTEN_FDS_START + i).ok()?;
            // Ours now: close-on-exec, so only the workers we choose get it (over the channel).
            let _ = nix::fcntl::fcntl(
                &fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            );
            Some((fd, names.get(i as usize).cloned().unwrap_or_default()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_reaches_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        // Only this test sets NOTIFY_SOCKET in the unit-test process.
        std::env::set_var("NOTIFY_SOCKET", &path);
        assert!(notify("READY=1\nSTATUS=ok"));
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=ok");
        assert!(!notify("READY=1"));
        assert!(reloading_message().starts_with("RELOADING=1\nMONOTONIC_USEC="));
        assert!(listen_fds().is_empty());
    }
}
