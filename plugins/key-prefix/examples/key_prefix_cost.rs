//! `cargo run --release --example key_prefix_cost`: ns per command of a batch of 16
//! GETs (SETs) as the proxy's plugin bench sends them (see `../bench/batch_cost.rs`).

#[path = "../../bench/batch_cost.rs"]
mod batch_cost;

/// `benches/plugins.rs`'s config.
const CONFIG: &str = r#"{"tenants": {"alice": "t1:", "bob": "t2:"}, "default": null}"#;

fn main() {
    batch_cost::run::<key_prefix::KeyPrefix>("key-prefix", CONFIG, 4);
}
