//! Load benchmark: `redis-benchmark` against Redis directly, through Tessera and through
//! twemproxy, interleaved, with each proxy's CPU time per operation.
//!
//! Run: `cargo bench --bench load` (release profile). Environment:
//! - `TESSERA_BENCH_REQUESTS` — requests of a `-P 16` single-key run (default 1000000); the
//!   other workloads use a fixed fraction of it (the `requests` column);
//! - `TESSERA_BENCH_REPS` — repetitions per workload and system (default 3; the median counts);
//! - `TESSERA_BENCH_WORKERS` — Tessera's `proxy.workers` (default: the proxy's own, one per core);
//! - `TESSERA_BENCH_ONLY` — comma-separated parts of workload names: only those workloads run.
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

/// What the issue asks of Tessera for a workload.
#[derive(Clone, Copy)]
struct Target {
    /// Tessera's ops/s at least this fraction of direct Redis's.
    min_ratio: f64,
    /// Tessera's CPU per operation at most this many µs.
    max_cpu_us: Option<f64>,
}

struct Workload {
    name: &'static str,
    pipeline: u32,
    /// Requests of a run = base requests * num / den.
    share: (u64, u64),
    /// What follows the common options: `-t set`, or a command line with `__rand_int__`.
    args: Vec<String>,
    /// Fill `big:<n>` with 1 KiB values on every system first.
    needs_big_keys: bool,
    /// Fill `hash:<n>` with hashes of [`HASH_FIELDS`] fields on every system first.
    needs_hashes: bool,
    /// redis-benchmark's connections speak RESP3 (`-3`: `HELLO 3` first).
    resp3: bool,
    target: Target,
}

fn workloads() -> Vec<Workload> {
    let p1 = Target {
        min_ratio: 0.85,
        max_cpu_us: None,
    };
    let p16 = Target {
        min_ratio: 0.6,
        max_cpu_us: None,
    };
    let words = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
    let mset: Vec<String> = std::iter::once("MSET".to_string())
        .chain((0..10).flat_map(|_| ["key:__rand_int__".to_string(), "xxx".to_string()]))
        .collect();
    let mget: Vec<String> = std::iter::once("MGET".to_string())
        .chain((0..10).map(|_| "key:__rand_int__".to_string()))
        .collect();
    vec![
        Workload {
            name: "SET -P1",
            pipeline: 1,
            share: (1, 5),
            args: words("-t set"),
            needs_big_keys: false,
            needs_hashes: false,
            resp3: false,
            target: p1,
        },
        Workload {
            name: "GET -P1",
            pipeline: 1,
            share: (1, 5),
            args: words("-t get"),
            needs_big_keys: false,
            needs_hashes: false,
            resp3: false,
            target: p1,
        },
        Workload {
            name: "SET -P16",
            pipeline: 16,
            share: (1, 1),
            args: words("-t set"),
            needs_big_keys: false,
            needs_hashes: false,
            resp3: false,
            target: p16,
        },
        Workload {
            name: "GET -P16",
            pipeline: 16,
            share: (1, 1),
            args: words("-t get"),
            needs_big_keys: false,
            needs_hashes: false,
            resp3: false,
            target: Target {
                min_ratio: 0.6,
                max_cpu_us: Some(1.3),
            },
        },
        Workload {
            name: "MSET 10 keys -P16",
            pipeline: 16,
            share: (1, 4),
            args: mset,
            needs_big_keys: false,
            needs_hashes: false,
            resp3: false,
            target: p16,
        },
        Workload {
            name: "MGET 10 keys -P16",
            pipeline: 16,
            share: (1, 4),
            args: mget,
            needs_big_keys: false,
            needs_hashes: false,
            resp3: false,
            target: p16,
        },
        Workload {
            name: "GET 1 KiB -P16",
            pipeline: 16,
            share: (1, 2),
            args: words("GET big:__rand_int__"),
            needs_big_keys: true,
            needs_hashes: false,
            resp3: false,
            target: p16,
        },
        Workload {
            name: "GET -P16 RESP3",
            pipeline: 16,
            share: (1, 1),
            args: words("-t get"),
            needs_big_keys: false,
            needs_hashes: false,
            resp3: true,
            target: p16,
        },
        Workload {
            name: "HGETALL -P16",
            pipeline: 16,
            share: (1, 2),
            args: words("HGETALL hash:__rand_int__"),
            needs_big_keys: false,
            needs_hashes: true,
            resp3: false,
            target: p16,
        },
        Workload {
            name: "HGETALL -P16 RESP3",
            pipeline: 16,
            share: (1, 2),
            args: words("HGETALL hash:__rand_int__"),
            needs_big_keys: false,
            needs_hashes: true,
            resp3: true,
            target: p16,
        },
    ]
}

