//! The raw ABI: pointers, the input allocator, host imports, the panic hook.
//!
//! The SDK's `unsafe` code is here, in the exports of `lib.rs` and in `testing.rs` (a
//! counting allocator for host tests); plugins have none. The functions here are what the
//! exports emitted by [`export_plugin!`](crate::export_plugin)
//! call. Everything else in the SDK is safe Rust. Not meant to be used directly.

use std::cell::{Cell, UnsafeCell};

#[cfg(target_arch = "wasm32")]
use crate::{
    Plugin,
    dispatch::{Output, Runtime},
    wire,
};

/// A value shared by the exports of a single-threaded wasm instance.
///
/// The host never calls into one instance concurrently (ABI: "never concurrently on one
/// instance") and wasm32-unknown-unknown has no threads, so one `&mut` at a time is
/// enforced with a busy flag: re-entering panics instead of aliasing.
pub struct Slot<T> {
    value: UnsafeCell<T>,
    busy: Cell<bool>,
}

// SAFETY: on wasm32 without the `atomics` feature there is exactly one thread, so no two
// threads can reach the slot; `with` rules out re-entrant aliasing on that one thread.
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
unsafe impl<T> Sync for Slot<T> {}

impl<T> Slot<T> {
    /// A slot holding `value`.
    pub const fn new(value: T) -> Self {
        Slot {
            value: UnsafeCell::new(value),
            busy: Cell::new(false),
        }
    }

    /// Runs `f` with exclusive access to the value.
    ///
    /// # Panics
    /// If called again from inside `f`.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        assert!(!self.busy.replace(true), "tessera-sdk: instance re-entered");
        // SAFETY: `busy` was false, so no other reference to the value exists; it stays
        // true until `f` returns, so none is created while this one lives. (If `f` panics
        // the instance traps: panic = "abort" on wasm, and the host throws it away.)
        let r = f(unsafe { &mut *self.value.get() });
        self.busy.set(false);
        r
    }
}

#[cfg(target_arch = "wasm32")]
/// The input buffer: `tessera_alloc` sizes it, the host writes each call's input into it,
/// and, as `tessera_input_reusable` tells it, writes later inputs that fit there again
/// without calling `tessera_alloc` (so it stays where it is until the next `tessera_alloc`).
static INPUT: Slot<Vec<u8>> = Slot::new(Vec::new());

#[cfg(target_arch = "wasm32")]
/// An input buffer larger than this is given back on a `tessera_alloc` for a smaller one.
const KEEP_CAPACITY: usize = 1 << 20;

#[cfg(target_arch = "wasm32")]
/// `tessera_alloc`: the input buffer, grown to at least `size` bytes (it may move). It
/// stays valid, and the module's input buffer, until the next `tessera_alloc`.
pub fn alloc(size: i32) -> i32 {
    let size = usize::try_from(size).unwrap_or(0);
    INPUT.with(|buf| {
        if buf.capacity() > KEEP_CAPACITY && size <= KEEP_CAPACITY {
            *buf = Vec::new();
        }
        if buf.len() < size {
            buf.resize(size, 0);
        }
        buf.as_mut_ptr() as usize as i32
    })
}

#[cfg(target_arch = "wasm32")]
/// `tessera_input_reusable`: yes, see [`alloc`].
pub fn input_reusable() -> i32 {
    1
}

#[cfg(target_arch = "wasm32")]
fn pack(out: Output<'_>) -> i64 {
    match out {
        None => 0,
        Some(b) => wire::pack(b.as_ptr() as usize as u32, b.len() as u32),
    }
}

#[cfg(target_arch = "wasm32")]
fn hook<P: Plugin>(
    rt: &Slot<Runtime<P>>,
    ptr: i32,
    len: i32,
    f: for<'a> fn(&'a mut Runtime<P>, &[u8]) -> Output<'a>,
) -> i64 {
    install_panic_hook();
    let (addr, len) = (ptr as u32 as usize, len as u32 as usize);
    // Out of its slot while the hook runs, so that `rt` and the input are borrowed apart.
    let input = INPUT.with(std::mem::take);
    let packed = if len == 0 || (addr == input.as_ptr() as usize && len <= input.len()) {
        rt.with(|rt| pack(f(rt, &input[..len.min(input.len())])))
    } else {
        // The host wrote the input somewhere `tessera_alloc` did not hand out.
        // SAFETY: the host passed `len` bytes at `addr` in this instance's memory (ABI: a
        // hook's input); wasm memory is readable at any in-bounds address and the bytes are
        // copied out before anything else runs.
        let copy = unsafe { std::slice::from_raw_parts(addr as *const u8, len) }.to_vec();
        rt.with(|rt| pack(f(rt, &copy)))
    };
    INPUT.with(|slot| *slot = input);
    packed
}

