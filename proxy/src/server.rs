//! Starting and stopping a proxy: the listener, the worker threads (each its own
//! event loop, backend connections and sessions), and a control thread for accept and admin.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::thread::JoinHandle;

use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};

use crate::clients::Endpoint;
use crate::command::CommandError;
use crate::config::Config;
use crate::coordinator::Coordinator;
use crate::error::ProxyError;
use crate::plugin::PluginChain;
use crate::resp::Protocol;
use crate::session::Session;
use crate::shared::Shared;
use crate::worker::Worker;

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
    let shared = Arc::new(Shared::new(config, plugins, workers));
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
                let _ = stream.write_all(&CommandError::MaxClients.reply()).await;
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
        let worker = Rc::new(Worker::new(self.index, self.shared));
        local.block_on(&rt, async move {
            // Connect to every master up front, so the first commands find connections ready.
            let table = worker.shared.table.load_full();
            for (_, master) in table.masters() {
                worker.conn(master, 0, Protocol::Resp2, 0);
            }
            tokio::task::spawn_local(worker.clone().report_drained());
            let shared = worker.shared.clone();
            let index = worker.index;
            tokio::task::spawn_local(
                worker
                    .activity
                    .clone()
                    .poll_while_busy(move |spell| shared.stats.worker(index).polled(spell)),
            );
            loop {
                tokio::select! {
                    stream = inbox.recv() => {
                        let Some(stream) = stream else { break };
                        match tokio::net::TcpStream::from_std(stream) {
                            Ok(s) => {
                                let endpoint = Endpoint {
                                    peer: s.peer_addr().ok(),
                                    local: s.local_addr().ok(),
                                    fd: std::os::fd::AsRawFd::as_raw_fd(&s),
                                };
                                let session = Session::new(worker.clone(), Box::new(s), endpoint);
                                tokio::task::spawn_local(session.run());
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
