//! What every thread of one proxy shares: the config, the slot table, the passwords, the
//! plugin chain, the counters, the registry of client sessions, and why the proxy refuses commands if it does.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::watch;

use crate::clients::Clients;
use crate::config::Config;
use crate::plugin::PluginChain;
use crate::router::{BackendRegistry, SlotTable};
use crate::stats::Stats;

/// What every thread of one proxy shares.
pub struct Shared {
    pub config: Config,
    /// The routing table; swapped whole, read without locks.
    pub table: ArcSwap<SlotTable>,
    pub registry: BackendRegistry,
    pub stats: Stats,
    /// Client connections open now (checked against `max_clients`).
    pub clients: AtomicUsize,
    /// Every client session, for CLIENT LIST and CLIENT KILL.
    pub sessions: Clients,
    /// The client and backend passwords (from the config, or the product in the store).
    pub passwords: Arc<ArcSwap<Passwords>>,
    /// Why the proxy refuses commands right now, if it does (e.g. it lost its lease): the
    /// text of the `CommandError::Refused` every non-local command gets.
    pub refusal: ArcSwapOption<String>,
    /// The plugin chain; swapped whole, each worker instantiates its own copy.
    pub plugins: ArcSwap<PluginChain>,
    /// The revision of the table last published in `table` (by the coordinator).
    pub published: watch::Sender<u64>,
    /// For each worker, the latest published revision it has drained: no batch routed
    /// under an earlier table is in flight on it. The coordinator acknowledges a revision
    /// once every worker has drained it.
    pub drained: watch::Sender<Vec<u64>>,
    next_session: AtomicU64,
}

/// The passwords the proxy checks and sends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Passwords {
    /// What clients must send with AUTH ("" = no authentication).
    pub session: String,
    /// What the proxy sends with AUTH to Redis ("" = nothing).
    pub backend: String,
}

impl Shared {
    /// The state of a proxy serving `config` with `plugins`, routing by the config's slots.
    pub fn new(config: Config, plugins: PluginChain, workers: usize) -> Shared {
        let registry = BackendRegistry::default();
        let table = SlotTable::from_config(&config, &registry);
        Shared {
            table: ArcSwap::from_pointee(table),
            registry,
            stats: Stats::new(workers),
            clients: AtomicUsize::new(0),
            sessions: Clients::default(),
            passwords: Arc::new(ArcSwap::from_pointee(Passwords {
                session: config.proxy.password.clone(),
                backend: config.backend.password.clone(),
            })),
            refusal: ArcSwapOption::empty(),
            plugins: ArcSwap::from_pointee(plugins),
            published: watch::Sender::new(0),
            drained: watch::Sender::new(vec![0; workers]),
            next_session: AtomicU64::new(0),
            config,
        }
    }

    pub fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Relaxed) + 1
    }
}
