//! Plugin cost benchmark: GET and SET at `-P 16` through five proxies started side by side
//! over the same two Redis servers, the same config but the plugin chain:
//!
//! - (a) no plugin;
//! - (b) `command-filter` alone, with a deny list that GET/SET do not match;
//! - (c) the chain `acl-auth` → `key-prefix` → `command-filter`; redis-benchmark authenticates
//!   as `alice` (`-a secret --user alice`) and alice's keys get the tenant prefix `t1:`;
//! - (d) and (e): (b) and (c) with `remember = false`, so every command is a call into the
//!   plugins (with `remember = true`, the default, the proxy decides nearly all GET/SET from
//!   the verdicts the plugins asked it to remember, and calls are rare and cold).
//!
//! Run: `cargo bench --bench plugins`, after `./plugins/build.sh` (without the modules the
//! bench says so and exits without failing). Needs `redis-server` and `redis-benchmark`.
//! `TESSERA_BENCH_REQUESTS` sets the requests of a run (default 1000000),
//! `TESSERA_BENCH_REPS` the repetitions (default 5; the setups interleaved, medians compared).
//! Goals: the chain of three costs <= 10% of throughput (ratio c/a >= 0.90), one
//! plugin call <= 300 ns (`nanos_per_call` of `/api/stats`, in d and e). The table is printed
//! and written to `target/bench-plugins.md`.

use tessera_testkit as harness;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use harness::{Proxy, RawConn, RedisServer, Resp, clock_ticks_per_sec, cpu_ticks, encode};

use harness::plugins::{COMMAND_FILTER, KEY_PREFIX, USER, acl_auth_config};

/// The password of `USER`, as its hash in the acl-auth configuration says.
const PASSWORD: &str = "secret";

/// Every redis-benchmark run is killed past this.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// One system under test.
struct Setup {
    label: &'static str,
    /// `(plugin name, module file, config)` in chain order.
    chain: Vec<(&'static str, &'static str, String)>,
    /// redis-benchmark authenticates (`-a PASSWORD --user USER`).
    auth: bool,
    /// The proxy honours the plugins' requests to remember verdicts (`remember = true`, the
    /// default); without, every command is a call, which is what measures a call's cost.
    remember: bool,
}

fn setups() -> Vec<Setup> {
    let mut setups = vec![
        Setup {
            label: "a: no plugin",
            chain: vec![],
            auth: false,
            remember: true,
        },
        Setup {
            label: "b: command-filter",
            chain: vec![(
                "command-filter",
                "command_filter.wasm",
                COMMAND_FILTER.into(),
            )],
            auth: false,
            remember: true,
        },
        Setup {
            label: "c: acl-auth + key-prefix + command-filter",
            chain: vec![
                ("acl-auth", "acl_auth.wasm", acl_auth_config()),
                ("key-prefix", "key_prefix.wasm", KEY_PREFIX.into()),
                (
                    "command-filter",
                    "command_filter.wasm",
                    COMMAND_FILTER.into(),
                ),
            ],
            auth: true,
            remember: true,
        },
    ];
    // The same plugins with every command a call.
    let calls = [
        "d: command-filter, remember = false",
        "e: the chain of c, remember = false",
    ];
    let more: Vec<Setup> = setups[1..]
        .iter()
        .zip(calls)
        .map(|(s, label)| Setup {
            label,
            chain: s.chain.clone(),
            auth: s.auth,
            remember: false,
        })
        .collect();
    setups.extend(more);
    setups
}

/// The per-call time limit of the bench's plugins. Not the default 10 ms, so that no run can
/// be lost to a plugin error (redis-benchmark aborts on an error reply). The limit counts the
/// time the worker runs, not the time it waits for a core (docs/plugin-abi.md, "Limits and
/// failures"), and its value does not change the cost of a call, which is what is measured.
const TIMEOUT_MS: u64 = 1000;

