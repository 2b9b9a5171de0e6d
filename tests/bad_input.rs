//! Abuse: malformed RESP, huge headers (without the memory they announce), inline commands,
//! too many clients, idle clients, bad config files. After each, a fresh client is served.

use tessera_testkit as harness;

use std::time::{Duration, Instant};

use harness::*;

fn assert_serves(proxy: &Proxy, context: &str) {
    let mut c = proxy.raw();
    assert_eq!(c.cmd(&["PING"]), Resp::simple("PONG"), "after {context}");
    assert_eq!(
        c.cmd(&["SET", "alive", "yes"]),
        Resp::ok(),
        "after {context}"
    );
    assert_eq!(
        c.cmd(&["GET", "alive"]),
        Resp::bulk("yes"),
        "after {context}"
    );
}

/// Sends `bytes`, expects `-ERR Protocol error...` (starting with `want_prefix`) and a close.
fn expect_protocol_error(proxy: &Proxy, bytes: &[u8], want_prefix: &str) {
    let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(60)]).into_owned();
    let mut c = proxy.raw();
    c.send(bytes);
    let reply = c
        .read()
        .unwrap_or_else(|e| panic!("no reply to malformed {shown:?}: {e}"));
    assert!(
        reply.error_text().starts_with(want_prefix),
        "malformed {shown:?}: expected an error starting with {want_prefix:?}, got {reply:?}"
    );
    assert!(
        c.closed_within(Duration::from_secs(5)),
        "connection still open after the protocol error for {shown:?}"
    );
}

fn one_group() -> (RedisServer, Proxy) {
    let r = RedisServer::start();
    let p = Proxy::start(&[&[&r]]);
    (r, p)
}

#[test]
fn malformed_frames_get_a_protocol_error_and_a_close() {
    let (_r, proxy) = one_group();
    let mut bystander = proxy.raw();
    assert_eq!(bystander.cmd(&["PING"]), Resp::simple("PONG"));
    let cases: &[(&[u8], &str)] = &[
        (b"*1\r\n:5\r\n", "ERR Protocol error: expected '$', got ':'"),
        (b"*x\r\n", "ERR Protocol error: invalid multibulk length"),
        (b"*1\r\n$x\r\n", "ERR Protocol error: invalid bulk length"),
        (b"*1\r\n$-5\r\n", "ERR Protocol error: invalid bulk length"),
        (b"*2\r\n$3\r\nGETxx$1\r\na\r\n", "ERR Protocol error"),
        (b"*1\r\n$4\r\nPINGPONG\r\n", "ERR Protocol error"),
        (b"*-5\r\n*1\r\n+PING\r\n", "ERR Protocol error"),
    ];
    for (bytes, want) in cases {
        expect_protocol_error(&proxy, bytes, want);
        assert_serves(&proxy, &format!("{:?}", String::from_utf8_lossy(bytes)));
    }
    // The bystander session was not disturbed.
    assert_eq!(bystander.cmd(&["PING"]), Resp::simple("PONG"));
    // A command split over many writes is fine (not malformed).
    let mut c = proxy.raw();
    for chunk in [
        &b"*3\r\n$3\r\nSE"[..],
        b"T\r\n$1",
        b"\r\nk\r\n$",
        b"2\r\nv",
        b"v\r\n",
    ] {
        c.send(chunk);
    }
    assert_eq!(c.read().unwrap(), Resp::ok());
    assert_eq!(c.cmd(&["GET", "k"]), Resp::bulk("vv"));
}

fn connections_received(redis: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query(redis)
        .expect("INFO stats");
    info.lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("total_connections_received in INFO")
}

/// `$01`, `*02`, `$-0`: Redis refuses them and closes the connection, which the proxy shares
/// among sessions; the proxy must refuse them itself and never forward them.
#[test]
fn non_canonical_lengths_are_refused_by_the_proxy_not_forwarded() {
    let r = RedisServer::start();
    let proxy = Proxy::start_with(&[&[&r]], &[("proxy.workers", "1")]);
    let mut bystander = proxy.raw();
    assert_eq!(bystander.cmd(&["SET", "k", "v"]), Resp::ok());
    let mut admin = r.conn();
    let before = connections_received(&mut admin);
    let cases: &[(&[u8], &str)] = &[
        (
            b"*2\r\n$3\r\nGET\r\n$01\r\nk\r\n",
            "ERR Protocol error: invalid bulk length",
        ),
        (
            b"*02\r\n$3\r\nGET\r\n$1\r\nk\r\n",
            "ERR Protocol error: invalid multibulk length",
        ),
        (
            b"*2\r\n$3\r\nGET\r\n$-0\r\n\r\n",
            "ERR Protocol error: invalid bulk length",
        ),
    ];
    for (bytes, want) in cases {
        expect_protocol_error(&proxy, bytes, want);
        assert_eq!(bystander.cmd(&["GET", "k"]), Resp::bulk("v"));
    }
    // The worker's backend connection is the one it had: Redis never saw the frames.
    assert_eq!(
        connections_received(&mut admin),
        before,
        "the backend connection was reset"
    );
}

