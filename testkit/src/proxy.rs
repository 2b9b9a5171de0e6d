//! The `tessera` binary as a test's proxy: a generated (or given) config, started on free
//! ports, SIGKILLed by pid on drop, with clients to it and its admin HTTP listener.

use std::fmt;
use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::http::{HttpResponse, http_get};
use crate::ports::{accepts, free_addr};
use crate::processes::{START_BOUND, TempDir, file_tail, kill_child, wait_until};
use crate::redis_server::RedisServer;
use crate::resp::RawConn;
use crate::slots::slot_ranges;

/// The `tessera` binary of this build: `$CARGO_BIN_EXE_tessera` (Cargo sets it when it runs
/// the root package's tests and benches), else `tessera` next to the running test binary's
/// `deps/` directory (where Cargo puts the package's binaries).
pub fn tessera_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("CARGO_BIN_EXE_tessera") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("the path of the running test");
    let dir = exe.parent().expect("the test binary's directory");
    let dir = if dir.ends_with("deps") {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    };
    dir.join("tessera")
}

/// Quotes a string as a TOML basic string.
pub fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A generated config: its text and the addresses it names.
pub struct ConfigFile {
    pub text: String,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
}

/// Builds a proxy config. Settings are `("proxy.KEY" | "backend.KEY", TOML value literal)`,
/// e.g. `.set("proxy.max_pipeline", "100")`, `.set("proxy.password", &toml_str("pw"))`.
/// They are written into the single `[proxy]` / `[backend]` table (TOML tables cannot be
/// reopened); `proxy.listen` and `proxy.admin_listen` default to free ports.
pub struct ProxyBuilder {
    groups: Vec<Vec<String>>,
    slots: Option<Vec<(String, u32)>>,
    proxy: Vec<(String, String)>,
    backend: Vec<(String, String)>,
    extra: String,
    /// Another `tessera` executable to run instead of this build's.
    bin: Option<PathBuf>,
}

impl ProxyBuilder {
    pub fn new(groups: &[&[&RedisServer]]) -> ProxyBuilder {
        ProxyBuilder {
            groups: groups
                .iter()
                .map(|g| g.iter().map(|s| s.addr()).collect())
                .collect(),
            slots: None,
            proxy: Vec::new(),
            backend: Vec::new(),
            extra: String::new(),
            bin: None,
        }
    }

    /// Runs `bin` instead of this build's `tessera` (e.g. an older build, to compare).
    pub fn binary(mut self, bin: impl Into<PathBuf>) -> ProxyBuilder {
        self.bin = Some(bin.into());
        self
    }

    /// Groups given by address (e.g. a server that is not running).
    pub fn with_addrs(groups: &[&[&str]]) -> ProxyBuilder {
        let mut b = ProxyBuilder::new(&[]);
        b.groups = groups
            .iter()
            .map(|g| g.iter().map(|s| s.to_string()).collect())
            .collect();
        b
    }

    /// Sets `proxy.KEY` or `backend.KEY` to a TOML literal (replacing an earlier value).
    pub fn set(mut self, key: &str, toml_value: &str) -> ProxyBuilder {
        let (table, name) = key
            .split_once('.')
            .unwrap_or_else(|| panic!("setting {key:?} must be proxy.KEY or backend.KEY"));
        let list = match table {
            "proxy" => &mut self.proxy,
            "backend" => &mut self.backend,
            _ => panic!("setting {key:?} must be proxy.KEY or backend.KEY"),
        };
        list.retain(|(k, _)| k != name);
        list.push((name.to_string(), toml_value.to_string()));
        self
    }

    /// Sets several settings at once.
    pub fn settings(mut self, settings: &[(&str, &str)]) -> ProxyBuilder {
        for (k, v) in settings {
            self = self.set(k, v);
        }
        self
    }

    /// Replaces the default equal split with explicit `(range, group)` entries.
    pub fn slots(mut self, slots: &[(&str, u32)]) -> ProxyBuilder {
        self.slots = Some(slots.iter().map(|(r, g)| (r.to_string(), *g)).collect());
        self
    }

    /// Raw TOML appended after the generated text (new tables only).
    pub fn extra_toml(mut self, text: &str) -> ProxyBuilder {
        self.extra.push_str(text);
        self
    }