fn plugin_toml(chain: &[(&str, &str, String)], remember: bool) -> String {
    chain
        .iter()
        .map(|(name, file, config)| {
            let path = harness::built_dir().join(file);
            format!(
                "[[plugin]]\nname = {}\npath = {}\nconfig = '''{config}'''\nfail = \"closed\"\nmemory_limit_mb = 16\ntimeout_ms = {TIMEOUT_MS}\nremember = {remember}\n\n",
                harness::toml_str(name),
                harness::toml_str(&path.display().to_string()),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------------------------

/// One plugin's counters in `/api/stats`, or their change during a run.
#[derive(Clone, Copy, Default)]
struct Counters {
    /// Commands decided by a call.
    calls: u64,
    /// Commands decided by a verdict the plugin asked the proxy to remember.
    remembered: u64,
    /// Calls into the module (one per batch).
    invocations: u64,
    nanos: u64,
    /// Rejects + failures.
    errors: u64,
}

/// The counters of each plugin of the chain, in order.
fn plugin_counters(proxy: &Proxy) -> Vec<Counters> {
    let body = proxy.http_get("/api/stats").body;
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/api/stats: {e}: {body}"));
    v["plugins"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    let n = |k: &str| p[k].as_u64().unwrap_or(0);
                    Counters {
                        calls: n("calls"),
                        remembered: n("remembered"),
                        invocations: n("invocations"),
                        nanos: n("nanos"),
                        errors: n("rejects") + n("failures"),
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One run's figures.
struct Run {
    ops: f64,
    cpu_us_per_op: f64,
    /// Per plugin, during the run.
    plugins: Vec<Counters>,
}

/// One redis-benchmark run of `test` (`get` / `set`) against `proxy`.
fn run(proxy: &Proxy, setup: &Setup, test: &str, requests: u64, tck: f64) -> Result<Run, String> {
    let stats_before = plugin_counters(proxy);
    let cpu_before = cpu_ticks(proxy.pid());
    let mut cmd = Command::new("redis-benchmark");
    cmd.args(["-h", "127.0.0.1", "-p", &proxy.addr.port().to_string()])
        .args(["-c", "50", "-P", "16", "-r", "100000", "-q", "--csv"])
        .args(["-n", &requests.to_string(), "-t", test]);
    if setup.auth {
        cmd.args(["-a", PASSWORD, "--user", USER]);
    }
    let (status, stdout, stderr) = harness::run_bounded(&mut cmd, RUN_TIMEOUT)
        .map_err(|e| format!("cannot run redis-benchmark: {e}"))?;
    let cpu_after = cpu_ticks(proxy.pid());
    let stats_after = plugin_counters(proxy);
    if status.is_none() {
        return Err(format!("redis-benchmark killed after {RUN_TIMEOUT:?}"));
    }
    let ops = stdout
        .lines()
        .filter(|l| l.starts_with('"') && !l.starts_with("\"test\""))
        .find_map(|l| l.split(',').nth(1)?.trim_matches('"').parse().ok())
        .ok_or_else(|| format!("no rate from redis-benchmark: {stdout:?} {}", stderr.trim()))?;
    let cpu = match (cpu_before, cpu_after) {
        (Some(b), Some(a)) => (a - b) as f64 / tck * 1e6 / requests as f64,
        _ => return Err("the proxy's /proc/<pid>/stat is unreadable".into()),
    };
    let plugins = stats_after
        .iter()
        .zip(
            stats_before
                .iter()
                .chain(std::iter::repeat(&Counters::default())),
        )
        .map(|(a, b)| Counters {
            calls: a.calls - b.calls,
            remembered: a.remembered - b.remembered,
            invocations: a.invocations - b.invocations,
            nanos: a.nanos - b.nanos,
            errors: a.errors - b.errors,
        })
        .collect();
    Ok(Run {
        ops,
        cpu_us_per_op: cpu,
        plugins,
    })
}

/// Sends AUTH (if the setup asks for it) and one SET and GET, and refuses an error reply:
/// redis-benchmark counts error replies as operations, so a refused command would look fast.
fn probe(proxy: &Proxy, setup: &Setup) -> Result<(), String> {
    let mut conn = RawConn::connect(proxy.addr);
    let mut cmds: Vec<Vec<&str>> = vec![];
    if setup.auth {
        cmds.push(vec!["AUTH", USER, PASSWORD]);
    }
    cmds.push(vec!["SET", "key:000000000001", "xxx"]);
    cmds.push(vec!["GET", "key:000000000001"]);
    for c in cmds {
        conn.send(&encode(&c));
        match conn.read() {
            Ok(Resp::Error(e)) => return Err(format!("{} answers -{e}", c[0])),
            Ok(_) => {}
            Err(e) => return Err(format!("{} got no reply: {e}", c[0])),
        }
    }
    Ok(())
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

fn report_path() -> PathBuf {
    harness::bench_report_path("bench-plugins.md")
}

fn check(ok: bool) -> &'static str {
    if ok { "✓" } else { "✗" }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` and `--list` do not run the load.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let missing: Vec<String> = ["command_filter.wasm", "key_prefix.wasm", "acl_auth.wasm"]
        .iter()
        .map(|f| harness::built_dir().join(f))
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    if !missing.is_empty() {
        println!(
            "skipping the plugins bench: module(s) missing: {}\nbuild them with ./plugins/build.sh",
            missing.join(", ")
        );
        return;
    }
    if Command::new("redis-benchmark")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("skipping the plugins bench: no redis-benchmark (apt-get install redis-tools)");
        return;
    }
    let requests = env_u64("TESSERA_BENCH_REQUESTS", 1_000_000).max(1);
    let reps = env_u64("TESSERA_BENCH_REPS", 5).max(1) as usize;
    let tck = clock_ticks_per_sec();
    let load_before = load_average();
    let (r1, r2) = (RedisServer::start(), RedisServer::start());
    let setups = setups();
    let proxies: Vec<Proxy> = setups
        .iter()
        .map(|s| {
            Proxy::builder(&[&[&r1], &[&r2]])
                .extra_toml(&plugin_toml(&s.chain, s.remember))
                .start()
        })
        .collect();
    for (p, s) in proxies.iter().zip(&setups) {
        if let Err(e) = probe(p, s) {
            panic!("proxy {}: {e}", s.label);
        }
    }
    // Warm-up, unmeasured: creates the plugin instances of every worker and fills the keys
    // the GET runs read (c's keys carry the tenant prefix, so each proxy fills its own).
    for (p, s) in proxies.iter().zip(&setups) {
        run(p, s, "set", (requests / 5).max(1), tck)
            .unwrap_or_else(|e| panic!("warm-up of {}: {e}", s.label));
    }

    let tests = ["set", "get"];
    // runs[test][setup]
    let mut runs: Vec<Vec<Vec<Run>>> = tests
        .iter()
        .map(|_| setups.iter().map(|_| Vec::new()).collect())
        .collect();
    let mut raw = String::new();
    let mut failed_runs = 0;
    let started = Instant::now();
    for (ti, test) in tests.iter().enumerate() {
        for rep in 0..reps {
            // Interleaved, the starting system rotating, so drift hits every setup alike.
            for k in 0..setups.len() {
                let si = (rep + k) % setups.len();
                let r = match run(&proxies[si], &setups[si], test, requests, tck) {
                    Ok(r) => r,
                    Err(e) => {
                        // Kept out of the medians, listed with the raw runs.
                        let line = format!(
                            "| {} | {} | {} | error: {} | | |\n",
                            test.to_uppercase(),
                            rep + 1,
                            setups[si].label,
                            e.replace(['\n', '|'], " ")
                        );
                        print!("{line}");
                        raw.push_str(&line);
                        failed_runs += 1;
                        continue;
                    }
                };
                let line = format!(
                    "| {} | {} | {} | {:.0} | {:.3} | {} |\n",
                    test.to_uppercase(),
                    rep + 1,
                    setups[si].label,
                    r.ops,
                    r.cpu_us_per_op,
                    r.plugins
                        .iter()
                        .map(|p| format!("{:.0}", p.nanos as f64 / p.calls.max(1) as f64))
                        .collect::<Vec<_>>()
                        .join(" / ")
                );
                print!("{line}");
                raw.push_str(&line);
                runs[ti][si].push(r);
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let load_after = load_average();

    let mut out = format!(
        "## Plugin cost: GET/SET -P16, 50 clients, -r 100000, {requests} requests x {reps} \
         (medians; {elapsed:.0} s; load average {load_before} before, {load_after} after)\n\n\
         | workload | system | ops/s | ratio to a | proxy CPU µs/op | plugin ns/command | chain ns/command | commands per module call | remembered |\n\
         |---|---|---|---|---|---|---|---|---|\n"
    );
    let mut worst_ratio = f64::INFINITY;
    let mut worst_call = 0.0f64;
    let mut errors = 0;
    for (ti, test) in tests.iter().enumerate() {
        let base = median(&runs[ti][0].iter().map(|r| r.ops).collect::<Vec<_>>());
        for (si, s) in setups.iter().enumerate() {
            let rs = &runs[ti][si];
            let ops = median(&rs.iter().map(|r| r.ops).collect::<Vec<_>>());
            let cpu = median(&rs.iter().map(|r| r.cpu_us_per_op).collect::<Vec<_>>());
            let per_call: Vec<String> = (0..s.chain.len())
                .map(|pi| {
                    let ns = median(
                        &rs.iter()
                            .map(|r| {
                                let p = r.plugins[pi];
                                p.nanos as f64 / p.calls.max(1) as f64
                            })
                            .collect::<Vec<_>>(),
                    );
                    // With remembering, the few calls are each connection's first: cold.
                    if !s.remember {
                        worst_call = worst_call.max(ns);
                    }
                    format!("{} {ns:.0}", s.chain[pi].0)
                })
                .collect();
            errors += rs
                .iter()
                .flat_map(|r| r.plugins.iter().map(|p| p.errors))
                .sum::<u64>();
            let chain = median(
                &rs.iter()
                    .map(|r| {
                        r.plugins.iter().map(|p| p.nanos).sum::<u64>() as f64 / requests as f64
                    })
                    .collect::<Vec<_>>(),
            );
            let per_invocation = median(
                &rs.iter()
                    .flat_map(|r| {
                        r.plugins
                            .iter()
                            .map(|p| p.calls as f64 / p.invocations.max(1) as f64)
                    })
                    .collect::<Vec<_>>(),
            );
            let remembered = median(
                &rs.iter()
                    .map(|r| {
                        let (called, kept) = r
                            .plugins
                            .iter()
                            .fold((0, 0), |(c, k), p| (c + p.calls, k + p.remembered));
                        100.0 * kept as f64 / (called + kept).max(1) as f64
                    })
                    .collect::<Vec<_>>(),
            );
            if si == 2 {
                worst_ratio = worst_ratio.min(ops / base);
            }
            out.push_str(&format!(
                "| {} | {} | {ops:.0} | {:.3} | {cpu:.3} | {} | {} | {} | {} |\n",
                test.to_uppercase(),
                s.label,
                ops / base,
                if per_call.is_empty() {
                    "—".into()
                } else {
                    per_call.join(", ")
                },
                if s.chain.is_empty() {
                    "—".into()
                } else {
                    format!("{chain:.0}")
                },
                if s.chain.is_empty() {
                    "—".into()
                } else {
                    format!("{per_invocation:.1}")
                },
                if s.chain.is_empty() {
                    "—".into()
                } else {
                    format!("{remembered:.2}%")
                },
            ));
        }
    }
    out.push_str(&format!(
        "\nGoals: chain of three ≥ 0.90× no plugin: worst {worst_ratio:.3} {}; \
         one plugin call ≤ 300 ns per command (d, e): worst {worst_call:.0} ns {}.\n\
         Plugin ns/command = Δnanos/Δcalls of `/api/stats` (the time inside the wasm calls, as \
         the host measures it, per command decided); each plugin decides every GET/SET once, \
         the commands of one read in one call (`tessera_on_commands`): commands per module \
         call = Δcalls/Δinvocations, median over the plugins and runs (key-prefix's on_reply \
         is subscribed to KEYS/SCAN/RANDOMKEY only). Remembered = the share of the plugins' \
         decisions made by the proxy from a verdict the plugin asked it to remember, without a \
         call (Δremembered / (Δcalls + Δremembered)); plugin ns/command is over the commands \
         decided by a call. \
         Chain ns/command = Σ Δnanos / requests. Proxy CPU = Δ(utime+stime) of the proxy pid / \
         requests, all threads. Plugin rejects + failures during the runs: {errors} (acl-auth \
         refuses redis-benchmark's start-up CONFIG GET in c; redis-benchmark aborts on any \
         other error reply). Failed runs (left out of the medians): {failed_runs}. \
         Plugin deadline {TIMEOUT_MS} ms.\n\n\
         Raw runs (the order of the setups rotates per repetition):\n\n\
         | workload | rep | system | ops/s | proxy CPU µs/op | plugin ns/command, in chain order |\n|---|---|---|---|---|---|\n{raw}",
        check(worst_ratio >= 0.90),
        check(worst_call <= 300.0),
    ));
    println!("\n{out}");
    let path = report_path();
    match std::fs::write(&path, &out) {
        Ok(()) => println!("written to {}", path.display()),
        Err(e) => println!("could not write {}: {e}", path.display()),
    }
}