#[test]
fn huge_headers_are_refused_without_allocating() {
    let (_r, proxy) = one_group();
    let pid = proxy.pid();
    let mut bystander = proxy.raw();
    assert_eq!(bystander.cmd(&["PING"]), Resp::simple("PONG"));
    let before = rss_kib(pid);
    expect_protocol_error(
        &proxy,
        b"*1000000000\r\n",
        "ERR Protocol error: invalid multibulk length",
    );
    expect_protocol_error(
        &proxy,
        b"*1\r\n$2000000000\r\n",
        "ERR Protocol error: invalid bulk length",
    );
    // Just above the default limits (1 Mi elements, 512 MiB bulk).
    expect_protocol_error(
        &proxy,
        b"*1048577\r\n",
        "ERR Protocol error: invalid multibulk length",
    );
    expect_protocol_error(
        &proxy,
        b"*1\r\n$536870913\r\n",
        "ERR Protocol error: invalid bulk length",
    );
    // Within the limits but never sent: the proxy must not allocate what was announced.
    let mut announcers: Vec<RawConn> = (0..4)
        .map(|_| {
            let mut c = proxy.raw();
            c.send(b"*1048576\r\n$536870912\r\nabc");
            c
        })
        .collect();
    // The proxy has read the headers once it answers a later command on a fresh session
    // (not a proof for other workers: also check again after a short poll).
    assert_serves(&proxy, "announced 512 MiB bulks");
    let mut peak = rss_kib(pid);
    wait_until(Duration::from_millis(300), || {
        peak = peak.max(rss_kib(pid));
        false
    });
    let grew_mib = peak.saturating_sub(before) / 1024;
    assert!(
        grew_mib < 50,
        "proxy RSS grew by {grew_mib} MiB ({before} KiB -> {peak} KiB)"
    );
    for c in &mut announcers {
        assert!(
            !c.closed_within(Duration::from_millis(10)),
            "a connection announcing an in-limit bulk was closed"
        );
    }
    drop(announcers);
    assert_eq!(bystander.cmd(&["PING"]), Resp::simple("PONG"));
    assert_serves(&proxy, "huge headers");
}

#[test]
fn inline_commands_are_served() {
    let (_r, proxy) = one_group();
    let mut c = proxy.raw();
    c.send(b"PING\r\n");
    assert_eq!(c.read().unwrap(), Resp::simple("PONG"));
    c.send(b"SET inline  \"hello world\"\r\n");
    assert_eq!(c.read().unwrap(), Resp::ok());
    c.send(b"GET inline\n");
    assert_eq!(c.read().unwrap(), Resp::bulk("hello world"));
    // Inline and multibulk mixed in one write.
    let mut bytes = b"ECHO abc\r\n".to_vec();
    bytes.extend(encode(&["GET", "inline"]));
    bytes.extend(b"PING\r\n");
    c.send(&bytes);
    assert_eq!(c.read().unwrap(), Resp::bulk("abc"));
    assert_eq!(c.read().unwrap(), Resp::bulk("hello world"));
    assert_eq!(c.read().unwrap(), Resp::simple("PONG"));
    // An empty line is ignored, as by Redis.
    c.send(b"\r\nPING\r\n");
    assert_eq!(c.read().unwrap(), Resp::simple("PONG"));
}

#[test]
fn too_long_inline_command_is_refused() {
    let r = RedisServer::start();
    let proxy = Proxy::start_with(&[&[&r]], &[("proxy.max_inline_len", "1024")]);
    let mut c = proxy.raw();
    let mut line = b"ECHO ".to_vec();
    line.resize(4096, b'x');
    // No newline: the proxy must give up once the line exceeds max_inline_len.
    c.send(&line);
    let reply = c.read().expect("a reply to an over-long inline request");
    assert!(
        reply.error_text().starts_with("ERR Protocol error"),
        "{reply:?}"
    );
    assert!(c.closed_within(Duration::from_secs(5)));
    assert_serves(&proxy, "too long inline");
}

