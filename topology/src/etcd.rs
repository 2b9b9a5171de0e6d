//! The etcd backend of [`Store`] (etcd-client, etcd v3 API): the production default.
//! Every call is bounded in time, so an unreachable etcd gives [`StoreError::Unreachable`].

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, ConnectOptions, Error as EtcdError, EventType,
    GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
};
use tokio::sync::mpsc;

use crate::store::{
    Compare, KeyValue, LeaseId, Op, Revision, Store, StoreError, WATCH_CHANNEL, WatchEvent,
    group_by_revision,
};

/// Time allowed to open a TCP connection to etcd.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time allowed for one unary request (also enforced around every call, so a half-open
/// connection cannot hang a caller).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 keep-alive: a half-open connection (and the watches on it) is noticed within
/// interval + timeout. etcd answers pings closer than its `--grpc-keepalive-min-time`
/// (5 s by default) with strikes, and the third strike closes the connection with every
/// watch on it; 10 s is also the shortest interval etcd's own Go client uses.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// gRPC status codes that mean "could not reach (a working) etcd".
const GRPC_CANCELLED: i32 = 1;
const GRPC_UNKNOWN: i32 = 2;
const GRPC_DEADLINE_EXCEEDED: i32 = 4;
const GRPC_UNAVAILABLE: i32 = 14;

/// A [`Store`] on an etcd cluster. Cheap to clone (the client shares its channel).
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    endpoints: Vec<String>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to etcd at `endpoints` (`host:port` or `http://host:port`) and checks that it
    /// answers, within a few seconds.
    pub async fn connect(endpoints: Vec<String>) -> Result<EtcdStore, StoreError> {
        if endpoints.is_empty() {
            return Err(StoreError::BadUrl(String::from("etcd://")));
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT)
            .with_keep_alive_while_idle(true);
        let endpoint = format!("etcd://{}", endpoints.join(","));
        let client = bounded(&endpoint, Client::connect(endpoints.clone(), Some(options))).await?;
        let store = EtcdStore { client, endpoints };
        // The channel connects lazily: one cheap request proves etcd is there.
        let mut kv = store.client.kv_client();
        bounded(
            &endpoint,
            kv.get("/tessera/", Some(GetOptions::new().with_count_only())),
        )
        .await?;
        tracing::debug!(%endpoint, "connected to etcd");
        Ok(store)
    }

    /// The underlying etcd-client, for what the trait does not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    async fn call<T>(
        &self,
        fut: impl Future<Output = Result<T, EtcdError>>,
    ) -> Result<T, StoreError> {
        bounded(&self.endpoint(), fut).await
    }
}

/// Runs one etcd call with a time bound, mapping its error.
async fn bounded<T>(
    endpoint: &str,
    fut: impl Future<Output = Result<T, EtcdError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(REQUEST_TIMEOUT + Duration::from_millis(500), fut).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(map_error(endpoint, err)),
        Err(_) => Err(StoreError::Unreachable {
            endpoint: endpoint.to_string(),
            message: format!(
                "no answer within {:?}",
                REQUEST_TIMEOUT + Duration::from_millis(500)
            ),
        }),
    }
}

/// Maps an etcd-client error: transport failures and timeouts are `Unreachable`.
fn map_error(endpoint: &str, err: EtcdError) -> StoreError {
    let unreachable = |message: String| StoreError::Unreachable {
        endpoint: endpoint.to_string(),
        message,
    };
    match err {
        EtcdError::TransportError(e) => unreachable(e.to_string()),
        EtcdError::IoError(e) => unreachable(e.to_string()),
        EtcdError::GRpcStatus(status) => {
            let code = i32::from(status.code());
            if matches!(
                code,
                GRPC_CANCELLED | GRPC_UNKNOWN | GRPC_DEADLINE_EXCEEDED | GRPC_UNAVAILABLE
            ) {
                unreachable(status.message().to_string())
            } else {
                StoreError::Other(format!("etcd: {}", status.message()))
            }
        }
        other => StoreError::Other(format!("etcd: {other}")),
    }
}

/// Whether an error from etcd says a lease does not exist (expired, revoked or never granted).
fn is_lease_not_found(err: &StoreError) -> bool {
    matches!(err, StoreError::Other(message) if message.contains("lease not found"))
}

fn to_key_value(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        mod_revision: kv.mod_revision(),
    }
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<Revision, StoreError> {
    header
        .map(|h| h.revision())
        .ok_or_else(|| StoreError::Other("etcd response without a header".to_string()))
}

#[async_trait]
impl Store for EtcdStore {
    fn endpoint(&self) -> String {
        format!("etcd://{}", self.endpoints.join(","))
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let mut kv = self.client.kv_client();
        let resp = self.call(kv.get(key, None)).await?;
        Ok(resp.kvs().first().map(to_key_value))
    }

    async fn get_prefix(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let mut kv = self.client.kv_client();
        let resp = self
            .call(kv.get(prefix, Some(GetOptions::new().with_prefix())))
            .await?;
        let revision = header_revision(resp.header())?;
        // etcd returns a range sorted by key.
        Ok((resp.kvs().iter().map(to_key_value).collect(), revision))
    }

