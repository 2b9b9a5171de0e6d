//! What a session sends after one read: one batch per backend connection, gathered while the
//! read's commands are dispatched, and the connections it uses for its database and protocol.
//!
//! A session always uses the same connection to a backend (for one database and protocol),
//! so its commands to one backend reach Redis in the order it read them.

use std::rc::Rc;

use bytes::{Bytes, BytesMut};

use super::queue::{Dest, ReplyQueue};
use crate::backend::{BackendConn, Batch, ReplyBatch};
use crate::drain::Drain;
use crate::local_channel::Sender;
use crate::resp::Protocol;
use crate::router::BackendId;
use crate::worker::Worker;

/// Commands for one backend gathered during one read.
struct Outgoing {
    backend: BackendId,
    conn: BackendConn,
    data: BytesMut,
    dests: Vec<Dest>,
}

pub(super) struct Outbox {
    out: Vec<Outgoing>,
    /// Backend connections for the selected database and protocol, by backend id.
    conns: Vec<Option<BackendConn>>,
    /// The backends sent a write command on those connections (for WAIT).
    written: Vec<BackendId>,
    /// Where the backends send this session's replies.
    replies: Sender<ReplyBatch>,
    /// The revision of the table this read's commands are routed by.
    pub(super) revision: u64,
    drain: Rc<Drain>,
}

/// Which of a worker's connections a session uses: its id, database and protocol.
#[derive(Clone, Copy)]
pub(super) struct Route {
    pub(super) session: u64,
    pub(super) db: u32,
    pub(super) protocol: Protocol,
    /// Whether the command is a write (WAIT waits for it).
    pub(super) write: bool,
}

impl Outbox {
    pub(super) fn new(replies: Sender<ReplyBatch>, drain: Rc<Drain>) -> Outbox {
        Outbox {
            out: Vec::new(),
            conns: Vec::new(),
            written: Vec::new(),
            replies,
            revision: 0,
            drain,
        }
    }

    /// The buffer of what goes to `backend` after this read, for a command whose reply goes
    /// to `dest`; `Err(reply)` if the backend is down: `reply` is the error `dest` gets.
    pub(super) fn outgoing(
        &mut self,
        worker: &Worker,
        route: Route,
        backend: BackendId,
        dest: Dest,
    ) -> Result<&mut BytesMut, Bytes> {
        let conn = self.conn(worker, route, backend);
        if let Some(down) = conn.unavailable() {
            return Err(down);
        }
        let i = match self.out.iter().position(|o| o.backend == backend) {
            Some(i) => i,
            None => {
                self.out.push(Outgoing {
                    backend,
                    conn,
                    data: BytesMut::with_capacity(1024),
                    dests: Vec::with_capacity(16),
                });
                self.out.len() - 1
            }
        };
        if route.write && !self.written.contains(&backend) {
            self.written.push(backend);
        }
        let o = &mut self.out[i];
        o.dests.push(dest);
        Ok(&mut o.data)
    }

    fn conn(&mut self, worker: &Worker, route: Route, backend: BackendId) -> BackendConn {
        let i = backend as usize;
        if self.conns.len() <= i {
            self.conns.resize(i + 1, None);
        }
        if let Some(c) = &self.conns[i] {
            return c.clone();
        }
        let c = worker.conn(backend, route.db, route.protocol, route.session);
        self.conns[i] = Some(c.clone());
        c
    }

    /// Where a backend sends replies to this session.
    pub(super) fn reply_to(&self) -> Sender<ReplyBatch> {
        self.replies.clone()
    }

    /// Sends the batches gathered, each recorded in `queue` under its tag and counted in
    /// the worker's drain under the table revision it was routed by.
    pub(super) fn flush(&mut self, queue: &mut ReplyQueue) {
        for o in self.out.drain(..) {
            let count = o.dests.len() as u32;
            let tag = queue.sent(o.dests);
            o.conn.send(Batch {
                data: o.data.freeze(),
                count,
                tag,
                reply_to: self.replies.clone(),
                routed: Some(self.drain.sent(self.revision)),
            });
        }
    }

    /// Sends what was gathered and forgets the connections in use: the next command picks
    /// the ones of the session's database and protocol then.
    pub(super) fn leave_connections(&mut self, queue: &mut ReplyQueue) {
        self.flush(queue);
        self.conns.clear();
        self.written.clear();
    }

    /// The backends sent a write on the connections in use.
    pub(super) fn written(&self) -> &[BackendId] {
        &self.written
    }
}
