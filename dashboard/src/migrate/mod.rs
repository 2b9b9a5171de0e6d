//! Online slot migration, the dashboard's side (docs/migration.md): the queue of steps in the
//! store ([`plan`]), the barrier every proxy must pass before keys move ([`barrier`]), and the
//! key mover ([`mover`]), run by one task per dashboard ([`spawn`]); a group getting its
//! first slots gets the function libraries first ([`libraries`]).
//!
//! A step: its slots go `owned by A` → `migrating A → B` (one revision R) → barrier (every
//! registered proxy has applied R) → keys moved A → B until a SCAN pass finds none → `owned
//! by B`, each transition one transaction on the slots and the migrations document. The
//! document keeps the queue and each step's state, so a restarted dashboard resumes.

pub mod barrier;
pub mod cli;
mod index;
pub mod libraries;
pub mod mover;
pub mod plan;
mod queue;
mod redis;

pub use queue::QueueOptions;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tracing::warn;

use crate::api::AppState;
use crate::error::DashboardError;
use crate::service::Snapshot;
use barrier::{Holder, Outcome};
use plan::{MoveOptions, StepState};

/// How often the migrator looks at the queue when nothing wakes it.
const TICK: Duration = Duration::from_millis(500);
/// First and longest wait before moving keys again after a Redis error.
const RETRY: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(10));
/// The most slots one step takes by default.
pub const DEFAULT_STEP_SLOTS: usize = 64;

/// The migrator's state in this dashboard: progress of the steps it runs (not persisted:
/// keys moved, keys/s and ETA are of this run), and its wake-up.
#[derive(Default)]
pub struct Migrator {
    progress: Mutex<HashMap<u64, Arc<Progress>>>,
    index: index::KeyIndex,
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
            match queue::read(&state.service).await {
                Ok(doc) => {
                    // Started, or handed to a task that is starting it.
                    let mut in_flight = doc
                        .steps
                        .iter()
                        .filter(|s| s.state != StepState::Queued || ids.contains(&s.id))
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
    if step.state != StepState::Moving {
        let revision = match step.state {
            StepState::Queued => {
                libraries::before_first_slots(&snap, step.to).await?;
                match svc.start_step(id).await? {
                    Some(revision) => revision,
                    None => return Ok(()),
                }
            }
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
    let mut job = svc.move_job(id).await?;
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
        match mover::move_keys(&job, &state.migrator.index, &*progress).await {
            Ok(_) => break,
            Err(e) => {
                warn!(step = id, "moving keys: {e}; retrying in {wait:?}");
                progress.lock().error = Some(e.to_string());
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RETRY.1);
                // A changed master or backend password applies from the next attempt.
                job = svc.move_job(id).await?;
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
    let snap = svc.snapshot().await?;
    if !snap
        .migrations_doc()
        .steps
        .iter()
        .any(|s| s.from == step.from)
    {
        state.migrator.index.forget(step.from);
    }
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
            let keys_moved = p.as_ref().map_or(0, |p| p.keys_moved);
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