#[test]
fn max_clients_refuses_the_extra_client() {
    let r = RedisServer::start();
    let proxy = Proxy::start_with(&[&[&r]], &[("proxy.max_clients", "3")]);
    // The harness's readiness probe was a connection too: the proxy may take a moment to
    // notice it left, so each of the 3 is admitted within a bound.
    let mut clients: Vec<RawConn> = Vec::new();
    for i in 0..3 {
        let mut last = None;
        let admitted = wait_until(Duration::from_secs(5), || {
            let mut c = proxy.raw();
            let _ = c.try_send(&encode(&["PING"]));
            last = c.read().ok();
            if last == Some(Resp::simple("PONG")) {
                clients.push(c);
                return true;
            }
            false
        });
        assert!(admitted, "client {i} of 3 not admitted: {last:?}");
    }
    let mut fourth = proxy.raw();
    // Redis answers a refused client at once; a proxy may wait for its first command.
    if !fourth.has_data_within(Duration::from_secs(2)) {
        let _ = fourth.try_send(&encode(&["PING"]));
    }
    let reply = fourth.read();
    assert!(
        matches!(&reply, Ok(r) if r.error_text() == "ERR max number of clients reached"),
        "4th client with max_clients = 3: {reply:?}"
    );
    assert!(fourth.closed_within(Duration::from_secs(5)));
    // The three are still served.
    for c in &mut clients {
        assert_eq!(c.cmd(&["PING"]), Resp::simple("PONG"));
    }
    // Closing one makes room again.
    drop(clients.pop());
    let mut last = None;
    let admitted = wait_until(Duration::from_secs(5), || {
        let mut c = proxy.raw();
        let _ = c.try_send(&encode(&["PING"]));
        let r = c.read().ok();
        let ok = r == Some(Resp::simple("PONG"));
        last = r;
        if ok {
            clients.push(c);
        }
        ok
    });
    assert!(
        admitted,
        "no client admitted after one of 3 left; last {last:?}"
    );
}

