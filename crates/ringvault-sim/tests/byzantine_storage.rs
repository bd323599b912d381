//! PAST under attack in the simulator: with a quarter of the nodes colluding (hijacking routes,
//! signing receipts for replicas they drop, serving forged copies), secure-mode PAST still
//! reads back every object a correct node holds; with PAST's secure mode off on the same ring
//! and attack, the checker sees lookups fail (the negative control).

mod common;

use common::{num, point};
use ringvault_sim::experiments::{self, Params};

#[test]
fn secure_past_reads_back_every_readable_object_with_a_quarter_of_the_nodes_lying() {
    let mut p = Params::new(3);
    p.nodes = Some(1_000);
    p.routes = Some(300);
    let (reports, _) =
        experiments::run(&["byzantine-storage".to_string()], &p).expect("a known experiment");
    let points = reports[0].figures["points"].as_array().expect("points");

    let calm = point(points, 0.0, "secure", true);
    assert_eq!(num(calm, "lookups_right_bytes"), 1.0, "{calm}");
    assert_eq!(
        num(calm, "secure_lookups"),
        0.0,
        "no attack, no retries: {calm}"
    );

    let attacked = point(points, 0.25, "secure", true);
    assert!(num(attacked, "inserts_ok") >= 0.99, "{attacked}");
    assert!(num(attacked, "held_by_correct") >= 0.99, "{attacked}");
    assert!(
        num(attacked, "lookups_right_bytes_readable") >= 0.99,
        "{attacked}"
    );
    assert!(
        num(attacked, "secure_lookups") > 0.0,
        "the attack should bite: {attacked}"
    );
    assert_eq!(num(attacked, "lookups_wrong_bytes"), 0.0, "{attacked}");

    // Negative control: the same attack against PAST that trusts the ordinary route.
    let open = point(points, 0.25, "secure", false);
    assert!(
        num(open, "lookups_right_bytes") < 0.9,
        "without secure PAST the attack should cost lookups: {open}"
    );
}
