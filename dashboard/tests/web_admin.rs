//! What the web admin relies on, over HTTP against a dashboard in process: its files served
//! from the dashboard's own address only, and `GET /api/servers` asking each server itself.

use serde_json::{Value, json};
use tessera_dashboard::DashboardHandle;

#[allow(
    dead_code,
    reason = "the glue is shared by the dashboard's test binaries; this one uses part of it"
)]
mod common;

use common::{Body, TOKEN, dashboard, env};
use tessera_testkit as harness;

async fn call(d: &DashboardHandle, method: &str, path: &str, body: Value) -> Value {
    let (status, v) = common::http(d, method, path, Some(TOKEN), Body::Json(body)).await;
    assert!(
        status == 200 || status == 201,
        "{method} {path}: {status} {v}"
    );
    v
}

/// A GET of `path` (on a blocking thread: `d` runs on this runtime), with its headers.
async fn get(d: &DashboardHandle, path: &str) -> harness::HttpResponse {
    let (addr, path) = (d.addr(), path.to_string());
    tokio::task::spawn_blocking(move || harness::http_get(addr, &path))
        .await
        .unwrap()
}

/// A GET of `path` with `host` as its `Host` header: status and body.
async fn get_with_host(d: &DashboardHandle, path: &str, host: String) -> (u16, String) {
    let (addr, path) = (d.addr(), path.to_string());
    tokio::task::spawn_blocking(move || harness::get_with_host(addr, &path, Some(&host)))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_from_the_dashboards_own_address() {
    let env = env().await;
    let d = dashboard(&env, "page").await;
    let page = get(&d, "/").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(
        page.header("content-security-policy")
            .is_some_and(|csp| csp.contains("default-src 'self'")),
        "{:?}",
        page.headers
    );
    assert!(page.body.contains("<title>Tessera dashboard</title>"));
    for (path, kind) in [
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let r = get(&d, path).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.header("content-type").unwrap().starts_with(kind),
            "{path}"
        );
        assert!(!r.body.is_empty(), "{path}");
    }

    // A page of another site whose name resolves to 127.0.0.1 gets the API's 421.
    let port = d.addr().port();
    let (status, body) = get_with_host(&d, "/", format!("evil.example:{port}")).await;
    assert_eq!(status, 421, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v["error"].as_str().unwrap().contains("evil.example"), "{v}");

    // Other paths stay the API's.
    let (status, v) = common::http(&d, "GET", "/ui/other.js", None, Body::None).await;
    assert_eq!(
        (status, v),
        (404, json!({"error": "no route GET /ui/other.js"}))
    );
    let (status, _) = common::http(&d, "POST", "/", Some(TOKEN), Body::None).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_are_asked_for_role_memory_and_keys() {
    let env = env().await;
    let d = dashboard(&env, "probe").await;
    let redis = harness::RedisServer::start_with_args(&["--requirepass", "s3cret"]);
    let mut conn = redis.raw();
    assert!(!conn.cmd(&["AUTH", "s3cret"]).is_error());
    for key in ["a", "b", "c"] {
        assert!(!conn.cmd(&["SET", key, "1"]).is_error());
    }
    assert!(!conn.cmd(&["SELECT", "2"]).is_error());
    assert!(!conn.cmd(&["SET", "d", "1"]).is_error());
    let dead = harness::free_addr().to_string();
    call(&d, "POST", "/api/groups", json!({"id": 1})).await;
    for addr in [redis.addr(), dead.clone()] {
        call(&d, "POST", "/api/groups/1/servers", json!({ "addr": addr })).await;
    }
    call(
        &d,
        "PUT",
        "/api/product",
        json!({"backend_password": "s3cret"}),
    )
    .await;

    let (status, v) = common::http(&d, "GET", "/api/servers", None, Body::None).await;
    assert_eq!(status, 200, "{v}");
    let servers = v["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 2, "{v}");
    let master = &servers[0];
    assert_eq!(master["addr"], json!(redis.addr()));
    assert_eq!(master["group"], 1);
    assert_eq!(master["position"], "master");
    assert_eq!(master["reachable"], true, "{master}");
    assert_eq!(master["role"], "master");
    assert_eq!(master["keys"], 4, "keys of every database");
    assert!(master["used_memory"].as_u64().unwrap() > 0);
    assert!(master.get("error").is_none());
    let replica = &servers[1];
    assert_eq!(replica["addr"], json!(dead));
    assert_eq!(replica["position"], "replica");
    assert_eq!(replica["reachable"], false);
    assert!(
        replica["error"].as_str().unwrap().contains("refused"),
        "{replica}"
    );
    assert!(replica.get("keys").is_none() && replica.get("role").is_none());

    // A wrong backend password: the server's own refusal.
    call(
        &d,
        "PUT",
        "/api/product",
        json!({"backend_password": "wrong"}),
    )
    .await;
    let (_, v) = common::http(&d, "GET", "/api/servers", None, Body::None).await;
    let master = &v["servers"][0];
    assert_eq!(master["reachable"], false);
    let error = master["error"].as_str().unwrap();
    assert!(error.starts_with("AUTH: WRONGPASS"), "{error}");
}
