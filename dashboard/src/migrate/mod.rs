//! Online slot migration, the dashboard's side (docs/migration.md): the queue of steps in the
//! store ([`plan`]), the barrier every proxy must pass before keys move ([`barrier`]), and the
//! key mover ([`mover`]), run by one task per dashboard ([`spawn`]).
//!
//! A step: its slots go `owned by A` → `migrating A → B` (one revision R) → barrier (every
//! registered proxy has applied R) → keys moved A → B until a SCAN pass finds none → `owned
//! by B`, each transition one transaction on the slots and the migrations document. The
//! document keeps the queue and each step's state, so a restarted dashboard resumes.

pub mod barrier;
pub mod mover;
pub mod plan;
mod redis;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tessera_topology::Revision;
use tessera_topology::keys;
use tessera_topology::model::{SlotState, Slots};
use tessera_topology::store::Compare;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{info, warn};

use crate::api::AppState;
use crate::error::DashboardError;
use crate::service::{Plan, Service, Snapshot};
use crate::view::parse_range;
use barrier::{Holder, Outcome};
use plan::{MAX_CONCURRENCY, Migrations, MoveOptions, PlannedMove, Step, StepState};

/// How often the migrator looks at the queue when nothing wakes it.
const TICK: Duration = Duration::from_millis(500);
/// First and longest wait before moving keys again after a Redis error.
const RETRY: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(10));
/// The most slots one step takes by default.
pub const DEFAULT_STEP_SLOTS: usize = 16;

/// The migrator's state in this dashboard: progress of the steps it runs (not persisted:
/// keys/s and ETA are of this run), and its wake-up.
#[derive(Default)]
pub struct Migrator {
    progress: Mutex<HashMap<u64, Arc<Progress>>>,
    wake: Notify,
    stop: Arc<AtomicBool>,
}

impl Migrator {
    fn progress(&self, id: u64) -> Arc<Progress> {
        let mut map = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(id)
            .or_insert_with(|| {
                Arc::new(Progress {
                    stop: self.stop.clone(),
                    inner: Mutex::default(),
                })
            })
            .clone()
    }

    fn known(&self, id: u64) -> Option<Arc<Progress>> {
        let map = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&id).cloned()
    }

    fn forget(&self, id: u64) {
        let mut map = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&id);
    }

    /// Looks at the queue now (after a change to it).
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// One step's progress as this dashboard sees it.
pub struct Progress {
    stop: Arc<AtomicBool>,
    inner: Mutex<ProgressInner>,
}

#[derive(Default)]
struct ProgressInner {
    keys_moved: u64,
    /// When this run started moving keys, and how many it has moved since.
    moving_since: Option<Instant>,
    moved_this_run: u64,
    /// About how many keys the step has to move (from the source's key count).
    estimate: Option<u64>,
    holders: Vec<Holder>,
    error: Option<String>,
}

impl Progress {
    fn lock(&self) -> std::sync::MutexGuard<'_, ProgressInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn set_holders(&self, holders: Vec<Holder>) {
        self.lock().holders = holders;
    }

    fn keys_moved(&self) -> u64 {
        self.lock().keys_moved
    }
}

impl mover::Report for Progress {
    fn moved(&self, n: u64) {
        let mut p = self.lock();
        p.keys_moved += n;
        p.moved_this_run += n;
        p.error = None;
    }

    fn stop(&self) -> bool {
        self.stopping()
    }
}

/// Starts the migrator of a dashboard: it runs the queued steps (up to the document's
/// `concurrency` at once) and resumes the ones in flight. Aborting the handle stops it.
pub fn spawn(state: Arc<AppState>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut running: JoinSet<u64> = JoinSet::new();
        let mut ids: HashSet<u64> = HashSet::new();
        loop {
            if let Some(reason) = state.service.lock_problem() {
                warn!("migrator stopping: {reason}");
                state.migrator.stop.store(true, Ordering::Relaxed);
                while running.join_next().await.is_some() {}
                return;
            }
            match state.service.snapshot().await {
                Ok(snap) => {
                    let doc = snap.migrations_doc();
                    let mut in_flight = doc
                        .steps
                        .iter()
                        .filter(|s| s.state != StepState::Queued)
                        .count();
                    for step in &doc.steps {
                        if ids.contains(&step.id) {
                            continue;
                        }
                        if step.state == StepState::Queued {
                            if in_flight >= doc.concurrency.max(1) {
                                continue;
                            }
                            in_flight += 1;
                        }
                        ids.insert(step.id);
                        let (state, id) = (state.clone(), step.id);
                        running.spawn(async move {
                            if let Err(e) = run_step(&state, id).await {
                                warn!(step = id, "migration step: {e}");
                                state.migrator.progress(id).lock().error = Some(e.to_string());
                            }
                            id
                        });
                    }
                }
                Err(e) => warn!("migrator cannot read the topology: {e}"),
            }
            tokio::select! {
                _ = state.migrator.wake.notified() => {}
                _ = tokio::time::sleep(TICK) => {}
                Some(done) = running.join_next(), if !running.is_empty() => {
                    if let Ok(id) = done {
                        ids.remove(&id);
                    }
                }
            }
        }
    })
}

