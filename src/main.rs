//! `tessera`: the one binary. `proxy` serves clients over a slot table; `dashboard` keeps the
//! topology; `admin` calls its API; `up` starts a whole local cluster for a newcomer.

#![forbid(unsafe_code)]

mod up;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tessera_proxy::config::CoordinatorConfig;

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "A proxy-based Redis cluster with WebAssembly plugins"
)]
struct Cli {
    /// Log filter (tracing env-filter syntax), e.g. `info` or `tessera_proxy=debug`.
    #[arg(long, global = true, env = "TESSERA_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a proxy over the groups and slots of a config file.
    Proxy(ProxyArgs),
    /// Run the dashboard: the single writer of a product's topology, and its REST API.
    Dashboard(tessera_dashboard::DashboardArgs),
    /// Call the dashboard's API: groups, servers, slots, proxies, product.
    Admin(tessera_dashboard::AdminArgs),
    /// Start a local cluster: redis-servers, a dashboard, a proxy with all slots assigned.
    /// Ctrl-C stops it.
    Up(up::UpArgs),
}

#[derive(clap::Args)]
struct ProxyArgs {
    /// The TOML config file (see README.md, "Configuration"). Optional with --coordinator.
    #[arg(long, short, required_unless_present = "coordinator")]
    config: Option<PathBuf>,
    /// Take groups and slots from a topology store instead of the config:
    /// `etcd://HOST:PORT[,HOST:PORT...]` or `file://DIR`. Overrides `coordinator.url`.
    #[arg(long)]
    coordinator: Option<String>,
    /// The product (cluster) name in the store. Overrides `coordinator.product`.
    #[arg(long)]
    product: Option<String>,
    /// TTL of the proxy's registration lease, in seconds. Overrides `coordinator.lease_ttl_secs`.
    #[arg(long)]
    lease_ttl: Option<u64>,
    /// Overrides `proxy.listen`.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Overrides `proxy.admin_listen`.
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log file or a pipe gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Proxy(args) => run_proxy(args),
        Command::Dashboard(args) => tessera_dashboard::run_dashboard(args),
        Command::Admin(args) => tessera_dashboard::run_admin(args),
        Command::Up(args) => up::run(args),
    };
    if let Err(e) = result {
        eprintln!("tessera: error: {e:#}");
        std::process::exit(1);
    }
}

fn run_proxy(args: ProxyArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => tessera_proxy::Config::from_file(path)?,
        None => tessera_proxy::Config::default(),
    };
    if let Some(url) = args.coordinator {
        let c = config.coordinator.get_or_insert_with(|| CoordinatorConfig {
            url: String::new(),
            product: "tessera".to_string(),
            lease_ttl_secs: 10,
            lease_rule: true,
        });
        c.url = url;
    }
    if let Some(c) = config.coordinator.as_mut() {
        if let Some(p) = args.product {
            c.product = p;
        }
        if let Some(t) = args.lease_ttl {
            c.lease_ttl_secs = t;
        }
    } else if args.product.is_some() || args.lease_ttl.is_some() {
        anyhow::bail!(
            "--product and --lease-ttl need --coordinator (or a [coordinator] table in the config)"
        );
    }
    if let Some(l) = args.listen {
        config.proxy.listen = l;
    }
    if let Some(a) = args.admin_listen {
        config.proxy.admin_listen = Some(a);
    }
    let proxy = tessera_proxy::start(config)?;
    println!("tessera proxy: serving on {}", proxy.addr());
    if let Some(a) = proxy.admin_addr() {
        println!("tessera proxy: admin API on http://{a}/api/stats");
    }
    wait_for_signal()?;
    tracing::info!("stopping");
    proxy.shutdown();
    Ok(())
}

/// Blocks until SIGINT or SIGTERM.
pub(crate) fn wait_for_signal() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal handler")?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    })
    .context("waiting for a signal")
}
