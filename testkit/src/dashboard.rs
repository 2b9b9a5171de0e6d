//! A `tessera dashboard` process for tests (its log in a temporary directory, SIGKILLed on
//! drop, the log's tail printed if the test panics) and `tessera admin` run against one.

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::http::{HttpResponse, http_request};
use crate::processes::{ChildGuard, START_BOUND, TempDir, file_tail, wait_until};
use crate::proxy::tessera_bin;

/// A running `tessera dashboard`.
pub struct Dashboard {
    child: ChildGuard,
    pub addr: SocketAddr,
    token: String,
    log_path: PathBuf,
    _dir: TempDir,
}

/// A dashboard that exited (or never said it serves) instead of serving.
#[derive(Debug)]
pub struct DashboardExited {
    pub status: Option<ExitStatus>,
    pub log: String,
}

impl Dashboard {
    /// Runs `tessera dashboard` for `product` on the store `coordinator`, listening on
    /// `listen`, with the admin token `token` and a lock TTL of `lock_ttl` seconds, and waits
    /// (bounded) until it says it serves, or exits.
    pub fn start(
        coordinator: &str,
        product: &str,
        listen: SocketAddr,
        token: &str,
        lock_ttl: u64,
    ) -> Result<Dashboard, DashboardExited> {
        let dir = TempDir::new("dashboard");
        let log_path = dir.path().join("dashboard.log");
        let log = File::create(&log_path).expect("create dashboard log");
        let child = Command::new(tessera_bin())
            .arg("dashboard")
            .args(["--coordinator", coordinator, "--product", product])
            .args(["--listen", &listen.to_string()])
            .args(["--admin-token", token])
            .args(["--lock-ttl", &lock_ttl.to_string()])
            .env_remove("TESSERA_ADMIN_TOKEN")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("run tessera dashboard");
        let mut dashboard = Dashboard {
            child: ChildGuard::new(child),
            addr: listen,
            token: token.to_string(),
            log_path,
            _dir: dir,
        };
        let mut exited = None;
        let ready = wait_until(START_BOUND, || {
            if let Some(status) = dashboard.child.try_wait() {
                exited = Some(status);
                return true;
            }
            dashboard.log().contains("dashboard for product")
        });
        if exited.is_some() || !ready {
            dashboard.child.kill();
            return Err(DashboardExited {
                status: exited,
                log: dashboard.log(),
            });
        }
        Ok(dashboard)
    }

    /// Everything it has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGKILLs it (its lock then expires by its TTL).
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// An API call with the admin token and a JSON body.
    pub fn call(&self, method: &str, path: &str, body: &str) -> HttpResponse {
        let auth = format!("Bearer {}", self.token);
        http_request(
            self.addr,
            method,
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body,
        )
    }

    /// `tessera admin ARGS` against it with its token, bounded: (success, stdout, stderr).
    pub fn admin(&self, args: &[&str], bound: Duration) -> (bool, String, String) {
        admin(self.addr, &self.token, args, bound)
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- dashboard {} log (tail) ----\n{}\n----",
                self.addr,
                file_tail(&self.log_path, 4000)
            );
        }
        self.child.kill();
    }
}

/// `tessera admin --dashboard ADDR --token TOKEN ARGS...`, which must exit within `bound`:
/// (success, stdout, stderr).
pub fn admin(
    dashboard: SocketAddr,
    token: &str,
    args: &[&str],
    bound: Duration,
) -> (bool, String, String) {
    let dir = TempDir::new("admin");
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let child = Command::new(tessera_bin())
        .arg("admin")
        .args(["--dashboard", &dashboard.to_string(), "--token", token])
        .args(args)
        .env_remove("TESSERA_DASHBOARD")
        .env_remove("TESSERA_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("create the admin's stdout file"))
        .stderr(File::create(&err_path).expect("create the admin's stderr file"))
        .spawn()
        .expect("run tessera admin");
    let mut child = ChildGuard::new(child);
    let status = child
        .wait_exit(bound)
        .unwrap_or_else(|| panic!("tessera admin {args:?} did not exit within {bound:?}"));
    let read = |p: &PathBuf| std::fs::read_to_string(p).unwrap_or_default();
    (status.success(), read(&out_path), read(&err_path))
}
