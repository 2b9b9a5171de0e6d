//! The embedded [`Store`]: one JSON state file in a data directory, for one machine and
//! `tessera up` (no etcd), with etcd's semantics (revisions, watches, leases) emulated.
//!
//! Several processes may share the directory: every operation takes an exclusive lock on
//! `DIR/store.lock`, reads `DIR/store.json`, applies the change, writes a temporary file,
//! fsyncs it and renames it over the state (so a reader without the lock always sees a
//! whole state). Leases are expiry times (unix ms) checked on every operation and every
//! watch poll. Watches poll the state file every [`POLL_INTERVAL`] and replay a bounded
//! change log kept in the state; a watcher that falls behind the log gets its channel
//! closed (the caller re-reads), like an etcd watch on a compacted revision.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::store::{
    Compare, KeyValue, LeaseId, Op, Revision, Store, StoreError, WATCH_CHANNEL, WatchEvent,
    group_by_revision,
};

/// How often a watch looks at the state file.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// The change log keeps at most this many events...
const LOG_MAX_EVENTS: usize = 1000;
/// ...and at most this many bytes of values (the slot table is ~30 KB a version).
const LOG_MAX_BYTES: usize = 8 << 20;
/// Giving up on the lock after this long: another process holds it and is stuck.
const LOCK_TIMEOUT: Duration = Duration::from_secs(5);

const STATE_FILE: &str = "store.json";
const TEMP_FILE: &str = "store.json.tmp";
const LOCK_FILE: &str = "store.lock";

/// Bytes in the state file: the text itself when it is UTF-8 (the documents are JSON, so
/// the file stays readable), hex otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
enum Blob {
    Text(String),
    Hex { hex: String },
}

impl Blob {
    fn new(bytes: &[u8]) -> Blob {
        match std::str::from_utf8(bytes) {
            Ok(text) => Blob::Text(text.to_string()),
            Err(_) => Blob::Hex {
                hex: bytes.iter().map(|b| format!("{b:02x}")).collect(),
            },
        }
    }

