//! Checks before mapping a segment someone else created: the file may not be resized under
//! its reader, and the header must match this build's layout.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::Ordering;

use nix::fcntl::{FcntlArg, SealFlag};

use super::super::raw::layout::{self, Header, Slot};
use super::super::{Result, ScoreboardError, MAX_SLOTS};
use super::{io_err, load_acquire};

/// A reader maps the file: if another user could shrink it meanwhile, the reader would die
/// of SIGBUS at its next read. So a segment must be sealed against shrinking (the master's
/// memfd) or owned by the reader's own effective user.
pub(super) fn refuse_resizable_by_others(file: &File, path: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let owner = file.metadata().map_err(io_err(path))?.uid();
    if owner == nix::unistd::geteuid().as_raw() {
        return Ok(());
    }
    let sealed = nix::fcntl::fcntl(file, FcntlArg::F_GET_SEALS)
        .is_ok_and(|seals| seals & SealFlag::F_SEAL_SHRINK.bits() != 0);
    if sealed {
        return Ok(());
    }
    Err(ScoreboardError::Io {
        path: path.to_owned(),
        source: io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "owned by uid {owner}, who could shrink it under this reader; \
                 not a sealed segment of a master"
            ),
        ),
    })
}

/// Checks a header against this build's layout; returns the slot count and route limit.
pub(crate) fn validate_header(h: &Header, file_len: u64) -> Result<(usize, usize)> {
    let magic = load_acquire(&h.magic);
    if magic != layout::MAGIC {
        return Err(ScoreboardError::BadMagic(magic));
    }
    let version = h.version.load(Ordering::Relaxed);
    if version != layout::VERSION {
        return Err(ScoreboardError::Version {
            found: version,
            expected: layout::VERSION,
        });
    }
    let expect = |what: &str, found: u64, want: u64| {
        if found == want {
            Ok(())
        } else {
            Err(ScoreboardError::Layout(format!(
                "{what} is {found}, expected {want}"
            )))
        }
    };
    expect(
        "header size",
        h.header_size.load(Ordering::Relaxed),
        std::mem::size_of::<Header>() as u64,
    )?;
    expect(
        "slot size",
        h.slot_size.load(Ordering::Relaxed),
        std::mem::size_of::<Slot>() as u64,
    )?;
    expect(
        "layout hash",
        h.layout_hash.load(Ordering::Relaxed),
        layout::layout_hash(),
    )?;
    let slots = h.slot_count.load(Ordering::Relaxed);
    if slots == 0 || slots > MAX_SLOTS as u64 {
        return Err(ScoreboardError::Layout(format!("slot count {slots}")));
    }
    let routes = h.route_limit.load(Ordering::Relaxed);
    if routes > layout::MAX_ROUTES as u64 {
        return Err(ScoreboardError::Layout(format!("route limit {routes}")));
    }
    let need = layout::segment_size(slots as usize, routes as usize) as u64;
    expect("total size", h.total_size.load(Ordering::Relaxed), need)?;
    if file_len < need {
        return Err(ScoreboardError::TooSmall {
            len: file_len,
            need,
        });
    }
    Ok((slots as usize, routes as usize))
}