    /// The config text and the addresses it names.
    pub fn config(&self) -> ConfigFile {
        let lookup = |name: &str| {
            self.proxy
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.trim_matches('"').parse::<SocketAddr>())
        };
        let listen = match lookup("listen") {
            Some(a) => a.expect("proxy.listen must be a quoted socket address"),
            None => free_addr(),
        };
        let admin = match lookup("admin_listen") {
            Some(a) => a.expect("proxy.admin_listen must be a quoted socket address"),
            None => free_addr(),
        };
        let mut text = String::from("[proxy]\n");
        text.push_str(&format!("listen = \"{listen}\"\n"));
        text.push_str(&format!("admin_listen = \"{admin}\"\n"));
        for (k, v) in &self.proxy {
            if k != "listen" && k != "admin_listen" {
                text.push_str(&format!("{k} = {v}\n"));
            }
        }
        text.push_str("\n[backend]\n");
        for (k, v) in &self.backend {
            text.push_str(&format!("{k} = {v}\n"));
        }
        for (i, servers) in self.groups.iter().enumerate() {
            let list: Vec<String> = servers.iter().map(|s| toml_str(s)).collect();
            text.push_str(&format!(
                "\n[[group]]\nid = {}\nservers = [{}]\n",
                i + 1,
                list.join(", ")
            ));
        }
        let slots: Vec<(String, u32)> = match &self.slots {
            Some(s) => s.clone(),
            None if self.groups.is_empty() => Vec::new(),
            None => slot_ranges(self.groups.len())
                .into_iter()
                .map(|(a, b, g)| (format!("{a}-{b}"), g))
                .collect(),
        };
        for (range, group) in slots {
            text.push_str(&format!(
                "\n[[slots]]\nrange = {}\ngroup = {group}\n",
                toml_str(&range)
            ));
        }
        if !self.extra.is_empty() {
            text.push('\n');
            text.push_str(&self.extra);
            text.push('\n');
        }
        ConfigFile {
            text,
            listen,
            admin,
        }
    }

    /// Starts the proxy; panics with its log if it does not listen (both the client and the
    /// admin addresses) within 10 s.
    pub fn start(&self) -> Proxy {
        let cfg = self.config();
        match Proxy::start_config(&cfg.text, cfg.listen, cfg.admin, true, self.bin.clone()) {
            Ok(p) => p,
            Err(e) => panic!("proxy did not start: {e}\nconfig:\n{}", cfg.text),
        }
    }
}

/// The proxy process ended (or never listened) when a test expected it to serve.
#[derive(Debug)]
pub struct ProxyExited {
    /// None: still running but not listening after the bound (it was killed).
    pub status: Option<ExitStatus>,
    /// Its stdout + stderr.
    pub log: String,
}

impl fmt::Display for ProxyExited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(s) => write!(f, "proxy exited ({s}); log:\n{}", self.log),
            None => write!(
                f,
                "proxy did not listen within {START_BOUND:?}; log:\n{}",
                self.log
            ),
        }
    }
}

/// A running `tessera proxy`, SIGKILLed and its directory removed on drop.
pub struct Proxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    child: Option<Child>,
    /// Holds the config and the log until the proxy drops.
    _dir: TempDir,
    log_path: PathBuf,
    pub config_path: PathBuf,
}

impl Proxy {
    /// A proxy over `groups` (group ids 1..=n, first server of each the master), slots split
    /// equally, default settings.
    pub fn start(groups: &[&[&RedisServer]]) -> Proxy {
        ProxyBuilder::new(groups).start()
    }

    /// Same with settings, e.g. `&[("proxy.max_pipeline", "100"), ("backend.timeout_ms", "500")]`.
    pub fn start_with(groups: &[&[&RedisServer]], settings: &[(&str, &str)]) -> Proxy {
        ProxyBuilder::new(groups).settings(settings).start()
    }

    /// A builder for anything else (explicit slots, groups by address, extra TOML).
    pub fn builder(groups: &[&[&RedisServer]]) -> ProxyBuilder {
        ProxyBuilder::new(groups)
    }

    /// Starts the proxy on config text as given. `Err` if the process exits before listening
    /// (bad config) or does not listen within 10 s. The listen addresses are read from the
    /// `listen = "..."` / `admin_listen = "..."` lines (defaults 127.0.0.1:19000 / :19080);
    /// the admin address is waited for only if the text names it.
    pub fn start_raw(config_text: &str) -> Result<Proxy, ProxyExited> {
        let find = |name: &str, default: &str| -> SocketAddr {
            config_text
                .lines()
                .filter_map(|l| l.trim().strip_prefix(name))
                .filter_map(|rest| rest.trim_start().strip_prefix('='))
                .find_map(|v| v.trim().trim_matches('"').parse().ok())
                .unwrap_or_else(|| default.parse().unwrap())
        };
        let listen = find("listen", "127.0.0.1:19000");
        let admin = find("admin_listen", "127.0.0.1:19080");
        let names_admin = config_text
            .lines()
            .any(|l| l.trim_start().starts_with("admin_listen"));
        Proxy::start_config(config_text, listen, admin, names_admin, None)
    }

    /// Writes the config, runs the proxy, waits for `listen` (and `admin` if `wait_admin`).
    fn start_config(
        text: &str,
        listen: SocketAddr,
        admin: SocketAddr,
        wait_admin: bool,
        bin: Option<PathBuf>,
    ) -> Result<Proxy, ProxyExited> {
        let dir = TempDir::new("proxy");
        let config_path = dir.path().join("tessera.toml");
        fs::write(&config_path, text).expect("write proxy config");
        let args = ["--config".to_string(), config_path.display().to_string()];
        Proxy::launch(dir, config_path, &args, listen, admin, wait_admin, bin)
    }

