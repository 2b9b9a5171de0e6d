//! The etcd backend against a real etcd (started by the harness on free ports): the same
//! behaviours the file store's unit tests check, plus etcd going away and coming back.

#[allow(dead_code)]
#[path = "../../tests/harness/etcd.rs"]
mod etcd_harness;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_harness::Etcd;
use tessera_topology::etcd::EtcdStore;
use tessera_topology::store::{Compare, Op};
use tessera_topology::{KeyValue, Store, StoreError, WatchEvent};
use tokio::sync::mpsc;

async fn connect(etcd: &Etcd) -> EtcdStore {
    EtcdStore::connect(vec![etcd.endpoint()])
        .await
        .expect("connect to etcd")
}

fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: key.to_string(),
        value: value.as_bytes().to_vec(),
        lease: None,
    }
}

async fn recv(rx: &mut mpsc::Receiver<WatchEvent>) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a watch event within 5 s")
        .expect("watch channel open")
}

/// Polls `cond` every 50 ms until it holds or `limit` passes; returns the time it took.
async fn wait_until<F, Fut>(limit: Duration, mut cond: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test]
async fn revisions_txn_and_prefix() {
    let etcd = Etcd::start();
    let store = connect(&etcd).await;
    assert_eq!(store.endpoint(), etcd.url());

    let (_, r0) = store.get_prefix("/t/").await.unwrap();
    let r1 = store.put("/t/a", b"1".to_vec(), None).await.unwrap();
    let r2 = store.put("/t/b", b"2".to_vec(), None).await.unwrap();
    assert!(r0 < r1 && r1 < r2, "{r0} {r1} {r2}");
    assert_eq!(store.get("/t/a").await.unwrap().unwrap().mod_revision, r1);
    assert_eq!(store.get("/t/missing").await.unwrap(), None);

    // Absent: applies once, then fails without writing.
    let r3 = store
        .txn(
            vec![Compare::Absent("/t/k".into())],
            vec![put("/t/k", "v1")],
        )
        .await
        .unwrap()
        .expect("absent: applies");
    let failed = store
        .txn(
            vec![Compare::Absent("/t/k".into())],
            vec![put("/t/k", "v2"), put("/t/other", "x")],
        )
        .await
        .unwrap();
    assert_eq!(failed, None);
    assert_eq!(store.get_prefix("/t/").await.unwrap().1, r3);
    assert_eq!(store.get("/t/other").await.unwrap(), None);
    // ModRevision: current applies, stale does not.
    let r4 = store
        .txn(
            vec![Compare::ModRevision("/t/k".into(), r3)],
            vec![put("/t/k", "v2")],
        )
        .await
        .unwrap()
        .expect("current mod revision: applies");
    let stale = store
        .txn(
            vec![Compare::ModRevision("/t/k".into(), r3)],
            vec![Op::Delete("/t/k".into())],
        )
        .await
        .unwrap();
    assert_eq!(stale, None);
    let k = store.get("/t/k").await.unwrap().unwrap();
    assert_eq!((k.value.as_slice(), k.mod_revision), (b"v2".as_slice(), r4));

    // Prefix reads are sorted by key and stay under the prefix.
    for key in ["/p/c", "/p/a", "/q/a", "/p/b/x", "/o", "/p/b"] {
        store.put(key, key.as_bytes().to_vec(), None).await.unwrap();
    }
    let (kvs, _) = store.get_prefix("/p/").await.unwrap();
    let keys: Vec<&str> = kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/p/a", "/p/b", "/p/b/x", "/p/c"]);
}

