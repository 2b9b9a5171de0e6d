//! The documents the store holds for one product, as JSON (serde). Shapes are documented in
//! `docs/topology.md`; fields are only ever added, with defaults, so old readers keep working.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use crate::slot::SLOT_COUNT;

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

/// One slot's state: what the dashboard writes, the proxies route by, and every view shows
/// (`{"state": "owned", "group": 1}`). A new state is a new variant here, and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum SlotState {
    /// No group serves the slot: its commands are refused.
    #[default]
    Offline,
    /// Served by the master of `group`.
    Owned { group: u32 },
    /// Being moved from group `from` to group `to` (docs/migration.md): its keys are on
    /// `from`, on `to`, or on their way; `from` receives no new key once every proxy has
    /// applied the revision that set this state.
    Migrating { from: u32, to: u32 },
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

/// An inclusive range of slots, `lo..=hi`: written `"lo-hi"`, or `"n"` for a single slot.
/// Both forms are read (`"5-5"` is slot 5), with blanks around the numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotRange {
    pub lo: usize,
    pub hi: usize,
}

impl SlotRange {
    /// The slot numbers of the range.
    pub fn slots(self) -> std::ops::RangeInclusive<usize> {
        self.lo..=self.hi
    }
}

impl fmt::Display for SlotRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// A slot range that does not parse, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "bad slot range {text:?}: {why} (expected LO-HI or N, with 0 <= LO <= HI <= {})",
    SLOT_COUNT - 1
)]
pub struct SlotRangeError {
    /// The text as given.
    pub text: String,
    pub why: BadSlotRange,
}

/// What is wrong with a slot range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadSlotRange {
    /// `part` (a side of the `-`, or the whole text, as given) is not a number.
    #[error("not a number")]
    NotANumber { part: String },
    #[error("past the last slot")]
    PastLastSlot,
    #[error("LO is greater than HI")]
    Reversed,
}

impl FromStr for SlotRange {
    type Err = SlotRangeError;

    fn from_str(text: &str) -> Result<SlotRange, SlotRangeError> {
        let bad = |why| SlotRangeError {
            text: text.to_string(),
            why,
        };
        let number = |part: &str| {
            part.trim().parse::<usize>().map_err(|_| {
                bad(BadSlotRange::NotANumber {
                    part: part.to_string(),
                })
            })
        };
        let (lo, hi) = match text.split_once('-') {
            Some((lo, hi)) => (number(lo)?, number(hi)?),
            None => {
                let n = number(text)?;
                (n, n)
            }
        };
        if hi >= SLOT_COUNT {
            return Err(bad(BadSlotRange::PastLastSlot));
        }
        if lo > hi {
            return Err(bad(BadSlotRange::Reversed));
        }
        Ok(SlotRange { lo, hi })
    }
}

impl Serialize for SlotRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SlotRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SlotRange, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Consecutive slots in one state, as views show the slot table:
/// `{"range": "0-511", "state": "owned", "group": 1}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRun {
    pub range: SlotRange,
    #[serde(flatten)]
    pub state: SlotState,
}

/// The slot table as runs of consecutive slots in the same state, in slot order.
pub fn slot_runs(slots: &[SlotState]) -> Vec<SlotRun> {
    let mut out: Vec<SlotRun> = Vec::new();
    for (slot, &state) in slots.iter().enumerate() {
        match out.last_mut() {
            Some(run) if run.state == state => run.range.hi = slot,
            _ => out.push(SlotRun {
                range: SlotRange { lo: slot, hi: slot },
                state,
            }),
        }
    }
    out
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
    /// Client connections open (absent from proxies that do not report it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<u64>,
    /// Error replies sent since the proxy started (absent from proxies that do not report it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<u64>,
    /// Why the proxy could not load the product's plugin chain (it keeps the previous one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_error: Option<String>,
    /// Why the proxy cannot apply the product's topology (a document that does not decode,
    /// naming its key and revision): it refuses commands and re-reads the topology until it
    /// can. `applied_revision` stays the last revision it applied in full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_error: Option<String>,
    /// Why the proxy serves the latest revision but does not acknowledge it (a migrating
    /// slot it cannot forward for): it holds the migration, and says so here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holding: Option<String>,
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
    /// How the link runs; its fields sit beside `name` and `module` in the document.
    #[serde(flatten)]
    pub settings: PluginSettings,
}

/// What a failing call of a plugin does to its command: `closed` (the default) answers it
/// with the plugin's error, `open` lets it go on as if the plugin had said Continue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    Open,
    #[default]
    Closed,
}

impl FailMode {
    /// As written in a config or a document: `open` or `closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailMode::Open => "open",
            FailMode::Closed => "closed",
        }
    }
}

