//! One client connection: read everything the client sent, dispatch each command (locally,
//! to one backend, or split over several), and write the replies back in request order.
//!
//! Ordering: a session sends all its commands for one backend over the same connection, in
//! the order it read them, so commands on one key run on Redis in the client's order. A reply
//! that arrives early waits only for the replies before it.

mod fanout;
mod local;
mod plugins;
mod split;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::backend::{BackendConn, Batch, ReplyBatch};
use crate::command::{self, Class, Lookup, Spec};
use crate::resp::{Protocol, Request, RequestDecoder, encode};
use crate::router::{BackendId, SlotTable};
use crate::server::Worker;
use crate::slot;

use split::Merge;

/// Where one backend reply goes: a whole command's slot, or one part of a split command.
#[derive(Debug, Clone, Copy)]
enum Dest {
    Whole(u64),
    Part(u64, u32),
}

enum State {
    /// Sent to a backend; the reply is not here yet.
    Waiting,
    Ready(Bytes),
    /// A split command waiting for some of its parts.
    Merging(Box<Merge>),
    /// A fan-out command waiting for some of its groups.
    Gathering(Box<fanout::Gather>),
}

/// A command in flight, in request order.
struct Entry {
    state: State,
    cmd: Option<u16>,
    start: Instant,
    /// The command as sent, when a plugin wants to see its reply.
    reply_hook: Option<Box<plugins::ReplyHook>>,
}

/// Commands for one backend gathered during one read.
struct Outgoing {
    backend: BackendId,
    conn: BackendConn,
    data: BytesMut,
    dests: Vec<Dest>,
}

pub struct Session {
    id: u64,
    worker: Rc<Worker>,
    stream: TcpStream,
    peer: Option<SocketAddr>,
    decoder: RequestDecoder,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// Commands in request order; `queue[0]` has sequence number `head`.
    queue: VecDeque<Entry>,
    head: u64,
    replies_tx: mpsc::UnboundedSender<ReplyBatch>,
    replies_rx: mpsc::UnboundedReceiver<ReplyBatch>,
    /// Destinations of the replies of each batch in flight, by tag.
    batches: Vec<Option<Vec<Dest>>>,
    free_tags: Vec<u32>,
    out: Vec<Outgoing>,
    /// Backend connections for the selected database, by backend id.
    conns: Vec<Option<BackendConn>>,
    keys: Vec<usize>,
    db: u32,
    /// The protocol of this client's replies (HELLO), and so of its backend connections.
    protocol: Protocol,
    authenticated: bool,
    name: Option<Bytes>,
    /// What the plugin host keeps for this connection (attributes, remembered verdicts,
    /// the batch), and whether the worker's chain has any plugin.
    plugins: crate::plugin::ConnCtx,
    /// Close once the reply with this sequence number is written (QUIT, protocol error).
    close_after: Option<u64>,
    /// A SELECT (or HELLO) switched databases (or protocols) while commands were in flight
    /// on the old connections: later commands wait (unread in `rbuf`) until those are
    /// answered, so they cannot overtake them on the new connections.
    held: bool,
}

impl Session {
    pub fn new(worker: Rc<Worker>, stream: TcpStream) -> Session {
        let shared = &worker.shared;
        let limits = shared.config.proxy.limits();
        shared.stats.sessions_total.fetch_add(1, Relaxed);
        shared.stats.sessions_alive.fetch_add(1, Relaxed);
        let (replies_tx, replies_rx) = mpsc::unbounded_channel();
        Session {
            id: shared.next_session_id(),
            authenticated: shared.passwords.load().session.is_empty(),
            peer: stream.peer_addr().ok(),
            worker,
            stream,
            decoder: RequestDecoder::new(limits),
            rbuf: BytesMut::with_capacity(16 * 1024),
            wbuf: BytesMut::with_capacity(16 * 1024),
            queue: VecDeque::new(),
            head: 0,
            replies_tx,
            replies_rx,
            batches: Vec::new(),
            free_tags: Vec::new(),
            out: Vec::new(),
            conns: Vec::new(),
            keys: Vec::new(),
            db: 0,
            protocol: Protocol::Resp2,
            name: None,
            plugins: Default::default(),
            close_after: None,
            held: false,
        }
    }

