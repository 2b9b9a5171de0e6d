//! Keyspace-wide commands through the proxy over three groups: DBSIZE, KEYS, LASTSAVE, RANDOMKEY,
//! FLUSHDB/FLUSHALL (and the settings that disable them), SCAN with one cursor over every
//! group (raw, and through the `redis` crate in RESP2 and RESP3), and a dead group, which
//! turns each of them into an error naming its backend, never a partial answer.

use tessera_testkit as harness;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use harness::*;

const GROUPS: usize = 3;
/// Bounds on one full SCAN iteration.
const MAX_SCAN_CALLS: usize = 2_000;
const SCAN_BOUND: Duration = Duration::from_secs(30);

fn cluster(settings: &[(&str, &str)]) -> Cluster {
    Cluster::start(GROUPS, settings)
}

/// Sets `n` string keys `prefix0..` through the proxy and checks they reach every group.
fn set_keys(c: &mut RawConn, prefix: &str, n: usize) -> HashSet<String> {
    let keys: HashSet<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    for k in &keys {
        assert_eq!(c.cmd(&["SET", k, "v"]), Resp::ok(), "SET {k}");
    }
    for g in 1..=GROUPS as u32 {
        assert!(
            keys.iter().any(|k| group_of_key(k.as_bytes(), GROUPS) == g),
            "no key of {prefix}* on group {g}"
        );
    }
    keys
}

fn strings(reply: &Resp) -> Vec<String> {
    reply
        .items()
        .unwrap_or_else(|| panic!("expected an array, got {reply:?}"))
        .iter()
        .map(|r| String::from_utf8(r.bytes().expect("a bulk").to_vec()).unwrap())
        .collect()
}

/// Every key a full SCAN iteration (`SCAN cursor extra...`) returns, in order, and how
/// many calls it took. `between` runs after every call.
fn scan_all(c: &mut RawConn, extra: &[&str], mut between: impl FnMut()) -> (Vec<String>, usize) {
    let start = Instant::now();
    let mut cursor = "0".to_string();
    let mut keys = Vec::new();
    for calls in 1..=MAX_SCAN_CALLS {
        let mut args = vec!["SCAN", &cursor];
        args.extend_from_slice(extra);
        let reply = c.cmd(&args);
        let items = reply
            .items()
            .unwrap_or_else(|| panic!("SCAN {cursor}: {reply:?}"));
        assert_eq!(items.len(), 2, "SCAN {cursor}: {reply:?}");
        keys.extend(strings(&items[1]));
        cursor = String::from_utf8(items[0].bytes().unwrap().to_vec()).unwrap();
        cursor
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("cursor {cursor:?} is not a u64"));
        if cursor == "0" {
            return (keys, calls);
        }
        assert!(
            start.elapsed() < SCAN_BOUND,
            "SCAN took over {SCAN_BOUND:?}"
        );
        between();
    }
    panic!("SCAN did not end within {MAX_SCAN_CALLS} calls");
}

#[track_caller]
fn assert_each_once(got: &[String], want: &HashSet<String>) {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for k in got {
        *counts.entry(k).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "returned more than once: {twice:?}");
    let got: HashSet<String> = got.iter().cloned().collect();
    let missing: Vec<_> = want.difference(&got).collect();
    let extra: Vec<_> = got.difference(want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, unexpected {extra:?}"
    );
}

fn direct_dbsize(r: &RedisServer) -> i64 {
    redis::cmd("DBSIZE").query(&mut r.conn()).unwrap()
}

#[test]
fn dbsize_keys_and_lastsave_cover_every_group() {
    let cl = cluster(&[]);
    let mut c = cl.proxy.raw();
    assert_eq!(c.cmd(&["DBSIZE"]), Resp::Int(0));
    assert_eq!(c.cmd(&["KEYS", "*"]), Resp::array(vec![]));
    let keys = set_keys(&mut c, "k:", 300);
    for r in &cl.servers {
        assert!(direct_dbsize(r) > 0, "a group without keys");
    }
    assert_eq!(c.cmd(&["DBSIZE"]), Resp::Int(300));

    assert_each_once(&strings(&c.cmd(&["KEYS", "*"])), &keys);
    let pattern: HashSet<String> = keys
        .iter()
        .filter(|k| k.starts_with("k:1"))
        .cloned()
        .collect();
    assert_each_once(&strings(&c.cmd(&["KEYS", "k:1*"])), &pattern);
    assert_eq!(c.cmd(&["KEYS", "nothing:*"]), Resp::array(vec![]));

    // The oldest of the groups' last saves.
    let saves: Vec<i64> = cl
        .servers
        .iter()
        .map(|r| redis::cmd("LASTSAVE").query(&mut r.conn()).unwrap())
        .collect();
    assert_eq!(
        c.cmd(&["LASTSAVE"]),
        Resp::Int(*saves.iter().min().unwrap())
    );
}

