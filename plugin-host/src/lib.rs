//! Tessera's plugin host: WebAssembly plugins on the request path, in phases (`on_connect`,
//! `on_command` over batches, `on_reply`), run in chain order.
//!
//! A session uses the host through [`phases::Phases`] (connect, commands in batches, reply),
//! with the host's per-connection context [`phases::ConnCtx`]; it knows nothing of wasmtime.
//! The chain is loaded off the hot path ([`load`], from files or the topology store:
//! [`from_store`]) and published whole; each worker thread keeps its own instances of it
//! ([`chain::WorkerChain`], which implements the phases).
//!
//! The other pieces: [`link`] (one link's settings and bounds), [`wasm`] (wasmtime: the
//! engine, instances with a memory limit and a deadline), [`abi`] (the bytes a plugin reads
//! and writes), [`memory`] (remembered verdicts), [`stats`] (counters), [`error`], and in
//! [`chain`] the batch runner and the failure rule (what a failing call does, stated once in
//! `chain::failure`). A command or reply too large for a plugin ([`max_input`]) is no
//! failure: it is answered with an error without a call.

#![forbid(unsafe_code)]

pub mod abi;
pub mod chain;
pub mod error;
pub mod from_store;
pub mod link;
pub mod load;
pub mod memory;
pub mod phases;
pub mod stats;
pub mod wasm;

pub use abi::{CallContext, Decision, Verdict};
pub use chain::{CommandOutcome, KeyFinder, MAX_BATCH, MAX_BATCH_BYTES, WorkerChain};
pub use error::PluginError;
pub use link::{FailMode, PluginConfig, max_input};
pub use load::{LoadedPlugin, PluginChain};
pub use memory::Memory;
pub use phases::{Attrs, Conn, ConnCtx, Decided, Phases, Step};
pub use stats::PluginStats;
