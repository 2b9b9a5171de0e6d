//! The proxy in coordinator mode against a real etcd: it follows slot re-assignments live,
//! its registration lives and dies with its lease, and it refuses commands (with a clear
//! error) while etcd is gone or a topology document does not decode, recovering without a
//! restart.

use tessera_testkit as harness;

use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::etcd::Etcd;
use harness::{Proxy, RedisServer, Resp, free_addr, wait_until};
use tessera_topology::model::{Group, Product, SlotState, Slots};
use tessera_topology::{Store, keys};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn store(rt: &tokio::runtime::Runtime, etcd: &Etcd) -> Arc<dyn Store> {
    rt.block_on(tessera_topology::connect(&etcd.url()))
        .expect("connect to etcd")
}

/// Writes a product with `groups` and every slot owned by `owner`; returns the revision.
fn seed(
    rt: &tokio::runtime::Runtime,
    store: &Arc<dyn Store>,
    product: &str,
    groups: &[&RedisServer],
    owner: u32,
) -> i64 {
    rt.block_on(async {
        let p = Product {
            name: product.to_string(),
            ..Default::default()
        };
        store
            .put(
                &keys::product(product),
                serde_json::to_vec(&p).unwrap(),
                None,
            )
            .await
            .unwrap();
        for (i, r) in groups.iter().enumerate() {
            let g = Group {
                id: i as u32 + 1,
                servers: vec![r.addr()],
            };
            store
                .put(
                    &keys::group(product, g.id),
                    serde_json::to_vec(&g).unwrap(),
                    None,
                )
                .await
                .unwrap();
        }
        assign_all(store, product, owner).await
    })
}

async fn assign_all(store: &Arc<dyn Store>, product: &str, group: u32) -> i64 {
    let slots = Slots {
        slots: vec![SlotState::Owned { group }; 1024],
    };
    store
        .put(
            &keys::slots(product),
            serde_json::to_vec(&slots).unwrap(),
            None,
        )
        .await
        .unwrap()
}

fn coordinator_proxy(etcd: &Etcd, product: &str, ttl: u64) -> Proxy {
    proxy_at(&etcd.url(), product, ttl)
}

/// A proxy following `product` in the store at `url`.
fn proxy_at(url: &str, product: &str, ttl: u64) -> Proxy {
    let listen = free_addr();
    let admin = free_addr();
    let config = format!(
        "[proxy]\nlisten = \"{listen}\"\nadmin_listen = \"{admin}\"\nworkers = 1\n\n\
         [coordinator]\nurl = \"{url}\"\nproduct = \"{product}\"\nlease_ttl_secs = {ttl}\n"
    );
    Proxy::start_raw(&config).unwrap_or_else(|e| panic!("proxy did not start: {e}"))
}

fn applied_revision(proxy: &Proxy) -> i64 {
    let body = proxy.http_get("/api/model").body;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["revision"].as_i64().unwrap()
}

fn get(redis: &RedisServer, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(&mut redis.conn()).unwrap()
}

#[test]
fn follows_slot_reassignment_live() {
    let etcd = Etcd::start();
    let (r1, r2) = (RedisServer::start(), RedisServer::start());
    let rt = runtime();
    let store = store(&rt, &etcd);
    seed(&rt, &store, "live", &[&r1, &r2], 1);
    let proxy = coordinator_proxy(&etcd, "live", 10);
    let mut c = proxy.raw();
    assert_eq!(c.cmd(&["SET", "k1", "a"]), Resp::ok());
    assert_eq!(get(&r1, "k1").as_deref(), Some("a"));

    let mut times = Vec::new();
    for round in 0..5 {
        let group = if round % 2 == 0 { 2 } else { 1 };
        let start = Instant::now();
        let revision = rt.block_on(assign_all(&store, "live", group));
        let applied = wait_until(Duration::from_secs(5), || {
            applied_revision(&proxy) >= revision
        });
        let took = start.elapsed();
        assert!(
            applied,
            "proxy did not apply revision {revision}; log:\n{}",
            proxy.log()
        );
        times.push(took);
        let key = format!("k-round-{round}");
        assert_eq!(c.cmd(&["SET", &key, "v"]), Resp::ok());
        let owner = if group == 2 { &r2 } else { &r1 };
        assert_eq!(
            get(owner, &key).as_deref(),
            Some("v"),
            "round {round}: key not on group {group}"
        );
    }
    times.sort();
    println!(
        "slot table re-publication: put -> proxy serving it: median {:?}, max {:?} (goal <= 100 ms)",
        times[times.len() / 2],
        times[times.len() - 1]
    );
    // The goal is 100 ms; the bound here only catches a proxy that polls instead of watching.
    assert!(times[times.len() / 2] < Duration::from_secs(1), "{times:?}");

    // The registration carries the applied revision (the dashboard's barrier).
    let regs = rt
        .block_on(store.get_prefix(&keys::proxies_prefix("live")))
        .unwrap()
        .0;
    assert_eq!(regs.len(), 1);
    let info: serde_json::Value = serde_json::from_slice(&regs[0].value).unwrap();
    assert_eq!(info["addr"], proxy.addr.to_string());
    assert!(wait_until(Duration::from_secs(5), || {
        let regs = rt
            .block_on(store.get_prefix(&keys::proxies_prefix("live")))
            .unwrap()
            .0;
        let info: serde_json::Value = serde_json::from_slice(&regs[0].value).unwrap();
        info["applied_revision"].as_i64() == Some(applied_revision(&proxy))
    }));
}

