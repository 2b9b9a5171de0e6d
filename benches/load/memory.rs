//! Memory of each proxy: its RSS fresh, after the load runs, then with many idle client
//! connections open and once they are closed; and the file-descriptor limit that bounds how many connections the bench opens.

use super::*;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;

/// Bound of one connect, write or read of the idle connections.
const IO_BOUND: Duration = Duration::from_secs(5);
/// Idle connections opened before their PINGs are answered.
const BATCH: usize = 100;

/// Raises this process's RLIMIT_NOFILE soft limit to its hard limit (the processes it starts
/// afterwards inherit it); returns the soft limit in force.
pub(crate) fn raise_nofile_limit() -> Option<u64> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct they are given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return None;
    }
    if rl.rlim_cur < rl.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: rl.rlim_max,
            rlim_max: rl.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            rl = raised;
        }
    }
    Some(rl.rlim_cur)
}

/// A proxy and its memory figures (or why there are none).
pub(crate) type ProxyMemory = (Sys, Result<Memory, String>);

/// The memory figures of one proxy, VmRSS in KiB.
pub(crate) struct Memory {
    /// Fresh: started, connected to its backends, no client connected.
    pub(crate) fresh_kib: u64,
    /// After every load run, their connections closed (before the idle connections).
    pub(crate) after_kib: u64,
    /// With `opened` idle client connections open.
    pub(crate) idle_kib: u64,
    pub(crate) opened: usize,
    /// Why fewer connections than asked for were opened.
    pub(crate) short: Option<String>,
    /// Once the idle connections are closed again.
    pub(crate) closed_kib: Option<u64>,
}

impl Memory {
    /// KiB per idle connection: (RSS with them − RSS just before) / connections.
    pub(crate) fn kib_per_connection(&self) -> Option<f64> {
        (self.opened > 0)
            .then(|| self.idle_kib.saturating_sub(self.after_kib) as f64 / self.opened as f64)
    }

    /// What a new process would hold with the idle connections: fresh + what they added.
    pub(crate) fn fresh_with_idle_kib(&self) -> u64 {
        self.fresh_kib + self.idle_kib.saturating_sub(self.after_kib)
    }

    /// RSS after the load runs over RSS fresh.
    pub(crate) fn after_ratio(&self) -> f64 {
        self.after_kib as f64 / self.fresh_kib.max(1) as f64
    }
}

/// VmRSS of `pid` in KiB; `Err` if the process is gone.
pub(crate) fn rss(pid: u32) -> Result<u64, String> {
    if !harness::pid_alive(pid) {
        return Err(format!("process {pid} is gone"));
    }
    Ok(harness::rss_kib(pid))
}

fn fd_count(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count())
}

/// Opens `sessions` client connections to `addr` and sends a GET of a key of each of the
/// two groups through each, so that every worker of a proxy (clients are dealt to them in
/// turn) has opened its backend connections.
pub(crate) fn touch_backends(addr: SocketAddr, sessions: usize) -> Result<(), String> {
    let keys: Vec<String> = (1..=2)
        .map(|g| harness::find_key("key:", |k| harness::group_of_key(k, 2) == g))
        .collect();
    let mut conns = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        let mut conn = RawConn::connect(addr);
        for key in &keys {
            conn.send(&harness::encode(&["GET", key.as_str()]));
        }
        conns.push(conn);
    }
    for conn in &mut conns {
        for _ in &keys {
            match conn.read() {
                Ok(Resp::Error(e)) => return Err(format!("GET answers -{e}")),
                Ok(_) => {}
                Err(e) => return Err(format!("GET got no reply: {e}")),
            }
        }
    }
    Ok(())
}

/// Opens up to `n` client connections to `addr`, each sending PING and reading +PONG, and
/// returns them open; stops at the first failure and says what failed.
pub(crate) fn open_idle(addr: SocketAddr, n: usize) -> (Vec<TcpStream>, Option<String>) {
    let ping = harness::encode(&["PING"]);
    let mut open = Vec::with_capacity(n);
    while open.len() < n {
        let mut batch = Vec::with_capacity(BATCH);
        let mut failed = None;
        for _ in 0..BATCH.min(n - open.len()) {
            let conn = TcpStream::connect_timeout(&addr, IO_BOUND).and_then(|mut s| {
                s.set_read_timeout(Some(IO_BOUND))?;
                s.set_write_timeout(Some(IO_BOUND))?;
                s.write_all(&ping)?;
                Ok(s)
            });
            match conn {
                Ok(s) => batch.push(s),
                Err(e) => {
                    failed = Some(format!(
                        "connection {} failed: {e}",
                        open.len() + batch.len() + 1
                    ));
                    break;
                }
            }
        }
        for mut s in batch {
            let mut reply = [0u8; 7];
            match s.read_exact(&mut reply) {
                Ok(()) if &reply == b"+PONG\r\n" => open.push(s),
                Ok(()) => {
                    let mut rest = [0u8; 128];
                    let n = s.read(&mut rest).unwrap_or(0);
                    failed = Some(format!(
                        "connection {} got {:?} to PING",
                        open.len() + 1,
                        String::from_utf8_lossy(&[&reply[..], &rest[..n]].concat())
                    ));
                    break;
                }
                Err(e) => {
                    failed = Some(format!("connection {}: no PONG: {e}", open.len() + 1));
                    break;
                }
            }
        }
        if failed.is_some() {
            return (open, failed);
        }
    }
    (open, None)
}

/// The fresh and idle-connection figures of the proxy of `ep`: connects it to its backends,
/// reads its RSS, opens `connections` idle connections, reads it again, closes them and
/// waits (bounded) until the proxy has closed its side.
pub(crate) fn measure_fresh(ep: &Endpoint, pid: u32, sessions: usize) -> Result<u64, String> {
    touch_backends(ep.addr, sessions)?;
    rss(pid)
}

/// Once the load runs are over: RSS now, then with `connections` idle client connections
/// open, then once they are closed again.
pub(crate) fn measure_idle(
    ep: &Endpoint,
    pid: u32,
    connections: usize,
    fresh_kib: u64,
) -> Result<Memory, String> {
    let fds_before = fd_count(pid);
    let settle = |what: &str| {
        // Its sessions end when it reads the close.
        if let Some(before) = fds_before
            && !wait_until(Duration::from_secs(30), || {
                fd_count(pid).is_some_and(|n| n <= before + 8)
            })
        {
            println!(
                "  memory {}: still {:?} descriptors open 30 s after {what} (before: {before})",
                ep.sys.label(),
                fd_count(pid)
            );
        }
    };
    let after_kib = rss(pid)?;
    let (conns, short) = open_idle(ep.addr, connections);
    let idle_kib = rss(pid)?;
    let opened = conns.len();
    drop(conns);
    settle("closing the idle connections");
    Ok(Memory {
        fresh_kib,
        after_kib,
        idle_kib,
        opened,
        short,
        closed_kib: rss(pid).ok(),
    })
}
