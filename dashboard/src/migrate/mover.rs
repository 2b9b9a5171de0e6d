//! Moving a step's keys: walk the source master with SCAN in every db that holds keys
//! (INFO keyspace), keep the keys of the step's slots, and send them to the destination in
//! pipelined `MIGRATE host port "" db timeout REPLACE [AUTH pass] KEYS k1 k2 ...` batches,
//! pass after pass, until a full pass finds none. The keys an earlier walk saw in the step's
//! slots ([`KeyIndex`]) are sent meanwhile on a second connection, so the first pass usually
//! finds none.
//!
//! Once every proxy has applied the migrating revision, no write reaches the source for these
//! slots (a proxy moves a key before it writes it, on the destination), so the source's set of
//! such keys only shrinks, and a pass that finds none is the last.
//!
//! `REPLACE`: a key of a migrating slot still on the source has not been touched by any
//! client since the barrier (a proxy would have moved it first), so the source's copy is the
//! one clients last saw; a key of that name on the destination can only be one no client
//! could reach (left by a forced assignment, say). Without `REPLACE`, Redis answers `BUSYKEY`
//! and keeps the key on the source, and the step could never finish.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::index::{KeyIndex, SourceKeys};
use super::plan::MoveOptions;
use super::redis::{RedisConn, RedisError, Reply};

/// Keys asked of SCAN per call.
const SCAN_COUNT: &[u8] = b"1000";

/// Added to MIGRATE's own timeout in the migrator's bounds: the key's DUMP on the source and
/// the round trips.
const MIGRATE_SLACK: Duration = Duration::from_secs(5);

/// What one step moves, and where.
pub struct MoveJob {
    /// The source group (whose index the walks fill).
    pub from: u32,
    pub from_addr: String,
    pub to_addr: String,
    pub password: String,
    pub slots: HashSet<u16>,
    /// Slots of the source's steps still waiting: a walk keeps their keys in the index.
    pub queued_slots: HashSet<u16>,
    pub options: MoveOptions,
}

/// What the mover reports as it goes.
pub trait Report: Send + Sync {
    /// `n` more keys were moved.
    fn moved(&self, n: u64);
    /// Whether to stop now (the step or the dashboard is going away).
    fn stop(&self) -> bool;
}

/// The keys the source holds in all its dbs (INFO keyspace), for an estimate of the work.
pub async fn source_keys(job: &MoveJob) -> Result<u64, RedisError> {
    let mut conn = connect(job, &job.from_addr).await?;
    Ok(keyspace(&mut conn).await?.iter().map(|(_, n)| n).sum())
}

/// Moves every key of the job's slots: those an earlier walk of the source saw (the index)
/// on one connection while, on another, passes over the source move the others, until a
/// pass finds none. A completed pass leaves in the index the keys it saw of the source's
/// steps still waiting. Returns the number of keys moved (sent in batches Redis answered
/// `OK`).
pub async fn move_keys(
    job: &MoveJob,
    index: &KeyIndex,
    report: &dyn Report,
) -> Result<u64, RedisError> {
    let to = split_addr(&job.to_addr);
    let to = (to.0.as_str(), to.1.as_str());
    let known = index.take(job.from, &job.slots);
    let (sent, walked) = tokio::try_join!(
        send_known(job, &known, to, report),
        walk(job, index, &known, to, report)
    )?;
    Ok(sent + walked)
}

/// Sends the keys the index had for the job's slots.
async fn send_known(
    job: &MoveJob,
    known: &HashMap<u32, HashSet<Vec<u8>>>,
    to: (&str, &str),
    report: &dyn Report,
) -> Result<u64, RedisError> {
    if known.is_empty() {
        return Ok(0);
    }
    let started = Instant::now();
    let round = job.options.batch_keys * job.options.pipeline;
    let mut conn = connect(job, &job.from_addr).await?;
    let mut total = 0;
    let mut dbs: Vec<_> = known.iter().collect();
    dbs.sort_by_key(|(db, _)| **db);
    for (db, keys) in dbs {
        let db_text = db.to_string();
        conn.call(&[b"SELECT", db_text.as_bytes()]).await?;
        let keys: Vec<&Vec<u8>> = keys.iter().collect();
        for chunk in keys.chunks(round) {
            let mut pending = chunk.iter().map(|k| (*k).clone()).collect();
            total += send_round(&mut conn, job, to, &db_text, &mut pending, report).await?;
            if report.stop() {
                return Ok(total);
            }
        }
    }
    tracing::info!(
        keys = known.values().map(HashSet::len).sum::<usize>(),
        moved = total,
        elapsed = ?started.elapsed(),
        "sent the keys an earlier walk saw"
    );
    Ok(total)
}

