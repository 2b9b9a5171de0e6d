//! Server commands the proxy answers about itself over three groups: INFO (the proxy's own
//! sections, the keyspace summed over every group, the rest from the first group) and CLIENT
//! (LIST, INFO, KILL, SETINFO, REPLY over the proxy's sessions), through raw RESP, the
//! `redis` crate (RESP2 and RESP3) and redis-py; SCRIPT and FUNCTION management on every
//! group; WAIT on the groups a session wrote to.

use tessera_testkit as harness;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use harness::*;

const GROUPS: usize = 3;

fn cluster(settings: &[(&str, &str)]) -> Cluster {
    Cluster::start(GROUPS, settings)
}

/// INFO's text as `(section, [(field, value)])` in order; panics on a line that is neither
/// a `# Section` header, a `field:value` nor empty.
fn sections(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for line in text.split("\r\n") {
        if let Some(name) = line.strip_prefix("# ") {
            out.push((name.to_string(), Vec::new()));
        } else if let Some((k, v)) = line.split_once(':') {
            let last = out
                .last_mut()
                .unwrap_or_else(|| panic!("{line:?} before a section"));
            last.1.push((k.to_string(), v.to_string()));
        } else {
            assert!(line.is_empty(), "unexpected INFO line {line:?} in {text:?}");
        }
    }
    out
}

fn names(s: &[(String, Vec<(String, String)>)]) -> Vec<&str> {
    s.iter().map(|(n, _)| n.as_str()).collect()
}

fn field<'a>(s: &'a [(String, Vec<(String, String)>)], section: &str, name: &str) -> &'a str {
    s.iter()
        .find(|(n, _)| n == section)
        .and_then(|(_, fields)| fields.iter().find(|(k, _)| k == name))
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {section}/{name} in {s:?}"))
}

fn info(c: &mut RawConn, args: &[&str]) -> Vec<(String, Vec<(String, String)>)> {
    let mut cmd = vec!["INFO"];
    cmd.extend_from_slice(args);
    let reply = c.cmd(&cmd);
    let text = reply
        .bytes()
        .unwrap_or_else(|| panic!("INFO {args:?}: {reply:?}"));
    sections(std::str::from_utf8(text).unwrap())
}

/// `db0:keys=..,expires=..,avg_ttl=..` as its three numbers.
fn keyspace_line(v: &str) -> (u64, u64, u64) {
    let f: HashMap<&str, u64> = v
        .split(',')
        .map(|kv| {
            let (k, n) = kv.split_once('=').unwrap();
            (k, n.parse().unwrap())
        })
        .collect();
    (f["keys"], f["expires"], f["avg_ttl"])
}

fn direct_info(r: &RedisServer, section: &str) -> Vec<(String, Vec<(String, String)>)> {
    let text: String = redis::cmd("INFO")
        .arg(section)
        .query(&mut r.conn())
        .unwrap();
    sections(&text)
}

