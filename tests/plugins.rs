//! WebAssembly plugins on the request path, end to end: real `redis-server`s, the `tessera`
//! binary, and the real modules built by `./plugins/build.sh` (the three SDK plugins, the
//! C plugin and the hand-written WAT modules), driven through raw RESP connections.

use tessera_testkit as harness;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use harness::*;
use serde_json::Value as Json;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// `sha256("secret")`, the password of every acl-auth user below except bob.
const SECRET_SHA: &str = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";
/// `sha256("bobpw")`.
const BOBPW_SHA: &str = "e8f318657ce39ec4edeecbbee28fd72dea2261d8a6b2155ce4977393e0ea721b";

fn command_filter() -> PathBuf {
    built("command_filter")
}
fn key_prefix() -> PathBuf {
    built("key_prefix")
}
fn acl_auth() -> PathBuf {
    built("acl_auth")
}
fn deny_flushall() -> PathBuf {
    module("plugins/target/c/deny-flushall.wasm")
}
fn wat(name: &str) -> PathBuf {
    module(&format!("plugins/wat/{name}.wat"))
}

/// Time limit per call of the plugins whose time limit is not under test. The default
/// (10 ms) is wall-clock time (epoch interruption): on a loaded machine (two cores shared
/// with parallel builds) a worker thread descheduled in the middle of a call makes a benign
/// plugin "time out", which fails that command and, for the next second, every command the
/// plugin subscribes to on that worker (see the report that came with these tests).
const BENIGN_TIMEOUT: &str = "timeout_ms = 500";

/// One `[[plugin]]` table. `config` goes in a TOML multi-line literal string; `extra` is
/// more `key = value` lines (e.g. `fail = "open"`); without `timeout_ms` there, the time
/// limit is `BENIGN_TIMEOUT`.
fn plugin(name: &str, path: &Path, config: &str, extra: &str) -> String {
    assert!(!config.contains("'''"), "config must not contain '''");
    let timeout = if extra.contains("timeout_ms") {
        ""
    } else {
        BENIGN_TIMEOUT
    };
    format!(
        "[[plugin]]\nname = {}\npath = {}\nconfig = '''{config}'''\n{extra}\n{timeout}\n",
        toml_str(name),
        toml_str(&path.display().to_string()),
    )
}

/// A proxy over `groups` with the plugin chain `plugins` (in order) and `workers` workers.
fn start(groups: &[&[&RedisServer]], workers: usize, plugins: &[String]) -> Proxy {
    Proxy::builder(groups)
        .set("proxy.workers", &workers.to_string())
        .extra_toml(&plugins.concat())
        .start()
}

