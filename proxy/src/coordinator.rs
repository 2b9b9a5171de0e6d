//! Coordinator mode: the proxy takes its topology from the store instead of its config. It
//! registers itself under a lease, watches the product, publishes each new slot table with
//! `ArcSwap` (off the hot path) and writes back the revision it has applied.
//!
//! The lease rule: a proxy that cannot renew its lease for two thirds of the TTL refuses
//! commands until it is registered again with a fresh table, because the lease — and with it
//! the dashboard's view that this proxy follows the topology — is about to lapse. Routing on
//! a stale table while a migration moves keys would strand acknowledged writes.
//!
//! The same holds for a topology the proxy cannot read: a document that does not decode
//! stops it applying (it does not acknowledge that revision), it refuses commands naming the
//! document, and re-reads the whole topology with backoff until a complete revision decodes.
//!
//! A published table is acknowledged (`applied_revision`) once every worker has drained it:
//! no batch routed under an earlier table is still in flight (see [`crate::drain`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use tessera_topology::model::{Plugins, ProxyInfo, Topology};
use tessera_topology::{LeaseId, Store, StoreError, WatchEvent, keys, load};
use tokio::sync::{mpsc, watch};

use crate::barriers::Barriers;
use crate::config::CoordinatorConfig;
use crate::plugin::from_store::load_chain;
use crate::plugin::{PluginChain, PluginError};
use crate::router::SlotTable;
use crate::shared::{Passwords, Shared};

/// Bound on each store call made while starting (so an unreachable store fails the start)
/// and on each attempt to re-read a topology that did not decode.
const START_BOUND: Duration = Duration::from_secs(5);
/// First and longest wait between attempts to re-read a topology that did not decode.
const RELOAD_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));

