//! `GET /api/plugins/stats`: the per-plugin counters of the product's chain summed over the
//! registered proxies, each proxy's admin API asked directly (`GET /api/stats`).
//!
//! Every proxy is asked at once, each bounded by [`PROBE_TIMEOUT`]: a proxy that is down or
//! slow delays the call by that bound and no more, and is listed with why it is not counted.
//! Only proxies that run the chain in the store (the same links, modules and settings, see
//! [`chain_hash`]) are summed; the others are listed with the hash of the chain they run.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tessera_topology::Revision;
use tessera_topology::model::{PluginSpec, ProxyInfo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::plugins::sha256_hex;
use crate::probe::PROBE_TIMEOUT;
use crate::service::Snapshot;

/// A proxy's `GET /api/stats` answer larger than this is not read (a few KiB is usual).
const MAX_STATS: usize = 4 << 20;
/// How the proxy's admin API names a module loaded from the store.
const STORE_MODULE: &str = "store:";

/// One plugin's counters since its proxy loaded it, as the proxy's `GET /api/stats` reports
/// them (`plugins`; other fields are ignored).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    /// Commands, connections and replies decided by a call into the plugin.
    pub calls: u64,
    /// Calls into the module (a batch of pipelined commands is one).
    pub invocations: u64,
    /// Commands decided by a remembered verdict, without a call (not in `calls`).
    pub remembered: u64,
    /// Verdicts, by a call or remembered.
    pub continues: u64,
    pub rewrites: u64,
    pub replies: u64,
    pub rejects: u64,
    /// Traps, timeouts, memory overruns and malformed verdicts.
    pub failures: u64,
    /// Time spent in calls, nanoseconds.
    pub nanos: u64,
}

impl Counters {
    fn add(&mut self, other: &Counters) {
        for (sum, n) in [
            (&mut self.calls, other.calls),
            (&mut self.invocations, other.invocations),
            (&mut self.remembered, other.remembered),
            (&mut self.continues, other.continues),
            (&mut self.rewrites, other.rewrites),
            (&mut self.replies, other.replies),
            (&mut self.rejects, other.rejects),
            (&mut self.failures, other.failures),
            (&mut self.nanos, other.nanos),
        ] {
            *sum = sum.saturating_add(n);
        }
    }
}

/// One plugin's counters with its time per call.
#[derive(Debug, Clone, Serialize)]
pub struct PluginCounters {
    pub name: String,
    /// The module's sha256 (for a module the proxy loaded from a file: its path).
    pub module: String,
    #[serde(flatten)]
    pub counters: Counters,
    /// `nanos / calls` (0 without calls).
    pub nanos_per_call: f64,
}

impl PluginCounters {
    fn new(name: &str, module: &str, counters: Counters) -> PluginCounters {
        let nanos_per_call = match counters.calls {
            0 => 0.0,
            calls => counters.nanos as f64 / calls as f64,
        };
        PluginCounters {
            name: name.to_string(),
            module: module.to_string(),
            counters,
            nanos_per_call,
        }
    }
}

/// Whether a proxy's counters are in the sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyState {
    /// It runs the store's chain: summed.
    Counted,
    /// It runs another chain (an older or newer one, or its config file's): not summed.
    OtherChain,
    /// It could not be asked, or its answer does not decode: not summed.
    NoAnswer,
}

/// One registered proxy: what it runs and its counters.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyStats {
    pub addr: String,
    pub admin_addr: Option<String>,
    /// Unix seconds: its counters count from then (or from its last chain swap).
    pub start_time: u64,
    pub state: ProxyState,
    /// The hash of the chain it runs ([`chain_hash`]), when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain_hash: Option<String>,
    /// Why it is not counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its own counters, per plugin of the chain it runs (empty when it did not answer).
    pub plugins: Vec<PluginCounters>,
}

