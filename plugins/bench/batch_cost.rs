//! The shared body of the plugins' `batch_cost` examples: the native cost per command of
//! `Runtime::on_commands` for the batches the proxy's plugin bench sends (`benches/plugins.rs`:
//! redis-benchmark `-P 16`, user `alice`, keys `key:<12 digits>`, 3-byte values).
//!
//! Native numbers are a guide only: the proxy runs the plugins as WebAssembly. They are the
//! cost of a call; the bundled plugins ask the proxy to remember these verdicts, so the proxy
//! makes such a call once per command name and connection, not once per batch.

use std::hint::black_box;
use std::time::Instant;

use tessera_sdk::dispatch::Runtime;
use tessera_sdk::testing::commands_input;
use tessera_sdk::wire::decode_verdict_list;
use tessera_sdk::{Command, Context, Plugin};

/// Commands per call, as with `-P 16`.
const BATCH: usize = 16;
/// Calls per timed round.
const CALLS: usize = 100_000;
const ROUNDS: usize = 5;
/// Connections whose batches interleave (the proxy's worker serves many clients).
const CONNS: u64 = 4;

/// Prints ns per command of GET and SET batches for the plugin configured with `config`.
/// `kind`: the verdict kind the plugin answers each command with (0 Continue, 1 Rewrite,
/// 4 PrefixKeys); each must also be remembered.
pub fn run<P: Plugin>(name: &str, config: &str, kind: u8) {
    let mut rt = Runtime::<P>::new();
    assert!(
        rt.on_configure(config.as_bytes()).is_none(),
        "{name}: bad config"
    );
    for (what, make) in [
        (
            "GET",
            (|k: String| Command::new(["GET".to_owned(), k]).with_key(1)) as fn(String) -> Command,
        ),
        ("SET", |k| {
            Command::new(["SET".to_owned(), k, "xxx".to_owned()]).with_key(1)
        }),
    ] {
        let inputs: Vec<Vec<u8>> = (0..CONNS)
            .map(|conn| {
                let ctx = Context::new(
                    conn + 1,
                    0,
                    format!("127.0.0.1:{}", 50000 + conn),
                    "alice",
                    [("user".to_owned(), "alice".to_owned())],
                );
                let cmds: Vec<Command> = (0..BATCH)
                    .map(|i| make(format!("key:{:012}", 12345 + conn as usize * 100 + i)))
                    .collect();
                commands_input(&ctx, &cmds)
            })
            .collect();
        for input in &inputs {
            let verdicts = decode_verdict_list(rt.on_commands(input).expect("verdicts")).unwrap();
            assert!(
                verdicts.len() == BATCH
                    && verdicts
                        .iter()
                        .all(|v| v.action.kind() == kind && v.remember.is_some()),
                "{name} {what}: unexpected verdicts {verdicts:?}"
            );
        }
        let mut best = f64::MAX;
        for _ in 0..ROUNDS {
            let start = Instant::now();
            for i in 0..CALLS {
                let input = &inputs[i % inputs.len()];
                black_box(rt.on_commands(black_box(input)).map(|b| b.len()));
            }
            let ns = start.elapsed().as_nanos() as f64 / (CALLS * BATCH) as f64;
            best = best.min(ns);
        }
        println!(
            "{name:<15} {what}: {best:6.1} ns per command (best of {ROUNDS} x {CALLS} calls of {BATCH})"
        );
    }
}
