//! The proxy's admin HTTP API, on its own port:
//! `GET /api/model` (config and slot table), `GET /api/stats` (JSON), `GET /metrics` (Prometheus).
//!
//! Read views never show a secret: passwords and plugin configs are [`MASK`]ed (the
//! dashboard masks with the same definitions). A request whose `Host` is not the address
//! the server listens on is refused ([`check_host`]), so a web page cannot reach the API
//! through DNS rebinding.

use std::fmt::Write;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};

use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use warp::Filter;
use warp::http::StatusCode;

use crate::error::ProxyError;
use crate::plugin::PluginStats;
use crate::router::SlotState;
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
            async move { check_host(host.as_deref(), listen).map_err(warp::reject::custom) }
        })
        .untuple_one();
    let routes = host
        .and(warp::get().and(model.or(stats).or(metrics)))
        .recover(|rejection: warp::Rejection| async move {
            match rejection.find::<ForeignHost>() {
                Some(e) => Ok(warp::reply::with_status(
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

/// What read views show instead of a secret that is set: a password, a plugin's config.
pub const MASK: &str = "********";

/// `secret` as read views show it: [`MASK`], or empty if it is empty.
pub fn mask(secret: &str) -> String {
    if secret.is_empty() {
        String::new()
    } else {
        MASK.to_string()
    }
}

/// A plugin link as JSON (`[[plugin]]` of the proxy config, or a link of the dashboard's
/// chain) as read views show it: its `config` [`mask`]ed, with `config_bytes` (its length)
/// and `config_sha256` (lowercase hex) added, so that two configs can be told apart.
pub fn mask_plugin_config(link: &mut serde_json::Value) {
    let Some(link) = link.as_object_mut() else {
        return;
    };
    let config = link
        .get("config")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    let sha256: String = Sha256::digest(config.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let bytes = config.len();
    let masked = mask(config);
    link.insert("config".to_string(), json!(masked));
    link.insert("config_bytes".to_string(), json!(bytes));
    link.insert("config_sha256".to_string(), json!(sha256));
}

/// A request for another server than this one: its `Host` names neither the address the
/// server listens on nor, for a server on a loopback or wildcard address, `localhost`.
#[derive(Debug, thiserror::Error)]
#[error(
    "this server is http://{listen}/, not {host:?}: requests for another host name are refused (use the address it listens on, or localhost for a local one)"
)]
pub struct ForeignHost {
    pub host: String,
    pub listen: SocketAddr,
}

impl warp::reject::Reject for ForeignHost {}

/// Whether a request with this `Host` header is for the server listening on `listen`. A
/// browser always sends the name it resolved, so a page served from a name an attacker
/// rebound to this machine's address (DNS rebinding) is refused here. Accepted:
///
/// - the port of `listen` (80 if the header has none), and
/// - as the name, an IP address: `listen`'s own, any loopback one if `listen` is loopback,
///   any if `listen` is a wildcard (`0.0.0.0`, `[::]`) — an address cannot be rebound; or
///   `localhost` if `listen` is loopback or a wildcard.
///
/// No header at all (HTTP/1.0 tools) is accepted: a browser never omits it.
pub fn check_host(host: Option<&str>, listen: SocketAddr) -> Result<(), ForeignHost> {
    let Some(header) = host else {
        return Ok(());
    };
    let refused = || ForeignHost {
        host: header.to_string(),
        listen,
    };
    let text = header.trim();
    let (name, port) = match text.strip_prefix('[') {
        Some(rest) => {
            let (name, after) = rest.split_once(']').ok_or_else(refused)?;
            (name, after.strip_prefix(':'))
        }
        None => match text.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (text, None),
        },
    };
    let port = match port {
        Some(p) => p.parse::<u16>().map_err(|_| refused())?,
        None => 80,
    };
    if port != listen.port() {
        return Err(refused());
    }
    let ip = listen.ip();
    let ok = match name.parse::<IpAddr>() {
        Ok(addr) => ip.is_unspecified() || addr == ip || (ip.is_loopback() && addr.is_loopback()),
        Err(_) => {
            name.eq_ignore_ascii_case("localhost") && (ip.is_loopback() || ip.is_unspecified())
        }
    };
    if ok { Ok(()) } else { Err(refused()) }
}

#[derive(Serialize)]
struct SlotRangeJson {
    range: String,
    #[serde(flatten)]
    state: SlotState,
}

fn model(shared: &Shared) -> serde_json::Value {
    let table = shared.table.load();
    let slots: Vec<SlotRangeJson> = table
        .ranges()
        .into_iter()
        .map(|r| SlotRangeJson {
            range: format!("{}-{}", r.lo, r.hi),
            state: r.state,
        })
        .collect();
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
        "slots": slots,
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

/// Per-plugin counters of the current chain.
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
            json!({
                "name": p.config.name,
                "path": p.config.path.display().to_string(),
                "fail": p.config.settings.fail,
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
            })
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
    let _ = writeln!(out, "tessera_ops_total {}", snap.ops.total);
    let _ = writeln!(out, "tessera_ops_errors_total {}", snap.ops.errors);
    let _ = writeln!(out, "tessera_sessions_alive {}", snap.sessions.alive);
    let _ = writeln!(out, "tessera_sessions_total {}", snap.sessions.total);
    let _ = writeln!(out, "tessera_uptime_seconds {}", snap.uptime_secs);

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_this_server_only() {
        let at = |a: &str| a.parse::<SocketAddr>().unwrap();
        let ok = |host: &str, listen: &str| check_host(Some(host), at(listen)).is_ok();
        for host in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LocalHost:8080",
            "[::1]:8080",
            "127.0.0.2:8080",
        ] {
            assert!(ok(host, "127.0.0.1:8080"), "{host}");
        }
        for host in [
            "evil.example:8080",
            "127.0.0.1:8081",
            "127.0.0.1",
            "localhost",
            "10.0.0.1:8080",
            "[::1",
            "x:y",
            "",
        ] {
            assert!(!ok(host, "127.0.0.1:8080"), "{host}");
        }
        assert!(ok("10.1.2.3:80", "10.1.2.3:80") && ok("10.1.2.3", "10.1.2.3:80"));
        assert!(!ok("localhost:80", "10.1.2.3:80") && !ok("10.1.2.4:80", "10.1.2.3:80"));
        for host in ["10.9.9.9:9000", "localhost:9000", "[fe80::1]:9000"] {
            assert!(ok(host, "0.0.0.0:9000") && ok(host, "[::]:9000"), "{host}");
        }
        assert!(!ok("evil.example:9000", "0.0.0.0:9000"));
        assert!(check_host(None, at("127.0.0.1:8080")).is_ok());
        let e = check_host(Some("evil.example:8080"), at("127.0.0.1:8080")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("this server is http://127.0.0.1:8080/, not \"evil.example:8080\""),
            "{e}"
        );
    }

    #[test]
    fn plugin_configs_are_masked_with_a_fingerprint() {
        let mut link = json!({"name": "acl", "config": "abc", "fail": "open"});
        mask_plugin_config(&mut link);
        assert_eq!(
            link,
            json!({"name": "acl", "config": MASK, "config_bytes": 3, "fail": "open",
                   "config_sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"})
        );
        let mut empty = json!({"name": "f", "config": ""});
        mask_plugin_config(&mut empty);
        assert_eq!(
            (&empty["config"], &empty["config_bytes"]),
            (&json!(""), &json!(0))
        );
    }
}
