//! Respawn pacing: at once after the first unexpected exit, then jittered exponential backoff
//! while a worker keeps dying soon after its start. Pure logic, unit-tested.

use std::time::Duration;

/// A worker that lived this long was not crash-looping: its next exit respawns at once.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);
/// Delay of the second quick exit in a row; it doubles with each further one.
pub const BASE_DELAY: Duration = Duration::from_millis(100);
/// Longest delay between respawns of a crash-looping slot.
pub const MAX_DELAY: Duration = Duration::from_secs(30);

/// Backoff state of one slot.
#[derive(Debug, Clone)]
pub struct Backoff {
    quick_exits: u32,
    rng: u64,
}

impl Backoff {
    /// A fresh state; `seed` varies the jitter between slots.
    pub fn new(seed: u64) -> Self {
        Self {
            quick_exits: 0,
            rng: seed | 1,
        }
    }

    /// Quick exits in a row so far.
    pub fn quick_exits(&self) -> u32 {
        self.quick_exits
    }

    /// The worker exited after living `lived`: how long to wait before the respawn.
    pub fn on_exit(&mut self, lived: Duration) -> Duration {
        if lived >= STABLE_AFTER {
            self.quick_exits = 0;
        }
        let n = self.quick_exits;
        self.quick_exits = self.quick_exits.saturating_add(1);
        if n == 0 {
            return Duration::ZERO;
        }
        let exp = BASE_DELAY.saturating_mul(1u32 << (n - 1).min(20));
        let base = exp.min(MAX_DELAY);
        // ±20 % jitter so that slots crashing together do not respawn in lockstep.
        let jitter = (self.next_random() % 401) as f64 / 1000.0 - 0.2;
        base.mul_f64(1.0 + jitter).min(MAX_DELAY)
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64: plenty for jitter.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUICK: Duration = Duration::from_millis(10);

    #[test]
    fn first_exit_is_immediate_then_doubles_with_jitter() {
        let mut b = Backoff::new(42);
        assert_eq!(b.on_exit(QUICK), Duration::ZERO);
        let mut expected = BASE_DELAY;
        for _ in 0..8 {
            let d = b.on_exit(QUICK);
            assert!(
                d >= expected.mul_f64(0.8) && d <= expected.mul_f64(1.2),
                "{d:?} vs {expected:?}"
            );
            expected *= 2;
        }
    }

    #[test]
    fn capped_and_reset_after_a_stable_run() {
        let mut b = Backoff::new(7);
        for _ in 0..100 {
            assert!(b.on_exit(QUICK) <= MAX_DELAY);
        }
        assert_eq!(b.on_exit(STABLE_AFTER), Duration::ZERO);
        assert_eq!(b.quick_exits(), 1);
    }

    #[test]
    fn spawn_count_in_a_window_is_bounded() {
        // A worker that dies at once: how many spawns fit into 10 s?
        let mut b = Backoff::new(3);
        let (mut t, mut spawns) = (Duration::ZERO, 0);
        while t < Duration::from_secs(10) {
            spawns += 1;
            t += b.on_exit(Duration::ZERO);
        }
        assert!(spawns <= 9, "{spawns} spawns in 10 s");
    }
}
