//! The "Last upgrade" box of the status page's header, beside the last reload: the outcome,
//! the old and the new master (pid and version), how long it took, why it was rolled back,
//! and when; under it the upgrades by outcome. Nothing before the first master upgrade. The
//! versions and the reason go through [`super::escape_html`]; the rest is numbers.

use super::format::{count, duration, utc, DASH};
use super::{badge, esc, outcome_class};
use crate::exporter::model::StatusDoc;
use crate::scoreboard::UpgradeRecord;

/// The box, or nothing before any upgrade.
pub(super) fn upgrade_box(doc: &StatusDoc) -> String {
    let Some(u) = &doc.last_upgrade else {
        return String::new();
    };
    let ago = duration(doc.now_unix_ms.saturating_sub(u.finished_unix_ms) as f64 / 1e3);
    let reason = u.reason.as_deref().filter(|r| !r.is_empty());
    let reason = reason.map_or_else(String::new, |r| {
        format!("<div class=\"reason\">{}</div>", esc(r))
    });
    let counts = doc.master.as_ref().map_or_else(String::new, |m| {
        let (ok, back) = (count(m.upgrades.success), count(m.upgrades.rollback));
        format!("<div class=\"muted small\">{ok} succeeded · {back} rolled back</div>")
    });
    let outcome = u.outcome.as_str();
    format!(
        "<div class=\"reload\" id=\"upgrade\"><div class=\"label\">Last upgrade</div><div>{} \
         {} in <b>{}</b> <span class=\"muted\">{ago} ago, {}</span>{reason}</div>{counts}</div>",
        badge(outcome_class(outcome), outcome),
        masters(u),
        duration(u.duration_ms as f64 / 1e3),
        utc(u.finished_unix_ms),
    )
}

/// `master <b>4121</b> (0.9.0) → <b>4188</b> (0.9.1)`; a dash for what is unknown.
fn masters(u: &UpgradeRecord) -> String {
    let to_pid = u
        .to_pid
        .map_or_else(|| DASH.to_string(), |p| format!("<b>{p}</b>"));
    let to_version = u.to_version.as_deref().unwrap_or(DASH);
    format!(
        "master <b>{}</b> ({}) → {to_pid} ({})",
        u.from_pid,
        esc(&u.from_version),
        esc(to_version)
    )
}

#[cfg(test)]
mod tests {
    use super::super::{render, HtmlOptions};
    use crate::exporter::model::StatusDoc;
    use crate::scoreboard::{Scoreboard, UpgradeOutcomeKind, UpgradeRecord};

    fn page(rec: Option<UpgradeRecord>) -> String {
        let sb = Scoreboard::create_sealed("upgrade-html", 1).expect("create");
        if let Some(r) = rec {
            sb.record_upgrade(r);
        }
        let doc = StatusDoc::build_with(sb.snapshot(), |_| None);
        render(&doc, &HtmlOptions::default())
    }

    fn rec(reason: Option<&str>, version: &str) -> UpgradeRecord {
        UpgradeRecord {
            outcome: UpgradeOutcomeKind::Rollback,
            from_pid: 4121,
            to_pid: Some(4188),
            from_version: "0.9.0".into(),
            to_version: Some(version.into()),
            duration_ms: 12_500,
            reason: reason.map(str::to_string),
            finished_unix_ms: 0,
        }
    }

    #[test]
    fn shows_the_outcome_masters_duration_and_escaped_reason() {
        let html = page(Some(rec(Some("exited <b>3</b> & \"x\""), "<i>1</i>")));
        for want in [
            "<div class=\"label\">Last upgrade</div>",
            "b-bad\">rollback</span>",
            "master <b>4121</b> (0.9.0) → <b>4188</b> (&lt;i&gt;1&lt;/i&gt;)",
            "in <b>12s</b>",
            "1970-01-01 00:00:00 UTC",
            "<div class=\"reason\">exited &lt;b&gt;3&lt;/b&gt; &amp; &quot;x&quot;</div>",
            "0 succeeded · 1 rolled back",
        ] {
            assert!(html.contains(want), "{want}\n{html}");
        }
        assert!(!html.contains("<b>3</b>") && !html.contains("<i>1</i>"));
    }

    #[test]
    fn a_success_without_a_reason_and_nothing_before_any_upgrade() {
        let mut ok = rec(None, "0.9.1");
        ok.outcome = UpgradeOutcomeKind::Success;
        let html = page(Some(ok));
        assert!(html.contains("b-ok\">success</span>"), "{html}");
        assert!(!html.contains("class=\"reason\">"), "{html}");
        let html = page(None);
        assert!(!html.contains("Last upgrade") && !html.contains("id=\"upgrade\""));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        #[test]
        fn upgrade_strings_cannot_inject(s in "(<script>|<img src=x>|&|'|\"|<|>|[a-z ])*") {
            let page = page(Some(rec(Some(&s), &s)));
            let lower = page.to_ascii_lowercase();
            proptest::prop_assert!(!lower.contains("<script") && !lower.contains("<img"));
            let x = if s.is_empty() { "" } else { "x" };
            let plain = page_of(x);
            for c in ['<', '>', '"', '\''] {
                proptest::prop_assert_eq!(page.matches(c).count(), plain.matches(c).count());
            }
        }
    }

    fn page_of(s: &str) -> String {
        page(Some(rec(Some(s), s)))
    }
}
