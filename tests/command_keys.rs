//! The keys the proxy routes and checks are the keys Redis reads and writes: generated
//! command lines whose options move keys (SORT, GEORADIUS*, XREAD*) are run on a real
//! redis-server and the keys it touched compared with `command::key_positions`; through a
//! running proxy, a GEORADIUS STORE lands on the group of the key Redis writes, SORT patterns
//! that may name another slot's keys are refused, and XREAD BLOCK is refused without holding
//! up the other sessions on its backend connection.

use tessera_testkit as harness;

use std::time::{Duration, Instant};

use bytes::Bytes;
use harness::*;
use tessera_proxy::command::{Lookup, key_positions, lookup};

/// The names of the keys the proxy finds in `line`.
fn proxy_keys(line: &[String]) -> Vec<String> {
    let args: Vec<Bytes> = line.iter().map(|a| Bytes::from(a.clone())).collect();
    let Lookup::Found(spec) = lookup(&args) else {
        panic!("{line:?}: not a command");
    };
    let mut keys = Vec::new();
    key_positions(spec, &args, &mut keys);
    keys.into_iter().map(|i| line[i].clone()).collect()
}

fn text(r: &Resp) -> String {
    String::from_utf8_lossy(r.bytes().expect("a string reply")).into_owned()
}

/// `COMMAND GETKEYS line` on `redis`: the key names, or the error.
fn getkeys(redis: &mut RawConn, line: &[String]) -> Result<Vec<String>, String> {
    let mut args = vec!["COMMAND".to_string(), "GETKEYS".to_string()];
    args.extend(line.iter().cloned());
    match redis.cmd(&args) {
        Resp::Error(e) => Err(e),
        r => Ok(r.items().expect("an array").iter().map(text).collect()),
    }
}

/// Runs `cmds` in one round trip; panics if any fails.
fn setup(redis: &mut RawConn, cmds: &[Vec<String>]) {
    let mut out = Vec::new();
    for c in cmds {
        out.extend(encode(c));
    }
    redis.send(&out);
    for c in cmds {
        let r = redis.read().expect("a reply");
        assert!(!r.is_error(), "{c:?}: {r:?}");
    }
}

fn words(s: &str) -> Vec<String> {
    s.split(' ').map(str::to_string).collect()
}

/// Which of `candidates` exist on `redis`, in the order given.
fn existing(redis: &mut RawConn, candidates: &[&str]) -> Vec<String> {
    candidates
        .iter()
        .filter(|c| redis.cmd(&["EXISTS", c]).int() == Some(1))
        .map(|c| c.to_string())
        .collect()
}

/// What one family of generated lines came to.
#[derive(Default, Debug)]
struct Tally {
    lines: usize,
    /// Redis ran them (not a syntax error): the keys it touched were compared.
    executed: usize,
    /// Redis's own COMMAND GETKEYS names other keys than the command touched.
    getkeys_wrong: usize,
    mismatches: Vec<String>,
}

impl Tally {
    /// Compares the proxy's keys of `line` with `touched` (None: Redis refused the line, so
    /// it touched nothing and any routing is harmless) and with COMMAND GETKEYS.
    fn check(
        &mut self,
        redis: &mut RawConn,
        line: &[String],
        touched: Option<Vec<String>>,
        reply: &Resp,
    ) {
        self.lines += 1;
        let Some(touched) = touched else {
            return;
        };
        self.executed += 1;
        let proxy = proxy_keys(line);
        let helper = getkeys(redis, line);
        if helper.as_ref() != Ok(&touched) {
            self.getkeys_wrong += 1;
        }
        if proxy != touched {
            self.mismatches.push(format!(
                "{}\n    proxy keys {proxy:?}, Redis touched {touched:?} (COMMAND GETKEYS: \
                 {helper:?}; reply {reply:?})",
                line.join(" ")
            ));
        }
    }

