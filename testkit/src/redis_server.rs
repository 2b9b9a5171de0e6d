//! A real `redis-server` per test: on a free port of 127.0.0.1, without persistence, its
//! data and log in a temp dir, SIGKILLed by pid on drop; with direct clients to it.

use std::fs::{self, File};
use std::io::{self, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::ports::free_port;
use crate::processes::{Paused, START_BOUND, TempDir, file_tail, kill_child, wait_until};
use crate::resp::{RawConn, Resp, encode, read_reply};

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