    /// Runs `tessera proxy ARGS` with its log in `dir`; waits until it says it serves and
    /// `listen` (and `admin` if `wait_admin`) accept, or for the process to exit.
    fn launch(
        dir: TempDir,
        config_path: PathBuf,
        args: &[String],
        listen: SocketAddr,
        admin: SocketAddr,
        wait_admin: bool,
        bin: Option<PathBuf>,
    ) -> Result<Proxy, ProxyExited> {
        let log_path = dir.path().join("proxy.log");
        let log = File::create(&log_path).expect("create proxy log");
        let bin = bin.unwrap_or_else(tessera_bin);
        let child = Command::new(&bin)
            .arg("proxy")
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        let mut proxy = Proxy {
            addr: listen,
            admin,
            child: Some(child),
            _dir: dir,
            log_path,
            config_path,
        };
        let mut exited = None;
        let listening = wait_until(START_BOUND, || {
            if let Some(s) = proxy.child.as_mut().unwrap().try_wait().ok().flatten() {
                exited = Some(s);
                return true;
            }
            // The proxy binds its ports before it reads its coordinator, so a port that
            // accepts is not yet a proxy that serves: it says so once it does.
            proxy.log().contains("tessera proxy: serving on")
                && accepts(listen)
                && (!wait_admin || accepts(admin))
        });
        if exited.is_some() || !listening {
            proxy.kill();
            return Err(ProxyExited {
                status: exited,
                log: proxy.log(),
            });
        }
        Ok(proxy)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("proxy is not running").id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_child(&mut child);
        }
    }

    /// The proxy's stdout + stderr so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    /// `redis://<addr>/`.
    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("redis client")
    }

    /// A sync connection through the proxy with 10 s read/write timeouts.
    pub fn conn(&self) -> redis::Connection {
        let conn = self
            .client()
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to proxy {}: {e}", self.addr));
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        conn.set_write_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        conn
    }

    /// An async multiplexed connection through the proxy (10 s response timeout).
    pub async fn async_conn(&self) -> redis::aio::MultiplexedConnection {
        async_conn_url(&self.url()).await
    }

    /// A raw RESP connection to the proxy.
    pub fn raw(&self) -> RawConn {
        RawConn::connect(self.addr)
    }

    /// `GET path` on the admin HTTP listener.
    pub fn http_get(&self, path: &str) -> HttpResponse {
        http_get(self.admin, path)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if std::thread::panicking() && self.child.is_some() {
            eprintln!(
                "---- proxy {} log (tail) ----\n{}\n----",
                self.addr,
                file_tail(&self.log_path, 6000)
            );
        }
        self.kill();
    }
}

/// An async multiplexed connection to a redis URL (10 s connect and response timeouts).
pub async fn async_conn_url(url: &str) -> redis::aio::MultiplexedConnection {
    let cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Duration::from_secs(5))
        .set_response_timeout(Duration::from_secs(10));
    redis::Client::open(url)
        .expect("redis client")
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
        .unwrap_or_else(|e| panic!("async connect to {url}: {e}"))
}

impl Proxy {
    /// `tessera proxy --coordinator URL --product P --lease-ttl SECS` on free ports, without a
    /// config file (`config_path` names no file). `Err` if it exits or does not listen (client
    /// and admin addresses) within 10 s.
    pub fn start_coordinator(
        url: &str,
        product: &str,
        lease_ttl_secs: u64,
    ) -> Result<Proxy, ProxyExited> {
        let (listen, admin) = (free_addr(), free_addr());
        let dir = TempDir::new("proxy");
        let config_path = dir.path().join("no-config-file");
        let args: Vec<String> = [
            "--coordinator",
            url,
            "--product",
            product,
            "--lease-ttl",
            &lease_ttl_secs.to_string(),
            "--listen",
            &listen.to_string(),
            "--admin-listen",
            &admin.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        Proxy::launch(dir, config_path, &args, listen, admin, true, None)
    }
}

/// A proxy over `n` groups of one master each (group ids 1..=n, slots split equally).
pub struct Cluster {
    pub servers: Vec<RedisServer>,
    pub proxy: Proxy,
}

impl Cluster {
    /// Starts `n` redis-servers and a proxy over them with `settings` (as
    /// [`Proxy::start_with`]).
    pub fn start(n: usize, settings: &[(&str, &str)]) -> Cluster {
        let servers: Vec<RedisServer> = (0..n).map(|_| RedisServer::start()).collect();
        let groups: Vec<[&RedisServer; 1]> = servers.iter().map(|s| [s]).collect();
        let groups: Vec<&[&RedisServer]> = groups.iter().map(|g| &g[..]).collect();
        let proxy = Proxy::start_with(&groups, settings);
        Cluster { servers, proxy }
    }
}
