//! Memory of each proxy: its RSS fresh, with many idle client connections open, and after
//! the load runs; and the file-descriptor limit that bounds how many connections the bench opens.

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
    /// With `opened` idle client connections open.
    pub(crate) idle_kib: u64,
    pub(crate) opened: usize,
    /// Why fewer connections than asked for were opened.
    pub(crate) short: Option<String>,
    /// At the end of the bench, after every load run, its connections closed.
    pub(crate) after_kib: Option<u64>,
}

impl Memory {
    /// KiB per idle connection: (RSS with them − RSS fresh) / connections.
    pub(crate) fn kib_per_connection(&self) -> Option<f64> {
        (self.opened > 0)
            .then(|| self.idle_kib.saturating_sub(self.fresh_kib) as f64 / self.opened as f64)
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
pub(crate) fn measure_idle(
    ep: &Endpoint,
    pid: u32,
    connections: usize,
    sessions: usize,
) -> Result<Memory, String> {
    touch_backends(ep.addr, sessions)?;
    let fds_fresh = fd_count(pid);
    let fresh_kib = rss(pid)?;
    let (conns, short) = open_idle(ep.addr, connections);
    let idle_kib = rss(pid)?;
    let opened = conns.len();
    drop(conns);
    // Its sessions end when it reads the close; the runs that follow need its client slots.
    if let Some(fresh) = fds_fresh
        && !wait_until(Duration::from_secs(30), || {
            fd_count(pid).is_some_and(|n| n <= fresh + 8)
        })
    {
        println!(
            "  memory {}: still {:?} descriptors open 30 s after closing (fresh: {fresh})",
            ep.sys.label(),
            fd_count(pid)
        );
    }
    Ok(Memory {
        fresh_kib,
        idle_kib,
        opened,
        short,
        after_kib: None,
    })
}
