//! The CPU's time-stamp counter, read by the tracking clock (the scoreboard's `clock` module).

/// The CPU's time-stamp counter, where the architecture has one the kernel trusts as a clock
/// (the scoreboard's `clock` module decides whether to trust it); `None` elsewhere.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn tsc() -> Option<u64> {
    // SAFETY: RDTSC reads a counter register: no memory access, no side effect, and the
    // instruction exists on every x86_64 CPU (`_rdtsc` is unsafe only as all intrinsics are).
    // Nothing is shared, so no other process plays any part.
    Some(unsafe { std::arch::x86_64::_rdtsc() })
}

/// The CPU's time-stamp counter: not read on this architecture.
#[cfg(not(target_arch = "x86_64"))]
#[inline]
pub(crate) fn tsc() -> Option<u64> {
    None
}
