//! `tessera up`: a local cluster (N redis-servers + a proxy) in one command, stopped by
//! SIGTERM / SIGINT with everything it started.

use tessera_testkit as harness;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use harness::*;

/// The `tessera up` process; on drop (a failed test) it gets SIGTERM, then SIGKILL, and any
/// redis-server it started that is still alive is killed by pid.
struct Up {
    child: Child,
    redis_pids: Vec<u32>,
    lines: mpsc::Receiver<String>,
    output: Vec<String>,
    _dir: TempDir,
}

impl Up {
    fn start(dir: TempDir, base: u16, proxy: SocketAddr, admin: SocketAddr, extra: &[&str]) -> Up {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .arg("up")
            .args(extra)
            .args(["--groups", "2"])
            .args(["--redis-port-base", &base.to_string()])
            .arg("--dir")
            .arg(dir.path())
            .args(["--proxy-addr", &proxy.to_string()])
            .args(["--admin-addr", &admin.to_string()])
            .args(["--dashboard-addr", &free_addr().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run tessera up");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(format!("stdout: {line}"));
            }
        });
        std::thread::spawn(move || {
            let mut buf = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut buf);
            for line in buf.lines() {
                let _ = tx2.send(format!("stderr: {line}"));
            }
        });
        Up {
            child,
            redis_pids: Vec::new(),
            lines,
            output: Vec::new(),
            _dir: dir,
        }
    }

    /// Waits (bounded) for a stdout line containing `ready`; returns it.
    fn wait_ready(&mut self, bound: Duration) -> String {
        let deadline = Instant::now() + bound;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left.max(Duration::from_millis(1))) {
                Ok(line) => {
                    self.output.push(line.clone());
                    if let Some(l) = line.strip_prefix("stdout: ")
                        && l.contains("ready")
                    {
                        return l.to_string();
                    }
                }
                Err(_) => {
                    let status = self.child.try_wait().ok().flatten();
                    panic!(
                        "no `ready` line within {bound:?} (exit status {status:?}); output:\n{}",
                        self.output.join("\n")
                    );
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "no `ready` line within {bound:?}; output:\n{}",
                    self.output.join("\n")
                );
            }
        }
    }

    fn output_so_far(&mut self) -> String {
        while let Ok(l) = self.lines.try_recv() {
            self.output.push(l);
        }
        self.output.join("\n")
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal(self.child.id(), libc::SIGTERM);
            if wait_exit(&mut self.child, Duration::from_secs(5)).is_none() {
                signal(self.child.id(), libc::SIGKILL);
                let _ = self.child.wait();
            }
        }
        for &pid in &self.redis_pids {
            if pid_alive(pid) && cmdline(pid).contains("redis-server") {
                signal(pid, libc::SIGKILL);
            }
        }
    }
}

