//! Every scenario in `scenarios/` runs and its report stays within its bounds: mean hops below
//! log16 N, every route at the true root, leaf sets exact after the joins and again after 10%
//! of the nodes fail. A failure prints the seed; the scenario file replays it.

use std::path::PathBuf;

use ringvault_sim::scenario::{Bounds, Scenario, ScenarioReport};

fn scenario_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scenarios")
}

fn check(file: &str) {
    let s = Scenario::load(&scenario_dir().join(file)).expect("a valid scenario file");
    let report = s.run();
    eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());
    let v = report.violations(&s.bounds);
    assert!(
        v.is_empty(),
        "scenario {} (seed {}): {}",
        s.name,
        s.seed,
        v.join("; ")
    );
}

#[test]
fn euclidean_2000_nodes_route_in_under_log16_n_hops_and_repair_ten_percent_failures() {
    check("euclidean-2000.json");
}

#[test]
fn transit_stub_over_the_wire_codec_routes_correctly_and_repairs() {
    check("transit-stub-wire-400.json");
}

#[test]
fn every_scenario_file_parses_and_is_tested() {
    let mut names: Vec<String> = std::fs::read_dir(scenario_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    for n in &names {
        Scenario::load(&scenario_dir().join(n)).expect("parses");
    }
    assert_eq!(names, ["euclidean-2000.json", "transit-stub-wire-400.json"]);
}

/// The checker is not vacuous: a report past each bound is flagged for it.
#[test]
fn a_report_past_its_bounds_is_flagged() {
    let report = ScenarioReport {
        name: "control".into(),
        seed: 1,
        nodes: 2000,
        log16_n: 2.74,
        wrong_leaf_sets_after_joins: 0,
        routes_before: 10,
        correct_before: 10,
        mean_hops_before: 2.6,
        rare_route_fraction: 0.01,
        stretch_before: 1.4,
        not_closest_after_joins: 2.2,
        not_closest_after_maintenance: Some(0.3),
        slot_requests_per_failed_node: 27.0,
        failed: 200,
        repaired_after_secs: Some(20.0),
        wrong_leaf_sets_after_repair: 0,
        routes_after: 10,
        correct_after: 10,
        mean_hops_after: 2.7,
        messages: 1,
        false_failures: 0,
        churn: Some((1000, 0.999)),
    };
    let bounds = Bounds {
        max_mean_hops_over_log16_n: 1.0,
        max_rare_route_fraction: 0.02,
        max_stretch: Some(1.5),
        max_not_closest_after_maintenance: Some(0.5),
        max_slot_requests_per_failed_node: Some(40.0),
        min_churn_success: Some(0.99),
    };
    assert_eq!(report.violations(&bounds), Vec::<String>::new());
    let past = ScenarioReport {
        stretch_before: 1.6,
        not_closest_after_maintenance: Some(0.9),
        slot_requests_per_failed_node: 102.0,
        correct_after: 9,
        churn: Some((1000, 0.95)),
        ..report
    };
    let v = past.violations(&bounds);
    for what in [
        "stretch",
        "not the closest",
        "slot requests",
        "missed the true live root",
        "during churn",
    ] {
        assert!(
            v.iter().any(|m| m.contains(what)),
            "{what} not flagged: {v:?}"
        );
    }
}
