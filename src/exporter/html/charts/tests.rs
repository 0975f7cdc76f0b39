use super::*;
use crate::scoreboard::{History, Reading};

/// A tiny well-formedness check: every tag closes in order, attributes are quoted, no
/// script, no entity but the ones `escape_html` writes.
fn well_formed(s: &str) -> Result<usize, String> {
    let mut open: Vec<String> = Vec::new();
    let mut tags = 0;
    let mut rest = s;
    while let Some(at) = rest.find('<') {
        let text = &rest[..at];
        check_text(text)?;
        let end = rest[at..].find('>').ok_or("unclosed tag")? + at;
        let tag = &rest[at + 1..end];
        rest = &rest[end + 1..];
        tags += 1;
        if let Some(name) = tag.strip_prefix('/') {
            let top = open.pop().ok_or(format!("</{name}> closes nothing"))?;
            if top != name {
                return Err(format!("</{name}> closes <{top}>"));
            }
            continue;
        }
        let name: String = tag
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        if name.is_empty() || name == "script" {
            return Err(format!("bad tag <{tag}>"));
        }
        let handler = tag
            .split_whitespace()
            .any(|a| a.starts_with("on") && a.contains('='));
        if tag.matches('"').count() % 2 != 0 || handler {
            return Err(format!("bad attributes in <{tag}>"));
        }
        if !tag.ends_with('/') {
            open.push(name);
        }
    }
    check_text(rest)?;
    if let Some(top) = open.pop() {
        return Err(format!("<{top}> never closed"));
    }
    Ok(tags)
}

fn check_text(text: &str) -> Result<(), String> {
    let mut t = text;
    while let Some(at) = t.find('&') {
        let ok = ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"]
            .iter()
            .any(|e| t[at..].starts_with(e));
        if !ok {
            return Err(format!("raw & in {text:?}"));
        }
        t = &t[at + 1..];
    }
    Ok(())
}

fn history(n: u64) -> HistorySeries {
    let mut h = History::new();
    for i in 0..=n {
        h.record(Reading {
            unix_ms: 1_000_000 + i * 1_000,
            requests: i * i,
            classes: [0, i * i, 0, 0, i, 0],
            histogram: vec![i; 17],
            in_flight: i % 7,
            workers: [2, i % 2, 0],
            queue_length: (i > 3).then_some(i % 5),
            queue_drops: Some(i / 10),
        });
    }
    h.series()
}

fn no_bad_numbers(s: &str) {
    for bad in ["NaN", "inf"] {
        assert!(!s.contains(bad), "{bad} printed in {s}");
    }
    // Colours (`#e5e7eb`) aside.
    let mut plain = String::new();
    let mut rest = s;
    while let Some(at) = rest.find('#') {
        plain.push_str(&rest[..at]);
        rest = rest[at + 1..].trim_start_matches(|c: char| c.is_ascii_hexdigit());
    }
    plain.push_str(rest);
    let b = plain.as_bytes();
    let exponent = b.windows(3).any(|w| {
        w[0].is_ascii_digit()
            && w[1] == b'e'
            && (w[2].is_ascii_digit() || w[2] == b'-' || w[2] == b'+')
    });
    assert!(!exponent, "a number in exponent form in {s}");
}

#[test]
fn renders_with_no_sample() {
    let h = HistorySeries::default();
    let s = section(&h, 5_000);
    assert!(s.contains("No samples yet"));
    assert_eq!(
        s.matches("<svg").count(),
        4,
        "the axes stay, the listen queue waits"
    );
    well_formed(&s).expect("well formed");
    no_bad_numbers(&s);
    assert!(
        s.contains("max 0") || s.contains("max 1"),
        "a max of 0 is drawn as 1: {s}"
    );
}

#[test]
fn renders_one_sample_as_points() {
    let h = history(1);
    let s = section(&h, h.unix_ms[0]);
    assert_eq!(h.len(), 1);
    well_formed(&s).expect("well formed");
    no_bad_numbers(&s);
    assert!(s.contains("<circle"), "a lone sample is a dot");
    assert!(!s.contains("<polyline"));
    assert!(
        s.contains("\u{2212}60 s") && s.contains(">now<"),
        "a minute at least"
    );
}