#[test]
fn idle_clients_are_closed_after_idle_timeout() {
    let r = RedisServer::start();
    let proxy = Proxy::start_with(&[&[&r]], &[("proxy.idle_timeout_secs", "1")]);
    let mut idle = proxy.raw();
    assert_eq!(idle.cmd(&["PING"]), Resp::simple("PONG"));
    let mut busy = proxy.raw();
    let t = Instant::now();
    // The busy client talks every 200 ms for 2.5 s and must stay connected.
    while t.elapsed() < Duration::from_millis(2500) {
        assert_eq!(
            busy.cmd(&["PING"]),
            Resp::simple("PONG"),
            "busy client after {:?}",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        idle.closed_within(Duration::from_millis(1500)),
        "idle client (timeout 1 s) still open after 4 s"
    );
    let closed_after = t.elapsed();
    assert!(closed_after < Duration::from_secs(5), "{closed_after:?}");
    assert_serves(&proxy, "idle timeout");
}

#[test]
fn bad_config_files_are_refused_with_a_message() {
    let r = RedisServer::start();
    let good = Proxy::builder(&[&[&r]]);
    let with_unknown_field = good.set("proxy.bogus_field", "1").config().text;
    let with_unknown_backend_field = Proxy::builder(&[&[&r]])
        .set("backend.timeout_millis", "5")
        .config()
        .text;
    let with_missing_group = Proxy::builder(&[&[&r]])
        .slots(&[("0-511", 1), ("512-1023", 7)])
        .config()
        .text;
    let with_bad_range = Proxy::builder(&[&[&r]])
        .slots(&[("0-2000", 1)])
        .config()
        .text;
    let with_unknown_table = Proxy::builder(&[&[&r]])
        .extra_toml("[bogus_table]\nx = 1\n")
        .config()
        .text;
    let cases: Vec<(&str, String, &[&str])> = vec![
        ("unknown field", with_unknown_field, &["bogus_field"]),
        (
            "unknown backend field",
            with_unknown_backend_field,
            &["timeout_millis"],
        ),
        ("slots naming a missing group", with_missing_group, &["7"]),
        ("slot range past 1023", with_bad_range, &["2000"]),
        ("unknown table", with_unknown_table, &["bogus_table"]),
        (
            "not TOML",
            "this is not [toml\n= at all".to_string(),
            &["toml"],
        ),
        (
            "wrong type",
            Proxy::builder(&[&[&r]])
                .set("proxy.max_clients", "\"many\"")
                .config()
                .text,
            &["max_clients"],
        ),
    ];
    for (what, text, words) in &cases {
        let t = Instant::now();
        match Proxy::start_raw(text) {
            Ok(mut p) => {
                p.kill();
                panic!("proxy started with a config with {what}:\n{text}");
            }
            Err(e) => {
                let status = e.status.unwrap_or_else(|| {
                    panic!("config with {what}: proxy neither listened nor exited: {e}")
                });
                assert!(
                    !status.success(),
                    "config with {what}: exit status {status}"
                );
                let log = e.log.to_lowercase();
                for w in *words {
                    assert!(
                        log.contains(&w.to_lowercase()),
                        "config with {what}: message does not name {w:?}:\n{}",
                        e.log
                    );
                }
                if *what == "slots naming a missing group" {
                    assert!(log.contains("group"), "{}", e.log);
                }
                assert!(t.elapsed() < Duration::from_secs(10));
            }
        }
    }
    // A config file that does not exist.
    let dir = TempDir::new("nocfg");
    let missing = dir.path().join("missing.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("proxy")
        .arg("--config")
        .arg(&missing)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("missing.toml"), "{text}");

    // And the good config starts.
    let mut p = Proxy::builder(&[&[&r]]).start();
    assert_serves(&p, "bad configs");
    p.kill();
}

#[test]
fn configured_limits_are_enforced() {
    let r = RedisServer::start();
    let proxy = Proxy::start_with(
        &[&[&r]],
        &[("proxy.max_bulk_len", "1024"), ("proxy.max_array_len", "8")],
    );
    // At the limits: served.
    let mut c = proxy.raw();
    let v = "x".repeat(1024);
    assert_eq!(c.cmd(&["SET", "k", &v]), Resp::ok());
    assert_eq!(
        c.cmd(&["MSET", "a", "1", "b", "2", "c", "3", "d"]),
        Resp::err("ERR wrong number of arguments for 'mset' command")
    );
    assert_eq!(
        c.cmd(&["DEL", "a", "b", "c", "d", "e", "f", "g"]),
        Resp::Int(0)
    );
    // Past them: protocol errors and a close.
    let mut big = encode(&["SET", "k"]);
    big[1] = b'3';
    big.extend(format!("$1025\r\n{}\r\n", "y".repeat(1025)).as_bytes());
    expect_protocol_error(&proxy, &big, "ERR Protocol error: invalid bulk length");
    let nine: Vec<String> = (0..9).map(|i| format!("k{i}")).collect();
    let mut args = vec!["DEL"];
    args.extend(nine.iter().take(8).map(String::as_str));
    expect_protocol_error(
        &proxy,
        &encode(&args),
        "ERR Protocol error: invalid multibulk length",
    );
    assert_serves(&proxy, "limits");
    assert_eq!(c.cmd(&["GET", "k"]), Resp::bulk(&v));
}

#[test]
fn empty_arrays_are_ignored_like_redis() {
    let (_r, proxy) = one_group();
    let mut c = proxy.raw();
    c.send(b"*0\r\n*1\r\n$4\r\nPING\r\n");
    assert_eq!(c.read().unwrap(), Resp::simple("PONG"));
}

#[test]
fn clients_vanishing_mid_pipeline_do_not_hurt_the_proxy() {
    let r1 = RedisServer::start();
    let r2 = RedisServer::start();
    let mut proxy = Proxy::start(&[&[&r1], &[&r2]]);
    for round in 0..20 {
        let mut c = proxy.raw();
        let mut bytes = Vec::new();
        for i in 0..2000 {
            bytes.extend(encode(&["SET", &format!("v{round}:{i}"), "value"]));
            bytes.extend(encode(&["MGET", "a", "b", "c", "d"]));
        }
        // Half the rounds cut the last command in the middle.
        if round % 2 == 1 {
            bytes.extend(b"*3\r\n$3\r\nSET\r\n$2\r\nab");
        }
        let _ = c.try_send(&bytes);
        // Reset instead of a clean close on some rounds (SO_LINGER 0).
        if round % 3 == 0 {
            let fd = std::os::fd::AsRawFd::as_raw_fd(&c.stream);
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: setsockopt on a socket this test owns, with a valid linger struct.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    &linger as *const libc::linger as *const libc::c_void,
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                );
            }
        }
        drop(c);
    }
    assert!(proxy.is_running(), "proxy died; log:\n{}", proxy.log());
    assert_serves(&proxy, "clients vanishing mid-pipeline");
    // Sessions of the vanished clients are all gone eventually.
    let mut last = String::new();
    let gone = wait_until(Duration::from_secs(10), || {
        let body = proxy.http_get("/api/stats").body;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        last = body;
        v.pointer("/sessions/alive").and_then(|n| n.as_f64()) == Some(0.0)
    });
    assert!(
        gone,
        "sessions still alive after their clients left: {last}"
    );
}

