//! A process writing random bytes anywhere into the segment's slots and registry (a buggy or
//! hostile worker maps it read-write) never makes the snapshot reader or any renderer panic,
//! and the Prometheus text stays well-formed.

use flora_cluster::exporter::html::{self, HtmlOptions};
use flora_cluster::exporter::{apache, prometheus, terminal, Format, StatusDoc};
use flora_cluster::scoreboard::{Aggregation, MetricSpec, Scoreboard, SlotState};
use proptest::prelude::*;
use std::os::unix::fs::FileExt;

const SLOTS: usize = 3;
const HEADER: u64 = 512;

fn segment() -> (tempfile::TempDir, std::path::PathBuf, Scoreboard) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fuzz.scoreboard");
    let sb = Scoreboard::create(&path, "fuzz", SLOTS).expect("segment");
    sb.register(&MetricSpec::counter("jobs_total", "Jobs.").label("queue", "a"))
        .expect("counter");
    sb.register(&MetricSpec::gauge("depth", "Depth.", Aggregation::Latest))
        .expect("gauge");
    sb.register(&MetricSpec::histogram("took_seconds", "Took.", &[0.1, 1.0]))
        .expect("histogram");
    let w = sb.writer(1).expect("slot");
    w.set_state(SlotState::Ready);
    let conn = w.conn_open("127.0.0.1:9".parse().expect("addr"));
    let req = conn.request_begin("GET", "/x", 11);
    req.set_info("k", "v");
    std::mem::forget(req);
    std::mem::forget(conn);
    (dir, path, sb)
}

/// Every line of the text format is a comment or `name{labels} value` with a parsable value.
fn well_formed(text: &str) -> Result<(), String> {
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let value = line.rsplit(' ').next().ok_or(format!("no value: {line}"))?;
        let ok = value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value);
        if !ok || line.contains('\n') {
            return Err(format!("bad sample line: {line:?}"));
        }
        let name: String = line
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        if name.is_empty() {
            return Err(format!("no metric name: {line:?}"));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_in_slots_and_registry_never_break_a_reader(
        writes in proptest::collection::vec((0u64..1_000_000, proptest::collection::vec(any::<u8>(), 1..512)), 1..40)
    ) {
        let (_dir, path, _sb) = segment();
        let file = std::fs::OpenOptions::new().write(true).open(&path).expect("open");
        let len = file.metadata().expect("meta").len();
        for (offset, bytes) in &writes {
            // Anywhere after the header (the header is validated on attach instead).
            let at = HEADER + offset % (len - HEADER);
            let n = bytes.len().min((len - at) as usize);
            file.write_all_at(&bytes[..n], at).expect("write");
        }
        let reader = Scoreboard::open_read_only(&path).expect("header untouched, still valid");
        let snap = reader.snapshot();
        let slots = snap.slots.clone();
        let doc = StatusDoc::build_with(snap, |_| None);
        let text = prometheus::render(&doc, Format::Text);
        prop_assert!(well_formed(&text).is_ok(), "{:?}", well_formed(&text));
        let om = prometheus::render(&doc, Format::OpenMetrics);
        prop_assert!(om.ends_with("# EOF\n"));
        prop_assert!(serde_json::to_vec(&doc).is_ok());
        let page = html::render(&doc, &HtmlOptions::default());
        prop_assert!(!page.contains("<script"));
        let auto = apache::render(&doc, &slots);
        prop_assert!(auto.contains("Scoreboard: "));
        let _ = terminal::render(&doc);
    }
}
