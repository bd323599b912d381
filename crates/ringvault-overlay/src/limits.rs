//! Per-address rate limits on work a stranger can make this node do: starting a join through
//! this node (the bootstrap's join reply, and the routing of the join onward) costs it and the
//! ring messages, so each source address gets a token bucket. Certificates bound how many ids
//! an attacker holds; this bounds how fast any address can make the ring work for it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ringvault_types::{Duration, Time};

/// At most this many addresses are tracked; beyond it the one idle longest is forgotten.
pub const MAX_TRACKED_ADDRESSES: usize = 4096;

/// A token bucket per source address (IPv4 address, IPv6 /64).
#[derive(Debug, Default)]
pub(crate) struct RateLimit {
    /// Tokens per minute, and the burst allowed; 0: no limit.
    per_minute: u32,
    buckets: BTreeMap<IpAddr, (f64, Time)>,
}

/// The block an address counts against: the IPv4 address, or the IPv6 /64.
fn block(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

impl RateLimit {
    pub(crate) fn new(per_minute: u32) -> Self {
        RateLimit {
            per_minute,
            buckets: BTreeMap::new(),
        }
    }

    /// Takes a token for `ip` at `now`; false when its bucket is empty.
    pub(crate) fn admit(&mut self, now: Time, ip: IpAddr) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        let cap = f64::from(self.per_minute);
        let key = block(ip);
        if !self.buckets.contains_key(&key) && self.buckets.len() >= MAX_TRACKED_ADDRESSES {
            if let Some((&idle, _)) = self.buckets.iter().min_by_key(|(_, (_, t))| *t) {
                self.buckets.remove(&idle);
            }
        }
        let (tokens, last) = self.buckets.entry(key).or_insert((cap, now));
        let minutes = now.saturating_since(*last).as_micros() as f64
            / Duration::from_secs(60).as_micros() as f64;
        *tokens = (*tokens + minutes * cap).min(cap);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
