//! Hot swap of the plugin chain through the topology store: coordinator-mode proxies load a
//! new chain off the request path and swap it in without dropping a connection or a reply;
//! a chain that does not load is reported and the old chain stays.

use tessera_testkit as harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use harness::etcd::Etcd;
use harness::{Proxy, RedisServer, Resp, encode, wait_until};
use tessera_topology::model::{
    FailMode, Group, PluginSettings, PluginSpec, Plugins, Product, SlotState, Slots,
};
use tessera_topology::{Store, keys};

const PRODUCT: &str = "swap";

fn module(rel: &str) -> Vec<u8> {
    harness::module_bytes(&format!("plugins/{rel}"))
}

fn sha256_hex(bytes: &[u8]) -> String {
    // The key only has to be unique per module in these tests; the dashboard uses SHA-256.
    format!("{:016x}{:08x}", crc_like(bytes), bytes.len())
}

fn crc_like(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

struct Cluster {
    rt: tokio::runtime::Runtime,
    store: Arc<dyn Store>,
    _etcd: Etcd,
    _redis: RedisServer,
}

impl Cluster {
    fn start() -> Cluster {
        let etcd = Etcd::start();
        let redis = RedisServer::start();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = rt.block_on(tessera_topology::connect(&etcd.url())).unwrap();
        rt.block_on(async {
            let p = Product {
                name: PRODUCT.into(),
                ..Default::default()
            };
            store
                .put(
                    &keys::product(PRODUCT),
                    serde_json::to_vec(&p).unwrap(),
                    None,
                )
                .await
                .unwrap();
            let g = Group {
                id: 1,
                servers: vec![redis.addr()],
            };
            store
                .put(
                    &keys::group(PRODUCT, 1),
                    serde_json::to_vec(&g).unwrap(),
                    None,
                )
                .await
                .unwrap();
            let slots = Slots {
                slots: vec![SlotState::Owned { group: 1 }; 1024],
            };
            store
                .put(
                    &keys::slots(PRODUCT),
                    serde_json::to_vec(&slots).unwrap(),
                    None,
                )
                .await
                .unwrap();
        });
        Cluster {
            rt,
            store,
            _etcd: etcd,
            _redis: redis,
        }
    }

    fn upload(&self, bytes: Vec<u8>) -> String {
        let sha = sha256_hex(&bytes);
        self.rt
            .block_on(
                self.store
                    .put(&keys::plugin_module(PRODUCT, &sha), bytes, None),
            )
            .unwrap();
        sha
    }

    fn set_chain(&self, chain: Vec<PluginSpec>) {
        let doc = serde_json::to_vec(&Plugins { chain }).unwrap();
        self.rt
            .block_on(self.store.put(&keys::plugins(PRODUCT), doc, None))
            .unwrap();
    }

    fn registration(&self) -> serde_json::Value {
        let regs = self
            .rt
            .block_on(self.store.get_prefix(&keys::proxies_prefix(PRODUCT)))
            .unwrap()
            .0;
        serde_json::from_slice(&regs[0].value).unwrap()
    }
}

fn spec(name: &str, module: &str, config: &str) -> PluginSpec {
    PluginSpec {
        name: name.into(),
        module: module.into(),
        settings: PluginSettings {
            config: config.into(),
            fail: FailMode::Closed,
            memory_limit_mb: 16,
            timeout_ms: 50,
            remember: true,
        },
    }
}

fn filter_config(deny: &str) -> String {
    format!(
        r#"{{"deny": ["{deny}"], "allow": null, "users": {{}}, "message": "NOPERM denied by policy"}}"#
    )
}

#[test]
fn chain_swaps_under_pipelined_load_without_losing_a_reply() {
    let c = Cluster::start();
    let filter = c.upload(module(
        "target/wasm32-unknown-unknown/release/command_filter.wasm",
    ));
    let wat = c.upload(module("wat/deny-secret.wat"));
    let proxy = Proxy::start_coordinator(&c.store.endpoint(), PRODUCT, 10)
        .unwrap_or_else(|e| panic!("{e}"));

    // A client that keeps a pipeline of 200 commands in flight and checks every reply.
    let stop = Arc::new(AtomicBool::new(false));
    let checked = Arc::new(AtomicU64::new(0));
    let load = {
        let (stop, checked) = (stop.clone(), checked.clone());
        let mut conn = proxy.raw();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let mut batch = Vec::new();
                for i in 0..100 {
                    let key = format!("load:{}", i % 17);
                    let value = format!("{round}-{i}");
                    batch.extend_from_slice(&encode(&["SET", key.as_str(), value.as_str()]));
                    batch.extend_from_slice(&encode(&["GET", key.as_str()]));
                }
                conn.send(&batch);
                for i in 0..100 {
                    assert_eq!(
                        conn.read().expect("reply to SET"),
                        Resp::ok(),
                        "round {round}, SET {i}"
                    );
                    let want = format!("{round}-{i}");
                    assert_eq!(
                        conn.read().expect("reply to GET"),
                        Resp::bulk(want.as_bytes()),
                        "round {round}, GET {i}"
                    );
                    checked.fetch_add(2, Ordering::Relaxed);
                }
                round += 1;
            }
        })
    };

    let mut probe = proxy.raw();
    let swaps: Vec<(Vec<PluginSpec>, Resp)> = vec![
        (
            vec![spec("filter", &filter, &filter_config("echo"))],
            Resp::err("NOPERM denied by policy: 'echo'"),
        ),
        (vec![spec("wat", &wat, "")], Resp::bulk(b"hi")),
        (
            vec![
                spec("wat", &wat, ""),
                spec("filter", &filter, &filter_config("echo")),
            ],
            Resp::err("NOPERM denied by policy: 'echo'"),
        ),
        (vec![], Resp::bulk(b"hi")),
    ];
    for _ in 0..3 {
        for (chain, echo_reply) in &swaps {
            let before = checked.load(Ordering::Relaxed);
            c.set_chain(chain.clone());
            assert!(
                wait_until(Duration::from_secs(5), || probe.cmd(&["ECHO", "hi"])
                    == *echo_reply),
                "chain {:?} not applied; log:\n{}",
                chain.iter().map(|s| &s.name).collect::<Vec<_>>(),
                proxy.log()
            );
            // The load kept flowing through the swap.
            assert!(wait_until(Duration::from_secs(5), || checked
                .load(Ordering::Relaxed)
                > before + 400));
        }
    }
    stop.store(true, Ordering::Relaxed);
    load.join()
        .expect("every pipelined reply arrived, in order and correct");
    println!(
        "{} pipelined replies checked across 12 chain swaps",
        checked.load(Ordering::Relaxed)
    );

    // With the WAT plugin in the chain, its rule holds.
    c.set_chain(vec![spec("wat", &wat, "")]);
    assert!(wait_until(Duration::from_secs(5), || matches!(
        probe.cmd(&["GET", "secret:x"]),
        Resp::Error(e) if e.contains("secret keys are off limits")
    )));
}

