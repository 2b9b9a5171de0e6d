//! The report: the table of every workload and system, RESP3 against RESP2, this build
//! against a baseline, one client's latency, the proxies' memory, the targets met and not
//! met, and where it is written.

use super::*;

pub(crate) fn tool_version(cmd: &str, arg: &str) -> Option<String> {
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
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(String::from))
        .unwrap_or_else(|| "?".into())
}

pub(crate) fn report_path() -> PathBuf {
    harness::bench_report_path("bench-load.md")
}

pub(crate) fn fmt_ops(x: Option<f64>) -> String {
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

pub(crate) fn fmt_cpu(x: Option<f64>) -> String {
    x.map(|x| format!("{x:.2}")).unwrap_or_else(|| "—".into())
}

/// Redis's CPU per operation and, in brackets, its reads per operation (medians).
fn fmt_redis(c: &Cell) -> String {
    match c.reads() {
        Some(r) => format!("{} ({r:.2})", fmt_cpu(c.redis())),
        None => fmt_cpu(c.redis()),
    }
}

pub(crate) fn fmt_ms(x: Option<f64>) -> String {
    x.map(|x| format!("{x:.3}")).unwrap_or_else(|| "—".into())
}

/// KiB as MiB with one decimal.
fn fmt_mib(kib: Option<u64>) -> String {
    kib.map(|k| format!("{:.1}", k as f64 / 1024.0))
        .unwrap_or_else(|| "—".into())
}

/// RESP3 against RESP2 sessions on each system, for the workloads of [`RESP3_PAIRS`] that
/// ran: the median ops/s of the RESP3 workload over the RESP2 one's.
pub(crate) fn resp3_section(
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
pub(crate) fn baseline_section(
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
        let ops = c.runs.iter().map(|r| r.ops_per_sec);
        let lo = ops.clone().fold(f64::INFINITY, f64::min);
        let hi = ops.fold(0.0, f64::max);
        if c.runs.is_empty() {
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

pub(crate) struct Meta {
    pub(crate) base: u64,
    pub(crate) reps: usize,
    pub(crate) cores: usize,
    pub(crate) workers: Option<String>,
    pub(crate) one_worker: bool,
    pub(crate) redis_benchmark: String,
    pub(crate) nutcracker: Option<String>,
    /// 1-minute load average before and after the runs.
    pub(crate) load: (String, String),
    /// `TESSERA_BENCH_PIN` took effect.
    pub(crate) pinned: bool,
    pub(crate) elapsed: Duration,
}

/// What the report adds to the workloads' tables.
pub(crate) struct Extra<'a> {
    /// GETs of the one-client run and its cells, one per endpoint.
    pub(crate) one_client: Option<(u64, &'a [Cell])>,
    /// Idle connections asked for, the RLIMIT_NOFILE soft limit, and each proxy's figures.
    pub(crate) memory: Option<(usize, Option<u64>, &'a [ProxyMemory])>,
}

/// The ratio to direct Redis of system `sys` in a row of cells.
fn ratio_of(endpoints: &[Endpoint], row: &[Cell], sys: Sys) -> Option<f64> {
    let find = |sys: Sys| endpoints.iter().position(|e| e.sys == sys);
    match (row[find(sys)?].ops(), row[find(Sys::Direct)?].ops()) {
        (Some(o), Some(d)) if d > 0.0 => Some(o / d),
        _ => None,
    }
}

pub(crate) fn render(
    workloads: &[Workload],
    endpoints: &[Endpoint],
    cells: &[Vec<Cell>],
    extra: &Extra,
    m: &Meta,
) -> String {
    let find = |_row: &[Cell], sys: Sys| endpoints.iter().position(|e| e.sys == sys);
    // The proxies of the main table (the baseline has its own).
    let mut proxies = vec![Sys::Tessera];
    if m.one_worker {
        proxies.push(Sys::TesseraOne);
    }
    proxies.push(Sys::Twemproxy);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Load benchmark: direct Redis vs Tessera vs twemproxy\n"
    );
    // The workloads' tables are left out when `TESSERA_BENCH_ONLY` selected none.
    let main_table = out.len();
    let _ = writeln!(
        out,
        "Median of {} interleaved runs (at -P1 at least {SHORT_RUN_MIN_REPS}) of \
         `redis-benchmark -c {CLIENTS} -r {KEYSPACE}`; ratios \
         against direct Redis; proxy CPU = utime+stime of the proxy process per operation; \
         Redis CPU = utime+stime of the two redis-servers together per operation (direct: \
         server A does the work), and in brackets the reads of client input they made per \
         operation (`total_reads_processed` of `INFO stats`: the fewer, the more commands \
         Redis found per read).\n",
        m.reps
    );
    let _ = write!(
        out,
        "| workload | requests | direct ops/s | direct Redis µs/op (reads) |"
    );
    for sys in &proxies {
        let l = sys.label();
        let _ = write!(
            out,
            " {l} ops/s (ratio) | {l} CPU µs/op | {l} Redis µs/op (reads) |"
        );
    }
    let _ = writeln!(out, " target (tessera) |");
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|{}---|",
        "---:|---:|---:|".repeat(proxies.len())
    );
    for (w, row) in workloads.iter().zip(cells) {
        let requests = (m.base * w.share.0 / w.share.1).max(1000);
        let direct = find(row, Sys::Direct).and_then(|i| row[i].ops());
        let cell_text = |sys: Sys| -> (String, String, String, Option<f64>, Option<f64>) {
            let Some(i) = find(row, sys) else {
                return ("skipped".into(), "—".into(), "—".into(), None, None);
            };
            let c = &row[i];
            if let (Some(e), true) = (&c.error, c.runs.is_empty()) {
                let short: String = e.chars().take(60).collect();
                return (
                    format!("error: {short}"),
                    "—".into(),
                    "—".into(),
                    None,
                    None,
                );
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
            (text, fmt_cpu(c.cpu()), fmt_redis(c), ratio, c.cpu())
        };
        let (_, _, _, t_ratio, t_cpu_v) = cell_text(Sys::Tessera);
        let direct_text = match find(row, Sys::Direct) {
            Some(i) if row[i].runs.is_empty() => "error".into(),
            _ => fmt_ops(direct),
        };
        let direct_redis = find(row, Sys::Direct).map_or("—".into(), |i| fmt_redis(&row[i]));
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
        let _ = write!(
            out,
            "| {} | {} | {} | {} |",
            w.name,
            fmt_ops(Some(requests as f64)),
            direct_text,
            direct_redis
        );
        for sys in &proxies {
            let (text, cpu, redis, _, _) = cell_text(*sys);
            let _ = write!(out, " {text} | {cpu} | {redis} |");
        }
        let _ = writeln!(out, " {target} |");
    }
    if workloads.is_empty() {
        out.truncate(main_table);
    }

    resp3_section(&mut out, workloads, endpoints, cells);
    baseline_section(&mut out, workloads, endpoints, cells);
    if let Some((n, single)) = extra.one_client {
        one_client_section(&mut out, endpoints, n, single);
    }
    if let Some((n, nofile, memory)) = extra.memory {
        memory_section(&mut out, n, nofile, memory);
    }
    summary_section(&mut out, workloads, endpoints, cells, extra, &proxies);
    targets_section(&mut out, workloads, endpoints, cells, extra);
    let cpu_tables = out.len();

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

    let _ = writeln!(
        out,
        "\nRaw runs (ops/s; in brackets the proxy's CPU µs/op, then the two Redis's CPU µs/op \
         and reads/op):\n"
    );
    let _ = writeln!(out, "| workload | system | runs |");
    let _ = writeln!(out, "|---|---|---|");
    for (w, row) in workloads.iter().zip(cells) {
        for (ep, c) in endpoints.iter().zip(row) {
            let mut runs: Vec<String> = c
                .runs
                .iter()
                .map(|r| {
                    let figures =
                        [r.cpu_us_per_op, r.redis_us_per_op, r.redis_reads_per_op].map(fmt_cpu);
                    format!("{} [{}]", fmt_ops(Some(r.ops_per_sec)), figures.join("; "))
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
    if workloads.is_empty() {
        out.truncate(cpu_tables);
    }
    let _ = writeln!(
        out,
        "\nSetup: {} cores shared by the client, the proxy and the servers; {}; {}; Tessera \
         workers: {}; Tessera 1 worker: {}; {}; base requests {} (`TESSERA_BENCH_REQUESTS`); \
         load average {} before, {} after; took {:.0} s.",
        m.cores,
        m.redis_benchmark,
        m.nutcracker
            .as_deref()
            .map(|v| v.trim_start_matches("This is "))
            .unwrap_or("twemproxy not run"),
        m.workers
            .as_deref()
            .unwrap_or("default (half the cores, at least one)"),
        if m.one_worker {
            "run"
        } else {
            "not run (`TESSERA_BENCH_ONE_WORKER=0`, its default where the default system \
             has one worker too)"
        },
        if m.pinned {
            format!(
                "pinned (`TESSERA_BENCH_PIN=1`): redis-benchmark on CPU 0, the servers and \
                 proxies on CPUs 1–{}",
                m.cores - 1
            )
        } else {
            "not pinned (the scheduler places every process)".to_string()
        },
        m.base,
        m.load.0,
        m.load.1,
        m.elapsed.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "Targets of the table's last column: at -P16 Tessera ≥ 0.6× direct and ≤ 1.3 µs CPU \
         per GET; at -P1 ≥ 0.85× direct."
    );
    out
}

/// One client (`-c 1`), GET at -P1: each system's latency, the median p50 it adds to direct
/// Redis's, and the proxy's CPU per request.
fn one_client_section(out: &mut String, endpoints: &[Endpoint], n: u64, single: &[Cell]) {
    let direct_p50 = endpoints
        .iter()
        .position(|e| e.sys == Sys::Direct)
        .and_then(|i| single[i].p50());
    let _ = writeln!(
        out,
        "\nOne client (`redis-benchmark -c 1 -P 1 -t get -n {n}`), medians of the runs; \
         latency as redis-benchmark reports it; added p50 = p50 − direct Redis's p50:\n"
    );
    let _ = writeln!(
        out,
        "| system | ops/s | mean ms | p50 ms | p99 ms | added p50 µs | proxy CPU µs/request | Redis µs/request |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for (ep, c) in endpoints.iter().zip(single) {
        if let (Some(e), true) = (&c.error, c.runs.is_empty()) {
            let _ = writeln!(out, "| {} | error: {e} | | | | | | |", ep.sys.label());
            continue;
        }
        let added = match (c.p50(), direct_p50) {
            (Some(p), Some(d)) if ep.sys != Sys::Direct => format!("{:+.0}", (p - d) * 1000.0),
            _ => "—".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            ep.sys.label(),
            fmt_ops(c.ops()),
            fmt_ms(c.avg()),
            fmt_ms(c.p50()),
            fmt_ms(c.p99()),
            added,
            fmt_cpu(c.cpu()),
            fmt_cpu(c.redis())
        );
    }
}

fn memory_section(out: &mut String, n: usize, nofile: Option<u64>, memory: &[ProxyMemory]) {
    let _ = writeln!(
        out,
        "\nMemory (VmRSS of /proc/<pid>/status): fresh = started and connected to its \
         backends; after the load = once every load run is over and its connections closed; \
         then with {n} idle client connections open (each sent PING and read +PONG), KiB per \
         connection = (with them − after the load) / connections; closed again = once they \
         are closed; RLIMIT_NOFILE of the bench and the proxies: {}:\n",
        nofile.map_or("?".into(), |n| n.to_string())
    );
    let _ = writeln!(
        out,
        "| proxy | fresh MiB | after the load MiB | after / fresh | connections | with them MiB | KiB per connection | closed again MiB |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for (sys, m) in memory {
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                let _ = writeln!(out, "| {} | error: {e} | | | | | | |", sys.label());
                continue;
            }
        };
        let opened = match &m.short {
            Some(why) => format!("{} of {n} ({why})", m.opened),
            None => m.opened.to_string(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.2} | {} | {} | {} | {} |",
            sys.label(),
            fmt_mib(Some(m.fresh_kib)),
            fmt_mib(Some(m.after_kib)),
            m.after_ratio(),
            opened,
            fmt_mib(Some(m.idle_kib)),
            fmt_cpu(m.kib_per_connection()),
            fmt_mib(m.closed_kib),
        );
    }
}

/// The figures of the goals, one row each, the proxies side by side.
fn summary_section(
    out: &mut String,
    workloads: &[Workload],
    endpoints: &[Endpoint],
    cells: &[Vec<Cell>],
    extra: &Extra,
    proxies: &[Sys],
) {
    let idx = |sys: Sys| endpoints.iter().position(|e| e.sys == sys);
    let row_of = |name: &str| {
        workloads
            .iter()
            .position(|w| w.name == name)
            .map(|i| &cells[i])
    };
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let per_proxy = |f: &dyn Fn(Sys) -> Option<String>| -> Vec<String> {
        proxies
            .iter()
            .map(|&s| f(s).unwrap_or_else(|| "—".into()))
            .collect()
    };
    for name in AHEAD_OF_TWEMPROXY {
        if let Some(row) = row_of(name) {
            rows.push((
                format!("{name}, ratio to direct"),
                per_proxy(&|s| ratio_of(endpoints, row, s).map(|r| format!("{r:.3}"))),
            ));
        }
    }
    for name in ["GET -P1", "GET 1 KiB -P1"] {
        if let Some(row) = row_of(name) {
            rows.push((
                format!("{name}: CPU µs/op, proxy / the two Redis"),
                per_proxy(&|s| {
                    let c = &row[idx(s)?];
                    Some(format!("{} / {}", fmt_cpu(c.cpu()), fmt_cpu(c.redis())))
                }),
            ));
        }
    }
    if let Some((_, single)) = extra.one_client {
        let direct = idx(Sys::Direct).and_then(|i| single[i].p50());
        rows.push((
            "one client, GET -P1: p50 added to direct (µs)".into(),
            per_proxy(&|s| {
                Some(format!(
                    "{:+.0}",
                    (single[idx(s)?].p50()? - direct?) * 1000.0
                ))
            }),
        ));
        rows.push((
            "one client: CPU µs per request, proxy".into(),
            per_proxy(&|s| single[idx(s)?].cpu().map(|c| format!("{c:.2}"))),
        ));
    }
    if let Some((n, _, memory)) = extra.memory {
        let mem = |s: Sys| {
            memory
                .iter()
                .find(|(sys, _)| *sys == s)
                .and_then(|(_, m)| m.as_ref().ok())
        };
        rows.push((
            format!("RSS MiB, new process → with {n} idle connections (KiB each)"),
            per_proxy(&|s| {
                let m = mem(s)?;
                Some(format!(
                    "{} → {} ({})",
                    fmt_mib(Some(m.fresh_kib)),
                    fmt_mib(Some(m.fresh_with_idle_kib())),
                    fmt_cpu(m.kib_per_connection())
                ))
            }),
        ));
        rows.push((
            "RSS MiB after the load runs (× fresh)".into(),
            per_proxy(&|s| {
                let m = mem(s)?;
                Some(format!(
                    "{} ({:.2}×)",
                    fmt_mib(Some(m.after_kib)),
                    m.after_ratio()
                ))
            }),
        ));
    }
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nThe goals' figures, side by side:\n");
    let _ = write!(out, "| case |");
    for s in proxies {
        let _ = write!(out, " {} |", s.label());
    }
    let _ = writeln!(out, "\n|---|{}", "---:|".repeat(proxies.len()));
    for (case, values) in rows {
        let _ = writeln!(out, "| {case} | {} |", values.join(" | "));
    }
}

/// The goals against twemproxy and the memory goals, met or not met, with the figures.
fn targets_section(
    out: &mut String,
    workloads: &[Workload],
    endpoints: &[Endpoint],
    cells: &[Vec<Cell>],
    extra: &Extra,
) {
    let tesseras: Vec<Sys> = [Sys::Tessera, Sys::TesseraOne]
        .into_iter()
        .filter(|s| endpoints.iter().any(|e| e.sys == *s))
        .collect();
    let has_twemproxy = endpoints.iter().any(|e| e.sys == Sys::Twemproxy);
    let verdict = |ok: bool| if ok { "met" } else { "not met" };
    let mut lines: Vec<String> = Vec::new();
    let (mut met, mut total) = (0, 0);
    let mut count = |ok: bool| {
        total += 1;
        if ok {
            met += 1;
        }
        verdict(ok)
    };
    let idx = |sys: Sys| endpoints.iter().position(|e| e.sys == sys);

    // Throughput and Redis's CPU, case by case, against twemproxy.
    for (w, row) in workloads.iter().zip(cells) {
        if !AHEAD_OF_TWEMPROXY.contains(&w.name) || !has_twemproxy {
            continue;
        }
        let twem_ratio = ratio_of(endpoints, row, Sys::Twemproxy);
        let twem = idx(Sys::Twemproxy).map(|i| &row[i]);
        let twem_redis = twem.and_then(Cell::redis);
        for &t in &tesseras {
            let l = t.label();
            let cell = idx(t).map(|i| &row[i]);
            // The rounds each proxy came out ahead in, the same round's runs compared.
            let rounds = |better: fn(&RunResult, &RunResult) -> Option<bool>| match (cell, twem) {
                (Some(a), Some(b)) => {
                    let (won, of) = rounds_won(a, b, better);
                    format!(" (ahead or even in {won} of {of} rounds)")
                }
                _ => String::new(),
            };
            match (ratio_of(endpoints, row, t), twem_ratio) {
                (Some(a), Some(b)) => {
                    let ok = a >= b;
                    let cmp = if ok { "≥" } else { "<" };
                    lines.push(format!(
                        "{}, ratio to direct: {l} {a:.3} {cmp} twemproxy {b:.3}{}: {}",
                        w.name,
                        rounds(|a, b| Some(a.ops_per_sec >= b.ops_per_sec)),
                        count(ok)
                    ));
                }
                _ => lines.push(format!(
                    "{}, ratio to direct: {l} or twemproxy has no figure: not measured",
                    w.name
                )),
            }
            match (cell.and_then(Cell::redis), twem_redis) {
                (Some(a), Some(b)) => {
                    let ok = a <= b;
                    let cmp = if ok { "≤" } else { ">" };
                    lines.push(format!(
                        "{}, Redis CPU per command: behind {l} {a:.2} µs {cmp} behind twemproxy \
                         {b:.2} µs{}: {}",
                        w.name,
                        rounds(|a, b| Some(a.redis_us_per_op? <= b.redis_us_per_op?)),
                        count(ok)
                    ));
                }
                _ => lines.push(format!(
                    "{}, Redis CPU per command: {l} or twemproxy has no figure: not measured",
                    w.name
                )),
            }
        }
    }

    // One client: the p50 added to direct Redis's, and the proxy's CPU per request.
    if let Some((_, single)) = extra.one_client
        && has_twemproxy
    {
        let p50 = |sys: Sys| idx(sys).and_then(|i| single[i].p50());
        let cpu = |sys: Sys| idx(sys).and_then(|i| single[i].cpu());
        let direct = p50(Sys::Direct);
        let added = |sys: Sys| Some((p50(sys)? - direct?) * 1000.0);
        for &t in &tesseras {
            let l = t.label();
            match (added(t), added(Sys::Twemproxy)) {
                (Some(a), Some(b)) => {
                    let ok = a <= b;
                    let cmp = if ok { "≤" } else { ">" };
                    lines.push(format!(
                        "one client GET -P1, p50 added to direct: {l} {a:+.0} µs {cmp} \
                         twemproxy {b:+.0} µs: {}",
                        count(ok)
                    ));
                }
                _ => lines.push(format!(
                    "one client GET -P1, p50 added to direct: {l} or twemproxy has no figure: \
                     not measured"
                )),
            }
            match (cpu(t), cpu(Sys::Twemproxy)) {
                (Some(a), Some(b)) => {
                    let ok = a <= b;
                    let cmp = if ok { "≤" } else { ">" };
                    lines.push(format!(
                        "one client GET -P1, proxy CPU per request: {l} {a:.2} µs {cmp} \
                         twemproxy {b:.2} µs: {}",
                        count(ok)
                    ));
                }
                _ => lines.push(format!(
                    "one client GET -P1, proxy CPU per request: {l} or twemproxy has no \
                     figure: not measured"
                )),
            }
        }
    }

    // Memory: per idle connection, in all, and after the load against idle.
    if let Some((n, _, memory)) = extra.memory {
        for (sys, m) in memory {
            let Ok(m) = m else { continue };
            if !tesseras.contains(sys) {
                continue;
            }
            let l = sys.label();
            if let Some(per) = m.kib_per_connection() {
                let ok = per <= MAX_KIB_PER_CONNECTION;
                lines.push(format!(
                    "idle connections ≤ {MAX_KIB_PER_CONNECTION} KiB each: {l} {per:.2} KiB \
                     ({} connections): {}",
                    m.opened,
                    count(ok)
                ));
            }
            if n == TARGET_CONNECTIONS && m.opened >= n {
                let ok = m.fresh_with_idle_kib() <= MAX_IDLE_KIB;
                lines.push(format!(
                    "RSS of a new process with {n} idle connections (fresh + what they add) \
                     ≤ {} MiB: {l} {} MiB: {}",
                    MAX_IDLE_KIB / 1024,
                    fmt_mib(Some(m.fresh_with_idle_kib())),
                    count(ok)
                ));
            } else {
                lines.push(format!(
                    "RSS with {TARGET_CONNECTIONS} idle connections: {l}: {} opened: not \
                     measured",
                    m.opened
                ));
            }
            let r = m.after_ratio();
            let ok = r <= MAX_AFTER_LOAD_RATIO;
            lines.push(format!(
                "RSS after the load ≤ {MAX_AFTER_LOAD_RATIO}× fresh: {l} {} MiB / {} MiB = \
                 {r:.2}: {}",
                fmt_mib(Some(m.after_kib)),
                fmt_mib(Some(m.fresh_kib)),
                count(ok)
            ));
        }
    }

    if lines.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\nTargets: Tessera at or above twemproxy's ratio to direct Redis and Redis's CPU per \
         command behind it no higher, case by case; one client: p50 added to direct and CPU \
         per request no higher than twemproxy's; memory: ≤ {MAX_KIB_PER_CONNECTION} KiB per \
         idle connection, ≤ {} MiB with {TARGET_CONNECTIONS} of them, after the load ≤ \
         {MAX_AFTER_LOAD_RATIO}× fresh. Met: {met} of {total}.\n",
        MAX_IDLE_KIB / 1024
    );
    for l in lines {
        let _ = writeln!(out, "- {l}");
    }
}
