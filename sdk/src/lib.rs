//! # tessera-sdk: Tessera plugins in Rust
//!
//! A Tessera plugin is a WebAssembly module the proxy calls on the request path: when a
//! client connects, when a command arrives (before it is routed to Redis) and when its
//! reply comes back. With this SDK a plugin is one type implementing [`Plugin`] and one
//! [`export_plugin!`] line; no pointer, allocator or byte layout is in sight.
//!
//! ```
//! use tessera_sdk::{Command, Context, Plugin, Verdict, export_plugin};
//!
//! /// Refuses `FLUSHALL`.
//! struct NoFlush;
//!
//! impl Plugin for NoFlush {
//!     fn configure(_config: &[u8]) -> Result<Self, String> {
//!         Ok(NoFlush)
//!     }
//!
//!     fn subscriptions() -> &'static [&'static str] {
//!         &["flushall"]
//!     }
//!
//!     fn on_command(&mut self, _ctx: &Context, _cmd: &mut Command) -> Verdict {
//!         Verdict::Reject("NOPERM FLUSHALL is disabled".into())
//!     }
//! }
//!
//! export_plugin!(NoFlush);
//! ```
//!
//! Build it with `cargo build --target wasm32-unknown-unknown --release` (crate type
//! `cdylib`) and point the proxy's `[[plugin]]` at the `.wasm` file. The guide is
//! `docs/plugins.md`; the ABI underneath is `docs/plugin-abi.md` (version 1).
//!
//! ## What happens on a call
//!
//! - The host gives each proxy worker thread its own instance of the plugin, created with
//!   [`Plugin::configure`] and kept for as long as the plugin chain lives. Hooks of one
//!   instance are never called concurrently, so `&mut self` is all the state you need.
//! - Every hook gets a [`Context`]: connection id, database, peer address, user and the
//!   connection's *attributes*. [`Context::set_attr`] sets an attribute for the rest of
//!   the connection (setting `user` authenticates it).
//! - The SDK keeps one `Context` and one `Command` per instance and decodes every call into
//!   them, reusing their buffers (and skipping a context whose bytes did not change): a hook
//!   that reads them, changes keys in place ([`Command::edit_keys`]) and returns
//!   [`Verdict::Continue`] allocates nothing. [`testing`] counts allocations in host tests.
//! - [`Plugin::on_command`] gets the [`Command`] with its keys marked by the host. Return
//!   [`Verdict::Continue`] to let it go on — changed, if you changed it —,
//!   [`Verdict::Reply`] to answer it yourself (see [`reply`]) or [`Verdict::Reject`] to
//!   answer with an error. Redis is not called for the last two.
//! - The cheapest call is the one the proxy need not make. A hook whose verdict depends only
//!   on the connection's context and the command's name (with the subcommand, for
//!   [`CONTAINER_COMMANDS`]) calls [`Command::remember`]: the proxy then applies that
//!   verdict itself to the connection's later commands of that name, without calling the
//!   plugin, until the context changes.
//!   [`Command::remember_if_keys_start_with`] does the same for verdicts that hold for keys
//!   with given prefixes, and [`Command::prefix_keys`] (a tenant namespace) is a change that
//!   can be remembered: the proxy gets the prefix, not a rewritten command.
//! - Commands arrive in batches: the SDK exports `tessera_on_commands`, and the proxy hands
//!   it all the pipelined commands of one client read (up to 128, or about 64 KiB) in one
//!   call, which the SDK feeds to [`Plugin::on_command`] one at a time, in the client's
//!   order. Nothing changes in the trait. What a plugin may notice: the `on_command` calls
//!   of a batch come back to back, before any of its commands reaches Redis, so do not
//!   keep "the current command" in `self` for [`Plugin::on_reply`] (it gets the command).
//!   A [`Context::set_attr`] ends the call at that command: the next command is decided
//!   in a new call, with the new attributes in its context. The proxy also ends a batch
//!   after `AUTH`, `HELLO` and `SELECT`, so the context's user and database are always
//!   current.
//! - A panic is logged through the proxy's log, then the instance traps: the proxy answers
//!   that command with an error (or lets it through, if the plugin is fail-open) and makes
//!   a new instance.
//!
//! ## Testing on the host
//!
//! Everything but the exports compiles on the host, so `cargo test` works in a plugin
//! crate: build a [`Context`] and a [`Command`] and call your hooks directly, or feed
//! [`dispatch::Runtime`] the exact bytes the proxy sends (see [`wire`]). [`log`] writes to
//! standard error there.

#![warn(missing_docs)]

pub mod abi;
mod by_name;
mod command;
mod context;
pub mod dispatch;
pub mod log;
mod prefixes;
pub mod reply;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
pub mod time;
pub mod wire;

