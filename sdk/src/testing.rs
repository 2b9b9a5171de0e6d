//! Helpers for plugin tests on the host: the exact input bytes of a hook, and a count of the
//! heap allocations a call makes, to keep a hot path allocation-free. Not built for wasm32.
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

use crate::wire::{self, WriteExt};
use crate::{Command, Context};

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