    /// Serves the client until it leaves, QUITs, sends garbage or idles out.
    pub async fn run(mut self) {
        let max_pipeline = self.worker.shared.config.proxy.max_pipeline;
        let idle = Duration::from_secs(self.worker.shared.config.proxy.idle_timeout_secs);
        let mut last_read = Instant::now();
        let idle_timer = tokio::time::sleep(if idle.is_zero() {
            Duration::MAX / 4
        } else {
            idle
        });
        tokio::pin!(idle_timer);
        let mut eof = false;
        if let Err(reply) = self.plugins_on_connect() {
            let _ = self.stream.write_all(&reply).await;
            let _ = self.stream.shutdown().await;
            return;
        }
        loop {
            self.collect_ready();
            if !self.wbuf.is_empty() {
                if self.stream.write_all(&self.wbuf).await.is_err() {
                    break;
                }
                self.wbuf.clear();
            }
            if self.close_after.is_some_and(|seq| seq < self.head) || (eof && self.queue.is_empty())
            {
                break;
            }
            let can_read =
                !eof && !self.held && self.close_after.is_none() && self.queue.len() < max_pipeline;
            tokio::select! {
                biased;
                Some(batch) = self.replies_rx.recv() => {
                    self.on_replies(batch);
                    while let Ok(b) = self.replies_rx.try_recv() {
                        self.on_replies(b);
                    }
                    if self.held && !self.sent_unanswered() {
                        self.held = false;
                        self.on_input(Instant::now());
                    }
                }
                read = read_more(&mut self.stream, &mut self.rbuf), if can_read => {
                    match read {
                        Ok(0) | Err(_) => eof = true,
                        Ok(_) => {
                            last_read = Instant::now();
                            self.on_input(last_read);
                        }
                    }
                }
                _ = &mut idle_timer, if !idle.is_zero() => {
                    if self.queue.is_empty() && last_read.elapsed() >= idle {
                        tracing::debug!(session = self.id, "closing idle connection");
                        break;
                    }
                    idle_timer.as_mut().reset((last_read + idle).max(Instant::now() + Duration::from_millis(10)).into());
                }
            }
        }
        let _ = self.stream.shutdown().await;
    }

    /// Decodes every whole request buffered and dispatches it, then sends the batches.
    fn on_input(&mut self, now: Instant) {
        let table = self.worker.shared.table.load();
        let refusal = self.worker.shared.refusal.load();
        self.plugins.active = self.worker.refresh_chain();
        loop {
            let refusal = refusal.as_deref().map(String::as_str);
            match self.decoder.decode(&mut self.rbuf) {
                Ok(Some(req)) if self.plugins.active => {
                    self.batch_request(req, &table, refusal, now)
                }
                Ok(Some(req)) => self.dispatch(req, &table, refusal, now),
                Ok(None) => {
                    self.run_plugin_batch(&table, refusal, now);
                    if self.rbuf.len() > self.worker.shared.config.proxy.max_query_buffer {
                        self.protocol_error("query buffer limit reached", now);
                    }
                    break;
                }
                Err(e) => {
                    self.run_plugin_batch(&table, refusal, now);
                    self.protocol_error(&e.to_string(), now);
                    break;
                }
            }
            if self.close_after.is_some() || self.held {
                break;
            }
        }
        self.flush_batches();
        if self.plugins.active {
            self.worker.chain.borrow_mut().flush_stats();
        }
    }

    /// Answers `-ERR Protocol error: ...` after the replies before it, then closes.
    fn protocol_error(&mut self, what: &str, now: Instant) {
        let seq = self.push(None, now);
        self.error(seq, &format!("ERR Protocol error: {what}"));
        self.close_after = Some(seq);
        self.rbuf.clear();
        tracing::debug!(session = self.id, peer = ?self.peer, error = what, "protocol error");
    }