#[test]
fn a_full_scan_returns_every_key_once_over_several_calls_per_group() {
    let cl = cluster(&[]);
    let mut c = cl.proxy.raw();
    let strings_set = set_keys(&mut c, "s:", 300);
    let hashes: HashSet<String> = (0..30).map(|i| format!("h:{i}")).collect();
    for h in &hashes {
        assert_eq!(c.cmd(&["HSET", h, "f", "v"]), Resp::Int(1));
    }
    let all: HashSet<String> = strings_set.union(&hashes).cloned().collect();

    let (got, calls) = scan_all(&mut c, &["COUNT", "10"], || {});
    assert_each_once(&got, &all);
    // 330 keys, COUNT 10, 3 groups: several calls on each group.
    assert!(calls >= 3 * GROUPS, "only {calls} SCAN calls");

    let (got, _) = scan_all(&mut c, &["MATCH", "h:*", "COUNT", "10"], || {});
    assert_each_once(&got, &hashes);
    let (got, _) = scan_all(&mut c, &["TYPE", "hash"], || {});
    assert_each_once(&got, &hashes);
    let (got, _) = scan_all(
        &mut c,
        &["count", "7", "type", "string", "match", "s:*"],
        || {},
    );
    assert_each_once(&got, &strings_set);
}

#[test]
fn scan_returns_every_key_that_stays_while_keys_are_added() {
    let cl = cluster(&[]);
    let mut c = cl.proxy.raw();
    let keys = set_keys(&mut c, "old:", 300);
    let mut writer = cl.proxy.raw();
    let mut added = 0;
    let (got, _) = scan_all(&mut c, &["COUNT", "10"], || {
        for _ in 0..3 {
            assert_eq!(
                writer.cmd(&["SET", &format!("new:{added}"), "v"]),
                Resp::ok()
            );
            added += 1;
        }
    });
    let got: HashSet<String> = got.into_iter().collect();
    let missing: Vec<_> = keys.difference(&got).collect();
    assert!(missing.is_empty(), "missing {missing:?}");
    assert!(added > 0);
}

#[test]
fn bad_cursors_and_options_get_redis_errors() {
    let cl = cluster(&[]);
    let mut c = cl.proxy.raw();
    set_keys(&mut c, "k:", 30);
    let beyond_last_group = (GROUPS as u64) << 53;
    for cursor in [
        "abc",
        "-1",
        "",
        "1.5",
        "18446744073709551616",
        &beyond_last_group.to_string(),
        &u64::MAX.to_string(),
    ] {
        assert_eq!(
            c.cmd(&["SCAN", cursor]),
            Resp::err("ERR invalid cursor"),
            "SCAN {cursor:?}"
        );
    }
    // Options are Redis's to judge, with its own texts.
    assert_eq!(
        c.cmd(&["SCAN", "0", "MATCH"]),
        Resp::err("ERR syntax error")
    );
    assert_eq!(
        c.cmd(&["SCAN", "0", "COUNT", "x"]),
        Resp::err("ERR value is not an integer or out of range")
    );
    assert_eq!(
        c.cmd(&["SCAN"]),
        Resp::err("ERR wrong number of arguments for 'scan' command")
    );
    // The session carries on.
    assert_eq!(c.cmd(&["DBSIZE"]), Resp::Int(30));
}

#[test]
fn flushdb_and_flushall_empty_every_group() {
    let cl = cluster(&[]);
    let mut c = cl.proxy.raw();
    set_keys(&mut c, "k:", 60);
    assert_eq!(c.cmd(&["FLUSHDB"]), Resp::ok());
    assert_eq!(c.cmd(&["DBSIZE"]), Resp::Int(0));
    for r in &cl.servers {
        assert_eq!(direct_dbsize(r), 0);
    }
    set_keys(&mut c, "k:", 60);
    assert_eq!(c.cmd(&["FLUSHDB", "ASYNC"]), Resp::ok());
    assert_eq!(c.cmd(&["DBSIZE"]), Resp::Int(0));
    assert_eq!(
        c.cmd(&["FLUSHDB", "LATER"]),
        Resp::err("ERR syntax error"),
        "an option every group refuses is answered as Redis answers it"
    );

    // FLUSHALL empties the other databases too.
    set_keys(&mut c, "k:", 60);
    assert_eq!(c.cmd(&["SELECT", "1"]), Resp::ok());
    set_keys(&mut c, "one:", 60);
    assert_eq!(c.cmd(&["FLUSHALL", "SYNC"]), Resp::ok());
    assert_eq!(c.cmd(&["DBSIZE"]), Resp::Int(0));
    assert_eq!(c.cmd(&["SELECT", "0"]), Resp::ok());
    assert_eq!(c.cmd(&["DBSIZE"]), Resp::Int(0));
}

