//! The barrier before a step moves keys: every registered proxy must have applied the
//! revision that set the step's slots to `migrating`. A proxy that has not within the step's
//! `barrier_timeout_ms` holds the step (named in the API and the CLI); the step keeps waiting
//! for it — it is never skipped, since a proxy routing by the old table would still write
//! those slots on the source.

use std::time::{Duration, Instant};

use serde::Serialize;
use tessera_topology::Revision;
use tessera_topology::model::ProxyInfo;

use super::Progress;
use super::plan::Step;
use crate::error::DashboardError;
use crate::service::Service;

/// How often the barrier reads the proxies' registrations.
const POLL: Duration = Duration::from_millis(100);

/// A proxy that has not applied a step's revision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Holder {
    pub addr: String,
    pub applied_revision: Revision,
    /// Why it cannot apply or acknowledge the topology, when it says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topology_error: Option<String>,
}

/// The registered proxies that have not applied `revision`.
pub fn holders(proxies: &[ProxyInfo], revision: Revision) -> Vec<Holder> {
    proxies
        .iter()
        .filter(|p| p.applied_revision < revision)
        .map(|p| Holder {
            addr: p.addr.clone(),
            applied_revision: p.applied_revision,
            topology_error: p.topology_error.clone().or_else(|| p.holding.clone()),
        })
        .collect()
}

/// How a barrier ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every registered proxy has applied the revision.
    Passed,
    /// The step was cancelled and no registered proxy routes by the revision yet.
    CancelledBeforeAnyProxy,
    /// The step is gone from the document, or the migrator is stopping.
    Stopped,
}

/// Waits until every registered proxy has applied `revision`, reporting holders in
/// `progress` once the step's barrier timeout has passed.
pub async fn wait(
    service: &Service,
    step_id: u64,
    revision: Revision,
    progress: &Progress,
) -> Result<Outcome, DashboardError> {
    let started = Instant::now();
    let mut reported = false;
    loop {
        if progress.stopping() {
            return Ok(Outcome::Stopped);
        }
        let snap = service.snapshot().await?;
        let Some(step) = snap.migration_step(step_id) else {
            return Ok(Outcome::Stopped);
        };
        let behind = holders(&snap.proxies, revision);
        if behind.is_empty() {
            progress.set_holders(Vec::new());
            return Ok(Outcome::Passed);
        }
        if step.cancel && behind.len() == snap.proxies.len() {
            return Ok(Outcome::CancelledBeforeAnyProxy);
        }
        if started.elapsed() >= timeout(step) {
            if !reported {
                let names: Vec<&str> = behind.iter().map(|h| h.addr.as_str()).collect();
                tracing::warn!(step = step_id, revision, proxies = ?names, "proxies hold the migration: they have not applied its revision");
                reported = true;
            }
            progress.set_holders(behind);
        }
        tokio::time::sleep(POLL).await;
    }
}

fn timeout(step: &Step) -> Duration {
    Duration::from_millis(step.options.barrier_timeout_ms)
}
