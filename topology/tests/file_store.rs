//! The embedded file store against the store conformance checks, with two instances on one
//! directory wherever a second client matters (they stand for two processes).

mod conformance;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use conformance::DynStore;
use tessera_topology::embedded::FileStore;

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "tessera-conformance-{tag}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn open(&self) -> DynStore {
        Arc::new(FileStore::open(self.path()).expect("open file store"))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn revisions_and_reads() {
    let dir = TempDir::new("rev");
    conformance::revisions_and_reads(&dir.open(), &dir.open()).await;
}

#[tokio::test]
async fn transactions() {
    let dir = TempDir::new("txn");
    conformance::transactions(&dir.open()).await;
}

#[tokio::test]
async fn prefix_reads_are_sorted_and_bounded() {
    let dir = TempDir::new("prefix");
    conformance::prefix_reads_are_sorted_and_bounded(&dir.open()).await;
}

#[tokio::test]
async fn leases_expire() {
    let dir = TempDir::new("lease");
    conformance::leases_expire(&dir.open(), 1).await;
}

#[tokio::test]
async fn keep_alive_keeps_the_lease() {
    let dir = TempDir::new("keepalive");
    conformance::keep_alive_keeps_the_lease(&dir.open(), 1).await;
}

#[tokio::test]
async fn revoke_deletes_the_keys_in_one_revision() {
    let dir = TempDir::new("revoke");
    conformance::revoke_deletes_the_keys_in_one_revision(&dir.open()).await;
}

#[tokio::test]
async fn watch_sees_changes_in_order() {
    let dir = TempDir::new("watch");
    conformance::watch_sees_changes_in_order(&dir.open(), &dir.open(), Duration::from_millis(500))
        .await;
}

#[tokio::test]
async fn watch_delivers_each_revision_whole() {
    let dir = TempDir::new("watchrev");
    conformance::watch_delivers_each_revision_whole(&dir.open(), &dir.open()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_txns_exactly_one_wins() {
    let dir = TempDir::new("race");
    conformance::racing_txns_exactly_one_wins(&dir.open(), &dir.open()).await;
}
