//! Reading a product's [`Topology`] from the store in one read, and keeping it current from
//! watch events, a whole revision at a time (so a proxy applies changes without re-reading
//! everything, and never a part of a transaction).

use crate::keys;
use crate::model::{Group, Product, ProxyInfo, SLOT_COUNT, Slots, Topology};
use crate::store::{KeyValue, Store, StoreError, WatchEvent};

/// What a key under the product prefix holds.
enum Doc<'a> {
    Product,
    Slots,
    Group(&'a str),
    Proxy(&'a str),
    Plugins,
    /// Not part of [`Topology`] (the dashboard lock, plugin modules, future documents).
    Other,
}

fn classify<'a>(product: &str, key: &'a str) -> Option<Doc<'a>> {
    let prefix = keys::product_prefix(product);
    let rest = key.strip_prefix(prefix.as_str())?;
    Some(match rest {
        "product" => Doc::Product,
        "slots" => Doc::Slots,
        "plugins" => Doc::Plugins,
        _ => {
            if let Some(id) = rest.strip_prefix("groups/") {
                Doc::Group(id)
            } else if let Some(token) = rest.strip_prefix("proxies/") {
                Doc::Proxy(token)
            } else {
                Doc::Other
            }
        }
    })
}

fn bad_document(kv: &KeyValue, message: String) -> StoreError {
    StoreError::BadDocument {
        key: kv.key.clone(),
        revision: kv.mod_revision,
        message,
    }
}

fn decode<T: serde::de::DeserializeOwned>(kv: &KeyValue) -> Result<T, StoreError> {
    serde_json::from_slice(&kv.value).map_err(|e| bad_document(kv, e.to_string()))
}

fn decode_slots(kv: &KeyValue) -> Result<Slots, StoreError> {
    let slots: Slots = decode(kv)?;
    if slots.slots.len() != SLOT_COUNT {
        return Err(bad_document(
            kv,
            format!("{} slots, expected {SLOT_COUNT}", slots.slots.len()),
        ));
    }
    Ok(slots)
}

fn upsert_group(groups: &mut Vec<Group>, group: Group) {
    match groups.binary_search_by_key(&group.id, |g| g.id) {
        Ok(i) => groups[i] = group,
        Err(i) => groups.insert(i, group),
    }
}

fn upsert_proxy(proxies: &mut Vec<ProxyInfo>, proxy: ProxyInfo) {
    match proxies.binary_search_by(|p| p.token.cmp(&proxy.token)) {
        Ok(i) => proxies[i] = proxy,
        Err(i) => proxies.insert(i, proxy),
    }
}

/// Applies one present document to `topology`.
fn apply_put(topology: &mut Topology, product: &str, kv: &KeyValue) -> Result<(), StoreError> {
    match classify(product, &kv.key) {
        None | Some(Doc::Other) => {}
        Some(Doc::Product) => topology.product = decode(kv)?,
        Some(Doc::Slots) => topology.slots = decode_slots(kv)?,
        Some(Doc::Group(id)) => {
            let group: Group = decode(kv)?;
            if id.parse::<u32>().ok() != Some(group.id) {
                return Err(bad_document(
                    kv,
                    format!("group id {} does not match its key", group.id),
                ));
            }
            upsert_group(&mut topology.groups, group)
        }
        // Another proxy's registration does not route anything: one that does not decode
        // is left out rather than stopping every proxy of the product.
        Some(Doc::Proxy(_)) => match decode(kv) {
            Ok(proxy) => upsert_proxy(&mut topology.proxies, proxy),
            Err(error) => {
                tracing::warn!(%error, "proxy registration does not decode; left out")
            }
        },
        Some(Doc::Plugins) => topology.plugins = decode(kv)?,
    }
    Ok(())
}

/// Reads everything of `product` with one prefix read: groups sorted by id, proxies by
/// token; absent documents are defaults (no product settings, all slots offline).
/// `revision` is the store revision of the read. A document that does not decode is
/// [`StoreError::BadDocument`] naming its key and revision (a proxy registration that does
/// not decode is left out instead).
pub async fn load_topology(store: &dyn Store, product: &str) -> Result<Topology, StoreError> {
    let (kvs, revision) = store.get_prefix(&keys::product_prefix(product)).await?;
    let mut topology = Topology {
        revision,
        ..Topology::default()
    };
    for kv in &kvs {
        apply_put(&mut topology, product, kv)?;
    }
    tracing::debug!(
        product,
        revision,
        groups = topology.groups.len(),
        proxies = topology.proxies.len(),
        "topology loaded"
    );
    Ok(topology)
}