/// `GET /api/plugins/stats`.
#[derive(Debug, Clone, Serialize)]
pub struct PluginStatsView {
    /// The topology revision (the chain's changes move it).
    pub revision: Revision,
    /// The hash of the chain in the store: a proxy is counted when it runs this one.
    pub chain_hash: String,
    /// Per plugin of the store's chain, in chain order: the sums over the counted proxies.
    pub plugins: Vec<PluginCounters>,
    /// How many proxies are in the sums.
    pub counted: usize,
    /// Every registered proxy, counted or not.
    pub proxies: Vec<ProxyStats>,
}

/// What makes two chains the same for the sums: each link's name, module and settings (the
/// config by its sha256, as read views show it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LinkId {
    name: String,
    module: String,
    fail: String,
    memory_limit_mb: u64,
    timeout_ms: u64,
    remember: bool,
    config_sha256: String,
}

impl LinkId {
    fn of_spec(spec: &PluginSpec) -> LinkId {
        let s = &spec.settings;
        LinkId {
            name: spec.name.clone(),
            module: spec.module.clone(),
            fail: s.fail.as_str().to_string(),
            memory_limit_mb: s.memory_limit_mb,
            timeout_ms: s.timeout_ms,
            remember: s.remember,
            config_sha256: sha256_hex(s.config.as_bytes()),
        }
    }
}

/// One entry of a proxy's `plugins` (`proxy/src/admin.rs`): its link, masked.
#[derive(Deserialize)]
struct ProxyLink {
    name: String,
    path: String,
    fail: String,
    memory_limit_mb: u64,
    timeout_ms: u64,
    remember: bool,
    config_sha256: String,
}

impl From<ProxyLink> for LinkId {
    fn from(l: ProxyLink) -> LinkId {
        let module = match l.path.strip_prefix(STORE_MODULE) {
            Some(sha) => sha.to_string(),
            None => l.path,
        };
        LinkId {
            name: l.name,
            module,
            fail: l.fail,
            memory_limit_mb: l.memory_limit_mb,
            timeout_ms: l.timeout_ms,
            remember: l.remember,
            config_sha256: l.config_sha256,
        }
    }
}

/// Lowercase hex SHA-256 of a chain's links ([`LinkId`]), in order; an empty chain has one
/// too.
fn chain_hash(links: &[LinkId]) -> String {
    sha256_hex(&serde_json::to_vec(links).expect("links serialize"))
}

/// Asks every registered proxy of the snapshot and sums the counters of those that run the
/// store's chain.
pub async fn plugin_stats(snap: &Snapshot) -> PluginStatsView {
    let asks = snap.proxies.iter().map(|p| async move {
        let answer = match &p.admin_addr {
            None => Err("it has no admin address".to_string()),
            Some(admin) => tokio::time::timeout(PROBE_TIMEOUT, ask(admin))
                .await
                .unwrap_or_else(|_| {
                    Err(format!("no answer within {} ms", PROBE_TIMEOUT.as_millis()))
                }),
        };
        (p, answer)
    });
    let answers = futures_util::future::join_all(asks).await;
    sum(snap.revision(), snap.chain(), answers)
}

