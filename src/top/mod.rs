//! `flora-cluster top`: a live terminal view read straight from the scoreboard segment.
//!
//! - `view.rs`: the view model, pure: two [`Sample`]s an interval apart become a [`View`]
//!   (rates are differences, p50/p99 come from the histogram's growth over the interval);
//! - `render.rs`: [`render`], pure: a view as text lines fitted to a width and height, every
//!   control character from the scoreboard replaced;
//! - `term.rs`: raw mode, the alternate screen and the restore on every way out;
//! - `run.rs`: sampling (`/proc` for CPU and memory), keys, signals, the loop, and `--once`.
//!
//! # Example
//! ```
//! use flora_cluster::scoreboard::{Scoreboard, SlotState};
//! use flora_cluster::top::{render, Sample, SortKey, View};
//!
//! let sb = Scoreboard::create_sealed("web", 2).unwrap();
//! sb.writer(0).unwrap().set_state(SlotState::Ready);
//! let first = Sample { snap: sb.snapshot(), procs: Default::default() };
//! let conn = sb.writer(0).unwrap().conn_open("127.0.0.1:50000".parse().unwrap());
//! let _slow = conn.request_begin("GET", "/report", 11);
//! let second = Sample { snap: sb.snapshot(), procs: Default::default() };
//! let view = View::between(&first, &second, SortKey::Requests);
//! let lines = render(&view, 100, 30);
//! assert!(lines.iter().any(|l| l.contains("GET /report")));
//! assert!(lines.iter().all(|l| l.chars().count() <= 100));
//! ```

mod render;
mod run;
mod term;
#[cfg(test)]
mod tests;
mod view;

pub use render::{char_width, clean, fit, render, text_width};
pub use run::{once, print, run, sample, Exit, DEFAULT_WIDTH};
pub use view::{sort_workers, ClusterLine, RequestRow, Sample, SortKey, View, WorkerRow};

/// The terminal size of stdout when it is a terminal: `(columns, rows)`.
///
/// ```
/// // Under `cargo test` stdout is usually a pipe: no size.
/// let width = flora_cluster::top::stdout_size().map_or(120, |(w, _)| usize::from(w));
/// assert!(width > 0);
/// ```
pub fn stdout_size() -> Option<(u16, u16)> {
    crate::scoreboard::raw::tty::window_size(std::io::stdout())
}

/// Shortest `--interval`: a faster view would mostly show noise.
pub const MIN_INTERVAL_SECS: f64 = 0.1;

/// Parses `--interval`: seconds as every duration flag ([`crate::config::parse_seconds`]),
/// at least [`MIN_INTERVAL_SECS`].
///
/// ```
/// assert_eq!(flora_cluster::top::parse_interval("2"), Ok(2.0));
/// assert!(flora_cluster::top::parse_interval("0.01").is_err());
/// assert!(flora_cluster::top::parse_interval("NaN").is_err());
/// ```
pub fn parse_interval(text: &str) -> Result<f64, String> {
    let secs = crate::config::parse_seconds(text)?;
    if secs < MIN_INTERVAL_SECS {
        return Err(format!(
            "{text:?}: the interval must be at least {MIN_INTERVAL_SECS} s"
        ));
    }
    Ok(secs)
}
