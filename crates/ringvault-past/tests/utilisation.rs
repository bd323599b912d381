//! PAST's storage management at a few hundred nodes (the `past-storage` setup of the design's
//! experiments, scaled down 100x in capacity so it runs in a test): node capacities from a
//! truncated normal, object sizes heavy-tailed, inserts until the ring is nearly full. With
//! replica and file diversion the ring keeps accepting past 90% utilisation with few failures;
//! without them inserts fail far earlier.

use ringvault_overlay::Config;
use ringvault_past::{MemoryStore, Past, PastConfig, PastError, PastEvent};
use ringvault_testkit::TestRing;
use ringvault_types::{Duration, Identity};

const NODES: usize = 60;
const K: u8 = 5;

/// A small deterministic generator (splitmix64), so the test needs no RNG crate.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.unit().max(1e-12), self.unit());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// Capacities: normal(mean 270 KB, sd 108 KB) truncated to 20..510 KB (the paper's 27 MB,
/// 10.8, 2..51 scaled by 1/100).
fn capacity(g: &mut Gen) -> u64 {
    loop {
        let c = 270_000.0 + 108_000.0 * g.normal();
        if (20_000.0..=510_000.0).contains(&c) {
            return c as u64;
        }
    }
}

/// Sizes: lognormal with median 130 B and mean about 1 KB (sigma 2.04), capped at 14 KB: the
/// paper's shape (median 1.3 KB, mean 10.5 KB, max 138 MB) scaled by 1/10, so a node holds
/// about 260 average objects (the paper: about 2,600).
fn size(g: &mut Gen) -> usize {
    let s = (130.0f64.ln() + 2.04 * g.normal()).exp();
    s.clamp(1.0, 14_000.0) as usize
}

struct Outcome {
    attempts: usize,
    failures: usize,
    utilisation: f64,
}

fn utilisation(ring: &mut TestRing) -> f64 {
    let (mut used, mut cap) = (0u64, 0u64);
    for m in ring.members.iter_mut() {
        let u = m
            .node
            .with_service::<Past, _>(ringvault_types::Time::ZERO, |p, _| p.store().usage())
            .unwrap();
        used += u.used;
        cap += u.capacity;
    }
    used as f64 / cap as f64
}

/// Inserts until utilisation reaches `target` or `max_attempts` inserts were tried.
fn fill(diversion: bool, target: f64, max_attempts: usize) -> Outcome {
    let mut g = Gen(42);
    let caps: Vec<u64> = (0..NODES).map(|_| capacity(&mut g)).collect();
    let config = PastConfig {
        diversion,
        ..PastConfig::default()
    };
    let leaf_set = Config {
        leaf_set_size: 32,
        ..Config::default()
    };
    let mut ring = TestRing::new(NODES, leaf_set, |i, me, node| {
        let key = Identity::from_secret_bytes(me.secret_bytes());
        let past =
            Past::with_config(key, Box::new(MemoryStore::new(caps[i])), config.clone()).unwrap();
        node.add_service(Box::new(past));
    });
    let (mut attempts, mut failures) = (0, 0);
    while attempts < max_attempts {
        if attempts % 100 == 0 && utilisation(&mut ring) >= target {
            break;
        }
        let from = (g.next() % NODES as u64) as usize;
        let data = vec![(attempts % 251) as u8; size(&mut g)];
        let name = format!("file-{attempts}");
        let req = ring.call::<Past, _>(from, |p, kbr, now, me| {
            p.insert(kbr, now, me, &name, data, K, 0)
        });
        attempts += 1;
        let result = ring.call::<Past, _>(from, |p, _, _, _| {
            let mut r = None;
            while let Some(e) = p.poll_event() {
                if let PastEvent::Inserted(id, res) = e {
                    if id == req {
                        r = Some(res.map(|_| ()));
                    }
                }
            }
            r
        });
        match result {
            Some(Ok(())) => {}
            Some(Err(PastError::NoSpace(_))) => failures += 1,
            other => panic!("insert {attempts} ended unexpectedly: {other:?}"),
        }
        // Let maintenance run now and then: offers carry free space, which diversion uses.
        if attempts % 250 == 0 {
            ring.advance(Duration::from_secs(61));
        }
    }
    let utilisation = utilisation(&mut ring);
    Outcome {
        attempts,
        failures,
        utilisation,
    }
}

#[test]
fn diversion_keeps_the_ring_accepting_past_ninety_percent() {
    let on = fill(true, 0.90, 20_000);
    let rate_on = on.failures as f64 / on.attempts as f64;
    eprintln!(
        "diversion on: {} inserts, {} failed ({:.1}%), utilisation {:.1}%",
        on.attempts,
        on.failures,
        100.0 * rate_on,
        100.0 * on.utilisation
    );
    assert!(
        on.utilisation >= 0.90,
        "stalled at {:.1}% utilisation",
        100.0 * on.utilisation
    );
    assert!(
        rate_on < 0.10,
        "{:.1}% of inserts failed on the way to 90%",
        100.0 * rate_on
    );

    // Without diversion, the same workload for the same number of inserts.
    let off = fill(false, 0.90, on.attempts);
    let rate_off = off.failures as f64 / off.attempts as f64;
    eprintln!(
        "diversion off: {} inserts, {} failed ({:.1}%), utilisation {:.1}%",
        off.attempts,
        off.failures,
        100.0 * rate_off,
        100.0 * off.utilisation
    );
    assert!(
        rate_off > 2.0 * rate_on,
        "diversion made no marked difference"
    );
    assert!(off.utilisation < on.utilisation);
}
