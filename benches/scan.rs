//! SCAN benchmark: one full iteration of the keyspace through the proxy (one cursor over
//! every group) against SCAN of each backend directly, one after the other, in one run.
//!
//! Run: `cargo bench --bench scan`. Environment: `TESSERA_BENCH_KEYS` (default 1000000, over
//! three groups), `TESSERA_BENCH_REPS` (default 3, interleaved; medians compared),
//! `TESSERA_BENCH_COUNT` (SCAN's COUNT, default 1000). Goal: the proxy's keys/s within 20%
//! of the direct iteration's. The table is printed and written to `target/bench-scan.md`.

use tessera_testkit as harness;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use harness::{Proxy, RedisServer, group_of_key};

const GROUPS: usize = 3;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Writes `n` keys, each to the server of its group, in pipelines of 10,000.
fn fill(servers: &[RedisServer], n: u64) {
    let mut conns: Vec<redis::Connection> = servers.iter().map(|s| s.conn()).collect();
    let mut pipes: Vec<redis::Pipeline> = (0..servers.len()).map(|_| redis::pipe()).collect();
    let mut queued = vec![0usize; servers.len()];
    for i in 0..n {
        let key = format!("key:{i}");
        let g = group_of_key(key.as_bytes(), servers.len()) as usize - 1;
        pipes[g].cmd("SET").arg(&key).arg(i).ignore();
        queued[g] += 1;
        if queued[g] == 10_000 {
            let () = pipes[g].query(&mut conns[g]).expect("fill a backend");
            pipes[g] = redis::pipe();
            queued[g] = 0;
        }
    }
    for g in 0..servers.len() {
        if queued[g] > 0 {
            let () = pipes[g].query(&mut conns[g]).expect("fill a backend");
        }
    }
}

/// One full SCAN iteration on `conn`: the keys seen (with repeats) and how long it took.
fn scan_all(
    conn: &mut redis::Connection,
    count: u64,
    seen: &mut HashSet<String>,
) -> (u64, Duration) {
    let started = Instant::now();
    let mut cursor: u64 = 0;
    let mut keys = 0u64;
    // Bounded: a million keys at COUNT 1000 is ~1,000 calls; 10x that is a broken cursor.
    for _ in 0..10_000_000 {
        let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(count)
            .query(conn)
            .expect("SCAN");
        keys += page.len() as u64;
        seen.extend(page);
        cursor = next;
        if cursor == 0 {
            return (keys, started.elapsed());
        }
    }
    panic!("SCAN did not come back to cursor 0");
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn report_path() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(PathBuf::from))
        .filter(|t| t.is_dir())
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target")))
        .join("bench-scan.md")
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("scan bench: skipped (run it with `cargo bench --bench scan`)");
        return;
    }
    let n = env_u64("TESSERA_BENCH_KEYS", 1_000_000).max(1);
    let reps = env_u64("TESSERA_BENCH_REPS", 3).max(1) as usize;
    let count = env_u64("TESSERA_BENCH_COUNT", 1000).max(1);

    let servers: Vec<RedisServer> = (0..GROUPS).map(|_| RedisServer::start()).collect();
    let groups: Vec<[&RedisServer; 1]> = servers.iter().map(|s| [s]).collect();
    let groups: Vec<&[&RedisServer]> = groups.iter().map(|g| &g[..]).collect();
    let proxy = Proxy::start(&groups);

    let filling = Instant::now();
    fill(&servers, n);
    println!(
        "scan bench: {n} keys over {GROUPS} groups written in {:.1} s; COUNT {count}; {reps} reps",
        filling.elapsed().as_secs_f64()
    );

    let mut through = proxy.conn();
    let mut direct: Vec<redis::Connection> = servers.iter().map(|s| s.conn()).collect();
    let (mut proxy_rates, mut direct_rates) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        let mut seen = HashSet::with_capacity(n as usize);
        let (keys, took) = scan_all(&mut through, count, &mut seen);
        assert_eq!(
            seen.len() as u64,
            n,
            "the proxy's SCAN did not return every key"
        );
        let rate = keys as f64 / took.as_secs_f64();
        proxy_rates.push(rate);

        let mut seen = HashSet::with_capacity(n as usize);
        let (mut dkeys, mut dtook) = (0, Duration::ZERO);
        for c in &mut direct {
            let (k, t) = scan_all(c, count, &mut seen);
            dkeys += k;
            dtook += t;
        }
        assert_eq!(seen.len() as u64, n, "the backends do not hold every key");
        let drate = dkeys as f64 / dtook.as_secs_f64();
        direct_rates.push(drate);
        println!(
            "  rep {}: proxy {keys} keys in {:.2} s ({rate:.0} keys/s); direct {dkeys} keys in \
             {:.2} s ({drate:.0} keys/s)",
            rep + 1,
            took.as_secs_f64(),
            dtook.as_secs_f64()
        );
    }
    let (p, d) = (median(&mut proxy_rates), median(&mut direct_rates));
    let ratio = p / d;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## SCAN benchmark: through the proxy vs the backends directly\n"
    );
    let _ = writeln!(
        md,
        "{n} keys over {GROUPS} groups; `SCAN cursor COUNT {count}` until cursor 0; median of \
         {reps} interleaved runs. Direct: each backend scanned to the end, one after the \
         other (the sum of their times).\n"
    );
    let _ = writeln!(md, "| | keys/s | ratio |");
    let _ = writeln!(md, "|---|---:|---:|");
    let _ = writeln!(md, "| direct, groups one after another | {d:.0} | 1.00 |");
    let _ = writeln!(
        md,
        "| through the proxy | {p:.0} | {:.2} {} |",
        (ratio * 100.0).floor() / 100.0,
        if ratio >= 0.8 { "✓" } else { "✗" }
    );
    let _ = writeln!(md, "\nGoal: the proxy within 20% of direct (ratio ≥ 0.80).");
    println!("\n{md}");
    let path = report_path();
    match std::fs::write(&path, &md) {
        Ok(()) => println!("written to {}", path.display()),
        Err(e) => println!("could not write {}: {e}", path.display()),
    }
}
