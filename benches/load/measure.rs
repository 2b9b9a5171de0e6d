//! Measuring: one redis-benchmark run with the CPU time of the proxy it goes through and of
//! the Redis servers behind it, the data some workloads need first, and the median of a
//! cell's runs.

use super::*;

pub(crate) struct RunResult {
    pub(crate) ops_per_sec: f64,
    /// Proxy CPU per operation (None for direct Redis).
    pub(crate) cpu_us_per_op: Option<f64>,
    /// CPU per operation of the two redis-servers together.
    pub(crate) redis_us_per_op: Option<f64>,
    /// Reads of client input the two redis-servers made, per operation (`total_reads_processed`
    /// of `INFO stats`): how well the commands Redis gets are batched.
    pub(crate) redis_reads_per_op: Option<f64>,
    /// Mean latency and percentiles redis-benchmark printed, in ms.
    pub(crate) avg_ms: Option<f64>,
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
    /// CPU per operation of every process taking part: redis-benchmark, both
    /// redis-servers and the proxy.
    pub(crate) all_us_per_op: Option<f64>,
}

/// CPU time of this process's reaped children (here: the redis-benchmark runs), in µs.
pub(crate) fn children_cpu_us() -> Option<f64> {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } != 0 {
        return None;
    }
    let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    Some(us(ru.ru_utime) + us(ru.ru_stime))
}

/// One repetition of a workload, run against each endpoint in turn.
pub(crate) struct Run<'a> {
    pub(crate) w: &'a Workload,
    /// Which repetition (from 0).
    pub(crate) rep: usize,
    pub(crate) requests: u64,
    pub(crate) clients: u32,
    pub(crate) setup: &'a Setup,
}

/// What every run of the bench measures with and where its client runs.
pub(crate) struct Setup {
    /// Clock ticks per second of `/proc/<pid>/stat`.
    pub(crate) clk_tck: f64,
    pub(crate) servers: [Server; 2],
    /// The CPUs redis-benchmark is pinned to (`TESSERA_BENCH_PIN`), if any.
    pub(crate) client_cpus: Option<String>,
}

/// A redis-server behind the proxies: its process, for CPU time, and its address, for
/// `INFO stats`.
#[derive(Clone, Copy)]
pub(crate) struct Server {
    pub(crate) pid: u32,
    pub(crate) addr: SocketAddr,
}

/// `total_reads_processed` of the server at `addr`.
fn reads_processed(addr: SocketAddr) -> Option<u64> {
    let mut conn = RawConn::connect(addr);
    conn.send(&harness::encode(&["INFO", "stats"]));
    let Ok(Resp::Bulk(Some(info))) = conn.read() else {
        return None;
    };
    String::from_utf8_lossy(&info)
        .lines()
        .find_map(|l| l.strip_prefix("total_reads_processed:"))
        .and_then(|v| v.trim().parse().ok())
}

impl Run<'_> {
    /// Runs against each endpoint whose cell has no error yet: a result is printed (its
    /// figures as `figures` words them) and added to the cell, a failure printed and kept
    /// in the cell, which then runs no more.
    pub(crate) fn each(
        &self,
        endpoints: &[Endpoint],
        cells: &mut [Cell],
        figures: impl Fn(&RunResult) -> String,
    ) {
        let (w, rep) = (self.w, self.rep + 1);
        for (ep, cell) in endpoints.iter().zip(cells.iter_mut()) {
            if cell.error.is_some() {
                continue;
            }
            let label = ep.sys.label();
            match run_benchmark(ep, w, self.requests, self.clients, self.setup) {
                Ok(r) => {
                    println!("  {:<18} rep {rep} {label:<10} {}", w.name, figures(&r));
                    cell.runs.push(r);
                }
                Err(e) => {
                    println!("  {} rep {rep} {label}: {e}", w.name);
                    cell.error = Some(e);
                }
            }
        }
    }
}