/// Walks the source pass after pass, moving the keys of the job's slots (but those `known`,
/// which [`send_known`] sends) until a pass finds none.
async fn walk(
    job: &MoveJob,
    index: &KeyIndex,
    known: &HashMap<u32, HashSet<Vec<u8>>>,
    to: (&str, &str),
    report: &dyn Report,
) -> Result<u64, RedisError> {
    let round = job.options.batch_keys * job.options.pipeline;
    let mut total = 0;
    for pass in 1.. {
        let started = Instant::now();
        let mut conn = connect(job, &job.from_addr).await?;
        let (mut found, mut walked) = (0, 0);
        let mut seen = SourceKeys::default();
        let mut indexing = !job.queued_slots.is_empty();
        for (db, _) in keyspace(&mut conn).await? {
            if report.stop() {
                return Ok(total);
            }
            let db_text = db.to_string();
            conn.call(&[b"SELECT", db_text.as_bytes()]).await?;
            let known = known.get(&db);
            let mut cursor = b"0".to_vec();
            let mut pending: Vec<Vec<u8>> = Vec::new();
            loop {
                let reply = conn.call(&[b"SCAN", &cursor, b"COUNT", SCAN_COUNT]).await?;
                let (next, keys) = scan_page(reply).ok_or_else(|| RedisError::Reply {
                    addr: job.from_addr.clone(),
                    command: "SCAN".to_string(),
                    message: "unexpected reply".to_string(),
                })?;
                walked += keys.len();
                for key in keys {
                    let slot = tessera_topology::slot::slot(&key) as u16;
                    if job.slots.contains(&slot) {
                        if !known.is_some_and(|k| k.contains(&key)) {
                            pending.push(key);
                        }
                    } else if indexing && job.queued_slots.contains(&slot) {
                        indexing = seen.add(db, slot, &key);
                    }
                }
                cursor = next;
                let last = cursor == b"0";
                if pending.len() >= round || (last && !pending.is_empty()) {
                    found += pending.len();
                    total += send_round(&mut conn, job, to, &db_text, &mut pending, report).await?;
                    if report.stop() {
                        return Ok(total);
                    }
                }
                if last {
                    break;
                }
            }
        }
        if !job.queued_slots.is_empty() {
            index.replace(job.from, seen);
        }
        tracing::info!(pass, walked, found, elapsed = ?started.elapsed(), "walked the source");
        if found == 0 {
            break;
        }
    }
    Ok(total)
}

/// Sends one round of pipelined batches (emptying `keys`), reports it and pauses after it.
async fn send_round(
    conn: &mut RedisConn,
    job: &MoveJob,
    to: (&str, &str),
    db: &str,
    keys: &mut Vec<Vec<u8>>,
    report: &dyn Report,
) -> Result<u64, RedisError> {
    let n = migrate(conn, job, to, db, keys).await?;
    report.moved(n);
    if job.options.pause_ms > 0 {
        tokio::time::sleep(Duration::from_millis(job.options.pause_ms)).await;
    }
    Ok(n)
}

async fn connect(job: &MoveJob, addr: &str) -> Result<RedisConn, RedisError> {
    // MIGRATE answers once the keys are restored on the destination: give it its timeout.
    let bound = Duration::from_millis(job.options.migrate_timeout_ms) + MIGRATE_SLACK;
    RedisConn::connect(addr, &job.password, bound).await
}

