//! The wire format on hand-made buffers, and the reader against real kernel state.

use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, SockaddrIn6};
use nix::sys::socket::{SockaddrLike, UnixAddr};

use super::wire::{self, Message};
use super::{read, Probe, QueueInfo, Reader};

const BACKLOG: i32 = 8;

fn header(len: usize, kind: u16, flags: u16, seq: u32) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&(len as u32).to_ne_bytes());
    h.extend_from_slice(&kind.to_ne_bytes());
    h.extend_from_slice(&flags.to_ne_bytes());
    h.extend_from_slice(&seq.to_ne_bytes());
    h.extend_from_slice(&0u32.to_ne_bytes());
    h
}

fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut a = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
    a.extend_from_slice(&kind.to_ne_bytes());
    a.extend_from_slice(value);
    a.resize((a.len() + 3) & !3, 0);
    a
}

fn words(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_ne_bytes()).collect()
}

/// An `inet_diag_msg` in `state` with rqueue, wqueue and inode, then `attrs`.
fn inet_msg(state: u8, rqueue: u32, wqueue: u32, inode: u32, attrs: &[u8]) -> Vec<u8> {
    let mut m = vec![2, state, 0, 0];
    m.resize(56, 0);
    m.extend_from_slice(&words(&[rqueue, wqueue, 0, inode]));
    m.extend_from_slice(attrs);
    m
}

#[test]
fn inet_message_parsed_with_drops_from_meminfo() {
    let meminfo = words(&[0, 0, 0, 0, 0, 0, 0, 0, 42]);
    let m = inet_msg(10, 5, 8, 77, &attr(7, &meminfo));
    let q = QueueInfo {
        length: 5,
        limit: 8,
        drops: Some(42),
    };
    assert_eq!(wire::parse_inet(&m), Some((77, q)));
}

#[test]
fn truncated_or_unknown_attributes_are_skipped() {
    let mut attrs = attr(99, &[1, 2, 3]);
    attrs.extend(attr(7, &words(&[0, 0, 0])));
    let m = inet_msg(10, 1, 8, 7, &attrs);
    assert_eq!(
        wire::parse_inet(&m),
        Some((
            7,
            QueueInfo {
                length: 1,
                limit: 8,
                drops: None
            }
        ))
    );
    let mut cut = inet_msg(10, 1, 8, 7, &attr(7, &words(&[0; 9])));
    cut.truncate(cut.len() - 10);
    assert_eq!(wire::parse_inet(&cut).map(|(_, q)| q.drops), Some(None));
}

#[test]
fn short_or_non_listening_messages_give_nothing() {
    assert_eq!(wire::parse_inet(&inet_msg(1, 1, 8, 7, &[])), None);
    assert_eq!(wire::parse_inet(&[0; 40]), None);
    assert_eq!(wire::parse_unix(&[1, 1, 10, 0, 7, 0]), None);
    let mut connected = vec![1, 1, 1, 0];
    connected.extend(words(&[7, 0, 0]));
    connected.extend(attr(4, &words(&[3, 4])));
    assert_eq!(wire::parse_unix(&connected), None);
}

#[test]
fn unix_message_without_a_whole_rqlen_gives_nothing() {
    let mut m = vec![1, 1, 10, 0];
    m.extend(words(&[9, 0, 0]));
    m.extend(attr(4, &words(&[3])));
    assert_eq!(wire::parse_unix(&m), None);
}

#[test]
fn unix_message_parsed() {
    let mut m = vec![1, 1, 10, 0];
    m.extend(words(&[9, 0, 0]));
    m.extend(attr(4, &words(&[3, 8])));
    m.extend(attr(5, &words(&[0, 0, 0, 0, 0, 0, 0, 0, 6])));
    let q = QueueInfo {
        length: 3,
        limit: 8,
        drops: None,
    };
    assert_eq!(wire::parse_unix(&m), Some((9, q)));
}

#[test]
fn messages_stop_at_a_bad_length() {
    let mut buf = header(20, 20, 2, 5);
    buf.extend_from_slice(&[1, 2, 3, 4]);
    buf.extend(header(17, 3, 2, 5));
    buf.extend_from_slice(&[0, 0, 0, 0]); // padding of the 17-byte message
    buf.extend(header(1000, 20, 2, 5));
    let got: Vec<_> = wire::messages(&buf).collect();
    let first = Message {
        kind: 20,
        flags: 2,
        seq: 5,
        payload: &[1, 2, 3, 4],
    };
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], first);
    assert_eq!(got[1].kind, 3);
    assert_eq!(wire::messages(&[0; 7]).count(), 0);
    assert_eq!(wire::messages(&header(3, 20, 0, 0)).count(), 0);
}

#[test]
fn arbitrary_bytes_never_panic() {
    let mut x: u32 = 0x9e37_79b9;
    for len in 0..300 {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let _ = wire::messages(&bytes).count();
        let _ = (wire::parse_inet(&bytes), wire::parse_unix(&bytes));
        let _ = wire::error_code(&bytes);
    }
}

