//! The few Redis commands the migrator sends (AUTH, INFO, SELECT, SCAN, MIGRATE), over one
//! RESP2 connection with pipelining: a minimal client, every call bounded in time.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
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

/// The most bytes one reply line or bulk string may have (a SCAN page of keys fits).
const MAX_BULK: usize = 512 << 20;

pub struct RedisConn {
    addr: String,
    stream: BufReader<TcpStream>,
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
            stream: BufReader::new(stream),
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
        let mut out = Vec::new();
        for args in commands {
            encode(&mut out, args);
        }
        let addr = self.addr.clone();
        let work = async {
            self.stream.get_mut().write_all(&out).await?;
            let mut replies = Vec::with_capacity(commands.len());
            for _ in commands {
                replies.push(read_reply(&mut self.stream).await?);
            }
            Ok::<_, std::io::Error>(replies)
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(replies)) => Ok(replies),
            Ok(Err(e)) => Err(io_error(&addr, &e.to_string())),
            Err(_) => Err(io_error(
                &addr,
                &format!("no reply within {} ms", self.timeout.as_millis()),
            )),
        }
    }
}

fn io_error(addr: &str, message: &str) -> RedisError {
    RedisError::Io {
        addr: addr.to_string(),
        message: message.to_string(),
    }
}

/// A command as a RESP array of bulk strings.
fn encode(out: &mut Vec<u8>, args: &[Vec<u8>]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

fn protocol(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string())
}

async fn read_line(r: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    let mut line = Vec::new();
    let n = (&mut *r)
        .take(64 * 1024)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Err(protocol("connection closed"));
    }
    if !line.ends_with(b"\r\n") {
        return Err(protocol("reply line too long or cut"));
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).map_err(|_| protocol("reply line is not UTF-8"))
}

fn read_reply(
    r: &mut BufReader<TcpStream>,
) -> std::pin::Pin<Box<dyn Future<Output = std::io::Result<Reply>> + Send + '_>> {
    Box::pin(async move {
        let line = read_line(r).await?;
        let (kind, rest) = line.split_at(line.len().min(1));
        let int = |s: &str| s.parse::<i64>().map_err(|_| protocol("bad length"));
        Ok(match kind {
            "+" => Reply::Simple(rest.to_string()),
            "-" => Reply::Error(rest.to_string()),
            ":" => Reply::Int(int(rest)?),
            "$" => {
                let len = int(rest)?;
                if len < 0 {
                    return Ok(Reply::Bulk(None));
                }
                let len = len as usize;
                if len > MAX_BULK {
                    return Err(protocol("bulk string too long"));
                }
                let mut buf = vec![0; len + 2];
                r.read_exact(&mut buf).await?;
                buf.truncate(len);
                Reply::Bulk(Some(buf))
            }
            "*" => {
                let len = int(rest)?;
                if len < 0 {
                    return Ok(Reply::Array(None));
                }
                let mut items = Vec::with_capacity((len as usize).min(1024));
                for _ in 0..len {
                    items.push(read_reply(r).await?);
                }
                Reply::Array(Some(items))
            }
            _ => return Err(protocol("unknown reply type")),
        })
    })
}