#[test]
fn renders_900_samples_compactly() {
    let h = history(1_200);
    assert_eq!(h.len(), 900);
    let now = *h.unix_ms.last().expect("samples");
    let s = section(&h, now);
    let tags = well_formed(&s).expect("well formed");
    assert!(tags > 20);
    no_bad_numbers(&s);
    assert_eq!(s.matches("<svg").count(), 5, "with the listen queue");
    assert!(
        s.contains("\u{2212}15 m") && s.contains("\u{2212}8 m"),
        "the whole ring"
    );
    assert!(s.contains("5xx"), "a class with traffic is drawn");
    assert!(!s.contains(">3xx"), "classes without traffic are left out");
    // One point per column of the plot at most: 900 samples do not make 900 points.
    let points = s.matches(',').count();
    assert!(points < 12 * 360, "{points} points");
    assert!(s.len() < 120_000, "{} bytes", s.len());
}

#[test]
fn the_axis_max_and_the_last_value_are_labelled() {
    let h = history(10);
    let s = section(&h, *h.unix_ms.last().expect("samples"));
    // Requests grow as i², so the rate is 2i - 1: at most 19/s, and 19/s now.
    assert!(s.contains("max 19.0/s"), "{s}");
    assert!(
        s.contains("2xx <tspan font-weight=\"600\">19.0/s</tspan>"),
        "{s}"
    );
}

#[test]
fn a_gap_breaks_the_line() {
    let f = Frame {
        unix_ms: &[1_000, 2_000, 3_000, 9_000, 10_000],
        now_ms: 10_000,
        window_ms: 900_000,
        interval_ms: 1_000,
    };
    let v = vec![Some(1.0); 5];
    // Merged columns aside, the runs split at the 6 s step.
    let r = runs(&f, &v, 1.0);
    assert_eq!(r.len(), 2, "{r:?}");
    let unknown = vec![Some(1.0), None, Some(1.0), Some(1.0), Some(1.0)];
    assert_eq!(runs(&f, &unknown, 1.0).len(), 3);
    // Samples older than the axis (a stale history) are not piled up at its left edge.
    let short = Frame {
        window_ms: 5_000,
        ..f
    };
    let r = runs(&short, &v, 1.0);
    assert_eq!((r.len(), r[0].len()), (1, 2), "{r:?}");
    assert!(
        (r[0][0].0 - (LEFT + (RIGHT - LEFT) * 0.8)).abs() < 1e-9,
        "{r:?}"
    );
}

#[test]
fn text_is_escaped_and_non_finite_values_are_not_printed() {
    let chart = Chart {
        title: "<script>alert(1)</script> & \"x\"",
        fmt: |v| format!("{v}"),
        lines: vec![Series {
            label: "<b>'",
            color: GREEN,
            values: vec![Some(f64::NAN), Some(f64::INFINITY), Some(-1.0), None],
        }],
    };
    let f = Frame {
        unix_ms: &[1_000, 2_000, 3_000, 4_000],
        now_ms: 4_000,
        window_ms: 900_000,
        interval_ms: 1_000,
    };
    let s = svg(&chart, &f);
    well_formed(&s).expect("well formed");
    assert!(!s.contains("<script") && s.contains("&lt;script&gt;"));
    assert!(s.contains("&amp; &quot;x&quot;") && s.contains("&lt;b&gt;&#39;"));
    no_bad_numbers(&s);
    assert_eq!(axis_max(&chart.lines), 1.0, "nothing above 0: max 1");
}

#[test]
fn the_checker_catches_what_it_should() {
    assert!(well_formed("<svg><g></svg>").is_err());
    assert!(well_formed("<svg>").is_err());
    assert!(well_formed("<a onclick=\"x()\"></a>").is_err());
    assert!(well_formed("<script></script>").is_err());
    assert!(well_formed("<b>a & b</b>").is_err());
    assert_eq!(
        well_formed("<svg><line x1=\"1\"/><text>&lt;</text></svg>"),
        Ok(5)
    );
}