/// etcd closes a connection whose client pings more often than its keep-alive minimum (5 s),
/// watches and all: a proxy left idle must keep its one watch and its registration. A 30 s
/// lease is renewed every 10 s, so nothing else crosses the connection while it idles.
#[test]
fn an_idle_proxy_keeps_its_topology_watch() {
    let etcd = Etcd::start();
    let r1 = RedisServer::start();
    let rt = runtime();
    let store = store(&rt, &etcd);
    seed(&rt, &store, "idle", &[&r1], 1);
    let proxy = coordinator_proxy(&etcd, "idle", 30);
    let mut c = proxy.raw();
    assert_eq!(c.cmd(&["SET", "k", "v"]), Resp::ok());

    std::thread::sleep(Duration::from_secs(12));
    let log = proxy.log();
    assert!(
        !log.contains("watch ended") && !log.contains("cannot"),
        "the idle proxy lost its connection to etcd; log:\n{log}"
    );
    assert_eq!(c.cmd(&["GET", "k"]), Resp::bulk(b"v"));
    let start = Instant::now();
    let revision = rt.block_on(assign_all(&store, "idle", 1));
    assert!(
        wait_until(Duration::from_secs(2), || applied_revision(&proxy)
            >= revision),
        "the proxy did not follow a change after idling; log:\n{}",
        proxy.log()
    );
    eprintln!("applied a change {:?} after 12 s idle", start.elapsed());
}

#[test]
fn killed_proxy_registration_disappears_within_its_ttl() {
    let etcd = Etcd::start();
    let r1 = RedisServer::start();
    let rt = runtime();
    let store = store(&rt, &etcd);
    seed(&rt, &store, "reg", &[&r1], 1);
    let mut proxy = coordinator_proxy(&etcd, "reg", 2);
    let registered = || {
        rt.block_on(store.get_prefix(&keys::proxies_prefix("reg")))
            .unwrap()
            .0
            .len()
    };
    // The listening socket is bound before the registration is written: wait for it.
    assert!(
        wait_until(Duration::from_secs(5), || registered() == 1),
        "the proxy never registered; log:\n{}",
        proxy.log()
    );
    proxy.kill();
    let killed = Instant::now();
    assert!(
        wait_until(Duration::from_secs(6), || registered() == 0),
        "registration still there 6 s after the kill"
    );
    println!(
        "registration gone {:?} after SIGKILL (TTL 2 s)",
        killed.elapsed()
    );
    assert!(killed.elapsed() < Duration::from_secs(4));
}

#[test]
fn etcd_outage_refuses_after_the_lease_rule_and_recovers() {
    let mut etcd = Etcd::start();
    let r1 = RedisServer::start();
    let rt = runtime();
    let store = store(&rt, &etcd);
    seed(&rt, &store, "outage", &[&r1], 1);
    drop(store);
    let proxy = coordinator_proxy(&etcd, "outage", 3);
    let mut c = proxy.raw();
    assert_eq!(c.cmd(&["SET", "k", "v"]), Resp::ok());

    etcd.stop();
    let stopped = Instant::now();
    // Still serving on the last table right after etcd went away ...
    assert_eq!(c.cmd(&["GET", "k"]), Resp::bulk(b"v"));
    // ... and refusing, with the reason, before the 3 s lease can expire in the store.
    let mut refusal = None;
    wait_until(Duration::from_secs(6), || match c.cmd(&["GET", "k"]) {
        Resp::Error(e) => {
            refusal = Some(e);
            true
        }
        _ => false,
    });
    let refused_after = stopped.elapsed();
    let refusal = refusal.unwrap_or_else(|| {
        panic!(
            "proxy kept serving without its lease; log:\n{}",
            proxy.log()
        )
    });
    assert!(
        refusal.contains("lost its registration with the coordinator"),
        "{refusal}"
    );
    assert!(
        refused_after < Duration::from_secs(3),
        "refused only after {refused_after:?}"
    );
    // Local commands still work, so clients and health checks can tell what is going on.
    assert_eq!(c.cmd(&["PING"]), Resp::simple("PONG"));

    etcd.restart();
    let back = Instant::now();
    assert!(
        wait_until(Duration::from_secs(15), || c.cmd(&["GET", "k"])
            == Resp::bulk(b"v")),
        "proxy did not recover after etcd came back; log:\n{}",
        proxy.log()
    );
    println!(
        "refused {refused_after:?} after etcd stopped; serving again {:?} after it restarted",
        back.elapsed()
    );
}

