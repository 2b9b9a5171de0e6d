//! Load benchmark: `redis-benchmark` against Redis directly, through Tessera (default workers
//! and one worker) and through twemproxy, interleaved, with the CPU time per operation of each
//! proxy and of the Redis servers behind it, one client's latency, and each proxy's memory.
//!
//! Run: `cargo bench --bench load` (release profile). Environment:
//! - `TESSERA_BENCH_REQUESTS` — requests of a `-P 16` single-key run (default 1000000); the
//!   other workloads use a fixed fraction of it (the `requests` column);
//! - `TESSERA_BENCH_REPS` — repetitions per workload and system (default 3; the median counts;
//!   at -P1 at least [`SHORT_RUN_MIN_REPS`]);
//! - `TESSERA_BENCH_WORKERS` — the default Tessera's `proxy.workers` (default: the proxy's
//!   own, half the cores, at least one);
//! - `TESSERA_BENCH_ONE_WORKER` — 1 runs the system "Tessera, 1 worker", 0 leaves it out
//!   (default: run where the default system has more than one worker);
//! - `TESSERA_BENCH_ONE_CLIENT` — GETs of the one-client run (default 20000; 0 skips it);
//! - `TESSERA_BENCH_CONNECTIONS` — idle client connections of the memory figures (default
//!   10000; 0 skips them);
//! - `TESSERA_BENCH_ONLY` — comma-separated parts of workload names: only those workloads run
//!   (a part ending in a digit does not match a longer number: `-P1` is not in `GET -P16`;
//!   the one-client run is named `one client GET -P1`, the memory figures `memory`).
//! - `TESSERA_BENCH_PIN` — 1 pins redis-benchmark to CPU 0 and the servers and proxies to the
//!   other CPUs (default 0: the scheduler places them, which at -P1 decides much of a run);
//! - `TESSERA_BENCH_BASELINE` — the path of another `tessera` executable (e.g. a release build
//!   of an earlier commit): it runs as a fourth system over the same servers, and the report
//!   gets a table of this build against it.
//!
//! The table is printed and written to `target/bench-load.md`. See benches/README.md.

use tessera_testkit as harness;

use std::fmt::Write as _;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::{
    Proxy, RawConn, RedisServer, Resp, TempDir, accepts, clock_ticks_per_sec, cpu_ticks, free_port,
    wait_until,
};

mod measure;
mod memory;
mod report;
mod systems;
mod workloads;

use measure::*;
use memory::*;
use report::*;
use systems::*;
use workloads::*;