    /// What is wrong with this family's lines, if anything (after printing its counts).
    fn failure(&self, family: &str) -> Option<String> {
        eprintln!(
            "{family}: {} lines, {} executed, COMMAND GETKEYS wrong on {}",
            self.lines, self.executed, self.getkeys_wrong
        );
        if self.executed * 3 < self.lines {
            return Some(format!(
                "{family}: too few generated lines ran ({} of {}): the generator is broken",
                self.executed, self.lines
            ));
        }
        if self.mismatches.is_empty() {
            return None;
        }
        Some(format!(
            "{family}: {} of {} executed lines route by other keys than Redis touches:\n{}",
            self.mismatches.len(),
            self.executed,
            self.mismatches
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        ))
    }
}

const LINES: usize = 700;

/// SORT and SORT_RO with their options in any order, repeated, keywords as key and pattern
/// names: the key written is the one the proxy finds.
fn sort_lines(redis: &mut RawConn, rng: &mut Rng) -> Tally {
    const SORTED: &[&str] = &["k", "STORE", "Limit", "by"];
    const DESTS: &[&str] = &[
        "dst1", "dst2", "store", "BY", "get", "alpha", "limit", "Store",
    ];
    const PATTERNS: &[&str] = &["w_*", "nosort", "store", "STORE", "by", "get", "limit"];
    let mut tally = Tally::default();
    for _ in 0..LINES {
        let ro = rng.chance(20);
        let sorted = rng.pick(SORTED);
        let mut line = vec![
            rng.case(if ro { "sort_ro" } else { "sort" }),
            sorted.to_string(),
        ];
        for _ in 0..rng.below(6) {
            match rng.below(10) {
                0 => line.push(rng.case("asc")),
                1 => line.push(rng.case("desc")),
                2 => line.push(rng.case("alpha")),
                3 => line.extend([rng.case("limit"), "0".into(), "10".into()]),
                4..=6 => line.extend([rng.case("store"), rng.pick(DESTS).into()]),
                7 => line.extend([rng.case("by"), rng.pick(PATTERNS).into()]),
                _ => {
                    let p = if rng.chance(30) {
                        "#"
                    } else {
                        rng.pick(PATTERNS)
                    };
                    line.extend([rng.case("get"), p.into()]);
                }
            }
        }
        if rng.chance(10) {
            // A keyword without its argument.
            line.push(rng.case_of(&["store", "by", "get", "limit"]));
        }
        setup(
            redis,
            &[words("FLUSHALL"), words(&format!("RPUSH {sorted} 3 1 2"))],
        );
        let reply = redis.cmd(&line);
        let touched = (!reply.is_error()).then(|| {
            let mut keys = vec![sorted.to_string()];
            keys.extend(existing(redis, DESTS));
            keys
        });
        tally.check(redis, &line, touched, &reply);
    }
    tally
}

/// GEORADIUS and GEORADIUSBYMEMBER (and their _RO forms) with options in any order,
/// STORE and STOREDIST repeated, keywords as key and member names.
fn georadius_lines(redis: &mut RawConn, rng: &mut Rng) -> Tally {
    const SOURCES: &[&str] = &["src", "STORE", "Storedist"];
    const DESTS: &[&str] = &[
        "dst1",
        "dst2",
        "store",
        "STOREDIST",
        "count",
        "asc",
        "Store",
    ];
    let mut tally = Tally::default();
    for _ in 0..LINES {
        let src = rng.pick(SOURCES);
        let by_member = rng.chance(50);
        let ro = if rng.chance(20) { "_ro" } else { "" };
        let mut line = if by_member {
            let member = rng.pick(&["m1", "STORE", "storedist"]);
            vec![
                rng.case(&format!("georadiusbymember{ro}")),
                src.into(),
                member.into(),
                "100".into(),
                rng.case("km"),
            ]
        } else {
            vec![
                rng.case(&format!("georadius{ro}")),
                src.into(),
                "0".into(),
                "0".into(),
                "100".into(),
                rng.case("km"),
            ]
        };
        for _ in 0..rng.below(6) {
            match rng.below(10) {
                0 => line.push(rng.case("withdist")),
                1 => line.push(rng.case_of(&["asc", "desc"])),
                2 => line.extend([rng.case("count"), "5".into()]),
                3 => line.extend([rng.case("count"), "1".into(), rng.case("any")]),
                4..=6 => line.extend([rng.case("store"), rng.pick(DESTS).into()]),
                _ => line.extend([rng.case("storedist"), rng.pick(DESTS).into()]),
            }
        }
        if rng.chance(10) {
            line.push(rng.case_of(&["store", "storedist"]));
        }
        setup(
            redis,
            &[
                words("FLUSHALL"),
                words(&format!(
                    "GEOADD {src} 0 0 m1 0.1 0.1 STORE 0.2 0.2 storedist"
                )),
            ],
        );
        let reply = redis.cmd(&line);
        let touched = (!reply.is_error()).then(|| {
            let mut keys = vec![src.to_string()];
            keys.extend(existing(redis, DESTS));
            keys
        });
        tally.check(redis, &line, touched, &reply);
    }
    tally
}

