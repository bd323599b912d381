//! Signed records under churn with a tenth of the nodes losing writes (`records`): reads that
//! wait for a majority return the latest completed version every time, read repair or not;
//! reads that end at the first answer holding the record return stale versions (the negative
//! control: the checker sees them), fewer with read repair.

mod common;

use common::num;
use ringvault_sim::experiments::{self, Params};
use serde_json::Value;

fn run(points: &[Value], read_quorum: u64, read_repair: bool) -> &Value {
    points
        .iter()
        .find(|p| {
            p["read_quorum"].as_u64() == Some(read_quorum)
                && p["read_repair"].as_bool() == Some(read_repair)
        })
        .unwrap_or_else(|| panic!("no run with R = {read_quorum}, read repair {read_repair}"))
}

#[test]
fn majority_reads_see_the_latest_version_and_single_answer_reads_do_not() {
    let mut p = Params::new(2);
    p.nodes = Some(300);
    p.routes = Some(4_000);
    let (reports, _) = experiments::run(&["records".to_string()], &p).expect("a known experiment");
    let points = reports[0].figures["points"].as_array().expect("points");
    for rr in [true, false] {
        let majority = run(points, 2, rr);
        assert!(num(majority, "stale_nodes") > 0.0, "{majority}");
        assert!(num(majority, "failures") > 0.0, "churn: {majority}");
        assert!(num(majority, "writes_completed") > 0.9, "{majority}");
        assert_eq!(num(majority, "reads_stale"), 0.0, "{majority}");
        assert!(num(majority, "reads_failed") < 0.01, "{majority}");
    }
    let (with, without) = (run(points, 1, true), run(points, 1, false));
    assert!(
        num(without, "reads_stale") > 0.0,
        "the checker sees stale reads: {without}"
    );
    assert!(
        num(with, "reads_stale") <= num(without, "reads_stale"),
        "read repair: {with} vs {without}"
    );
    assert!(num(with, "repair_bytes_per_read") > 0.0, "{with}");
    assert_eq!(num(without, "repair_bytes_per_read"), 0.0, "{without}");
}
