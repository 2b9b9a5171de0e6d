//! A dead or hung backend: its slots get a bounded error naming it, the other group keeps
//! working, and once the backend is back the proxy serves its keys again without a restart.

use tessera_testkit as harness;

use std::time::{Duration, Instant};

use harness::*;

/// Wall-time bound on an error reply for a dead backend (default timeout_ms is 1 s).
const DEAD_BOUND: Duration = Duration::from_secs(2);

fn two_groups() -> (RedisServer, RedisServer, String, String) {
    let r1 = RedisServer::start();
    let r2 = RedisServer::start();
    let k1 = find_key("alive:", |k| group_of_key(k, 2) == 1);
    let k2 = find_key("dead:", |k| group_of_key(k, 2) == 2);
    (r1, r2, k1, k2)
}

/// Sends one command and returns its reply and how long it took.
fn timed<A: AsRef<[u8]>>(c: &mut RawConn, args: &[A]) -> (Resp, Duration) {
    let t = Instant::now();
    let r = c.cmd(args);
    (r, t.elapsed())
}

/// Sends `args` on `c` until the reply is `want`, for at most `bound`; panics with `what` and
/// the last reply otherwise.
#[track_caller]
fn until_reply(c: &mut RawConn, args: &[&str], want: Resp, bound: Duration, what: &str) {
    let mut last = Resp::nil();
    let ok = wait_until(bound, || {
        last = c.cmd(args);
        last == want
    });
    assert!(ok, "{what}: still {last:?} after {bound:?}, want {want:?}");
}

#[test]
fn killed_backend_fails_fast_and_recovers_after_restart() {
    let (r1, mut r2, k1, k2) = two_groups();
    let proxy = Proxy::start(&[&[&r1], &[&r2]]);
    let mut c = proxy.raw();
    assert_eq!(c.cmd(&["SET", &k1, "one"]), Resp::ok());
    assert_eq!(c.cmd(&["SET", &k2, "two"]), Resp::ok());

    r2.kill();
    let expected = format!("backend {} unavailable", r2.addr());
    for attempt in 0..5 {
        let (reply, took) = timed(&mut c, &["GET", &k2]);
        assert!(
            reply.error_text().contains(&expected),
            "attempt {attempt}: GET of a key on the dead backend answered {reply:?}, \
             expected an error containing {expected:?}"
        );
        assert!(took < DEAD_BOUND, "attempt {attempt}: error took {took:?}");
        // The other group is unaffected, on the same session.
        let (reply, took) = timed(&mut c, &["GET", &k1]);
        assert_eq!(reply, Resp::bulk("one"), "attempt {attempt}");
        assert!(took < DEAD_BOUND, "GET on the live group took {took:?}");
    }
    // Writes too, and from a fresh session.
    let mut fresh = proxy.raw();
    let (reply, took) = timed(&mut fresh, &["SET", &k2, "x"]);
    assert!(reply.error_text().contains(&expected), "SET: {reply:?}");
    assert!(took < DEAD_BOUND, "SET error took {took:?}");
    assert_eq!(fresh.cmd(&["SET", &k1, "uno"]), Resp::ok());
    // A split command touching both groups answers (with an error) within the bound.
    let (reply, took) = timed(&mut fresh, &["MGET", &k1, &k2]);
    assert!(reply.is_error(), "MGET over a dead group: {reply:?}");
    assert!(took < DEAD_BOUND, "MGET took {took:?}");
    assert_eq!(fresh.cmd(&["PING"]), Resp::simple("PONG"));

    // Back on the same port (empty: no persistence): served again without a proxy restart.
    r2.restart();
    let t = Instant::now();
    until_reply(
        &mut c,
        &["SET", &k2, "again"],
        Resp::ok(),
        Duration::from_secs(10),
        "backend not used again after restart",
    );
    let took = t.elapsed();
    assert!(took < Duration::from_secs(5), "recovery took {took:?}");
    assert_eq!(c.cmd(&["GET", &k2]), Resp::bulk("again"));
    let direct: Option<String> = redis::cmd("GET").arg(&k2).query(&mut r2.conn()).unwrap();
    assert_eq!(direct.as_deref(), Some("again"));
    assert_eq!(c.cmd(&["GET", &k1]), Resp::bulk("uno"));
    // Every session recovers, including one opened while the backend was down. It may be
    // on the other worker, whose connection waits out its own backoff (50 ms) first.
    until_reply(
        &mut fresh,
        &["GET", &k2],
        Resp::bulk("again"),
        Duration::from_secs(5),
        "the other session did not recover",
    );
}