/// Runs one step from wherever it is to its end (or until the dashboard stops).
async fn run_step(state: &AppState, id: u64) -> Result<(), DashboardError> {
    let svc = &state.service;
    let progress = state.migrator.progress(id);
    let snap = svc.snapshot().await?;
    let Some(step) = snap.migration_step(id).cloned() else {
        return Ok(());
    };
    {
        let mut p = progress.lock();
        p.keys_moved = p.keys_moved.max(step.keys_moved);
    }
    if step.state != StepState::Moving {
        let revision = match step.state {
            StepState::Queued => match svc.start_step(id).await? {
                Some(revision) => revision,
                None => return Ok(()),
            },
            // Resumed: the current revision is at least the one that set the slots.
            _ => snap.revision(),
        };
        match barrier::wait(svc, id, revision, &progress).await? {
            Outcome::Passed => svc.step_moving(id).await?,
            Outcome::CancelledBeforeAnyProxy => {
                svc.end_step(id, End::RolledBack, progress.keys_moved())
                    .await?;
                state.migrator.forget(id);
                return Ok(());
            }
            Outcome::Stopped => return Ok(()),
        }
    }
    let job = svc.move_job(id).await?;
    if let Ok(keys) = mover::source_keys(&job).await {
        let owned = svc
            .snapshot()
            .await?
            .slots_of(step.from)
            .max(job.slots.len());
        progress.lock().estimate = Some(keys * job.slots.len() as u64 / owned as u64);
    }
    progress.lock().moving_since = Some(Instant::now());
    let mut wait = RETRY.0;
    loop {
        match mover::move_keys(&job, &*progress).await {
            Ok(_) => break,
            Err(e) => {
                warn!(step = id, "moving keys: {e}; retrying in {wait:?}");
                progress.lock().error = Some(e.to_string());
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RETRY.1);
            }
        }
        if progress.stopping() {
            return Ok(());
        }
    }
    if progress.stopping() {
        return Ok(());
    }
    svc.end_step(id, End::Finished, progress.keys_moved())
        .await?;
    state.migrator.forget(id);
    Ok(())
}