/// Connections of every redis-benchmark run.
const CLIENTS: u32 = 50;
/// Keyspace (`-r`).
const KEYSPACE: u64 = 100_000;
/// Wall-clock bound of one redis-benchmark run; it is killed past it.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// Size of the values of the 1 KiB workload.
const BIG_VALUE: usize = 1024;
/// Fields of each hash of the HGETALL workloads.
const HASH_FIELDS: usize = 10;
/// Name of the one-client run (for `TESSERA_BENCH_ONLY`).
const ONE_CLIENT: &str = "one client GET -P1";
/// Runs at -P1 (50 clients or one) take a second or two each, and on a shared VM their
/// figures swing from run to run by more than the proxies differ: Redis's reads per command
/// 2× behind either proxy at -P1, one client's p50 2–3× while the proxies' differ by one
/// 8 µs step of redis-benchmark's histogram. They run at least this many rounds, whatever
/// `TESSERA_BENCH_REPS` says.
const SHORT_RUN_MIN_REPS: usize = 11;
/// Name of the memory figures (for `TESSERA_BENCH_ONLY`).
const MEMORY: &str = "memory";

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not: don't run minutes of
    // load in a test run.
    if !std::env::args().any(|a| a == "--bench") {
        println!("load bench: skipped (run it with `cargo bench --bench load`)");
        return;
    }
    let started = Instant::now();
    let load_before = load_average();
    let Some(rb_version) = tool_version("redis-benchmark", "--version") else {
        println!(
            "load bench: redis-benchmark not found; install it with \
             `apt-get install redis-tools` (Debian/Ubuntu). Skipped."
        );
        return;
    };
    if tool_version("redis-server", "--version").is_none() {
        println!(
            "load bench: redis-server not found; install it with \
             `apt-get install redis-server`. Skipped."
        );
        return;
    }
    let nc_version = tool_version("nutcracker", "-V");
    if nc_version.is_none() {
        println!(
            "load bench: nutcracker (twemproxy) not found; install it with \
             `apt-get install nutcracker`. The twemproxy column is skipped."
        );
    }
    let base = env_u64("TESSERA_BENCH_REQUESTS", 1_000_000).max(1000);
    let reps = env_u64("TESSERA_BENCH_REPS", 3).max(1) as usize;
    let workers = std::env::var("TESSERA_BENCH_WORKERS").ok();
    let clk_tck = clock_ticks_per_sec();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    // tessera-1w runs by default only where it differs from the default system.
    let default_workers = workers
        .as_deref()
        .and_then(|w| w.parse::<usize>().ok())
        .filter(|&w| w > 0)
        .unwrap_or_else(|| tessera_proxy::config::default_workers(cores.max(1)));
    let one_worker = env_u64("TESSERA_BENCH_ONE_WORKER", u64::from(default_workers != 1)) != 0;
    // TESSERA_BENCH_ONLY=a,b: only the workloads whose names contain one of these (see
    // `names_part`).
    let only: Vec<String> = std::env::var("TESSERA_BENCH_ONLY")
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default();
    let selected = |name: &str| only.is_empty() || only.iter().any(|o| names_part(name, o));
    let one_client = Some(env_u64("TESSERA_BENCH_ONE_CLIENT", 20_000))
        .filter(|&n| n > 0 && selected(ONE_CLIENT));
    let connections =
        Some(env_u64("TESSERA_BENCH_CONNECTIONS", TARGET_CONNECTIONS as u64) as usize)
            .filter(|&n| n > 0 && selected(MEMORY));
    // Before any process starts: they inherit it, and the idle connections need it.
    let nofile = raise_nofile_limit();

    let a = RedisServer::start();
    let b = RedisServer::start();
    // Room for the idle connections of the memory figures next to the bench's own.
    let max_clients = (connections.unwrap_or(0) + 1000).to_string();
    let proxy = |bin: Option<&str>, workers: Option<&str>| {
        let mut builder = Proxy::builder(&[&[&a], &[&b]])
            .settings(&[("proxy.max_clients", max_clients.as_str())]);
        if let Some(w) = workers {
            builder = builder.settings(&[("proxy.workers", w)]);
        }
        if let Some(bin) = bin {
            builder = builder.binary(bin);
        }
        builder.start()
    };
    let tessera = proxy(None, workers.as_deref());
    let tessera_one = one_worker.then(|| proxy(None, Some("1")));
    let baseline_bin = std::env::var("TESSERA_BENCH_BASELINE").ok();
    let baseline = baseline_bin
        .as_deref()
        .map(|bin| proxy(Some(bin), workers.as_deref()));
    let twemproxy = match nc_version {
        Some(_) => match Twemproxy::start(&[&a, &b]) {
            Ok(t) => Some(t),
            Err(e) => {
                println!("load bench: twemproxy skipped: {e}");
                None
            }
        },
        None => None,
    };

    // TESSERA_BENCH_PIN=1: redis-benchmark on CPU 0, the servers and proxies on the others.
    let client_cpus = if env_u64("TESSERA_BENCH_PIN", 0) != 0 {
        let mut pids = vec![a.pid(), b.pid(), tessera.pid()];
        pids.extend(tessera_one.as_ref().map(|p| p.pid()));
        pids.extend(baseline.as_ref().map(|p| p.pid()));
        pids.extend(twemproxy.as_ref().map(|t| t.pid()));
        match pin(&pids, cores) {
            Ok(()) => Some("0".to_string()),
            Err(e) => {
                println!("load bench: not pinned: {e}");
                None
            }
        }
    } else {
        None
    };

    let setup = Setup {
        clk_tck,
        servers: [&a, &b].map(|s| Server {
            pid: s.pid(),
            addr: s.socket_addr(),
        }),
        client_cpus,
    };
    let mut endpoints = vec![
        Endpoint {
            sys: Sys::Direct,
            addr: a.socket_addr(),
            cpu_pid: None,
        },
        Endpoint {
            sys: Sys::Tessera,
            addr: tessera.addr,
            cpu_pid: Some(tessera.pid()),
        },
    ];
    if let Some(p) = &tessera_one {
        endpoints.push(Endpoint {
            sys: Sys::TesseraOne,
            addr: p.addr,
            cpu_pid: Some(p.pid()),
        });
    }
    if let Some(p) = &baseline {
        endpoints.push(Endpoint {
            sys: Sys::Baseline,
            addr: p.addr,
            cpu_pid: Some(p.pid()),
        });
    }
    if let Some(t) = &twemproxy {
        endpoints.push(Endpoint {
            sys: Sys::Twemproxy,
            addr: t.addr,
            cpu_pid: Some(t.pid()),
        });
    }

    println!(
        "load bench: {cores} cores; redis-benchmark -c {CLIENTS} -r {KEYSPACE}; base requests \
         {base}; {reps} repetitions, interleaved; direct = one redis-server ({}); the proxies \
         over two ({} + {})",
        a.addr(),
        a.addr(),
        b.addr()
    );

    // Fresh RSS first; the rest of the memory figures once the load runs are over.
    let mut fresh: Vec<(Sys, Result<u64, String>)> = Vec::new();
    if let Some(n) = connections {
        let soft = nofile.unwrap_or(0);
        // The bench's own descriptors besides the connections: servers' pipes, logs, probes.
        if (soft as usize) < n + 100 {
            println!(
                "load bench: RLIMIT_NOFILE (soft, raised to the hard limit) is {soft}: too \
                 low for {n} idle connections; it opens as many as it can (raise the hard \
                 limit with `ulimit -Hn`)"
            );
        }
        let sessions = workers
            .as_deref()
            .and_then(|w| w.parse::<usize>().ok())
            .unwrap_or(0)
            .max(cores)
            .max(1)
            * 2;
        for ep in &endpoints {
            let Some(pid) = ep.cpu_pid else { continue };
            let f = measure_fresh(ep, pid, sessions);
            match &f {
                Ok(kib) => println!("  memory {:<10} fresh {kib} KiB", ep.sys.label()),
                Err(e) => println!("  memory {}: {e}", ep.sys.label()),
            }
            fresh.push((ep.sys, f));
        }
    }

    // Warm-up: connections, allocators, page cache. Not measured.
    let warm = Workload {
        name: "warm-up",
        pipeline: 16,
        share: (1, 1),
        args: vec!["-t".into(), "set,get".into()],
        needs_big_keys: false,
        needs_hashes: false,
        resp3: false,
        target: Target {
            min_ratio: 0.0,
            max_cpu_us: None,
        },
    };
    for ep in &endpoints {
        if let Err(e) = run_benchmark(ep, &warm, 20_000, CLIENTS, &setup) {
            println!("  warm-up {}: {e}", ep.sys.label());
        }
    }

    let workloads: Vec<Workload> = workloads()
        .into_iter()
        .filter(|w| selected(w.name))
        .collect();
    let mut cells: Vec<Vec<Cell>> = workloads
        .iter()
        .map(|_| endpoints.iter().map(|_| Cell::default()).collect())
        .collect();
    // A workload runs on its own, or with its RESP3 partner (RESP3_PAIRS) rep by rep, so
    // that the drift of the machine hits both protocols alike.
    let mut done = vec![false; workloads.len()];
    // Which endpoints have the big keys / the hashes already (filled once each).
    let mut big_filled = vec![false; endpoints.len()];
    let mut hashes_filled = vec![false; endpoints.len()];
    for first in 0..workloads.len() {
        if done[first] {
            continue;
        }
        let mut batch = vec![first];
        if let Some(&(_, three)) = RESP3_PAIRS
            .iter()
            .find(|(two, _)| *two == workloads[first].name)
            && let Some(j) = workloads.iter().position(|w| w.name == three)
        {
            batch.push(j);
        }
        for &i in &batch {
            done[i] = true;
            let w = &workloads[i];
            for (e, (ep, cell)) in endpoints.iter().zip(cells[i].iter_mut()).enumerate() {
                let prepared = if w.needs_big_keys && !big_filled[e] {
                    big_filled[e] = true;
                    fill_big_keys(ep)
                } else if w.needs_hashes && !hashes_filled[e] {
                    hashes_filled[e] = true;
                    fill_hashes(ep)
                } else {
                    Ok(())
                };
                if let Err(e) = prepared.and_then(|()| probe(ep, w)) {
                    println!("  {} {}: {e}", w.name, ep.sys.label());
                    cell.error = Some(e);
                }
            }
        }
        let rounds = batch
            .iter()
            .map(|&i| rounds_of(&workloads[i], reps))
            .max()
            .unwrap_or(reps);
        for rep in 0..rounds {
            for &i in &batch {
                let w = &workloads[i];
                let requests = (base * w.share.0 / w.share.1).max(1000);
                let run = Run {
                    w,
                    rep,
                    requests,
                    clients: CLIENTS,
                    setup: &setup,
                };
                run.each(&endpoints, &mut cells[i], |r| {
                    format!(
                        "{:>12} ops/s  proxy CPU {} µs/op, Redis {} µs/op ({} reads/op), \
                         all {} µs/op",
                        fmt_ops(Some(r.ops_per_sec)),
                        fmt_cpu(r.cpu_us_per_op),
                        fmt_cpu(r.redis_us_per_op),
                        fmt_cpu(r.redis_reads_per_op),
                        fmt_cpu(r.all_us_per_op)
                    )
                });
            }
        }
    }

    // One client, one request at a time: the latency a proxy adds.
    let mut single: Vec<Cell> = endpoints.iter().map(|_| Cell::default()).collect();
    if let Some(n) = one_client {
        let w = Workload {
            name: ONE_CLIENT,
            pipeline: 1,
            share: (1, 1),
            args: vec!["-t".into(), "get".into()],
            needs_big_keys: false,
            needs_hashes: false,
            resp3: false,
            target: Target {
                min_ratio: 0.0,
                max_cpu_us: None,
            },
        };
        for rep in 0..reps.max(SHORT_RUN_MIN_REPS) {
            let run = Run {
                w: &w,
                rep,
                requests: n,
                clients: 1,
                setup: &setup,
            };
            run.each(&endpoints, &mut single, |r| {
                format!(
                    "{:>8} ops/s  mean {} ms, p50 {} ms, p99 {} ms, proxy CPU {} µs/op",
                    fmt_ops(Some(r.ops_per_sec)),
                    fmt_ms(r.avg_ms),
                    fmt_ms(r.p50_ms),
                    fmt_ms(r.p99_ms),
                    fmt_cpu(r.cpu_us_per_op)
                )
            });
        }
    }

    // The proxies that served every run, now idle again; then many idle connections.
    let mut memory: Vec<ProxyMemory> = Vec::new();
    if let Some(n) = connections {
        for (sys, f) in fresh {
            let Some(ep) = endpoints.iter().find(|e| e.sys == sys) else {
                continue;
            };
            let Some(pid) = ep.cpu_pid else { continue };
            let m = f.and_then(|fresh_kib| measure_idle(ep, pid, n, fresh_kib));
            match &m {
                Ok(m) => println!(
                    "  memory {:<10} fresh {} KiB, after the load {} KiB, {} idle connections \
                     {} KiB ({} KiB each), closed {} KiB{}",
                    ep.sys.label(),
                    m.fresh_kib,
                    m.after_kib,
                    m.opened,
                    m.idle_kib,
                    fmt_cpu(m.kib_per_connection()),
                    m.closed_kib.map_or("?".into(), |k| k.to_string()),
                    m.short
                        .as_ref()
                        .map(|s| format!("; stopped: {s}"))
                        .unwrap_or_default()
                ),
                Err(e) => println!("  memory {}: {e}", ep.sys.label()),
            }
            memory.push((sys, m));
        }
    }

    let md = render(
        &workloads,
        &endpoints,
        &cells,
        &Extra {
            one_client: one_client.map(|n| (n, single.as_slice())),
            memory: connections.map(|n| (n, nofile, memory.as_slice())),
        },
        &Meta {
            base,
            reps,
            cores,
            workers,
            one_worker,
            redis_benchmark: rb_version,
            nutcracker: twemproxy.as_ref().and(nc_version.clone()),
            load: (load_before, load_average()),
            pinned: setup.client_cpus.is_some(),
            elapsed: started.elapsed(),
        },
    );
    println!("\n{md}");
    let path = report_path();
    match std::fs::write(&path, &md) {
        Ok(()) => println!("written to {}", path.display()),
        Err(e) => println!("could not write {}: {e}", path.display()),
    }
    drop(twemproxy);
    drop(baseline);
    drop(tessera_one);
    drop(tessera);
}

