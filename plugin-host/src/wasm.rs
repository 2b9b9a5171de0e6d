//! The WebAssembly host: one wasmtime `Engine` for the process, modules compiled once,
//! and instances that each live in their own `Store` with a memory limit and a deadline.

use std::ops::Range;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::abi::{self, AbiError, Verdict};
use tessera_protocol::resp::Limits;
use wasmtime::{
    Caller, Config, Engine, Instance as WasmInstance, Linker, Memory, Module, Store, StoreLimits,
    StoreLimitsBuilder, Trap, TypedFunc, UpdateDeadline,
};

/// Why the host cannot compile, instantiate or call a module, in words for the client and
/// the operator.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// `{:#}` of wasmtime's error, its causes included.
    #[error("not a valid WebAssembly module: {0}")]
    Invalid(String),
    #[error(
        "imports {module}.{name}, which the host does not provide (only tessera.log and tessera.now_ms)"
    )]
    Import { module: String, name: String },
    #[error("{0}")]
    HostFunctions(String),
    #[error("cannot instantiate: {0}")]
    Instantiate(Stopped),
    #[error("does not export its memory as \"memory\"")]
    NoMemory,
    #[error("does not export tessera_abi_version: () -> i32")]
    NoAbiVersion,
    #[error("speaks plugin ABI version {0}; this proxy speaks version 1")]
    AbiVersion(i32),
    #[error("does not export tessera_alloc: (i32) -> i32")]
    NoAlloc,
    /// An export of the host's ABI with another type than `want`.
    #[error("exports {name} with the wrong type; want {want}")]
    ExportType { name: String, want: &'static str },
    #[error("subscription list truncated")]
    ListTruncated,
    #[error("subscription is not UTF-8")]
    ListNotUtf8,
    #[error("input too large")]
    InputTooLarge,
    #[error("tessera_alloc returned {0}, outside its memory")]
    AllocOutside(i32),
    #[error("returned {len} bytes at {at}, outside its memory")]
    Outside { len: usize, at: usize },
    #[error("returned {len} bytes at {at}, more than its memory holds")]
    MoreThanMemory { len: usize, at: usize },
    #[error(transparent)]
    Stopped(#[from] Stopped),
    #[error(transparent)]
    Verdict(#[from] AbiError),
}

/// How a call into an instance stopped without an answer: a trap, the time limit, the
/// memory limit or another error of the runtime.
#[derive(Debug, thiserror::Error)]
pub enum Stopped {
    #[error("timed out after {0} ms")]
    TimedOut(u128),
    #[error("trapped: {0}")]
    Trapped(Trap),
    /// wasmtime's words for it, in the parentheses.
    #[error("exceeded its memory limit ({0})")]
    MemoryLimit(String),
    #[error("{0}")]
    Runtime(String),
}

/// How often the engine's epoch advances: the unit of a plugin's time limit.
const TICK: Duration = Duration::from_millis(1);

/// The process's engine, with epoch interruption and a thread that advances the epoch.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).expect("a wasmtime engine with the default target");
        let ticker = engine.clone();
        std::thread::Builder::new()
            .name("tessera-plugin-epoch".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(TICK);
                    ticker.increment_epoch();
                }
            })
            .expect("start the plugin epoch thread");
        engine
    })
}

/// Compiles a module (binary or WAT text) and checks it only imports what the host gives.
pub fn compile(bytes: &[u8]) -> Result<Module, HostError> {
    let module = Module::new(engine(), bytes).map_err(|e| HostError::Invalid(format!("{e:#}")))?;
    for import in module.imports() {
        let ok = import.module() == "tessera" && matches!(import.name(), "log" | "now_ms");
        if !ok {
            return Err(HostError::Import {
                module: import.module().to_string(),
                name: import.name().to_string(),
            });
        }
    }
    Ok(module)
}

pub struct HostState {
    limits: StoreLimits,
    plugin: String,
    /// The thread's CPU time when the current call's deadline first fired.
    cpu_at_deadline: Option<Duration>,
}

/// The hooks a module may export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Configure,
    Connect,
    Command,
    Reply,
    /// `on_command` for a batch of commands, in one call.
    Commands,
}

impl Hook {
    pub const ALL: [Hook; 5] = [
        Hook::Configure,
        Hook::Connect,
        Hook::Command,
        Hook::Reply,
        Hook::Commands,
    ];

