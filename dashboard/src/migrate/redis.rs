//! The few Redis commands the migrator sends (AUTH, INFO, SELECT, SCAN, MIGRATE), over one
//! RESP2 connection with pipelining: a minimal client, every call bounded in time. Commands
//! are written and replies framed by tessera-protocol's RESP code (`encode::command`,
//! `ReplyScanner`); only turning a framed reply into a [`Reply`] is here.

use std::time::Duration;

use bytes::BytesMut;
use tessera_protocol::resp::{ReplyScanner, encode, parse_int};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A reply, as much of RESP2 as these commands answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis {addr}: {message}")]
    Io { addr: String, message: String },
    #[error("redis {addr} answered {command}: {message}")]
    Reply {
        addr: String,
        command: String,
        message: String,
    },
}

/// The most bytes one reply may have (a SCAN page of keys fits).
const MAX_REPLY: usize = 512 << 20;

/// How deep a reply's arrays may nest (the replies these commands get nest two deep).
const MAX_DEPTH: usize = 8;

pub struct RedisConn {
    addr: String,
    stream: TcpStream,
    /// Read but not yet taken as replies.
    buf: BytesMut,
    scanner: ReplyScanner,
    timeout: Duration,
}

impl RedisConn {
    /// Connects (bounded by `timeout`, as every later call is) and authenticates with
    /// `password` when it is not empty.
    pub async fn connect(
        addr: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<RedisConn, RedisError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| io_error(addr, "connect timed out"))?
            .map_err(|e| io_error(addr, &e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let mut conn = RedisConn {
            addr: addr.to_string(),
            stream,
            buf: BytesMut::new(),
            scanner: ReplyScanner::default(),
            timeout,
        };
        if !password.is_empty() {
            conn.call(&[b"AUTH".as_slice(), password.as_bytes()])
                .await?;
        }
        Ok(conn)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// One command; an error reply is an `Err` naming the command.
    pub async fn call(&mut self, args: &[&[u8]]) -> Result<Reply, RedisError> {
        let command: Vec<Vec<u8>> = args.iter().map(|a| a.to_vec()).collect();
        let mut replies = self.pipeline(&[command]).await?;
        let reply = replies.pop().expect("one reply per command");
        match reply {
            Reply::Error(message) => Err(RedisError::Reply {
                addr: self.addr.clone(),
                command: String::from_utf8_lossy(args[0]).into_owned(),
                message,
            }),
            reply => Ok(reply),
        }
    }

    /// Several commands written at once, their replies in order (error replies included).
    pub async fn pipeline(&mut self, commands: &[Vec<Vec<u8>>]) -> Result<Vec<Reply>, RedisError> {
        self.pipeline_within(commands, self.timeout).await
    }

    /// [`Self::pipeline`], all of it bounded by `timeout` instead of the connection's bound.
    pub async fn pipeline_within(
        &mut self,
        commands: &[Vec<Vec<u8>>],
        timeout: Duration,
    ) -> Result<Vec<Reply>, RedisError> {
        let mut out = BytesMut::new();
        for args in commands {
            encode::command(&mut out, args);
        }
        let addr = self.addr.clone();
        let work = async {
            self.stream.write_all(&out).await?;
            let mut replies = Vec::with_capacity(commands.len());
            for _ in commands {
                replies.push(self.read_reply().await?);
            }
            Ok::<_, std::io::Error>(replies)
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(Ok(replies)) => Ok(replies),
            Ok(Err(e)) => Err(io_error(&addr, &e.to_string())),
            Err(_) => Err(io_error(
                &addr,
                &format!("no reply within {} ms", timeout.as_millis()),
            )),
        }
    }

    /// Reads until the scanner frames one whole reply, and takes it off the buffer.
    async fn read_reply(&mut self) -> std::io::Result<Reply> {
        loop {
            let framed = self
                .scanner
                .scan(&self.buf)
                .map_err(|e| protocol(&e.to_string()))?;
            if let Some(n) = framed {
                let bytes = self.buf.split_to(n);
                let mut pos = 0;
                return parse(&bytes, &mut pos, 0);
            }
            if self.buf.len() > MAX_REPLY {
                return Err(protocol("reply too long"));
            }
            self.buf.reserve(16 * 1024);
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(protocol("connection closed"));
            }
        }
    }
}

fn io_error(addr: &str, message: &str) -> RedisError {
    RedisError::Io {
        addr: addr.to_string(),
        message: message.to_string(),
    }
}

fn protocol(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string())
}

