//! The cluster as separate processes against a real etcd: `tessera dashboard`, `tessera admin`
//! and coordinator-mode `tessera proxy`. A slot re-assignment through the REST API reaches a
//! running proxy (timed), a killed dashboard's lock expires and a new dashboard takes over,
//! and bad API input changes nothing in the store.

use tessera_testkit as harness;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use harness::etcd::Etcd;
use harness::{Dashboard, Proxy, RedisServer, Resp, free_addr, http_get, http_request, wait_until};

const TOKEN: &str = "cluster-test-token";

/// `tessera admin --dashboard ADDR --token T ARGS...`, bounded: (success, stdout, stderr).
fn admin(dashboard: SocketAddr, args: &[&str]) -> (bool, String, String) {
    harness::dashboard::admin(dashboard, TOKEN, args, Duration::from_secs(10))
}

/// `admin`, which must succeed; its stdout.
fn admin_ok(dashboard: SocketAddr, args: &[&str]) -> String {
    let (ok, out, err) = admin(dashboard, args);
    assert!(ok, "tessera admin {args:?} failed:\n{out}{err}");
    out
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

fn proxy_revision(proxy: &Proxy) -> i64 {
    json(&proxy.http_get("/api/model").body)["revision"]
        .as_i64()
        .expect("revision in /api/model")
}

fn get(redis: &RedisServer, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(&mut redis.conn()).unwrap()
}

#[test]
fn api_reassignment_reaches_a_running_proxy() {
    let etcd = Etcd::start();
    let (r1, r2) = (RedisServer::start(), RedisServer::start());
    let dashboard = Dashboard::start(&etcd.url(), "reassign", free_addr(), TOKEN, 10)
        .unwrap_or_else(|e| panic!("dashboard did not start: {e:?}"));
    let d = dashboard.addr;
    admin_ok(d, &["group", "add", "1"]);
    admin_ok(d, &["group", "add-server", "1", &r1.addr()]);
    admin_ok(d, &["group", "add", "2"]);
    admin_ok(d, &["group", "add-server", "2", &r2.addr()]);
    let out = admin_ok(d, &["--json", "slots", "assign", "0-1023", "1"]);
    assert_eq!(json(&out)["changed"], 1024, "{out}");

    let proxy = Proxy::start_coordinator(&etcd.url(), "reassign", 10)
        .unwrap_or_else(|e| panic!("proxy did not start: {e}"));
    let mut c = proxy.raw();
    for i in 0..10 {
        let key = format!("before-{i}");
        assert_eq!(c.cmd(&["SET", &key, "v"]), Resp::ok());
        assert_eq!(get(&r1, &key).as_deref(), Some("v"), "{key} not on group 1");
    }

    let mut applied_times = Vec::new();
    let mut served_times = Vec::new();
    let mut last_revision = 0;
    for round in 0..5 {
        let (group, owner) = if round % 2 == 0 { (2, &r2) } else { (1, &r1) };
        let body = format!(r#"{{"range": "0-1023", "group": {group}, "force": true}}"#);
        let start = Instant::now();
        let resp = dashboard.call("POST", "/api/slots/assign", &body);
        assert_eq!(resp.status, 200, "{}", resp.body);
        let revision = json(&resp.body)["revision"].as_i64().expect("revision");
        assert!(revision > last_revision, "{}", resp.body);
        last_revision = revision;
        let deadline = start + Duration::from_secs(5);
        while proxy_revision(&proxy) < revision {
            assert!(
                Instant::now() < deadline,
                "round {round}: proxy did not apply revision {revision} within 5 s; log:\n{}",
                proxy.log()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        applied_times.push(start.elapsed());
        let key = format!("round-{round}");
        assert_eq!(c.cmd(&["SET", &key, "v"]), Resp::ok());
        served_times.push(start.elapsed());
        assert_eq!(
            get(owner, &key).as_deref(),
            Some("v"),
            "round {round}: {key} not on group {group}"
        );
    }
    applied_times.sort();
    served_times.sort();
    let (median, max) = (
        |t: &[Duration]| t[t.len() / 2],
        |t: &[Duration]| t[t.len() - 1],
    );
    println!(
        "POST /api/slots/assign -> proxy serving the new table (5 rounds): median {:?}, max {:?} \
         (revision applied: median {:?}, max {:?}); goal <= 100 ms",
        median(&served_times),
        max(&served_times),
        median(&applied_times),
        max(&applied_times)
    );
    assert!(
        median(&served_times) < Duration::from_secs(1),
        "{served_times:?}"
    );

    // The proxy reports the revision it applied; the dashboard shows it is not behind.
    let mut last = String::new();
    let caught_up = wait_until(Duration::from_secs(5), || {
        last = admin_ok(d, &["proxies", "--json"]);
        let v = json(&last);
        let proxies = v["proxies"].as_array().cloned().unwrap_or_default();
        v["revision"].as_i64() == Some(last_revision)
            && proxies.len() == 1
            && proxies[0]["addr"] == proxy.addr.to_string()
            && proxies[0]["applied_revision"].as_i64() == Some(last_revision)
            && proxies[0]["behind"] == false
    });
    assert!(
        caught_up,
        "admin proxies does not show the proxy at revision {last_revision}: {last}"
    );
}

#[test]
fn killed_dashboard_lock_expires_and_a_new_dashboard_takes_over() {
    let etcd = Etcd::start();
    let ttl = 2;
    let mut a = Dashboard::start(&etcd.url(), "takeover", free_addr(), TOKEN, ttl)
        .unwrap_or_else(|e| panic!("dashboard A did not start: {e:?}"));
    let b_addr = free_addr();
    let refused = Dashboard::start(&etcd.url(), "takeover", b_addr, TOKEN, ttl)
        .err()
        .expect("a second dashboard for the same product must not start");
    assert!(
        refused.status.is_some_and(|s| !s.success()),
        "B did not exit non-zero: {refused:?}"
    );
    assert!(
        refused.log.contains("another dashboard holds the lock"),
        "{}",
        refused.log
    );

    a.kill();
    let killed = Instant::now();
    let bound = Duration::from_secs(ttl + 3);
    let mut attempts = 0;
    let b = loop {
        attempts += 1;
        match Dashboard::start(&etcd.url(), "takeover", b_addr, TOKEN, ttl) {
            Ok(b) => break b,
            Err(e) => {
                assert!(
                    e.log.contains("another dashboard holds the lock"),
                    "B failed for another reason: {e:?}"
                );
                assert!(
                    killed.elapsed() < bound,
                    "B still refused {:?} after A was killed (lock TTL {ttl} s): {}",
                    killed.elapsed(),
                    e.log
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    let took = killed.elapsed();
    println!(
        "dashboard B took over {took:?} after A was SIGKILLed (lock TTL {ttl} s, {attempts} attempts)"
    );
    assert!(took < bound, "{took:?}");
    let health = http_get(b.addr, "/api/health");
    assert_eq!(health.status, 200, "{}", health.body);
    let v = json(&health.body);
    assert_eq!(v["ok"], true, "{}", health.body);
    assert_eq!(v["product"], "takeover", "{}", health.body);
    // And it can write.
    let created = b.call("POST", "/api/groups", r#"{"id": 1}"#);
    assert_eq!(created.status, 201, "{}", created.body);
}

#[test]
fn bad_api_input_changes_nothing_in_etcd() {
    let etcd = Etcd::start();
    let r1 = RedisServer::start();
    let dashboard = Dashboard::start(&etcd.url(), "bad", free_addr(), TOKEN, 10)
        .unwrap_or_else(|e| panic!("dashboard did not start: {e:?}"));
    for (path, body) in [
        ("/api/groups", r#"{"id": 1}"#.to_string()),
        (
            "/api/groups/1/servers",
            format!(r#"{{"addr": "{}"}}"#, r1.addr()),
        ),
        (
            "/api/slots/assign",
            r#"{"range": "0-511", "group": 1}"#.into(),
        ),
    ] {
        let r = dashboard.call("POST", path, &body);
        assert!(r.status < 300, "{path}: {} {}", r.status, r.body);
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = rt
        .block_on(tessera_topology::connect(&etcd.url()))
        .expect("connect to etcd");
    let snapshot = || {
        let (kvs, revision) = rt.block_on(store.get_prefix("/tessera/")).unwrap();
        let kvs: Vec<(String, Vec<u8>)> = kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
        (revision, kvs)
    };
    let before = snapshot();

    let auth = format!("Bearer {TOKEN}");
    let with_token = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let json_only = [("Content-Type", "application/json")];
    let wrong_token = [
        ("Authorization", "Bearer not-the-token"),
        ("Content-Type", "application/json"),
    ];
    #[allow(clippy::type_complexity)]
    let cases: &[(&str, &str, &str, &[(&str, &str)], &str, u16)] = &[
        (
            "bad range (reversed)",
            "POST",
            "/api/slots/assign",
            &with_token,
            r#"{"range": "600-500", "group": 1}"#,
            400,
        ),
        (
            "bad range (past 1023)",
            "POST",
            "/api/slots/assign",
            &with_token,
            r#"{"range": "0-1024", "group": 1}"#,
            400,
        ),
        (
            "bad range (text)",
            "POST",
            "/api/slots/assign",
            &with_token,
            r#"{"range": "all", "group": 1}"#,
            400,
        ),
        (
            "missing group",
            "POST",
            "/api/slots/assign",
            &with_token,
            r#"{"range": "0-10"}"#,
            400,
        ),
        (
            "unknown group",
            "POST",
            "/api/slots/assign",
            &with_token,
            r#"{"range": "512-1023", "group": 7}"#,
            404,
        ),
        (
            "bad JSON",
            "POST",
            "/api/slots/assign",
            &with_token,
            r#"{"range": "0-10", "group": "#,
            400,
        ),
        (
            "unknown field",
            "POST",
            "/api/groups",
            &with_token,
            r#"{"id": 3, "name": "x"}"#,
            400,
        ),
        (
            "group id 0",
            "POST",
            "/api/groups",
            &with_token,
            r#"{"id": 0}"#,
            400,
        ),
        (
            "group exists",
            "POST",
            "/api/groups",
            &with_token,
            r#"{"id": 1}"#,
            409,
        ),
        (
            "bad server address",
            "POST",
            "/api/groups/1/servers",
            &with_token,
            r#"{"addr": "nohost"}"#,
            400,
        ),
        (
            "server in use",
            "POST",
            "/api/groups/1/servers",
            &with_token,
            &format!(r#"{{"addr": "{}"}}"#, r1.addr()),
            409,
        ),
        (
            "group owns slots",
            "DELETE",
            "/api/groups/1",
            &with_token,
            "",
            409,
        ),
        (
            "missing token",
            "POST",
            "/api/groups",
            &json_only,
            r#"{"id": 2}"#,
            401,
        ),
        (
            "wrong token",
            "POST",
            "/api/slots/assign",
            &wrong_token,
            r#"{"range": "512-1023", "group": 1}"#,
            401,
        ),
        (
            "missing token, bad body",
            "POST",
            "/api/slots/assign",
            &json_only,
            "garbage",
            401,
        ),
    ];
    let mut wrong = Vec::new();
    for (what, method, path, headers, body, want) in cases {
        let r = http_request(dashboard.addr, method, path, headers, body);
        let error = serde_json::from_str::<serde_json::Value>(&r.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_default();
        println!("{what}: {method} {path} -> {} {}", r.status, r.body);
        if r.status != *want || error.is_empty() {
            wrong.push(format!(
                "{what}: {method} {path} {body:?}: want {want} with {{\"error\": ...}}, got {} {}",
                r.status, r.body
            ));
        }
        let after = snapshot();
        assert_eq!(
            after, before,
            "{what}: the store changed (revision {} -> {})",
            before.0, after.0
        );
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
