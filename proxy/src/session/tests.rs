//! Sessions and backend connections tested in-process: clients and Redis servers are in-memory
//! pipes (`tokio::io::duplex`) and time is tokio's paused clock, so orders and delays are exact.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::sync::Notify;
use tokio::task::LocalSet;
use tokio::time::Instant;

use super::Session;
use crate::backend::Connect;
use crate::config::Config;
use crate::io::BoxStream;
use crate::plugin::PluginChain;
use crate::resp::{RequestDecoder, encode};
use crate::shared::Shared;
use crate::worker::Worker;

/// How long a test waits for anything (on the paused clock, so it costs no real time).
const BOUND: Duration = Duration::from_secs(30);

/// What an in-memory Redis does with a command other than a connection's setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Answers `GET k` with `<addr>/k`.
    Answer,
    /// Answers once the mode changes.
    Hold,
    /// Never answers.
    Silent,
    /// Refuses connections.
    Refuse,
}

#[derive(Debug, Clone)]
enum Event {
    Connected {
        addr: String,
    },
    Refused {
        addr: String,
        at: Instant,
    },
    /// A command arrived on connection `conn` (counted from 0 per address).
    Command {
        addr: String,
        conn: usize,
        line: String,
    },
    Replied {
        addr: String,
        line: String,
    },
}

/// The in-memory Redis servers, by address, and what happened to them.
#[derive(Default)]
struct World {
    modes: RefCell<HashMap<String, Mode>>,
    changed: Notify,
    connections: RefCell<HashMap<String, usize>>,
    log: RefCell<Vec<Event>>,
    logged: Notify,
    /// What MIGRATE answers on an address (`+OK` unless set), once its mode lets it answer.
    migrate_replies: RefCell<HashMap<String, String>>,
}

impl World {
    fn mode(&self, addr: &str) -> Mode {
        *self.modes.borrow().get(addr).unwrap_or(&Mode::Answer)
    }

    fn set(&self, addr: &str, mode: Mode) {
        self.modes.borrow_mut().insert(addr.to_string(), mode);
        self.changed.notify_waiters();
    }

    fn note(&self, e: Event) {
        self.log.borrow_mut().push(e);
        self.logged.notify_one();
    }

    /// Waits until `done` holds for the events so far; panics naming `what` past the bound.
    async fn until(&self, what: &str, done: impl Fn(&[Event]) -> bool) {
        let deadline = Instant::now() + BOUND;
        while !done(&self.log.borrow()) {
            if tokio::time::timeout_at(deadline, self.logged.notified())
                .await
                .is_err()
            {
                panic!(
                    "{what}: not within {BOUND:?}; events: {:?}",
                    self.log.borrow()
                );
            }
        }
    }

    /// Waits until `addr` has received the command `line`.
    async fn until_sent(&self, addr: &str, line: &str) {
        self.until(&format!("{addr} gets {line}"), |log| {
            log.iter().any(
                |e| matches!(e, Event::Command { addr: a, line: l, .. } if a == addr && l == line),
            )
        })
        .await
    }

    /// Waits until `addr` has answered the command `line`.
    async fn until_answered(&self, addr: &str, line: &str) {
        self.until(&format!("{addr} answers {line}"), |log| {
            log.iter()
                .any(|e| matches!(e, Event::Replied { addr: a, line: l } if a == addr && l == line))
        })
        .await
    }

    fn commands(&self, addr: &str) -> Vec<(usize, String)> {
        self.log
            .borrow()
            .iter()
            .filter_map(|e| match e {
                Event::Command {
                    addr: a,
                    conn,
                    line,
                } if a == addr => Some((*conn, line.clone())),
                _ => None,
            })
            .collect()
    }
}

struct InMemory(Rc<World>);

impl Connect for InMemory {
    fn connect<'a>(
        &'a self,
        addr: &'a str,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<BoxStream>> + 'a>> {
        Box::pin(async move {
            let world = &self.0;
            let at = Instant::now();
            let addr = addr.to_string();
            if world.mode(&addr) == Mode::Refuse {
                world.note(Event::Refused { addr, at });
                return Err(std::io::ErrorKind::ConnectionRefused.into());
            }
            let conn = {
                let mut counts = world.connections.borrow_mut();
                let n = counts.entry(addr.clone()).or_insert(0);
                *n += 1;
                *n - 1
            };
            let (proxy_side, redis_side) = tokio::io::duplex(64 * 1024);
            tokio::task::spawn_local(redis(world.clone(), addr.clone(), conn, redis_side));
            world.note(Event::Connected { addr });
            Ok(Box::new(proxy_side) as BoxStream)
        })
    }
}

