//! The tracking hot path's clock: `CLOCK_MONOTONIC` nanoseconds, read from the CPU's
//! time-stamp counter once it is calibrated.
//!
//! A request reads the clock twice. `clock_gettime` through the vDSO costs ~32 ns on the VMs
//! we measure on, `rdtsc` ~12 ns. Where the kernel itself uses the TSC as its clocksource (it
//! checked that the counter is invariant and synchronised across CPUs), [`fast_ns`] converts
//! the counter with a base `(tsc, CLOCK_MONOTONIC)` pair and a rate published under a
//! seqlock. The calibration rides on the reads themselves, with no thread (a second thread
//! would switch glibc's malloc and system-call wrappers to their slower multi-threaded paths):
//! for the first 10 ms every read is `clock_gettime` and remembers a first pair; after that
//! the rate is set from the time since the first pair, and whenever the counter has run past
//! the base by the calibration's age (at most [`REANCHOR`]) one read takes a fresh pair,
//! refines the rate over the whole time since the first pair and moves the base there. Pairs
//! are the tightest of three `rdtsc`–`clock_gettime`–`rdtsc` tries (a vCPU preempted in
//! between would skew one). The result stays within microseconds of `CLOCK_MONOTONIC` (within
//! the kernel's NTP slew over one second at worst: 0.5 ms at the maximum 500 ppm) and is
//! comparable with other processes' readings of it. A prediction that misses a fresh pair by
//! more than 1 ms (plus 1000 ppm of the time since the base, for NTP's slew over an idle
//! stretch), or a counter far behind the base (counters of different CPUs not in step), puts
//! the process back on `clock_gettime` for good. On other
//! clocksources and architectures, and with `FLORA_CLOCK=monotonic`, [`fast_ns`] is
//! `clock_gettime` itself.

use std::sync::atomic::{fence, AtomicU64, AtomicU8, Ordering::*};

use super::raw::tsc::tsc;

/// The conversion and calibration state of this process.
struct Params {
    /// Seqlock sequence (odd while a calibrating read writes it).
    seq: AtomicU64,
    /// TSC of the base pair.
    base_tsc: AtomicU64,
    /// `CLOCK_MONOTONIC` ns of the base pair.
    base_ns: AtomicU64,
    /// ns per tick in 32.32 fixed point; 0 = not calibrated yet.
    mult: AtomicU64,
    /// Ticks past the base after which a read re-anchors (about [`REANCHOR`]).
    reanchor_ticks: AtomicU64,
    /// The first pair (rate reference).
    first_tsc: AtomicU64,
    first_ns: AtomicU64,
}

static PARAMS: Params = Params {
    seq: AtomicU64::new(0),
    base_tsc: AtomicU64::new(0),
    base_ns: AtomicU64::new(0),
    mult: AtomicU64::new(0),
    reanchor_ticks: AtomicU64::new(0),
    first_tsc: AtomicU64::new(0),
    first_ns: AtomicU64::new(0),
};

/// Whether the TSC is used: 0 = not decided yet, 1 = yes, 2 = no.
static MODE: AtomicU8 = AtomicU8::new(0);

/// Time before the first rate is set.
const FIRST_RATE_NS: u64 = 10_000_000;
/// Longest time between re-anchoring reads, in ns.
pub(crate) const REANCHOR: u64 = 1_000_000_000;
/// Widest tsc–clock–tsc window a calibration pair may have (~8 µs at 2.5 GHz; an unhurried
/// pair takes a few hundred ticks).
const MAX_PAIR_TICKS: u64 = 20_000;
/// How far a counter read may lag the base (CPUs' counters a little apart) and still count.
const MAX_SKEW_TICKS: u64 = 100_000;
/// How far a calibrated prediction may miss a fresh pair (plus 1000 ppm of the time since
/// the base) before the counter is given up (counters not in step across CPUs, or the kernel
/// changed the clock under us).
const MAX_MISS_NS: u64 = 1_000_000;
/// Plausible TSC rates: 100 MHz to 10 GHz (10 ns to 0.1 ns per tick, 32.32 fixed point).
const MULT_RANGE: std::ops::RangeInclusive<u64> = (1 << 32) / 10..=10 << 32;

/// Monotonic ns on the `CLOCK_MONOTONIC` scale, for the hot path (see the module docs).
// `always`: read twice per request from the writer's `conn` module, where LLVM declined the
// plain hint (callgrind, `bench/run.sh instructions`: +27 instructions per request).
#[inline(always)]
pub(crate) fn fast_ns() -> u64 {
    match MODE.load(Relaxed) {
        1 => match tsc() {
            Some(t) => convert(t).unwrap_or_else(calibrating_read),
            None => super::mono_ns(),
        },
        0 => {
            let on = usable();
            MODE.store(if on { 1 } else { 2 }, Relaxed);
            super::mono_ns()
        }
        _ => super::mono_ns(),
    }
}

/// The counter converted, or `None` when this read must calibrate (not calibrated yet, past
/// the re-anchoring point, or a calibration being written).
#[inline]
fn convert(t: u64) -> Option<u64> {
    let s = PARAMS.seq.load(Acquire);
    let mult = PARAMS.mult.load(Relaxed);
    let base_tsc = PARAMS.base_tsc.load(Relaxed);
    let base_ns = PARAMS.base_ns.load(Relaxed);
    let reanchor = PARAMS.reanchor_ticks.load(Relaxed);
    fence(Acquire);
    if s & 1 == 1 || mult == 0 || PARAMS.seq.load(Relaxed) != s {
        return None;
    }
    // A counter read just behind the base (another CPU's tiny skew) counts as the base; one
    // far behind goes to `calibrating_read`, which gives the counter up.
    if base_tsc.saturating_sub(t) > MAX_SKEW_TICKS {
        return None;
    }
    let ticks = t.saturating_sub(base_tsc);
    if ticks > reanchor {
        return None;
    }
    let ns = (u128::from(ticks) * u128::from(mult)) >> 32;
    Some(base_ns.saturating_add(u64::try_from(ns).unwrap_or(u64::MAX)))
}

