//! Coordinator mode: the proxy takes its topology from the store instead of its config. It
//! registers itself under a lease, watches the product, publishes each new slot table with
//! `ArcSwap` (off the hot path) and writes back the revision it has applied.
//!
//! The lease rule: a proxy that cannot renew its lease for two thirds of the TTL refuses
//! commands until it is registered again with a fresh table, because the lease — and with it
//! the dashboard's view that this proxy follows the topology — is about to lapse. Routing on
//! a stale table while a migration moves keys would strand acknowledged writes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tessera_topology::model::{Plugins, ProxyInfo, SlotState, Topology};
use tessera_topology::{LeaseId, Store, StoreError, WatchEvent, keys, load};
use tokio::sync::{mpsc, watch};

use crate::config::CoordinatorConfig;
use crate::plugin::from_store::load_chain;
use crate::plugin::{PluginChain, PluginError};
use crate::router::SlotTable;
use crate::server::{Passwords, Shared};

/// Bound on each store call made while starting, so an unreachable store fails the start.
const START_BOUND: Duration = Duration::from_secs(5);

/// A proxy's link to the topology store.
pub struct Coordinator {
    store: Arc<dyn Store>,
    config: CoordinatorConfig,
    shared: Arc<Shared>,
    info: ProxyInfo,
    topology: Topology,
    lease: LeaseId,
    /// The plugin chain last applied from the store (initially none: the config's chain).
    plugins_applied: Plugins,
    /// A chain being loaded on its own task (compiling takes a while; renewals go on).
    plugins_loading: bool,
    loaded: mpsc::Sender<(Plugins, Result<PluginChain, PluginError>)>,
    loaded_rx: Option<mpsc::Receiver<(Plugins, Result<PluginChain, PluginError>)>>,
}

/// Why coordinator mode could not start.
#[derive(Debug, thiserror::Error)]
#[error("coordinator {url}: {message}")]
pub struct CoordinatorError {
    pub url: String,
    pub message: String,
}

impl Coordinator {
    /// Connects, loads and publishes the topology, and registers the proxy. Every step is
    /// bounded: an unreachable store is an error, not a hang.
    pub async fn start(
        config: CoordinatorConfig,
        shared: Arc<Shared>,
        addr: SocketAddr,
        admin_addr: Option<SocketAddr>,
    ) -> Result<Coordinator, CoordinatorError> {
        let url = config.url.clone();
        let err = |message: String| CoordinatorError {
            url: url.clone(),
            message,
        };
        let store = bounded(tessera_topology::connect(&config.url))
            .await
            .map_err(|e| err(e.to_string()))?;
        let topology = bounded(load::load_topology(&*store, &config.product))
            .await
            .map_err(|e| err(e.to_string()))?;
        let info = ProxyInfo {
            token: token(),
            addr: addr.to_string(),
            admin_addr: admin_addr.map(|a| a.to_string()),
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            start_time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            applied_revision: 0,
            ops_per_sec: 0.0,
            plugin_error: None,
        };
        let (loaded, loaded_rx) = mpsc::channel(1);
        let mut c = Coordinator {
            store,
            config,
            shared,
            info,
            topology,
            lease: 0,
            plugins_applied: Plugins::default(),
            plugins_loading: false,
            loaded,
            loaded_rx: Some(loaded_rx),
        };
        c.publish();
        // The store's plugin chain is in force before the first client is served: an auth
        // plugin must never be missing, even briefly.
        if c.topology.plugins != c.plugins_applied {
            let wanted = c.topology.plugins.clone();
            let version = c.shared.plugins.load().version + 1;
            let chain = load_chain(&*c.store, &c.config.product, &wanted.chain, version)
                .await
                .map_err(|e| err(format!("the product's plugin chain does not load: {e}")))?;
            c.shared.plugins.store(Arc::new(chain));
            c.plugins_applied = wanted;
        }
        c.register().await.map_err(|e| err(e.to_string()))?;
        tracing::info!(
            coordinator = %c.store.endpoint(),
            product = %c.config.product,
            token = %c.info.token,
            revision = c.topology.revision,
            "registered with the coordinator"
        );
        Ok(c)
    }

