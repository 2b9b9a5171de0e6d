//! What the migrator keeps in the store (`/tessera/<p>/migrations`: the queue of steps and
//! their state, so a restarted dashboard resumes) and the pure planning: a range split into
//! steps, and a rebalance by group weight.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tessera_topology::model::{SLOT_COUNT, SlotState};

use crate::error::DashboardError;

/// The store key of the migrations document. Proxies ignore it (it routes nothing).
pub fn key(product: &str) -> String {
    format!("/tessera/{product}/migrations")
}

/// `/tessera/<p>/migrations`: the steps still to finish, in order (running ones first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migrations {
    /// The id the next step gets.
    #[serde(default)]
    pub next_id: u64,
    /// How many steps run at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    #[serde(default)]
    pub steps: Vec<Step>,
}

/// A move of one or several slots from one group to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub id: u64,
    /// Slot numbers, ascending.
    pub slots: Vec<u16>,
    pub from: u32,
    pub to: u32,
    pub state: StepState,
    /// An operator asked to cancel it while it was running.
    #[serde(default)]
    pub cancel: bool,
    #[serde(default)]
    pub options: MoveOptions,
}

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    /// Waiting for its turn; its slots are still `owned` by `from`.
    Queued,
    /// Its slots are `migrating`; waiting until every proxy has applied that revision.
    Barrier,
    /// Every proxy follows: the migrator is moving the keys.
    Moving,
}

/// How a step moves keys. Every field has a default, so a request gives only what it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MoveOptions {
    /// Keys per `MIGRATE ... KEYS` command.
    pub batch_keys: usize,
    /// `MIGRATE` commands in flight at once on the connection to `from`.
    pub pipeline: usize,
    /// Pause after each round of pipelined batches, milliseconds.
    pub pause_ms: u64,
    /// `MIGRATE`'s own timeout, milliseconds.
    pub migrate_timeout_ms: u64,
    /// After this long, proxies that have not applied the step's revision are reported as
    /// holding it (it keeps waiting for them), milliseconds.
    pub barrier_timeout_ms: u64,
}

impl Default for MoveOptions {
    fn default() -> Self {
        MoveOptions {
            batch_keys: 100,
            pipeline: 1,
            pause_ms: 0,
            migrate_timeout_ms: 5000,
            barrier_timeout_ms: 30_000,
        }
    }
}

impl MoveOptions {
    pub fn validate(&self) -> Result<(), DashboardError> {
        let bad = |why: &str| {
            Err(DashboardError::BadRequest(format!(
                "bad migration option: {why}"
            )))
        };
        if !(1..=10_000).contains(&self.batch_keys) {
            return bad("batch_keys must be 1..=10000");
        }
        if !(1..=64).contains(&self.pipeline) {
            return bad("pipeline must be 1..=64");
        }
        if self.pause_ms > 60_000 {
            return bad("pause_ms must be at most 60000");
        }
        if !(1..=600_000).contains(&self.migrate_timeout_ms) {
            return bad("migrate_timeout_ms must be 1..=600000");
        }
        if !(1..=3_600_000).contains(&self.barrier_timeout_ms) {
            return bad("barrier_timeout_ms must be 1..=3600000");
        }
        Ok(())
    }
}

impl Default for Migrations {
    fn default() -> Self {
        Migrations {
            next_id: 1,
            concurrency: default_concurrency(),
            steps: Vec::new(),
        }
    }
}

fn default_concurrency() -> usize {
    1
}

/// The most steps that may run at once.
pub const MAX_CONCURRENCY: usize = 16;

/// One planned move: consecutive slots with the same source and destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedMove {
    pub range: String,
    pub from: u32,
    pub to: u32,
    pub slots: usize,
}

