//! State changes over HTTP need the bearer token from `--status-token-file` (0600); without the
//! option the endpoints are off. Wrong or missing tokens get 401; GET gets 405.

mod support;

use std::os::unix::fs::PermissionsExt;

use support::http::request;
use support::status_server::status_port;
use support::TestDir;

const TOKEN: &str = "0123456789abcdef-secret";

#[test]
fn reload_over_http_needs_the_token() {
    let dir = TestDir::new("httpact");
    let token = dir.scratch("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cluster = dir.start_with(
        support::free_port(),
        &[
            "--workers",
            "1",
            "--status-token-file",
            token.to_str().unwrap(),
        ],
        &[],
    );
    cluster.wait_ready(1);
    let port = status_port(&cluster);
    let post = |path: &str, auth: Option<&str>| {
        let headers: Vec<(&str, &str)> =
            auth.map(|a| vec![("Authorization", a)]).unwrap_or_default();
        request(port, "POST", path, &headers).expect("status server answers")
    };
    assert_eq!(post("/-/reload", None).status, 401);
    assert_eq!(
        post("/-/reload", Some("Bearer wrong-token-wrong-token")).status,
        401
    );
    assert_eq!(
        post("/-/reload", Some(&format!("Basic {TOKEN}"))).status,
        401
    );
    assert_eq!(request(port, "GET", "/-/reload", &[]).unwrap().status, 405);
    assert_eq!(cluster.snapshot().generation, 1, "nothing changed");
    let ok = post("/-/reload", Some(&format!("Bearer {TOKEN}")));
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert!(
        ok.text().contains("\"outcome\":\"success\""),
        "{}",
        ok.text()
    );
    assert_eq!(cluster.snapshot().generation, 2);
    let bad = post("/-/scale?workers=zero", Some(&format!("Bearer {TOKEN}")));
    assert_eq!(bad.status, 400);
}

#[test]
fn actions_are_off_without_a_token_and_a_readable_token_is_refused() {
    let dir = TestDir::new("httpoff");
    let cluster = dir.start(support::free_port(), 1, &[]);
    cluster.wait_ready(1);
    let r = request(status_port(&cluster), "POST", "/-/reload", &[]).unwrap();
    assert_eq!(r.status, 404);
    assert!(r.text().contains("--status-token-file"));
    drop(cluster);

    let dir = TestDir::new("httpmode");
    let token = dir.scratch("token");
    std::fs::write(&token, TOKEN).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut cluster = dir.start_with(
        support::free_port(),
        &[
            "--workers",
            "1",
            "--status-token-file",
            token.to_str().unwrap(),
        ],
        &[],
    );
    let status = cluster.wait_exit(support::EXIT_TIMEOUT);
    assert_eq!(status.code(), Some(2));
    assert!(
        cluster.stderr().contains("readable by others"),
        "{}",
        cluster.stderr()
    );
}
