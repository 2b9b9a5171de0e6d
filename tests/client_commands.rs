//! A real client library (redis crate, async) through the proxy: every class of command,
//! split multi-key commands, same-slot multi-key commands and CROSSSLOT, SELECT, AUTH,
//! session commands, and the errors of unsupported / unknown / wrong-arity commands.
//! Where the reply is Redis's own, it is compared with a standalone reference redis-server
//! given the same commands.

use tessera_testkit as harness;

use harness::*;
use redis::Value;
use redis::aio::MultiplexedConnection;

const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

/// A reply as comparable data: the value, or the error's code and detail.
type Reply = Result<Value, String>;

fn args_text(args: &[&str]) -> String {
    args.join(" ")
}

async fn run(con: &mut MultiplexedConnection, args: &[&str]) -> Reply {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async::<Value>(con).await.map_err(|e| {
        format!(
            "{} {}",
            e.code().unwrap_or("?"),
            e.detail().unwrap_or(&e.to_string())
        )
    })
}

/// Runs `args` on the proxy and on the reference server; asserts identical replies.
async fn same(
    proxy: &mut MultiplexedConnection,
    reference: &mut MultiplexedConnection,
    args: &[&str],
) -> Reply {
    let want = run(reference, args).await;
    let got = run(proxy, args).await;
    assert_eq!(
        got,
        want,
        "`{}`: proxy answered {got:?}, Redis answers {want:?}",
        args_text(args)
    );
    got
}

fn ok(v: &Reply) -> &Value {
    v.as_ref()
        .unwrap_or_else(|e| panic!("unexpected error {e}"))
}

fn int(v: &Reply) -> i64 {
    match ok(v) {
        Value::Int(i) => *i,
        other => panic!("expected integer, got {other:?}"),
    }
}

fn bulk(v: &Reply) -> String {
    match ok(v) {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Okay => "OK".into(),
        other => panic!("expected string, got {other:?}"),
    }
}

/// Two keys with the given prefix that live on different groups (of a 2-group proxy).
fn keys_on_both_groups(prefix: &str) -> (String, String) {
    (
        find_key(&format!("{prefix}a"), |k| group_of_key(k, 2) == 1),
        find_key(&format!("{prefix}b"), |k| group_of_key(k, 2) == 2),
    )
}

struct Setup {
    r1: RedisServer,
    r2: RedisServer,
    reference: RedisServer,
    proxy: Proxy,
}

fn setup(settings: &[(&str, &str)]) -> Setup {
    let r1 = RedisServer::start();
    let r2 = RedisServer::start();
    let reference = RedisServer::start();
    let proxy = Proxy::start_with(&[&[&r1], &[&r2]], settings);
    Setup {
        r1,
        r2,
        reference,
        proxy,
    }
}

