//! A running master shows itself in every output of its status server: the JSON's `master`
//! (its pid, this build's version, both upgrade counts at 0) and `last_upgrade` (null before
//! any master upgrade), `?auto`'s `MasterUpgrades`/`MasterUpgradeRollbacks`, and a status
//! page without a *Last upgrade* box. The upgrade itself is tested by the `upgrade_*` tests.

mod support;

use support::TestDir;
use support::{http, status_server};

#[test]
fn the_status_server_shows_the_master_and_no_upgrade_yet() {
    let dir = TestDir::new("master-info");
    let cluster = dir.start(support::free_port(), 1, &[]);
    cluster.wait_ready(1);
    let status = status_server::status_port(&cluster);

    let json = http::get_with(status, "/server-status.json", &[]);
    assert_eq!(json.status, 200, "{}", json.text());
    let doc: serde_json::Value = serde_json::from_str(&json.text()).expect("JSON");
    let want = serde_json::json!({
        "pid": cluster.pid,
        "version": env!("CARGO_PKG_VERSION"),
        "upgrades": {"success": 0, "rollback": 0},
    });
    assert_eq!(doc["master"], want, "{doc:#}");
    assert_eq!(doc["master_pid"], cluster.pid);
    assert!(
        doc.get("last_upgrade")
            .is_some_and(serde_json::Value::is_null),
        "{doc:#}"
    );

    let auto = http::get_with(status, "/server-status?auto", &[]).text();
    for key in ["MasterUpgrades", "MasterUpgradeRollbacks"] {
        assert_eq!(
            status_server::auto_value(&auto, key),
            Some(0.0),
            "{key}\n{auto}"
        );
    }

    let page = http::get_with(status, "/server-status", &[]).text();
    assert!(page.contains("Last reload"), "{page}");
    assert!(!page.contains("Last upgrade"), "{page}");
}
