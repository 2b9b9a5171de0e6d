//! The store behind the topology: one trait, two implementations with the same semantics —
//! etcd ([`crate::etcd::EtcdStore`], the production default) and an embedded file store
//! ([`crate::embedded::FileStore`], one machine, no etcd).
//!
//! Semantics (etcd's): every write gets a new, store-wide, increasing revision; a watch
//! delivers every change after a revision in order; a key written under a lease is deleted
//! when the lease expires or is revoked.

use async_trait::async_trait;
use tokio::sync::mpsc;

/// A store-wide revision number (etcd's `mod_revision`).
pub type Revision = i64;
/// A lease id.
pub type LeaseId = i64;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unreachable at {endpoint}: {message}")]
    Unreachable { endpoint: String, message: String },
    #[error("lease {0} expired or unknown")]
    LeaseLost(LeaseId),
    #[error("store error: {0}")]
    Other(String),
    #[error("bad coordinator address {0:?}: use etcd://HOST:PORT[,HOST:PORT...] or file://DIR")]
    BadUrl(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: Revision,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put(KeyValue),
    Delete { key: String, revision: Revision },
}

/// A condition of a transaction on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key does not exist.
    Absent(String),
    /// The key's `mod_revision` is exactly this.
    ModRevision(String, Revision),
}

/// A write inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    },
    Delete(String),
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Human-readable location, for logs and errors (`etcd://127.0.0.1:2379`, `file:///d`).
    fn endpoint(&self) -> String;

    /// One key, if present.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Every key under `prefix`, sorted by key, and the store revision they were read at.
    async fn get_prefix(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError>;

    /// Applies `ops` atomically if every compare holds: `Some(new revision)`, else `None`
    /// (nothing written).
    async fn txn(
        &self,
        compares: Vec<Compare>,
        ops: Vec<Op>,
    ) -> Result<Option<Revision>, StoreError>;

    /// Grants a lease of `ttl_secs`.
    async fn grant_lease(&self, ttl_secs: i64) -> Result<LeaseId, StoreError>;

    /// Renews a lease once; `Err(LeaseLost)` if it has expired.
    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError>;

    /// Revokes a lease, deleting its keys.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError>;

    /// Every change under `prefix` after revision `after`, in order, until the receiver is
    /// dropped. If the watch breaks (store unreachable), the channel closes; the caller
    /// re-reads and watches again.
    async fn watch_prefix(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<mpsc::Receiver<WatchEvent>, StoreError>;

    /// Convenience: a plain put (one transaction without compares).
    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError> {
        let op = Op::Put {
            key: key.to_string(),
            value,
            lease,
        };
        Ok(self
            .txn(vec![], vec![op])
            .await?
            .expect("a transaction without compares succeeds"))
    }
}

/// Opens the store a coordinator URL names: `etcd://HOST:PORT[,HOST:PORT...]` or `file://DIR`.
pub async fn connect(url: &str) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    if let Some(endpoints) = url.strip_prefix("etcd://") {
        let endpoints: Vec<String> = endpoints
            .split(',')
            .filter(|e| !e.is_empty())
            .map(String::from)
            .collect();
        if endpoints.is_empty() {
            return Err(StoreError::BadUrl(url.to_string()));
        }
        Ok(std::sync::Arc::new(
            crate::etcd::EtcdStore::connect(endpoints).await?,
        ))
    } else if let Some(dir) = url.strip_prefix("file://") {
        if dir.is_empty() {
            return Err(StoreError::BadUrl(url.to_string()));
        }
        Ok(std::sync::Arc::new(crate::embedded::FileStore::open(dir)?))
    } else {
        Err(StoreError::BadUrl(url.to_string()))
    }
}
