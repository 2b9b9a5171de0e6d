//! The proxy's admin HTTP API, on its own port:
//! `GET /api/model` (config and slot table), `GET /api/stats` (JSON), `GET /metrics` (Prometheus).
//!
//! Read views never show a secret: passwords and plugin configs are masked
//! ([`tessera_topology::mask`], as the dashboard does). A request whose `Host` is not the
//! address the server listens on is refused ([`check_host`]), so a web page cannot reach the
//! API through DNS rebinding.

use std::fmt::Write;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};

use serde_json::json;
use tessera_topology::http::{ForeignHost, check_host};
use tessera_topology::mask::{mask, mask_plugin_config};
use tokio::sync::watch;
use warp::Filter;
use warp::http::StatusCode;

use crate::error::ProxyError;
use crate::plugin::PluginStats;
use crate::shared::Shared;
use crate::stats::BUCKETS_US;

/// Binds the admin server; the returned future serves until `shutdown` changes.
pub fn bind(
    shared: Arc<Shared>,
    addr: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(SocketAddr, impl Future<Output = ()> + Send + 'static), ProxyError> {
    let s = shared.clone();
    let model = warp::path!("api" / "model").map(move || warp::reply::json(&model(&s)));
    let s = shared.clone();
    let stats = warp::path!("api" / "stats").map(move || warp::reply::json(&stats(&s)));
    let s = shared;
    let metrics = warp::path!("metrics").map(move || {
        warp::reply::with_header(metrics(&s), "content-type", "text/plain; version=0.0.4")
    });
    // Set once bound (the port may be 0 in the config); nothing is served before that.
    let bound = Arc::new(OnceLock::<SocketAddr>::new());
    let listen = bound.clone();
    // The `Host` header, or the authority of the request's target.
    let host = warp::host::optional()
        .and_then(move |host: Option<warp::host::Authority>| {
            let listen = listen.get().copied().unwrap_or(addr);
            let host = host.map(|a| a.to_string());
            async move {
                check_host(host.as_deref(), listen)
                    .map_err(|e| warp::reject::custom(Misdirected(e)))
            }
        })
        .untuple_one();
    let routes = host
        .and(warp::get().and(model.or(stats).or(metrics)))
        .recover(|rejection: warp::Rejection| async move {
            match rejection.find::<Misdirected>() {
                Some(Misdirected(e)) => Ok(warp::reply::with_status(
                    warp::reply::json(&json!({ "error": e.to_string() })),
                    StatusCode::MISDIRECTED_REQUEST,
                )),
                None => Err(rejection),
            }
        });
    let (bound_addr, serve) = warp::serve(routes)
        .try_bind_with_graceful_shutdown(addr, async move {
            let _ = shutdown.changed().await;
        })
        .map_err(|e| ProxyError::Listen {
            addr,
            source: std::io::Error::other(e.to_string()),
        })?;
    let _ = bound.set(bound_addr);
    Ok((bound_addr, serve))
}

/// The warp rejection of a request whose `Host` is not this server ([`check_host`]).
#[derive(Debug)]
struct Misdirected(ForeignHost);

impl warp::reject::Reject for Misdirected {}

fn model(shared: &Shared) -> serde_json::Value {
    let table = shared.table.load();
    let mut config = serde_json::to_value(&shared.config).unwrap_or_default();
    // The model is for operators; passwords and plugin configs stay out of it.
    for key in [["proxy", "password"], ["backend", "password"]] {
        if let Some(p) = config.get_mut(key[0]).and_then(|t| t.get_mut(key[1])) {
            *p = json!(mask(p.as_str().unwrap_or_default()));
        }
    }
    if let Some(links) = config.get_mut("plugin").and_then(|l| l.as_array_mut()) {
        links.iter_mut().for_each(mask_plugin_config);
    }
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "revision": table.revision,
        "config": config,
        "groups": table.groups().collect::<Vec<_>>(),
        "slots": table.runs(),
    })
}