#[cfg(target_arch = "wasm32")]
/// `tessera_on_configure`.
pub fn on_configure<P: Plugin>(rt: &Slot<Runtime<P>>, ptr: i32, len: i32) -> i64 {
    hook(rt, ptr, len, Runtime::on_configure)
}

#[cfg(target_arch = "wasm32")]
/// `tessera_subscriptions`.
pub fn subscriptions<P: Plugin>(rt: &Slot<Runtime<P>>) -> i64 {
    install_panic_hook();
    rt.with(|rt| pack(Some(rt.subscriptions())))
}

#[cfg(target_arch = "wasm32")]
/// `tessera_reply_subscriptions`.
pub fn reply_subscriptions<P: Plugin>(rt: &Slot<Runtime<P>>) -> i64 {
    install_panic_hook();
    rt.with(|rt| pack(Some(rt.reply_subscriptions())))
}

#[cfg(target_arch = "wasm32")]
/// `tessera_on_connect`.
pub fn on_connect<P: Plugin>(rt: &Slot<Runtime<P>>, ptr: i32, len: i32) -> i64 {
    hook(rt, ptr, len, Runtime::on_connect)
}

#[cfg(target_arch = "wasm32")]
/// `tessera_on_command`.
pub fn on_command<P: Plugin>(rt: &Slot<Runtime<P>>, ptr: i32, len: i32) -> i64 {
    hook(rt, ptr, len, Runtime::on_command)
}

#[cfg(target_arch = "wasm32")]
/// `tessera_on_commands`: a batch of commands, each through `on_command`.
pub fn on_commands<P: Plugin>(rt: &Slot<Runtime<P>>, ptr: i32, len: i32) -> i64 {
    hook(rt, ptr, len, Runtime::on_commands)
}

#[cfg(target_arch = "wasm32")]
/// `tessera_on_reply`.
pub fn on_reply<P: Plugin>(rt: &Slot<Runtime<P>>, ptr: i32, len: i32) -> i64 {
    hook(rt, ptr, len, Runtime::on_reply)
}

#[cfg(target_arch = "wasm32")]
/// Routes panics to the proxy's log before the instance traps.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            host_log(0, &format!("plugin panicked: {info}"));
        }));
    });
}

#[cfg(target_arch = "wasm32")]
mod imports {
    #[link(wasm_import_module = "tessera")]
    unsafe extern "C" {
        #[link_name = "log"]
        pub fn log(level: i32, ptr: i32, len: i32);
        #[link_name = "now_ms"]
        pub fn now_ms() -> i64;
    }
}

/// Calls the `tessera.log` import (standard error on the host).
pub fn host_log(level: i32, msg: &str) {
    #[cfg(target_arch = "wasm32")]
    // SAFETY: the import only reads `msg.len()` bytes at `msg.as_ptr()`, which are valid.
    unsafe {
        imports::log(level, msg.as_ptr() as usize as i32, msg.len() as i32)
    };
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[plugin log {level}] {msg}");
}

/// Calls the `tessera.now_ms` import (the system clock on the host).
pub fn host_now_ms() -> i64 {
    #[cfg(target_arch = "wasm32")]
    // SAFETY: the import takes no arguments and returns a plain integer.
    return unsafe { imports::now_ms() };
    #[cfg(not(target_arch = "wasm32"))]
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_gives_exclusive_access() {
        let s = Slot::new(1);
        assert_eq!(s.with(|v| std::mem::replace(v, 2)), 1);
        assert_eq!(s.with(|v| *v), 2);
    }

    #[test]
    #[should_panic(expected = "re-entered")]
    fn slot_refuses_reentry() {
        let s = Slot::new(1);
        s.with(|_| s.with(|_| ()));
    }

    #[test]
    fn now_is_after_2020() {
        assert!(host_now_ms() > 1_577_836_800_000);
    }
}