#[test]
fn flushes_disabled_by_config_answer_an_error_and_flush_nothing() {
    let cl = cluster(&[
        ("proxy.allow_flushall", "false"),
        ("proxy.allow_flushdb", "false"),
    ]);
    let mut c = cl.proxy.raw();
    set_keys(&mut c, "k:", 60);
    assert_eq!(
        c.cmd(&["FLUSHALL"]),
        Resp::err("ERR FLUSHALL is disabled by the proxy's config (proxy.allow_flushall = false)")
    );
    assert_eq!(
        c.cmd(&["flushdb", "async"]),
        Resp::err("ERR FLUSHDB is disabled by the proxy's config (proxy.allow_flushdb = false)")
    );
    assert_eq!(c.cmd(&["DBSIZE"]), Resp::Int(60));
    let total: i64 = cl.servers.iter().map(direct_dbsize).sum();
    assert_eq!(total, 60);
}

fn direct_config(r: &RedisServer, name: &str) -> String {
    let pair: (String, String) = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query(&mut r.conn())
        .unwrap();
    pair.1
}

#[test]
fn config_get_answers_the_first_group_and_config_set_is_off_by_default() {
    let cl = cluster(&[]);
    // Group 1's own value differs from the others', so the answer says which group spoke.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("12345678")
        .query(&mut cl.servers[0].conn())
        .unwrap();
    let mut c = cl.proxy.raw();
    assert_eq!(
        c.cmd(&["CONFIG", "GET", "maxmemory"]),
        Resp::array(vec![Resp::bulk("maxmemory"), Resp::bulk("12345678")])
    );
    assert_eq!(
        c.cmd(&["config", "set", "maxmemory-samples", "7"]),
        Resp::err(
            "ERR CONFIG SET is disabled by the proxy's config (proxy.allow_config_set = false)"
        )
    );
    assert_eq!(
        c.cmd(&["CONFIG", "RESETSTAT"]),
        Resp::err(
            "ERR CONFIG RESETSTAT is disabled by the proxy's config \
             (proxy.allow_config_set = false)"
        )
    );
    assert_eq!(
        c.cmd(&["CONFIG", "REWRITE"]),
        Resp::err("ERR command 'config rewrite' is not supported by the proxy")
    );
    for r in &cl.servers {
        assert_eq!(direct_config(r, "maxmemory-samples"), "5");
    }
}

#[test]
fn config_set_with_the_setting_changes_every_group() {
    let cl = cluster(&[("proxy.allow_config_set", "true")]);
    let mut c = cl.proxy.raw();
    assert_eq!(
        c.cmd(&["CONFIG", "SET", "maxmemory-samples", "7", "hz", "20"]),
        Resp::ok()
    );
    for r in &cl.servers {
        assert_eq!(direct_config(r, "maxmemory-samples"), "7");
        assert_eq!(direct_config(r, "hz"), "20");
    }
    // Redis's own error, alike from every group, is the reply.
    let unknown =
        RawConn::connect(cl.servers[0].addr()).cmd(&["CONFIG", "SET", "no-such-parameter", "1"]);
    assert!(unknown.is_error(), "{unknown:?}");
    assert_eq!(
        c.cmd(&["CONFIG", "SET", "no-such-parameter", "1"]),
        RawConn::connect(cl.servers[0].addr()).cmd(&["CONFIG", "SET", "no-such-parameter", "1"])
    );
    assert_eq!(c.cmd(&["CONFIG", "RESETSTAT"]), Resp::ok());
}

