//! Reads one product's topology from the store as a consistent [`Snapshot`], and changes it:
//! every mutation is one transaction guarded by the revisions of the documents it read.
//!
//! Each transaction also compares the dashboard lock's revision (the fence): a dashboard that
//! lost its lock cannot write, even if it has not noticed yet. A transaction that loses a race
//! with another request is planned again on a fresh snapshot, a few times.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tessera_topology::model::{
    Group, Plugins, Product, ProxyInfo, SLOT_COUNT, SlotRange, SlotState, Slots, slot_runs,
};
use tessera_topology::store::{Compare, Op};
use tessera_topology::{KeyValue, Revision, Store, keys};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::error::DashboardError;

/// Group ids are `1..=MAX_GROUP_ID` (as in Codis; the store key pads the id to 4 digits).
pub const MAX_GROUP_ID: u32 = 9999;
/// How many times a mutation is planned again after losing a race.
const ATTEMPTS: usize = 5;

/// A document as read from the store.
#[derive(Debug, Clone)]
pub struct Doc<T> {
    pub key: String,
    pub value: T,
    pub mod_revision: Revision,
}

impl<T> Doc<T> {
    /// The compare that holds while the document is unchanged since it was read.
    pub(crate) fn guard(&self) -> Compare {
        Compare::ModRevision(self.key.clone(), self.mod_revision)
    }
}

/// Everything of one product, read in one `get_prefix` (one store revision).
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub product_name: String,
    pub store_revision: Revision,
    pub product: Option<Doc<Product>>,
    pub slots: Option<Doc<Slots>>,
    pub groups: BTreeMap<u32, Doc<Group>>,
    pub proxies: Vec<ProxyInfo>,
    /// The plugin chain document, if one was ever written.
    pub plugins: Option<Doc<Plugins>>,
    /// The uploaded plugin modules by sha256 (their sizes; the bytes are not kept).
    pub modules: BTreeMap<String, Doc<usize>>,
    /// The migration queue (`crate::migrate`), if one was ever written.
    pub migrations: Option<Doc<crate::migrate::plan::Migrations>>,
}

impl Snapshot {
    /// The topology revision: the last change to the product, a group, the slots or the
    /// plugin chain. A group's removal rewrites the slots document, so removals count too.
    /// Uploading or deleting a module does not count (no proxy runs it until a chain does).
    pub fn revision(&self) -> Revision {
        let groups = self.groups.values().map(|g| g.mod_revision);
        let docs = [
            self.product.as_ref().map(|d| d.mod_revision),
            self.slots.as_ref().map(|d| d.mod_revision),
            self.plugins.as_ref().map(|d| d.mod_revision),
        ];
        docs.into_iter().flatten().chain(groups).max().unwrap_or(0)
    }

    /// The 1024 slot states (all offline when there is no slots document yet).
    pub fn slot_states(&self) -> Vec<SlotState> {
        self.slots
            .as_ref()
            .map_or_else(|| Slots::default().slots, |d| d.value.slots.clone())
    }

    pub(crate) fn guard_slots(&self) -> Compare {
        match &self.slots {
            Some(d) => d.guard(),
            None => Compare::Absent(keys::slots(&self.product_name)),
        }
    }

    fn group(&self, id: u32) -> Result<&Doc<Group>, DashboardError> {
        self.groups
            .get(&id)
            .ok_or_else(|| DashboardError::NotFound(format!("group {id} does not exist")))
    }

    /// The slots a group owns, or that migrate from or to it, as text (`0-511, 700`), or
    /// `None`.
    fn owned_by(&self, id: u32) -> Option<String> {
        let owned: Vec<String> = slot_runs(&self.slot_states())
            .into_iter()
            .filter(|r| match r.state {
                SlotState::Owned { group } => group == id,
                SlotState::Migrating { from, to } => from == id || to == id,
                SlotState::Offline => false,
            })
            .map(|r| r.range.to_string())
            .collect();
        (!owned.is_empty()).then(|| owned.join(", "))
    }
}

/// What one mutation writes, and what it read (its compares).
#[derive(Debug, Default)]
pub(crate) struct Plan {
    compares: Vec<Compare>,
    ops: Vec<Op>,
}