    fn to_bytes(&self) -> Result<Vec<u8>, StoreError> {
        match self {
            Blob::Text(text) => Ok(text.as_bytes().to_vec()),
            Blob::Hex { hex } => {
                let bad = || StoreError::Other(format!("file store: bad hex value {hex:?}"));
                if hex.len() % 2 != 0 {
                    return Err(bad());
                }
                (0..hex.len())
                    .step_by(2)
                    .map(|i| {
                        hex.get(i..i + 2)
                            .and_then(|d| u8::from_str_radix(d, 16).ok())
                            .ok_or_else(bad)
                    })
                    .collect()
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Blob::Text(text) => text.len(),
            Blob::Hex { hex } => hex.len(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    value: Blob,
    create_revision: Revision,
    mod_revision: Revision,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease: Option<LeaseId>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Lease {
    ttl_secs: i64,
    /// Unix time, milliseconds.
    expires_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LogEvent {
    revision: Revision,
    key: String,
    /// `None` = delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<Blob>,
}

/// The whole store, as kept in `store.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    revision: Revision,
    next_lease: LeaseId,
    keys: BTreeMap<String, Entry>,
    leases: BTreeMap<LeaseId, Lease>,
    /// The most recent changes, oldest first.
    log: VecDeque<LogEvent>,
    /// Every event with a revision above this one is in `log`.
    log_floor: Revision,
}

impl Default for State {
    fn default() -> Self {
        // Like etcd, an empty store is at revision 1.
        State {
            revision: 1,
            next_lease: 1,
            keys: BTreeMap::new(),
            leases: BTreeMap::new(),
            log: VecDeque::new(),
            log_floor: 0,
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl State {
    fn entry_to_kv(key: &str, entry: &Entry) -> Result<KeyValue, StoreError> {
        Ok(KeyValue {
            key: key.to_string(),
            value: entry.value.to_bytes()?,
            mod_revision: entry.mod_revision,
        })
    }

    /// Deletes the keys of expired leases, one revision per lease. Returns whether anything
    /// changed.
    fn expire(&mut self, now_ms: i64) -> bool {
        let expired: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, lease)| lease.expires_ms <= now_ms)
            .map(|(id, _)| *id)
            .collect();
        for id in &expired {
            tracing::debug!(lease = id, "file store: lease expired");
            self.revoke(*id);
        }
        !expired.is_empty()
    }

    /// Removes a lease and deletes its keys (one new revision if it had any).
    fn revoke(&mut self, id: LeaseId) -> bool {
        if self.leases.remove(&id).is_none() {
            return false;
        }
        let keys: Vec<String> = self
            .keys
            .iter()
            .filter(|(_, e)| e.lease == Some(id))
            .map(|(k, _)| k.clone())
            .collect();
        if !keys.is_empty() {
            self.revision += 1;
            for key in keys {
                self.keys.remove(&key);
                self.log_event(key, None);
            }
            self.trim_log();
        }
        true
    }

    fn log_event(&mut self, key: String, value: Option<Blob>) {
        self.log.push_back(LogEvent {
            revision: self.revision,
            key,
            value,
        });
    }

    fn trim_log(&mut self) {
        let mut bytes: usize = self
            .log
            .iter()
            .map(|e| e.key.len() + e.value.as_ref().map_or(0, Blob::len))
            .sum();
        while self.log.len() > LOG_MAX_EVENTS || (bytes > LOG_MAX_BYTES && self.log.len() > 1) {
            let Some(old) = self.log.pop_front() else {
                break;
            };
            bytes -= old.key.len() + old.value.as_ref().map_or(0, Blob::len);
            self.log_floor = self.log_floor.max(old.revision);
        }
    }

    fn mod_revision(&self, key: &str) -> Revision {
        self.keys.get(key).map_or(0, |e| e.mod_revision)
    }

    /// Applies a transaction (leases already expired by the caller).
    fn txn(
        &mut self,
        compares: &[Compare],
        ops: Vec<Op>,
        now_ms: i64,
    ) -> Result<Option<Revision>, StoreError> {
        let holds = compares.iter().all(|c| match c {
            // etcd: create_revision == 0.
            Compare::Absent(key) => !self.keys.contains_key(key),
            // etcd: an absent key has mod_revision 0.
            Compare::ModRevision(key, rev) => self.mod_revision(key) == *rev,
        });
        if !holds {
            return Ok(None);
        }
        // Validate before writing anything, as etcd does.
        let mut seen = std::collections::BTreeSet::new();
        for op in &ops {
            let key = match op {
                Op::Put { key, lease, .. } => {
                    if let Some(id) = lease
                        && self.leases.get(id).is_none_or(|l| l.expires_ms <= now_ms)
                    {
                        return Err(StoreError::LeaseLost(*id));
                    }
                    key
                }
                Op::Delete(key) => key,
            };
            if !seen.insert(key.clone()) {
                return Err(StoreError::Other(format!(
                    "duplicate key {key:?} in one transaction"
                )));
            }
        }
        let changes = ops.iter().any(|op| match op {
            Op::Put { .. } => true,
            Op::Delete(key) => self.keys.contains_key(key),
        });
        if !changes {
            return Ok(Some(self.revision));
        }
        self.revision += 1;
        let revision = self.revision;
        for op in ops {
            match op {
                Op::Put { key, value, lease } => {
                    let value = Blob::new(&value);
                    let create_revision =
                        self.keys.get(&key).map_or(revision, |e| e.create_revision);
                    self.keys.insert(
                        key.clone(),
                        Entry {
                            value: value.clone(),
                            create_revision,
                            mod_revision: revision,
                            lease,
                        },
                    );
                    self.log_event(key, Some(value));
                }
                Op::Delete(key) => {
                    if self.keys.remove(&key).is_some() {
                        self.log_event(key, None);
                    }
                }
            }
        }
        self.trim_log();
        Ok(Some(revision))
    }

    /// The earliest lease expiry, if any lease exists.
    fn next_expiry_ms(&self) -> Option<i64> {
        self.leases.values().map(|l| l.expires_ms).min()
    }
}

/// Paths of one store directory and the lock/read/write cycle on them.
#[derive(Debug)]
struct Files {
    dir: PathBuf,
    state: PathBuf,
    temp: PathBuf,
    lock: PathBuf,
}

fn io_error(what: &str, path: &Path, err: std::io::Error) -> StoreError {
    StoreError::Other(format!("file store: {what} {}: {err}", path.display()))
}

impl Files {
    fn new(dir: &Path) -> Files {
        Files {
            dir: dir.to_path_buf(),
            state: dir.join(STATE_FILE),
            temp: dir.join(TEMP_FILE),
            lock: dir.join(LOCK_FILE),
        }
    }

    fn endpoint(&self) -> String {
        format!("file://{}", self.dir.display())
    }

    /// Takes the exclusive lock (bounded), released when the returned file is dropped.
    // `File::try_lock` is stable since Rust 1.89; the workspace's rust-version (1.85) should
    // be raised to 1.89.
    #[allow(clippy::incompatible_msrv)]
    fn lock(&self) -> Result<File, StoreError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock)
            .map_err(|e| io_error("cannot open", &self.lock, e))?;
        let start = Instant::now();
        let mut pause = Duration::from_micros(200);
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(file),
                Err(TryLockError::WouldBlock) => {
                    if start.elapsed() > LOCK_TIMEOUT {
                        return Err(StoreError::Unreachable {
                            endpoint: self.endpoint(),
                            message: format!(
                                "{} held by another process for over {LOCK_TIMEOUT:?}",
                                self.lock.display()
                            ),
                        });
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(5));
                }
                Err(TryLockError::Error(e)) => return Err(io_error("cannot lock", &self.lock, e)),
            }
        }
    }

    /// Reads the state (a fresh store if there is no state file yet). Safe without the lock:
    /// the file is only ever replaced whole, by rename.
    fn read(&self) -> Result<State, StoreError> {
        match std::fs::read(&self.state) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                StoreError::Other(format!("file store: corrupt {}: {e}", self.state.display()))
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(io_error("cannot read", &self.state, e)),
        }
    }

    /// Writes the state durably: temp file, fsync, rename, fsync of the directory.
    fn write(&self, state: &State) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(state)
            .map_err(|e| StoreError::Other(format!("file store: encode: {e}")))?;
        let mut file =
            File::create(&self.temp).map_err(|e| io_error("cannot create", &self.temp, e))?;
        file.write_all(&bytes)
            .map_err(|e| io_error("cannot write", &self.temp, e))?;
        file.sync_all()
            .map_err(|e| io_error("cannot sync", &self.temp, e))?;
        drop(file);
        std::fs::rename(&self.temp, &self.state)
            .map_err(|e| io_error("cannot rename onto", &self.state, e))?;
        if let Ok(dir) = File::open(&self.dir) {
            // Best effort: makes the rename durable.
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// One operation: lock, read, expire leases, apply `f`, write if anything changed.
    /// `f` returns its result and whether it changed the state.
    fn update<T>(
        &self,
        f: impl FnOnce(&mut State, i64) -> Result<(T, bool), StoreError>,
    ) -> Result<T, StoreError> {
        let _lock = self.lock()?;
        let mut state = self.read()?;
        let now = now_ms();
        let expired = state.expire(now);
        let (result, changed) = match f(&mut state, now) {
            Ok(done) => done,
            Err(err) => {
                if expired {
                    self.write(&state)?;
                }
                return Err(err);
            }
        };
        if expired || changed {
            self.write(&state)?;
        }
        Ok(result)
    }

    /// A cheap fingerprint of the state file, to notice a change without reading it.
    fn fingerprint(&self) -> Option<(u64, u64, i64, i64)> {
        let meta = std::fs::metadata(&self.state).ok()?;
        Some((meta.ino(), meta.len(), meta.mtime(), meta.mtime_nsec()))
    }
}

/// The embedded store on a directory. Cheap to clone; any number of `FileStore`s (in any
/// number of processes on the machine) may use the same directory.
#[derive(Debug, Clone)]
pub struct FileStore {
    files: Arc<Files>,
}

impl FileStore {
    /// Opens (creating it if needed) the store in `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<FileStore, StoreError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| io_error("cannot create", dir, e))?;
        // Absolute, so the endpoint in logs says where it is.
        let dir = dir
            .canonicalize()
            .map_err(|e| io_error("cannot resolve", dir, e))?;
        let files = Files::new(&dir);
        // Create the state file now (and check it parses), so readers find it.
        files.update(|_, _| Ok(((), !files.state.exists())))?;
        tracing::debug!(dir = %dir.display(), "file store opened");
        Ok(FileStore {
            files: Arc::new(files),
        })
    }

    /// The directory of the store.
    pub fn dir(&self) -> &Path {
        &self.files.dir
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Files) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let files = self.files.clone();
        tokio::task::spawn_blocking(move || f(&files))
            .await
            .map_err(|e| StoreError::Other(format!("file store task failed: {e}")))?
    }
}

