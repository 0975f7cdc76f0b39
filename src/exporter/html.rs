//! The HTML status page (`GET /server-status`), in the spirit of Apache's `mod_status` but
//! readable at a glance: a header with the instance and its last reload, summary cards, one
//! row per worker and one row per open connection with its in-flight request.
//!
//! [`render`] is a pure function of the [`StatusDoc`]. The page is self-contained: one inline
//! stylesheet, no scripts, no images, no external assets, so it works offline and under a
//! strict `Content-Security-Policy` (`default-src 'none'; style-src 'unsafe-inline'`).
//!
//! Request methods and paths, app infos, the instance name and reload reasons come from
//! clients or operators: every string taken from the document goes through [`escape_html`].
//! Numbers are formatted here and need no escaping.

use std::borrow::Cow;

use self::escape_html as esc;
use super::model::{StatusDoc, WorkerDoc};
use crate::scoreboard::{
    ConnSnapshot, LastRequestSnapshot, RequestSnapshot, SlotSnapshot, SlotState,
};

/// Shortest automatic reload interval, seconds.
pub const MIN_REFRESH_SECS: u32 = 1;
/// Longest automatic reload interval, seconds.
pub const MAX_REFRESH_SECS: u32 = 3600;

/// Shown where a value is unknown or does not apply.
const DASH: &str = "–";

/// A table: its id, heading, columns (`|`-separated; a leading `#` marks a numeric,
/// right-aligned column) and what it says when it has no rows.
struct Table {
    id: &'static str,
    title: &'static str,
    columns: &'static str,
    empty: &'static str,
}

const WORKERS: Table = Table {
    id: "workers",
    title: "Workers",
    columns: concat!(
        "#Slot|#PID|#Gen|State|#Uptime|#Restarts|#Conns open / total|#Reqs active / total|",
        "#CPU|#RSS|Current or last request"
    ),
    empty: "No worker started yet",
};

const CONNECTIONS: Table = Table {
    id: "connections",
    title: "Open connections",
    columns: "#Slot|Client|#Age|#Idle|#Reqs|In-flight request|#For|Infos",
    empty: "No open connections",
};

const CUSTOM: Table = Table {
    id: "custom",
    title: "Application metrics",
    columns: "Metric|Labels|Kind|#Value|Per worker",
    empty: "No custom metrics registered",
};

impl Table {
    /// Headings with whether each column is numeric.
    fn columns(&self) -> impl Iterator<Item = (&'static str, bool)> {
        let columns: &'static str = self.columns;
        columns
            .split('|')
            .map(|c| c.strip_prefix('#').map_or((c, false), |name| (name, true)))
    }

    /// The whole table under its heading; `rows` are `<tr>`s made by [`Table::row`].
    fn render(&self, rows: String) -> String {
        let heads: String = self
            .columns()
            .map(|(name, num)| format!("<th{}>{name}</th>", align(num)))
            .collect();
        let rows = if rows.is_empty() {
            let (n, empty) = (self.columns().count(), self.empty);
            format!("<tr><td colspan=\"{n}\" class=\"empty\">{empty}</td></tr>")
        } else {
            rows
        };
        format!(
            "<h2>{}</h2><div class=\"tw\"><table id=\"{}\"><thead><tr>{heads}</tr></thead>\
             <tbody>{rows}</tbody></table></div>\n",
            self.title, self.id
        )
    }

    /// One `<tr>` of already-escaped cells, aligned as the columns say.
    fn row(&self, class: &str, cells: &[String]) -> String {
        let tds: String = self
            .columns()
            .zip(cells)
            .map(|((_, num), cell)| format!("<td{}>{cell}</td>", align(num)))
            .collect();
        format!("<tr class=\"{class}\">{tds}</tr>\n")
    }
}

fn align(numeric: bool) -> &'static str {
    if numeric {
        " class=\"num\""
    } else {
        ""
    }
}

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
         {}{}{}{}{}{}</main></body></html>\n",
        esc(&doc.instance),
        header(doc),
        cards(doc),
        workers_table(doc),
        connections_table(doc),
        custom_table(doc),
        footer(doc, refresh)
    )
}

