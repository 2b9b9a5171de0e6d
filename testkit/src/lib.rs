//! Tessera's test kit: the real processes the integration tests and benches run against
//! (`redis-server`, etcd, the `tessera` binary), clients to them, and the tests' oracles.
//!
//! Every process a test starts is owned by a value whose `Drop` kills it by pid, so a failing
//! test does not leak servers. Waits poll a condition with a bound; none sleeps blindly.
//!
//! The kit starts Tessera as a process and links none of its crates: they take the kit as a
//! dev-dependency, and linking them back would build a second copy of each. For the same
//! reason its slot function ([`slots`]) is its own, an oracle independent of the proxy's.
//! Tests name it `harness` (`use tessera_testkit as harness;`); the root re-exports what
//! they call.

pub mod dashboard;
pub mod etcd;
pub mod http;
pub mod plugins;
pub mod ports;
pub mod processes;
pub mod proxy;
pub mod python;
pub mod redis_server;
pub mod resp;
pub mod rng;
pub mod seed;
pub mod slots;

use std::path::{Path, PathBuf};

pub use dashboard::{Dashboard, DashboardExited};
pub use http::{HttpResponse, get_with_host, http_get, http_request, metric};
pub use plugins::{BUILT_DIR, built, built_dir, module, module_bytes};
pub use ports::{accepts, free_addr, free_port, free_port_pair};
pub use processes::{
    ChildGuard, Paused, START_BOUND, SharedCore, TempDir, children_of, clock_ticks_per_sec,
    cmdline, cpu_ticks, file_tail, pid_alive, reader_thread, rss_kib, run_bounded, signal,
    wait_exit, wait_until,
};
pub use proxy::{
    Cluster, ConfigFile, Proxy, ProxyBuilder, ProxyExited, async_conn_url, tessera_bin, toml_str,
};
pub use python::{python_with_redis_py, run_redis_py};
pub use redis_server::RedisServer;
pub use resp::{RawConn, Resp, encode, read_reply};
pub use rng::Rng;
pub use seed::{Body, api_call};
pub use slots::{
    SLOTS, crc32_ieee, find_key, group_of_key, group_of_slot, hashtag, slot, slot_ranges,
};

/// Where a bench writes its report `name` (e.g. `bench-load.md`): next to the profile
/// directory its executable runs from (`target/<profile>/deps/<bench>-<hash>`), else
/// `target/` of the repository.
pub fn bench_report_path(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(PathBuf::from))
        .filter(|t| t.is_dir())
        .unwrap_or_else(|| repo_root().join("target"))
        .join(name)
}

/// The repository's root directory (plugin modules, client scripts and `target/py` are
/// found from it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit/ is inside the repository")
        .to_path_buf()
}
