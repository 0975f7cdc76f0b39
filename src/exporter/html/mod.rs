//! The HTML status page (`GET /server-status`), in the spirit of Apache's `mod_status` but
//! readable at a glance: a header with the instance, its last reload and its last master
//! upgrade, summary cards, charts of the last 15 minutes, one row per worker, one row per open connection with its in-flight
//! request, and the guards' recycles, kills and kill records.
//!
//! [`render`] is a pure function of the [`StatusDoc`]. The page is self-contained: one inline
//! stylesheet, no scripts, no images, no external assets, so it works offline and under a
//! strict `Content-Security-Policy` (`default-src 'none'; style-src 'unsafe-inline'`).
//!
//! Request methods and paths, app infos, the instance name and reload reasons come from
//! clients or operators: every string taken from the document goes through [`escape_html`].
//! Numbers are formatted here and need no escaping.
//!
//! `tables.rs` writes the three tables, `listeners.rs` the accept queues, `guards.rs` the
//! guards' counts and kill records, `canary.rs` the last canary reload's comparison,
//! `upgrade.rs` the last master upgrade, `charts/` the history's SVG charts, `format.rs` the numbers, sizes, durations and times.

mod canary;
mod charts;
mod format;
mod guards;
mod listeners;
mod tables;
mod upgrade;

use std::borrow::Cow;

use self::escape_html as esc;
use super::model::StatusDoc;
use crate::scoreboard::StatusCounts;
use format::{bytes, count, duration, ms, utc, DASH};
use tables::{connections_table, custom_table, workers_table};

/// Shortest automatic reload interval, seconds.
pub const MIN_REFRESH_SECS: u32 = 1;
/// Longest automatic reload interval, seconds.
pub const MAX_REFRESH_SECS: u32 = 3600;

/// Options of the page.
#[derive(Debug, Clone, Copy, Default)]
pub struct HtmlOptions {
    /// Seconds between automatic reloads of the page (`?refresh=N`), clamped to 1..=3600.
    /// Defaults to none (no reload).
    pub refresh: Option<u32>,
}

impl HtmlOptions {
    /// The reload interval, clamped to [`MIN_REFRESH_SECS`]..=[`MAX_REFRESH_SECS`].
    pub fn refresh_secs(&self) -> Option<u32> {
        self.refresh
            .map(|n| n.clamp(MIN_REFRESH_SECS, MAX_REFRESH_SECS))
    }
}

/// Escapes text for HTML element content and quoted attribute values (`& < > " '`).
/// Borrows when there is nothing to escape.
pub fn escape_html(s: &str) -> Cow<'_, str> {
    if !s.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Renders the page: a pure function of the document.
pub fn render(doc: &StatusDoc, opts: &HtmlOptions) -> String {
    let refresh = opts.refresh_secs();
    let meta = refresh.map_or_else(String::new, |n| {
        format!("<meta http-equiv=\"refresh\" content=\"{n}\">")
    });
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">{meta}\
         <title>{} · server status</title><style>{STYLE}</style></head>\n<body><main>\n\
         {}{}{}{}{}{}{}{}{}{}</main></body></html>\n",
        esc(&doc.instance),
        header(doc),
        cards(doc),
        charts::section(&doc.history, doc.now_unix_ms),
        listeners::table(doc),
        canary::section(doc),
        workers_table(doc),
        connections_table(doc),
        guards::section(doc),
        custom_table(doc),
        footer(doc, refresh)
    )
}

fn header(doc: &StatusDoc) -> String {
    let (up, now) = (duration(doc.uptime_seconds), utc(doc.now_unix_ms));
    format!(
        "<header class=\"top\"><div><h1>{}<small>server status</small></h1>\
         <p class=\"meta\">{} · master pid <b>{}</b> · up <b>{up}</b> · generation <b>{}</b> \
         · as of {now}</p></div>{}{}</header>\n",
        esc(&doc.instance),
        esc(&doc.server_version),
        doc.master_pid,
        doc.generation,
        reload_box(doc),
        upgrade::upgrade_box(doc)
    )
}

fn reload_box(doc: &StatusDoc) -> String {
    let r = &doc.reloads;
    let last = r.last.as_ref().map_or_else(
        || muted("none since start"),
        |l| {
            let ago = duration(doc.now_unix_ms.saturating_sub(l.finished_unix_ms) as f64 / 1e3);
            let reason = if l.reason.is_empty() {
                String::new()
            } else {
                format!("<div class=\"reason\">{}</div>", esc(&l.reason))
            };
            let badge = badge(outcome_class(&l.outcome), &l.outcome);
            let when = utc(l.finished_unix_ms);
            format!(
                "{badge} to generation <b>{}</b> <span class=\"muted\">{ago} ago, {when}</span>\
                 {reason}",
                l.generation
            )
        },
    );
    let (ok, back) = (count(r.success), count(r.rollback));
    format!(
        "<div class=\"reload\"><div class=\"label\">Last reload</div><div>{last}</div>\
         <div class=\"muted small\">{ok} succeeded · {back} rolled back</div></div>"
    )
}

