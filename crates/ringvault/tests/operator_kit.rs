//! The operator's kit stays true to the node: every metric the Grafana dashboard
//! (`contrib/grafana-dashboard.json`) queries is one a running node serves at `/metrics`.

mod common;

use std::collections::BTreeSet;
use std::process::Stdio;

use common::{get, node_with_stdout, tmp};

/// The `ringvault_*` names in `text` (a histogram's `_bucket`, `_sum` and `_count` series
/// counted as the histogram).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("ringvault_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.insert(base.to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_grafana_dashboard_queries_only_metrics_a_node_serves() {
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../contrib/grafana-dashboard.json"
    ))
    .unwrap();
    let json: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let exprs: Vec<String> = json["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(String::from))
        .collect();
    let wanted = metric_names(&exprs.join("\n"));
    assert!(wanted.len() >= 10, "{wanted:?}");

    let dir = tmp("operator-kit");
    let (mut child, url) = node_with_stdout(&dir, &[], Stdio::null());
    let (code, metrics) = get(&url, "/metrics");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, 200);
    let served: BTreeSet<String> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect();
    let missing: Vec<&String> = wanted.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics no node serves: {missing:?}"
    );
    // The check can fail: a dashboard with a misspelt name would be caught.
    let mut misspelt = wanted.clone();
    misspelt.insert("ringvault_store_under_replicted".into());
    assert_eq!(misspelt.difference(&served).count(), 1);
}