#[test]
fn proxy_starts_while_a_backend_is_down() {
    let (r1, mut r2, k1, k2) = two_groups();
    r2.kill();
    let proxy = Proxy::start(&[&[&r1], &[&r2]]);
    let mut c = proxy.raw();
    assert_eq!(c.cmd(&["SET", &k1, "one"]), Resp::ok());
    let (reply, took) = timed(&mut c, &["GET", &k2]);
    assert!(
        reply
            .error_text()
            .contains(&format!("backend {} unavailable", r2.addr())),
        "{reply:?}"
    );
    assert!(took < DEAD_BOUND, "{took:?}");
    r2.restart();
    until_reply(
        &mut c,
        &["SET", &k2, "two"],
        Resp::ok(),
        Duration::from_secs(10),
        "never recovered",
    );
    assert_eq!(c.cmd(&["GET", &k2]), Resp::bulk("two"));
}

#[test]
fn hung_backend_times_out_and_recovers_after_sigcont() {
    let (r1, r2, k1, k2) = two_groups();
    let timeout_ms = 500;
    let proxy = Proxy::start_with(
        &[&[&r1], &[&r2]],
        &[("backend.timeout_ms", &timeout_ms.to_string())],
    );
    let mut c = proxy.raw();
    assert_eq!(c.cmd(&["SET", &k1, "one"]), Resp::ok());
    assert_eq!(c.cmd(&["SET", &k2, "two"]), Resp::ok());

    let bound = Duration::from_millis(timeout_ms) + Duration::from_millis(1500);
    {
        let paused = r2.pause(); // SIGCONT on drop, also if an assertion fails
        for attempt in 0..3 {
            let (reply, took) = timed(&mut c, &["GET", &k2]);
            eprintln!("hung backend, attempt {attempt}: {reply:?} after {took:?}");
            assert!(
                reply.is_error(),
                "attempt {attempt}: GET on a hung backend answered {reply:?}"
            );
            assert!(
                took < bound,
                "attempt {attempt}: error after {took:?} (timeout_ms {timeout_ms})"
            );
            let (reply, took) = timed(&mut c, &["GET", &k1]);
            assert_eq!(reply, Resp::bulk("one"));
            assert!(took < bound, "live group took {took:?}");
        }
        // A pipeline of commands to the hung group: every one gets an error, in bounded time.
        let mut bytes = Vec::new();
        for _ in 0..20 {
            bytes.extend(encode(&["GET", &k2]));
            bytes.extend(encode(&["GET", &k1]));
        }
        let t = Instant::now();
        c.send(&bytes);
        for i in 0..20 {
            let r = c.read().unwrap();
            assert!(r.is_error(), "pipelined GET {i} to hung group: {r:?}");
            assert_eq!(c.read().unwrap(), Resp::bulk("one"));
        }
        assert!(
            t.elapsed() < bound * 3,
            "20 pipelined commands to a hung group took {:?}",
            t.elapsed()
        );
        paused.resume();
    }

    // After SIGCONT the data is still there and is served again.
    until_reply(
        &mut c,
        &["GET", &k2],
        Resp::bulk("two"),
        Duration::from_secs(10),
        "not recovered after SIGCONT",
    );
    assert_eq!(c.cmd(&["SET", &k2, "three"]), Resp::ok());
    let direct: Option<String> = redis::cmd("GET").arg(&k2).query(&mut r2.conn()).unwrap();
    assert_eq!(direct.as_deref(), Some("three"));
}

#[test]
fn pipeline_over_a_dead_group_keeps_reply_order() {
    let (r1, mut r2, k1, k2) = two_groups();
    let proxy = Proxy::start(&[&[&r1], &[&r2]]);
    let mut c = proxy.raw();
    assert_eq!(c.cmd(&["SET", &k1, "one"]), Resp::ok());
    r2.kill();
    let mut bytes = Vec::new();
    for i in 0..50 {
        bytes.extend(encode(&["GET", &k2]));
        bytes.extend(encode(&["ECHO", &i.to_string()]));
        bytes.extend(encode(&["GET", &k1]));
    }
    let t = Instant::now();
    c.send(&bytes);
    for i in 0..50 {
        let r = c.read().unwrap();
        assert!(
            r.error_text()
                .contains(&format!("backend {} unavailable", r2.addr())),
            "{i}: {r:?}"
        );
        assert_eq!(c.read().unwrap(), Resp::bulk(i.to_string()), "{i}");
        assert_eq!(c.read().unwrap(), Resp::bulk("one"), "{i}");
    }
    assert!(t.elapsed() < DEAD_BOUND * 2, "took {:?}", t.elapsed());
}

