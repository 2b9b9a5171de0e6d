//! Why a plugin or a chain could not be loaded.

/// Why a plugin could not be loaded. The old chain, if any, stays.
#[derive(Debug, thiserror::Error)]
#[error("plugin '{name}' ({path}): {message}")]
pub struct PluginError {
    pub name: String,
    pub path: String,
    pub message: String,
}
