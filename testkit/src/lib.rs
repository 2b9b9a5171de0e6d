//! Test harness for Tessera's integration tests (and `benches/load.rs`): real `redis-server`
//! processes on free ports, the `tessera` binary started on a generated config, a raw RESP
//! connection with a reply reader, a tiny HTTP GET client, and an independent implementation
//! of Codis's slot function.
//!
//! Every process a test starts is owned by a value whose `Drop` kills it by pid, so a failing
//! test does not leak servers. Waits poll a condition with a bound; none sleeps blindly.
//!
//! Depends only on std and the root `[dev-dependencies]` (redis, libc, tokio).
#![allow(dead_code, clippy::duplicated_attributes)]

pub mod etcd;

use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Number of slots of the proxy (Codis's 1024).
pub const SLOTS: usize = 1024;

/// How long a process may take to become ready before the harness gives up.
pub const START_BOUND: Duration = Duration::from_secs(10);

/// Polling interval of every `wait_until`.
const POLL: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------------------------------------
// Ports, temp dirs, polling
// ---------------------------------------------------------------------------------------------

use etcd::HANDED_PORTS;
/// One set of handed-out ports for the whole process, the etcd harness's included.
pub use etcd::free_port;

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A port `p` such that `p` and `p + 1` are both free (for `tessera up --redis-port-base`).
pub fn free_port_pair() -> u16 {
    for _ in 0..1000 {
        let p = free_port();
        if p == u16::MAX {
            continue;
        }
        let mut handed = HANDED_PORTS.lock().unwrap();
        if !handed.contains(&(p + 1)) && port_is_free(p + 1) {
            handed.insert(p + 1);
            return p;
        }
    }
    panic!("no free pair of consecutive ports found in 1000 tries");
}

/// A local address on a free port.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Polls `cond` every 20 ms until it holds (true) or `bound` has passed (false).
pub fn wait_until(bound: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + bound;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// Whether something accepts TCP connections on `addr` right now.
pub fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "tessera-{prefix}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The last `max` bytes of a file, lossily decoded (for panic messages).
pub fn file_tail(path: &Path, max: usize) -> String {
    let data = fs::read(path).unwrap_or_default();
    let start = data.len().saturating_sub(max);
    String::from_utf8_lossy(&data[start..]).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// Sends `sig` to `pid`; false if the process does not exist.
pub fn signal(pid: u32, sig: libc::c_int) -> bool {
    // SAFETY: kill(2) with a pid this test started; no memory is shared.
    unsafe { libc::kill(pid as libc::pid_t, sig) == 0 }
}

/// Whether `pid` names a live (not zombie) process.
pub fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            // State is the field after the parenthesised command name.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .unwrap_or("?");
            state != "Z" && state != "X"
        }
    }
}

/// The pids whose parent is `ppid`.
pub fn children_of(ppid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if parent == Some(ppid) {
            out.push(pid);
        }
    }
    out
}

/// The command line of `pid`, arguments joined by spaces ("" if gone).
pub fn cmdline(pid: u32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .split('\0')
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// Resident set size of `pid` in KiB (VmRSS of /proc/<pid>/status).
pub fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// SIGKILLs a child if still running and reaps it.
fn kill_child(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        signal(child.id(), libc::SIGKILL);
    }
    let _ = child.wait();
}