fn outcome_class(outcome: &str) -> &'static str {
    match outcome {
        "success" => "ok",
        "rollback" => "bad",
        _ => "idle",
    }
}

/// A coloured pill; `class` is one of ours, never from the document.
fn badge(class: &str, text: &str) -> String {
    format!("<span class=\"badge b-{class}\">{}</span>", esc(text))
}

fn muted(text: &str) -> String {
    format!("<span class=\"muted\">{}</span>", esc(text))
}

fn card(label: &str, value: &str, sub: &str) -> String {
    format!(
        "<div class=\"card\"><div class=\"label\">{label}</div><div class=\"v\">{value}</div>\
         <div class=\"s\">{sub}</div></div>"
    )
}

fn cards(doc: &StatusDoc) -> String {
    let (t, r) = (&doc.totals, &doc.rates);
    let overflow = match t.counters.conn_overflow {
        0 => String::new(),
        n => format!(" ({} not listed)", count(n)),
    };
    let per_s = format!("{:.2} req/s", r.requests_per_second);
    let rates = format!(
        "{}/s · {}/req",
        bytes(r.bytes_sent_per_second),
        bytes(r.bytes_per_request)
    );
    let open = format!(
        "{} connections open{overflow}",
        count(t.counters.conns_open)
    );
    let ready = format!(
        "{} <small>/ {}</small>",
        t.workers_ready, doc.target_workers
    );
    let (st, dr, re) = (t.workers_starting, t.workers_draining, t.restarts);
    let others = format!("{st} starting · {dr} draining<br>{re} restarts");
    let all = [
        card("Requests", &count(t.counters.requests_total), &per_s),
        card("Bytes sent", &bytes(t.counters.bytes_out as f64), &rates),
        card("In flight", &count(t.counters.requests_active), &open),
        card("Workers ready", &ready, &others),
        latency_card(doc),
        status_card(&t.counters.status, &t.counters.codes),
    ];
    format!("<section class=\"cards\">{}</section>\n", all.concat())
}

fn latency_card(doc: &StatusDoc) -> String {
    let Some(l) = &doc.latency else {
        return card("Latency mean", DASH, "no request finished yet");
    };
    let quantiles: String = [
        ("p50", l.p50_seconds),
        ("p90", l.p90_seconds),
        ("p99", l.p99_seconds),
    ]
    .iter()
    .map(|(name, secs)| format!("<span>{name}<b>{}</b></span>", ms(*secs)))
    .collect();
    let sub = format!("<span class=\"q\">{quantiles}</span>");
    card("Latency mean", &ms(l.mean_seconds), &sub)
}

/// Responses by class as a stacked bar with a legend; CSS class `cN` colours class `N`xx
/// (`c6` = other); under it the exact codes seen.
fn status_card(status: &[u64], codes: &StatusCounts) -> String {
    const NAMES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];
    // Counts come from shared memory and may be anything: sum as floats, never overflow.
    let total = status.iter().map(|&n| n as f64).sum::<f64>().max(1.0);
    let (mut bar, mut legend) = (String::new(), String::new());
    for (i, (name, &n)) in (1..).zip(NAMES.iter().zip(status)) {
        if n == 0 && *name == "other" {
            continue;
        }
        let pct = n as f64 * 100.0 / total;
        bar += &format!("<i class=\"c{i}\" style=\"width:{pct:.2}%\" title=\"{name}: {n}\"></i>");
        legend += &format!(
            "<span><i class=\"dot c{i}\"></i>{name} <b>{}</b></span>",
            count(n)
        );
    }
    let exact: String = codes
        .seen()
        .map(|(code, n)| format!("<span>{code} <b>{}</b></span>", count(n)))
        .collect();
    format!(
        "<div class=\"card\"><div class=\"label\">Responses</div>\
         <div class=\"bar\">{bar}</div><div class=\"legend\">{legend}</div>\
         <div class=\"legend codes\">{exact}</div></div>"
    )
}

fn footer(doc: &StatusDoc, refresh: Option<u32>) -> String {
    let reload = match refresh {
        Some(n) => format!("Reloads every {n} s (<a href=\"?\">stop</a>)."),
        None => "Not reloading (<a href=\"?refresh=5\">every 5 s</a>).".to_string(),
    };
    format!(
        "<footer>{reload} Generated {} by {}. Also as <a href=\"?auto\">?auto</a> · \
         <a href=\"/server-status.json\">/server-status.json</a> · \
         <a href=\"/metrics\">/metrics</a></footer>\n",
        utc(doc.now_unix_ms),
        esc(&doc.server_version)
    )
}

/// The only stylesheet: a light theme, system fonts, no external resources.
const STYLE: &str = include_str!("status-page.css");

#[cfg(test)]
mod tests;
