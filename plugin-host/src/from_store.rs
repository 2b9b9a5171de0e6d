//! The plugin chain kept in the topology store (`/tessera/<product>/plugins`, modules under
//! `plugin-modules/<sha256>`), turned into a [`PluginChain`]. Used by coordinator-mode proxies
//! to hot-swap their chain, and by the dashboard to refuse a chain that would not load.

use tessera_topology::model::PluginSpec;
use tessera_topology::{Store, keys};

use crate::error::LoadError;
use crate::{LoadedPlugin, PluginChain, PluginConfig, PluginError};

/// The proxy-side config of one link of a stored chain; `path` names the module as
/// `store:<sha256>`.
pub fn plugin_config(spec: &PluginSpec) -> PluginConfig {
    PluginConfig {
        name: spec.name.clone(),
        path: format!("store:{}", spec.module).into(),
        settings: spec.settings.clone(),
    }
}

/// Fetches every module of `chain` and loads it (compiled, instantiated and configured once).
/// Compiling takes milliseconds per module: callers keep it off the request path.
pub async fn load_chain(
    store: &dyn Store,
    product: &str,
    chain: &[PluginSpec],
    version: u64,
) -> Result<PluginChain, PluginError> {
    let mut modules = Vec::with_capacity(chain.len());
    for spec in chain {
        let config = plugin_config(spec);
        let kv = store
            .get(&keys::plugin_module(product, &spec.module))
            .await
            .map_err(|e| PluginError {
                name: spec.name.clone(),
                path: config.path.display().to_string(),
                reason: LoadError::Store(e),
            })?
            .ok_or_else(|| PluginError {
                name: spec.name.clone(),
                path: config.path.display().to_string(),
                reason: LoadError::NotInStore,
            })?;
        modules.push((config, kv.value));
    }
    let loaded = tokio::task::spawn_blocking(move || {
        modules
            .into_iter()
            .map(|(config, bytes)| LoadedPlugin::from_bytes(config, &bytes))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| PluginError {
        name: "chain".into(),
        path: String::new(),
        reason: LoadError::Interrupted(e),
    })??;
    PluginChain::from_plugins(loaded, version)
}