#[async_trait]
impl Store for FileStore {
    fn endpoint(&self) -> String {
        self.files.endpoint()
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_string();
        self.blocking(move |files| {
            files.update(|state, _| {
                let kv = state
                    .keys
                    .get(&key)
                    .map(|e| State::entry_to_kv(&key, e))
                    .transpose()?;
                Ok((kv, false))
            })
        })
        .await
    }

    async fn get_prefix(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let prefix = prefix.to_string();
        self.blocking(move |files| {
            files.update(|state, _| {
                let kvs = state
                    .keys
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .map(|(k, e)| State::entry_to_kv(k, e))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(((kvs, state.revision), false))
            })
        })
        .await
    }

    async fn txn(
        &self,
        compares: Vec<Compare>,
        ops: Vec<Op>,
    ) -> Result<Option<Revision>, StoreError> {
        self.blocking(move |files| {
            files.update(|state, now| {
                let before = state.revision;
                let result = state.txn(&compares, ops, now)?;
                Ok((result, state.revision != before))
            })
        })
        .await
    }

    async fn grant_lease(&self, ttl_secs: i64) -> Result<LeaseId, StoreError> {
        if ttl_secs <= 0 {
            return Err(StoreError::Other(format!(
                "lease TTL must be positive, not {ttl_secs}"
            )));
        }
        self.blocking(move |files| {
            files.update(|state, now| {
                let id = state.next_lease;
                state.next_lease += 1;
                state.leases.insert(
                    id,
                    Lease {
                        ttl_secs,
                        expires_ms: now.saturating_add(ttl_secs.saturating_mul(1000)),
                    },
                );
                tracing::debug!(lease = id, ttl_secs, "file store: lease granted");
                Ok((id, true))
            })
        })
        .await
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.blocking(move |files| {
            files.update(|state, now| match state.leases.get_mut(&lease) {
                Some(l) => {
                    l.expires_ms = now.saturating_add(l.ttl_secs.saturating_mul(1000));
                    Ok(((), true))
                }
                None => Err(StoreError::LeaseLost(lease)),
            })
        })
        .await
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.blocking(move |files| files.update(|state, _| Ok(((), state.revoke(lease)))))
            .await
    }

