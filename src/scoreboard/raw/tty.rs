//! The size of a terminal (`TIOCGWINSZ`): nix has no safe wrapper for this ioctl.

use std::os::fd::{AsFd, AsRawFd};

/// Columns and rows of the terminal on `fd`; `None` when it is not a terminal or reports 0.
pub fn window_size(fd: impl AsFd) -> Option<(u16, u16)> {
    let mut ws = nix::libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `struct winsize` through the pointer, which points at
    // `ws`, a live local of exactly that type; the descriptor is borrowed for the call (an
    // fd that is not a terminal makes the ioctl fail with ENOTTY and write nothing).
    let rc = unsafe {
        nix::libc::ioctl(
            fd.as_fd().as_raw_fd(),
            nix::libc::TIOCGWINSZ,
            &mut ws as *mut nix::libc::winsize,
        )
    };
    (rc == 0 && ws.ws_col > 0 && ws.ws_row > 0).then_some((ws.ws_col, ws.ws_row))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_file_is_not_a_terminal() {
        let f = tempfile::tempfile().expect("tempfile");
        assert_eq!(super::window_size(&f), None);
    }
}