#[test]
fn reconnect_keeps_the_selected_db_and_the_backend_password() {
    // Backends require a password; the proxy sends it (backend.password) on every new
    // connection, and a session's SELECT applies to connections made after a restart too.
    let r1 = RedisServer::start_with_args(&["--requirepass", "bpw"]);
    let mut r2 = RedisServer::start_with_args(&["--requirepass", "bpw"]);
    let k2 = find_key("db5:", |k| group_of_key(k, 2) == 2);
    let k1 = find_key("db5:", |k| group_of_key(k, 2) == 1);
    let proxy = Proxy::start_with(&[&[&r1], &[&r2]], &[("backend.password", &toml_str("bpw"))]);
    let mut c = proxy.raw();
    assert_eq!(c.cmd(&["SELECT", "5"]), Resp::ok());
    assert_eq!(c.cmd(&["SET", &k1, "a"]), Resp::ok());
    assert_eq!(c.cmd(&["SET", &k2, "b"]), Resp::ok());
    let direct = |s: &RedisServer, db: u32, key: &str| -> Option<String> {
        let client =
            redis::Client::open(format!("redis://:bpw@127.0.0.1:{}/{db}", s.port)).unwrap();
        let mut conn = client.get_connection().unwrap();
        redis::cmd("GET").arg(key).query(&mut conn).unwrap()
    };
    assert_eq!(direct(&r1, 5, &k1).as_deref(), Some("a"));
    assert_eq!(direct(&r2, 5, &k2).as_deref(), Some("b"));
    assert_eq!(direct(&r2, 0, &k2), None);

    r2.restart();
    until_reply(
        &mut c,
        &["SET", &k2, "after-restart"],
        Resp::ok(),
        Duration::from_secs(10),
        "not recovered after restart",
    );
    assert_eq!(
        direct(&r2, 5, &k2).as_deref(),
        Some("after-restart"),
        "write after reconnect did not go to the session's db 5"
    );
    assert_eq!(
        direct(&r2, 0, &k2),
        None,
        "write after reconnect went to db 0"
    );
    assert_eq!(c.cmd(&["GET", &k2]), Resp::bulk("after-restart"));
}

#[test]
fn wrong_backend_password_gives_an_error_not_a_hang() {
    let r1 = RedisServer::start_with_args(&["--requirepass", "right"]);
    let proxy = Proxy::start_with(&[&[&r1]], &[("backend.password", &toml_str("wrong"))]);
    let mut c = proxy.raw();
    let (reply, took) = timed(&mut c, &["GET", "k"]);
    assert!(
        reply.is_error(),
        "GET with a wrong backend password: {reply:?}"
    );
    assert!(took < DEAD_BOUND, "took {took:?}");
    assert_eq!(c.cmd(&["PING"]), Resp::simple("PONG"));
}

/// A TCP relay in front of a Redis whose connections can be made to hold what the proxy
/// sends, as a slow network path would, and deliver it later: bytes in flight when a
/// connection is given up on still reach Redis.
mod relay {
    use std::io::{Read, Write};
    use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    use std::sync::{Arc, Mutex};
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    struct Link {
        hold: AtomicBool,
        /// The upstream side saw its end (Redis closed it, or answered and closed).
        upstream_done: AtomicBool,
    }

    pub struct Relay {
        pub addr: SocketAddr,
        links: Arc<Mutex<Vec<Arc<Link>>>>,
        stop: Arc<AtomicBool>,
        accept: Option<JoinHandle<()>>,
    }

