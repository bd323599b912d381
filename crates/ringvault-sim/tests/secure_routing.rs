//! Secure routing in the simulator: with a quarter of the nodes colluding, `sec_route` still
//! reaches every correct member of the key's replica set, while plain routing loses most routes;
//! and with the failure test switched off the same attack succeeds, so the test is what catches
//! the forgeries (the negative control).

use ringvault_sim::experiments::{self, Params};
use serde_json::Value;

/// The figures of every (fraction, attack) point of one `secure-routing` run.
fn run(failure_test: bool) -> Vec<Value> {
    let mut p = Params::new(3);
    p.nodes = Some(1_500);
    p.routes = Some(400);
    p.no_failure_test = !failure_test;
    let (reports, _) =
        experiments::run(&["secure-routing".to_string()], &p).expect("a known experiment");
    reports[0].figures["points"]
        .as_array()
        .expect("points")
        .to_vec()
}

fn at<'a>(points: &'a [Value], f: f64, attack: &str) -> &'a Value {
    points
        .iter()
        .find(|p| p["attack"] == attack && p["figures"]["f"].as_f64() == Some(f))
        .map(|p| &p["figures"])
        .expect("the point was measured")
}

#[test]
fn sec_route_reaches_the_replica_set_under_attack_and_the_failure_test_is_what_protects_it() {
    let points = run(true);
    let none = at(&points, 0.0, "none");
    assert_eq!(none["secure_delivered_all"].as_f64(), Some(1.0));
    for attack in ["fake-root", "suppress"] {
        let p = at(&points, 0.25, attack);
        let secure = p["secure_delivered_all"].as_f64().unwrap();
        let plain = p["plain_reached_root"].as_f64().unwrap();
        assert!(
            secure >= 0.99,
            "{attack}: sec_route delivered to all on {secure}"
        );
        assert!(
            plain < 0.7,
            "{attack}: plain routing should suffer, got {plain}"
        );
    }

    // Negative control: a failure test that never fires accepts forged answers.
    let off = run(false);
    let forged = at(&off, 0.25, "fake-root");
    let secure = forged["secure_delivered_all"].as_f64().unwrap();
    assert!(
        secure < 0.9,
        "without the failure test the forgeries should win, yet {secure} reached every correct member"
    );
    assert_eq!(forged["redundant"].as_f64(), Some(0.0));
}