#[test]
fn info_answers_the_proxy_sections_and_sums_the_keyspace_of_every_group() {
    let cl = cluster(&[]);
    let mut c = cl.proxy.raw();
    for i in 0..60 {
        let k = format!("k{i}");
        assert_eq!(c.cmd(&["SET", &k, "v"]), Resp::ok());
        if i % 3 == 0 {
            assert_eq!(c.cmd(&["EXPIRE", &k, "1000"]), Resp::Int(1));
        }
    }
    assert_eq!(c.cmd(&["SELECT", "2"]), Resp::ok());
    assert_eq!(c.cmd(&["SET", "other", "v"]), Resp::ok());

    let all = info(&mut c, &[]);
    assert_eq!(
        names(&all),
        [
            "Server",
            "Clients",
            "Memory",
            "Persistence",
            "Stats",
            "Replication",
            "CPU",
            "Modules",
            "Errorstats",
            "Cluster",
            "Keyspace",
            "Tessera"
        ]
    );
    let version = field(
        &direct_info(&cl.servers[0], "server"),
        "Server",
        "redis_version",
    )
    .to_string();
    assert_eq!(field(&all, "Server", "redis_version"), version);
    assert_eq!(
        field(&all, "Server", "tessera_version"),
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        field(&all, "Server", "tcp_port"),
        cl.proxy.addr.port().to_string()
    );
    assert_eq!(
        field(&all, "Server", "process_id"),
        cl.proxy.pid().to_string()
    );
    assert_eq!(field(&all, "Tessera", "groups"), GROUPS.to_string());
    assert_eq!(field(&all, "Tessera", "revision"), "0");
    let commands: u64 = field(&all, "Stats", "total_commands_processed")
        .parse()
        .unwrap();
    assert!(commands >= 82, "{commands} commands after 82 sent");

    let (keys, expires, avg_ttl) = keyspace_line(field(&all, "Keyspace", "db0"));
    assert_eq!((keys, expires), (60, 20));
    // Redis updates avg_ttl from its expiry cycle's samples: 0 until it has sampled.
    assert!(avg_ttl <= 1_000_000, "avg_ttl {avg_ttl}");
    assert_eq!(keyspace_line(field(&all, "Keyspace", "db2")), (1, 0, 0));
    let mut per_group = 0;
    for s in &cl.servers {
        let direct = direct_info(s, "keyspace");
        if direct[0].1.iter().any(|(k, _)| k == "db0") {
            per_group += keyspace_line(field(&direct, "Keyspace", "db0")).0;
        }
    }
    assert_eq!(per_group, 60);

    // Sections in Redis's order, whatever the order asked; the proxy's and the backends'.
    assert_eq!(
        names(&info(&mut c, &["keyspace", "SERVER"])),
        ["Server", "Keyspace"]
    );
    assert_eq!(names(&info(&mut c, &["tessera"])), ["Tessera"]);
    let stats = info(&mut c, &["commandstats"]);
    assert_eq!(names(&stats), ["Commandstats"]);
    assert!(
        stats[0].1.iter().any(|(k, _)| k == "cmdstat_set"),
        "{stats:?}"
    );
    let everything = info(&mut c, &["everything"]);
    for name in [
        "Server",
        "Commandstats",
        "Latencystats",
        "Keyspace",
        "Tessera",
    ] {
        assert!(
            names(&everything).contains(&name),
            "{name} in {everything:?}"
        );
    }
    assert!(names(&info(&mut c, &["all"])).contains(&"Commandstats"));
    assert_eq!(names(&info(&mut c, &["default"])), names(&all));
    assert_eq!(names(&info(&mut c, &["nosuchsection"])), Vec::<&str>::new());
}

#[test]
fn info_counts_the_proxy_clients_and_a_dead_group_is_an_error_naming_it() {
    let mut cl = cluster(&[]);
    let mut c = cl.proxy.raw();
    let _others: Vec<RawConn> = (0..3).map(|_| cl.proxy.raw()).collect();
    assert_eq!(c.cmd(&["PING"]), Resp::simple("PONG"));
    let mut clients = String::new();
    assert!(
        wait_until(Duration::from_secs(5), || {
            clients = field(&info(&mut c, &["clients"]), "Clients", "connected_clients").into();
            clients == "4"
        }),
        "connected_clients {clients}, 4 connections open"
    );

    cl.servers[1].kill();
    let reply = c.cmd(&["INFO"]);
    let dead = format!("backend {} unavailable", cl.servers[1].addr());
    assert!(reply.error_text().contains(&dead), "{reply:?}");
    assert_eq!(c.cmd(&["PING"]), Resp::simple("PONG"));
}

