//! Ports on 127.0.0.1 for the processes a test starts: each handed out once per test process
//! (tests run in parallel threads), and whether something accepts connections on one.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

/// Every port [`free_port`] handed out in this process (tests run in parallel threads: two
/// of them must not get the same port, e.g. one for its etcd and one as an address where
/// nothing listens).
static HANDED_PORTS: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A TCP port on 127.0.0.1 that was free a moment ago and that this process never handed out.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        if HANDED_PORTS.lock().unwrap().insert(port) {
            return port;
        }
    }
    panic!("no free port found in 1000 tries");
}

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

/// Whether something accepts TCP connections on `addr` right now.
pub fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}
