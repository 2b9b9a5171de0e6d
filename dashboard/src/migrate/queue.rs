//! Changes to the migration queue, each one transaction on the migrations document (and the
//! slot table, when a step starts or ends) through [`Service::mutate`]: queueing a range or a
//! rebalance, cancelling, and a step's transitions.

use std::collections::{BTreeMap, HashSet};

use tessera_topology::Revision;
use tessera_topology::keys;
use tessera_topology::model::{SlotState, Slots};
use tessera_topology::store::Compare;
use tracing::{info, warn};

use super::plan::{self, MAX_CONCURRENCY, Migrations, MoveOptions, PlannedMove, Step, StepState};
use super::{DEFAULT_STEP_SLOTS, End, mover};
use crate::error::DashboardError;
use crate::service::{Plan, Service, Snapshot};
use tessera_topology::model::SlotRange;

impl Snapshot {
    /// The migrations document (an empty queue when there is none).
    pub fn migrations_doc(&self) -> Migrations {
        self.migrations
            .as_ref()
            .map(|d| d.value.clone())
            .unwrap_or_default()
    }

    pub fn migration_step(&self, id: u64) -> Option<&Step> {
        self.migrations
            .as_ref()
            .and_then(|d| d.value.steps.iter().find(|s| s.id == id))
    }

    /// Slots owned by, or migrating from, `group`.
    pub(super) fn slots_of(&self, group: u32) -> usize {
        self.slot_states()
            .iter()
            .filter(|s| match s {
                SlotState::Owned { group: g } => *g == group,
                SlotState::Migrating { from, .. } => *from == group,
                SlotState::Offline => false,
            })
            .count()
    }

    fn guard_migrations(&self) -> Compare {
        match &self.migrations {
            Some(d) => d.guard(),
            None => Compare::Absent(plan::key(&self.product_name)),
        }
    }

    /// The master of a group that exists and has a server.
    fn master(&self, id: u32) -> Result<String, DashboardError> {
        let group = self
            .groups
            .get(&id)
            .ok_or_else(|| DashboardError::NotFound(format!("group {id} does not exist")))?;
        group.value.servers.first().cloned().ok_or_else(|| {
            DashboardError::Conflict(format!("group {id} has no server: add one first"))
        })
    }
}

/// Writes `doc` (and the slots, when given) guarded by what was read.
fn write(p: &mut Plan, snap: &Snapshot, doc: &Migrations, slots: Option<Vec<SlotState>>) {
    p.read(snap.guard_migrations())
        .put(plan::key(&snap.product_name), doc);
    if let Some(slots) = slots {
        p.read(snap.guard_slots())
            .put(keys::slots(&snap.product_name), &Slots { slots });
    }
}

/// How `POST /api/slots/migrate` and `POST /api/rebalance` queue their steps: fields of
/// their bodies.
#[derive(Debug, Default, Clone, Copy, serde::Deserialize)]
pub struct QueueOptions {
    /// The most slots one step moves (default [`DEFAULT_STEP_SLOTS`]).
    pub step_slots: Option<usize>,
    /// Steps run at once, for the whole queue (kept until changed).
    pub concurrency: Option<usize>,
    pub options: Option<MoveOptions>,
}

impl QueueOptions {
    /// Its fields' names, for the bodies it is part of.
    pub const FIELDS: &'static [&'static str] = &["step_slots", "concurrency", "options"];

    fn validate(&self) -> Result<(usize, MoveOptions), DashboardError> {
        let step_slots = self.step_slots.unwrap_or(DEFAULT_STEP_SLOTS);
        if !(1..=1024).contains(&step_slots) {
            return Err(DashboardError::BadRequest(
                "bad step_slots: 1..=1024".to_string(),
            ));
        }
        if let Some(c) = self.concurrency
            && !(1..=MAX_CONCURRENCY).contains(&c)
        {
            return Err(DashboardError::BadRequest(format!(
                "bad concurrency: 1..={MAX_CONCURRENCY}"
            )));
        }
        let options = self.options.unwrap_or_default();
        options.validate()?;
        Ok((step_slots, options))
    }
}

/// Appends steps for `(slot, from, to)` moves to `doc`.
fn queue(
    doc: &mut Migrations,
    moves: &[(u16, u32, u32)],
    step_slots: usize,
    options: MoveOptions,
) -> Vec<Step> {
    let mut by_pair: BTreeMap<(u32, u32), Vec<(u16, u32)>> = BTreeMap::new();
    for &(slot, from, to) in moves {
        by_pair.entry((from, to)).or_default().push((slot, from));
    }
    let mut added = Vec::new();
    for ((_, to), moves) in by_pair {
        for (slots, from) in plan::split_steps(&moves, step_slots) {
            let step = Step {
                id: doc.next_id.max(1),
                slots,
                from,
                to,
                state: StepState::Queued,
                cancel: false,
                options,
            };
            doc.next_id = step.id + 1;
            added.push(step.clone());
            doc.steps.push(step);
        }
    }
    added
}

