//! Plugins on the request path, in phases (`on_connect`, `on_command`, `on_reply`), run in
//! chain order. The chain is loaded off the hot path and published whole; each worker thread
//! keeps its own instances of it. The WebAssembly host ([`wasm`]) is the one implementation.
//!
//! Failure rule, stated once: a plugin that traps, times out, exceeds its memory or returns a
//! malformed verdict fails that call. Fail-closed (default): the command is answered
//! `-ERR plugin '<name>' failed: <what>`. Fail-open: the command goes on as if the plugin had
//! said `Continue`. The instance is thrown away and re-created (at most once a second).

pub mod abi;
pub mod from_store;
pub mod wasm;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::command;
pub use abi::{CallContext, Decision, Verdict};
use wasm::{Hook, Instance, List};

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
}

fn default_memory_mb() -> u64 {
    16
}
fn default_timeout_ms() -> u64 {
    10
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    Open,
    #[default]
    Closed,
}

/// Why a plugin could not be loaded. The old chain, if any, stays.
#[derive(Debug, thiserror::Error)]
#[error("plugin '{name}' ({path}): {message}")]
pub struct PluginError {
    pub name: String,
    pub path: String,
    pub message: String,
}

/// Counters of one plugin, over all workers.
#[derive(Debug, Default)]
pub struct PluginStats {
    pub calls: AtomicU64,
    pub continues: AtomicU64,
    pub rewrites: AtomicU64,
    pub replies: AtomicU64,
    pub rejects: AtomicU64,
    pub failures: AtomicU64,
    pub nanos: AtomicU64,
}

/// A compiled, configured-once-to-check plugin, ready to be instantiated on each worker.
pub struct LoadedPlugin {
    pub config: PluginConfig,
    module: wasmtime::Module,
    /// By command id: whether `on_command` is called for it.
    subscribed: Box<[bool]>,
    /// By command id: whether `on_reply` is called for it.
    reply_subscribed: Box<[bool]>,
    hooks: [bool; 4],
    pub stats: PluginStats,
}

impl LoadedPlugin {
    /// Compiles the module, instantiates it once, configures it and reads its subscriptions,
    /// so a module that cannot work is refused here, not on the request path.
    pub fn load(config: PluginConfig) -> Result<LoadedPlugin, PluginError> {
        let bytes = std::fs::read(&config.path).map_err(|e| PluginError {
            name: config.name.clone(),
            path: config.path.display().to_string(),
            message: format!("cannot read the module: {e}"),
        })?;
        Self::from_bytes(config, &bytes)
    }

    /// Like [`LoadedPlugin::load`], with the module's bytes at hand (from the topology
    /// store); `config.path` only names it.
    pub fn from_bytes(config: PluginConfig, bytes: &[u8]) -> Result<LoadedPlugin, PluginError> {
        let err = |message: String| PluginError {
            name: config.name.clone(),
            path: config.path.display().to_string(),
            message,
        };
        let module = wasm::compile(bytes).map_err(err)?;
        let mut instance = new_instance(&module, &config).map_err(err)?;
        let names = instance
            .subscriptions(List::Commands, timeout(&config))
            .map_err(err)?;
        let subscribed = command_table(&names).map_err(err)?;
        // Without a reply list, `on_reply` is called for the commands `on_command` is.
        let reply_subscribed = if instance.has_list(List::Replies) {
            let names = instance
                .subscriptions(List::Replies, timeout(&config))
                .map_err(err)?;
            command_table(&names).map_err(|e| err(format!("{e} (reply subscriptions)")))?
        } else {
            subscribed.clone()
        };
        let hooks =
            [Hook::Configure, Hook::Connect, Hook::Command, Hook::Reply].map(|h| instance.has(h));
        Ok(LoadedPlugin {
            config,
            module,
            subscribed,
            reply_subscribed,
            hooks,
            stats: PluginStats::default(),
        })
    }

