//! What GUI tools (RedisInsight's browser, Another Redis Desktop Manager) send when they
//! connect and browse, replayed with the `redis` crate through the proxy over three groups
//! and against one Redis holding the same keys: every answer is the single Redis's.

use tessera_testkit as harness;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use harness::*;

/// Bounds on one full SCAN iteration.
const MAX_SCAN_CALLS: usize = 2_000;
const SCAN_BOUND: Duration = Duration::from_secs(30);
/// Keys of each type in db 0.
const PER_TYPE: usize = 12;

/// The same keys, written through `c`: strings (half with a TTL), hashes, lists, sets,
/// sorted sets in db 0, and three strings in db 1.
fn fill(c: &mut redis::Connection) {
    let mut p = redis::pipe();
    for i in 0..PER_TYPE {
        p.cmd("SET")
            .arg(format!("s:{i}"))
            .arg("x".repeat(i * 10))
            .ignore();
        if i % 2 == 0 {
            p.cmd("EXPIRE").arg(format!("s:{i}")).arg(1000).ignore();
        }
        p.cmd("HSET")
            .arg(format!("user:{i}"))
            .arg("name")
            .arg("n")
            .arg("age")
            .arg(i)
            .ignore();
        p.cmd("RPUSH")
            .arg(format!("l:{i}"))
            .arg(&["a", "b", "c"][..=i % 3])
            .ignore();
        p.cmd("SADD")
            .arg(format!("set:{i}"))
            .arg(i)
            .arg("m")
            .ignore();
        p.cmd("ZADD").arg(format!("z:{i}")).arg(i).arg("m").ignore();
    }
    p.cmd("SELECT").arg(1).ignore();
    for k in ["one", "two", "three"] {
        p.cmd("SET").arg(format!("db1:{k}")).arg(k).ignore();
    }
    p.cmd("SELECT").arg(0).ignore();
    p.query::<()>(c).expect("fill");
}

/// Every key of a full `SCAN cursor MATCH pattern COUNT count [TYPE type]` iteration.
fn scan_all(
    c: &mut redis::Connection,
    pattern: &str,
    count: u32,
    kind: Option<&str>,
) -> BTreeSet<String> {
    let start = Instant::now();
    let mut cursor = 0u64;
    let mut keys = BTreeSet::new();
    for _ in 0..MAX_SCAN_CALLS {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(count);
        if let Some(kind) = kind {
            cmd.arg("TYPE").arg(kind);
        }
        let (next, page): (u64, Vec<String>) = cmd.query(c).expect("SCAN");
        keys.extend(page);
        if next == 0 {
            return keys;
        }
        cursor = next;
        assert!(
            start.elapsed() < SCAN_BOUND,
            "SCAN took over {SCAN_BOUND:?}"
        );
    }
    panic!("SCAN did not end within {MAX_SCAN_CALLS} calls");
}

/// The `keys=` and `expires=` of each `dbN:` line of INFO's keyspace section.
fn keyspace(info: &str) -> Vec<(String, String, String)> {
    let section = info.split("# Keyspace").nth(1).expect("a keyspace section");
    section
        .lines()
        .take_while(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (db, fields) = l.trim().split_once(':')?;
            let field = |name: &str| {
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix(name))
                    .unwrap_or_default()
                    .to_string()
            };
            Some((db.to_string(), field("keys="), field("expires=")))
        })
        .collect()
}

/// What one key's row in a browser shows, as RedisInsight reads it in one pipeline.
#[derive(Debug, PartialEq)]
struct KeyRow {
    kind: String,
    /// -1 without a TTL, else whether it is within 100 s of the 1000 s it was given.
    ttl_set: i64,
    memory: Option<i64>,
    encoding: String,
    length: i64,
}

/// The whole browsing session, as the tools send it.
#[derive(Debug, PartialEq)]
struct Seen {
    setname: String,
    getname: String,
    databases: Vec<String>,
    keyspace: Vec<(String, String, String)>,
    dbsize: i64,
    all: BTreeSet<String>,
    hashes: BTreeSet<String>,
    search: BTreeSet<String>,
    rows: Vec<(String, KeyRow)>,
    exists: (i64, i64),
    db1: BTreeSet<String>,
    ping: String,
}

