//! Response status codes as the scoreboard counts them: the common codes exactly, the rest
//! as one "other" per class (`4xx`), and requests without a response (`other`).
//!
//! The writer maps a code to its counter with one load from `INDEX`, a table built at
//! compile time; readers name counter `i` with [`label`].
//!
//! ```
//! use flora_cluster::scoreboard::status;
//! assert_eq!(status::label(status::index(404)), "404");
//! assert_eq!(status::label(status::index(418)), "4xx");
//! assert_eq!(status::label(status::index(0)), "other");
//! ```

/// The codes counted exactly, ascending.
pub const EXACT: [u16; 27] = [
    100, 101, 200, 201, 202, 204, 206, 301, 302, 304, 307, 308, 400, 401, 403, 404, 405, 408, 409,
    413, 422, 429, 499, 500, 502, 503, 504,
];

/// Counters per slot and lane: the exact codes, one per class 1xx..5xx, no response.
pub const COUNTERS: usize = EXACT.len() + 6;

/// Counter of a code of class `c` (1..=5) that is not counted exactly.
const fn class_other(c: usize) -> usize {
    EXACT.len() + c - 1
}

/// Counter of requests without a response (or with a code outside 100..=599).
pub const NO_RESPONSE: usize = COUNTERS - 1;

/// Label of [`NO_RESPONSE`] (as before exact codes were counted).
pub const NO_RESPONSE_LABEL: &str = "other";

/// Counter index of every code below 600.
const INDEX: [u8; 600] = {
    let mut t = [NO_RESPONSE as u8; 600];
    let mut code = 100;
    while code < 600 {
        t[code] = class_other(code / 100) as u8;
        code += 1;
    }
    let mut i = 0;
    while i < EXACT.len() {
        t[EXACT[i] as usize] = i as u8;
        i += 1;
    }
    t
};

const _: () = assert!(COUNTERS < u8::MAX as usize);
const _: () = assert!(COUNTERS == super::raw::layout::STATUS_COUNTERS);

/// The counter of status `code` (0 = no response was sent).
#[inline(always)]
pub fn index(code: u16) -> usize {
    match INDEX.get(usize::from(code)) {
        Some(&i) => usize::from(i),
        None => NO_RESPONSE,
    }
}

/// Per-class labels, then [`NO_RESPONSE_LABEL`].
const CLASS_LABELS: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", NO_RESPONSE_LABEL];

/// Decimal labels of [`EXACT`].
const EXACT_LABELS: [&str; 27] = [
    "100", "101", "200", "201", "202", "204", "206", "301", "302", "304", "307", "308", "400",
    "401", "403", "404", "405", "408", "409", "413", "422", "429", "499", "500", "502", "503",
    "504",
];

/// The `code` label of counter `i`: `"404"`, `"4xx"` (other codes of the class) or `"other"`.
pub fn label(i: usize) -> &'static str {
    match i.checked_sub(EXACT.len()) {
        None => EXACT_LABELS.get(i).copied().unwrap_or(NO_RESPONSE_LABEL),
        Some(c) => CLASS_LABELS.get(c).copied().unwrap_or(NO_RESPONSE_LABEL),
    }
}

/// The class of counter `i`: 0..=4 for 1xx..5xx, 5 for no response.
pub fn class(i: usize) -> usize {
    match i.checked_sub(EXACT.len()) {
        None => EXACT.get(i).map_or(5, |&c| usize::from(c / 100) - 1),
        Some(c) => c.min(5),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_maps_to_its_counter() {
        for (i, &code) in EXACT.iter().enumerate() {
            assert_eq!(index(code), i);
            assert_eq!(label(i), code.to_string());
            assert_eq!(class(i), usize::from(code / 100) - 1);
        }
        for (code, want, cls) in [
            (199, "1xx", 0),
            (203, "2xx", 1),
            (418, "4xx", 3),
            (599, "5xx", 4),
            (0, "other", 5),
            (99, "other", 5),
            (600, "other", 5),
            (u16::MAX, "other", 5),
        ] {
            assert_eq!(label(index(code)), want, "{code}");
            assert_eq!(class(index(code)), cls, "{code}");
        }
        assert!(
            EXACT.windows(2).all(|w| w[0] < w[1]),
            "ascending, no repeat"
        );
        let labels: std::collections::HashSet<_> = (0..COUNTERS).map(label).collect();
        assert_eq!(labels.len(), COUNTERS, "labels are distinct");
        assert_eq!(label(COUNTERS + 3), "other");
    }
}