/// Waits (bounded) for a child to exit; None if it is still running after `bound`.
pub fn wait_exit(child: &mut Child, bound: Duration) -> Option<ExitStatus> {
    let mut status = None;
    wait_until(bound, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    status
}

/// A core shared with busy threads: pins every thread of process `pid` and `hogs` spinning
/// threads of the test to one CPU (the first this process may use), so the process gets
/// about `1 / (hogs + 1)` of it. The spinning stops on drop (also when the test panics) and
/// after 30 s in any case; the process stays pinned.
pub struct SharedCore {
    stop: Arc<AtomicBool>,
    hogs: Vec<std::thread::JoinHandle<()>>,
}

impl SharedCore {
    pub fn new(pid: u32, hogs: usize) -> SharedCore {
        // SAFETY: cpu_set_t is plain data; the calls only read and write the set given.
        let set = unsafe {
            let mut mine: libc::cpu_set_t = std::mem::zeroed();
            let size = std::mem::size_of::<libc::cpu_set_t>();
            assert_eq!(
                libc::sched_getaffinity(0, size, &mut mine),
                0,
                "sched_getaffinity"
            );
            let cpu = (0..libc::CPU_SETSIZE as usize)
                .find(|&c| libc::CPU_ISSET(c, &mine))
                .expect("a CPU to run on");
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut one);
            one
        };
        let pin = move |tid: libc::pid_t| {
            // SAFETY: as above.
            unsafe { libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set) == 0 }
        };
        let tasks = fs::read_dir(format!("/proc/{pid}/task")).expect("the process's threads");
        for task in tasks.flatten() {
            let tid: libc::pid_t = task.file_name().to_string_lossy().parse().unwrap();
            assert!(pin(tid), "cannot pin thread {tid} of {pid}");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let hogs = (0..hogs)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    assert!(pin(0), "cannot pin a busy thread");
                    let until = Instant::now() + Duration::from_secs(30);
                    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        SharedCore { stop, hogs }
    }
}

impl Drop for SharedCore {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for hog in self.hogs.drain(..) {
            let _ = hog.join();
        }
    }
}

/// Sends SIGSTOP to a process on creation and SIGCONT on drop (also when the test panics).
pub struct Paused {
    pid: u32,
}

impl Paused {
    pub fn new(pid: u32) -> Paused {
        assert!(signal(pid, libc::SIGSTOP), "SIGSTOP {pid} failed");
        Paused { pid }
    }
    /// Resumes the process now.
    pub fn resume(self) {}
}

impl Drop for Paused {
    fn drop(&mut self) {
        signal(self.pid, libc::SIGCONT);
    }
}

// ---------------------------------------------------------------------------------------------
// redis-server
// ---------------------------------------------------------------------------------------------

/// A `redis-server` on 127.0.0.1, killed (SIGKILL) and its directory removed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: TempDir,
    log_path: PathBuf,
    extra_args: Vec<String>,
}

impl RedisServer {
    /// Starts a redis-server on a free port, without persistence; waits until it answers PING.
    pub fn start() -> RedisServer {
        RedisServer::start_with_args(&[])
    }

    /// Same as `start`, with extra `--name value` arguments (e.g. `["--requirepass", "pw"]`).
    /// A server started with `--requirepass` is pinged with AUTH only if the argument is given.
    pub fn start_with_args(args: &[&str]) -> RedisServer {
        let dir = TempDir::new("redis");
        let log_path = dir.path().join("redis.log");
        let mut server = RedisServer {
            port: free_port(),
            child: None,
            dir,
            log_path,
            extra_args: args.iter().map(|s| s.to_string()).collect(),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open redis log");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .args(["--enable-debug-command", "yes"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                panic!("redis-server not found: apt-get install redis-server")
            }
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        self.child = Some(child);
        let port = self.port;
        let password = self
            .extra_args
            .iter()
            .position(|a| a == "--requirepass")
            .and_then(|i| self.extra_args.get(i + 1).cloned());
        let mut exited = None;
        let ready = wait_until(START_BOUND, || {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().ok().flatten() {
                exited = Some(status);
                return true;
            }
            redis_ping(port, password.as_deref())
        });
        if let Some(status) = exited {
            self.child = None;
            panic!(
                "redis-server on port {port} exited ({status}) before answering PING; log:\n{}",
                file_tail(&self.log_path, 4000)
            );
        }
        if !ready {
            kill_child(self.child.as_mut().unwrap());
            self.child = None;
            panic!(
                "redis-server on port {port} did not answer PING within {START_BOUND:?}; log:\n{}",
                file_tail(&self.log_path, 4000)
            );
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The pid of the running server (panics if it was killed).
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .expect("redis-server is not running")
            .id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// SIGKILL and reap. The port stops accepting connections.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_child(&mut child);
        }
    }

    /// Kills the server if it runs, then starts a new one (empty) on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGSTOP until the returned guard is dropped.
    pub fn pause(&self) -> Paused {
        Paused::new(self.pid())
    }

