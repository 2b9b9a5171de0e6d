//! The plugin host's errors: why a plugin or a chain could not be loaded ([`PluginError`]),
//! and why one call into a plugin failed ([`CallError`]: the `<what>` of the error reply the
//! failure rule gives, `chain::failure`).

use tessera_topology::StoreError;

use crate::abi::{AbiError, Decision};
use crate::wasm::HostError;

/// Why a plugin could not be loaded. The old chain, if any, stays.
#[derive(Debug, thiserror::Error)]
#[error("plugin '{name}' ({path}): {reason}")]
pub struct PluginError {
    pub name: String,
    pub path: String,
    pub reason: LoadError,
}

/// What is wrong with a plugin that does not load.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read the module: {0}")]
    Read(std::io::Error),
    #[error("cannot read the module from the store: {0}")]
    Store(StoreError),
    #[error("the module is not in the store (upload it first)")]
    NotInStore,
    #[error("loading was interrupted: {0}")]
    Interrupted(tokio::task::JoinError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("refused its configuration: {0}")]
    ConfigurationRefused(String),
    #[error("answered its configuration with {0:?}")]
    ConfigurationAnswer(Decision),
    /// A subscription list (`replies`: the `on_reply` one) names no Redis command.
    #[error(
        "subscribes to {name:?}, which is not a Redis 7.0 command{}",
        if *replies { " (reply subscriptions)" } else { "" }
    )]
    UnknownCommand { name: String, replies: bool },
    #[error(
        "gates access, so it cannot be fail = \"open\" (a failing call would let commands \
         through unchecked): set fail = \"closed\""
    )]
    GatesAccessOpen,
    #[error("two plugins have this name")]
    DuplicateName,
}

/// Why a call into a plugin failed, or was not made.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// A trap, the time limit, the memory limit, or an output outside its memory.
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Malformed(#[from] AbiError),
    /// The instance that failed could not be re-created.
    #[error("cannot be instantiated: {0}")]
    Instantiate(LoadError),
    /// The instance failed less than a second ago: no call is made until it may be
    /// re-created. Not a failure of its own (not counted, not logged).
    #[error("is restarting after a failure")]
    Restarting,
    /// Of the `of` commands an `on_commands` call decided, command `at` (from 1) set
    /// attributes; only the last may.
    #[error("set attributes on command {at} of {of} it decided; that must be the last")]
    AttributesNotLast { at: usize, of: usize },
    #[error("answered on_reply with {0:?}")]
    ReplyAnswer(Decision),
}

impl CallError {
    /// Whether it is a failure of the plugin (counted, logged, the instance thrown away).
    pub fn counted(&self) -> bool {
        !matches!(self, CallError::Restarting)
    }
}