fn stats(shared: &Shared) -> serde_json::Value {
    let snap = shared.stats.snapshot();
    let backends: Vec<_> = shared
        .registry
        .all()
        .iter()
        .map(|b| {
            json!({
                "addr": &*b.addr,
                "state": b.state(),
                "connections": b.connected.load(Relaxed),
                "failures": b.failures.load(Relaxed),
            })
        })
        .collect();
    let mut v = serde_json::to_value(&snap).unwrap_or_default();
    v["backends"] = json!(backends);
    v["plugins"] = json!(plugin_stats(shared));
    v
}

/// Per-plugin counters of the current chain, each beside its link as read views show it
/// (name, path, settings, the config masked with its sha256), so that the dashboard can
/// tell which chain a proxy runs.
fn plugin_stats(shared: &Shared) -> Vec<serde_json::Value> {
    let chain = shared.plugins.load();
    chain
        .plugins
        .iter()
        .map(|p| {
            let s = &p.stats;
            let calls = s.calls.load(Relaxed);
            let (connect, reply) = (s.connect_calls.load(Relaxed), s.reply_calls.load(Relaxed));
            let nanos = s.nanos.load(Relaxed);
            let mut link = json!(p.config);
            mask_plugin_config(&mut link);
            let counters = json!({
                "path": p.config.path.display().to_string(),
                "calls": calls,
                "calls_by_hook": {
                    "connect": connect,
                    "command": calls.saturating_sub(connect + reply),
                    "reply": reply,
                },
                "invocations": s.invocations.load(Relaxed),
                "remembered": s.remembered.load(Relaxed),
                "continues": s.continues.load(Relaxed),
                "rewrites": s.rewrites.load(Relaxed),
                "replies": s.replies.load(Relaxed),
                "rejects": s.rejects.load(Relaxed),
                "failures": s.failures.load(Relaxed),
                "nanos": nanos,
                "nanos_per_call": if calls > 0 { nanos as f64 / calls as f64 } else { 0.0 },
            });
            if let (Some(link), serde_json::Value::Object(counters)) =
                (link.as_object_mut(), counters)
            {
                link.extend(counters);
            }
            link
        })
        .collect()
}

/// One value of a plugin's counters, as a Prometheus sample.
type PluginSample = fn(&PluginStats) -> String;

