//! `examples/discovery` against real processes: it finds the live proxies of a product in
//! etcd, round-robins over them, and moves off a proxy that is SIGKILLed without a request
//! failing.

use tessera_testkit as harness;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::etcd::Etcd;
use harness::{ChildGuard, Paused, Proxy, RedisServer, TempDir, pid_alive, wait_until};
use tessera_topology::keys;
use tessera_topology::model::{Group, Product, SlotState, Slots};

/// `target/debug/examples/discovery`, next to the `tessera` binary's directory.
fn discovery_bin() -> PathBuf {
    let tessera = Path::new(env!("CARGO_BIN_EXE_tessera"));
    let bin = tessera
        .parent()
        .expect("the tessera binary has a directory")
        .join("examples")
        .join("discovery");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --examples` (cargo test builds it too)",
        bin.display()
    );
    bin
}

/// The process state letter of `/proc/<pid>/stat` ('T' when stopped).
fn proc_state(pid: u32) -> char {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .and_then(|st| st.chars().next())
        })
        .unwrap_or('?')
}

/// `request N: +OK from ADDR` lines (a served SET), as (N, ADDR).
fn served(lines: &[&str]) -> Vec<(u64, String)> {
    lines
        .iter()
        .filter_map(|l| {
            let rest = l.strip_prefix("request ")?;
            // The reply line as the proxy sent it: `+OK`.
            let (n, rest) = rest
                .split_once(": +OK from ")
                .or_else(|| rest.split_once(": OK from "))?;
            Some((n.parse().ok()?, rest.trim().to_string()))
        })
        .collect()
}

#[test]
fn discovery_round_robins_and_moves_off_a_dead_proxy() {
    let etcd = Etcd::start();
    let redis = RedisServer::start();
    let product = "disco";
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = rt
        .block_on(tessera_topology::connect(&etcd.url()))
        .expect("connect to etcd");
    rt.block_on(async {
        let p = Product {
            name: product.to_string(),
            ..Default::default()
        };
        let g = Group {
            id: 1,
            servers: vec![redis.addr()],
        };
        let s = Slots {
            slots: vec![SlotState::Owned { group: 1 }; 1024],
        };
        for (key, value) in [
            (keys::product(product), serde_json::to_vec(&p).unwrap()),
            (keys::group(product, 1), serde_json::to_vec(&g).unwrap()),
            (keys::slots(product), serde_json::to_vec(&s).unwrap()),
        ] {
            store.put(&key, value, None).await.unwrap();
        }
    });
    let registered = |addr: &str| {
        rt.block_on(store.get_prefix(&keys::proxies_prefix(product)))
            .unwrap()
            .0
            .iter()
            .any(|kv| {
                serde_json::from_slice::<serde_json::Value>(&kv.value)
                    .is_ok_and(|v| v["addr"] == addr)
            })
    };

    let mut proxies: Vec<Proxy> = (0..2)
        .map(|_| {
            Proxy::start_coordinator(&etcd.url(), product, 2)
                .unwrap_or_else(|e| panic!("proxy did not start: {e}"))
        })
        .collect();
    let addrs: Vec<String> = proxies.iter().map(|p| p.addr.to_string()).collect();
    assert!(
        wait_until(Duration::from_secs(5), || addrs
            .iter()
            .all(|a| registered(a))),
        "both proxies must be registered before the client starts"
    );

    let dir = TempDir::new("discovery");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let child = Command::new(discovery_bin())
        .args(["--coordinator", &etcd.url(), "--product", product])
        .args(["--requests", "40", "--interval-ms", "50"])
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .expect("run the discovery example");
    let mut client = ChildGuard::new(child);
    let output = || std::fs::read_to_string(&out_path).unwrap_or_default();
    let context = || {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            output(),
            std::fs::read_to_string(&err_path).unwrap_or_default()
        )
    };

    // Its stdout goes to a file (Rust's stdout writes each line at once), read as it grows.
    let both_served = wait_until(Duration::from_secs(10), || {
        let out = output();
        let lines: Vec<&str> = out.lines().collect();
        let from = served(&lines);
        addrs.iter().all(|a| from.iter().any(|(_, f)| f == a)) || client.try_wait().is_some()
    });
    assert!(
        both_served && client.try_wait().is_none(),
        "the client did not reach both proxies while running;\n{}",
        context()
    );

    // Stop the client so that everything it wrote before the kill is known exactly, kill the
    // second proxy, let the client go on.
    let pause = Paused::new(client.pid());
    assert!(
        wait_until(Duration::from_secs(2), || proc_state(client.pid()) == 'T'),
        "the client did not stop"
    );
    let before_kill = output().len();
    let dead = addrs[1].clone();
    let survivor = addrs[0].clone();
    let dead_pid = proxies[1].pid();
    proxies[1].kill();
    let killed = Instant::now();
    assert!(!pid_alive(dead_pid));
    pause.resume();

    // Meanwhile, when does the dead proxy's registration vanish from etcd (lease TTL 2 s)?
    let mut gone_after = None;
    let mut poll_gone = || {
        if gone_after.is_none() && !registered(&dead) {
            gone_after = Some(killed.elapsed());
        }
        gone_after.is_some()
    };
    let finished = wait_until(Duration::from_secs(20), || {
        poll_gone();
        client.try_wait().is_some()
    });
    assert!(
        finished,
        "the client did not finish within 20 s;\n{}",
        context()
    );
    wait_until(Duration::from_secs(6), &mut poll_gone);
    let status = client.try_wait().expect("exited");
    assert!(
        status.success(),
        "the client failed ({status});\n{}",
        context()
    );
    let out = output();
    let lines: Vec<&str> = out.lines().collect();
    let from = served(&lines);

    // After the kill: only the survivor serves, and the client moved off the dead proxy (or
    // never tried it again because its registration vanished first).
    let after_lines: Vec<&str> = out[before_kill..].lines().collect();
    let after_served = served(&after_lines);
    assert!(
        !after_served.is_empty(),
        "no request after the kill;\n{out}"
    );
    assert!(
        after_served.iter().all(|(_, a)| *a == survivor),
        "a request after the kill was not served by the survivor {survivor};\n{out}"
    );
    let moved_off = after_lines
        .iter()
        .any(|l| l.starts_with(&format!("proxy {dead} failed")) && l.ends_with("moving on"));
    assert!(
        moved_off || gone_after.is_some(),
        "the client neither moved off {dead} nor saw its registration vanish;\n{out}"
    );
    println!(
        "discovery: {} requests served before the kill, {} after it, all by the survivor; \
         moved off the dead proxy: {moved_off}; its registration gone {gone_after:?} after the kill",
        from.len() - after_served.len(),
        after_served.len(),
    );
    let gone_after =
        gone_after.expect("the dead proxy's registration still there 6 s after the client ended");
    assert!(
        gone_after < Duration::from_secs(5),
        "the dead proxy's registration outlived its 2 s TTL: {gone_after:?}"
    );

    // Every request, before and after the kill, was served by one of the proxies.
    assert!(
        !out.contains("no live proxy"),
        "a request found no live proxy although both proxies were registered before the \
         client started;\n{out}"
    );
    assert!(
        from.iter().all(|(_, a)| addrs.contains(a)),
        "served by something else than the two proxies;\n{out}"
    );
    assert_eq!(
        from.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        (0..40).collect::<Vec<_>>(),
        "40 requests, each served once;\n{out}"
    );
    assert_eq!(
        from.len(),
        lines.iter().filter(|l| l.starts_with("request ")).count(),
        "every request must be served;\n{out}"
    );
}