/// The pairs of workloads whose RESP3 / RESP2 throughput ratio is reported, and the target.
const RESP3_PAIRS: &[(&str, &str)] = &[
    ("GET -P16", "GET -P16 RESP3"),
    ("HGETALL -P16", "HGETALL -P16 RESP3"),
];
const RESP3_MIN_RATIO: f64 = 0.95;

// ---------------------------------------------------------------------------------------------
// Systems under test
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Sys {
    Direct,
    Tessera,
    /// The build given by `TESSERA_BENCH_BASELINE`, to compare a change against.
    Baseline,
    Twemproxy,
}

impl Sys {
    fn label(self) -> &'static str {
        match self {
            Sys::Direct => "direct",
            Sys::Tessera => "tessera",
            Sys::Baseline => "baseline",
            Sys::Twemproxy => "twemproxy",
        }
    }
}

/// One endpoint redis-benchmark is pointed at, and the pid whose CPU time is charged to it.
struct Endpoint {
    sys: Sys,
    addr: SocketAddr,
    /// The proxy process (None for direct Redis: no proxy CPU to report).
    cpu_pid: Option<u32>,
}

/// `nutcracker` (twemproxy) over the given servers, SIGKILLed by pid on drop (also on panic).
struct Twemproxy {
    child: Child,
    addr: SocketAddr,
    dir: TempDir,
}

