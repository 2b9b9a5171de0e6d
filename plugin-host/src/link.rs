//! One link of the chain as the proxy's config names it (`[[plugin]]`: a name, a module
//! file and the settings every link has), and the bounds its settings put on its calls.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
pub use tessera_topology::model::{FailMode, PluginSettings};

/// `[[plugin]]` in the proxy config: one link of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "PluginTable")]
pub struct PluginConfig {
    /// Names the plugin in errors, logs and stats.
    pub name: String,
    /// The module: a `.wasm` binary or a `.wat` text file.
    pub path: PathBuf,
    /// Written beside `name` and `path` in the table.
    #[serde(flatten)]
    pub settings: PluginSettings,
}

/// `[[plugin]]` as written, its fields flat. Serde cannot refuse unknown fields next to a
/// flattened struct, so the table is read here, every field by name, with the defaults of
/// [`PluginSettings`]: a misspelt field stays an error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginTable {
    name: String,
    path: PathBuf,
    #[serde(default)]
    config: String,
    #[serde(default)]
    fail: FailMode,
    #[serde(default = "PluginSettings::default_memory_limit_mb")]
    memory_limit_mb: u64,
    #[serde(default = "PluginSettings::default_timeout_ms")]
    timeout_ms: u64,
    #[serde(default = "PluginSettings::default_remember")]
    remember: bool,
}

impl From<PluginTable> for PluginConfig {
    fn from(t: PluginTable) -> PluginConfig {
        PluginConfig {
            name: t.name,
            path: t.path,
            settings: PluginSettings {
                config: t.config,
                fail: t.fail,
                memory_limit_mb: t.memory_limit_mb,
                timeout_ms: t.timeout_ms,
                remember: t.remember,
            },
        }
    }
}

/// The largest input (context and command, or context, command and reply) a plugin is given:
/// a quarter of its memory limit, which leaves it room for its own data, a copy of the input
/// and a verdict as large.
pub fn max_input(c: &PluginConfig) -> usize {
    (c.settings.memory_limit_mb as usize).saturating_mul(1024 * 1024) / 4
}

/// The time limit of one call.
pub(crate) fn timeout(c: &PluginConfig) -> Duration {
    Duration::from_millis(c.settings.timeout_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_table_takes_the_shared_defaults_and_refuses_unknown_fields() {
        let c: PluginConfig = toml::from_str("name = \"f\"\npath = \"f.wasm\"\n").unwrap();
        assert_eq!(c.settings, PluginSettings::default());
        assert_eq!(
            (
                c.settings.fail,
                c.settings.memory_limit_mb,
                c.settings.timeout_ms
            ),
            (FailMode::Closed, 16, 10)
        );
        assert!(c.settings.remember);
        let c: PluginConfig = toml::from_str(
            "name = \"f\"\npath = \"f.wasm\"\nfail = \"open\"\ntimeout_ms = 5\nconfig = \"x\"\n",
        )
        .unwrap();
        assert_eq!(c.settings.fail, FailMode::Open);
        assert_eq!(
            (c.settings.timeout_ms, c.settings.config.as_str()),
            (5, "x")
        );
        let e =
            toml::from_str::<PluginConfig>("name = \"f\"\npath = \"f.wasm\"\nfial = \"open\"\n")
                .unwrap_err();
        assert!(e.to_string().contains("unknown field `fial`"), "{e}");
        let e =
            toml::from_str::<PluginConfig>("name = \"f\"\npath = \"f.wasm\"\nfail = \"maybe\"\n")
                .unwrap_err();
        assert!(e.to_string().contains("unknown variant `maybe`"), "{e}");
    }
}