/// XREAD and XREADGROUP with COUNT, BLOCK, GROUP and NOACK in any order, keywords as stream,
/// group and consumer names: the streams read are the ones the proxy finds.
fn xread_lines(redis: &mut RawConn, rng: &mut Rng) -> Tally {
    const STREAMS: &[&str] = &["s1", "s2", "STREAMS", "block", "Group", "count"];
    const GROUPS: &[&str] = &["g", "STREAMS", "block"];
    const CONSUMERS: &[&str] = &["c", "STREAMS", "COUNT", "noack"];
    let mut tally = Tally::default();
    for _ in 0..LINES {
        let group = rng.chance(50);
        let mut line = vec![rng.case(if group { "xreadgroup" } else { "xread" })];
        let mut options: Vec<Vec<String>> = Vec::new();
        if rng.chance(50) {
            options.push(vec![rng.case("count"), "5".into()]);
        }
        if rng.chance(30) {
            // Served at once (every stream has an entry), bounded anyway.
            options.push(vec![rng.case("block"), "10".into()]);
        }
        let group_name = rng.pick(GROUPS);
        if group {
            options.push(vec![
                rng.case("group"),
                group_name.into(),
                rng.pick(CONSUMERS).into(),
            ]);
            if rng.chance(40) {
                options.push(vec![rng.case("noack")]);
            }
        }
        while !options.is_empty() {
            let i = rng.below(options.len());
            line.extend(options.remove(i));
        }
        let mut names: Vec<&str> = STREAMS.to_vec();
        let n = 1 + rng.below(3);
        let mut chosen = Vec::new();
        for _ in 0..n {
            chosen.push(names.remove(rng.below(names.len())));
        }
        line.push(rng.case("streams"));
        line.extend(chosen.iter().map(|s| s.to_string()));
        let id = if group { ">" } else { "0" };
        line.extend(chosen.iter().map(|_| id.to_string()));
        if rng.chance(10) {
            line.push(id.into());
        }
        let mut fixture = vec![words("FLUSHALL")];
        for s in STREAMS {
            fixture.push(words(&format!("XADD {s} 1-1 f v")));
            for g in GROUPS {
                fixture.push(words(&format!("XGROUP CREATE {s} {g} 0")));
            }
        }
        setup(redis, &fixture);
        let reply = redis.cmd(&line);
        let touched = (!reply.is_error()).then(|| match reply.items() {
            None => Vec::new(),
            Some(streams) => streams
                .iter()
                .map(|s| text(&s.items().expect("[stream, entries]")[0]))
                .collect(),
        });
        tally.check(redis, &line, touched, &reply);
    }
    tally
}