    /// Follows the topology and keeps the registration alive until `shutdown`.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let ttl = Duration::from_secs(self.config.lease_ttl_secs);
        let mut tick = tokio::time::interval(ttl / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let renewed = Arc::new(LeaseClock::new());
        if self.config.lease_rule {
            let fence = ttl * 2 / 3;
            tokio::spawn(enforce_lease_rule(
                renewed.clone(),
                fence,
                self.shared.clone(),
                self.store.endpoint(),
            ));
        }
        let mut last_ops = (Instant::now(), self.shared.stats.ops_total());
        let mut events = self.watch().await;
        let mut loaded = self.loaded_rx.take().expect("run is called once");
        let mut healthy = true;
        loop {
            tokio::select! {
                Some((wanted, result)) = loaded.recv() => {
                    self.plugins_loaded(wanted, result).await;
                }
                event = recv(&mut events) => match event {
                    Some(e) => {
                        let mut batch = vec![e];
                        if let Some(rx) = events.as_mut() {
                            while let Ok(e) = rx.try_recv() {
                                batch.push(e);
                            }
                        }
                        self.apply(batch).await;
                    }
                    None => {
                        tracing::warn!("topology watch ended; re-reading the topology");
                        events = None;
                        healthy = false;
                        tick.reset_immediately();
                    }
                },
                _ = tick.tick() => {
                    match tokio::time::timeout(ttl / 3, self.store.keep_alive(self.lease)).await {
                        Ok(Ok(())) => {
                            if healthy {
                                renewed.mark();
                            }
                        }
                        Ok(Err(StoreError::LeaseLost(_))) => healthy = false,
                        Ok(Err(e)) => tracing::warn!(error = %e, "cannot renew the proxy's lease"),
                        Err(_) => tracing::warn!("renewing the proxy's lease timed out"),
                    }
                    if renewed.elapsed() >= ttl / 3 * 2 {
                        healthy = false;
                    }
                    if !healthy || events.is_none() {
                        match tokio::time::timeout(ttl, self.recover()).await {
                            Ok(Ok(rx)) => {
                                events = Some(rx);
                                healthy = true;
                                renewed.mark();
                                if self.shared.refusal.swap(None).is_some() {
                                    tracing::info!(revision = self.topology.revision, "registered again; serving");
                                }
                            }
                            Ok(Err(e)) => tracing::warn!(error = %e, "cannot reach the coordinator yet"),
                            Err(_) => tracing::warn!("the coordinator did not answer in time"),
                        }
                    } else {
                        let (t, n) = last_ops;
                        let now_ops = self.shared.stats.ops_total();
                        let secs = t.elapsed().as_secs_f64().max(0.001);
                        self.info.ops_per_sec = (now_ops.saturating_sub(n)) as f64 / secs;
                        last_ops = (Instant::now(), now_ops);
                        if !matches!(tokio::time::timeout(ttl / 3, self.write_info()).await, Ok(Ok(()))) {
                            tracing::debug!("cannot update the proxy's registration");
                        }
                    }
                }
                _ = shutdown.changed() => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), self.store.revoke_lease(self.lease)).await;
                    return;
                }
            }
        }
    }

    /// Re-registers (a new lease if the old one is gone), re-reads the topology, publishes it
    /// and watches again.
    async fn recover(&mut self) -> Result<mpsc::Receiver<WatchEvent>, StoreError> {
        let topology = load::load_topology(&*self.store, &self.config.product).await?;
        self.topology = topology;
        self.publish();
        self.sync_plugins();
        if self.store.keep_alive(self.lease).await.is_err() {
            self.register().await?;
        } else {
            self.write_info().await?;
        }
        let prefix = keys::product_prefix(&self.config.product);
        self.store
            .watch_prefix(&prefix, self.topology.revision)
            .await
    }

    async fn watch(&mut self) -> Option<mpsc::Receiver<WatchEvent>> {
        let prefix = keys::product_prefix(&self.config.product);
        match self
            .store
            .watch_prefix(&prefix, self.topology.revision)
            .await
        {
            Ok(rx) => Some(rx),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the topology");
                None
            }
        }
    }

    async fn apply(&mut self, events: Vec<WatchEvent>) {
        let before = self.topology.revision;
        let mut changed = false;
        for e in &events {
            let key = match e {
                WatchEvent::Put(kv) => &kv.key,
                WatchEvent::Delete { key, .. } => key,
            };
            // Registrations of proxies (this one included) do not change routing.
            let routing = !key.starts_with(&keys::proxies_prefix(&self.config.product));
            if let Err(err) = load::apply_event(&mut self.topology, &self.config.product, e) {
                tracing::error!(error = %err, "bad topology document; keeping the current table");
                continue;
            }
            changed |= routing;
        }
        self.sync_plugins();
        if changed {
            self.publish();
            tracing::info!(
                from = before,
                to = self.topology.revision,
                "applied a new topology"
            );
            if let Err(e) = self.write_info().await {
                tracing::warn!(error = %e, "cannot report the applied revision");
            }
        }
    }

    /// Starts loading the store's plugin chain if it changed and no load is under way. The
    /// result comes back to the run loop ([`Coordinator::plugins_loaded`]).
    fn sync_plugins(&mut self) {
        if self.plugins_loading || self.topology.plugins == self.plugins_applied {
            return;
        }
        self.plugins_loading = true;
        let wanted = self.topology.plugins.clone();
        let version = self.shared.plugins.load().version + 1;
        let (store, product, done) = (
            self.store.clone(),
            self.config.product.clone(),
            self.loaded.clone(),
        );
        tokio::spawn(async move {
            let result = load_chain(&*store, &product, &wanted.chain, version).await;
            let _ = done.send((wanted, result)).await;
        });
    }

    /// Swaps in a loaded chain, or reports why it did not load (the current one stays).
    async fn plugins_loaded(&mut self, wanted: Plugins, result: Result<PluginChain, PluginError>) {
        self.plugins_loading = false;
        match result {
            Ok(chain) => {
                let names: Vec<&str> = chain
                    .plugins
                    .iter()
                    .map(|p| p.config.name.as_str())
                    .collect();
                tracing::info!(plugins = ?names, "plugin chain swapped in");
                self.shared.plugins.store(Arc::new(chain));
                self.info.plugin_error = None;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot load the product's plugin chain; keeping the current one");
                self.info.plugin_error = Some(e.to_string());
            }
        }
        self.plugins_applied = wanted;
        let ttl = Duration::from_secs(self.config.lease_ttl_secs);
        if !matches!(
            tokio::time::timeout(ttl / 3, self.write_info()).await,
            Ok(Ok(()))
        ) {
            tracing::debug!("cannot update the proxy's registration");
        }
        // A newer chain may have been written while this one loaded.
        self.sync_plugins();
    }

    /// Builds the slot table of the current topology and swaps it in.
    fn publish(&mut self) {
        let t = &self.topology;
        let groups = t.groups.iter().map(|g| (g.id, g.servers.clone())).collect();
        let owners: Vec<Option<u32>> = t
            .slots
            .slots
            .iter()
            .map(|s| match s {
                SlotState::Owned { group } => Some(*group),
                SlotState::Offline => None,
            })
            .collect();
        let table = SlotTable::build(t.revision as u64, groups, &owners, &self.shared.registry);
        self.shared.table.store(Arc::new(table));
        let passwords = Passwords {
            session: t.product.session_password.clone(),
            backend: t.product.backend_password.clone(),
        };
        if **self.shared.passwords.load() != passwords {
            self.shared.passwords.store(Arc::new(passwords));
        }
        self.info.applied_revision = t.revision;
    }

    async fn register(&mut self) -> Result<(), StoreError> {
        let ttl = self.config.lease_ttl_secs as i64;
        self.lease = bounded(self.store.grant_lease(ttl)).await?;
        self.write_info().await
    }

    async fn write_info(&self) -> Result<(), StoreError> {
        let key = keys::proxy(&self.config.product, &self.info.token);
        let value = serde_json::to_vec(&self.info).map_err(|e| StoreError::Other(e.to_string()))?;
        self.store
            .put(&key, value, Some(self.lease))
            .await
            .map(|_| ())
    }
}