/// Slots as text ranges: `[0, 1, 2, 7]` → `0-2, 7`.
pub fn ranges_text(slots: &[u16]) -> String {
    runs(slots)
        .iter()
        .map(|&(lo, hi)| {
            if lo == hi {
                format!("{lo}")
            } else {
                format!("{lo}-{hi}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Ascending slots as inclusive runs.
fn runs(slots: &[u16]) -> Vec<(u16, u16)> {
    let mut out: Vec<(u16, u16)> = Vec::new();
    for &s in slots {
        match out.last_mut() {
            Some((_, hi)) if *hi + 1 == s => *hi = s,
            _ => out.push((s, s)),
        }
    }
    out
}

/// Splits `(slot, from)` pairs (ascending slots) into steps of at most `step_slots` slots,
/// each of consecutive slots with one source.
pub fn split_steps(moves: &[(u16, u32)], step_slots: usize) -> Vec<(Vec<u16>, u32)> {
    let mut out: Vec<(Vec<u16>, u32)> = Vec::new();
    for &(slot, from) in moves {
        match out.last_mut() {
            Some((slots, f))
                if *f == from
                    && slots.len() < step_slots
                    && slots.last().is_some_and(|l| l + 1 == slot) =>
            {
                slots.push(slot)
            }
            _ => out.push((vec![slot], from)),
        }
    }
    out
}

/// The moves that bring every group with servers to its share of the owned slots, by
/// weight (groups not in `weights` weigh 1; weight 0 empties a group). Shares are rounded
/// down, the remainder going to the lowest group ids; a group over its share gives its
/// highest slots, to the lowest-numbered groups under theirs. Offline and migrating slots are
/// left alone. Returns `(slot, from, to)`, ascending by slot.
pub fn rebalance(
    slots: &[SlotState],
    groups: &[u32],
    weights: &BTreeMap<u32, u32>,
) -> Result<Vec<(u16, u32, u32)>, DashboardError> {
    if groups.is_empty() {
        return Err(DashboardError::Conflict(
            "no group with a server to balance over".to_string(),
        ));
    }
    for g in weights.keys() {
        if !groups.contains(g) {
            return Err(DashboardError::BadRequest(format!(
                "weight for group {g}, which does not exist or has no server"
            )));
        }
    }
    let weight = |g: u32| u64::from(weights.get(&g).copied().unwrap_or(1));
    let total_weight: u64 = groups.iter().map(|&g| weight(g)).sum();
    if total_weight == 0 {
        return Err(DashboardError::BadRequest(
            "every group has weight 0".to_string(),
        ));
    }
    let mut owned: BTreeMap<u32, Vec<u16>> = groups.iter().map(|&g| (g, Vec::new())).collect();
    let mut total = 0u64;
    for (slot, s) in slots.iter().enumerate().take(SLOT_COUNT) {
        if let SlotState::Owned { group } = s {
            total += 1;
            owned.entry(*group).or_default().push(slot as u16);
        }
    }
    // Groups without servers (owned.keys() beyond `groups`) have a share of 0.
    let mut target: BTreeMap<u32, u64> = owned.keys().map(|&g| (g, 0)).collect();
    let mut given = 0;
    for &g in groups {
        let share = total * weight(g) / total_weight;
        target.insert(g, share);
        given += share;
    }
    let mut sorted: Vec<u32> = groups.to_vec();
    sorted.sort_unstable();
    for g in sorted
        .iter()
        .filter(|&&g| weight(g) > 0)
        .cycle()
        .take((total - given) as usize)
    {
        *target.get_mut(g).expect("every group has a target") += 1;
    }
    let mut surplus: Vec<(u16, u32)> = Vec::new();
    for (&g, slots) in &owned {
        let keep = target[&g] as usize;
        if slots.len() > keep {
            surplus.extend(slots[keep..].iter().map(|&s| (s, g)));
        }
    }
    surplus.sort_unstable();
    let mut out = Vec::new();
    let mut donors = surplus.into_iter();
    for (&g, &want) in &target {
        let have = owned[&g].len() as u64;
        for _ in have..want {
            let (slot, from) = donors.next().expect("shares add up to the owned slots");
            out.push((slot, from, g));
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// `(slot, from, to)` ascending by slot as ranges of one source and destination.
pub fn planned_moves(moves: &[(u16, u32, u32)]) -> Vec<PlannedMove> {
    let mut out: Vec<(Vec<u16>, u32, u32)> = Vec::new();
    for &(slot, from, to) in moves {
        match out.last_mut() {
            Some((slots, f, t))
                if *f == from && *t == to && slots.last().is_some_and(|l| l + 1 == slot) =>
            {
                slots.push(slot)
            }
            _ => out.push((vec![slot], from, to)),
        }
    }
    out.into_iter()
        .map(|(slots, from, to)| PlannedMove {
            range: ranges_text(&slots),
            from,
            to,
            slots: slots.len(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(owners: &[(std::ops::Range<usize>, u32)]) -> Vec<SlotState> {
        let mut s = vec![SlotState::Offline; SLOT_COUNT];
        for (r, g) in owners {
            for slot in r.clone() {
                s[slot] = SlotState::Owned { group: *g };
            }
        }
        s
    }

    #[test]
    fn rebalance_evens_out_by_weight() {
        let slots = table(&[(0..1024, 1)]);
        let moves = rebalance(&slots, &[1, 2], &BTreeMap::new()).unwrap();
        assert_eq!(moves.len(), 512);
        assert_eq!(
            planned_moves(&moves),
            [PlannedMove {
                range: "512-1023".into(),
                from: 1,
                to: 2,
                slots: 512
            }]
        );
        let weights = BTreeMap::from([(2, 3)]);
        let moves = rebalance(&slots, &[1, 2], &weights).unwrap();
        assert_eq!(moves.len(), 768);
        // Three groups, 1024 slots: 342, 341, 341.
        let moves = rebalance(&slots, &[1, 2, 3], &BTreeMap::new()).unwrap();
        let to = |g| moves.iter().filter(|m| m.2 == g).count();
        assert_eq!((to(2), to(3)), (341, 341));
        let balanced = table(&[(0..512, 1), (512..1024, 2)]);
        assert!(
            rebalance(&balanced, &[1, 2], &BTreeMap::new())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn steps_split_by_source_size_and_gaps() {
        let moves = [(0, 1), (1, 1), (2, 1), (3, 2), (5, 2)];
        assert_eq!(
            split_steps(&moves, 2),
            [(vec![0, 1], 1), (vec![2], 1), (vec![3], 2), (vec![5], 2)]
        );
        assert_eq!(ranges_text(&[0, 1, 2, 7, 9, 10]), "0-2, 7, 9-10");
    }
}
