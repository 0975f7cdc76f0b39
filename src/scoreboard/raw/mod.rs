//! The crate's one `unsafe` module, in rooms by concern:
//!
//! - [`layout`]: the `#[repr(C)]` segment layout (header, slots, registry), its pinned sizes
//!   and [`layout::ShmSafe`];
//! - [`map`]: mapping the segment and every pointer-to-reference cast into it;
//! - [`fd`]: adopting inherited and received descriptors, clearing close-on-exec in a forked
//!   child, registering an fd with tokio;
//! - [`tsc`]: reading the CPU's time-stamp counter;
//! - [`tty`]: a terminal's size (`flora-cluster top`).
//!
//! Everything else in the crate is safe code over what these hand out. Each `unsafe` block
//! carries a `// SAFETY:` comment naming the invariant it relies on and why other processes
//! (workers that map the same segment, the master that forks them) cannot break it.
#![allow(
    unsafe_code,
    reason = "the one module that maps shared memory, casts into it and adopts raw fds"
)]

pub(crate) mod fd;
pub(crate) mod layout;
pub(crate) mod map;
pub(crate) mod tsc;
pub(crate) mod tty;
