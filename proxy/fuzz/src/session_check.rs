//! The properties of a whole client session, in one copy: client bytes go through a real
//! proxy (decoder, command table, plugins' absence, routing, splitting, local commands) to
//! stub backends, and nothing a client sends may panic, break the reply stream, or disturb
//! another session.
//!
//! Included with `#[path]` by the cargo-fuzz target (`fuzz_targets/session.rs`, nightly) and
//! by the stable corpus replay test (`proxy/tests/session_corpus.rs`). [`check`] panics on a
//! violation. For one input:
//!
//! 1. the first byte picks the proxy (no password, or password `pw`); the rest is written to
//!    a fresh connection, whose write side is then closed;
//! 2. no thread of the proxy panics while it is served (a panic hook records them);
//! 3. the proxy answers within a bound and closes: what it wrote is a sequence of whole
//!    RESP replies, no more than one per command (the decoder's count) plus one protocol error;
//! 4. a bystander session on every worker is served afterwards (`PING`, and a `GET` answered
//!    by a stub backend).
//!
//! The stub backends answer every command with a reply chosen from the command's bytes
//! (status, integer, bulk, nil, arrays of several lengths, errors), so split commands are
//! merged from replies Redis would never send as well as ordinary ones.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tessera_proxy::resp::{Limits, ReplyScanner, RequestDecoder};

/// How long one input may take to be answered and closed.
const BOUND: Duration = Duration::from_secs(5);

/// Replies the stub backends choose from.
const STUB_REPLIES: &[&[u8]] = &[
    b"+OK\r\n",
    b":1\r\n",
    b":9223372036854775807\r\n",
    b"$1\r\nv\r\n",
    b"$-1\r\n",
    b"*2\r\n$1\r\na\r\n$-1\r\n",
    b"*1\r\n:5\r\n",
    b"*0\r\n",
    b"*-1\r\n",
    b"-ERR stub\r\n",
    b"*3\r\n*1\r\n+x\r\n$0\r\n\r\n:0\r\n",
];

struct Rig {
    proxies: Vec<(SocketAddr, usize)>,
    panics: &'static Mutex<Vec<String>>,
}

fn rig() -> &'static Rig {
    static RIG: OnceLock<Rig> = OnceLock::new();
    RIG.get_or_init(|| {
        let panics: &'static Mutex<Vec<String>> = Box::leak(Box::default());
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            if thread.name().is_some_and(|n| n.starts_with("tessera-")) {
                panics.lock().unwrap().push(format!("{}: {info}", thread.name().unwrap()));
            }
            previous(info);
        }));
        let stubs = [stub_backend(), stub_backend()];
        let proxies = ["", "pw"]
            .iter()
            .map(|password| {
                let workers = 2;
                let text = format!(
                    "[proxy]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nworkers = {workers}\n\
                     password = \"{password}\"\nmax_bulk_len = 4096\nmax_array_len = 64\n\
                     max_inline_len = 1024\nmax_query_buffer = 65536\n\
                     [backend]\ntimeout_ms = 1000\n\
                     [[group]]\nid = 1\nservers = [\"{}\"]\n\
                     [[group]]\nid = 2\nservers = [\"{}\"]\n\
                     [[slots]]\nrange = \"0-511\"\ngroup = 1\n\
                     [[slots]]\nrange = \"512-1023\"\ngroup = 2\n",
                    stubs[0], stubs[1]
                );
                let config = tessera_proxy::config::Config::parse(&text, "session check")
                    .expect("the session check's config");
                let handle = tessera_proxy::start(config).expect("start a proxy");
                let addr = handle.addr();
                // Serves for the rest of the process.
                std::mem::forget(handle);
                (addr, workers)
            })
            .collect();
        Rig { proxies, panics }
    })
}

