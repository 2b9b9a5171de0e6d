//! The cost of a plugin call in isolation (criterion): the bundled plugins' module, run by
//! the proxy's own host (`plugin::wasm::Instance`), deciding batches of 16 pipelined GETs or
//! SETs of user `alice` as the plugin bench's clients send them (`benches/plugins.rs`),
//! every command a call (nothing remembered). Throughput is in commands: criterion's
//! "elements per second" is commands per second, its time per iteration is per batch.
//!
//! Unlike the plugin bench this has no network, no Redis and no other process in the
//! measurement: the figure is the time inside the call (entering the instance, writing the
//! input, the SDK's decoding, the plugin, the verdicts).
//!
//! Run: `cargo bench -p tessera-proxy --bench plugin_call`, after `./plugins/build.sh`
//! (without the modules it prints what is missing and measures nothing). To measure other
//! builds of the modules (another commit's SDK), point `TESSERA_PLUGINS_DIR` at them.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tessera_proxy::plugin::abi::{self, CallContext};
use tessera_proxy::plugin::wasm::{self, Hook, Instance};

/// Commands per call, as with redis-benchmark `-P 16`.
const BATCH: usize = 16;
/// Connections whose batches alternate (a worker serves many clients).
const CONNS: u64 = 4;

use tessera_testkit::plugins::{COMMAND_FILTER, KEY_PREFIX, USER, acl_auth_config};

/// The bundled plugins and the plugin bench's configuration of each.
fn plugins() -> [(&'static str, String); 3] {
    [
        ("acl_auth", acl_auth_config()),
        ("key_prefix", KEY_PREFIX.to_owned()),
        ("command_filter", COMMAND_FILTER.to_owned()),
    ]
}

/// Where the modules are: `TESSERA_PLUGINS_DIR`, or where `./plugins/build.sh` puts them.
fn module_path(name: &str) -> PathBuf {
    std::env::var_os("TESSERA_PLUGINS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(tessera_testkit::built_dir)
        .join(format!("{name}.wasm"))
}

/// The inputs of `tessera_on_commands` for `CONNS` connections of the bench's user.
fn inputs(set: bool) -> Vec<Vec<u8>> {
    let attrs = vec![("user".to_owned(), USER.to_owned())];
    (0..CONNS)
        .map(|conn| {
            let peer = format!("127.0.0.1:{}", 50000 + conn);
            let ctx = CallContext {
                conn_id: conn + 1,
                db: 0,
                peer: &peer,
                attrs: &attrs,
                protocol: 2,
            };
            let mut out = Vec::new();
            abi::encode_context(&mut out, &ctx, true);
            out.extend_from_slice(&(BATCH as u32).to_le_bytes());
            for i in 0..BATCH as u64 {
                let key = Bytes::from(format!("key:{:012}", 12345 + conn * 100 + i));
                let args = match set {
                    true => vec![Bytes::from_static(b"SET"), key, Bytes::from_static(b"xxx")],
                    false => vec![Bytes::from_static(b"GET"), key],
                };
                abi::encode_command(&mut out, &args, &[1]);
            }
            out
        })
        .collect()
}

fn bench_plugins(c: &mut Criterion) {
    let timeout = Duration::from_secs(1);
    for (name, config) in plugins() {
        let path = module_path(name);
        let Ok(bytes) = std::fs::read(&path) else {
            eprintln!(
                "skipping {name}: no {} (build it with ./plugins/build.sh)",
                path.display()
            );
            continue;
        };
        let module = wasm::compile(&bytes).expect("a bundled module compiles");
        let mut instance =
            Instance::new(&module, name, 64 << 20, timeout).expect("a bundled module loads");
        instance
            .call(Hook::Configure, config.as_bytes(), &[], timeout)
            .expect("the bench's configuration is accepted");
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Elements(BATCH as u64));
        for (what, set) in [("GET", false), ("SET", true)] {
            let inputs = inputs(set);
            for input in &inputs {
                let out = instance
                    .call_raw(Hook::Commands, input, timeout)
                    .expect("the call succeeds")
                    .expect("the plugin answers with verdicts");
                let n = u32::from_le_bytes(instance.output(out)[..4].try_into().unwrap());
                assert_eq!(
                    n as usize, BATCH,
                    "{name} decides the whole batch in one call"
                );
            }
            let mut i = 0;
            g.bench_function(what, |b| {
                b.iter(|| {
                    i = (i + 1) % inputs.len();
                    black_box(instance.call_raw(Hook::Commands, black_box(&inputs[i]), timeout))
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench_plugins);
criterion_main!(benches);