impl Plan {
    pub(crate) fn read(&mut self, c: Compare) -> &mut Self {
        self.compares.push(c);
        self
    }

    pub(crate) fn put<T: Serialize>(&mut self, key: String, value: &T) -> &mut Self {
        let value = serde_json::to_vec(value).expect("topology documents serialize");
        self.put_bytes(key, value)
    }

    /// Writes raw bytes (a plugin module).
    pub(crate) fn put_bytes(&mut self, key: String, value: Vec<u8>) -> &mut Self {
        self.ops.push(Op::Put {
            key,
            value,
            lease: None,
        });
        self
    }

    pub(crate) fn delete(&mut self, key: String) -> &mut Self {
        self.ops.push(Op::Delete(key));
        self
    }
}

/// The lock this dashboard holds, as seen by every transaction.
#[derive(Debug)]
pub struct Fence {
    pub key: String,
    pub mod_revision: Revision,
    /// `Some(reason)` once the lock is lost: set by the renewal task, or by a transaction
    /// that finds the lock key changed.
    pub lost: Arc<watch::Sender<Option<String>>>,
}

/// The dashboard's view of the store for one product.
pub struct Service {
    store: Arc<dyn Store>,
    product: String,
    fence: OnceLock<Fence>,
}

/// The body of `PUT /api/product`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductUpdate {
    pub backend_password: Option<String>,
    pub session_password: Option<String>,
}

impl Service {
    pub fn new(store: Arc<dyn Store>, product: &str) -> Self {
        Service {
            store,
            product: product.to_string(),
            fence: OnceLock::new(),
        }
    }