/// How a step ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Its keys are on `to`: the slots become owned by `to`.
    Finished,
    /// Cancelled before any proxy routed by it: the slots are owned by `from` again.
    RolledBack,
}

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
    fn slots_of(&self, group: u32) -> usize {
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

    fn guard_slots_doc(&self) -> Compare {
        match &self.slots {
            Some(d) => d.guard(),
            None => Compare::Absent(keys::slots(&self.product_name)),
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
        p.read(snap.guard_slots_doc())
            .put(keys::slots(&snap.product_name), &Slots { slots });
    }
}

/// How `POST /api/slots/migrate` and `POST /api/rebalance` queue their steps.
#[derive(Debug, Default, Clone, Copy)]
pub struct QueueOptions {
    /// The most slots one step moves (default [`DEFAULT_STEP_SLOTS`]).
    pub step_slots: Option<usize>,
    /// Steps run at once, for the whole queue (kept until changed).
    pub concurrency: Option<usize>,
    pub options: Option<MoveOptions>,
}

impl QueueOptions {
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
                keys_moved: 0,
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

impl Service {
    /// `POST /api/slots/migrate`: queues moving `range` to group `to`, in steps. Slots owned
    /// by `to` already are left out; offline slots and slots already queued are refused.
    pub async fn migrate_slots(
        &self,
        range: &str,
        to: u32,
        queue_options: QueueOptions,
    ) -> Result<(Revision, Vec<Step>), DashboardError> {
        let (lo, hi) = parse_range(range)?;
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
            Some(r) => parse_range(r)?,
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
            if dry_run || moves.is_empty() {
                return Ok((Plan::default(), (planned, Vec::new())));
            }
            if !doc.steps.is_empty() {
                return Err(DashboardError::Conflict(
                    "migrations are queued or running: wait for them (`tessera admin migrations`) or cancel them first".to_string(),
                ));
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
    async fn start_step(&self, id: u64) -> Result<Option<Revision>, DashboardError> {
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

    async fn step_moving(&self, id: u64) -> Result<(), DashboardError> {
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
    async fn end_step(&self, id: u64, end: End, keys_moved: u64) -> Result<(), DashboardError> {
        let (_, step) = self
            .mutate(&format!("migration step {id} ended ({end:?})"), |snap| {
                let mut doc = snap.migrations_doc();
                let Some(i) = doc.steps.iter().position(|s| s.id == id) else {
                    return Ok((Plan::default(), None));
                };
                let mut step = doc.steps.remove(i);
                step.keys_moved = keys_moved;
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
    async fn move_job(&self, id: u64) -> Result<mover::MoveJob, DashboardError> {
        let snap = self.snapshot().await?;
        let step = snap
            .migration_step(id)
            .ok_or_else(|| DashboardError::NotFound(format!("migration step {id} is gone")))?;
        Ok(mover::MoveJob {
            from_addr: snap.master(step.from)?,
            to_addr: snap.master(step.to)?,
            password: snap
                .product
                .as_ref()
                .map(|p| p.value.backend_password.clone())
                .unwrap_or_default(),
            slots: step.slots.iter().copied().collect(),
            options: step.options,
        })
    }
}

/// `GET /api/migrations`: one entry per step, in queue order.
#[derive(Debug, Serialize)]
pub struct StepView {
    pub id: u64,
    pub slots: String,
    pub from: u32,
    pub to: u32,
    /// `queued`, `barrier`, `held` (past its barrier timeout, see `holding`), or `moving`.
    pub state: &'static str,
    pub keys_moved: u64,
    pub keys_per_sec: f64,
    /// Seconds left, estimated from the source's key count; `null` when unknown.
    pub eta_secs: Option<u64>,
    pub holding: Vec<Holder>,
    pub cancel: bool,
    pub error: Option<String>,
    pub options: MoveOptions,
}

/// The queue with this dashboard's progress.
pub fn view(snap: &Snapshot, migrator: &Migrator) -> serde_json::Value {
    let doc = snap.migrations_doc();
    let steps: Vec<StepView> = doc
        .steps
        .iter()
        .map(|step| {
            let progress = migrator.known(step.id);
            let p = progress.as_ref().map(|p| p.lock());
            let keys_moved = p
                .as_ref()
                .map_or(step.keys_moved, |p| p.keys_moved.max(step.keys_moved));
            let (rate, eta) = match p.as_ref().and_then(|p| p.moving_since.map(|t| (p, t))) {
                Some((p, since)) => {
                    let secs = since.elapsed().as_secs_f64().max(0.001);
                    let rate = p.moved_this_run as f64 / secs;
                    let eta = p.estimate.filter(|_| rate > 0.0).map(|total| {
                        (total.saturating_sub(keys_moved) as f64 / rate).ceil() as u64
                    });
                    (rate, eta)
                }
                None => (0.0, None),
            };
            let holding = p.as_ref().map(|p| p.holders.clone()).unwrap_or_default();
            let state = match step.state {
                StepState::Queued => "queued",
                StepState::Barrier if !holding.is_empty() => "held",
                StepState::Barrier => "barrier",
                StepState::Moving => "moving",
            };
            StepView {
                id: step.id,
                slots: plan::ranges_text(&step.slots),
                from: step.from,
                to: step.to,
                state,
                keys_moved,
                keys_per_sec: (rate * 10.0).round() / 10.0,
                eta_secs: eta,
                holding,
                cancel: step.cancel,
                error: p.as_ref().and_then(|p| p.error.clone()),
                options: step.options,
            }
        })
        .collect();
    serde_json::json!({
        "revision": snap.revision(),
        "concurrency": doc.concurrency,
        "steps": steps,
    })
}