#[test]
fn a_chain_that_does_not_load_is_reported_and_the_old_one_stays() {
    let c = Cluster::start();
    let filter = c.upload(module(
        "target/wasm32-unknown-unknown/release/command_filter.wasm",
    ));
    let garbage = c.upload(b"this is not wasm".to_vec());
    let proxy = Proxy::start_coordinator(&c.store.endpoint(), PRODUCT, 10)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut conn = proxy.raw();
    c.set_chain(vec![spec("filter", &filter, &filter_config("echo"))]);
    let denied = Resp::err("NOPERM denied by policy: 'echo'");
    assert!(wait_until(Duration::from_secs(5), || conn
        .cmd(&["ECHO", "x"])
        == denied));

    for bad in [
        vec![spec("bad", &garbage, "")],
        vec![spec("filter", &filter, "not json")],
        vec![spec("missing", "0000", "")],
    ] {
        let name = bad[0].name.clone();
        c.set_chain(bad);
        assert!(
            wait_until(Duration::from_secs(5), || c.registration()["plugin_error"]
                .as_str()
                .is_some_and(|e| e.contains(&format!("'{name}'")))),
            "no plugin_error for {name}: {}",
            c.registration()
        );
        // The old chain is still in force, and the connection is the same one.
        assert_eq!(conn.cmd(&["ECHO", "x"]), denied);
        assert_eq!(conn.cmd(&["SET", "k", "v"]), Resp::ok());
    }
    c.set_chain(vec![]);
    assert!(wait_until(Duration::from_secs(5), || conn
        .cmd(&["ECHO", "x"])
        == Resp::bulk(b"x")));
    // The registration catches up with the chain in force (it is written after the swap).
    assert!(
        wait_until(Duration::from_secs(5), || c.registration()["plugin_error"]
            .is_null()),
        "plugin_error stays after a good chain loaded: {}",
        c.registration()
    );
}
