//! Unit tests of the status page renderer.
use super::*;
use crate::exporter::procfs::ProcStats;
use crate::scoreboard::{Scoreboard, SlotState};
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
    let _idle_unix = sb.writer(1).expect("writer").conn_open_unix();
    let conn = sb
        .writer(0)
        .expect("writer")
        .conn_open(([127, 0, 0, 1], 50000).into());
    conn.request_begin("GET", "/", 11).finish(200, 5);
    let mut req = conn.request_begin("POST", "/upload/avatar", 11);
    req.set_route("/upload/{kind}");
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
        "<code>unix</code>",
        "<code class=\"route\" title=\"route\">/upload/{kind}</code>",
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
    req.route = format!("<img src=x>{key}");
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

/// A master's document with one kill record whose request and thread carry `s` everywhere
/// a string goes, a recycle of slot 1 and a heartbeat of slot 0.
fn guarded_doc(s: &str) -> StatusDoc {
    let sb = Scoreboard::create_sealed("g", 3).expect("create");
    for (slot, pid) in [(0, 4100), (1, 4101)] {
        sb.slot_spawned(slot, pid, 2);
        sb.writer(slot).expect("writer").set_state(SlotState::Ready);
    }
    let conn = sb
        .writer(0)
        .expect("writer")
        .conn_open(([127, 0, 0, 1], 40000).into());
    let mut req = conn.request_begin(s, &format!("/block/{s}"), 11);
    req.set_route(&format!("/r/{s}"));
    assert!(req.set_info("k", s));
    let minute = std::time::Duration::from_secs(60);
    sb.record_heartbeat(0, 4100, std::time::Duration::from_millis(4), minute);
    sb.record_recycle(1, "memory");
    let (id, _) = sb
        .record_kill(0, 4100, "heartbeat", &format!("detail {s}"))
        .expect("master");
    let thread = crate::scoreboard::ThreadSnapshot {
        tid: 4100,
        name: format!("t{s}"),
        state: s.into(),
        wchan: format!("w{s}"),
        syscall: format!("s{s}"),
    };
    sb.set_kill_threads(id, vec![thread]);
    drop(req);
    StatusDoc::build_with(sb.snapshot(), |_| None)
}

#[test]
fn guards_section_shows_counts_records_and_last_events() {
    let page = render(&guarded_doc("x"), &HtmlOptions::default());
    for want in [
        "<h2>Guards</h2>",
        "memory <b>1</b> · max_requests <b>0</b> · age <b>0</b>",
        "heartbeat <b>1</b> · shutdown_timeout <b>0</b>",
        "<table id=\"kills\">",
        "b-bad\">heartbeat</span>",
        "detail x",
        "<code class=\"path\">/block/x</code>",
        "<span class=\"chip\"><b>k</b>=x</span>",
        "<code>127.0.0.1:40000</code>",
        "<summary>1 threads</summary>",
        "<code>tx</code>",
        "<code>wx</code>",
        "b-bad\">kill</span> heartbeat",
        "b-warn\">recycle</span> memory",
        "4.00 ms",
    ] {
        assert!(page.contains(want), "{want}\n{page}");
    }
    // A reader without the master's records says so instead of showing zeros.
    let mut doc = guarded_doc("x");
    doc.guards = None;
    let page = render(&doc, &HtmlOptions::default());
    assert!(page.contains("kept by the master") && !page.contains("id=\"kills\""));
}

#[test]
fn scale_events_show_as_a_card_once_there_are_any() {
    let page = render(&guarded_doc("x"), &HtmlOptions::default());
    assert!(!page.contains("Scale events"));
    let mut doc = guarded_doc("x");
    if let Some(g) = doc.guards.as_mut() {
        g.scale_events.up_busy = 3;
        g.scale_events.down_idle = 2;
    }
    let page = render(&doc, &HtmlOptions::default());
    assert!(page.contains("Scale events"), "{page}");
    assert!(page.contains("up busy <b>3</b>") && page.contains("down idle <b>2</b>"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn kill_record_strings_cannot_inject(s in hostile()) {
        let page = render(&guarded_doc(&s), &HtmlOptions::default());
        let lower = page.to_ascii_lowercase();
        prop_assert!(!lower.contains("<script") && !lower.contains("<img"));
        let plain = render(&guarded_doc(if s.is_empty() { "" } else { "x" }), &HtmlOptions::default());
        for c in ['<', '>', '"', '\''] {
            prop_assert_eq!(page.matches(c).count(), plain.matches(c).count(), "{}", c);
        }
    }
}

/// The listeners table: a full queue is marked, a Unix path is escaped, a Unix listener
/// shows no drop count.
#[test]
fn listeners_table_marks_full_queues_and_escapes_names() {
    let mut doc = sample_doc();
    doc.listen_queues = vec![
        crate::scoreboard::ListenQueueSnapshot {
            listener: "127.0.0.1:8080".into(),
            length: 129,
            peak: 129,
            limit: 128,
            drops: Some(7),
        },
        crate::scoreboard::ListenQueueSnapshot {
            listener: "unix:/run/<b>\"x\".sock".into(),
            length: 1,
            peak: 3,
            limit: 16,
            drops: None,
        },
    ];
    let page = render(&doc, &HtmlOptions::default());
    assert!(page.contains("<table id=\"listeners\">"));
    assert!(page.contains("<code>unix:/run/&lt;b&gt;&quot;x&quot;.sock</code>"));
    assert!(!page.contains("<b>\"x\""));
    let full = page
        .lines()
        .find(|l| l.contains("127.0.0.1:8080"))
        .expect("tcp row");
    assert!(
        full.contains("class=\"bad\"") && full.contains(">full<"),
        "{full}"
    );
    assert!(full.contains(">7<"), "drops: {full}");
    let unix = page
        .lines()
        .find(|l| l.contains("unix:/run/"))
        .expect("unix row");
    assert!(
        !unix.contains("full") && !unix.contains("filling"),
        "{unix}"
    );
}

#[test]
fn listeners_table_says_when_nothing_was_sampled() {
    let page = render(&sample_doc(), &HtmlOptions::default());
    assert!(page.contains("No listener sampled yet"));
}
