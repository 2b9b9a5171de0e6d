//! The admin HTTP API: /api/model, /api/stats, /metrics.

use tessera_testkit as harness;

use std::time::Duration;

use harness::*;
use serde_json::Value as Json;

fn get_json(proxy: &Proxy, path: &str) -> Json {
    let resp = proxy.http_get(path);
    assert_eq!(resp.status, 200, "GET {path}: {resp:?}");
    serde_json::from_str(&resp.body)
        .unwrap_or_else(|e| panic!("GET {path}: body is not JSON ({e}): {}", resp.body))
}

fn num(v: &Json, path: &str) -> f64 {
    v.pointer(path)
        .and_then(Json::as_f64)
        .unwrap_or_else(|| panic!("no number at {path} in {v}"))
}

fn command_entry<'a>(stats: &'a Json, name: &str) -> Option<&'a Json> {
    stats["commands"]
        .as_array()
        .unwrap_or_else(|| panic!("stats.commands is not an array: {stats}"))
        .iter()
        .find(|c| c["name"].as_str() == Some(name))
}

#[test]
fn model_shows_config_and_coalesced_slot_ranges() {
    let r: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let proxy = Proxy::start_with(
        &[&[&r[0]], &[&r[1]], &[&r[2]]],
        &[
            ("proxy.max_pipeline", "1234"),
            ("proxy.databases", "8"),
            ("backend.timeout_ms", "777"),
        ],
    );
    let model = get_json(&proxy, "/api/model");
    let config = &model["config"];
    assert_eq!(
        config["proxy"]["listen"].as_str(),
        Some(proxy.addr.to_string().as_str()),
        "{model}"
    );
    assert_eq!(
        config["proxy"]["admin_listen"].as_str(),
        Some(proxy.admin.to_string().as_str())
    );
    assert_eq!(config["proxy"]["max_pipeline"].as_u64(), Some(1234));
    assert_eq!(config["proxy"]["databases"].as_u64(), Some(8));
    assert_eq!(config["proxy"]["max_clients"].as_u64(), Some(10_000));
    assert_eq!(config["backend"]["timeout_ms"].as_u64(), Some(777));
    assert_eq!(config["backend"]["connections"].as_u64(), Some(1));
    // Groups are listed as in the TOML (`[[group]]`).
    let groups = config["group"]
        .as_array()
        .unwrap_or_else(|| panic!("config.group is not an array: {config}"));
    assert_eq!(groups.len(), 3);
    for (i, g) in groups.iter().enumerate() {
        assert_eq!(g["id"].as_u64(), Some(i as u64 + 1));
        assert_eq!(g["servers"], serde_json::json!([r[i].addr()]));
    }

    let want: Vec<Json> = slot_ranges(3)
        .into_iter()
        .map(|(a, b, g)| serde_json::json!({"range": format!("{a}-{b}"), "state": "owned", "group": g}))
        .collect();
    assert_eq!(model["slots"], Json::Array(want), "{model}");
}

#[test]
fn model_coalesces_adjacent_config_ranges_of_one_group() {
    let r1 = RedisServer::start();
    let r2 = RedisServer::start();
    let proxy = Proxy::builder(&[&[&r1], &[&r2]])
        .slots(&[
            ("0-99", 1),
            ("100-199", 1),
            ("200", 2),
            ("201-1000", 2),
            ("1001-1023", 1),
        ])
        .start();
    let model = get_json(&proxy, "/api/model");
    assert_eq!(
        model["slots"],
        serde_json::json!([
            {"range": "0-199", "state": "owned", "group": 1},
            {"range": "200-1000", "state": "owned", "group": 2},
            {"range": "1001-1023", "state": "owned", "group": 1},
        ]),
        "{model}"
    );
    // And the proxy routes by it: a key of slot 200 lives on group 2.
    let key = find_key("s200:", |k| slot(k) == 200);
    let mut c = proxy.raw();
    assert_eq!(c.cmd(&["SET", &key, "v"]), Resp::ok());
    let direct: Option<String> = redis::cmd("GET").arg(&key).query(&mut r2.conn()).unwrap();
    assert_eq!(direct.as_deref(), Some("v"));
}