pub use by_name::ByName;
pub use command::{CONTAINER_COMMANDS, Command, CommandError, is_container_command, prepend};
pub use context::Context;
pub use prefixes::KeyPrefixes;

#[cfg(test)]
#[global_allocator]
static ALLOC: testing::CountingAllocator = testing::CountingAllocator;

/// What a hook tells the proxy to do with the command.
///
/// Attributes are not part of the verdict: set them with [`Context::set_attr`], they are
/// sent along with whatever verdict the hook returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on: the next plugin of the chain, then Redis. From
    /// [`Plugin::on_command`], a command the plugin changed goes on changed (the SDK sends
    /// the host a *rewrite*, or only the prefix after a lone [`Command::prefix_keys`]).
    Continue,
    /// Answer the client with this complete RESP value (build it with [`reply`]); the rest
    /// of the chain and Redis are skipped.
    Reply(Vec<u8>),
    /// Answer the client with the error `-<message>`; start the message with an error code
    /// such as `ERR` or `NOPERM`. The rest of the chain and Redis are skipped.
    Reject(String),
}

impl Verdict {
    /// `Verdict::Reject` from anything string-like.
    pub fn reject(message: impl Into<String>) -> Self {
        Verdict::Reject(message.into())
    }
}

/// A Tessera plugin. Implement it for your type and export it with [`export_plugin!`].
///
/// Only [`configure`](Plugin::configure) is required; every hook has a default that lets
/// everything through.
pub trait Plugin: Sized + 'static {
    /// Builds the plugin from its configuration: the bytes of the `config` string of the
    /// plugin's entry in the proxy configuration (the plugin chooses the format; the
    /// bundled plugins use JSON).
    ///
    /// Called once per instance, before any hook. `Err(message)` refuses the configuration:
    /// the proxy does not load the plugin (and keeps the old chain on a hot reload) and shows
    /// `message` to the operator.
    fn configure(config: &[u8]) -> Result<Self, String>;

    /// Whether the plugin gates access: it authenticates connections (sets the `user`
    /// attribute) or keeps tenants apart (rewrites or prefixes keys). The proxy refuses to
    /// load such a plugin with `fail = "open"`, where a failing call would let commands
    /// through unchecked. Exported as `tessera_gates_access`.
    ///
    /// Default: `false`.
    const GATES_ACCESS: bool = false;

    /// The commands [`on_command`](Plugin::on_command) is called for (and
    /// [`on_reply`](Plugin::on_reply), unless [`reply_subscriptions`](Plugin::reply_subscriptions)
    /// says otherwise): lowercase names such as `"get"`, or `"object|encoding"` for one
    /// subcommand.
    ///
    /// Default: the empty list, which means *every* command. Subscribe to as few as you
    /// can: each command costs a decode and a verdict, and each batch of them a trip into
    /// the WebAssembly instance.
    fn subscriptions() -> &'static [&'static str] {
        &[]
    }

    /// The commands [`on_reply`](Plugin::on_reply) is called for, in the same form as
    /// [`subscriptions`](Plugin::subscriptions); the empty list means every command.
    /// A plugin that rewrites every command but only some replies (say, the replies that
    /// carry keys) names those here and saves the proxy a call per command.
    ///
    /// Default: [`subscriptions`](Plugin::subscriptions), so `on_reply` sees the commands
    /// `on_command` sees.
    fn reply_subscriptions() -> &'static [&'static str] {
        Self::subscriptions()
    }

    /// A client connected. A [`Verdict::Reply`] or [`Verdict::Reject`] is handled by the
    /// proxy as it documents for connections.
    ///
    /// Default: [`Verdict::Continue`].
    fn on_connect(&mut self, ctx: &Context) -> Verdict {
        let _ = ctx;
        Verdict::Continue
    }

    /// A subscribed command arrived, after the plugins before this one in the chain (so
    /// `cmd` is what they left) and before routing. Change `cmd` and return
    /// [`Verdict::Continue`] to rewrite it, or answer it with [`Verdict::Reply`] or
    /// [`Verdict::Reject`]. If the verdict depends only on `ctx` and the command's name
    /// (and subcommand), call [`Command::remember`] too: the proxy then decides the
    /// connection's next commands of that name itself, without calling the plugin.
    ///
    /// Default: [`Verdict::Continue`], unchanged.
    fn on_command(&mut self, ctx: &Context, cmd: &mut Command) -> Verdict {
        let _ = (ctx, cmd);
        Verdict::Continue
    }

    /// Redis answered a subscribed command; `reply` is the RESP reply about to be sent to
    /// the client and `cmd` the command as the chain left it. Called in reverse chain
    /// order, and only for commands that went to Redis (not for ones a plugin answered).
    /// `Some(resp)` replaces the reply with another complete RESP value.
    ///
    /// Default: `None`, the reply goes out unchanged.
    fn on_reply(&mut self, ctx: &Context, cmd: &Command, reply: &[u8]) -> Option<Vec<u8>> {
        let _ = (ctx, cmd, reply);
        None
    }
}