#[test]
fn generated_lines_route_by_the_keys_redis_touches() {
    let redis = RedisServer::start();
    let mut conn = redis.raw();
    let mut rng = Rng(0x7E55_E7A5_0001);
    let sort = sort_lines(&mut conn, &mut rng);
    let geo = georadius_lines(&mut conn, &mut rng);
    let xread = xread_lines(&mut conn, &mut rng);
    let failures: Vec<String> = [(sort, "SORT"), (geo, "GEORADIUS"), (xread, "XREAD")]
        .iter()
        .filter_map(|(tally, family)| tally.failure(family))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The commands whose keys follow a `numkeys` argument, with keys named like numbers and
/// options: the proxy's keys are `COMMAND GETKEYS`'s wherever Redis accepts the line (these
/// key specs describe exactly what the commands run).
#[test]
fn generated_numkeys_lines_match_command_getkeys() {
    let redis = RedisServer::start();
    let mut conn = redis.raw();
    let mut rng = Rng(0x7E55_E7A5_0002);
    // (command, arguments before numkeys, options after the keys)
    let templates: &[(&str, &[&str], &[&str])] = &[
        ("eval", &["return 1"], &["a", "2"]),
        ("eval_ro", &["return 1"], &["STORE"]),
        (
            "evalsha",
            &["0123456789012345678901234567890123456789"],
            &["1"],
        ),
        ("fcall", &["f"], &["x"]),
        ("fcall_ro", &["f"], &[]),
        ("zunionstore", &["dst"], &["WEIGHTS 1 2", "AGGREGATE MAX"]),
        ("zinterstore", &["2"], &["AGGREGATE SUM"]),
        ("zdiffstore", &["dst"], &[]),
        ("zunion", &[], &["WITHSCORES"]),
        ("zinter", &[], &["WITHSCORES"]),
        ("zdiff", &[], &["WITHSCORES"]),
        ("sintercard", &[], &["LIMIT 5"]),
        ("zintercard", &[], &["LIMIT 5"]),
        ("lmpop", &[], &["LEFT", "RIGHT COUNT 2"]),
        ("zmpop", &[], &["MIN", "MAX COUNT 2"]),
        ("blmpop", &["0"], &["LEFT"]),
        ("bzmpop", &["0"], &["MAX"]),
    ];
    const KEYS: &[&str] = &[
        "k1", "k2", "1", "2", "0", "STORE", "LEFT", "WEIGHTS", "numkeys",
    ];
    let (mut compared, mut mismatches) = (0, Vec::new());
    for _ in 0..600 {
        let (name, before, options) = templates[rng.below(templates.len())];
        let n = rng.below(4);
        let mut line = vec![rng.case(name)];
        line.extend(before.iter().map(|a| a.to_string()));
        line.push(n.to_string());
        for _ in 0..n {
            line.push(rng.pick(KEYS).to_string());
        }
        if !options.is_empty() && rng.chance(60) {
            line.extend(words(rng.pick(options)));
        }
        let Ok(want) = getkeys(&mut conn, &line) else {
            continue;
        };
        compared += 1;
        let got = proxy_keys(&line);
        if got != want {
            mismatches.push(format!("{}: proxy {got:?}, Redis {want:?}", line.join(" ")));
        }
    }
    assert!(compared >= 300, "only {compared} lines were valid");
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// The lines named in the key finders' docs, checked one by one.
#[test]
fn keywords_as_names_and_repeated_options() {
    let redis = RedisServer::start();
    let mut conn = redis.raw();
    let cases: &[(&str, &[&str])] = &[
        ("SORT k STORE by STORE dst", &["k", "dst"]),
        ("SORT k STORE a LIMIT 0 1 STORE b", &["k", "b"]),
        (
            "GEORADIUS src 0 0 100 km STORE app:x STORE victim",
            &["src", "victim"],
        ),
        (
            "GEORADIUS src 0 0 100 km STORE a STOREDIST b",
            &["src", "b"],
        ),
        (
            "GEORADIUSBYMEMBER src m1 100 km STOREDIST a STORE b",
            &["src", "b"],
        ),
        ("XREADGROUP NOACK GROUP g c STREAMS s >", &["s"]),
        ("XREADGROUP GROUP g STREAMS STREAMS s >", &["s"]),
        ("XREADGROUP GROUP STREAMS c STREAMS s >", &["s"]),
        ("XREAD COUNT 5 STREAMS STREAMS 0", &["STREAMS"]),
    ];
    for (line, want) in cases {
        let line = words(line);
        assert_eq!(proxy_keys(&line), *want, "{}", line.join(" "));
        // And Redis agrees: run it.
        let mut fixture = vec![words("FLUSHALL"), words("GEOADD src 0 0 m1")];
        fixture.push(words("RPUSH k 3 1 2"));
        for s in ["s", "STREAMS"] {
            fixture.push(words(&format!("XADD {s} 1-1 f v")));
            fixture.push(words(&format!("XGROUP CREATE {s} g 0")));
            fixture.push(words(&format!("XGROUP CREATE {s} STREAMS 0")));
        }
        setup(&mut conn, &fixture);
        let reply = conn.cmd(&line);
        assert!(!reply.is_error(), "{line:?}: {reply:?}");
        for k in *want {
            assert_eq!(conn.cmd(&["EXISTS", k]).int(), Some(1), "{line:?}: {k}");
        }
    }
}

/// Two keys with a common hash tag on `group` (of 2), and the tag.
fn tag_on(group: u32) -> String {
    let tag = find_key("tag", |k| group_of_key(k, 2) == group);
    format!("{{{tag}}}")
}

#[test]
fn georadius_store_lands_on_the_group_of_the_key_redis_writes() {
    let (r1, r2) = (RedisServer::start(), RedisServer::start());
    let proxy = Proxy::start(&[&[&r1], &[&r2]]);
    let mut c = RawConn::connect(proxy.addr);
    let t = tag_on(2);
    let other = find_key("other", |k| group_of_key(k, 2) == 1);
    let src = format!("{t}src");
    assert_eq!(c.cmd(&["GEOADD", &src, "0", "0", "m1"]).int(), Some(1));

    // The last STORE is written: routed by it, to group 2.
    let dst = format!("{t}dst");
    let r = c.cmd(&[
        "GEORADIUS",
        &src,
        "0",
        "0",
        "100",
        "km",
        "STORE",
        &other,
        "STORE",
        &dst,
    ]);
    assert_eq!(r.int(), Some(1), "{r:?}");
    assert_eq!(r2.raw().cmd(&["EXISTS", &dst]).int(), Some(1));
    for r in [&r1, &r2] {
        assert_eq!(r.raw().cmd(&["EXISTS", &other]).int(), Some(0));
    }

    // The last STORE is in another slot than the source: CROSSSLOT, nothing written.
    let first = format!("{t}first");
    let r = c.cmd(&[
        "GEORADIUSBYMEMBER",
        &src,
        "m1",
        "100",
        "km",
        "STOREDIST",
        &first,
        "STORE",
        &other,
    ]);
    assert_eq!(
        r,
        Resp::err("CROSSSLOT Keys in request don't hash to the same slot")
    );
    for r in [&r1, &r2] {
        assert_eq!(r.raw().cmd(&["EXISTS", &other]).int(), Some(0));
        assert_eq!(r.raw().cmd(&["EXISTS", &first]).int(), Some(0));
    }
}

#[test]
fn sort_patterns_that_may_name_another_slot_are_refused() {
    let (r1, r2) = (RedisServer::start(), RedisServer::start());
    let proxy = Proxy::start(&[&[&r1], &[&r2]]);
    let mut c = RawConn::connect(proxy.addr);
    let t = tag_on(2);
    let k = format!("{t}k");
    c.cmd(&["RPUSH", &k, "a", "b"]);
    c.cmd(&["MSET", &format!("{t}w_a"), "2", &format!("{t}w_b"), "1"]);
    c.cmd(&["MSET", &format!("{t}o_a"), "A", &format!("{t}o_b"), "B"]);
    c.cmd(&["HSET", &format!("{t}h_a"), "f", "HA"]);
    let by = "ERR BY option of SORT denied by the proxy when keys formed by the pattern may \
              be in different slots.";
    let get = "ERR GET option of SORT denied by the proxy when keys formed by the pattern may \
               be in different slots.";
    let b = |s: &str| Resp::bulk(s);
    let cases: Vec<(Vec<String>, Resp)> = vec![
        // In the sorted key's slot: served.
        (
            words(&format!("SORT {k} BY {t}w_*")),
            Resp::array(vec![b("b"), b("a")]),
        ),
        (
            words(&format!("SORT_RO {k} BY {t}w_* GET # GET {t}o_* ALPHA")),
            Resp::array(vec![b("b"), b("B"), b("a"), b("A")]),
        ),
        (
            words(&format!("SORT {k} ALPHA GET {t}h_*->f")),
            Resp::array(vec![b("HA"), Resp::nil()]),
        ),
        // No key read: served.
        (
            words(&format!("sort {k} by nosort")),
            Resp::array(vec![b("a"), b("b")]),
        ),
        (
            words(&format!("SORT {k} ALPHA GET #")),
            Resp::array(vec![b("a"), b("b")]),
        ),
        // May read keys of any slot: refused.
        (words(&format!("SORT {k} BY w_*")), Resp::err(by)),
        (words(&format!("SORT_RO {k} by w_*")), Resp::err(by)),
        (words(&format!("SORT {k} ALPHA GET o_*")), Resp::err(get)),
        (
            words(&format!("SORT {k} ALPHA GET # get *{t}")),
            Resp::err(get),
        ),
        // The tag is after the element, or after "->" (the hash field, not the key).
        (words(&format!("SORT {k} BY *{t}")), Resp::err(by)),
        (words(&format!("SORT {k} ALPHA GET *->{t}")), Resp::err(get)),
        // The element may close the tag: "{a*}" with element "}x" is key "{a}x}".
        (words(&format!("SORT {k} BY {{a*}}")), Resp::err(by)),
        // Another slot's tag.
        (
            words(&format!("SORT {k} ALPHA GET {}o_*", tag_on(1))),
            Resp::err(get),
        ),
        // SORT ... STORE with a pattern: refused before anything is written.
        (
            words(&format!("SORT {k} GET o_* STORE {t}dst")),
            Resp::err(get),
        ),
    ];
    for (line, want) in &cases {
        assert_eq!(&c.cmd(line), want, "{}", line.join(" "));
    }
    assert_eq!(r2.raw().cmd(&["EXISTS", &format!("{t}dst")]).int(), Some(0));
}

/// The reply to `args` if it comes within `bound`.
fn reply_within(conn: &mut RawConn, args: &[&str], bound: Duration) -> Option<Resp> {
    conn.set_read_timeout(bound);
    conn.send(&encode(args));
    let r = conn.read().ok();
    conn.set_read_timeout(Duration::from_secs(10));
    r
}

#[test]
fn xread_block_is_refused_and_other_sessions_keep_their_connection() {
    let redis = RedisServer::start();
    let proxy = Proxy::start_with(
        &[&[&redis]],
        &[("proxy.workers", "1"), ("backend.connections", "1")],
    );
    let mut blocker = RawConn::connect(proxy.addr);
    let mut other = RawConn::connect(proxy.addr);
    assert_eq!(other.cmd(&["SET", "k", "v"]), Resp::ok());
    for line in [
        "XREAD BLOCK 3000 STREAMS s $",
        "xread count 1 block 3000 streams s $",
        "XREADGROUP GROUP g c BLOCK 3000 STREAMS s >",
        "xreadgroup block 3000 noack group g c streams s >",
    ] {
        blocker.send(&encode(&words(line)));
        // Forwarded, it would block on Redis; refused, it is answered at once. Either way the
        // other session's GET comes after it.
        let mut backend = redis.raw();
        let settled = wait_until(Duration::from_secs(2), || {
            blocker.has_data_within(Duration::from_millis(1))
                || backend
                    .cmd(&["INFO", "clients"])
                    .bytes()
                    .is_some_and(|info| String::from_utf8_lossy(info).contains("blocked_clients:1"))
        });
        assert!(settled, "{line}: neither answered nor blocked on Redis");
        // Behind a blocked XREAD the GET would wait for its 3000 ms, or fail with the backend
        // timeout (1000 ms) first; the bound leaves a loaded machine room.
        let bound = Duration::from_millis(2000);
        let start = Instant::now();
        let r = reply_within(&mut other, &["GET", "k"], bound);
        assert_eq!(r, Some(Resp::bulk("v")), "{line}: GET on the other session");
        assert!(start.elapsed() < bound);
        let name = line.split(' ').next().unwrap().to_ascii_lowercase();
        assert_eq!(
            blocker.read().expect("a reply"),
            Resp::err(&format!(
                "ERR command '{name}' with BLOCK is not supported by the proxy yet"
            )),
            "{line}"
        );
    }
    // A stream named BLOCK is not the option.
    assert_eq!(
        blocker.cmd(&words("XREAD STREAMS BLOCK 0")),
        Resp::Array(None),
        "XREAD STREAMS BLOCK 0"
    );
}
