//! `scribe`: Scribe on every node of a transit-stub network, groups with Zipf sizes (the Scribe
//! paper's rule: the group of rank r has floor(N * r^-1.25 + 0.5) members, at least one).
//!
//! Measured: the delay penalty of one multicast per group against direct unicast (RAD, RMD and
//! the per-member relative delay penalty), node stress (children tables per node), link stress
//! (copies of one multicast per group crossing each router link, against IP multicast over the
//! source's shortest-path tree), and a churn run: delivery ratio while a tenth of the nodes fail
//! and after the trees repair.

use std::collections::{BTreeMap, BTreeSet};

use rand::seq::SliceRandom;
use rand::Rng;
use ringvault_overlay::{Config, Kbr};
use ringvault_scribe::{topic_id, Scribe, ScribeEvent, TopicView, PARENT_TIMEOUT};
use ringvault_types::{Duration, Id, Identity, Time};
use serde_json::{json, Value};

use super::{percentile, r6, Ctx};
use crate::perf::rss_bytes;
use crate::report::{Plot, PlotKind, Report, Series, Table};
use crate::{Place, Sim, SimConfig, Topology, TopologyKind};

const N: usize = 10_000;
/// Groups, as in the Scribe paper.
const GROUPS: usize = 1_500;
/// The Zipf exponent of group sizes.
const ZIPF: f64 = 1.25;
/// Simulated time for the subscriptions to settle into trees.
const SETTLE: Duration = Duration::from_secs(5);
/// Simulated time a multicast is given to reach every member.
const DELIVERY_WINDOW: Duration = Duration::from_secs(5);
/// Churn run: one publication per group per second for this many seconds...
const CHURN_ROUNDS: u64 = 60;
/// ...while the failing nodes die at evenly spread times in [FAIL_START, FAIL_END) seconds.
const FAIL_START: u64 = 10;
const FAIL_END: u64 = 20;
/// The fraction of the nodes that fail in the churn run.
const FAIL_FRACTION: f64 = 0.10;
/// Seconds after the last publication that late deliveries still count.
const CHURN_TAIL: u64 = 10;

/// Runs `f` on node `i`'s Scribe, then carries out what it asked of the overlay.
fn scribe<R>(sim: &mut Sim, i: u32, f: impl FnOnce(&mut Scribe, &mut dyn Kbr, Time) -> R) -> R {
    sim.with_node(i, |node, now| {
        node.with_service::<Scribe, _>(now, |s, kbr| f(s, kbr, now))
            .expect("Scribe runs on every node")
    })
}

/// Node `i`'s pending Scribe events.
fn drain(sim: &mut Sim, i: u32) -> Vec<ScribeEvent> {
    scribe(sim, i, |s, _, _| {
        std::iter::from_fn(|| s.poll_event()).collect()
    })
}

/// Runs events until `limit`, calling `woke` after each event that a node handled.
fn run_traced(sim: &mut Sim, limit: Time, mut woke: impl FnMut(&mut Sim, u32)) {
    while sim.next_event_at().is_some_and(|t| t <= limit) {
        if let Some(Some(i)) = sim.step_traced() {
            woke(sim, i);
        }
    }
    sim.now = sim.now.max(limit);
}

/// Group sizes: rank r (from 1) gets floor(n * r^-ZIPF + 0.5) members, at least 1.
pub(crate) fn zipf_sizes(n: usize, groups: usize) -> Vec<usize> {
    (1..=groups)
        .map(|r| ((n as f64 * (r as f64).powf(-ZIPF) + 0.5).floor() as usize).clamp(1, n))
        .collect()
}

/// One group's tree as its nodes see it: node -> (parent, children, is root).
type Tree = BTreeMap<u32, (Option<u32>, Vec<u32>, bool)>;

