//! Big-key benchmark: how long `MIGRATE` of one big list, hash, zset, set (and a 100 MB
//! string) takes, and how long it blocks the source and the destination meanwhile.
//!
//! Run: `cargo bench --bench bigkeys` (runs only when cargo passes `--bench`). Needs
//! `redis-server`. Two servers from the test kit; for each key, a client on each server pings
//! in a loop during the MIGRATE (max and p99 latency: how long each was blocked), and a
//! client with a 100 ms read timeout sends GETs to the source (how many time out). It also
//! times what a migrator could use to find big keys (type-specific length, MEMORY USAGE with
//! its default 5 samples and with SAMPLES 0), DUMP alone, and a MIGRATE whose timeout is
//! below the RESTORE time. `TESSERA_BENCH_ELEMENTS` (default `100000,1000000`) sets the
//! collection sizes, `TESSERA_BENCH_STRING_MB` (default 100, 0 skips it) the string. The
//! table is printed and written to `target/bench-bigkeys.md`.

use tessera_testkit as harness;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use harness::RedisServer;

/// The MIGRATE timeout of the measured transfers: large enough never to cut one short.
const GENEROUS_TIMEOUT_MS: u64 = 120_000;
/// The timeout of the run meant to show a transfer cut short.
const SHORT_TIMEOUT_MS: u64 = 100;
/// The read timeout of the client that sends GETs to the source meanwhile.
const CLIENT_TIMEOUT: Duration = Duration::from_millis(100);

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// Fills `key` on `conn` with `n` elements of `kind`, 1000 per command, pipelined.
fn fill(conn: &mut redis::Connection, kind: &str, key: &str, n: u64) {
    let mut i = 0;
    while i < n {
        let mut pipe = redis::pipe();
        for _ in 0..50 {
            if i >= n {
                break;
            }
            let end = (i + 1000).min(n);
            let mut cmd = match kind {
                "list" => redis::cmd("RPUSH"),
                "hash" => redis::cmd("HSET"),
                "zset" => redis::cmd("ZADD"),
                _ => redis::cmd("SADD"),
            };
            cmd.arg(key);
            for e in i..end {
                match kind {
                    "hash" => cmd.arg(format!("field:{e}")).arg(format!("value:{e}")),
                    "zset" => cmd.arg(e).arg(format!("member:{e}")),
                    _ => cmd.arg(format!("element:{e}")),
                };
            }
            pipe.add_command(cmd).ignore();
            i = end;
        }
        pipe.query::<()>(conn).expect("fill");
    }
}

/// `mb` MiB of bytes that LZF (DUMP's compression) cannot shrink much.
fn random_bytes(mb: u64) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..mb * 1024 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Pings `server` in a loop until `stop`; the latencies.
fn pinger(server: &RedisServer, stop: Arc<AtomicBool>) -> JoinHandle<Vec<Duration>> {
    let mut conn = server.conn();
    std::thread::spawn(move || {
        let mut lat = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            redis::cmd("PING").query::<String>(&mut conn).expect("ping");
            lat.push(t.elapsed());
        }
        lat
    })
}

/// GETs on the source with a short read timeout until `stop`: (sent, timed out).
fn impatient(server: &RedisServer, stop: Arc<AtomicBool>) -> JoinHandle<(u64, u64)> {
    let client = server.client();
    std::thread::spawn(move || {
        let (mut sent, mut failed) = (0, 0);
        let connect = || {
            let c = client
                .get_connection_with_timeout(Duration::from_secs(30))
                .expect("connect");
            c.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
            c
        };
        let mut conn = connect();
        while !stop.load(Ordering::Relaxed) {
            sent += 1;
            if redis::cmd("GET")
                .arg("other")
                .query::<Option<String>>(&mut conn)
                .is_err()
            {
                failed += 1;
                conn = connect();
            }
        }
        (sent, failed)
    })
}