    fn push(&mut self, cmd: Option<u16>, start: Instant) -> u64 {
        self.queue.push_back(Entry {
            state: State::Waiting,
            cmd,
            start,
            reply_hook: None,
        });
        self.head + self.queue.len() as u64 - 1
    }

    fn entry(&mut self, seq: u64) -> &mut Entry {
        &mut self.queue[(seq - self.head) as usize]
    }

    fn complete(&mut self, seq: u64, reply: Bytes) {
        self.entry(seq).state = State::Ready(reply);
    }

    fn error(&mut self, seq: u64, msg: &str) {
        let mut out = BytesMut::with_capacity(msg.len() + 3);
        encode::error(&mut out, msg);
        self.complete(seq, out.freeze());
    }

    /// Routes a request (after the plugins, if any).
    fn dispatch(&mut self, req: Request, table: &SlotTable, refusal: Option<&str>, now: Instant) {
        self.dispatch_found(None, req, table, refusal, now);
    }

    /// [`Session::dispatch`] of a request whose command `found` was looked up already.
    fn dispatch_found(
        &mut self,
        found: Option<&'static Spec>,
        req: Request,
        table: &SlotTable,
        refusal: Option<&str>,
        now: Instant,
    ) {
        let lookup = match found {
            Some(spec) => Lookup::Found(spec),
            None => command::lookup(&req.args),
        };
        let spec = match lookup {
            Lookup::Found(spec) => spec,
            // Redis reports unknown commands and wrong arity before it asks for AUTH.
            Lookup::Unknown => {
                let seq = self.push(None, now);
                return self.error(seq, &command::unknown_command_error(&req.args));
            }
            Lookup::UnknownSubcommand(container) => {
                let seq = self.push(Some(container.id), now);
                return self.error(
                    seq,
                    &command::unknown_subcommand_error(container, &req.args),
                );
            }
        };
        let seq = self.push(Some(spec.id), now);
        if !spec.arity_ok(req.args.len()) {
            return self.error(seq, &command::arity_error(spec));
        }
        let class = spec.class();
        if !self.authenticated && !matches!(class, Class::Local(l) if local::allowed_before_auth(l))
        {
            return self.error(seq, local::NOAUTH);
        }
        if let Some(why) = refusal
            && !matches!(class, Class::Local(_))
        {
            return self.error(seq, why);
        }
        if let Err(why) = command::check_options(spec, &req.args) {
            return self.error(seq, &why);
        }
        if self.plugins.active
            && matches!(
                class,
                Class::Keyed | Class::Split(_) | Class::FanOut(_) | Class::AnyBackend
            )
        {
            self.keep_for_reply_hook(seq, spec, &req);
        }
        match class {
            Class::Keyed => self.dispatch_keyed(seq, spec, req, table),
            Class::Split(kind) => self.dispatch_split(seq, kind, req, table),
            Class::FanOut(kind) => self.dispatch_fanout(seq, kind, req, table),
            Class::Local(l) => self.local(seq, l, &req.args),
            Class::AnyBackend => match table.any_backend() {
                Some(b) => self.forward(b, &req, Dest::Whole(seq)),
                None => self.error(seq, NO_GROUP),
            },
            Class::Unsupported => self.error(
                seq,
                &format!(
                    "ERR command '{}' is not supported by the proxy",
                    display_name(spec)
                ),
            ),
            Class::Later => self.error(seq, &command::not_supported_yet_error(spec, None)),
        }
    }

