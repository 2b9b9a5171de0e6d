//! The proxy's configuration: a TOML file read with serde, validated once at start-up.
//! Every limit a session or backend enforces is named here, with Redis's default where one exists.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tessera_topology::model::{BadSlotRange, SlotRange, SlotRangeError, SlotState};
use tessera_topology::slot::SLOT_COUNT;

/// Why a configuration was refused. The message names the file, the field and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML for Tessera: {message}")]
    Parse { path: String, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// The whole proxy configuration (`tessera proxy --config FILE`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub proxy: ProxyConfig,
    #[serde(default)]
    pub backend: BackendConfig,
    /// Redis groups: the first server of each is its master.
    #[serde(default, rename = "group")]
    pub groups: Vec<GroupConfig>,
    /// Slot ranges and the group that owns them. Slots not named are offline.
    #[serde(default, rename = "slots")]
    pub slots: Vec<SlotRangeConfig>,
    /// The plugin chain, in order.
    #[serde(default, rename = "plugin", skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<crate::plugin::PluginConfig>,
    /// Where the topology comes from instead of `group`/`slots` (coordinator mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator: Option<CoordinatorConfig>,
}

/// Coordinator mode: groups and slots come from the topology store, watched live.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// `etcd://HOST:PORT[,HOST:PORT...]` or `file://DIR`.
    pub url: String,
    /// The product (cluster) name: its topology lives under `/tessera/<product>/`.
    #[serde(default = "default_product")]
    pub product: String,
    /// TTL of the proxy's registration lease, renewed every third of it.
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl_secs: u64,
    /// Stop serving when the lease cannot be renewed, before it can expire in the store
    /// (after two thirds of the TTL without a renewal). Turning it off risks routing on a
    /// stale slot table while a migration the proxy never acknowledged moves keys.
    #[serde(default = "default_true")]
    pub lease_rule: bool,
}

fn default_product() -> String {
    "tessera".to_string()
}
fn default_lease_ttl() -> u64 {
    10
}
fn default_true() -> bool {
    true
}

/// Client-facing settings of the proxy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// Where the admin HTTP API (`/api/model`, `/api/stats`, `/metrics`) listens:
    /// 127.0.0.1:19080 if the file leaves it out. `None` (no admin API) can only be set in code.
    pub admin_listen: Option<SocketAddr>,
    /// Worker threads, each with its own event loop and backend connections. 0 = half the
    /// cores, at least one.
    pub workers: usize,
    /// Password clients must send with AUTH. Empty: no authentication.
    pub password: String,
    /// Most client connections served at once; more are refused with an error.
    pub max_clients: usize,
    /// Largest bulk string a client may send (Redis: proto-max-bulk-len, 512 MiB).
    pub max_bulk_len: usize,
    /// Most elements of a command array (Redis: 1024 * 1024).
    pub max_array_len: usize,
    /// Most bytes of an inline command (Redis: 64 KiB).
    pub max_inline_len: usize,
    /// Most bytes of one unfinished request a client may have buffered
    /// (Redis: client-query-buffer-limit, 1 GiB).
    pub max_query_buffer: usize,
    /// Most commands of one session in flight; the proxy stops reading the socket beyond it.
    pub max_pipeline: usize,
    /// Close a client connection idle this many seconds; 0 = never.
    pub idle_timeout_secs: u64,
    /// Number of logical databases a client may SELECT.
    pub databases: u32,
    /// Whether clients may FLUSHDB (every group's selected database). On by default, as
    /// in Redis; off, FLUSHDB answers an error naming this setting.
    pub allow_flushdb: bool,
    /// Whether clients may FLUSHALL (every database of every group). On by default, as in
    /// Redis; off, FLUSHALL answers an error naming this setting.
    pub allow_flushall: bool,
    /// How long a busy worker (reads microseconds apart) keeps polling for more after a read
    /// instead of sleeping, yielding its core to any other thread that wants it; 0: it
    /// sleeps at once. Costs the proxy CPU; saves its clients and Redis waking it.
    pub busy_poll_us: u64,
    /// Whether clients may CONFIG SET and CONFIG RESETSTAT (sent to every group's master).
    /// Off by default: one client would change every Redis of the cluster; off, they answer
    /// an error naming this setting. CONFIG GET is always served.
    pub allow_config_set: bool,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 19000)),
            admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], 19080))),
            workers: 0,
            password: String::new(),
            max_clients: 10_000,
            max_bulk_len: 512 * 1024 * 1024,
            max_array_len: 1024 * 1024,
            max_inline_len: 64 * 1024,
            max_query_buffer: 1024 * 1024 * 1024,
            max_pipeline: 10_000,
            idle_timeout_secs: 0,
            databases: 16,
            allow_flushdb: true,
            allow_flushall: true,
            allow_config_set: false,
            busy_poll_us: 20,
        }
    }
}