    fn export(self) -> &'static str {
        match self {
            Hook::Configure => "tessera_on_configure",
            Hook::Connect => "tessera_on_connect",
            Hook::Command => "tessera_on_command",
            Hook::Reply => "tessera_on_reply",
            Hook::Commands => "tessera_on_commands",
        }
    }
}

/// The optional exports that return a *string list* of command names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    /// `tessera_subscriptions`: the commands `on_command` is called for.
    Commands,
    /// `tessera_reply_subscriptions`: the commands `on_reply` is called for.
    Replies,
}

impl List {
    fn export(self) -> &'static str {
        match self {
            List::Commands => "tessera_subscriptions",
            List::Replies => "tessera_reply_subscriptions",
        }
    }
}

/// Inputs up to this size get a buffer of this size from a module that lets the host reuse
/// it, so that the inputs of most calls fit the first buffer.
const MIN_REUSED_INPUT: usize = 1024;
/// Reusable buffers up to this size are asked for rounded up to a power of two, so that
/// inputs growing a little at a time do not ask for a new one each time; larger ones (a big
/// value) exactly, not to spend the plugin's memory limit on room to spare.
const MAX_ROUNDED_INPUT: usize = 64 * 1024;

/// One live instance of a plugin.
pub struct Instance {
    store: Store<HostState>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    hooks: [Option<TypedFunc<(i32, i32), i64>>; 5],
    lists: [Option<TypedFunc<(), i64>>; 2],
    /// Whether the module exports `tessera_input_reusable` returning 1.
    input_reusable: bool,
    /// Whether the module exports `tessera_gates_access` returning 1.
    gates_access: bool,
    /// Whether the module exports `tessera_context_protocol` returning 1.
    context_protocol: bool,
    /// The input buffer the last `tessera_alloc` returned and its size, if reusable.
    input: Option<(i32, usize)>,
    timeout_ticks: u64,
}

fn linker() -> Result<Linker<HostState>, HostError> {
    let mut linker = Linker::new(engine());
    linker
        .func_wrap(
            "tessera",
            "log",
            |mut caller: Caller<'_, HostState>, level: i32, ptr: i32, len: i32| {
                let Some(memory) = caller.get_export("memory").and_then(|e| e.into_memory()) else {
                    return;
                };
                let mut buf = vec![0u8; (len.max(0) as usize).min(64 * 1024)];
                if memory.read(&caller, ptr as u32 as usize, &mut buf).is_err() {
                    return;
                }
                let msg = String::from_utf8_lossy(&buf);
                let plugin = &caller.data().plugin;
                match level {
                    0 => tracing::error!(plugin = %plugin, "{msg}"),
                    1 => tracing::warn!(plugin = %plugin, "{msg}"),
                    2 => tracing::info!(plugin = %plugin, "{msg}"),
                    _ => tracing::debug!(plugin = %plugin, "{msg}"),
                }
            },
        )
        .map_err(|e| HostError::HostFunctions(e.to_string()))?;
    linker
        .func_wrap("tessera", "now_ms", || -> i64 {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        })
        .map_err(|e| HostError::HostFunctions(e.to_string()))?;
    Ok(linker)
}

/// Starts the time limit of one call into the instance.
fn arm_deadline(store: &mut Store<HostState>, ticks: u64) {
    store.set_epoch_deadline(ticks);
    store.data_mut().cpu_at_deadline = None;
}