/// Which slots are already in a step of the queue.
fn in_queue(doc: &Migrations) -> HashSet<u16> {
    doc.steps
        .iter()
        .flat_map(|s| s.slots.iter().copied())
        .collect()
}

/// The migrations document alone (one key read: what the migrator polls while idle).
pub(super) async fn read(service: &Service) -> Result<Migrations, DashboardError> {
    let key = plan::key(service.product());
    match service.store().get(&key).await? {
        None => Ok(Migrations::default()),
        Some(kv) => serde_json::from_slice(&kv.value).map_err(|e| DashboardError::Corrupt {
            key,
            message: e.to_string(),
        }),
    }
}

impl Service {
    /// `POST /api/slots/migrate`: queues moving `range` to group `to`, in steps. Slots owned
    /// by `to` already are left out; offline slots and slots already queued are refused.
    pub async fn migrate_slots(
        &self,
        range: &str,
        to: u32,
        queue_options: QueueOptions,
    ) -> Result<(Revision, Vec<Step>), DashboardError> {
        let SlotRange { lo, hi } = range.parse()?;
        let (step_slots, options) = queue_options.validate()?;
        self.mutate(&format!("slots {lo}-{hi} queued to move to group {to}"), |snap| {
            snap.master(to)?;
            let mut doc = snap.migrations_doc();
            let queued = in_queue(&doc);
            let slots = snap.slot_states();
            let mut moves = Vec::new();
            for (slot, state) in slots.iter().enumerate().take(hi + 1).skip(lo) {
                match *state {
                    SlotState::Owned { group } if group == to => {}
                    _ if queued.contains(&(slot as u16)) => {
                        return Err(DashboardError::Conflict(format!(
                            "slot {slot} is queued or migrating already: see `tessera admin migrations`"
                        )));
                    }
                    SlotState::Owned { group } => moves.push((slot as u16, group, to)),
                    SlotState::Offline => {
                        return Err(DashboardError::Conflict(format!(
                            "slot {slot} is offline: it has no keys to move; give it a group with `tessera admin slots assign`"
                        )));
                    }
                    SlotState::Migrating { from, to } => {
                        return Err(DashboardError::Conflict(format!(
                            "slot {slot} is migrating already (group {from} → {to})"
                        )));
                    }
                }
            }
            if let Some(c) = queue_options.concurrency {
                doc.concurrency = c;
            }
            let added = queue(&mut doc, &moves, step_slots, options);
            if added.is_empty() && queue_options.concurrency.is_none() {
                return Ok((Plan::default(), added));
            }
            let mut p = Plan::default();
            write(&mut p, snap, &doc, None);
            Ok((p, added))
        })
        .await
    }

    /// `POST /api/migrations/cancel`: queued slots in `range` (all when `None`) are dropped
    /// from the queue; steps in flight with a slot in it are marked: one no proxy routes by
    /// yet is rolled back (its slots owned by the source again, every key still there), the
    /// others are finished. Returns the slots dropped and the steps marked.
    pub async fn cancel_migrations(
        &self,
        range: Option<&str>,
    ) -> Result<(Revision, (Vec<u16>, Vec<u64>)), DashboardError> {
        let (lo, hi) = match range {
            Some(r) => {
                let SlotRange { lo, hi } = r.parse()?;
                (lo, hi)
            }
            None => (0, tessera_topology::model::SLOT_COUNT - 1),
        };
        let inside = |s: &u16| (lo..=hi).contains(&(*s as usize));
        self.mutate("migrations cancelled", |snap| {
            let mut doc = snap.migrations_doc();
            let (mut dropped, mut marked) = (Vec::new(), Vec::new());
            for step in &mut doc.steps {
                if step.state == StepState::Queued {
                    dropped.extend(step.slots.iter().copied().filter(inside));
                    step.slots.retain(|s| !inside(s));
                } else if step.slots.iter().any(inside) && !step.cancel {
                    step.cancel = true;
                    marked.push(step.id);
                }
            }
            doc.steps.retain(|s| !s.slots.is_empty());
            if dropped.is_empty() && marked.is_empty() {
                return Ok((Plan::default(), (dropped, marked)));
            }
            let mut p = Plan::default();
            write(&mut p, snap, &doc, None);
            Ok((p, (dropped, marked)))
        })
        .await
    }

    /// `POST /api/rebalance`: the plan by group weight; queued unless `dry_run`. Refused
    /// while migrations are queued or running.
    pub async fn rebalance(
        &self,
        weights: &BTreeMap<u32, u32>,
        dry_run: bool,
        queue_options: QueueOptions,
    ) -> Result<(Revision, (Vec<PlannedMove>, Vec<Step>)), DashboardError> {
        let (step_slots, options) = queue_options.validate()?;
        self.mutate("rebalance queued", |snap| {
            let groups: Vec<u32> = snap
                .groups
                .values()
                .filter(|g| !g.value.servers.is_empty())
                .map(|g| g.value.id)
                .collect();
            let moves = plan::rebalance(&snap.slot_states(), &groups, weights)?;
            let planned = plan::planned_moves(&moves);
            let mut doc = snap.migrations_doc();
            if !dry_run && !doc.steps.is_empty() {
                return Err(DashboardError::Conflict(
                    "migrations are queued or running: wait for them (`tessera admin migrations`) or cancel them first".to_string(),
                ));
            }
            if dry_run || moves.is_empty() {
                return Ok((Plan::default(), (planned, Vec::new())));
            }
            if let Some(c) = queue_options.concurrency {
                doc.concurrency = c;
            }
            let added = queue(&mut doc, &moves, step_slots, options);
            let mut p = Plan::default();
            write(&mut p, snap, &doc, None);
            Ok((p, (planned, added)))
        })
        .await
    }

