//! The bundled plugins' configurations the plugin benches run with (`benches/plugins.rs`
//! and `proxy/benches/plugin_call.rs` include this file), so both measure the same plugins.

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