    /// A direct redis crate client (sync and async) to this server, db 0.
    pub fn client(&self) -> redis::Client {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)).expect("redis client")
    }

    /// A direct sync connection to db 0, with 10 s read/write timeouts.
    pub fn conn(&self) -> redis::Connection {
        self.conn_db(0)
    }

    /// A direct sync connection to database `db`.
    pub fn conn_db(&self, db: u32) -> redis::Connection {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/{db}", self.port))
            .expect("redis client");
        let conn = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to redis {}: {e}", self.addr()));
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        conn.set_write_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        conn
    }

    /// A raw RESP connection to this server.
    pub fn raw(&self) -> RawConn {
        RawConn::connect(self.socket_addr())
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether a redis-server answers PING (+PONG) on `port` within a short bound.
fn redis_ping(port: u16, password: Option<&str>) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut req = Vec::new();
    if let Some(pw) = password {
        req.extend(encode(&["AUTH", pw]));
    }
    req.extend(encode(&["PING"]));
    if s.write_all(&req).is_err() {
        return false;
    }
    let mut r = BufReader::new(s);
    if password.is_some() && read_reply(&mut r).is_err() {
        return false;
    }
    matches!(read_reply(&mut r), Ok(Resp::Simple(ref p)) if p == "PONG")
}

// ---------------------------------------------------------------------------------------------
// The proxy
// ---------------------------------------------------------------------------------------------

/// The slot ranges the harness assigns to `n` groups: `n` equal contiguous ranges in group
/// order (group 1 gets slot 0), the remainder to the last group. `(first, last, group)`.
pub fn slot_ranges(n: usize) -> Vec<(usize, usize, u32)> {
    assert!(n > 0 && n <= SLOTS, "bad group count {n}");
    let per = SLOTS / n;
    (0..n)
        .map(|i| {
            let first = i * per;
            let last = if i + 1 == n {
                SLOTS - 1
            } else {
                first + per - 1
            };
            (first, last, i as u32 + 1)
        })
        .collect()
}

/// The group (1-based) that owns `slot` under `slot_ranges(n)`.
pub fn group_of_slot(slot: usize, n: usize) -> u32 {
    slot_ranges(n)
        .into_iter()
        .find(|&(a, b, _)| slot >= a && slot <= b)
        .map(|(_, _, g)| g)
        .expect("slot out of range")
}

