//! One worker thread's state: its sessions share its backend connections (one pool per
//! backend, database and protocol, created on first use) and its instances of the plugin chain.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use bytes::BytesMut;

use crate::backend::{BackendConn, Connect, TcpConnect};
use crate::busy_poll::Activity;
use crate::drain::Drain;
use crate::plugin::WorkerChain;
use crate::resp::Protocol;
use crate::router::BackendId;
use crate::shared::Shared;

/// A backend, a database and the protocol of the replies.
type PoolKey = (BackendId, u32, Protocol);

/// One worker thread's state: its backend connections, created on first use.
pub struct Worker {
    pub index: usize,
    pub shared: Arc<Shared>,
    /// This worker's instances of the plugin chain.
    pub chain: RefCell<WorkerChain>,
    pools: RefCell<HashMap<PoolKey, Rc<[BackendConn]>>>,
    /// One connection per backend and database for the MIGRATEs of commands on migrating
    /// slots, so that a key's transfer does not queue other commands behind it.
    movers: RefCell<HashMap<(BackendId, u32), BackendConn>>,
    /// The batches this worker's sessions have in flight, by table revision.
    pub drain: Rc<Drain>,
    /// How its backend connections reach Redis.
    connector: Rc<dyn Connect>,
    /// What its sessions read into and write from (see [`Scratch`]).
    pub scratch: Scratch,
    /// How close together its sockets' reads come.
    pub activity: Rc<Activity>,
}

/// Buffers a worker's sessions share, so that a session holds none while it idles: a read
/// lands in `read` and the session keeps a view of what it read (its own copy only of a
/// partial request); replies are gathered in `write` and written at once (the session keeps
/// its own copy only of what the socket did not take).
#[derive(Default)]
pub struct Scratch {
    pub read: RefCell<BytesMut>,
    pub write: RefCell<BytesMut>,
}

impl Worker {
    /// A worker whose backend connections connect over TCP.
    pub fn new(index: usize, shared: Arc<Shared>) -> Worker {
        Worker::with_connector(index, shared, Rc::new(TcpConnect))
    }

    /// A worker whose backend connections connect through `connector`.
    pub fn with_connector(index: usize, shared: Arc<Shared>, connector: Rc<dyn Connect>) -> Worker {
        let limits = shared.config.proxy.limits();
        let chain = RefCell::new(WorkerChain::new(&shared.plugins.load(), limits));
        let activity = Rc::new(Activity::new(shared.config.proxy.busy_poll()));
        Worker {
            index,
            chain,
            shared,
            pools: RefCell::new(HashMap::new()),
            movers: RefCell::new(HashMap::new()),
            drain: Rc::new(Drain::default()),
            connector,
            scratch: Scratch::default(),
            activity,
        }
    }

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
                .map(|_| {
                    BackendConn::spawn(
                        info.clone(),
                        db,
                        protocol,
                        cfg,
                        passwords.clone(),
                        self.connector.clone(),
                        self.activity.clone(),
                    )
                })
                .collect()
        });
        pool[(session % pool.len() as u64) as usize].clone()
    }

    /// The connection that carries the MIGRATEs of this worker's sessions from `backend`'s
    /// database `db`.
    pub fn mover(&self, backend: BackendId, db: u32) -> BackendConn {
        self.movers
            .borrow_mut()
            .entry((backend, db))
            .or_insert_with(|| {
                BackendConn::spawn(
                    self.shared.registry.get(backend),
                    db,
                    Protocol::Resp2,
                    &self.shared.config.backend,
                    self.shared.passwords.clone(),
                    self.connector.clone(),
                    self.activity.clone(),
                )
            })
            .clone()
    }

    /// Reports, for each table the proxy publishes, once this worker has no batch routed
    /// under an earlier table in flight (see [`crate::drain`]). Runs for the worker's life.
    pub async fn report_drained(self: Rc<Worker>) {
        let mut published = self.shared.published.subscribe();
        loop {
            let revision = *published.borrow_and_update();
            self.drain.wait(revision).await;
            self.shared
                .drained
                .send_modify(|d| d[self.index] = d[self.index].max(revision));
            if published.changed().await.is_err() {
                return;
            }
        }
    }
}