/// Polls `cond` up to `secs` seconds.
fn wait_until(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// A TCP listener on `addr` (port 0) with a backlog of [`BACKLOG`].
fn tcp_listener(addr: &dyn SockaddrLike, family: AddressFamily) -> nix::Result<TcpListener> {
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), addr)?;
    socket::listen(&fd, Backlog::new(BACKLOG)?)?;
    Ok(TcpListener::from(fd))
}

/// Starts a non-blocking connect to `addr`; the socket is kept open.
fn connect_nonblocking(addr: &dyn SockaddrLike, family: AddressFamily) -> OwnedFd {
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    let fd = socket::socket(family, SockType::Stream, flags, None).expect("client socket");
    let _ = socket::connect(std::os::fd::AsRawFd::as_raw_fd(&fd), addr);
    fd
}

/// `(Recv-Q, Send-Q)` of `ss` for the line that `pick` selects; `None` without `ss`.
fn ss(args: &[&str], pick: impl Fn(&[&str]) -> bool) -> Option<(u32, u32)> {
    let out = Command::new("ss").args(args).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let found = text.lines().find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if !pick(&cols) {
            return None;
        }
        let at = cols.iter().position(|c| *c == "LISTEN")?;
        Some((
            cols.get(at + 1)?.parse().ok()?,
            cols.get(at + 2)?.parse().ok()?,
        ))
    });
    Some(found.unwrap_or_else(|| panic!("no matching line in `ss {args:?}`:\n{text}")))
}

fn ss_tcp(port: u16) -> Option<(u32, u32)> {
    let filter = format!("sport = :{port}");
    ss(&["-ltnH", &filter], |cols| {
        cols.iter().any(|c| c.ends_with(&format!(":{port}")))
    })
}

/// Five waiting connections, then none after accepting them, then drops past the backlog.
fn queue_fills_empties_and_drops(listener: &TcpListener, family: AddressFamily) {
    let local = listener.local_addr().expect("local addr");
    let port = local.port();
    let mut reader = Reader::new().expect("reader");
    let empty = reader.read(listener.as_fd()).expect("read empty");
    assert_eq!((empty.length, empty.limit), (0, BACKLOG as u32));
    let clients: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(local).expect("connect"))
        .collect();
    let q = reader.read(listener.as_fd()).expect("read five");
    assert_eq!((q.length, q.limit), (5, BACKLOG as u32));
    if let Some(seen) = ss_tcp(port) {
        assert_eq!(seen, (q.length, q.limit), "ss -ltn disagrees");
    }
    let accepted: Vec<_> = (0..5).map(|_| listener.accept().expect("accept")).collect();
    assert_eq!(read(listener.as_fd()).expect("read accepted").length, 0);
    let before = q.drops.expect("drops reported");
    let addr: Box<dyn SockaddrLike> = match local {
        std::net::SocketAddr::V4(a) => Box::new(SockaddrIn::from(a)),
        std::net::SocketAddr::V6(a) => Box::new(SockaddrIn6::from(a)),
    };
    let flood: Vec<OwnedFd> = (0..30)
        .map(|_| connect_nonblocking(&*addr, family))
        .collect();
    let mut last = QueueInfo::default();
    let dropped = wait_until(5, || {
        last = reader.read(listener.as_fd()).expect("read flooded");
        last.drops.is_some_and(|d| d > before)
    });
    assert!(
        dropped,
        "no drops after 30 connects to a backlog of {BACKLOG}: {last:?}"
    );
    assert!(
        last.length >= BACKLOG as u32 && last.length <= BACKLOG as u32 + 1,
        "{last:?}"
    );
    drop((clients, accepted, flood));
}

#[test]
fn tcp_ipv4_listener_queue_and_drops() {
    let addr = SockaddrIn::new(127, 0, 0, 1, 0);
    let listener = tcp_listener(&addr, AddressFamily::Inet).expect("listen on 127.0.0.1");
    queue_fills_empties_and_drops(&listener, AddressFamily::Inet);
}

#[test]
fn tcp_ipv6_listener_queue_and_drops() {
    let addr = SockaddrIn6::from(std::net::SocketAddrV6::new(
        std::net::Ipv6Addr::LOCALHOST,
        0,
        0,
        0,
    ));
    let Ok(listener) = tcp_listener(&addr, AddressFamily::Inet6) else {
        eprintln!("no IPv6 loopback here: skipped");
        return;
    };
    queue_fills_empties_and_drops(&listener, AddressFamily::Inet6);
}

/// A Unix stream listener at `path` with a backlog of [`BACKLOG`].
fn unix_listener(path: &std::path::Path) -> std::os::unix::net::UnixListener {
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("unix socket");
    let addr = UnixAddr::new(path).expect("unix address");
    socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr).expect("bind unix");
    socket::listen(&fd, Backlog::new(BACKLOG).expect("backlog")).expect("listen unix");
    std::os::unix::net::UnixListener::from(fd)
}

