use proptest::prelude::*;

use super::*;

fn at(ms: u64, requests: u64) -> Reading {
    Reading {
        unix_ms: ms,
        requests,
        classes: [0, requests, 0, 0, 0, 0],
        histogram: vec![0; 17],
        ..Reading::default()
    }
}

#[test]
fn the_first_reading_only_primes() {
    let mut h = History::new();
    h.record(at(1_000, 5));
    assert!(h.is_empty());
    h.record(at(2_000, 15));
    let s: Vec<_> = h.samples().copied().collect();
    assert_eq!(s.len(), 1);
    assert_eq!((s[0].unix_ms, s[0].requests), (2_000, 10.0));
    assert_eq!(s[0].classes[1], 10.0);
    assert_eq!(
        (s[0].p50, s[0].p99),
        (None, None),
        "no request in the histogram"
    );
}

#[test]
fn a_counter_that_goes_down_counts_as_zero() {
    let mut h = History::new();
    h.record(at(1_000, 100));
    h.record(at(2_000, 3));
    h.record(at(3_000, 7));
    let r: Vec<f64> = h.samples().map(|s| s.requests).collect();
    assert_eq!(r, vec![0.0, 4.0]);
}

#[test]
fn a_skipped_second_is_a_gap_with_the_average_after_it() {
    let mut h = History::new();
    h.record(at(1_000, 0));
    h.record(at(2_000, 10));
    h.record(at(5_000, 40));
    let s: Vec<_> = h.samples().copied().collect();
    assert_eq!(s.len(), 2, "nothing is made up for the missing seconds");
    assert_eq!(
        (s[1].unix_ms, s[1].seconds, s[1].requests),
        (5_000, 3.0, 10.0)
    );
}

#[test]
fn a_clock_step_back_makes_no_sample() {
    let mut h = History::new();
    h.record(at(5_000, 0));
    h.record(at(4_000, 10));
    h.record(at(4_000, 10));
    assert!(h.is_empty());
    h.record(at(5_000, 12));
    assert_eq!(h.samples().next().map(|s| s.requests), Some(2.0));
}

#[test]
fn quantiles_come_from_the_interval_only() {
    let mut h = History::new();
    let mut a = at(1_000, 0);
    a.histogram[15] = 1_000; // old slow requests
    let mut b = a.clone();
    b.unix_ms = 2_000;
    b.histogram[0] += 100; // this second: all fast
    h.record(a);
    h.record(b);
    let s = h.samples().next().copied().expect("sample");
    let p99 = s.p99.expect("p99");
    assert!(p99 <= 0.0001, "{p99}");
}

#[test]
fn queue_drops_are_a_rate_and_length_is_kept() {
    let mut h = History::new();
    let mut a = at(1_000, 0);
    a.queue_drops = Some(10);
    a.queue_length = Some(3);
    let mut b = a.clone();
    b.unix_ms = 2_000;
    b.queue_drops = Some(14);
    b.queue_length = Some(9);
    h.record(a);
    h.record(b.clone());
    let mut c = b;
    c.unix_ms = 3_000;
    c.queue_drops = None;
    c.queue_length = None;
    h.record(c);
    let s: Vec<_> = h.samples().copied().collect();
    assert_eq!((s[0].queue_drops, s[0].queue_length), (Some(4.0), Some(9)));
    assert_eq!((s[1].queue_drops, s[1].queue_length), (None, None));
}

#[test]
fn the_ring_keeps_the_newest_900_in_order() {
    let mut h = History::new();
    for i in 0..=2_000u64 {
        h.record(at(i * 1_000, i));
    }
    assert_eq!(h.len(), HISTORY_CAPACITY);
    let times: Vec<u64> = h.samples().map(|s| s.unix_ms).collect();
    let want: Vec<u64> = (1_101..=2_000).map(|i| i * 1_000).collect();
    assert_eq!(times, want);
    assert!(h.ring.capacity() <= HISTORY_CAPACITY, "fixed memory");
}

#[test]
fn series_round_and_fit() {
    let mut h = History::new();
    h.record(at(0, 0));
    for i in 1..=900u64 {
        h.record(at(i * 1_000 + i % 3, i * 7));
    }
    let s = h.series();
    assert_eq!(s.len(), 900);
    assert_eq!(s.requests_per_second_by_class.c2xx.len(), 900);
    let text = serde_json::to_string(&s).expect("json");
    assert!(!text.contains("00000000"), "rates are rounded");
    let small = s.fit(4_000);
    assert!(serde_json::to_vec(&small).expect("json").len() <= 4_000);
    assert!(small.len() > 10 && small.len() < 900);
    assert_eq!(
        small.unix_ms.last(),
        s.unix_ms.last(),
        "the newest are kept"
    );
    assert_eq!(s.fit(10).len(), 0);
    let back: HistorySeries = serde_json::from_str(&text).expect("parse");
    assert_eq!(back, s);
}

proptest! {
    /// Never more than the capacity; times strictly increase; each sample's time is a
    /// reading's, so a skipped second stays a gap; rates are never negative or NaN.
    #[test]
    fn ring_invariants(steps in proptest::collection::vec((0u64..3_500, 0u64..1_000, any::<bool>()), 0..2_500)) {
        let mut h = History::new();
        let mut ms = 10_000u64;
        let mut count = 0u64;
        let mut readings = std::collections::BTreeSet::new();
        for (step, add, reset) in steps {
            ms += step;
            count = if reset { add } else { count + add };
            readings.insert(ms);
            h.record(at(ms, count));
            prop_assert!(h.len() <= HISTORY_CAPACITY);
        }
        let s: Vec<_> = h.samples().copied().collect();
        for w in s.windows(2) {
            prop_assert!(w[0].unix_ms < w[1].unix_ms);
            let step = (w[1].unix_ms - w[0].unix_ms) as f64 / 1000.0;
            prop_assert!((w[1].seconds - step).abs() < 1e-9);
        }
        for x in &s {
            prop_assert!(readings.contains(&x.unix_ms));
            prop_assert!(x.requests.is_finite() && x.requests >= 0.0);
            prop_assert!(x.classes.iter().all(|c| c.is_finite() && *c >= 0.0));
        }
    }
}

/// A busy full ring (decimals in every rate, quantiles every second) stays small: the
/// JSON is about 90 bytes a sample (82 KB for 900), what the control socket must trim.
#[test]
fn a_full_busy_ring_is_about_90_bytes_a_sample() {
    let mut h = History::new();
    let mut r = at(1_700_000_000_000, 0);
    r.queue_length = Some(0);
    r.queue_drops = Some(0);
    for i in 0..=900u64 {
        r.unix_ms += 1_000 + i % 7;
        r.requests += 1_000 + i % 13;
        r.classes[1] += 990 + i % 13;
        r.classes[3] += 7;
        r.classes[4] += 3;
        r.histogram[2] += 900;
        r.histogram[9] += 100 + i % 13;
        r.in_flight = i % 40;
        h.record(r.clone());
    }
    let bytes = serde_json::to_vec(&h.series()).expect("json").len();
    eprintln!("900 busy samples: {bytes} bytes of JSON");
    assert!(bytes < 900 * 100, "{bytes}");
}