/// Watch messages: each holds every change of one revision.
type Revisions = mpsc::Receiver<Vec<WatchEvent>>;

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
    refusals: Arc<Refusals>,
    /// The revision published and not yet acknowledged (workers still drain), and since when.
    unacknowledged: Option<(i64, Instant)>,
    /// Which migrating slots are open (see [`crate::router::Move::open`]).
    barriers: Barriers,
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
            .map_err(|e| match e {
                StoreError::BadDocument { .. } => {
                    err(format!("{e}; not serving on part of the topology"))
                }
                e => err(e.to_string()),
            })?;
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
            sessions: Some(0),
            errors: Some(0),
            plugin_error: None,
            topology_error: None,
            holding: None,
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
            unacknowledged: None,
            barriers: Barriers::default(),
            loaded,
            loaded_rx: Some(loaded_rx),
            refusals: Arc::new(Refusals::default()),
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
                self.refusals.clone(),
                self.store.endpoint(),
            ));
        }
        let mut last_ops = (Instant::now(), self.shared.stats.ops_total());
        let mut events = self.watch().await;
        let mut loaded = self.loaded_rx.take().expect("run is called once");
        let mut healthy = true;
        let mut drained = self.shared.drained.subscribe();
        if self.acknowledge() {
            self.report().await;
        }
        // While the topology does not decode: when to re-read it next, and the wait after that.
        let mut reload: Option<(tokio::time::Instant, Duration)> = None;
        loop {
            tokio::select! {
                Ok(()) = drained.changed() => {
                    if self.acknowledge() {
                        self.report().await;
                    }
                }
                Some((wanted, result)) = loaded.recv() => {
                    self.plugins_loaded(wanted, result).await;
                }
                event = recv(&mut events) => match event {
                    Some(revision) => {
                        let mut batch = vec![revision];
                        if let Some(rx) = events.as_mut() {
                            while let Ok(revision) = rx.try_recv() {
                                batch.push(revision);
                            }
                        }
                        if self.apply(batch).await.is_err() {
                            // Later changes are read with the whole topology.
                            events = None;
                            reload = Some(first_reload());
                        }
                    }
                    None => {
                        tracing::warn!("topology watch ended; re-reading the topology");
                        events = None;
                        healthy = false;
                        tick.reset_immediately();
                    }
                },
                _ = sleep_until(reload.map(|(at, _)| at)) => {
                    let delay = reload.map_or(RELOAD_BACKOFF.0, |(_, delay)| delay);
                    match self.reload().await {
                        Ok(rx) => {
                            reload = None;
                            events = rx;
                        }
                        Err(()) => {
                            let next = (delay * 2).min(RELOAD_BACKOFF.1);
                            reload = Some((tokio::time::Instant::now() + delay, next));
                        }
                    }
                }
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
                    self.note_draining(ttl / 3);
                    if !healthy || (events.is_none() && reload.is_none()) {
                        match tokio::time::timeout(ttl, self.recover()).await {
                            Ok(Ok(rx)) => {
                                // No watch: the topology did not decode; keep re-reading it.
                                reload = match rx {
                                    Some(_) => None,
                                    None => reload.or(Some(first_reload())),
                                };
                                events = rx;
                                healthy = true;
                                renewed.mark();
                                if self.refusals.update(&self.shared.refusal, Reason::Lease, None) {
                                    tracing::info!(revision = self.topology.revision, "registered again");
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
                        let alive = self.shared.stats.sessions_alive.load(std::sync::atomic::Ordering::Relaxed);
                        self.info.sessions = Some(alive.max(0) as u64);
                        self.info.errors = Some(self.shared.stats.errors_total());
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
    /// and watches again. `None` (registered, not watching) if the topology does not decode.
    async fn recover(&mut self) -> Result<Option<Revisions>, StoreError> {
        let readable = match load::load_topology(&*self.store, &self.config.product).await {
            Ok(topology) => {
                self.adopt(topology);
                true
            }
            Err(e @ StoreError::BadDocument { .. }) => {
                self.unreadable(&e);
                false
            }
            Err(e) => return Err(e),
        };
        if self.store.keep_alive(self.lease).await.is_err() {
            self.register().await?;
        } else {
            self.write_info().await?;
        }
        if !readable {
            return Ok(None);
        }
        let prefix = keys::product_prefix(&self.config.product);
        self.store
            .watch_revisions(&prefix, self.topology.revision)
            .await
            .map(Some)
    }

    /// One attempt to re-read a topology that did not decode: on success it is published and
    /// acknowledged, the refusal lifted, and the watch resumed (`None` if that failed: the
    /// lease tick retries it).
    async fn reload(&mut self) -> Result<Option<Revisions>, ()> {
        match bounded(load::load_topology(&*self.store, &self.config.product)).await {
            Ok(topology) => {
                self.adopt(topology);
                tracing::info!(
                    revision = self.topology.revision,
                    "read a complete topology again"
                );
                self.report().await;
                Ok(self.watch().await)
            }
            Err(e @ StoreError::BadDocument { .. }) => {
                if self.unreadable(&e) {
                    self.report().await;
                }
                Err(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot re-read the topology yet");
                Err(())
            }
        }
    }

    /// Takes a whole topology read from the store: publishes it and lifts the refusal that a
    /// document that did not decode had set.
    fn adopt(&mut self, topology: Topology) {
        self.topology = topology;
        self.publish();
        self.sync_plugins();
        self.info.topology_error = None;
        self.refusals
            .update(&self.shared.refusal, Reason::Topology, None);
    }

    /// Stops serving on a topology with a document that does not decode: refuses commands
    /// naming it, and says so in the registration. Whether the reason is new.
    fn unreadable(&mut self, error: &StoreError) -> bool {
        let why = error.to_string();
        if self.info.topology_error.as_deref() == Some(why.as_str()) {
            return false;
        }
        tracing::error!(error = %why, applied = self.info.applied_revision, "cannot apply the topology; refusing commands and re-reading it");
        self.refusals.update(
            &self.shared.refusal,
            Reason::Topology,
            Some(format!(
                "proxy cannot apply the topology: {why}; refusing commands until it reads a complete topology"
            )),
        );
        self.info.topology_error = Some(why);
        true
    }

    /// Writes the registration, bounded; a failure is retried by the next lease tick.
    async fn report(&self) {
        let ttl = Duration::from_secs(self.config.lease_ttl_secs);
        if !matches!(
            tokio::time::timeout(ttl / 3, self.write_info()).await,
            Ok(Ok(()))
        ) {
            tracing::debug!("cannot update the proxy's registration");
        }
    }

    async fn watch(&mut self) -> Option<Revisions> {
        let prefix = keys::product_prefix(&self.config.product);
        match self
            .store
            .watch_revisions(&prefix, self.topology.revision)
            .await
        {
            Ok(rx) => Some(rx),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the topology");
                None
            }
        }
    }

    /// Applies whole revisions in order. At the first one with a document that does not
    /// decode it stops: what came before is published and acknowledged, that revision and
    /// the rest are not, and the proxy refuses commands until a re-read succeeds (`Err`).
    async fn apply(&mut self, revisions: Vec<Vec<WatchEvent>>) -> Result<(), ()> {
        let before = self.topology.revision;
        let mut changed = false;
        let mut result = Ok(());
        for events in &revisions {
            let mut next = self.topology.clone();
            let applied = load::apply_revision(&mut next, &self.config.product, events);
            match applied {
                Ok(routing) => {
                    self.topology = next;
                    changed |= routing;
                }
                Err(e) => {
                    self.unreadable(&e);
                    result = Err(());
                    break;
                }
            }
        }
        self.sync_plugins();
        // Another proxy's acknowledgement may open a migrating slot.
        changed |= self.barriers.closed(&self.topology) != self.barriers.published;
        if changed {
            self.publish();
            tracing::info!(
                from = before,
                to = self.topology.revision,
                "applied a new topology"
            );
        }
        if (changed || result.is_err())
            && let Err(e) = self.write_info().await
        {
            tracing::warn!(error = %e, "cannot report the applied revision");
        }
        result
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
        self.report().await;
        // A newer chain may have been written while this one loaded.
        self.sync_plugins();
    }

    /// Builds the slot table of the current topology and swaps it in.
    fn publish(&mut self) {
        let t = &self.topology;
        self.barriers.published = self.barriers.closed(t);
        let table = SlotTable::build_with_barriers(
            t.revision as u64,
            &t.groups,
            &t.slots.slots,
            &self.barriers.published,
            &self.shared.registry,
        );
        self.shared.table.store(Arc::new(table));
        let passwords = Passwords {
            session: t.product.session_password.clone(),
            backend: t.product.backend_password.clone(),
        };
        if **self.shared.passwords.load() != passwords {
            self.shared.passwords.store(Arc::new(passwords));
        }
        self.shared.published.send_replace(t.revision as u64);
        self.unacknowledged = Some((t.revision, Instant::now()));
        self.acknowledge();
    }

    /// Acknowledges the published revision if every worker has drained it; whether the
    /// acknowledged revision changed.
    fn acknowledge(&mut self) -> bool {
        let Some((revision, _)) = self.unacknowledged else {
            return false;
        };
        let drained = self.shared.drained.borrow().iter().copied().min();
        if drained.is_none_or(|d| d < revision as u64) {
            return false;
        }
        self.unacknowledged = None;
        self.info.holding = None;
        let changed = self.info.applied_revision != revision;
        self.info.applied_revision = revision;
        changed
    }

    /// Says in the registration why the published revision is not acknowledged yet, once
    /// its workers have drained for longer than `after`.
    fn note_draining(&mut self, after: Duration) {
        self.info.holding = match self.unacknowledged {
            Some((revision, since)) if since.elapsed() >= after => Some(format!(
                "commands routed under revision {} or earlier are still in flight; revision \
                 {revision} is acknowledged once they are answered",
                self.info.applied_revision
            )),
            _ => None,
        };
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

/// Why the proxy refuses non-local commands. Each rule sets and lifts only its own reason;
/// sessions see every reason set, joined, in `Shared::refusal`.
#[derive(Default)]
struct Refusals {
    reasons: std::sync::Mutex<[Option<String>; 2]>,
}

/// A rule that makes the proxy refuse commands.
#[derive(Debug, Clone, Copy)]
enum Reason {
    /// The lease was not renewed in time.
    Lease = 0,
    /// A topology document does not decode.
    Topology = 1,
}

impl Refusals {
    /// Sets (`Some`) or lifts (`None`) one reason and publishes the refusal to `out`;
    /// whether that reason was set before.
    fn update(&self, out: &ArcSwapOption<String>, reason: Reason, why: Option<String>) -> bool {
        let mut reasons = self.reasons.lock().unwrap_or_else(|e| e.into_inner());
        let was = std::mem::replace(&mut reasons[reason as usize], why).is_some();
        let set: Vec<&str> = reasons.iter().flatten().map(String::as_str).collect();
        out.store((!set.is_empty()).then(|| Arc::new(set.join("; and "))));
        was
    }

    fn is_set(&self, reason: Reason) -> bool {
        let reasons = self.reasons.lock().unwrap_or_else(|e| e.into_inner());
        reasons[reason as usize].is_some()
    }
}

/// The lease rule, on its own task so that no slow store call can delay it: once the lease
/// has gone `fence` without a renewal, every command is refused until the proxy is
/// registered again (the main loop lifts this reason; a topology that does not decode keeps
/// its own).
async fn enforce_lease_rule(
    clock: Arc<LeaseClock>,
    fence: Duration,
    shared: Arc<Shared>,
    refusals: Arc<Refusals>,
    endpoint: String,
) {
    loop {
        let since = clock.elapsed();
        if since < fence {
            tokio::time::sleep(fence - since).await;
            continue;
        }
        if !refusals.is_set(Reason::Lease) {
            let why = format!(
                "proxy lost its registration with the coordinator at {endpoint} (lease not renewed for {:.1} s); \
                 refusing commands so as not to route on a stale slot table",
                since.as_secs_f64()
            );
            tracing::error!("{why}");
            refusals.update(&shared.refusal, Reason::Lease, Some(why));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn recv(events: &mut Option<Revisions>) -> Option<Vec<WatchEvent>> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The first re-read of a topology that did not decode: now, then after the first backoff.
fn first_reload() -> (tokio::time::Instant, Duration) {
    (tokio::time::Instant::now(), RELOAD_BACKOFF.0)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_reason_is_lifted_on_its_own() {
        let out = ArcSwapOption::empty();
        let refusals = Refusals::default();
        let current = || out.load().as_deref().cloned();
        assert!(!refusals.update(&out, Reason::Topology, Some("bad slots".into())));
        assert_eq!(current().as_deref(), Some("bad slots"));
        assert!(!refusals.update(&out, Reason::Lease, Some("lease lost".into())));
        assert_eq!(current().as_deref(), Some("lease lost; and bad slots"));
        // Registered again: the topology still does not decode, so still refusing.
        assert!(refusals.update(&out, Reason::Lease, None));
        assert_eq!(current().as_deref(), Some("bad slots"));
        assert!(refusals.is_set(Reason::Topology) && !refusals.is_set(Reason::Lease));
        assert!(refusals.update(&out, Reason::Topology, None));
        assert_eq!(current(), None);
        assert!(!refusals.update(&out, Reason::Topology, None));
    }
}