/// A `(tsc, CLOCK_MONOTONIC ns)` pair: the tightest of three tries, the counter taken halfway
/// through the clock read; `None` if even that one was interrupted (a preempted vCPU).
fn pair() -> Option<(u64, u64)> {
    let mut best: Option<(u64, u64, u64)> = None;
    for _ in 0..3 {
        let before = tsc()?;
        let ns = super::mono_ns();
        let window = tsc()?.checked_sub(before)?;
        if best.is_none_or(|(w, _, _)| window < w) {
            best = Some((window, before + window / 2, ns));
        }
    }
    best.filter(|&(w, _, _)| w <= MAX_PAIR_TICKS)
        .map(|(_, t, ns)| (t, ns))
}

/// A read that must calibrate: returns the system clock and, if no other thread is at it,
/// takes the first pair or updates the rate and base with a fresh pair.
#[cold]
fn calibrating_read() -> u64 {
    let s = PARAMS.seq.load(Relaxed);
    if s & 1 == 1
        || PARAMS
            .seq
            .compare_exchange(s, s + 1, Acquire, Relaxed)
            .is_err()
    {
        return super::mono_ns(); // another thread calibrates right now
    }
    fence(Release);
    let first_tsc = PARAMS.first_tsc.load(Relaxed);
    let first_ns = PARAMS.first_ns.load(Relaxed);
    let fresh = pair();
    if let (Some((t, ns)), true) = (fresh, PARAMS.mult.load(Relaxed) != 0) {
        let (base_tsc, base_ns) = (PARAMS.base_tsc.load(Relaxed), PARAMS.base_ns.load(Relaxed));
        let ticks = i128::from(t) - i128::from(base_tsc);
        let predicted =
            i128::from(base_ns) + ((ticks * i128::from(PARAMS.mult.load(Relaxed))) >> 32);
        // NTP may slew CLOCK_MONOTONIC by up to 500 ppm: over a long idle stretch the miss
        // may grow by that much without anything being wrong.
        let allowed = u128::from(MAX_MISS_NS) + u128::from(ns.saturating_sub(base_ns) / 1000);
        if (predicted - i128::from(ns)).unsigned_abs() > allowed {
            // The counter does not follow the system clock: stay on the system clock.
            MODE.store(2, Relaxed);
            PARAMS.seq.store(s + 2, Release);
            return ns;
        }
    }
    let now = match fresh {
        None => super::mono_ns(),
        Some((t, ns)) if first_ns == 0 => {
            PARAMS.first_tsc.store(t, Relaxed);
            PARAMS.first_ns.store(ns, Relaxed);
            ns
        }
        Some((t, ns)) if ns.saturating_sub(first_ns) >= FIRST_RATE_NS => {
            let elapsed = ns - first_ns;
            let ticks = t.saturating_sub(first_tsc).max(1);
            let mult =
                u64::try_from((u128::from(elapsed) << 32) / u128::from(ticks)).unwrap_or(u64::MAX);
            if MULT_RANGE.contains(&mult) {
                PARAMS.base_tsc.store(t, Relaxed);
                PARAMS.base_ns.store(ns, Relaxed);
                PARAMS.mult.store(mult, Relaxed);
                // The rate's error shrinks as 1/elapsed: re-anchoring after at most `elapsed`
                // keeps the drift between anchors within about one pair's error.
                let next = (u128::from(elapsed.min(REANCHOR)) << 32) / u128::from(mult);
                PARAMS
                    .reanchor_ticks
                    .store(u64::try_from(next).unwrap_or(u64::MAX), Relaxed);
            } else {
                // The counter does not run like a clock: stay on the system clock.
                MODE.store(2, Relaxed);
            }
            ns
        }
        Some((_, ns)) => ns,
    };
    PARAMS.seq.store(s + 2, Release);
    now
}

/// Whether the TSC may be used: the kernel's own clocksource is `tsc`, and not turned off.
fn usable() -> bool {
    if tsc().is_none() || std::env::var("FLORA_CLOCK").is_ok_and(|v| v == "monotonic") {
        return false;
    }
    std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
        .is_ok_and(|s| s.trim() == "tsc")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fast_clock_follows_the_monotonic_clock() {
        let t0 = fast_ns();
        // Reads through the first calibration (10 ms) and past a re-anchoring point.
        let until = super::super::mono_ns() + REANCHOR + 200_000_000;
        let mut reads = 0u64;
        while super::super::mono_ns() < until {
            let before = super::super::mono_ns();
            let fast = fast_ns();
            let after = super::super::mono_ns();
            // Within 50 µs of the system clock, both ways.
            assert!(fast + 50_000 >= before, "fast {fast} < before {before}");
            assert!(fast <= after + 50_000, "fast {fast} > after {after}");
            reads += 1;
            if reads % 1000 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        assert_eq!(
            PARAMS.mult.load(Relaxed) != 0,
            usable(),
            "calibrated where the TSC is usable"
        );
        let d = fast_ns() - t0;
        assert!((1_100_000_000..3_000_000_000).contains(&d), "{d} ns");
    }
}
