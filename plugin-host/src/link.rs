//! One link of the chain as the proxy's config names it (`[[plugins]]`), and the bounds a
//! link's settings put on its calls.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[[plugin]]` in the proxy config: one link of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Names the plugin in errors, logs and stats.
    pub name: String,
    /// The module: a `.wasm` binary or a `.wat` text file.
    pub path: PathBuf,
    /// Passed as bytes to the plugin's `on_configure`; its format is the plugin's own.
    #[serde(default)]
    pub config: String,
    /// `closed` (default): a failing plugin fails the command. `open`: the command goes on.
    #[serde(default)]
    pub fail: FailMode,
    #[serde(default = "default_memory_mb")]
    pub memory_limit_mb: u64,
    /// Time limit of one call.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// `true` (default): verdicts the plugin asks the proxy to remember decide the
    /// connection's later commands without a call. `false`: every command is a call (to
    /// debug a plugin, or measure it).
    #[serde(default = "default_remember")]
    pub remember: bool,
}

fn default_memory_mb() -> u64 {
    16
}
fn default_timeout_ms() -> u64 {
    10
}
fn default_remember() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    Open,
    #[default]
    Closed,
}

/// The largest input (context and command, or context, command and reply) a plugin is given:
/// a quarter of its memory limit, which leaves it room for its own data, a copy of the input
/// and a verdict as large.
pub fn max_input(c: &PluginConfig) -> usize {
    (c.memory_limit_mb as usize).saturating_mul(1024 * 1024) / 4
}

pub(crate) fn timeout(c: &PluginConfig) -> Duration {
    Duration::from_millis(c.timeout_ms)
}