/// How one link of a plugin chain runs, with the defaults of every field: the same for a
/// chain in the proxy's config (`[[plugin]]`, the module a file) and in the store (this
/// module's [`PluginSpec`], the module by hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginSettings {
    /// Passed as bytes to the plugin's `on_configure`; its format is the plugin's own.
    #[serde(default)]
    pub config: String,
    #[serde(default)]
    pub fail: FailMode,
    #[serde(default = "PluginSettings::default_memory_limit_mb")]
    pub memory_limit_mb: u64,
    /// Time limit of one call.
    #[serde(default = "PluginSettings::default_timeout_ms")]
    pub timeout_ms: u64,
    /// `true` (default): verdicts the plugin asks the proxy to remember decide the
    /// connection's later commands without a call. `false`: every command is a call (to
    /// debug a plugin, or measure it).
    #[serde(default = "PluginSettings::default_remember")]
    pub remember: bool,
}

impl PluginSettings {
    pub fn default_memory_limit_mb() -> u64 {
        16
    }
    pub fn default_timeout_ms() -> u64 {
        10
    }
    pub fn default_remember() -> bool {
        true
    }
}

impl Default for PluginSettings {
    fn default() -> Self {
        PluginSettings {
            config: String::new(),
            fail: FailMode::default(),
            memory_limit_mb: Self::default_memory_limit_mb(),
            timeout_ms: Self::default_timeout_ms(),
            remember: Self::default_remember(),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_compress_consecutive_slots() {
        let mut s = vec![SlotState::Offline; SLOT_COUNT];
        for slot in s.iter_mut().take(512) {
            *slot = SlotState::Owned { group: 1 };
        }
        s[700] = SlotState::Owned { group: 2 };
        let r = slot_runs(&s);
        let names: Vec<String> = r.iter().map(|r| r.range.to_string()).collect();
        assert_eq!(names, ["0-511", "512-699", "700", "701-1023"]);
        let json = serde_json::to_value(r[0]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"range": "0-511", "state": "owned", "group": 1})
        );
        assert_eq!(
            serde_json::to_value(r[2]).unwrap(),
            serde_json::json!({"range": "700", "state": "owned", "group": 2})
        );
        let back: SlotRun = serde_json::from_value(json).unwrap();
        assert_eq!(back, r[0]);
        assert!(slot_runs(&[]).is_empty());
    }

    #[test]
    fn range_parsing() {
        let parse = |t: &str| t.parse::<SlotRange>().map(|r| (r.lo, r.hi));
        assert_eq!(parse("0-511").unwrap(), (0, 511));
        assert_eq!(parse(" 7 ").unwrap(), (7, 7));
        assert_eq!(parse("5-5").unwrap(), (5, 5));
        assert_eq!(parse(" 1 - 2 ").unwrap(), (1, 2));
        assert_eq!(parse("0-1023").unwrap(), (0, 1023));
        for bad in ["", "a-b", "5-4", "0-1024", "-1", "1-", "1-2-3"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(SlotRange { lo: 5, hi: 5 }.to_string(), "5");
        assert_eq!(SlotRange { lo: 0, hi: 1023 }.to_string(), "0-1023");
    }

    #[test]
    fn bad_ranges_say_why() {
        let why = |t: &str| t.parse::<SlotRange>().unwrap_err().why;
        assert_eq!(
            why(" x-1"),
            BadSlotRange::NotANumber {
                part: " x".to_string()
            }
        );
        assert_eq!(why("0-1024"), BadSlotRange::PastLastSlot);
        assert_eq!(why("600-500"), BadSlotRange::Reversed);
        assert_eq!(
            "5-4".parse::<SlotRange>().unwrap_err().to_string(),
            "bad slot range \"5-4\": LO is greater than HI (expected LO-HI or N, with 0 <= LO <= HI <= 1023)"
        );
    }

    #[test]
    fn a_plugin_spec_keeps_its_document_shape_and_defaults() {
        let spec: PluginSpec = serde_json::from_str(r#"{"name": "a", "module": "m"}"#).unwrap();
        assert_eq!(spec.settings, PluginSettings::default());
        assert_eq!(
            serde_json::to_value(&spec).unwrap(),
            serde_json::json!({"name": "a", "module": "m", "config": "", "fail": "closed",
                               "memory_limit_mb": 16, "timeout_ms": 10, "remember": true})
        );
        let open: PluginSpec =
            serde_json::from_str(r#"{"name": "a", "module": "m", "fail": "open"}"#).unwrap();
        assert_eq!(open.settings.fail, FailMode::Open);
    }
}
