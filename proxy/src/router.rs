//! The slot table (slot → state → group → master backend) and the registry of backend
//! addresses. A table is built off the hot path and published whole; sessions only load it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::config::{Config, parse_slot_range};
use crate::slot::SLOT_COUNT;

/// Dense index of a backend address in the [`BackendRegistry`]; never reused.
pub type BackendId = u32;

/// What a slot is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum SlotState {
    /// No group serves the slot: its commands are refused.
    Offline,
    /// Served by the master of `group`.
    Owned { group: u32 },
}

/// A group as the router sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub id: u32,
    /// Server addresses; the first is the master.
    pub servers: Vec<String>,
    #[serde(skip)]
    pub master: BackendId,
}

/// One published routing table.
#[derive(Debug)]
pub struct SlotTable {
    /// The topology revision this table was built from (0 for a static config).
    pub revision: u64,
    slots: Vec<SlotState>,
    groups: BTreeMap<u32, Group>,
    /// The master backend of each slot, `NONE` when offline: the one lookup per key.
    route: Box<[BackendId]>,
}

const NONE: BackendId = BackendId::MAX;

impl SlotTable {
    /// Builds the table a static config describes.
    pub fn from_config(config: &Config, registry: &BackendRegistry) -> SlotTable {
        let groups = config
            .groups
            .iter()
            .map(|g| (g.id, g.servers.clone()))
            .collect();
        let mut owners = vec![None; SLOT_COUNT];
        for r in &config.slots {
            let (lo, hi) = parse_slot_range(&r.range).expect("validated config");
            for o in &mut owners[lo..=hi] {
                *o = Some(r.group);
            }
        }
        Self::build(0, groups, &owners, registry)
    }

    /// Builds a table from groups (id, servers with the master first) and the owner of
    /// each slot. A group without servers serves nothing: its slots are offline.
    pub fn build(
        revision: u64,
        groups: Vec<(u32, Vec<String>)>,
        owners: &[Option<u32>],
        registry: &BackendRegistry,
    ) -> SlotTable {
        let groups: BTreeMap<u32, Group> = groups
            .into_iter()
            .filter(|(_, servers)| !servers.is_empty())
            .map(|(id, servers)| {
                let master = registry.id(&servers[0]);
                (
                    id,
                    Group {
                        id,
                        servers,
                        master,
                    },
                )
            })
            .collect();
        let slots = (0..SLOT_COUNT)
            .map(|s| match owners.get(s).copied().flatten() {
                Some(group) => SlotState::Owned { group },
                None => SlotState::Offline,
            })
            .collect();
        Self::new(revision, slots, groups)
    }

    fn new(revision: u64, slots: Vec<SlotState>, groups: BTreeMap<u32, Group>) -> SlotTable {
        let route = slots
            .iter()
            .map(|s| match s {
                SlotState::Offline => NONE,
                SlotState::Owned { group } => groups.get(group).map_or(NONE, |g| g.master),
            })
            .collect();
        SlotTable {
            revision,
            slots,
            groups,
            route,
        }
    }

    /// The master backend serving `slot`, if any.
    #[inline]
    pub fn route(&self, slot: usize) -> Option<BackendId> {
        let b = self.route[slot];
        (b != NONE).then_some(b)
    }

    /// A backend for keyless commands any server can answer (COMMAND, TIME, ...).
    pub fn any_backend(&self) -> Option<BackendId> {
        self.groups.values().next().map(|g| g.master)
    }

    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    /// Consecutive slots in the same state, coalesced: what `/api/model` shows.
    pub fn ranges(&self) -> Vec<SlotRange> {
        let mut out: Vec<SlotRange> = Vec::new();
        for (slot, state) in self.slots.iter().enumerate() {
            match out.last_mut() {
                Some(r) if r.state == *state && r.hi + 1 == slot => r.hi = slot,
                _ => out.push(SlotRange {
                    lo: slot,
                    hi: slot,
                    state: *state,
                }),
            }
        }
        out
    }
}

/// A run of slots in one state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRange {
    pub lo: usize,
    pub hi: usize,
    pub state: SlotState,
}

/// What every worker knows of one backend address, for the admin API.
#[derive(Debug)]
pub struct BackendInfo {
    pub id: BackendId,
    pub addr: Arc<str>,
    /// Connections to it that are up right now, over all workers and databases.
    pub connected: AtomicI64,
    /// Connections to it that are failing (waiting to reconnect).
    pub failing: AtomicI64,
    /// Connection failures and timeouts so far.
    pub failures: AtomicU64,
    /// The Redis version it reported (HELLO's `version`) when a connection was set up.
    pub version: arc_swap::ArcSwapOption<String>,
}

impl BackendInfo {
    /// `up`, `down` or `connecting`, as the admin API reports it.
    pub fn state(&self) -> &'static str {
        if self.failing.load(Ordering::Relaxed) > 0 {
            "down"
        } else if self.connected.load(Ordering::Relaxed) > 0 {
            "up"
        } else {
            "connecting"
        }
    }
}

/// Every backend address the proxy has known, each with a stable [`BackendId`].
#[derive(Debug, Default)]
pub struct BackendRegistry {
    inner: Mutex<RegistryInner>,
}

#[derive(Debug, Default)]
struct RegistryInner {
    by_addr: HashMap<String, BackendId>,
    all: Vec<Arc<BackendInfo>>,
}

impl BackendRegistry {
    /// The id of `addr`, registering it on first sight.
    pub fn id(&self, addr: &str) -> BackendId {
        let mut inner = self.inner.lock().expect("registry lock");
        if let Some(&id) = inner.by_addr.get(addr) {
            return id;
        }
        let id = inner.all.len() as BackendId;
        inner.all.push(Arc::new(BackendInfo {
            id,
            addr: addr.into(),
            connected: AtomicI64::new(0),
            failing: AtomicI64::new(0),
            failures: AtomicU64::new(0),
            version: Default::default(),
        }));
        inner.by_addr.insert(addr.to_string(), id);
        id
    }

    pub fn get(&self, id: BackendId) -> Arc<BackendInfo> {
        self.inner.lock().expect("registry lock").all[id as usize].clone()
    }

    pub fn all(&self) -> Vec<Arc<BackendInfo>> {
        self.inner.lock().expect("registry lock").all.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slot::slot;

    #[test]
    fn routes_slots_to_group_masters() {
        let config = Config::parse(
            r#"
[[group]]
id = 1
servers = ["127.0.0.1:7001", "127.0.0.1:7002"]
[[group]]
id = 2
servers = ["127.0.0.1:7003"]
[[slots]]
range = "0-99"
group = 1
[[slots]]
range = "100-1022"
group = 2
"#,
            "test",
        )
        .unwrap();
        let reg = BackendRegistry::default();
        let t = SlotTable::from_config(&config, &reg);
        let b1 = reg.id("127.0.0.1:7001");
        let b2 = reg.id("127.0.0.1:7003");
        assert_eq!(t.route(0), Some(b1));
        assert_eq!(t.route(99), Some(b1));
        assert_eq!(t.route(100), Some(b2));
        assert_eq!(t.route(1023), None);
        assert_eq!(t.route(slot(b"{}x")), Some(b1));
        let r = t.ranges();
        assert_eq!(r.len(), 3);
        assert_eq!(
            (r[1].lo, r[1].hi, r[1].state),
            (100, 1022, SlotState::Owned { group: 2 })
        );
        assert_eq!(r[2].state, SlotState::Offline);
        assert_eq!(reg.get(b1).addr.as_ref(), "127.0.0.1:7001");
    }
}
