//! The store behind the topology: one trait, two implementations with the same semantics —
//! etcd ([`crate::etcd::EtcdStore`], the production default) and an embedded file store
//! ([`crate::embedded::FileStore`], one machine, no etcd).
//!
//! Semantics (etcd's): every write gets a new, store-wide, increasing revision; a watch
//! delivers every change after a revision in order, the changes of one revision together; a
//! key written under a lease is deleted when the lease expires or is revoked.

use async_trait::async_trait;
use tokio::sync::mpsc;

/// Capacity of a watch channel (in messages: revisions, or single changes).
pub(crate) const WATCH_CHANNEL: usize = 1024;

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
    /// A document under a product's prefix that does not decode (or contradicts its key).
    #[error("bad document at {key} (revision {revision}): {message}")]
    BadDocument {
        key: String,
        revision: Revision,
        message: String,
    },
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

impl WatchEvent {
    /// The key that changed.
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(kv) => &kv.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }

    /// The revision of the change.
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { revision, .. } => *revision,
        }
    }
}

/// Splits changes in revision order into one `Vec` per revision.
pub(crate) fn group_by_revision(
    events: impl IntoIterator<Item = WatchEvent>,
) -> Vec<Vec<WatchEvent>> {
    let mut revisions: Vec<Vec<WatchEvent>> = Vec::new();
    for event in events {
        match revisions.last_mut() {
            Some(last) if last[0].revision() == event.revision() => last.push(event),
            _ => revisions.push(vec![event]),
        }
    }
    revisions
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
    /// dropped: one message per revision, holding all of that revision's changes under
    /// `prefix` in the transaction's order, so a reader never sees part of a transaction.
    /// If the watch breaks (store unreachable), the channel closes; the caller re-reads and
    /// watches again.
    async fn watch_revisions(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<mpsc::Receiver<Vec<WatchEvent>>, StoreError>;

    /// [`Store::watch_revisions`] one change at a time, for readers that need no
    /// transaction boundaries.
    async fn watch_prefix(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<mpsc::Receiver<WatchEvent>, StoreError> {
        let mut revisions = self.watch_revisions(prefix, after).await?;
        let (tx, rx) = mpsc::channel(WATCH_CHANNEL);
        tokio::spawn(async move {
            loop {
                let events = tokio::select! {
                    _ = tx.closed() => return,
                    events = revisions.recv() => match events {
                        Some(events) => events,
                        None => return,
                    },
                };
                for event in events {
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }

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
