//! One client connection: read everything the client sent, dispatch each command (locally,
//! to one backend, or split over several), and write the replies back in request order.
//!
//! Ordering: a session sends all its commands for one backend over the same connection, in
//! the order it read them, so commands on one key run on Redis in the client's order. A reply
//! that arrives early waits only for the replies before it.
//!
//! In parts: `queue` keeps the commands in request order and the batches in flight, `outbox`
//! the batches of one read and the backend connections in use, `state` what the client set
//! up; `local`, `hello`, `client`, `split` and `fanout` answer or spread the commands that are not one
//! backend's (`client` the CLIENT subcommands about every session, `info` the proxy's part of
//! INFO), and `plugins` runs the plugin phases.

mod client;
mod fanout;
mod hello;
mod info;
mod local;
mod migrating;
mod outbox;
mod plugins;
mod queue;
mod split;
mod state;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Poll, ready};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::backend::ReplyBatch;
use crate::clients::{Client, Endpoint};
use crate::command::{self, Class, CommandError, Lookup, Spec};
use crate::io::{BoxStream, write_now};
use crate::local_channel;
use crate::resp::{Protocol, Request, RequestDecoder, encode};
use crate::router::{BackendId, SlotTable};
use crate::slot;
use crate::worker::Worker;

use outbox::{Outbox, Route};
use queue::{Dest, ReplyQueue, State};
use state::ConnectionState;

/// A command the plugin chain looked up already: its table entry and the key positions of
/// its arguments.
#[derive(Clone, Copy)]
struct Known<'k> {
    spec: &'static Spec,
    keys: &'k [usize],
}

/// One client connection, in parts: the client's socket and buffers here, the commands in
/// request order ([`queue`]), the batches of this read ([`outbox`]) and what the client has
/// set up ([`state`]).
pub struct Session {
    id: u64,
    worker: Rc<Worker>,
    stream: BoxStream,
    peer: Option<SocketAddr>,
    /// This session in the proxy's registry of sessions (CLIENT LIST, CLIENT KILL).
    registered: Arc<Client>,
    /// Resolves when CLIENT KILL closes this session (from any worker).
    killed: oneshot::Receiver<()>,
    decoder: RequestDecoder,
    /// What was read and not yet decoded: a view of the worker's read scratch after a read,
    /// the session's own copy of a partial request, or nothing.
    rbuf: BytesMut,
    /// Replies the socket has not taken yet (nothing, mostly: see [`Session::write_replies`]).
    wbuf: BytesMut,
    queue: ReplyQueue,
    outbox: Outbox,
    replies: local_channel::Receiver<ReplyBatch>,
    client: ConnectionState,
    keys: Vec<usize>,
    /// What the plugin host keeps for this connection (attributes, remembered verdicts,
    /// the batch), and whether the worker's chain has any plugin.
    plugins: crate::plugin::ConnCtx,
    /// Whether the command being dispatched is a write (for WAIT).
    writing: bool,
    /// A command waiting for its keys to move out of a migrating slot, and those behind it.
    migrating: migrating::Migrating,
    /// Whether commands of the client wait for replies, and, since its last were answered,
    /// the token of its being expected to send again (`Activity::answered`).
    waits: bool,
    answered: Option<u64>,
}

impl Session {
    /// A session for a client connected over `stream` (from `endpoint.peer`, for a TCP
    /// client).
    pub fn new(worker: Rc<Worker>, stream: BoxStream, endpoint: Endpoint) -> Session {
        let shared = &worker.shared;
        let limits = shared.config.proxy.limits();
        shared.stats.sessions_total.fetch_add(1, Relaxed);
        shared.stats.sessions_alive.fetch_add(1, Relaxed);
        let (replies_tx, replies) = local_channel::channel();
        let id = shared.next_session_id();
        let outbox = Outbox::new(replies_tx, worker.drain.clone());
        let (registered, killed) = shared.sessions.register(id, endpoint);
        Session {
            id,
            registered,
            killed,
            client: ConnectionState::new(shared.passwords.load().session.is_empty()),
            peer: endpoint.peer,
            worker,
            stream,
            decoder: RequestDecoder::new(limits),
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            queue: ReplyQueue::default(),
            outbox,
            replies,
            keys: Vec::new(),
            plugins: Default::default(),
            writing: false,
            migrating: Default::default(),
            waits: false,
            answered: None,
        }
    }

