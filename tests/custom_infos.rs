//! Request infos an app sets (`RequestInfo::set`) show beside the in-flight request in
//! `/server-status.json` and, HTML-escaped, on the status page; they are gone when the request
//! ends and do not leak into the next request on the same connection.
//!
//! Limits (`scoreboard::raw`): keys keep `INFO_KEY_BYTES` = 16 bytes, values
//! `INFO_VALUE_BYTES` = 48 bytes (cut at a character boundary), at most `INFO_COUNT` = 4
//! infos per request (the demo's `/info` sets `sleep_ms` first), and a repeated key replaces
//! its value in place.
//!
//! The demo does not percent-decode its query and hyper answers 400 to `<`, `>` and `"` in a
//! request target, so the one HTML-special character a client can put into an info is `'`
//! (escaped as `&#39;`).

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{http, status_server};
use support::{Http, TestDir};

/// How long each `/info` request sleeps: long enough to look at it while it is in flight.
const IN_FLIGHT_MS: u64 = 8000;
/// Longest wait for a request to show in, or leave, the status.
const SHOW_TIMEOUT: Duration = Duration::from_secs(6);
/// A key of 20 bytes: 16 are kept.
const LONG_KEY: &str = "abcdefghijklmnopqrst";
/// A key of exactly 16 bytes: kept whole.
const KEY_16: &str = "kkkkkkkkkkkkkkkk";

/// Infos of every in-flight `/info` request in a status document.
fn info_requests(doc: &Value) -> Vec<Vec<(String, String)>> {
    let mut found = Vec::new();
    for w in doc["workers"].as_array().into_iter().flatten() {
        for c in w["connections"].as_array().into_iter().flatten() {
            let r = &c["request"];
            if r["path"] == "/info" {
                let infos = r["infos"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        (
                            p[0].as_str().unwrap_or_default().to_string(),
                            p[1].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect();
                found.push(infos);
            }
        }
    }
    found
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Waits until the in-flight `/info` requests show exactly `want` (any order).
fn wait_infos(status: u16, want: &[Vec<(String, String)>]) -> Value {
    let mut want = want.to_vec();
    want.sort();
    support::poll(SHOW_TIMEOUT, "the in-flight /info requests", || {
        let doc = http::get_json(status, "/server-status.json");
        let mut got = info_requests(&doc);
        got.sort();
        if got == want {
            Ok(doc)
        } else {
            Err(format!("got {got:?}, want {want:?}"))
        }
    })
}

fn finish(c: &mut Http) {
    let r = c.read_response().expect("the /info response");
    assert_eq!((r.status, r.text().as_str()), (200, "slow\n"));
}

#[test]
fn request_infos_show_while_in_flight_escaped_and_truncated() {
    let dir = TestDir::new("custom-infos");
    let cluster = dir.start(support::free_port(), 2, &[]);
    cluster.wait_ready(2);
    let status = status_server::status_port(&cluster);

    let long_value = "v".repeat(60);
    let value_48 = "w".repeat(48);
    let mut a = Http::connect(cluster.port).expect("connect a");
    let mut b = Http::connect(cluster.port).expect("connect b");
    a.send_get(&format!(
        "/info?ms={IN_FLIGHT_MS}&user=bob&tenant='x'&user=alice"
    ))
    .expect("send a");
    b.send_get(&format!(
        "/info?ms={IN_FLIGHT_MS}&{LONG_KEY}={long_value}&{KEY_16}={value_48}&third=3&fourth=4"
    ))
    .expect("send b");
    let ms = IN_FLIGHT_MS.to_string();
    let want_a = pairs(&[("sleep_ms", &ms), ("user", "alice"), ("tenant", "'x'")]);
    let want_b = pairs(&[
        ("sleep_ms", &ms),
        (&LONG_KEY[..16], &long_value[..48]),
        (KEY_16, &value_48),
        ("third", "3"),
    ]);
    wait_infos(status, &[want_a, want_b]);

    let page = http::get_with(status, "/server-status", &[]);
    assert_eq!(page.status, 200);
    let html = page.text();
    for chip in [
        "<b>user</b>=alice".to_string(),
        "<b>tenant</b>=&#39;x&#39;".to_string(),
        format!("<b>{}</b>={}", &LONG_KEY[..16], &long_value[..48]),
        format!("<b>{KEY_16}</b>={value_48}"),
    ] {
        assert!(html.contains(&chip), "the page lacks {chip:?}:\n{html}");
    }
    assert!(
        !html.contains("='x'") && !html.contains(&long_value[..49]) && !html.contains("fourth"),
        "unescaped or untruncated info on the page:\n{html}"
    );

    finish(&mut a);
    finish(&mut b);
    let doc = wait_infos(status, &[]);
    assert!(
        !doc.to_string().contains("alice"),
        "infos outlive their request: {doc}"
    );

    // The next request on the same connection starts without the old infos.
    a.send_get("/info?ms=4000&other=1").expect("send a again");
    wait_infos(status, &[pairs(&[("sleep_ms", "4000"), ("other", "1")])]);
    finish(&mut a);
    wait_infos(status, &[]);
    a.close();
    b.close();
}
