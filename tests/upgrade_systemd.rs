//! systemd across a master upgrade (issue 17): a `NOTIFY_SOCKET` receiver that knows each
//! sender's pid (SO_PASSCRED) sees `RELOADING=1` (with `MONOTONIC_USEC`) from the old master,
//! then `MAINPID=<new pid>` with `READY=1` from the new one, and never `STOPPING=1` from the
//! old master; after a rolled-back upgrade `READY=1` again with `MAINPID=<the same pid>`.

mod support;

use std::io::IoSliceMut;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use nix::sys::socket::{
    recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, UnixCredentials,
};
use support::upgrade::{
    copy_master, marked_pids, script, stop_master, text, upgrade, Current, Upgraded, MARK_VAR,
};
use support::TestDir;

/// One notification and the pid that sent it.
#[derive(Debug, Clone)]
struct Note {
    pid: i32,
    msg: String,
}

/// The receiving end of `NOTIFY_SOCKET`, with every notification seen so far.
struct Receiver {
    sock: UnixDatagram,
    seen: Vec<Note>,
}

impl Receiver {
    fn bind(path: &std::path::Path) -> Self {
        let sock = UnixDatagram::bind(path).unwrap();
        setsockopt(&sock, sockopt::PassCred, &true).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Self {
            sock,
            seen: Vec::new(),
        }
    }

    /// One notification, if one comes within the read timeout.
    fn recv(&mut self) -> Option<Note> {
        let mut buf = vec![0u8; 4096];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!(UnixCredentials);
        let msg = recvmsg::<()>(
            self.sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        )
        .ok()?;
        let pid = msg
            .cmsgs()
            .ok()?
            .find_map(|c| match c {
                ControlMessageOwned::ScmCredentials(cred) => Some(cred.pid()),
                _ => None,
            })
            .unwrap_or(0);
        let n = msg.bytes;
        let note = Note {
            pid,
            msg: String::from_utf8_lossy(&buf[..n]).into_owned(),
        };
        self.seen.push(note.clone());
        Some(note)
    }

    /// Receives until a notification satisfies `want`, at most 30 s; returns its index.
    fn expect(&mut self, what: &str, want: impl Fn(&Note) -> bool) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(n) = self.recv() {
                if want(&n) {
                    return self.seen.len() - 1;
                }
            }
        }
        panic!("no {what} notification within 30 s; got {:#?}", self.seen);
    }

    /// Receives whatever comes for `window`.
    fn drain(&mut self, window: Duration) {
        let end = Instant::now() + window;
        while Instant::now() < end {
            self.recv();
        }
    }
}

fn pid_i32(pid: u32) -> i32 {
    i32::try_from(pid).unwrap()
}

#[test]
fn upgrade_tells_systemd_the_new_main_pid_and_a_rollback_the_old_one() {
    let dir = TestDir::new("up-notify");
    let path = dir.scratch("notify.sock");
    let mut rx = Receiver::bind(&path);
    let mut cluster = dir
        .master(support::free_port())
        .args(&["--workers", "2"])
        .env(MARK_VAR, &dir.name)
        .env("NOTIFY_SOCKET", &path.display().to_string())
        .start();
    cluster.wait_ready(2);
    let old = pid_i32(cluster.pid);
    let current = Current::new(&dir.name, cluster.pid);
    rx.expect("READY", |n| n.msg.contains("READY=1") && n.pid == old);

    // A good upgrade.
    let out = upgrade(&dir, Some(&copy_master(&dir, "flora-cluster-copy")));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let up = Upgraded::parse(&String::from_utf8_lossy(&out.stdout));
    let new = pid_i32(up.to);
    current.set(up.to);
    let mark = rx.seen.len();
    let main = rx.expect("MAINPID of the new master", |n| {
        n.msg.contains(&format!("MAINPID={new}")) && n.msg.contains("READY=1")
    });
    assert_eq!(rx.seen[main].pid, new, "sent by the new master");
    let reloading = rx.seen[mark..main]
        .iter()
        .position(|n| n.msg.contains("RELOADING=1"))
        .unwrap_or_else(|| panic!("no RELOADING before MAINPID: {:#?}", rx.seen));
    let reloading = &rx.seen[mark + reloading];
    assert_eq!(reloading.pid, old, "RELOADING from the old master");
    assert!(reloading.msg.contains("MONOTONIC_USEC="), "{reloading:?}");
    // The old master is gone (the CLI waited for it): it never said STOPPING.
    assert!(cluster.wait_exit(support::EXIT_TIMEOUT).success());
    rx.drain(Duration::from_secs(1));
    let stopping: Vec<_> = rx
        .seen
        .iter()
        .filter(|n| n.msg.contains("STOPPING=1"))
        .collect();
    assert!(stopping.is_empty(), "{stopping:?}");

    // A rolled-back upgrade: READY again, with the same MAINPID.
    let mark = rx.seen.len();
    let out = upgrade(&dir, Some(&script(&dir, "exits", "exit 3")));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let ready = rx.expect("READY after the rollback", |n| {
        n.msg.contains("READY=1") && n.msg.contains(&format!("MAINPID={new}"))
    });
    assert_eq!(rx.seen[ready].pid, new);
    assert!(
        rx.seen[mark..ready]
            .iter()
            .any(|n| n.msg.contains("RELOADING=1")),
        "{:#?}",
        rx.seen
    );

    // The last master stops: now STOPPING comes, from it.
    stop_master(up.to, &dir.name);
    let stop = rx.expect("STOPPING", |n| n.msg.contains("STOPPING=1"));
    assert_eq!(rx.seen[stop].pid, new);
    assert!(marked_pids(&dir.name).is_empty());
}