#[test]
fn a_dead_group_makes_every_keyspace_command_an_error_naming_it() {
    let mut cl = cluster(&[]);
    let mut c = cl.proxy.raw();
    set_keys(&mut c, "k:", 90);
    // Group 2 (index 1): a SCAN from 0 has group 1's keys to return before it gets there.
    cl.servers[1].kill();
    let dead = format!("backend {} unavailable", cl.servers[1].addr());
    for cmd in [&["DBSIZE"][..], &["KEYS", "*"], &["LASTSAVE"], &["FLUSHDB"]] {
        let reply = c.cmd(cmd);
        assert!(
            reply.error_text().contains(&dead),
            "{cmd:?} answered {reply:?}, expected an error containing {dead:?}"
        );
    }
    // FLUSHDB answered an error, not OK (the live groups may be empty now): a key on each
    // live group gives SCAN something to return on the way.
    for g in [1, 3] {
        let k = find_key("live:", |k| group_of_key(k, GROUPS) == g);
        assert_eq!(c.cmd(&["SET", &k, "v"]), Resp::ok());
    }

    let mut cursor = "0".to_string();
    let mut error = None;
    for _ in 0..MAX_SCAN_CALLS {
        let reply = c.cmd(&["SCAN", &cursor, "COUNT", "10"]);
        if reply.is_error() {
            error = Some(reply);
            break;
        }
        let items = reply.items().expect("SCAN reply");
        cursor = String::from_utf8(items[0].bytes().unwrap().to_vec()).unwrap();
        assert_ne!(cursor, "0", "SCAN ended without the dead group's keys");
    }
    let error = error.expect("SCAN never reached the dead group");
    assert!(error.error_text().contains(&dead), "SCAN: {error:?}");
    // The same cursor keeps failing (nothing skipped), and other commands still work.
    assert!(c.cmd(&["SCAN", &cursor]).error_text().contains(&dead));
    assert_eq!(c.cmd(&["PING"]), Resp::simple("PONG"));
}

#[test]
fn the_redis_crate_scans_every_key_in_resp2_and_resp3() {
    let cl = cluster(&[]);
    let mut c = cl.proxy.raw();
    let keys = set_keys(&mut c, "k:", 200);

    let mut conn = cl.proxy.conn();
    let (cursor, batch): (u64, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("COUNT")
        .arg(10)
        .query(&mut conn)
        .unwrap();
    assert_ne!(cursor, 0);
    assert!(batch.iter().all(|k| keys.contains(k)));
    let got: Vec<String> = redis::Commands::scan(&mut conn)
        .unwrap()
        .take(10_000)
        .collect();
    assert_each_once(&got, &keys);

    let url = format!("redis://{}/?protocol=resp3", cl.proxy.addr);
    let mut conn3 = redis::Client::open(url)
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("connect with HELLO 3");
    let got: Vec<String> = redis::Commands::scan_match(&mut conn3, "k:*")
        .unwrap()
        .take(10_000)
        .collect();
    assert_each_once(&got, &keys);
    let n: i64 = redis::cmd("DBSIZE").query(&mut conn3).unwrap();
    assert_eq!(n, 200);
    let all: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn3).unwrap();
    assert_each_once(&all, &keys);
}

