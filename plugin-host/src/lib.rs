//! Plugins on the request path, in phases (`on_connect`, `on_command`, `on_reply`), run in
//! chain order. The chain is loaded off the hot path and published whole; each worker thread
//! keeps its own instances of it. The WebAssembly host ([`wasm`]) is the one implementation.
//!
//! Failure rule, stated once: a plugin that traps, times out, exceeds its memory or returns a
//! malformed verdict fails that call. Fail-closed (default): the command is answered
//! `-ERR plugin '<name>' failed: <what>`. Fail-open: the command goes on as if the plugin had
//! said `Continue`. The instance is thrown away and re-created (at most once a second).
//! A command or reply too large for a plugin ([`max_input`]) is no failure: it is answered
//! with an error without a call. A plugin that gates access is never fail-open.

pub mod abi;
pub mod from_store;
pub mod memory;
pub mod wasm;

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use tessera_protocol::command;
use tessera_protocol::resp::Limits;
use abi::VerdictList;
pub use abi::{CallContext, Decision, Verdict};
pub use memory::Memory;
use memory::Remembered;
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
    /// Commands, connections and replies a hook decided.
    pub calls: AtomicU64,
    /// Calls into the module (a batch of commands is one).
    pub invocations: AtomicU64,
    /// Of `calls`, those of `on_connect` and of `on_reply` (the rest are commands).
    pub connect_calls: AtomicU64,
    pub reply_calls: AtomicU64,
    /// Commands decided from a remembered verdict, without a call (not in `calls`).
    pub remembered: AtomicU64,
    /// Verdicts, given by a call or remembered (PrefixKeys counts as a rewrite).
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
    hooks: [bool; 5],
    /// Whether its contexts carry the session's protocol (`tessera_context_protocol`).
    context_protocol: bool,
    pub stats: PluginStats,
    /// Whether a refused verdict of this fail-open plugin was logged (once is enough).
    refusal_logged: std::sync::atomic::AtomicBool,
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
        let hooks = Hook::ALL.map(|h| instance.has(h));
        if instance.gates_access() && config.fail == FailMode::Open {
            return Err(err(GATES_OPEN.into()));
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
    fn batched(&self) -> bool {
        self.hooks[Hook::Commands as usize]
    }

    fn wants(&self, hook: Hook, cmd: u16) -> bool {
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

/// Why a module that declares `tessera_gates_access` is refused with `fail = "open"`.
const GATES_OPEN: &str = "gates access, so it cannot be fail = \"open\" (a failing call would let \
     commands through unchecked): set fail = \"closed\"";

/// The largest input (context and command, or context, command and reply) a plugin is given:
/// a quarter of its memory limit, which leaves it room for its own data, a copy of the input
/// and a verdict as large.
pub fn max_input(c: &PluginConfig) -> usize {
    (c.memory_limit_mb as usize).saturating_mul(1024 * 1024) / 4
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
    /// The batch of commands `run_batch` runs the chain over.
    items: Vec<Item>,
    /// About the argument bytes of `items`.
    batch_bytes: usize,
    /// Attribute changes plugins made during the batch.
    changes: Vec<Change>,
    /// Key position vectors of finished batches, reused.
    spare_keys: Vec<Vec<usize>>,
    /// Where keys given a prefix are written: one allocation for many keys.
    key_arena: bytes::BytesMut,
    /// The commands of one call, reused.
    group: Vec<usize>,
    /// Some counts are not flushed yet.
    dirty: bool,
    /// The bounds of a client's command, which a rewrite is held to (the proxy's config).
    limits: Limits,
}

/// Counts of one link not yet added to the plugin's shared counters.
#[derive(Default)]
struct Counts {
    calls: u64,
    invocations: u64,
    connect_calls: u64,
    reply_calls: u64,
    remembered: u64,
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

/// Most commands one batch holds, and about the most argument bytes: a batch ends with the
/// command that reaches either.
pub const MAX_BATCH: usize = 128;
pub const MAX_BATCH_BYTES: usize = 64 * 1024;

/// One command of the batch on its way through the chain.
struct Item {
    args: Vec<Bytes>,
    /// The command id as the client sent it; `None`: not a valid command.
    id: Option<u16>,
    /// The command id after the rewrites so far.
    cmd: u16,
    keys: Vec<usize>,
    rewritten: bool,
    /// A plugin's answer: the plugins after it do not see the command.
    answer: Option<Bytes>,
    /// A rewrite made it no valid command: the plugins after it do not see it.
    ended: bool,
}

/// Connection attributes link `link` set when it decided command `item` of the batch.
struct Change {
    item: usize,
    link: usize,
    attrs: Vec<(String, String)>,
}

/// Finds the command id of a command line and puts its key positions in the vector (which
/// it clears first); `None` if the line is not a valid command.
pub type KeyFinder = dyn FnMut(&[Bytes], &mut Vec<usize>) -> Option<u16>;

/// What the chain decided about a command.
pub enum CommandOutcome {
    /// Go on with these arguments; `true` if a plugin rewrote them; the id of their
    /// command, if they are a valid one (its arity checked).
    Continue(Vec<Bytes>, bool, Option<u16>),
    /// Answer with this RESP value without calling Redis; the id is the command's as the
    /// client sent it.
    Answer(u16, Bytes),
}

impl WorkerChain {
    /// A worker's instances of `chain` (none created yet); `limits` are the bounds of a
    /// client's command, which plugin rewrites are held to.
    pub fn new(chain: &PluginChain, limits: Limits) -> WorkerChain {
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
            items: Vec::new(),
            batch_bytes: 0,
            changes: Vec::new(),
            spare_keys: Vec::new(),
            key_arena: bytes::BytesMut::new(),
            group: Vec::new(),
            dirty: false,
            limits,
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
            abi::encode_context(
                &mut self.scratch,
                &ctx,
                self.links[i].plugin.context_protocol,
            );
            if self.scratch.len() > max_input(&self.links[i].plugin.config) {
                return Err(self.too_large(i, "connection context", self.scratch.len()));
            }
            match self.call(i, Hook::Connect, &[]) {
                Ok(v) => {
                    if let Some(what) = self.gates_open(i, &Decision::Continue, &v.attrs, None) {
                        return Err(self.refuse_gating(i, what));
                    }
                    let mut next = attrs.clone();
                    set_attrs(&mut next, v.attrs);
                    if let Err(e) = abi::check_attrs(&next, "would give the connection") {
                        self.fail(i, e)?;
                        continue;
                    }
                    *attrs = next;
                    match v.decision {
                        Decision::Continue | Decision::Rewrite(_) | Decision::PrefixKeys(_) => {}
                        Decision::Reply(r) => return Err(r),
                        Decision::Reject(msg) => return Err(error_reply(&msg)),
                    }
                }
                Err(reply) => return Err(reply),
            }
        }
        Ok(())
    }

    /// Adds a command to the batch `run_batch` runs; returns its command id (`None`: not a
    /// valid command, which the plugins do not see).
    pub fn push(&mut self, args: Vec<Bytes>, keys: &mut KeyFinder) -> Option<u16> {
        let mut key_pos = self.spare_keys.pop().unwrap_or_default();
        let id = keys(&args, &mut key_pos);
        self.batch_bytes += args.iter().map(|a| a.len() + 5).sum::<usize>();
        self.items.push(Item {
            args,
            id,
            cmd: id.unwrap_or(0),
            keys: key_pos,
            rewritten: false,
            answer: None,
            ended: false,
        });
        id
    }

    /// Whether the batch has as many commands or bytes as one may hold.
    pub fn batch_full(&self) -> bool {
        self.items.len() >= MAX_BATCH || self.batch_bytes >= MAX_BATCH_BYTES
    }

    pub fn batch_is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Runs `on_command` through the chain for the batch, plugin by plugin, and appends
    /// the outcomes to `out` in order, emptying the batch. `ctx` is the connection as the
    /// batch starts. Returned: where plugins changed its attributes, as `(i, attributes)`:
    /// the attributes from the `i`-th command of the batch on (set while deciding it),
    /// ascending in `i`; empty if they changed none.
    /// `keys` finds the id and key positions of a rewritten command; a rewrite to no valid
    /// command ends the chain for it (the session then reports the error as usual).
    /// `memory` holds the connection's remembered verdicts: they decide commands without
    /// a call, and verdicts plugins ask to be remembered are added to it.
    pub fn run_batch(
        &mut self,
        ctx: &CallContext,
        keys: &mut KeyFinder,
        memory: &mut Memory,
        out: &mut Vec<CommandOutcome>,
    ) -> Vec<(usize, Vec<(String, String)>)> {
        self.changes.clear();
        memory.validate(self.version, self.links.len(), ctx);
        for link in 0..self.links.len() {
            self.run_link(link, ctx, keys, memory);
        }
        self.batch_bytes = 0;
        for item in self.items.drain(..) {
            self.spare_keys.push(item.keys);
            out.push(match (item.id, item.answer) {
                (Some(id), Some(reply)) => CommandOutcome::Answer(id, reply),
                _ => {
                    let valid = item.id.is_some() && !item.ended;
                    CommandOutcome::Continue(item.args, item.rewritten, valid.then_some(item.cmd))
                }
            });
        }
        let mut from = Vec::new();
        if self.changes.is_empty() {
            return from;
        }
        let mut attrs = ctx.attrs.to_vec();
        self.changes.sort_by_key(|c| (c.item, c.link));
        let mut changes = self.changes.drain(..).peekable();
        while let Some(c) = changes.next() {
            set_attrs(&mut attrs, c.attrs);
            if changes.peek().is_none_or(|next| next.item != c.item) {
                from.push((c.item, attrs.clone()));
            }
        }
        from
    }

    /// Runs link `q` over the commands of the batch it wants, in as few calls as its module
    /// allows. It sees the attributes the links before it set from the command they set
    /// them on, and its own from the command after. A command it has a remembered verdict
    /// for is decided by that, once the commands before it are decided under the same
    /// attributes.
    fn run_link(&mut self, q: usize, ctx: &CallContext, keys: &mut KeyFinder, memory: &mut Memory) {
        let mut earlier: Vec<usize> = Vec::new();
        earlier.extend((0..self.changes.len()).filter(|&c| self.changes[c].link < q));
        earlier.sort_by_key(|&c| (self.changes[c].item, self.changes[c].link));
        let batched = self.links[q].plugin.batched();
        let mut view: Option<Vec<(String, String)>> = None;
        let mut next = 0;
        let mut group = std::mem::take(&mut self.group);
        group.clear();
        for i in 0..self.items.len() {
            let item = &self.items[i];
            let wanted = item.id.is_some()
                && item.answer.is_none()
                && !item.ended
                && self.links[q].plugin.wants(Hook::Command, item.cmd);
            if !wanted {
                continue;
            }
            if earlier
                .get(next)
                .is_some_and(|&c| self.changes[c].item <= i)
            {
                self.call_group(q, ctx, &mut view, &mut group, keys, memory);
                while let Some(&c) = earlier.get(next).filter(|&&c| self.changes[c].item <= i) {
                    let attrs = self.changes[c].attrs.clone();
                    set_attrs(view.get_or_insert_with(|| ctx.attrs.to_vec()), attrs);
                    next += 1;
                }
            }
            // Only under the attributes the batch started with, which the memory is for.
            let recall = |view: &Option<_>, memory: &Memory, item: &Item| match view {
                Some(_) => None,
                None => memory.recall(q, item.cmd, &item.args, &item.keys).cloned(),
            };
            let mut recalled = recall(&view, memory, &self.items[i]);
            if recalled.is_some() && !group.is_empty() {
                // The commands waiting for a call may set attributes: decide them first.
                self.call_group(q, ctx, &mut view, &mut group, keys, memory);
                recalled = recall(&view, memory, &self.items[i]);
            }
            if let Some(verdict) = recalled {
                self.links[q].counts.remembered += 1;
                self.dirty = true;
                self.apply_remembered(i, verdict, q, keys);
                continue;
            }
            group.push(i);
            if !batched {
                self.call_group(q, ctx, &mut view, &mut group, keys, memory);
            }
        }
        self.call_group(q, ctx, &mut view, &mut group, keys, memory);
        self.group = group;
    }

    /// Applies a verdict of link `q` to command `i` of the batch without calling the plugin.
    fn apply_remembered(&mut self, i: usize, verdict: Remembered, q: usize, keys: &mut KeyFinder) {
        let item = &mut self.items[i];
        let counts = &mut self.links[q].counts;
        match verdict {
            Remembered::Continue => counts.continues += 1,
            Remembered::PrefixKeys(prefix) => {
                counts.rewrites += 1;
                prefix_keys(item, &prefix, &mut self.key_arena, keys);
            }
            Remembered::Reply(reply) => {
                counts.replies += 1;
                item.answer = Some(reply);
            }
            Remembered::Reject(reply) => {
                counts.rejects += 1;
                item.answer = Some(reply);
            }
        }
    }

    /// Has link `q` decide the commands `group` names (indices into the batch), calling it
    /// again while it leaves some undecided; empties `group`.
    fn call_group(
        &mut self,
        q: usize,
        ctx: &CallContext,
        view: &mut Option<Vec<(String, String)>>,
        group: &mut Vec<usize>,
        keys: &mut KeyFinder,
        memory: &mut Memory,
    ) {
        let batched = self.links[q].plugin.batched();
        let max = max_input(&self.links[q].plugin.config);
        let mut done = 0;
        while done < group.len() {
            let todo = &group[done..];
            let attrs = view.as_deref().unwrap_or(ctx.attrs);
            self.scratch.clear();
            abi::encode_context(
                &mut self.scratch,
                &CallContext { attrs, ..*ctx },
                self.links[q].plugin.context_protocol,
            );
            let count_at = self.scratch.len();
            let first = abi::command_len(&self.items[todo[0]].args);
            let alone = count_at + if batched { 4 } else { 0 } + first;
            if alone > max {
                self.items[todo[0]].answer = Some(self.too_large(q, "command", alone));
                done += 1;
                continue;
            }
            if batched {
                self.scratch.extend_from_slice(&[0; 4]);
            }
            // As many commands as fit in one input; the rest go in the next call.
            let mut n = 0;
            for &i in todo {
                let item = &self.items[i];
                let fits = self.scratch.len() + abi::command_len(&item.args) <= max;
                if n > 0 && !(batched && fits) {
                    break;
                }
                abi::encode_command(&mut self.scratch, &item.args, &item.keys);
                n += 1;
            }
            if batched {
                self.scratch[count_at..count_at + 4].copy_from_slice(&(n as u32).to_le_bytes());
            }
            let hook = if batched {
                Hook::Commands
            } else {
                Hook::Command
            };
            let decided = match self.invoke(q, hook) {
                Ok(out) => {
                    let todo = &group[done..done + n];
                    self.apply_verdicts(q, out, todo, view, ctx, keys, memory)
                }
                Err(failure) => Err(failure),
            };
            let decided = match decided {
                Ok(k) => k,
                Err((what, counted)) => {
                    self.links[q].counts.calls += n as u64;
                    let failed = if counted {
                        self.fail(q, what)
                    } else {
                        self.fail_quietly(q, what).map(|_| ())
                    };
                    if let Err(reply) = failed {
                        for &i in &group[done..done + n] {
                            self.items[i].answer = Some(reply.clone());
                        }
                    }
                    n
                }
            };
            done += decided;
        }
        group.clear();
    }

    /// Applies the output of link `q` for the commands `todo` (indices into the batch):
    /// how many it decided, or why the output is malformed. Verdicts the plugin asks to be
    /// remembered go into `memory` when given under the attributes the batch started with.
    #[allow(clippy::too_many_arguments)]
    fn apply_verdicts(
        &mut self,
        q: usize,
        out: Option<Range<usize>>,
        todo: &[usize],
        view: &mut Option<Vec<(String, String)>>,
        ctx: &CallContext,
        keys: &mut KeyFinder,
        memory: &mut Memory,
    ) -> Result<usize, (String, bool)> {
        let batched = self.links[q].plugin.batched();
        let link = &mut self.links[q];
        let Some(out) = out else {
            link.counts.calls += todo.len() as u64;
            link.counts.continues += todo.len() as u64;
            return Ok(todo.len());
        };
        let instance = link.instance.as_ref().expect("an instance answered");
        let bytes = instance.output(out);
        let mut list = if batched {
            Some(VerdictList::new(bytes, todo.len()).map_err(|e| (e, true))?)
        } else {
            None
        };
        let k = list.as_ref().map_or(1, VerdictList::remaining);
        for (j, &i) in todo[..k].iter().enumerate() {
            let raw = match &mut list {
                Some(list) => list.next_verdict().map_err(|e| (e, true))?,
                None => bytes,
            };
            let item = &mut self.items[i];
            let v = abi::decode_verdict(raw, &item.args, &self.limits).map_err(|e| (e, true))?;
            if !v.attrs.is_empty() && j + 1 < k {
                return Err((
                    format!(
                        "set attributes on command {} of {k} it decided; that must be the last",
                        j + 1
                    ),
                    true,
                ));
            }
            // The connection's attributes with this verdict's, checked before any is applied.
            let next_attrs = if v.attrs.is_empty() {
                None
            } else {
                let mut next = view.clone().unwrap_or_else(|| ctx.attrs.to_vec());
                set_attrs(&mut next, v.attrs.clone());
                abi::check_attrs(&next, "would give the connection").map_err(|e| (e, true))?;
                Some(next)
            };
            let counts = &mut link.counts;
            counts.calls += 1;
            if link.plugin.config.fail == FailMode::Open
                && let Some(what) = gating(&v.decision, &v.attrs, Some(item))
            {
                counts.rejects += 1;
                item.answer = Some(refuse_gating(&link.plugin, what));
                continue;
            }
            count_verdict(counts, &v.decision);
            let given = item.cmd;
            let kept = match v.decision {
                Decision::Continue => Some(Remembered::Continue),
                Decision::Rewrite(args) => {
                    let keys_only = only_keys_changed(item, &args);
                    item.args = args;
                    item.rewritten = true;
                    if !keys_only {
                        match keys(&item.args, &mut item.keys) {
                            Some(cmd) => item.cmd = cmd,
                            None => item.ended = true,
                        }
                    }
                    None
                }
                Decision::PrefixKeys(prefix) => {
                    prefix_keys(item, &prefix, &mut self.key_arena, keys);
                    Some(Remembered::PrefixKeys(prefix))
                }
                Decision::Reply(r) => {
                    item.answer = Some(r.clone());
                    Some(Remembered::Reply(r))
                }
                Decision::Reject(msg) => {
                    let r = error_reply(&msg);
                    item.answer = Some(r.clone());
                    Some(Remembered::Reject(r))
                }
            };
            if let (Some(prefixes), Some(kept)) = (v.remember, kept)
                && view.is_none()
                && v.attrs.is_empty()
                && link.plugin.config.remember
            {
                memory.remember(q, given, prefixes, kept);
            }
            if let Some(next) = next_attrs {
                *view = Some(next);
                self.changes.push(Change {
                    item: i,
                    link: q,
                    attrs: v.attrs,
                });
            }
        }
        Ok(k)
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
        // Some((n, p)): `scratch` starts with the encoded context (with the protocol if p)
        // and command, n bytes.
        let mut encoded: Option<(usize, bool)> = None;
        for i in (0..self.links.len()).rev() {
            if !self.links[i].plugin.wants(Hook::Reply, cmd) {
                continue;
            }
            let with_protocol = self.links[i].plugin.context_protocol;
            match encoded {
                Some((n, p)) if p == with_protocol => self.scratch.truncate(n),
                _ => {
                    self.scratch.clear();
                    abi::encode_context(&mut self.scratch, ctx, with_protocol);
                    abi::encode_command(&mut self.scratch, args, keys);
                    encoded = Some((self.scratch.len(), with_protocol));
                }
            }
            abi::encode_reply(&mut self.scratch, &reply);
            if self.scratch.len() > max_input(&self.links[i].plugin.config) {
                return self.too_large(i, "reply", self.scratch.len());
            }
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
        let counts = &mut self.links[i].counts;
        match hook {
            Hook::Connect => counts.connect_calls += 1,
            Hook::Reply => counts.reply_calls += 1,
            _ => {}
        }
        let decoded = self.invoke(i, hook).and_then(|out| {
            let link = &mut self.links[i];
            link.counts.calls += 1;
            let v = match out {
                None => Verdict::CONTINUE,
                Some(at) => {
                    let instance = link.instance.as_ref().expect("an instance answered");
                    abi::decode_verdict(instance.output(at), args, &self.limits)
                        .map_err(|e| (e, true))?
                }
            };
            count_verdict(&mut link.counts, &v.decision);
            Ok(v)
        });
        match decoded {
            Ok(v) => Ok(v),
            Err((what, true)) => self.fail(i, what).map(|()| Verdict::CONTINUE),
            Err((what, false)) => self.fail_quietly(i, what),
        }
    }

    /// Calls hook `hook` of link `i` with the input in `scratch`, creating its instance
    /// first if there is none; the place of the output in the instance's memory.
    /// `Err((what, counted))`: the call failed (`counted`: a failure of the plugin, to go
    /// through [`WorkerChain::fail`]) or was not made (the instance is restarting).
    fn invoke(&mut self, i: usize, hook: Hook) -> Result<Option<Range<usize>>, (String, bool)> {
        let link = &mut self.links[i];
        if link.instance.is_none() {
            let recent = link
                .created
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1));
            if recent {
                return Err(("is restarting after a failure".into(), false));
            }
            link.created = Some(Instant::now());
            match new_instance(&link.plugin.module, &link.plugin.config) {
                Ok(inst) => link.instance = Some(inst),
                Err(e) => return Err((format!("cannot be instantiated: {e}"), true)),
            }
        }
        let instance = link.instance.as_mut().expect("instance exists");
        let start = Instant::now();
        let result = instance.call_raw(hook, &self.scratch, timeout(&link.plugin.config));
        link.counts.invocations += 1;
        link.counts.nanos += start.elapsed().as_nanos() as u64;
        self.dirty = true;
        result.map_err(|e| (e, true))
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
                (&s.invocations, c.invocations),
                (&s.connect_calls, c.connect_calls),
                (&s.reply_calls, c.reply_calls),
                (&s.remembered, c.remembered),
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

    /// The answer to an input of `size` bytes too large for link `i`: no call, no failure.
    fn too_large(&self, i: usize, what: &str, size: usize) -> Bytes {
        let c = &self.links[i].plugin.config;
        tracing::debug!(plugin = %c.name, size, "input too large for the plugin");
        error_reply(&format!(
            "ERR plugin '{}' cannot take a {what} of {size} bytes: at most {} bytes (a quarter \
             of its memory limit)",
            c.name,
            max_input(c)
        ))
    }

    /// What a verdict of link `i` does that a fail-open plugin may not, if anything.
    fn gates_open(
        &self,
        i: usize,
        decision: &Decision,
        attrs: &[(String, String)],
        item: Option<&Item>,
    ) -> Option<&'static str> {
        let plugin = &self.links[i].plugin;
        (plugin.config.fail == FailMode::Open)
            .then(|| gating(decision, attrs, item))
            .flatten()
    }

    fn refuse_gating(&self, i: usize, what: &str) -> Bytes {
        refuse_gating(&self.links[i].plugin, what)
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

/// Whether a rewrite of `item` to `new` changed key arguments only, on a command whose
/// key positions do not depend on the keys' bytes: its command and key positions stay.
/// (An unchanged argument of a rewrite shares the old one's bytes.)
fn only_keys_changed(item: &Item, new: &[Bytes]) -> bool {
    let same = |a: &Bytes, b: &Bytes| a.as_ptr() == b.as_ptr() && a.len() == b.len();
    let mut keys = item.keys.iter().peekable();
    new.len() == item.args.len()
        && key_positions_fixed(item.cmd)
        && (0..new.len()).all(|j| {
            while keys.next_if(|&&k| k < j).is_some() {}
            keys.peek() == Some(&&j) || same(&new[j], &item.args[j])
        })
}

/// Whether the key positions of command `cmd` depend only on the number of arguments and
/// their non-key bytes, not on the keys' bytes.
fn key_positions_fixed(cmd: u16) -> bool {
    command::by_id(cmd)
        .key_specs
        .iter()
        .all(|k| matches!(k.begin_search, command::BeginSearch::Index(_)))
}

/// Puts `prefix` in front of every key argument of `item` (a `PrefixKeys` verdict). The new
/// keys are written in `arena`, which is refilled a few KiB at a time.
fn prefix_keys(item: &mut Item, prefix: &[u8], arena: &mut bytes::BytesMut, keys: &mut KeyFinder) {
    const ARENA_BLOCK: usize = 4096;
    if item.keys.is_empty() || prefix.is_empty() {
        return;
    }
    let mut last = None;
    for &k in &item.keys {
        if last == Some(k) {
            continue;
        }
        last = Some(k);
        let len = prefix.len() + item.args[k].len();
        if arena.capacity() < len {
            arena.reserve(len.max(ARENA_BLOCK));
        }
        arena.extend_from_slice(prefix);
        arena.extend_from_slice(&item.args[k]);
        item.args[k] = arena.split().freeze();
    }
    item.rewritten = true;
    if !key_positions_fixed(item.cmd) {
        match keys(&item.args, &mut item.keys) {
            Some(cmd) => item.cmd = cmd,
            None => item.ended = true,
        }
    }
}

fn count_verdict(counts: &mut Counts, d: &Decision) {
    match d {
        Decision::Continue => counts.continues += 1,
        Decision::Rewrite(_) | Decision::PrefixKeys(_) => counts.rewrites += 1,
        Decision::Reply(_) => counts.replies += 1,
        Decision::Reject(_) => counts.rejects += 1,
    }
}

/// Sets the attributes `new` (an empty value removes one): the last value given for a key
/// wins, and the keys set go to the end in the order given. Linear in both lists.
fn set_attrs(attrs: &mut Vec<(String, String)>, new: Vec<(String, String)>) {
    let mut seen = std::collections::HashSet::with_capacity(new.len());
    let mut kept: Vec<(String, String)> = new
        .into_iter()
        .rev()
        .filter(|(k, _)| seen.insert(k.clone()))
        .collect();
    attrs.retain(|(k, _)| !seen.contains(k));
    kept.reverse();
    attrs.extend(kept.into_iter().filter(|(_, v)| !v.is_empty()));
}

/// What a verdict does that gates access, if anything: it sets or removes the `user`
/// attribute (authentication), or changes the keys of the command `item` (a namespace).
fn gating(
    decision: &Decision,
    attrs: &[(String, String)],
    item: Option<&Item>,
) -> Option<&'static str> {
    if attrs.iter().any(|(k, _)| k == "user") {
        return Some("set the user attribute");
    }
    match (decision, item) {
        (Decision::PrefixKeys(_), _) => Some("prefixed keys"),
        (Decision::Rewrite(args), Some(item))
            if item
                .keys
                .iter()
                .any(|&k| args.get(k) != Some(&item.args[k])) =>
        {
            Some("rewrote keys")
        }
        _ => None,
    }
}

/// The answer to a verdict of a fail-open plugin that gates access; logged once.
fn refuse_gating(plugin: &LoadedPlugin, what: &str) -> Bytes {
    let msg = format!(
        "ERR plugin '{}' is fail = \"open\" and {what}: a plugin that gates access must be \
         fail = \"closed\"",
        plugin.config.name
    );
    if !plugin.refusal_logged.swap(true, Relaxed) {
        tracing::error!(
            plugin = %plugin.config.name,
            "refusing the plugin's verdicts: it is fail = \"open\" and {what}; a plugin that \
             gates access must be fail = \"closed\""
        );
    }
    error_reply(&msg)
}

fn error_reply(msg: &str) -> Bytes {
    let mut out = bytes::BytesMut::with_capacity(msg.len() + 3);
    tessera_protocol::resp::encode::error(&mut out, msg);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use command::Lookup;

    /// A batch item for `line`, its command and keys found as the session finds them.
    fn item(line: &[&str]) -> Item {
        let args: Vec<Bytes> = line.iter().map(|a| Bytes::from(a.to_string())).collect();
        let Lookup::Found(spec) = command::lookup(&args) else {
            panic!("{line:?} is not a command");
        };
        let mut keys = Vec::new();
        command::key_positions(spec, &args, &mut keys);
        Item {
            args,
            id: Some(spec.id),
            cmd: spec.id,
            keys,
            rewritten: false,
            answer: None,
            ended: false,
        }
    }

    /// The rewrite of `item` that replaces the arguments `changed` (index, new bytes) and
    /// shares the others, as `decode_verdict` does.
    fn rewrite(item: &Item, changed: &[(usize, &str)]) -> Vec<Bytes> {
        let mut new = item.args.clone();
        for &(i, v) in changed {
            new[i] = Bytes::from(v.to_string());
        }
        new
    }

    /// Finds a command's id and keys as the session does.
    fn find(args: &[Bytes], keys: &mut Vec<usize>) -> Option<u16> {
        let Lookup::Found(spec) = command::lookup(args) else {
            return None;
        };
        keys.clear();
        command::key_positions(spec, args, keys);
        Some(spec.id)
    }

    #[test]
    fn a_batch_too_large_for_one_input_is_split_and_a_command_too_large_alone_is_answered() {
        // need-attr continues every command of a call when the connection has an attribute.
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/wat/need-attr.wat");
        let config = PluginConfig {
            name: "need".into(),
            path: path.into(),
            config: String::new(),
            fail: FailMode::Closed,
            memory_limit_mb: 1,
            timeout_ms: 1000,
            remember: true,
        };
        assert_eq!(max_input(&config), 256 * 1024);
        let chain = PluginChain::load(&[config], 1).unwrap();
        let mut w = WorkerChain::new(&chain, Limits::default());
        let line = |args: &[&[u8]]| args.iter().map(|a| Bytes::copy_from_slice(a)).collect();
        let value = vec![b'v'; 100 * 1024];
        for i in 0..10 {
            w.push(
                line(&[b"SET", format!("k{i}").as_bytes(), &value]),
                &mut find,
            );
        }
        w.push(line(&[b"SET", b"huge", &[b'h'; 256 * 1024]]), &mut find);
        w.push(line(&[b"GET", b"k"]), &mut find);
        let attrs = vec![("a".to_string(), "b".to_string())];
        let ctx = CallContext {
            conn_id: 1,
            db: 0,
            peer: "127.0.0.1:1",
            attrs: &attrs,
            protocol: 2,
        };
        let mut out = Vec::new();
        let changes = w.run_batch(&ctx, &mut find, &mut Memory::default(), &mut out);
        assert!(changes.is_empty());
        assert_eq!(out.len(), 12);
        for (i, o) in out.iter().enumerate() {
            match (i, o) {
                (10, CommandOutcome::Answer(_, reply)) => {
                    let text = String::from_utf8_lossy(reply);
                    assert!(
                        text.starts_with("-ERR plugin 'need' cannot take a command of 262")
                            && text.contains("at most 262144 bytes"),
                        "{text}"
                    );
                }
                (10, _) => panic!("the command too large was not answered"),
                (_, CommandOutcome::Continue(_, false, Some(_))) => {}
                _ => panic!("command {i} did not continue"),
            }
        }
        // Two of the 100 KiB commands fit in one input: five calls, then one for GET.
        let counts = &w.links[0].counts;
        assert_eq!(
            (counts.invocations, counts.calls, counts.failures),
            (6, 11, 0)
        );
    }

    #[test]
    fn set_attrs_keeps_the_last_value_of_a_key_and_removes_empty_ones() {
        let pairs = |p: &[(&str, &str)]| -> Vec<(String, String)> {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let mut attrs = pairs(&[("user", "bob"), ("tenant", "t1"), ("x", "1")]);
        set_attrs(
            &mut attrs,
            pairs(&[("a", "1"), ("tenant", ""), ("user", "alice"), ("a", "2")]),
        );
        assert_eq!(attrs, pairs(&[("x", "1"), ("user", "alice"), ("a", "2")]));
    }

    #[test]
    fn a_rewrite_of_keys_alone_keeps_the_command_and_its_key_positions() {
        let get = item(&["GET", "k"]);
        assert!(only_keys_changed(&get, &rewrite(&get, &[(1, "t1:k")])));
        // The name, or an argument that is no key, changed: look the command up again.
        assert!(!only_keys_changed(&get, &rewrite(&get, &[(0, "STRLEN")])));
        let set = item(&["SET", "k", "v"]);
        assert!(!only_keys_changed(&set, &rewrite(&set, &[(2, "w")])));
        // Equal bytes that are not shared count as changed (decode_verdict shares them).
        assert!(!only_keys_changed(&set, &rewrite(&set, &[(0, "SET")])));
        let mut longer = set.args.clone();
        longer.push(Bytes::from_static(b"NX"));
        assert!(!only_keys_changed(&set, &longer));
        // numkeys is no key and stays: the positions stay.
        let eval = item(&["EVAL", "return 1", "2", "a", "b", "x"]);
        assert!(only_keys_changed(
            &eval,
            &rewrite(&eval, &[(3, "t:a"), (4, "t:b")])
        ));
        // Keys found after a keyword: a key's bytes could move them, look up again.
        let xread = item(&["XREAD", "STREAMS", "s", "0"]);
        assert_eq!(xread.keys, [2]);
        assert!(!only_keys_changed(&xread, &rewrite(&xread, &[(2, "t:s")])));
    }
}
