//! The documents the store holds for one product, as JSON (serde). Shapes are documented in
//! `docs/topology.md`; fields are only ever added, with defaults, so old readers keep working.

use serde::{Deserialize, Serialize};

/// The number of slots.
pub const SLOT_COUNT: usize = 1024;

/// `/tessera/<product>/product`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Product {
    pub name: String,
    /// Password the proxies send with AUTH to every Redis ("" = none).
    #[serde(default)]
    pub backend_password: String,
    /// Password clients must give the proxies with AUTH ("" = none).
    #[serde(default)]
    pub session_password: String,
}

/// `/tessera/<product>/groups/<id>`: a master and its replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub id: u32,
    /// Server addresses, `host:port`; the first is the master.
    #[serde(default)]
    pub servers: Vec<String>,
}

/// One slot's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum SlotState {
    #[default]
    Offline,
    Owned {
        group: u32,
    },
    /// Being moved from group `from` to group `to` (docs/migration.md): its keys are on
    /// `from`, on `to`, or on their way; `from` receives no new key once every proxy has
    /// applied the revision that set this state.
    Migrating {
        from: u32,
        to: u32,
    },
}

/// `/tessera/<product>/slots`: the state of every slot, index = slot number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slots {
    pub slots: Vec<SlotState>,
}

impl Default for Slots {
    fn default() -> Self {
        Slots {
            slots: vec![SlotState::Offline; SLOT_COUNT],
        }
    }
}

/// `/tessera/<product>/proxies/<token>`: a live proxy, under its lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyInfo {
    /// Unique per proxy process.
    pub token: String,
    /// Where clients connect.
    pub addr: String,
    /// The proxy's admin HTTP address, if it has one.
    #[serde(default)]
    pub admin_addr: Option<String>,
    pub version: String,
    pub pid: u32,
    /// Unix time, seconds.
    pub start_time: u64,
    /// The topology revision the proxy has applied (the dashboard's barrier).
    #[serde(default)]
    pub applied_revision: i64,
    /// Commands per second, averaged over the last few seconds.
    #[serde(default)]
    pub ops_per_sec: f64,
    /// Why the proxy could not load the product's plugin chain (it keeps the previous one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_error: Option<String>,
    /// Why the proxy cannot apply the product's topology (a document that does not decode,
    /// naming its key and revision): it refuses commands and re-reads the topology until it
    /// can. `applied_revision` stays the last revision it applied in full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_error: Option<String>,
}

/// `/tessera/<product>/dashboard`: who holds the single-writer lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DashboardLock {
    pub addr: String,
    pub pid: u32,
    pub start_time: u64,
    pub token: String,
    /// The TTL of the lease the lock is held under, seconds.
    #[serde(default)]
    pub ttl_secs: u64,
}

/// `/tessera/<product>/plugins`: the plugin chain every proxy of the product runs, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Plugins {
    #[serde(default)]
    pub chain: Vec<PluginSpec>,
}

/// One link of the chain. The module itself is `plugin-modules/<module>` (raw bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginSpec {
    pub name: String,
    /// Hex SHA-256 of the module's bytes: its key under `plugin-modules/`.
    pub module: String,
    /// Passed to the plugin's `on_configure`.
    #[serde(default)]
    pub config: String,
    /// `closed` (default) or `open`.
    #[serde(default = "default_fail")]
    pub fail: String,
    #[serde(default = "default_memory_mb")]
    pub memory_limit_mb: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Whether the proxy honours the plugin's requests to remember verdicts.
    #[serde(default = "default_remember")]
    pub remember: bool,
}

fn default_fail() -> String {
    "closed".to_string()
}
fn default_memory_mb() -> u64 {
    16
}
fn default_timeout_ms() -> u64 {
    10
}
fn default_remember() -> bool {
    true
}

/// Everything of one product, as read at one revision.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Topology {
    pub revision: i64,
    pub product: Product,
    pub groups: Vec<Group>,
    pub slots: Slots,
    pub proxies: Vec<ProxyInfo>,
    #[serde(default)]
    pub plugins: Plugins,
}