/// Sends `keys` as pipelined MIGRATE batches (emptying it); the keys of batches answered OK.
async fn migrate(
    conn: &mut RedisConn,
    job: &MoveJob,
    (host, port): (&str, &str),
    db: &str,
    keys: &mut Vec<Vec<u8>>,
) -> Result<u64, RedisError> {
    let timeout = job.options.migrate_timeout_ms.to_string();
    let mut commands = Vec::new();
    let mut sizes = Vec::new();
    for batch in keys.chunks(job.options.batch_keys) {
        let mut cmd: Vec<Vec<u8>> = ["MIGRATE", host, port, "", db, timeout.as_str(), "REPLACE"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        if !job.password.is_empty() {
            cmd.push(b"AUTH".to_vec());
            cmd.push(job.password.as_bytes().to_vec());
        }
        cmd.push(b"KEYS".to_vec());
        cmd.extend(batch.iter().cloned());
        commands.push(cmd);
        sizes.push(batch.len() as u64);
    }
    // Redis bounds the wait for each key's RESTORE by the timeout, not the whole command:
    // a round of big keys may take the timeout once per key.
    let bound = Duration::from_millis(job.options.migrate_timeout_ms)
        .saturating_mul(keys.len() as u32)
        + MIGRATE_SLACK;
    keys.clear();
    let started = Instant::now();
    let replies = conn.pipeline_within(&commands, bound).await?;
    let mut moved = 0;
    for (reply, n) in replies.into_iter().zip(sizes) {
        match reply {
            Reply::Simple(s) if s == "OK" => moved += n,
            Reply::Simple(s) if s == "NOKEY" => {}
            Reply::Error(message) => {
                return Err(RedisError::Reply {
                    addr: conn.addr().to_string(),
                    command: format!("MIGRATE to {}:{}", host, port),
                    message,
                });
            }
            other => {
                return Err(RedisError::Reply {
                    addr: conn.addr().to_string(),
                    command: "MIGRATE".to_string(),
                    message: format!("unexpected reply {other:?}"),
                });
            }
        }
    }
    tracing::debug!(moved, elapsed = ?started.elapsed(), "migrated a round of batches");
    Ok(moved)
}

/// `(db, keys)` of every db INFO keyspace lists (`db3:keys=10,expires=0,avg_ttl=0`).
async fn keyspace(conn: &mut RedisConn) -> Result<Vec<(u32, u64)>, RedisError> {
    let reply = conn.call(&[b"INFO", b"keyspace"]).await?;
    let Reply::Bulk(Some(text)) = reply else {
        return Ok(Vec::new());
    };
    Ok(parse_keyspace(&String::from_utf8_lossy(&text)))
}

fn parse_keyspace(text: &str) -> Vec<(u32, u64)> {
    text.lines()
        .filter_map(|line| {
            let (db, fields) = line.trim().strip_prefix("db")?.split_once(':')?;
            let keys = fields
                .split(',')
                .find_map(|f| f.strip_prefix("keys="))?
                .parse()
                .ok()?;
            Some((db.parse().ok()?, keys))
        })
        .filter(|(_, keys)| *keys > 0)
        .collect()
}

/// A SCAN reply: the next cursor and the keys.
fn scan_page(reply: Reply) -> Option<(Vec<u8>, Vec<Vec<u8>>)> {
    let Reply::Array(Some(mut parts)) = reply else {
        return None;
    };
    if parts.len() != 2 {
        return None;
    }
    let Reply::Array(Some(items)) = parts.pop()? else {
        return None;
    };
    let Reply::Bulk(Some(cursor)) = parts.pop()? else {
        return None;
    };
    let keys = items
        .into_iter()
        .map(|k| match k {
            Reply::Bulk(Some(k)) => Some(k),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    Some((cursor, keys))
}

/// `host:port` (or `[v6]:port`) as MIGRATE's host and port arguments.
fn split_addr(addr: &str) -> (String, String) {
    match addr.rsplit_once(':') {
        Some((host, port)) => (
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port.to_string(),
        ),
        None => (addr.to_string(), "6379".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source that answers a round of MIGRATEs after `delay`, as Redis does when each key's
    /// RESTORE takes most of MIGRATE's timeout (the timeout bounds each key's reply, not the
    /// command's).
    async fn slow_source(delay: Duration) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            tokio::time::sleep(delay).await;
            let _ = stream.write_all(b"+OK\r\n").await;
            let _ = stream.read(&mut buf).await;
        });
        addr
    }

    #[tokio::test]
    async fn a_batch_of_slow_keys_gets_each_key_its_timeout() {
        let from = slow_source(Duration::from_millis(6500)).await;
        let job = MoveJob {
            from: 1,
            from_addr: from.clone(),
            to_addr: "127.0.0.1:1".into(),
            password: String::new(),
            slots: HashSet::new(),
            queued_slots: HashSet::new(),
            options: MoveOptions {
                batch_keys: 4,
                migrate_timeout_ms: 1000,
                ..MoveOptions::default()
            },
        };
        let mut conn = connect(&job, &from).await.unwrap();
        let mut keys: Vec<Vec<u8>> = (0..4).map(|i| format!("big:{i}").into_bytes()).collect();
        let moved = migrate(&mut conn, &job, ("127.0.0.1", "1"), "0", &mut keys).await;
        assert_eq!(moved.unwrap(), 4);
    }

    struct Count(std::sync::atomic::AtomicU64);

    impl Report for Count {
        fn moved(&self, n: u64) {
            self.0.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
        fn stop(&self) -> bool {
            false
        }
    }

    fn slots(range: std::ops::Range<u16>) -> HashSet<u16> {
        range.collect()
    }

    fn stat(conn: &mut tessera_testkit::RawConn, command: &str) -> u64 {
        let info = conn.cmd(&["INFO", "commandstats"]);
        let text = String::from_utf8_lossy(info.bytes().unwrap()).to_string();
        let prefix = format!("cmdstat_{command}:calls=");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
    }

    /// Two servers, the first holding `n` keys `k:<i>` (in db `db(i)`, 0 or 2), and a
    /// connection to it.
    fn source_and_destination(
        n: usize,
        db: impl Fn(usize) -> u32,
    ) -> (
        tessera_testkit::RedisServer,
        tessera_testkit::RedisServer,
        tessera_testkit::RawConn,
    ) {
        let (a, b) = (
            tessera_testkit::RedisServer::start(),
            tessera_testkit::RedisServer::start(),
        );
        let mut src = a.raw();
        let mut sets = Vec::new();
        for i in 0..n {
            sets.extend(tessera_testkit::encode(&["SELECT", &db(i).to_string()]));
            sets.extend(tessera_testkit::encode(&[
                "SET",
                &format!("k:{i}"),
                &format!("v{i}"),
            ]));
        }
        src.send(&sets);
        for _ in 0..2 * n {
            assert!(!src.read().unwrap().is_error());
        }
        (a, b, src)
    }

    /// `(db, key)` of every key of `slots` on a server, over dbs 0 and 2.
    fn keys_in(conn: &mut tessera_testkit::RawConn, slots: &HashSet<u16>) -> Vec<(u32, String)> {
        let mut out = Vec::new();
        for db in [0u32, 2] {
            conn.cmd(&["SELECT", &db.to_string()]);
            for key in conn.cmd(&["KEYS", "*"]).items().unwrap() {
                let key = String::from_utf8(key.bytes().unwrap().to_vec()).unwrap();
                if slots.contains(&(tessera_topology::slot::slot(key.as_bytes()) as u16)) {
                    out.push((db, key));
                }
            }
        }
        out.sort();
        out
    }

    /// Three steps off one source, one after another: the first one's walks keep the keys of
    /// the two waiting steps, so each of those moves its keys before its walk, and that walk
    /// (one pass) finds none; a key written after an index was made, in a slot of a waiting
    /// step, is still found and moved, and a key deleted since costs nothing.
    #[tokio::test]
    async fn steps_move_the_keys_earlier_walks_saw_then_walk_once() {
        let (a, b, mut src) = source_and_destination(8000, |i| if i % 4 == 0 { 2 } else { 0 });
        let (s1, s2, s3, rest) = (
            slots(0..256),
            slots(256..512),
            slots(512..768),
            slots(768..1024),
        );
        let before: Vec<_> = [&s1, &s2, &s3]
            .iter()
            .map(|s| keys_in(&mut src, s))
            .collect();
        let kept = keys_in(&mut src, &rest);
        let index = KeyIndex::default();
        let job = |slots: &HashSet<u16>, queued: HashSet<u16>| MoveJob {
            from: 1,
            from_addr: a.addr(),
            to_addr: b.addr(),
            password: String::new(),
            slots: slots.clone(),
            queued_slots: queued,
            options: MoveOptions::default(),
        };
        let count = Count(Default::default());
        let queued: HashSet<u16> = s2.union(&s3).copied().collect();
        move_keys(&job(&s1, queued), &index, &count).await.unwrap();

        // Written and deleted after the index was made, in the second step's slots.
        src.cmd(&["SELECT", "0"]);
        let late = tessera_testkit::find_key("late:", |k| {
            s2.contains(&(tessera_topology::slot::slot(k) as u16))
        });
        assert_eq!(src.cmd(&["SET", &late, "new"]), tessera_testkit::Resp::ok());
        let (gone_db, gone) = before[1][0].clone();
        src.cmd(&["SELECT", &gone_db.to_string()]);
        assert_eq!(src.cmd(&["DEL", &gone]).int(), Some(1));
        move_keys(&job(&s2, s3.clone()), &index, &count)
            .await
            .unwrap();

        // One pass over the source before the last step (which only shrinks it), counted
        // as the step's SCANs are: two passes would take about twice as many.
        let one_pass = |src: &mut tessera_testkit::RawConn| {
            src.cmd(&["CONFIG", "RESETSTAT"]);
            for db in ["0", "2"] {
                src.cmd(&["SELECT", db]);
                let mut cursor = "0".to_string();
                loop {
                    let page = src.cmd(&["SCAN", &cursor, "COUNT", "1000"]);
                    let next = page.items().unwrap()[0].bytes().unwrap();
                    cursor = String::from_utf8(next.to_vec()).unwrap();
                    if cursor == "0" {
                        break;
                    }
                }
            }
            stat(src, "scan")
        };
        let pass = one_pass(&mut src);
        assert!(pass >= 4, "{pass} SCANs a pass");
        src.cmd(&["CONFIG", "RESETSTAT"]);
        move_keys(&job(&s3, HashSet::new()), &index, &count)
            .await
            .unwrap();
        let scans = stat(&mut src, "scan");
        let migrates = stat(&mut src, "migrate");
        assert!(
            scans <= pass,
            "the last step walked the source once: {scans} SCANs"
        );
        let s3_by_db: Vec<usize> = [0, 2]
            .iter()
            .map(|d| before[2].iter().filter(|(db, _)| db == d).count())
            .collect();
        let batches: u64 = s3_by_db.iter().map(|n| n.div_ceil(100) as u64).sum();
        assert_eq!(
            migrates, batches,
            "the last step's keys went in the index's batches only"
        );

        let mut dst = b.raw();
        let all: HashSet<u16> = slots(0..768);
        assert!(
            keys_in(&mut src, &all).is_empty(),
            "no key of the moved slots is left"
        );
        assert_eq!(keys_in(&mut src, &rest), kept);
        let mut expected: Vec<(u32, String)> = before.concat();
        expected.retain(|k| *k != (gone_db, gone.clone()));
        expected.push((0, late.clone()));
        expected.sort();
        assert_eq!(keys_in(&mut dst, &all), expected);
        dst.cmd(&["SELECT", "0"]);
        assert_eq!(dst.cmd(&["GET", &late]).bytes(), Some(&b"new"[..]));
    }

    /// A step whose listed keys cannot be sent (the destination is down) fails and keeps
    /// every key on the source; run again (as the migrator retries, with no index left), its
    /// walk moves them all.
    #[tokio::test]
    async fn a_failed_sending_of_listed_keys_loses_none_and_a_retry_walks() {
        let (a, b, mut src) = source_and_destination(3000, |_| 0);
        let (s1, s2) = (slots(0..256), slots(256..512));
        let listed = keys_in(&mut src, &s2);
        let index = KeyIndex::default();
        let job = |slots: &HashSet<u16>, queued: HashSet<u16>, to: String| MoveJob {
            from: 1,
            from_addr: a.addr(),
            to_addr: to,
            password: String::new(),
            slots: slots.clone(),
            queued_slots: queued,
            options: MoveOptions {
                migrate_timeout_ms: 200,
                ..MoveOptions::default()
            },
        };
        let count = Count(Default::default());
        move_keys(&job(&s1, s2.clone(), b.addr()), &index, &count)
            .await
            .unwrap();
        let down = format!("127.0.0.1:{}", tessera_testkit::free_port());
        let failed = move_keys(&job(&s2, HashSet::new(), down), &index, &count).await;
        assert!(failed.is_err(), "{failed:?}");
        assert_eq!(
            keys_in(&mut src, &s2),
            listed,
            "every key is still on the source"
        );
        move_keys(&job(&s2, HashSet::new(), b.addr()), &index, &count)
            .await
            .unwrap();
        assert!(keys_in(&mut src, &s2).is_empty());
        assert_eq!(keys_in(&mut b.raw(), &s2), listed);
    }

    #[test]
    fn keyspace_lines() {
        let text = "# Keyspace\r\ndb0:keys=10,expires=1,avg_ttl=0\r\ndb3:keys=2,expires=0,avg_ttl=0\r\ndb5:keys=0,expires=0,avg_ttl=0\r\n";
        assert_eq!(parse_keyspace(text), [(0, 10), (3, 2)]);
    }

    #[test]
    fn addresses() {
        assert_eq!(
            split_addr("127.0.0.1:6380"),
            ("127.0.0.1".into(), "6380".into())
        );
        assert_eq!(split_addr("[::1]:6380"), ("::1".into(), "6380".into()));
    }
}
