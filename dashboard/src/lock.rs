//! The single-writer lock: one dashboard per product holds `/tessera/<product>/dashboard`
//! under a lease it keeps alive; if it dies, the lease expires and the lock with it.
//!
//! Renewal runs every TTL/3. A renewal the store refuses (lease gone) loses the lock at once;
//! renewals that keep failing (store unreachable) lose it once the last good one is a TTL old,
//! since by then the lease may have expired in the store and another dashboard may write.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tessera_topology::model::DashboardLock;
use tessera_topology::store::{Compare, Op};
use tessera_topology::{LeaseId, Revision, Store, StoreError, keys};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::error::DashboardError;
use crate::service::Fence;

/// A held lock: the lease, the lock key's revision, and the renewal task.
pub struct Lock {
    store: Arc<dyn Store>,
    pub key: String,
    pub lease: LeaseId,
    pub mod_revision: Revision,
    lost: Arc<watch::Sender<Option<String>>>,
    renewal: JoinHandle<()>,
}

impl Lock {
    /// Takes the lock of `product` for a dashboard at `addr`, or says who holds it.
    pub async fn acquire(
        store: Arc<dyn Store>,
        product: &str,
        addr: &str,
        ttl_secs: u64,
    ) -> Result<Lock, DashboardError> {
        let ttl_secs = ttl_secs.max(1);
        let key = keys::dashboard_lock(product);
        let start_time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let info = DashboardLock {
            addr: addr.to_string(),
            pid: std::process::id(),
            start_time,
            token: crate::random_hex(8),
            ttl_secs,
        };
        let value = serde_json::to_vec(&info).expect("the lock serializes");
        // The holder can vanish between our failed txn and our read: try again then.
        for _ in 0..3 {
            let lease = store.grant_lease(ttl_secs as i64).await?;
            let put = Op::Put {
                key: key.clone(),
                value: value.clone(),
                lease: Some(lease),
            };
            match store
                .txn(vec![Compare::Absent(key.clone())], vec![put])
                .await
            {
                Ok(Some(mod_revision)) => {
                    info!(product, lease, mod_revision, "dashboard lock taken");
                    let lost = Arc::new(watch::Sender::new(None));
                    let renewal = tokio::spawn(renew(
                        store.clone(),
                        lease,
                        Duration::from_secs(ttl_secs),
                        lost.clone(),
                    ));
                    return Ok(Lock {
                        store,
                        key,
                        lease,
                        mod_revision,
                        lost,
                        renewal,
                    });
                }
                Ok(None) => {
                    let _ = store.revoke_lease(lease).await;
                    if let Some(kv) = store.get(&key).await? {
                        let holder: DashboardLock =
                            serde_json::from_slice(&kv.value).map_err(|e| {
                                DashboardError::Corrupt {
                                    key: key.clone(),
                                    message: e.to_string(),
                                }
                            })?;
                        return Err(DashboardError::Locked {
                            product: product.to_string(),
                            holder,
                        });
                    }
                }
                Err(e) => {
                    let _ = store.revoke_lease(lease).await;
                    return Err(e.into());
                }
            }
        }
        Err(DashboardError::Store(StoreError::Other(format!(
            "the lock {key} kept changing hands; try again"
        ))))
    }

    /// What every transaction compares while this lock is held.
    pub fn fence(&self) -> Fence {
        Fence {
            key: self.key.clone(),
            mod_revision: self.mod_revision,
            lost: self.lost.clone(),
        }
    }

    /// Resolves with the reason once the lock is lost.
    pub async fn lost(&self) -> String {
        let mut lost = self.lost.subscribe();
        match lost.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => "the renewal task stopped".to_string(),
        }
    }

    /// Gives the lock up at once: stops renewing and revokes the lease (the key goes with it).
    pub async fn release(self) -> Result<(), StoreError> {
        self.renewal.abort();
        self.store.revoke_lease(self.lease).await?;
        info!(lease = self.lease, "dashboard lock released");
        Ok(())
    }

    /// Stops renewing without revoking, as a crash would: the lock expires with the lease.
    pub fn abandon(self) {
        self.renewal.abort();
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

/// Renews `lease` every TTL/3 until the lock is lost, then says why on `lost`.
async fn renew(
    store: Arc<dyn Store>,
    lease: LeaseId,
    ttl: Duration,
    lost: Arc<watch::Sender<Option<String>>>,
) {
    let period = (ttl / 3).max(Duration::from_millis(100));
    let mut last_ok = Instant::now();
    let mut tick = tokio::time::interval_at(Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let reason = match store.keep_alive(lease).await {
            Ok(()) => {
                last_ok = Instant::now();
                continue;
            }
            Err(StoreError::LeaseLost(_)) => format!("lease {lease} expired in the store"),
            Err(e) if last_ok.elapsed() + period >= ttl => format!(
                "could not renew lease {lease} for {:.1} s: {e}",
                last_ok.elapsed().as_secs_f64()
            ),
            Err(e) => {
                warn!(lease, "renewing the dashboard lock failed, will retry: {e}");
                continue;
            }
        };
        warn!(lease, "dashboard lock lost: {reason}");
        lost.send_replace(Some(reason));
        return;
    }
}
