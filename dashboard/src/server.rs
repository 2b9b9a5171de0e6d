//! Starting and stopping a dashboard: open the store, take the lock, initialize the product,
//! serve the API; on shutdown, stop serving and release the lock.

use std::net::SocketAddr;
use std::sync::Arc;

use tessera_topology::Store;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::api::{AppState, routes};
use crate::error::DashboardError;
use crate::lock::Lock;
use crate::service::Service;

/// `tessera dashboard`: the single writer of one product's topology, and its REST API.
#[derive(clap::Args, Debug, Clone)]
pub struct DashboardArgs {
    /// The topology store: `etcd://HOST:PORT[,HOST:PORT...]` or `file://DIR`.
    #[arg(long)]
    pub coordinator: String,
    /// The product (cluster) name; its documents live under `/tessera/<product>/`.
    #[arg(long, default_value = "tessera")]
    pub product: String,
    /// Where the REST API listens. Requests must name this address in `Host` (or
    /// `localhost` with its port, when it is a loopback or wildcard address).
    #[arg(long, default_value = "127.0.0.1:18080")]
    pub listen: SocketAddr,
    /// The token mutating calls must send (`Authorization: Bearer <token>`). Without one, a
    /// random token is generated and printed once at start.
    #[arg(long, env = "TESSERA_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Seconds the lock outlives this dashboard if it dies without releasing it.
    #[arg(long, default_value_t = 10)]
    pub lock_ttl: u64,
}

/// A running dashboard. [`DashboardHandle::shutdown`] stops it and releases the lock;
/// dropping it stops serving without releasing the lock (as a crash would: the lock then
/// expires with its lease).
pub struct DashboardHandle {
    addr: SocketAddr,
    admin_token: String,
    token_generated: bool,
    state: Arc<AppState>,
    lock: Option<Lock>,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
    /// The slot migrator's task, stopped with the server.
    migrator: Option<JoinHandle<()>>,
}

impl DashboardHandle {
    /// The address the API listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin token mutating calls need.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// Whether the token was generated (none was given): the caller should show it.
    pub fn token_generated(&self) -> bool {
        self.token_generated
    }

    /// The lease the lock is held under (for diagnostics and tests).
    pub fn lock_lease(&self) -> Option<tessera_topology::LeaseId> {
        self.lock.as_ref().map(|l| l.lease)
    }

    /// The product this dashboard writes.
    pub fn product(&self) -> &str {
        self.state.service.product()
    }

    /// Resolves with the reason if the lock is lost (the dashboard then refuses writes).
    pub async fn lock_lost(&self) -> String {
        match &self.lock {
            Some(lock) => lock.lost().await,
            None => std::future::pending().await,
        }
    }

    /// Stops serving (in-flight requests finish) and releases the lock.
    pub async fn shutdown(mut self) -> Result<(), DashboardError> {
        let _ = self.stop.send(true);
        if let Some(migrator) = self.migrator.take() {
            migrator.abort();
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        if let Some(lock) = self.lock.take() {
            lock.release().await?;
        }
        info!(product = self.product(), "dashboard stopped");
        Ok(())
    }
}

impl Drop for DashboardHandle {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
        if let Some(migrator) = self.migrator.take() {
            migrator.abort();
        }
        if let Some(lock) = self.lock.take() {
            lock.abandon();
        }
    }
}

/// Opens the store `args.coordinator` names and starts a dashboard on it.
pub async fn start(args: DashboardArgs) -> Result<DashboardHandle, DashboardError> {
    let store = tessera_topology::connect(&args.coordinator).await?;
    start_with_store(args, store).await
}

/// Starts a dashboard on an open store (`args.coordinator` is ignored): binds the API, takes
/// the lock (or fails with who holds it), creates the product if it is new, then serves.
pub async fn start_with_store(
    args: DashboardArgs,
    store: Arc<dyn Store>,
) -> Result<DashboardHandle, DashboardError> {
    validate_product(&args.product)?;
    let (admin_token, token_generated) = match args.admin_token.filter(|t| !t.trim().is_empty()) {
        Some(t) => (t.trim().to_string(), false),
        None => (crate::random_hex(16), true),
    };
    let state = Arc::new(AppState {
        service: Service::new(store.clone(), &args.product),
        admin_token: admin_token.clone(),
        listen: std::sync::OnceLock::new(),
        migrator: crate::migrate::Migrator::default(),
    });
    let (stop, mut stopped) = watch::channel(false);
    let (addr, serve) = warp::serve(routes(state.clone()))
        .try_bind_with_graceful_shutdown(args.listen, async move {
            let _ = stopped.wait_for(|s| *s).await;
        })
        .map_err(|e| DashboardError::Listen {
            addr: args.listen.to_string(),
            message: e.to_string(),
        })?;
    let _ = state.listen.set(addr);
    // Nothing is served before the lock is held: `serve` only runs once spawned.
    let lock = Lock::acquire(
        store.clone(),
        &args.product,
        &addr.to_string(),
        args.lock_ttl,
    )
    .await?;
    state.service.set_fence(lock.fence());
    if let Err(e) = state.service.ensure_product().await {
        let _ = lock.release().await;
        return Err(e);
    }
    let server = tokio::spawn(serve);
    let migrator = crate::migrate::spawn(state.clone());
    info!(%addr, product = %args.product, store = %store.endpoint(), "dashboard serving");
    Ok(DashboardHandle {
        addr,
        admin_token,
        token_generated,
        state,
        lock: Some(lock),
        stop,
        server: Some(server),
        migrator: Some(migrator),
    })
}

/// Product names go into store keys: letters, digits, `-`, `_` and `.`.
fn validate_product(name: &str) -> Result<(), DashboardError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(DashboardError::BadRequest(format!(
            "bad product name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.'"
        )))
    }
}

/// `tessera dashboard`: runs until SIGINT or SIGTERM, then releases the lock. Fails if the
/// lock is held by another dashboard, or is lost while running.
pub fn run_dashboard(args: DashboardArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let handle = start(args).await?;
        if handle.token_generated() {
            println!(
                "admin token (generated; set TESSERA_ADMIN_TOKEN to choose one): {}",
                handle.admin_token()
            );
        }
        println!(
            "dashboard for product {:?} on http://{}",
            handle.product(),
            handle.addr()
        );
        tokio::select! {
            signal = termination() => {
                info!("{signal}: shutting down");
                handle.shutdown().await?;
                Ok(())
            }
            reason = handle.lock_lost() => {
                warn!("exiting: the lock is lost");
                let _ = handle.shutdown().await;
                Err(anyhow::Error::new(DashboardError::LockLost(reason)))
            }
        }
    })
}

/// Waits for SIGINT or SIGTERM; says which.
async fn termination() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            return tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            };
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    "SIGINT"
}
