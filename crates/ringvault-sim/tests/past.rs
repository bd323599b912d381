//! PAST's storage management on the simulator (issue 6's CI scenario): a few hundred nodes, each
//! running PAST unchanged over a memory store, filled with heavy-tailed objects from random
//! nodes under simulated time, fixed seed. With replica and file diversion the ring takes
//! inserts to 90% utilisation with few failures; without them far more fail on the way.
//!
//! The workload is `past-storage`'s shape with capacities 10x smaller relative to object sizes
//! (a node holds about 260 average objects, not 2,600), so the test fills a 200-node ring in
//! seconds; acceptance is harsher at that ratio, so the rates here bound the experiment's.

use ringvault_past::{CachePolicy, PastConfig};
use ringvault_sim::experiments::past::{build, expected_objects, fill, Outcome, Setup, Workload};
use ringvault_sim::TopologyKind;

const SEED: u64 = 6;
const NODES: usize = 200;

fn setup(diversion: bool) -> Setup {
    let workload = Workload {
        // The paper's sizes x 10, everything / 1,000: capacities 27 KB on average (2..51 KB),
        // objects of median 13 B and mean about 105 B.
        size_median: 13e3,
        size_max: 1.38e9,
        scale: 1_000,
        ..Workload::paper()
    };
    let past = PastConfig {
        diversion,
        cache: CachePolicy::Off,
        ..PastConfig::default()
    };
    Setup {
        window: 64,
        interval: 500,
        max_attempts: 3 * expected_objects(NODES, 5, &workload),
        stop_utilisation: 0.90,
        workload,
        ..Setup::paper(NODES, past)
    }
}

fn run(setup: &Setup, label: &str) -> Outcome {
    let mut sim = build(SEED, TopologyKind::Euclidean, setup, &|_| {});
    let o = fill(&mut sim, setup, label, &|_| {});
    let rate = o.failed as f64 / o.attempts as f64;
    eprintln!(
        "{label}: {} inserts, {} failed ({:.2}%), {} needed file diversion, {} replicas \
         diverted, utilisation {:.1}% (seed {SEED})",
        o.attempts,
        o.failed,
        100.0 * rate,
        o.file_diverted,
        o.replicas_diverted,
        100.0 * o.utilisation
    );
    let curve: Vec<String> = o
        .points
        .iter()
        .map(|p| format!("{:.2}:{:.3}", p.utilisation, p.cumulative_failure_rate))
        .collect();
    eprintln!("  utilisation:cumulative failure rate {}", curve.join(" "));
    o
}

/// The cumulative failure rate when utilisation first reached `u` (or at the end).
fn failure_rate_at(o: &Outcome, u: f64) -> f64 {
    o.points
        .iter()
        .find(|p| p.utilisation >= u)
        .or(o.points.last())
        .map_or(1.0, |p| p.cumulative_failure_rate)
}

#[test]
fn diversion_keeps_the_ring_accepting_past_ninety_percent_and_without_it_inserts_fail_early() {
    let on = run(&setup(true), "diversion on");
    assert_eq!(on.other_errors, 0, "inserts timed out (seed {SEED})");
    assert_eq!(on.wrong_leaf_sets, 0);
    assert!(
        on.utilisation >= 0.90,
        "stalled at {:.1}% utilisation (seed {SEED})",
        100.0 * on.utilisation
    );
    let rate_on = on.failed as f64 / on.attempts as f64;
    assert!(
        rate_on < 0.05,
        "{:.2}% of inserts failed on the way to 90% (seed {SEED})",
        100.0 * rate_on
    );
    assert!(on.replicas_diverted > 0 && on.file_diverted > 0);

    // Without diversion: the same workload, for as many inserts as the ring with diversion
    // needed to reach 90%.
    let off_setup = Setup {
        max_attempts: on.attempts,
        stop_failure_rate: 1.1,
        ..setup(false)
    };
    let off = run(&off_setup, "diversion off");
    assert_eq!(off.other_errors, 0, "inserts timed out (seed {SEED})");
    assert_eq!((off.replicas_diverted, off.file_diverted), (0, 0));
    // At the same utilisation (60%, which both reach), far more inserts have failed without
    // diversion; and it stalls well short of where the ring with diversion got.
    let (off_60, on_60) = (failure_rate_at(&off, 0.60), failure_rate_at(&on, 0.60));
    assert!(
        off_60 > 3.0 * on_60 && off_60 > 0.02,
        "diversion made no marked difference at 60%: {:.2}% failed without, {:.2}% with",
        100.0 * off_60,
        100.0 * on_60
    );
    // Without diversion, more had failed by 60% than with it all the way to 90%.
    assert!(off_60 > failure_rate_at(&on, 0.90));
    assert!(
        off.utilisation < on.utilisation - 0.10,
        "without diversion the ring still reached {:.1}%",
        100.0 * off.utilisation
    );
}