fn max_p99(mut lat: Vec<Duration>) -> (Duration, Duration) {
    lat.sort();
    let max = lat.last().copied().unwrap_or_default();
    let p99 = lat
        .get((lat.len() * 99 / 100).min(lat.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default();
    (max, p99)
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed())
}

fn migrate(
    conn: &mut redis::Connection,
    to: &RedisServer,
    key: &str,
    timeout_ms: u64,
) -> redis::RedisResult<String> {
    redis::cmd("MIGRATE")
        .arg("127.0.0.1")
        .arg(to.port)
        .arg(key)
        .arg(0)
        .arg(timeout_ms)
        .arg("REPLACE")
        .query(conn)
}

/// Waits until `server` answers a PING (it finished what blocked it); bounded.
fn settle(server: &RedisServer) {
    let mut conn = server.conn();
    conn.set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    redis::cmd("PING").query::<String>(&mut conn).expect("ping");
}

/// One key: fills it, measures, migrates it; one table row.
fn measure(src: &RedisServer, dst: &RedisServer, kind: &str, n: u64) -> String {
    let key = format!("big:{kind}:{n}");
    let mut s = src.conn();
    let mut d = dst.conn();
    for c in [&mut s, &mut d] {
        c.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
        redis::cmd("FLUSHALL").query::<()>(c).unwrap();
    }
    if kind == "string" {
        let value = random_bytes(n);
        redis::cmd("SET")
            .arg(&key)
            .arg(value)
            .query::<()>(&mut s)
            .unwrap();
    } else {
        fill(&mut s, kind, &key, n);
    }
    let len_cmd = match kind {
        "list" => "LLEN",
        "hash" => "HLEN",
        "zset" => "ZCARD",
        "set" => "SCARD",
        _ => "STRLEN",
    };
    let (len, t_len) = timed(|| redis::cmd(len_cmd).arg(&key).query::<u64>(&mut s).unwrap());
    let ((), t_mem) = timed(|| {
        redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(&key)
            .query::<u64>(&mut s)
            .map(drop)
            .unwrap()
    });
    let (mem0, t_mem0) = timed(|| {
        redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(&key)
            .arg("SAMPLES")
            .arg(0)
            .query::<u64>(&mut s)
            .unwrap()
    });
    let (dump, t_dump) = timed(|| {
        redis::cmd("DUMP")
            .arg(&key)
            .query::<Vec<u8>>(&mut s)
            .unwrap()
            .len()
    });

    // A timeout below the RESTORE time: MIGRATE fails, yet the destination may finish the
    // RESTORE and hold a copy too.
    let short = migrate(&mut s, dst, &key, SHORT_TIMEOUT_MS);
    settle(dst);
    let short_text = match &short {
        Ok(r) => {
            // It fit: bring it back for the measured run.
            let back = migrate(&mut d, src, &key, GENEROUS_TIMEOUT_MS).expect("MIGRATE back");
            assert_eq!(back, "OK", "MIGRATE {key} back");
            r.clone()
        }
        Err(e) => {
            let on_dst: bool = redis::cmd("EXISTS").arg(&key).query(&mut d).unwrap();
            let on_src: bool = redis::cmd("EXISTS").arg(&key).query(&mut s).unwrap();
            format!(
                "{} (source {}, destination {})",
                e.to_string().split(':').next().unwrap_or(""),
                if on_src { "keeps it" } else { "lost it" },
                if on_dst { "has a copy" } else { "none" }
            )
        }
    };
    redis::cmd("FLUSHALL")
        .arg("SYNC")
        .query::<()>(&mut d)
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let ps = pinger(src, stop.clone());
    let pd = pinger(dst, stop.clone());
    let cl = impatient(src, stop.clone());
    std::thread::sleep(Duration::from_millis(50));
    let (reply, t_mig) = timed(|| migrate(&mut s, dst, &key, GENEROUS_TIMEOUT_MS));
    stop.store(true, Ordering::Relaxed);
    let (src_max, src_p99) = max_p99(ps.join().unwrap());
    let (dst_max, dst_p99) = max_p99(pd.join().unwrap());
    let (sent, failed) = cl.join().unwrap();
    let reply = reply.unwrap_or_else(|e| format!("{e}"));
    assert!(reply == "OK", "MIGRATE {key}: {reply}");
    let moved: u64 = redis::cmd(len_cmd).arg(&key).query(&mut d).unwrap();
    assert_eq!(moved, len, "{key} on the destination");
    redis::cmd("FLUSHALL")
        .arg("SYNC")
        .query::<()>(&mut d)
        .unwrap();

    let size = if kind == "string" {
        format!("{n} MiB")
    } else {
        format!("{n}")
    };
    let row = format!(
        "| {kind} | {size} | {:.1} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {failed} of {sent} | {short_text} |",
        mem0 as f64 / 1048576.0,
        dump as f64 / 1048576.0,
        ms(t_mig),
        ms(src_max),
        ms(src_p99),
        ms(dst_max),
        ms(dst_p99),
        ms(t_len),
        ms(t_dump),
        ms(t_mem),
        ms(t_mem0),
    );
    println!("{row}");
    row
}

fn redis_version(server: &RedisServer) -> String {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query(&mut server.conn())
        .unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .map_or("redis-server".into(), |v| {
            format!("redis-server {}", v.trim())
        })
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --benches` must not run the benchmark.
        return;
    }
    let sizes: Vec<u64> = std::env::var("TESSERA_BENCH_ELEMENTS")
        .unwrap_or_else(|_| "100000,1000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let string_mb: u64 = std::env::var("TESSERA_BENCH_STRING_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let load_before = load();
    let src = RedisServer::start();
    let dst = RedisServer::start();
    let mut rows = Vec::new();
    for &n in &sizes {
        for kind in ["list", "hash", "zset", "set"] {
            rows.push(measure(&src, &dst, kind, n));
        }
    }
    if string_mb > 0 {
        rows.push(measure(&src, &dst, "string", string_mb));
    }
    let mut out = format!(
        "Big keys: one MIGRATE per key, {} on 127.0.0.1, {} cores, load average {load_before} before and {} after.\n\n",
        redis_version(&src),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load(),
    );
    out.push_str(
        "| type | size | memory MiB | DUMP MiB | MIGRATE ms | source max ping ms | source p99 ping ms | dest. max ping ms | dest. p99 ping ms | length cmd ms | DUMP ms | MEMORY USAGE ms | MEMORY USAGE SAMPLES 0 ms | GETs timed out (100 ms client) | MIGRATE with timeout 100 ms |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in &rows {
        out.push_str(r);
        out.push('\n');
    }
    println!("\n{out}");
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/bench-bigkeys.md"
    ));
    std::fs::write(&path, &out).expect("write target/bench-bigkeys.md");
    println!("written to {}", path.display());
}
