//! The sock_diag wire format: requests built and replies parsed from byte buffers, in
//! native byte order (the kernel's), every length checked. A reply that is too short or
//! malformed ends the walk; an unknown or truncated attribute is skipped.

use super::QueueInfo;

/// `nlmsghdr` is 16 bytes; messages and attributes are 4-byte aligned.
const NLMSG_HDRLEN: usize = 16;
/// `NLMSG_ERROR`: an errno (0 = ack).
pub(super) const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE`: the end of a dump.
pub(super) const NLMSG_DONE: u16 = 3;
/// `SOCK_DIAG_BY_FAMILY`, the request and reply type.
pub(super) const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
/// `NLM_F_MULTI`: part of a multi-part reply (a dump).
pub(super) const NLM_F_MULTI: u16 = 0x2;
/// `NLM_F_ROOT | NLM_F_MATCH`.
const NLM_F_DUMP: u16 = 0x300;
/// `TCP_LISTEN` in the kernel's socket states (`1 << state` in the filters).
const TCP_LISTEN: u32 = 10;
/// `INET_DIAG_NOCOOKIE`: match any socket cookie.
const NO_COOKIE: u32 = u32::MAX;
/// `INET_DIAG_SKMEMINFO`: the `SK_MEMINFO_*` array of `u32`.
const INET_DIAG_SKMEMINFO: u16 = 7;
/// `UNIX_DIAG_RQLEN`: `{ rqueue: u32, wqueue: u32 }`.
const UNIX_DIAG_RQLEN: u16 = 4;
/// `UDIAG_SHOW_RQLEN` (no `UDIAG_SHOW_MEMINFO`: a Unix listener's `sk_drops` stays 0 when
/// connections are refused, see the module docs).
const UDIAG_SHOW: u32 = 0x10;
/// `SK_MEMINFO_DROPS`: `sk_drops` (accept-queue overflows and SYN drops on a TCP listener).
const SK_MEMINFO_DROPS: usize = 8;
/// `inet_diag_msg`: family, state, timer, retrans, the 48-byte socket id, then
/// expires, rqueue, wqueue, uid, inode.
const INET_DIAG_MSG_LEN: usize = 72;
/// `unix_diag_msg`: family, type, state, pad, inode, cookie.
const UNIX_DIAG_MSG_LEN: usize = 16;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// A netlink header followed by `payload`.
fn message(seq: u32, flags: u16, payload: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + payload.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(payload);
    m
}

/// An `inet_diag_req_v2` dump of the TCP listeners of `family` (`AF_INET` or `AF_INET6`)
/// with their memory info; `port` (0 = any) narrows it to one local port.
pub(super) fn inet_request(seq: u32, family: u8, port: u16) -> Vec<u8> {
    let mut req = Vec::with_capacity(56);
    req.push(family);
    req.push(6); // IPPROTO_TCP
    req.push(1 << (INET_DIAG_SKMEMINFO - 1)); // idiag_ext
    req.push(0);
    req.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    req.extend_from_slice(&port.to_be_bytes()); // idiag_sport
    req.extend_from_slice(&[0; 2 + 16 + 16 + 4]); // dport, src, dst, if
    req.extend_from_slice(&NO_COOKIE.to_ne_bytes());
    req.extend_from_slice(&NO_COOKIE.to_ne_bytes());
    message(seq, NLM_F_DUMP, &req)
}

/// A `unix_diag_req` for the one listening Unix socket with `inode`.
pub(super) fn unix_request(seq: u32, inode: u32) -> Vec<u8> {
    message(seq, 0, &unix_req(1 << TCP_LISTEN, inode, UDIAG_SHOW))
}

/// A `unix_diag_req` dump of no state at all: answers `NLMSG_DONE` when the kernel has
/// `unix_diag`, `ENOENT` when it has not (as a missing socket would in [`unix_request`]).
pub(super) fn unix_support_request(seq: u32) -> Vec<u8> {
    message(seq, NLM_F_DUMP, &unix_req(0, 0, 0))
}

fn unix_req(states: u32, inode: u32, show: u32) -> Vec<u8> {
    let mut req = Vec::with_capacity(24);
    req.extend_from_slice(&[nix::libc::AF_UNIX as u8, 0, 0, 0]);
    req.extend_from_slice(&states.to_ne_bytes());
    req.extend_from_slice(&inode.to_ne_bytes());
    req.extend_from_slice(&show.to_ne_bytes());
    req.extend_from_slice(&NO_COOKIE.to_ne_bytes());
    req.extend_from_slice(&NO_COOKIE.to_ne_bytes());
    req
}

/// One netlink message of a reply.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Message<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

/// The messages in one datagram; stops at the first header that does not fit.
pub(super) fn messages(mut buf: &[u8]) -> impl Iterator<Item = Message<'_>> {
    std::iter::from_fn(move || {
        let len = usize::try_from(u32_at(buf, 0)?).ok()?;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return None;
        }
        let m = Message {
            kind: u16_at(buf, 4)?,
            flags: u16_at(buf, 6)?,
            seq: u32_at(buf, 8)?,
            payload: &buf[NLMSG_HDRLEN..len],
        };
        buf = buf.get(align4(len)..).unwrap_or_default();
        Some(m)
    })
}

/// The errno of an `NLMSG_ERROR` payload (0 is an ack); `None` if it is too short.
pub(super) fn error_code(payload: &[u8]) -> Option<i32> {
    Some(u32_at(payload, 0)? as i32)
}

/// The `rtattr`s after a fixed header: `(type, value)`; stops at one that does not fit.
fn attributes(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16_at(buf, 0)?);
        if len < 4 || len > buf.len() {
            return None;
        }
        let item = (u16_at(buf, 2)? & 0x3fff, &buf[4..len]);
        buf = buf.get(align4(len)..).unwrap_or_default();
        Some(item)
    })
}

/// `sk_drops` from an `SK_MEMINFO_*` array, if it is long enough.
fn meminfo_drops(value: &[u8]) -> Option<u64> {
    u32_at(value, SK_MEMINFO_DROPS * 4).map(u64::from)
}

/// `(inode, queue)` of one listening `inet_diag_msg` (with its attributes).
pub(super) fn parse_inet(payload: &[u8]) -> Option<(u32, QueueInfo)> {
    if u32::from(*payload.get(1)?) != TCP_LISTEN {
        return None;
    }
    let rqueue = u32_at(payload, 56)?;
    let wqueue = u32_at(payload, 60)?;
    let inode = u32_at(payload, 68)?;
    let attrs = payload.get(INET_DIAG_MSG_LEN..).unwrap_or_default();
    let drops = attributes(attrs)
        .filter(|(kind, _)| *kind == INET_DIAG_SKMEMINFO)
        .find_map(|(_, value)| meminfo_drops(value));
    Some((
        inode,
        QueueInfo {
            length: rqueue,
            limit: wqueue,
            drops,
        },
    ))
}

/// `(inode, queue)` of one listening `unix_diag_msg`, without drops; `None` for another
/// state or without its `UNIX_DIAG_RQLEN`.
pub(super) fn parse_unix(payload: &[u8]) -> Option<(u32, QueueInfo)> {
    if u32::from(*payload.get(2)?) != TCP_LISTEN {
        return None;
    }
    let inode = u32_at(payload, 4)?;
    let attrs = payload.get(UNIX_DIAG_MSG_LEN..).unwrap_or_default();
    let (length, limit) = attributes(attrs)
        .filter(|(kind, _)| *kind == UNIX_DIAG_RQLEN)
        .find_map(|(_, value)| Some((u32_at(value, 0)?, u32_at(value, 4)?)))?;
    let drops = None;
    Some((
        inode,
        QueueInfo {
            length,
            limit,
            drops,
        },
    ))
}