#[test]
fn the_redis_crate_parses_info_in_resp2_and_resp3() {
    let cl = cluster(&[]);
    let mut conn = cl.proxy.conn();
    let _: () = redis::cmd("SET")
        .arg("a")
        .arg("1")
        .query(&mut conn)
        .unwrap();
    let info: redis::InfoDict = redis::cmd("INFO").query(&mut conn).unwrap();
    assert_eq!(
        info.get::<String>("tessera_version").as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );

    let url = format!("redis://{}/?protocol=resp3", cl.proxy.addr);
    let mut conn3 = redis::Client::open(url)
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("connect with HELLO 3");
    let raw: redis::Value = redis::cmd("INFO")
        .arg("keyspace")
        .query(&mut conn3)
        .unwrap();
    let redis::Value::VerbatimString { format, text } = &raw else {
        panic!("INFO in RESP3 is a verbatim string, got {raw:?}");
    };
    assert_eq!(*format, redis::VerbatimFormat::Text);
    assert!(text.starts_with("# Keyspace\r\ndb0:keys=1,"), "{text:?}");
    let info: redis::InfoDict = redis::cmd("INFO").query(&mut conn3).unwrap();
    assert_eq!(info.get::<u64>("groups"), Some(GROUPS as u64));
}

#[test]
fn redis_py_parses_info() {
    let cl = cluster(&[]);
    for protocol in ["2", "default"] {
        let out = run_redis_py(cl.proxy.addr, protocol, None);
        assert!(out.contains("redis-py ok"), "{out}");
    }
}

/// CLIENT LIST's text as one map of fields per line.
fn client_lines(reply: &Resp) -> Vec<HashMap<String, String>> {
    let text = std::str::from_utf8(reply.bytes().unwrap_or_else(|| panic!("{reply:?}"))).unwrap();
    assert!(text.ends_with('\n'), "{text:?}");
    text.lines()
        .map(|line| {
            line.split(' ')
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or_else(|| panic!("{line:?}"));
                    (k.to_string(), v.to_string())
                })
                .collect()
        })
        .collect()
}

fn client_id(c: &mut RawConn) -> String {
    c.cmd(&["CLIENT", "ID"]).int().unwrap().to_string()
}

const REDIS_FIELDS: &str = "id addr laddr fd name age idle flags db sub psub ssub multi qbuf \
    qbuf-free argv-mem multi-mem rbs rbp obl oll omem tot-mem events cmd user redir resp \
    lib-name lib-ver";

