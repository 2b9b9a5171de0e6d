//! The cluster as separate processes against a real etcd: `tessera dashboard`, `tessera admin`
//! and coordinator-mode `tessera proxy`. A slot re-assignment through the REST API reaches a
//! running proxy (timed), a killed dashboard's lock expires and a new dashboard takes over,
//! and bad API input changes nothing in the store.

use tessera_testkit as harness;

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use harness::etcd::Etcd;
use harness::{
    ChildGuard, HttpResponse, Proxy, RedisServer, Resp, START_BOUND, TempDir, file_tail, free_addr,
    http_get, http_request, wait_until,
};

const TOKEN: &str = "cluster-test-token";

/// A `tessera dashboard` process, SIGKILLed on drop (its log printed if the test panics).
struct Dashboard {
    child: ChildGuard,
    addr: SocketAddr,
    log_path: PathBuf,
    _dir: TempDir,
}

/// A dashboard that exited (or never became ready) instead of serving.
#[derive(Debug)]
struct DashboardExited {
    status: Option<ExitStatus>,
    log: String,
}

impl Dashboard {
    /// Runs `tessera dashboard` on `listen` and waits (bounded) until it says it serves, or
    /// exits.
    fn start(
        coordinator: &str,
        product: &str,
        listen: SocketAddr,
        lock_ttl: u64,
    ) -> Result<Dashboard, DashboardExited> {
        let dir = TempDir::new("dashboard");
        let log_path = dir.path().join("dashboard.log");
        let log = File::create(&log_path).expect("create dashboard log");
        let child = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .arg("dashboard")
            .args(["--coordinator", coordinator, "--product", product])
            .args(["--listen", &listen.to_string()])
            .args(["--admin-token", TOKEN])
            .args(["--lock-ttl", &lock_ttl.to_string()])
            .env_remove("TESSERA_ADMIN_TOKEN")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("run tessera dashboard");
        let mut dashboard = Dashboard {
            child: ChildGuard::new(child),
            addr: listen,
            log_path,
            _dir: dir,
        };
        let mut exited = None;
        let ready = wait_until(START_BOUND, || {
            if let Some(status) = dashboard.child.try_wait() {
                exited = Some(status);
                return true;
            }
            dashboard.log().contains("dashboard for product")
        });
        if exited.is_some() || !ready {
            dashboard.child.kill();
            return Err(DashboardExited {
                status: exited,
                log: dashboard.log(),
            });
        }
        Ok(dashboard)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A call with the admin token and a JSON body.
    fn call(&self, method: &str, path: &str, body: &str) -> HttpResponse {
        let auth = format!("Bearer {TOKEN}");
        http_request(
            self.addr,
            method,
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body,
        )
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- dashboard {} log (tail) ----\n{}\n----",
                self.addr,
                file_tail(&self.log_path, 4000)
            );
        }
        self.child.kill();
    }
}

/// `tessera admin --dashboard ADDR --token T ARGS...`, bounded: (success, stdout, stderr).
fn admin(dashboard: SocketAddr, args: &[&str]) -> (bool, String, String) {
    let dir = TempDir::new("admin");
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("admin")
        .args(["--dashboard", &dashboard.to_string(), "--token", TOKEN])
        .args(args)
        .env_remove("TESSERA_DASHBOARD")
        .env_remove("TESSERA_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .expect("run tessera admin");
    let mut child = ChildGuard::new(child);
    let status = child
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("tessera admin {args:?} did not exit within 10 s"));
    let read = |p: &PathBuf| std::fs::read_to_string(p).unwrap_or_default();
    (status.success(), read(&out_path), read(&err_path))
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
    let dashboard = Dashboard::start(&etcd.url(), "reassign", free_addr(), 10)
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
    let mut a = Dashboard::start(&etcd.url(), "takeover", free_addr(), ttl)
        .unwrap_or_else(|e| panic!("dashboard A did not start: {e:?}"));
    let b_addr = free_addr();
    let refused = Dashboard::start(&etcd.url(), "takeover", b_addr, ttl)
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

    a.child.kill();
    let killed = Instant::now();
    let bound = Duration::from_secs(ttl + 3);
    let mut attempts = 0;
    let b = loop {
        attempts += 1;
        match Dashboard::start(&etcd.url(), "takeover", b_addr, ttl) {
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
    let dashboard = Dashboard::start(&etcd.url(), "bad", free_addr(), 10)
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