fn metrics(shared: &Shared) -> String {
    let snap = shared.stats.snapshot();
    let mut out = String::with_capacity(4096);
    let mut metric = |name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    metric("tessera_ops_total", "counter", "Commands answered.");
    metric(
        "tessera_ops_errors_total",
        "counter",
        "Commands answered with an error.",
    );
    metric(
        "tessera_sessions_alive",
        "gauge",
        "Client connections open.",
    );
    metric(
        "tessera_sessions_total",
        "counter",
        "Client connections accepted.",
    );
    metric(
        "tessera_uptime_seconds",
        "gauge",
        "Seconds since the proxy started.",
    );
    metric(
        "tessera_busy_poll_spells_total",
        "counter",
        "Spells of polling on a busy worker instead of sleeping (proxy.busy_poll_us).",
    );
    metric(
        "tessera_busy_poll_seconds_total",
        "counter",
        "Time busy workers spent in those spells.",
    );
    let _ = writeln!(out, "tessera_ops_total {}", snap.ops.total);
    let _ = writeln!(out, "tessera_ops_errors_total {}", snap.ops.errors);
    let _ = writeln!(out, "tessera_sessions_alive {}", snap.sessions.alive);
    let _ = writeln!(out, "tessera_sessions_total {}", snap.sessions.total);
    let _ = writeln!(out, "tessera_uptime_seconds {}", snap.uptime_secs);
    let _ = writeln!(
        out,
        "tessera_busy_poll_spells_total {}",
        snap.busy_poll.spells
    );
    let _ = writeln!(
        out,
        "tessera_busy_poll_seconds_total {}",
        snap.busy_poll.usecs as f64 / 1e6
    );

    let commands = &snap.commands;
    family(
        &mut out,
        "tessera_commands_total",
        "counter",
        "Calls per command.",
        "command",
        commands
            .iter()
            .map(|c| (c.name.as_str(), c.calls.to_string())),
    );
    family(
        &mut out,
        "tessera_command_errors_total",
        "counter",
        "Error replies per command.",
        "command",
        commands
            .iter()
            .map(|c| (c.name.as_str(), c.errors.to_string())),
    );
    family(
        &mut out,
        "tessera_command_seconds_total",
        "counter",
        "Time spent per command, from read to reply.",
        "command",
        commands
            .iter()
            .map(|c| (c.name.as_str(), (c.usecs as f64 / 1e6).to_string())),
    );

    let _ = writeln!(
        out,
        "# HELP tessera_command_duration_seconds Command latency, from read to reply.\n# TYPE tessera_command_duration_seconds histogram"
    );
    let mut cumulative = 0;
    for (i, count) in snap.latency_buckets.iter().enumerate() {
        cumulative += count;
        let le = BUCKETS_US
            .get(i)
            .map_or("+Inf".to_string(), |us| format!("{}", *us as f64 / 1e6));
        let _ = writeln!(
            out,
            "tessera_command_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
        );
    }
    let _ = writeln!(
        out,
        "tessera_command_duration_seconds_sum {}",
        snap.latency_usecs_total as f64 / 1e6
    );
    let _ = writeln!(out, "tessera_command_duration_seconds_count {cumulative}");

    let backends = shared.registry.all();
    family(
        &mut out,
        "tessera_backend_up",
        "gauge",
        "Whether the proxy's connections to a backend are up.",
        "addr",
        backends
            .iter()
            .map(|b| (&*b.addr, ((b.state() == "up") as u8).to_string())),
    );
    family(
        &mut out,
        "tessera_backend_failures_total",
        "counter",
        "Backend connection failures and timeouts.",
        "addr",
        backends
            .iter()
            .map(|b| (&*b.addr, b.failures.load(Relaxed).to_string())),
    );
    let chain = shared.plugins.load();
    let _ = writeln!(
        out,
        "# HELP tessera_plugin_verdicts_total Commands a plugin decided (by a call or from a remembered verdict), by verdict.\n# TYPE tessera_plugin_verdicts_total counter"
    );
    for p in &chain.plugins {
        let s = &p.stats;
        for (verdict, n) in [
            ("continue", &s.continues),
            ("rewrite", &s.rewrites),
            ("reply", &s.replies),
            ("reject", &s.rejects),
            ("failure", &s.failures),
        ] {
            let _ = writeln!(
                out,
                "tessera_plugin_verdicts_total{{plugin=\"{}\",verdict=\"{verdict}\"}} {}",
                p.config.name,
                n.load(Relaxed)
            );
        }
    }
    let per_plugin: [(&str, &str, PluginSample); 5] = [
        (
            "tessera_plugin_calls_total",
            "Commands, connections and replies decided by a call into the plugin (not from a remembered verdict).",
            |s| s.calls.load(Relaxed).to_string(),
        ),
        (
            "tessera_plugin_failures_total",
            "Plugin traps, timeouts, memory overruns and malformed verdicts.",
            |s| s.failures.load(Relaxed).to_string(),
        ),
        (
            "tessera_plugin_invocations_total",
            "Calls into plugin modules (one per batch of pipelined commands).",
            |s| s.invocations.load(Relaxed).to_string(),
        ),
        (
            "tessera_plugin_remembered_total",
            "Commands decided by a verdict the plugin asked the proxy to remember, without a call.",
            |s| s.remembered.load(Relaxed).to_string(),
        ),
        (
            "tessera_plugin_seconds_total",
            "Time spent in plugin calls.",
            |s| (s.nanos.load(Relaxed) as f64 / 1e9).to_string(),
        ),
    ];
    for (name, help, value) in per_plugin {
        let rows = chain
            .plugins
            .iter()
            .map(|p| (p.config.name.as_str(), value(&p.stats)));
        family(&mut out, name, "counter", help, "plugin", rows);
    }
    out
}

/// One metric family with a single label: its HELP and TYPE lines, then a sample per row.
fn family<'a>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    label: &str,
    rows: impl Iterator<Item = (&'a str, String)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (label_value, sample) in rows {
        let _ = writeln!(out, "{name}{{{label}=\"{label_value}\"}} {sample}");
    }
}