/// Every group's tree, read from every live node's Scribe.
fn snapshot(sim: &mut Sim, group_of: &BTreeMap<Id, usize>, groups: usize) -> Vec<Tree> {
    let mut trees = vec![Tree::new(); groups];
    for i in sim.alive() {
        let views: Vec<TopicView> = scribe(sim, i, |s, _, _| s.topics());
        for v in views {
            let Some(&g) = group_of.get(&v.topic) else {
                continue;
            };
            let parent = v.parent.and_then(|p| sim.index_of(&p));
            let children = v.children.iter().filter_map(|c| sim.index_of(c)).collect();
            trees[g].insert(i, (parent, children, v.root));
        }
    }
    trees
}

/// Summary of a sample: mean, median, p90, max.
fn summary(v: &[f64]) -> Value {
    if v.is_empty() {
        return json!(null);
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let q = |p: f64| s[((p * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
    json!({ "mean": r6(s.iter().sum::<f64>() / s.len() as f64), "median": r6(q(0.5)),
        "p90": r6(q(0.9)), "max": r6(s[s.len() - 1]), "count": s.len() })
}

/// A cumulative distribution as plot points (at most about 100).
fn cdf(v: &[f64]) -> Vec<(f64, f64)> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let step = (s.len() / 100).max(1);
    let mut pts: Vec<(f64, f64)> = (0..s.len())
        .step_by(step)
        .map(|k| (r6(s[k]), r6((k + 1) as f64 / s.len() as f64)))
        .collect();
    if let Some(&last) = s.last() {
        pts.push((r6(last), 1.0));
    }
    pts
}

fn router(sim: &Sim, i: u32) -> u32 {
    match sim.places[i as usize] {
        Place::Router(r) => r,
        Place::Point(..) => unreachable!("the scribe experiment runs on transit-stub"),
    }
}

/// Adds one copy of a message from node `a` to node `b` to every router link it crosses.
fn cross(sim: &Sim, stress: &mut BTreeMap<(u32, u32), u64>, a: u32, b: u32) {
    let Topology::TransitStub(ts) = &sim.topology else {
        unreachable!("the scribe experiment runs on transit-stub")
    };
    for w in ts.router_path(router(sim, a), router(sim, b)).windows(2) {
        *stress.entry((w[0].min(w[1]), w[0].max(w[1]))).or_default() += 1;
    }
}

/// Link stress histogram buckets: 1, 2, 3-4, 5-8, ... (powers of two).
fn bucket(x: u64) -> u32 {
    64 - (x.max(1) - 1).leading_zeros()
}

fn bucket_label(b: u32) -> String {
    match b {
        0 => "1".into(),
        1 => "2".into(),
        b => format!("{}-{}", (1u64 << (b - 1)) + 1, 1u64 << b),
    }
}

pub(crate) fn scribe_experiment(ctx: &mut Ctx) -> Report {
    let p = ctx.params.clone();
    let n = p.nodes.unwrap_or(N);
    let groups = GROUPS;
    let cfg = Config {
        keepalives: false,
        ..p.overlay(4, 16, 32)
    };
    let rss0 = rss_bytes();
    let mut sim = Sim::new(SimConfig {
        topology: TopologyKind::TransitStub,
        ..SimConfig::new(p.seed, cfg)
    });

    // Build: every node runs Scribe; joins one at a time, maintenance off, as the static
    // experiments do (the queue drains after each join while no topic exists).
    let bar = p.bar(n as u64, "joining");
    for _ in 0..n {
        let i = sim.add_node_with(|node| node.add_service(Box::new(Scribe::new())));
        assert!(
            sim.join_nearest(i),
            "node {i} failed to join (seed {})",
            p.seed
        );
        let limit = sim.now + Duration::from_secs(600);
        assert!(sim.drain(limit), "the network never went quiet");
        bar.inc(1);
    }
    bar.finish_and_clear();

    // Groups: Zipf sizes, members drawn uniformly without repetition.
    let creator = Identity::from_secret_bytes([7; 32]).public_key();
    let sizes = zipf_sizes(n, groups);
    let all: Vec<u32> = (0..n as u32).collect();
    let topics: Vec<Id> = (0..groups)
        .map(|g| topic_id(&format!("group-{}", g + 1), &creator))
        .collect();
    let group_of: BTreeMap<Id, usize> = topics.iter().enumerate().map(|(g, t)| (*t, g)).collect();
    let members: Vec<Vec<u32>> = sizes
        .iter()
        .map(|&s| {
            let mut m: Vec<u32> = all.choose_multiple(&mut sim.rng, s).copied().collect();
            m.sort_unstable();
            m
        })
        .collect();
    let subscriptions: usize = sizes.iter().sum();
    let bar = p.bar(subscriptions as u64, "subscribing");
    for (g, ms) in members.iter().enumerate() {
        for &m in ms {
            let t = topics[g];
            scribe(&mut sim, m, |s, kbr, now| s.subscribe(kbr, now, t))
                .expect("a topic count under the bound");
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    sim.run_for(SETTLE);

    // A source per group: a random node outside the group (any node for a group of everyone).
    let sources: Vec<u32> = members
        .iter()
        .map(|ms| {
            for _ in 0..1000 {
                let s = sim.rng.gen_range(0..n as u32);
                if ms.binary_search(&s).is_err() {
                    return s;
                }
            }
            sim.rng.gen_range(0..n as u32)
        })
        .collect();
    // A first publication teaches every source its group's root (publish then goes straight
    // there, as Scribe does after the first message).
    for g in 0..groups {
        let t = topics[g];
        scribe(&mut sim, sources[g], |s, kbr, _| {
            s.publish(kbr, t, b"warm-up".to_vec())
        })
        .expect("a valid payload");
    }
    sim.run_for(DELIVERY_WINDOW);
    for i in 0..n as u32 {
        drain(&mut sim, i);
    }

    // Trees, node stress and link stress from the trees every node reports.
    let trees = snapshot(&mut sim, &group_of, groups);
    let mut tables_per_node = vec![0u64; n];
    let mut children_per_node = vec![0u64; n];
    let mut topics_per_node = vec![0u64; n];
    for tree in &trees {
        for (&i, (_, children, _)) in tree {
            topics_per_node[i as usize] += 1;
            if !children.is_empty() {
                tables_per_node[i as usize] += 1;
                children_per_node[i as usize] += children.len() as u64;
            }
        }
    }
    let roots: Vec<Option<u32>> = trees
        .iter()
        .map(|t| t.iter().find(|(_, v)| v.2).map(|(&i, _)| i))
        .collect();
    // Depth of every member in its tree (hops from the root), following parent pointers.
    let mut depths: Vec<f64> = Vec::new();
    let mut max_depth_per_group: Vec<f64> = Vec::new();
    let mut unattached = 0usize;
    let mut unattached_per_group = vec![0usize; groups];
    for (g, tree) in trees.iter().enumerate() {
        let mut deepest = 0usize;
        for &m in &members[g] {
            let (mut at, mut d) = (m, 0usize);
            loop {
                match tree.get(&at) {
                    Some((_, _, true)) => break,
                    Some((Some(p), _, false)) if d <= n => {
                        at = *p;
                        d += 1;
                    }
                    _ => {
                        unattached += 1;
                        unattached_per_group[g] += 1;
                        d = usize::MAX;
                        break;
                    }
                }
            }
            if d != usize::MAX {
                depths.push(d as f64);
                deepest = deepest.max(d);
            }
        }
        max_depth_per_group.push(deepest as f64);
    }
    let groups_with_one_root = trees
        .iter()
        .filter(|t| t.values().filter(|v| v.2).count() == 1)
        .count();

    let mut scribe_links: BTreeMap<(u32, u32), u64> = BTreeMap::new();
    let mut ip_links: BTreeMap<(u32, u32), u64> = BTreeMap::new();
    let Topology::TransitStub(ts) = &sim.topology else {
        unreachable!("built on transit-stub")
    };
    let total_links = ts.links();
    for g in 0..groups {
        let src = sources[g];
        if let Some(root) = roots[g] {
            cross(&sim, &mut scribe_links, src, root);
        }
        for (&parent, (_, children, _)) in &trees[g] {
            for &c in children {
                cross(&sim, &mut scribe_links, parent, c);
            }
        }
        let mut used = BTreeSet::new();
        for &m in &members[g] {
            for w in ts
                .router_path(router(&sim, src), router(&sim, m))
                .windows(2)
            {
                used.insert((w[0].min(w[1]), w[0].max(w[1])));
            }
        }
        for l in used {
            *ip_links.entry(l).or_default() += 1;
        }
    }

    // Delay: one multicast per group from its source, delivery times read as they happen.
    let mut member_of = vec![false; n];
    for ms in &members {
        for &m in ms {
            member_of[m as usize] = true;
        }
    }
    let mut seq_of: BTreeMap<(usize, Id), u64> = BTreeMap::new();
    let t0 = sim.now;
    for g in 0..groups {
        let t = topics[g];
        let seq = scribe(&mut sim, sources[g], |s, kbr, _| {
            s.publish(kbr, t, b"measured".to_vec())
        })
        .expect("a valid payload");
        seq_of.insert((g, sim.id(sources[g])), seq);
    }
    // (group, member) -> (first delivery time, deliveries)
    let mut got: BTreeMap<(usize, u32), (Time, u32)> = BTreeMap::new();
    let mut stray = 0u64;
    run_traced(&mut sim, t0 + DELIVERY_WINDOW, |sim, i| {
        if !member_of[i as usize] {
            return;
        }
        for e in drain(sim, i) {
            if let ScribeEvent::Message {
                topic,
                publisher,
                seq,
                ..
            } = e
            {
                match group_of.get(&topic) {
                    Some(&g) if seq_of.get(&(g, publisher)) == Some(&seq) => {
                        let now = sim.now;
                        got.entry((g, i)).or_insert((now, 0)).1 += 1;
                    }
                    _ => stray += 1,
                }
            }
        }
    });
    let (mut expected, mut delivered, mut duplicates) = (0usize, 0usize, 0u64);
    let mut delivered_per_group = vec![0usize; groups];
    let mut rdp = Vec::new();
    let (mut rad, mut rmd, mut rad_root, mut rmd_root) = (vec![], vec![], vec![], vec![]);
    for g in 0..groups {
        let src = sources[g];
        let root = roots[g];
        let (mut s_sum, mut u_sum, mut s_max, mut u_max) = (0.0, 0.0, 0f64, 0f64);
        let (mut rs_sum, mut ru_sum, mut rs_max, mut ru_max) = (0.0, 0.0, 0f64, 0f64);
        let mut k = 0;
        for &m in &members[g] {
            expected += 1;
            let Some(&(at, copies)) = got.get(&(g, m)) else {
                continue;
            };
            delivered += 1;
            delivered_per_group[g] += 1;
            duplicates += u64::from(copies - 1);
            if m == src {
                continue;
            }
            let ds = at.saturating_since(t0).as_micros() as f64;
            let du = sim.delay(src, m).as_micros() as f64;
            rdp.push(ds / du);
            s_sum += ds;
            u_sum += du;
            s_max = s_max.max(ds);
            u_max = u_max.max(du);
            if let Some(r) = root.filter(|&r| r != m) {
                // No queueing: the publish went straight to the cached root in one hop.
                let from_root = ds - sim.delay(src, r).as_micros() as f64;
                let direct = sim.delay(r, m).as_micros() as f64;
                rs_sum += from_root;
                ru_sum += direct;
                rs_max = rs_max.max(from_root);
                ru_max = ru_max.max(direct);
            }
            k += 1;
        }
        if k > 0 {
            rad.push(s_sum / u_sum);
            rmd.push(s_max / u_max);
            if ru_sum > 0.0 {
                rad_root.push(rs_sum / ru_sum);
                rmd_root.push(rs_max / ru_max);
            }
        }
    }

    // Churn: maintenance on, one publication per group per second, a tenth of the nodes fail.
    let now = sim.now;
    for i in sim.alive() {
        sim.with_node(i, |node, _| {
            node.overlay_mut().set_maintenance(now, true, true)
        });
    }
    sim.run_for(Duration::from_secs(5));
    for i in 0..n as u32 {
        drain(&mut sim, i);
    }
    let mut victims = sim.alive();
    victims.shuffle(&mut sim.rng);
    victims.truncate(((n as f64) * FAIL_FRACTION).round() as usize);
    let victim_set: BTreeSet<u32> = victims.iter().copied().collect();
    let roots_failed = roots
        .iter()
        .filter(|r| r.is_some_and(|r| victim_set.contains(&r)))
        .count();
    let c0 = sim.now;
    let fail_span = Duration::from_secs(FAIL_END - FAIL_START);
    let kill_at: Vec<Time> = (0..victims.len())
        .map(|k| {
            c0 + Duration::from_secs(FAIL_START)
                + Duration::from_micros(fail_span.as_micros() * k as u64 / victims.len() as u64)
        })
        .collect();
    let mut next_kill = 0;
    let mut churn_sources = sources.clone();
    // (group, publisher, seq) -> round
    let mut round_of: BTreeMap<(usize, Id, u64), u32> = BTreeMap::new();
    let mut deliveries: Vec<(u32, u32, u32)> = Vec::new(); // (round, group, node)
    let bar = p.bar(CHURN_ROUNDS + CHURN_TAIL, "churn (simulated s)");
    for sec in 0..CHURN_ROUNDS + CHURN_TAIL {
        if sec < CHURN_ROUNDS {
            for g in 0..groups {
                if !sim.nodes[churn_sources[g] as usize].alive {
                    churn_sources[g] = sim.random_alive();
                }
                let src = churn_sources[g];
                let t = topics[g];
                let seq = scribe(&mut sim, src, |s, kbr, _| s.publish(kbr, t, vec![1; 32]))
                    .expect("a valid payload");
                round_of.insert((g, sim.id(src), seq), sec as u32);
            }
        }
        let end = c0 + Duration::from_secs(sec + 1);
        loop {
            let step_end = (sim.now + Duration::from_millis(100)).min(end);
            while next_kill < victims.len() && kill_at[next_kill] <= step_end {
                sim.run_until(kill_at[next_kill], |_| false);
                sim.kill(victims[next_kill]);
                next_kill += 1;
            }
            sim.run_until(step_end, |_| false);
            if sim.now >= end {
                break;
            }
        }
        for i in sim.alive() {
            for e in drain(&mut sim, i) {
                if let ScribeEvent::Message {
                    topic,
                    publisher,
                    seq,
                    ..
                } = e
                {
                    let round = group_of
                        .get(&topic)
                        .and_then(|&g| round_of.get(&(g, publisher, seq)).map(|&r| (g, r)));
                    if let Some((g, r)) = round {
                        deliveries.push((r, g as u32, i));
                    }
                }
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    ctx.account(&sim, rss0);

    // Delivery ratio per round over the members that never failed.
    let survivors: Vec<Vec<u32>> = members
        .iter()
        .map(|ms| {
            ms.iter()
                .copied()
                .filter(|m| !victim_set.contains(m))
                .collect()
        })
        .collect();
    let expected_per_round: usize = survivors.iter().map(Vec::len).sum();
    deliveries.sort_unstable();
    let before_dedup = deliveries.len();
    deliveries.dedup();
    let churn_duplicates = before_dedup - deliveries.len();
    let mut per_round = vec![0usize; CHURN_ROUNDS as usize];
    for &(r, g, i) in &deliveries {
        if survivors[g as usize].binary_search(&i).is_ok() {
            per_round[r as usize] += 1;
        }
    }
    let ratio = |r: usize| per_round[r] as f64 / expected_per_round.max(1) as f64;
    let phase = |from: u64, to: u64| -> f64 {
        let rounds = (from..to.min(CHURN_ROUNDS)).map(|r| r as usize);
        let d: usize = rounds.clone().map(|r| per_round[r]).sum();
        r6(d as f64 / (expected_per_round * rounds.count()).max(1) as f64)
    };
    let repair_done = PARENT_TIMEOUT.as_micros() / 1_000_000 + FAIL_END;
    let phases = [
        ("before failures", 0, FAIL_START),
        ("during failures", FAIL_START, FAIL_END),
        ("first repair window after", FAIL_END, repair_done + 3),
        ("after repair", repair_done + 3, CHURN_ROUNDS),
    ];
    let complete_from = (0..CHURN_ROUNDS as usize)
        .rev()
        .take_while(|&r| per_round[r] == expected_per_round)
        .last();

    // Tables and plots.
    let mut delay = Table::new(
        "delay",
        &["metric", "mean", "median", "p90", "max", "count"],
    );
    let put = |t: &mut Table, name: &str, v: &[f64]| {
        let s = summary(v);
        t.row(vec![
            json!(name),
            s["mean"].clone(),
            s["median"].clone(),
            s["p90"].clone(),
            s["max"].clone(),
            s["count"].clone(),
        ]);
        s
    };
    let rad_s = put(&mut delay, "RAD (per group, from source)", &rad);
    let rmd_s = put(&mut delay, "RMD (per group, from source)", &rmd);
    let rdp_s = put(&mut delay, "RDP (per member, from source)", &rdp);
    let rad_root_s = put(&mut delay, "RAD (per group, from root)", &rad_root);
    let rmd_root_s = put(&mut delay, "RMD (per group, from root)", &rmd_root);

    let f64s = |v: &[u64]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
    let with_tables: Vec<f64> = tables_per_node
        .iter()
        .filter(|&&t| t > 0)
        .map(|&t| t as f64)
        .collect();
    let mut stress = Table::new(
        "node-stress",
        &["metric", "mean", "median", "p90", "max", "count"],
    );
    let tables_s = put(
        &mut stress,
        "non-empty children tables per node",
        &f64s(&tables_per_node),
    );
    let children_s = put(
        &mut stress,
        "children entries per node",
        &f64s(&children_per_node),
    );
    let topics_s = put(
        &mut stress,
        "topics a node takes part in",
        &f64s(&topics_per_node),
    );
    let with_tables_s = put(
        &mut stress,
        "children tables, nodes with at least one",
        &with_tables,
    );
    let mut hist: BTreeMap<u64, u64> = BTreeMap::new();
    for &c in &children_per_node {
        *hist.entry(c.min(64)).or_default() += 1;
    }
    let mut children_hist = Table::new("children-histogram", &["children entries", "nodes"]);
    for (&c, &k) in &hist {
        let label = if c == 64 {
            "64+".to_string()
        } else {
            c.to_string()
        };
        children_hist.row(vec![json!(label), json!(k)]);
    }

    let link_summary = |m: &BTreeMap<(u32, u32), u64>| {
        let total: u64 = m.values().sum();
        let mut v: Vec<u64> = m.values().copied().collect();
        json!({ "links_used": m.len(), "copies": total,
            "mean_over_used_links": r6(total as f64 / m.len().max(1) as f64),
            "mean_over_all_links": r6(total as f64 / total_links.max(1) as f64),
            "median_over_used_links": percentile(&mut v, 50.0),
            "max": v.last().copied().unwrap_or(0) })
    };
    let scribe_ls = link_summary(&scribe_links);
    let ip_ls = link_summary(&ip_links);
    let mut links = Table::new(
        "link-stress",
        &[
            "scheme",
            "links used",
            "copies",
            "mean (used links)",
            "mean (all links)",
            "median (used)",
            "max",
        ],
    );
    for (name, s) in [("Scribe", &scribe_ls), ("IP multicast", &ip_ls)] {
        links.row(vec![
            json!(name),
            s["links_used"].clone(),
            s["copies"].clone(),
            s["mean_over_used_links"].clone(),
            s["mean_over_all_links"].clone(),
            s["median_over_used_links"].clone(),
            s["max"].clone(),
        ]);
    }
    let mut lh: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    for &c in scribe_links.values() {
        lh.entry(bucket(c)).or_default().0 += 1;
    }
    for &c in ip_links.values() {
        lh.entry(bucket(c)).or_default().1 += 1;
    }
    let mut link_hist = Table::new(
        "link-histogram",
        &["copies per link", "links (Scribe)", "links (IP multicast)"],
    );
    for (&b, &(s, i)) in &lh {
        link_hist.row(vec![json!(bucket_label(b)), json!(s), json!(i)]);
    }

    let mut churn = Table::new(
        "churn",
        &["second", "expected", "delivered", "delivery ratio"],
    );
    for (r, &d) in per_round.iter().enumerate() {
        churn.row(vec![
            json!(r),
            json!(expected_per_round),
            json!(d),
            json!(r6(ratio(r))),
        ]);
    }
    let mut churn_phases = Table::new("churn-phases", &["phase", "seconds", "delivery ratio"]);
    let mut phase_json = Vec::new();
    for (name, a, b) in phases {
        let v = phase(a, b);
        churn_phases.row(vec![json!(name), json!(format!("{a}-{b}")), json!(v)]);
        phase_json.push(json!({ "phase": name, "from_s": a, "to_s": b, "delivery_ratio": v }));
    }

    // The measured multicast by group rank: where members were missing.
    let mut by_rank = Table::new(
        "by-group-size",
        &[
            "group ranks",
            "members",
            "delivered",
            "not attached to a root",
            "deepest member",
        ],
    );
    for (lo, hi) in [(1, 1), (2, 2), (3, 3), (4, 10), (11, 100), (101, groups)] {
        if lo > groups {
            break;
        }
        let span = lo - 1..hi.min(groups);
        by_rank.row(vec![
            json!(format!("{lo}-{}", hi.min(groups))),
            json!(members[span.clone()].iter().map(Vec::len).sum::<usize>()),
            json!(delivered_per_group[span.clone()].iter().sum::<usize>()),
            json!(unattached_per_group[span.clone()].iter().sum::<usize>()),
            json!(max_depth_per_group[span]
                .iter()
                .copied()
                .fold(0.0, f64::max)),
        ]);
    }

    let plots = vec![
        Plot {
            name: "delay".into(),
            title: format!("Delay penalty against unicast, {groups} groups, N = {n}"),
            x_label: "delay penalty".into(),
            y_label: "cumulative fraction of groups".into(),
            kind: PlotKind::Line,
            log_x: false,
            series: vec![
                Series {
                    label: "RAD".into(),
                    points: cdf(&rad),
                },
                Series {
                    label: "RMD".into(),
                    points: cdf(&rmd),
                },
            ],
        },
        Plot {
            name: "node-stress".into(),
            title: format!("Children entries per node, N = {n}"),
            x_label: "children entries (64 = 64 or more)".into(),
            y_label: "nodes".into(),
            kind: PlotKind::Bar,
            log_x: false,
            series: vec![Series {
                label: "nodes".into(),
                points: hist.iter().map(|(&c, &k)| (c as f64, k as f64)).collect(),
            }],
        },
        Plot {
            name: "link-stress".into(),
            title: "Copies per router link, one message per group".into(),
            x_label: "copies per link: 0 = 1, 1 = 2, k = 2^(k-1)+1..2^k".into(),
            y_label: "links".into(),
            kind: PlotKind::Bar,
            log_x: false,
            series: vec![
                Series {
                    label: "Scribe".into(),
                    points: lh
                        .iter()
                        .map(|(&b, &(s, _))| (b as f64, s as f64))
                        .collect(),
                },
                Series {
                    label: "IP multicast".into(),
                    points: lh
                        .iter()
                        .map(|(&b, &(_, i))| (b as f64, i as f64))
                        .collect(),
                },
            ],
        },
        Plot {
            name: "churn".into(),
            title: format!(
                "Delivery ratio, {} of {n} nodes fail in seconds {FAIL_START}-{FAIL_END}",
                victims.len()
            ),
            x_label: "second of publication".into(),
            y_label: "delivery ratio".into(),
            kind: PlotKind::Line,
            log_x: false,
            series: vec![Series {
                label: "delivered / live members".into(),
                points: (0..CHURN_ROUNDS as usize)
                    .map(|r| (r as f64, r6(ratio(r))))
                    .collect(),
            }],
        },
    ];

    Report {
        experiment: "scribe".into(),
        seed: p.seed,
        parameters: json!({ "common": p, "n": n, "topology": "transit-stub (always)",
            "groups": groups, "zipf_exponent": ZIPF,
            "group_size_rule": "rank r: floor(N * r^-1.25 + 0.5), at least 1; members uniform",
            "subscriptions": subscriptions, "settle_secs": SETTLE.as_secs_f64(),
            "source": "a random non-member per group; one warm-up publication caches the root",
            "churn": { "rounds_secs": CHURN_ROUNDS, "fail_fraction": FAIL_FRACTION,
                "fail_window_secs": [FAIL_START, FAIL_END], "tail_secs": CHURN_TAIL,
                "publications": "one per group per second",
                "expected": "members that never failed" } }),
        figures: json!({
            "trees": { "groups_with_one_root": groups_with_one_root,
                "members_not_attached": unattached,
                "member_depth": summary(&depths),
                "max_depth_per_group": summary(&max_depth_per_group),
                "tree_nodes": topics_per_node.iter().sum::<u64>() },
            "delivery": { "expected": expected, "delivered": delivered,
                "duplicates": duplicates, "stray": stray },
            "delay": { "rad": rad_s, "rmd": rmd_s, "rdp": rdp_s,
                "rad_from_root": rad_root_s, "rmd_from_root": rmd_root_s },
            "node_stress": { "children_tables": tables_s, "children_entries": children_s,
                "topics": topics_s, "children_tables_where_any": with_tables_s },
            "link_stress": { "scribe": scribe_ls, "ip_multicast": ip_ls,
                "router_links": total_links },
            "churn": { "failed": victims.len(), "groups_whose_root_failed": roots_failed,
                "expected_per_second": expected_per_round, "phases": phase_json,
                "duplicates": churn_duplicates,
                "complete_from_second": complete_from },
        }),
        tables: vec![
            by_rank,
            delay,
            stress,
            children_hist,
            links,
            link_hist,
            churn_phases,
            churn,
        ],
        plots,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_sizes_follow_the_papers_rule() {
        let s = zipf_sizes(100_000, 1_500);
        assert_eq!(s[0], 100_000);
        assert_eq!(s[1], 42_045); // floor(100000 * 2^-1.25 + 0.5)
        assert_eq!(s[1499], 11);
        assert!(s.windows(2).all(|w| w[0] >= w[1]));
        assert_eq!(zipf_sizes(10, 50)[49], 1);
    }

    #[test]
    fn link_buckets_are_powers_of_two() {
        let b: Vec<u32> = [1, 2, 3, 4, 5, 8, 9].iter().map(|&x| bucket(x)).collect();
        assert_eq!(b, vec![0, 1, 2, 2, 3, 3, 4]);
        assert_eq!(bucket_label(3), "5-8");
    }
}
