//! What every [`Store`] must do, whatever is behind it: one check per behaviour, run by
//! `file_store.rs` against the embedded file store and by `etcd_store.rs` against a real etcd.
//!
//! Each check takes the stores to test (two handles on the same data where a second client
//! matters) and uses its own key prefix, so the checks can share one store.

#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_topology::store::{Compare, Op};
use tessera_topology::{KeyValue, Store, StoreError, WatchEvent};
use tokio::sync::mpsc;

pub type DynStore = Arc<dyn Store>;

pub fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: key.to_string(),
        value: value.as_bytes().to_vec(),
        lease: None,
    }
}

pub async fn recv(rx: &mut mpsc::Receiver<WatchEvent>) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a watch event within 5 s")
        .expect("watch channel open")
}

/// Polls `cond` every 20 ms until it holds or `limit` passes; returns the time it took.
pub async fn wait_until<F, Fut>(limit: Duration, mut cond: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Writes raise the revision; a key's `mod_revision` is its last write; the store revision
/// of a prefix read is the latest; values are bytes; a second client sees the same state.
pub async fn revisions_and_reads(store: &DynStore, other: &DynStore) {
    let (_, r0) = store.get_prefix("/rev/").await.unwrap();
    let r1 = store.put("/rev/a", b"1".to_vec(), None).await.unwrap();
    let r2 = store.put("/rev/b", b"2".to_vec(), None).await.unwrap();
    let r3 = store.put("/rev/a", b"3".to_vec(), None).await.unwrap();
    assert!(r0 < r1 && r1 < r2 && r2 < r3, "{r0} {r1} {r2} {r3}");
    let a = store.get("/rev/a").await.unwrap().unwrap();
    assert_eq!((a.value.as_slice(), a.mod_revision), (b"3".as_slice(), r3));
    assert_eq!(store.get_prefix("/rev/").await.unwrap().1, r3);
    assert_eq!(store.get("/rev/missing").await.unwrap(), None);
    assert_eq!(other.get("/rev/a").await.unwrap().unwrap().mod_revision, r3);
    let bin = vec![0u8, 159, 146, 150, 255];
    store.put("/rev/bin", bin.clone(), None).await.unwrap();
    assert_eq!(other.get("/rev/bin").await.unwrap().unwrap().value, bin);
}

/// `Absent` and `ModRevision` guards: a failed transaction writes nothing; the ops of one
/// transaction share one revision.
pub async fn transactions(store: &DynStore) {
    let r1 = store
        .txn(
            vec![Compare::Absent("/txn/k".into())],
            vec![put("/txn/k", "v1")],
        )
        .await
        .unwrap()
        .expect("absent key: the txn applies");
    let failed = store
        .txn(
            vec![Compare::Absent("/txn/k".into())],
            vec![put("/txn/k", "v2"), put("/txn/other", "x")],
        )
        .await
        .unwrap();
    assert_eq!(failed, None);
    let (kvs, rev) = store.get_prefix("/txn/").await.unwrap();
    assert!(rev >= r1);
    assert_eq!(kvs.len(), 1);
    assert_eq!(kvs[0].value, b"v1");
    let r2 = store
        .txn(
            vec![Compare::ModRevision("/txn/k".into(), r1)],
            vec![put("/txn/k", "v2")],
        )
        .await
        .unwrap()
        .expect("current mod revision: applies");
    assert!(r2 > r1);
    let stale = store
        .txn(
            vec![Compare::ModRevision("/txn/k".into(), r1)],
            vec![Op::Delete("/txn/k".into())],
        )
        .await
        .unwrap();
    assert_eq!(stale, None);
    let k = store.get("/txn/k").await.unwrap().unwrap();
    assert_eq!((k.value.as_slice(), k.mod_revision), (b"v2".as_slice(), r2));
    let r3 = store
        .txn(
            vec![],
            vec![
                put("/txn/x", "1"),
                put("/txn/y", "2"),
                Op::Delete("/txn/k".into()),
            ],
        )
        .await
        .unwrap()
        .unwrap();
    assert!(r3 > r2);
    let (kvs, _) = store.get_prefix("/txn/").await.unwrap();
    assert_eq!(kvs.len(), 2);
    assert!(kvs.iter().all(|kv| kv.mod_revision == r3));
}

/// A prefix read is sorted by key and stays under the prefix.
pub async fn prefix_reads_are_sorted_and_bounded(store: &DynStore) {
    for key in [
        "/pfx/p/c",
        "/pfx/p/a",
        "/pfx/q/a",
        "/pfx/p/b/x",
        "/pfx/o",
        "/pfx/p/b",
    ] {
        store.put(key, key.as_bytes().to_vec(), None).await.unwrap();
    }
    let (kvs, _) = store.get_prefix("/pfx/p/").await.unwrap();
    let keys: Vec<&str> = kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/pfx/p/a", "/pfx/p/b", "/pfx/p/b/x", "/pfx/p/c"]);
}

/// A lease of `ttl_secs` left alone expires: its keys go, others stay, and the lease is
/// lost for keep-alives and puts.
pub async fn leases_expire(store: &DynStore, ttl_secs: i64) {
    let lease = store.grant_lease(ttl_secs).await.unwrap();
    store
        .put("/exp/a", b"a".to_vec(), Some(lease))
        .await
        .unwrap();
    store
        .put("/exp/b", b"b".to_vec(), Some(lease))
        .await
        .unwrap();
    store.put("/exp/keep", b"k".to_vec(), None).await.unwrap();
    let ttl = Duration::from_secs(ttl_secs as u64);
    let took = wait_until(ttl * 4, || async {
        store.get("/exp/a").await.unwrap().is_none()
    })
    .await
    .expect("leased key gone within 4 TTLs");
    assert!(took >= ttl / 2, "gone too early: {took:?}");
    assert!(store.get("/exp/b").await.unwrap().is_none());
    assert!(store.get("/exp/keep").await.unwrap().is_some());
    assert!(matches!(store.keep_alive(lease).await, Err(StoreError::LeaseLost(id)) if id == lease));
    assert!(matches!(
        store.put("/exp/c", b"c".to_vec(), Some(lease)).await,
        Err(StoreError::LeaseLost(id)) if id == lease
    ));
    assert!(matches!(
        store.keep_alive(12345).await,
        Err(StoreError::LeaseLost(12345))
    ));
}

/// Keep-alives hold a lease well past its TTL.
pub async fn keep_alive_keeps_the_lease(store: &DynStore, ttl_secs: i64) {
    let lease = store.grant_lease(ttl_secs).await.unwrap();
    store
        .put("/ka/a", b"a".to_vec(), Some(lease))
        .await
        .unwrap();
    let start = Instant::now();
    let span = Duration::from_secs(ttl_secs as u64) * 2;
    while start.elapsed() < span {
        store.keep_alive(lease).await.unwrap();
        assert!(
            store.get("/ka/a").await.unwrap().is_some(),
            "key lost after {:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Revoking deletes the lease's keys at once, in one revision, seen by a watch; revoking
/// again is fine and the lease is lost.
pub async fn revoke_deletes_the_keys_in_one_revision(store: &DynStore) {
    let lease = store.grant_lease(60).await.unwrap();
    store
        .put("/rv/a", b"a".to_vec(), Some(lease))
        .await
        .unwrap();
    let r = store
        .put("/rv/b", b"b".to_vec(), Some(lease))
        .await
        .unwrap();
    let mut rx = store.watch_prefix("/rv/", r).await.unwrap();
    store.revoke_lease(lease).await.unwrap();
    let (kvs, rev) = store.get_prefix("/rv/").await.unwrap();
    assert!(kvs.is_empty());
    let mut deleted = Vec::new();
    for _ in 0..2 {
        match recv(&mut rx).await {
            WatchEvent::Delete { key, revision } => {
                assert_eq!(revision, rev, "{key} deleted in another revision");
                deleted.push(key);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    deleted.sort();
    assert_eq!(deleted, ["/rv/a", "/rv/b"]);
    store.revoke_lease(lease).await.unwrap();
    assert!(matches!(
        store.keep_alive(lease).await,
        Err(StoreError::LeaseLost(_))
    ));
}

/// A watch sees another client's changes under its prefix, in order; a watch from an older
/// revision replays the history from there; a later write arrives within a second, even
/// after the watch sat idle for `idle`.
pub async fn watch_sees_changes_in_order(writer: &DynStore, reader: &DynStore, idle: Duration) {
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
    let mut replay = reader.watch_prefix("/w/", r0 - 1).await.unwrap();
    assert!(matches!(recv(&mut replay).await, WatchEvent::Put(kv) if kv.key == "/w/before"));
    for want in &expected {
        assert_eq!(&recv(&mut replay).await, want);
    }
    tokio::time::sleep(idle).await;
    let start = Instant::now();
    writer.put("/w/late", b"3".to_vec(), None).await.unwrap();
    assert!(matches!(recv(&mut rx).await, WatchEvent::Put(kv) if kv.key == "/w/late"));
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "watch latency {:?}",
        start.elapsed()
    );
}

/// `watch_revisions` delivers each revision whole, as one message: a transaction of several
/// writes under the prefix arrives together (in the transaction's order, without the write
/// elsewhere), and each later single write as its own message.
pub async fn watch_delivers_each_revision_whole(writer: &DynStore, reader: &DynStore) {
    let r0 = writer.put("/t/before", b"0".to_vec(), None).await.unwrap();
    let mut rx = reader.watch_revisions("/t/", r0).await.unwrap();
    let r1 = writer
        .txn(
            vec![],
            vec![
                put("/t/b", "1"),
                put("/elsewhere-t", "x"),
                put("/t/a", "2"),
                Op::Delete("/t/before".into()),
            ],
        )
        .await
        .unwrap()
        .unwrap();
    let r2 = writer.put("/t/c", b"3".to_vec(), None).await.unwrap();
    let r3 = writer.put("/t/c", b"4".to_vec(), None).await.unwrap();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a revision within 5 s")
            .expect("watch channel open")
    };
    let kv = |key: &str, value: &str, mod_revision| {
        WatchEvent::Put(KeyValue {
            key: key.into(),
            value: value.as_bytes().to_vec(),
            mod_revision,
        })
    };
    assert_eq!(
        next().await,
        [
            kv("/t/b", "1", r1),
            kv("/t/a", "2", r1),
            WatchEvent::Delete {
                key: "/t/before".into(),
                revision: r1
            },
        ]
    );
    assert_eq!(next().await, [kv("/t/c", "3", r2)]);
    assert_eq!(next().await, [kv("/t/c", "4", r3)]);
}

/// Eight clients race an `Absent` transaction on one key through two handles: exactly one
/// wins, five times over.
pub async fn racing_txns_exactly_one_wins(a: &DynStore, b: &DynStore) {
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
