//! Responses are counted by exact status code: `code="404"` counts exactly the 404s, a code
//! not counted exactly lands in its class (`code="4xx"`), `code=~"4.."` takes the whole class,
//! and the text, OpenMetrics, JSON and `status` outputs agree.

mod support;

use std::time::Duration;

use support::status_server::{self, PROMETHEUS_ACCEPT};
use support::tools::{self, Lints};
use support::{http, TestDir};

/// Longest wait for answered requests to show in the counters.
const COUNT_TIMEOUT: Duration = Duration::from_secs(15);

/// Paths sent, how often, and the `code` label they must be counted under.
const SENT: &[(&str, u64, &str)] = &[
    ("/", 3, "200"),
    ("/code/201", 2, "201"),
    ("/code/404", 5, "404"),
    ("/code/418", 1, "4xx"),
    ("/code/429", 1, "429"),
    ("/code/503", 2, "503"),
    ("/code/599", 1, "5xx"),
];

#[test]
fn every_output_counts_exact_codes() {
    tools::python_with_prometheus_client();
    let dir = TestDir::new("codes");
    let cluster = dir.start(support::free_port(), 2, &[]);
    cluster.wait_ready(2);
    let status = status_server::status_port(&cluster);
    for (path, n, _) in SENT {
        for _ in 0..*n {
            let r = http::get(cluster.port, path).expect("GET");
            let want = path
                .strip_prefix("/code/")
                .map_or(200, |c| c.parse().expect("code"));
            assert_eq!(r.status, want, "{path}");
        }
    }
    let total: u64 = SENT.iter().map(|(_, n, _)| n).sum();
    let s = support::poll(COUNT_TIMEOUT, "every request counted", || {
        let s = status_server::scrape(status, None);
        let sum = s.expo.sum("flora_http_requests_total");
        (sum == total as f64).then_some(s.clone()).ok_or(s.text)
    });
    tools::assert_promtool(&s.text, Lints::None, "exact codes");
    for (path, n, code) in SENT {
        let got: f64 = s
            .expo
            .named("flora_http_requests_total")
            .filter(|x| x.has_labels(&[("code", code)]))
            .map(|x| x.value)
            .sum();
        assert_eq!(got, *n as f64, "{path} as code={code}\n{}", s.text);
    }
    // Only codes seen have series: nothing was answered 500 or without a response.
    for absent in ["500", "other", "2xx", "3xx"] {
        let n = s
            .expo
            .named("flora_http_requests_total")
            .filter(|x| x.has_labels(&[("code", absent)]))
            .count();
        assert_eq!(n, 0, "code={absent} without such a response\n{}", s.text);
    }
    let dups = s.expo.duplicate_series();
    assert!(dups.is_empty(), "duplicated series {dups:?}");

    // OpenMetrics, through the reference parser.
    let om = status_server::scrape(status, Some(PROMETHEUS_ACCEPT));
    let families = tools::parse_openmetrics_with_python(&om.text).expect("OpenMetrics parses");
    let requests = families
        .iter()
        .find(|f| f.name == "flora_http_requests")
        .expect("flora_http_requests");
    let not_found: f64 = requests
        .samples
        .iter()
        .filter(|x| x.labels.get("code").is_some_and(|c| c == "404"))
        .map(|x| x.value)
        .sum();
    assert_eq!(not_found, 5.0, "{}", om.text);

    // JSON: exact codes and the derived classes.
    let json = http::get_json(status, "/server-status.json");
    let totals = &json["totals"];
    assert_eq!(totals["codes"]["404"], 5, "{totals}");
    assert_eq!(totals["codes"]["4xx"], 1, "{totals}");
    assert_eq!(totals["status"][3], 5 + 1 + 1, "4xx class: {totals}");
    assert_eq!(totals["status"][4], 2 + 1, "5xx class: {totals}");

    // The terminal view lists the codes seen.
    let out = dir.ctl(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("404 5"), "{text}");
}
