//! The slot table (slot → state → group → master backend) and the registry of backend
//! addresses. A table is built off the hot path and published whole; sessions only load it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tessera_topology::model::{Group, SlotRun, SlotState, slot_runs};
use tessera_topology::slot::SLOT_COUNT;

use crate::config::Config;

/// Dense index of a backend address in the [`BackendRegistry`]; never reused.
pub type BackendId = u32;

/// One published routing table: the model's groups and slot states, and what routing adds
/// to them (each group's master backend, and each slot's).
#[derive(Debug)]
pub struct SlotTable {
    /// The topology revision this table was built from (0 for a static config).
    pub revision: u64,
    slots: Vec<SlotState>,
    /// The groups that serve, each with its master backend.
    groups: BTreeMap<u32, (Group, BackendId)>,
    /// The master backend of each slot, `NONE` when offline: the one lookup per key. A
    /// migrating slot's is its destination's master.
    route: Box<[BackendId]>,
    /// For each slot, `NO_MOVE` or the index in `moves` of the migration it is part of.
    moving: Box<[u16]>,
    /// The migrations of this table, one per pair of masters (source, destination).
    moves: Vec<Move>,
}

/// Where the keys of a migrating slot go: a command on them first has them moved from
/// `from`'s master to `to`'s (`MIGRATE to_host to_port ...` on `from`), then runs on `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub from: BackendId,
    pub to: BackendId,
    /// The destination master's host and port, as MIGRATE names it.
    pub to_host: Arc<str>,
    pub to_port: Arc<str>,
    /// Whether every registered proxy has acknowledged the revision that made the slot
    /// migrating. Until then no proxy routes by an earlier table only once this holds, so
    /// commands on the slot wait (a proxy on the earlier table would write the source
    /// after this one moved a key).
    pub open: bool,
}

const NONE: BackendId = BackendId::MAX;
const NO_MOVE: u16 = u16::MAX;

impl SlotTable {
    /// Builds the table a static config describes.
    pub fn from_config(config: &Config, registry: &BackendRegistry) -> SlotTable {
        let groups: Vec<Group> = config
            .groups
            .iter()
            .map(|g| Group {
                id: g.id,
                servers: g.servers.clone(),
            })
            .collect();
        let slots = config.slot_states().expect("validated config");
        Self::build(0, &groups, &slots, registry)
    }

    /// Builds a table from the model's groups (servers with the master first) and slot
    /// states (slots past the end of `slots` are offline). A group without servers serves
    /// nothing: its slots are offline.
    pub fn build(
        revision: u64,
        groups: &[Group],
        slots: &[SlotState],
        registry: &BackendRegistry,
    ) -> SlotTable {
        Self::build_with_barriers(revision, groups, slots, &[], registry)
    }

    /// [`SlotTable::build`], with the migrating slots of `closed` (sorted) not open yet:
    /// some proxy has not acknowledged the revision that made them migrating.
    pub fn build_with_barriers(
        revision: u64,
        groups: &[Group],
        slots: &[SlotState],
        closed: &[usize],
        registry: &BackendRegistry,
    ) -> SlotTable {
        let groups: BTreeMap<u32, (Group, BackendId)> = groups
            .iter()
            .filter_map(|g| {
                let master = registry.id(g.servers.first()?);
                Some((g.id, (g.clone(), master)))
            })
            .collect();
        let slots: Vec<SlotState> = (0..SLOT_COUNT)
            .map(|s| slots.get(s).copied().unwrap_or_default())
            .collect();
        let master = |group: &u32| groups.get(group).map_or(NONE, |&(_, m)| m);
        let route = slots
            .iter()
            .map(|s| match s {
                SlotState::Offline => NONE,
                SlotState::Owned { group } => master(group),
                SlotState::Migrating { to, .. } => master(to),
            })
            .collect();
        let mut moves: Vec<Move> = Vec::new();
        let moving = slots
            .iter()
            .enumerate()
            .map(|(slot, s)| {
                let SlotState::Migrating { from, to } = s else {
                    return NO_MOVE;
                };
                let (from, to) = (master(from), master(to));
                if from == NONE || to == NONE || from == to {
                    // No source to move keys from, or nowhere to move them: nothing to do.
                    return NO_MOVE;
                }
                let open = closed.binary_search(&slot).is_err();
                if let Some(i) = moves
                    .iter()
                    .position(|m| m.from == from && m.to == to && m.open == open)
                {
                    return i as u16;
                }
                let addr = groups
                    .values()
                    .find(|&&(_, m)| m == to)
                    .and_then(|(g, _)| g.servers.first())
                    .map_or("", String::as_str);
                let (host, port) = addr.rsplit_once(':').unwrap_or((addr, ""));
                moves.push(Move {
                    from,
                    to,
                    to_host: host.into(),
                    to_port: port.into(),
                    open,
                });
                moves.len() as u16 - 1
            })
            .collect();
        SlotTable {
            revision,
            slots,
            groups,
            route,
            moving,
            moves,
        }
    }

    /// The migration `slot` is part of, if it is migrating between two serving groups.
    #[inline]
    pub fn moving(&self, slot: usize) -> Option<&Move> {
        let m = self.moving[slot];
        (m != NO_MOVE).then(|| &self.moves[m as usize])
    }

    /// Whether any slot is migrating between two serving groups.
    pub fn has_moves(&self) -> bool {
        !self.moves.is_empty()
    }

    /// The master backend serving `slot`, if any.
    #[inline]
    pub fn route(&self, slot: usize) -> Option<BackendId> {
        let b = self.route[slot];
        (b != NONE).then_some(b)
    }

    /// A backend for keyless commands any server can answer (COMMAND, TIME, ...).
    pub fn any_backend(&self) -> Option<BackendId> {
        self.groups.values().next().map(|&(_, master)| master)
    }

    /// The groups that serve, by id.
    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.values().map(|(g, _)| g)
    }

    /// Each serving group's id and master backend, by id.
    pub fn masters(&self) -> impl Iterator<Item = (u32, BackendId)> + '_ {
        self.groups.iter().map(|(&id, &(_, master))| (id, master))
    }

    /// Consecutive slots in the same state, coalesced: what `/api/model` shows.
    pub fn runs(&self) -> Vec<SlotRun> {
        slot_runs(&self.slots)
    }
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
        let r = t.runs();
        assert_eq!(r.len(), 3);
        assert_eq!(
            (r[1].range.lo, r[1].range.hi, r[1].state),
            (100, 1022, SlotState::Owned { group: 2 })
        );
        assert_eq!(r[2].state, SlotState::Offline);
        assert_eq!(reg.get(b1).addr.as_ref(), "127.0.0.1:7001");
    }
}
