//! The proxy's client sessions as CLIENT LIST, CLIENT INFO and CLIENT KILL see them, over
//! every worker: one entry per session, registered when it starts and removed when it ends.
//!
//! Off the hot path: the registry's lock is taken when a session starts or ends and by the
//! CLIENT commands; an entry's details (name, db, protocol, library) change only with the
//! commands that set them. Per read, a session stores when it read and its last command
//! (two relaxed stores, no locked instruction).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::command;

/// Where a client connection comes from and arrives: `None` for a stream that is not a
/// socket (in-process tests).
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    pub peer: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
    /// The socket's file descriptor, -1 if none.
    pub fd: i32,
}

impl Default for Endpoint {
    /// A stream that is not a socket.
    fn default() -> Endpoint {
        Endpoint {
            peer: None,
            local: None,
            fd: -1,
        }
    }
}

/// What CLIENT LIST shows of one session.
pub struct Client {
    pub id: u64,
    pub endpoint: Endpoint,
    created: Instant,
    /// Milliseconds from `created` to the session's last read.
    last_read_ms: AtomicU64,
    /// The table id of the last command read ([`NO_COMMAND`] before the first).
    last_command: AtomicU16,
    details: Mutex<Details>,
    /// Taken and fired by CLIENT KILL; the session holds the receiving end.
    kill: Mutex<Option<oneshot::Sender<()>>>,
}

const NO_COMMAND: u16 = u16::MAX;

/// What a client has set up, as CLIENT LIST shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Details {
    pub name: Option<Bytes>,
    pub db: u32,
    /// 2 or 3.
    pub resp: u8,
    pub lib_name: Option<Bytes>,
    pub lib_ver: Option<Bytes>,
    /// The user a plugin or AUTH set (`default` if none).
    pub user: Option<String>,
}

/// Every session of one proxy, by id (so in the order they connected).
#[derive(Default)]
pub struct Clients {
    sessions: Mutex<BTreeMap<u64, Arc<Client>>>,
}

impl Clients {
    /// Registers a new session: its entry, and what resolves when CLIENT KILL closes it.
    pub fn register(&self, id: u64, endpoint: Endpoint) -> (Arc<Client>, oneshot::Receiver<()>) {
        let (kill, killed) = oneshot::channel();
        let client = Arc::new(Client {
            id,
            endpoint,
            created: Instant::now(),
            last_read_ms: AtomicU64::new(0),
            last_command: AtomicU16::new(NO_COMMAND),
            details: Mutex::new(Details {
                resp: 2,
                ..Details::default()
            }),
            kill: Mutex::new(Some(kill)),
        });
        self.lock().insert(id, client.clone());
        (client, killed)
    }

    pub fn unregister(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Every session now, in id order.
    pub fn all(&self) -> Vec<Arc<Client>> {
        self.lock().values().cloned().collect()
    }

    pub fn get(&self, id: u64) -> Option<Arc<Client>> {
        self.lock().get(&id).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Client>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Client {
    /// Records a read that ended with command `cmd` (its table id, if known).
    #[inline]
    pub fn on_read(&self, now: Instant, cmd: Option<u16>) {
        let ms = now.saturating_duration_since(self.created).as_millis() as u64;
        self.last_read_ms.store(ms, Relaxed);
        if let Some(id) = cmd {
            self.last_command.store(id, Relaxed);
        }
    }

    /// Replaces what CLIENT LIST shows the client has set up.
    pub fn set_details(&self, details: Details) {
        *self.details.lock().unwrap_or_else(|e| e.into_inner()) = details;
    }

    pub fn details(&self) -> Details {
        self.details
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Asks the session to close (CLIENT KILL): it stops at its next wake-up.
    pub fn kill(&self) {
        let kill = self.kill.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(kill) = kill {
            let _ = kill.send(());
        }
    }

    /// The `addr` field: `ip:port`, or empty.
    pub fn addr(&self) -> String {
        self.endpoint
            .peer
            .map(|a| a.to_string())
            .unwrap_or_default()
    }

    pub fn laddr(&self) -> String {
        self.endpoint
            .local
            .map(|a| a.to_string())
            .unwrap_or_default()
    }

    /// The session's line of CLIENT LIST (without the newline), in Redis 7.2's fields and
    /// order; `cmd` overrides the last command (the CLIENT LIST being answered).
    pub fn line(&self, now: Instant, cmd: Option<&str>) -> String {
        let d = self.details();
        let text = |b: &Option<Bytes>| {
            b.as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default()
        };
        let age = now.saturating_duration_since(self.created).as_secs();
        let last_read = self.last_read_ms.load(Relaxed) / 1000;
        let last = match (cmd, self.last_command.load(Relaxed)) {
            (Some(c), _) => c.to_string(),
            (None, NO_COMMAND) => "NULL".to_string(),
            (None, id) if (id as usize) < command::count() => command::by_id(id).name.to_string(),
            (None, _) => "NULL".to_string(),
        };
        let mut out = String::with_capacity(320);
        let _ = write!(
            out,
            "id={} addr={} laddr={} fd={} name={} age={age} idle={} flags=N db={} sub=0 \
             psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 \
             obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={last} user={} redir=-1 resp={} \
             lib-name={} lib-ver={}",
            self.id,
            self.addr(),
            self.laddr(),
            self.endpoint.fd,
            text(&d.name),
            age.saturating_sub(last_read),
            d.db,
            d.user.as_deref().unwrap_or("default"),
            d.resp,
            text(&d.lib_name),
            text(&d.lib_ver),
        );
        out
    }
}