#[tokio::test]
async fn leases_expire_keep_alive_and_revoke() {
    let etcd = Etcd::start();
    let store = connect(&etcd).await;

    // Expiry: etcd's shortest TTL is about 2 s.
    let lease = store.grant_lease(2).await.unwrap();
    store.put("/l/a", b"a".to_vec(), Some(lease)).await.unwrap();
    store.put("/l/keep", b"k".to_vec(), None).await.unwrap();
    let took = wait_until(Duration::from_secs(8), || async {
        store.get("/l/a").await.unwrap().is_none()
    })
    .await
    .expect("leased key gone within 8 s");
    assert!(took >= Duration::from_secs(1), "gone too early: {took:?}");
    assert!(store.get("/l/keep").await.unwrap().is_some());
    assert!(matches!(store.keep_alive(lease).await, Err(StoreError::LeaseLost(id)) if id == lease));
    assert!(matches!(
        store.put("/l/b", b"b".to_vec(), Some(lease)).await,
        Err(StoreError::LeaseLost(id)) if id == lease
    ));

    // Keep-alive keeps it past its TTL.
    let lease = store.grant_lease(2).await.unwrap();
    store
        .put("/l/kept", b"k".to_vec(), Some(lease))
        .await
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        store.keep_alive(lease).await.unwrap();
        assert!(
            store.get("/l/kept").await.unwrap().is_some(),
            "lost after {:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Revoke deletes the keys at once; revoking again is fine.
    let r = store
        .put("/l/kept2", b"k".to_vec(), Some(lease))
        .await
        .unwrap();
    let mut rx = store.watch_prefix("/l/", r).await.unwrap();
    store.revoke_lease(lease).await.unwrap();
    assert!(store.get("/l/kept").await.unwrap().is_none());
    assert!(store.get("/l/kept2").await.unwrap().is_none());
    let mut deleted = vec![];
    for _ in 0..2 {
        match recv(&mut rx).await {
            WatchEvent::Delete { key, revision } => {
                assert!(revision > r);
                deleted.push(key);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    deleted.sort();
    assert_eq!(deleted, ["/l/kept", "/l/kept2"]);
    store.revoke_lease(lease).await.unwrap();
    assert!(matches!(
        store.keep_alive(lease).await,
        Err(StoreError::LeaseLost(_))
    ));
}

#[tokio::test]
async fn watch_sees_changes_in_order() {
    let etcd = Etcd::start();
    let writer = connect(&etcd).await;
    let reader = connect(&etcd).await;
    let r0 = writer.put("/w/before", b"0".to_vec(), None).await.unwrap();
    let mut rx = reader.watch_prefix("/w/", r0).await.unwrap();
    let r1 = writer.put("/w/a", b"1".to_vec(), None).await.unwrap();
    writer.put("/elsewhere", b"x".to_vec(), None).await.unwrap();
    let r2 = writer.put("/w/b", b"2".to_vec(), None).await.unwrap();
    let r3 = writer
        .txn(vec![], vec![Op::Delete("/w/a".into())])
        .await
        .unwrap()
        .unwrap();
    let expected = [
        WatchEvent::Put(KeyValue {
            key: "/w/a".into(),
            value: b"1".to_vec(),
            mod_revision: r1,
        }),
        WatchEvent::Put(KeyValue {
            key: "/w/b".into(),
            value: b"2".to_vec(),
            mod_revision: r2,
        }),
        WatchEvent::Delete {
            key: "/w/a".into(),
            revision: r3,
        },
    ];
    for want in &expected {
        assert_eq!(&recv(&mut rx).await, want);
    }
    // From an older revision: the history is replayed.
    let mut replay = reader.watch_prefix("/w/", r0 - 1).await.unwrap();
    assert!(matches!(recv(&mut replay).await, WatchEvent::Put(kv) if kv.key == "/w/before"));
    for want in &expected {
        assert_eq!(&recv(&mut replay).await, want);
    }
    // A watch outlives the per-request timeout.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let start = Instant::now();
    writer.put("/w/late", b"3".to_vec(), None).await.unwrap();
    assert!(matches!(recv(&mut rx).await, WatchEvent::Put(kv) if kv.key == "/w/late"));
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "watch latency {:?}",
        start.elapsed()
    );
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
async fn racing_txns_exactly_one_wins() {
    let etcd = Etcd::start();
    let a = connect(&etcd).await;
    let b = connect(&etcd).await;
    for round in 0..5 {
        let key = format!("/race/{round}");
        let mut tasks = Vec::new();
        for i in 0..8 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .txn(
                        vec![Compare::Absent(key.clone())],
                        vec![put(&key, &format!("{i}"))],
                    )
                    .await
                    .unwrap()
            }));
        }
        let mut wins = 0;
        for task in tasks {
            if task.await.unwrap().is_some() {
                wins += 1;
            }
        }
        assert_eq!(wins, 1, "round {round}");
    }
}

#[tokio::test]
async fn connect_to_nothing_is_unreachable_quickly() {
    let port = etcd_harness::free_port();
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
