//! The keys a source's walks saw in the slots of its steps still waiting their turn, so a step
//! moves most of its keys right after its barrier and its own walk is the confirming pass.
//!
//! The index only saves walks: a key it lists that has gone answers `NOKEY`, and a key it
//! misses (written after the walk passed it, or beyond the bound) is found by the step's walk.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// The most an index of one source holds, counted as key bytes plus [`PER_KEY`]: past it a
/// walk stops adding keys (the steps' own walks find the rest).
pub const MAX_BYTES: usize = 256 << 20;
/// What a key costs in the index beyond its bytes (its vector, its slot's list).
const PER_KEY: usize = 48;

/// Key names by db and slot, as one completed walk of the source saw them.
#[derive(Default)]
pub struct SourceKeys {
    keys: HashMap<(u32, u16), Vec<Vec<u8>>>,
    bytes: usize,
}

impl SourceKeys {
    /// Adds a key; false (and nothing added) once the index is full.
    pub fn add(&mut self, db: u32, slot: u16, key: &[u8]) -> bool {
        let cost = key.len() + PER_KEY;
        if self.bytes + cost > MAX_BYTES {
            return false;
        }
        self.bytes += cost;
        self.keys.entry((db, slot)).or_default().push(key.to_vec());
        true
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The index of every source (by group id) that has steps queued.
#[derive(Default)]
pub struct KeyIndex {
    sources: Mutex<HashMap<u32, SourceKeys>>,
}

impl KeyIndex {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, SourceKeys>> {
        self.sources.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces what is known of `group`'s keys with what a walk that just completed saw.
    pub fn replace(&self, group: u32, keys: SourceKeys) {
        let mut sources = self.lock();
        if keys.is_empty() {
            sources.remove(&group);
        } else {
            sources.insert(group, keys);
        }
    }

    /// Takes out the keys of `slots` on `group`, by db.
    pub fn take(&self, group: u32, slots: &HashSet<u16>) -> HashMap<u32, HashSet<Vec<u8>>> {
        let mut taken: HashMap<u32, HashSet<Vec<u8>>> = HashMap::new();
        let mut sources = self.lock();
        let Some(source) = sources.get_mut(&group) else {
            return taken;
        };
        source.keys.retain(|&(db, slot), keys| {
            if !slots.contains(&slot) {
                return true;
            }
            source.bytes -= keys.iter().map(|key| key.len() + PER_KEY).sum::<usize>();
            taken.entry(db).or_default().extend(std::mem::take(keys));
            false
        });
        if source.is_empty() {
            sources.remove(&group);
        }
        taken
    }

    /// Forgets `group`'s keys (no step from it is left).
    pub fn forget(&self, group: u32) {
        self.lock().remove(&group);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by_db(keys: &[(u32, &[u8])]) -> HashMap<u32, HashSet<Vec<u8>>> {
        let mut out: HashMap<u32, HashSet<Vec<u8>>> = HashMap::new();
        for (db, key) in keys {
            out.entry(*db).or_default().insert(key.to_vec());
        }
        out
    }

    #[test]
    fn a_step_takes_its_slots_keys_once_by_db() {
        let index = KeyIndex::default();
        let mut seen = SourceKeys::default();
        assert!(seen.add(2, 5, b"b"));
        assert!(seen.add(0, 5, b"a"));
        assert!(seen.add(0, 6, b"c"));
        assert!(seen.add(0, 7, b"d"));
        index.replace(1, seen);
        let slots: HashSet<u16> = [5, 6].into();
        assert_eq!(
            index.take(1, &slots),
            by_db(&[(0, b"a"), (0, b"c"), (2, b"b")])
        );
        assert!(index.take(1, &slots).is_empty());
        assert_eq!(index.take(1, &[7].into()), by_db(&[(0, b"d")]));
        assert!(index.take(2, &[7].into()).is_empty());
    }

    #[test]
    fn a_full_index_takes_no_more_keys() {
        let mut seen = SourceKeys::default();
        let key = vec![b'k'; 1 << 20];
        let mut added = 0;
        while seen.add(0, 1, &key) {
            added += 1;
        }
        assert_eq!(added, MAX_BYTES / (key.len() + PER_KEY));
        assert!(seen.bytes <= MAX_BYTES);
    }
}
