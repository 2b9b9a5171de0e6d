//! Keyless commands over the whole keyspace, sent to the master of every group (in group
//! order) and merged back into one reply, and SCAN, which walks the groups one after another
//! behind one cursor.
//!
//! ```text
//! DBSIZE                      -> every group; the integers summed
//! KEYS pattern                -> every group; the arrays concatenated in group order
//! FLUSHDB [ASYNC|SYNC]        -> every group; +OK when every group says OK
//! FLUSHALL [ASYNC|SYNC]       -> likewise (each can be refused by proxy.allow_flush*)
//! LASTSAVE                    -> every group; the smallest (the oldest save)
//! CONFIG GET pattern [...]    -> the first group (lowest id); its reply as it is
//! CONFIG SET parameter value [...]
//!                             -> every group; +OK when every group says OK
//! CONFIG RESETSTAT            -> likewise (both refused unless proxy.allow_config_set)
//! INFO [section ...]          -> every group; merged with the proxy's own sections (`info`)
//! RANDOMKEY                   -> every group: DBSIZE, RANDOMKEY; the key of a group chosen
//!                                at random weighted by its DBSIZE among those with a key
//! SCRIPT LOAD script, FUNCTION LOAD [REPLACE] code
//!                             -> every group; the sha / library when every group agrees
//! SCRIPT EXISTS sha [...]     -> every group; 1 where every group answers 1
//! SCRIPT FLUSH, FUNCTION DELETE / FLUSH / RESTORE
//!                             -> every group; +OK when every group says OK
//! SCRIPT KILL, FUNCTION KILL  -> every group; +OK when any group says OK
//! FUNCTION LIST / DUMP / STATS
//!                             -> the first group; its reply as it is
//! WAIT numreplicas timeout    -> the groups the session wrote to (all if none); the smallest
//! SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]
//!                             -> one group: SCAN <its cursor> [options as sent]
//! ```
//!
//! The cursor a client sees is `group_index << 53 | group_cursor`: the index of the group in
//! group order in the high bits (at most [`MAX_SCAN_GROUPS`]), that group's own cursor in
//! the low 53 (a Redis cursor is a bucket index of its keyspace's hash table, far below
//! 2^53). So every cursor fits an unsigned and a signed 64-bit integer. A group that answers
//! cursor 0 is done: the client gets the next group's cursor 0, and the last group's 0 is
//! the client's 0.
//!
//! Errors: when every group answers the same error, that is the command's own error (a
//! syntax error, say) and the reply; otherwise the first error in group order is, naming
//! its group (`-ERR group 2: ...`) unless it is the proxy's own
//! `-ERR backend <addr> unavailable ...`, which names the backend. A fan-out never answers
//! with part of the groups' replies.

use bytes::{Bytes, BytesMut};

use crate::command::error::BACKEND_ERROR_PREFIX;
use crate::command::{CommandError, FanOut};
use crate::config::ProxyConfig;
use crate::resp::{encode, parse_int};
use crate::router::{BackendId, SlotTable};

use super::info::Info;
use super::split::{integer_reply, integers, sum_integers};

/// Bits of the client's SCAN cursor that hold the group's own cursor.
const GROUP_CURSOR_BITS: u32 = 53;
/// The most groups one SCAN cursor can walk: the index takes the 10 bits above the
/// group's cursor, which keeps the client's cursor below 2^63.
pub const MAX_SCAN_GROUPS: usize = 1 << 10;
const GROUP_CURSOR_MASK: u64 = (1 << GROUP_CURSOR_BITS) - 1;