    /// Sets a queued step's slots to `migrating` (the revision the barrier waits for), or
    /// drops the step if its slots are no longer owned by its source (`None`).
    pub(super) async fn start_step(&self, id: u64) -> Result<Option<Revision>, DashboardError> {
        let (revision, started) = self
            .mutate(&format!("migration step {id} started"), |snap| {
                let mut doc = snap.migrations_doc();
                let Some(step) = doc.steps.iter_mut().find(|s| s.id == id) else {
                    return Ok((Plan::default(), false));
                };
                let mut slots = snap.slot_states();
                let owned = step
                    .slots
                    .iter()
                    .all(|&s| slots[s as usize] == SlotState::Owned { group: step.from });
                let mut p = Plan::default();
                if !owned || snap.master(step.to).is_err() {
                    warn!(step = id, "dropping a migration step: its slots changed owner or its destination has no server");
                    doc.steps.retain(|s| s.id != id);
                    write(&mut p, snap, &doc, None);
                    return Ok((p, false));
                }
                for &s in &step.slots {
                    slots[s as usize] = SlotState::Migrating {
                        from: step.from,
                        to: step.to,
                    };
                }
                step.state = StepState::Barrier;
                write(&mut p, snap, &doc, Some(slots));
                Ok((p, true))
            })
            .await?;
        Ok(started.then_some(revision))
    }

    pub(super) async fn step_moving(&self, id: u64) -> Result<(), DashboardError> {
        self.mutate(&format!("migration step {id} passed its barrier"), |snap| {
            let mut doc = snap.migrations_doc();
            let Some(step) = doc.steps.iter_mut().find(|s| s.id == id) else {
                return Ok((Plan::default(), ()));
            };
            step.state = StepState::Moving;
            let mut p = Plan::default();
            write(&mut p, snap, &doc, None);
            Ok((p, ()))
        })
        .await?;
        Ok(())
    }

    /// Ends a step: its slots owned by `to` (finished) or `from` (rolled back), the step
    /// removed from the queue, in one transaction.
    pub(super) async fn end_step(
        &self,
        id: u64,
        end: End,
        keys_moved: u64,
    ) -> Result<(), DashboardError> {
        let (_, step) = self
            .mutate(&format!("migration step {id} ended ({end:?})"), |snap| {
                let mut doc = snap.migrations_doc();
                let Some(i) = doc.steps.iter().position(|s| s.id == id) else {
                    return Ok((Plan::default(), None));
                };
                let step = doc.steps.remove(i);
                let mut slots = snap.slot_states();
                let group = match end {
                    End::Finished => step.to,
                    End::RolledBack => step.from,
                };
                for &s in &step.slots {
                    if slots[s as usize]
                        == (SlotState::Migrating {
                            from: step.from,
                            to: step.to,
                        })
                    {
                        slots[s as usize] = SlotState::Owned { group };
                    }
                }
                let mut p = Plan::default();
                write(&mut p, snap, &doc, Some(slots));
                Ok((p, Some(step)))
            })
            .await?;
        if let Some(step) = step {
            info!(
                step = id,
                slots = %plan::ranges_text(&step.slots),
                from = step.from,
                to = step.to,
                keys_moved,
                "migration step {}",
                match end {
                    End::Finished => "finished",
                    End::RolledBack => "rolled back",
                }
            );
        }
        Ok(())
    }

    /// What the mover needs for a step: the masters, the backend password, the slots.
    pub(super) async fn move_job(&self, id: u64) -> Result<mover::MoveJob, DashboardError> {
        let snap = self.snapshot().await?;
        let step = snap
            .migration_step(id)
            .ok_or_else(|| DashboardError::NotFound(format!("migration step {id} is gone")))?;
        let queued_slots = snap
            .migrations_doc()
            .steps
            .iter()
            .filter(|s| s.from == step.from && s.id != id && s.state != StepState::Moving)
            .flat_map(|s| s.slots.iter().copied())
            .collect();
        Ok(mover::MoveJob {
            from: step.from,
            from_addr: snap.master(step.from)?,
            to_addr: snap.master(step.to)?,
            password: snap
                .product
                .as_ref()
                .map(|p| p.value.backend_password.clone())
                .unwrap_or_default(),
            slots: step.slots.iter().copied().collect(),
            queued_slots,
            options: step.options,
        })
    }
}