#[test]
fn client_list_and_info_describe_every_proxy_session() {
    // Two workers: sessions on both of them.
    let cl = cluster(&[("proxy.workers", "2")]);
    let mut a = cl.proxy.raw();
    let mut b = cl.proxy.raw();
    let mut others: Vec<RawConn> = (0..3).map(|_| cl.proxy.raw()).collect();
    assert_eq!(a.cmd(&["CLIENT", "SETNAME", "alice"]), Resp::ok());
    assert_eq!(
        a.cmd(&["CLIENT", "SETINFO", "LIB-NAME", "mylib"]),
        Resp::ok()
    );
    assert_eq!(a.cmd(&["CLIENT", "SETINFO", "lib-ver", "1.2"]), Resp::ok());
    assert_eq!(a.cmd(&["SELECT", "3"]), Resp::ok());
    let a_id = client_id(&mut a);
    let mut ids = vec![a_id.clone(), client_id(&mut b)];
    ids.extend(others.iter_mut().map(client_id));

    let list = client_lines(&b.cmd(&["CLIENT", "LIST"]));
    let listed: Vec<u64> = list.iter().map(|l| l["id"].parse().unwrap()).collect();
    let mut want: Vec<u64> = ids.iter().map(|id| id.parse().unwrap()).collect();
    want.sort();
    assert_eq!(listed, want, "every session of every worker, in id order");
    for line in &list {
        let fields: Vec<&str> = line.keys().map(String::as_str).collect();
        for f in REDIS_FIELDS.split_whitespace() {
            assert!(fields.contains(&f), "{f} missing in {line:?}");
        }
        assert_eq!(line["laddr"], cl.proxy.addr.to_string());
        assert_eq!(line["flags"], "N");
    }
    let line_of = |id: &str| list.iter().find(|l| l["id"] == id).unwrap();
    let alice = line_of(&a_id);
    assert_eq!(
        (&alice["name"][..], &alice["db"][..], &alice["cmd"][..]),
        ("alice", "3", "client|id")
    );
    assert_eq!(
        (&alice["lib-name"][..], &alice["lib-ver"][..]),
        ("mylib", "1.2")
    );
    assert_eq!(line_of(&ids[1])["cmd"], "client|list");
    assert_eq!(line_of(&ids[1])["name"], "");
    assert_eq!(alice["addr"], a.stream.local_addr().unwrap().to_string());

    let info = a.cmd(&["CLIENT", "INFO"]);
    let mine = client_lines(&info);
    assert_eq!(mine.len(), 1);
    assert_eq!(
        (&mine[0]["id"], &mine[0]["cmd"][..]),
        (&a_id, "client|info")
    );

    let only = client_lines(&b.cmd(&["CLIENT", "LIST", "ID", &a_id, "999999"]));
    assert_eq!(only.len(), 1);
    assert_eq!(only[0]["name"], "alice");
    assert_eq!(
        client_lines(&b.cmd(&["CLIENT", "LIST", "TYPE", "normal"])).len(),
        5
    );
    assert_eq!(b.cmd(&["CLIENT", "LIST", "TYPE", "pubsub"]), Resp::bulk(""));
    assert_eq!(
        b.cmd(&["CLIENT", "LIST", "TYPE", "nope"]),
        Resp::err("ERR Unknown client type 'nope'")
    );
    assert_eq!(
        b.cmd(&["CLIENT", "LIST", "ID", "x"]),
        Resp::err("ERR Invalid client ID")
    );
    assert_eq!(
        b.cmd(&["CLIENT", "LIST", "nope"]),
        Resp::err("ERR syntax error")
    );

    assert_eq!(
        a.cmd(&["CLIENT", "SETINFO", "LIB-NAME", "a b"]),
        Resp::err("ERR LIB-NAME cannot contain spaces, newlines or special characters.")
    );
    assert_eq!(
        a.cmd(&["CLIENT", "SETINFO", "color", "red"]),
        Resp::err("ERR Unrecognized option 'color'")
    );
    assert_eq!(
        a.cmd(&["CLIENT", "SETINFO", "LIB-NAME"]),
        Resp::err("ERR wrong number of arguments for 'client|setinfo' command")
    );
    for (sub, arg) in [("NO-EVICT", "on"), ("NO-TOUCH", "OFF")] {
        assert_eq!(a.cmd(&["CLIENT", sub, arg]), Resp::ok(), "{sub}");
        assert_eq!(
            a.cmd(&["CLIENT", sub, "maybe"]),
            Resp::err("ERR syntax error")
        );
    }
    for cmd in [
        &["CLIENT", "TRACKING", "on"][..],
        &["CLIENT", "CACHING", "yes"],
        &["CLIENT", "GETREDIR"],
        &["CLIENT", "PAUSE", "10"],
        &["CLIENT", "UNPAUSE"],
    ] {
        let reply = a.cmd(cmd);
        let sub = cmd[1];
        assert!(
            reply.error_text().contains("not supported"),
            "{sub}: {reply:?}"
        );
    }

    drop(others);
    assert!(
        wait_until(Duration::from_secs(5), || {
            client_lines(&b.cmd(&["CLIENT", "LIST"])).len() == 2
        }),
        "closed sessions leave CLIENT LIST"
    );
}

