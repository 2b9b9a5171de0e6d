//! Starting and stopping a proxy: the listener, one worker thread per core (each its own
//! event loop, backend connections and sessions), and a control thread for accept and admin.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::thread::JoinHandle;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};

use crate::backend::BackendConn;
use crate::config::Config;
use crate::coordinator::Coordinator;
use crate::error::ProxyError;
use crate::plugin::{PluginChain, WorkerChain};
use crate::resp::Protocol;
use crate::router::{BackendId, BackendRegistry, SlotTable};
use crate::session::Session;
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
    /// The client and backend passwords (from the config, or the product in the store).
    pub passwords: Arc<ArcSwap<Passwords>>,
    /// Why the proxy refuses commands right now, if it does (e.g. it lost its lease).
    pub refusal: ArcSwapOption<String>,
    /// The plugin chain; swapped whole, each worker instantiates its own copy.
    pub plugins: ArcSwap<PluginChain>,
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
    pub fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Relaxed) + 1
    }
}

/// A backend, a database and the protocol of the replies.
type PoolKey = (BackendId, u32, Protocol);

/// One worker thread's state: its backend connections, created on first use.
pub struct Worker {
    pub index: usize,
    pub shared: Arc<Shared>,
    /// This worker's instances of the plugin chain.
    pub chain: RefCell<WorkerChain>,
    pools: RefCell<HashMap<PoolKey, Rc<[BackendConn]>>>,
}

impl Worker {
    /// Picks up a new plugin chain if one was published; whether any plugin is active.
    pub fn refresh_chain(&self) -> bool {
        let current = self.shared.plugins.load();
        let mut chain = self.chain.borrow_mut();
        if chain.version != current.version {
            *chain = WorkerChain::new(&current, self.shared.config.proxy.limits());
        }
        !chain.is_empty()
    }

    /// The connection a session uses for `backend`, `db` and `protocol`: one of the worker's
    /// pool, always the same for one session, so its commands to one backend keep their order.
    pub fn conn(
        &self,
        backend: BackendId,
        db: u32,
        protocol: Protocol,
        session: u64,
    ) -> BackendConn {
        let mut pools = self.pools.borrow_mut();
        let pool = pools.entry((backend, db, protocol)).or_insert_with(|| {
            let info = self.shared.registry.get(backend);
            let cfg = &self.shared.config.backend;
            let passwords = &self.shared.passwords;
            (0..cfg.connections)
                .map(|_| BackendConn::spawn(info.clone(), db, protocol, cfg, passwords.clone()))
                .collect()
        });
        pool[(session % pool.len() as u64) as usize].clone()
    }
}

/// A running proxy.
pub struct ProxyHandle {
    pub shared: Arc<Shared>,
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
}