/// One slot in a state of its own is written as its number, as the dashboard writes it
/// (docs/topology.md, "Slot ranges"); the config may write it either way.
#[test]
fn model_writes_a_one_slot_range_as_its_number() {
    let r1 = RedisServer::start();
    let r2 = RedisServer::start();
    let proxy = Proxy::builder(&[&[&r1], &[&r2]])
        .slots(&[("0-699", 1), ("700-700", 2), ("701-1022", 1)])
        .start();
    let model = get_json(&proxy, "/api/model");
    assert_eq!(
        model["slots"],
        serde_json::json!([
            {"range": "0-699", "state": "owned", "group": 1},
            {"range": "700", "state": "owned", "group": 2},
            {"range": "701-1022", "state": "owned", "group": 1},
            {"range": "1023", "state": "offline"},
        ]),
        "{model}"
    );
}

#[test]
fn stats_count_commands_sessions_and_backends() {
    let r1 = RedisServer::start();
    let r2 = RedisServer::start();
    let proxy = Proxy::start(&[&[&r1], &[&r2]]);
    let before = get_json(&proxy, "/api/stats");
    assert!(before["uptime_secs"].is_number(), "{before}");
    num(&before, "/busy_poll/spells");
    num(&before, "/busy_poll/usecs");
    let ops_before = num(&before, "/ops/total");
    let errors_before = num(&before, "/ops/errors");
    let gets_before = command_entry(&before, "get")
        .map(|e| num(e, "/calls"))
        .unwrap_or(0.0);

    let mut c = proxy.raw();
    let (a, b) = (
        find_key("st:a", |k| group_of_key(k, 2) == 1),
        find_key("st:b", |k| group_of_key(k, 2) == 2),
    );
    assert_eq!(c.cmd(&["SET", &a, "1"]), Resp::ok());
    assert_eq!(c.cmd(&["SET", &b, "2"]), Resp::ok());
    for i in 0..100 {
        let k = if i % 2 == 0 { &a } else { &b };
        assert!(!c.cmd(&["GET", k]).is_error());
    }
    for _ in 0..5 {
        assert!(c.cmd(&["NOSUCHCMD"]).is_error());
    }

    let after = get_json(&proxy, "/api/stats");
    let get = command_entry(&after, "get")
        .unwrap_or_else(|| panic!("no \"get\" in stats.commands: {after}"));
    let calls = num(get, "/calls");
    assert!(calls >= 100.0, "get calls {calls}: {after}");
    assert!(calls - gets_before >= 100.0, "{gets_before} -> {calls}");
    assert!(get["usecs"].is_number(), "{get}");
    assert!(get["usecs_per_call"].is_number(), "{get}");
    assert!(get["errors"].is_number(), "{get}");
    assert!(num(get, "/usecs") > 0.0, "get usecs: {get}");
    let ops_after = num(&after, "/ops/total");
    assert!(
        ops_after - ops_before >= 102.0,
        "ops.total {ops_before} -> {ops_after}"
    );
    let errors_after = num(&after, "/ops/errors");
    assert!(
        errors_after - errors_before >= 5.0,
        "ops.errors {errors_before} -> {errors_after} after 5 error replies"
    );
    assert!(num(&after, "/sessions/alive") >= 1.0, "{after}");
    assert!(num(&after, "/sessions/total") >= 1.0, "{after}");

    // Both backends are up (they have served commands).
    let backends = after["backends"]
        .as_array()
        .unwrap_or_else(|| panic!("stats.backends not an array: {after}"));
    for s in [&r1, &r2] {
        let entry = backends
            .iter()
            .find(|e| e["addr"].as_str() == Some(s.addr().as_str()))
            .unwrap_or_else(|| panic!("backend {} not in stats: {after}", s.addr()));
        assert_eq!(entry["state"].as_str(), Some("up"), "{entry}");
    }

    // Sessions: alive drops back when the client leaves.
    let alive = num(&after, "/sessions/alive");
    drop(c);
    let mut last = Json::Null;
    let dropped = wait_until(Duration::from_secs(5), || {
        last = get_json(&proxy, "/api/stats");
        num(&last, "/sessions/alive") < alive
    });
    assert!(
        dropped,
        "sessions.alive did not drop after a client left: {last}"
    );
}

