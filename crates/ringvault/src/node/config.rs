//! `ringvault node --config FILE`: the TOML settings file, merged under the command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ringvault_overlay::Config;
use ringvault_types::Duration;
use serde::Deserialize;

/// The settings file. Every field is optional; flags override it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// QUIC address.
    pub listen: Option<SocketAddr>,
    /// The QUIC address peers dial (HOST:PORT).
    pub advertise: Option<String>,
    /// HTTP address.
    pub http: Option<SocketAddr>,
    /// Bootstrap nodes (HOST:PORT).
    #[serde(default)]
    pub bootstrap: Vec<String>,
    /// Overlay parameters.
    #[serde(default)]
    pub overlay: OverlaySettings,
    /// How the node uses its spare space.
    #[serde(default)]
    pub storage: StorageSettings,
}

/// `[storage]`: what the node does with the space its replicas leave free.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    /// Whether objects passing through (lookups this node forwards or makes, inserts it
    /// routes) are cached, and which cached copies go first: `greedy-dual-size` (the default),
    /// `lru`, or `off`.
    pub cache: Option<CacheSetting>,
}

/// The values of `[storage] cache`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheSetting {
    /// Nothing passing through is cached.
    Off,
    /// Least recently used copies are evicted first.
    Lru,
    /// Large and long-unused copies are evicted first (PAST's choice).
    GreedyDualSize,
}

impl From<CacheSetting> for ringvault_past::CachePolicy {
    fn from(c: CacheSetting) -> Self {
        match c {
            CacheSetting::Off => Self::Off,
            CacheSetting::Lru => Self::Lru,
            CacheSetting::GreedyDualSize => Self::GreedyDualSize,
        }
    }
}

/// Overlay parameters a person may want to tune; the rest keep Pastry's defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverlaySettings {
    /// Leaf set size L (even).
    pub leaf_set_size: Option<usize>,
    /// Neighbourhood set size M.
    pub neighbourhood_size: Option<usize>,
    /// Keep-alive interval, milliseconds.
    pub keepalive_ms: Option<u64>,
    /// Silence after which a leaf is declared failed, milliseconds.
    pub failure_timeout_ms: Option<u64>,
    /// Per-hop acknowledgement timeout for a peer never measured, and the longest any hop
    /// waits; also how long a suspect may stay silent before it is declared failed,
    /// milliseconds.
    pub hop_timeout_ms: Option<u64>,
    /// What a hop to a measured peer may take beyond three round trips, milliseconds.
    pub hop_slack_ms: Option<u64>,
    /// Routing table maintenance period, seconds (0: off).
    pub table_maintenance_s: Option<u64>,
    /// Join step timeout, milliseconds.
    pub join_timeout_ms: Option<u64>,
}

impl FileConfig {
    /// Reads and parses `path`, saying which file and what is wrong.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "config file {} is not valid: {}",
                path.display(),
                e.to_string().trim()
            )
        })
    }
}

impl OverlaySettings {
    /// The overlay configuration: defaults with these settings applied, validated.
    pub fn to_config(&self) -> Result<Config> {
        let mut c = Config::default();
        if let Some(v) = self.leaf_set_size {
            c.leaf_set_size = v;
        }
        if let Some(v) = self.neighbourhood_size {
            c.neighbourhood_size = v;
        }
        let ms = Duration::from_millis;
        if let Some(v) = self.keepalive_ms {
            c.keepalive_interval = ms(v);
        }
        if let Some(v) = self.failure_timeout_ms {
            c.failure_timeout = ms(v);
        }
        if let Some(v) = self.hop_timeout_ms {
            c.hop_timeout = ms(v);
        }
        if let Some(v) = self.hop_slack_ms {
            c.hop_slack = ms(v);
        }
        if let Some(v) = self.table_maintenance_s {
            c.table_maintenance_interval = (v > 0).then(|| Duration::from_secs(v));
        }
        if let Some(v) = self.join_timeout_ms {
            c.join_timeout = ms(v);
        }
        c.validate()
            .map_err(|e| anyhow::anyhow!("{e}; fix the [overlay] section of the config file"))?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_parses_and_unknown_keys_are_refused() {
        let f: FileConfig = toml::from_str(
            "data_dir = \"/tmp/x\"\nlisten = \"127.0.0.1:7100\"\nbootstrap = [\"127.0.0.1:7000\"]\n\
             [overlay]\nkeepalive_ms = 500\nfailure_timeout_ms = 2000\n\
             [storage]\ncache = \"off\"\n",
        )
        .unwrap();
        assert_eq!(f.listen, Some("127.0.0.1:7100".parse().unwrap()));
        assert_eq!(f.storage.cache, Some(CacheSetting::Off));
        assert!(toml::from_str::<FileConfig>("[storage]\ncache = \"fifo\"\n").is_err());
        let c = f.overlay.to_config().unwrap();
        assert_eq!(c.keepalive_interval, Duration::from_millis(500));
        assert!(toml::from_str::<FileConfig>("listn = \"x\"").is_err());
        let bad = OverlaySettings {
            keepalive_ms: Some(5000),
            failure_timeout_ms: Some(1000),
            ..Default::default()
        };
        assert!(bad.to_config().is_err());
    }
}