/// Pins every thread of each of `pids` to CPUs 1.. (`taskset`): redis-benchmark gets CPU 0
/// to itself.
fn pin(pids: &[u32], cores: usize) -> Result<(), String> {
    if cores < 2 {
        return Err(format!(
            "{cores} core(s): nothing to keep redis-benchmark apart on"
        ));
    }
    let others = format!("1-{}", cores - 1);
    for pid in pids {
        let out = Command::new("taskset")
            .args(["-a", "-p", "-c", &others, &pid.to_string()])
            .output()
            .map_err(|e| format!("cannot run taskset: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "taskset -a -p -c {others} {pid}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}

/// The rounds a workload runs: `reps`, and at -P1 at least [`SHORT_RUN_MIN_REPS`].
fn rounds_of(w: &Workload, reps: usize) -> usize {
    if w.pipeline == 1 {
        reps.max(SHORT_RUN_MIN_REPS)
    } else {
        reps
    }
}

/// Whether `part` occurs in the workload name `name`, not followed by a digit when it ends
/// in one: `-P1` names the -P1 workloads, not the -P16 ones.
fn names_part(name: &str, part: &str) -> bool {
    let ends_in_digit = part.ends_with(|c: char| c.is_ascii_digit());
    name.match_indices(part).any(|(at, _)| {
        !ends_in_digit || !name[at + part.len()..].starts_with(|c: char| c.is_ascii_digit())
    })
}