    /// Serves the client until it leaves, QUITs, sends garbage or idles out.
    #[allow(clippy::manual_async_fn)]
    pub fn run(mut self) -> impl Future<Output = ()> {
        // Not an `async fn`: one would keep a second copy of the session in its future (the
        // argument, and the binding it is moved to), which every idle connection pays for.
        async move { self.serve().await }
    }

    async fn serve(&mut self) {
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
            if self.write_replies().await.is_err() {
                break;
            }
            let waits = !self.queue.is_empty();
            if waits != self.waits {
                self.waits = waits;
                if !waits {
                    self.answered = Some(self.worker.activity.answered());
                } else if let Some(token) = self.answered.take() {
                    self.worker.activity.sent_again(token);
                }
            }
            if self.client.closed(self.queue.head()) || (eof && self.queue.is_empty()) {
                break;
            }
            let can_read = !eof
                && self.client.reads()
                && !self.migrating.holds()
                && self.queue.len() < max_pipeline;
            tokio::select! {
                biased;
                Some(batch) = self.replies.recv() => {
                    self.on_replies(batch);
                    while let Some(b) = self.replies.try_recv() {
                        self.on_replies(b);
                    }
                    self.advance_move();
                    if self.client.held && !self.queue.sent_unanswered() {
                        self.client.held = false;
                        self.on_input(Instant::now());
                    }
                }
                _ = self.migrating.table_or_deadline(), if self.migrating.waits_for_table() => {
                    self.table_changed();
                }
                read = read_more(&mut self.stream, &mut self.rbuf, &self.worker.scratch.read), if can_read => {
                    match read {
                        Ok(Read::Eof) | Err(_) => eof = true,
                        Ok(read) => {
                            self.worker.activity.read();
                            last_read = Instant::now();
                            self.on_input(last_read);
                            self.keep_unread(read);
                        }
                    }
                }
                _ = &mut self.killed => {
                    tracing::debug!(session = self.id, "killed by CLIENT KILL");
                    break;
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

    /// Gives a batch of replies to its commands (or MIGRATEs to the command they move for).
    fn on_replies(&mut self, batch: ReplyBatch) {
        if batch.tag == migrating::MIGRATE_TAG {
            self.on_moved(batch);
        } else {
            self.queue.on_replies(batch);
        }
    }

    /// Decodes every whole request buffered and dispatches it, then sends the batches.
    fn on_input(&mut self, now: Instant) {
        if self.migrating.holds() {
            return;
        }
        let table = self.worker.shared.table.load();
        self.outbox.revision = table.revision;
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
                        self.protocol_error("query buffer limit reached".into(), now);
                    }
                    break;
                }
                Err(e) => {
                    self.run_plugin_batch(&table, refusal, now);
                    self.protocol_error(e.to_string(), now);
                    break;
                }
            }
            if !self.client.reads() || self.migrating.holds() {
                break;
            }
        }
        self.outbox.flush(&mut self.queue);
        self.registered.on_read(now, self.queue.back_cmd());
        if self.plugins.active {
            self.worker.chain.borrow_mut().flush_stats();
        }
        self.advance_move();
    }

    /// Answers `-ERR Protocol error: ...` after the replies before it, then closes.
    fn protocol_error(&mut self, what: String, now: Instant) {
        tracing::debug!(session = self.id, peer = ?self.peer, error = what.as_str(), "protocol error");
        let seq = self.queue.push(None, now);
        self.queue.fail(seq, CommandError::Protocol(what));
        self.client.close_after = Some(seq);
        self.rbuf.clear();
    }

    /// Routes a request (after the plugins, if any).
    fn dispatch(&mut self, req: Request, table: &SlotTable, refusal: Option<&str>, now: Instant) {
        self.dispatch_found(None, req, table, refusal, now);
    }

    /// [`Session::dispatch`] of a request whose command and key positions may be `known`
    /// already (the plugin chain found them).
    fn dispatch_found(
        &mut self,
        known: Option<Known<'_>>,
        req: Request,
        table: &SlotTable,
        refusal: Option<&str>,
        now: Instant,
    ) {
        let Err(req) = self.wait_behind_move(req) else {
            return;
        };
        let lookup = match known {
            Some(k) => Lookup::Found(k.spec),
            None => command::lookup(&req.args),
        };
        let keys = known.map(|k| k.keys);
        let spec = match lookup {
            Lookup::Found(spec) => spec,
            // Redis reports unknown commands and wrong arity before it asks for AUTH.
            Lookup::Unknown => {
                let seq = self.queue.push(None, now);
                return self
                    .queue
                    .fail(seq, CommandError::unknown_command(&req.args));
            }
            Lookup::UnknownSubcommand(container) => {
                let seq = self.queue.push(Some(container.id), now);
                if self.newer_client_subcommand(seq, container, &req.args) {
                    return;
                }
                return self
                    .queue
                    .fail(seq, CommandError::unknown_subcommand(container, &req.args));
            }
        };
        let seq = self.queue.push(Some(spec.id), now);
        if !spec.arity_ok(req.args.len()) {
            return self.queue.fail(seq, CommandError::arity(spec));
        }
        let class = spec.class();
        self.writing = spec.has_flag(command::WRITE);
        if !self.client.authenticated
            && !matches!(class, Class::Local(l) if local::allowed_before_auth(l))
        {
            return self.queue.fail(seq, CommandError::NoAuth);
        }
        if let Some(why) = refusal
            && !matches!(class, Class::Local(_))
        {
            return self.queue.fail(seq, CommandError::Refused(why.to_string()));
        }
        if let Err(why) = command::check_options(spec, &req.args) {
            return self.queue.fail(seq, why);
        }
        if self.plugins.active
            && matches!(
                class,
                Class::Keyed | Class::Split(_) | Class::FanOut(_) | Class::AnyBackend
            )
        {
            self.keep_for_reply_hook(seq, spec, &req, keys);
        }
        match class {
            Class::Keyed => self.dispatch_keyed(seq, spec, req, table, keys),
            Class::Split(kind) => self.dispatch_split(seq, kind, req, table),
            Class::FanOut(kind) => self.dispatch_fanout(seq, kind, req, table),
            Class::Local(l) => self.local(seq, l, &req.args),
            Class::AnyBackend => match table.any_backend() {
                Some(b) => self.forward(b, &req, Dest::Whole(seq)),
                None => self.queue.fail(seq, CommandError::NoGroup),
            },
            Class::Unsupported => self.queue.fail(seq, CommandError::not_supported(spec)),
            Class::Later => self
                .queue
                .fail(seq, CommandError::not_supported_yet(spec, None)),
        }
    }

    /// Routes a command to the group of its keys' slot; `found`: the key positions, if
    /// the plugin chain found them already (else they are found here, in `self.keys`).
    fn dispatch_keyed(
        &mut self,
        seq: u64,
        spec: &'static Spec,
        req: Request,
        table: &SlotTable,
        found: Option<&[usize]>,
    ) {
        let mut own = std::mem::take(&mut self.keys);
        let keys = match found {
            Some(keys) => keys,
            None => {
                own.clear();
                command::key_positions(spec, &req.args, &mut own);
                &own
            }
        };
        let backend = match keys.split_first() {
            None => table.any_backend().ok_or(CommandError::NoGroup),
            Some((&first, rest)) => {
                let s = slot::slot(&req.args[first]);
                if rest.iter().any(|&k| slot::slot(&req.args[k]) != s) {
                    Err(CommandError::CrossSlot)
                } else {
                    table.route(s).ok_or(CommandError::SlotOffline(s))
                }
            }
        };
        let moves = match backend {
            Ok(_) => self
                .migrating
                .to_move(seq, table, &req.args, keys.iter().copied()),
            Err(_) => Vec::new(),
        };
        self.keys = own;
        match backend {
            Ok(_) if !moves.is_empty() => {
                self.hold_for_move(seq, migrating::Again::Keyed(spec), req, moves)
            }
            Ok(b) => self.forward(b, &req, Dest::Whole(seq)),
            Err(e) => self.queue.fail(seq, e),
        }
    }

    fn dispatch_split(&mut self, seq: u64, kind: command::Split, req: Request, table: &SlotTable) {
        let keys = migrating::split_keys(kind, &req.args);
        let moves = self.migrating.to_move(seq, table, &req.args, keys);
        if !moves.is_empty() {
            return self.hold_for_move(seq, migrating::Again::Split(kind), req, moves);
        }
        match split::plan(kind, &req.args, table) {
            Err(e) => self.queue.fail(seq, e),
            Ok(split::Plan::Whole(b)) => self.forward(b, &req, Dest::Whole(seq)),
            Ok(split::Plan::Parts(parts, merge)) => {
                self.queue.entry(seq).state = State::Merging(Box::new(merge));
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
        let shared = &self.worker.shared;
        let planned = if kind == command::FanOut::Wait {
            let max_ms = shared.config.backend.timeout_ms;
            fanout::plan_wait(&req.args, table, self.outbox.written(), max_ms)
        } else {
            fanout::plan(kind, &req.args, table, &shared.config.proxy)
        };
        match planned {
            Err(e) => self.queue.fail(seq, e),
            Ok(fanout::Plan::Every(groups, mut gather)) => {
                if kind == command::FanOut::Info {
                    gather.info = Some(Box::new(self.own_info(&req.args)));
                }
                self.queue.entry(seq).state = State::Gathering(Box::new(gather));
                for (i, &(_, backend)) in groups.iter().enumerate() {
                    self.forward(backend, &req, Dest::Part(seq, i as u32));
                }
            }
            Ok(fanout::Plan::Commands(parts, gather)) => {
                self.queue.entry(seq).state = State::Gathering(Box::new(gather));
                for (i, &(backend, name)) in parts.iter().enumerate() {
                    if let Some(out) = self.outgoing(backend, Dest::Part(seq, i as u32)) {
                        encode::command(out, &[name]);
                    }
                }
            }
            Ok(fanout::Plan::Scan {
                backend,
                group_cursor,
                gather,
            }) => {
                self.queue.entry(seq).state = State::Gathering(Box::new(gather));
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
        let route = Route {
            session: self.id,
            db: self.client.db,
            protocol: self.client.protocol,
            write: self.writing,
        };
        match self.outbox.outgoing(&self.worker, route, backend, dest) {
            Ok(out) => Some(out),
            Err(down) => {
                self.queue.fill(dest, down);
                None
            }
        }
    }

    /// Writes the replies that are ready, in order. They are gathered in the worker's write
    /// scratch and written at once; only what the socket does not take now is copied into
    /// the session's own buffer, and written (before anything else) when the socket is ready.
    async fn write_replies(&mut self) -> std::io::Result<()> {
        if self.wbuf.is_empty() {
            let worker = self.worker.clone();
            let mut out = worker.scratch.write.borrow_mut();
            // Shared with every session of the worker: it must hold nothing of another's,
            // also after a failed write or a panic.
            out.clear();
            self.collect_ready(&mut out);
            let written = write_now(&mut self.stream, &out);
            if let Ok(n) = written
                && n < out.len()
            {
                self.wbuf.extend_from_slice(&out[n..]);
            }
            if out.capacity() > MAX_KEPT_SCRATCH {
                *out = BytesMut::new();
            } else {
                out.clear();
            }
            written?;
        } else {
            let mut own = std::mem::take(&mut self.wbuf);
            self.collect_ready(&mut own);
            self.wbuf = own;
        }
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf = BytesMut::new();
        }
        Ok(())
    }

    /// After a read is dispatched: lets go of the buffer if everything was decoded, and
    /// copies a partial request out of the worker's read scratch, so that an idle session
    /// holds no buffer, or only its own bytes.
    fn keep_unread(&mut self, read: Read) {
        if self.rbuf.is_empty() {
            // Even empty, a view keeps the scratch it was split from.
            self.rbuf = BytesMut::new();
        } else if read == Read::Scratch {
            let mut own = BytesMut::with_capacity(self.rbuf.len().max(OWN_READ_BUFFER));
            own.extend_from_slice(&self.rbuf);
            self.rbuf = own;
        }
    }

    /// Moves the replies that are ready, in order, into `out`.
    fn collect_ready(&mut self, out: &mut BytesMut) {
        let mut now = None;
        while let Some(front) = self.queue.front() {
            if !matches!(front.state, State::Ready(_)) {
                break;
            }
            if let Some(hook) = front.reply_hook.take()
                && let State::Ready(reply) = std::mem::replace(&mut front.state, State::Waiting)
            {
                let reply = self.plugins_on_reply(&hook, reply);
                self.queue.front().expect("front exists").state = State::Ready(reply);
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
            if !front.silent {
                out.extend_from_slice(reply);
            }
            self.queue.pop();
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
        self.client.db = db;
        self.leave_connections();
    }

    /// Switches the protocol of the replies (HELLO): like [`Session::switch_db`], later
    /// commands go to other connections (ones that speak `protocol`), once the commands
    /// sent on the old ones are answered (in the old protocol, as Redis would answer them).
    fn switch_protocol(&mut self, protocol: Protocol) {
        self.client.protocol = protocol;
        self.leave_connections();
    }

    /// Sends what was gathered for the connections in use, forgets them (the next command
    /// picks the ones of the current database and protocol) and holds later commands while
    /// anything sent on them is unanswered.
    fn leave_connections(&mut self) {
        self.outbox.leave_connections(&mut self.queue);
        self.client.held = self.queue.sent_unanswered();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let shared = &self.worker.shared;
        shared.stats.sessions_alive.fetch_sub(1, Relaxed);
        shared.clients.fetch_sub(1, Relaxed);
        if let Some(token) = self.answered {
            self.worker.activity.sent_again(token);
        }
        shared.sessions.unregister(self.id);
    }
}

/// The size of a worker's read scratch: one read takes at most this much.
const READ_SCRATCH: usize = 64 * 1024;
/// A session's own read buffer, for a request that did not arrive whole.
const OWN_READ_BUFFER: usize = 16 * 1024;
/// A write scratch that grew past this for a big reply is let go of once written.
const MAX_KEPT_SCRATCH: usize = 1024 * 1024;

/// Where a read went.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Read {
    /// The client closed its side.
    Eof,
    /// Into the worker's scratch (the session had nothing buffered).
    Scratch,
    /// After the partial request in the session's own buffer.
    Own,
}

/// Reads what the client sent: into the worker's read scratch if `buf` is empty (`buf` then
/// becomes a view of what was read), else into `buf`, after the partial request it holds.
async fn read_more(
    stream: &mut BoxStream,
    buf: &mut BytesMut,
    scratch: &RefCell<BytesMut>,
) -> std::io::Result<Read> {
    std::future::poll_fn(|cx| {
        let (n, into) = if buf.is_empty() {
            let mut s = scratch.borrow_mut();
            if s.capacity() < 4096 {
                s.reserve(READ_SCRATCH);
            }
            let n = ready!(pin!(stream.read_buf(&mut *s)).poll(cx))?;
            *buf = s.split_to(n);
            (n, Read::Scratch)
        } else {
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(OWN_READ_BUFFER);
            }
            (
                ready!(pin!(stream.read_buf(&mut *buf)).poll(cx))?,
                Read::Own,
            )
        };
        Poll::Ready(Ok(if n == 0 { Read::Eof } else { into }))
    })
    .await
}