/// The reply at `*pos` of `buf`, a whole reply the scanner framed (so every line has its
/// CRLF and every bulk string its bytes); moves `*pos` past it.
fn parse(buf: &[u8], pos: &mut usize, depth: usize) -> std::io::Result<Reply> {
    let start = *pos;
    let eol = start
        + buf[start..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| protocol("reply cut"))?;
    let line = &buf[start + 1..eol];
    *pos = eol + 2;
    let text =
        |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| protocol("reply line is not UTF-8"));
    let int = |b: &[u8]| parse_int(b).ok_or_else(|| protocol("bad length"));
    Ok(match buf[start] {
        b'+' => Reply::Simple(text(line)?),
        b'-' => Reply::Error(text(line)?),
        b':' => Reply::Int(int(line)?),
        b'$' => match usize::try_from(int(line)?) {
            Err(_) => Reply::Bulk(None),
            Ok(len) => {
                let body = buf[*pos..*pos + len].to_vec();
                *pos += len + 2;
                Reply::Bulk(Some(body))
            }
        },
        b'*' => match usize::try_from(int(line)?) {
            Err(_) => Reply::Array(None),
            Ok(_) if depth == MAX_DEPTH => return Err(protocol("reply nested too deep")),
            Ok(len) => {
                let mut items = Vec::with_capacity(len.min(1024));
                for _ in 0..len {
                    items.push(parse(buf, pos, depth + 1)?);
                }
                Reply::Array(Some(items))
            }
        },
        _ => return Err(protocol("unknown reply type")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(bytes: &[u8]) -> std::io::Result<Reply> {
        let mut scanner = ReplyScanner::default();
        let n = scanner
            .scan(bytes)
            .expect("well formed")
            .expect("a whole reply");
        assert_eq!(n, bytes.len(), "one reply");
        parse(bytes, &mut 0, 0)
    }

    #[test]
    fn a_scan_page_parses_to_its_cursor_and_keys() {
        let reply = parse_all(b"*2\r\n$2\r\n17\r\n*3\r\n$1\r\na\r\n$-1\r\n$0\r\n\r\n").unwrap();
        let bulk = |b: &[u8]| Reply::Bulk(Some(b.to_vec()));
        assert_eq!(
            reply,
            Reply::Array(Some(vec![
                bulk(b"17"),
                Reply::Array(Some(vec![bulk(b"a"), Reply::Bulk(None), bulk(b"")])),
            ]))
        );
    }

    #[test]
    fn simple_error_and_integer_replies_parse() {
        assert_eq!(parse_all(b"+OK\r\n").unwrap(), Reply::Simple("OK".into()));
        assert_eq!(
            parse_all(b"-IOERR error or timeout\r\n").unwrap(),
            Reply::Error("IOERR error or timeout".into())
        );
        assert_eq!(parse_all(b":-3\r\n").unwrap(), Reply::Int(-3));
        assert_eq!(parse_all(b"*-1\r\n").unwrap(), Reply::Array(None));
    }

    #[test]
    fn replies_nested_deeper_than_redis_sends_are_refused() {
        let deep = format!("{}:1\r\n", "*1\r\n".repeat(MAX_DEPTH + 1));
        let err = parse_all(deep.as_bytes()).unwrap_err();
        assert_eq!(err.to_string(), "reply nested too deep");
    }
}