#[test]
fn client_kill_closes_proxy_sessions_and_the_others_keep_working() {
    // Two workers: sessions on both of them.
    let cl = cluster(&[("proxy.workers", "2")]);
    let mut a = cl.proxy.raw();
    let mut b = cl.proxy.raw();
    let mut c = cl.proxy.raw();
    let mut d = cl.proxy.raw();
    let b_id = client_id(&mut b);
    let c_addr = c.stream.local_addr().unwrap().to_string();
    // A session is listed once its worker has taken it over, which an answered command shows
    // (a connection the proxy accepted a moment ago may not be listed yet).
    assert_eq!(c.cmd(&["PING"]), Resp::simple("PONG"));

    assert_eq!(a.cmd(&["CLIENT", "KILL", "ID", &b_id]), Resp::Int(1));
    assert!(b.closed_within(Duration::from_secs(5)), "b closed");
    assert_eq!(a.cmd(&["CLIENT", "KILL", &c_addr]), Resp::ok());
    assert!(c.closed_within(Duration::from_secs(5)), "c closed");
    assert_eq!(
        a.cmd(&["CLIENT", "KILL", &c_addr]),
        Resp::err("ERR No such client")
    );
    assert_eq!(
        a.cmd(&["CLIENT", "KILL", "ID", "0"]),
        Resp::err("ERR client-id should be greater than 0")
    );
    // Three arguments are the old form: an address.
    assert_eq!(
        a.cmd(&["CLIENT", "KILL", "ID"]),
        Resp::err("ERR No such client")
    );
    assert_eq!(
        a.cmd(&["CLIENT", "KILL", "ID", "1", "USER"]),
        Resp::err("ERR syntax error")
    );
    assert_eq!(
        a.cmd(&["CLIENT", "KILL", "SKIPME", "maybe"]),
        Resp::err("ERR syntax error")
    );
    assert_eq!(a.cmd(&["CLIENT", "KILL", "TYPE", "master"]), Resp::Int(0));
    assert_eq!(a.cmd(&["CLIENT", "KILL", "USER", "nobody"]), Resp::Int(0));
    assert_eq!(a.cmd(&["SET", "k", "v"]), Resp::ok());
    assert_eq!(d.cmd(&["GET", "k"]), Resp::bulk("v"));

    // SKIPME yes by default: every other session on the proxy's address.
    let laddr = cl.proxy.addr.to_string();
    assert_eq!(
        a.cmd(&["CLIENT", "KILL", "LADDR", &laddr, "USER", "default"]),
        Resp::Int(1)
    );
    assert!(d.closed_within(Duration::from_secs(5)), "d closed");
    assert_eq!(a.cmd(&["GET", "k"]), Resp::bulk("v"));
    let a_id = client_id(&mut a);
    let a_addr = a.stream.local_addr().unwrap().to_string();
    assert_eq!(
        a.cmd(&[
            "CLIENT", "KILL", "ID", &a_id, "ADDR", &a_addr, "SKIPME", "no"
        ]),
        Resp::Int(1)
    );
    assert!(
        a.closed_within(Duration::from_secs(5)),
        "a closed after its reply"
    );
    let mut e = cl.proxy.raw();
    assert_eq!(e.cmd(&["GET", "k"]), Resp::bulk("v"));
}

#[test]
fn client_reply_off_and_skip_drop_replies_and_on_brings_them_back() {
    let cl = cluster(&[]);
    let mut c = cl.proxy.raw();
    let mut pipeline = Vec::new();
    for cmd in [
        &["CLIENT", "REPLY", "OFF"][..],
        &["SET", "k", "1"],
        &["GET", "k"],
        &["NOSUCH"],
        &["CLIENT", "REPLY", "ON"],
        &["GET", "k"],
        &["CLIENT", "REPLY", "SKIP"],
        &["SET", "k", "2"],
        &["GET", "k"],
    ] {
        pipeline.extend(encode(cmd));
    }
    c.send(&pipeline);
    assert_eq!(c.read().unwrap(), Resp::ok(), "CLIENT REPLY ON");
    assert_eq!(c.read().unwrap(), Resp::bulk("1"));
    assert_eq!(
        c.read().unwrap(),
        Resp::bulk("2"),
        "the SET after SKIP ran, unanswered"
    );
    assert_eq!(
        c.cmd(&["CLIENT", "REPLY", "MAYBE"]),
        Resp::err("ERR syntax error")
    );
    assert!(
        !c.has_data_within(Duration::from_millis(200)),
        "nothing else was answered"
    );
}