impl ProxyHandle {
    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the admin HTTP API listens, if it does.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Stops accepting, closes every session and backend connection, and waits for the
    /// threads to end.
    pub fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// Blocks until the proxy stops (it only stops through [`ProxyHandle::shutdown`]).
    pub fn wait(mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Validates `config`, binds its ports and starts serving. Errors (a port in use, a bad
/// config) are returned before anything runs.
pub fn start(config: Config) -> Result<ProxyHandle, ProxyError> {
    config.validate()?;
    let listen = config.proxy.listen;
    let std_listener = std::net::TcpListener::bind(listen)
        .and_then(|l| l.set_nonblocking(true).map(|_| l))
        .map_err(|source| ProxyError::Listen {
            addr: listen,
            source,
        })?;
    let addr = std_listener
        .local_addr()
        .map_err(|source| ProxyError::Listen {
            addr: listen,
            source,
        })?;

    let workers = config.worker_count();
    let plugins = PluginChain::load(&config.plugins, 1)?;
    let registry = BackendRegistry::default();
    let table = SlotTable::from_config(&config, &registry);
    let shared = Arc::new(Shared {
        table: ArcSwap::from_pointee(table),
        registry,
        stats: Stats::new(workers),
        clients: AtomicUsize::new(0),
        passwords: Arc::new(ArcSwap::from_pointee(Passwords {
            session: config.proxy.password.clone(),
            backend: config.backend.password.clone(),
        })),
        refusal: ArcSwapOption::empty(),
        plugins: ArcSwap::from_pointee(plugins),
        next_session: AtomicU64::new(0),
        config,
    });
    let (shutdown, shutdown_rx) = watch::channel(false);

    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| ProxyError::Runtime {
            what: "control thread",
            source,
        })?;
    let (listener, admin) = control.block_on(async {
        let listener = tokio::net::TcpListener::from_std(std_listener).map_err(|source| {
            ProxyError::Listen {
                addr: listen,
                source,
            }
        })?;
        let admin = match shared.config.proxy.admin_listen {
            Some(a) => Some(crate::admin::bind(shared.clone(), a, shutdown_rx.clone())?),
            None => None,
        };
        Ok::<_, ProxyError>((listener, admin))
    })?;
    let admin_addr = admin.as_ref().map(|(a, _)| *a);
    let coordinator = match shared.config.coordinator.clone() {
        Some(c) => {
            Some(control.block_on(Coordinator::start(c, shared.clone(), addr, admin_addr))?)
        }
        None => None,
    };

    let mut threads = Vec::new();
    let mut inboxes = Vec::new();
    for index in 0..workers {
        let (tx, rx) = mpsc::unbounded_channel::<std::net::TcpStream>();
        inboxes.push(tx);
        let worker = WorkerSeed {
            index,
            shared: shared.clone(),
        };
        let shutdown = shutdown_rx.clone();
        let t = std::thread::Builder::new()
            .name(format!("tessera-worker-{index}"))
            .spawn(move || worker.run(rx, shutdown))
            .map_err(|source| ProxyError::Runtime {
                what: "worker thread",
                source,
            })?;
        threads.push(t);
    }

    let control_shared = shared.clone();
    let mut control_shutdown = shutdown_rx.clone();
    let coordinator_shutdown = shutdown_rx;
    let t = std::thread::Builder::new()
        .name("tessera-control".into())
        .spawn(move || {
            control.block_on(async move {
                if let Some((_, server)) = admin {
                    tokio::spawn(server);
                }
                let coordinator = coordinator.map(|c| tokio::spawn(c.run(coordinator_shutdown)));
                tokio::select! {
                    _ = accept_loop(listener, inboxes, control_shared) => {}
                    _ = control_shutdown.changed() => {}
                }
                if let Some(c) = coordinator {
                    // Let it revoke its lease, so the registration disappears at once.
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), c).await;
                }
            })
        })
        .map_err(|source| ProxyError::Runtime {
            what: "control thread",
            source,
        })?;
    threads.push(t);
    tracing::info!(%addr, ?admin_addr, workers, "proxy listening");
    Ok(ProxyHandle {
        shared,
        addr,
        admin_addr,
        shutdown,
        threads,
    })
}

/// Accepts clients and deals them round-robin to the workers; refuses those beyond
/// `max_clients` with Redis's error.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    inboxes: Vec<mpsc::UnboundedSender<std::net::TcpStream>>,
    shared: Arc<Shared>,
) {
    let mut next = 0;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: wait a little instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if shared.clients.fetch_add(1, Relaxed) >= shared.config.proxy.max_clients {
            shared.clients.fetch_sub(1, Relaxed);
            shared.stats.clients_refused.fetch_add(1, Relaxed);
            tracing::debug!(%peer, "refused: max clients reached");
            tokio::spawn(async move {
                let mut stream = stream;
                let _ = stream
                    .write_all(b"-ERR max number of clients reached\r\n")
                    .await;
            });
            continue;
        }
        let _ = stream.set_nodelay(true);
        let std_stream = match stream.into_std() {
            Ok(s) => s,
            Err(_) => {
                shared.clients.fetch_sub(1, Relaxed);
                continue;
            }
        };
        if inboxes[next].send(std_stream).is_err() {
            shared.clients.fetch_sub(1, Relaxed);
        }
        next = (next + 1) % inboxes.len();
    }
}

struct WorkerSeed {
    index: usize,
    shared: Arc<Shared>,
}

impl WorkerSeed {
    fn run(
        self,
        mut inbox: mpsc::UnboundedReceiver<std::net::TcpStream>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, worker = self.index, "cannot start worker runtime");
                return;
            }
        };
        let local = tokio::task::LocalSet::new();
        let limits = self.shared.config.proxy.limits();
        let chain = RefCell::new(WorkerChain::new(&self.shared.plugins.load(), limits));
        let worker = Rc::new(Worker {
            index: self.index,
            chain,
            shared: self.shared,
            pools: RefCell::new(HashMap::new()),
        });
        local.block_on(&rt, async move {
            // Connect to every master up front, so the first commands find connections ready.
            let table = worker.shared.table.load_full();
            for (_, master) in table.masters() {
                worker.conn(master, 0, Protocol::Resp2, 0);
            }
            loop {
                tokio::select! {
                    stream = inbox.recv() => {
                        let Some(stream) = stream else { break };
                        match tokio::net::TcpStream::from_std(stream) {
                            Ok(s) => {
                                tokio::task::spawn_local(Session::new(worker.clone(), s).run());
                            }
                            Err(e) => {
                                worker.shared.clients.fetch_sub(1, Relaxed);
                                tracing::warn!(error = %e, "cannot register client socket");
                            }
                        }
                    }
                    _ = shutdown.changed() => break,
                }
            }
        });
    }
}
