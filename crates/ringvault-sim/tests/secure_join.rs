//! The secure join in the simulator: with a quarter of the nodes colluding (a colluder that a
//! join reaches answers as the joiner's root with a leaf set of colluders), joiners that check
//! their join against probes along independent paths end with every correct member of their
//! true leaf set; joiners that skip the check (the negative control) miss some.

mod common;

use common::{num, point};
use ringvault_sim::experiments::{self, Params};

#[test]
fn checked_joins_get_their_true_leaf_sets_from_a_ring_of_liars() {
    let mut p = Params::new(3);
    p.nodes = Some(1_000);
    p.routes = Some(150);
    let (reports, _) =
        experiments::run(&["secure-join".to_string()], &p).expect("a known experiment");
    let points = reports[0].figures["points"].as_array().expect("points");

    let calm = point(points, 0.0, "secure_join", true);
    assert_eq!(num(calm, "joined"), 1.0, "{calm}");
    assert_eq!(num(calm, "leaf_set_complete"), 1.0, "{calm}");
    assert_eq!(num(calm, "corrections_per_join"), 0.0, "{calm}");

    let checked = point(points, 0.25, "secure_join", true);
    assert_eq!(num(checked, "joined"), 1.0, "{checked}");
    assert!(num(checked, "leaf_set_complete") >= 0.99, "{checked}");
    assert!(num(checked, "corrections_per_join") > 0.0, "{checked}");

    // Negative control: without the check the forged join replies stick.
    let unchecked = point(points, 0.25, "secure_join", false);
    assert!(
        num(unchecked, "leaf_set_complete") < 0.97,
        "without the check the attack should cost leaf set members: {unchecked}"
    );
    assert!(num(unchecked, "leaf_set_byzantine") > num(unchecked, "true_leaf_set_byzantine"));
}
