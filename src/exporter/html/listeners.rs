//! The "Listeners" table of the status page: each listening socket's accept queue (length
//! against its limit, the peak since the last scrape, drops). Listener names (Unix paths)
//! go through [`super::escape_html`].

use super::format::{count, DASH};
use super::tables::Table;
use super::{badge, esc, muted};
use crate::exporter::model::StatusDoc;
use crate::scoreboard::ListenQueueSnapshot;

const LISTENERS: Table = Table {
    id: "listeners",
    title: "Listeners",
    columns: "Listener|#Accept queue|#Peak since scrape|#Limit|#Dropped",
    empty: "No listener sampled yet",
};

/// Share of the limit from which a queue is shown as a warning (as the shipped alert).
const WARN_FILL: f64 = 0.8;

/// The table.
pub(super) fn table(doc: &StatusDoc) -> String {
    let rows: String = doc.listen_queues.iter().map(row).collect();
    LISTENERS.render(rows)
}

fn row(q: &ListenQueueSnapshot) -> String {
    let fill = q.fill_ratio();
    let (class, state) = if q.limit > 0 && q.length >= q.limit {
        ("bad", Some(badge("bad", "full")))
    } else if fill >= WARN_FILL {
        ("warn", Some(badge("warn", "filling")))
    } else {
        ("", None)
    };
    let queue = format!(
        "{}{} <span class=\"muted\">({:.0} %)</span>",
        state.map(|b| b + " ").unwrap_or_default(),
        count(q.length),
        fill * 100.0
    );
    let cells = [
        format!("<code>{}</code>", esc(&q.listener)),
        queue,
        count(q.peak),
        count(q.limit),
        q.drops.map_or_else(|| muted(DASH), count),
    ];
    LISTENERS.row(class, &cells)
}
