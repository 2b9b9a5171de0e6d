//! Connections to Redis. Each is one task on a worker thread that owns the socket: sessions
//! hand it batches of commands, it writes all those of one turn of the worker in one write
//! and returns each batch's replies.
//!
//! A connection that fails or stops answering within the bound fails every command it holds
//! with `-ERR backend <addr> unavailable: <reason>`, fails new ones at once while it waits to
//! reconnect, and reconnects with exponential backoff. Nothing waits longer than the bound.

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;
/// The machine's clock: the batch wait runs on it, so that time paused in a test does not
/// stop the wait (tokio's `Instant` is the one the rest of the connection uses).
use std::time::Instant as MachineInstant;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, MissedTickBehavior};

use arc_swap::ArcSwap;

use crate::busy_poll::Activity;
use crate::command::CommandError;
use crate::config::BackendConfig;
use crate::drain::Routed;
use crate::io::BoxStream;
use crate::local_channel::{self, Receiver, Sender};
use crate::pacing::{Pacing, Waited, WorkerState};
use crate::resp::{Protocol, ReplyScanner, encode, is_push};
use crate::router::BackendInfo;
use crate::shared::Passwords;

/// How a backend connection reaches its Redis: [`TcpConnect`] when the proxy runs; tests
/// put in-memory backends in its place.
pub trait Connect {
    /// Opens a stream to `addr` (a backend's `host:port`), set up for low latency.
    fn connect<'a>(
        &'a self,
        addr: &'a str,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<BoxStream>> + 'a>>;
}

/// Connects over TCP, with Nagle's algorithm off.
pub struct TcpConnect;

impl Connect for TcpConnect {
    fn connect<'a>(
        &'a self,
        addr: &'a str,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<BoxStream>> + 'a>> {
        Box::pin(async move {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as BoxStream)
        })
    }
}

/// Commands for one backend connection, sent by one session after one read.
pub struct Batch {
    /// The commands, in RESP, back to back.
    pub data: Bytes,
    pub count: u32,
    /// The session's tag for this batch, returned with the replies.
    pub tag: u32,
    pub reply_to: Sender<ReplyBatch>,
    /// Counts the batch as in flight for the table revision it was routed under until it is
    /// answered (see [`crate::drain`]); `None` for a batch no table routed.
    pub routed: Option<Routed>,
}

/// The replies to one [`Batch`], in order, exactly `count` of them (error replies included).
pub struct ReplyBatch {
    pub tag: u32,
    pub replies: Vec<Bytes>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    Connecting,
    Up,
    /// Waiting to reconnect: commands fail at once.
    Down,
}

/// A session's way to one backend connection on its worker.
#[derive(Clone)]
pub struct BackendConn {
    tx: Sender<Batch>,
    state: Rc<Cell<ConnState>>,
    down_reply: Rc<Cell<Option<Bytes>>>,
}

impl BackendConn {
    /// Starts the connection task for `info.addr`, database `db`, speaking `protocol`, on the
    /// current `LocalSet`; it connects through `connector` and counts its reads in the
    /// worker's `activity`.
    pub fn spawn(
        info: Arc<BackendInfo>,
        db: u32,
        protocol: Protocol,
        config: &BackendConfig,
        passwords: Arc<ArcSwap<Passwords>>,
        connector: Rc<dyn Connect>,
        activity: Rc<Activity>,
    ) -> BackendConn {
        let (tx, rx) = local_channel::channel();
        let state = Rc::new(Cell::new(ConnState::Connecting));
        let down_reply = Rc::new(Cell::new(None));
        let task = ConnTask {
            info,
            db,
            protocol,
            config: config.clone(),
            passwords,
            connector,
            activity,
            rx,
            state: state.clone(),
            down_reply: down_reply.clone(),
            client: None,
            fence: None,
        };
        tokio::task::spawn_local(task.run());
        BackendConn {
            tx,
            state,
            down_reply,
        }
    }

    /// If the connection is waiting to reconnect, the error reply its commands get now.
    #[inline]
    pub fn unavailable(&self) -> Option<Bytes> {
        if self.state.get() != ConnState::Down {
            return None;
        }
        let r = self.down_reply.take();
        self.down_reply.set(r.clone());
        r
    }

