//! A RESP2 client of its own for tests that need the bytes on the wire: command encoding,
//! a reply reader, and a raw connection with bounded reads.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// A RESP2 reply.
#[derive(Clone, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

impl Resp {
    pub fn ok() -> Resp {
        Resp::Simple("OK".into())
    }
    pub fn simple(s: &str) -> Resp {
        Resp::Simple(s.into())
    }
    pub fn err(s: &str) -> Resp {
        Resp::Error(s.into())
    }
    pub fn bulk(b: impl AsRef<[u8]>) -> Resp {
        Resp::Bulk(Some(b.as_ref().to_vec()))
    }
    pub fn nil() -> Resp {
        Resp::Bulk(None)
    }
    pub fn array(items: Vec<Resp>) -> Resp {
        Resp::Array(Some(items))
    }
    pub fn is_error(&self) -> bool {
        matches!(self, Resp::Error(_))
    }
    /// The error text ("" if not an error).
    pub fn error_text(&self) -> &str {
        match self {
            Resp::Error(e) => e,
            _ => "",
        }
    }
    /// The bytes of a bulk or simple string.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Resp::Bulk(Some(b)) => Some(b),
            Resp::Simple(s) => Some(s.as_bytes()),
            _ => None,
        }
    }
    pub fn int(&self) -> Option<i64> {
        match self {
            Resp::Int(i) => Some(*i),
            _ => None,
        }
    }
    pub fn items(&self) -> Option<&[Resp]> {
        match self {
            Resp::Array(Some(v)) => Some(v),
            _ => None,
        }
    }
}

impl fmt::Debug for Resp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resp::Simple(s) => write!(f, "+{s}"),
            Resp::Error(s) => write!(f, "-{s}"),
            Resp::Int(i) => write!(f, ":{i}"),
            Resp::Bulk(None) => write!(f, "(nil)"),
            Resp::Bulk(Some(b)) if b.len() > 64 => {
                write!(f, "${}:{:?}...", b.len(), String::from_utf8_lossy(&b[..32]))
            }
            Resp::Bulk(Some(b)) => write!(f, "{:?}", String::from_utf8_lossy(b)),
            Resp::Array(None) => write!(f, "(nil array)"),
            Resp::Array(Some(v)) => f.debug_list().entries(v).finish(),
        }
    }
}

/// A command as a RESP array of bulk strings.
pub fn encode<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        let a = a.as_ref();
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn read_line(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let n = r.read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    if !line.ends_with(b"\r\n") {
        return Err(bad(format!(
            "reply line not ended by CRLF: {:?}",
            String::from_utf8_lossy(&line)
        )));
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

fn parse_int(b: &[u8]) -> io::Result<i64> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad integer {:?}", String::from_utf8_lossy(b))))
}

/// Reads one RESP2 reply.
pub fn read_reply(r: &mut impl BufRead) -> io::Result<Resp> {
    let line = read_line(r)?;
    let (&kind, rest) = line
        .split_first()
        .ok_or_else(|| bad("empty reply line".into()))?;
    let text = || String::from_utf8_lossy(rest).into_owned();
    Ok(match kind {
        b'+' => Resp::Simple(text()),
        b'-' => Resp::Error(text()),
        b':' => Resp::Int(parse_int(rest)?),
        b'$' => {
            let len = parse_int(rest)?;
            if len < 0 {
                Resp::Bulk(None)
            } else {
                let mut buf = vec![0u8; len as usize + 2];
                r.read_exact(&mut buf)?;
                if !buf.ends_with(b"\r\n") {
                    return Err(bad("bulk not followed by CRLF".into()));
                }
                buf.truncate(len as usize);
                Resp::Bulk(Some(buf))
            }
        }
        b'*' => {
            let len = parse_int(rest)?;
            if len < 0 {
                Resp::Array(None)
            } else {
                let mut items = Vec::with_capacity(len.min(1 << 16) as usize);
                for _ in 0..len {
                    items.push(read_reply(r)?);
                }
                Resp::Array(Some(items))
            }
        }
        other => {
            return Err(bad(format!(
                "unexpected reply type byte {:?} in {:?}",
                other as char,
                String::from_utf8_lossy(&line)
            )));
        }
    })
}

/// A plain TCP connection speaking RESP, with a 10 s read timeout by default.
pub struct RawConn {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl RawConn {
    pub fn connect(addr: impl ToSocketAddrs + fmt::Debug) -> RawConn {
        let sa = addr
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .unwrap_or_else(|| panic!("bad address {addr:?}"));
        let stream = TcpStream::connect_timeout(&sa, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect {sa}: {e}"));
        stream.set_nodelay(true).ok();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let reader = BufReader::with_capacity(1 << 16, stream.try_clone().unwrap());
        RawConn { stream, reader }
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.stream.set_read_timeout(Some(t)).unwrap();
    }

    /// Writes raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to connection");
    }

    /// Writes raw bytes, reporting failure (the peer may have closed).
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads one reply.
    pub fn read(&mut self) -> io::Result<Resp> {
        read_reply(&mut self.reader)
    }

    /// Sends one command and reads its reply (panics on I/O error).
    pub fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Resp {
        self.send(&encode(args));
        self.read().unwrap_or_else(|e| {
            panic!(
                "no reply to {:?}: {e}",
                args.iter()
                    .map(|a| String::from_utf8_lossy(a.as_ref()).into_owned())
                    .collect::<Vec<_>>()
            )
        })
    }

    /// Whether the peer closes the connection within `bound` (EOF or reset). Any bytes
    /// received meanwhile are discarded. Restores the 10 s read timeout.
    pub fn closed_within(&mut self, bound: Duration) -> bool {
        let deadline = Instant::now() + bound;
        let mut buf = [0u8; 4096];
        let closed = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break false;
            }
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.reader.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break true,
            }
        };
        self.set_read_timeout(Duration::from_secs(10));
        closed
    }

    /// Whether a reply is readable within `bound` (without consuming it beyond the buffer).
    pub fn has_data_within(&mut self, bound: Duration) -> bool {
        if !self.reader.buffer().is_empty() {
            return true;
        }
        self.stream.set_read_timeout(Some(bound)).unwrap();
        let r = self.reader.fill_buf().map(|b| !b.is_empty());
        self.set_read_timeout(Duration::from_secs(10));
        r.unwrap_or(false)
    }
}
