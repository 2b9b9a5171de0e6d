//! Pipelining: 10,000 mixed commands in one write, every reply checked in order against a
//! model; and a slow group must not delay replies of a pipeline that only touches the other.

use tessera_testkit as harness;

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use harness::*;

const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

/// The commands, their expected replies, and the model of the keyspace they imply.
fn build(n: usize) -> (Vec<Vec<Vec<u8>>>, Vec<Resp>) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut model: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut cmds: Vec<Vec<Vec<u8>>> = Vec::with_capacity(n);
    let mut want: Vec<Resp> = Vec::with_capacity(n);
    let mut big_values = 0;
    let key = |rng: &mut Rng| format!("pk:{}", rng.below(300)).into_bytes();
    let counter = |rng: &mut Rng| format!("ctr:{}", rng.below(40)).into_bytes();
    for i in 0..n {
        let roll = rng.below(100);
        let (cmd, reply): (Vec<Vec<u8>>, Resp) = match roll {
            0..=24 => {
                let k = key(&mut rng);
                // Mostly small values, some KiB-sized, a few of 100 KiB.
                let len = if big_values < 6 && rng.below(1000) < 3 {
                    big_values += 1;
                    100 * 1024
                } else if rng.below(20) == 0 {
                    1024 + rng.below(8 * 1024)
                } else {
                    rng.below(100)
                };
                let fill = b'a' + (i % 26) as u8;
                let mut v = format!("{i}:").into_bytes();
                v.resize(len.max(v.len()), fill);
                model.insert(k.clone(), v.clone());
                (vec![b"SET".to_vec(), k, v], Resp::ok())
            }
            25..=49 => {
                let k = key(&mut rng);
                let r = Resp::Bulk(model.get(&k).cloned());
                (vec![b"GET".to_vec(), k], r)
            }
            50..=61 => {
                let k = counter(&mut rng);
                let cur = model
                    .get(&k)
                    .map(|v| {
                        String::from_utf8(v.clone())
                            .unwrap()
                            .parse::<i64>()
                            .unwrap()
                    })
                    .unwrap_or(0);
                model.insert(k.clone(), (cur + 1).to_string().into_bytes());
                (vec![b"INCR".to_vec(), k], Resp::Int(cur + 1))
            }
            62..=71 => {
                let count = 1 + rng.below(6);
                let mut c = vec![b"MGET".to_vec()];
                let mut items = Vec::new();
                for _ in 0..count {
                    let k = if rng.below(4) == 0 {
                        counter(&mut rng)
                    } else {
                        key(&mut rng)
                    };
                    items.push(Resp::Bulk(model.get(&k).cloned()));
                    c.push(k);
                }
                (c, Resp::array(items))
            }
            72..=79 => {
                let count = 1 + rng.below(4);
                let mut c = vec![b"DEL".to_vec()];
                let mut removed = 0;
                for _ in 0..count {
                    let k = if rng.below(5) == 0 {
                        counter(&mut rng)
                    } else {
                        key(&mut rng)
                    };
                    if model.remove(&k).is_some() {
                        removed += 1;
                    }
                    c.push(k);
                }
                (c, Resp::Int(removed))
            }
            80..=84 => {
                let count = 1 + rng.below(5);
                let mut c = vec![b"EXISTS".to_vec()];
                let mut n = 0;
                for _ in 0..count {
                    let k = key(&mut rng);
                    n += model.contains_key(&k) as i64;
                    c.push(k);
                }
                (c, Resp::Int(n))
            }
            85..=89 => (vec![b"PING".to_vec()], Resp::simple("PONG")),
            90..=92 => {
                let arg = format!("a{i}").into_bytes();
                let reply = Resp::Error(format!(
                    "ERR unknown command 'NOSUCHCMD', with args beginning with: 'a{i}' "
                ));
                (vec![b"NOSUCHCMD".to_vec(), arg], reply)
            }
            93..=95 => {
                // Two keys in different slots: nothing happens.
                let a = key(&mut rng);
                let mut b = key(&mut rng);
                while slot(&a) == slot(&b) {
                    b = key(&mut rng);
                }
                (vec![b"RENAME".to_vec(), a, b], Resp::err(CROSSSLOT))
            }
            96..=97 => (
                vec![b"GET".to_vec()],
                Resp::err("ERR wrong number of arguments for 'get' command"),
            ),
            _ => {
                let msg = format!("echo-{i}").into_bytes();
                (vec![b"ECHO".to_vec(), msg.clone()], Resp::Bulk(Some(msg)))
            }
        };
        cmds.push(cmd);
        want.push(reply);
    }
    assert!(
        big_values >= 3,
        "the generator made only {big_values} big values"
    );
    (cmds, want)
}