#[test]
fn unreachable_coordinator_fails_the_start_with_a_clear_error() {
    let nowhere = free_addr();
    let config = format!(
        "[proxy]\nlisten = \"{}\"\nadmin_listen = \"{}\"\n[coordinator]\nurl = \"etcd://{nowhere}\"\nproduct = \"x\"\n",
        free_addr(),
        free_addr()
    );
    let err = Proxy::start_raw(&config)
        .err()
        .expect("proxy must not start without its coordinator");
    assert!(
        err.log.contains(&format!("etcd://{nowhere}")),
        "{}",
        err.log
    );
    assert!(err.status.is_some_and(|s| !s.success()), "{err}");
}

/// The proxy's registration document, once there is exactly one.
fn registration(
    rt: &tokio::runtime::Runtime,
    store: &Arc<dyn Store>,
    product: &str,
) -> serde_json::Value {
    let regs = rt
        .block_on(store.get_prefix(&keys::proxies_prefix(product)))
        .unwrap()
        .0;
    match regs.as_slice() {
        [one] => serde_json::from_slice(&one.value).unwrap(),
        _ => serde_json::Value::Null,
    }
}

/// Sends `args` until the reply is an error, bounded; the error.
fn until_refused(c: &mut harness::RawConn, args: &[&str], bound: Duration) -> Option<String> {
    let mut refusal = None;
    wait_until(bound, || match c.cmd(args) {
        Resp::Error(e) => {
            refusal = Some(e);
            true
        }
        _ => false,
    });
    refusal
}

/// Waits until the registration says the topology is applied again at `revision` or later,
/// without a `topology_error`.
fn until_acknowledged(
    rt: &tokio::runtime::Runtime,
    store: &Arc<dyn Store>,
    product: &str,
    revision: i64,
) -> bool {
    wait_until(Duration::from_secs(10), || {
        let info = registration(rt, store, product);
        info["applied_revision"].as_i64() >= Some(revision) && info.get("topology_error").is_none()
    })
}

/// A document that does not decode stops the proxy: it refuses non-local commands naming the
/// key and revision, does not acknowledge that revision, says why in its registration, and
/// serves again (acknowledging) once a complete revision decodes — for the slot table and
/// for the plugin chain alike.
#[test]
fn undecodable_document_is_refused_until_a_good_revision() {
    let etcd = Etcd::start();
    let rt = runtime();
    let store = store(&rt, &etcd);
    refused_until_a_good_revision(&rt, &store, &etcd.url());
}

/// The same with the embedded file store.
#[test]
fn undecodable_document_is_refused_until_a_good_revision_file_store() {
    let dir = harness::TempDir::new("coordinator-bad");
    let url = format!("file://{}", dir.path().display());
    let rt = runtime();
    let store = rt
        .block_on(tessera_topology::connect(&url))
        .expect("open the file store");
    refused_until_a_good_revision(&rt, &store, &url);
}

fn refused_until_a_good_revision(rt: &tokio::runtime::Runtime, store: &Arc<dyn Store>, url: &str) {
    let (r1, r2) = (RedisServer::start(), RedisServer::start());
    seed(rt, store, "bad", &[&r1, &r2], 1);
    let proxy = proxy_at(url, "bad", 10);
    let mut c = proxy.raw();
    assert_eq!(c.cmd(&["SET", "k", "v"]), Resp::ok());

    for key in [keys::slots("bad"), keys::plugins("bad")] {
        let bad = rt
            .block_on(store.put(&key, b"{\"slots\": 12".to_vec(), None))
            .unwrap();
        let refusal =
            until_refused(&mut c, &["GET", "k"], Duration::from_secs(10)).unwrap_or_else(|| {
                panic!(
                    "proxy kept serving after a bad document at {key}; log:\n{}",
                    proxy.log()
                )
            });
        assert!(
            refusal.contains(&key) && refusal.contains(&format!("revision {bad}")),
            "{refusal}"
        );
        // Local commands still answer, so a client can tell what is going on.
        assert_eq!(c.cmd(&["PING"]), Resp::simple("PONG"));
        // The registration says why, and keeps the last revision applied in full.
        let mut info = serde_json::Value::Null;
        assert!(
            wait_until(Duration::from_secs(10), || {
                info = registration(rt, store, "bad");
                info["topology_error"].is_string()
            }),
            "no topology_error in the registration: {info}; log:\n{}",
            proxy.log()
        );
        let error = info["topology_error"].as_str().unwrap();
        assert!(error.contains(&key), "{error}");
        assert!(info["applied_revision"].as_i64().unwrap() < bad, "{info}");
        assert!(applied_revision(&proxy) < bad);

        // A good document: applied, acknowledged, served by.
        let good = if key == keys::slots("bad") {
            rt.block_on(assign_all(store, "bad", 2))
        } else {
            rt.block_on(store.put(&key, b"{\"chain\": []}".to_vec(), None))
                .unwrap()
        };
        assert!(
            until_acknowledged(rt, store, "bad", good),
            "the proxy did not acknowledge revision {good}: {}; log:\n{}",
            registration(rt, store, "bad"),
            proxy.log()
        );
        assert_eq!(c.cmd(&["SET", &format!("after-{key}"), "w"]), Resp::ok());
        assert_eq!(get(&r2, &format!("after-{key}")).as_deref(), Some("w"));
    }
}

