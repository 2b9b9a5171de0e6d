//! Slot-table churn benchmark: GET at `-P 16` through a coordinator-mode proxy, with and
//! without the slot table being re-published 10 times a second, side by side in one run.
//!
//! Run: `cargo bench --bench republish`. Needs etcd (Debian `etcd-server`) and
//! redis-benchmark (`redis-tools`). `TESSERA_BENCH_REQUESTS` sets the requests of a run
//! (default 1000000), `TESSERA_BENCH_REPS` the repetitions (default 5; medians compared).
//! Target: with re-publishing within 5% of without.

use tessera_testkit as harness;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use harness::etcd::Etcd;
use harness::{Proxy, RedisServer, free_addr, wait_until};
use tessera_topology::model::{Group, Product, SlotState, Slots};
use tessera_topology::{Store, keys};

const PRODUCT: &str = "bench";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The table: slots split in half between the two groups. Every put is a new revision the
/// proxy rebuilds and swaps in, even though the routing stays the same.
fn slots() -> Vec<u8> {
    let slots = (0..1024)
        .map(|s| SlotState::Owned {
            group: if s < 512 { 1 } else { 2 },
        })
        .collect();
    serde_json::to_vec(&Slots { slots }).expect("slots serialize")
}

fn seed(rt: &tokio::runtime::Runtime, store: &Arc<dyn Store>, redis: &[&RedisServer]) {
    rt.block_on(async {
        let product = Product {
            name: PRODUCT.into(),
            ..Default::default()
        };
        store
            .put(
                &keys::product(PRODUCT),
                serde_json::to_vec(&product).unwrap(),
                None,
            )
            .await
            .unwrap();
        for (i, r) in redis.iter().enumerate() {
            let g = Group {
                id: i as u32 + 1,
                servers: vec![r.addr()],
            };
            store
                .put(
                    &keys::group(PRODUCT, g.id),
                    serde_json::to_vec(&g).unwrap(),
                    None,
                )
                .await
                .unwrap();
        }
        store
            .put(&keys::slots(PRODUCT), slots(), None)
            .await
            .unwrap();
    });
}

/// One redis-benchmark GET run at -P 16; ops/s.
fn get_run(port: u16, requests: u64) -> f64 {
    let out = Command::new("timeout")
        .args([
            "120",
            "redis-benchmark",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .args(["-c", "50", "-P", "16", "-r", "100000", "-t", "get", "--csv"])
        .args(["-n", &requests.to_string()])
        .output()
        .expect("run redis-benchmark (apt-get install redis-tools)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter(|l| l.starts_with("\"GET\""))
        .find_map(|l| l.split(',').nth(1)?.trim_matches('"').parse().ok())
        .unwrap_or_else(|| panic!("no GET figure in redis-benchmark output:\n{text}"))
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        // `cargo test --benches` and `--list` must not run the benchmark.
        return;
    }
    let requests = env_u64("TESSERA_BENCH_REQUESTS", 1_000_000);
    let reps = env_u64("TESSERA_BENCH_REPS", 5).max(1);
    let etcd = Etcd::start();
    let (r1, r2) = (RedisServer::start(), RedisServer::start());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let store = rt
        .block_on(tessera_topology::connect(&etcd.url()))
        .expect("connect etcd");
    seed(&rt, &store, &[&r1, &r2]);
    let config = format!(
        "[proxy]\nlisten = \"{}\"\nadmin_listen = \"{}\"\n[coordinator]\nurl = \"{}\"\nproduct = \"{PRODUCT}\"\n",
        free_addr(),
        free_addr(),
        etcd.url()
    );
    let proxy = Proxy::start_raw(&config).unwrap_or_else(|e| panic!("proxy: {e}"));
    let port = proxy.addr.port();
    get_run(port, requests / 10); // warm-up

    let republishing = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (store, on, n, stop) = (
            store.clone(),
            republishing.clone(),
            published.clone(),
            stop.clone(),
        );
        rt.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                if on.load(Ordering::Relaxed)
                    && store
                        .put(&keys::slots(PRODUCT), slots(), None)
                        .await
                        .is_ok()
                {
                    n.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    let (mut quiet, mut churn) = (Vec::new(), Vec::new());
    let started = Instant::now();
    for rep in 0..reps {
        quiet.push(get_run(port, requests));
        republishing.store(true, Ordering::Relaxed);
        let before = published.load(Ordering::Relaxed);
        let t = Instant::now();
        churn.push(get_run(port, requests));
        let rate = (published.load(Ordering::Relaxed) - before) as f64 / t.elapsed().as_secs_f64();
        republishing.store(false, Ordering::Relaxed);
        println!(
            "rep {}: quiet {:.0} ops/s, re-publishing ({rate:.1}/s) {:.0} ops/s",
            rep + 1,
            quiet[rep as usize],
            churn[rep as usize]
        );
    }
    stop.store(true, Ordering::Relaxed);
    let _ = rt.block_on(publisher);
    let revision = rt
        .block_on(store.get(&keys::slots(PRODUCT)))
        .unwrap()
        .map_or(0, |kv| kv.mod_revision);
    assert!(
        wait_until(Duration::from_secs(5), || {
            let v: serde_json::Value =
                serde_json::from_str(&proxy.http_get("/api/model").body).unwrap_or_default();
            v["revision"].as_i64().unwrap_or(0) >= revision
        }),
        "the proxy did not apply the last table"
    );
    let (q, c) = (median(quiet), median(churn));
    println!(
        "\nGET -P16, 50 clients, {requests} requests x {reps} (medians, {:.0} s):\n\
         | slot table | ops/s | ratio |\n|---|---|---|\n| static | {q:.0} | 1.00 |\n| re-published 10/s | {c:.0} | {:.3} |\n\
         target: ratio >= 0.95; {} table revisions published and applied",
        started.elapsed().as_secs_f64(),
        c / q,
        published.load(Ordering::Relaxed)
    );
}