/// A backend that answers each command it reads with one of [`STUB_REPLIES`].
fn stub_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a stub backend");
    let addr = listener.local_addr().expect("stub address");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut decoder = RequestDecoder::new(Limits::default());
                let mut buf = BytesMut::with_capacity(4096);
                let mut chunk = [0u8; 4096];
                loop {
                    let n = match conn.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    let mut out = Vec::new();
                    while let Ok(Some(req)) = decoder.decode(&mut buf) {
                        let pick = req
                            .args
                            .iter()
                            .flat_map(|a| a.iter())
                            .fold(0usize, |h, &b| h.wrapping_mul(31).wrapping_add(b as usize));
                        out.extend_from_slice(STUB_REPLIES[pick % STUB_REPLIES.len()]);
                    }
                    if conn.write_all(&out).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr.to_string().parse().expect("an address")
}

/// Runs one input through a session; panics if a property does not hold.
pub fn check(data: &[u8]) {
    let Some((&pick, input)) = data.split_first() else {
        return;
    };
    let rig = rig();
    let (addr, workers) = rig.proxies[pick as usize % rig.proxies.len()];
    rig.panics.lock().unwrap().clear();

    let mut c = TcpStream::connect(addr).expect("connect to the proxy");
    c.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    // The proxy may close early (a protocol error): then the rest is not written.
    let _ = c.write_all(input);
    let _ = c.shutdown(Shutdown::Write);
    let mut out = Vec::new();
    let start = Instant::now();
    let mut chunk = [0u8; 8192];
    loop {
        assert!(
            start.elapsed() < BOUND,
            "the session did not answer and close within {BOUND:?}; {} bytes so far",
            out.len()
        );
        match c.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let panics = std::mem::take(&mut *rig.panics.lock().unwrap());
    assert!(panics.is_empty(), "the proxy panicked: {panics:?}");

    let mut replies = 0;
    let mut scanner = ReplyScanner::default();
    let mut rest = &out[..];
    while !rest.is_empty() {
        match scanner.scan(rest) {
            Ok(Some(n)) => {
                rest = &rest[n..];
                replies += 1;
            }
            other => panic!(
                "the reply stream is not whole RESP replies ({other:?}) at {:?}",
                String::from_utf8_lossy(&rest[..rest.len().min(80)])
            ),
        }
    }
    let commands = count_commands(input);
    assert!(
        replies <= commands + 1,
        "{replies} replies to {commands} commands"
    );

    for _ in 0..workers {
        let mut b = TcpStream::connect(addr).expect("connect a bystander");
        b.set_read_timeout(Some(BOUND)).unwrap();
        let auth: &[u8] = if pick as usize % rig.proxies.len() == 1 {
            b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n"
        } else {
            b""
        };
        b.write_all(auth).unwrap();
        b.write_all(b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
            .unwrap();
        let want = if auth.is_empty() { 2 } else { 3 };
        let mut got = Vec::new();
        while whole_replies(&got) < want {
            let n = b.read(&mut chunk).expect("a bystander is answered");
            assert!(n > 0, "a bystander's connection was closed");
            got.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&got);
        assert!(text.contains("+PONG\r\n"), "bystander: {text:?}");
    }
    let panics = std::mem::take(&mut *rig.panics.lock().unwrap());
    assert!(panics.is_empty(), "the proxy panicked: {panics:?}");
}

/// How many whole replies `bytes` starts with.
fn whole_replies(mut bytes: &[u8]) -> usize {
    let mut n = 0;
    while let Ok(Some(len)) = ReplyScanner::default().scan(bytes) {
        bytes = &bytes[len..];
        n += 1;
    }
    n
}

/// How many requests the proxy's own decoder finds in `input` (up to an error).
fn count_commands(input: &[u8]) -> usize {
    let mut decoder = RequestDecoder::new(Limits {
        max_bulk_len: 4096,
        max_array_len: 64,
        max_inline_len: 1024,
    });
    let mut buf = BytesMut::from(input);
    let mut n = 0;
    while let Ok(Some(_)) = decoder.decode(&mut buf) {
        n += 1;
    }
    n
}