/// The view from each proxy's `GET /api/stats` answer (or why there is none).
fn sum<'a>(
    revision: Revision,
    chain: &[PluginSpec],
    answers: impl IntoIterator<Item = (&'a ProxyInfo, Result<Value, String>)>,
) -> PluginStatsView {
    let wanted: Vec<LinkId> = chain.iter().map(LinkId::of_spec).collect();
    let wanted_hash = chain_hash(&wanted);
    let mut totals = vec![Counters::default(); chain.len()];
    let mut counted = 0;
    let proxies = answers
        .into_iter()
        .map(|(p, answer)| {
            let mut row = ProxyStats {
                addr: p.addr.clone(),
                admin_addr: p.admin_addr.clone(),
                start_time: p.start_time,
                state: ProxyState::NoAnswer,
                chain_hash: None,
                error: None,
                plugins: Vec::new(),
            };
            let read = answer.and_then(|stats| {
                read_plugins(&stats).map_err(|e| format!("its /api/stats does not decode: {e}"))
            });
            let (links, counters) = match read {
                Ok(read) => read,
                Err(e) => {
                    row.error = Some(e);
                    return row;
                }
            };
            let hash = chain_hash(&links);
            if hash == wanted_hash {
                row.state = ProxyState::Counted;
                counted += 1;
                totals.iter_mut().zip(&counters).for_each(|(t, c)| t.add(c));
            } else {
                row.state = ProxyState::OtherChain;
                row.error = Some("it runs another chain than the store's".to_string());
            }
            row.chain_hash = Some(hash);
            row.plugins = links
                .iter()
                .zip(counters)
                .map(|(l, c)| PluginCounters::new(&l.name, &l.module, c))
                .collect();
            row
        })
        .collect();
    let plugins = chain
        .iter()
        .zip(totals)
        .map(|(spec, c)| PluginCounters::new(&spec.name, &spec.module, c))
        .collect();
    PluginStatsView {
        revision,
        chain_hash: wanted_hash,
        plugins,
        counted,
        proxies,
    }
}

/// The links and counters of a proxy's `GET /api/stats` answer.
fn read_plugins(stats: &Value) -> Result<(Vec<LinkId>, Vec<Counters>), serde_json::Error> {
    let plugins = stats.get("plugins").cloned().unwrap_or(Value::Null);
    let links: Vec<ProxyLink> = serde_json::from_value(plugins.clone())?;
    let counters: Vec<Counters> = serde_json::from_value(plugins)?;
    Ok((links.into_iter().map(LinkId::from).collect(), counters))
}

