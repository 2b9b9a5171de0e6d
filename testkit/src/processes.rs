//! The processes a test starts and watches: temp dirs, children killed by pid on drop,
//! bounded waits, signals, pausing and CPU starving, and what /proc says about a pid.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a process may take to become ready before the kit gives up.
pub const START_BOUND: Duration = Duration::from_secs(10);

/// Polling interval of every `wait_until`.
const POLL: Duration = Duration::from_millis(20);

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
pub(crate) fn kill_child(child: &mut Child) {
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

/// Runs `cmd` with its output piped, SIGKILLs it past `limit`, and returns its exit status
/// (`None` if it was killed), stdout and stderr.
pub fn run_bounded(
    cmd: &mut Command,
    limit: Duration,
) -> std::io::Result<(Option<ExitStatus>, String, String)> {
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

/// Reads a child's pipe to the end on its own thread, so the child never blocks on it.
pub fn reader_thread(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = r.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    })
}
