//! The canary sections of the status page: "Canary under way" while a canary reload observes
//! its workers (both generations' figures so far), and "Last canary": the verdict, its reason
//! and limits, and one row per generation compared (requests, 5xx, 5xx ratio, p99, crashes
//! over the observation window). Absent before any canary reload. The reason goes through
//! [`super::escape_html`]; everything else is numbers.

use super::format::{count, ms, utc, DASH};
use super::tables::Table;
use super::{badge, esc, muted};
use crate::canary::{CanaryReport, CanaryWindow, GenerationFigures, Verdict};
use crate::exporter::model::StatusDoc;

const CANARY: Table = Table {
    id: "canary",
    title: "Last canary",
    columns: "Role|#Gen|#Requests|#5xx|#5xx ratio|#p99|#Crashes",
    empty: "The reload ended before the comparison",
};

const UNDER_WAY: Table = Table {
    id: "canary-now",
    title: "Canary under way",
    columns: "Role|#Gen|#Requests|#5xx|#5xx ratio|#p99|#Crashes",
    empty: "",
};

/// The sections, or nothing before any canary.
pub(super) fn section(doc: &StatusDoc) -> String {
    let now = doc
        .reloads
        .canary_window
        .as_ref()
        .map_or_else(String::new, under_way);
    let last = doc.reloads.canary.as_ref().map_or_else(String::new, table);
    format!("{now}{last}")
}

fn under_way(w: &CanaryWindow) -> String {
    let rows = format!(
        "{}{}",
        row(&UNDER_WAY, "old", &w.old),
        row(&UNDER_WAY, "canary", &w.new)
    );
    format!(
        "{}<p class=\"muted\">observing since {} for {}s; crashes are counted at the verdict</p>\n",
        UNDER_WAY.render(rows),
        utc(w.since_unix_ms),
        w.secs
    )
}

fn table(c: &CanaryReport) -> String {
    let verdict = match c.verdict {
        Some(Verdict::Promote) => badge("ok", "promoted"),
        Some(Verdict::Rollback) => badge("bad", "rolled back"),
        None => badge("idle", "ended"),
    };
    let l = &c.limits;
    let line = format!(
        "<p>{verdict} {} <span class=\"muted\">· {} canary workers for {}s · limits: 5xx ratio \
         old + {}, p99 old × {}, at least {} requests each</span></p>\n",
        esc(&c.reason),
        c.workers,
        c.secs,
        l.max_error_ratio,
        l.max_p99_ratio,
        l.min_requests
    );
    let rows: String = [("old", &c.old), ("canary", &c.new)]
        .into_iter()
        .filter_map(|(role, f)| f.as_ref().map(|f| row(&CANARY, role, f)))
        .collect();
    format!("{}{line}", CANARY.render(rows))
}

fn row(table: &Table, role: &str, f: &GenerationFigures) -> String {
    let p99 = f.p99_seconds.map_or_else(|| muted(DASH), ms);
    table.row(
        "",
        &[
            role.to_string(),
            f.generation.to_string(),
            count(f.requests),
            count(f.errors_5xx),
            format!("{:.2}%", f.error_ratio * 100.0),
            p99,
            count(f.crashes),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::super::{render, HtmlOptions};
    use crate::canary::{CanaryLimits, CanaryReport, GenerationFigures, Verdict};
    use crate::exporter::model::StatusDoc;
    use crate::scoreboard::Scoreboard;

    fn page(report: Option<CanaryReport>) -> String {
        let sb = Scoreboard::create_sealed("canary-html", 2).unwrap();
        if let Some(r) = &report {
            sb.record_canary(r);
        }
        let doc = StatusDoc::build_with(sb.snapshot(), |_| None);
        render(&doc, &HtmlOptions::default())
    }

    #[test]
    fn shows_the_verdict_limits_and_both_generations_escaped() {
        let report = CanaryReport {
            workers: 1,
            secs: 2.5,
            limits: CanaryLimits::default(),
            old: Some(GenerationFigures::new(1, 1000, 0, Some(0.002))),
            new: Some(GenerationFigures::new(2, 400, 100, None)),
            verdict: Some(Verdict::Rollback),
            reason: "5xx <ratio> & more".into(),
        };
        let html = page(Some(report));
        assert!(html.contains("<table id=\"canary\">"));
        assert!(html.contains("rolled back</span> 5xx &lt;ratio&gt; &amp; more"));
        assert!(html.contains("1 canary workers for 2.5s"));
        assert!(html.contains("<td class=\"num\">25.00%</td>"));
        assert!(html.contains("<td class=\"num\">2.00 ms</td>"));
        assert!(!html.contains("<ratio>"));
    }

    #[test]
    fn absent_before_any_canary() {
        let html = page(None);
        assert!(!html.contains("Last canary") && !html.contains("Canary under way"));
    }

    #[test]
    fn a_canary_under_way_shows_its_figures_so_far() {
        let sb = Scoreboard::create_sealed("canary-html-now", 2).unwrap();
        sb.slot_spawned(0, 40, 1);
        sb.slot_spawned(1, 41, 2);
        sb.begin_canary_window(2, 1, 30.0);
        let conn = sb.writer(1).unwrap().conn_open(([127, 0, 0, 1], 1).into());
        conn.request_begin("GET", "/", 11).finish(500, 1);
        let doc = StatusDoc::build_with(sb.snapshot(), |_| None);
        let html = render(&doc, &HtmlOptions::default());
        assert!(html.contains("<table id=\"canary-now\">"), "{html}");
        assert!(html.contains("<td class=\"num\">100.00%</td>"));
        assert!(html.contains("for 30s"));
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(json["reloads"]["canary_window"]["new"]["errors_5xx"], 1);
    }
}