fn describe(cmd: &[Vec<u8>]) -> String {
    cmd.iter()
        .map(|a| {
            if a.len() > 40 {
                format!("<{} bytes>", a.len())
            } else {
                String::from_utf8_lossy(a).into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn ten_thousand_mixed_commands_in_one_write() {
    let r1 = RedisServer::start();
    let r2 = RedisServer::start();
    let proxy = Proxy::start(&[&[&r1], &[&r2]]);
    let (cmds, want) = build(10_000);
    let mut bytes = Vec::new();
    for c in &cmds {
        bytes.extend(encode(c));
    }
    // Both groups are exercised.
    let groups: std::collections::BTreeSet<u32> = cmds
        .iter()
        .filter(|c| c[0] == b"SET")
        .map(|c| group_of_key(&c[1], 2))
        .collect();
    assert_eq!(groups.len(), 2);

    let mut conn = proxy.raw();
    conn.set_read_timeout(Duration::from_secs(30));
    let mut writer = conn.stream.try_clone().unwrap();
    let total = bytes.len();
    // One write of the whole pipeline, from a thread, while this thread reads replies.
    let write = std::thread::spawn(move || writer.write_all(&bytes));
    let started = Instant::now();
    for (i, (cmd, expected)) in cmds.iter().zip(&want).enumerate() {
        let got = conn.read().unwrap_or_else(|e| {
            panic!(
                "reply {i} of 10000 (`{}`) not received after {:?}: {e}",
                describe(cmd),
                started.elapsed()
            )
        });
        assert_eq!(
            &got,
            expected,
            "reply {i} of 10000 to `{}` is wrong",
            describe(cmd)
        );
    }
    write
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("write of {total} bytes failed: {e}"));
    // Nothing more than the 10,000 replies.
    assert!(
        !conn.has_data_within(Duration::from_millis(200)),
        "extra data after the last reply"
    );
    assert_eq!(conn.cmd(&["PING"]), Resp::simple("PONG"));
}

#[test]
fn small_max_pipeline_still_answers_everything_in_order() {
    // With max_pipeline = 16 the proxy applies backpressure; no reply may be lost.
    let r1 = RedisServer::start();
    let r2 = RedisServer::start();
    let proxy = Proxy::start_with(&[&[&r1], &[&r2]], &[("proxy.max_pipeline", "16")]);
    let (cmds, want) = build(3000);
    let mut bytes = Vec::new();
    for c in &cmds {
        bytes.extend(encode(c));
    }
    let mut conn = proxy.raw();
    conn.set_read_timeout(Duration::from_secs(30));
    let mut writer = conn.stream.try_clone().unwrap();
    let write = std::thread::spawn(move || writer.write_all(&bytes));
    for (i, (cmd, expected)) in cmds.iter().zip(&want).enumerate() {
        let got = conn
            .read()
            .unwrap_or_else(|e| panic!("reply {i} (`{}`): {e}", describe(cmd)));
        assert_eq!(&got, expected, "reply {i} to `{}`", describe(cmd));
    }
    write.join().unwrap().unwrap();
}

#[test]
fn a_slow_group_does_not_delay_a_pipeline_to_the_other_group() {
    let r1 = RedisServer::start();
    let r2 = RedisServer::start();
    // A generous reply bound, so the slow backend is slow, not failed.
    let proxy = Proxy::start_with(&[&[&r1], &[&r2]], &[("backend.timeout_ms", "10000")]);
    let fast_keys: Vec<String> = (0..50)
        .map(|i| find_key(&format!("fast{i}:"), |k| group_of_key(k, 2) == 1))
        .collect();
    let fast_counters: Vec<String> = (0..50)
        .map(|i| find_key(&format!("fastctr{i}:"), |k| group_of_key(k, 2) == 1))
        .collect();
    let slow_key = find_key("slow:", |k| group_of_key(k, 2) == 2);

    // Warm up: every connection to both backends exists.
    let mut warm = proxy.raw();
    assert_eq!(warm.cmd(&["SET", &slow_key, "s"]), Resp::ok());
    for k in &fast_keys {
        assert_eq!(warm.cmd(&["SET", k, k]), Resp::ok());
    }
    let mut blocked = proxy.raw();
    let mut fast = proxy.raw();
    assert_eq!(blocked.cmd(&["PING"]), Resp::simple("PONG"));
    assert_eq!(fast.cmd(&["PING"]), Resp::simple("PONG"));

    // Group 2's redis sleeps 2 s; wait until it is really unresponsive.
    let mut sleeper = r2.raw();
    sleeper.send(&encode(&["DEBUG", "SLEEP", "2"]));
    let asleep = wait_until(Duration::from_secs(2), || {
        let mut probe = RawConn::connect(r2.socket_addr());
        probe.send(&encode(&["PING"]));
        !probe.has_data_within(Duration::from_millis(100))
    });
    assert!(asleep, "redis {} did not start sleeping", r2.addr());
    let sleep_started = Instant::now();

    // One session waits on the slow group.
    blocked.send(&encode(&["GET", &slow_key]));

    // Another session pipelines 100 commands that touch only group 1.
    let mut bytes = Vec::new();
    for (k, n) in fast_keys.iter().zip(&fast_counters) {
        bytes.extend(encode(&["GET", k]));
        bytes.extend(encode(&["INCR", n]));
    }
    let t0 = Instant::now();
    fast.send(&bytes);
    for k in &fast_keys {
        assert_eq!(fast.read().unwrap(), Resp::bulk(k));
        assert_eq!(fast.read().unwrap(), Resp::Int(1));
    }
    let fast_took = t0.elapsed();
    // The slow group was still asleep all along (else this test proves nothing).
    let still_blocked = !blocked.has_data_within(Duration::from_millis(1));
    let slept_for = sleep_started.elapsed();
    assert!(
        fast_took < Duration::from_millis(1000),
        "pipeline to the fast group took {fast_took:?} while the other group slept"
    );
    assert!(
        still_blocked || slept_for >= Duration::from_secs(2),
        "the slow group answered after {slept_for:?} although it sleeps 2 s"
    );

    // The slow command completes once the backend wakes up.
    assert_eq!(blocked.read().unwrap(), Resp::bulk("s"));
    assert_eq!(sleeper.read().unwrap(), Resp::ok());
    assert_eq!(fast.cmd(&["GET", &slow_key]), Resp::bulk("s"));
}

#[test]
fn one_session_mixing_slow_and_fast_groups_keeps_order() {
    let r1 = RedisServer::start();
    let r2 = RedisServer::start();
    let proxy = Proxy::start_with(&[&[&r1], &[&r2]], &[("backend.timeout_ms", "10000")]);
    let fast_key = find_key("f:", |k| group_of_key(k, 2) == 1);
    let slow_key = find_key("s:", |k| group_of_key(k, 2) == 2);
    let mut c = proxy.raw();
    assert_eq!(c.cmd(&["SET", &slow_key, "slow"]), Resp::ok());
    assert_eq!(c.cmd(&["SET", &fast_key, "fast"]), Resp::ok());

    let mut sleeper = r2.raw();
    sleeper.send(&encode(&["DEBUG", "SLEEP", "0.5"]));
    let asleep = wait_until(Duration::from_secs(2), || {
        let mut probe = RawConn::connect(r2.socket_addr());
        probe.send(&encode(&["PING"]));
        !probe.has_data_within(Duration::from_millis(50))
    });
    assert!(asleep, "redis {} did not start sleeping", r2.addr());
    let mut bytes = encode(&["GET", &fast_key]);
    bytes.extend(encode(&["GET", &slow_key]));
    bytes.extend(encode(&["SET", &slow_key, "slow2"]));
    bytes.extend(encode(&["GET", &fast_key]));
    bytes.extend(encode(&["GET", &slow_key]));
    c.send(&bytes);
    assert_eq!(c.read().unwrap(), Resp::bulk("fast"));
    assert_eq!(c.read().unwrap(), Resp::bulk("slow"));
    assert_eq!(c.read().unwrap(), Resp::ok());
    assert_eq!(c.read().unwrap(), Resp::bulk("fast"));
    assert_eq!(c.read().unwrap(), Resp::bulk("slow2"));
    assert_eq!(sleeper.read().unwrap(), Resp::ok());
}

#[test]
fn a_client_that_does_not_read_is_held_back_by_max_pipeline() {
    // The proxy stops reading a session with max_pipeline commands in flight, so a client
    // that writes without reading is eventually blocked by TCP, and the proxy's memory
    // does not absorb the whole stream.
    let r1 = RedisServer::start();
    let proxy = Proxy::start_with(&[&[&r1]], &[("proxy.max_pipeline", "100")]);
    let pid = proxy.pid();
    let before = rss_kib(pid);
    let mut c = proxy.raw();
    let one = encode(&["PING"]);
    let chunk: Vec<u8> = one.repeat(64 * 1024 / one.len());
    let total: usize = 200 * 1024 * 1024;
    c.stream
        .set_write_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut written = 0usize;
    let t = Instant::now();
    let blocked = loop {
        if written >= total {
            break false;
        }
        if t.elapsed() > Duration::from_secs(120) {
            panic!("writing {written} bytes took over 120 s");
        }
        match c.stream.write(&chunk) {
            Ok(n) => written += n,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                break true;
            }
            Err(e) => panic!("write failed after {written} bytes: {e}"),
        }
    };
    let grew_mib = rss_kib(pid).saturating_sub(before) / 1024;
    assert!(
        blocked,
        "the proxy read all {total} bytes of PINGs from a client that never reads replies"
    );
    assert!(
        grew_mib < 100,
        "proxy RSS grew {grew_mib} MiB while a client ignored {written} bytes of replies"
    );
    // The replies to what was accepted arrive in order once the client reads.
    let sent = written / one.len();
    c.set_read_timeout(Duration::from_secs(30));
    for i in 0..sent.min(1000) {
        assert_eq!(c.read().unwrap(), Resp::simple("PONG"), "reply {i}");
    }
    drop(c);
    let mut other = proxy.raw();
    assert_eq!(other.cmd(&["PING"]), Resp::simple("PONG"));
}

#[test]
fn concurrent_clients_each_see_their_own_writes_in_order() {
    concurrent_clients(&[]);
}

#[test]
fn per_session_order_holds_with_several_backend_connections() {
    // Several connections per backend: a session's commands to one key must still execute
    // in the order sent.
    concurrent_clients(&[("backend.connections", "4")]);
}

#[test]
fn one_worker_serves_many_clients() {
    concurrent_clients(&[("proxy.workers", "1"), ("backend.connections", "2")]);
}

fn concurrent_clients(settings: &[(&str, &str)]) {
    let r1 = RedisServer::start();
    let r2 = RedisServer::start();
    let proxy = Proxy::start_with(&[&[&r1], &[&r2]], settings);
    let addr = proxy.addr;
    let threads: Vec<_> = (0..16)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = RawConn::connect(addr);
                c.set_read_timeout(Duration::from_secs(30));
                // Pipelined SET k v_i; GET k; APPEND log i: each GET sees its own SET.
                for round in 0..20 {
                    let mut bytes = Vec::new();
                    let mut want = Vec::new();
                    for i in 0..25 {
                        let key = format!("c{t}:{}", i % 7);
                        let val = format!("t{t}r{round}i{i}");
                        bytes.extend(encode(&["SET", &key, &val]));
                        want.push(Resp::ok());
                        bytes.extend(encode(&["GET", &key]));
                        want.push(Resp::bulk(&val));
                        bytes.extend(encode(&["RPUSH", &format!("log{t}"), &val]));
                        want.push(Resp::Int((round * 25 + i + 1) as i64));
                    }
                    c.send(&bytes);
                    for (j, w) in want.iter().enumerate() {
                        let got = c.read().unwrap_or_else(|e| panic!("client {t}: {e}"));
                        assert_eq!(&got, w, "client {t} round {round} reply {j}");
                    }
                }
                let all = c.cmd(&["LRANGE", &format!("log{t}"), "0", "-1"]);
                assert_eq!(all.items().map(|v| v.len()), Some(500), "client {t}");
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a client thread failed");
    }
}

#[test]
fn large_values_round_trip() {
    let r1 = RedisServer::start();
    let r2 = RedisServer::start();
    let proxy = Proxy::start(&[&[&r1], &[&r2]]);
    let mut c = proxy.raw();
    c.set_read_timeout(Duration::from_secs(30));
    let mut keys = Vec::new();
    for (i, size) in [0usize, 1, 16 * 1024, 1 << 20, 8 << 20]
        .into_iter()
        .enumerate()
    {
        let key = find_key(&format!("big{i}:"), |k| {
            group_of_key(k, 2) == (i % 2) as u32 + 1
        });
        keys.push(key.clone());
        let val: Vec<u8> = (0..size).map(|j| (j * 31 + i) as u8).collect();
        assert_eq!(
            c.cmd(&[&b"SET"[..], key.as_bytes(), &val[..]]),
            Resp::ok(),
            "SET of {size} bytes"
        );
        let got = c.cmd(&[&b"GET"[..], key.as_bytes()]);
        assert!(got == Resp::bulk(&val), "GET of {size} bytes: {got:?}");
    }
    // Big values from both groups in one MGET.
    assert_ne!(
        group_of_key(keys[3].as_bytes(), 2),
        group_of_key(keys[4].as_bytes(), 2)
    );
    let mget = c.cmd(&["MGET", keys[3].as_str(), keys[4].as_str(), "nope"]);
    let items = mget.items().expect("MGET array");
    assert_eq!(items.len(), 3);
    assert_eq!(items[0].bytes().map(<[u8]>::len), Some(1 << 20));
    assert_eq!(items[1].bytes().map(<[u8]>::len), Some(8 << 20));
    assert_eq!(items[2], Resp::nil());
}

#[test]
fn select_in_a_pipeline_applies_in_order() {
    let r1 = RedisServer::start();
    let r2 = RedisServer::start();
    let proxy = Proxy::start(&[&[&r1], &[&r2]]);
    let (a, b) = (
        find_key("sel:a", |k| group_of_key(k, 2) == 1),
        find_key("sel:b", |k| group_of_key(k, 2) == 2),
    );
    let mut bytes = Vec::new();
    let mut want = Vec::new();
    for db in 0..8 {
        bytes.extend(encode(&["SELECT", &db.to_string()]));
        want.push(Resp::ok());
        for k in [&a, &b] {
            bytes.extend(encode(&["SET", k, &format!("db{db}")]));
            want.push(Resp::ok());
            bytes.extend(encode(&["GET", k]));
            want.push(Resp::bulk(format!("db{db}")));
        }
        bytes.extend(encode(&["MGET", &a, &b]));
        want.push(Resp::array(vec![
            Resp::bulk(format!("db{db}")),
            Resp::bulk(format!("db{db}")),
        ]));
    }
    let mut c = proxy.raw();
    c.send(&bytes);
    for (i, w) in want.iter().enumerate() {
        assert_eq!(&c.read().unwrap(), w, "reply {i}");
    }
    for db in 0..8u32 {
        for (k, s) in [(&a, &r1), (&b, &r2)] {
            let v: Option<String> = redis::cmd("GET").arg(k).query(&mut s.conn_db(db)).unwrap();
            assert_eq!(v, Some(format!("db{db}")), "{k} in db {db}");
        }
    }
}

#[test]
fn quit_waits_for_replies_in_flight() {
    let r1 = RedisServer::start();
    let proxy = Proxy::start_with(&[&[&r1]], &[("backend.timeout_ms", "10000")]);
    let mut c = proxy.raw();
    assert_eq!(c.cmd(&["SET", "k", "v"]), Resp::ok());
    let mut sleeper = r1.raw();
    sleeper.send(&encode(&["DEBUG", "SLEEP", "0.5"]));
    let asleep = wait_until(Duration::from_secs(2), || {
        let mut probe = RawConn::connect(r1.socket_addr());
        probe.send(&encode(&["PING"]));
        !probe.has_data_within(Duration::from_millis(50))
    });
    assert!(asleep, "redis did not start sleeping");
    let mut bytes = encode(&["GET", "k"]);
    bytes.extend(encode(&["SET", "k", "w"]));
    bytes.extend(encode(&["QUIT"]));
    c.send(&bytes);
    assert_eq!(c.read().unwrap(), Resp::bulk("v"));
    assert_eq!(c.read().unwrap(), Resp::ok());
    assert_eq!(c.read().unwrap(), Resp::ok(), "QUIT");
    assert!(c.closed_within(Duration::from_secs(5)));
    assert_eq!(proxy.raw().cmd(&["GET", "k"]), Resp::bulk("w"));
}