#[test]
fn the_redis_crate_reads_client_info_in_resp3() {
    let cl = cluster(&[]);
    let url = format!("redis://{}/?protocol=resp3", cl.proxy.addr);
    let mut conn3 = redis::Client::open(url)
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("connect with HELLO 3");
    let raw: redis::Value = redis::cmd("CLIENT").arg("INFO").query(&mut conn3).unwrap();
    let redis::Value::VerbatimString { text, .. } = &raw else {
        panic!("CLIENT INFO in RESP3 is a verbatim string, got {raw:?}");
    };
    assert!(text.contains(" resp=3 "), "{text:?}");
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut conn3).unwrap();
    assert!(list.contains("cmd=client|list"), "{list:?}");
}

/// A key of each group, in group order.
fn key_per_group(prefix: &str) -> Vec<String> {
    (1..=GROUPS as u32)
        .map(|g| find_key(prefix, |k| group_of_key(k, GROUPS) == g))
        .collect()
}

const LIB: &str = "#!lua name=mylib\nredis.register_function('myget', function(keys, args) return redis.call('GET', keys[1]) end)";

#[test]
fn scripts_and_functions_loaded_through_the_proxy_run_on_every_group() {
    let cl = cluster(&[]);
    let mut c = cl.proxy.raw();
    let keys = key_per_group("sk");
    for k in &keys {
        assert_eq!(c.cmd(&["SET", k, k]), Resp::ok());
    }

    let script = "return redis.call('GET', KEYS[1])";
    let sha = c.cmd(&["SCRIPT", "LOAD", script]);
    let sha = String::from_utf8(sha.bytes().unwrap_or_else(|| panic!("{sha:?}")).to_vec()).unwrap();
    for k in &keys {
        assert_eq!(
            c.cmd(&["EVALSHA", &sha, "1", k]),
            Resp::bulk(k),
            "EVALSHA on {k}'s group"
        );
    }
    let other: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return 2")
        .query(&mut cl.servers[1].conn())
        .unwrap();
    let missing = "0000000000000000000000000000000000000000";
    assert_eq!(
        c.cmd(&["SCRIPT", "EXISTS", &sha, &other, missing]),
        Resp::array(vec![Resp::Int(1), Resp::Int(0), Resp::Int(0)]),
        "1 only where every group has it"
    );
    assert_eq!(c.cmd(&["SCRIPT", "FLUSH"]), Resp::ok());
    assert_eq!(
        c.cmd(&["SCRIPT", "EXISTS", &sha]),
        Resp::array(vec![Resp::Int(0)])
    );
    assert!(
        c.cmd(&["EVALSHA", &sha, "1", &keys[2]])
            .error_text()
            .starts_with("NOSCRIPT")
    );
    assert_eq!(
        c.cmd(&["SCRIPT", "KILL"]),
        Resp::err("NOTBUSY No scripts in execution right now.")
    );

    assert_eq!(c.cmd(&["FUNCTION", "LOAD", LIB]), Resp::bulk("mylib"));
    for k in &keys {
        assert_eq!(
            c.cmd(&["FCALL", "myget", "1", k]),
            Resp::bulk(k),
            "FCALL on {k}'s group"
        );
    }
    assert_eq!(
        c.cmd(&["FUNCTION", "LOAD", LIB]),
        Resp::err("ERR Library 'mylib' already exists"),
        "every group's own error"
    );
    let list = c.cmd(&["FUNCTION", "LIST"]);
    assert_eq!(list.items().map(<[Resp]>::len), Some(1), "{list:?}");
    let dump = c.cmd(&["FUNCTION", "DUMP"]);
    let dump = dump.bytes().unwrap_or_else(|| panic!("{dump:?}")).to_vec();
    assert!(c.cmd(&["FUNCTION", "STATS"]).items().is_some());
    assert_eq!(
        c.cmd(&["FUNCTION", "KILL"]),
        Resp::err("NOTBUSY No scripts in execution right now.")
    );
    assert_eq!(c.cmd(&["FUNCTION", "FLUSH", "SYNC"]), Resp::ok());
    assert!(c.cmd(&["FCALL", "myget", "1", &keys[1]]).is_error());
    assert_eq!(c.cmd(&[&b"FUNCTION"[..], b"RESTORE", &dump]), Resp::ok());
    for k in &keys {
        assert_eq!(
            c.cmd(&["FCALL", "myget", "1", k]),
            Resp::bulk(k),
            "restored on {k}'s group"
        );
    }
    assert_eq!(c.cmd(&["FUNCTION", "DELETE", "mylib"]), Resp::ok());
    assert_eq!(
        c.cmd(&["FUNCTION", "DELETE", "mylib"]),
        Resp::err("ERR Library not found")
    );

    // Loaded on one group already: that group's error, named; the others loaded it.
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(LIB)
        .query(&mut cl.servers[1].conn())
        .unwrap();
    assert_eq!(
        c.cmd(&["FUNCTION", "LOAD", LIB]),
        Resp::err("ERR group 2: Library 'mylib' already exists")
    );
    assert_eq!(
        c.cmd(&["FCALL", "myget", "1", &keys[2]]),
        Resp::bulk(&keys[2])
    );
}

