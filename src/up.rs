//! `tessera up`: a whole local cluster in one command, for a newcomer. It starts one
//! redis-server per group, a dashboard on the embedded store (or etcd), a proxy in
//! coordinator mode, assigns the slots evenly through the dashboard's API, and stops it all.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use tessera_dashboard::DashboardArgs;
use tessera_dashboard::admin::Client;
use tessera_proxy::config::{Config, CoordinatorConfig};
use tessera_topology::model::SlotRange;
use tessera_topology::slot::SLOT_COUNT;

#[derive(clap::Args)]
pub struct UpArgs {
    /// Number of groups (one redis-server each).
    #[arg(long, default_value_t = 2)]
    groups: u16,
    /// Port of the first redis-server; the others follow.
    #[arg(long, default_value_t = 16379)]
    redis_port_base: u16,
    /// Where the redis-servers keep their data and logs.
    #[arg(long, default_value = "tessera-data")]
    dir: PathBuf,
    /// Where the proxy listens.
    #[arg(long, default_value = "127.0.0.1:19000")]
    proxy_addr: SocketAddr,
    /// Where the proxy's admin HTTP API listens.
    #[arg(long, default_value = "127.0.0.1:19080")]
    admin_addr: SocketAddr,
    /// Where the dashboard's REST API listens.
    #[arg(long, default_value = "127.0.0.1:18080")]
    dashboard_addr: SocketAddr,
    /// Keep the topology in this etcd (`HOST:PORT`) instead of the embedded store in --dir.
    #[arg(long)]
    etcd: Option<String>,
    /// The product (cluster) name.
    #[arg(long, default_value = "tessera")]
    product: String,
    /// The redis-server program to run.
    #[arg(long, default_value = "redis-server")]
    redis_server: PathBuf,
    /// Let clients CONFIG SET and CONFIG RESETSTAT through the proxy (proxy.allow_config_set).
    #[arg(long)]
    allow_config_set: bool,
}

/// Redis servers started by `up`; shut down (then killed, if they linger) when dropped.
struct Servers(Vec<(u16, Child)>);

impl Drop for Servers {
    fn drop(&mut self) {
        for (port, _) in &self.0 {
            // A clean SHUTDOWN lets Redis save its data; a kill follows if it does not exit.
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", *port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let _ = s.write_all(b"*1\r\n$8\r\nSHUTDOWN\r\n");
                let _ = s.read(&mut [0u8; 64]);
            }
        }
        for (port, child) in &mut self.0 {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
            println!("tessera up: stopped redis-server on port {port}");
        }
    }
}

pub fn run(args: UpArgs) -> anyhow::Result<()> {
    if args.groups == 0 || args.groups as usize > SLOT_COUNT {
        bail!("--groups must be between 1 and {SLOT_COUNT}");
    }
    check_redis_server(&args.redis_server)?;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = args.dir.canonicalize()?;

    let mut servers = Servers(Vec::new());
    for i in 0..args.groups {
        let port = args
            .redis_port_base
            .checked_add(i)
            .context("--redis-port-base is too high for that many groups")?;
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            bail!(
                "port {port} is in use: stop what listens there or pick another --redis-port-base"
            );
        }
        let child = start_redis(&args.redis_server, port, &dir)?;
        servers.0.push((port, child));
    }
    for (port, child) in &mut servers.0 {
        wait_for_redis(*port, child, &dir)?;
    }

    let coordinator = match &args.etcd {
        Some(addr) => format!("etcd://{addr}"),
        None => format!("file://{}", dir.join("store").display()),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the dashboard runtime")?;
    let dashboard = rt
        .block_on(tessera_dashboard::start(DashboardArgs {
            coordinator: coordinator.clone(),
            product: args.product.clone(),
            listen: args.dashboard_addr,
            admin_token: None,
            lock_ttl: 10,
        }))
        .context("starting the dashboard")?;
    let token = dashboard.admin_token().to_string();
    let api = Client::new(&dashboard.addr().to_string(), Some(token.clone()));
    let result = assign_slots(&api, &servers).and_then(|()| {
        let config = proxy_config(&args, &coordinator);
        std::fs::write(dir.join("proxy.toml"), config.to_toml())?;
        tessera_proxy::start(config).context("starting the proxy")
    });
    let proxy = match result {
        Ok(p) => p,
        Err(e) => {
            let _ = rt.block_on(dashboard.shutdown());
            return Err(e);
        }
    };
    let addrs: Vec<String> = servers
        .0
        .iter()
        .map(|(p, _)| format!("127.0.0.1:{p}"))
        .collect();
    println!(
        "tessera up: {} groups on {} (data in {})",
        args.groups,
        addrs.join(", "),
        dir.display()
    );
    println!(
        "tessera up: topology in {coordinator}, product {:?}",
        args.product
    );
    println!(
        "tessera up: dashboard on http://{0} (try: tessera admin --dashboard {0} --token {token} topology)",
        dashboard.addr()
    );
    if let Some(a) = proxy.admin_addr() {
        println!("tessera up: proxy admin API on http://{a}/api/stats");
    }
    println!(
        "tessera up: ready on {} (connect with: redis-cli -p {})",
        proxy.addr(),
        proxy.addr().port()
    );
    println!("tessera up: press Ctrl-C to stop");
    let waited = crate::wait_for_signal();
    println!("tessera up: stopping");
    proxy.shutdown();
    if let Err(e) = rt.block_on(dashboard.shutdown()) {
        eprintln!("tessera up: dashboard did not stop cleanly: {e}");
    }
    drop(servers);
    waited
}