impl Setup {
    async fn conns(&self) -> (MultiplexedConnection, MultiplexedConnection) {
        (
            self.proxy.async_conn().await,
            async_conn_url(&format!("redis://{}/", self.reference.addr())).await,
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_data_type_matches_redis() {
    let s = setup(&[]);
    let (mut p, mut r) = s.conns().await;

    let script: &[&[&str]] = &[
        // strings
        &["SET", "str:a", "hello"],
        &["GET", "str:a"],
        &["APPEND", "str:a", " world"],
        &["STRLEN", "str:a"],
        &["GETRANGE", "str:a", "0", "4"],
        &["SETRANGE", "str:a", "6", "WORLD"],
        &["GET", "str:a"],
        &["SETNX", "str:a", "other"],
        &["SET", "str:b", "1", "NX"],
        &["SET", "str:b", "2", "XX", "GET"],
        &["GETDEL", "str:b"],
        &["GET", "str:missing"],
        &["INCR", "ctr:a"],
        &["INCRBY", "ctr:a", "41"],
        &["DECR", "ctr:a"],
        &["DECRBY", "ctr:a", "10"],
        &["INCRBYFLOAT", "ctr:f", "2.5"],
        &["INCR", "str:a"],
        // hashes
        &["HSET", "h:a", "f1", "v1", "f2", "v2", "n", "5"],
        &["HGET", "h:a", "f1"],
        &["HMGET", "h:a", "f1", "nope", "f2"],
        &["HGETALL", "h:a"],
        &["HINCRBY", "h:a", "n", "7"],
        &["HEXISTS", "h:a", "f2"],
        &["HDEL", "h:a", "f2", "nope"],
        &["HLEN", "h:a"],
        &["HKEYS", "h:a"],
        // lists
        &["RPUSH", "l:a", "a", "b", "c"],
        &["LPUSH", "l:a", "z"],
        &["LRANGE", "l:a", "0", "-1"],
        &["LINDEX", "l:a", "2"],
        &["LPOP", "l:a"],
        &["RPOP", "l:a", "2"],
        &["LLEN", "l:a"],
        &["LINSERT", "l:a", "BEFORE", "a", "x"],
        &["LRANGE", "l:a", "0", "-1"],
        // sets
        &["SADD", "s:a", "m1", "m2", "m3", "m2"],
        &["SISMEMBER", "s:a", "m2"],
        &["SMISMEMBER", "s:a", "m1", "m9"],
        &["SCARD", "s:a"],
        &["SREM", "s:a", "m3"],
        &["SCARD", "s:a"],
        // sorted sets
        &["ZADD", "z:a", "1", "one", "2", "two", "3", "three"],
        &["ZRANGE", "z:a", "0", "-1", "WITHSCORES"],
        &["ZSCORE", "z:a", "two"],
        &["ZINCRBY", "z:a", "10", "one"],
        &["ZRANK", "z:a", "one"],
        &["ZREVRANGE", "z:a", "0", "1"],
        &["ZRANGEBYSCORE", "z:a", "2", "3"],
        &["ZCARD", "z:a"],
        &["ZREM", "z:a", "three"],
        // streams
        &["XADD", "x:a", "1-1", "f", "v1"],
        &["XADD", "x:a", "1-2", "f", "v2", "g", "w"],
        &["XADD", "x:a", "1-1", "f", "dup"],
        &["XLEN", "x:a"],
        &["XRANGE", "x:a", "-", "+"],
        &["XREVRANGE", "x:a", "+", "-", "COUNT", "1"],
        &["XDEL", "x:a", "1-1"],
        &["XRANGE", "x:a", "-", "+"],
        // HyperLogLog
        &["PFADD", "hll:a", "a", "b", "c", "d"],
        &["PFADD", "hll:a", "a"],
        &["PFCOUNT", "hll:a"],
        // bitmaps
        &["SETBIT", "bits:a", "7", "1"],
        &["SETBIT", "bits:a", "100", "1"],
        &["GETBIT", "bits:a", "7"],
        &["GETBIT", "bits:a", "8"],
        &["BITCOUNT", "bits:a"],
        &["BITPOS", "bits:a", "1"],
        &["GET", "bits:a"],
        // keyspace
        &["TYPE", "h:a"],
        &["TYPE", "z:a"],
        &["TYPE", "nothing"],
        &["EXPIRE", "str:a", "1000"],
        &["PERSIST", "str:a"],
        &["TTL", "str:a"],
        &["TTL", "nothing"],
        &["EXPIRE", "nothing", "10"],
        &["OBJECT", "ENCODING", "l:a"],
    ];
    for args in script {
        let _ = same(&mut p, &mut r, args).await;
    }

    // Explicit values, so that identical-but-wrong replies cannot pass.
    assert_eq!(bulk(&run(&mut p, &["GET", "str:a"]).await), "hello WORLD");
    assert_eq!(bulk(&run(&mut p, &["GET", "ctr:a"]).await), "31");
    assert_eq!(int(&run(&mut p, &["INCR", "ctr:a"]).await), 32);
    assert_eq!(int(&run(&mut p, &["HLEN", "h:a"]).await), 2);
    assert_eq!(int(&run(&mut p, &["PFCOUNT", "hll:a"]).await), 4);
    assert_eq!(int(&run(&mut p, &["BITCOUNT", "bits:a"]).await), 2);
    assert_eq!(int(&run(&mut p, &["XLEN", "x:a"]).await), 1);
    assert!(
        run(&mut p, &["INCR", "str:a"]).await.is_err(),
        "INCR of a non-integer must fail"
    );

    // EXPIRE / TTL (timing-dependent: checked by range, not against the reference).
    assert_eq!(int(&run(&mut p, &["EXPIRE", "str:a", "100"]).await), 1);
    let ttl = int(&run(&mut p, &["TTL", "str:a"]).await);
    assert!((90..=100).contains(&ttl), "TTL {ttl}");
    let pttl = int(&run(&mut p, &["PTTL", "str:a"]).await);
    assert!((90_000..=100_000).contains(&pttl), "PTTL {pttl}");
    assert_eq!(
        bulk(&run(&mut p, &["SET", "exp:a", "v", "PX", "100"]).await),
        "OK"
    );
    let gone = {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            if run(&mut p, &["GET", "exp:a"]).await == Ok(Value::Nil) {
                break true;
            }
            if std::time::Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    assert!(gone, "key with PX 100 still present after 5 s");

    // Every key written went to the group the harness predicts.
    for key in [
        "str:a", "ctr:a", "h:a", "l:a", "s:a", "z:a", "x:a", "hll:a", "bits:a",
    ] {
        let owner = if group_of_key(key.as_bytes(), 2) == 1 {
            &s.r1
        } else {
            &s.r2
        };
        let exists: i64 = redis::cmd("EXISTS")
            .arg(key)
            .query(&mut owner.conn())
            .unwrap();
        assert_eq!(exists, 1, "{key} not on its group {}", owner.addr());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_multi_key_commands_match_redis() {
    let s = setup(&[]);
    let (mut p, mut r) = s.conns().await;
    // 12 keys, 6 on each group, interleaved.
    let g1: Vec<String> = (0..6)
        .map(|i| find_key(&format!("m{i}:"), |k| group_of_key(k, 2) == 1))
        .collect();
    let g2: Vec<String> = (0..6)
        .map(|i| find_key(&format!("m{i}:"), |k| group_of_key(k, 2) == 2))
        .collect();
    let mut keys = Vec::new();
    for i in 0..6 {
        keys.push(g1[i].clone());
        keys.push(g2[i].clone());
    }

    let mut mset = vec!["MSET"];
    let vals: Vec<String> = keys.iter().map(|k| format!("val-{k}")).collect();
    // Only the first 8 keys are set; the other 4 stay missing.
    for i in 0..8 {
        mset.push(&keys[i]);
        mset.push(&vals[i]);
    }
    assert_eq!(same(&mut p, &mut r, &mset).await, Ok(Value::Okay));

    let mut mget = vec!["MGET"];
    mget.extend(keys.iter().map(|k| k.as_str()));
    mget.push(&keys[0]); // a duplicate
    let got = same(&mut p, &mut r, &mget).await;
    let Value::Array(items) = ok(&got) else {
        panic!("MGET: {got:?}")
    };
    assert_eq!(items.len(), 13);
    for (i, item) in items.iter().enumerate().take(12) {
        if i < 8 {
            assert_eq!(*item, Value::BulkString(vals[i].clone().into_bytes()));
        } else {
            assert_eq!(*item, Value::Nil, "missing key {} must be nil", keys[i]);
        }
    }

    // The values are on the right backends.
    for (i, k) in keys.iter().enumerate().take(8) {
        let (owner, other) = if i % 2 == 0 {
            (&s.r1, &s.r2)
        } else {
            (&s.r2, &s.r1)
        };
        let v: Option<String> = redis::cmd("GET").arg(k).query(&mut owner.conn()).unwrap();
        assert_eq!(v.as_deref(), Some(vals[i].as_str()), "{k} on its group");
        let v: Option<String> = redis::cmd("GET").arg(k).query(&mut other.conn()).unwrap();
        assert_eq!(v, None, "{k} on the other group");
    }

    // EXISTS counts duplicates; TOUCH, DEL, UNLINK count existing keys, summed over groups.
    let exists = same(
        &mut p,
        &mut r,
        &["EXISTS", &keys[0], &keys[1], &keys[1], &keys[9], &keys[2]],
    )
    .await;
    assert_eq!(int(&exists), 4);
    let touch = same(&mut p, &mut r, &["TOUCH", &keys[0], &keys[1], &keys[10]]).await;
    assert_eq!(int(&touch), 2);
    let del = same(
        &mut p,
        &mut r,
        &["DEL", &keys[0], &keys[1], &keys[2], &keys[11]],
    )
    .await;
    assert_eq!(int(&del), 3);
    let unlink = same(
        &mut p,
        &mut r,
        &["UNLINK", &keys[3], &keys[4], &keys[5], &keys[0]],
    )
    .await;
    assert_eq!(int(&unlink), 3);
    let exists = same(&mut p, &mut r, &["EXISTS", &keys[0], &keys[6], &keys[7]]).await;
    assert_eq!(int(&exists), 2);
    let mut mget = vec!["MGET"];
    mget.extend(keys.iter().map(|k| k.as_str()));
    let _ = same(&mut p, &mut r, &mget).await;
    // Single-key forms of the split commands.
    assert_eq!(int(&same(&mut p, &mut r, &["DEL", &keys[6]]).await), 1);
    assert_eq!(int(&same(&mut p, &mut r, &["EXISTS", &keys[6]]).await), 0);
    let _ = same(&mut p, &mut r, &["MGET", &keys[7]]).await;
    let _ = same(&mut p, &mut r, &["MSET", &keys[6], "again"]).await;
    assert_eq!(bulk(&run(&mut p, &["GET", &keys[6]]).await), "again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_slot_multi_key_commands_work_with_hash_tags() {
    let s = setup(&[]);
    let (mut p, mut r) = s.conns().await;
    let script: &[&[&str]] = &[
        &["SET", "{t}a", "1"],
        &["RENAME", "{t}a", "{t}b"],
        &["GET", "{t}b"],
        &["RENAMENX", "{t}b", "{t}c"],
        &["SADD", "{t}s1", "x", "y", "z"],
        &["SADD", "{t}s2", "y", "z", "w"],
        &["SMOVE", "{t}s1", "{t}s2", "x"],
        &["SINTERSTORE", "{t}si", "{t}s1", "{t}s2"],
        &["SMISMEMBER", "{t}si", "x", "y", "z", "w"],
        &["SUNIONSTORE", "{t}su", "{t}s1", "{t}s2"],
        &["SCARD", "{t}su"],
        &["SDIFFSTORE", "{t}sd", "{t}s2", "{t}s1"],
        &["SMISMEMBER", "{t}sd", "x", "y", "z", "w"],
        &["RPUSH", "{t}l1", "a", "b", "c"],
        &["LMOVE", "{t}l1", "{t}l2", "LEFT", "RIGHT"],
        &["RPOPLPUSH", "{t}l1", "{t}l2"],
        &["LRANGE", "{t}l2", "0", "-1"],
        &["ZADD", "{t}z1", "1", "a", "2", "b"],
        &["ZADD", "{t}z2", "10", "b", "20", "c"],
        &["ZUNIONSTORE", "{t}zu", "2", "{t}z1", "{t}z2"],
        &["ZRANGE", "{t}zu", "0", "-1", "WITHSCORES"],
        &[
            "ZINTERSTORE",
            "{t}zi",
            "2",
            "{t}z1",
            "{t}z2",
            "WEIGHTS",
            "1",
            "2",
        ],
        &["ZRANGE", "{t}zi", "0", "-1", "WITHSCORES"],
        &["PFADD", "{t}h1", "a", "b"],
        &["PFADD", "{t}h2", "b", "c"],
        &["PFMERGE", "{t}h3", "{t}h1", "{t}h2"],
        &["PFCOUNT", "{t}h3"],
        &["PFCOUNT", "{t}h1", "{t}h2"],
        &["SET", "{t}b1", "ab"],
        &["SET", "{t}b2", "cd"],
        &["BITOP", "OR", "{t}b3", "{t}b1", "{t}b2"],
        &["GET", "{t}b3"],
        &["MSETNX", "{t}n1", "1", "{t}n2", "2"],
        &["MSETNX", "{t}n2", "x", "{t}n3", "3"],
        &["MGET", "{t}n1", "{t}n2", "{t}n3"],
        &[
            "EVAL",
            "return {redis.call('SET', KEYS[1], ARGV[1]), redis.call('GET', KEYS[2])}",
            "2",
            "{t}e1",
            "{t}n1",
            "ev",
        ],
        &["EVAL", "return redis.call('GET', KEYS[1])", "1", "{t}e1"],
        &[
            "EVALSHA",
            "0000000000000000000000000000000000000000",
            "1",
            "{t}e1",
        ],
        &["COPY", "{t}e1", "{t}e2"],
        &["GET", "{t}e2"],
    ];
    for args in script {
        let _ = same(&mut p, &mut r, args).await;
    }
    assert_eq!(bulk(&run(&mut p, &["GET", "{t}e2"]).await), "ev");
    assert_eq!(bulk(&run(&mut p, &["GET", "{t}b3"]).await), "cf");
    // All of it on the group of slot("t").
    let owner = if group_of_key(b"{t}", 2) == 1 {
        &s.r1
    } else {
        &s.r2
    };
    let n: i64 = redis::cmd("EXISTS")
        .arg(&["{t}c", "{t}s2", "{t}l2", "{t}zu", "{t}h3", "{t}b3", "{t}e2"])
        .query(&mut owner.conn())
        .unwrap();
    assert_eq!(n, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_key_commands_across_slots_get_crossslot() {
    let s = setup(&[]);
    let mut p = s.proxy.async_conn().await;
    // a and b on different groups; c on a's group but in another slot.
    let (a, b) = keys_on_both_groups("x:");
    let c = find_key("y:", |k| {
        group_of_key(k, 2) == 1 && slot(k) != slot(a.as_bytes())
    });
    for k in [&a, &b, &c] {
        run(&mut p, &["SET", k, "1"]).await.unwrap();
    }
    let cases: Vec<Vec<&str>> = vec![
        vec!["RENAME", &a, &b],
        vec!["RENAME", &a, &c],
        vec!["RENAMENX", &a, &b],
        vec!["SMOVE", &a, &b, "m"],
        vec!["LMOVE", &a, &b, "LEFT", "RIGHT"],
        vec!["RPOPLPUSH", &a, &c],
        vec!["SINTERSTORE", &a, &b],
        vec!["SINTERSTORE", &a, &a, &b],
        vec!["SUNION", &a, &b],
        vec!["ZUNIONSTORE", &a, "2", &a, &b],
        vec!["ZINTERSTORE", &c, "2", &a, &c],
        vec!["PFMERGE", &a, &b],
        vec!["PFCOUNT", &a, &b],
        vec!["BITOP", "AND", &a, &a, &b],
        vec!["MSETNX", &a, "1", &b, "2"],
        vec!["EVAL", "return 1", "2", &a, &b],
        vec!["EVAL", "return 1", "2", &a, &c],
        vec!["COPY", &a, &b],
    ];
    for args in &cases {
        let got = run(&mut p, args).await;
        assert_eq!(
            got,
            Err(CROSSSLOT.to_string()),
            "`{}` with keys in different slots",
            args_text(args)
        );
    }
    // Nothing was changed, and the connection still works.
    for k in [&a, &b, &c] {
        assert_eq!(bulk(&run(&mut p, &["GET", k]).await), "1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_isolates_databases() {
    let s = setup(&[]);
    let mut p = s.proxy.async_conn().await;
    let key = "db:key";
    let owner = if group_of_key(key.as_bytes(), 2) == 1 {
        &s.r1
    } else {
        &s.r2
    };
    assert_eq!(run(&mut p, &["SELECT", "3"]).await, Ok(Value::Okay));
    run(&mut p, &["SET", key, "in-db-3"]).await.unwrap();
    assert_eq!(bulk(&run(&mut p, &["GET", key]).await), "in-db-3");
    assert_eq!(run(&mut p, &["SELECT", "0"]).await, Ok(Value::Okay));
    assert_eq!(run(&mut p, &["GET", key]).await, Ok(Value::Nil));
    run(&mut p, &["SET", key, "in-db-0"]).await.unwrap();

    let v3: Option<String> = redis::cmd("GET")
        .arg(key)
        .query(&mut owner.conn_db(3))
        .unwrap();
    assert_eq!(v3.as_deref(), Some("in-db-3"));
    let v0: Option<String> = redis::cmd("GET")
        .arg(key)
        .query(&mut owner.conn_db(0))
        .unwrap();
    assert_eq!(v0.as_deref(), Some("in-db-0"));

    // SELECT is per session: another connection is in db 0.
    let mut other = s.proxy.async_conn().await;
    assert_eq!(bulk(&run(&mut other, &["GET", key]).await), "in-db-0");
    // A client that selects at connect time (redis://host/3).
    let mut in3 = async_conn_url(&format!("redis://{}/3", s.proxy.addr)).await;
    assert_eq!(bulk(&run(&mut in3, &["GET", key]).await), "in-db-3");

    // Split commands honour the selected db too.
    let (a, b) = keys_on_both_groups("dbm:");
    run(&mut in3, &["MSET", &a, "1", &b, "2"]).await.unwrap();
    assert_eq!(
        run(&mut other, &["EXISTS", &a, &b]).await,
        Ok(Value::Int(0))
    );
    assert_eq!(run(&mut in3, &["EXISTS", &a, &b]).await, Ok(Value::Int(2)));

    assert_eq!(
        run(&mut p, &["SELECT", "15"]).await,
        Ok(Value::Okay),
        "databases = 16: db 15 exists"
    );
    assert_eq!(
        run(&mut p, &["SELECT", "16"]).await,
        Err("ERR DB index is out of range".to_string())
    );
    // Still in db 15 after the failed SELECT.
    assert_eq!(run(&mut p, &["GET", key]).await, Ok(Value::Nil));
    run(&mut p, &["SET", key, "in-db-15"]).await.unwrap();
    let v15: Option<String> = redis::cmd("GET")
        .arg(key)
        .query(&mut owner.conn_db(15))
        .unwrap();
    assert_eq!(v15.as_deref(), Some("in-db-15"));
}

#[test]
fn auth_with_a_proxy_password() {
    let s = setup(&[("proxy.password", &toml_str("s3cret"))]);
    let mut c = s.proxy.raw();
    for args in [
        &["GET", "k"][..],
        &["SET", "k", "v"],
        &["PING"],
        &["SELECT", "1"],
    ] {
        assert_eq!(
            c.cmd(args),
            Resp::err("NOAUTH Authentication required."),
            "{args:?} before AUTH"
        );
    }
    assert_eq!(
        c.cmd(&["AUTH", "wrong"]),
        Resp::err("WRONGPASS invalid username-password pair or user is disabled.")
    );
    assert_eq!(
        c.cmd(&["GET", "k"]),
        Resp::err("NOAUTH Authentication required.")
    );
    assert_eq!(c.cmd(&["AUTH", "s3cret"]), Resp::ok());
    assert_eq!(c.cmd(&["SET", "k", "v"]), Resp::ok());
    assert_eq!(c.cmd(&["GET", "k"]), Resp::bulk("v"));
    assert_eq!(c.cmd(&["PING"]), Resp::simple("PONG"));

    // A client library given the password in its URL.
    let client = redis::Client::open(format!("redis://:s3cret@{}/", s.proxy.addr)).unwrap();
    let mut conn = client.get_connection().expect("connect with password");
    let v: String = redis::cmd("GET").arg("k").query(&mut conn).unwrap();
    assert_eq!(v, "v");
    // And one with a wrong password is refused.
    let client = redis::Client::open(format!("redis://:nope@{}/", s.proxy.addr)).unwrap();
    assert!(client.get_connection().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_commands() {
    let s = setup(&[]);
    let mut p = s.proxy.async_conn().await;
    assert_eq!(
        run(&mut p, &["PING"]).await,
        Ok(Value::SimpleString("PONG".into()))
    );
    assert_eq!(bulk(&run(&mut p, &["PING", "hi there"]).await), "hi there");
    assert_eq!(bulk(&run(&mut p, &["ECHO", "echo me"]).await), "echo me");
    assert_eq!(
        run(&mut p, &["CLIENT", "SETNAME", "tess-test"]).await,
        Ok(Value::Okay)
    );
    assert_eq!(
        bulk(&run(&mut p, &["CLIENT", "GETNAME"]).await),
        "tess-test"
    );
    let id1 = int(&run(&mut p, &["CLIENT", "ID"]).await);
    let mut other = s.proxy.async_conn().await;
    let id2 = int(&run(&mut other, &["CLIENT", "ID"]).await);
    assert_ne!(id1, id2, "two sessions with the same CLIENT ID");
    assert_eq!(
        run(&mut other, &["CLIENT", "GETNAME"]).await,
        Ok(Value::Nil)
    );

    let count = int(&run(&mut p, &["COMMAND", "COUNT"]).await);
    assert!(count > 200, "COMMAND COUNT = {count}");
    let info = run(&mut p, &["COMMAND", "INFO", "get"]).await;
    let Value::Array(entries) = ok(&info) else {
        panic!("COMMAND INFO get: {info:?}")
    };
    assert_eq!(entries.len(), 1);
    let Value::Array(get_info) = &entries[0] else {
        panic!("COMMAND INFO get: {info:?}")
    };
    assert_eq!(get_info[0], Value::BulkString(b"get".to_vec()));
    assert_eq!(get_info[1], Value::Int(2));

    // HELLO over raw RESP (the client library would switch protocols).
    let mut c = s.proxy.raw();
    let hello = c.cmd(&["HELLO", "2"]);
    let items = hello
        .items()
        .unwrap_or_else(|| panic!("HELLO 2: {hello:?}"));
    let proto = items
        .iter()
        .position(|i| i.bytes() == Some(b"proto"))
        .unwrap_or_else(|| panic!("no proto in HELLO 2 reply {hello:?}"));
    assert_eq!(items[proto + 1], Resp::Int(2), "HELLO 2: {hello:?}");
    // HELLO 3 is served (tests/resp3.rs); only other versions are NOPROTO, as in Redis.
    let hello4 = c.cmd(&["HELLO", "4"]);
    assert_eq!(
        hello4,
        Resp::err("NOPROTO unsupported protocol version"),
        "HELLO 4: {hello4:?}"
    );
    assert_eq!(c.cmd(&["PING"]), Resp::simple("PONG"));
    assert_eq!(c.cmd(&["QUIT"]), Resp::ok());
    assert!(
        c.closed_within(std::time::Duration::from_secs(5)),
        "connection still open after QUIT"
    );
}

#[test]
fn unsupported_unknown_and_wrong_arity_errors_keep_the_connection() {
    let s = setup(&[]);
    let mut c = s.proxy.raw();
    let mut reference = s.reference.raw();
    let unsupported: &[&[&str]] = &[
        &["CONFIG", "REWRITE"],
        &["DEBUG", "SLEEP", "0"],
        &["SHUTDOWN"],
        &["REPLICAOF", "NO", "ONE"],
        &["SLAVEOF", "NO", "ONE"],
        &["MONITOR"],
        &["SYNC"],
        &["PSYNC", "?", "-1"],
        &["MULTI"],
        &["EXEC"],
        &["WATCH", "k"],
        &["BLPOP", "k", "1"],
        &["BRPOP", "k", "1"],
        &["BLMOVE", "a", "b", "LEFT", "LEFT", "1"],
        &["BZPOPMIN", "k", "1"],
        &["SUBSCRIBE", "ch"],
        &["PSUBSCRIBE", "ch*"],
    ];
    for args in unsupported {
        let got = c.cmd(args);
        let text = got.error_text().to_ascii_lowercase();
        assert!(
            text.contains("not supported by the proxy")
                && text.contains(&format!("'{}", args[0].to_ascii_lowercase())),
            "{args:?}: expected \"ERR command '{}' is not supported by the proxy\", got {got:?}",
            args[0].to_ascii_lowercase()
        );
        assert!(text.starts_with("err "), "{args:?}: {got:?}");
        assert_eq!(c.cmd(&["PING"]), Resp::simple("PONG"), "after {args:?}");
    }
    // Unknown commands and wrong arity: exactly Redis 7.0's replies.
    let same_as_redis: &[&[&str]] = &[
        &["FOO", "bar", "baz"],
        &["foo"],
        &["NoSuchCommand", "a b", "c"],
        &["GET"],
        &["get", "a", "b"],
        &["SET", "k"],
        &["HSET", "h", "f"],
        &["MGET"],
        &["DEL"],
        &["EXISTS"],
        &["MSET", "a"],
        &["MSET", "a", "1", "b"],
        &["RENAME", "a"],
        &["EVAL", "return 1"],
        &["ZADD", "z", "1"],
        &["SELECT"],
        &["ECHO"],
        &["AUTH"],
    ];
    for args in same_as_redis {
        let want = reference.cmd(args);
        let got = c.cmd(args);
        assert!(want.is_error(), "reference accepted {args:?}: {want:?}");
        assert_eq!(got, want, "{args:?}");
        assert_eq!(c.cmd(&["PING"]), Resp::simple("PONG"), "after {args:?}");
    }
    assert_eq!(c.cmd(&["SET", "still", "works"]), Resp::ok());
    assert_eq!(c.cmd(&["GET", "still"]), Resp::bulk("works"));
}

#[test]
fn quit_in_a_pipeline_answers_what_came_before_and_closes() {
    let s = setup(&[]);
    let mut c = s.proxy.raw();
    let mut bytes = encode(&["SET", "q", "1"]);
    bytes.extend(encode(&["PING"]));
    bytes.extend(encode(&["QUIT"]));
    bytes.extend(encode(&["SET", "q", "2"]));
    c.send(&bytes);
    assert_eq!(c.read().unwrap(), Resp::ok());
    assert_eq!(c.read().unwrap(), Resp::simple("PONG"));
    assert_eq!(c.read().unwrap(), Resp::ok());
    assert!(c.closed_within(std::time::Duration::from_secs(5)));
    let mut d = s.proxy.raw();
    assert_eq!(
        d.cmd(&["GET", "q"]),
        Resp::bulk("1"),
        "a command after QUIT was executed"
    );
}

#[test]
fn command_without_arguments_lists_redis_commands() {
    let s = setup(&[]);
    let mut c = s.proxy.raw();
    let all = c.cmd(&["COMMAND"]);
    let n = all
        .items()
        .unwrap_or_else(|| panic!("COMMAND: {all:?}"))
        .len();
    assert!(n > 200, "COMMAND listed {n} commands");
    assert_eq!(c.cmd(&["COMMAND", "COUNT"]), Resp::Int(n as i64));
}

#[test]
fn replicas_in_a_group_receive_no_routed_writes() {
    // The first server of a group is its master: the proxy writes there only.
    let master = RedisServer::start();
    let replica = RedisServer::start();
    let proxy = Proxy::start(&[&[&master, &replica]]);
    let mut c = proxy.raw();
    for i in 0..50 {
        assert_eq!(c.cmd(&["SET", &format!("r{i}"), "v"]), Resp::ok());
    }
    let on_master: i64 = redis::cmd("DBSIZE").query(&mut master.conn()).unwrap();
    let on_replica: i64 = redis::cmd("DBSIZE").query(&mut replica.conn()).unwrap();
    assert_eq!((on_master, on_replica), (50, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variable_key_position_commands() {
    // Commands whose keys follow a numkeys argument, a STREAMS keyword, a STORE option, or
    // sit after a subcommand: same-slot forms match Redis, cross-slot forms are refused.
    let s = setup(&[]);
    let (mut p, mut r) = s.conns().await;
    let same_slot: &[&[&str]] = &[
        &["RPUSH", "{v}l1", "3", "1", "2"],
        &["RPUSH", "{v}l2", "9"],
        &["LMPOP", "2", "{v}empty", "{v}l1", "LEFT", "COUNT", "2"],
        &["LPOS", "{v}l1", "2"],
        &["SORT", "{v}l1"],
        &["RPUSH", "{v}l1", "0"],
        &["SORT", "{v}l1", "STORE", "{v}sorted"],
        &["LRANGE", "{v}sorted", "0", "-1"],
        &["SADD", "{v}s1", "a", "b", "c"],
        &["SADD", "{v}s2", "b", "c", "d"],
        &["SINTERCARD", "2", "{v}s1", "{v}s2"],
        &["SINTERCARD", "2", "{v}s1", "{v}s2", "LIMIT", "1"],
        &["ZADD", "{v}z1", "1", "a", "2", "b"],
        &["ZADD", "{v}z2", "3", "b", "4", "c"],
        &["ZUNION", "2", "{v}z1", "{v}z2", "WITHSCORES"],
        &["ZINTER", "2", "{v}z1", "{v}z2"],
        &["ZDIFF", "2", "{v}z1", "{v}z2"],
        &["ZINTERCARD", "2", "{v}z1", "{v}z2"],
        &["ZDIFFSTORE", "{v}zd", "2", "{v}z1", "{v}z2"],
        &["ZRANGESTORE", "{v}zr", "{v}z2", "0", "-1"],
        &["ZMPOP", "2", "{v}none", "{v}zr", "MIN"],
        &["XADD", "{v}x1", "1-1", "f", "1"],
        &["XADD", "{v}x2", "2-1", "f", "2"],
        &["XREAD", "COUNT", "5", "STREAMS", "{v}x1", "{v}x2", "0", "0"],
        &["XGROUP", "CREATE", "{v}x1", "g", "0"],
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "COUNT",
            "1",
            "STREAMS",
            "{v}x1",
            ">",
        ],
        &["XACK", "{v}x1", "g", "1-1"],
        &["XPENDING", "{v}x1", "g"],
        &["GEOADD", "{v}geo", "13.361389", "38.115556", "Palermo"],
        &["GEOADD", "{v}geo", "15.087269", "37.502669", "Catania"],
        &["GEODIST", "{v}geo", "Palermo", "Catania", "km"],
        &[
            "GEOSEARCHSTORE",
            "{v}geo2",
            "{v}geo",
            "FROMLONLAT",
            "15",
            "37",
            "BYRADIUS",
            "200",
            "km",
            "ASC",
        ],
        &["ZRANGE", "{v}geo2", "0", "-1"],
        &["SET", "{v}a", "ohmytext"],
        &["SET", "{v}b", "mynewtext"],
        &["LCS", "{v}a", "{v}b"],
        &["OBJECT", "ENCODING", "{v}a"],
        &["MEMORY", "USAGE", "{v}a"],
        &["BITFIELD", "{v}bf", "INCRBY", "u8", "0", "200"],
        &["GETEX", "{v}a", "PERSIST"],
        &["EXPIRETIME", "{v}a"],
        &["LPUSH", "{v}a", "x"],
        &["EVAL", "return #KEYS", "0"],
        &["EVAL", "return 1", "-1"],
        &["EVAL", "return 1", "3", "{v}a"],
        &["EVAL", "return 1", "x"],
    ];
    for args in same_slot {
        let _ = same(&mut p, &mut r, args).await;
    }
    let (a, b) = keys_on_both_groups("vk:");
    let cross: Vec<Vec<&str>> = vec![
        vec!["LMPOP", "2", &a, &b, "LEFT"],
        vec!["SINTERCARD", "2", &a, &b],
        vec!["ZUNION", "2", &a, &b],
        vec!["ZINTERCARD", "2", &a, &b],
        vec!["ZMPOP", "2", &a, &b, "MIN"],
        vec!["ZDIFFSTORE", &a, "1", &b],
        vec!["ZRANGESTORE", &a, &b, "0", "-1"],
        vec!["XREAD", "STREAMS", &a, &b, "0", "0"],
        vec!["SORT", &a, "STORE", &b],
        vec![
            "GEOSEARCHSTORE",
            &a,
            &b,
            "FROMLONLAT",
            "0",
            "0",
            "BYRADIUS",
            "1",
            "km",
        ],
        vec!["LCS", &a, &b],
    ];
    for args in &cross {
        assert_eq!(
            run(&mut p, args).await,
            Err(CROSSSLOT.to_string()),
            "`{}`",
            args_text(args)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_commands_with_duplicates_and_any_case() {
    let s = setup(&[]);
    let (mut p, mut r) = s.conns().await;
    let (a, b) = keys_on_both_groups("dup:");
    let c = find_key("dupc:", |k| group_of_key(k, 2) == 1);
    let script: Vec<Vec<&str>> = vec![
        vec!["MSET", &a, "1", &b, "2", &a, "3", &c, "4", &b, "5"],
        vec!["MGET", &a, &b, &c, &a, "nokey", &b],
        vec!["mget", &b, &a],
        vec!["mSet", &c, "6"],
        vec!["exists", &a, &a, &b, &b, &c, "nokey"],
        vec!["Touch", &a, &b, &b],
        vec!["del", &a, &a, &b, &b],
        vec!["MGET", &a, &b, &c],
        vec!["Unlink", &c, &c, "nokey"],
        vec!["get", &c],
        vec!["set", &a, "x"],
        vec!["GET", &a],
    ];
    for args in &script {
        let _ = same(&mut p, &mut r, args).await;
    }
    // A large MGET spanning both groups: 5,000 keys, half present.
    let keys: Vec<String> = (0..5000).map(|i| format!("many:{i}")).collect();
    let mut mset = vec!["MSET"];
    let vals: Vec<String> = (0..5000).map(|i| format!("v{i}")).collect();
    for i in (0..5000).step_by(2) {
        mset.push(&keys[i]);
        mset.push(&vals[i]);
    }
    assert_eq!(same(&mut p, &mut r, &mset).await, Ok(Value::Okay));
    let mut mget = vec!["MGET"];
    mget.extend(keys.iter().map(String::as_str));
    let _ = same(&mut p, &mut r, &mget).await;
    let mut del = vec!["DEL"];
    del.extend(keys.iter().map(String::as_str));
    assert_eq!(int(&same(&mut p, &mut r, &del).await), 2500);
}

#[test]
fn error_texts_match_redis() {
    let s = setup(&[]);
    let mut c = s.proxy.raw();
    let mut reference = s.reference.raw();
    let long_name = "x".repeat(200);
    let long_arg = "y".repeat(300);
    let cases: Vec<Vec<&str>> = vec![
        vec![&long_name, "a"],
        vec!["nosuch", &long_arg, "b"],
        vec![
            "nosuch",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
            "cccccccccccccccccccccccccccccc",
            "dddddddddddddddddddddddddddddd",
            "eeeeeeeeeeeeeeeeeeeeeeeeeeeeee",
            "f",
        ],
        vec!["SELECT", "abc"],
        vec!["SELECT", "-1"],
        vec!["PING", "a", "b"],
        vec!["ECHO", "a", "b"],
        vec!["CLIENT"],
        vec!["CLIENT", "NOSUCHSUB"],
        vec!["COMMAND", "NOSUCHSUB"],
        vec!["OBJECT"],
        vec!["XGROUP"],
        vec!["SET", "k", "v", "EX", "notanumber"],
        vec!["SET", "k", "v", "NX", "XX"],
        vec!["INCRBY", "k", "1.5"],
        vec!["LPUSH", "k", "x"],
        vec!["GETRANGE", "k", "a", "b"],
        vec!["HELLO", "4"],
        vec!["HELLO", "two"],
    ];
    // k is a string on both sides.
    assert_eq!(reference.cmd(&["SET", "k", "v"]), Resp::ok());
    assert_eq!(c.cmd(&["SET", "k", "v"]), Resp::ok());
    // All cases are run; the mismatches are reported together.
    let mut mismatches = Vec::new();
    for args in &cases {
        let want = reference.cmd(args);
        let got = c.cmd(args);
        assert!(want.is_error(), "reference accepted {args:?}: {want:?}");
        if got != want {
            mismatches.push(format!(
                "`{}`: proxy {got:?}, Redis {want:?}",
                args_text(args)
            ));
        }
        assert_eq!(c.cmd(&["PING"]), Resp::simple("PONG"), "after {args:?}");
    }
    assert!(
        mismatches.is_empty(),
        "replies differing from Redis 7.0:\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn auth_and_hello_forms_with_a_password() {
    let s = setup(&[("proxy.password", &toml_str("pw"))]);
    let mut c = s.proxy.raw();
    assert_eq!(
        c.cmd(&["AUTH", "default", "pw"]),
        Resp::ok(),
        "AUTH user pass"
    );
    assert_eq!(c.cmd(&["GET", "k"]), Resp::nil());
    let mut d = s.proxy.raw();
    let hello = d.cmd(&["HELLO", "2", "AUTH", "default", "pw"]);
    assert!(
        hello.items().is_some(),
        "HELLO 2 AUTH default pw: {hello:?}"
    );
    assert_eq!(d.cmd(&["GET", "k"]), Resp::nil());
    let mut e = s.proxy.raw();
    let hello = e.cmd(&["HELLO", "2", "AUTH", "default", "bad"]);
    assert!(
        hello.error_text().starts_with("WRONGPASS"),
        "HELLO with a wrong password: {hello:?}"
    );
    assert_eq!(
        e.cmd(&["GET", "k"]),
        Resp::err("NOAUTH Authentication required.")
    );
    // HELLO without AUTH before authenticating: NOAUTH, like Redis.
    let mut f = s.proxy.raw();
    let hello = f.cmd(&["HELLO", "2"]);
    assert!(hello.error_text().starts_with("NOAUTH"), "{hello:?}");
    // AUTH when no password is configured: Redis's error.
    let plain = setup(&[]);
    let mut g = plain.proxy.raw();
    let want = plain.reference.raw().cmd(&["AUTH", "x"]);
    assert_eq!(g.cmd(&["AUTH", "x"]), want);
}

/// `AUTH a b c` passes AUTH's arity (-2): Redis answers a syntax error, and the session (which
/// once panicked on it) keeps serving, before and after authenticating.
#[test]
fn auth_with_too_many_arguments_is_a_syntax_error() {
    let s = setup(&[("proxy.password", &toml_str("pw"))]);
    let want = s.reference.raw().cmd(&["AUTH", "a", "b", "c"]);
    assert_eq!(want, Resp::err("ERR syntax error"));
    let mut c = s.proxy.raw();
    assert_eq!(c.cmd(&["AUTH", "a", "b", "c"]), want);
    assert_eq!(c.cmd(&["AUTH", "default", "pw", "x", "y"]), want);
    assert_eq!(c.cmd(&["AUTH", "pw"]), Resp::ok());
    assert_eq!(c.cmd(&["AUTH", "a", "b", "c"]), want);
    assert_eq!(c.cmd(&["PING"]), Resp::simple("PONG"));
}

/// Connections are per database: `MOVE k 1`, `SELECT 1`, `GET k` in one write must not let
/// the GET (on database 1's connection) overtake the MOVE (on database 0's). Redis pauses
/// writes for a moment, so an overtaking GET would find nothing.
#[test]
fn select_does_not_let_later_commands_overtake_earlier_ones() {
    let s = setup(&[("proxy.workers", "1")]);
    let mut c = s.proxy.raw();
    assert_eq!(c.cmd(&["SET", "moved", "v"]), Resp::ok());
    // Both databases' connections exist before the pause.
    assert_eq!(c.cmd(&["SELECT", "1"]), Resp::ok());
    assert_eq!(c.cmd(&["GET", "moved"]), Resp::nil());
    assert_eq!(c.cmd(&["SELECT", "0"]), Resp::ok());
    let owner = if group_of_key(b"moved", 2) == 1 {
        &s.r1
    } else {
        &s.r2
    };
    let paused: String = redis::cmd("CLIENT")
        .arg(&["PAUSE", "400", "WRITE"])
        .query(&mut owner.conn())
        .expect("CLIENT PAUSE");
    assert_eq!(paused, "OK");
    let mut write = encode(&["MOVE", "moved", "1"]);
    write.extend(encode(&["SELECT", "1"]));
    write.extend(encode(&["GET", "moved"]));
    write.extend(encode(&["SELECT", "0"]));
    write.extend(encode(&["EXISTS", "moved"]));
    c.send(&write);
    let replies: Vec<Resp> = (0..5).map(|_| c.read().expect("a reply")).collect();
    assert_eq!(
        replies,
        [
            Resp::Int(1),
            Resp::ok(),
            Resp::bulk("v"),
            Resp::ok(),
            Resp::Int(0)
        ]
    );
}

#[test]
fn databases_setting_bounds_select() {
    let s = setup(&[("proxy.databases", "4")]);
    let mut c = s.proxy.raw();
    assert_eq!(c.cmd(&["SELECT", "3"]), Resp::ok());
    assert_eq!(
        c.cmd(&["SELECT", "4"]),
        Resp::err("ERR DB index is out of range")
    );
    assert_eq!(c.cmd(&["SET", "k", "v"]), Resp::ok());
    let owner = if group_of_key(b"k", 2) == 1 {
        &s.r1
    } else {
        &s.r2
    };
    let v: Option<String> = redis::cmd("GET")
        .arg("k")
        .query(&mut owner.conn_db(3))
        .unwrap();
    assert_eq!(
        v.as_deref(),
        Some("v"),
        "SET after a refused SELECT 4 must stay in db 3"
    );
}

#[test]
fn auth_in_a_pipeline_applies_in_order() {
    let s = setup(&[("proxy.password", &toml_str("pw"))]);
    let mut c = s.proxy.raw();
    let mut bytes = encode(&["SET", "k", "before"]);
    bytes.extend(encode(&["AUTH", "wrong"]));
    bytes.extend(encode(&["GET", "k"]));
    bytes.extend(encode(&["AUTH", "pw"]));
    bytes.extend(encode(&["SET", "k", "after"]));
    bytes.extend(encode(&["GET", "k"]));
    c.send(&bytes);
    let want = [
        Resp::err("NOAUTH Authentication required."),
        Resp::err("WRONGPASS invalid username-password pair or user is disabled."),
        Resp::err("NOAUTH Authentication required."),
        Resp::ok(),
        Resp::ok(),
        Resp::bulk("after"),
    ];
    for (i, w) in want.iter().enumerate() {
        assert_eq!(&c.read().unwrap(), w, "reply {i}");
    }
}