    fn dispatch_keyed(&mut self, seq: u64, spec: &Spec, req: Request, table: &SlotTable) {
        let mut keys = std::mem::take(&mut self.keys);
        keys.clear();
        command::key_positions(spec, &req.args, &mut keys);
        let backend = match keys.split_first() {
            None => table.any_backend().ok_or_else(|| NO_GROUP.to_string()),
            Some((&first, rest)) => {
                let s = slot::slot(&req.args[first]);
                if rest.iter().any(|&k| slot::slot(&req.args[k]) != s) {
                    Err("CROSSSLOT Keys in request don't hash to the same slot".to_string())
                } else {
                    table.route(s).ok_or_else(|| offline(s))
                }
            }
        };
        self.keys = keys;
        match backend {
            Ok(b) => self.forward(b, &req, Dest::Whole(seq)),
            Err(msg) => self.error(seq, &msg),
        }
    }

    fn dispatch_split(&mut self, seq: u64, kind: command::Split, req: Request, table: &SlotTable) {
        match split::plan(kind, &req.args, table) {
            Err(msg) => self.error(seq, &msg),
            Ok(split::Plan::Whole(b)) => self.forward(b, &req, Dest::Whole(seq)),
            Ok(split::Plan::Parts(parts, merge)) => {
                self.entry(seq).state = State::Merging(Box::new(merge));
                for (i, part) in parts.iter().enumerate() {
                    if let Some(out) = self.outgoing(part.backend, Dest::Part(seq, i as u32)) {
                        encode::array_header(out, part.args.len());
                        for &a in &part.args {
                            encode::bulk(out, &req.args[a as usize]);
                        }
                    }
                }
            }
        }
    }

    fn dispatch_fanout(
        &mut self,
        seq: u64,
        kind: command::FanOut,
        req: Request,
        table: &SlotTable,
    ) {
        let config = &self.worker.shared.config.proxy;
        match fanout::plan(kind, &req.args, table, config) {
            Err(msg) => self.error(seq, &msg),
            Ok(fanout::Plan::Every(groups, gather)) => {
                self.entry(seq).state = State::Gathering(Box::new(gather));
                for (i, &(_, backend)) in groups.iter().enumerate() {
                    self.forward(backend, &req, Dest::Part(seq, i as u32));
                }
            }
            Ok(fanout::Plan::Scan {
                backend,
                group_cursor,
                gather,
            }) => {
                self.entry(seq).state = State::Gathering(Box::new(gather));
                if let Some(out) = self.outgoing(backend, Dest::Part(seq, 0)) {
                    encode::array_header(out, req.args.len());
                    encode::bulk(out, &req.args[0]);
                    encode::bulk(out, group_cursor.to_string().as_bytes());
                    for a in &req.args[2..] {
                        encode::bulk(out, a);
                    }
                }
            }
        }
    }

    /// Adds a command to this read's batch for `backend`, or answers it with the backend's
    /// error at once if the backend is known to be down.
    fn forward(&mut self, backend: BackendId, req: &Request, dest: Dest) {
        if let Some(out) = self.outgoing(backend, dest) {
            req.write_resp(out);
        }
    }