fn browse(c: &mut redis::Connection) -> Seen {
    // Connect: ioredis's connectionName, then the overview (INFO) and the db selector.
    let setname: String = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("redisinsight-browser-1")
        .query(c)
        .expect("CLIENT SETNAME");
    let getname: String = redis::cmd("CLIENT")
        .arg("GETNAME")
        .query(c)
        .expect("GETNAME");
    let info: String = redis::cmd("INFO").query(c).expect("INFO");
    let databases: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("databases")
        .query(c)
        .expect("CONFIG GET databases");
    let dbsize: i64 = redis::cmd("DBSIZE").query(c).expect("DBSIZE");
    // The key list: ARDM pages of 500, RedisInsight pages of 2000 with a type filter, and a
    // search.
    let all = scan_all(c, "*", 500, None);
    let hashes = scan_all(c, "*", 2000, Some("hash"));
    let search = scan_all(c, "*user:1*", 10_000, None);
    // Each row: TYPE, then TTL, MEMORY USAGE ... SAMPLES 0 and the length command of the
    // type, pipelined; OBJECT ENCODING for the key's detail.
    let mut rows = Vec::new();
    for key in &all {
        let kind: String = redis::cmd("TYPE").arg(key).query(c).expect("TYPE");
        let length = match kind.as_str() {
            "string" => "STRLEN",
            "hash" => "HLEN",
            "list" => "LLEN",
            "set" => "SCARD",
            "zset" => "ZCARD",
            other => panic!("{key} is a {other}"),
        };
        let (ttl, memory, encoding, length): (i64, Option<i64>, String, i64) = redis::pipe()
            .cmd("TTL")
            .arg(key)
            .cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .arg("SAMPLES")
            .arg(0)
            .cmd("OBJECT")
            .arg("ENCODING")
            .arg(key)
            .cmd(length)
            .arg(key)
            .query(c)
            .unwrap_or_else(|e| panic!("row of {key}: {e}"));
        let ttl_set = if ttl < 0 {
            ttl
        } else {
            i64::from((900..=1000).contains(&ttl))
        };
        rows.push((
            key.clone(),
            KeyRow {
                kind,
                ttl_set,
                memory,
                encoding,
                length,
            },
        ));
    }
    // ARDM's exact search, then another db.
    let exists: (i64, i64) = redis::pipe()
        .cmd("EXISTS")
        .arg("user:3")
        .cmd("EXISTS")
        .arg("user:nope")
        .query(c)
        .expect("EXISTS");
    let _: () = redis::cmd("SELECT").arg(1).query(c).expect("SELECT 1");
    let db1 = scan_all(c, "*", 500, None);
    let ping: String = redis::cmd("PING").query(c).expect("PING");
    Seen {
        setname,
        getname,
        databases,
        keyspace: keyspace(&info),
        dbsize,
        all,
        hashes,
        search,
        rows,
        exists,
        db1,
        ping,
    }
}

#[test]
fn a_gui_tool_browsing_through_the_proxy_sees_what_one_redis_shows() {
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let groups: Vec<[&RedisServer; 1]> = servers.iter().map(|s| [s]).collect();
    let groups: Vec<&[&RedisServer]> = groups.iter().map(|g| &g[..]).collect();
    let proxy = Proxy::start(&groups);
    let single = RedisServer::start();

    fill(&mut proxy.conn());
    fill(&mut single.conn());
    for (g, s) in servers.iter().enumerate() {
        let n: i64 = redis::cmd("DBSIZE").query(&mut s.conn()).unwrap();
        assert!(n > 0, "group {} holds no key", g + 1);
    }

    let through_proxy = browse(&mut proxy.conn());
    let from_single = browse(&mut single.conn());
    assert_eq!(through_proxy.all.len(), 5 * PER_TYPE);
    assert_eq!(through_proxy.hashes.len(), PER_TYPE);
    assert_eq!(through_proxy.db1.len(), 3);
    let line =
        |db: &str, keys: usize, expires: usize| (db.into(), keys.to_string(), expires.to_string());
    assert_eq!(
        through_proxy.keyspace,
        [line("db0", 5 * PER_TYPE, PER_TYPE / 2), line("db1", 3, 0)]
    );
    assert!(
        through_proxy
            .rows
            .iter()
            .all(|(_, r)| r.memory.is_some_and(|m| m > 0))
    );
    assert_eq!(through_proxy, from_single);
}