/// Updates `topology` with one watch event on `product`'s prefix and advances its
/// `revision`. Events on other keys only advance the revision. On error (a document that
/// does not decode) `topology` is unchanged.
pub fn apply_event(
    topology: &mut Topology,
    product: &str,
    event: &WatchEvent,
) -> Result<(), StoreError> {
    match event {
        WatchEvent::Put(kv) => apply_put(topology, product, kv)?,
        WatchEvent::Delete { key, .. } => match classify(product, key) {
            None | Some(Doc::Other) => {}
            Some(Doc::Product) => topology.product = Product::default(),
            Some(Doc::Slots) => topology.slots = Slots::default(),
            Some(Doc::Group(id)) => match id.parse::<u32>() {
                Ok(id) => topology.groups.retain(|g| g.id != id),
                Err(_) => {
                    tracing::warn!(key, "deleted group key without a numeric id; ignored")
                }
            },
            Some(Doc::Proxy(token)) => topology.proxies.retain(|p| p.token != token),
            Some(Doc::Plugins) => topology.plugins = Default::default(),
        },
    }
    topology.revision = topology.revision.max(event.revision());
    Ok(())
}

/// Applies the events of one revision (one transaction) to `topology`: all of them, or — if
/// one document does not decode — none (the error names its key and revision). Returns
/// whether anything but proxy registrations changed, i.e. whether routing may have.
pub fn apply_revision(
    topology: &mut Topology,
    product: &str,
    events: &[WatchEvent],
) -> Result<bool, StoreError> {
    let mut next = topology.clone();
    let proxies = keys::proxies_prefix(product);
    let mut routing = false;
    for event in events {
        apply_event(&mut next, product, event)?;
        routing |= !event.key().starts_with(&proxies);
    }
    *topology = next;
    Ok(routing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::FileStore;
    use crate::model::SlotState;
    use std::time::Duration;

    struct TempDir(std::path::PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn temp_dir() -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        TempDir(std::env::temp_dir().join(format!("tessera-load-{}-{nanos}", std::process::id())))
    }

    fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
        serde_json::to_vec(value).unwrap()
    }

    fn proxy(token: &str) -> ProxyInfo {
        ProxyInfo {
            token: token.to_string(),
            addr: format!("127.0.0.1:{}", 19000 + token.len()),
            admin_addr: None,
            version: "0.1.0".into(),
            pid: 1,
            start_time: 0,
            applied_revision: 0,
            ops_per_sec: 0.0,
            sessions: None,
            errors: None,
            plugin_error: None,
            topology_error: None,
            holding: None,
        }
    }

    /// The topology as comparable JSON.
    fn snapshot(t: &Topology) -> serde_json::Value {
        serde_json::to_value(t).unwrap()
    }

    #[tokio::test]
    async fn load_and_apply_events_match_a_fresh_load() {
        let dir = temp_dir();
        let store = FileStore::open(&dir.0).unwrap();
        let p = "demo";

        // Empty product: defaults.
        let empty = load_topology(&store, p).await.unwrap();
        assert!(empty.groups.is_empty() && empty.proxies.is_empty());
        assert!(empty.slots.slots.iter().all(|s| *s == SlotState::Offline));
        assert_eq!(empty.slots.slots.len(), SLOT_COUNT);

        let product = Product {
            name: p.into(),
            backend_password: String::new(),
            session_password: "s".into(),
        };
        store
            .put(&keys::product(p), json(&product), None)
            .await
            .unwrap();
        for id in [3, 1, 2] {
            let group = Group {
                id,
                servers: vec![format!("127.0.0.1:{}", 6379 + id)],
            };
            store
                .put(&keys::group(p, id), json(&group), None)
                .await
                .unwrap();
        }
        let mut slots = Slots::default();
        slots.slots[0] = SlotState::Owned { group: 1 };
        store
            .put(&keys::slots(p), json(&slots), None)
            .await
            .unwrap();
        store
            .put(&keys::proxy(p, "b"), json(&proxy("b")), None)
            .await
            .unwrap();
        store
            .put(&keys::proxy(p, "a"), json(&proxy("a")), None)
            .await
            .unwrap();
        // Not part of the topology, and another product: ignored.
        store
            .put(&keys::dashboard_lock(p), b"{}".to_vec(), None)
            .await
            .unwrap();
        store
            .put(&keys::slots("other"), b"not json".to_vec(), None)
            .await
            .unwrap();

        let mut topology = load_topology(&store, p).await.unwrap();
        assert_eq!(topology.product, product);
        assert_eq!(
            topology.groups.iter().map(|g| g.id).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(
            topology
                .proxies
                .iter()
                .map(|p| p.token.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(topology.slots.slots[0], SlotState::Owned { group: 1 });
        assert_eq!(topology.revision, store.get_prefix("/").await.unwrap().1);

        // Changes through a watch, applied one by one, give what a fresh load gives.
        let mut rx = store
            .watch_prefix(&keys::product_prefix(p), topology.revision)
            .await
            .unwrap();
        slots.slots[1] = SlotState::Owned { group: 2 };
        store
            .put(&keys::slots(p), json(&slots), None)
            .await
            .unwrap();
        store
            .txn(vec![], vec![crate::store::Op::Delete(keys::group(p, 3))])
            .await
            .unwrap();
        store
            .txn(vec![], vec![crate::store::Op::Delete(keys::proxy(p, "a"))])
            .await
            .unwrap();
        store
            .put(&keys::proxy(p, "c"), json(&proxy("c")), None)
            .await
            .unwrap();
        let last = store
            .put(
                &keys::group(p, 4),
                json(&Group {
                    id: 4,
                    servers: vec![],
                }),
                None,
            )
            .await
            .unwrap();
        while topology.revision < last {
            let event = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("event in time")
                .expect("watch open");
            apply_event(&mut topology, p, &event).unwrap();
        }
        let fresh = load_topology(&store, p).await.unwrap();
        assert_eq!(snapshot(&topology), snapshot(&fresh));
        assert_eq!(
            topology.groups.iter().map(|g| g.id).collect::<Vec<_>>(),
            [1, 2, 4]
        );
        assert_eq!(
            topology
                .proxies
                .iter()
                .map(|p| p.token.as_str())
                .collect::<Vec<_>>(),
            ["b", "c"]
        );

        // A bad document: the error names its key, and a bad event changes nothing.
        let before = snapshot(&topology);
        let bad = crate::store::KeyValue {
            key: keys::group(p, 7),
            value: b"{\"id\": \"x\"}".to_vec(),
            mod_revision: last + 1,
        };
        let err = apply_event(&mut topology, p, &WatchEvent::Put(bad.clone())).unwrap_err();
        assert!(err.to_string().contains(&keys::group(p, 7)), "{err}");
        assert_eq!(snapshot(&topology), before);
        let written = store.put(&bad.key, bad.value.clone(), None).await.unwrap();
        let err = load_topology(&store, p).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::BadDocument { key, revision, .. }
                if key == "/tessera/demo/groups/0007" && *revision == written),
            "{err}"
        );
        assert!(
            err.to_string().contains(&format!("revision {written}")),
            "{err}"
        );
    }

    fn put(key: String, value: &[u8], mod_revision: i64) -> WatchEvent {
        WatchEvent::Put(KeyValue {
            key,
            value: value.to_vec(),
            mod_revision,
        })
    }

    fn owned_by(group: u32) -> Vec<u8> {
        json(&Slots {
            slots: vec![SlotState::Owned { group }; SLOT_COUNT],
        })
    }

    #[test]
    fn a_revision_is_applied_whole_or_not_at_all() {
        let p = "rev";
        let mut topology = Topology {
            revision: 10,
            ..Topology::default()
        };
        let group = |id: u32| {
            json(&Group {
                id,
                servers: vec![],
            })
        };
        let good = [
            put(keys::slots(p), &owned_by(1), 11),
            put(keys::group(p, 1), &group(1), 11),
        ];
        assert!(apply_revision(&mut topology, p, &good).unwrap());
        assert_eq!(topology.revision, 11);
        let before = snapshot(&topology);

        // A good slot table and a group that does not decode, in one transaction: nothing.
        let mixed = [
            put(keys::slots(p), &owned_by(2), 12),
            put(keys::group(p, 2), b"{\"id\": \"two\"}", 12),
        ];
        let err = apply_revision(&mut topology, p, &mixed).unwrap_err();
        assert!(
            matches!(&err, StoreError::BadDocument { key, revision: 12, .. } if *key == keys::group(p, 2)),
            "{err}"
        );
        assert_eq!(snapshot(&topology), before);

        // The plugin chain is part of the topology: the same rule.
        let plugins = [put(keys::plugins(p), b"[1, 2]", 13)];
        let err = apply_revision(&mut topology, p, &plugins).unwrap_err();
        assert!(
            matches!(&err, StoreError::BadDocument { key, revision: 13, .. } if *key == keys::plugins(p)),
            "{err}"
        );
        assert_eq!(snapshot(&topology), before);
    }

    #[test]
    fn proxy_registrations_do_not_route_and_a_bad_one_is_left_out() {
        let p = "reg";
        let mut topology = Topology::default();
        let a = put(keys::proxy(p, "a"), &json(&proxy("a")), 5);
        assert!(!apply_revision(&mut topology, p, &[a]).unwrap());
        assert_eq!(topology.proxies.len(), 1);
        let garbage = put(keys::proxy(p, "b"), b"not json", 6);
        assert!(!apply_revision(&mut topology, p, &[garbage]).unwrap());
        assert_eq!(topology.proxies.len(), 1);
        assert_eq!(topology.revision, 6);
        let delete = WatchEvent::Delete {
            key: keys::slots(p),
            revision: 7,
        };
        assert!(apply_revision(&mut topology, p, &[delete]).unwrap());
    }
}
