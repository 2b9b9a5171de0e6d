//! `cargo run --release --example acl_auth_cost`: ns per command of a batch of 16
//! GETs (SETs) as the proxy's plugin bench sends them (see `../bench/batch_cost.rs`).

#[path = "../../bench/batch_cost.rs"]
mod batch_cost;

/// `benches/plugins.rs`'s config; `printf %s secret | sha256sum`.
const CONFIG: &str = r#"{"users": {"alice": {"password": "sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b", "commands": ["get", "set", "del", "mget", "ping", "select"], "keys": ["key:*"]}}}"#;

fn main() {
    batch_cost::run::<acl_auth::AclAuth>("acl-auth", CONFIG, 0);
}
