//! Helpers for plugin tests on the host: the exact input bytes of a hook, what the SDK sends
//! the proxy for a verdict ([`decide`]), and a count of the heap allocations a call makes, to
//! keep a hot path allocation-free. Not built for wasm32.
//!
//! ```ignore
//! use tessera_sdk::testing::{CountingAllocator, command_input, count_allocations};
//!
//! #[global_allocator]
//! static ALLOC: CountingAllocator = CountingAllocator;
//!
//! let mut rt = tessera_sdk::dispatch::Runtime::<MyPlugin>::new();
//! rt.on_configure(b"...");
//! let get = command_input(&Context::default().with_user("alice"), &Command::new(["GET", "k"]).with_key(1));
//! rt.on_command(&get); // warm-up: the SDK's buffers grow to fit
//! let (_, allocations) = count_allocations(|| rt.on_command(&get).is_some());
//! assert_eq!(allocations, 0);
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use crate::wire::{self, WireAction, WireVerdict, WriteExt};
use crate::{Command, Context, Plugin, Verdict, dispatch};

/// One [`Plugin::on_command`] call as the SDK makes it for the proxy: what the hook returned,
/// what became of the command, and what the proxy is sent. See [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What the hook returned.
    pub verdict: Verdict,
    /// The command as the hook left it (after [`Command::prefix_keys`], with the keys
    /// prefixed).
    pub command: Command,
    /// The verdict as the SDK encodes it for the proxy, decoded again: the action (a
    /// `Continue` of a changed command is a `Rewrite` or a `PrefixKeys`), the remember flag
    /// with its condition (`wire.remember`), the attributes the hook set.
    pub wire: WireVerdict,
    /// The arguments the proxy passes on, built from the command the hook was given and
    /// `wire` as the proxy applies it (a `PrefixKeys` puts its prefix in front of the keys);
    /// `None` if the verdict answers the command.
    pub forwarded: Option<Vec<Vec<u8>>>,
}

impl Decision {
    /// The condition of a remembered verdict as text (lossy UTF-8): `None` if the verdict
    /// is not remembered, `Some(vec![])` if it is, with no condition.
    pub fn remembered(&self) -> Option<Vec<String>> {
        let prefixes = self.wire.remember.as_ref()?;
        Some(prefixes.iter().map(|p| lossy(p)).collect())
    }

    /// [`forwarded`](Decision::forwarded) as text (lossy UTF-8).
    pub fn args(&self) -> Option<Vec<String>> {
        let args = self.forwarded.as_ref()?;
        Some(args.iter().map(|a| lossy(a)).collect())
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Calls `plugin`'s [`on_command`](Plugin::on_command) with `cmd` and returns what the SDK
/// sends the proxy for it, as [`Runtime`](crate::dispatch::Runtime) would: whether it is a
/// rewrite or a `PrefixKeys`, whether it is remembered and on which condition, the
/// attributes set during this call. `cmd` is taken as the command the host sent (no edit,
/// nothing asked to be remembered yet).
///
/// ```
/// use tessera_sdk::{Command, Context, Plugin, Verdict, testing::decide, wire::WireAction};
///
/// struct Tenant;
///
/// impl Plugin for Tenant {
///     fn configure(_: &[u8]) -> Result<Self, String> {
///         Ok(Tenant)
///     }
///
///     fn on_command(&mut self, _: &Context, cmd: &mut Command) -> Verdict {
///         cmd.prefix_keys(b"t1:");
///         cmd.remember();
///         Verdict::Continue
///     }
/// }
///
/// let get = Command::new(["GET", "k"]).with_key(1);
/// let d = decide(&mut Tenant, &Context::default(), get);
/// assert_eq!(d.wire.action, WireAction::PrefixKeys(b"t1:".to_vec()));
/// assert_eq!(d.remembered(), Some(vec![]));
/// assert_eq!(d.args().unwrap(), ["GET", "t1:k"]);
/// ```
///
/// # Panics
/// If the command the proxy would pass on after a `PrefixKeys` differs from what the hook
/// left (an SDK bug).
pub fn decide<P: Plugin>(plugin: &mut P, ctx: &Context, mut cmd: Command) -> Decision {
    cmd.start_call();
    let input = cmd.clone();
    let before = ctx.changes().len();
    let verdict = plugin.on_command(ctx, &mut cmd);
    let mut out = Vec::new();
    let wire = if dispatch::put_command_verdict(&mut out, &verdict, &cmd, &ctx.changes()[before..])
    {
        wire::decode_verdict(&out).expect("the SDK encodes a valid verdict")
    } else {
        WireVerdict {
            action: WireAction::Continue,
            attrs: Vec::new(),
            remember: None,
        }
    };
    let forwarded = wire.forwarded_args(&input);
    if let (WireAction::PrefixKeys(_), Some(args)) = (&wire.action, &forwarded) {
        assert!(
            cmd.args().eq(args.iter().map(Vec::as_slice)),
            "PrefixKeys: the proxy would pass on {args:?}, the hook left {cmd:?}"
        );
    }
    Decision {
        verdict,
        command: cmd,
        wire,
        forwarded,
    }
}

/// The input of `tessera_on_command` for this context and command, as the proxy sends it.
pub fn command_input(ctx: &Context, cmd: &Command) -> Vec<u8> {
    let mut buf = Vec::new();
    wire::encode_context(&mut buf, ctx);
    wire::encode_command(&mut buf, cmd);
    buf
}

/// The input of `tessera_on_commands` for this context and these commands (at least one),
/// as the proxy sends a batch.
pub fn commands_input(ctx: &Context, cmds: &[Command]) -> Vec<u8> {
    let mut buf = Vec::new();
    wire::encode_commands_input(&mut buf, ctx, cmds);
    buf
}

/// The input of `tessera_on_reply` for this context, command and RESP reply.
pub fn reply_input(ctx: &Context, cmd: &Command, reply: &[u8]) -> Vec<u8> {
    let mut buf = command_input(ctx, cmd);
    buf.put_bytes(reply);
    buf
}

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// The system allocator, counting allocations and reallocations per thread. Install it with
/// `#[global_allocator]` in a test crate to use [`count_allocations`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingAllocator;

fn count() {
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so
// `System`'s guarantees hold; counting touches a const-initialized thread-local `Cell`,
// which neither allocates nor unwinds.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded as received (see the impl).
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded as received (see the impl).
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as received (see the impl).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded as received (see the impl).
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `f` and returns its result with the number of allocations (and reallocations) it
/// made on this thread. Counts only with [`CountingAllocator`] installed as the global
/// allocator; otherwise the count is always 0.
pub fn count_allocations<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let before = ALLOCATIONS.with(Cell::get);
    let r = f();
    (r, ALLOCATIONS.with(Cell::get) - before)
}