impl Twemproxy {
    fn start(servers: &[&RedisServer]) -> Result<Twemproxy, String> {
        let dir = TempDir::new("twemproxy");
        let port = free_port();
        let stats_port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut conf = format!(
            "bench:\n  listen: 127.0.0.1:{port}\n  hash: fnv1a_64\n  distribution: ketama\n  \
             redis: true\n  preconnect: true\n  auto_eject_hosts: false\n  servers:\n"
        );
        for (i, s) in servers.iter().enumerate() {
            let _ = writeln!(conf, "   - {}:1 redis{i}", s.addr());
        }
        let conf_path = dir.path().join("nutcracker.yml");
        std::fs::write(&conf_path, conf).map_err(|e| format!("write nutcracker config: {e}"))?;
        let log_path = dir.path().join("nutcracker.log");
        let child = Command::new("nutcracker")
            .arg("-c")
            .arg(&conf_path)
            .args(["-s", &stats_port.to_string(), "-a", "127.0.0.1"])
            .arg("-o")
            .arg(&log_path)
            .arg("-p")
            .arg(dir.path().join("nutcracker.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run nutcracker: {e}"))?;
        let mut tw = Twemproxy { child, addr, dir };
        let mut exited = None;
        let up = wait_until(harness::START_BOUND, || {
            if let Ok(Some(status)) = tw.child.try_wait() {
                exited = Some(status);
                return true;
            }
            accepts(addr)
        });
        if exited.is_some() || !up {
            return Err(format!(
                "nutcracker did not listen on {addr} ({exited:?}); log:\n{}",
                harness::file_tail(&tw.dir.path().join("nutcracker.log"), 2000)
            ));
        }
        Ok(tw)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Twemproxy {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            harness::signal(self.child.id(), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------------------------

struct RunResult {
    ops_per_sec: f64,
    /// Proxy CPU per operation (None for direct Redis).
    cpu_us_per_op: Option<f64>,
    /// CPU per operation of every process taking part: redis-benchmark, both
    /// redis-servers and the proxy.
    all_us_per_op: Option<f64>,
}

/// CPU time of this process's reaped children (here: the redis-benchmark runs), in µs.
fn children_cpu_us() -> Option<f64> {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } != 0 {
        return None;
    }
    let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    Some(us(ru.ru_utime) + us(ru.ru_stime))
}

/// One redis-benchmark run against `ep`; `Err` if it failed, timed out or printed no rate.
fn run_benchmark(
    ep: &Endpoint,
    w: &Workload,
    requests: u64,
    clk_tck: f64,
    servers: &[u32],
) -> Result<RunResult, String> {
    let servers_ticks = || -> Option<u64> { servers.iter().map(|&p| cpu_ticks(p)).sum() };
    let cpu_before = ep.cpu_pid.and_then(cpu_ticks);
    let servers_before = servers_ticks();
    let client_before = children_cpu_us();
    let mut cmd = Command::new("redis-benchmark");
    cmd.args(["-h", "127.0.0.1", "-p", &ep.addr.port().to_string()])
        .args(["-c", &CLIENTS.to_string(), "-n", &requests.to_string()])
        .args(["-r", &KEYSPACE.to_string(), "-P", &w.pipeline.to_string()])
        .args(["-q", "--csv"]);
    if w.resp3 {
        cmd.arg("-3");
    }
    cmd.args(&w.args);
    let (status, stdout, stderr) = harness::run_bounded(&mut cmd, RUN_TIMEOUT)
        .map_err(|e| format!("cannot run redis-benchmark: {e}"))?;
    let cpu_after = ep.cpu_pid.and_then(cpu_ticks);
    let servers_after = servers_ticks();
    let client_after = children_cpu_us();
    let Some(status) = status else {
        return Err(format!("redis-benchmark killed after {RUN_TIMEOUT:?}"));
    };
    let rps = parse_csv_rps(&stdout).ok_or_else(|| {
        format!(
            "redis-benchmark ({status}) printed no rate; stdout: {stdout:?}; stderr: {}",
            stderr.trim()
        )
    })?;
    let per_op = |before: Option<u64>, after: Option<u64>| match (before, after) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 / clk_tck * 1e6 / requests as f64),
        _ => None,
    };
    let cpu_us_per_op = per_op(cpu_before, cpu_after);
    let servers_us = per_op(servers_before, servers_after);
    let client_us = match (client_before, client_after) {
        (Some(b), Some(a)) => Some((a - b) / requests as f64),
        _ => None,
    };
    let all_us_per_op = match (servers_us, client_us) {
        (Some(s), Some(c)) => Some(s + c + cpu_us_per_op.unwrap_or(0.0)),
        _ => None,
    };
    Ok(RunResult {
        ops_per_sec: rps,
        cpu_us_per_op,
        all_us_per_op,
    })
}

/// The `rps` of the first result line of `redis-benchmark --csv`:
/// `"test","rps",...` then `"SET","86956.52",...`.
fn parse_csv_rps(stdout: &str) -> Option<f64> {
    stdout
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('"') && !l.starts_with("\"test\""))
        .find_map(|l| {
            let fields: Vec<&str> = l.split("\",\"").collect();
            fields.get(1)?.trim_matches('"').parse().ok()
        })
}

/// One command of the workload, with `__rand_int__` fixed, as redis-benchmark would send it.
fn probe_command(w: &Workload) -> Vec<String> {
    let key = "000000000001";
    match w.args.as_slice() {
        [t, test] if t == "-t" && test == "set" => {
            vec!["SET".into(), format!("key:{key}"), "xxx".into()]
        }
        [t, test] if t == "-t" && test == "get" => vec!["GET".into(), format!("key:{key}")],
        args => args
            .iter()
            .map(|a| a.replace("__rand_int__", key))
            .collect(),
    }
}

/// Sends one command of the workload and refuses an error reply: redis-benchmark counts
/// error replies as operations, which would make a broken path look fast. For a RESP3
/// workload, first checks that the endpoint accepts `HELLO 3`.
fn probe(ep: &Endpoint, w: &Workload) -> Result<(), String> {
    if w.resp3 {
        use std::io::Read as _;
        let mut conn = RawConn::connect(ep.addr);
        conn.send(&harness::encode(&["HELLO", "3"]));
        let mut first = [0u8; 1];
        conn.stream
            .read_exact(&mut first)
            .map_err(|e| format!("HELLO 3 got no reply: {e}"))?;
        if first[0] != b'%' {
            return Err("refuses HELLO 3 (no RESP3)".into());
        }
    }
    let mut conn = RawConn::connect(ep.addr);
    let cmd = probe_command(w);
    conn.send(&harness::encode(&cmd));
    match conn.read() {
        Ok(Resp::Error(e)) => Err(format!("{} answers -{e}", cmd[0])),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("{} got no reply: {e}", cmd[0])),
    }
}

