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
         {}{}{}{}{}</main></body></html>\n",
        esc(&doc.instance),
        header(doc),
        cards(doc),
        workers_table(doc),
        connections_table(doc),
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
    let overflow = match t.conn_overflow {
        0 => String::new(),
        n => format!(" ({} not listed)", count(n)),
    };
    let per_s = format!("{:.2} req/s", r.requests_per_second);
    let rates = format!(
        "{}/s · {}/req",
        bytes(r.bytes_sent_per_second),
        bytes(r.bytes_per_request)
    );
    let open = format!("{} connections open{overflow}", count(t.conns_open));
    let ready = format!(
        "{} <small>/ {}</small>",
        t.workers_ready, doc.target_workers
    );
    let (st, dr, re) = (t.workers_starting, t.workers_draining, t.restarts);
    let others = format!("{st} starting · {dr} draining · {re} restarts");
    let all = [
        card("Requests", &count(t.requests_total), &per_s),
        card("Bytes sent", &bytes(t.bytes_out as f64), &rates),
        card("In flight", &count(t.requests_active), &open),
        card("Workers ready", &ready, &others),
        latency_card(doc),
        status_card(&t.status),
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
    let total = status.iter().sum::<u64>().max(1) as f64;
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
        format!("{} / {}", count(s.conns_open), count(s.conns_total)),
        format!("{} / {}", count(s.requests_active), count(s.requests_total)),
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
    let note = match doc.totals.conn_overflow {
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
const STYLE: &str = "\
:root{--bg:#f5f6f8;--card:#fff;--ink:#111827;--muted:#6b7280;--line:#e5e7eb;--head:#f9fafb;\
--accent:#2563eb;--ok:#047857;--okbg:#d1fae5;--warn:#b45309;--warnbg:#fef3c7;--bad:#b91c1c;\
--badbg:#fee2e2;--info:#1d4ed8;--infobg:#dbeafe;--idle:#4b5563;--idlebg:#f3f4f6;\
--mono:ui-monospace,SFMono-Regular,Menlo,Consolas,'Liberation Mono',monospace}\
*{box-sizing:border-box}body{margin:0;background:var(--bg);color:var(--ink);\
font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif}\
main{max-width:1400px;margin:0 auto;padding:20px 24px 28px}a{color:var(--accent);\
text-decoration:none}a:hover{text-decoration:underline}.muted{color:var(--muted)}\
.top{display:flex;flex-wrap:wrap;gap:16px;justify-content:space-between;align-items:flex-start;\
margin-bottom:18px}h1{margin:0;font-size:24px;font-weight:700;letter-spacing:-.01em}\
h1 small{font-size:15px;font-weight:500;color:var(--muted);margin-left:10px}\
h2{font-size:16px;font-weight:650;margin:26px 0 10px}.meta{margin:6px 0 0;color:var(--muted)}\
.meta b{color:var(--ink);font-weight:600}.small{font-size:12.5px;margin-top:2px}\
.reload{background:var(--card);border:1px solid var(--line);border-radius:10px;\
padding:10px 14px;min-width:300px;max-width:560px}\
.reason{margin-top:4px;color:var(--bad);overflow-wrap:anywhere}\
.label{font-size:11.5px;font-weight:600;text-transform:uppercase;letter-spacing:.05em;\
color:var(--muted);margin-bottom:2px}\
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(175px,1fr));gap:12px}\
.card,.tw{background:var(--card);border:1px solid var(--line);border-radius:10px;\
box-shadow:0 1px 2px rgba(0,0,0,.04)}.card{padding:12px 14px}\
.v{font-size:26px;font-weight:700;font-variant-numeric:tabular-nums;margin:2px 0}\
.v small{font-size:15px;color:var(--muted);font-weight:500}\
.s{color:var(--muted);font-size:12.5px}.s b{color:var(--ink);font-weight:600}\
.q{display:grid;grid-template-columns:repeat(3,1fr);gap:6px;font-size:11.5px}\
.q b{display:block;font-size:12.5px;white-space:nowrap}\
.bar{display:flex;height:10px;border-radius:5px;overflow:hidden;background:var(--line);\
margin:10px 0 8px}.bar i{display:block}\
.legend{display:flex;flex-wrap:wrap;gap:2px 10px;font-size:12px;color:var(--muted)}\
.legend b{color:var(--ink);font-variant-numeric:tabular-nums}\
.dot{display:inline-block;width:9px;height:9px;border-radius:50%;margin-right:5px}\
.c1,.c6{background:#94a3b8}.c2{background:#10b981}.c3{background:#3b82f6}\
.c4{background:#f59e0b}.c5{background:#ef4444}.tw{overflow-x:auto}\
table{width:100%;border-collapse:collapse}\
th,td{padding:7px 12px;text-align:left;vertical-align:middle;border-bottom:1px solid var(--line)}\
th{background:var(--head);font-size:11.5px;font-weight:600;color:var(--muted);\
text-transform:uppercase;letter-spacing:.04em;white-space:nowrap}\
tbody tr:last-child td{border-bottom:0}tbody tr:hover{background:#fafbfc}tr.dim td{opacity:.55}\
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}\
.empty{text-align:center;color:var(--muted);padding:18px}\
code{font:12.5px/1.4 var(--mono)}code.m{font-weight:700}.path{overflow-wrap:anywhere}\
.badge{display:inline-block;padding:1px 9px;border-radius:999px;font-size:12px;font-weight:600;\
line-height:18px;white-space:nowrap}.b-ready,.b-ok{background:var(--okbg);color:var(--ok)}\
.b-starting,.b-live{background:var(--infobg);color:var(--info)}\
.b-draining{background:var(--warnbg);color:var(--warn)}\
.b-dead,.b-bad{background:var(--badbg);color:var(--bad)}\
.b-empty,.b-idle{background:var(--idlebg);color:var(--idle)}\
.st{font:600 12.5px var(--mono);background:none}.st.c1,.st.c6{color:var(--idle)}\
.st.c2{color:var(--ok)}.st.c3{color:var(--info)}.st.c4{color:var(--warn)}.st.c5{color:var(--bad)}\
.chip{display:inline-block;background:#eef2ff;color:#3730a3;border-radius:6px;padding:1px 7px;\
margin:1px 4px 1px 0;font:12px var(--mono);overflow-wrap:anywhere}.chip b{font-weight:700}\
.note{margin:8px 2px 0;color:var(--warn);font-size:13px}\
footer{margin-top:26px;color:var(--muted);font-size:12.5px}\
@media (max-width:700px){main{padding:14px}}";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exporter::procfs::ProcStats;
    use crate::scoreboard::Scoreboard;
    use proptest::prelude::*;

    /// A document from a real scoreboard: two ready workers; slot 0 has a connection with an
    /// in-flight request carrying an info, slot 1 finished a request and closed its connection.
    fn sample_doc() -> StatusDoc {
        let dir = tempfile::tempdir().expect("tempdir");
        let sb = Scoreboard::create(&dir.path().join("s"), "web-1", 3).expect("create");
        sb.set_generation(2);
        sb.set_target_workers(2);
        sb.record_reload(false, 2, Some("worker 1 not ready in 30s"));
        for i in 0..2 {
            sb.slot_spawned(i, 4100 + i as u32, 2);
            sb.writer(i).expect("writer").set_state(SlotState::Ready);
        }
        let done = sb
            .writer(1)
            .expect("writer")
            .conn_open(([127, 0, 0, 1], 50001).into());
        done.request_begin("GET", "/done", 11).finish(404, 2048);
        drop(done);
        let conn = sb
            .writer(0)
            .expect("writer")
            .conn_open(([127, 0, 0, 1], 50000).into());
        conn.request_begin("GET", "/", 11).finish(200, 5);
        let req = conn.request_begin("POST", "/upload/avatar", 11);
        assert!(req.set_info("user", "42"));
        let stats = ProcStats {
            cpu_seconds: 1.25,
            rss_bytes: 12 << 20,
        };
        StatusDoc::build_with(sb.snapshot(), |_pid| Some(stats))
    }

    #[test]
    fn escape_html_table() {
        let cases = [
            ("", ""),
            ("plain /path?x=1", "plain /path?x=1"),
            ("<script>", "&lt;script&gt;"),
            ("a&b", "a&amp;b"),
            ("\"q\" 'a'", "&quot;q&quot; &#39;a&#39;"),
            ("&amp;", "&amp;amp;"),
            ("é<ü>", "é&lt;ü&gt;"),
        ];
        for (input, want) in cases {
            assert_eq!(escape_html(input), want, "{input:?}");
        }
        assert!(matches!(escape_html("safe"), Cow::Borrowed(_)));
    }

    #[test]
    fn human_formats() {
        assert_eq!(
            (count(0), count(1_234_567)),
            ("0".into(), "1,234,567".into())
        );
        assert_eq!(
            (bytes(512.0), bytes(1536.0)),
            ("512 B".into(), "1.5 KiB".into())
        );
        assert_eq!(bytes(12.0 * 1024.0 * 1024.0), "12.0 MiB");
        assert_eq!(
            (duration(4.25), duration(65.0)),
            ("4.2s".into(), "1m 5s".into())
        );
        assert_eq!(duration(183_845.0), "2d 3h 4m 5s");
        assert_eq!(
            (duration(f64::NAN), ms(0.00042)),
            (DASH.into(), "0.42 ms".into())
        );
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_709_210_096_000), "2024-02-29 12:34:56 UTC");
    }

    #[test]
    fn refresh_meta_only_when_asked() {
        let doc = sample_doc();
        let page = |refresh| render(&doc, &HtmlOptions { refresh });
        assert!(!page(None).contains("http-equiv=\"refresh\""));
        assert!(page(Some(5)).contains("<meta http-equiv=\"refresh\" content=\"5\">"));
        assert!(page(Some(0)).contains("content=\"1\""));
        assert!(page(Some(99_999)).contains("content=\"3600\""));
    }

    #[test]
    fn shows_workers_connections_and_reload() {
        let page = render(&sample_doc(), &HtmlOptions::default());
        assert!(page.starts_with("<!doctype html>"));
        for want in [
            "<td class=\"num\">4100</td>",
            "<td class=\"num\">4101</td>",
            "b-ready\">ready</span>",
            "<code class=\"path\">/upload/avatar</code>",
            "<span class=\"chip\"><b>user</b>=42</span>",
            "<code>127.0.0.1:50000</code>",
            "/done</code> <b class=\"st c4\">404</b>",
            "b-bad\">rollback</span>",
            "worker 1 not ready in 30s",
            "12.0 MiB",
            "1.25s",
        ] {
            assert!(page.contains(want), "{want}");
        }
        assert!(!page.to_ascii_lowercase().contains("<script"));
        assert!(!page.contains("://"), "no external assets");
    }

    #[test]
    fn empty_document_renders() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sb = Scoreboard::create(&dir.path().join("s"), "idle", 2).expect("create");
        let page = render(
            &StatusDoc::build_with(sb.snapshot(), |_| None),
            &HtmlOptions::default(),
        );
        assert!(page.contains("No worker started yet") && page.contains("No open connections"));
    }

    /// Renders [`sample_doc`] with `[instance, path, key, value, reason]` put into every
    /// string the page shows.
    fn inject([instance, path, key, value, reason]: [&str; 5]) -> String {
        let mut doc = sample_doc();
        doc.instance = format!("<script>{instance}");
        let conn = &mut doc.workers[0].slot.connections[0];
        let req = conn.request.as_mut().expect("in flight");
        (req.method, req.version) = (path.to_string(), value.to_string());
        req.path = format!("/<script>alert(1)</script>{path}");
        req.infos
            .push((key.to_string(), format!("<script>{value}")));
        let last = doc.workers[1].slot.last_request.as_mut().expect("last");
        (last.method, last.path) = (key.to_string(), path.to_string());
        let reload = doc.reloads.last.as_mut().expect("reload");
        (reload.reason, reload.outcome) = (reason.to_string(), instance.to_string());
        doc.server_version = reason.to_string();
        render(&doc, &HtmlOptions::default())
    }

    fn hostile() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "(<script>|</script>|<img src=x onerror=\"a\">|&|'|\"|<|>|[a-z /])*",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn escaped_output_has_no_markup(s in hostile()) {
            let out = escape_html(&s);
            prop_assert!(!out.contains(['<', '>', '"', '\'']), "{out:?}");
        }

        #[test]
        fn document_strings_cannot_inject(
            instance in hostile(), path in hostile(), key in hostile(), value in hostile(),
            reason in hostile(),
        ) {
            let strings = [instance.as_str(), &path, &key, &value, &reason];
            let page = inject(strings);
            let lower = page.to_ascii_lowercase();
            prop_assert!(!lower.contains("<script") && !lower.contains("<img"));
            // Same markup as with harmless strings: no tag or attribute came from the input.
            let plain = inject(strings.map(|s| if s.is_empty() { "" } else { "x" }));
            for c in ['<', '>', '"', '\''] {
                prop_assert_eq!(page.matches(c).count(), plain.matches(c).count(), "{}", c);
            }
        }
    }
}