/// One transaction with a good slot table and a group that does not decode: the proxy does
/// not publish the slot table of that revision on its own, it refuses until the group is fixed.
#[test]
fn bad_document_in_the_same_transaction_as_a_good_one() {
    let etcd = Etcd::start();
    let (r1, r2) = (RedisServer::start(), RedisServer::start());
    let rt = runtime();
    let store = store(&rt, &etcd);
    let before = seed(&rt, &store, "txn", &[&r1, &r2], 1);
    let proxy = coordinator_proxy(&etcd, "txn", 10);
    let mut c = proxy.raw();
    assert_eq!(c.cmd(&["SET", "k", "v"]), Resp::ok());

    let slots = Slots {
        slots: vec![SlotState::Owned { group: 2 }; 1024],
    };
    let put = |key: String, value: Vec<u8>| tessera_topology::store::Op::Put {
        key,
        value,
        lease: None,
    };
    let bad = rt
        .block_on(store.txn(
            vec![],
            vec![
                put(keys::slots("txn"), serde_json::to_vec(&slots).unwrap()),
                put(keys::group("txn", 2), b"{\"id\": \"two\"}".to_vec()),
            ],
        ))
        .unwrap()
        .unwrap();
    let refusal = until_refused(&mut c, &["GET", "k"], Duration::from_secs(10))
        .unwrap_or_else(|| panic!("proxy kept serving; log:\n{}", proxy.log()));
    assert!(
        refusal.contains(&keys::group("txn", 2)) && refusal.contains(&format!("revision {bad}")),
        "{refusal}"
    );
    // Neither published nor acknowledged: the table is still the one before the transaction.
    assert!(applied_revision(&proxy) >= before && applied_revision(&proxy) < bad);
    assert!(
        registration(&rt, &store, "txn")["applied_revision"]
            .as_i64()
            .unwrap()
            < bad
    );

    let group = Group {
        id: 2,
        servers: vec![r2.addr()],
    };
    let good = rt
        .block_on(store.put(
            &keys::group("txn", 2),
            serde_json::to_vec(&group).unwrap(),
            None,
        ))
        .unwrap();
    assert!(
        until_acknowledged(&rt, &store, "txn", good),
        "not acknowledged: {}; log:\n{}",
        registration(&rt, &store, "txn"),
        proxy.log()
    );
    assert_eq!(c.cmd(&["SET", "k2", "w"]), Resp::ok());
    assert_eq!(get(&r2, "k2").as_deref(), Some("w"));
}

/// A proxy never serves on a partial topology: a document that does not decode at start
/// fails the start, naming the key and its revision.
#[test]
fn undecodable_document_at_start_fails_the_start() {
    let etcd = Etcd::start();
    let r1 = RedisServer::start();
    let rt = runtime();
    let store = store(&rt, &etcd);
    seed(&rt, &store, "start", &[&r1], 1);
    let bad = rt
        .block_on(store.put(&keys::slots("start"), b"[]".to_vec(), None))
        .unwrap();
    let listen = free_addr();
    let config = format!(
        "[proxy]\nlisten = \"{listen}\"\nadmin_listen = \"{}\"\n\n\
         [coordinator]\nurl = \"{}\"\nproduct = \"start\"\n",
        free_addr(),
        etcd.url()
    );
    let err = Proxy::start_raw(&config)
        .err()
        .expect("proxy must not start on a topology it cannot decode");
    assert!(
        err.log.contains(&keys::slots("start")) && err.log.contains(&format!("revision {bad}")),
        "{}",
        err.log
    );
    assert!(err.status.is_some_and(|s| !s.success()), "{err}");
}