/// The group (1-based) that owns `key` under `slot_ranges(n)`.
pub fn group_of_key(key: &[u8], n: usize) -> u32 {
    group_of_slot(slot(key), n)
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
        }
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
        match Proxy::start_config(&cfg.text, cfg.listen, cfg.admin, true) {
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
    dir: TempDir,
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
        Proxy::start_config(config_text, listen, admin, names_admin)
    }

    /// Writes the config, runs the proxy, waits for `listen` (and `admin` if `wait_admin`).
    fn start_config(
        text: &str,
        listen: SocketAddr,
        admin: SocketAddr,
        wait_admin: bool,
    ) -> Result<Proxy, ProxyExited> {
        let dir = TempDir::new("proxy");
        let config_path = dir.path().join("tessera.toml");
        fs::write(&config_path, text).expect("write proxy config");
        let args = ["--config".to_string(), config_path.display().to_string()];
        Proxy::launch(dir, config_path, &args, listen, admin, wait_admin)
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
    ) -> Result<Proxy, ProxyExited> {
        let log_path = dir.path().join("proxy.log");
        let log = File::create(&log_path).expect("create proxy log");
        let child = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .arg("proxy")
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", env!("CARGO_BIN_EXE_tessera")));
        let mut proxy = Proxy {
            addr: listen,
            admin,
            child: Some(child),
            dir,
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

// ---------------------------------------------------------------------------------------------
// Codis's slot function, independently
// ---------------------------------------------------------------------------------------------

/// CRC-32/IEEE (zlib's, Go's `crc32.ChecksumIEEE`), bit by bit.
pub fn crc32_ieee(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Codis's hash tag: the bytes between the first `{` and the first `}` after it (possibly
/// empty), else the whole key.
pub fn hashtag(key: &[u8]) -> &[u8] {
    let open = key.iter().position(|&b| b == b'{');
    let tag = open.and_then(|o| {
        let rest = &key[o + 1..];
        rest.iter().position(|&b| b == b'}').map(|len| &rest[..len])
    });
    tag.unwrap_or(key)
}

/// `crc32(hashtag(key)) % 1024`.
pub fn slot(key: &[u8]) -> usize {
    crc32_ieee(hashtag(key)) as usize % SLOTS
}

/// The first key `format!("{prefix}{i}")` (i = 0, 1, ...) that `want` accepts.
pub fn find_key(prefix: &str, want: impl Fn(&[u8]) -> bool) -> String {
    (0..1_000_000)
        .map(|i| format!("{prefix}{i}"))
        .find(|k| want(k.as_bytes()))
        .expect("no key found in 1e6 candidates")
}

// ---------------------------------------------------------------------------------------------
// Raw RESP
// ---------------------------------------------------------------------------------------------

/// A RESP2 reply.
#[derive(Clone, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

impl Resp {
    pub fn ok() -> Resp {
        Resp::Simple("OK".into())
    }
    pub fn simple(s: &str) -> Resp {
        Resp::Simple(s.into())
    }
    pub fn err(s: &str) -> Resp {
        Resp::Error(s.into())
    }
    pub fn bulk(b: impl AsRef<[u8]>) -> Resp {
        Resp::Bulk(Some(b.as_ref().to_vec()))
    }
    pub fn nil() -> Resp {
        Resp::Bulk(None)
    }
    pub fn array(items: Vec<Resp>) -> Resp {
        Resp::Array(Some(items))
    }
    pub fn is_error(&self) -> bool {
        matches!(self, Resp::Error(_))
    }
    /// The error text ("" if not an error).
    pub fn error_text(&self) -> &str {
        match self {
            Resp::Error(e) => e,
            _ => "",
        }
    }
    /// The bytes of a bulk or simple string.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Resp::Bulk(Some(b)) => Some(b),
            Resp::Simple(s) => Some(s.as_bytes()),
            _ => None,
        }
    }
    pub fn int(&self) -> Option<i64> {
        match self {
            Resp::Int(i) => Some(*i),
            _ => None,
        }
    }
    pub fn items(&self) -> Option<&[Resp]> {
        match self {
            Resp::Array(Some(v)) => Some(v),
            _ => None,
        }
    }
}

impl fmt::Debug for Resp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resp::Simple(s) => write!(f, "+{s}"),
            Resp::Error(s) => write!(f, "-{s}"),
            Resp::Int(i) => write!(f, ":{i}"),
            Resp::Bulk(None) => write!(f, "(nil)"),
            Resp::Bulk(Some(b)) if b.len() > 64 => {
                write!(f, "${}:{:?}...", b.len(), String::from_utf8_lossy(&b[..32]))
            }
            Resp::Bulk(Some(b)) => write!(f, "{:?}", String::from_utf8_lossy(b)),
            Resp::Array(None) => write!(f, "(nil array)"),
            Resp::Array(Some(v)) => f.debug_list().entries(v).finish(),
        }
    }
}

