//! The plugin chain every proxy of the product runs (`/tessera/<product>/plugins`) and its
//! modules (`plugin-modules/<sha256>`, the raw bytes).
//!
//! A module is compiled before it is stored; a chain is loaded whole (every module fetched
//! from the store, compiled, instantiated and configured) before it is written, so a chain
//! that would not load on the proxies is refused with the plugin's error and the old chain
//! stays. The proxies watch the chain document and swap their chain when it changes.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tessera_topology::model::{FailMode, PluginSettings, PluginSpec, Plugins};
use tessera_topology::store::Compare;
use tessera_topology::{Revision, keys};

use crate::error::DashboardError;
use crate::service::{Plan, Service, Snapshot};

/// The largest module `POST /api/plugins/modules` accepts (413 beyond).
pub const MAX_MODULE: usize = 8 << 20;
/// The largest chain document `PUT /api/plugins` accepts (configs included).
pub const MAX_CHAIN_BODY: usize = 1 << 20;
/// Limits a link may ask for.
const MAX_MEMORY_MB: u64 = 4096;
const MAX_TIMEOUT_MS: u64 = 60_000;

/// An uploaded module, and the plugins of the chain that run it.
#[derive(Debug, Clone, Serialize)]
pub struct ModuleView {
    pub sha256: String,
    pub size: usize,
    pub used_by: Vec<String>,
}

/// A proxy that could not load the chain (it runs its previous one).
#[derive(Debug, Clone, Serialize)]
pub struct ProxyPluginError {
    pub addr: String,
    pub plugin_error: String,
}

/// `GET /api/plugins`.
#[derive(Debug, Serialize)]
pub struct PluginsView {
    /// The topology revision (the chain's changes move it).
    pub revision: Revision,
    /// The links as stored, their configs masked unless asked in full (with the token).
    pub chain: Vec<serde_json::Value>,
    pub modules: Vec<ModuleView>,
    /// Proxies that report they could not load the chain.
    pub proxy_errors: Vec<ProxyPluginError>,
}

/// The answer of `POST /api/plugins/modules`.
#[derive(Debug, Serialize)]
pub struct Uploaded {
    pub sha256: String,
    pub size: usize,
    /// False when the same bytes were uploaded before (nothing was written).
    pub created: bool,
}

/// The body of `PUT /api/plugins`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainUpdate {
    pub chain: Vec<LinkUpdate>,
}

/// One link as `PUT /api/plugins` takes it; absent fields take the defaults of
/// [`PluginSpec`] (`fail` closed, 16 MiB, 10 ms, remembered verdicts honoured).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkUpdate {
    pub name: String,
    pub module: String,
    #[serde(default)]
    pub config: String,
    pub fail: Option<String>,
    pub memory_limit_mb: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub remember: Option<bool>,
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A module id: 64 hex digits (returned lowercase).
pub fn parse_sha256(text: &str) -> Result<String, DashboardError> {
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(DashboardError::BadRequest(format!(
            "bad module id {text:?}: expected the module's sha256 (64 hex digits)"
        )))
    }
}

impl LinkUpdate {
    /// Checks what can be checked without the store; fills the defaults.
    fn into_spec(self) -> Result<PluginSpec, DashboardError> {
        let name = self.name.trim().to_string();
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(DashboardError::BadRequest(format!(
                "bad plugin name {:?}: use 1 to 64 letters, digits, '-', '_' or '.'",
                self.name
            )));
        }
        let bad =
            |message: String| DashboardError::BadRequest(format!("plugin '{name}': {message}"));
        let module = parse_sha256(&self.module).map_err(|e| bad(e.to_string()))?;
        // The model's defaults, then what the body gives.
        let mut settings = PluginSettings {
            config: self.config,
            ..PluginSettings::default()
        };
        if let Some(fail) = self.fail {
            settings.fail = match fail.as_str() {
                "open" => FailMode::Open,
                "closed" => FailMode::Closed,
                _ => {
                    return Err(bad(format!(
                        "fail must be \"open\" or \"closed\", not {fail:?}"
                    )));
                }
            };
        }
        if let Some(mb) = self.memory_limit_mb {
            if !(1..=MAX_MEMORY_MB).contains(&mb) {
                return Err(bad(format!(
                    "memory_limit_mb must be 1..={MAX_MEMORY_MB}, not {mb}"
                )));
            }
            settings.memory_limit_mb = mb;
        }
        if let Some(ms) = self.timeout_ms {
            if !(1..=MAX_TIMEOUT_MS).contains(&ms) {
                return Err(bad(format!(
                    "timeout_ms must be 1..={MAX_TIMEOUT_MS}, not {ms}"
                )));
            }
            settings.timeout_ms = ms;
        }
        if let Some(remember) = self.remember {
            settings.remember = remember;
        }
        Ok(PluginSpec {
            name,
            module,
            settings,
        })
    }
}

