//! The systems under test: direct Redis, Tessera (with its default workers, with one worker,
//! and a baseline build), twemproxy.

use super::*;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Sys {
    Direct,
    Tessera,
    /// Tessera with `proxy.workers = 1`.
    TesseraOne,
    /// The build given by `TESSERA_BENCH_BASELINE`, to compare a change against.
    Baseline,
    Twemproxy,
}

impl Sys {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Sys::Direct => "direct",
            Sys::Tessera => "tessera",
            Sys::TesseraOne => "tessera-1w",
            Sys::Baseline => "baseline",
            Sys::Twemproxy => "twemproxy",
        }
    }
}

/// One endpoint redis-benchmark is pointed at, and the pid whose CPU time is charged to it.
pub(crate) struct Endpoint {
    pub(crate) sys: Sys,
    pub(crate) addr: SocketAddr,
    /// The proxy process (None for direct Redis: no proxy CPU to report).
    pub(crate) cpu_pid: Option<u32>,
}

/// `nutcracker` (twemproxy) over the given servers, SIGKILLed by pid on drop (also on panic).
pub(crate) struct Twemproxy {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) dir: TempDir,
}

impl Twemproxy {
    pub(crate) fn start(servers: &[&RedisServer]) -> Result<Twemproxy, String> {
        let dir = TempDir::new("twemproxy");
        let port = free_port();
        let stats_port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut conf = format!(
            "bench:\n  listen: 127.0.0.1:{port}\n  hash: fnv1a_64\n  distribution: ketama\n  \
             redis: true\n  preconnect: true\n  auto_eject_hosts: false\n  servers:\n"
        );
        for (i, s) in servers.iter().enumerate() {
            let _ = writeln!(conf, "   - {}:1 redis{i}", s.addr());
        }
        let conf_path = dir.path().join("nutcracker.yml");
        std::fs::write(&conf_path, conf).map_err(|e| format!("write nutcracker config: {e}"))?;
        let log_path = dir.path().join("nutcracker.log");
        let child = Command::new("nutcracker")
            .arg("-c")
            .arg(&conf_path)
            .args(["-s", &stats_port.to_string(), "-a", "127.0.0.1"])
            .arg("-o")
            .arg(&log_path)
            .arg("-p")
            .arg(dir.path().join("nutcracker.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run nutcracker: {e}"))?;
        let mut tw = Twemproxy { child, addr, dir };
        let mut exited = None;
        let up = wait_until(harness::START_BOUND, || {
            if let Ok(Some(status)) = tw.child.try_wait() {
                exited = Some(status);
                return true;
            }
            accepts(addr)
        });
        if exited.is_some() || !up {
            return Err(format!(
                "nutcracker did not listen on {addr} ({exited:?}); log:\n{}",
                harness::file_tail(&tw.dir.path().join("nutcracker.log"), 2000)
            ));
        }
        Ok(tw)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Twemproxy {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            harness::signal(self.child.id(), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}