    /// Queues a batch. Its replies always come back, errors included.
    pub fn send(&self, batch: Batch) {
        if let Err(batch) = self.tx.send(batch) {
            // The task is gone (worker shutting down): answer the batch here.
            let reply = CommandError::BackendClosed.reply();
            let _ = batch.reply_to.send(ReplyBatch {
                tag: batch.tag,
                replies: vec![reply; batch.count as usize],
            });
        }
    }
}

struct InFlight {
    count: u32,
    tag: u32,
    reply_to: Sender<ReplyBatch>,
    replies: Vec<Bytes>,
    sent: Instant,
    /// Dropped with the batch, once its replies are handed back.
    _routed: Option<Routed>,
}

impl InFlight {
    fn fail(mut self, reply: &Bytes) {
        self.replies.resize(self.count as usize, reply.clone());
        let _ = self.reply_to.send(ReplyBatch {
            tag: self.tag,
            replies: self.replies,
        });
    }
}

struct ConnTask {
    info: Arc<BackendInfo>,
    db: u32,
    protocol: Protocol,
    config: BackendConfig,
    passwords: Arc<ArcSwap<Passwords>>,
    connector: Rc<dyn Connect>,
    activity: Rc<Activity>,
    rx: Receiver<Batch>,
    state: Rc<Cell<ConnState>>,
    down_reply: Rc<Cell<Option<Bytes>>>,
    /// How Redis knows the connection being served (from `CLIENT INFO` in its setup).
    client: Option<ClientName>,
    /// An earlier connection that broke with commands Redis may still run: the next
    /// connection kills it before it carries a command.
    fence: Option<ClientName>,
}

