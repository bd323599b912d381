//! Every scenario in `scenarios/` runs and its report stays within its bounds: mean hops below
//! log16 N, every route at the true root, leaf sets exact after the joins and again after 10%
//! of the nodes fail. A failure prints the seed; the scenario file replays it.

use std::path::PathBuf;

use ringvault_sim::scenario::Scenario;

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