/// `GET /api/stats` of a proxy's admin API. A proxy listening on every interface is asked on
/// the loopback address.
async fn ask(admin: &str) -> Result<Value, String> {
    let target = match admin.parse::<SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => {
            let ip = match a.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            };
            SocketAddr::new(ip, a.port()).to_string()
        }
        _ => admin.to_string(),
    };
    let mut stream = TcpStream::connect(&target)
        .await
        .map_err(|e| e.to_string())?;
    // HTTP/1.0: the proxy answers without chunks and closes the connection.
    let request = format!("GET /api/stats HTTP/1.0\r\nHost: {target}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    stream
        .take(MAX_STATS as u64 + 1)
        .read_to_end(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    if answer.len() > MAX_STATS {
        return Err(format!("its answer is larger than {MAX_STATS} bytes"));
    }
    http_json(&answer)
}

/// The JSON body of a `200` HTTP answer.
fn http_json(answer: &[u8]) -> Result<Value, String> {
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Err("it did not answer HTTP".to_string());
    };
    let head = String::from_utf8_lossy(&answer[..end]);
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("it answered {status:?}"));
    }
    serde_json::from_slice(&answer[end + 4..]).map_err(|e| format!("its answer is not JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tessera_topology::model::{FailMode, PluginSettings};

    fn spec(name: &str, config: &str) -> PluginSpec {
        PluginSpec {
            name: name.into(),
            module: sha256_hex(name.as_bytes()),
            settings: PluginSettings {
                config: config.into(),
                fail: FailMode::Open,
                ..PluginSettings::default()
            },
        }
    }

    /// A link as the proxy's `/api/stats` shows it (`proxy/src/admin.rs`), with counters.
    fn proxy_link(spec: &PluginSpec, calls: u64, rejects: u64, nanos: u64) -> Value {
        let mut link = json!({
            "name": spec.name,
            "path": format!("store:{}", spec.module),
            "config": spec.settings.config,
            "fail": spec.settings.fail,
            "memory_limit_mb": spec.settings.memory_limit_mb,
            "timeout_ms": spec.settings.timeout_ms,
            "remember": spec.settings.remember,
            "calls": calls, "rejects": rejects, "continues": calls - rejects, "nanos": nanos,
            "calls_by_hook": {"connect": 0, "command": calls, "reply": 0},
        });
        tessera_topology::mask::mask_plugin_config(&mut link);
        link
    }

    fn proxy(addr: &str) -> ProxyInfo {
        ProxyInfo {
            token: addr.into(),
            addr: addr.into(),
            admin_addr: Some(format!("{addr}0")),
            version: "0".into(),
            pid: 1,
            start_time: 7,
            applied_revision: 0,
            ops_per_sec: 0.0,
            sessions: None,
            errors: None,
            plugin_error: None,
            topology_error: None,
            holding: None,
        }
    }

    #[test]
    fn proxies_running_the_chain_add_up_and_the_others_are_listed() {
        let chain = vec![spec("acl", "{\"users\": {}}"), spec("filter", "")];
        let (p1, p2, p3, p4) = (proxy("a:1"), proxy("b:1"), proxy("c:1"), proxy("d:1"));
        let other = [spec("acl", "{\"users\": {\"x\": 1}}"), spec("filter", "")];
        let answers = vec![
            (
                &p1,
                Ok(
                    json!({"plugins": [proxy_link(&chain[0], 10, 2, 1000), proxy_link(&chain[1], 8, 0, 80)]}),
                ),
            ),
            (
                &p2,
                Ok(
                    json!({"plugins": [proxy_link(&chain[0], 5, 1, 500), proxy_link(&chain[1], 4, 4, 40)]}),
                ),
            ),
            // The same names and modules, another config: not the store's chain.
            (
                &p3,
                Ok(
                    json!({"plugins": [proxy_link(&other[0], 100, 100, 1), proxy_link(&other[1], 1, 1, 1)]}),
                ),
            ),
            (&p4, Err("connection refused".to_string())),
        ];
        let view = sum(3, &chain, answers);
        assert_eq!(view.counted, 2);
        let acl = &view.plugins[0];
        assert_eq!(
            (acl.name.as_str(), acl.counters.calls, acl.counters.rejects),
            ("acl", 15, 3)
        );
        assert_eq!(acl.counters.continues, 12);
        assert_eq!(acl.nanos_per_call, 100.0);
        assert_eq!(view.plugins[1].counters.rejects, 4);
        let states: Vec<ProxyState> = view.proxies.iter().map(|p| p.state).collect();
        assert_eq!(
            states,
            [
                ProxyState::Counted,
                ProxyState::Counted,
                ProxyState::OtherChain,
                ProxyState::NoAnswer
            ]
        );
        assert_eq!(view.proxies[0].chain_hash.as_ref(), Some(&view.chain_hash));
        assert_ne!(view.proxies[2].chain_hash.as_ref(), Some(&view.chain_hash));
        assert_eq!(view.proxies[2].plugins[0].counters.rejects, 100);
        assert_eq!(view.proxies[3].error.as_deref(), Some("connection refused"));
        assert!(view.proxies[3].plugins.is_empty());
    }

    #[test]
    fn an_answer_without_the_links_settings_is_not_counted() {
        let chain = vec![spec("acl", "")];
        let p = proxy("a:1");
        let old = json!({"plugins": [{"name": "acl", "path": "store:x", "calls": 3}]});
        let view = sum(1, &chain, vec![(&p, Ok(old))]);
        assert_eq!(view.counted, 0);
        assert_eq!(view.proxies[0].state, ProxyState::NoAnswer);
        let e = view.proxies[0].error.as_deref().unwrap();
        assert!(e.starts_with("its /api/stats does not decode: "), "{e}");
        assert_eq!(view.plugins[0].counters, Counters::default());
    }

    #[test]
    fn http_answers() {
        let ok = b"HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{\"plugins\": []}";
        assert_eq!(http_json(ok).unwrap(), json!({"plugins": []}));
        let e = http_json(b"HTTP/1.0 421 Misdirected Request\r\n\r\n{}").unwrap_err();
        assert_eq!(e, "it answered \"HTTP/1.0 421 Misdirected Request\"");
        assert_eq!(
            http_json(b"+PONG\r\n").unwrap_err(),
            "it did not answer HTTP"
        );
    }
}