/// One connection of an in-memory Redis: answers the connection's setup as Redis does
/// (HELLO refused as by a Redis before 6, which a RESP2 connection accepts) and other
/// commands as its mode says.
async fn redis(world: Rc<World>, addr: String, conn: usize, mut stream: DuplexStream) {
    let mut decoder = RequestDecoder::new(Config::default().proxy.limits());
    let mut buf = BytesMut::new();
    loop {
        let req = match decoder.decode(&mut buf) {
            Ok(Some(req)) => req,
            Ok(None) => match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            },
            Err(e) => panic!("{addr}: the proxy sent a bad request: {e}"),
        };
        let words: Vec<String> = req
            .args
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let line = words.join(" ");
        world.note(Event::Command {
            addr: addr.clone(),
            conn,
            line: line.clone(),
        });
        let mut reply = BytesMut::new();
        match words[0].to_ascii_uppercase().as_str() {
            "HELLO" => encode::error(&mut reply, "ERR unknown command 'HELLO'"),
            "CLIENT" if words[1].eq_ignore_ascii_case("info") => {
                let info = format!("id={} addr=client:{conn}\n", conn + 1);
                encode::bulk(&mut reply, info.as_bytes());
            }
            "CLIENT" => encode::simple(&mut reply, "OK"),
            "MIGRATE" => loop {
                match world.mode(&addr) {
                    Mode::Answer => {
                        let r = world.migrate_replies.borrow().get(&addr).cloned();
                        reply.extend_from_slice(r.as_deref().unwrap_or("+OK\r\n").as_bytes());
                        break;
                    }
                    Mode::Silent => break,
                    Mode::Hold | Mode::Refuse => world.changed.notified().await,
                }
            },
            "GET" => loop {
                match world.mode(&addr) {
                    Mode::Answer => {
                        encode::bulk(&mut reply, format!("{addr}/{}", words[1]).as_bytes());
                        break;
                    }
                    Mode::Silent => break,
                    Mode::Hold | Mode::Refuse => world.changed.notified().await,
                }
            },
            other => panic!("{addr}: unexpected command {other}"),
        }
        if reply.is_empty() {
            continue;
        }
        if stream.write_all(&reply).await.is_err() {
            return;
        }
        world.note(Event::Replied {
            addr: addr.clone(),
            line,
        });
    }
}

/// A proxy worker over two groups: slots 0-511 on `a:1`, 512-1023 on `b:2`
/// (`foo` is in slot 289, `hello` in 646); `backend` is the `[backend]` section.
fn worker(world: &Rc<World>, backend: &str) -> Rc<Worker> {
    let text = format!(
        "[backend]\n{backend}\n\
         [[group]]\nid = 1\nservers = [\"a:1\"]\n[[group]]\nid = 2\nservers = [\"b:2\"]\n\
         [[slots]]\nrange = \"0-511\"\ngroup = 1\n[[slots]]\nrange = \"512-1023\"\ngroup = 2\n"
    );
    worker_over(&text, Rc::new(InMemory(world.clone())))
}

/// A proxy worker with the config `text`, reaching its backends through `connector`.
fn worker_over(text: &str, connector: Rc<dyn Connect>) -> Rc<Worker> {
    let config = Config::parse(text, "test").expect("config");
    let plugins = PluginChain::load(&[], 1).expect("no plugins");
    let shared = Arc::new(Shared::new(config, plugins, 1));
    Rc::new(Worker::with_connector(0, shared, connector))
}

/// A client connected to a new session of `worker`.
fn client(worker: &Rc<Worker>) -> DuplexStream {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    worker.shared.clients.fetch_add(1, Relaxed);
    tokio::task::spawn_local(
        Session::new(worker.clone(), Box::new(theirs), Default::default()).run(),
    );
    ours
}

async fn send(c: &mut DuplexStream, commands: &[&[&str]]) {
    let mut out = BytesMut::new();
    for cmd in commands {
        encode::command(&mut out, cmd);
    }
    c.write_all(&out).await.expect("write to the session");
}

/// Reads exactly the length of `want` and compares.
async fn expect(c: &mut DuplexStream, want: &str) {
    let mut got = vec![0; want.len()];
    match tokio::time::timeout(BOUND, c.read_exact(&mut got)).await {
        Ok(Ok(_)) => assert_eq!(String::from_utf8_lossy(&got), want),
        other => panic!(
            "expected {want:?}, got {other:?} after {:?}",
            Bytes::from(got)
        ),
    }
}