fn ss_unix(path: &std::path::Path) -> Option<(u32, u32)> {
    let name = path.to_str().expect("utf-8 path");
    ss(&["-lxH"], |cols| cols.contains(&name))
}

#[test]
fn unix_listener_queue_and_drops() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("q.sock");
    let listener = unix_listener(&path);
    let mut reader = Reader::new().expect("reader");
    let empty = reader.read(listener.as_fd()).expect("read empty");
    assert_eq!((empty.length, empty.limit), (0, BACKLOG as u32));
    let clients: Vec<_> = (0..5)
        .map(|_| UnixStream::connect(&path).expect("connect"))
        .collect();
    let q = reader.read(listener.as_fd()).expect("read five");
    assert_eq!((q.length, q.limit), (5, BACKLOG as u32));
    if let Some(seen) = ss_unix(&path) {
        assert_eq!(seen, (q.length, q.limit), "ss -lx disagrees");
    }
    let accepted: Vec<_> = (0..5).map(|_| listener.accept().expect("accept")).collect();
    assert_eq!(read(listener.as_fd()).expect("read accepted").length, 0);
    let addr = UnixAddr::new(&path).expect("unix address");
    let flood: Vec<OwnedFd> = (0..30)
        .map(|_| connect_nonblocking(&addr, AddressFamily::Unix))
        .collect();
    let full = reader.read(listener.as_fd()).expect("read flooded");
    let limit = BACKLOG as u32;
    assert_eq!(
        full,
        QueueInfo {
            length: limit + 1,
            limit,
            drops: None
        }
    );
    drop((clients, accepted, flood));
}

#[test]
fn probes_answer_in_order_and_closed_listeners_give_none() {
    let dir = tempfile::tempdir().expect("temp dir");
    let unix = unix_listener(&dir.path().join("a.sock"));
    let tcp = tcp_listener(&SockaddrIn::new(127, 0, 0, 1, 0), AddressFamily::Inet).expect("tcp");
    let other = tcp_listener(&SockaddrIn::new(127, 0, 0, 1, 0), AddressFamily::Inet).expect("tcp");
    let probes = [unix.as_fd(), tcp.as_fd(), other.as_fd()].map(|fd| Probe::of(fd).expect("probe"));
    let _client = TcpStream::connect(other.local_addr().expect("addr")).expect("connect");
    let mut reader = Reader::new().expect("reader");
    let got = reader.read_all(&probes).expect("read all");
    let lengths: Vec<_> = got.iter().map(|q| q.map(|q| q.length)).collect();
    assert_eq!(lengths, [Some(0), Some(0), Some(1)]);
    drop((unix, tcp));
    let got = reader.read_all(&probes).expect("read all after close");
    assert_eq!(
        got.iter().map(Option::is_some).collect::<Vec<_>>(),
        [false, false, true]
    );
}

#[test]
fn sockets_that_do_not_listen_are_refused_clearly() {
    let (a, _b) = UnixStream::pair().expect("pair");
    let err = read(a.as_fd()).expect_err("a connected socket has no accept queue");
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
    let file = tempfile::tempfile().expect("file");
    let err = read(file.as_fd()).expect_err("a file is no socket");
    assert!(err.to_string().contains("sock_diag"), "{err}");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    assert_eq!(
        read(udp.as_fd()).expect_err("udp").kind(),
        std::io::ErrorKind::InvalidInput
    );
}

#[test]
fn a_hundred_reads_on_one_reader_keep_answering() {
    let dir = tempfile::tempdir().expect("temp dir");
    let unix = unix_listener(&dir.path().join("a.sock"));
    let v4 = tcp_listener(&SockaddrIn::new(127, 0, 0, 1, 0), AddressFamily::Inet).expect("tcp");
    let v4b = tcp_listener(&SockaddrIn::new(127, 0, 0, 1, 0), AddressFamily::Inet).expect("tcp");
    let probes = [unix.as_fd(), v4.as_fd(), v4b.as_fd()].map(|fd| Probe::of(fd).expect("probe"));
    let mut reader = Reader::new().expect("reader");
    // One netlink socket reused (no stale reply mixed into a later answer); the cost is a
    // benchmark's business, not this test's.
    for _ in 0..100 {
        let got = reader.read_all(&probes).expect("read all");
        assert!(
            got.iter().all(|q| q.is_some_and(|q| q.length == 0)),
            "{got:?}"
        );
    }
}

#[test]
fn the_netlink_socket_is_not_inherited_by_workers() {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    let netlink = super::netlink::Netlink::open().expect("netlink");
    let flags = fcntl(netlink.fd(), FcntlArg::F_GETFD).expect("F_GETFD");
    assert!(FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC));
}