/// One redis-benchmark run of `clients` connections against `ep` (on the setup's client
/// CPUs, if any); `Err` if it failed, timed out or printed no rate.
pub(crate) fn run_benchmark(
    ep: &Endpoint,
    w: &Workload,
    requests: u64,
    clients: u32,
    setup: &Setup,
) -> Result<RunResult, String> {
    let (clk_tck, servers) = (setup.clk_tck, &setup.servers);
    let servers_ticks = || -> Option<u64> { servers.iter().map(|s| cpu_ticks(s.pid)).sum() };
    let servers_reads = || -> Option<u64> { servers.iter().map(|s| reads_processed(s.addr)).sum() };
    let reads_before = servers_reads();
    let cpu_before = ep.cpu_pid.and_then(cpu_ticks);
    let servers_before = servers_ticks();
    let client_before = children_cpu_us();
    let mut cmd = match &setup.client_cpus {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpus, "redis-benchmark"]);
            c
        }
        None => Command::new("redis-benchmark"),
    };
    cmd.args(["-h", "127.0.0.1", "-p", &ep.addr.port().to_string()])
        .args(["-c", &clients.to_string(), "-n", &requests.to_string()])
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
    let reads_after = servers_reads();
    let Some(status) = status else {
        return Err(format!("redis-benchmark killed after {RUN_TIMEOUT:?}"));
    };
    let csv = parse_csv(&stdout);
    let field = |name: &str| csv.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
    let rps = field("rps").ok_or_else(|| {
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
    let redis_reads_per_op = match (reads_before, reads_after) {
        // Besides the run's: the later INFO's read and the earlier connection's end, per server.
        (Some(b), Some(a)) => {
            let probes = 2 * servers.len() as u64;
            Some(a.saturating_sub(b + probes) as f64 / requests as f64)
        }
        _ => None,
    };
    Ok(RunResult {
        ops_per_sec: rps,
        cpu_us_per_op,
        redis_us_per_op: servers_us,
        redis_reads_per_op,
        avg_ms: field("avg_latency_ms"),
        p50_ms: field("p50_latency_ms"),
        p99_ms: field("p99_latency_ms"),
        all_us_per_op,
    })
}

/// The numeric fields of the first result line of `redis-benchmark --csv`, named by its
/// header: `"test","rps","avg_latency_ms",...` then `"SET","86956.52","0.301",...`
/// (older redis-benchmarks print only `test` and `rps`).
pub(crate) fn parse_csv(stdout: &str) -> Vec<(String, f64)> {
    let split = |l: &str| -> Vec<String> {
        l.trim()
            .trim_matches('"')
            .split("\",\"")
            .map(String::from)
            .collect()
    };
    let mut lines = stdout.lines().map(str::trim).filter(|l| l.starts_with('"'));
    let header = match lines.clone().find(|l| l.starts_with("\"test\"")) {
        Some(h) => split(h),
        None => vec!["test".into(), "rps".into()],
    };
    let Some(row) = lines.find(|l| !l.starts_with("\"test\"")) else {
        return Vec::new();
    };
    header
        .into_iter()
        .zip(split(row))
        .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
        .collect()
}

/// One command of the workload, with `__rand_int__` fixed, as redis-benchmark would send it.
pub(crate) fn probe_command(w: &Workload) -> Vec<String> {
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
pub(crate) fn probe(ep: &Endpoint, w: &Workload) -> Result<(), String> {
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
pub(crate) fn fill_big_keys(ep: &Endpoint) -> Result<(), String> {
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
pub(crate) fn fill_hashes(ep: &Endpoint) -> Result<(), String> {
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

pub(crate) fn median(xs: &[f64]) -> Option<f64> {
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

/// The runs of one workload on one system, in the order of the rounds (a failed run ends
/// the cell's runs: run `i` is always round `i`).
#[derive(Default)]
pub(crate) struct Cell {
    pub(crate) runs: Vec<RunResult>,
    pub(crate) error: Option<String>,
}

impl Cell {
    /// The median of a figure over the runs that have it.
    fn median_of(&self, figure: impl Fn(&RunResult) -> Option<f64>) -> Option<f64> {
        let xs: Vec<f64> = self.runs.iter().filter_map(figure).collect();
        median(&xs)
    }
    pub(crate) fn ops(&self) -> Option<f64> {
        self.median_of(|r| Some(r.ops_per_sec))
    }
    pub(crate) fn cpu(&self) -> Option<f64> {
        self.median_of(|r| r.cpu_us_per_op)
    }
    pub(crate) fn all(&self) -> Option<f64> {
        self.median_of(|r| r.all_us_per_op)
    }
    pub(crate) fn redis(&self) -> Option<f64> {
        self.median_of(|r| r.redis_us_per_op)
    }
    pub(crate) fn reads(&self) -> Option<f64> {
        self.median_of(|r| r.redis_reads_per_op)
    }
    pub(crate) fn avg(&self) -> Option<f64> {
        self.median_of(|r| r.avg_ms)
    }
    pub(crate) fn p50(&self) -> Option<f64> {
        self.median_of(|r| r.p50_ms)
    }
    pub(crate) fn p99(&self) -> Option<f64> {
        self.median_of(|r| r.p99_ms)
    }
}

/// In how many of the rounds both cells ran `better(a's run, b's run)` holds: (rounds won,
/// rounds compared).
pub(crate) fn rounds_won(
    a: &Cell,
    b: &Cell,
    better: impl Fn(&RunResult, &RunResult) -> Option<bool>,
) -> (usize, usize) {
    a.runs
        .iter()
        .zip(&b.runs)
        .filter_map(|(x, y)| better(x, y))
        .fold((0, 0), |(won, all), w| (won + usize::from(w), all + 1))
}