#[test]
fn stats_show_a_dead_backend_as_down() {
    let r1 = RedisServer::start();
    let mut r2 = RedisServer::start();
    let proxy = Proxy::start(&[&[&r1], &[&r2]]);
    let k2 = find_key("d:", |k| group_of_key(k, 2) == 2);
    let mut c = proxy.raw();
    assert_eq!(c.cmd(&["SET", &k2, "x"]), Resp::ok());
    r2.kill();
    let _ = c.cmd(&["GET", &k2]);
    let mut last = Json::Null;
    let down = wait_until(Duration::from_secs(5), || {
        last = get_json(&proxy, "/api/stats");
        last["backends"].as_array().is_some_and(|bs| {
            bs.iter().any(|e| {
                e["addr"].as_str() == Some(r2.addr().as_str()) && e["state"].as_str() != Some("up")
            })
        })
    });
    assert!(down, "killed backend still listed as up: {last}");
    let m = proxy.http_get("/metrics");
    assert_eq!(
        metric(
            &m.body,
            &format!("tessera_backend_up{{addr=\"{}\"}}", r2.addr())
        ),
        Some(0.0),
        "{}",
        m.body
    );
}

#[test]
fn metrics_are_prometheus_text_with_counters_that_grow() {
    let r1 = RedisServer::start();
    let r2 = RedisServer::start();
    let proxy = Proxy::start(&[&[&r1], &[&r2]]);
    let mut c = proxy.raw();
    assert_eq!(c.cmd(&["SET", "m", "1"]), Resp::ok());
    let first = proxy.http_get("/metrics");
    assert_eq!(first.status, 200);
    let ops_before = metric(&first.body, "tessera_ops_total")
        .unwrap_or_else(|| panic!("no tessera_ops_total sample:\n{}", first.body));
    let gets_before = metric(&first.body, "tessera_commands_total{command=\"get\"}").unwrap_or(0.0);

    for _ in 0..50 {
        assert_eq!(c.cmd(&["GET", "m"]), Resp::bulk("1"));
    }
    let _ = c.cmd(&["GET"]);
    let m = proxy.http_get("/metrics");
    assert_eq!(m.status, 200);
    if let Some(ct) = m.header("content-type") {
        assert!(ct.starts_with("text/plain"), "content-type {ct}");
    }
    let body = &m.body;
    let ops = metric(body, "tessera_ops_total").expect("tessera_ops_total");
    assert!(
        ops >= ops_before + 50.0,
        "tessera_ops_total {ops_before} -> {ops}"
    );
    let gets = metric(body, "tessera_commands_total{command=\"get\"}")
        .unwrap_or_else(|| panic!("no tessera_commands_total{{command=\"get\"}}:\n{body}"));
    assert!(
        gets >= gets_before + 50.0,
        "get total {gets_before} -> {gets}"
    );
    assert!(
        body.lines()
            .any(|l| l.starts_with("tessera_command_errors_total{command=")),
        "no tessera_command_errors_total:\n{body}"
    );
    for name in [
        "tessera_busy_poll_spells_total",
        "tessera_busy_poll_seconds_total",
    ] {
        let v = metric(body, name).unwrap_or_else(|| panic!("no {name}:\n{body}"));
        assert!(v >= 0.0, "{name} {v}");
    }
    let alive = metric(body, "tessera_sessions_alive").expect("tessera_sessions_alive");
    assert!(alive >= 1.0, "sessions alive {alive}");
    for s in [&r1, &r2] {
        let series = format!("tessera_backend_up{{addr=\"{}\"}}", s.addr());
        assert!(
            body.lines().any(|l| l.starts_with(&series)),
            "no {series}:\n{body}"
        );
    }
    let up1 = metric(
        body,
        &format!("tessera_backend_up{{addr=\"{}\"}}", r1.addr()),
    );
    assert_eq!(up1, Some(1.0), "backend 1 served commands: up");
    let buckets: Vec<&str> = body
        .lines()
        .filter(|l| {
            l.starts_with("tessera_command_duration_seconds_bucket{") && l.contains("le=\"")
        })
        .collect();
    assert!(buckets.len() >= 2, "no histogram buckets:\n{body}");
    assert!(
        buckets.iter().any(|l| l.contains("le=\"+Inf\"")),
        "no +Inf bucket:\n{body}"
    );
    let has = |prefix: &str| body.lines().any(|l| l.starts_with(prefix));
    assert!(has("tessera_command_duration_seconds_sum"), "{body}");
    assert!(has("tessera_command_duration_seconds_count"), "{body}");
    // Every sample line parses as `name{labels} value`.
    for l in body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let v = l.rsplit(' ').next().unwrap();
        assert!(
            v.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&v),
            "bad sample line {l:?}"
        );
    }
    let unknown = proxy.http_get("/no/such/path");
    assert_eq!(unknown.status, 404);
}

