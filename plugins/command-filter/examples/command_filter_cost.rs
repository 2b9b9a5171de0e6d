//! `cargo run --release --example command_filter_cost`: ns per command of a batch of
//! 16 GETs (SETs) as the proxy's plugin bench sends them (see `../bench/batch_cost.rs`).

#[path = "../../bench/batch_cost.rs"]
mod batch_cost;

/// `benches/plugins.rs`'s config.
const CONFIG: &str = r#"{"deny": ["flushall", "flushdb", "keys", "debug", "config|set"], "allow": null, "users": {"alice": {"allow": ["get", "set", "del", "mget", "ping"]}}, "message": "NOPERM command not allowed by policy"}"#;

fn main() {
    batch_cost::run::<command_filter::CommandFilter>("command-filter", CONFIG, 0);
}
