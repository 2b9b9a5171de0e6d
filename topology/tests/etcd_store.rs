//! The etcd backend against a real etcd (started by the harness on free ports): the store
//! conformance checks (as for the file store), plus compaction and etcd going away and
//! coming back.

mod conformance;

use tessera_testkit as harness;

use std::sync::Arc;
use std::time::{Duration, Instant};

use conformance::{DynStore, recv, wait_until};
use harness::etcd::Etcd;
use tessera_topology::etcd::EtcdStore;
use tessera_topology::{KeyValue, Store, StoreError, WatchEvent};

async fn connect(etcd: &Etcd) -> EtcdStore {
    EtcdStore::connect(vec![etcd.endpoint()])
        .await
        .expect("connect to etcd")
}

async fn two_clients(etcd: &Etcd) -> (DynStore, DynStore) {
    (Arc::new(connect(etcd).await), Arc::new(connect(etcd).await))
}

#[tokio::test]
async fn conformance_reads_and_transactions() {
    let etcd = Etcd::start();
    let (store, other) = two_clients(&etcd).await;
    assert_eq!(store.endpoint(), etcd.url());
    conformance::revisions_and_reads(&store, &other).await;
    conformance::transactions(&store).await;
    conformance::prefix_reads_are_sorted_and_bounded(&store).await;
}

#[tokio::test]
async fn conformance_leases() {
    let etcd = Etcd::start();
    let (store, _) = two_clients(&etcd).await;
    // etcd's shortest TTL is about 2 s.
    conformance::leases_expire(&store, 2).await;
    conformance::keep_alive_keeps_the_lease(&store, 2).await;
    conformance::revoke_deletes_the_keys_in_one_revision(&store).await;
}

#[tokio::test]
async fn conformance_watch() {
    let etcd = Etcd::start();
    let (writer, reader) = two_clients(&etcd).await;
    // Idle past the client's per-request timeout and its first keep-alive ping: a watch must
    // outlive both (etcd closes a connection that pings too often, watches and all).
    conformance::watch_sees_changes_in_order(&writer, &reader, Duration::from_secs(12)).await;
    conformance::watch_delivers_each_revision_whole(&writer, &reader).await;
}

#[tokio::test]
async fn watch_on_a_compacted_revision_closes() {
    let etcd = Etcd::start();
    let store = connect(&etcd).await;
    let r1 = store.put("/c/a", b"1".to_vec(), None).await.unwrap();
    let r2 = store.put("/c/a", b"2".to_vec(), None).await.unwrap();
    let mut kv = store.client().kv_client();
    kv.compact(r2, None).await.expect("compact");
    let mut rx = store.watch_prefix("/c/", r1 - 1).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("closes in time");
    assert_eq!(closed, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_racing_txns() {
    let etcd = Etcd::start();
    let (a, b) = two_clients(&etcd).await;
    conformance::racing_txns_exactly_one_wins(&a, &b).await;
}

#[tokio::test]
async fn connect_to_nothing_is_unreachable_quickly() {
    let port = harness::free_port();
    let start = Instant::now();
    let result = EtcdStore::connect(vec![format!("127.0.0.1:{port}")]).await;
    assert!(
        matches!(result, Err(StoreError::Unreachable { .. })),
        "{result:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    let result = tessera_topology::connect(&format!("etcd://127.0.0.1:{port}")).await;
    assert!(matches!(result, Err(StoreError::Unreachable { .. })));
}

#[tokio::test]
async fn etcd_down_is_unreachable_then_recovers() {
    let mut etcd = Etcd::start();
    let store: Arc<dyn Store> = tessera_topology::connect(&etcd.url()).await.unwrap();
    let r = store.put("/d/a", b"1".to_vec(), None).await.unwrap();
    let lease = store.grant_lease(30).await.unwrap();
    let mut rx = store.watch_prefix("/d/", r).await.unwrap();

    etcd.stop();
    // The watch closes (the caller re-reads and watches again).
    let closed = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("watch closes in time");
    assert_eq!(closed, None);
    // Every kind of call fails with Unreachable, in bounded time.
    let bound = Duration::from_secs(5);
    let start = Instant::now();
    let got = store.get("/d/a").await;
    assert!(
        matches!(got, Err(StoreError::Unreachable { .. })),
        "{got:?}"
    );
    assert!(start.elapsed() < bound, "get took {:?}", start.elapsed());
    let start = Instant::now();
    let got = store.put("/d/b", b"2".to_vec(), None).await;
    assert!(
        matches!(got, Err(StoreError::Unreachable { .. })),
        "{got:?}"
    );
    assert!(start.elapsed() < bound, "put took {:?}", start.elapsed());
    let start = Instant::now();
    let got = store.keep_alive(lease).await;
    assert!(
        matches!(got, Err(StoreError::Unreachable { .. })),
        "{got:?}"
    );
    assert!(
        start.elapsed() < bound,
        "keep_alive took {:?}",
        start.elapsed()
    );
    let start = Instant::now();
    let got = store.watch_prefix("/d/", r).await;
    assert!(
        matches!(got, Err(StoreError::Unreachable { .. })),
        "{:?}",
        got.err()
    );
    assert!(start.elapsed() < bound, "watch took {:?}", start.elapsed());

    // Back on the same ports and data: the same client works again.
    etcd.restart();
    let took = wait_until(Duration::from_secs(10), || async {
        store.get("/d/a").await.is_ok()
    })
    .await
    .expect("the client reconnects within 10 s");
    eprintln!("reconnected {took:?} after etcd was healthy again");
    assert_eq!(store.get("/d/a").await.unwrap().unwrap().value, b"1");
    store
        .keep_alive(lease)
        .await
        .expect("the lease survived the restart");
    let mut rx = store.watch_prefix("/d/", r).await.unwrap();
    let r2 = store.put("/d/b", b"2".to_vec(), None).await.unwrap();
    assert_eq!(
        recv(&mut rx).await,
        WatchEvent::Put(KeyValue {
            key: "/d/b".into(),
            value: b"2".to_vec(),
            mod_revision: r2
        })
    );
}
