//! Tessera's proxy: clients speak plain RESP to it, and it spreads their keys over groups of
//! Redis servers by slot, as Codis does.
//!
//! How a command travels, module by module:
//!
//! 1. [`server`] accepts a connection and hands it to one worker thread (one event loop per
//!    core, each with its own backend connections: nothing on the hot path is shared).
//! 2. [`session`] reads all the client has sent; [`resp`] decodes each request without
//!    copying its arguments.
//! 3. [`command`] looks the name up in the command table (Redis 7.0's own metadata, kept as
//!    data) and finds the key positions; the session answers local commands itself
//!    (`session::local`, HELLO switching the session between RESP2 and RESP3), splits
//!    MGET/MSET/DEL/... per group (`session::split`) and sends keyspace-wide commands (SCAN,
//!    KEYS, DBSIZE, ...) to every group (`session::fanout`).
//! 4. [`router`] maps each key to its slot ([`slot`]) and the slot to a group's master in the
//!    current [`router::SlotTable`], published with `ArcSwap`: routing never takes a lock.
//! 5. [`backend`] batches the commands of a read per backend connection (one set of
//!    connections per protocol), writes them in one go, and hands the replies back as
//!    bytes, never rebuilt.
//! 6. The session writes the replies in request order, as few syscalls as it can.
//!
//! Around it: [`config`] (TOML), [`stats`] (counters and latency histograms per worker) and
//! [`admin`] (the HTTP API: `/api/model`, `/api/stats`, `/metrics`).
//!
//! Under the threads: [`shared`] is what every thread of a proxy shares (with [`clients`], the
//! registry of sessions CLIENT LIST shows), [`worker`] what one worker thread owns, [`io`]
//! the byte streams sessions and backend connections run over, and [`local_channel`] the queues
//! between a worker's tasks.
//! The modules' layering (who may use whom) is in docs/architecture.md; a unit test
//! (`layering`) fails if they import one another in a circle.
//!
//! From crates of their own, re-exported here: [`resp`] and [`command`] (`tessera-protocol`),
//! [`slot`] (`tessera-topology`), and [`plugin`] (`tessera-plugin-host`), whose phases the
//! session runs between steps 2 and 3 (`session::plugins`).

#![forbid(unsafe_code)]

pub mod admin;
pub mod backend;
pub mod barriers;
pub mod busy_poll;
pub mod clients;
pub mod config;
pub mod coordinator;
pub mod drain;
pub mod error;
pub mod router;
pub mod server;
pub mod session;
pub mod stats;

pub mod io;
pub mod local_channel;
mod pacing;
pub mod shared;
pub mod worker;

#[cfg(test)]
mod layering;

pub use tessera_plugin_host as plugin;
pub use tessera_protocol::{command, resp};

pub use config::Config;
pub use error::ProxyError;
pub use server::{ProxyHandle, start};
/// Key placement ([`slot::slot`], [`slot::hashtag`]) belongs to the topology model.
pub use tessera_topology::slot;