/// The bundled key-prefix plugin rewrites KEYS and SCAN patterns into the tenant's namespace
/// and strips the replies: through the fan-out, a tenant lists its own keys on every group,
/// once, and none of another namespace.
#[test]
fn key_prefix_confines_keys_and_scan_to_the_tenant_over_every_group() {
    let module = built("key_prefix");
    let servers: Vec<RedisServer> = (0..GROUPS).map(|_| RedisServer::start()).collect();
    let groups: Vec<[&RedisServer; 1]> = servers.iter().map(|s| [s]).collect();
    let groups: Vec<&[&RedisServer]> = groups.iter().map(|g| &g[..]).collect();
    // CONFIG SET is allowed by the proxy here, so what refuses it is key-prefix.
    let proxy = Proxy::builder(&groups)
        .set("proxy.allow_config_set", "true")
        .extra_toml(&format!(
            "[[plugin]]\nname = \"key-prefix\"\npath = {}\n\
             config = '''{{\"tenants\": {{}}, \"default\": \"t1:\"}}'''\ntimeout_ms = 500\n",
            toml_str(&module.display().to_string())
        ))
        .start();
    let mut c = proxy.raw();
    let mine = set_keys(&mut c, "k:", 150);
    // Another namespace's keys, written on the backends directly.
    for (i, r) in servers.iter().enumerate() {
        for j in 0..20 {
            let _: () = redis::cmd("SET")
                .arg(format!("t2:k:{i}:{j}"))
                .arg("x")
                .query(&mut r.conn())
                .unwrap();
        }
    }
    assert_each_once(&strings(&c.cmd(&["KEYS", "*"])), &mine);
    let (got, calls) = scan_all(&mut c, &["COUNT", "10"], || {});
    assert_each_once(&got, &mine);
    assert!(calls >= GROUPS, "only {calls} SCAN calls");
    // DBSIZE, FLUSHDB and FLUSHALL act on every tenant's keys: refused for a tenant, and
    // the other namespace is still there.
    for cmd in ["DBSIZE", "FLUSHDB", "FLUSHALL"] {
        let reply = c.cmd(&[cmd]);
        assert_eq!(
            reply,
            Resp::err(&format!(
                "NOPERM '{}' acts on every tenant's keys",
                cmd.to_ascii_lowercase()
            ))
        );
    }
    for (cmd, name) in [
        (&["CONFIG", "SET", "hz", "20"][..], "config|set"),
        (&["CONFIG", "RESETSTAT"], "config|resetstat"),
    ] {
        assert_eq!(
            c.cmd(cmd),
            Resp::err(&format!(
                "NOPERM '{name}' changes the servers every tenant shares"
            ))
        );
    }
    assert_eq!(
        c.cmd(&["CONFIG", "GET", "hz"]),
        Resp::array(vec![Resp::bulk("hz"), Resp::bulk("10")])
    );
    for (i, r) in servers.iter().enumerate() {
        assert_eq!(direct_config(r, "hz"), "10", "group {}", i + 1);
        let v: Option<String> = redis::cmd("GET")
            .arg(format!("t2:k:{i}:0"))
            .query(&mut r.conn())
            .unwrap();
        assert_eq!(v.as_deref(), Some("x"), "t2's keys on group {}", i + 1);
    }
    // SORT's GET pattern reads the tenant's keys only, though another tenant's key of the
    // same name (and slot) exists.
    assert_eq!(c.cmd(&["RPUSH", "{s}list", "1"]), Resp::Int(1));
    assert_eq!(c.cmd(&["SET", "{s}o_1", "mine"]), Resp::ok());
    let owner = &servers[group_of_key(b"t1:{s}list", GROUPS) as usize - 1];
    let _: () = redis::cmd("SET")
        .arg("{s}o_1")
        .arg("theirs")
        .query(&mut owner.conn())
        .unwrap();
    assert_eq!(
        c.cmd(&["SORT", "{s}list", "GET", "{s}o_*"]),
        Resp::Array(Some(vec![Resp::bulk("mine")]))
    );
}

#[test]
fn randomkey_answers_keys_of_every_group_and_nil_only_when_all_are_empty() {
    let mut cl = cluster(&[]);
    let mut c = cl.proxy.raw();
    assert_eq!(c.cmd(&["RANDOMKEY"]), Resp::nil());
    let mut conn3 = redis::Client::open(format!("redis://{}/?protocol=resp3", cl.proxy.addr))
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("connect with HELLO 3");
    let none: Option<String> = redis::cmd("RANDOMKEY").query(&mut conn3).unwrap();
    assert_eq!(none, None);

    // Keys on one group only: the empty groups are never chosen.
    let only: HashSet<String> = (0..200)
        .map(|i| format!("one:{i}"))
        .filter(|k| group_of_key(k.as_bytes(), GROUPS) == 2)
        .take(3)
        .collect();
    for k in &only {
        assert_eq!(c.cmd(&["SET", k, "v"]), Resp::ok());
    }
    for _ in 0..30 {
        let key = String::from_utf8(c.cmd(&["RANDOMKEY"]).bytes().unwrap().to_vec()).unwrap();
        assert!(only.contains(&key), "{key}");
    }

    // Keys on every group: each group answers sometimes (each holds about a third of the
    // keys; 300 draws miss one with a chance below 1e-50).
    assert_eq!(c.cmd(&["FLUSHALL"]), Resp::ok());
    let keys = set_keys(&mut c, "r:", 60);
    let mut groups_seen = HashSet::new();
    for _ in 0..300 {
        let key: String = redis::cmd("RANDOMKEY").query(&mut conn3).unwrap();
        assert!(keys.contains(&key), "{key}");
        groups_seen.insert(group_of_key(key.as_bytes(), GROUPS));
    }
    assert_eq!(groups_seen.len(), GROUPS, "{groups_seen:?}");

    cl.servers[2].kill();
    let dead = format!("backend {} unavailable", cl.servers[2].addr());
    let reply = c.cmd(&["RANDOMKEY"]);
    assert!(reply.error_text().contains(&dead), "{reply:?}");
    assert_eq!(c.cmd(&["PING"]), Resp::simple("PONG"));
}