impl ConnTask {
    async fn run(mut self) {
        let min = Duration::from_millis(self.config.min_backoff_ms);
        let max = Duration::from_millis(self.config.max_backoff_ms);
        let mut backoff = min;
        let mut reported = false;
        loop {
            self.state.set(ConnState::Connecting);
            let reason = match self.connect().await {
                Ok(stream) => {
                    self.state.set(ConnState::Up);
                    self.info.connected.fetch_add(1, Relaxed);
                    if reported {
                        tracing::info!(backend = %self.info.addr, db = self.db, "backend reconnected");
                        reported = false;
                    }
                    backoff = min;
                    let reason = self.serve(stream).await;
                    self.info.connected.fetch_sub(1, Relaxed);
                    match reason {
                        Some((r, unanswered)) => {
                            if unanswered {
                                self.fence = self.client.take().or(self.fence.take());
                            }
                            r
                        }
                        None => return,
                    }
                }
                Err(reason) => reason,
            };
            self.info.failures.fetch_add(1, Relaxed);
            if !reported {
                tracing::warn!(backend = %self.info.addr, db = self.db, %reason, "backend unavailable");
                reported = true;
            }
            let reply = unavailable_reply(&self.info.addr, &reason);
            self.down_reply.set(Some(reply.clone()));
            self.state.set(ConnState::Down);
            self.info.failing.fetch_add(1, Relaxed);
            let until = tokio::time::Instant::now() + backoff;
            backoff = (backoff * 2).min(max);
            let open = loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => break true,
                    batch = self.rx.recv() => match batch {
                        Some(b) => in_flight(b).fail(&reply),
                        None => break false,
                    },
                }
            };
            self.info.failing.fetch_sub(1, Relaxed);
            if !open {
                return;
            }
        }
    }

    /// Connects, authenticates, selects the database, learns the connection's client id and
    /// fences off the connection before it (see [`Setup`]), all within the connect bound.
    async fn connect(&mut self) -> Result<BoxStream, String> {
        let fence = self.fence.clone();
        let work = async {
            let mut stream = self
                .connector
                .connect(&self.info.addr)
                .await
                .map_err(|e| e.to_string())?;
            let mut hello = BytesMut::new();
            let mut steps = Vec::with_capacity(4);
            let password = self.passwords.load().backend.clone();
            if !password.is_empty() {
                encode::command(&mut hello, &["AUTH", password.as_str()]);
                steps.push(Setup::Required);
            }
            if self.db != 0 {
                encode::command(&mut hello, &["SELECT", &self.db.to_string()]);
                steps.push(Setup::Required);
            }
            // The replies' protocol, and the server's version (which sessions' HELLO report).
            match self.protocol {
                Protocol::Resp2 => {
                    encode::command(&mut hello, &["HELLO", "2"]);
                    steps.push(Setup::Hello { required: false });
                }
                Protocol::Resp3 => {
                    encode::command(&mut hello, &["HELLO", "3"]);
                    steps.push(Setup::Hello { required: true });
                }
            }
            if let Some(old) = &fence {
                let id = old.id.to_string();
                encode::command(
                    &mut hello,
                    &["CLIENT", "KILL", "ID", &id, "ADDR", &old.addr],
                );
                steps.push(Setup::Fence);
            }
            encode::command(&mut hello, &["CLIENT", "INFO"]);
            steps.push(Setup::ClientInfo);
            stream.write_all(&hello).await.map_err(|e| e.to_string())?;
            let mut buf = BytesMut::with_capacity(256);
            let mut scanner = ReplyScanner::default();
            let mut client = None;
            let mut fenced = Ok(());
            let mut step = 0;
            while step < steps.len() {
                let Some(n) = scanner.scan(&buf).map_err(|e| e.to_string())? else {
                    if stream.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                        return Err("closed the connection during setup".to_string());
                    }
                    continue;
                };
                let reply = buf.split_to(n);
                let refused = (reply.first() == Some(&b'-'))
                    .then(|| String::from_utf8_lossy(&reply[1..]).trim_end().to_string());
                match (steps[step], refused) {
                    (Setup::Required | Setup::Hello { required: true }, Some(text)) => {
                        return Err(format!("refused the connection setup: {text}"));
                    }
                    (Setup::Required, None) | (Setup::Hello { .. }, Some(_)) => {}
                    (Setup::Hello { .. }, None) => {
                        if let Some(v) = hello_version(&reply) {
                            let known = self.info.version.load();
                            if known.as_deref().is_none_or(|k| *k != v) {
                                self.info.version.store(Some(Arc::new(v)));
                            }
                        }
                    }
                    (Setup::Fence, refused) => fenced = refused.map_or(Ok(()), Err),
                    (Setup::ClientInfo, _) => client = ClientName::parse(&reply),
                }
                step += 1;
            }
            Ok((stream, client, fenced))
        };
        let (stream, client, fenced) =
            match tokio::time::timeout(self.config.connect_timeout(), work).await {
                Ok(r) => r?,
                Err(_) => {
                    return Err(format!(
                        "connect timed out after {} ms",
                        self.config.connect_timeout_ms
                    ));
                }
            };
        if let (Some(old), Err(why)) = (fence, fenced) {
            tracing::error!(
                backend = %self.info.addr,
                old_client = old.id,
                reason = %why,
                "cannot close the broken backend connection on Redis's side; commands it had \
                 sent before it broke may still run after newer ones"
            );
        }
        if client.is_none() {
            tracing::debug!(backend = %self.info.addr, "no CLIENT INFO: this connection cannot be fenced off should it break");
        }
        self.fence = None;
        self.client = client;
        Ok(stream)
    }

    /// Pumps batches and replies until the connection breaks (`Some((reason, unanswered))`,
    /// `unanswered` if Redis may have commands of it still to run) or every session and the
    /// worker have let go of it (`None`).
    async fn serve(&mut self, mut stream: BoxStream) -> Option<(String, bool)> {
        let timeout = self.config.timeout();
        let mut pending: VecDeque<InFlight> = VecDeque::new();
        let mut wbuf = BytesMut::with_capacity(16 * 1024);
        let mut rbuf = BytesMut::with_capacity(16 * 1024);
        let mut scanner = ReplyScanner::default();
        let mut tick = tokio::time::interval(timeout.min(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut open = true;
        // Batches are queued as they come and written once the turn that brought them ends,
        // or later, as `pacing` says.
        let mut write_due = false;
        let mut turn = TurnWait::NotYet;
        let mut pacing = Pacing::new(
            self.config.hold_in_flight,
            self.config.batch_wait(),
            self.config.batch_gap(),
        );
        let failure = loop {
            if !open && pending.is_empty() && wbuf.is_empty() {
                return None;
            }
            if rbuf.capacity() - rbuf.len() < 4096 {
                rbuf.reserve(16 * 1024);
            }
            tokio::select! {
                biased;
                io = read_or_write(&mut stream, &mut rbuf, &wbuf, !write_due && !pacing.holding()) => {
                    match io {
                        Io::Read(Ok(0)) => break "connection closed by the server".to_string(),
                        Io::Read(Ok(_)) => {
                            self.activity.read();
                            match take_replies(&mut rbuf, &mut scanner, &mut pending) {
                                // Held commands that a reply lets go are written at the
                                // end of this turn, like any others, with what the turn's
                                // sessions hand over meanwhile: Redis has gone back to
                                // sleep by the time its reply is read (at -P1 it wakes
                                // once per read), so writing them at once only split them.
                                Ok(n) => write_due |= pacing.replied(n),
                                Err(reason) => break reason,
                            }
                        }
                        Io::Wrote(Ok(0)) => {
                            break std::io::Error::from(std::io::ErrorKind::WriteZero).to_string();
                        }
                        Io::Wrote(Ok(n)) => {
                            let _ = wbuf.split_to(n);
                            if wbuf.is_empty() {
                                wbuf.clear();
                            }
                        }
                        Io::Read(Err(e)) | Io::Wrote(Err(e)) => break e.to_string(),
                    }
                }
                batch = self.rx.recv(), if open => {
                    match batch {
                        Some(b) => {
                            let now = Instant::now();
                            let mut due = pacing.queue(self.queue(b, now, &mut wbuf, &mut pending));
                            while let Some(b) = self.rx.try_recv() {
                                due = pacing.queue(self.queue(b, now, &mut wbuf, &mut pending));
                            }
                            write_due |= due;
                        }
                        None => open = false,
                    }
                }
                _ = end_of_turn(&mut turn, &pacing, &self.activity), if write_due => {
                    write_due = false;
                    turn = TurnWait::NotYet;
                    if !pacing.write_now() {
                        continue;
                    }
                    if let Err(e) = write_now(&mut stream, &mut wbuf) {
                        break e.to_string();
                    }
                }
                _ = tick.tick(), if !pending.is_empty() => {
                    if pending.front().is_some_and(|f| f.sent.elapsed() >= timeout) {
                        break format!("no reply within {} ms", self.config.timeout_ms);
                    }
                }
            }
        };
        let reply = unavailable_reply(&self.info.addr, &failure);
        let unanswered = !pending.is_empty();
        for f in pending.drain(..) {
            f.fail(&reply);
        }
        Some((failure, unanswered))
    }

    /// Appends a batch to what is to be written; returns its command count.
    fn queue(
        &self,
        b: Batch,
        now: Instant,
        wbuf: &mut BytesMut,
        pending: &mut VecDeque<InFlight>,
    ) -> usize {
        wbuf.extend_from_slice(&b.data);
        let mut f = in_flight(b);
        f.sent = now;
        let count = f.count as usize;
        pending.push_back(f);
        count
    }
}

/// What a reply to one command of a connection's setup means.
#[derive(Debug, Clone, Copy)]
enum Setup {
    /// AUTH, SELECT: an error refuses the connection.
    Required,
    /// `HELLO 2|3`: sets the protocol of the replies and tells the server's version. Only
    /// RESP3 needs it; a server without HELLO (before Redis 6) speaks RESP2 all the same.
    Hello { required: bool },
    /// `CLIENT KILL ID <old>`: closes, on Redis's side, a connection that broke while Redis
    /// still held commands of it (a timeout, a broken socket), and since Redis runs one
    /// command at a time, once this is answered no command of the old connection can run
    /// any more. Without it a timed-out `SET k 1` could run after an acknowledged `SET k 2`
    /// sent on the new connection. Refused (no permission): logged, and the connection is
    /// used all the same.
    Fence,
    /// `CLIENT INFO`: how to name this connection to fence it off, should it break.
    ClientInfo,
}

/// The `version` field of a HELLO reply (a RESP2 flat array or a RESP3 map: both carry the
/// field name and its value as bulk strings).
fn hello_version(reply: &[u8]) -> Option<String> {
    const FIELD: &[u8] = b"$7\r\nversion\r\n$";
    let at = reply.windows(FIELD.len()).position(|w| w == FIELD)? + FIELD.len();
    let rest = &reply[at..];
    let eol = rest.iter().position(|&b| b == b'\r')?;
    let len: usize = std::str::from_utf8(&rest[..eol]).ok()?.parse().ok()?;
    let value = rest.get(eol + 2..eol + 2 + len)?;
    Some(String::from_utf8_lossy(value).into_owned())
}

/// A connection as Redis knows it: its id and its address as Redis sees it. Both name it
/// when it is killed, so that a restarted Redis, which hands out ids from 1 again, cannot
/// have another client killed in its place.
#[derive(Debug, Clone)]
struct ClientName {
    id: i64,
    addr: String,
}

impl ClientName {
    /// From the reply to `CLIENT INFO` (`$N\r\nid=7 addr=127.0.0.1:5 ...\n\r\n`).
    fn parse(reply: &[u8]) -> Option<ClientName> {
        let text = std::str::from_utf8(reply.strip_prefix(b"$")?).ok()?;
        let (_, body) = text.split_once("\r\n")?;
        let field = |name: &str| {
            body.split_ascii_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        };
        Some(ClientName {
            id: field("id")?.parse().ok()?,
            addr: field("addr")?.to_string(),
        })
    }
}

fn in_flight(b: Batch) -> InFlight {
    InFlight {
        count: b.count,
        tag: b.tag,
        reply_to: b.reply_to,
        replies: Vec::with_capacity(b.count as usize),
        sent: Instant::now(),
        _routed: b.routed,
    }
}

/// What the connection's stream did: read into the read buffer, or wrote from the write buffer.
enum Io {
    Read(std::io::Result<usize>),
    Wrote(std::io::Result<usize>),
}

/// Waits until the stream has read something or, if `write` and `wbuf` holds anything, taken
/// some of it. Reading comes first: replies free the sessions waiting for them.
fn read_or_write<'a>(
    stream: &'a mut BoxStream,
    rbuf: &'a mut BytesMut,
    wbuf: &'a BytesMut,
    write: bool,
) -> impl Future<Output = Io> + 'a {
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(r) = pin!(stream.read_buf(&mut *rbuf)).poll(cx) {
            return Poll::Ready(Io::Read(r));
        }
        if write
            && !wbuf.is_empty()
            && let Poll::Ready(r) = Pin::new(&mut *stream).poll_write(cx, wbuf)
        {
            return Poll::Ready(Io::Wrote(r));
        }
        Poll::Pending
    })
}