/// The acl-auth config: users `(name, sha256 hex, commands, keys)`.
fn acl_config(users: &[(&str, &str, &str, &str)]) -> String {
    let users: Vec<String> = users
        .iter()
        .map(|(name, sha, commands, keys)| {
            format!(
                r#""{name}": {{"password": "sha256:{sha}", "commands": {commands}, "keys": {keys}}}"#
            )
        })
        .collect();
    format!(r#"{{"users": {{{}}}}}"#, users.join(", "))
}

/// Sends `args` and asserts the reply.
#[track_caller]
fn expect<A: AsRef<[u8]>>(c: &mut RawConn, args: &[A], want: Resp) {
    let got = c.cmd(args);
    assert_eq!(got, want, "reply to {:?}", show(args));
}

/// Sends `args` and asserts an error reply whose text is exactly `want`.
#[track_caller]
fn expect_err<A: AsRef<[u8]>>(c: &mut RawConn, args: &[A], want: &str) {
    expect(c, args, Resp::err(want));
}

fn show<A: AsRef<[u8]>>(args: &[A]) -> Vec<String> {
    args.iter()
        .map(|a| String::from_utf8_lossy(a.as_ref()).into_owned())
        .collect()
}

fn auth(c: &mut RawConn, user: &str, password: &str) {
    expect(c, &["AUTH", user, password], Resp::ok());
}

/// Sends `args` until the reply is not the rate-limited "restarting" error of plugin
/// `name`, for at most 3 s; returns that reply.
#[track_caller]
fn until_restarted<A: AsRef<[u8]>>(c: &mut RawConn, name: &str, args: &[A]) -> Resp {
    let restarting = format!("ERR plugin '{name}' failed: is restarting after a failure");
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let r = c.cmd(args);
        if r.error_text() != restarting {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "plugin '{name}' still restarting 3 s after its failure ({:?})",
            show(args)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn get_json(proxy: &Proxy, path: &str) -> Json {
    let resp = proxy.http_get(path);
    assert_eq!(resp.status, 200, "GET {path}: {resp:?}");
    serde_json::from_str(&resp.body)
        .unwrap_or_else(|e| panic!("GET {path}: body is not JSON ({e}): {}", resp.body))
}

/// The direct-to-Redis value of `key` on `server` (None if absent).
fn backend_get(server: &RedisServer, key: &str) -> Option<Vec<u8>> {
    server.raw().cmd(&["GET", key]).bytes().map(<[u8]>::to_vec)
}

/// Asserts the proxy refuses to start with this chain: it exits non-zero and its log names
/// the plugin and contains `reason`.
#[track_caller]
fn assert_refused(plugins: &[String], name: &str, reason: &str) {
    let r = RedisServer::start();
    let cfg = Proxy::builder(&[&[&r]])
        .extra_toml(&plugins.concat())
        .config();
    let started = Instant::now();
    let err = match Proxy::start_raw(&cfg.text) {
        Ok(mut p) => {
            p.kill();
            panic!(
                "the proxy started with plugin '{name}', which must be refused; log:\n{}",
                p.log()
            )
        }
        Err(e) => e,
    };
    let status = err
        .status
        .unwrap_or_else(|| panic!("the proxy neither served nor exited: {err}"));
    assert!(!status.success(), "exit status {status}; log:\n{}", err.log);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "refusal took {:?}",
        started.elapsed()
    );
    assert!(
        err.log.contains(&format!("plugin '{name}'")),
        "the log does not name plugin '{name}':\n{}",
        err.log
    );
    assert!(
        err.log.contains(reason),
        "the log does not give the reason {reason:?}:\n{}",
        err.log
    );
}

// ---------------------------------------------------------------------------------------------
// command-filter
// ---------------------------------------------------------------------------------------------

#[test]
fn command_filter_denies_named_commands_with_its_message() {
    let r = RedisServer::start();
    let cfg = r#"{"deny": ["del", "incr", "config|set"], "message": "ERR no {command} here"}"#;
    let proxy = start(&[&[&r]], 2, &[plugin("filter", &command_filter(), cfg, "")]);
    let mut c = proxy.raw();
    expect(&mut c, &["SET", "a", "1"], Resp::ok());
    expect(&mut c, &["GET", "a"], Resp::bulk("1"));
    expect_err(&mut c, &["DEL", "a"], "ERR no del here");
    expect_err(&mut c, &["incr", "a"], "ERR no incr here");
    let config_get = c.cmd(&["CONFIG", "GET", "maxmemory"]);
    assert_ne!(
        config_get,
        Resp::err("ERR no config here"),
        "CONFIG GET is not denied"
    );
    // A subcommand rule: the message names the subcommand, as Redis's ACL errors do.
    expect_err(
        &mut c,
        &["CONFIG", "SET", "maxmemory", "1"],
        "ERR no config|set here",
    );
    expect(&mut c, &["PING"], Resp::simple("PONG"));
    // Nothing denied reached Redis.
    assert_eq!(backend_get(&r, "a"), Some(b"1".to_vec()));

    // The default message names the command after a colon.
    let r2 = RedisServer::start();
    let proxy2 = start(
        &[&[&r2]],
        1,
        &[plugin(
            "filter",
            &command_filter(),
            r#"{"deny": ["del"]}"#,
            "",
        )],
    );
    let mut c2 = proxy2.raw();
    expect_err(
        &mut c2,
        &["DEL", "x"],
        "NOPERM command not allowed by policy: 'del'",
    );
    expect(&mut c2, &["SET", "x", "1"], Resp::ok());
}

#[test]
fn command_filter_applies_per_user_rules_set_by_acl_auth() {
    let r = RedisServer::start();
    let acl = acl_config(&[
        ("alice", SECRET_SHA, r#"["*"]"#, r#"["*"]"#),
        ("bob", BOBPW_SHA, r#"["*"]"#, r#"["*"]"#),
    ]);
    let filter = r#"{"deny": ["del"], "users": {"bob": {"allow": ["get", "auth", "ping"]}}}"#;
    let proxy = start(
        &[&[&r]],
        2,
        &[
            plugin("acl-auth", &acl_auth(), &acl, ""),
            plugin("command-filter", &command_filter(), filter, ""),
        ],
    );
    let mut alice = proxy.raw();
    auth(&mut alice, "alice", "secret");
    expect(&mut alice, &["SET", "k", "v"], Resp::ok());
    expect(&mut alice, &["GET", "k"], Resp::bulk("v"));
    expect_err(
        &mut alice,
        &["DEL", "k"],
        "NOPERM command not allowed by policy: 'del'",
    );

    let mut bob = proxy.raw();
    auth(&mut bob, "bob", "bobpw");
    expect(&mut bob, &["GET", "k"], Resp::bulk("v"));
    expect_err(
        &mut bob,
        &["SET", "k", "bob"],
        "NOPERM command not allowed by policy: 'set'",
    );
    expect_err(
        &mut bob,
        &["DEL", "k"],
        "NOPERM command not allowed by policy: 'del'",
    );
    expect(&mut bob, &["PING"], Resp::simple("PONG"));
    assert_eq!(backend_get(&r, "k"), Some(b"v".to_vec()));
}

// ---------------------------------------------------------------------------------------------
// key-prefix
// ---------------------------------------------------------------------------------------------

/// Two groups behind a proxy with two workers, acl-auth and key-prefix: alice's keys live
/// under `t1:`, bob's under `t2:`, carol (password `secret`) has no tenant.
fn tenants(r1: &RedisServer, r2: &RedisServer) -> Proxy {
    let acl = acl_config(&[
        ("alice", SECRET_SHA, r#"["*"]"#, r#"["*"]"#),
        ("bob", BOBPW_SHA, r#"["*"]"#, r#"["*"]"#),
        ("carol", SECRET_SHA, r#"["*"]"#, r#"["*"]"#),
    ]);
    let prefix = r#"{"tenants": {"alice": "t1:", "bob": "t2:"}, "default": null}"#;
    start(
        &[&[r1], &[r2]],
        2,
        &[
            plugin("acl-auth", &acl_auth(), &acl, ""),
            plugin("key-prefix", &key_prefix(), prefix, ""),
        ],
    )
}

#[test]
fn key_prefix_gives_each_tenant_its_namespace_on_the_backends() {
    let r1 = RedisServer::start();
    let r2 = RedisServer::start();
    let servers = [&r1, &r2];
    let proxy = tenants(&r1, &r2);
    let on = |key: &str| servers[group_of_key(key.as_bytes(), 2) as usize - 1];
    let other = |key: &str| servers[2 - group_of_key(key.as_bytes(), 2) as usize];

    let mut alice = proxy.raw();
    auth(&mut alice, "alice", "secret");
    expect(&mut alice, &["SET", "k", "v"], Resp::ok());
    expect(&mut alice, &["GET", "k"], Resp::bulk("v"));
    assert_eq!(backend_get(on("t1:k"), "t1:k"), Some(b"v".to_vec()));
    assert_eq!(backend_get(other("t1:k"), "t1:k"), None);
    for s in servers {
        assert_eq!(backend_get(s, "k"), None, "unprefixed k on {}", s.addr());
    }

    let mut bob = proxy.raw();
    auth(&mut bob, "bob", "bobpw");
    expect(&mut bob, &["GET", "k"], Resp::nil());
    expect(&mut bob, &["SET", "k", "bob"], Resp::ok());
    expect(&mut bob, &["GET", "k"], Resp::bulk("bob"));
    expect(&mut alice, &["GET", "k"], Resp::bulk("v"));
    assert_eq!(backend_get(on("t2:k"), "t2:k"), Some(b"bob".to_vec()));

    // MSET / MGET over keys whose prefixed forms live in different groups.
    let in_group = |g: u32| {
        move |k: &[u8]| {
            let mut full = b"t1:".to_vec();
            full.extend_from_slice(k);
            group_of_key(&full, 2) == g
        }
    };
    let a = find_key("ma", in_group(1));
    let b = find_key("mb", in_group(2));
    let (ta, tb) = (format!("t1:{a}"), format!("t1:{b}"));
    assert_ne!(group_of_key(a.as_bytes(), 2), group_of_key(b.as_bytes(), 2));
    expect(&mut alice, &["MSET", &a, "1", &b, "2"], Resp::ok());
    expect(
        &mut alice,
        &["MGET", &a, "nope", &b],
        Resp::array(vec![Resp::bulk("1"), Resp::nil(), Resp::bulk("2")]),
    );
    assert_eq!(backend_get(&r1, &ta), Some(b"1".to_vec()));
    assert_eq!(backend_get(&r2, &tb), Some(b"2".to_vec()));
    expect(
        &mut bob,
        &["MGET", &a, &b],
        Resp::array(vec![Resp::nil(), Resp::nil()]),
    );
    expect(&mut alice, &["EXISTS", &a, &b, "k"], Resp::Int(3));

    // A user without a tenant may run commands without keys, nothing with keys.
    let mut carol = proxy.raw();
    auth(&mut carol, "carol", "secret");
    expect_err(&mut carol, &["GET", "k"], "NOPERM no tenant for this user");
    expect_err(
        &mut carol,
        &["SET", "k", "x"],
        "NOPERM no tenant for this user",
    );
    expect(&mut carol, &["PING"], Resp::simple("PONG"));
    expect(&mut alice, &["GET", "k"], Resp::bulk("v"));
}

/// What every tenant shares through the proxy (sessions, scripts, function libraries, key
/// counts) stays out of a tenant's reach, and RANDOMKEY never hands one another's key.
#[test]
fn key_prefix_keeps_tenants_out_of_what_they_share() {
    let r1 = RedisServer::start();
    let r2 = RedisServer::start();
    let proxy = tenants(&r1, &r2);
    let mut alice = proxy.raw();
    auth(&mut alice, "alice", "secret");
    let mut bob = proxy.raw();
    auth(&mut bob, "bob", "bobpw");
    let mut carol = proxy.raw();
    auth(&mut carol, "carol", "secret");

    let lib = "#!lua name=blib\nredis.register_function('bget', function(keys) return redis.call('GET', keys[1]) end)";
    expect(&mut bob, &["FUNCTION", "LOAD", lib], Resp::bulk("blib"));
    for i in 0..20 {
        expect(&mut bob, &["SET", &format!("b{i}"), "x"], Resp::ok());
    }
    expect(&mut alice, &["SET", "mine", "1"], Resp::ok());

    // RANDOMKEY lands on bob's keys most of the time (20 of 21): alice gets nil then, never
    // them. Her own key comes back within 500 calls but with a chance of 1e-10.
    let (mut seen_mine, mut seen_nil) = (false, false);
    for _ in 0..500 {
        match alice.cmd(&["RANDOMKEY"]) {
            Resp::Bulk(None) => seen_nil = true,
            key => {
                assert_eq!(key, Resp::bulk("mine"));
                seen_mine = true;
            }
        }
        if seen_mine && seen_nil {
            break;
        }
    }
    assert!(seen_nil, "RANDOMKEY never landed on bob's keys");
    assert!(
        seen_mine,
        "alice's own key never came back in 500 RANDOMKEYs"
    );

    // INFO: the keyspace section is there, empty, for every user of key-prefix.
    for c in [&mut alice, &mut carol] {
        for args in [&["INFO"][..], &["INFO", "keyspace"]] {
            let info = c.cmd(args);
            let text = String::from_utf8_lossy(info.bytes().expect("INFO is a bulk string"));
            assert!(text.contains("# Keyspace"), "{args:?}: {text}");
            assert!(!text.contains("keys="), "{args:?}: {text}");
        }
    }

    // What a tenant may do first: the proxy remembers these verdicts per command, and the
    // refusals below (of other subcommands, or with other arguments) still hold.
    let alib = lib.replace("blib", "alib").replace("bget", "aget");
    expect(&mut alice, &["FUNCTION", "LOAD", &alib], Resp::bulk("alib"));
    let me = alice.cmd(&["CLIENT", "INFO"]);
    let me = String::from_utf8_lossy(me.bytes().expect("CLIENT INFO is a bulk string"));
    assert!(me.contains(" user=alice "), "{me}");

    let bob_id = bob.cmd(&["CLIENT", "ID"]);
    let Resp::Int(bob_id) = bob_id else {
        panic!("CLIENT ID: {bob_id:?}")
    };
    let refused: [(&[&str], &str); 9] = [
        (
            &["CLIENT", "LIST"],
            "'client|list' reaches every tenant's sessions",
        ),
        (
            &["CLIENT", "KILL", "ID", &bob_id.to_string()],
            "'client|kill' reaches every tenant's sessions",
        ),
        (
            &["SCRIPT", "FLUSH"],
            "'script|flush' acts on the scripts every tenant shares",
        ),
        (
            &["SCRIPT", "KILL"],
            "'script|kill' acts on the scripts every tenant shares",
        ),
        (
            &["FUNCTION", "FLUSH"],
            "'function|flush' acts on the function libraries every tenant shares",
        ),
        (
            &["FUNCTION", "DELETE", "blib"],
            "'function|delete' acts on the function libraries every tenant shares",
        ),
        (
            &["FUNCTION", "RESTORE", "x"],
            "'function|restore' acts on the function libraries every tenant shares",
        ),
        (
            &["FUNCTION", "KILL"],
            "'function|kill' acts on the function libraries every tenant shares",
        ),
        (
            &["FUNCTION", "LOAD", "REPLACE", lib],
            "'function|load' REPLACE acts on the function libraries every tenant shares",
        ),
    ];
    for (args, why) in refused {
        expect_err(&mut alice, args, &format!("NOPERM {why}"));
        expect_err(&mut carol, args, "NOPERM no tenant for this user");
    }
    // Bob's session and library are still there.
    expect(&mut bob, &["FCALL", "bget", "1", "b3"], Resp::bulk("x"));
    assert!(matches!(alice.cmd(&["WAIT", "0", "100"]), Resp::Int(0)));
}

// ---------------------------------------------------------------------------------------------
// acl-auth
// ---------------------------------------------------------------------------------------------

#[test]
fn acl_auth_answers_like_redis_acls() {
    let r = RedisServer::start();
    let acl = acl_config(&[(
        "alice",
        SECRET_SHA,
        r#"["get", "set", "ping"]"#,
        r#"["app:*"]"#,
    )]);
    let proxy = start(&[&[&r]], 2, &[plugin("acl-auth", &acl_auth(), &acl, "")]);
    let wrongpass = "WRONGPASS invalid username-password pair or user is disabled.";

    let mut c = proxy.raw();
    expect_err(&mut c, &["GET", "app:x"], "NOAUTH Authentication required.");
    expect_err(&mut c, &["AUTH", "alice", "wrong"], wrongpass);
    expect_err(&mut c, &["AUTH", "mallory", "secret"], wrongpass);
    expect_err(&mut c, &["AUTH", "secret"], wrongpass); // no "default" user
    expect_err(
        &mut c,
        &["SET", "app:x", "1"],
        "NOAUTH Authentication required.",
    );
    auth(&mut c, "alice", "secret");
    expect(&mut c, &["SET", "app:x", "1"], Resp::ok());
    expect(&mut c, &["GET", "app:x"], Resp::bulk("1"));
    expect(&mut c, &["PING"], Resp::simple("PONG"));
    expect_err(
        &mut c,
        &["DEL", "app:x"],
        "NOPERM this user has no permissions to run the 'del' command",
    );
    let no_key = "NOPERM this user has no permissions to access one of the keys used as arguments";
    expect_err(&mut c, &["GET", "other:x"], no_key);
    expect_err(&mut c, &["SET", "other:x", "1"], no_key);
    assert_eq!(backend_get(&r, "app:x"), Some(b"1".to_vec()));
    assert_eq!(backend_get(&r, "other:x"), None);

    // HELLO 2 AUTH authenticates in one go; HELLO without AUTH does not.
    let mut h = proxy.raw();
    let hello = h.cmd(&["HELLO", "2", "AUTH", "alice", "secret"]);
    assert!(
        hello.items().is_some_and(|v| !v.is_empty()),
        "HELLO 2 AUTH: {hello:?}"
    );
    expect(&mut h, &["GET", "app:x"], Resp::bulk("1"));

    let mut h2 = proxy.raw();
    let hello = h2.cmd(&["HELLO", "2"]);
    assert!(
        hello.error_text().starts_with("NOAUTH"),
        "HELLO 2 before AUTH: {hello:?}"
    );
    let hello = h2.cmd(&["HELLO", "2", "AUTH", "alice", "nope"]);
    assert!(
        hello.error_text().starts_with("WRONGPASS"),
        "HELLO 2 AUTH with a wrong password: {hello:?}"
    );
    expect_err(
        &mut h2,
        &["GET", "app:x"],
        "NOAUTH Authentication required.",
    );
}

// ---------------------------------------------------------------------------------------------
// Plugins written without the SDK
// ---------------------------------------------------------------------------------------------

#[test]
fn wat_plugin_without_the_sdk_rejects_secret_keys() {
    let r = RedisServer::start();
    let proxy = start(
        &[&[&r]],
        2,
        &[plugin("deny-secret", &wat("deny-secret"), "", "")],
    );
    let mut c = proxy.raw();
    let msg = "ERR secret keys are off limits (wat)";
    expect(&mut c, &["SET", "secret:a", "s"], Resp::ok());
    expect_err(&mut c, &["GET", "secret:a"], msg);
    expect_err(&mut c, &["get", "secret:"], msg);
    expect(&mut c, &["GET", "public"], Resp::nil());
    expect(&mut c, &["GET", "secret"], Resp::nil());
    expect(&mut c, &["SET", "public", "p"], Resp::ok());
    expect(&mut c, &["GET", "public"], Resp::bulk("p"));
    expect(&mut c, &["STRLEN", "secret:a"], Resp::Int(1));
    assert_eq!(backend_get(&r, "secret:a"), Some(b"s".to_vec()));
}

#[test]
fn c_plugin_without_the_sdk_rejects_flushes() {
    let r = RedisServer::start();
    let proxy = start(
        &[&[&r]],
        2,
        &[plugin("deny-flushall", &deny_flushall(), "", "")],
    );
    let mut c = proxy.raw();
    expect(&mut c, &["SET", "a", "1"], Resp::ok());
    expect_err(
        &mut c,
        &["FLUSHALL"],
        "NOPERM 'flushall' is disabled by policy (c plugin)",
    );
    expect_err(
        &mut c,
        &["flushdb"],
        "NOPERM 'flushdb' is disabled by policy (c plugin)",
    );
    expect_err(
        &mut c,
        &["FlushAll", "ASYNC"],
        "NOPERM 'flushall' is disabled by policy (c plugin)",
    );
    expect(&mut c, &["GET", "a"], Resp::bulk("1"));
    assert_eq!(backend_get(&r, "a"), Some(b"1".to_vec()));
}

// ---------------------------------------------------------------------------------------------
// Containment of failing plugins
// ---------------------------------------------------------------------------------------------

/// Chain of one broken module `name` (fail-closed, one worker so the failed instance is the
/// one that serves the next connection too): `trigger` fails with a message containing
/// `what` within 2 s, then the same and a new connection are served.
fn assert_contained(name: &str, trigger: &str, what: &str, extra: &str) {
    let r = RedisServer::start();
    let proxy = start(&[&[&r]], 1, &[plugin(name, &wat(name), "", extra)]);
    let mut c = proxy.raw();
    expect(&mut c, &["SET", "k", "v"], Resp::ok());
    expect(&mut c, &["GET", "k"], Resp::bulk("v"));

    let t = Instant::now();
    let reply = c.cmd(&["GET", trigger]);
    let took = t.elapsed();
    let prefix = format!("ERR plugin '{name}' failed: ");
    assert!(
        reply.error_text().starts_with(&prefix) && reply.error_text().contains(what),
        "GET {trigger}: want an error starting {prefix:?} and containing {what:?}, got {reply:?}"
    );
    assert!(took < Duration::from_secs(2), "GET {trigger} took {took:?}");

    // The same connection: served again once the instance is re-created (rate limited).
    assert_eq!(
        until_restarted(&mut c, name, &["GET", "k"]),
        Resp::bulk("v")
    );
    expect(&mut c, &["SET", "k2", "v2"], Resp::ok());
    // A new connection on the same worker.
    let mut c2 = proxy.raw();
    assert_eq!(
        until_restarted(&mut c2, name, &["GET", "k2"]),
        Resp::bulk("v2")
    );
    // It fails again the same way, and recovers again.
    std::thread::sleep(Duration::from_millis(1100));
    let reply = c2.cmd(&["GET", trigger]);
    assert!(
        reply.error_text().starts_with(&prefix) && reply.error_text().contains(what),
        "second GET {trigger}: {reply:?}"
    );
    assert_eq!(
        until_restarted(&mut c, name, &["GET", "k"]),
        Resp::bulk("v")
    );
    let log = proxy.log();
    assert!(
        log.contains("plugin failed") && log.contains(name),
        "the failure is not logged:\n{log}"
    );
}

#[test]
fn trapping_plugin_fails_only_its_command() {
    assert_contained("trap", "boom", "trapped", "");
}

#[test]
fn looping_plugin_times_out_and_only_its_command_fails() {
    assert_contained("loop", "loop", "timed out after 100 ms", "timeout_ms = 100");
}

/// The time limit counts the time a plugin runs, so a busy machine does not stop a plugin
/// that waits for a core; but a loop must be stopped all the same. Here the proxy's worker
/// shares one core with two busy threads, so it never runs for most of a 20 ms window.
#[test]
fn looping_plugin_is_stopped_on_a_shared_core() {
    let r = RedisServer::start();
    let proxy = start(
        &[&[&r]],
        1,
        &[plugin("loop", &wat("loop"), "", "timeout_ms = 20")],
    );
    let mut c = proxy.raw();
    expect(&mut c, &["SET", "k", "v"], Resp::ok());
    let shared = SharedCore::new(proxy.pid(), 2);
    let t = Instant::now();
    let reply = c.cmd(&["GET", "loop"]);
    let took = t.elapsed();
    drop(shared);
    assert_eq!(
        reply.error_text(),
        "ERR plugin 'loop' failed: timed out after 20 ms",
        "{reply:?}"
    );
    assert!(took < Duration::from_secs(2), "the loop ran for {took:?}");
    eprintln!("a loop on a core shared three ways was stopped after {took:?}");
    assert_eq!(
        until_restarted(&mut c, "loop", &["GET", "k"]),
        Resp::bulk("v")
    );
}

#[test]
fn growing_plugin_hits_its_memory_limit_and_only_its_command_fails() {
    assert_contained("grow", "grow", "memory", "memory_limit_mb = 4");
}

#[test]
fn fail_open_plugin_lets_the_command_reach_redis_after_its_timeout() {
    let r = RedisServer::start();
    let proxy = start(
        &[&[&r]],
        1,
        &[plugin(
            "loop",
            &wat("loop"),
            "",
            "fail = \"open\"\ntimeout_ms = 50",
        )],
    );
    let mut c = proxy.raw();
    let t = Instant::now();
    expect(&mut c, &["GET", "loop"], Resp::nil());
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    // While the instance is being re-created, fail-open lets commands through as well.
    expect(&mut c, &["SET", "loop", "x"], Resp::ok());
    expect(&mut c, &["GET", "loop"], Resp::bulk("x"));
    let mut c2 = proxy.raw();
    expect(&mut c2, &["GET", "loop"], Resp::bulk("x"));
    let stats = get_json(&proxy, "/api/stats");
    let failures = stats["plugins"][0]["failures"].as_u64();
    assert!(
        failures.is_some_and(|n| n >= 1),
        "fail-open failures not counted: {stats}"
    );
}

// ---------------------------------------------------------------------------------------------
// Modules that must be refused at start
// ---------------------------------------------------------------------------------------------

#[test]
fn malformed_module_is_refused_at_start() {
    let dir = TempDir::new("plugin-garbage");
    let path = dir.path().join("garbage.wasm");
    std::fs::write(
        &path,
        b"\x00asm\x01\x00\x00\x00this is not webassembly\xff\xfe",
    )
    .unwrap();
    assert_refused(
        &[plugin("garbage", &path, "", "")],
        "garbage",
        "not a valid WebAssembly module",
    );
    let text = dir.path().join("text.wasm");
    std::fs::write(&text, "hello, I am not a module").unwrap();
    assert_refused(
        &[plugin("text", &text, "", "")],
        "text",
        "not a valid WebAssembly module",
    );
}

#[test]
fn module_of_another_abi_version_is_refused_at_start() {
    assert_refused(
        &[plugin("bad-version", &wat("bad-version"), "", "")],
        "bad-version",
        "speaks plugin ABI version 2",
    );
}

#[test]
fn plugin_refusing_its_config_is_refused_at_start() {
    assert_refused(
        &[plugin(
            "command-filter",
            &command_filter(),
            r#"{"deny": ["get""#,
            "",
        )],
        "command-filter",
        "refused its configuration",
    );
    // Later in the chain, and a wrong type rather than bad JSON.
    assert_refused(
        &[
            plugin("deny-secret", &wat("deny-secret"), "", ""),
            plugin("filter2", &command_filter(), r#"{"deny": "get"}"#, ""),
        ],
        "filter2",
        "refused its configuration",
    );
}

// ---------------------------------------------------------------------------------------------
// Observability
// ---------------------------------------------------------------------------------------------

#[test]
fn stats_and_metrics_count_calls_rejects_and_failures_per_plugin() {
    let r = RedisServer::start();
    let proxy = start(
        &[&[&r]],
        1,
        &[
            plugin("filter", &command_filter(), r#"{"deny": ["del"]}"#, ""),
            plugin("deny-secret", &wat("deny-secret"), "", ""),
            plugin("flush", &deny_flushall(), "", ""),
            plugin("trap", &wat("trap"), "", ""),
        ],
    );
    let mut c = proxy.raw();
    expect(&mut c, &["SET", "a", "1"], Resp::ok());
    expect(&mut c, &["GET", "a"], Resp::bulk("1"));
    assert!(c.cmd(&["DEL", "a"]).is_error());
    assert!(c.cmd(&["GET", "secret:x"]).is_error());
    assert!(c.cmd(&["GET", "boom"]).is_error());

    let stats = get_json(&proxy, "/api/stats");
    let plugins = stats["plugins"]
        .as_array()
        .unwrap_or_else(|| panic!("stats.plugins is not an array: {stats}"));
    let names: Vec<&str> = plugins.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["filter", "deny-secret", "flush", "trap"], "{stats}");
    let entry = |name: &str| plugins.iter().find(|p| p["name"] == name).unwrap();
    let n = |name: &str, field: &str| {
        entry(name)[field]
            .as_u64()
            .unwrap_or_else(|| panic!("plugins[{name}].{field} is not a count: {stats}"))
    };
    // filter decided all five commands and rejected DEL: the first SET, GET and DEL by a
    // call, the two later GETs by the verdict it asked the proxy to remember for GET.
    assert_eq!(n("filter", "calls"), 3, "{stats}");
    assert_eq!(n("filter", "remembered"), 2, "{stats}");
    assert_eq!(n("filter", "rejects"), 1, "{stats}");
    // deny-secret (WAT) asks for nothing to be remembered: called for the four after DEL.
    assert_eq!(n("deny-secret", "calls"), 4, "{stats}");
    assert_eq!(n("deny-secret", "rejects"), 1, "{stats}");
    // The C plugin subscribes to flushes only: never called.
    assert_eq!(n("flush", "calls"), 0, "{stats}");
    assert_eq!(n("trap", "failures"), 1, "{stats}");
    assert_eq!(n("filter", "failures"), 0, "{stats}");
    for name in ["filter", "deny-secret", "trap"] {
        let per_call = entry(name)["nanos_per_call"]
            .as_f64()
            .unwrap_or_else(|| panic!("no nanos_per_call for {name}: {stats}"));
        assert!(per_call > 0.0, "{name} nanos_per_call {per_call}: {stats}");
    }

    let resp = proxy.http_get("/metrics");
    assert_eq!(resp.status, 200);
    let m = &resp.body;
    let value =
        |series: &str| metric(m, series).unwrap_or_else(|| panic!("no {series} in /metrics:\n{m}"));
    assert_eq!(
        value(r#"tessera_plugin_verdicts_total{plugin="filter",verdict="reject"}"#),
        1.0
    );
    assert_eq!(
        value(r#"tessera_plugin_verdicts_total{plugin="deny-secret",verdict="reject"}"#),
        1.0
    );
    // Every command filter decided, the two remembered GETs among them; calls only by a call.
    assert_eq!(
        value(r#"tessera_plugin_verdicts_total{plugin="filter",verdict="continue"}"#),
        4.0
    );
    assert_eq!(value(r#"tessera_plugin_calls_total{plugin="filter"}"#), 3.0);
    assert_eq!(
        value(r#"tessera_plugin_calls_total{plugin="deny-secret"}"#),
        4.0
    );
    assert_eq!(
        value(r#"tessera_plugin_remembered_total{plugin="filter"}"#),
        2.0
    );
    assert_eq!(
        value(r#"tessera_plugin_failures_total{plugin="trap"}"#),
        1.0
    );
    assert_eq!(
        value(r#"tessera_plugin_failures_total{plugin="filter"}"#),
        0.0
    );
    assert!(value(r#"tessera_plugin_seconds_total{plugin="filter"}"#) > 0.0);
}

// ---------------------------------------------------------------------------------------------
// Reply subscriptions
// ---------------------------------------------------------------------------------------------

/// Counter `field` of plugin `name` in `/api/stats` (`calls`: all hooks).
fn plugin_stat(proxy: &Proxy, name: &str, field: &str) -> u64 {
    let stats = get_json(proxy, "/api/stats");
    let plugins = stats["plugins"].as_array().cloned().unwrap_or_default();
    let entry = plugins.iter().find(|p| p["name"] == name);
    entry
        .and_then(|p| p[field].as_u64())
        .unwrap_or_else(|| panic!("no {field} count for plugin {name}: {stats}"))
}

#[test]
fn key_prefix_sees_only_the_replies_that_carry_keys() {
    let r = RedisServer::start();
    let prefix = r#"{"tenants": {}, "default": "t1:"}"#;
    let proxy = start(
        &[&[&r]],
        1,
        &[plugin("key-prefix", &key_prefix(), prefix, "")],
    );
    let mut c = proxy.raw();
    // Commands with keys: on_command once each, no on_reply (which used to double the calls).
    expect(&mut c, &["SET", "a", "1"], Resp::ok());
    expect(&mut c, &["GET", "a"], Resp::bulk("1"));
    expect(&mut c, &["SET", "b", "2"], Resp::ok());
    expect(
        &mut c,
        &["MGET", "a", "b"],
        Resp::array(vec![Resp::bulk("1"), Resp::bulk("2")]),
    );
    expect(&mut c, &["GET", "t1:a"], Resp::nil());
    assert_eq!(backend_get(&r, "t1:a"), Some(b"1".to_vec()));
    // The first SET, GET and MGET by a call, the second SET and GET from the PrefixKeys
    // verdict key-prefix asked the proxy to remember; on_reply for none of them.
    let decided = |proxy: &Proxy| {
        plugin_stat(proxy, "key-prefix", "calls") + plugin_stat(proxy, "key-prefix", "remembered")
    };
    assert_eq!(decided(&proxy), 5);
    assert_eq!(plugin_stat(&proxy, "key-prefix", "calls"), 3);
    let stats = get_json(&proxy, "/api/stats");
    assert_eq!(
        stats["plugins"][0]["calls_by_hook"]["reply"], 0,
        "on_reply called for GET/SET/MGET: {stats}"
    );
    // Inputs larger than the module's input buffer (1 KiB, then 64 KiB and more) get a new
    // one; smaller ones after them still fit. A new connection remembers nothing yet, so
    // each of these commands is a call with its whole value.
    for size in [3000, 200_000, 10] {
        let value = "v".repeat(size);
        let mut fresh = proxy.raw();
        expect(&mut fresh, &["SET", "big", &value], Resp::ok());
        expect(&mut fresh, &["GET", "big"], Resp::bulk(&value));
    }
    assert_eq!(backend_get(&r, "t1:big"), Some(b"v".repeat(10)));
    assert_eq!(plugin_stat(&proxy, "key-prefix", "calls"), 9);

    // RANDOMKEY: on_command sees it, and on_reply strips the tenant's prefix from its reply.
    let key = c.cmd(&["RANDOMKEY"]);
    let key = key.bytes().map(|k| String::from_utf8_lossy(k).into_owned());
    assert!(matches!(key.as_deref(), Some("a" | "b" | "big")), "{key:?}");
    let stats = get_json(&proxy, "/api/stats");
    assert_eq!(stats["plugins"][0]["calls_by_hook"]["reply"], 1, "{stats}");
    assert_eq!(
        plugin_stat(&proxy, "key-prefix", "calls"),
        11,
        "on_command and on_reply"
    );
    expect(&mut c, &["GET", "b"], Resp::bulk("2"));
    assert_eq!(decided(&proxy), 14);
}

#[test]
fn without_a_reply_list_on_reply_follows_the_subscriptions() {
    let r = RedisServer::start();
    let proxy = start(
        &[&[&r]],
        1,
        &[plugin("reply-get", &wat("reply-get"), "", "")],
    );
    let mut c = proxy.raw();
    expect(&mut c, &["SET", "k", "v"], Resp::ok());
    expect(&mut c, &["GET", "k"], Resp::simple("from-wat"));
    expect(&mut c, &["STRLEN", "k"], Resp::Int(1));
    expect(&mut c, &["get", "nope"], Resp::simple("from-wat"));
    assert_eq!(plugin_stat(&proxy, "reply-get", "calls"), 2);
    assert_eq!(backend_get(&r, "k"), Some(b"v".to_vec()));
}

#[test]
fn a_reply_list_decides_which_replies_on_reply_sees() {
    let r = RedisServer::start();
    let proxy = start(
        &[&[&r]],
        1,
        &[
            plugin("reply-strlen", &wat("reply-strlen"), "", ""),
            plugin("reply-get", &wat("reply-get"), "", ""),
        ],
    );
    let mut c = proxy.raw();
    expect(&mut c, &["SET", "k", "v"], Resp::ok());
    // reply-get (last in the chain, so first to see replies) replaces GET replies only,
    // reply-strlen STRLEN replies only, although both subscribe to `get`.
    expect(&mut c, &["GET", "k"], Resp::simple("from-wat"));
    expect(&mut c, &["STRLEN", "k"], Resp::simple("from-wat"));
    expect(&mut c, &["GET", "k"], Resp::simple("from-wat"));
    assert_eq!(plugin_stat(&proxy, "reply-strlen", "calls"), 1);
    assert_eq!(plugin_stat(&proxy, "reply-get", "calls"), 2);
    let stats = get_json(&proxy, "/api/stats");
    let reply_get = &stats["plugins"][1];
    assert_eq!(reply_get["name"], "reply-get", "{stats}");
    assert_eq!(
        reply_get["calls_by_hook"],
        serde_json::json!({"connect": 0, "command": 0, "reply": 2}),
        "{stats}"
    );
}

// ---------------------------------------------------------------------------------------------
// Pipelined load through a chain of three
// ---------------------------------------------------------------------------------------------

#[test]
fn pipeline_of_2000_mixed_commands_through_a_chain_of_three() {
    let r1 = RedisServer::start();
    let r2 = RedisServer::start();
    let acl = acl_config(&[("alice", SECRET_SHA, r#"["*", "-flushall"]"#, r#"["app:*"]"#)]);
    let proxy = start(
        &[&[&r1], &[&r2]],
        2,
        &[
            plugin("acl-auth", &acl_auth(), &acl, ""),
            plugin(
                "key-prefix",
                &key_prefix(),
                r#"{"tenants": {"alice": "t1:"}, "default": null}"#,
                "",
            ),
            plugin(
                "command-filter",
                &command_filter(),
                r#"{"deny": ["del"]}"#,
                "",
            ),
        ],
    );
    let mut c = proxy.raw();

    // AUTH is the first command of the same write: the attributes it sets apply to the
    // commands pipelined behind it.
    let no_key = "NOPERM this user has no permissions to access one of the keys used as arguments";
    let mut out = encode(&["AUTH", "alice", "secret"]);
    let mut want = vec![(show(&["AUTH", "alice", "secret"]), Resp::ok())];
    let mut counter = 0;
    for i in 0..2000usize {
        let k = format!("app:{i}");
        let prev = format!("app:{}", i.saturating_sub(1) / 8 * 8);
        let (cmd, reply): (Vec<String>, Resp) = match i % 8 {
            0 => (vec!["SET".into(), k, format!("v{i}")], Resp::ok()),
            1 => (
                vec!["GET".into(), prev.clone()],
                Resp::bulk(format!("v{}", i / 8 * 8)),
            ),
            2 => {
                counter += 1;
                (vec!["INCR".into(), "app:ctr".into()], Resp::Int(counter))
            }
            3 => (
                vec!["DEL".into(), prev],
                Resp::err("NOPERM command not allowed by policy: 'del'"),
            ),
            4 => (vec!["GET".into(), format!("other:{i}")], Resp::err(no_key)),
            5 => (
                vec![
                    "MGET".into(),
                    format!("app:{}", i / 8 * 8),
                    format!("app:missing{i}"),
                    "app:ctr".into(),
                ],
                Resp::array(vec![
                    Resp::bulk(format!("v{}", i / 8 * 8)),
                    Resp::nil(),
                    Resp::bulk(counter.to_string()),
                ]),
            ),
            6 => (vec!["PING".into()], Resp::simple("PONG")),
            _ => (
                vec![
                    "MSET".into(),
                    format!("app:m{i}"),
                    format!("m{i}"),
                    format!("app:n{i}"),
                    format!("n{i}"),
                ],
                Resp::ok(),
            ),
        };
        out.extend(encode(&cmd));
        want.push((cmd, reply));
    }
    let t = Instant::now();
    c.send(&out);
    for (i, (cmd, reply)) in want.iter().enumerate() {
        let got = c
            .read()
            .unwrap_or_else(|e| panic!("reply {i} to {cmd:?}: {e}"));
        assert_eq!(&got, reply, "reply {i} to {cmd:?}");
    }
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "2001 replies took {:?}",
        t.elapsed()
    );
    // Everything landed prefixed, on the group that owns the prefixed key.
    let servers = [&r1, &r2];
    let on = |key: &str| servers[group_of_key(key.as_bytes(), 2) as usize - 1];
    for key in ["app:0", "app:1992", "app:m7", "app:n1999", "app:ctr"] {
        let full = format!("t1:{key}");
        assert!(
            backend_get(on(&full), &full).is_some(),
            "{full} is not on its backend"
        );
        for s in servers {
            assert_eq!(
                backend_get(s, key),
                None,
                "unprefixed {key} on {}",
                s.addr()
            );
        }
    }
    assert_eq!(
        backend_get(on("t1:app:ctr"), "t1:app:ctr"),
        Some(counter.to_string().into_bytes())
    );
}

// ---------------------------------------------------------------------------------------------
// Batches: the commands of one read go through each plugin in as few calls as it allows
// ---------------------------------------------------------------------------------------------

/// Sends `cmds` in one write and returns their replies.
fn pipeline(c: &mut RawConn, cmds: &[Vec<&str>]) -> Vec<Resp> {
    let out: Vec<u8> = cmds.iter().flat_map(|cmd| encode(cmd)).collect();
    c.send(&out);
    cmds.iter()
        .enumerate()
        .map(|(i, cmd)| {
            c.read()
                .unwrap_or_else(|e| panic!("reply {i} to {cmd:?}: {e}"))
        })
        .collect()
}

#[test]
fn an_sdk_plugin_decides_a_pipelined_read_in_a_few_calls_not_one_per_command() {
    let r = RedisServer::start();
    let proxy = start(
        &[&[&r]],
        1,
        &[plugin(
            "filter",
            &command_filter(),
            r#"{"deny": ["del"]}"#,
            "",
        )],
    );
    let mut c = proxy.raw();
    let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    let mut cmds: Vec<Vec<&str>> = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        cmds.push(vec!["SET", k, "v"]);
        if i % 10 == 9 {
            cmds.push(vec!["DEL", k]);
        }
        cmds.push(vec!["GET", k]);
    }
    let replies = pipeline(&mut c, &cmds);
    for (cmd, reply) in cmds.iter().zip(&replies) {
        let want = match cmd[0] {
            "SET" => Resp::ok(),
            "DEL" => Resp::err("NOPERM command not allowed by policy: 'del'"),
            _ => Resp::bulk("v"),
        };
        assert_eq!(reply, &want, "reply to {cmd:?}");
    }
    // Every command is decided once, by a call or by a verdict the filter asked the proxy
    // to remember for SET, GET and DEL. The calls into the module are batches of the
    // commands of one read (at most 128 commands make one batch), not one per command.
    let calls = plugin_stat(&proxy, "filter", "calls");
    let remembered = plugin_stat(&proxy, "filter", "remembered");
    assert_eq!(calls + remembered, 210);
    assert!(
        calls >= 3,
        "SET, GET and DEL are each decided by a call first"
    );
    assert_eq!(plugin_stat(&proxy, "filter", "rejects"), 10);
    let invocations = plugin_stat(&proxy, "filter", "invocations");
    assert!(
        (1..=20).contains(&invocations) && calls >= 3 * invocations,
        "{calls} pipelined commands decided by a call took {invocations} calls into the module"
    );
    let m = proxy.http_get("/metrics").body;
    let series = r#"tessera_plugin_invocations_total{plugin="filter"}"#;
    assert_eq!(metric(&m, series), Some(invocations as f64), "{m}");
}

#[test]
fn auth_in_a_pipeline_reaches_the_plugins_before_acl_auth_from_the_next_command() {
    let r = RedisServer::start();
    let acl = acl_config(&[("alice", SECRET_SHA, r#"["*"]"#, r#"["*"]"#)]);
    // key-prefix runs before acl-auth: it learns alice's tenant only because AUTH ends the
    // batch it came in.
    let proxy = start(
        &[&[&r]],
        1,
        &[
            plugin(
                "key-prefix",
                &key_prefix(),
                r#"{"tenants": {"alice": "t1:"}, "default": "anon:"}"#,
                "",
            ),
            plugin("acl-auth", &acl_auth(), &acl, ""),
        ],
    );
    let mut c = proxy.raw();
    let replies = pipeline(
        &mut c,
        &[
            vec!["AUTH", "alice", "secret"],
            vec!["SET", "k", "1"],
            vec!["GET", "k"],
        ],
    );
    assert_eq!(replies, [Resp::ok(), Resp::ok(), Resp::bulk("1")]);
    assert_eq!(backend_get(&r, "t1:k"), Some(b"1".to_vec()));
    assert_eq!(backend_get(&r, "anon:k"), None);
    assert_eq!(backend_get(&r, "k"), None);
}

#[test]
fn a_module_deciding_one_command_per_call_is_called_again_for_the_rest() {
    let r = RedisServer::start();
    let proxy = start(&[&[&r]], 1, &[plugin("one", &wat("one-at-a-time"), "", "")]);
    let mut c = proxy.raw();
    let three = "ERR three arguments refused by one-at-a-time";
    let replies = pipeline(
        &mut c,
        &[
            vec!["SET", "a", "1"],
            vec!["GET", "a"],
            vec!["SET", "b", "2"],
            vec!["PING"],
            vec!["GET", "b"],
            vec!["ECHO", "x"],
        ],
    );
    assert_eq!(
        replies,
        [
            Resp::err(three),
            Resp::nil(),
            Resp::err(three),
            Resp::simple("PONG"),
            Resp::nil(),
            Resp::bulk("x"),
        ]
    );
    assert_eq!(plugin_stat(&proxy, "one", "calls"), 6);
    assert_eq!(plugin_stat(&proxy, "one", "invocations"), 6);
    assert_eq!(plugin_stat(&proxy, "one", "rejects"), 2);
}

#[test]
fn a_plugin_sees_attributes_set_before_it_in_the_chain_from_that_very_command() {
    let r = RedisServer::start();
    let pings: Vec<Vec<&str>> = (0..5).map(|_| vec!["PING"]).collect();
    // need-attr alone: no attribute, every command of the batch refused in one call.
    let alone = start(&[&[&r]], 1, &[plugin("need", &wat("need-attr"), "", "")]);
    let mut c = alone.raw();
    let refused = Resp::err("ERR need-attr: no attribute");
    assert_eq!(pipeline(&mut c, &pings), vec![refused; 5]);
    assert_eq!(plugin_stat(&alone, "need", "invocations"), 1);

    // set-attr before it sets `seen` on every command, in the middle of the batch too: the
    // host splits need-attr's calls there, so each command passes.
    let chained = start(
        &[&[&r]],
        1,
        &[
            plugin("set", &wat("set-attr"), "", ""),
            plugin("need", &wat("need-attr"), "", ""),
        ],
    );
    let mut c = chained.raw();
    assert_eq!(pipeline(&mut c, &pings), vec![Resp::simple("PONG"); 5]);
    assert_eq!(plugin_stat(&chained, "set", "invocations"), 5);
    assert_eq!(plugin_stat(&chained, "need", "calls"), 5);
    assert_eq!(plugin_stat(&chained, "need", "rejects"), 0);
}

// ---------------------------------------------------------------------------------------------
// Remembered verdicts
// ---------------------------------------------------------------------------------------------

/// Plugin `name`'s commands decided `(by a call, from a remembered verdict)`.
fn decided_by(proxy: &Proxy, name: &str) -> (u64, u64) {
    (
        plugin_stat(proxy, name, "calls"),
        plugin_stat(proxy, name, "remembered"),
    )
}

#[test]
fn a_remembered_verdict_answers_later_commands_of_the_connection_without_a_call() {
    let r = RedisServer::start();
    let proxy = start(
        &[&[&r]],
        1,
        &[plugin("pong", &wat("remember-ping"), "", "")],
    );
    let pings: Vec<Vec<&str>> = (0..5).map(|_| vec!["PING"]).collect();
    let pong = Resp::simple("wasm-pong");
    let mut c = proxy.raw();
    assert_eq!(pipeline(&mut c, &pings), vec![pong.clone(); 5]);
    expect(&mut c, &["PING"], pong.clone());
    // The module has no tessera_on_commands: it is called for the first PING, and the
    // host answers the other five from memory.
    assert_eq!(decided_by(&proxy, "pong"), (1, 5));
    assert_eq!(plugin_stat(&proxy, "pong", "invocations"), 1);
    assert_eq!(plugin_stat(&proxy, "pong", "replies"), 6);
    // Memory is per connection: a new one asks the plugin again.
    let mut other = proxy.raw();
    expect(&mut other, &["PING"], pong.clone());
    expect(&mut other, &["PING"], pong);
    assert_eq!(decided_by(&proxy, "pong"), (2, 6));
    let m = proxy.http_get("/metrics").body;
    let series = r#"tessera_plugin_remembered_total{plugin="pong"}"#;
    assert_eq!(metric(&m, series), Some(6.0), "{m}");
}

#[test]
fn a_plugin_configured_not_to_be_remembered_is_called_for_every_command() {
    let r = RedisServer::start();
    let proxy = start(
        &[&[&r]],
        1,
        &[plugin(
            "pong",
            &wat("remember-ping"),
            "",
            "remember = false",
        )],
    );
    let mut c = proxy.raw();
    for _ in 0..4 {
        expect(&mut c, &["PING"], Resp::simple("wasm-pong"));
    }
    assert_eq!(decided_by(&proxy, "pong"), (4, 0));
}

#[test]
fn auth_with_the_proxy_password_gives_the_plugins_the_user_default() {
    let r = RedisServer::start();
    let filter = r#"{"users": {"default": {"deny": ["get"]}}}"#;
    let proxy = Proxy::builder(&[&[&r]])
        .set("proxy.password", &toml_str("pw"))
        .extra_toml(&plugin("filter", &command_filter(), filter, ""))
        .start();
    let mut c = proxy.raw();
    expect_err(&mut c, &["GET", "k"], "NOAUTH Authentication required.");
    expect(&mut c, &["AUTH", "pw"], Resp::ok());
    expect(&mut c, &["SET", "k", "v"], Resp::ok());
    let refused = c.cmd(&["GET", "k"]);
    assert_eq!(
        refused.error_text(),
        "NOPERM command not allowed by policy: 'get'"
    );
    // A second connection, AUTH default pw in one pipelined write with the GET.
    let mut p = proxy.raw();
    let cmds = vec![vec!["AUTH", "default", "pw"], vec!["GET", "k"]];
    assert_eq!(pipeline(&mut p, &cmds), [Resp::ok(), refused]);
}

#[test]
fn remembered_verdicts_hold_only_for_their_keys_and_until_the_context_changes() {
    let r = RedisServer::start();
    let acl = acl_config(&[
        ("alice", SECRET_SHA, r#"["get", "set"]"#, r#"["app:*"]"#),
        ("bob", BOBPW_SHA, r#"["set", "select"]"#, r#"["*"]"#),
    ]);
    let proxy = start(&[&[&r]], 1, &[plugin("acl", &acl_auth(), &acl, "")]);
    let no_get = "NOPERM this user has no permissions to run the 'get' command";
    let no_key = "NOPERM this user has no permissions to access one of the keys used as arguments";
    let mut c = proxy.raw();
    auth(&mut c, "alice", "secret");
    expect(&mut c, &["SET", "app:1", "v"], Resp::ok());
    expect(&mut c, &["GET", "app:1"], Resp::bulk("v"));
    assert_eq!(decided_by(&proxy, "acl"), (3, 0));
    // acl-auth remembered GET for keys starting with `app:` (alice's pattern `app:*`).
    expect(&mut c, &["GET", "app:2"], Resp::nil());
    assert_eq!(decided_by(&proxy, "acl"), (3, 1));
    // A key outside that condition: the plugin is asked, and refuses it.
    expect_err(&mut c, &["GET", "other"], no_key);
    expect(&mut c, &["GET", "app:1"], Resp::bulk("v"));
    assert_eq!(decided_by(&proxy, "acl"), (4, 2));
    // Another user: the connection's attributes change and what was remembered for alice
    // is forgotten; bob may not GET at all (and that refusal is remembered in turn).
    auth(&mut c, "bob", "bobpw");
    expect_err(&mut c, &["GET", "app:1"], no_get);
    expect_err(&mut c, &["GET", "app:1"], no_get);
    assert_eq!(decided_by(&proxy, "acl"), (6, 3));
    // SELECT changes the database the plugin is told: forgotten too.
    expect(&mut c, &["SELECT", "1"], Resp::ok());
    expect_err(&mut c, &["GET", "app:1"], no_get);
    assert_eq!(decided_by(&proxy, "acl"), (8, 3));

    // The same in one pipelined write: each AUTH ends a batch, each user gets its own
    // answers.
    let mut p = proxy.raw();
    let cmds: Vec<Vec<&str>> = vec![
        vec!["AUTH", "alice", "secret"],
        vec!["GET", "app:1"],
        vec!["AUTH", "bob", "bobpw"],
        vec!["GET", "app:1"],
        vec!["AUTH", "alice", "secret"],
        vec!["GET", "app:1"],
    ];
    assert_eq!(
        pipeline(&mut p, &cmds),
        [
            Resp::ok(),
            Resp::bulk("v"),
            Resp::ok(),
            Resp::err(no_get),
            Resp::ok(),
            Resp::bulk("v"),
        ]
    );
}

#[test]
fn an_attribute_set_in_the_middle_of_a_batch_overrides_what_the_next_plugin_remembered() {
    let r = RedisServer::start();
    // tag-echo sets user=tagged on ECHO; the filter after it remembers its verdicts, and
    // forbids GET to the user `tagged`.
    let filter = r#"{"users": {"tagged": {"deny": ["get"]}}}"#;
    let proxy = start(
        &[&[&r]],
        1,
        &[
            plugin("tag", &wat("tag-echo"), "", ""),
            plugin("filter", &command_filter(), filter, ""),
        ],
    );
    let mut c = proxy.raw();
    expect(&mut c, &["SET", "k", "v"], Resp::ok());
    expect(&mut c, &["GET", "k"], Resp::bulk("v"));
    let replies = pipeline(
        &mut c,
        &[
            vec!["GET", "k"],
            vec!["GET", "k"],
            vec!["ECHO", "x"],
            vec!["GET", "k"],
        ],
    );
    let denied = replies[3].error_text();
    assert_eq!(
        replies[..3],
        [Resp::bulk("v"), Resp::bulk("v"), Resp::bulk("x")]
    );
    assert!(
        denied.starts_with("NOPERM"),
        "GET after the ECHO: {:?}",
        replies[3]
    );
    // The two GETs before the ECHO came from memory, the one after it was a call.
    assert_eq!(plugin_stat(&proxy, "filter", "remembered"), 2);
    expect_err(&mut c, &["GET", "k"], denied);
}

#[test]
fn prefix_keys_remembered_by_key_prefix_puts_every_key_of_a_pipeline_in_the_namespace() {
    let r1 = RedisServer::start();
    let r2 = RedisServer::start();
    let servers = [&r1, &r2];
    let prefix = r#"{"tenants": {}, "default": "t9:"}"#;
    let proxy = start(
        &[&[&r1], &[&r2]],
        2,
        &[plugin("key-prefix", &key_prefix(), prefix, "")],
    );
    let keys: Vec<String> = (0..300).map(|i| format!("key{i}")).collect();
    let mut cmds: Vec<Vec<&str>> = keys.iter().map(|k| vec!["SET", k, k]).collect();
    cmds.push(vec!["MSET", "m1", "1", "m2", "2", "m3", "3"]);
    cmds.push(vec!["MGET", "m1", "m2", "m3", "key7"]);
    let mut c = proxy.raw();
    let replies = pipeline(&mut c, &cmds);
    assert!(
        replies[..301].iter().all(|r| *r == Resp::ok()),
        "{replies:?}"
    );
    assert_eq!(
        replies[301],
        Resp::array(["1", "2", "3", "key7"].map(Resp::bulk).to_vec())
    );
    for k in keys.iter().map(String::as_str).chain(["m1", "m2", "m3"]) {
        let full = format!("t9:{k}");
        let on = servers[group_of_key(full.as_bytes(), 2) as usize - 1];
        assert!(backend_get(on, &full).is_some(), "{full} not on its group");
        for s in servers {
            assert_eq!(backend_get(s, k), None, "unprefixed {k} on {}", s.addr());
        }
    }
    // The SETs of the first batch (at most 128) are decided in one call, before anything is
    // remembered; every SET after it from memory; MSET and MGET each by a call.
    let (calls, remembered) = decided_by(&proxy, "key-prefix");
    assert_eq!(calls + remembered, 302);
    assert!(
        remembered >= 300 - 128,
        "{calls} calls, {remembered} remembered"
    );
    assert!(plugin_stat(&proxy, "key-prefix", "invocations") <= 4);
}

// ---------------------------------------------------------------------------------------------
// Hostile input: one client's bytes or one plugin's verdict affect that client or plugin only
// ---------------------------------------------------------------------------------------------

/// The largest input a plugin with the default 16 MiB memory limit is given.
const DEFAULT_MAX_INPUT: usize = 4 * 1024 * 1024;

/// Asserts `reply` is the error for a command too large for plugin `name`.
#[track_caller]
fn assert_too_large(reply: &Resp, name: &str, max: usize) {
    let text = reply.error_text();
    assert!(
        text.starts_with(&format!("ERR plugin '{name}' cannot take a command of "))
            && text.contains(&format!("at most {max} bytes")),
        "want the size error of plugin '{name}', got {reply:?}"
    );
}

#[test]
fn a_command_too_large_for_acl_auth_gets_an_error_and_the_worker_keeps_authenticating() {
    let r = RedisServer::start();
    let acl = acl_config(&[("alice", SECRET_SHA, r#"["*"]"#, r#"["*"]"#)]);
    // Every command a call (a remembered verdict decides a command without one, whatever
    // its size).
    let proxy = start(
        &[&[&r]],
        1,
        &[plugin("acl-auth", &acl_auth(), &acl, "remember = false")],
    );
    let mut alice = proxy.raw();
    auth(&mut alice, "alice", "secret");
    expect(&mut alice, &["SET", "k", "v"], Resp::ok());

    // Before AUTH, twice in a second: each gets the error, the plugin is not called.
    let mut mallory = proxy.raw();
    let huge = "x".repeat(17 * 1024 * 1024);
    for _ in 0..2 {
        let reply = mallory.cmd(&["AUTH", "alice", &huge]);
        assert_too_large(&reply, "acl-auth", DEFAULT_MAX_INPUT);
    }
    expect(&mut alice, &["GET", "k"], Resp::bulk("v"));
    expect_err(
        &mut mallory,
        &["GET", "k"],
        "NOAUTH Authentication required.",
    );
    let mut carol = proxy.raw();
    expect_err(&mut carol, &["GET", "k"], "NOAUTH Authentication required.");
    auth(&mut carol, "alice", "secret");
    expect(&mut carol, &["GET", "k"], Resp::bulk("v"));
    assert_eq!(plugin_stat(&proxy, "acl-auth", "failures"), 0);

    // The largest command that fits (the value leaves room for the context and the
    // command's encoding) reaches Redis through the SDK plugin within its memory limit.
    let big = "b".repeat(DEFAULT_MAX_INPUT - 200);
    expect(&mut alice, &["SET", "big", &big], Resp::ok());
    assert_eq!(backend_get(&r, "big").map(|v| v.len()), Some(big.len()));
    // One byte more than fits, alone: refused, the commands around it served.
    let bigger = "b".repeat(DEFAULT_MAX_INPUT);
    let replies = pipeline(
        &mut alice,
        &[
            vec!["SET", "a", "1"],
            vec!["SET", "big", &bigger],
            vec!["GET", "a"],
        ],
    );
    assert_eq!(replies[0], Resp::ok());
    assert_too_large(&replies[1], "acl-auth", DEFAULT_MAX_INPUT);
    assert_eq!(replies[2], Resp::bulk("1"));
    assert_eq!(backend_get(&r, "big").map(|v| v.len()), Some(big.len()));
    assert_eq!(plugin_stat(&proxy, "acl-auth", "failures"), 0);
}

#[test]
fn plugins_that_gate_access_cannot_be_configured_fail_open() {
    let acl = acl_config(&[("alice", SECRET_SHA, r#"["*"]"#, r#"["*"]"#)]);
    let tenants = r#"{"tenants": {"alice": "t1:"}, "default": null}"#;
    for (name, path, config) in [
        ("acl-auth", acl_auth(), acl),
        ("key-prefix", key_prefix(), tenants.to_string()),
    ] {
        assert_refused(
            &[plugin(name, &path, &config, "fail = \"open\"")],
            name,
            "gates access, so it cannot be fail = \"open\"",
        );
    }
}

#[test]
fn a_fail_open_plugin_that_prefixes_keys_without_declaring_it_is_refused() {
    let r = RedisServer::start();
    // Fail-closed, the namespace works.
    let closed = start(
        &[&[&r]],
        1,
        &[plugin("prefix-all", &wat("prefix-all"), "", "")],
    );
    let mut c = closed.raw();
    expect(&mut c, &["SET", "k", "v"], Resp::ok());
    assert_eq!(backend_get(&r, "t:k"), Some(b"v".to_vec()));
    assert_eq!(backend_get(&r, "k"), None);
    // Fail-open, its verdicts are refused: no command of it reaches Redis unprefixed.
    let open = start(
        &[&[&r]],
        1,
        &[plugin(
            "prefix-all",
            &wat("prefix-all"),
            "",
            "fail = \"open\"",
        )],
    );
    let mut c = open.raw();
    for _ in 0..3 {
        let reply = c.cmd(&["SET", "k", "w"]);
        let text = reply.error_text();
        assert!(
            text.starts_with("ERR plugin 'prefix-all' ") && text.contains("fail = \"open\""),
            "{reply:?}"
        );
    }
    assert_eq!(backend_get(&r, "k"), None);
    assert_eq!(backend_get(&r, "t:k"), Some(b"v".to_vec()));
    let log = open.log();
    assert!(
        log.contains("prefix-all") && log.contains("fail = \"open\""),
        "not logged:\n{log}"
    );
}

#[test]
fn a_verdict_with_100k_attributes_is_malformed_and_does_not_stall_the_worker() {
    let r = RedisServer::start();
    let proxy = start(&[&[&r]], 1, &[plugin("flood", &wat("attr-flood"), "", "")]);
    let mut other = proxy.raw();
    expect(&mut other, &["SET", "k", "v"], Resp::ok());
    let mut c = proxy.raw();
    let t = Instant::now();
    let reply = c.cmd(&["GET", "flood!"]);
    let took = t.elapsed();
    eprintln!("a verdict of 100000 attributes was answered after {took:?}");
    let text = reply.error_text();
    assert!(
        text.starts_with("ERR plugin 'flood' failed: ") && text.contains("attributes"),
        "{reply:?}"
    );
    assert!(took < Duration::from_secs(2), "the verdict took {took:?}");
    let t = Instant::now();
    assert_eq!(
        until_restarted(&mut other, "flood", &["GET", "k"]),
        Resp::bulk("v")
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn commands_pipelined_before_a_plugin_auth_are_not_authenticated_by_it() {
    let r = RedisServer::start();
    r.raw().cmd(&["SET", "k", "v"]);
    let acl = acl_config(&[("alice", SECRET_SHA, r#"["*"]"#, r#"["*"]"#)]);
    let proxy = start(&[&[&r]], 1, &[plugin("acl-auth", &acl_auth(), &acl, "")]);
    let mut c = proxy.raw();
    let replies = pipeline(
        &mut c,
        &[
            vec!["GET", "k"],
            vec!["AUTH", "alice", "secret"],
            vec!["GET", "k"],
        ],
    );
    assert_eq!(
        replies,
        [
            Resp::err("NOAUTH Authentication required."),
            Resp::ok(),
            Resp::bulk("v")
        ]
    );
}

#[test]
fn commands_pipelined_around_a_plugin_auth_run_as_they_stand() {
    let r = RedisServer::start();
    r.raw().cmd(&["SET", "k", "v"]);
    // The plugin sees AUTH only; the proxy asks for its password before any other command
    // until a plugin sets `user`.
    let proxy = Proxy::builder(&[&[&r]])
        .set("proxy.workers", "1")
        .set("proxy.password", &toml_str("pw"))
        .extra_toml(&plugin("auth", &wat("auth-any"), "", ""))
        .start();
    let mut c = proxy.raw();
    let replies = pipeline(
        &mut c,
        &[
            vec!["GET", "k"],
            vec!["SET", "k", "w"],
            vec!["AUTH", "alice", "any"],
            vec!["GET", "k"],
        ],
    );
    let noauth = Resp::err("NOAUTH Authentication required.");
    assert_eq!(
        replies,
        [noauth.clone(), noauth, Resp::ok(), Resp::bulk("v")]
    );
    assert_eq!(backend_get(&r, "k"), Some(b"v".to_vec()));
}

#[test]
fn a_command_too_large_for_key_prefix_leaves_the_namespace_of_other_sessions() {
    let r = RedisServer::start();
    let tenants = r#"{"tenants": {}, "default": "anon:"}"#;
    let proxy = start(
        &[&[&r]],
        1,
        &[plugin(
            "key-prefix",
            &key_prefix(),
            tenants,
            "remember = false",
        )],
    );
    let mut other = proxy.raw();
    expect(&mut other, &["SET", "k", "v"], Resp::ok());
    let mut c = proxy.raw();
    let huge = "x".repeat(17 * 1024 * 1024);
    for _ in 0..2 {
        assert_too_large(
            &c.cmd(&["SET", "k", &huge]),
            "key-prefix",
            DEFAULT_MAX_INPUT,
        );
    }
    expect(&mut other, &["SET", "k2", "v2"], Resp::ok());
    expect(&mut c, &["GET", "k2"], Resp::bulk("v2"));
    assert_eq!(backend_get(&r, "anon:k2"), Some(b"v2".to_vec()));
    assert_eq!(backend_get(&r, "k2"), None);
    assert_eq!(backend_get(&r, "anon:k"), Some(b"v".to_vec()));
    assert_eq!(plugin_stat(&proxy, "key-prefix", "failures"), 0);
}

/// `tessera admin hash-password` of `secret` (argon2id, 4 MiB, 1 pass).
const SECRET_ARGON2: &str = "$argon2id$v=19$m=4096,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$BnOHU0YDNJJVGAmPZbnliZ/dtQxhBHwxPBOFCjkAjW0";

#[test]
fn acl_auth_takes_salted_argon2_passwords_and_still_the_sha256_form() {
    const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
    // `tessera admin hash-password` salts: the same password hashes differently each time.
    let hash_password = || {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(["admin", "hash-password"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"carolpw\n").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .trim_end()
            .to_string()
    };
    let carol = hash_password();
    assert!(
        carol.starts_with("$argon2id$v=19$m=2048,t=2,p=1$"),
        "{carol}"
    );
    assert_ne!(carol, hash_password());
    let r = RedisServer::start();
    let acl = format!(
        r#"{{"users": {{
            "alice": {{"password": "{SECRET_ARGON2}", "commands": ["get", "set"], "keys": ["app:*"]}},
            "carol": {{"password": "{carol}", "commands": ["get"], "keys": ["*"]}},
            "bob": {{"password": "sha256:{BOBPW_SHA}", "commands": ["get"], "keys": ["*"]}}}}}}"#
    );
    let proxy = start(&[&[&r]], 2, &[plugin("acl", &acl_auth(), &acl, "")]);
    let mut c = proxy.raw();
    expect_err(&mut c, &["AUTH", "alice", "Secret"], WRONGPASS);
    expect_err(&mut c, &["AUTH", "alice", "sha256:secret"], WRONGPASS);
    expect_err(&mut c, &["GET", "app:1"], "NOAUTH Authentication required.");
    auth(&mut c, "alice", "secret");
    expect(&mut c, &["SET", "app:1", "v"], Resp::ok());
    expect(&mut c, &["GET", "app:1"], Resp::bulk("v"));
    // Connections of a pool authenticating again and again, on both workers.
    for i in 0..20 {
        let mut c = proxy.raw();
        if i % 2 == 0 {
            auth(&mut c, "alice", "secret");
        } else {
            let hello = c.cmd(&["HELLO", "2", "AUTH", "alice", "secret"]);
            assert!(hello.items().is_some_and(|v| !v.is_empty()), "{hello:?}");
        }
        expect(&mut c, &["GET", "app:1"], Resp::bulk("v"));
        expect_err(&mut c, &["AUTH", "alice", "wrong"], WRONGPASS);
    }
    let mut c = proxy.raw();
    expect_err(&mut c, &["AUTH", "carol", "carolpw\n"], WRONGPASS);
    auth(&mut c, "carol", "carolpw");
    expect(&mut c, &["GET", "app:1"], Resp::bulk("v"));
    // The old form still authenticates; the proxy's log says it is deprecated.
    let mut b = proxy.raw();
    expect_err(&mut b, &["AUTH", "bob", "secret"], WRONGPASS);
    auth(&mut b, "bob", "bobpw");
    expect(&mut b, &["GET", "app:1"], Resp::bulk("v"));
    assert_eq!(plugin_stat(&proxy, "acl", "failures"), 0);
    let log = proxy.log();
    assert!(
        log.contains("user 'bob'") && log.contains("deprecated"),
        "{log}"
    );
    assert!(
        !log.contains("user 'alice'") && !log.contains("user 'carol'"),
        "{log}"
    );
}
