//! Performance of the simulator itself: wall time, events per second, memory per node.

use serde::Serialize;

/// Resident set size of this process in bytes, where the OS tells (Linux `/proc`).
pub fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// How fast and how big a run was. Not part of the deterministic report: wall-clock figures
/// differ between runs.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PerfReport {
    /// Wall-clock seconds.
    pub wall_secs: f64,
    /// Events handled.
    pub events: u64,
    /// Events per wall-clock second.
    pub events_per_sec: f64,
    /// Largest network simulated.
    pub max_nodes: usize,
    /// Resident memory per node of the largest network, bytes: process RSS growth since the
    /// start over its size (an upper bound).
    pub bytes_per_node: Option<f64>,
    /// Peak process RSS seen, bytes.
    pub peak_rss: Option<u64>,
}

impl PerfReport {
    /// One line for the terminal.
    pub fn line(&self) -> String {
        format!(
            "simulator: {:.1} s wall, {} events, {:.0} events/s, largest network {} nodes, {} per node, peak RSS {}",
            self.wall_secs,
            self.events,
            self.events_per_sec,
            self.max_nodes,
            self.bytes_per_node
                .map_or("n/a".to_string(), |b| format!("{:.1} KiB", b / 1024.0)),
            self.peak_rss
                .map_or("n/a".to_string(), |b| format!("{:.0} MiB", b as f64 / 1048576.0)),
        )
    }
}