    fn wants(&self, hook: Hook, cmd: u16) -> bool {
        self.hooks[hook as usize]
            && match hook {
                Hook::Configure | Hook::Connect => true,
                Hook::Command => self.subscribed[cmd as usize],
                Hook::Reply => self.reply_subscribed[cmd as usize],
            }
    }
}

/// By command id, whether a subscription list names it (an empty list names every command).
fn command_table(names: &[String]) -> Result<Box<[bool]>, String> {
    let mut table = vec![names.is_empty(); command::count()].into_boxed_slice();
    for name in names {
        let spec = command::all().find(|s| s.name == name.as_str());
        let spec = spec
            .ok_or_else(|| format!("subscribes to {name:?}, which is not a Redis 7.0 command"))?;
        table[spec.id as usize] = true;
    }
    Ok(table)
}

fn timeout(c: &PluginConfig) -> Duration {
    Duration::from_millis(c.timeout_ms)
}

/// Instantiates and configures a plugin.
fn new_instance(module: &wasmtime::Module, c: &PluginConfig) -> Result<Instance, String> {
    let limit = (c.memory_limit_mb as usize).saturating_mul(1024 * 1024);
    let mut instance = Instance::new(module, &c.name, limit, timeout(c))?;
    let verdict = instance.call(Hook::Configure, c.config.as_bytes(), &[], timeout(c))?;
    match verdict.decision {
        Decision::Continue => Ok(instance),
        Decision::Reject(why) => Err(format!("refused its configuration: {why}")),
        other => Err(format!("answered its configuration with {other:?}")),
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
                    message: "two plugins have this name".into(),
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

/// One worker's instances of the current chain.
pub struct WorkerChain {
    pub version: u64,
    links: Vec<Link>,
    scratch: Vec<u8>,
    /// Key positions of the command `on_command` runs for, reused.
    key_pos: Vec<usize>,
    /// Some counts are not flushed yet.
    dirty: bool,
}

/// Counts of one link not yet added to the plugin's shared counters.
#[derive(Default)]
struct Counts {
    calls: u64,
    continues: u64,
    rewrites: u64,
    replies: u64,
    rejects: u64,
    failures: u64,
    nanos: u64,
}

struct Link {
    plugin: Arc<LoadedPlugin>,
    counts: Counts,
    instance: Option<Instance>,
    /// When the instance was last (re-)created, for the rate limit.
    created: Option<Instant>,
}

/// Finds the command id of a command line and puts its key positions in the vector (which
/// it clears first); `None` if the line is not a valid command.
pub type KeyFinder = dyn FnMut(&[Bytes], &mut Vec<usize>) -> Option<u16>;

/// What the chain decided about a command.
pub enum CommandOutcome {
    /// Go on with these arguments; `true` if a plugin rewrote them.
    Continue(Vec<Bytes>, bool),
    /// Answer with this RESP value without calling Redis; the id is the command's as the
    /// client sent it.
    Answer(u16, Bytes),
}

impl WorkerChain {
    pub fn new(chain: &PluginChain) -> WorkerChain {
        WorkerChain {
            version: chain.version,
            links: chain
                .plugins
                .iter()
                .map(|p| Link {
                    counts: Counts::default(),
                    plugin: p.clone(),
                    instance: None,
                    created: None,
                })
                .collect(),
            scratch: Vec::new(),
            key_pos: Vec::new(),
            dirty: false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// Whether any plugin wants the reply to command `cmd`.
    pub fn wants_reply(&self, cmd: u16) -> bool {
        self.links.iter().any(|l| l.plugin.wants(Hook::Reply, cmd))
    }

    /// A client connected. `Err(reply)` refuses the connection with that error reply.
    pub fn on_connect(
        &mut self,
        ctx: &CallContext,
        attrs: &mut Vec<(String, String)>,
    ) -> Result<(), Bytes> {
        for i in 0..self.links.len() {
            if !self.links[i].plugin.wants(Hook::Connect, 0) {
                continue;
            }
            let ctx = CallContext { attrs, ..*ctx };
            self.scratch.clear();
            abi::encode_context(&mut self.scratch, &ctx);
            match self.call(i, Hook::Connect, &[]) {
                Ok(v) => {
                    set_attrs(attrs, v.attrs);
                    match v.decision {
                        Decision::Continue | Decision::Rewrite(_) => {}
                        Decision::Reply(r) => return Err(r),
                        Decision::Reject(msg) => return Err(error_reply(&msg)),
                    }
                }
                Err(reply) => return Err(reply),
            }
        }
        Ok(())
    }

    /// Runs `on_command` through the chain. `keys` finds the command id and key positions of
    /// a command line (after a rewrite too); `None` if the line is not a valid command, which
    /// ends the chain (the session then reports the error as usual).
    pub fn on_command(
        &mut self,
        ctx: &CallContext,
        attrs: &mut Vec<(String, String)>,
        args: Vec<Bytes>,
        keys: &mut KeyFinder,
    ) -> CommandOutcome {
        let mut key_pos = std::mem::take(&mut self.key_pos);
        let outcome = self.run_on_command(ctx, attrs, args, keys, &mut key_pos);
        self.key_pos = key_pos;
        outcome
    }

    fn run_on_command(
        &mut self,
        ctx: &CallContext,
        attrs: &mut Vec<(String, String)>,
        mut args: Vec<Bytes>,
        keys: &mut KeyFinder,
        key_pos: &mut Vec<usize>,
    ) -> CommandOutcome {
        let Some(id) = keys(&args, key_pos) else {
            return CommandOutcome::Continue(args, false);
        };
        let mut cmd = id;
        let mut rewritten = false;
        // Some(n): `scratch` holds the encoded context (its first n bytes), then the command.
        let mut encoded: Option<usize> = None;
        for i in 0..self.links.len() {
            if !self.links[i].plugin.wants(Hook::Command, cmd) {
                continue;
            }
            if encoded.is_none() {
                self.scratch.clear();
                abi::encode_context(&mut self.scratch, &CallContext { attrs, ..*ctx });
                encoded = Some(self.scratch.len());
                abi::encode_command(&mut self.scratch, &args, key_pos);
            }
            match self.call(i, Hook::Command, &args) {
                Ok(v) => {
                    if !v.attrs.is_empty() {
                        set_attrs(attrs, v.attrs);
                        encoded = None;
                    }
                    match v.decision {
                        Decision::Continue => {}
                        Decision::Rewrite(new) => {
                            args = new;
                            rewritten = true;
                            match keys(&args, key_pos) {
                                Some(c) => cmd = c,
                                None => return CommandOutcome::Continue(args, true),
                            }
                            if let Some(n) = encoded {
                                self.scratch.truncate(n);
                                abi::encode_command(&mut self.scratch, &args, key_pos);
                            }
                        }
                        Decision::Reply(r) => return CommandOutcome::Answer(id, r),
                        Decision::Reject(msg) => {
                            return CommandOutcome::Answer(id, error_reply(&msg));
                        }
                    }
                }
                Err(reply) => return CommandOutcome::Answer(id, reply),
            }
        }
        CommandOutcome::Continue(args, rewritten)
    }

    /// Whether any plugin wants `on_connect`.
    pub fn wants_connect(&self) -> bool {
        self.links.iter().any(|l| l.plugin.wants(Hook::Connect, 0))
    }

    /// Runs `on_reply` through the chain, last plugin first; returns the reply to send.
    pub fn on_reply(
        &mut self,
        ctx: &CallContext,
        cmd: u16,
        args: &[Bytes],
        keys: &[usize],
        mut reply: Bytes,
    ) -> Bytes {
        // Some(n): `scratch` starts with the encoded context and command, n bytes.
        let mut encoded: Option<usize> = None;
        for i in (0..self.links.len()).rev() {
            if !self.links[i].plugin.wants(Hook::Reply, cmd) {
                continue;
            }
            match encoded {
                Some(n) => self.scratch.truncate(n),
                None => {
                    self.scratch.clear();
                    abi::encode_context(&mut self.scratch, ctx);
                    abi::encode_command(&mut self.scratch, args, keys);
                    encoded = Some(self.scratch.len());
                }
            }
            abi::encode_reply(&mut self.scratch, &reply);
            match self.call(i, Hook::Reply, &[]) {
                Ok(v) => match v.decision {
                    Decision::Continue => {}
                    Decision::Reply(r) => reply = r,
                    other => {
                        let msg = format!("answered on_reply with {other:?}");
                        if let Err(r) = self.fail(i, msg) {
                            return r;
                        }
                    }
                },
                Err(r) => return r,
            }
        }
        reply
    }

    /// Calls hook `hook` of link `i` with the input in `scratch` (which holds the command
    /// `args`, if any). A failure is handled by the failure rule: `Err(reply)` when
    /// fail-closed, `Ok(Continue)` when fail-open.
    fn call(&mut self, i: usize, hook: Hook, args: &[Bytes]) -> Result<Verdict, Bytes> {
        let link = &mut self.links[i];
        if link.instance.is_none() {
            let recent = link
                .created
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1));
            if recent {
                return self.fail_quietly(i, "is restarting after a failure".into());
            }
            link.created = Some(Instant::now());
            match new_instance(&link.plugin.module, &link.plugin.config) {
                Ok(inst) => link.instance = Some(inst),
                Err(e) => {
                    return self
                        .fail(i, format!("cannot be instantiated: {e}"))
                        .map(|()| Verdict::CONTINUE);
                }
            }
        }
        let instance = link.instance.as_mut().expect("instance exists");
        let start = Instant::now();
        let result = instance.call(hook, &self.scratch, args, timeout(&link.plugin.config));
        let counts = &mut link.counts;
        counts.calls += 1;
        counts.nanos += start.elapsed().as_nanos() as u64;
        self.dirty = true;
        match result {
            Ok(v) => {
                match v.decision {
                    Decision::Continue => counts.continues += 1,
                    Decision::Rewrite(_) => counts.rewrites += 1,
                    Decision::Reply(_) => counts.replies += 1,
                    Decision::Reject(_) => counts.rejects += 1,
                }
                Ok(v)
            }
            Err(e) => self.fail(i, e).map(|()| Verdict::CONTINUE),
        }
    }

    /// Adds this worker's counts since the last flush to the plugins' shared counters. Called
    /// once per batch of commands, so the shared cache lines are not written on every call.
    pub fn flush_stats(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        for link in &mut self.links {
            let c = std::mem::take(&mut link.counts);
            let s = &link.plugin.stats;
            for (shared, n) in [
                (&s.calls, c.calls),
                (&s.continues, c.continues),
                (&s.rewrites, c.rewrites),
                (&s.replies, c.replies),
                (&s.rejects, c.rejects),
                (&s.failures, c.failures),
                (&s.nanos, c.nanos),
            ] {
                if n > 0 {
                    shared.fetch_add(n, Relaxed);
                }
            }
        }
    }

    fn fail(&mut self, i: usize, what: String) -> Result<(), Bytes> {
        let link = &mut self.links[i];
        link.instance = None;
        link.counts.failures += 1;
        self.dirty = true;
        tracing::warn!(plugin = %link.plugin.config.name, "plugin failed: {what}");
        self.fail_quietly(i, what).map(|_| ())
    }

    fn fail_quietly(&self, i: usize, what: String) -> Result<Verdict, Bytes> {
        let c = &self.links[i].plugin.config;
        match c.fail {
            FailMode::Open => Ok(Verdict::CONTINUE),
            FailMode::Closed => Err(error_reply(&format!(
                "ERR plugin '{}' failed: {what}",
                c.name
            ))),
        }
    }
}

fn set_attrs(attrs: &mut Vec<(String, String)>, new: Vec<(String, String)>) {
    for (k, v) in new {
        attrs.retain(|(key, _)| *key != k);
        if !v.is_empty() {
            attrs.push((k, v));
        }
    }
}

fn error_reply(msg: &str) -> Bytes {
    let mut out = bytes::BytesMut::with_capacity(msg.len() + 3);
    crate::resp::encode::error(&mut out, msg);
    out.freeze()
}
