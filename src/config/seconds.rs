//! Durations given in seconds (flags and keys): the check, the flag parser, the conversion.

use std::time::Duration;

/// Longest duration accepted, in seconds (a day): larger values are surely a unit mistake.
pub const MAX_TIMEOUT_SECS: f64 = 86_400.0;

/// Checks a duration in seconds: finite, above 0 and at most [`MAX_TIMEOUT_SECS`].
///
/// # Errors
/// What is wrong with `secs` (NaN, infinite, zero or negative, too large).
pub fn check_seconds(secs: f64) -> Result<f64, String> {
    if secs.is_finite() && secs > 0.0 && secs <= MAX_TIMEOUT_SECS {
        Ok(secs)
    } else {
        let shown = if secs.abs() >= 1e9 {
            format!("{secs:e}")
        } else {
            secs.to_string()
        };
        Err(format!(
            "{shown}: must be seconds in (0, {MAX_TIMEOUT_SECS}]"
        ))
    }
}

/// Parses a duration flag given in seconds (`30`, `2.5`), checked with [`check_seconds`]
/// (a clap `value_parser`).
///
/// ```
/// use flora_cluster::config::parse_seconds;
/// assert_eq!(parse_seconds("2.5"), Ok(2.5));
/// for bad in ["nan", "inf", "-1", "0", "1e30", "soon"] {
///     assert!(parse_seconds(bad).is_err(), "{bad}");
/// }
/// ```
///
/// # Errors
/// Not a number, or out of range.
pub fn parse_seconds(text: &str) -> Result<f64, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    check_seconds(secs)
}

/// `secs` as a `Duration`, never panicking: values a validated config cannot hold (NaN,
/// negative, huge) become zero or [`MAX_TIMEOUT_SECS`].
pub(super) fn duration_of(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs.min(MAX_TIMEOUT_SECS)).unwrap_or(Duration::ZERO)
}
