//! The report: the table of every workload and system, RESP3 against RESP2, this build
//! against a baseline, and where it is written.

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

pub(crate) struct Meta {
    pub(crate) base: u64,
    pub(crate) reps: usize,
    pub(crate) cores: usize,
    pub(crate) workers: Option<String>,
    pub(crate) redis_benchmark: String,
    pub(crate) nutcracker: Option<String>,
    /// 1-minute load average before and after the runs.
    pub(crate) load: (String, String),
    pub(crate) elapsed: Duration,
}

pub(crate) fn render(
    workloads: &[Workload],
    endpoints: &[Endpoint],
    cells: &[Vec<Cell>],
    m: &Meta,
) -> String {
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
        "Targets: at -P16 Tessera ≥ 0.6× direct and ≤ 1.3 µs CPU per GET; at -P1 ≥ \
         0.85× direct."
    );
    out
}