/// Creates the groups (one server each) and splits the slots in equal contiguous ranges in
/// group order (group 1 gets slot 0; the last takes the remainder), through the REST API.
/// Idempotent, so `tessera up` on an existing --dir finds its cluster as it left it.
fn assign_slots(api: &Client, servers: &Servers) -> anyhow::Result<()> {
    let topology = api.call("GET", "/api/topology", None)?;
    let n = servers.0.len();
    let per = SLOT_COUNT / n;
    for (i, (port, _)) in servers.0.iter().enumerate() {
        let id = i as u64 + 1;
        let addr = format!("127.0.0.1:{port}");
        let existing = topology["groups"]
            .as_array()
            .and_then(|gs| gs.iter().find(|g| g["id"].as_u64() == Some(id)));
        if existing.is_none() {
            api.call("POST", "/api/groups", Some(json!({ "id": id })))?;
        }
        let has_server = existing.is_some_and(|g| {
            g["servers"]
                .as_array()
                .is_some_and(|s| s.iter().any(|a| a.as_str() == Some(&addr)))
        });
        if !has_server {
            api.call(
                "POST",
                &format!("/api/groups/{id}/servers"),
                Some(json!({ "addr": addr })),
            )?;
        }
        let lo = i * per;
        let hi = if i + 1 == n {
            SLOT_COUNT - 1
        } else {
            lo + per - 1
        };
        api.call(
            "POST",
            "/api/slots/assign",
            Some(json!({ "range": SlotRange { lo, hi }, "group": id })),
        )?;
    }
    Ok(())
}

fn proxy_config(args: &UpArgs, coordinator: &str) -> Config {
    let mut config = Config::default();
    config.proxy.listen = args.proxy_addr;
    config.proxy.admin_listen = Some(args.admin_addr);
    config.proxy.allow_config_set = args.allow_config_set;
    config.coordinator = Some(CoordinatorConfig {
        url: coordinator.to_string(),
        product: args.product.clone(),
        lease_ttl_secs: 10,
        lease_rule: true,
    });
    config
}

fn check_redis_server(program: &Path) -> anyhow::Result<()> {
    match Command::new(program).arg("--version").output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => bail!(
            "{} --version failed: {}",
            program.display(),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{} not found on PATH. Install it (Debian/Ubuntu: `sudo apt-get install redis-server`) \
             or run ./scripts/up.sh, which installs what is missing",
            program.display()
        ),
        Err(e) => bail!("cannot run {}: {e}", program.display()),
    }
}

fn start_redis(program: &Path, port: u16, dir: &Path) -> anyhow::Result<Child> {
    let data = dir.join(format!("redis-{port}"));
    std::fs::create_dir_all(&data)?;
    let log = std::fs::File::create(data.join("redis.log"))?;
    Command::new(program)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--daemonize",
            "no",
        ])
        .arg("--dir")
        .arg(&data)
        .args(["--save", "60 1000", "--appendonly", "no"])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting redis-server on port {port}"))
}

fn wait_for_redis(port: u16, child: &mut Child, dir: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(dir.join(format!("redis-{port}/redis.log")))
                .unwrap_or_default();
            bail!("redis-server on port {port} exited ({status}):\n{log}");
        }
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let mut buf = [0u8; 7];
            if s.write_all(b"PING\r\n").is_ok()
                && s.read_exact(&mut buf).is_ok()
                && &buf == b"+PONG\r\n"
            {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("redis-server on port {port} did not answer PING within 10 s")
}