/// When the lease was last renewed, readable from the lease-rule task.
struct LeaseClock {
    base: Instant,
    millis: std::sync::atomic::AtomicU64,
}

impl LeaseClock {
    fn new() -> LeaseClock {
        LeaseClock {
            base: Instant::now(),
            millis: std::sync::atomic::AtomicU64::new(0),
        }
    }
    fn mark(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.millis.store(ms, std::sync::atomic::Ordering::Relaxed);
    }
    fn elapsed(&self) -> Duration {
        let at = Duration::from_millis(self.millis.load(std::sync::atomic::Ordering::Relaxed));
        self.base.elapsed().saturating_sub(at)
    }
}

/// The lease rule, on its own task so that no slow store call can delay it: once the lease
/// has gone `fence` without a renewal, every command is refused until the proxy is
/// registered again with a fresh table (the main loop lifts the refusal).
async fn enforce_lease_rule(
    clock: Arc<LeaseClock>,
    fence: Duration,
    shared: Arc<Shared>,
    endpoint: String,
) {
    loop {
        let since = clock.elapsed();
        if since < fence {
            tokio::time::sleep(fence - since).await;
            continue;
        }
        if shared.refusal.load().is_none() {
            let why = format!(
                "ERR proxy lost its registration with the coordinator at {endpoint} (lease not renewed for {:.1} s); \
                 refusing commands so as not to route on a stale slot table",
                since.as_secs_f64()
            );
            tracing::error!("{why}");
            shared.refusal.store(Some(Arc::new(why)));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn recv(events: &mut Option<mpsc::Receiver<WatchEvent>>) -> Option<WatchEvent> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn bounded<T>(f: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    tokio::time::timeout(START_BOUND, f)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Other(format!(
                "no answer within {} s",
                START_BOUND.as_secs()
            )))
        })
}

/// A token unique to this proxy process.
fn token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:016x}", h.finish())
}