    async fn txn(
        &self,
        compares: Vec<Compare>,
        ops: Vec<Op>,
    ) -> Result<Option<Revision>, StoreError> {
        let lease = ops.iter().find_map(|op| match op {
            Op::Put { lease, .. } => *lease,
            Op::Delete(_) => None,
        });
        let compares: Vec<EtcdCompare> = compares
            .into_iter()
            .map(|c| match c {
                Compare::Absent(key) => EtcdCompare::create_revision(key, CompareOp::Equal, 0),
                Compare::ModRevision(key, rev) => {
                    EtcdCompare::mod_revision(key, CompareOp::Equal, rev)
                }
            })
            .collect();
        let ops: Vec<TxnOp> = ops
            .into_iter()
            .map(|op| match op {
                Op::Put { key, value, lease } => {
                    TxnOp::put(key, value, lease.map(|id| PutOptions::new().with_lease(id)))
                }
                Op::Delete(key) => TxnOp::delete(key, None),
            })
            .collect();
        let mut kv = self.client.kv_client();
        let resp = match self
            .call(kv.txn(Txn::new().when(compares).and_then(ops)))
            .await
        {
            Ok(resp) => resp,
            Err(err) if is_lease_not_found(&err) => {
                return Err(StoreError::LeaseLost(lease.unwrap_or_default()));
            }
            Err(err) => return Err(err),
        };
        if !resp.succeeded() {
            return Ok(None);
        }
        Ok(Some(header_revision(resp.header())?))
    }

    async fn grant_lease(&self, ttl_secs: i64) -> Result<LeaseId, StoreError> {
        let mut lease = self.client.lease_client();
        let resp = self.call(lease.grant(ttl_secs, None)).await?;
        if !resp.error().is_empty() {
            return Err(StoreError::Other(format!(
                "etcd lease grant: {}",
                resp.error()
            )));
        }
        tracing::debug!(lease = resp.id(), ttl = resp.ttl(), "lease granted");
        Ok(resp.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        let mut client = self.client.lease_client();
        // etcd-client sends one keep-alive request and reads its response; a TTL <= 0 in
        // it ("lease not found") comes back as LeaseKeepAliveError.
        match self.call(client.keep_alive(lease)).await {
            Ok(_) => Ok(()),
            Err(StoreError::Other(message))
                if message.contains("lease keep alive error")
                    || message.contains("lease not found") =>
            {
                tracing::debug!(lease, %message, "lease lost");
                Err(StoreError::LeaseLost(lease))
            }
            Err(err) => Err(err),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        let mut client = self.client.lease_client();
        match self.call(client.revoke(lease)).await {
            Ok(_) => Ok(()),
            // Already gone: its keys are gone too.
            Err(err) if is_lease_not_found(&err) => Ok(()),
            Err(err) => Err(err),
        }
    }

    async fn watch_revisions(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<mpsc::Receiver<Vec<WatchEvent>>, StoreError> {
        let endpoint = self.endpoint();
        let mut client = self.client.watch_client();
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(after + 1);
        let mut stream = self.call(client.watch(prefix, Some(options))).await?;
        // The first response confirms the watch (or reports an error).
        let first = self.call(stream.message()).await?;
        let (tx, rx) = mpsc::channel(WATCH_CHANNEL);
        let Some(first) = first else {
            tracing::warn!(%endpoint, prefix, "etcd closed the watch at once");
            return Ok(rx);
        };
        let watch_id = first.watch_id();
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            let mut pending = Some(first);
            loop {
                let resp = match pending.take() {
                    Some(resp) => resp,
                    None => {
                        tokio::select! {
                            _ = tx.closed() => {
                                // The receiver is gone: cancel the watch (best effort).
                                let _ = tokio::time::timeout(REQUEST_TIMEOUT, stream.cancel(watch_id)).await;
                                return;
                            }
                            msg = stream.message() => match msg {
                                Ok(Some(resp)) => resp,
                                Ok(None) => {
                                    tracing::info!(%endpoint, %prefix, "etcd watch ended");
                                    return;
                                }
                                Err(err) => {
                                    tracing::info!(%endpoint, %prefix, error = %err, "etcd watch broke");
                                    return;
                                }
                            }
                        }
                    }
                };
                if resp.compact_revision() > 0 {
                    tracing::info!(%endpoint, %prefix, after, compacted = resp.compact_revision(), "etcd watch start revision compacted");
                    return;
                }
                if resp.canceled() {
                    tracing::info!(%endpoint, %prefix, reason = resp.cancel_reason(), "etcd watch canceled");
                    return;
                }
                // etcd puts all events of a revision in one response (the watch does not ask
                // for fragments); a response may hold several revisions.
                let events = resp.events().iter().filter_map(|event| {
                    let kv = event.kv()?;
                    Some(match event.event_type() {
                        EventType::Put => WatchEvent::Put(to_key_value(kv)),
                        EventType::Delete => WatchEvent::Delete {
                            key: String::from_utf8_lossy(kv.key()).into_owned(),
                            revision: kv.mod_revision(),
                        },
                    })
                });
                for revision in group_by_revision(events) {
                    if tx.send(revision).await.is_err() {
                        let _ =
                            tokio::time::timeout(REQUEST_TIMEOUT, stream.cancel(watch_id)).await;
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }
}