    pub fn product(&self) -> &str {
        &self.product
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Arms the fence once the lock is held; every write compares it from then on.
    pub fn set_fence(&self, fence: Fence) {
        let _ = self.fence.set(fence);
    }

    /// `Some(reason)` if the lock is lost (or was never taken).
    pub fn lock_problem(&self) -> Option<String> {
        match self.fence.get() {
            None => Some("the lock is not held yet".to_string()),
            Some(f) => f.lost.borrow().clone(),
        }
    }

    /// Reads the product's documents at one store revision.
    pub async fn snapshot(&self) -> Result<Snapshot, DashboardError> {
        let p = &self.product;
        let (kvs, store_revision) = self.store.get_prefix(&keys::product_prefix(p)).await?;
        let mut snap = Snapshot {
            product_name: p.clone(),
            store_revision,
            product: None,
            slots: None,
            groups: BTreeMap::new(),
            proxies: Vec::new(),
            plugins: None,
            modules: BTreeMap::new(),
            migrations: None,
        };
        let (groups_prefix, proxies_prefix) = (keys::groups_prefix(p), keys::proxies_prefix(p));
        let modules_prefix = keys::plugin_modules_prefix(p);
        for kv in kvs {
            fn doc<T>(kv: &KeyValue, value: T) -> Doc<T> {
                Doc {
                    key: kv.key.clone(),
                    value,
                    mod_revision: kv.mod_revision,
                }
            }
            if kv.key == keys::product(p) {
                snap.product = Some(doc(&kv, parse(&kv.key, &kv.value)?));
            } else if kv.key == keys::slots(p) {
                let slots: Slots = parse(&kv.key, &kv.value)?;
                if slots.slots.len() != SLOT_COUNT {
                    return Err(DashboardError::Corrupt {
                        key: kv.key,
                        message: format!("{} slots instead of {SLOT_COUNT}", slots.slots.len()),
                    });
                }
                snap.slots = Some(doc(&kv, slots));
            } else if kv.key.starts_with(&groups_prefix) {
                let group: Group = parse(&kv.key, &kv.value)?;
                snap.groups.insert(group.id, doc(&kv, group));
            } else if kv.key == crate::migrate::plan::key(p) {
                snap.migrations = Some(doc(&kv, parse(&kv.key, &kv.value)?));
            } else if kv.key == keys::plugins(p) {
                snap.plugins = Some(doc(&kv, parse(&kv.key, &kv.value)?));
            } else if let Some(sha) = kv.key.strip_prefix(&modules_prefix) {
                snap.modules
                    .insert(sha.to_string(), doc(&kv, kv.value.len()));
            } else if kv.key.starts_with(&proxies_prefix) {
                // A proxy writes its own registration; a bad one must not hide the others.
                match serde_json::from_slice::<ProxyInfo>(&kv.value) {
                    Ok(info) => snap.proxies.push(info),
                    Err(e) => warn!(key = %kv.key, "skipping a proxy registration: {e}"),
                }
            }
        }
        snap.proxies.sort_by(|a, b| a.addr.cmp(&b.addr));
        Ok(snap)
    }

    /// Plans a change on a fresh snapshot and applies it in one transaction, guarded by what
    /// the plan read and by the lock; plans again if another request won the race. A plan
    /// without ops writes nothing. Returns the revision (new, or current for a no-op).
    pub(crate) async fn mutate<R>(
        &self,
        what: &str,
        plan: impl Fn(&Snapshot) -> Result<(Plan, R), DashboardError>,
    ) -> Result<(Revision, R), DashboardError> {
        for attempt in 1..=ATTEMPTS {
            if let Some(reason) = self.lock_problem() {
                return Err(DashboardError::LockLost(reason));
            }
            let fence = self.fence.get().expect("checked by lock_problem");
            let snap = self.snapshot().await?;
            let (mut p, out) = plan(&snap)?;
            if p.ops.is_empty() {
                return Ok((snap.revision(), out));
            }
            p.read(Compare::ModRevision(fence.key.clone(), fence.mod_revision));
            if let Some(revision) = self.store.txn(p.compares, p.ops).await? {
                info!(revision, product = %self.product, "{what}");
                return Ok((revision, out));
            }
            let holder = self.store.get(&fence.key).await?;
            if holder.is_none_or(|kv| kv.mod_revision != fence.mod_revision) {
                let reason = format!("the lock key {} changed in the store", fence.key);
                warn!("dashboard lock lost: {reason}");
                fence.lost.send_replace(Some(reason.clone()));
                return Err(DashboardError::LockLost(reason));
            }
            warn!(
                attempt,
                "{what}: lost a race with another change, planning again"
            );
        }
        Err(DashboardError::Conflict(format!(
            "{what}: the topology kept changing during {ATTEMPTS} tries; try again"
        )))
    }

    /// Creates the product document and an all-offline slot table if they are missing.
    pub async fn ensure_product(&self) -> Result<Revision, DashboardError> {
        let name = self.product.clone();
        let (rev, ()) = self
            .mutate("product initialized", |snap| {
                let mut p = Plan::default();
                if snap.product.is_none() {
                    let product = Product {
                        name: name.clone(),
                        ..Product::default()
                    };
                    p.read(Compare::Absent(keys::product(&name)))
                        .put(keys::product(&name), &product);
                }
                if snap.slots.is_none() {
                    p.read(Compare::Absent(keys::slots(&name)))
                        .put(keys::slots(&name), &Slots::default());
                }
                Ok((p, ()))
            })
            .await?;
        Ok(rev)
    }

    /// `PUT /api/product`: changes the passwords given, keeps the others.
    pub async fn update_product(
        &self,
        update: ProductUpdate,
    ) -> Result<(Revision, Product), DashboardError> {
        if update.backend_password.is_none() && update.session_password.is_none() {
            return Err(DashboardError::BadRequest(
                "nothing to change: give backend_password and/or session_password".to_string(),
            ));
        }
        let name = self.product.clone();
        self.mutate("product updated", |snap| {
            let mut p = Plan::default();
            let mut product = match &snap.product {
                Some(d) => {
                    p.read(d.guard());
                    d.value.clone()
                }
                None => {
                    p.read(Compare::Absent(keys::product(&name)));
                    Product {
                        name: name.clone(),
                        ..Product::default()
                    }
                }
            };
            let before = product.clone();
            if let Some(pw) = &update.backend_password {
                product.backend_password = pw.clone();
            }
            if let Some(pw) = &update.session_password {
                product.session_password = pw.clone();
            }
            if product == before {
                return Ok((Plan::default(), product));
            }
            p.put(keys::product(&name), &product);
            Ok((p, product))
        })
        .await
    }

    /// `POST /api/groups`: a new, empty group.
    pub async fn add_group(&self, id: u32) -> Result<(Revision, Group), DashboardError> {
        if !(1..=MAX_GROUP_ID).contains(&id) {
            return Err(DashboardError::BadRequest(format!(
                "bad group id {id}: group ids are 1..={MAX_GROUP_ID}"
            )));
        }
        let key = keys::group(&self.product, id);
        self.mutate(&format!("group {id} added"), |snap| {
            if snap.groups.contains_key(&id) {
                return Err(DashboardError::Conflict(format!(
                    "group {id} exists already"
                )));
            }
            let group = Group {
                id,
                servers: Vec::new(),
            };
            let mut p = Plan::default();
            p.read(Compare::Absent(key.clone()))
                .put(key.clone(), &group);
            Ok((p, group))
        })
        .await
    }

    /// `DELETE /api/groups/{id}`: only a group that owns no slots. The slots document is
    /// rewritten in the same transaction so the topology revision moves (see
    /// [`Snapshot::revision`]).
    pub async fn remove_group(&self, id: u32) -> Result<Revision, DashboardError> {
        let (rev, ()) = self
            .mutate(&format!("group {id} removed"), |snap| {
                let group = snap.group(id)?;
                if let Some(owned) = snap.owned_by(id) {
                    return Err(DashboardError::Conflict(format!(
                        "group {id} still owns slots {owned}: assign them to another group first"
                    )));
                }
                let mut p = Plan::default();
                p.read(group.guard())
                    .read(snap.guard_slots())
                    .delete(group.key.clone())
                    .put(
                        keys::slots(&self.product),
                        &Slots {
                            slots: snap.slot_states(),
                        },
                    );
                Ok((p, ()))
            })
            .await?;
        Ok(rev)
    }

    /// `POST /api/groups/{id}/servers`: appends a server (the first one is the master). An
    /// address may appear once in the whole product.
    pub async fn add_server(
        &self,
        id: u32,
        addr: &str,
    ) -> Result<(Revision, Group), DashboardError> {
        validate_addr(addr)?;
        self.mutate(&format!("server {addr} added to group {id}"), |snap| {
            let group = snap.group(id)?;
            let mut p = Plan::default();
            for g in snap.groups.values() {
                if g.value.servers.iter().any(|s| s == addr) {
                    return Err(DashboardError::Conflict(format!(
                        "server {addr} is already in group {}",
                        g.value.id
                    )));
                }
                // Read for the duplicate check: no other group may gain it meanwhile.
                p.read(g.guard());
            }
            let mut updated = group.value.clone();
            updated.servers.push(addr.to_string());
            p.put(group.key.clone(), &updated);
            Ok((p, updated))
        })
        .await
    }

    /// `DELETE /api/groups/{id}/servers/{addr}`. As in Codis, the master (the first server)
    /// can only go when it is the last server, and the last server of a group that owns
    /// slots cannot go (its slots would route nowhere); replicas can always go.
    pub async fn remove_server(
        &self,
        id: u32,
        addr: &str,
    ) -> Result<(Revision, Group), DashboardError> {
        self.mutate(&format!("server {addr} removed from group {id}"), |snap| {
            let group = snap.group(id)?;
            let servers = &group.value.servers;
            let Some(index) = servers.iter().position(|s| s == addr) else {
                return Err(DashboardError::NotFound(format!(
                    "server {addr} is not in group {id}"
                )));
            };
            let mut p = Plan::default();
            p.read(group.guard());
            if index == 0 && servers.len() > 1 {
                return Err(DashboardError::Conflict(format!(
                    "server {addr} is the master of group {id}, which has replicas: remove the replicas first (promotion comes with HA)"
                )));
            }
            if servers.len() == 1 {
                if let Some(owned) = snap.owned_by(id) {
                    return Err(DashboardError::Conflict(format!(
                        "server {addr} is the last server of group {id}, which owns slots {owned}: assign them to another group first"
                    )));
                }
                p.read(snap.guard_slots());
            }
            let mut updated = group.value.clone();
            updated.servers.remove(index);
            p.put(group.key.clone(), &updated);
            Ok((p, updated))
        })
        .await
    }

    /// `POST /api/slots/assign`: sets a range to a group (or offline with `None`) without
    /// moving data, for bootstrapping. The group must exist and have a server. A slot owned
    /// by another group is refused unless `force` (its keys would stay behind: that is
    /// `slots migrate`); a migrating slot always. Returns how many slots changed (0: nothing
    /// written) and the table. A group getting its first slots gets the function libraries
    /// first (`migrate::libraries`).
    pub async fn assign_slots(
        &self,
        range: &str,
        group: Option<u32>,
        force: bool,
    ) -> Result<(Revision, (usize, Vec<SlotState>)), DashboardError> {
        let range: SlotRange = range.parse()?;
        let group = group.filter(|g| *g != 0);
        if let Some(g) = group {
            crate::migrate::libraries::before_first_slots(&self.snapshot().await?, g).await?;
        }
        let what = match group {
            Some(g) => format!("slots {range} assigned to group {g}"),
            None => format!("slots {range} set offline"),
        };
        self.mutate(&what, |snap| {
            let mut p = Plan::default();
            let state = match group {
                Some(id) => {
                    let g = snap.group(id)?;
                    if g.value.servers.is_empty() {
                        return Err(DashboardError::Conflict(format!(
                            "group {id} has no server: add one before assigning slots"
                        )));
                    }
                    p.read(g.guard());
                    SlotState::Owned { group: id }
                }
                None => SlotState::Offline,
            };
            let mut slots = snap.slot_states();
            for (slot, s) in slots.iter().enumerate().take(range.hi + 1).skip(range.lo) {
                match *s {
                    SlotState::Migrating { from, to } => {
                        return Err(DashboardError::Conflict(format!(
                            "slot {slot} is migrating (group {from} → {to}): wait for it or cancel it with `tessera admin migrations cancel {slot}`"
                        )));
                    }
                    SlotState::Owned { group: owner } if !force && group.is_some_and(|g| g != owner) => {
                        return Err(DashboardError::Conflict(format!(
                            "slot {slot} is owned by group {owner}: move it with its keys with `tessera admin slots migrate {slot} --to {}` (`--force` assigns it without moving keys, only for a slot with no keys)",
                            group.unwrap_or_default()
                        )));
                    }
                    _ => {}
                }
            }
            let changed = slots[range.slots()].iter().filter(|s| **s != state).count();
            if changed == 0 && snap.slots.is_some() {
                return Ok((Plan::default(), (0, slots)));
            }
            slots[range.slots()].fill(state);
            let doc = Slots { slots };
            p.read(snap.guard_slots())
                .put(keys::slots(&self.product), &doc);
            Ok((p, (changed, doc.slots)))
        })
        .await
    }
}

fn parse<T: DeserializeOwned>(key: &str, value: &[u8]) -> Result<T, DashboardError> {
    serde_json::from_slice(value).map_err(|e| DashboardError::Corrupt {
        key: key.to_string(),
        message: e.to_string(),
    })
}

/// A server address: `host:port` or `[v6]:port`, port 1..=65535, a host of letters, digits,
/// dots, dashes and underscores (or an IP address).
pub fn validate_addr(addr: &str) -> Result<(), DashboardError> {
    let bad = |why: &str| {
        DashboardError::BadRequest(format!(
            "bad server address {addr:?}: {why} (expected host:port)"
        ))
    };
    if addr.parse::<SocketAddr>().is_ok() {
        return if addr.ends_with(":0") {
            Err(bad("port 0"))
        } else {
            Ok(())
        };
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(bad("no port"));
    };
    match port.parse::<u16>() {
        Ok(0) | Err(_) => return Err(bad("the port must be 1..=65535")),
        Ok(_) => {}
    }
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if host.parse::<IpAddr>().is_ok() {
        return Err(bad("an IPv6 address needs brackets: [addr]:port"));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(bad("not a valid host name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate_addr;

    #[test]
    fn addresses() {
        for ok in [
            "127.0.0.1:6379",
            "redis-1:6379",
            "a.b.example:1",
            "[::1]:6380",
            "r_1:65535",
        ] {
            assert!(validate_addr(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "6379",
            "host",
            "host:",
            ":6379",
            "host:0",
            "host:65536",
            "host:x",
            "a b:1",
            "::1:6379",
            "1.2.3.4:0",
            "-a:1",
            "a..b:1",
            "host:6379/x",
        ] {
            assert!(validate_addr(bad).is_err(), "{bad}");
        }
    }
}