#[test]
fn wait_counts_the_replicas_of_the_groups_the_session_wrote_to() {
    let m1 = RedisServer::start();
    let r1 = RedisServer::start();
    let m2 = RedisServer::start();
    let proxy = Proxy::start(&[&[&m1, &r1], &[&m2]]);
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(m1.port)
        .query(&mut r1.conn())
        .unwrap();
    let synced = wait_until(Duration::from_secs(10), || {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut r1.conn())
            .unwrap();
        info.contains("master_link_status:up")
    });
    assert!(synced, "replica of group 1 synced");
    let on1 = find_key("w1:", |k| group_of_key(k, 2) == 1);
    let on2 = find_key("w2:", |k| group_of_key(k, 2) == 2);

    let mut c = proxy.raw();
    let bound =
        "ERR WAIT timeout must be between 1 and 999 ms through the proxy (backend.timeout_ms)";
    assert_eq!(c.cmd(&["WAIT", "1", "0"]), Resp::err(bound));
    assert_eq!(c.cmd(&["WAIT", "1", "1000"]), Resp::err(bound));
    assert_eq!(
        c.cmd(&["WAIT", "1", "soon"]),
        Resp::err("ERR timeout is not an integer or out of range")
    );

    assert_eq!(c.cmd(&["SET", &on1, "v"]), Resp::ok());
    assert_eq!(
        c.cmd(&["WAIT", "1", "900"]),
        Resp::Int(1),
        "group 1's replica acknowledged"
    );
    assert_eq!(r1.raw().cmd(&["GET", &on1]), Resp::bulk("v"));
    assert_eq!(c.cmd(&["SET", &on2, "v"]), Resp::ok());
    let t = Instant::now();
    assert_eq!(
        c.cmd(&["WAIT", "1", "200"]),
        Resp::Int(0),
        "group 2 has no replica"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );

    // Another session that wrote to group 1 only waits on group 1.
    let mut d = proxy.raw();
    assert_eq!(d.cmd(&["SET", &on1, "w"]), Resp::ok());
    assert_eq!(d.cmd(&["WAIT", "1", "900"]), Resp::Int(1));
    // SELECT changes connections: only the writes after it count.
    assert_eq!(c.cmd(&["SELECT", "1"]), Resp::ok());
    assert_eq!(c.cmd(&["SET", &on1, "x"]), Resp::ok());
    assert_eq!(c.cmd(&["WAIT", "1", "900"]), Resp::Int(1));
}
