//! INFO through the proxy: the proxy describes itself in the sections it can answer and
//! merges the rest from the groups, in Redis's format and section order.
//!
//! ```text
//! INFO [section [section ...]]   -> every group, as sent; then, in the first group's order:
//!   server, clients, stats        the proxy's own (its version, port, pid, sessions, counts)
//!   keyspace                      every group's dbN lines summed per database
//!   any other section             the first group's, as it answered it
//!   tessera (last)                product, topology revision, groups; with no section
//!                                 named, `default`, `all`, `everything` or `tessera`
//! ```
//!
//! Each group gets the command as sent, so Redis decides which sections a request names
//! (`default`, `all`, `everything`, unknown names) and their order. The reply is a bulk
//! string in RESP2 and a verbatim string (`txt`) in RESP3, as Redis 7 answers.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use bytes::{Bytes, BytesMut};

use super::Session;
use crate::resp::{Protocol, encode, parse_int};

/// The sections the proxy answers itself, rendered when the command was read.
pub struct Info {
    protocol: Protocol,
    /// `(lowercase name, the whole section)` of server, clients and stats.
    own: [(&'static str, String); 3],
    tessera: Option<String>,
}

impl Session {
    /// The proxy's own INFO sections for `INFO args...` now.
    pub(super) fn own_info(&self, args: &[Bytes]) -> Info {
        let shared = &self.worker.shared;
        let stats = &shared.stats;
        let uptime = stats.started.elapsed().as_secs();
        let mut server = String::from("# Server\r\n");
        let _ = write!(
            server,
            "redis_version:{}\r\nredis_mode:standalone\r\ntessera_version:{}\r\n\
             process_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{uptime}\r\n\
             uptime_in_days:{}\r\n",
            super::local::redis_version(shared),
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
            shared.config.proxy.listen.port(),
            uptime / 86_400,
        );
        let clients = format!(
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\n",
            stats.sessions_alive.load(Relaxed),
            shared.config.proxy.max_clients,
        );
        let stats = format!(
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
             rejected_connections:{}\r\ntotal_error_replies:{}\r\n",
            stats.sessions_total.load(Relaxed),
            stats.ops_total(),
            stats.clients_refused.load(Relaxed),
            stats.errors_total(),
        );
        let wants_tessera = args.len() == 1
            || args[1..].iter().any(|a| {
                ["tessera", "default", "all", "everything"]
                    .iter()
                    .any(|s| a.eq_ignore_ascii_case(s.as_bytes()))
            });
        let tessera = wants_tessera.then(|| {
            let table = shared.table.load();
            let product = shared
                .config
                .coordinator
                .as_ref()
                .map_or("", |c| c.product.as_str());
            format!(
                "# Tessera\r\nproduct:{product}\r\nrevision:{}\r\ngroups:{}\r\n",
                table.revision,
                table.groups().count(),
            )
        });
        Info {
            protocol: self.client.protocol,
            own: [("server", server), ("clients", clients), ("stats", stats)],
            tessera,
        }
    }
}

impl Info {
    /// The reply from every group's INFO reply (in group order); `None` if one is not an
    /// INFO text.
    pub fn merge(&self, parts: &[&Bytes]) -> Option<Bytes> {
        let texts = parts
            .iter()
            .map(|p| text_of(p))
            .collect::<Option<Vec<&str>>>()?;
        let mut out = String::new();
        for (name, section) in sections(texts.first()?) {
            let name = name.to_ascii_lowercase();
            if !out.is_empty() {
                out.push_str("\r\n");
            }
            match self.own.iter().find(|(n, _)| *n == name) {
                Some((_, own)) => out.push_str(own),
                None if name == "keyspace" => out.push_str(&keyspace(&texts)?),
                None => {
                    for line in section {
                        out.push_str(line);
                        out.push_str("\r\n");
                    }
                }
            }
        }
        if let Some(tessera) = &self.tessera {
            if !out.is_empty() {
                out.push_str("\r\n");
            }
            out.push_str(tessera);
        }
        let mut reply = BytesMut::with_capacity(out.len() + 16);
        encode::text(&mut reply, self.protocol, out.as_bytes());
        Some(reply.freeze())
    }
}

/// The text of a bulk string or a `txt` verbatim string.
fn text_of(reply: &[u8]) -> Option<&str> {
    let (kind, rest) = reply.split_first()?;
    let end = rest.iter().position(|&b| b == b'\r')?;
    let len = usize::try_from(parse_int(&rest[..end])?).ok()?;
    let body = rest.get(end + 2..end + 2 + len)?;
    let body = match kind {
        b'$' => body,
        b'=' => body.strip_prefix(b"txt:")?,
        _ => return None,
    };
    std::str::from_utf8(body).ok()
}

/// The sections of an INFO text: each one's name (as in its `# Name` header) and lines,
/// the header included.
fn sections(text: &str) -> Vec<(&str, Vec<&str>)> {
    let mut out: Vec<(&str, Vec<&str>)> = Vec::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        match (line.strip_prefix("# "), out.last_mut()) {
            (Some(name), _) => out.push((name, vec![line])),
            (None, Some((_, lines))) => lines.push(line),
            (None, None) => {}
        }
    }
    out
}

/// The keyspace section of every group's INFO summed per database: `keys`, `expires` (and
/// any other count) added, `avg_ttl` the mean of the groups' weighted by their keys with a
/// TTL (Redis's avg_ttl is the mean TTL of the keys that have one).
fn keyspace(texts: &[&str]) -> Option<String> {
    #[derive(Default)]
    struct Db<'a> {
        counts: Vec<(&'a str, u64)>,
        ttl_sum: u128,
    }
    let mut dbs: BTreeMap<u32, Db> = BTreeMap::new();
    for text in texts {
        let Some((_, lines)) = sections(text)
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("keyspace"))
        else {
            continue;
        };
        for line in &lines[1..] {
            let (db, fields) = line.split_once(':')?;
            let db: u32 = db.strip_prefix("db")?.parse().ok()?;
            let entry = dbs.entry(db).or_default();
            let mut fields: Vec<(&str, u64)> = fields
                .split(',')
                .map(|f| {
                    let (k, v) = f.split_once('=')?;
                    Some((k, v.parse().ok()?))
                })
                .collect::<Option<_>>()?;
            let get = |fields: &[(&str, u64)], name| {
                fields.iter().find(|(k, _)| *k == name).map_or(0, |f| f.1)
            };
            let (expires, ttl) = (get(&fields, "expires"), get(&fields, "avg_ttl"));
            entry.ttl_sum += expires as u128 * ttl as u128;
            fields.retain(|(k, _)| *k != "avg_ttl");
            for (k, v) in fields {
                match entry.counts.iter_mut().find(|(n, _)| *n == k) {
                    Some(c) => c.1 += v,
                    None => entry.counts.push((k, v)),
                }
            }
        }
    }
    let mut out = String::from("# Keyspace\r\n");
    for (db, entry) in dbs {
        let _ = write!(out, "db{db}:");
        let expires = entry.counts.iter().find(|(k, _)| *k == "expires");
        let avg_ttl = match expires {
            Some(&(_, e)) if e > 0 => entry.ttl_sum / e as u128,
            _ => 0,
        };
        for (i, (k, v)) in entry.counts.iter().enumerate() {
            let _ = write!(out, "{}{k}={v}", if i > 0 { "," } else { "" });
            if *k == "expires" {
                let _ = write!(out, ",avg_ttl={avg_ttl}");
            }
        }
        out.push_str("\r\n");
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(protocol: Protocol, tessera: bool) -> Info {
        let own = |name: &'static str, title: &str| (name, format!("# {title}\r\nproxy:1\r\n"));
        Info {
            protocol,
            own: [
                own("server", "Server"),
                own("clients", "Clients"),
                own("stats", "Stats"),
            ],
            tessera: tessera.then(|| "# Tessera\r\ngroups:2\r\n".to_string()),
        }
    }

    fn bulk(text: &str) -> Bytes {
        Bytes::from(format!("${}\r\n{text}\r\n", text.len()))
    }

    #[test]
    fn own_sections_replace_the_first_groups_and_the_keyspace_is_summed() {
        let g1 = "# Server\r\nredis_version:7.0.15\r\n\r\n# Memory\r\nused_memory:100\r\n\r\n\
                  # Keyspace\r\ndb0:keys=10,expires=2,avg_ttl=1000\r\ndb3:keys=1,expires=0,avg_ttl=0\r\n";
        let g2 = "# Server\r\nredis_version:7.0.15\r\n\r\n# Memory\r\nused_memory:999\r\n\r\n\
                  # Keyspace\r\ndb0:keys=30,expires=6,avg_ttl=3000\r\ndb1:keys=5,expires=5,avg_ttl=50\r\n";
        let parts = [bulk(g1), bulk(g2)];
        let parts: Vec<&Bytes> = parts.iter().collect();
        let merged = info(Protocol::Resp2, true).merge(&parts).unwrap();
        let want = "# Server\r\nproxy:1\r\n\r\n# Memory\r\nused_memory:100\r\n\r\n\
                    # Keyspace\r\ndb0:keys=40,expires=8,avg_ttl=2500\r\n\
                    db1:keys=5,expires=5,avg_ttl=50\r\ndb3:keys=1,expires=0,avg_ttl=0\r\n\
                    \r\n# Tessera\r\ngroups:2\r\n";
        assert_eq!(merged, bulk(want));
    }

    #[test]
    fn resp3_is_a_verbatim_text_and_no_section_is_empty() {
        let g = "=20\r\ntxt:# Stats\r\nops:5\r\n\r\n";
        let parts = [Bytes::from(g), Bytes::from(g)];
        let parts: Vec<&Bytes> = parts.iter().collect();
        let merged = info(Protocol::Resp3, false).merge(&parts).unwrap();
        assert_eq!(&merged[..], b"=22\r\ntxt:# Stats\r\nproxy:1\r\n\r\n");
        let empty = [bulk(""), bulk("")];
        let empty: Vec<&Bytes> = empty.iter().collect();
        assert_eq!(
            &info(Protocol::Resp2, false).merge(&empty).unwrap()[..],
            b"$0\r\n\r\n"
        );
        assert!(
            info(Protocol::Resp2, false)
                .merge(&[&Bytes::from(":1\r\n")])
                .is_none()
        );
    }
}
