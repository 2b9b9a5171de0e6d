//! `GET /api/plugins/stats` and `tessera admin plugins stats`: against a real redis-server,
//! two coordinator-mode proxies running the command-filter plugin from the store, and a
//! dashboard, the counters the dashboard sums are each proxy's own (`GET /api/stats`), they
//! add up over the proxies, and proxies that cannot be asked are listed, not dropped, without
//! holding the answer past its bound.

use tessera_testkit as harness;

mod in_process;

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use harness::{Proxy, RedisServer, TempDir, free_addr, http_request};
use serde_json::{Value, json};

const TOKEN: &str = "plugin-stats-token";
const PRODUCT: &str = "pstats";
/// How long counters may take to show a command (they are added once per batch).
const COUNT_BOUND: Duration = Duration::from_secs(10);
/// The counters the dashboard sums, as the proxy names them.
const COUNTERS: [&str; 9] = [
    "calls",
    "invocations",
    "remembered",
    "continues",
    "rewrites",
    "replies",
    "rejects",
    "failures",
    "nanos",
];

fn api_ok(addr: SocketAddr, method: &str, path: &str, body: &str) -> Value {
    let auth = format!("Bearer {TOKEN}");
    let r = http_request(
        addr,
        method,
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body,
    );
    assert!(r.status < 300, "{method} {path}: {} {}", r.status, r.body);
    serde_json::from_str(&r.body).unwrap()
}

