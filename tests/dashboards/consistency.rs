//! Consistency of a dashboard beyond its schema: unique panel ids, a grid inside 24 columns
//! without overlaps, every query on the `datasource` variable, every `$variable` defined (or one
//! of Grafana's) and every variable used.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::dashboards::texts::{all_panels, promql_texts, variables_in, GRAFANA_GLOBALS};

/// Panics naming the first inconsistency of dashboard `file`.
pub fn check_consistency(file: &str, d: &Value) {
    let version = d["schemaVersion"].as_u64().unwrap_or_default();
    assert!(
        (39..=41).contains(&version),
        "{file}: schemaVersion {version}"
    );
    assert!(
        d["uid"].as_str().is_some_and(|u| !u.is_empty()),
        "{file}: uid"
    );

    let panels = all_panels(d);
    let mut ids = BTreeSet::new();
    let mut boxes: Vec<(String, [u64; 4])> = Vec::new();
    for p in &panels {
        let id = p["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "{file}: panel id {id} used twice");
        let g = &p["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| g[k].as_u64().expect("gridPos"));
        assert!(
            w > 0 && h > 0 && x + w <= 24,
            "{file}: panel {} at {g}",
            p["title"]
        );
        for (other, [ox, oy, ow, oh]) in &boxes {
            let overlap = x < ox + ow && *ox < x + w && y < oy + oh && *oy < y + h;
            assert!(!overlap, "{file}: panel {} overlaps {other}", p["title"]);
        }
        boxes.push((p["title"].to_string(), [x, y, w, h]));
        // Every query goes to the data source the `datasource` variable picks.
        if p["type"] != "row" && p["type"] != "text" {
            assert_eq!(
                p["datasource"]["uid"], "${datasource}",
                "{file}: {}",
                p["title"]
            );
        }
        for t in p["targets"].as_array().into_iter().flatten() {
            assert_eq!(
                t["datasource"]["uid"], "${datasource}",
                "{file}: {}",
                p["title"]
            );
        }
    }

    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let defined: BTreeSet<String> = vars
        .iter()
        .map(|v| v["name"].as_str().expect("variable name").to_string())
        .collect();
    let ds = vars.iter().find(|v| v["name"] == "datasource");
    assert!(
        ds.is_some_and(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
        "{file}: needs a `datasource` variable of type datasource, query prometheus"
    );
    for v in vars.iter().filter(|v| v["type"] == "query") {
        assert_eq!(
            v["datasource"]["uid"], "${datasource}",
            "{file}: {}",
            v["name"]
        );
    }
    for name in ["job", "instance"] {
        assert!(defined.contains(name), "{file}: no `{name}` variable");
    }
    for a in d["annotations"]["list"].as_array().into_iter().flatten() {
        if a["builtIn"] != 1 {
            assert_eq!(
                a["datasource"]["uid"], "${datasource}",
                "{file}: {}",
                a["name"]
            );
        }
    }

    // Every variable used is defined (or one of Grafana's), and every one defined is used.
    let mut texts: Vec<String> = promql_texts(file, d).into_iter().map(|e| e.text).collect();
    texts.extend(
        panels
            .iter()
            .filter_map(|p| p["title"].as_str().map(String::from)),
    );
    texts.extend(
        panels
            .iter()
            .filter_map(|p| p["repeat"].as_str().map(|r| format!("${r}"))),
    );
    let used: BTreeSet<String> = texts.iter().flat_map(|t| variables_in(t)).collect();
    for name in &used {
        let global = GRAFANA_GLOBALS.iter().any(|(g, _)| g == name);
        assert!(
            global || defined.contains(name),
            "{file} uses ${name}, which it does not define"
        );
    }
    for name in defined.iter().filter(|n| *n != "datasource") {
        assert!(
            used.contains(name),
            "{file} defines ${name} but never uses it"
        );
    }
}
