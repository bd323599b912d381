//! Scripting a simulated network: joins, failures, partitions and routes, driven through the
//! nodes' own commands.

use rand::Rng;
use ringvault_node::{Command, CommandOutput, RouteReport};
use ringvault_types::{Duration, Id};

use super::{Sim, JOIN_LIMIT, ROUTE_LIMIT};

/// How long [`Sim::join_and_settle`] waits for the network to go quiet after a join.
pub const SETTLE_LIMIT: Duration = Duration::from_secs(600);

impl Sim {
    /// The live, joined node nearest to node `i` (its bootstrap), if any.
    pub fn nearest_joined(&mut self, i: u32) -> Option<u32> {
        let place = self.places[i as usize];
        self.index
            .nearest(&self.topology, place, &self.places)
            .filter(|&j| j != i)
    }

    /// Node `i` joins through the live, joined node nearest to it (or starts the ring when there
    /// is none) and the run goes on until it has joined; false if it did not within
    /// [`JOIN_LIMIT`].
    pub fn join_nearest(&mut self, i: u32) -> bool {
        self.start_join_nearest(i);
        let limit = self.now + JOIN_LIMIT;
        self.run_until(limit, |s| s.nodes[i as usize].joined)
    }

    /// A static build's step: node `i` joins through its nearest joined node, then the run
    /// goes on until the network is quiet (at most [`SETTLE_LIMIT`] more); false if either did
    /// not happen in time.
    pub fn join_and_settle(&mut self, i: u32) -> bool {
        self.join_nearest(i) && self.drain(self.now + SETTLE_LIMIT)
    }

    /// Starts node `i`'s join through its nearest joined node without running the network.
    pub fn start_join_nearest(&mut self, i: u32) {
        match self.nearest_joined(i) {
            None => {
                self.command(i, Command::StartRing);
            }
            Some(b) => {
                let c = self.contact(b);
                self.command(i, Command::Join { bootstrap: c });
            }
        }
    }

    /// Builds a ring of `n` more nodes, each joining through its nearest joined node.
    pub fn grow(&mut self, n: usize) {
        for _ in 0..n {
            let i = self.add_node();
            assert!(
                self.join_nearest(i),
                "node {i} failed to join (seed {})",
                self.cfg.seed
            );
        }
    }

    /// Node `i` fails silently.
    pub fn kill(&mut self, i: u32) {
        let n = &mut self.nodes[i as usize];
        if n.alive && n.joined {
            self.index.remove(i, self.places[i as usize]);
        }
        n.alive = false;
    }

    /// Splits the network: `group[i]` is node `i`'s side; messages and probes between sides are
    /// lost. Nodes added later join group 0.
    pub fn partition(&mut self, group: Vec<u8>) {
        assert_eq!(group.len(), self.nodes.len(), "one group per node");
        self.partition = Some(group);
    }

    /// Ends a partition.
    pub fn heal(&mut self) {
        self.partition = None;
    }

    /// Indices of live, joined nodes.
    pub fn alive(&self) -> Vec<u32> {
        (0..self.nodes.len() as u32)
            .filter(|&i| self.nodes[i as usize].alive && self.nodes[i as usize].joined)
            .collect()
    }

    /// Turns routing table maintenance on (every `every`) or off (`None`) in every live, joined
    /// node.
    pub fn set_table_maintenance(&mut self, every: Option<Duration>) {
        for i in self.alive() {
            self.with_node(i, |node, now| {
                node.overlay_mut().set_table_maintenance(now, every)
            });
        }
    }

    /// The live, joined node numerically closest to `key` (its true root).
    pub fn true_root(&self, key: &Id) -> Id {
        crate::Ring::of(self).root(key)
    }

    /// A random live, joined node.
    pub fn random_alive(&mut self) -> u32 {
        assert!(
            self.nodes.iter().any(|n| n.alive && n.joined),
            "no live node"
        );
        loop {
            let i = self.rng.gen_range(0..self.nodes.len() as u32);
            let n = &self.nodes[i as usize];
            if n.alive && n.joined {
                return i;
            }
        }
    }

    /// Routes a traced probe from node `src` to `key` and runs until its report arrives
    /// (bounded by [`ROUTE_LIMIT`]).
    pub fn route(&mut self, src: u32, key: Id) -> Option<RouteReport> {
        let id = self.command(src, Command::RouteProbe { key });
        let limit = self.now + ROUTE_LIMIT;
        self.run_until(limit, |s| s.has_result(src, id));
        match self.take_result(src, id) {
            Some(Ok(CommandOutput::Route(r))) => Some(r),
            _ => None,
        }
    }

    /// Routes many traced probes, at most `window` outstanding at once, and returns each report
    /// (in the order asked; `None` for a probe that failed or timed out).
    pub fn route_many(
        &mut self,
        routes: &[(u32, Id)],
        window: usize,
        mut progress: impl FnMut(usize),
    ) -> Vec<Option<RouteReport>> {
        let mut out = Vec::with_capacity(routes.len());
        for chunk in routes.chunks(window.max(1)) {
            let base = self.commands_done;
            let ids: Vec<(u32, u64)> = chunk
                .iter()
                .map(|&(src, key)| (src, self.command(src, Command::RouteProbe { key })))
                .collect();
            let limit = self.now + ROUTE_LIMIT;
            let want = base + ids.len() as u64;
            self.run_until(limit, |s| s.commands_done >= want);
            for (n, id) in ids {
                out.push(match self.take_result(n, id) {
                    Some(Ok(CommandOutput::Route(r))) => Some(r),
                    _ => None,
                });
            }
            progress(chunk.len());
        }
        out
    }
}
