//! The workers, connections and application-metrics tables of the status page.

use super::format::{bytes, count, duration, ms, DASH};
use super::{badge, esc, muted};
use crate::exporter::model::{StatusDoc, WorkerDoc};
use crate::scoreboard::{
    ConnSnapshot, CustomMetricSnapshot, LastRequestSnapshot, RequestSnapshot, SlotSnapshot,
    SlotState,
};

/// A table: its id, heading, columns (`|`-separated; a leading `#` marks a numeric,
/// right-aligned column) and what it says when it has no rows.
pub(super) struct Table {
    pub(super) id: &'static str,
    pub(super) title: &'static str,
    pub(super) columns: &'static str,
    pub(super) empty: &'static str,
}

const WORKERS: Table = Table {
    id: "workers",
    title: "Workers",
    columns: concat!(
        "#Slot|#PID|#Gen|State|#Uptime|#Restarts|#Conns open / total|#Reqs active / total|",
        "#CPU|#RSS|#Lag|Last guard event|Current or last request"
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
    pub(super) fn render(&self, rows: String) -> String {
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
    pub(super) fn row(&self, class: &str, cells: &[String]) -> String {
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

/// Live workers first, then dead slots (dimmed), each in slot order.
pub(super) fn workers_table(doc: &StatusDoc) -> String {
    let mut workers: Vec<&WorkerDoc> = doc.workers.iter().collect();
    workers.sort_by_key(|w| w.slot.state == SlotState::Dead);
    let rows = workers
        .into_iter()
        .map(|w| worker_row(w, doc.now_unix_ms))
        .collect();
    WORKERS.render(rows)
}

fn worker_row(w: &WorkerDoc, now_ms: u64) -> String {
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
        or_dash(s.event_loop_lag_seconds.map(ms)),
        super::guards::last_event(s.last_guard_event.as_ref(), now_ms),
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
    let line = request_line(&r.method, &r.path, r.path_truncated, &r.route);
    let age = duration(r.age_seconds);
    format!("{now} {line} <span class=\"muted\">for {age}</span>")
}

fn last_request(l: &LastRequestSnapshot) -> String {
    let last = badge("idle", "last");
    let line = request_line(&l.method, &l.path, false, &l.route);
    let (status, took) = (status_code(l.status), ms(l.duration_seconds));
    format!("{last} {line} {status} <span class=\"muted\">in {took}</span>")
}

/// Method and path, then the route template when the app set one.
pub(super) fn request_line(method: &str, path: &str, truncated: bool, route: &str) -> String {
    let more = if truncated { "…" } else { "" };
    let route = match route {
        "" => String::new(),
        r => format!(" <code class=\"route\" title=\"route\">{}</code>", esc(r)),
    };
    format!(
        "<code class=\"m\">{}</code> <code class=\"path\">{}{more}</code>{route}",
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

pub(super) fn connections_table(doc: &StatusDoc) -> String {
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
    let line = request_line(&r.method, &r.path, r.path_truncated, &r.route);
    let version = esc(&r.version);
    format!("{line} <span class=\"muted\">{version}</span>{more}")
}

pub(super) fn custom_table(doc: &StatusDoc) -> String {
    let rows: String = doc.custom.iter().map(custom_row).collect();
    CUSTOM.render(rows)
}

fn custom_row(m: &CustomMetricSnapshot) -> String {
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

pub(super) fn chips(infos: &[(String, String)]) -> String {
    infos
        .iter()
        .map(|(k, v)| format!("<span class=\"chip\"><b>{}</b>={}</span>", esc(k), esc(v)))
        .collect()
}