/// `SET big:<n> <1 KiB>` for every key of the keyspace, pipelined, through `ep`.
fn fill_big_keys(ep: &Endpoint) -> Result<(), String> {
    const BATCH: u64 = 500;
    let value = vec![b'v'; BIG_VALUE];
    let mut conn = RawConn::connect(ep.addr);
    let mut start = 0;
    while start < KEYSPACE {
        let end = (start + BATCH).min(KEYSPACE);
        let mut buf = Vec::with_capacity((end - start) as usize * (BIG_VALUE + 48));
        for n in start..end {
            let key = format!("big:{n:012}");
            buf.extend_from_slice(&harness::encode(&[
                b"SET".as_slice(),
                key.as_bytes(),
                &value,
            ]));
        }
        conn.send(&buf);
        for _ in start..end {
            match conn.read() {
                Ok(Resp::Simple(s)) if s == "OK" => {}
                other => return Err(format!("filling big keys: {other:?}")),
            }
        }
        start = end;
    }
    Ok(())
}

/// `HSET hash:<n>` with [`HASH_FIELDS`] short fields for every key of the keyspace,
/// pipelined, through `ep`.
fn fill_hashes(ep: &Endpoint) -> Result<(), String> {
    const BATCH: u64 = 500;
    let mut conn = RawConn::connect(ep.addr);
    let mut start = 0;
    while start < KEYSPACE {
        let end = (start + BATCH).min(KEYSPACE);
        let mut buf = Vec::new();
        for n in start..end {
            let mut cmd = vec!["HSET".to_string(), format!("hash:{n:012}")];
            for f in 0..HASH_FIELDS {
                cmd.push(format!("field{f}"));
                cmd.push(format!("value{f}"));
            }
            buf.extend_from_slice(&harness::encode(&cmd));
        }
        conn.send(&buf);
        for _ in start..end {
            match conn.read() {
                Ok(Resp::Int(_)) => {}
                other => return Err(format!("filling hashes: {other:?}")),
            }
        }
        start = end;
    }
    Ok(())
}

fn median(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The runs of one workload on one system.
#[derive(Default)]
struct Cell {
    ops: Vec<f64>,
    cpu: Vec<f64>,
    /// Whole-system CPU per operation of each run (see [`RunResult::all_us_per_op`]).
    all: Vec<f64>,
    error: Option<String>,
}

impl Cell {
    fn ops(&self) -> Option<f64> {
        median(&self.ops)
    }
    fn cpu(&self) -> Option<f64> {
        median(&self.cpu)
    }
    fn all(&self) -> Option<f64> {
        median(&self.all)
    }
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

fn tool_version(cmd: &str, arg: &str) -> Option<String> {
    match Command::new(cmd).arg(arg).output() {
        Ok(out) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            Some(
                text.lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("")
                    .trim()
                    .to_string(),
            )
        }
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(_) => Some("?".into()),
    }
}

/// The 1-minute load average, to show how busy the machine was around the runs.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(String::from))
        .unwrap_or_else(|| "?".into())
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn report_path() -> PathBuf {
    // The bench executable is target/<profile>/deps/load-<hash>: write next to <profile>.
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(PathBuf::from))
        .filter(|t| t.is_dir())
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target")))
        .join("bench-load.md")
}

fn fmt_ops(x: Option<f64>) -> String {
    match x {
        None => "—".into(),
        Some(x) => {
            let n = x.round() as u64;
            let s = n.to_string();
            let mut out = String::new();
            for (i, c) in s.chars().enumerate() {
                if i > 0 && (s.len() - i).is_multiple_of(3) {
                    out.push(',');
                }
                out.push(c);
            }
            out
        }
    }
}