/// Settings of the proxy's connections to Redis.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackendConfig {
    /// Password sent with AUTH on every backend connection. Empty: none.
    pub password: String,
    /// Connections per backend server (and database) on each worker thread.
    pub connections: usize,
    /// Bound on connecting to a backend.
    pub connect_timeout_ms: u64,
    /// Bound on waiting for a reply; past it the connection is reset and its commands fail.
    pub timeout_ms: u64,
    /// While this many commands or more that a connection wrote are unanswered (and none of
    /// its latest write is), it holds the single commands sessions hand it and writes them
    /// when a reply comes back, so that Redis reads them at once instead of waking for each
    /// few; pipelined batches are not held. A turn's commands from 2 or more sessions also
    /// wait for the worker's next poll of `epoll`, and single commands on a busy worker as
    /// `batch_wait_us` and `batch_gap_us` say. 0: none of these.
    pub hold_in_flight: usize,
    /// On a busy worker (reads microseconds apart), how long single commands (of clients
    /// that wait for each reply) wait at most, the worker polling meanwhile, for other
    /// sessions' to go to Redis in the same write. 0: they go at the end of the turn.
    pub batch_wait_us: u64,
    /// ... and how long they wait for the next session's once none has come.
    pub batch_gap_us: u64,
    /// First reconnect delay after a failure; doubled up to `max_backoff_ms`.
    pub min_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

impl ProxyConfig {
    pub fn busy_poll(&self) -> Duration {
        Duration::from_micros(self.busy_poll_us)
    }

    /// The bounds of a client's command: the decoder checks requests against them, and
    /// plugin rewrites are held to them.
    pub fn limits(&self) -> crate::resp::Limits {
        crate::resp::Limits {
            max_bulk_len: self.max_bulk_len,
            max_array_len: self.max_array_len,
            max_inline_len: self.max_inline_len,
        }
    }
}

/// The most microseconds `busy_poll_us`, `batch_wait_us` and `batch_gap_us` may be: a
/// worker spends them polling, not sleeping.
pub const MAX_POLL_WAIT_US: u64 = 1000;

/// The default worker count on a machine with `cores` cores.
pub fn default_workers(cores: usize) -> usize {
    (cores / 2).max(1)
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            password: String::new(),
            connections: 1,
            connect_timeout_ms: 500,
            timeout_ms: 1000,
            hold_in_flight: 2,
            batch_wait_us: 200,
            batch_gap_us: 60,
            min_backoff_ms: 50,
            max_backoff_ms: 1000,
        }
    }
}

impl BackendConfig {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
    pub fn batch_wait(&self) -> Duration {
        Duration::from_micros(self.batch_wait_us)
    }
    pub fn batch_gap(&self) -> Duration {
        Duration::from_micros(self.batch_gap_us)
    }
}

/// A group: one master and its replicas.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    pub id: u32,
    /// `host:port` of each server; the first is the master.
    pub servers: Vec<String>,
}

/// `range = "0-511"` (or a single slot `"7"`) served by `group`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotRangeConfig {
    pub range: String,
    pub group: u32,
}