    impl Relay {
        pub fn start(upstream: SocketAddr) -> Relay {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
            listener.set_nonblocking(true).expect("nonblocking");
            let addr = listener.local_addr().expect("relay addr");
            let links: Arc<Mutex<Vec<Arc<Link>>>> = Arc::default();
            let stop = Arc::new(AtomicBool::new(false));
            let (l, s) = (links.clone(), stop.clone());
            let accept = std::thread::spawn(move || {
                while !s.load(SeqCst) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let link = Arc::new(Link {
                                hold: AtomicBool::new(false),
                                upstream_done: AtomicBool::new(false),
                            });
                            l.lock().unwrap().push(link.clone());
                            serve(client, upstream, link, s.clone());
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
            Relay {
                addr,
                links,
                stop,
                accept: Some(accept),
            }
        }

        /// Makes every connection open now hold what the proxy sends on it.
        pub fn hold_open_links(&self) -> usize {
            let links = self.links.lock().unwrap();
            for l in links.iter() {
                l.hold.store(true, SeqCst);
            }
            links.len()
        }

        /// Delivers what the held connections hold, closes their sending side, and waits
        /// (at most `bound`) until Redis has answered and closed them, or dropped them.
        pub fn release_held(&self, bound: Duration) -> bool {
            let held: Vec<Arc<Link>> = self
                .links
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.hold.swap(false, SeqCst))
                .cloned()
                .collect();
            let t = Instant::now();
            while t.elapsed() < bound {
                if held.iter().all(|l| l.upstream_done.load(SeqCst)) {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            false
        }
    }

    impl Drop for Relay {
        fn drop(&mut self) {
            self.stop.store(true, SeqCst);
            if let Some(t) = self.accept.take() {
                let _ = t.join();
            }
        }
    }

    /// Copies both ways until either side ends or the relay stops (each read waits at most
    /// 20 ms, so every thread sees `stop` soon).
    fn serve(client: TcpStream, upstream: SocketAddr, link: Arc<Link>, stop: Arc<AtomicBool>) {
        let Ok(server) = TcpStream::connect(upstream) else {
            return;
        };
        let tick = Some(Duration::from_millis(20));
        for s in [&client, &server] {
            s.set_read_timeout(tick).expect("read timeout");
        }
        let (mut c_rd, mut s_wr) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        let (stop2, link2) = (stop.clone(), link.clone());
        // Proxy to Redis: held bytes wait for the release, then go out even if the proxy
        // has closed its side meanwhile (as data in flight would).
        std::thread::spawn(move || {
            let mut held = Vec::new();
            let mut client_done = false;
            let mut buf = [0u8; 16 * 1024];
            while !stop2.load(SeqCst) {
                if !client_done {
                    match c_rd.read(&mut buf) {
                        Ok(0) => client_done = true,
                        Ok(n) => held.extend_from_slice(&buf[..n]),
                        Err(e) if is_tick(&e) => {}
                        Err(_) => client_done = true,
                    }
                } else {
                    std::thread::sleep(Duration::from_millis(5));
                }
                if !link2.hold.load(SeqCst) {
                    if !held.is_empty() {
                        let _ = s_wr.write_all(&held);
                        held.clear();
                    }
                    if client_done {
                        let _ = s_wr.shutdown(Shutdown::Write);
                        return;
                    }
                }
            }
        });
        // Redis to the proxy.
        let (mut s_rd, mut c_wr) = (server, client);
        std::thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            while !stop.load(SeqCst) {
                match s_rd.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let _ = c_wr.write_all(&buf[..n]);
                    }
                    Err(e) if is_tick(&e) => {}
                    Err(_) => break,
                }
            }
            link.upstream_done.store(true, SeqCst);
            let _ = c_wr.shutdown(Shutdown::Both);
        });
    }

    fn is_tick(e: &std::io::Error) -> bool {
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )
    }
}

/// A command that timed out may still be in Redis's hands (in flight on the network, or
/// read and not yet run). The connection that replaces the broken one must not carry a
/// command before Redis can no longer run it: a timed-out `SET k 1` must never land after
/// the acknowledged `SET k 2` sent once the backend answered again.
#[test]
fn a_timed_out_command_cannot_run_after_a_later_acknowledged_one() {
    let r = RedisServer::start();
    let relay = relay::Relay::start(r.socket_addr());
    let relay_addr = relay.addr.to_string();
    let proxy = ProxyBuilder::with_addrs(&[&[&relay_addr]])
        .settings(&[
            ("proxy.workers", "1"),
            ("backend.timeout_ms", "300"),
            ("backend.min_backoff_ms", "10"),
        ])
        .start();
    let mut c = proxy.raw();
    assert_eq!(c.cmd(&["SET", "k", "0"]), Resp::ok());
    assert_eq!(relay.hold_open_links(), 1, "one backend connection");
    let reply = c.cmd(&["SET", "k", "1"]);
    assert!(
        reply.error_text().contains("no reply within 300 ms"),
        "SET k 1 on a held connection: {reply:?}"
    );
    until_reply(
        &mut c,
        &["SET", "k", "2"],
        Resp::ok(),
        Duration::from_secs(5),
        "no new backend connection",
    );
    // What the broken connection had sent reaches Redis now.
    assert!(
        relay.release_held(Duration::from_secs(5)),
        "the held connection did not end"
    );
    let direct: Option<String> = redis::cmd("GET").arg("k").query(&mut r.conn()).unwrap();
    assert_eq!(
        direct.as_deref(),
        Some("2"),
        "the timed-out SET ran after the acknowledged one"
    );
    assert_eq!(c.cmd(&["GET", "k"]), Resp::bulk("2"));
}