/// How far a backend connection has got in waiting for the end of a turn (see
/// [`end_of_turn`]); kept across the connection's loop.
#[derive(Debug, Clone, Default)]
enum TurnWait {
    #[default]
    NotYet,
    Requeued,
    /// Waiting for the runtime's poll of `epoll` number `polls`, deferred when `batches`
    /// were queued; the first was deferred at `since`, the latest that brought a batch
    /// began at `brought`.
    Polling {
        polled: Arc<Polled>,
        polls: u32,
        batches: u64,
        since: MachineInstant,
        brought: MachineInstant,
    },
}

/// The waker a backend connection defers to the runtime's next poll of `epoll`: it notes
/// that the poll happened and wakes the connection's task.
#[derive(Debug)]
struct Polled {
    done: AtomicBool,
    task: Waker,
}

impl Wake for Polled {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.done.store(true, Relaxed);
        self.task.wake_by_ref();
    }
}

impl TurnWait {
    /// Has the task woken after the runtime's next poll of `epoll` (without blocking:
    /// `yield_now` hands its waker to the runtime, to wake once its driver has been polled),
    /// poll number `polls` of this turn's write, the first of which was deferred at `since`
    /// (the clock of the machine, not tokio's: time paused in a test does not stop the wait).
    fn poll(
        cx: &Context<'_>,
        polls: u32,
        pacing: &Pacing,
        since: MachineInstant,
        brought: MachineInstant,
    ) -> TurnWait {
        let polled = Arc::new(Polled {
            done: AtomicBool::new(false),
            task: cx.waker().clone(),
        });
        let waker = Waker::from(polled.clone());
        let _ = pin!(tokio::task::yield_now()).poll(&mut Context::from_waker(&waker));
        TurnWait::Polling {
            polled,
            polls,
            batches: pacing.batches(),
            since,
            brought,
        }
    }
}