/// Checks `done` every millisecond (of the test's clock) until it holds; panics with `what`
/// past the bound.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let held = tokio::time::timeout(BOUND, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    assert!(held.is_ok(), "{what}");
}

/// Nothing arrives for `wait`.
async fn nothing_for(c: &mut DuplexStream, wait: Duration) {
    let mut byte = [0; 1];
    if let Ok(read) = tokio::time::timeout(wait, c.read(&mut byte)).await {
        panic!("expected nothing yet, read {read:?}: {byte:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn replies_come_back_in_request_order_when_backends_answer_in_reverse() {
    LocalSet::new()
        .run_until(async {
            let world = Rc::new(World::default());
            world.set("a:1", Mode::Hold);
            let worker = worker(&world, "");
            let mut c = client(&worker);
            send(&mut c, &[&["GET", "foo"], &["GET", "hello"]]).await;
            world.until_answered("b:2", "GET hello").await;
            world.until_sent("a:1", "GET foo").await;
            // The second reply is in the proxy's hands: it waits for the first.
            nothing_for(&mut c, Duration::from_millis(200)).await;
            world.set("a:1", Mode::Answer);
            expect(&mut c, "$7\r\na:1/foo\r\n$9\r\nb:2/hello\r\n").await;
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_silent_backend_fails_its_commands_at_the_timeout_and_the_next_gets_a_new_connection() {
    LocalSet::new()
        .run_until(async {
            let world = Rc::new(World::default());
            world.set("a:1", Mode::Silent);
            let worker = worker(&world, "timeout_ms = 1000\nmin_backoff_ms = 50");
            let mut c = client(&worker);
            let start = Instant::now();
            send(&mut c, &[&["GET", "foo"], &["GET", "hello"]]).await;
            expect(
                &mut c,
                "-ERR backend a:1 unavailable: no reply within 1000 ms\r\n$9\r\nb:2/hello\r\n",
            )
            .await;
            let waited = start.elapsed();
            // Checked every 100 ms: failed at the first check past the bound.
            assert!(
                waited >= Duration::from_millis(1000) && waited <= Duration::from_millis(1100),
                "failed after {waited:?}"
            );
            world.set("a:1", Mode::Answer);
            world
                .until("a:1 is connected again", |log| {
                    log.iter()
                        .filter(|e| matches!(e, Event::Connected { addr, .. } if addr == "a:1"))
                        .count()
                        == 2
                })
                .await;
            send(&mut c, &[&["GET", "foo"]]).await;
            expect(&mut c, "$7\r\na:1/foo\r\n").await;
            let on_a = world.commands("a:1");
            let gets: Vec<usize> = on_a
                .iter()
                .filter(|(_, l)| l == "GET foo")
                .map(|(conn, _)| *conn)
                .collect();
            assert_eq!(gets, [0, 1]);
            // The new connection closed the old one on Redis's side before it carried a command.
            let kill = on_a
                .iter()
                .position(|c| *c == (1, "CLIENT KILL ID 1 ADDR client:0".into()));
            let get = on_a.iter().position(|c| *c == (1, "GET foo".into()));
            assert!(kill.is_some() && kill < get, "{on_a:?}");
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_refusing_backend_is_retried_with_backoff_and_other_backends_serve_on() {
    LocalSet::new()
        .run_until(async {
            let world = Rc::new(World::default());
            world.set("a:1", Mode::Refuse);
            let worker = worker(&world, "min_backoff_ms = 50\nmax_backoff_ms = 400");
            let refused = "-ERR backend a:1 unavailable: connection refused\r\n";
            let mut c1 = client(&worker);
            let mut c2 = client(&worker);
            send(&mut c1, &[&["GET", "foo"], &["GET", "hello"]]).await;
            expect(&mut c1, &format!("{refused}$9\r\nb:2/hello\r\n")).await;
            send(&mut c2, &[&["GET", "hello"]]).await;
            expect(&mut c2, "$9\r\nb:2/hello\r\n").await;

            world
                .until("six attempts to connect to a:1", |log| {
                    log.iter()
                        .filter(|e| matches!(e, Event::Refused { addr, .. } if addr == "a:1"))
                        .count()
                        >= 6
                })
                .await;
            let attempts: Vec<Instant> = world
                .log
                .borrow()
                .iter()
                .filter_map(|e| match e {
                    Event::Refused { at, .. } => Some(*at),
                    _ => None,
                })
                .collect();
            let delays: Vec<u128> = attempts
                .windows(2)
                .map(|w| (w[1] - w[0]).as_millis())
                .collect();
            assert_eq!(delays[..5], [50, 100, 200, 400, 400]);

            // Between attempts a:1's commands fail at once, without waiting for the next one.
            let asked = Instant::now();
            send(&mut c1, &[&["GET", "foo"], &["GET", "hello"]]).await;
            expect(&mut c1, &format!("{refused}$9\r\nb:2/hello\r\n")).await;
            assert!(asked.elapsed() < Duration::from_millis(50));

            world.set("a:1", Mode::Answer);
            world
                .until("a:1 is connected", |log| {
                    log.iter()
                        .any(|e| matches!(e, Event::Connected { addr, .. } if addr == "a:1"))
                })
                .await;
            send(&mut c1, &[&["GET", "foo"]]).await;
            expect(&mut c1, "$7\r\na:1/foo\r\n").await;
        })
        .await;
}

/// Publishes revision `revision` of the test table with `foo`'s slot (289) migrating from
/// group 1 (`a:1`) to group 2 (`b:2`), open.
fn migrate_foo(worker: &Worker, revision: u64) {
    publish_migrating_foo(worker, revision, true);
}

/// [`migrate_foo`], with the slot open (every proxy follows the migration) or not.
fn publish_migrating_foo(worker: &Worker, revision: u64, open: bool) {
    use tessera_topology::model::{Group, SlotState};
    let groups = [
        Group {
            id: 1,
            servers: vec!["a:1".into()],
        },
        Group {
            id: 2,
            servers: vec!["b:2".into()],
        },
    ];
    let mut slots: Vec<SlotState> = (0..1024)
        .map(|s| SlotState::Owned {
            group: if s < 512 { 1 } else { 2 },
        })
        .collect();
    slots[289] = SlotState::Migrating { from: 1, to: 2 };
    let closed: &[usize] = if open { &[] } else { &[289] };
    let table = crate::router::SlotTable::build_with_barriers(
        revision,
        &groups,
        &slots,
        closed,
        &worker.shared.registry,
    );
    worker.shared.table.store(Arc::new(table));
    worker.shared.published.send_replace(revision);
}

fn position(log: &[Event], what: impl Fn(&Event) -> bool) -> Option<usize> {
    log.iter().position(what)
}

#[tokio::test(start_paused = true)]
async fn a_command_on_a_migrating_slot_moves_its_keys_first_and_later_commands_wait_behind_it() {
    LocalSet::new()
        .run_until(async {
            let world = Rc::new(World::default());
            world.set("a:1", Mode::Hold);
            let worker = worker(&world, "");
            let mut c = client(&worker);
            // Routed under the table before the migration: to a:1, which holds it.
            send(&mut c, &[&["GET", "foo"]]).await;
            world.until_sent("a:1", "GET foo").await;
            migrate_foo(&worker, 1);
            assert!(
                !worker.drain.drained(1),
                "a batch routed under revision 0 is in flight"
            );
            send(&mut c, &[&["GET", "foo"], &["GET", "hello"]]).await;
            nothing_for(&mut c, Duration::from_millis(200)).await;
            let migrate = "MIGRATE b 2  0 1000 REPLACE KEYS foo";
            assert!(
                world.commands("a:1").iter().all(|(_, l)| l != migrate),
                "the MIGRATE overtook the session's earlier GET: {:?}",
                world.log.borrow()
            );
            assert!(
                world.commands("b:2").iter().all(|(_, l)| l != "GET hello"),
                "a later command overtook the one waiting for its keys to move"
            );
            world.set("a:1", Mode::Answer);
            expect(&mut c, "$7\r\na:1/foo\r\n$7\r\nb:2/foo\r\n$9\r\nb:2/hello\r\n").await;
            assert!(worker.drain.drained(1));
            let log = world.log.borrow();
            let answered = position(&log, |e| {
                matches!(e, Event::Replied { addr, line } if addr == "a:1" && line == "GET foo")
            });
            let moved = position(&log, |e| {
                matches!(e, Event::Replied { addr, line } if addr == "a:1" && line == migrate)
            });
            let sent_to_b = position(&log, |e| {
                matches!(e, Event::Command { addr, line, .. } if addr == "b:2" && line == "GET foo")
            });
            let hello = position(&log, |e| {
                matches!(e, Event::Command { addr, line, .. } if addr == "b:2" && line == "GET hello")
            });
            assert!(
                answered.is_some() && answered < moved && moved < sent_to_b && sent_to_b < hello,
                "{log:?}"
            );
            // The MIGRATE went on a connection of its own, not on the one sessions share.
            let conns: Vec<usize> = world
                .commands("a:1")
                .iter()
                .filter(|(_, l)| l == "GET foo" || l == migrate)
                .map(|(c, _)| *c)
                .collect();
            assert_eq!(conns.len(), 2);
            assert_ne!(conns[0], conns[1]);
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_migrate_answers_tryagain_and_sends_nothing_to_the_destination() {
    LocalSet::new()
        .run_until(async {
            let world = Rc::new(World::default());
            world.migrate_replies.borrow_mut().insert(
                "a:1".into(),
                "-IOERR error or timeout connecting to the client\r\n".into(),
            );
            let worker = worker(&world, "");
            migrate_foo(&worker, 1);
            let mut c = client(&worker);
            send(&mut c, &[&["GET", "foo"], &["GET", "hello"]]).await;
            expect(
                &mut c,
                "-TRYAGAIN slot 289 is migrating and its keys could not be moved to b:2: IOERR \
                 error or timeout connecting to the client\r\n$9\r\nb:2/hello\r\n",
            )
            .await;
            assert!(
                world.commands("b:2").iter().all(|(_, l)| l != "GET foo"),
                "{:?}",
                world.log.borrow()
            );
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_command_on_a_slot_not_every_proxy_follows_waits_until_it_opens_or_the_timeout() {
    LocalSet::new()
        .run_until(async {
            let world = Rc::new(World::default());
            let worker = worker(&world, "timeout_ms = 1000");
            publish_migrating_foo(&worker, 1, false);
            let mut c = client(&worker);
            send(&mut c, &[&["GET", "foo"], &["GET", "hello"]]).await;
            nothing_for(&mut c, Duration::from_millis(300)).await;
            assert!(
                world
                    .commands("a:1")
                    .iter()
                    .all(|(_, l)| !l.starts_with("MIGRATE"))
                    && world.commands("b:2").is_empty(),
                "sent before the slot opened: {:?}",
                world.log.borrow()
            );
            publish_migrating_foo(&worker, 2, true);
            expect(&mut c, "$7\r\nb:2/foo\r\n$9\r\nb:2/hello\r\n").await;
            assert!(
                world
                    .commands("a:1")
                    .iter()
                    .any(|(_, l)| l == "MIGRATE b 2  0 1000 REPLACE KEYS foo")
            );

            // A slot that does not open within the backend timeout: TRYAGAIN, nothing sent.
            publish_migrating_foo(&worker, 3, false);
            let asked = Instant::now();
            send(&mut c, &[&["GET", "foo"]]).await;
            expect(
                &mut c,
                "-TRYAGAIN slot 289 is migrating and its keys could not be moved to b:2: not \
                 every proxy follows the migration yet\r\n",
            )
            .await;
            assert!(asked.elapsed() >= Duration::from_millis(1000));
            let gets = world
                .commands("b:2")
                .iter()
                .filter(|(_, l)| l == "GET foo")
                .count();
            assert_eq!(gets, 1);
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_worker_reports_a_table_drained_only_once_commands_routed_by_the_earlier_one_are_answered()
 {
    LocalSet::new()
        .run_until(async {
            let world = Rc::new(World::default());
            world.set("a:1", Mode::Hold);
            let worker = worker(&world, "");
            tokio::task::spawn_local(worker.clone().report_drained());
            let mut drained = worker.shared.drained.subscribe();
            let mut c = client(&worker);
            send(&mut c, &[&["GET", "foo"]]).await;
            world.until_sent("a:1", "GET foo").await;
            migrate_foo(&worker, 1);
            let early = tokio::time::timeout(Duration::from_millis(500), async {
                loop {
                    if drained.borrow_and_update()[0] >= 1 {
                        return;
                    }
                    drained.changed().await.expect("the sender lives");
                }
            })
            .await;
            assert!(
                early.is_err(),
                "revision 1 reported drained while GET foo of revision 0 is in flight"
            );
            world.set("a:1", Mode::Answer);
            expect(&mut c, "$7\r\na:1/foo\r\n").await;
            let reported = tokio::time::timeout(BOUND, async {
                while drained.borrow_and_update()[0] < 1 {
                    drained.changed().await.expect("the sender lives");
                }
            })
            .await;
            assert!(reported.is_ok(), "revision 1 never reported drained");
        })
        .await;
}

/// Sessions of a worker gather their replies in one shared buffer: a session whose client
/// is gone when its replies come leaves nothing there for the next session to send.
#[tokio::test(start_paused = true)]
async fn replies_for_a_client_that_left_never_reach_another_client() {
    LocalSet::new()
        .run_until(async {
            let world = Rc::new(World::default());
            world.set("a:1", Mode::Hold);
            let worker = worker(&world, "");
            let mut gone = client(&worker);
            send(&mut gone, &[&["GET", "foo"]]).await;
            world.until_sent("a:1", "GET foo").await;
            drop(gone);
            world.set("a:1", Mode::Answer);
            // The session ends once its write to the gone client fails.
            let alive = || worker.shared.stats.sessions_alive.load(Relaxed);
            eventually("the session of the gone client is still alive", || {
                alive() <= 0
            })
            .await;
            let mut next = client(&worker);
            send(&mut next, &[&["GET", "hello"]]).await;
            expect(&mut next, "$9\r\nb:2/hello\r\n").await;
            nothing_for(&mut next, Duration::from_millis(100)).await;
        })
        .await;
}

/// The worker expects a session answered lately to send again until it has (then a busy
/// turn's write stops waiting for more).
#[tokio::test(start_paused = true)]
async fn a_session_answered_is_expected_to_send_again_until_it_does() {
    LocalSet::new()
        .run_until(async {
            let world = Rc::new(World::default());
            world.set("a:1", Mode::Hold);
            let worker = worker(&world, "");
            let mut first = client(&worker);
            let mut second = client(&worker);
            let expects = || worker.activity.expects_more(std::time::Instant::now());
            assert!(!expects(), "no session answered yet");
            send(&mut first, &[&["GET", "foo"]]).await;
            send(&mut second, &[&["GET", "foo"]]).await;
            world.until_sent("a:1", "GET foo").await;
            assert!(!expects(), "both wait for replies");
            world.set("a:1", Mode::Answer);
            expect(&mut first, "$7\r\na:1/foo\r\n").await;
            expect(&mut second, "$7\r\na:1/foo\r\n").await;
            world.set("a:1", Mode::Hold);
            send(&mut first, &[&["GET", "foo"]]).await;
            send(&mut second, &[&["GET", "foo"]]).await;
            eventually("both answered sent again: none is expected", || !expects()).await;
            world.set("a:1", Mode::Answer);
            expect(&mut first, "$7\r\na:1/foo\r\n").await;
            drop(first);
            expect(&mut second, "$7\r\na:1/foo\r\n").await;
            drop(second);
            eventually("the sessions ended", || {
                worker.shared.stats.sessions_alive.load(Relaxed) <= 0
            })
            .await;
            assert!(!expects(), "sessions that ended are not expected");
        })
        .await;
}

/// Every connection's task holds its session's future: one copy of the session and the
/// state of one wait, not two copies (as an `async fn run(self)` would keep).
#[tokio::test(flavor = "current_thread")]
async fn a_sessions_task_holds_one_copy_of_the_session() {
    let world = Rc::new(World::default());
    let worker = worker(&world, "");
    let (_ours, theirs) = tokio::io::duplex(64);
    let session = Session::new(worker.clone(), Box::new(theirs), Default::default());
    let size = std::mem::size_of_val(&session);
    let task = std::mem::size_of_val(&session.run());
    assert!(
        task < 2 * size,
        "the task of a {size}-byte session is {task} bytes"
    );
}

/// A Redis the test plays itself: the far end of each backend connection is handed to the
/// test, and the proxy's writes to it are counted.
#[derive(Default)]
struct ByHand {
    ends: RefCell<Vec<DuplexStream>>,
    arrived: Notify,
    writes: Rc<Cell<usize>>,
}

impl ByHand {
    /// The far end of the next connection the proxy opens.
    async fn next(&self) -> DuplexStream {
        tokio::time::timeout(BOUND, async {
            loop {
                if let Some(end) = self.ends.borrow_mut().pop() {
                    return end;
                }
                self.arrived.notified().await;
            }
        })
        .await
        .expect("the proxy connects to its backend")
    }

    /// The far end of the next connection, its setup (`HELLO 2`, `CLIENT INFO`) read and
    /// answered as a Redis without HELLO would.
    async fn next_set_up(&self, buf: &mut BytesMut) -> DuplexStream {
        let mut redis = self.next().await;
        assert_eq!(
            commands_on(&mut redis, buf, 2).await,
            ["HELLO 2", "CLIENT INFO"]
        );
        let info = "id=1 addr=client:0\n";
        let answer = format!(
            "-ERR unknown command 'HELLO'\r\n${}\r\n{info}\r\n",
            info.len()
        );
        redis.write_all(answer.as_bytes()).await.unwrap();
        redis
    }
}

impl Connect for ByHand {
    fn connect<'a>(
        &'a self,
        _addr: &'a str,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<BoxStream>> + 'a>> {
        Box::pin(async move {
            let (proxy_side, redis_side) = tokio::io::duplex(64 * 1024);
            self.ends.borrow_mut().push(redis_side);
            self.arrived.notify_one();
            Ok(Box::new(Counted {
                inner: proxy_side,
                writes: self.writes.clone(),
            }) as BoxStream)
        })
    }
}

/// A stream that counts the writes that carried bytes.
struct Counted {
    inner: DuplexStream,
    writes: Rc<Cell<usize>>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r
            && n > 0
        {
            self.writes.set(self.writes.get() + 1);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Reads the next `n` commands the proxy sends on `end`, as lines.
async fn commands_on(end: &mut DuplexStream, buf: &mut BytesMut, n: usize) -> Vec<String> {
    let mut decoder = RequestDecoder::new(Config::default().proxy.limits());
    let mut lines = Vec::new();
    while lines.len() < n {
        match decoder.decode(buf).expect("the proxy sends valid requests") {
            Some(req) => lines.push(
                req.args
                    .iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            None => {
                let read = tokio::time::timeout(BOUND, end.read_buf(buf)).await;
                assert!(
                    matches!(read, Ok(Ok(1..))),
                    "waiting for {n} commands, got {lines:?} and then {read:?}"
                );
            }
        }
    }
    lines
}

/// Commands that several sessions hand a backend connection in one turn of the worker go to
/// Redis in one write, even when the connection also had replies to read in that turn: Redis
/// then reads them at once instead of waking once per session.
#[tokio::test(start_paused = true)]
async fn commands_sessions_send_in_one_turn_reach_redis_in_one_write() {
    LocalSet::new()
        .run_until(async {
            let hand = Rc::new(ByHand::default());
            let worker = worker_over(
                "[[group]]\nid = 1\nservers = [\"a:1\"]\n[[slots]]\nrange = \"0-1023\"\ngroup = 1\n",
                hand.clone(),
            );
            let mut first = client(&worker);
            let mut c1 = client(&worker);
            let mut c2 = client(&worker);
            for c in [&mut first, &mut c1, &mut c2] {
                send(c, &[&["PING"]]).await;
                expect(c, "+PONG\r\n").await;
            }
            send(&mut first, &[&["GET", "k0"]]).await;
            let mut buf = BytesMut::new();
            let mut redis = hand.next_set_up(&mut buf).await;
            assert_eq!(commands_on(&mut redis, &mut buf, 1).await, ["GET k0"]);

            // In one turn: a request of c1, the reply to k0, a request of c2.
            let before = hand.writes.get();
            send(&mut c1, &[&["GET", "k1"]]).await;
            redis.write_all(b"$2\r\nv0\r\n").await.unwrap();
            send(&mut c2, &[&["GET", "k2"]]).await;
            expect(&mut first, "$2\r\nv0\r\n").await;
            assert_eq!(commands_on(&mut redis, &mut buf, 2).await, ["GET k1", "GET k2"]);
            assert_eq!(
                hand.writes.get() - before,
                1,
                "the two sessions' commands took more than one write"
            );
            redis.write_all(b"$2\r\nv1\r\n$2\r\nv2\r\n").await.unwrap();
            expect(&mut c1, "$2\r\nv1\r\n").await;
            expect(&mut c2, "$2\r\nv2\r\n").await;
        })
        .await;
}

/// A worker with `hold_in_flight = hold` over one backend, four sessions, and two commands
/// written to Redis and unanswered (`GET k0`, `GET k1` of sessions 0 and 1): the connection
/// to Redis, its read buffer, the sessions' streams and the connector counting writes.
async fn two_unanswered(hold: usize) -> (Rc<ByHand>, Vec<DuplexStream>, DuplexStream, BytesMut) {
    let hand = Rc::new(ByHand::default());
    let worker = worker_over(
        &format!(
            "[backend]\nhold_in_flight = {hold}\n[[group]]\nid = 1\n\
             servers = [\"a:1\"]\n[[slots]]\nrange = \"0-1023\"\ngroup = 1\n"
        ),
        hand.clone(),
    );
    let mut clients: Vec<DuplexStream> = (0..4).map(|_| client(&worker)).collect();
    for c in &mut clients {
        send(c, &[&["PING"]]).await;
        expect(c, "+PONG\r\n").await;
    }
    send(&mut clients[0], &[&["GET", "k0"]]).await;
    let mut buf = BytesMut::new();
    let mut redis = hand.next_set_up(&mut buf).await;
    assert_eq!(commands_on(&mut redis, &mut buf, 1).await, ["GET k0"]);
    send(&mut clients[1], &[&["GET", "k1"]]).await;
    assert_eq!(commands_on(&mut redis, &mut buf, 1).await, ["GET k1"]);
    (hand, clients, redis, buf)
}

/// Redis answers `GET k1`, `GET k2`, `GET k3` (`v1`..`v3`) in one write, and sessions 1 to 3
/// each get their own.
async fn answer_k1_to_k3(redis: &mut DuplexStream, clients: &mut [DuplexStream]) {
    redis
        .write_all(b"$2\r\nv1\r\n$2\r\nv2\r\n$2\r\nv3\r\n")
        .await
        .unwrap();
    for (i, c) in clients.iter_mut().enumerate().skip(1) {
        expect(c, &format!("$2\r\nv{i}\r\n")).await;
    }
}

/// `GET k2` and `GET k3` reach Redis in one write, the only one since `before` writes
/// (`why`: what a second write would mean).
async fn k2_and_k3_in_one_write(
    hand: &ByHand,
    redis: &mut DuplexStream,
    buf: &mut BytesMut,
    before: usize,
    why: &str,
) {
    assert_eq!(commands_on(redis, buf, 2).await, ["GET k2", "GET k3"]);
    assert_eq!(hand.writes.get() - before, 1, "{why}");
}

/// While `backend.hold_in_flight` commands a connection wrote are unanswered, the commands
/// sessions hand it wait, and go to Redis in one write when a reply comes back; with 0 they go
/// at once.
#[tokio::test(start_paused = true)]
async fn commands_wait_for_a_reply_while_hold_in_flight_are_unanswered() {
    for hold in [2, 0] {
        LocalSet::new()
            .run_until(async {
                let (hand, mut clients, mut redis, mut buf) = two_unanswered(hold).await;

                send(&mut clients[2], &[&["GET", "k2"]]).await;
                send(&mut clients[3], &[&["GET", "k3"]]).await;
                if hold == 2 {
                    nothing_for(&mut redis, Duration::from_millis(50)).await;
                    let before = hand.writes.get();
                    redis.write_all(b"$2\r\nv0\r\n").await.unwrap();
                    expect(&mut clients[0], "$2\r\nv0\r\n").await;
                    k2_and_k3_in_one_write(
                        &hand,
                        &mut redis,
                        &mut buf,
                        before,
                        "the held commands took two writes",
                    )
                    .await;
                } else {
                    assert_eq!(
                        commands_on(&mut redis, &mut buf, 2).await,
                        ["GET k2", "GET k3"]
                    );
                    redis.write_all(b"$2\r\nv0\r\n").await.unwrap();
                    expect(&mut clients[0], "$2\r\nv0\r\n").await;
                }
                answer_k1_to_k3(&mut redis, &mut clients).await;
            })
            .await;
    }
}

/// Held commands that a reply lets go are written at the end of that turn, together with the
/// commands the turn's sessions hand over meanwhile: one write, not two (Redis, asleep by
/// the time its reply is read, would be woken for each).
#[tokio::test(start_paused = true)]
async fn held_commands_go_with_the_commands_of_the_turn_a_reply_wakes() {
    LocalSet::new()
        .run_until(async {
            let (hand, mut clients, mut redis, mut buf) = two_unanswered(2).await;
            send(&mut clients[2], &[&["GET", "k2"]]).await;
            nothing_for(&mut redis, Duration::from_millis(50)).await;

            // The reply and a fourth session's command become ready in the same turn, the
            // reply first.
            let before = hand.writes.get();
            redis.write_all(b"$2\r\nv0\r\n").await.unwrap();
            send(&mut clients[3], &[&["GET", "k3"]]).await;
            expect(&mut clients[0], "$2\r\nv0\r\n").await;
            k2_and_k3_in_one_write(
                &hand,
                &mut redis,
                &mut buf,
                before,
                "the held command and the turn's new one took two writes",
            )
            .await;
            answer_k1_to_k3(&mut redis, &mut clients).await;
        })
        .await;
}
