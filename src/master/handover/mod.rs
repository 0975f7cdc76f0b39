//! The master upgrade's handover between two processes: the old master (`old`) starts the
//! new one with one end of a socket pair, and sends it the state and every shared
//! descriptor; the new master (`new`) takes them over. The decisions are the core's
//! (`super::core::upgrade`); the messages and their checks are in [`wire`].

pub mod wire;

pub(super) mod new;
pub(super) mod old;

use std::io::{Read, Seek, Write};
use std::os::fd::OwnedFd;

/// The environment variable that tells a new master which descriptor leads to its
/// predecessor.
pub const ENV_UPGRADE_FD: &str = "FLORA_UPGRADE_FD";

/// Puts `bytes` into a sealed memfd (nobody can change it after this).
pub(super) fn write_blob(bytes: &[u8]) -> std::io::Result<OwnedFd> {
    use nix::fcntl::{FcntlArg, SealFlag};
    use nix::sys::memfd::{memfd_create, MFdFlags};
    let fd = memfd_create(
        c"flora-upgrade-state",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )?;
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes)?;
    file.rewind()?;
    let seals = SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_WRITE
        | SealFlag::F_SEAL_SEAL;
    nix::fcntl::fcntl(&file, FcntlArg::F_ADD_SEALS(seals))?;
    Ok(OwnedFd::from(file))
}

/// Reads a blob of `len` bytes (at most [`wire::MAX_STATE`]) from a memfd the peer sent:
/// it must be sealed against writes and exactly that long.
pub(super) fn read_blob(fd: OwnedFd, len: u64) -> std::io::Result<Vec<u8>> {
    use nix::fcntl::{FcntlArg, SealFlag};
    let bad = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidData, why);
    if len > wire::MAX_STATE {
        return Err(bad(format!(
            "state of {len} bytes (at most {})",
            wire::MAX_STATE
        )));
    }
    let seals = nix::fcntl::fcntl(&fd, FcntlArg::F_GET_SEALS)
        .map_err(|e| bad(format!("the state is not a sealed memfd ({e})")))?;
    let needed = SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW;
    if !SealFlag::from_bits_truncate(seals).contains(needed) {
        return Err(bad("the state memfd is not sealed against writes".into()));
    }
    let mut file = std::fs::File::from(fd);
    let size = file.metadata()?.len();
    if size != len {
        return Err(bad(format!("the state has {size} bytes, not {len}")));
    }
    let mut out = Vec::with_capacity(len as usize);
    file.rewind()?;
    Read::by_ref(&mut file).take(len).read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_round_trip_and_are_checked() {
        let fd = write_blob(b"{\"a\":1}").unwrap();
        let dup = fd.try_clone().unwrap();
        assert_eq!(read_blob(fd, 7).unwrap(), b"{\"a\":1}");
        assert!(read_blob(dup.try_clone().unwrap(), 8).is_err(), "length");
        assert!(read_blob(dup, wire::MAX_STATE + 1).is_err(), "cap");
        // A writable memfd is refused: the sender could change it while it is read.
        let plain =
            nix::sys::memfd::memfd_create(c"x", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap();
        let err = read_blob(plain, 0).unwrap_err();
        assert!(err.to_string().contains("sealed"), "{err}");
    }
}