/// Ready once the tasks the worker had ready to run when this was first polled have run:
/// the first poll puts the task at the back of the worker's queue. Sessions the same
/// readiness event woke hand their batches over in that time, so Redis gets them in one
/// write: on a busy worker the task is often woken by its replies while half the turn's
/// sessions have still to run, and writing then split the turn's commands in two writes,
/// which Redis reads, and is woken for, separately. With `one_more_poll` it then also waits
/// for the runtime's next poll of `epoll` and the sessions that poll wakes, and for more
/// polls as [`Pacing::poll_again`] says — on a busy worker, for single commands, until no
/// session answered lately is left to send (or `batch_gap_us` passes without one, or
/// `batch_wait_us` in all) — so a busy turn's write takes in the commands of clients that
/// send one after another, for Redis to read in one go. A batch handed over before the
/// poll does not end the wait: only the runtime's wake after its poll does.
fn end_of_turn<'a>(
    wait: &'a mut TurnWait,
    pacing: &'a Pacing,
    activity: &'a Activity,
) -> impl Future<Output = ()> + 'a {
    std::future::poll_fn(move |cx| match wait {
        TurnWait::NotYet => {
            *wait = TurnWait::Requeued;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
        TurnWait::Requeued if pacing.one_more_poll(activity.busy()) => {
            let now = MachineInstant::now();
            *wait = TurnWait::poll(cx, 1, pacing, now, now);
            Poll::Pending
        }
        TurnWait::Requeued => Poll::Ready(()),
        TurnWait::Polling {
            polled,
            polls,
            batches,
            since,
            brought,
        } => {
            if !polled.done.load(Relaxed) {
                return Poll::Pending;
            }
            let now = MachineInstant::now();
            let brought = if pacing.batches() > *batches {
                now
            } else {
                *brought
            };
            let waited = Waited {
                polls: *polls,
                before: *batches,
                total: now.saturating_duration_since(*since),
                quiet: now.saturating_duration_since(brought),
            };
            let worker = WorkerState {
                busy: activity.busy(),
                expects_more: activity.expects_more(now),
            };
            if pacing.poll_again(waited, worker) {
                *wait = TurnWait::poll(cx, *polls + 1, pacing, *since, brought);
                return Poll::Pending;
            }
            Poll::Ready(())
        }
    })
}