    /// The buffer of what goes to `backend` after this read, for a command whose reply goes
    /// to `dest`; `None` if the backend is unavailable (`dest` is then answered so).
    fn outgoing(&mut self, backend: BackendId, dest: Dest) -> Option<&mut BytesMut> {
        let conn = self.conn(backend);
        if let Some(down) = conn.unavailable() {
            self.fill(dest, down);
            return None;
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
        let o = &mut self.out[i];
        o.dests.push(dest);
        Some(&mut o.data)
    }

    fn conn(&mut self, backend: BackendId) -> BackendConn {
        let i = backend as usize;
        if self.conns.len() <= i {
            self.conns.resize(i + 1, None);
        }
        if let Some(c) = &self.conns[i] {
            return c.clone();
        }
        let c = self.worker.conn(backend, self.db, self.protocol, self.id);
        self.conns[i] = Some(c.clone());
        c
    }

    fn flush_batches(&mut self) {
        for o in std::mem::take(&mut self.out) {
            let tag = match self.free_tags.pop() {
                Some(t) => {
                    self.batches[t as usize] = Some(o.dests);
                    t
                }
                None => {
                    self.batches.push(Some(o.dests));
                    self.batches.len() as u32 - 1
                }
            };
            let count = self.batches[tag as usize].as_ref().map_or(0, |d| d.len()) as u32;
            o.conn.send(Batch {
                data: o.data.freeze(),
                count,
                tag,
                reply_to: self.replies_tx.clone(),
            });
        }
    }

    fn on_replies(&mut self, batch: ReplyBatch) {
        let Some(dests) = self
            .batches
            .get_mut(batch.tag as usize)
            .and_then(Option::take)
        else {
            return;
        };
        self.free_tags.push(batch.tag);
        for (dest, reply) in dests.into_iter().zip(batch.replies) {
            self.fill(dest, reply);
        }
    }

    fn fill(&mut self, dest: Dest, reply: Bytes) {
        match dest {
            Dest::Whole(seq) => self.complete(seq, reply),
            Dest::Part(seq, part) => {
                let e = self.entry(seq);
                let done = match &mut e.state {
                    State::Merging(m) => m.add(part as usize, reply),
                    State::Gathering(g) => g.add(part as usize, reply),
                    _ => None,
                };
                if let Some(done) = done {
                    e.state = State::Ready(done);
                }
            }
        }
    }

    /// Moves the replies that are ready, in order, into the write buffer.
    fn collect_ready(&mut self) {
        let mut now = None;
        while let Some(front) = self.queue.front_mut() {
            if !matches!(front.state, State::Ready(_)) {
                break;
            }
            if let Some(hook) = front.reply_hook.take()
                && let State::Ready(reply) = std::mem::replace(&mut front.state, State::Waiting)
            {
                let reply = self.plugins_on_reply(&hook, reply);
                self.queue.front_mut().expect("front exists").state = State::Ready(reply);
            }
            let front = self.queue.front().expect("front exists");
            let State::Ready(reply) = &front.state else {
                break;
            };
            let now = *now.get_or_insert_with(Instant::now);
            let error = reply.first() == Some(&b'-');
            self.worker.shared.stats.worker(self.worker.index).record(
                front.cmd,
                now.saturating_duration_since(front.start),
                error,
            );
            self.wbuf.extend_from_slice(reply);
            self.queue.pop_front();
            self.head += 1;
        }
        if self.plugins.active {
            self.worker.chain.borrow_mut().flush_stats();
        }
    }

    /// Switches to another database: the commands gathered so far go out on the old
    /// database's connections, later ones on the new database's once every command sent
    /// on the old ones is answered (`held`): `MOVE k 1`, `SELECT 1`, `GET k` must see the
    /// moved key.
    fn switch_db(&mut self, db: u32) {
        self.db = db;
        self.leave_connections();
    }

    /// Switches the protocol of the replies (HELLO): like [`Session::switch_db`], later
    /// commands go to other connections (ones that speak `protocol`), once the commands
    /// sent on the old ones are answered (in the old protocol, as Redis would answer them).
    fn switch_protocol(&mut self, protocol: Protocol) {
        self.protocol = protocol;
        self.leave_connections();
    }

    /// Sends what was gathered for the connections in use, forgets them (the next command
    /// picks the ones of the current database and protocol) and holds later commands while
    /// anything sent on them is unanswered.
    fn leave_connections(&mut self) {
        self.flush_batches();
        self.conns.clear();
        self.held = self.sent_unanswered();
    }

    /// Whether a batch sent to a backend has not been answered yet.
    fn sent_unanswered(&self) -> bool {
        self.batches.iter().any(Option::is_some)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let shared = &self.worker.shared;
        shared.stats.sessions_alive.fetch_sub(1, Relaxed);
        shared.clients.fetch_sub(1, Relaxed);
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(16 * 1024);
    }
    stream.read_buf(buf).await
}

/// The reply to a command that needs a group when the slot table has none.
const NO_GROUP: &str = "ERR no group is configured";

fn offline(slot: usize) -> String {
    format!("ERR slot {slot} is not served by any group")
}

/// `object|encoding` → `object encoding`, as users type it.
fn display_name(spec: &Spec) -> String {
    spec.name.replace('|', " ")
}