#[test]
fn unassigned_slots_are_listed_and_refused() {
    let r1 = RedisServer::start();
    let proxy = Proxy::builder(&[&[&r1]]).slots(&[("0-511", 1)]).start();
    let model = get_json(&proxy, "/api/model");
    let slots = model["slots"]
        .as_array()
        .unwrap_or_else(|| panic!("model.slots: {model}"));
    assert_eq!(
        slots[0],
        serde_json::json!({"range": "0-511", "state": "owned", "group": 1}),
        "{model}"
    );
    assert_eq!(slots.len(), 2, "{model}");
    assert_eq!(slots[1]["range"].as_str(), Some("512-1023"), "{model}");
    assert_ne!(slots[1]["state"].as_str(), Some("owned"), "{model}");
    // A key of an unassigned slot gets an error, at once; the owned ones work.
    let orphan = find_key("o:", |k| slot(k) >= 512);
    let owned = find_key("o:", |k| slot(k) < 512);
    let mut c = proxy.raw();
    let t = std::time::Instant::now();
    let reply = c.cmd(&["GET", &orphan]);
    assert!(
        reply.is_error(),
        "GET of a key in an unassigned slot: {reply:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(c.cmd(&["SET", &owned, "v"]), Resp::ok());
}

#[test]
fn model_masks_plugin_configs() {
    let r = RedisServer::start();
    let module = module("plugins/wat/deny-secret.wat");
    let secret = r#"{"users": {"alice": {"password": "sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"}}}"#;
    let other = r#"{"deny": ["xyzzy-secret"]}"#;
    let link = |name: &str, config: &str| {
        format!(
            "[[plugin]]\nname = {}\npath = {}\nconfig = '''{config}'''\ntimeout_ms = 500\n",
            toml_str(name),
            toml_str(&module.display().to_string())
        )
    };
    let proxy = Proxy::builder(&[&[&r]])
        .extra_toml(&(link("first", secret) + &link("second", other)))
        .start();
    let resp = proxy.http_get("/api/model");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(!resp.body.contains("2bb80d537b"), "{}", resp.body);
    assert!(!resp.body.contains("xyzzy-secret"), "{}", resp.body);
    let model: Json = serde_json::from_str(&resp.body).unwrap();
    let links = model["config"]["plugin"]
        .as_array()
        .unwrap_or_else(|| panic!("{model}"));
    let names: Vec<&str> = links.iter().filter_map(|l| l["name"].as_str()).collect();
    assert_eq!(names, ["first", "second"]);
    for (l, config) in links.iter().zip([secret, other]) {
        assert_eq!(l["config"], "********", "{l}");
        assert_eq!(l["config_bytes"].as_u64(), Some(config.len() as u64), "{l}");
        assert_eq!(l["timeout_ms"].as_u64(), Some(500), "{l}");
        assert_eq!(l["fail"], "closed", "{l}");
    }
    // The fingerprints tell the two configs apart.
    let sha = |l: &Json| l["config_sha256"].as_str().unwrap_or_default().to_string();
    assert_eq!(sha(&links[0]).len(), 64, "{model}");
    assert_ne!(sha(&links[0]), sha(&links[1]));
}

#[test]
fn admin_api_refuses_a_host_that_is_not_its_address() {
    let r = RedisServer::start();
    let proxy = Proxy::start(&[&[&r]]);
    let port = proxy.admin.port();
    let (status, body) = get_with_host(
        proxy.admin,
        "/api/stats",
        Some(&format!("evil.example:{port}")),
    );
    assert_eq!(status, 421, "{body}");
    assert!(
        body.contains("evil.example") && body.contains(&proxy.admin.to_string()),
        "{body}"
    );
    let (status, _) = get_with_host(proxy.admin, "/metrics", Some("evil.example"));
    assert_eq!(status, 421);
    // Its own address, the loopback names of it, and HTTP/1.0 without a Host.
    for host in [
        Some(proxy.admin.to_string()),
        Some(format!("localhost:{port}")),
        Some(format!("127.0.0.1:{port}")),
        None,
    ] {
        let (status, body) = get_with_host(proxy.admin, "/api/stats", host.as_deref());
        assert_eq!(status, 200, "{host:?}: {body}");
    }
    // Another port is another server.
    let (status, _) = get_with_host(proxy.admin, "/api/stats", Some("127.0.0.1:1"));
    assert_eq!(status, 421);
}
