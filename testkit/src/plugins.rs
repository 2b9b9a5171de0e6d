//! The repository's plugin modules as tests and benches load them (built by
//! `./plugins/build.sh`, or the WAT test modules), and the configurations the benches share.

use std::path::PathBuf;

use crate::repo_root;

/// Where `./plugins/build.sh` leaves the Rust plugins' modules, relative to the repository.
pub const BUILT_DIR: &str = "plugins/target/wasm32-unknown-unknown/release";

/// A plugin module of the repository (built by `./plugins/build.sh`, or a test module in
/// `plugins/wat/`), by its path relative to the repository root; panics if it is missing.
pub fn module(rel: &str) -> PathBuf {
    let path = repo_root().join(rel);
    assert!(
        path.is_file(),
        "plugin module {} is missing: run ./plugins/build.sh first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// The bytes of [`module`]`(rel)`.
pub fn module_bytes(rel: &str) -> Vec<u8> {
    let path = module(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The built module of the Rust plugin `name` (`command_filter`, `key_prefix`, `acl_auth`).
pub fn built(name: &str) -> PathBuf {
    module(&format!("{BUILT_DIR}/{name}.wasm"))
}

/// The directory of the built Rust plugins (the modules need not exist).
pub fn built_dir() -> PathBuf {
    repo_root().join(BUILT_DIR)
}

// The configurations the plugin benches run with (`benches/plugins.rs` and
// `proxy/benches/plugin_call.rs`), so both measure the same plugins.

/// The user the bench's clients authenticate as; acl-auth knows it, key-prefix gives it the
/// prefix `t1:`.
pub const USER: &str = "alice";
/// The sha256 of the user's password, `secret` (`printf %s secret | sha256sum`).
pub const PASSWORD_HASH: &str =
    "sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";

pub const COMMAND_FILTER: &str = r#"{"deny": ["flushall", "flushdb", "keys", "debug", "config|set"], "allow": null, "users": {"alice": {"allow": ["get", "set", "del", "mget", "ping"]}}, "message": "NOPERM command not allowed by policy"}"#;
pub const KEY_PREFIX: &str = r#"{"tenants": {"alice": "t1:", "bob": "t2:"}, "default": null}"#;

pub fn acl_auth_config() -> String {
    // redis-benchmark's keys are `key:<12 digits>`.
    format!(
        r#"{{"users": {{"{USER}": {{"password": "{PASSWORD_HASH}", "commands": ["get", "set", "del", "mget", "ping", "select"], "keys": ["key:*"]}}}}}}"#
    )
}