impl Instance {
    /// Instantiates `module` under the limits, checks the ABI version and exports.
    pub fn new(
        module: &Module,
        plugin: &str,
        memory_limit: usize,
        timeout: Duration,
    ) -> Result<Instance, HostError> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(memory_limit)
            .instances(1)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(
            engine(),
            HostState {
                limits,
                plugin: plugin.to_string(),
                cpu_at_deadline: None,
            },
        );
        store.limiter(|s| &mut s.limits);
        let timeout_ticks = (timeout.as_millis() as u64 / TICK.as_millis() as u64).max(1);
        // The deadline is in wall-clock ticks, but only time the plugin spent running counts:
        // when it first fires (the call has run for at most `timeout` so far), the thread's
        // CPU time is noted, and the call is stopped at the first later firing by which the
        // thread has run for most of another `timeout` since, however many windows that took
        // (a worker that waits for a core gets more of them; a loop is stopped all the same).
        store.epoch_deadline_callback(move |mut ctx| {
            let now = cpu_time::ThreadTime::try_now()
                .map(|t| t.as_duration())
                .unwrap_or_default();
            let data = ctx.data_mut();
            match data.cpu_at_deadline {
                None => {
                    data.cpu_at_deadline = Some(now);
                    Ok(UpdateDeadline::Continue(timeout_ticks))
                }
                Some(first) if now.saturating_sub(first) >= timeout * 4 / 5 => {
                    Err(wasmtime::Error::new(Trap::Interrupt))
                }
                Some(_) => Ok(UpdateDeadline::Continue(timeout_ticks)),
            }
        });
        arm_deadline(&mut store, timeout_ticks);
        let instance: WasmInstance = linker()?
            .instantiate(&mut store, module)
            .map_err(|e| HostError::Instantiate(describe(&e, timeout)))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or(HostError::NoMemory)?;
        let version = instance
            .get_typed_func::<(), i32>(&mut store, "tessera_abi_version")
            .map_err(|_| HostError::NoAbiVersion)?;
        arm_deadline(&mut store, timeout_ticks);
        let v = version
            .call(&mut store, ())
            .map_err(|e| describe(&e, timeout))?;
        if v != 1 {
            return Err(HostError::AbiVersion(v));
        }
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, "tessera_alloc")
            .map_err(|_| HostError::NoAlloc)?;
        let mut hooks = [None, None, None, None, None];
        for (i, hook) in Hook::ALL.into_iter().enumerate() {
            if instance.get_export(&mut store, hook.export()).is_some() {
                let f = instance
                    .get_typed_func::<(i32, i32), i64>(&mut store, hook.export())
                    .map_err(|_| HostError::ExportType {
                        name: hook.export().to_string(),
                        want: "(i32, i32) -> i64",
                    })?;
                hooks[i] = Some(f);
            }
        }
        let mut lists = [None, None];
        for (i, list) in [List::Commands, List::Replies].into_iter().enumerate() {
            if instance.get_export(&mut store, list.export()).is_some() {
                let f = instance
                    .get_typed_func::<(), i64>(&mut store, list.export())
                    .map_err(|_| HostError::ExportType {
                        name: list.export().to_string(),
                        want: "() -> i64",
                    })?;
                lists[i] = Some(f);
            }
        }
        let mut flag = |name: &str| -> Result<bool, HostError> {
            if instance.get_export(&mut store, name).is_none() {
                return Ok(false);
            }
            let f = instance
                .get_typed_func::<(), i32>(&mut store, name)
                .map_err(|_| HostError::ExportType {
                    name: name.to_string(),
                    want: "() -> i32",
                })?;
            arm_deadline(&mut store, timeout_ticks);
            Ok(f.call(&mut store, ()).map_err(|e| describe(&e, timeout))? == 1)
        };
        let input_reusable = flag("tessera_input_reusable")?;
        let gates_access = flag("tessera_gates_access")?;
        let context_protocol = flag("tessera_context_protocol")?;
        Ok(Instance {
            store,
            memory,
            alloc,
            hooks,
            lists,
            input_reusable,
            gates_access,
            context_protocol,
            input: None,
            timeout_ticks,
        })
    }

    /// Whether the module wants the session's protocol in its context
    /// (`tessera_context_protocol`).
    pub fn context_protocol(&self) -> bool {
        self.context_protocol
    }

    /// Whether the module declares that it gates access (`tessera_gates_access`).
    pub fn gates_access(&self) -> bool {
        self.gates_access
    }

    pub fn has(&self, hook: Hook) -> bool {
        self.hooks[hook as usize].is_some()
    }

    /// Whether the module exports `list`.
    pub fn has_list(&self, list: List) -> bool {
        self.lists[list as usize].is_some()
    }

    /// The command names of `list` (empty: all, or the list is not exported).
    pub fn subscriptions(
        &mut self,
        list: List,
        timeout: Duration,
    ) -> Result<Vec<String>, HostError> {
        let Some(f) = self.lists[list as usize].clone() else {
            return Ok(Vec::new());
        };
        arm_deadline(&mut self.store, self.timeout_ticks);
        let packed = f
            .call(&mut self.store, ())
            .map_err(|e| describe(&e, timeout))?;
        let buf = self.read_packed(packed)?;
        if buf.is_empty() {
            return Ok(Vec::new());
        }
        let mut pos = 0;
        let mut take = |n: usize| -> Result<&[u8], HostError> {
            let s = buf.get(pos..pos + n).ok_or(HostError::ListTruncated)?;
            pos += n;
            Ok(s)
        };
        let count = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes"));
        let mut names = Vec::new();
        for _ in 0..count {
            let len = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
            let name =
                String::from_utf8(take(len)?.to_vec()).map_err(|_| HostError::ListNotUtf8)?;
            names.push(name.to_ascii_lowercase());
        }
        Ok(names)
    }

    /// Calls a hook with `input` and decodes its verdict in place, in the plugin's memory;
    /// `args` is the command in `input`, if any (a rewrite shares its unchanged arguments).
    pub fn call(
        &mut self,
        hook: Hook,
        input: &[u8],
        args: &[Bytes],
        timeout: Duration,
    ) -> Result<Verdict, HostError> {
        match self.call_raw(hook, input, timeout)? {
            None => Ok(Verdict::CONTINUE),
            Some(out) => Ok(abi::decode_verdict(
                self.output(out),
                args,
                &Limits::default(),
            )?),
        }
    }

    /// Calls a hook with `input`; where its output is in the plugin's memory (`None`: the
    /// hook returned 0), checked to be inside it.
    pub fn call_raw(
        &mut self,
        hook: Hook,
        input: &[u8],
        timeout: Duration,
    ) -> Result<Option<Range<usize>>, HostError> {
        let Some(f) = &self.hooks[hook as usize] else {
            return Ok(None);
        };
        arm_deadline(&mut self.store, self.timeout_ticks);
        let len = i32::try_from(input.len()).map_err(|_| HostError::InputTooLarge)?;
        let ptr = match self.input {
            Some((ptr, size)) if input.len() <= size => ptr,
            _ => {
                let size = match input.len() {
                    n if self.input_reusable && n <= MAX_ROUNDED_INPUT => {
                        n.max(MIN_REUSED_INPUT).next_power_of_two()
                    }
                    n => n,
                };
                let size = i32::try_from(size).map_err(|_| HostError::InputTooLarge)?;
                let ptr = self
                    .alloc
                    .call(&mut self.store, size)
                    .map_err(|e| describe(&e, timeout))?;
                if self.input_reusable {
                    self.input = Some((ptr, size as usize));
                }
                ptr
            }
        };
        self.memory
            .write(&mut self.store, ptr as u32 as usize, input)
            .map_err(|_| HostError::AllocOutside(ptr))?;
        let packed = f
            .call(&mut self.store, (ptr, len))
            .map_err(|e| describe(&e, timeout))?;
        if packed == 0 {
            return Ok(None);
        }
        let (at, n) = (
            (packed as u64 >> 32) as usize,
            (packed as u64 & 0xffff_ffff) as usize,
        );
        if at.saturating_add(n) > self.memory.data_size(&self.store) {
            return Err(HostError::Outside { len: n, at });
        }
        Ok(Some(at..at + n))
    }

    /// Output bytes `call_raw` returned the place of, valid until the next call.
    pub fn output(&self, at: Range<usize>) -> &[u8] {
        &self.memory.data(&self.store)[at]
    }

    fn read_packed(&self, packed: i64) -> Result<Vec<u8>, HostError> {
        if packed == 0 {
            return Ok(Vec::new());
        }
        let ptr = (packed as u64 >> 32) as usize;
        let len = (packed as u64 & 0xffff_ffff) as usize;
        let mut buf = vec![0u8; len.min(self.memory.data_size(&self.store))];
        if buf.len() != len {
            return Err(HostError::MoreThanMemory { len, at: ptr });
        }
        self.memory
            .read(&self.store, ptr, &mut buf)
            .map_err(|_| HostError::Outside { len, at: ptr })?;
        Ok(buf)
    }
}

/// What stopped a call: a trap, the timeout or another error of the runtime.
fn describe(e: &wasmtime::Error, timeout: Duration) -> Stopped {
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Stopped::TimedOut(timeout.as_millis()),
        Some(t) => Stopped::Trapped(*t),
        None => {
            let text = format!("{e:#}");
            if text.contains("grow") || text.contains("memory") {
                Stopped::MemoryLimit(text)
            } else {
                Stopped::Runtime(text)
            }
        }
    }
}