fn header(doc: &StatusDoc) -> String {
    let (up, now) = (duration(doc.uptime_seconds), utc(doc.now_unix_ms));
    format!(
        "<header class=\"top\"><div><h1>{}<small>server status</small></h1>\
         <p class=\"meta\">{} · master pid <b>{}</b> · up <b>{up}</b> · generation <b>{}</b> \
         · as of {now}</p></div>{}</header>\n",
        esc(&doc.instance),
        esc(&doc.server_version),
        doc.master_pid,
        doc.generation,
        reload_box(doc)
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
        status_card(&t.counters.status),
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
/// (`c6` = other).
fn status_card(status: &[u64]) -> String {
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
    format!(
        "<div class=\"card\"><div class=\"label\">Responses</div>\
         <div class=\"bar\">{bar}</div><div class=\"legend\">{legend}</div></div>"
    )
}

/// Live workers first, then dead slots (dimmed), each in slot order.
fn workers_table(doc: &StatusDoc) -> String {
    let mut workers: Vec<&WorkerDoc> = doc.workers.iter().collect();
    workers.sort_by_key(|w| w.slot.state == SlotState::Dead);
    let rows = workers.into_iter().map(worker_row).collect();
    WORKERS.render(rows)
}

fn worker_row(w: &WorkerDoc) -> String {
    let s = &w.slot;
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| DASH.to_string());
    let cells = [
        s.index.to_string(),
        or_dash((s.pid != 0).then(|| s.pid.to_string())),
        s.generation.to_string(),
        badge(s.state.as_str(), s.state.as_str()),
        or_dash(w.uptime_seconds.map(duration)),
        count(s.restarts),
        format!(
            "{} / {}",
            count(s.counters.conns_open),
            count(s.counters.conns_total)
        ),
        format!(
            "{} / {}",
            count(s.counters.requests_active),
            count(s.counters.requests_total)
        ),
        or_dash(w.process.map(|p| format!("{:.2}s", p.cpu_seconds))),
        or_dash(w.process.map(|p| bytes(p.rss_bytes as f64))),
        worker_request(s),
    ];
    let class = if s.state == SlotState::Dead {
        "dim"
    } else {
        ""
    };
    WORKERS.row(class, &cells)
}

/// The worker's first in-flight request, or else the last one it finished.
fn worker_request(s: &SlotSnapshot) -> String {
    let Some(r) = s.connections.iter().find_map(|c| c.request.as_ref()) else {
        return s
            .last_request
            .as_ref()
            .map_or_else(|| muted(DASH), last_request);
    };
    let now = badge("live", "now");
    let line = request_line(&r.method, &r.path, r.path_truncated);
    let age = duration(r.age_seconds);
    format!("{now} {line} <span class=\"muted\">for {age}</span>")
}

fn last_request(l: &LastRequestSnapshot) -> String {
    let last = badge("idle", "last");
    let line = request_line(&l.method, &l.path, false);
    let (status, took) = (status_code(l.status), ms(l.duration_seconds));
    format!("{last} {line} {status} <span class=\"muted\">in {took}</span>")
}

fn request_line(method: &str, path: &str, truncated: bool) -> String {
    let more = if truncated { "…" } else { "" };
    format!(
        "<code class=\"m\">{}</code> <code class=\"path\">{}{more}</code>",
        esc(method),
        esc(path)
    )
}

fn status_code(status: u16) -> String {
    match status {
        0 => muted("no response"),
        100..=599 => format!("<b class=\"st c{}\">{status}</b>", status / 100),
        _ => format!("<b class=\"st c6\">{status}</b>"),
    }
}

fn connections_table(doc: &StatusDoc) -> String {
    let rows = doc
        .workers
        .iter()
        .flat_map(|w| w.slot.connections.iter().map(|c| conn_row(w.slot.index, c)))
        .collect();
    let note = match doc.totals.counters.conn_overflow {
        0 => String::new(),
        n => format!(
            "<p class=\"note\">{} more open connections are not listed: their workers' tables \
             were full.</p>\n",
            count(n)
        ),
    };
    CONNECTIONS.render(rows) + &note
}

fn conn_row(slot: usize, c: &ConnSnapshot) -> String {
    let (request, age, infos) = match &c.request {
        Some(r) => (conn_request(r), duration(r.age_seconds), chips(&r.infos)),
        None => (muted("idle"), DASH.to_string(), String::new()),
    };
    let cells = [
        slot.to_string(),
        format!("<code>{}</code>", esc(&c.client.to_string())),
        duration(c.age_seconds),
        duration(c.idle_seconds),
        count(c.requests),
        request,
        age,
        infos,
    ];
    CONNECTIONS.row("", &cells)
}

fn conn_request(r: &RequestSnapshot) -> String {
    let more = match r.in_flight {
        0 | 1 => String::new(),
        n => format!(" <span class=\"muted\">+{} more</span>", n - 1),
    };
    let line = request_line(&r.method, &r.path, r.path_truncated);
    let version = esc(&r.version);
    format!("{line} <span class=\"muted\">{version}</span>{more}")
}

fn custom_table(doc: &StatusDoc) -> String {
    let rows: String = doc.custom.iter().map(custom_row).collect();
    CUSTOM.render(rows)
}

fn custom_row(m: &crate::scoreboard::CustomMetricSnapshot) -> String {
    let kind = match m.aggregation {
        Some(a) => format!("{} <span class=\"muted\">({a})</span>", m.kind),
        None => m.kind.to_string(),
    };
    let value = match (&m.histogram, m.value) {
        (Some(h), Some(n)) => {
            let mean = if n > 0.0 { h.sum / n } else { 0.0 };
            format!(
                "{} obs · mean {}",
                count(n as u64),
                esc(&format!("{mean:.4}"))
            )
        }
        (None, Some(v)) => esc(&format!("{v}")).into_owned(),
        _ => DASH.to_string(),
    };
    let per_worker: String = m
        .per_worker
        .iter()
        .map(|w| {
            format!(
                "<span class=\"chip\"><b>{}</b>={}</span>",
                w.slot,
                esc(&format!("{}", w.value))
            )
        })
        .collect();
    let cells = [
        format!("<code>{}</code>", esc(&m.name)),
        chips(&m.labels),
        kind,
        value,
        per_worker,
    ];
    CUSTOM.row("", &cells)
}

fn chips(infos: &[(String, String)]) -> String {
    infos
        .iter()
        .map(|(k, v)| format!("<span class=\"chip\"><b>{}</b>={}</span>", esc(k), esc(v)))
        .collect()
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

/// `12,345`.
fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `512 B`, `1.5 KiB`, `3.2 MiB`, …
fn bytes(n: f64) -> String {
    let (mut v, mut unit) = (n, "B");
    for next in ["KiB", "MiB", "GiB", "TiB", "PiB"] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = next;
    }
    if unit == "B" {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {unit}")
    }
}

/// Milliseconds with a precision that suits the size: `0.42 ms`, `12.3 ms`, `1234 ms`.
fn ms(secs: f64) -> String {
    let ms = secs * 1000.0;
    let digits = match ms {
        m if m < 10.0 => 2,
        m if m < 1000.0 => 1,
        _ => 0,
    };
    format!("{ms:.digits$} ms")
}

/// `4.2s`, `5m 3s`, `2d 3h 4m 5s`.
fn duration(secs: f64) -> String {
    if secs.is_nan() || secs < 0.0 {
        return DASH.to_string();
    }
    if secs < 10.0 {
        return format!("{secs:.1}s");
    }
    let s = secs as u64;
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m {s}s"),
        _ => format!("{d}d {h}h {m}m {s}s"),
    }
}

/// `2024-05-01 12:34:56 UTC` from milliseconds since the epoch.
fn utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let (hh, mm, ss) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02} UTC")
}

/// Year, month, day of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The only stylesheet: a light theme, system fonts, no external resources.
const STYLE: &str = include_str!("status-page.css");

#[cfg(test)]
#[path = "html_tests.rs"]
mod tests;
