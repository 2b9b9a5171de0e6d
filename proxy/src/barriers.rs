//! Which migrating slots are open: every registered proxy has acknowledged the revision that
//! made them migrating, so none routes them by an earlier table and keys may move.

use tessera_topology::model::{SlotState, Topology};

/// When each migrating slot became so, and the slots last published as closed.
#[derive(Debug, Default)]
pub struct Barriers {
    /// For each slot that is migrating, the state and the revision it became so at.
    since: Vec<Option<(SlotState, i64)>>,
    /// The migrating slots last published as closed, sorted.
    pub published: Vec<usize>,
}

impl Barriers {
    /// The migrating slots of `t` some registered proxy has not acknowledged yet (all of
    /// them while no proxy is registered: this one is about to be), sorted.
    pub fn closed(&mut self, t: &Topology) -> Vec<usize> {
        self.since.resize(t.slots.slots.len(), None);
        let mut closed = Vec::new();
        for (slot, state) in t.slots.slots.iter().enumerate() {
            let since = &mut self.since[slot];
            if !matches!(state, SlotState::Migrating { .. }) {
                *since = None;
                continue;
            }
            let at = match since {
                Some((s, at)) if s == state => *at,
                _ => {
                    *since = Some((*state, t.revision));
                    t.revision
                }
            };
            if t.proxies.is_empty() || t.proxies.iter().any(|p| p.applied_revision < at) {
                closed.push(slot);
            }
        }
        closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_topology::model::ProxyInfo;

    fn proxy(token: &str, applied_revision: i64) -> ProxyInfo {
        serde_json::from_value(serde_json::json!({
            "token": token, "addr": "127.0.0.1:1", "version": "0", "pid": 1,
            "start_time": 0, "applied_revision": applied_revision,
        }))
        .expect("a registration")
    }

    #[test]
    fn a_migrating_slot_opens_once_every_proxy_acknowledged_its_revision() {
        let mut b = Barriers::default();
        let mut t = Topology {
            revision: 10,
            ..Default::default()
        };
        t.slots.slots[7] = SlotState::Migrating { from: 1, to: 2 };
        t.proxies = vec![proxy("a", 9), proxy("b", 9)];
        assert_eq!(b.closed(&t), [7]);
        t.revision = 11;
        t.proxies = vec![proxy("a", 11), proxy("b", 9)];
        assert_eq!(b.closed(&t), [7], "b routes by revision 9 still");
        t.revision = 12;
        t.proxies = vec![proxy("a", 11), proxy("b", 10)];
        assert!(b.closed(&t).is_empty(), "both acknowledged revision 10");
        // Migrating the other way is a new migration, with a barrier of its own.
        t.revision = 13;
        t.slots.slots[7] = SlotState::Migrating { from: 2, to: 1 };
        assert_eq!(b.closed(&t), [7]);
        t.proxies.clear();
        t.revision = 14;
        t.slots.slots[7] = SlotState::Owned { group: 1 };
        assert!(b.closed(&t).is_empty());
    }
}