/// A command as a RESP array of bulk strings.
pub fn encode<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        let a = a.as_ref();
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn read_line(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let n = r.read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    if !line.ends_with(b"\r\n") {
        return Err(bad(format!(
            "reply line not ended by CRLF: {:?}",
            String::from_utf8_lossy(&line)
        )));
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

fn parse_int(b: &[u8]) -> io::Result<i64> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad integer {:?}", String::from_utf8_lossy(b))))
}

/// Reads one RESP2 reply.
pub fn read_reply(r: &mut impl BufRead) -> io::Result<Resp> {
    let line = read_line(r)?;
    let (&kind, rest) = line
        .split_first()
        .ok_or_else(|| bad("empty reply line".into()))?;
    let text = || String::from_utf8_lossy(rest).into_owned();
    Ok(match kind {
        b'+' => Resp::Simple(text()),
        b'-' => Resp::Error(text()),
        b':' => Resp::Int(parse_int(rest)?),
        b'$' => {
            let len = parse_int(rest)?;
            if len < 0 {
                Resp::Bulk(None)
            } else {
                let mut buf = vec![0u8; len as usize + 2];
                r.read_exact(&mut buf)?;
                if !buf.ends_with(b"\r\n") {
                    return Err(bad("bulk not followed by CRLF".into()));
                }
                buf.truncate(len as usize);
                Resp::Bulk(Some(buf))
            }
        }
        b'*' => {
            let len = parse_int(rest)?;
            if len < 0 {
                Resp::Array(None)
            } else {
                let mut items = Vec::with_capacity(len.min(1 << 16) as usize);
                for _ in 0..len {
                    items.push(read_reply(r)?);
                }
                Resp::Array(Some(items))
            }
        }
        other => {
            return Err(bad(format!(
                "unexpected reply type byte {:?} in {:?}",
                other as char,
                String::from_utf8_lossy(&line)
            )));
        }
    })
}

/// A plain TCP connection speaking RESP, with a 10 s read timeout by default.
pub struct RawConn {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl RawConn {
    pub fn connect(addr: impl ToSocketAddrs + fmt::Debug) -> RawConn {
        let sa = addr
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .unwrap_or_else(|| panic!("bad address {addr:?}"));
        let stream = TcpStream::connect_timeout(&sa, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect {sa}: {e}"));
        stream.set_nodelay(true).ok();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let reader = BufReader::with_capacity(1 << 16, stream.try_clone().unwrap());
        RawConn { stream, reader }
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.stream.set_read_timeout(Some(t)).unwrap();
    }

    /// Writes raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to connection");
    }

    /// Writes raw bytes, reporting failure (the peer may have closed).
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads one reply.
    pub fn read(&mut self) -> io::Result<Resp> {
        read_reply(&mut self.reader)
    }

    /// Sends one command and reads its reply (panics on I/O error).
    pub fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Resp {
        self.send(&encode(args));
        self.read().unwrap_or_else(|e| {
            panic!(
                "no reply to {:?}: {e}",
                args.iter()
                    .map(|a| String::from_utf8_lossy(a.as_ref()).into_owned())
                    .collect::<Vec<_>>()
            )
        })
    }

    /// Whether the peer closes the connection within `bound` (EOF or reset). Any bytes
    /// received meanwhile are discarded. Restores the 10 s read timeout.
    pub fn closed_within(&mut self, bound: Duration) -> bool {
        let deadline = Instant::now() + bound;
        let mut buf = [0u8; 4096];
        let closed = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break false;
            }
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.reader.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break true,
            }
        };
        self.set_read_timeout(Duration::from_secs(10));
        closed
    }

    /// Whether a reply is readable within `bound` (without consuming it beyond the buffer).
    pub fn has_data_within(&mut self, bound: Duration) -> bool {
        if !self.reader.buffer().is_empty() {
            return true;
        }
        self.stream.set_read_timeout(Some(bound)).unwrap();
        let r = self.reader.fill_buf().map(|b| !b.is_empty());
        self.set_read_timeout(Duration::from_secs(10));
        r.unwrap_or(false)
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// A response of `http_get`.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A plain HTTP/1.1 GET (Connection: close), with chunked bodies decoded. Panics on I/O errors.
pub fn http_get(addr: SocketAddr, path: &str) -> HttpResponse {
    http_request(addr, "GET", path, &[], "")
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            break;
        };
        data = &data[eol + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}

/// The value of the Prometheus sample whose name-and-labels text is exactly `series`
/// (e.g. `tessera_commands_total{command="get"}`), if present.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let rest = l.strip_prefix(series)?;
        if !rest.starts_with(' ') {
            return None;
        }
        rest.split_whitespace().next()?.parse().ok()
    })
}

// ---------------------------------------------------------------------------------------------
// Other processes, coordinator-mode proxies, HTTP with a method and a body
// ---------------------------------------------------------------------------------------------

/// Any child process, SIGKILLed by pid and reaped on drop (also when a test panics).
pub struct ChildGuard(Option<Child>);

impl ChildGuard {
    pub fn new(child: Child) -> ChildGuard {
        ChildGuard(Some(child))
    }

    /// The pid (panics once the child was killed).
    pub fn pid(&self) -> u32 {
        self.0.as_ref().expect("the process was killed").id()
    }

    /// The exit status if the child has exited (None while it runs, or after `kill`).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.0.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits (bounded) for the child to exit; None if it still runs after `bound`.
    pub fn wait_exit(&mut self, bound: Duration) -> Option<ExitStatus> {
        self.0.as_mut().and_then(|c| wait_exit(c, bound))
    }