    async fn watch_revisions(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<mpsc::Receiver<Vec<WatchEvent>>, StoreError> {
        let (tx, rx) = mpsc::channel(WATCH_CHANNEL);
        let watcher = Watcher {
            files: self.files.clone(),
            prefix: prefix.to_string(),
            sent: after,
            fingerprint: None,
            next_expiry_ms: None,
        };
        // The first poll runs now, so errors reading the state are returned to the caller.
        let (mut watcher, mut events) = watcher.poll_blocking().await?;
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(POLL_INTERVAL);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let Some(batch) = events.take() else {
                    tracing::info!(
                        endpoint = %watcher.files.endpoint(),
                        prefix = %watcher.prefix,
                        after = watcher.sent,
                        "file store watch fell behind the change log; closing it"
                    );
                    return;
                };
                // A poll reads a whole state, so every revision in it is complete.
                for revision in group_by_revision(batch) {
                    if tx.send(revision).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = ticker.tick() => {}
                }
                let endpoint = watcher.files.endpoint();
                match watcher.poll_blocking().await {
                    Ok((polled, polled_events)) => {
                        watcher = polled;
                        events = polled_events;
                    }
                    Err(err) => {
                        tracing::warn!(%endpoint, error = %err, "file store watch failed; closing it");
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }
}

/// The state of one watch between polls.
struct Watcher {
    files: Arc<Files>,
    prefix: String,
    /// Every event up to this revision has been sent.
    sent: Revision,
    /// The state file as last read.
    fingerprint: Option<(u64, u64, i64, i64)>,
    /// The earliest lease expiry in the state as last read.
    next_expiry_ms: Option<i64>,
}

impl Watcher {
    /// [`Watcher::poll`] on the blocking pool.
    async fn poll_blocking(mut self) -> Result<(Watcher, Option<Vec<WatchEvent>>), StoreError> {
        tokio::task::spawn_blocking(move || self.poll().map(|events| (self, events)))
            .await
            .map_err(|e| StoreError::Other(format!("file store watch task failed: {e}")))?
    }

    /// One poll: expires leases if one is due, then reads the state if the file changed and
    /// returns the new events under the prefix. `None` = fell behind the log.
    fn poll(&mut self) -> Result<Option<Vec<WatchEvent>>, StoreError> {
        if self.next_expiry_ms.is_some_and(|t| t <= now_ms()) {
            // A lease is due: expire it under the lock (a no-op if a writer already did).
            self.files.update(|_, _| Ok(((), false)))?;
        }
        let fingerprint = self.files.fingerprint();
        if fingerprint.is_some() && fingerprint == self.fingerprint {
            return Ok(Some(Vec::new()));
        }
        let state = self.files.read()?;
        self.fingerprint = fingerprint;
        self.next_expiry_ms = state.next_expiry_ms();
        if state.revision <= self.sent {
            return Ok(Some(Vec::new()));
        }
        if state.log_floor > self.sent {
            return Ok(None);
        }
        let mut events = Vec::new();
        for event in state
            .log
            .iter()
            .filter(|e| e.revision > self.sent && e.key.starts_with(&self.prefix))
        {
            events.push(match &event.value {
                Some(value) => WatchEvent::Put(KeyValue {
                    key: event.key.clone(),
                    value: value.to_bytes()?,
                    mod_revision: event.revision,
                }),
                None => WatchEvent::Delete {
                    key: event.key.clone(),
                    revision: event.revision,
                },
            });
        }
        self.sent = state.revision;
        Ok(Some(events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A temporary directory, removed on drop.
    pub(crate) struct TempDir(PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> TempDir {
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!(
                "tessera-{tag}-{}-{n}-{}",
                std::process::id(),
                now_ms()
            ));
            std::fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
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

    #[tokio::test]
    async fn watch_sees_lease_expiry_without_writers() {
        let dir = TempDir::new("watchexp");
        let store = FileStore::open(dir.path()).unwrap();
        let lease = store.grant_lease(1).await.unwrap();
        let r = store
            .put("/e/proxy", b"p".to_vec(), Some(lease))
            .await
            .unwrap();
        let watcher = FileStore::open(dir.path()).unwrap();
        let mut rx = watcher.watch_prefix("/e/", r).await.unwrap();
        let start = Instant::now();
        let event = recv(&mut rx).await;
        assert!(
            matches!(event, WatchEvent::Delete { ref key, .. } if key == "/e/proxy"),
            "{event:?}"
        );
        assert!(
            start.elapsed() < Duration::from_millis(1500),
            "expired after {:?}",
            start.elapsed()
        );
    }

    #[tokio::test]
    async fn watch_behind_the_log_closes() {
        let dir = TempDir::new("behind");
        let store = FileStore::open(dir.path()).unwrap();
        let r0 = store.put("/b/first", b"0".to_vec(), None).await.unwrap();
        let ops: Vec<Op> = (0..=LOG_MAX_EVENTS)
            .map(|i| put(&format!("/b/{i:05}"), "v"))
            .collect();
        let r1 = store.txn(vec![], ops).await.unwrap().unwrap();
        let mut rx = store.watch_prefix("/b/", r0).await.unwrap();
        let closed = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("closes in time");
        assert_eq!(closed, None, "a watch behind the change log closes");
        // From the latest revision it works.
        let mut rx = store.watch_prefix("/b/", r1).await.unwrap();
        store.put("/b/next", b"n".to_vec(), None).await.unwrap();
        assert!(matches!(recv(&mut rx).await, WatchEvent::Put(kv) if kv.key == "/b/next"));
    }
}
