//! The JSON shapes the API answers with, built from a [`Snapshot`]: slot ranges, groups with
//! their slot counts, proxies with a `behind` flag, the product with its passwords masked.

use serde::Serialize;
use tessera_topology::model::{Product, ProxyInfo, SLOT_COUNT, SlotState};

use crate::error::DashboardError;
use crate::service::Snapshot;

pub use tessera_proxy::admin::MASK;
use tessera_proxy::admin::mask;

/// A run of consecutive slots in the same state: `{"range": "0-511", "state": "owned", "group": 1}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotRange {
    pub range: String,
    #[serde(flatten)]
    pub state: SlotState,
}

/// The slot table as ranges, in slot order.
pub fn slot_ranges(slots: &[SlotState]) -> Vec<SlotRange> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=slots.len() {
        if i == slots.len() || slots[i] != slots[start] {
            let range = if start == i - 1 {
                format!("{start}")
            } else {
                format!("{start}-{}", i - 1)
            };
            out.push(SlotRange {
                range,
                state: slots[start],
            });
            start = i;
        }
    }
    out
}

/// Parses `LO-HI` or a single slot `N` into an inclusive range within `0..=1023`.
pub fn parse_range(text: &str) -> Result<(usize, usize), DashboardError> {
    let bad = |why: &str| {
        DashboardError::BadRequest(format!(
            "bad slot range {text:?}: {why} (expected LO-HI or N, with 0 <= LO <= HI <= {})",
            SLOT_COUNT - 1
        ))
    };
    let t = text.trim();
    let (lo, hi) = match t.split_once('-') {
        Some((lo, hi)) => (lo.trim(), hi.trim()),
        None => (t, t),
    };
    let lo: usize = lo.parse().map_err(|_| bad("not a number"))?;
    let hi: usize = hi.parse().map_err(|_| bad("not a number"))?;
    if hi >= SLOT_COUNT {
        return Err(bad("past the last slot"));
    }
    if lo > hi {
        return Err(bad("LO is greater than HI"));
    }
    Ok((lo, hi))
}

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
    pub slots: Vec<SlotRange>,
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
            slots: slot_ranges(&self.slot_states()),
            proxies: self.proxy_views(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_compress_runs() {
        let mut s = vec![SlotState::Offline; SLOT_COUNT];
        for slot in s.iter_mut().take(512) {
            *slot = SlotState::Owned { group: 1 };
        }
        s[700] = SlotState::Owned { group: 2 };
        let r = slot_ranges(&s);
        let names: Vec<&str> = r.iter().map(|r| r.range.as_str()).collect();
        assert_eq!(names, ["0-511", "512-699", "700", "701-1023"]);
        let json = serde_json::to_value(&r[0]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"range": "0-511", "state": "owned", "group": 1})
        );
    }

    #[test]
    fn range_parsing() {
        assert_eq!(parse_range("0-511").unwrap(), (0, 511));
        assert_eq!(parse_range(" 7 ").unwrap(), (7, 7));
        assert_eq!(parse_range("0-1023").unwrap(), (0, 1023));
        for bad in ["", "a-b", "5-4", "0-1024", "-1", "1-", "1-2-3"] {
            assert!(parse_range(bad).is_err(), "{bad:?}");
        }
    }
}