impl Snapshot {
    /// The chain in the store (empty if none was written).
    pub fn chain(&self) -> &[PluginSpec] {
        self.plugins.as_ref().map_or(&[], |d| &d.value.chain)
    }

    /// `GET /api/plugins`: each config masked, or in `full`.
    pub fn plugins_view(&self, full: bool) -> PluginsView {
        let chain = self.chain();
        let modules = self
            .modules
            .iter()
            .map(|(sha, doc)| ModuleView {
                sha256: sha.clone(),
                size: doc.value,
                used_by: users(chain, sha),
            })
            .collect();
        let chain = if full {
            chain.iter().map(|s| serde_json::json!(s)).collect()
        } else {
            masked_chain(chain)
        };
        let proxy_errors = self
            .proxies
            .iter()
            .filter_map(|p| {
                Some(ProxyPluginError {
                    addr: p.addr.clone(),
                    plugin_error: p.plugin_error.clone()?,
                })
            })
            .collect();
        PluginsView {
            revision: self.revision(),
            chain,
            modules,
            proxy_errors,
        }
    }

    fn guard_plugins(&self, product: &str) -> Compare {
        match &self.plugins {
            Some(d) => d.guard(),
            None => Compare::Absent(keys::plugins(product)),
        }
    }
}

/// The links of `chain` as read views show them: each config masked, with its length and
/// sha256 ([`tessera_topology::mask::mask_plugin_config`]).
pub fn masked_chain(chain: &[PluginSpec]) -> Vec<serde_json::Value> {
    chain
        .iter()
        .map(|spec| {
            let mut link = serde_json::json!(spec);
            tessera_topology::mask::mask_plugin_config(&mut link);
            link
        })
        .collect()
}

/// The names of the links of `chain` that run module `sha`.
fn users(chain: &[PluginSpec], sha: &str) -> Vec<String> {
    chain
        .iter()
        .filter(|s| s.module == sha)
        .map(|s| s.name.clone())
        .collect()
}

impl Service {
    /// `POST /api/plugins/modules`: compiles the module (refused if it is not valid
    /// WebAssembly or imports what the host lacks) and stores it under its sha256. The same
    /// bytes twice are stored once.
    pub async fn upload_module(
        &self,
        bytes: Vec<u8>,
    ) -> Result<(Revision, Uploaded), DashboardError> {
        if bytes.is_empty() {
            return Err(DashboardError::BadRequest(
                "the body is empty: send the module's bytes (.wasm or .wat)".to_string(),
            ));
        }
        let (bytes, checked) = tokio::task::spawn_blocking(move || {
            let checked = tessera_plugin_host::wasm::compile(&bytes).map(drop);
            (bytes, checked)
        })
        .await
        .map_err(|e| DashboardError::BadRequest(format!("compiling the module failed: {e}")))?;
        checked.map_err(|e| DashboardError::BadRequest(e.to_string()))?;
        let sha256 = sha256_hex(&bytes);
        let size = bytes.len();
        let key = keys::plugin_module(self.product(), &sha256);
        let what = format!("plugin module {sha256} uploaded ({size} bytes)");
        self.mutate(&what, |snap| {
            let mut p = Plan::default();
            let created = !snap.modules.contains_key(&sha256);
            if created {
                p.read(Compare::Absent(key.clone()))
                    .put_bytes(key.clone(), bytes.clone());
            }
            let out = Uploaded {
                sha256: sha256.clone(),
                size,
                created,
            };
            Ok((p, out))
        })
        .await
    }