/// Exports a [`Plugin`] type as a Tessera plugin module (ABI version 1).
///
/// Use it once, at the top level of a `cdylib` crate:
///
/// ```ignore
/// export_plugin!(MyPlugin);
/// ```
///
/// On `wasm32` it emits the exports `tessera_abi_version`, `tessera_alloc`,
/// `tessera_input_reusable`, `tessera_gates_access` (from [`Plugin::GATES_ACCESS`]),
/// `tessera_context_protocol` (the context carries the connection's protocol),
/// `tessera_on_configure`, `tessera_subscriptions` and the hooks
/// `tessera_on_connect`, `tessera_on_command` with `tessera_on_commands` (the batched form
/// the proxy calls: a list of commands, each through [`Plugin::on_command`]; see
/// [`Runtime::on_commands`](crate::dispatch::Runtime::on_commands)), and
/// `tessera_on_reply` with `tessera_reply_subscriptions`, keeping the instance in a static.
/// On other targets it emits nothing (but type-checks), so `cargo test` works on the host.
///
/// The proxy calls only the hooks a module exports. A plugin that overrides only some
/// hooks can save the proxy the calls to the others by naming the ones to export:
///
/// ```ignore
/// export_plugin!(MyPlugin, hooks = [on_command]);
/// ```
///
/// (A hook left out is never called, even if the type overrides it. `on_command` exports
/// both `tessera_on_command` and `tessera_on_commands`; the proxy uses the latter.)
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        $crate::export_plugin!($plugin, hooks = [on_connect, on_command, on_reply]);
    };
    ($plugin:ty, hooks = [$($hook:ident),* $(,)?]) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            static RUNTIME: $crate::abi::Slot<$crate::dispatch::Runtime<$plugin>> =
                $crate::abi::Slot::new($crate::dispatch::Runtime::new());

            #[unsafe(no_mangle)]
            pub extern "C" fn tessera_abi_version() -> i32 {
                $crate::wire::ABI_VERSION
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn tessera_alloc(size: i32) -> i32 {
                $crate::abi::alloc(size)
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn tessera_input_reusable() -> i32 {
                $crate::abi::input_reusable()
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn tessera_gates_access() -> i32 {
                <$plugin as $crate::Plugin>::GATES_ACCESS as i32
            }

            /// The context this SDK decodes ends with the connection's protocol.
            #[unsafe(no_mangle)]
            pub extern "C" fn tessera_context_protocol() -> i32 {
                1
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn tessera_on_configure(ptr: i32, len: i32) -> i64 {
                $crate::abi::on_configure(&RUNTIME, ptr, len)
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn tessera_subscriptions() -> i64 {
                $crate::abi::subscriptions(&RUNTIME)
            }

            $($crate::__export_hook!($hook, RUNTIME);)*
        };
        #[cfg(not(target_arch = "wasm32"))]
        const _: fn() -> $crate::dispatch::Runtime<$plugin> = || {
            $($crate::__check_hook!($hook);)*
            $crate::dispatch::Runtime::<$plugin>::new()
        };
    };
}

/// One hook export of [`export_plugin!`]; not public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_hook {
    (on_connect, $rt:ident) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn tessera_on_connect(ptr: i32, len: i32) -> i64 {
            $crate::abi::on_connect(&$rt, ptr, len)
        }
    };
    (on_command, $rt:ident) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn tessera_on_command(ptr: i32, len: i32) -> i64 {
            $crate::abi::on_command(&$rt, ptr, len)
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn tessera_on_commands(ptr: i32, len: i32) -> i64 {
            $crate::abi::on_commands(&$rt, ptr, len)
        }
    };
    (on_reply, $rt:ident) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn tessera_on_reply(ptr: i32, len: i32) -> i64 {
            $crate::abi::on_reply(&$rt, ptr, len)
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn tessera_reply_subscriptions() -> i64 {
            $crate::abi::reply_subscriptions(&$rt)
        }
    };
    ($other:ident, $rt:ident) => {
        compile_error!(concat!(
            "export_plugin!: unknown hook `",
            stringify!($other),
            "`; the hooks are on_connect, on_command and on_reply"
        ));
    };
}

/// Checks a hook name of [`export_plugin!`] on the host; not public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __check_hook {
    (on_connect) => {};
    (on_command) => {};
    (on_reply) => {};
    ($other:ident) => {
        compile_error!(concat!(
            "export_plugin!: unknown hook `",
            stringify!($other),
            "`; the hooks are on_connect, on_command and on_reply"
        ));
    };
}