impl Config {
    /// Reads and validates a TOML config file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates TOML text; `origin` names it in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: references between groups and slots, and sane limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let mut ids = BTreeMap::new();
        for g in &self.groups {
            if g.id == 0 {
                return invalid("group id 0 is reserved; number groups from 1".into());
            }
            if ids.insert(g.id, ()).is_some() {
                return invalid(format!("group {} is defined twice", g.id));
            }
            if g.servers.is_empty() {
                return invalid(format!(
                    "group {} has no servers; its first server is the master",
                    g.id
                ));
            }
            for s in &g.servers {
                if s.rsplit_once(':')
                    .and_then(|(_, p)| p.parse::<u16>().ok())
                    .is_none()
                {
                    return invalid(format!(
                        "group {}: server address {s:?} is not host:port",
                        g.id
                    ));
                }
            }
        }
        self.slot_states()?;
        if let Some(c) = &self.coordinator {
            if !self.groups.is_empty() || !self.slots.is_empty() {
                return invalid(
                    "in coordinator mode groups and slots come from the coordinator; remove [[group]] and [[slots]] from the config".into(),
                );
            }
            if c.lease_ttl_secs < 2 {
                return invalid("coordinator.lease_ttl_secs must be at least 2".into());
            }
            if c.product.is_empty() || c.product.contains('/') {
                return invalid(format!(
                    "coordinator.product {:?} must be a non-empty name without '/'",
                    c.product
                ));
            }
        }
        let p = &self.proxy;
        if p.max_pipeline == 0 || p.max_clients == 0 || p.databases == 0 {
            return invalid(
                "proxy.max_pipeline, proxy.max_clients and proxy.databases must be at least 1"
                    .into(),
            );
        }
        if p.max_array_len == 0 || p.max_bulk_len == 0 || p.max_inline_len == 0 {
            return invalid(
                "proxy.max_array_len, max_bulk_len and max_inline_len must be at least 1".into(),
            );
        }
        let b = &self.backend;
        if b.connections == 0 || b.timeout_ms == 0 || b.connect_timeout_ms == 0 {
            return invalid(
                "backend.connections, timeout_ms and connect_timeout_ms must be at least 1".into(),
            );
        }
        if b.min_backoff_ms == 0 || b.max_backoff_ms < b.min_backoff_ms {
            return invalid(
                "backend.min_backoff_ms must be at least 1 and at most max_backoff_ms".into(),
            );
        }
        for (name, us) in [
            ("proxy.busy_poll_us", self.proxy.busy_poll_us),
            ("backend.batch_wait_us", b.batch_wait_us),
            ("backend.batch_gap_us", b.batch_gap_us),
        ] {
            if us > MAX_POLL_WAIT_US {
                return invalid(format!(
                    "{name} must be at most {MAX_POLL_WAIT_US} (microseconds: the worker polls \
                     without sleeping meanwhile), not {us}"
                ));
            }
        }
        Ok(())
    }

    /// The state of every slot: those of the `[[slots]]` ranges owned by their group, the
    /// others offline. Refuses a range that does not parse, names an undefined group or
    /// overlaps another.
    pub fn slot_states(&self) -> Result<Vec<SlotState>, ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let mut slots = vec![SlotState::Offline; SLOT_COUNT];
        for r in &self.slots {
            let range: SlotRange = r.range.parse().map_err(range_error)?;
            if !self.groups.iter().any(|g| g.id == r.group) {
                return invalid(format!(
                    "slots {:?} name group {}, which is not defined",
                    r.range, r.group
                ));
            }
            for slot in range.slots() {
                if let SlotState::Owned { group: prev } = slots[slot] {
                    return invalid(format!(
                        "slot {slot} is assigned twice (groups {prev} and {})",
                        r.group
                    ));
                }
                slots[slot] = SlotState::Owned { group: r.group };
            }
        }
        Ok(slots)
    }

    /// The number of worker threads to run: `proxy.workers`, or by default half the cores
    /// (at least one). Most of a command's cost through the proxy is the kernel's (the four
    /// socket calls and TCP), on the same cores as the workers and whatever shares the
    /// machine; docs/benchmarks.md has the measurements behind the default.
    pub fn worker_count(&self) -> usize {
        if self.proxy.workers > 0 {
            self.proxy.workers
        } else {
            default_workers(std::thread::available_parallelism().map_or(1, |n| n.get()))
        }
    }

    /// Serializes back to TOML (for `tessera up` and the admin model).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serializes")
    }
}