#[test]
fn inline_parsing_matches_redis() {
    let (_r, proxy) = one_group();
    let reference = RedisServer::start();
    let lines: &[&[u8]] = &[
        b"ECHO plain\r\n",
        b"ECHO \"double quoted\"\r\n",
        b"ECHO 'single quoted'\r\n",
        b"ECHO \"esc\\x41\\n\\t\\\\\"\r\n",
        b"ECHO 'it\\'s'\r\n",
        b"   ECHO    spaced    \r\n",
        b"echo \"\"\r\n",
        b"NOSUCH a 'b c'\r\n",
        b"GET\r\n",
    ];
    // All lines are tried; the differences are reported together.
    let mut mismatches = Vec::new();
    for line in lines {
        let mut p = proxy.raw();
        let mut r = RawConn::connect(reference.socket_addr());
        p.send(line);
        r.send(line);
        let want = r.read().unwrap();
        let got = p.read().unwrap();
        if got != want {
            mismatches.push(format!(
                "inline {:?}: proxy {got:?}, Redis {want:?}",
                String::from_utf8_lossy(line)
            ));
        } else {
            assert_eq!(p.cmd(&["PING"]), Resp::simple("PONG"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "inline parsing differs from Redis:\n{}",
        mismatches.join("\n")
    );
    // Unbalanced quotes: a protocol error and a close, as in Redis.
    let mut r = RawConn::connect(reference.socket_addr());
    r.send(b"ECHO \"unbalanced\r\n");
    let want = r.read().unwrap();
    assert!(want.is_error());
    expect_protocol_error(&proxy, b"ECHO \"unbalanced\r\n", want.error_text());
    assert_serves(&proxy, "unbalanced quotes");
}

#[test]
fn idle_timeout_does_not_close_a_client_waiting_for_a_reply() {
    let r = RedisServer::start();
    let proxy = Proxy::start_with(
        &[&[&r]],
        &[
            ("proxy.idle_timeout_secs", "1"),
            ("backend.timeout_ms", "10000"),
        ],
    );
    let mut c = proxy.raw();
    assert_eq!(c.cmd(&["SET", "k", "v"]), Resp::ok());
    let mut sleeper = r.raw();
    sleeper.send(&encode(&["DEBUG", "SLEEP", "2.5"]));
    let asleep = wait_until(Duration::from_secs(2), || {
        let mut probe = RawConn::connect(r.socket_addr());
        probe.send(&encode(&["PING"]));
        !probe.has_data_within(Duration::from_millis(50))
    });
    assert!(asleep, "redis did not start sleeping");
    // The client then waits on the proxy for 2+ s: busy, not idle.
    c.send(&encode(&["GET", "k"]));
    let got = c.read();
    assert_eq!(
        got.as_ref().ok(),
        Some(&Resp::bulk("v")),
        "a client waiting 2.5 s for a reply was treated as idle: {got:?}"
    );
}

#[test]
fn many_concurrent_connections() {
    let (_r, proxy) = one_group();
    let mut conns: Vec<RawConn> = (0..1000).map(|_| proxy.raw()).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.send(&encode(&["SET", &format!("conn{i}"), &i.to_string()]));
    }
    for (i, c) in conns.iter_mut().enumerate() {
        assert_eq!(c.read().unwrap(), Resp::ok(), "connection {i}");
    }
    for (i, c) in conns.iter_mut().enumerate().step_by(97) {
        assert_eq!(
            c.cmd(&["GET", &format!("conn{i}")]),
            Resp::bulk(i.to_string())
        );
    }
    drop(conns);
    assert_serves(&proxy, "1000 connections");
}

/// The proxy logs to a file here (not a terminal): no ANSI colour codes in it.
#[test]
fn logs_written_to_a_file_have_no_colour_codes() {
    let (_r, proxy) = one_group();
    assert_serves(&proxy, "start");
    let log = proxy.log();
    assert!(log.contains("proxy listening"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escapes in a log that is not a terminal:\n{log}"
    );
}
