//! Proxy discovery, as Codis's jodis did: list the live proxies of a product from the
//! topology store, spread commands over them round-robin, and move off a proxy that dies.
//!
//! ```text
//! cargo run --example discovery -- --coordinator etcd://127.0.0.1:2379 --product tessera --requests 100
//! ```
//!
//! Proxies register under leases (`/tessera/<product>/proxies/<token>`), so a proxy that dies
//! leaves the list within its lease TTL; the client also drops a proxy it cannot reach at
//! once and tries the next, so no request fails while another proxy is alive.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tessera_topology::model::ProxyInfo;
use tessera_topology::{Store, WatchEvent, keys};

/// The live proxies, kept current by a watch on the store.
#[derive(Clone, Default)]
struct Proxies(
    Arc<Mutex<BTreeMap<String, String>>>,
    Arc<tokio::sync::Notify>,
);

impl Proxies {
    fn list(&self) -> Vec<String> {
        self.0.lock().expect("lock").values().cloned().collect()
    }
    fn set(&self, key: String, addr: Option<String>) {
        let mut map = self.0.lock().expect("lock");
        match addr {
            Some(a) => map.insert(key, a),
            None => map.remove(&key),
        };
    }
    fn forget_addr(&self, addr: &str) {
        self.0.lock().expect("lock").retain(|_, a| a != addr);
    }
}

/// Loads the registered proxies and follows their comings and goings.
async fn follow(store: Arc<dyn Store>, product: String, proxies: Proxies) -> anyhow::Result<()> {
    let prefix = keys::proxies_prefix(&product);
    loop {
        let (kvs, revision) = store.get_prefix(&prefix).await?;
        for kv in kvs {
            if let Ok(info) = serde_json::from_slice::<ProxyInfo>(&kv.value) {
                proxies.set(kv.key, Some(info.addr));
            }
        }
        proxies.1.notify_one();
        let mut events = store.watch_prefix(&prefix, revision).await?;
        while let Some(e) = events.recv().await {
            match e {
                WatchEvent::Put(kv) => {
                    if let Ok(info) = serde_json::from_slice::<ProxyInfo>(&kv.value) {
                        proxies.set(kv.key, Some(info.addr));
                    }
                }
                WatchEvent::Delete { key, .. } => proxies.set(key, None),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sends one inline command and reads a one-line reply.
fn request(addr: &str, line: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(
        &addr.parse().map_err(std::io::Error::other)?,
        Duration::from_millis(500),
    )?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    s.write_all(format!("{line}\r\n").as_bytes())?;
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply)?;
    if reply.is_empty() {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(reply.trim_end().to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut coordinator = "etcd://127.0.0.1:2379".to_string();
    let mut product = "tessera".to_string();
    let mut requests = 20u64;
    let mut interval_ms = 100u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{a} needs a value"))
        };
        match a.as_str() {
            "--coordinator" => coordinator = value()?,
            "--product" => product = value()?,
            "--requests" => requests = value()?.parse()?,
            "--interval-ms" => interval_ms = value()?.parse()?,
            other => anyhow::bail!("unknown argument {other}; see the example's docs"),
        }
    }
    let store = tessera_topology::connect(&coordinator).await?;
    let proxies = Proxies::default();
    let first_read = proxies.1.clone();
    tokio::spawn(follow(store, product, proxies.clone()));
    // Requests start once the list of proxies has been read.
    tokio::time::timeout(Duration::from_secs(5), first_read.notified())
        .await
        .map_err(|_| anyhow::anyhow!("cannot read the proxy list from {coordinator}"))?;

    let mut next = 0usize;
    for i in 0..requests {
        let mut served = None;
        // Try live proxies until one answers; an empty list is waited on for up to 2 s
        // (a proxy may be re-registering).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while served.is_none() && tokio::time::Instant::now() < deadline {
            let live = proxies.list();
            if live.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            let addr = live[next % live.len()].clone();
            next += 1;
            let line = format!("SET discovery:{i} {i}");
            match tokio::task::spawn_blocking({
                let addr = addr.clone();
                move || request(&addr, &line)
            })
            .await?
            {
                Ok(reply) => {
                    served = Some((addr, reply));
                    break;
                }
                Err(e) => {
                    println!("proxy {addr} failed ({e}); moving on");
                    proxies.forget_addr(&addr);
                }
            }
        }
        match served {
            Some((addr, reply)) => println!("request {i}: {reply} from {addr}"),
            None => println!("request {i}: no live proxy"),
        }
        tokio::time::sleep(Duration::from_millis(interval_ms)).await;
    }
    Ok(())
}