/// Writes as much of `wbuf` as the stream takes now, without waiting: what it does not take
/// is written by [`read_or_write`] once the stream is ready.
fn write_now(stream: &mut BoxStream, wbuf: &mut BytesMut) -> std::io::Result<()> {
    let n = crate::io::write_now(stream, wbuf)?;
    let _ = wbuf.split_to(n);
    if wbuf.is_empty() {
        wbuf.clear();
    }
    Ok(())
}

/// Hands every complete reply in `rbuf` to its batch, and each finished batch to its session;
/// returns how many replies it handed over.
fn take_replies(
    rbuf: &mut BytesMut,
    scanner: &mut ReplyScanner,
    pending: &mut VecDeque<InFlight>,
) -> Result<usize, String> {
    let mut taken = 0;
    while let Some(n) = scanner.scan(rbuf).map_err(|e| e.to_string())? {
        let reply = rbuf.split_to(n).freeze();
        if is_push(&reply) {
            // Out-of-band data (RESP3), no command's reply: nothing on a shared connection
            // asked for it.
            tracing::debug!(len = reply.len(), "dropped a push from a backend");
            continue;
        }
        let Some(front) = pending.front_mut() else {
            return Err("reply without a request (protocol out of step)".to_string());
        };
        front.replies.push(reply);
        taken += 1;
        if front.replies.len() == front.count as usize {
            let done = pending.pop_front().expect("front exists");
            let _ = done.reply_to.send(ReplyBatch {
                tag: done.tag,
                replies: done.replies,
            });
        }
    }
    Ok(taken)
}

fn unavailable_reply(addr: &str, reason: &str) -> Bytes {
    CommandError::BackendUnavailable {
        addr: addr.to_string(),
        reason: reason.to_string(),
    }
    .reply()
}
