//! The JSON shapes the API answers with, built from a [`Snapshot`]: slot ranges, groups with
//! their slot counts, proxies with a `behind` flag, the product with its passwords masked.

use serde::Serialize;
use tessera_topology::mask::mask;
use tessera_topology::model::{Product, ProxyInfo, SlotRun, SlotState, slot_runs};

use crate::service::Snapshot;

/// The product settings, passwords masked (the API never shows them).
#[derive(Debug, Serialize)]
pub struct ProductView {
    pub name: String,
    pub backend_password: String,
    pub session_password: String,
}

impl From<&Product> for ProductView {
    fn from(p: &Product) -> Self {
        ProductView {
            name: p.name.clone(),
            backend_password: mask(&p.backend_password),
            session_password: mask(&p.session_password),
        }
    }
}

/// A group: its servers (the first is the master) and how many slots it owns.
#[derive(Debug, Serialize)]
pub struct GroupView {
    pub id: u32,
    pub servers: Vec<String>,
    pub slots: usize,
}

/// A registered proxy, and whether it has applied the current topology revision.
#[derive(Debug, Serialize)]
pub struct ProxyView {
    #[serde(flatten)]
    pub info: ProxyInfo,
    pub behind: bool,
}

/// `GET /api/topology`.
#[derive(Debug, Serialize)]
pub struct TopologyView {
    pub product: ProductView,
    /// The topology revision: the last change to the product, the groups or the slots.
    pub revision: i64,
    /// The store revision the snapshot was read at (proxies' writes move it too).
    pub store_revision: i64,
    pub groups: Vec<GroupView>,
    pub slots: Vec<SlotRun>,
    pub proxies: Vec<ProxyView>,
}

impl Snapshot {
    pub fn product_view(&self, name: &str) -> ProductView {
        match &self.product {
            Some(p) => ProductView::from(&p.value),
            None => ProductView::from(&Product {
                name: name.to_string(),
                ..Product::default()
            }),
        }
    }

    pub fn group_views(&self) -> Vec<GroupView> {
        let slots = self.slot_states();
        self.groups
            .values()
            .map(|g| GroupView {
                id: g.value.id,
                servers: g.value.servers.clone(),
                slots: slots
                    .iter()
                    .filter(|s| **s == SlotState::Owned { group: g.value.id })
                    .count(),
            })
            .collect()
    }

    pub fn proxy_views(&self) -> Vec<ProxyView> {
        let revision = self.revision();
        self.proxies
            .iter()
            .map(|p| ProxyView {
                behind: p.applied_revision < revision,
                info: p.clone(),
            })
            .collect()
    }

    pub fn topology_view(&self, name: &str) -> TopologyView {
        TopologyView {
            product: self.product_view(name),
            revision: self.revision(),
            store_revision: self.store_revision,
            groups: self.group_views(),
            slots: slot_runs(&self.slot_states()),
            proxies: self.proxy_views(),
        }
    }
}
