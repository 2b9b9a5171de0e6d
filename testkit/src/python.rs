//! redis-py against a proxy: the Python interpreter `scripts/install-deps.sh` gives it, and
//! the checks of `tests/clients/redis_py.py`, run with a bound.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::processes::run_bounded;
use crate::repo_root;

/// The Python interpreter with redis-py that `scripts/install-deps.sh` installs (in
/// `target/py`), or `$TESSERA_PYTHON`; panics with what to run if it is missing.
pub fn python_with_redis_py() -> PathBuf {
    if let Some(p) = std::env::var_os("TESSERA_PYTHON") {
        return p.into();
    }
    let p = repo_root().join("target/py/bin/python3");
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
    let script = repo_root().join("tests/clients/redis_py.py");
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
