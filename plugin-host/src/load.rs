//! Loading: a module compiled, instantiated and configured once to check it, its
//! subscriptions read; and the chain of loaded plugins, published whole.

use std::sync::Arc;

use tessera_protocol::command;

use crate::abi::Decision;
use crate::error::{LoadError, PluginError};
use crate::link::{FailMode, PluginConfig, timeout};
use crate::stats::PluginStats;
use crate::wasm::{self, Hook, HostError, Instance, List};

/// A compiled, configured-once-to-check plugin, ready to be instantiated on each worker.
pub struct LoadedPlugin {
    pub config: PluginConfig,
    pub(crate) module: wasmtime::Module,
    /// By command id: whether `on_command` is called for it.
    pub(crate) subscribed: Box<[bool]>,
    /// By command id: whether `on_reply` is called for it.
    pub(crate) reply_subscribed: Box<[bool]>,
    pub(crate) hooks: [bool; 5],
    /// Whether its contexts carry the session's protocol (`tessera_context_protocol`).
    pub(crate) context_protocol: bool,
    pub stats: PluginStats,
    /// Whether a refused verdict of this fail-open plugin was logged (once is enough).
    pub(crate) refusal_logged: std::sync::atomic::AtomicBool,
}

impl LoadedPlugin {
    /// Compiles the module, instantiates it once, configures it and reads its subscriptions,
    /// so a module that cannot work is refused here, not on the request path.
    pub fn load(config: PluginConfig) -> Result<LoadedPlugin, PluginError> {
        let bytes = std::fs::read(&config.path).map_err(|e| PluginError {
            name: config.name.clone(),
            path: config.path.display().to_string(),
            reason: LoadError::Read(e),
        })?;
        Self::from_bytes(config, &bytes)
    }

    /// Like [`LoadedPlugin::load`], with the module's bytes at hand (from the topology
    /// store); `config.path` only names it.
    pub fn from_bytes(config: PluginConfig, bytes: &[u8]) -> Result<LoadedPlugin, PluginError> {
        let err = |reason: LoadError| PluginError {
            name: config.name.clone(),
            path: config.path.display().to_string(),
            reason,
        };
        let host = |e: HostError| err(LoadError::Host(e));
        let module = wasm::compile(bytes).map_err(host)?;
        let mut instance = new_instance(&module, &config).map_err(err)?;
        let names = instance
            .subscriptions(List::Commands, timeout(&config))
            .map_err(host)?;
        let subscribed = command_table(&names, false).map_err(err)?;
        // Without a reply list, `on_reply` is called for the commands `on_command` is.
        let reply_subscribed = if instance.has_list(List::Replies) {
            let names = instance
                .subscriptions(List::Replies, timeout(&config))
                .map_err(host)?;
            command_table(&names, true).map_err(err)?
        } else {
            subscribed.clone()
        };
        let hooks = Hook::ALL.map(|h| instance.has(h));
        if instance.gates_access() && config.settings.fail == FailMode::Open {
            return Err(err(LoadError::GatesAccessOpen));
        }
        Ok(LoadedPlugin {
            config,
            module,
            subscribed,
            reply_subscribed,
            hooks,
            context_protocol: instance.context_protocol(),
            stats: PluginStats::default(),
            refusal_logged: Default::default(),
        })
    }

    /// Whether the module decides batches of commands (`tessera_on_commands`).
    pub(crate) fn batched(&self) -> bool {
        self.hooks[Hook::Commands as usize]
    }

    pub(crate) fn wants(&self, hook: Hook, cmd: u16) -> bool {
        match hook {
            Hook::Configure | Hook::Connect => self.hooks[hook as usize],
            Hook::Command | Hook::Commands => {
                let exported =
                    self.hooks[Hook::Command as usize] || self.hooks[Hook::Commands as usize];
                exported && self.subscribed[cmd as usize]
            }
            Hook::Reply => self.hooks[hook as usize] && self.reply_subscribed[cmd as usize],
        }
    }
}

/// By command id, whether a subscription list names it (an empty list names every command);
/// `replies`: the list is the `on_reply` one.
fn command_table(names: &[String], replies: bool) -> Result<Box<[bool]>, LoadError> {
    let mut table = vec![names.is_empty(); command::count()].into_boxed_slice();
    for name in names {
        let spec = command::all().find(|s| s.name == name.as_str());
        let spec = spec.ok_or_else(|| LoadError::UnknownCommand {
            name: name.clone(),
            replies,
        })?;
        table[spec.id as usize] = true;
    }
    Ok(table)
}

/// Instantiates and configures a plugin.
pub(crate) fn new_instance(
    module: &wasmtime::Module,
    c: &PluginConfig,
) -> Result<Instance, LoadError> {
    let limit = (c.settings.memory_limit_mb as usize).saturating_mul(1024 * 1024);
    let mut instance = Instance::new(module, &c.name, limit, timeout(c))?;
    let verdict = instance.call(
        Hook::Configure,
        c.settings.config.as_bytes(),
        &[],
        timeout(c),
    )?;
    match verdict.decision {
        Decision::Continue => Ok(instance),
        Decision::Reject(why) => Err(LoadError::ConfigurationRefused(why)),
        other => Err(LoadError::ConfigurationAnswer(other)),
    }
}

/// The plugins in order, published whole.
#[derive(Default)]
pub struct PluginChain {
    /// Changes whenever the chain does; workers rebuild their instances on a new one.
    pub version: u64,
    pub plugins: Vec<Arc<LoadedPlugin>>,
}

impl PluginChain {
    /// Loads every plugin of `configs` from its file; the first that fails is the error.
    pub fn load(configs: &[PluginConfig], version: u64) -> Result<PluginChain, PluginError> {
        let plugins = configs
            .iter()
            .map(|c| LoadedPlugin::load(c.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_plugins(plugins, version)
    }

    /// A chain of plugins already loaded; names must be unique.
    pub fn from_plugins(
        plugins: Vec<LoadedPlugin>,
        version: u64,
    ) -> Result<PluginChain, PluginError> {
        let mut names = std::collections::HashSet::new();
        for p in &plugins {
            if !names.insert(p.config.name.as_str()) {
                return Err(PluginError {
                    name: p.config.name.clone(),
                    path: p.config.path.display().to_string(),
                    reason: LoadError::DuplicateName,
                });
            }
        }
        let plugins = plugins.into_iter().map(Arc::new).collect();
        Ok(PluginChain { version, plugins })
    }

    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }
}
