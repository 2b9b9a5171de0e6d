//! The dashboard against a real embedded store (file://, a temp dir): started in-process on
//! a free port, called over HTTP; the store is read directly to check what changed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tessera_dashboard::admin::AdminError;
use tessera_dashboard::{DashboardError, DashboardHandle, start_with_store};
use tessera_topology::keys;
use tessera_topology::model::ProxyInfo;

mod common;

use common::{Body, Env, TOKEN, admin_cli, args, dashboard, env};
use tessera_testkit as harness;

/// [`common::http`] with an optional JSON body.
async fn http(
    d: &DashboardHandle,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let body = body.map_or(Body::None, Body::Json);
    common::http(d, method, path, token, body).await
}

async fn admin(d: &DashboardHandle, path: &str, body: Value) -> Value {
    let (status, v) = http(d, "POST", path, Some(TOKEN), Some(body)).await;
    assert!(status == 201 || status == 200, "{path}: {status} {v}");
    v
}

async fn store_revision(env: &Env, product: &str) -> i64 {
    env.store
        .get_prefix(&keys::product_prefix(product))
        .await
        .unwrap()
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_servers_and_slots_round_trip() {
    let env = env().await;
    let d = dashboard(&env, "shop").await;

    let (status, health) = http(&d, "GET", "/api/health", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(health["ok"], true);
    assert_eq!(health["product"], "shop");
    assert_eq!(health["store"], env.store.endpoint());

    // A new product starts with its document and all slots offline.
    let (_, slots) = http(&d, "GET", "/api/slots", None, None).await;
    assert_eq!(
        slots["slots"],
        json!([{"range": "0-1023", "state": "offline"}])
    );
    assert!(
        env.store
            .get(&keys::product("shop"))
            .await
            .unwrap()
            .is_some()
    );

    for id in [1, 2] {
        let v = admin(&d, "/api/groups", json!({ "id": id })).await;
        assert_eq!(v["group"], json!({ "id": id, "servers": [] }));
    }
    admin(
        &d,
        "/api/groups/1/servers",
        json!({"addr": "127.0.0.1:7001"}),
    )
    .await;
    admin(
        &d,
        "/api/groups/1/servers",
        json!({"addr": "127.0.0.1:7002"}),
    )
    .await;
    admin(&d, "/api/groups/2/servers", json!({"addr": "redis-b:6379"})).await;
    admin(
        &d,
        "/api/slots/assign",
        json!({"range": "0-511", "group": 1}),
    )
    .await;
    let v = admin(
        &d,
        "/api/slots/assign",
        json!({"range": "512-1023", "group": 2}),
    )
    .await;
    assert_eq!(v["changed"], 512);
    let again = admin(
        &d,
        "/api/slots/assign",
        json!({"range": "512-1023", "group": 2}),
    )
    .await;
    assert_eq!(again["changed"], 0, "a no-op writes nothing");
    assert_eq!(again["revision"], v["revision"]);
    admin(
        &d,
        "/api/slots/assign",
        json!({"range": "1000", "group": null}),
    )
    .await;

    let (status, topo) = http(&d, "GET", "/api/topology", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(topo["product"]["name"], "shop");
    assert_eq!(
        topo["slots"],
        json!([
            {"range": "0-511", "state": "owned", "group": 1},
            {"range": "512-999", "state": "owned", "group": 2},
            {"range": "1000", "state": "offline"},
            {"range": "1001-1023", "state": "owned", "group": 2},
        ])
    );
    assert_eq!(
        topo["groups"],
        json!([
            {"id": 1, "servers": ["127.0.0.1:7001", "127.0.0.1:7002"], "slots": 512},
            {"id": 2, "servers": ["redis-b:6379"], "slots": 511},
        ])
    );
    let (_, full) = http(&d, "GET", "/api/slots?full=1", None, None).await;
    let full = full["slots"].as_array().unwrap();
    assert_eq!(full.len(), 1024);
    assert_eq!(full[1000], json!({"state": "offline"}));
    assert_eq!(full[3], json!({"state": "owned", "group": 1}));

    // The store holds what the API said.
    let kv = env.store.get(&keys::slots("shop")).await.unwrap().unwrap();
    assert_eq!(kv.mod_revision, topo["revision"].as_i64().unwrap());

    // Passwords: stored, never shown.
    let (status, v) = http(
        &d,
        "PUT",
        "/api/product",
        Some(TOKEN),
        Some(json!({"backend_password": "s3cret"})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["product"]["backend_password"], "********");
    assert_eq!(v["product"]["session_password"], "");
    let kv = env
        .store
        .get(&keys::product("shop"))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&kv.value).contains("s3cret"));
    let (_, p) = http(&d, "GET", "/api/product", None, None).await;
    assert_eq!(p["product"]["backend_password"], "********");

    // Remove a replica, then take group 1 offline and remove it.
    let (status, v) = http(
        &d,
        "DELETE",
        "/api/groups/1/servers/127.0.0.1:7002",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["group"]["servers"], json!(["127.0.0.1:7001"]));
    admin(
        &d,
        "/api/slots/assign",
        json!({"range": "0-511", "group": 0}),
    )
    .await;
    let (status, v) = http(&d, "DELETE", "/api/groups/1", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{v}");
    let (_, groups) = http(&d, "GET", "/api/groups", None, None).await;
    assert_eq!(groups["groups"].as_array().unwrap().len(), 1);
    // The removal moved the topology revision (the slots document is rewritten with it).
    assert_eq!(groups["revision"], v["revision"]);

    d.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_are_listed_with_behind() {
    let env = env().await;
    let d = dashboard(&env, "p").await;
    let (_, v) = http(&d, "GET", "/api/proxies", None, None).await;
    assert_eq!(v["proxies"], json!([]));
    let revision = v["revision"].as_i64().unwrap();
    for (token, applied) in [("a", revision), ("b", revision - 1)] {
        let info = ProxyInfo {
            token: token.to_string(),
            addr: format!("127.0.0.1:190{applied}"),
            admin_addr: Some("127.0.0.1:11080".to_string()),
            version: "0.1.0".to_string(),
            pid: 42,
            start_time: 1_700_000_000,
            applied_revision: applied,
            ops_per_sec: 12.5,
            sessions: None,
            errors: None,
            plugin_error: None,
            topology_error: None,
            holding: None,
        };
        let value = serde_json::to_vec(&info).unwrap();
        env.store
            .put(&keys::proxy("p", token), value, None)
            .await
            .unwrap();
    }
    let (status, v) = http(&d, "GET", "/api/proxies", None, None).await;
    assert_eq!(status, 200);
    let proxies = v["proxies"].as_array().unwrap();
    assert_eq!(proxies.len(), 2);
    let by_token = |t: &str| proxies.iter().find(|p| p["token"] == t).unwrap().clone();
    assert_eq!(by_token("a")["behind"], false);
    assert_eq!(by_token("b")["behind"], true);
    assert_eq!(by_token("a")["ops_per_sec"], 12.5);
    assert_eq!(by_token("a")["admin_addr"], "127.0.0.1:11080");
    d.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_4xx_and_changes_nothing() {
    let env = env().await;
    let d = dashboard(&env, "bad").await;
    admin(&d, "/api/groups", json!({"id": 1})).await;
    admin(&d, "/api/groups", json!({"id": 2})).await;
    admin(&d, "/api/groups", json!({"id": 3})).await;
    admin(
        &d,
        "/api/groups/1/servers",
        json!({"addr": "10.0.0.1:6379"}),
    )
    .await;
    admin(
        &d,
        "/api/groups/2/servers",
        json!({"addr": "10.0.0.2:6379"}),
    )
    .await;
    admin(
        &d,
        "/api/groups/2/servers",
        json!({"addr": "10.0.0.3:6379"}),
    )
    .await;
    admin(
        &d,
        "/api/slots/assign",
        json!({"range": "0-1023", "group": 1}),
    )
    .await;

    let cases: Vec<(&str, &str, Option<Value>, u16, &str)> = vec![
        (
            "POST",
            "/api/groups",
            Some(json!({"id": 0})),
            400,
            "bad group id 0",
        ),
        (
            "POST",
            "/api/groups",
            Some(json!({"id": 10000})),
            400,
            "bad group id",
        ),
        (
            "POST",
            "/api/groups",
            Some(json!({"id": "x"})),
            400,
            "bad JSON body",
        ),
        (
            "POST",
            "/api/groups",
            Some(json!({"id": -1})),
            400,
            "bad JSON body",
        ),
        (
            "POST",
            "/api/groups",
            Some(json!({})),
            400,
            "missing field `id`",
        ),
        ("POST", "/api/groups", None, 400, "needs a JSON body"),
        (
            "POST",
            "/api/groups",
            Some(json!({"id": 1})),
            409,
            "group 1 exists already",
        ),
        (
            "DELETE",
            "/api/groups/9",
            None,
            404,
            "group 9 does not exist",
        ),
        ("DELETE", "/api/groups/x", None, 400, "bad group id"),
        (
            "DELETE",
            "/api/groups/1",
            None,
            409,
            "still owns slots 0-1023",
        ),
        (
            "POST",
            "/api/groups/3/servers",
            Some(json!({"addr": "nohost"})),
            400,
            "bad server address",
        ),
        (
            "POST",
            "/api/groups/3/servers",
            Some(json!({"addr": "h:99999"})),
            400,
            "bad server address",
        ),
        (
            "POST",
            "/api/groups/3/servers",
            Some(json!({"addr": "10.0.0.2:6379"})),
            409,
            "already in group 2",
        ),
        (
            "POST",
            "/api/groups/9/servers",
            Some(json!({"addr": "h:1"})),
            404,
            "group 9 does not exist",
        ),
        (
            "DELETE",
            "/api/groups/1/servers/10.0.0.1:6379",
            None,
            409,
            "last server of group 1",
        ),
        (
            "DELETE",
            "/api/groups/2/servers/10.0.0.2:6379",
            None,
            409,
            "master of group 2",
        ),
        (
            "DELETE",
            "/api/groups/2/servers/10.9.9.9:1",
            None,
            404,
            "not in group 2",
        ),
        (
            "POST",
            "/api/slots/assign",
            Some(json!({"range": "5-4", "group": 1})),
            400,
            "bad slot range",
        ),
        (
            "POST",
            "/api/slots/assign",
            Some(json!({"range": "0-1024", "group": 1})),
            400,
            "past the last slot",
        ),
        (
            "POST",
            "/api/slots/assign",
            Some(json!({"range": "a", "group": 1})),
            400,
            "bad slot range",
        ),
        (
            "POST",
            "/api/slots/assign",
            Some(json!({"range": "0-1"})),
            400,
            "missing field `group`",
        ),
        (
            "POST",
            "/api/slots/assign",
            Some(json!({"range": "0-1", "group": 9})),
            404,
            "group 9 does not exist",
        ),
        (
            "POST",
            "/api/slots/assign",
            Some(json!({"range": "0-1", "group": 3})),
            409,
            "group 3 has no server",
        ),
        (
            "PUT",
            "/api/product",
            Some(json!({"name": "other"})),
            400,
            "unknown field `name`",
        ),
        (
            "PUT",
            "/api/product",
            Some(json!({})),
            400,
            "nothing to change",
        ),
        ("GET", "/api/nope", None, 404, "no route GET /api/nope"),
        ("DELETE", "/api/health", None, 405, "not allowed"),
    ];
    for (method, path, body, status, message) in cases {
        let before = store_revision(&env, "bad").await;
        let (got, v) = http(&d, method, path, Some(TOKEN), body.clone()).await;
        let after = store_revision(&env, "bad").await;
        assert_eq!(got, status, "{method} {path} {body:?}: {v}");
        let error = v["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(message),
            "{method} {path}: {error:?} lacks {message:?}"
        );
        assert_eq!(before, after, "{method} {path} changed the store");
    }
    d.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutations_need_the_token() {
    let env = env().await;
    let d = dashboard(&env, "auth").await;
    let before = store_revision(&env, "auth").await;
    for token in [None, Some("wrong"), Some("")] {
        for (method, path, body) in [
            ("POST", "/api/groups", Some(json!({"id": 1}))),
            (
                "PUT",
                "/api/product",
                Some(json!({"session_password": "x"})),
            ),
            (
                "POST",
                "/api/slots/assign",
                Some(json!({"range": "0", "group": null})),
            ),
            ("DELETE", "/api/groups/1", None),
        ] {
            let (status, v) = http(&d, method, path, token, body).await;
            assert_eq!(status, 401, "{method} {path} with {token:?}: {v}");
            assert!(v["error"].as_str().unwrap().contains("admin token"));
        }
    }
    assert_eq!(before, store_revision(&env, "auth").await);
    let (status, _) = http(&d, "GET", "/api/topology", None, None).await;
    assert_eq!(status, 200, "reads need no token");
    d.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_dashboard_refuses_until_the_lock_expires() {
    let env = env().await;
    let first = start_with_store(args(&env, "lk", 1), env.store.clone())
        .await
        .unwrap();
    let first_addr = first.addr().to_string();

    let err = start_with_store(args(&env, "lk", 1), env.store.clone())
        .await
        .err()
        .expect("a second dashboard must not start");
    assert!(matches!(err, DashboardError::Locked { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.starts_with("another dashboard holds the lock for product \"lk\": "),
        "{message}"
    );
    assert!(message.contains(&first_addr), "{message}");
    assert!(
        message.contains(&format!("pid {}", std::process::id())),
        "{message}"
    );
    assert!(
        message.contains("expires by itself 1 s after that dashboard dies"),
        "{message}"
    );

    // The first one "crashes": it stops renewing without releasing its lease.
    drop(first);
    let started = Instant::now();
    let second = loop {
        match start_with_store(args(&env, "lk", 1), env.store.clone()).await {
            Ok(d) => break d,
            Err(DashboardError::Locked { .. }) if started.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no takeover after {:?}: {e}", started.elapsed()),
        }
    };
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The new holder writes (its lock outlives several renewal periods).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    admin(&second, "/api/groups", json!({"id": 1})).await;

    // A clean shutdown releases the lock at once.
    second.shutdown().await.unwrap();
    let third = start_with_store(args(&env, "lk", 1), env.store.clone())
        .await
        .unwrap();
    // Another product is independent.
    let other = start_with_store(args(&env, "other", 1), env.store.clone())
        .await
        .unwrap();
    third.shutdown().await.unwrap();
    other.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lock_refuses_writes() {
    let env = env().await;
    let d = dashboard(&env, "lost").await;
    admin(&d, "/api/groups", json!({"id": 1})).await;
    // Someone removes the lock key (as an expired lease would): the fence stops the write.
    let key = keys::dashboard_lock("lost");
    let kv = env.store.get(&key).await.unwrap().unwrap();
    use tessera_topology::store::{Compare, Op};
    env.store
        .txn(
            vec![Compare::ModRevision(key.clone(), kv.mod_revision)],
            vec![Op::Delete(key)],
        )
        .await
        .unwrap()
        .unwrap();
    let before = store_revision(&env, "lost").await;
    let (status, v) = http(
        &d,
        "POST",
        "/api/groups",
        Some(TOKEN),
        Some(json!({"id": 2})),
    )
    .await;
    assert_eq!(status, 503, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("lost its lock"),
        "{v}"
    );
    assert_eq!(before, store_revision(&env, "lost").await);
    // The handle says so too (`tessera dashboard` exits on it).
    let reason = tokio::time::timeout(Duration::from_secs(1), d.lock_lost()).await;
    assert!(reason.unwrap().contains("changed in the store"));
    let (status, _) = http(&d, "GET", "/api/health", None, None).await;
    assert_eq!(status, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_lost_in_the_store_stops_writes() {
    let env = env().await;
    let d = start_with_store(args(&env, "lease", 3), env.store.clone())
        .await
        .unwrap();
    env.store
        .revoke_lease(d.lock_lease().unwrap())
        .await
        .unwrap();
    // The next renewal (every TTL/3 = 1 s) finds the lease gone.
    let reason = tokio::time::timeout(Duration::from_secs(3), d.lock_lost()).await;
    assert!(reason.unwrap().contains("expired"));
    let (status, v) = http(
        &d,
        "POST",
        "/api/groups",
        Some(TOKEN),
        Some(json!({"id": 1})),
    )
    .await;
    assert_eq!(status, 503, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("lost its lock"),
        "{v}"
    );
    // Its lock key went with the lease: a new dashboard can start.
    drop(d);
    dashboard(&env, "lease").await.shutdown().await.unwrap();
}

/// `tessera admin` with this dashboard and the token, and `words` split on spaces.
fn cli(d: &DashboardHandle, words: &str) -> Result<String, AdminError> {
    let addr = d.addr().to_string();
    let mut argv = vec!["--dashboard", &addr, "--token", TOKEN];
    argv.extend(words.split_whitespace());
    admin_cli(&argv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_cli_against_a_running_dashboard() {
    let env = env().await;
    let d = Arc::new(dashboard(&env, "cli").await);
    let run = |words: &'static str| {
        let d = d.clone();
        async move {
            tokio::task::spawn_blocking(move || cli(&d, words))
                .await
                .unwrap()
        }
    };

    assert!(
        run("health")
            .await
            .unwrap()
            .starts_with("ok: product cli, store file://")
    );
    assert!(
        run("group add 1")
            .await
            .unwrap()
            .starts_with("group 1 added (revision ")
    );
    run("group add 2").await.unwrap();
    let out = run("group add-server 1 127.0.0.1:7001").await.unwrap();
    assert!(
        out.starts_with("server 127.0.0.1:7001 added to group 1 as master"),
        "{out}"
    );
    let out = run("group add-server 1 127.0.0.1:7002").await.unwrap();
    assert!(out.contains("as replica"), "{out}");
    run("group add-server 2 127.0.0.1:7003").await.unwrap();
    let out = run("slots assign 0-511 1").await.unwrap();
    assert!(out.starts_with("512 slots changed (revision "), "{out}");
    run("slots assign 512-1023 2").await.unwrap();
    run("slots assign 1023 offline").await.unwrap();

    let out = run("group list").await.unwrap();
    assert_eq!(
        out,
        "GROUP  SLOTS  MASTER          REPLICAS\n\
         1      512    127.0.0.1:7001  127.0.0.1:7002\n\
         2      511    127.0.0.1:7003  -\n"
    );
    let out = run("slots").await.unwrap();
    assert_eq!(
        out,
        "RANGE     STATE    GROUP\n\
         0-511     owned    1\n\
         512-1022  owned    2\n\
         1023      offline  -\n"
    );
    let out = run("slots --full").await.unwrap();
    assert_eq!(out.lines().count(), 1025);
    assert!(
        out.lines().nth(1024).unwrap().starts_with("1023  offline"),
        "{out}"
    );
    let out = run("topology").await.unwrap();
    assert!(out.contains("cli"), "{out}");
    assert!(out.contains("no proxies registered"), "{out}");
    let out = run("product set --session-password pw").await.unwrap();
    assert!(out.starts_with("product updated"), "{out}");
    let out = run("product").await.unwrap();
    assert!(out.contains("session password  ********"), "{out}");
    assert!(out.contains("backend password  (none)"), "{out}");
    assert_eq!(
        run("proxies").await.unwrap().lines().nth(1),
        Some("no proxies registered")
    );

    // --json prints the API's answer.
    let json: Value = serde_json::from_str(&run("group list --json").await.unwrap()).unwrap();
    assert_eq!(json["groups"][0]["servers"][1], "127.0.0.1:7002");

    // Errors carry the API's message.
    match run("group remove 1").await {
        Err(AdminError::Api {
            status: 409,
            message,
        }) => {
            assert!(message.contains("still owns slots 0-511"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    match run("slots assign 0-1 x").await {
        Err(AdminError::Usage(m)) => assert!(m.contains("bad GROUP"), "{m}"),
        other => panic!("{other:?}"),
    }
    let out = run("group remove-server 1 127.0.0.1:7002").await.unwrap();
    assert!(
        out.starts_with("server 127.0.0.1:7002 removed from group 1"),
        "{out}"
    );

    // No token: the hint says how to give one.
    let addr = d.addr().to_string();
    let no_token = tokio::task::spawn_blocking(move || {
        admin_cli(&["--dashboard", &addr, "--token", "", "group", "add", "5"])
    });
    match no_token.await.unwrap() {
        Err(AdminError::Api {
            status: 401,
            message,
        }) => {
            assert!(message.contains("TESSERA_ADMIN_TOKEN"), "{message}")
        }
        other => panic!("{other:?}"),
    }

    // A dashboard that is not there.
    let d = Arc::try_unwrap(d).ok().unwrap();
    let addr = d.addr().to_string();
    d.shutdown().await.unwrap();
    let gone = addr.clone();
    let err = tokio::task::spawn_blocking(move || admin_cli(&["--dashboard", &gone, "health"]));
    let err = err.await.unwrap().unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("cannot reach the dashboard at {addr}: ")),
        "{err}"
    );
    assert!(err.contains("refused"), "{err}");
}

/// [`harness::get_with_host`] to `d`, on a blocking thread (`d` runs on this runtime).
async fn get_with_host(d: &DashboardHandle, path: &str, host: Option<&str>) -> (u16, String) {
    let (addr, path, host) = (d.addr(), path.to_string(), host.map(String::from));
    tokio::task::spawn_blocking(move || harness::get_with_host(addr, &path, host.as_deref()))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_another_host_are_refused() {
    let env = env().await;
    let d = dashboard(&env, "hosts").await;
    let port = d.addr().port();
    // A page of evil.example whose name now resolves to 127.0.0.1 (DNS rebinding).
    let (status, body) = get_with_host(&d, "/api/plugins", Some("evil.example:18080")).await;
    assert_eq!(status, 421, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let message = v["error"].as_str().unwrap();
    assert!(
        message.contains("evil.example:18080") && message.contains(&d.addr().to_string()),
        "{message}"
    );
    let (status, _) = get_with_host(&d, "/api/health", Some(&format!("evil.example:{port}"))).await;
    assert_eq!(status, 421);
    for host in [
        Some(d.addr().to_string()),
        Some(format!("localhost:{port}")),
        Some(format!("LOCALHOST:{port}")),
        None,
    ] {
        let (status, body) = get_with_host(&d, "/api/health", host.as_deref()).await;
        assert_eq!(status, 200, "{host:?}: {body}");
    }
    // `tessera admin` by name works too.
    let by_name = format!("localhost:{port}");
    let out = tokio::task::spawn_blocking(move || admin_cli(&["--dashboard", &by_name, "health"]))
        .await
        .unwrap()
        .unwrap();
    assert!(out.starts_with("ok: product hosts"), "{out}");
}