fn fmt_cpu(x: Option<f64>) -> String {
    x.map(|x| format!("{x:.2}")).unwrap_or_else(|| "—".into())
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

    let a = RedisServer::start();
    let b = RedisServer::start();
    let proxy = |bin: Option<&str>| {
        let mut builder = Proxy::builder(&[&[&a], &[&b]]);
        if let Some(w) = &workers {
            builder = builder.settings(&[("proxy.workers", w.as_str())]);
        }
        if let Some(bin) = bin {
            builder = builder.binary(bin);
        }
        builder.start()
    };
    let tessera = proxy(None);
    let baseline_bin = std::env::var("TESSERA_BENCH_BASELINE").ok();
    let baseline = baseline_bin.as_deref().map(|bin| proxy(Some(bin)));
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

    let servers = [a.pid(), b.pid()];
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
         {base}; {reps} repetitions, interleaved; direct = one redis-server ({}); tessera and \
         twemproxy over two ({} + {})",
        a.addr(),
        a.addr(),
        b.addr()
    );

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
        if let Err(e) = run_benchmark(ep, &warm, 20_000, clk_tck, &servers) {
            println!("  warm-up {}: {e}", ep.sys.label());
        }
    }

    // TESSERA_BENCH_ONLY=a,b: only the workloads whose names contain one of these.
    let only: Vec<String> = std::env::var("TESSERA_BENCH_ONLY")
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default();
    let workloads: Vec<Workload> = workloads()
        .into_iter()
        .filter(|w| only.is_empty() || only.iter().any(|o| w.name.contains(o.as_str())))
        .collect();
    let mut cells: Vec<Vec<Cell>> = workloads
        .iter()
        .map(|_| endpoints.iter().map(|_| Cell::default()).collect())
        .collect();
    // A workload runs on its own, or with its RESP3 partner (RESP3_PAIRS) rep by rep, so
    // that the drift of the machine hits both protocols alike.
    let mut done = vec![false; workloads.len()];
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
            for (ep, cell) in endpoints.iter().zip(cells[i].iter_mut()) {
                let prepared = if w.needs_big_keys {
                    fill_big_keys(ep)
                } else if w.needs_hashes {
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
        for rep in 0..reps {
            for &i in &batch {
                let w = &workloads[i];
                let requests = (base * w.share.0 / w.share.1).max(1000);
                for (ep, cell) in endpoints.iter().zip(cells[i].iter_mut()) {
                    if cell.error.is_some() {
                        continue;
                    }
                    match run_benchmark(ep, w, requests, clk_tck, &servers) {
                        Ok(r) => {
                            println!(
                                "  {:<18} rep {} {:<9} {:>12} ops/s  proxy CPU {} µs/op, all {} µs/op",
                                w.name,
                                rep + 1,
                                ep.sys.label(),
                                fmt_ops(Some(r.ops_per_sec)),
                                fmt_cpu(r.cpu_us_per_op),
                                fmt_cpu(r.all_us_per_op)
                            );
                            cell.ops.push(r.ops_per_sec);
                            if let Some(c) = r.cpu_us_per_op {
                                cell.cpu.push(c);
                            }
                            if let Some(c) = r.all_us_per_op {
                                cell.all.push(c);
                            }
                        }
                        Err(e) => {
                            println!("  {} rep {} {}: {e}", w.name, rep + 1, ep.sys.label());
                            cell.error = Some(e);
                        }
                    }
                }
            }
        }
    }

    let md = render(
        &workloads,
        &endpoints,
        &cells,
        &Meta {
            base,
            reps,
            cores,
            workers,
            redis_benchmark: rb_version,
            nutcracker: twemproxy.as_ref().and(nc_version.clone()),
            load: (load_before, load_average()),
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
    drop(tessera);
}

/// RESP3 against RESP2 sessions on each system, for the workloads of [`RESP3_PAIRS`] that
/// ran: the median ops/s of the RESP3 workload over the RESP2 one's.
fn resp3_section(
    out: &mut String,
    workloads: &[Workload],
    endpoints: &[Endpoint],
    cells: &[Vec<Cell>],
) {
    let row = |name: &str| {
        workloads
            .iter()
            .position(|w| w.name == name)
            .map(|i| &cells[i])
    };
    let pairs: Vec<_> = RESP3_PAIRS
        .iter()
        .filter_map(|&(two, three)| Some((two, row(two)?, row(three)?)))
        .collect();
    if pairs.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\nRESP3 sessions against RESP2 sessions (`redis-benchmark -3`), RESP3 ops/s / RESP2 \
         ops/s of the same workload in this run; target for Tessera ≥ {RESP3_MIN_RATIO}:\n"
    );
    let _ = write!(out, "| workload |");
    for ep in endpoints {
        let _ = write!(out, " {} RESP3/RESP2 |", ep.sys.label());
    }
    let _ = writeln!(out, "\n|---|{}", "---:|".repeat(endpoints.len()));
    for (name, two, three) in pairs {
        let _ = write!(out, "| {name} |");
        for (i, ep) in endpoints.iter().enumerate() {
            match (two[i].ops(), three[i].ops()) {
                (Some(a), Some(b)) if a > 0.0 => {
                    let ratio = b / a;
                    let mark = match ep.sys {
                        Sys::Tessera if ratio >= RESP3_MIN_RATIO => " ✓",
                        Sys::Tessera => " ✗",
                        _ => "",
                    };
                    let _ = write!(out, " {ratio:.3}{mark} |");
                }
                _ => {
                    let _ = write!(out, " — |");
                }
            }
        }
        let _ = writeln!(out);
    }
}

/// This build against `TESSERA_BENCH_BASELINE`'s, run for run in the same loop.
fn baseline_section(
    out: &mut String,
    workloads: &[Workload],
    endpoints: &[Endpoint],
    cells: &[Vec<Cell>],
) {
    let find = |sys: Sys| endpoints.iter().position(|e| e.sys == sys);
    let (Some(now), Some(before), Some(direct)) =
        (find(Sys::Tessera), find(Sys::Baseline), find(Sys::Direct))
    else {
        return;
    };
    let _ = writeln!(
        out,
        "\nThis build against the baseline (`TESSERA_BENCH_BASELINE`), interleaved run by run: \
         ratios to direct Redis, proxy CPU µs/op, and the spread (min–max) of the runs:\n"
    );
    let _ = writeln!(
        out,
        "| workload | baseline ratio | baseline CPU | this build ratio | this build CPU | \
         ops/s change | baseline runs | this build runs |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---|---|");
    let spread = |c: &Cell| {
        let lo = c.ops.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = c.ops.iter().copied().fold(0.0, f64::max);
        if c.ops.is_empty() {
            "—".to_string()
        } else {
            format!("{}–{}", fmt_ops(Some(lo)), fmt_ops(Some(hi)))
        }
    };
    for (w, row) in workloads.iter().zip(cells) {
        let d = row[direct].ops();
        let ratio = |c: &Cell| match (c.ops(), d) {
            (Some(o), Some(d)) if d > 0.0 => format!("{:.3}", o / d),
            _ => "—".into(),
        };
        let change = match (row[now].ops(), row[before].ops()) {
            (Some(n), Some(b)) if b > 0.0 => format!("{:+.1}%", (n / b - 1.0) * 100.0),
            _ => "—".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            w.name,
            ratio(&row[before]),
            fmt_cpu(row[before].cpu()),
            ratio(&row[now]),
            fmt_cpu(row[now].cpu()),
            change,
            spread(&row[before]),
            spread(&row[now]),
        );
    }
}

struct Meta {
    base: u64,
    reps: usize,
    cores: usize,
    workers: Option<String>,
    redis_benchmark: String,
    nutcracker: Option<String>,
    /// 1-minute load average before and after the runs.
    load: (String, String),
    elapsed: Duration,
}

fn render(workloads: &[Workload], endpoints: &[Endpoint], cells: &[Vec<Cell>], m: &Meta) -> String {
    let find = |_row: &[Cell], sys: Sys| endpoints.iter().position(|e| e.sys == sys);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Load benchmark: direct Redis vs Tessera vs twemproxy\n"
    );
    let _ = writeln!(
        out,
        "Median of {} interleaved runs of `redis-benchmark -c {CLIENTS} -r {KEYSPACE}`; ratios \
         against direct Redis; proxy CPU = utime+stime of the proxy process per operation.\n",
        m.reps
    );
    let _ = writeln!(
        out,
        "| workload | requests | direct ops/s | tessera ops/s (ratio) | tessera CPU µs/op | \
         twemproxy ops/s (ratio) | twemproxy CPU µs/op | target (tessera) |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---|");
    for (w, row) in workloads.iter().zip(cells) {
        let requests = (m.base * w.share.0 / w.share.1).max(1000);
        let direct = find(row, Sys::Direct).and_then(|i| row[i].ops());
        let cell_text = |sys: Sys| -> (String, String, Option<f64>, Option<f64>) {
            let Some(i) = find(row, sys) else {
                return ("skipped".into(), "—".into(), None, None);
            };
            let c = &row[i];
            if let (Some(e), true) = (&c.error, c.ops.is_empty()) {
                let short: String = e.chars().take(60).collect();
                return (format!("error: {short}"), "—".into(), None, None);
            }
            let ops = c.ops();
            let ratio = match (ops, direct) {
                (Some(o), Some(d)) if d > 0.0 => Some(o / d),
                _ => None,
            };
            // Rounded down, so that a ratio shown as 0.85 does meet a 0.85 target.
            let text = match ratio {
                Some(r) => format!("{} ({:.2})", fmt_ops(ops), (r * 100.0).floor() / 100.0),
                None => fmt_ops(ops),
            };
            (text, fmt_cpu(c.cpu()), ratio, c.cpu())
        };
        let (t_text, t_cpu, t_ratio, t_cpu_v) = cell_text(Sys::Tessera);
        let (n_text, n_cpu, _, _) = cell_text(Sys::Twemproxy);
        let direct_text = match find(row, Sys::Direct) {
            Some(i) if row[i].ops.is_empty() => "error".into(),
            _ => fmt_ops(direct),
        };
        let mark = |ok: Option<bool>| match ok {
            Some(true) => " ✓",
            Some(false) => " ✗",
            None => " ?",
        };
        let mut target = format!(
            "≥ {:.2}× direct{}",
            w.target.min_ratio,
            mark(t_ratio.map(|r| r >= w.target.min_ratio))
        );
        if let Some(max) = w.target.max_cpu_us {
            let _ = write!(target, ", ≤ {max} µs/op{}", mark(t_cpu_v.map(|c| c <= max)));
        }
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            w.name,
            fmt_ops(Some(requests as f64)),
            direct_text,
            t_text,
            t_cpu,
            n_text,
            n_cpu,
            target
        );
    }

    resp3_section(&mut out, workloads, endpoints, cells);
    baseline_section(&mut out, workloads, endpoints, cells);

    let _ = writeln!(
        out,
        "\nWhole-system CPU per operation (redis-benchmark + both redis-servers + the proxy, \
         medians) and the cores that kept busy (ops/s × CPU per op; the machine has {}):\n",
        m.cores
    );
    let _ = write!(out, "| workload |");
    for ep in endpoints {
        let _ = write!(out, " {} µs/op (cores) |", ep.sys.label());
    }
    let _ = writeln!(out, "\n|---|{}", "---:|".repeat(endpoints.len()));
    for (w, row) in workloads.iter().zip(cells) {
        let _ = write!(out, "| {} |", w.name);
        for c in row {
            match (c.all(), c.ops()) {
                (Some(all), Some(ops)) => {
                    let _ = write!(out, " {all:.2} ({:.2}) |", all * ops / 1e6);
                }
                _ => {
                    let _ = write!(out, " — |");
                }
            }
        }
        let _ = writeln!(out);
    }

    let _ = writeln!(out, "\nRaw runs (ops/s; proxy CPU µs/op in brackets):\n");
    let _ = writeln!(out, "| workload | system | runs |");
    let _ = writeln!(out, "|---|---|---|");
    for (w, row) in workloads.iter().zip(cells) {
        for (ep, c) in endpoints.iter().zip(row) {
            let mut runs: Vec<String> = c
                .ops
                .iter()
                .enumerate()
                .map(|(i, o)| match c.cpu.get(i) {
                    Some(cpu) => format!("{} [{cpu:.2}]", fmt_ops(Some(*o))),
                    None => fmt_ops(Some(*o)),
                })
                .collect();
            if let Some(e) = &c.error {
                runs.push(format!("error: {e}"));
            }
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                w.name,
                ep.sys.label(),
                runs.join(", ")
            );
        }
    }
    let _ = writeln!(
        out,
        "\nSetup: {} cores shared by the client, the proxy and the servers; {}; {}; Tessera \
         workers: {}; base requests {} (`TESSERA_BENCH_REQUESTS`); load average {} before, {} \
         after; took {:.0} s.",
        m.cores,
        m.redis_benchmark,
        m.nutcracker
            .as_deref()
            .map(|v| v.trim_start_matches("This is "))
            .unwrap_or("twemproxy not run"),
        m.workers.as_deref().unwrap_or("default (one per core)"),
        m.base,
        m.load.0,
        m.load.1,
        m.elapsed.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "Targets (issue): at -P16 Tessera ≥ 0.6× direct and ≤ 1.3 µs CPU per GET; at -P1 ≥ \
         0.85× direct."
    );
    out
}