/// Where a fan-out command goes: every group's master, in group order (each with its
/// group id), or, for SCAN, one group with the cursor to send it.
pub enum Plan {
    Every(Vec<(u32, BackendId)>, Gather),
    /// Each part its own command (no arguments) to a backend.
    Commands(Vec<(BackendId, &'static str)>, Gather),
    Scan {
        backend: BackendId,
        group_cursor: u64,
        gather: Gather,
    },
}

/// How the replies of a fan-out come back together.
pub struct Gather {
    kind: FanOut,
    /// The group id of each part.
    groups: Vec<u32>,
    parts: Vec<Option<Bytes>>,
    remaining: usize,
    /// SCAN: the index of the group scanned and how many groups there are.
    scan: (usize, usize),
    /// INFO: the proxy's own sections.
    pub info: Option<Box<Info>>,
    /// RANDOMKEY: a random number to choose the group with.
    random: u64,
}

/// Decides where a fan-out command goes, or the error to answer instead.
pub fn plan(
    kind: FanOut,
    args: &[Bytes],
    table: &SlotTable,
    config: &ProxyConfig,
) -> Result<Plan, CommandError> {
    match kind {
        FanOut::Flushdb if !config.allow_flushdb => {
            return Err(CommandError::Disabled {
                command: "FLUSHDB",
                setting: "allow_flushdb",
            });
        }
        FanOut::Flushall if !config.allow_flushall => {
            return Err(CommandError::Disabled {
                command: "FLUSHALL",
                setting: "allow_flushall",
            });
        }
        FanOut::ConfigSet if !config.allow_config_set => {
            return Err(CommandError::Disabled {
                command: "CONFIG SET",
                setting: "allow_config_set",
            });
        }
        FanOut::ConfigResetstat if !config.allow_config_set => {
            return Err(CommandError::Disabled {
                command: "CONFIG RESETSTAT",
                setting: "allow_config_set",
            });
        }
        _ => {}
    }
    let mut groups: Vec<(u32, BackendId)> = table.masters().collect();
    if kind.first_group_only() {
        groups.truncate(1);
    }
    if groups.is_empty() {
        return Err(CommandError::NoGroup);
    }
    if kind == FanOut::Randomkey {
        let parts = groups
            .iter()
            .flat_map(|&(_, b)| [(b, "DBSIZE"), (b, "RANDOMKEY")])
            .collect();
        let ids = groups.iter().flat_map(|g| [g.0, g.0]).collect();
        let mut gather = Gather::new(kind, ids, (0, 0));
        gather.random = random_u64();
        return Ok(Plan::Commands(parts, gather));
    }
    if kind != FanOut::Scan {
        let gather = Gather::new(kind, groups.iter().map(|g| g.0).collect(), (0, 0));
        return Ok(Plan::Every(groups, gather));
    }
    if groups.len() > MAX_SCAN_GROUPS {
        return Err(CommandError::ScanGroups {
            max: MAX_SCAN_GROUPS,
            groups: groups.len(),
        });
    }
    let (index, group_cursor) =
        decode_cursor(&args[1], groups.len()).ok_or(CommandError::InvalidCursor)?;
    let (id, backend) = groups[index];
    Ok(Plan::Scan {
        backend,
        group_cursor,
        gather: Gather::new(kind, vec![id], (index, groups.len())),
    })
}

/// Where WAIT goes: the masters in `written` (every group's if empty), in group order; its
/// timeout must be below `max_ms`, the backend timeout.
pub fn plan_wait(
    args: &[Bytes],
    table: &SlotTable,
    written: &[BackendId],
    max_ms: u64,
) -> Result<Plan, CommandError> {
    if let Some(t) = parse_int(&args[2])
        && (t == 0 || t as u64 >= max_ms)
    {
        return Err(CommandError::WaitTimeout {
            max: max_ms.saturating_sub(1),
        });
    }
    let groups: Vec<(u32, BackendId)> = table
        .masters()
        .filter(|g| written.is_empty() || written.contains(&g.1))
        .collect();
    if groups.is_empty() {
        return Err(CommandError::NoGroup);
    }
    let gather = Gather::new(FanOut::Wait, groups.iter().map(|g| g.0).collect(), (0, 0));
    Ok(Plan::Every(groups, gather))
}

/// The client's cursor as (group index, group cursor); `None` if it is not an unsigned
/// 64-bit decimal or names no group.
fn decode_cursor(cursor: &[u8], groups: usize) -> Option<(usize, u64)> {
    let cursor: u64 = std::str::from_utf8(cursor).ok()?.parse().ok()?;
    let index = (cursor >> GROUP_CURSOR_BITS) as usize;
    (index < groups).then_some((index, cursor & GROUP_CURSOR_MASK))
}

/// The client's cursor for `group_cursor` of the group at `index`; a group's 0 moves on to
/// the next group's start, the last group's 0 is 0.
fn encode_cursor(index: usize, groups: usize, group_cursor: u64) -> Option<u64> {
    if group_cursor > GROUP_CURSOR_MASK {
        return None;
    }
    let index = match group_cursor {
        0 if index + 1 == groups => return Some(0),
        0 => index + 1,
        _ => index,
    };
    Some((index as u64) << GROUP_CURSOR_BITS | group_cursor)
}

impl Gather {
    fn new(kind: FanOut, groups: Vec<u32>, scan: (usize, usize)) -> Gather {
        Gather {
            kind,
            parts: vec![None; groups.len()],
            remaining: groups.len(),
            groups,
            scan,
            info: None,
            random: 0,
        }
    }

    /// Takes the reply of one part; returns the merged reply once every part is in.
    pub fn add(&mut self, part: usize, reply: Bytes) -> Option<Bytes> {
        if self.parts[part].replace(reply).is_none() {
            self.remaining -= 1;
        }
        if self.remaining > 0 {
            return None;
        }
        let parts: Vec<&Bytes> = self.parts.iter().flatten().collect();
        if matches!(self.kind, FanOut::ScriptKill | FanOut::FunctionKill)
            && parts.iter().any(|p| &p[..] == b"+OK\r\n")
        {
            return Some(Bytes::from_static(b"+OK\r\n"));
        }
        if let Some(err) = self.error(&parts) {
            return Some(err);
        }
        let merged = match self.kind {
            FanOut::Dbsize => sum_integers(&parts),
            FanOut::Lastsave => integers(&parts)
                .and_then(|ns| ns.into_iter().min())
                .map(integer_reply),
            FanOut::Keys => concat(&parts),
            FanOut::ConfigGet
            | FanOut::FunctionList
            | FanOut::FunctionDump
            | FanOut::FunctionStats => Some(parts[0].clone()),
            FanOut::ScriptLoad | FanOut::FunctionLoad => return Some(self.agreed(&parts)),
            FanOut::ScriptExists => all_ones(&parts),
            FanOut::Flushdb
            | FanOut::Flushall
            | FanOut::ConfigSet
            | FanOut::ConfigResetstat
            | FanOut::ScriptFlush
            | FanOut::ScriptKill
            | FanOut::FunctionDelete
            | FanOut::FunctionFlush
            | FanOut::FunctionRestore
            | FanOut::FunctionKill => parts
                .iter()
                .all(|p| &p[..] == b"+OK\r\n")
                .then(|| Bytes::from_static(b"+OK\r\n")),
            FanOut::Scan => self.scan_reply(parts[0]),
            FanOut::Info => self.info.as_ref().and_then(|info| info.merge(&parts)),
            FanOut::Randomkey => random_key(&parts, self.random),
            FanOut::Wait => integers(&parts)
                .and_then(|ns| ns.into_iter().min())
                .map(integer_reply),
        };
        Some(merged.unwrap_or_else(|| self.unexpected()))
    }

    /// The reply when any part is an error (see the module doc).
    fn error(&self, parts: &[&Bytes]) -> Option<Bytes> {
        let (i, first) = parts
            .iter()
            .enumerate()
            .find(|(_, p)| p.first() == Some(&b'-'))?;
        if parts.iter().all(|p| p == first) || first.starts_with(BACKEND_ERROR_PREFIX) {
            return Some((*first).clone());
        }
        let text = String::from_utf8_lossy(&first[1..first.len().saturating_sub(2)]);
        let (code, message) = text.split_once(' ').unwrap_or(("ERR", &text));
        let error = CommandError::InGroup {
            code: code.to_string(),
            group: self.groups[i],
            message: message.to_string(),
        };
        Some(error.reply())
    }

    /// SCAN's `[cursor, [elements]]` with the group's cursor replaced by the client's.
    fn scan_reply(&self, reply: &Bytes) -> Option<Bytes> {
        let rest = reply.strip_prefix(b"*2\r\n$")?;
        let len_end = rest.iter().position(|&b| b == b'\r')?;
        let len = usize::try_from(parse_int(&rest[..len_end])?).ok()?;
        let cursor = rest.get(len_end + 2..len_end + 2 + len)?;
        let elements = rest.get(len_end + 2 + len + 2..)?;
        let group_cursor: u64 = std::str::from_utf8(cursor).ok()?.parse().ok()?;
        let (index, groups) = self.scan;
        let cursor = encode_cursor(index, groups, group_cursor)?;
        let mut out = BytesMut::with_capacity(elements.len() + 32);
        encode::array_header(&mut out, 2);
        encode::bulk(&mut out, cursor.to_string().as_bytes());
        out.extend_from_slice(elements);
        Some(out.freeze())
    }

    /// The first group's reply when every group answered the same, else the error naming
    /// the first group that did not.
    fn agreed(&self, parts: &[&Bytes]) -> Bytes {
        match parts.iter().position(|p| p != &parts[0]) {
            None => parts[0].clone(),
            Some(i) => CommandError::Disagree {
                group: self.groups[i],
                first: self.groups[0],
            }
            .reply(),
        }
    }

    fn unexpected(&self) -> Bytes {
        let name = match self.kind {
            FanOut::ConfigGet => "config|get".to_string(),
            FanOut::ConfigSet => "config|set".to_string(),
            FanOut::ConfigResetstat => "config|resetstat".to_string(),
            kind => {
                let name = format!("{kind:?}").to_ascii_lowercase();
                match ["script", "function"].iter().find(|p| name.starts_with(*p)) {
                    Some(p) => format!("{p}|{}", &name[p.len()..]),
                    None => name,
                }
            }
        };
        CommandError::UnexpectedReply(name).reply()
    }
}

/// RANDOMKEY's reply from `[DBSIZE, RANDOMKEY]` of each group: the key of a group chosen
/// with `random`, weighted by its DBSIZE, among the groups that answered a key; any nil when
/// none did. A group that answered a key but counts 0 (it changed in between) weighs 1.
fn random_key(parts: &[&Bytes], random: u64) -> Option<Bytes> {
    let mut candidates = Vec::with_capacity(parts.len() / 2);
    for pair in parts.chunks(2) {
        let [count, key] = pair else { return None };
        let count = u64::try_from(integers(&[count])?[0]).ok()?;
        match key.first() {
            Some(b'$') if !key.starts_with(b"$-1") => candidates.push((count.max(1), *key)),
            Some(b'$' | b'_') => {}
            _ => return None,
        }
    }
    let total: u64 = candidates.iter().map(|c| c.0).sum();
    if total == 0 {
        return Some(parts[1].clone());
    }
    let mut pick = random % total;
    for (weight, key) in candidates {
        if pick < weight {
            return Some(key.clone());
        }
        pick -= weight;
    }
    None
}

/// A random number from the standard library's randomly keyed hasher.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// SCRIPT EXISTS: the integer arrays of every part as one, 1 where every part has 1.
fn all_ones(parts: &[&Bytes]) -> Option<Bytes> {
    let mut merged: Option<Vec<bool>> = None;
    for p in parts {
        let rest = p.strip_prefix(b"*")?;
        let end = rest.iter().position(|&b| b == b'\r')?;
        let n = usize::try_from(parse_int(&rest[..end])?).ok()?;
        let ones: Vec<bool> = rest[end + 2..]
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| match l {
                b":1\r" => Some(true),
                b":0\r" => Some(false),
                _ => None,
            })
            .collect::<Option<_>>()?;
        if ones.len() != n {
            return None;
        }
        merged = Some(match merged {
            None => ones,
            Some(m) if m.len() == n => m.iter().zip(&ones).map(|(a, b)| *a && *b).collect(),
            Some(_) => return None,
        });
    }
    let merged = merged?;
    let mut out = BytesMut::with_capacity(8 + 4 * merged.len());
    encode::array_header(&mut out, merged.len());
    for one in merged {
        encode::integer(&mut out, one as i64);
    }
    Some(out.freeze())
}

/// The arrays of every part as one array: the counts added, the elements as the groups
/// sent them (in the session's protocol already).
fn concat(parts: &[&Bytes]) -> Option<Bytes> {
    let mut total = 0usize;
    let mut bodies = Vec::with_capacity(parts.len());
    for p in parts {
        let rest = p.strip_prefix(b"*")?;
        let end = rest.iter().position(|&b| b == b'\r')?;
        total += usize::try_from(parse_int(&rest[..end])?).ok()?;
        bodies.push(rest.get(end + 2..)?);
    }
    let mut out = BytesMut::with_capacity(bodies.iter().map(|b| b.len()).sum::<usize>() + 16);
    encode::array_header(&mut out, total);
    for b in bodies {
        out.extend_from_slice(b);
    }
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gather(kind: FanOut, groups: usize) -> Gather {
        Gather::new(kind, (1..=groups as u32).collect(), (0, 0))
    }

    fn b(s: &'static [u8]) -> Bytes {
        Bytes::from_static(s)
    }

    #[test]
    fn cursors_round_trip_and_move_on_at_zero() {
        assert_eq!(decode_cursor(b"0", 3), Some((0, 0)));
        let c = encode_cursor(1, 3, 12345).unwrap();
        assert_eq!(decode_cursor(c.to_string().as_bytes(), 3), Some((1, 12345)));
        assert_eq!(encode_cursor(0, 3, 0), Some(1 << 53));
        assert_eq!(encode_cursor(2, 3, 0), Some(0));
        assert_eq!(encode_cursor(0, 3, 1 << 53), None);
        let last = encode_cursor(MAX_SCAN_GROUPS - 1, MAX_SCAN_GROUPS, GROUP_CURSOR_MASK);
        assert!(last.unwrap() <= i64::MAX as u64);
        for bad in [&b"x"[..], b"-1", b"", b"18446744073709551616", b"1.5"] {
            assert_eq!(decode_cursor(bad, 3), None, "{bad:?}");
        }
        assert_eq!(decode_cursor((3u64 << 53).to_string().as_bytes(), 3), None);
        assert_eq!(decode_cursor(u64::MAX.to_string().as_bytes(), 3), None);
    }

    #[test]
    fn merges() {
        let mut g = gather(FanOut::Dbsize, 2);
        assert!(g.add(1, b(b":3\r\n")).is_none());
        assert_eq!(&g.add(0, b(b":4\r\n")).unwrap()[..], b":7\r\n");
        let mut g = gather(FanOut::Lastsave, 2);
        g.add(0, b(b":200\r\n"));
        assert_eq!(&g.add(1, b(b":100\r\n")).unwrap()[..], b":100\r\n");
        let mut g = gather(FanOut::Keys, 3);
        g.add(2, b(b"*0\r\n"));
        g.add(1, b(b"*1\r\n$1\r\nb\r\n"));
        assert_eq!(
            &g.add(0, b(b"*2\r\n$1\r\na\r\n$1\r\nc\r\n")).unwrap()[..],
            b"*3\r\n$1\r\na\r\n$1\r\nc\r\n$1\r\nb\r\n"
        );
    }

    #[test]
    fn config_get_is_the_one_part_and_config_set_needs_every_ok() {
        let mut g = gather(FanOut::ConfigGet, 1);
        let pair = b(b"*2\r\n$2\r\nhz\r\n$2\r\n10\r\n");
        assert_eq!(g.add(0, pair.clone()).unwrap(), pair);
        let mut g = gather(FanOut::ConfigSet, 2);
        g.add(0, b(b"+OK\r\n"));
        assert_eq!(&g.add(1, b(b"+OK\r\n")).unwrap()[..], b"+OK\r\n");
        let mut g = gather(FanOut::ConfigResetstat, 2);
        g.add(0, b(b"+OK\r\n"));
        assert_eq!(
            &g.add(1, b(b":1\r\n")).unwrap()[..],
            b"-ERR unexpected reply from a backend to 'config|resetstat'\r\n"
        );
    }

    #[test]
    fn errors_name_the_group_unless_every_group_agrees() {
        let mut g = gather(FanOut::Keys, 2);
        g.add(0, b(b"*0\r\n"));
        assert_eq!(
            &g.add(1, b(b"-LOADING Redis is loading\r\n")).unwrap()[..],
            b"-LOADING group 2: Redis is loading\r\n"
        );
        let mut g = gather(FanOut::Flushdb, 2);
        g.add(0, b(b"-ERR syntax error\r\n"));
        assert_eq!(
            &g.add(1, b(b"-ERR syntax error\r\n")).unwrap()[..],
            b"-ERR syntax error\r\n"
        );
        let mut g = gather(FanOut::Dbsize, 2);
        g.add(0, b(b":1\r\n"));
        let down = b(b"-ERR backend 127.0.0.1:1 unavailable: refused\r\n");
        assert_eq!(g.add(1, down.clone()).unwrap(), down);
    }

    #[test]
    fn randomkey_picks_a_group_with_a_key_by_weight() {
        let parts = [
            b(b":0\r\n"),
            b(b"$-1\r\n"),
            b(b":3\r\n"),
            b(b"$1\r\na\r\n"),
            b(b":1\r\n"),
            b(b"$1\r\nb\r\n"),
        ];
        let parts: Vec<&Bytes> = parts.iter().collect();
        for (random, want) in [(0, "a"), (2, "a"), (3, "b"), (4, "a"), (7, "b")] {
            let got = random_key(&parts, random).unwrap();
            assert_eq!(got, format!("$1\r\n{want}\r\n").as_bytes(), "{random}");
        }
        let empty = [b(b":0\r\n"), b(b"_\r\n"), b(b":0\r\n"), b(b"_\r\n")];
        let empty: Vec<&Bytes> = empty.iter().collect();
        assert_eq!(&random_key(&empty, 5).unwrap()[..], b"_\r\n");
        let raced = [b(b":0\r\n"), b(b"$1\r\nz\r\n")];
        let raced: Vec<&Bytes> = raced.iter().collect();
        assert_eq!(&random_key(&raced, 9).unwrap()[..], b"$1\r\nz\r\n");
        let mut g = Gather::new(FanOut::Randomkey, vec![1, 1], (0, 0));
        g.add(0, b(b":1\r\n"));
        assert_eq!(
            &g.add(1, b(b"*0\r\n")).unwrap()[..],
            b"-ERR unexpected reply from a backend to 'randomkey'\r\n"
        );
    }

    #[test]
    fn script_and_function_management_merges() {
        let sha = b(b"$40\r\n0123456789012345678901234567890123456789\r\n");
        let mut g = gather(FanOut::ScriptLoad, 2);
        g.add(0, sha.clone());
        assert_eq!(g.add(1, sha.clone()).unwrap(), sha);
        let mut g = gather(FanOut::FunctionLoad, 3);
        g.add(0, b(b"$3\r\nlib\r\n"));
        g.add(1, b(b"$3\r\nlib\r\n"));
        assert_eq!(
            &g.add(2, b(b"$3\r\nbil\r\n")).unwrap()[..],
            b"-ERR group 3 answered differently from group 1\r\n"
        );
        let mut g = gather(FanOut::ScriptExists, 2);
        g.add(0, b(b"*3\r\n:1\r\n:1\r\n:0\r\n"));
        assert_eq!(
            &g.add(1, b(b"*3\r\n:1\r\n:0\r\n:0\r\n")).unwrap()[..],
            b"*3\r\n:1\r\n:0\r\n:0\r\n"
        );
        let mut g = gather(FanOut::ScriptKill, 2);
        g.add(0, b(b"-NOTBUSY No scripts in execution right now.\r\n"));
        assert_eq!(&g.add(1, b(b"+OK\r\n")).unwrap()[..], b"+OK\r\n");
        let mut g = gather(FanOut::FunctionKill, 2);
        let notbusy = b(b"-NOTBUSY No scripts in execution right now.\r\n");
        g.add(0, notbusy.clone());
        assert_eq!(g.add(1, notbusy.clone()).unwrap(), notbusy);
        let mut g = gather(FanOut::FunctionRestore, 2);
        g.add(0, b(b"+OK\r\n"));
        assert_eq!(
            &g.add(1, b(b":1\r\n")).unwrap()[..],
            b"-ERR unexpected reply from a backend to 'function|restore'\r\n"
        );
    }

    #[test]
    fn scan_reply_carries_the_client_cursor() {
        let mut g = Gather::new(FanOut::Scan, vec![7], (1, 3));
        let r = g.add(0, b(b"*2\r\n$2\r\n17\r\n*1\r\n$1\r\nk\r\n")).unwrap();
        let cursor = ((1u64 << 53) | 17).to_string();
        let want = format!("*2\r\n${}\r\n{cursor}\r\n*1\r\n$1\r\nk\r\n", cursor.len());
        assert_eq!(&r[..], want.as_bytes());
        let mut g = Gather::new(FanOut::Scan, vec![7], (2, 3));
        let r = g.add(0, b(b"*2\r\n$1\r\n0\r\n*0\r\n")).unwrap();
        assert_eq!(&r[..], b"*2\r\n$1\r\n0\r\n*0\r\n");
    }
}
