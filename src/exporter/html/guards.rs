//! The "Guards" section of the status page: recycles and kills by reason, then the kill
//! records (newest first) with the requests the worker had in flight and its threads, and
//! the cell of a slot's last guard event in the workers table. Every string from a record
//! (paths, infos, thread names, `wchan`, details) goes through [`super::escape_html`].

use super::format::{count, duration, utc, DASH};
use super::tables::{chips, request_line, Table};
use super::{badge, esc, muted};
use crate::exporter::model::StatusDoc;
use crate::scoreboard::{GuardEvent, GuardKind, KillRecord, ThreadSnapshot};

const KILLS: Table = Table {
    id: "kills",
    title: "Kill records",
    columns: "When|#Slot|#PID|#Gen|Reason|Requests in flight|Threads",
    empty: "No worker was killed",
};

/// The badge class of a guard event (ours, never from the document).
fn class(kind: GuardKind) -> &'static str {
    match kind {
        GuardKind::Kill => "bad",
        GuardKind::Recycle => "warn",
    }
}

/// `kill heartbeat 3m 5s ago`, or a dash.
pub(super) fn last_event(event: Option<&GuardEvent>, now_ms: u64) -> String {
    let Some(e) = event else {
        return muted(DASH);
    };
    let ago = duration(now_ms.saturating_sub(e.unix_ms) as f64 / 1e3);
    format!(
        "{} {} <span class=\"muted\" title=\"{}\">{ago} ago</span>",
        badge(class(e.kind), e.kind.as_str()),
        esc(&e.reason),
        utc(e.unix_ms)
    )
}

/// The section: counts as cards, then the kill records.
pub(super) fn section(doc: &StatusDoc) -> String {
    let Some(g) = &doc.guards else {
        return "<h2>Guards</h2><p class=\"muted\">The guards' records are kept by the master; \
                this view could not get them.</p>\n"
            .into();
    };
    let by = |pairs: &[(&str, u64)]| -> String {
        pairs
            .iter()
            .map(|(reason, n)| format!("{reason} <b>{}</b>", count(*n)))
            .collect::<Vec<_>>()
            .join(" · ")
    };
    let recycles = g.recycles.by_reason();
    let kills = g.kills.by_reason();
    let total =
        |pairs: &[(&str, u64)]| count(pairs.iter().fold(0u64, |a, p| a.saturating_add(p.1)));
    // Autoscaling's target changes, once there are any.
    let scale = g.scale_events;
    let scale_card = (scale.total() > 0).then(|| {
        let pairs: Vec<String> = scale
            .by_label()
            .iter()
            .map(|(d, r, n)| format!("{d} {r} <b>{}</b>", count(*n)))
            .collect();
        super::card("Scale events", &count(scale.total()), &pairs.join(" · "))
    });
    let cards = format!(
        "<section class=\"cards\">{}{}{}</section>\n",
        super::card("Recycles", &total(&recycles), &by(&recycles)),
        super::card("Kills", &total(&kills), &by(&kills)),
        scale_card.unwrap_or_default(),
    );
    let rows: String = g
        .kill_records
        .iter()
        .rev()
        .map(|r| record_row(r, doc.now_unix_ms))
        .collect();
    format!("<h2>Guards</h2>{cards}{}", KILLS.render(rows))
}

fn record_row(r: &KillRecord, now_ms: u64) -> String {
    let ago = duration(now_ms.saturating_sub(r.unix_ms) as f64 / 1e3);
    let reason = format!(
        "{} <div class=\"muted small\">{}</div>",
        badge("bad", &r.reason),
        esc(&r.detail)
    );
    let cells = [
        format!(
            "{}<div class=\"muted small\">{ago} ago</div>",
            utc(r.unix_ms)
        ),
        r.slot.to_string(),
        r.pid.to_string(),
        r.generation.to_string(),
        reason,
        requests(r),
        threads(&r.threads),
    ];
    KILLS.row("", &cells)
}

fn requests(r: &KillRecord) -> String {
    if r.requests.is_empty() {
        return muted("none");
    }
    let items: String = r
        .requests
        .iter()
        .map(|k| {
            let q = &k.request;
            let line = request_line(&q.method, &q.path, q.path_truncated, &q.route);
            format!(
                "<li>{line} <span class=\"muted\">for {} from <code>{}</code></span> {}</li>",
                duration(q.age_seconds),
                esc(&k.client.to_string()),
                chips(&q.infos)
            )
        })
        .collect();
    format!("<ul class=\"kr\">{items}</ul>")
}

fn threads(threads: &[ThreadSnapshot]) -> String {
    if threads.is_empty() {
        return muted(DASH);
    }
    let rows: String = threads
        .iter()
        .map(|t| {
            format!(
                "<tr><td class=\"num\">{}</td><td><code>{}</code></td><td>{}</td>\
                 <td><code>{}</code></td><td><code>{}</code></td></tr>",
                t.tid,
                esc(&t.name),
                esc(&t.state),
                esc(&t.wchan),
                esc(&t.syscall)
            )
        })
        .collect();
    format!(
        "<details><summary>{} threads</summary><table class=\"threads\"><thead><tr>\
         <th class=\"num\">TID</th><th>Name</th><th>State</th><th>Wchan</th><th>Syscall</th>\
         </tr></thead><tbody>{rows}</tbody></table></details>",
        threads.len()
    )
}