/// `allow_config_set`: run it with `--allow-config-set` (CONFIG SET reaches every redis),
/// else CONFIG SET is refused.
fn run_up_and_stop(sig: libc::c_int, allow_config_set: bool) {
    let base = free_port_pair();
    let proxy_addr = free_addr();
    let admin_addr = free_addr();
    let dir = TempDir::new("up");
    let extra: &[&str] = if allow_config_set {
        &["--allow-config-set"]
    } else {
        &[]
    };
    let mut up = Up::start(dir, base, proxy_addr, admin_addr, extra);
    let ready = up.wait_ready(Duration::from_secs(20));
    assert!(
        ready.contains(&proxy_addr.to_string()),
        "ready line {ready:?} does not name the proxy address {proxy_addr}"
    );
    let redis_addrs: Vec<SocketAddr> = (0..2)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], base + i)))
        .collect();
    for a in &redis_addrs {
        assert!(accepts(*a), "no redis-server on {a} after ready");
    }
    // The redis-servers it started (direct children, or grandchildren through a shell).
    let mut pids = Vec::new();
    let mut frontier = vec![up.child.id()];
    for _ in 0..3 {
        let mut next = Vec::new();
        for p in frontier {
            for c in children_of(p) {
                if cmdline(c).contains("redis-server") {
                    pids.push(c);
                }
                next.push(c);
            }
        }
        frontier = next;
    }
    up.redis_pids = pids.clone();
    assert_eq!(
        pids.len(),
        2,
        "expected 2 redis-server processes under `tessera up` (pid {}), found {pids:?}",
        up.child.id()
    );

    // Served through the printed address.
    let mut c = RawConn::connect(proxy_addr);
    assert_eq!(c.cmd(&["SET", "up:key", "v1"]), Resp::ok());
    assert_eq!(c.cmd(&["GET", "up:key"]), Resp::bulk("v1"));
    // `{}k` hashes the empty string: slot 0, the first redis.
    assert_eq!(slot(b"{}k"), 0);
    assert_eq!(c.cmd(&["SET", "{}k", "slot0"]), Resp::ok());
    let mut first = RawConn::connect(redis_addrs[0]);
    assert_eq!(first.cmd(&["GET", "{}k"]), Resp::bulk("slot0"));
    let mut second = RawConn::connect(redis_addrs[1]);
    assert_eq!(second.cmd(&["GET", "{}k"]), Resp::nil());
    // A key of the last slot lands on the second redis.
    let last = find_key("last:", |k| slot(k) == 1023);
    assert_eq!(c.cmd(&["SET", &last, "x"]), Resp::ok());
    assert_eq!(second.cmd(&["GET", &last]), Resp::bulk("x"));
    assert_eq!(first.cmd(&["GET", &last]), Resp::nil());
    if allow_config_set {
        assert_eq!(c.cmd(&["CONFIG", "SET", "hz", "11"]), Resp::ok());
        for r in [&mut first, &mut second] {
            let hz = r.cmd(&["CONFIG", "GET", "hz"]);
            assert_eq!(hz, Resp::array(vec![Resp::bulk("hz"), Resp::bulk("11")]));
        }
    } else {
        assert_eq!(
            c.cmd(&["CONFIG", "SET", "hz", "11"]),
            Resp::err(
                "ERR CONFIG SET is disabled by the proxy's config (proxy.allow_config_set = false)"
            )
        );
    }
    // redis-py 8 with its defaults (RESP3, HELLO 3 on every connection), and with RESP2.
    for protocol in ["default", "2"] {
        let out = run_redis_py(proxy_addr, protocol, None);
        assert!(out.contains("redis-py ok"), "{out}");
    }
    // The admin API is up too.
    let model = http_get(admin_addr, "/api/model");
    assert_eq!(model.status, 200, "{model:?}");
    drop((c, first, second));

    // Stop it.
    let t = Instant::now();
    assert!(signal(up.child.id(), sig), "signal failed");
    let status = wait_exit(&mut up.child, Duration::from_secs(10));
    let output = up.output_so_far();
    assert!(
        status.is_some(),
        "tessera up still running 10 s after signal {sig}; output:\n{output}"
    );
    let took = t.elapsed();
    let closed = wait_until(Duration::from_secs(2), || {
        redis_addrs.iter().all(|a| !accepts(*a)) && !accepts(proxy_addr)
    });
    for a in &redis_addrs {
        assert!(
            closed && !accepts(*a),
            "redis-server port {a} still accepts after `up` exited ({took:?}); output:\n{output}"
        );
    }
    assert!(!accepts(proxy_addr), "proxy port still accepts");
    for pid in &pids {
        assert!(
            wait_until(Duration::from_secs(2), || !pid_alive(*pid)),
            "redis-server pid {pid} still alive after `up` exited"
        );
    }
}

#[test]
fn up_serves_and_sigterm_stops_everything() {
    run_up_and_stop(libc::SIGTERM, false);
}

#[test]
fn up_sigint_stops_everything() {
    run_up_and_stop(libc::SIGINT, true);
}