/// A `[[slots]]` range that does not parse, in the config's words.
fn range_error(e: SlotRangeError) -> ConfigError {
    ConfigError::Invalid(match e.why {
        BadSlotRange::NotANumber { part } => {
            format!("slot range {:?}: {part:?} is not a slot number", e.text)
        }
        BadSlotRange::PastLastSlot | BadSlotRange::Reversed => format!(
            "slot range {:?} must be lo-hi with 0 <= lo <= hi <= {}",
            e.text,
            SLOT_COUNT - 1
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_worker_count_is_half_the_cores_and_at_least_one() {
        assert_eq!([1, 2, 3, 4, 16].map(default_workers), [1, 1, 1, 2, 8]);
    }

    const GOOD: &str = r#"
[proxy]
listen = "127.0.0.1:19000"

[[group]]
id = 1
servers = ["127.0.0.1:6379"]

[[group]]
id = 2
servers = ["127.0.0.1:6380", "127.0.0.1:6381"]

[[slots]]
range = "0-511"
group = 1

[[slots]]
range = "512-1023"
group = 2
"#;

    #[test]
    fn parses_a_good_config() {
        let c = Config::parse(GOOD, "test").unwrap();
        assert_eq!(c.groups.len(), 2);
        assert_eq!(c.groups[1].servers[0], "127.0.0.1:6380");
        assert_eq!(c.backend.timeout_ms, 1000);
        let again = Config::parse(&c.to_toml(), "round-trip").unwrap();
        assert_eq!(again.slots.len(), 2);
    }

    #[test]
    fn refuses_unknown_fields_and_bad_references() {
        let e = Config::parse("[proxy]\nlisten_on = 3\n", "t").unwrap_err();
        assert!(e.to_string().contains("listen_on"), "{e}");
        let e = Config::parse(&GOOD.replace("group = 2", "group = 9"), "t").unwrap_err();
        assert!(e.to_string().contains("group 9"), "{e}");
        let e = Config::parse(&GOOD.replace("512-1023", "500-1023"), "t").unwrap_err();
        assert!(e.to_string().contains("assigned twice"), "{e}");
        let e = Config::parse(&GOOD.replace("512-1023", "512-1024"), "t").unwrap_err();
        assert!(e.to_string().contains("1023"), "{e}");
        let e = Config::parse(&GOOD.replace("512-1023", " x-1023"), "t").unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"invalid config: slot range " x-1023": " x" is not a slot number"#
        );
        let e = Config::parse(&GOOD.replace("512-1023", "600-512"), "t").unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"invalid config: slot range "600-512" must be lo-hi with 0 <= lo <= hi <= 1023"#
        );
        let e = Config::parse(&GOOD.replace("127.0.0.1:6379", "nowhere"), "t").unwrap_err();
        assert!(e.to_string().contains("host:port"), "{e}");
        let e =
            Config::parse(&format!("[backend]\nbatch_wait_us = 5000\n{GOOD}"), "t").unwrap_err();
        assert!(
            e.to_string()
                .contains("backend.batch_wait_us must be at most 1000"),
            "{e}"
        );
        let e = Config::parse(&format!("[backend]\nbatch_gap_us = 1001\n{GOOD}"), "t").unwrap_err();
        assert!(
            e.to_string()
                .contains("backend.batch_gap_us must be at most 1000"),
            "{e}"
        );
    }
}
