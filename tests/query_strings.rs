//! Query strings often carry secrets: they are kept out of the status unless the master runs
//! with `--show-query-strings`.

mod support;

use support::status_server::status_port;
use support::{get, wait_for, TestDir, START_TIMEOUT};

fn last_paths(cluster: &support::Cluster) -> Vec<String> {
    let json = get(status_port(cluster), "/server-status.json")
        .unwrap()
        .text();
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    doc["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["last_request"]["path"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn query_strings_are_hidden_unless_enabled() {
    for (flag, expect) in [
        (None, "/slow"),
        (Some("--show-query-strings"), "/slow?ms=1&token=s3cret"),
    ] {
        let dir = TestDir::new("query");
        let port = support::free_port();
        let mut args = vec!["--workers", "1"];
        args.extend(flag);
        let cluster = dir.start_with(port, &args, &[]);
        cluster.wait_ready(1);
        assert_eq!(get(port, "/slow?ms=1&token=s3cret").unwrap().status, 200);
        let paths = wait_for(START_TIMEOUT, "the last request recorded", || {
            Some(last_paths(&cluster)).filter(|p| !p.is_empty())
        });
        assert_eq!(paths, vec![expect.to_string()], "with {flag:?}");
        let page = get(status_port(&cluster), "/server-status").unwrap().text();
        assert_eq!(
            page.contains("s3cret"),
            flag.is_some(),
            "page with {flag:?}"
        );
    }
}