fn get_json(addr: SocketAddr, path: &str) -> Value {
    let r = harness::http_get(addr, path);
    assert_eq!(r.status, 200, "GET {path}: {}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

/// The proxy's own counters of its first plugin (`GET /api/stats`), which shows the link's
/// config masked.
fn proxy_counters(proxy: &Proxy) -> Value {
    let stats = get_json(proxy.admin, "/api/stats");
    let plugin = &stats["plugins"][0];
    assert_eq!(
        (&plugin["name"], &plugin["config"]),
        (&json!("filter"), &json!("********")),
        "{stats}"
    );
    counters_of(plugin)
}

/// The summed counters of a plugin's entry, by name.
fn counters_of(entry: &Value) -> Value {
    let counters = COUNTERS.map(|c| (c.to_string(), entry[c].clone()));
    Value::Object(counters.into_iter().collect())
}

/// `sets` SETs, then `denied` FLUSHALLs, each refused by the filter with its message.
fn send(proxy: &Proxy, sets: usize, denied: usize) {
    let mut conn = proxy.conn();
    for i in 0..sets {
        redis::cmd("SET")
            .arg(format!("k:{i}"))
            .arg(i)
            .query::<()>(&mut conn)
            .expect("the filter lets SET through");
    }
    for _ in 0..denied {
        let e = redis::cmd("FLUSHALL")
            .query::<()>(&mut conn)
            .expect_err("the filter refuses FLUSHALL");
        assert!(e.to_string().contains("denied here"), "{e}");
    }
}

/// Waits (bounded) until the proxy's own counters show `rejects` rejects.
fn wait_rejects(proxy: &Proxy, rejects: u64) -> Value {
    let deadline = Instant::now() + COUNT_BOUND;
    loop {
        let c = proxy_counters(proxy);
        if c["rejects"] == rejects {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "proxy {} counts {c} after {COUNT_BOUND:?}, not {rejects} rejects",
            proxy.addr
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn registration(token: &str, admin: Option<String>) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "token": token, "addr": format!("127.0.0.1:{}", free_addr().port()),
        "admin_addr": admin, "version": "0.1.0", "pid": 1,
        "start_time": 1_700_000_000, "applied_revision": 0, "ops_per_sec": 0.0,
    }))
    .unwrap()
}

#[test]
fn plugin_counters_are_each_proxys_own_summed_over_the_proxies_running_the_chain() {
    let redis = RedisServer::start();
    let store_dir = TempDir::new("plugin-stats-store");
    let coordinator = format!("file://{}", store_dir.path().display());
    let (rt, dashboard) = in_process::dashboard(&coordinator, PRODUCT, TOKEN);
    let d = dashboard.addr();
    api_ok(d, "POST", "/api/groups", "{\"id\": 1}");
    let server = json!({ "addr": redis.addr() }).to_string();
    api_ok(d, "POST", "/api/groups/1/servers", &server);
    api_ok(
        d,
        "POST",
        "/api/slots/assign",
        "{\"range\": \"0-1023\", \"group\": 1}",
    );
    // The chain, set with the CLI from a file naming the built module.
    let dir = TempDir::new("plugin-stats-chain");
    let chain_file = dir.path().join("chain.json");
    let chain = json!({"chain": [{
        "name": "filter",
        "path": harness::built("command_filter"),
        "config": {"deny": ["flushall"], "message": "NOPERM denied here"},
    }]});
    std::fs::write(&chain_file, chain.to_string()).unwrap();
    let bound = Duration::from_secs(30);
    let (ok, out, err) = harness::dashboard::admin(
        d,
        TOKEN,
        &["plugins", "set", chain_file.to_str().unwrap()],
        bound,
    );
    assert!(ok, "plugins set: {out}{err}");

    // Two proxies load the chain before they register; different traffic through each.
    let p1 = Proxy::start_coordinator(&coordinator, PRODUCT, 10).expect("proxy 1 starts");
    let p2 = Proxy::start_coordinator(&coordinator, PRODUCT, 10).expect("proxy 2 starts");
    send(&p1, 20, 3);
    send(&p2, 7, 2);
    let mut keys = redis.conn();
    let dbsize: u64 = redis::cmd("DBSIZE").query(&mut keys).unwrap();
    assert_eq!(dbsize, 20, "no FLUSHALL reached Redis");
    let own = [wait_rejects(&p1, 3), wait_rejects(&p2, 2)];

    // Each proxy's row is its own /api/stats; the sums add them up.
    let stats = get_json(d, "/api/plugins/stats");
    assert_eq!(stats["counted"], 2, "{stats}");
    let rows = stats["proxies"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{stats}");
    for (proxy, own) in [&p1, &p2].iter().zip(&own) {
        let row = rows
            .iter()
            .find(|r| r["addr"] == proxy.addr.to_string())
            .unwrap_or_else(|| panic!("no row for proxy {}: {stats}", proxy.addr));
        assert_eq!(row["state"], "counted", "{row}");
        assert_eq!(row["chain_hash"], stats["chain_hash"], "{row}");
        assert_eq!(row["admin_addr"], proxy.admin.to_string());
        assert_eq!(&counters_of(&row["plugins"][0]), own, "{row}");
    }
    let sum = &stats["plugins"][0];
    let module = &api_ok(d, "GET", "/api/plugins", "")["chain"][0]["module"];
    assert_eq!((&sum["name"], &sum["module"]), (&json!("filter"), module));
    for c in COUNTERS {
        let want = own[0][c].as_u64().unwrap() + own[1][c].as_u64().unwrap();
        assert_eq!(sum[c], want, "{c}: {stats}");
    }
    assert_eq!(sum["rejects"], 5);
    assert!(sum["continues"].as_u64().unwrap() >= 27, "{sum}");
    assert!(sum["calls"].as_u64().unwrap() > 0, "{sum}");
    let per_call = sum["nanos"].as_f64().unwrap() / sum["calls"].as_f64().unwrap();
    assert!((sum["nanos_per_call"].as_f64().unwrap() - per_call).abs() < 1e-6);

    // A proxy whose admin address accepts but never answers, and one without an admin
    // address: listed with why, not summed, and the answer comes within the bound.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let store = rt
        .block_on(tessera_topology::connect(&coordinator))
        .unwrap();
    for (token, admin) in [
        ("silent", Some(silent.local_addr().unwrap().to_string())),
        ("headless", None),
    ] {
        let key = tessera_topology::keys::proxy(PRODUCT, token);
        rt.block_on(store.put(&key, registration(token, admin), None))
            .unwrap();
    }
    let started = Instant::now();
    let stats = get_json(d, "/api/plugins/stats");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "the call took {took:?}");
    assert_eq!(stats["counted"], 2, "{stats}");
    assert_eq!(stats["plugins"][0]["rejects"], 5, "{stats}");
    let rows = stats["proxies"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "{stats}");
    let silent_row = rows
        .iter()
        .find(|r| r["admin_addr"] == silent.local_addr().unwrap().to_string())
        .unwrap();
    assert_eq!(
        (&silent_row["state"], &silent_row["error"]),
        (&json!("no_answer"), &json!("no answer within 800 ms")),
        "{silent_row}"
    );
    let headless = rows.iter().find(|r| r["admin_addr"].is_null()).unwrap();
    assert_eq!(
        (&headless["state"], &headless["error"]),
        (&json!("no_answer"), &json!("it has no admin address")),
        "{headless}"
    );

    // The CLI prints the same sums, and the API's JSON with --json.
    let (ok, out, err) = harness::dashboard::admin(d, TOKEN, &["plugins", "stats"], bound);
    assert!(ok, "plugins stats: {out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].ends_with("summed over 2 of 4 proxies"), "{out}");
    let sum = &stats["plugins"][0];
    let cells: Vec<&str> = lines[2].split_whitespace().collect();
    let want: Vec<String> = ["calls", "continues", "rewrites", "replies", "rejects"]
        .iter()
        .map(|c| sum[*c].to_string())
        .collect();
    assert_eq!(cells[0], "filter", "{out}");
    assert_eq!(cells[1..6], want, "{out}");
    let headless_addr = headless["addr"].as_str().unwrap();
    assert!(
        out.contains(&format!(
            "proxy {headless_addr} is not counted: it has no admin address"
        )),
        "{out}"
    );
    let (ok, out, err) =
        harness::dashboard::admin(d, TOKEN, &["--json", "plugins", "stats"], bound);
    assert!(ok, "plugins stats --json: {out}{err}");
    let printed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(printed["counted"], 2);
    assert_eq!(printed["plugins"][0]["rejects"], 5);

    // A new chain (another config): each proxy swaps it in and counts from zero.
    let mut chain = chain;
    chain["chain"][0]["config"] = json!({"deny": ["flushdb"], "message": "NOPERM denied here"});
    std::fs::write(&chain_file, chain.to_string()).unwrap();
    let (ok, out, err) = harness::dashboard::admin(
        d,
        TOKEN,
        &["plugins", "set", chain_file.to_str().unwrap()],
        bound,
    );
    assert!(ok, "plugins set: {out}{err}");
    let deadline = Instant::now() + COUNT_BOUND;
    let stats = loop {
        let stats = get_json(d, "/api/plugins/stats");
        if stats["counted"] == 2 {
            break stats;
        }
        assert!(
            Instant::now() < deadline,
            "the proxies do not run the new chain: {stats}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(stats["plugins"][0]["rejects"], 0, "{stats}");
    drop((p1, p2, silent));
    rt.block_on(dashboard.shutdown()).unwrap();
}
