//! A real, throw-away etcd for tests: one member on free 127.0.0.1 ports with its data in a
//! temporary directory, stopped by pid and cleaned up on drop (also when a test panics).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::ports::free_port;

/// How long etcd may take to become healthy.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// One running (or stopped) etcd member.
pub struct Etcd {
    child: Option<Child>,
    name: String,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
}

impl Etcd {
    /// Starts etcd on free ports and waits (bounded) until it is healthy. Panics with
    /// etcd's log if it does not come up. Runs `etcd` (Debian `etcd-server`), or `$ETCD_BIN`.
    pub fn start() -> Etcd {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let name = format!("tessera-test-{}-{n}-{nanos}", std::process::id());
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).expect("create etcd temp dir");
        let mut etcd = Etcd {
            child: None,
            name,
            dir,
            client_port: free_port(),
            peer_port: free_port(),
        };
        etcd.spawn();
        etcd
    }

    /// `127.0.0.1:PORT`, the client address.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// `etcd://127.0.0.1:PORT`, a coordinator URL.
    pub fn url(&self) -> String {
        format!("etcd://{}", self.endpoint())
    }

    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The etcd process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills etcd (SIGKILL, by pid) and waits for it to exit. The data directory stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data directory (after [`Etcd::stop`]).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// etcd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    fn spawn(&mut self) {
        let client_url = format!("http://127.0.0.1:{}", self.client_port);
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open etcd log");
        let log_err = log.try_clone().expect("clone etcd log handle");
        let bin = std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".to_string());
        let child = Command::new(&bin)
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(format!("{}={peer_url}", self.name))
            .arg("--initial-cluster-token")
            .arg(&self.name)
            .arg("--initial-cluster-state")
            .arg("new")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {bin:?} (apt-get install etcd-server): {e}"));
        self.child = Some(child);
        if let Err(why) = self.wait_healthy(START_TIMEOUT) {
            let log = self.log();
            self.stop();
            panic!("etcd did not start: {why}\n--- etcd log ---\n{log}");
        }
    }

    /// Polls `GET /health` on the client port until etcd says it is healthy.
    fn wait_healthy(&mut self, limit: Duration) -> Result<(), String> {
        let start = Instant::now();
        let mut last = String::from("not polled");
        while start.elapsed() < limit {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("etcd exited: {status}"));
            }
            match health(self.client_port) {
                Ok(body) if body.contains("\"health\":\"true\"") => return Ok(()),
                Ok(body) => last = format!("unhealthy: {body}"),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("not healthy within {limit:?} ({last})"))
    }
}

/// One `GET /health` (HTTP/1.0, so the server closes the connection after the answer).
fn health(port: u16) -> Result<String, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    Ok(response)
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        remove_dir(&self.dir);
    }
}

fn remove_dir(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}