    /// The child itself (for its pipes).
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("the process was killed")
    }

    /// SIGKILL (if still running) and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            kill_child(&mut child);
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
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
        Proxy::launch(dir, config_path, &args, listen, admin, true)
    }
}

/// One HTTP/1.1 request (Connection: close; `Content-Length` added when there is a body),
/// e.g. `http_request(addr, "POST", "/api/groups", &[("Authorization", "Bearer t")], "{}")`.
/// Chunked bodies are decoded. Panics on I/O errors.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpResponse {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).ok();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || !matches!(method, "GET" | "HEAD") {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("Connection: close\r\n\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).expect("write HTTP request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("read HTTP response from {addr}{path}: {e}"));
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no end of headers in {:?}",
                String::from_utf8_lossy(&raw[..raw.len().min(500)])
            )
        });
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// CPU time (utime + stime, in clock ticks) a process has used, from `/proc/<pid>/stat`.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the command name start at field 3 (state); utime is 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second, the unit of [`cpu_ticks`].
pub fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Reads a child's pipe to the end on its own thread, so the child never blocks on it.
/// Runs `cmd` with its output piped, SIGKILLs it past `limit`, and returns its exit status
/// (`None` if it was killed), stdout and stderr.
pub fn run_bounded(
    cmd: &mut std::process::Command,
    limit: Duration,
) -> std::io::Result<(Option<std::process::ExitStatus>, String, String)> {
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let out = reader_thread(child.stdout.take().expect("piped stdout"));
    let err = reader_thread(child.stderr.take().expect("piped stderr"));
    let mut status = None;
    wait_until(limit, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    if status.is_none() {
        signal(child.id(), libc::SIGKILL);
        let _ = child.wait();
    }
    Ok((
        status,
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    ))
}

pub fn reader_thread(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = r.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    })
}

/// The Python interpreter with redis-py that `scripts/install-deps.sh` installs (in
/// `target/py`), or `$TESSERA_PYTHON`; panics with what to run if it is missing.
pub fn python_with_redis_py() -> PathBuf {
    if let Some(p) = std::env::var_os("TESSERA_PYTHON") {
        return p.into();
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/py/bin/python3");
    assert!(
        p.exists(),
        "{} is missing: run scripts/install-deps.sh (it installs redis-py there)",
        p.display()
    );
    p
}

/// Runs `tests/clients/redis_py.py` (redis-py's checks of a proxy) against `addr` with
/// `protocol` (`default` or `2`) and the proxy's `password`; panics if a check fails.
/// Returns what it printed.
pub fn run_redis_py(addr: SocketAddr, protocol: &str, password: Option<&str>) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/redis_py.py");
    let mut cmd = Command::new(python_with_redis_py());
    cmd.arg(&script).arg(addr.port().to_string()).arg(protocol);
    if let Some(p) = password {
        cmd.arg(p);
    }
    let (status, stdout, stderr) =
        run_bounded(&mut cmd, Duration::from_secs(60)).expect("run python with redis-py");
    let text = format!("{stdout}{stderr}");
    assert!(
        status.is_some_and(|s| s.success()),
        "redis-py, protocol {protocol}: {status:?}\n{text}"
    );
    text
}

/// A deterministic generator (xorshift64*), so a failing line is reproduced by the same run.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    /// One of `items`, in any case.
    pub fn case_of(&mut self, items: &[&str]) -> String {
        let word = self.pick(items);
        self.case(word)
    }

    /// `word` in lower, upper or mixed case.
    pub fn case(&mut self, word: &str) -> String {
        match self.below(3) {
            0 => word.to_ascii_lowercase(),
            1 => word.to_ascii_uppercase(),
            _ => word
                .chars()
                .map(|c| {
                    if self.chance(50) {
                        c.to_ascii_uppercase()
                    } else {
                        c.to_ascii_lowercase()
                    }
                })
                .collect(),
        }
    }
}

/// A plugin module of the repository (built by `./plugins/build.sh`, or a test module in
/// `plugins/wat/`), by its path relative to the repository root; panics if it is missing.
pub fn module(rel: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    assert!(
        path.is_file(),
        "plugin module {} is missing: run ./plugins/build.sh first (scripts/test.sh does)",
        path.display()
    );
    path
}
