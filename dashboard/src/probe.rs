//! `GET /api/servers`: each server of each group asked directly (`INFO`), for what the
//! topology does not hold: whether it answers, its own role, its memory and its keys.
//!
//! Every server is asked at once, each bounded by [`PROBE_TIMEOUT`], so one server that
//! does not answer delays the call by that bound and no more.

use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::service::Snapshot;

/// How long one server has to connect and answer `INFO`, and one proxy its admin API
/// (`crate::plugin_stats`).
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(800);
/// An `INFO` reply larger than this is not read (Redis's is a few KiB).
const MAX_INFO: usize = 1 << 20;

/// One server as it answered (or did not).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ServerProbe {
    pub group: u32,
    pub addr: String,
    /// `master` for the group's first server, `replica` for the others (the topology's view).
    pub position: &'static str,
    pub reachable: bool,
    /// What the server says it is (`role:` of `INFO replication`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// `used_memory`, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used_memory: Option<u64>,
    /// Keys in all its databases (`INFO keyspace`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<u64>,
    /// Why it is not reachable, or what it answered instead of `INFO`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Asks every server of the snapshot's groups, in group and server order.
pub async fn probe_servers(snap: &Snapshot) -> Vec<ServerProbe> {
    let password = snap
        .product
        .as_ref()
        .map(|p| p.value.backend_password.clone())
        .unwrap_or_default();
    let asks = snap.groups.values().flat_map(|g| {
        let password = &password;
        g.value.servers.iter().enumerate().map(move |(i, addr)| {
            let (group, addr) = (g.value.id, addr.clone());
            async move {
                let answer = tokio::time::timeout(PROBE_TIMEOUT, info(&addr, password)).await;
                let answer = answer.unwrap_or_else(|_| {
                    Err(format!("no answer within {} ms", PROBE_TIMEOUT.as_millis()))
                });
                let mut probe = ServerProbe {
                    group,
                    position: if i == 0 { "master" } else { "replica" },
                    addr,
                    reachable: answer.is_ok(),
                    role: None,
                    used_memory: None,
                    keys: None,
                    error: None,
                };
                match answer {
                    Ok(text) => read_info(&text, &mut probe),
                    Err(e) => probe.error = Some(e),
                }
                probe
            }
        })
    });
    futures_util::future::join_all(asks).await
}

/// `AUTH` (when the product has a backend password) and `INFO` on a new connection.
async fn info(addr: &str, password: &str) -> Result<String, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let mut conn = BufReader::new(stream);
    let mut line = String::new();
    if !password.is_empty() {
        conn.get_mut()
            .write_all(&command(&[b"AUTH", password.as_bytes()]))
            .await
            .map_err(|e| e.to_string())?;
        read_line(&mut conn, &mut line).await?;
        if !line.starts_with('+') {
            return Err(format!("AUTH: {}", line.trim_start_matches('-')));
        }
    }
    conn.get_mut()
        .write_all(&command(&[b"INFO"]))
        .await
        .map_err(|e| e.to_string())?;
    read_line(&mut conn, &mut line).await?;
    let len = match line.strip_prefix('$').map(str::parse::<usize>) {
        Some(Ok(len)) if len <= MAX_INFO => len,
        _ => return Err(format!("INFO: {}", line.trim_start_matches('-'))),
    };
    let mut body = vec![0; len + 2];
    conn.read_exact(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    body.truncate(len);
    Ok(String::from_utf8_lossy(&body).into_owned())
}

async fn read_line(conn: &mut BufReader<TcpStream>, line: &mut String) -> Result<(), String> {
    line.clear();
    match conn.read_line(line).await {
        Ok(0) => Err("the connection closed".to_string()),
        Ok(_) => {
            line.truncate(line.trim_end().len());
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Fills the role, memory and keys from an `INFO` reply.
fn read_info(text: &str, probe: &mut ServerProbe) {
    let mut keys = 0;
    for line in text.lines() {
        let Some((name, value)) = line.trim_end().split_once(':') else {
            continue;
        };
        match name {
            "role" => probe.role = Some(value.to_string()),
            "used_memory" => probe.used_memory = value.parse().ok(),
            db if db.starts_with("db") => {
                keys += value
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("keys="))
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
            _ => {}
        }
    }
    probe.keys = Some(keys);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields() {
        let mut probe = ServerProbe {
            group: 1,
            addr: "127.0.0.1:6379".into(),
            position: "master",
            reachable: true,
            role: None,
            used_memory: None,
            keys: None,
            error: None,
        };
        let text = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\n\
                    # Replication\r\nrole:master\r\n\
                    # Keyspace\r\ndb0:keys=10,expires=0,avg_ttl=0\r\ndb3:keys=5,expires=1,avg_ttl=9\r\n";
        read_info(text, &mut probe);
        assert_eq!(probe.role.as_deref(), Some("master"));
        assert_eq!(probe.used_memory, Some(1_048_576));
        assert_eq!(probe.keys, Some(15));
    }
}