    /// `PUT /api/plugins`: replaces the chain, after loading all of it as a proxy would
    /// (any failure is a 400 naming the plugin, and nothing is written). Returns the
    /// revision and the chain as stored (defaults filled in).
    pub async fn set_chain(
        &self,
        update: ChainUpdate,
    ) -> Result<(Revision, Vec<PluginSpec>), DashboardError> {
        let chain = update
            .chain
            .into_iter()
            .map(LinkUpdate::into_spec)
            .collect::<Result<Vec<_>, _>>()?;
        let mut names = HashSet::new();
        for spec in &chain {
            if !names.insert(spec.name.as_str()) {
                return Err(DashboardError::BadRequest(format!(
                    "plugin '{}': two plugins of the chain have this name",
                    spec.name
                )));
            }
        }
        let snap = self.snapshot().await?;
        check_modules(&snap, &chain)?;
        // Modules are content-addressed: what is loaded here is what the proxies will load,
        // as long as the modules are still there when the chain is written (compared below).
        let version = u64::try_from(snap.revision()).unwrap_or(0);
        tessera_plugin_host::from_store::load_chain(
            self.store().as_ref(),
            self.product(),
            &chain,
            version,
        )
        .await
        .map_err(|e| DashboardError::BadRequest(e.to_string()))?;
        let product = self.product().to_string();
        let what = match chain.len() {
            0 => "plugin chain cleared".to_string(),
            n => format!("plugin chain set ({n} plugins)"),
        };
        self.mutate(&what, |snap| {
            check_modules(snap, &chain)?;
            if snap.chain() == chain.as_slice() && (snap.plugins.is_some() || chain.is_empty()) {
                return Ok((Plan::default(), chain.clone()));
            }
            let mut p = Plan::default();
            let used: HashSet<&str> = chain.iter().map(|s| s.module.as_str()).collect();
            for sha in used {
                p.read(snap.modules[sha].guard());
            }
            p.read(snap.guard_plugins(&product)).put(
                keys::plugins(&product),
                &Plugins {
                    chain: chain.clone(),
                },
            );
            Ok((p, chain.clone()))
        })
        .await
    }

    /// `DELETE /api/plugins/modules/{sha256}`: only a module no plugin of the chain runs.
    pub async fn delete_module(&self, sha: &str) -> Result<Revision, DashboardError> {
        let sha = parse_sha256(sha)?;
        let product = self.product().to_string();
        let (rev, ()) = self
            .mutate(&format!("plugin module {sha} deleted"), |snap| {
                let Some(module) = snap.modules.get(&sha) else {
                    return Err(DashboardError::NotFound(format!(
                        "module {sha} is not uploaded"
                    )));
                };
                let used_by = users(snap.chain(), &sha);
                if !used_by.is_empty() {
                    return Err(DashboardError::Conflict(format!(
                        "module {sha} is used by plugin {}: take it out of the chain first",
                        quoted(&used_by)
                    )));
                }
                let mut p = Plan::default();
                p.read(module.guard())
                    .read(snap.guard_plugins(&product))
                    .delete(module.key.clone());
                Ok((p, ()))
            })
            .await?;
        Ok(rev)
    }
}

/// Every module of `chain` must be uploaded.
fn check_modules(snap: &Snapshot, chain: &[PluginSpec]) -> Result<(), DashboardError> {
    for spec in chain {
        if !snap.modules.contains_key(&spec.module) {
            return Err(DashboardError::BadRequest(format!(
                "plugin '{}': module {} is not uploaded (POST it to /api/plugins/modules first)",
                spec.name, spec.module
            )));
        }
    }
    Ok(())
}

/// `'a', 'b'`.
fn quoted(names: &[String]) -> String {
    let names: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let upper = "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD";
        assert_eq!(parse_sha256(upper).unwrap(), sha256_hex(b"abc"));
        assert!(parse_sha256("abc").is_err());
        assert!(parse_sha256(&"g".repeat(64)).is_err());
    }

    #[test]
    fn links_get_defaults_and_checks() {
        let link =
            |v: serde_json::Value| serde_json::from_value::<LinkUpdate>(v).unwrap().into_spec();
        let sha = sha256_hex(b"m");
        let spec = link(serde_json::json!({"name": "f", "module": sha})).unwrap();
        assert_eq!(
            (
                spec.settings.fail.as_str(),
                spec.settings.memory_limit_mb,
                spec.settings.timeout_ms,
                spec.settings.remember
            ),
            ("closed", 16, 10, true)
        );
        let spec = link(serde_json::json!({"name": "f", "module": sha, "remember": false}));
        assert!(!spec.unwrap().settings.remember);
        let e = link(serde_json::json!({"name": "f", "module": sha, "fail": "maybe"}));
        assert!(
            e.unwrap_err()
                .to_string()
                .starts_with("plugin 'f': fail must be")
        );
        let e = link(serde_json::json!({"name": "f", "module": sha, "timeout_ms": 0}));
        assert!(e.unwrap_err().to_string().contains("timeout_ms"));
        assert!(link(serde_json::json!({"name": "a b", "module": sha})).is_err());
        assert!(
            serde_json::from_value::<LinkUpdate>(
                serde_json::json!({"name": "f", "module": sha, "path": "x"})
            )
            .is_err()
        );
    }
}
