//! Commands whose keys may live on several groups, split into one sub-command per backend
//! and merged back into the reply Redis itself would give:
//!
//! ```text
//! MGET key [key ...]                 -> one MGET per backend; values put back in key order
//! MSET key value [key value ...]     -> one MSET per backend; +OK when every part is OK
//! DEL|UNLINK|EXISTS|TOUCH key [...]  -> one per backend; the integer replies added up
//! ```
//!
//! When every key lands on one backend the command is forwarded as it is. The first error
//! reply of any part is the reply of the whole command.

use bytes::{Bytes, BytesMut};

use crate::command::{CommandError, Split};
use crate::resp::{ReplyScanner, encode, parse_int};
use crate::router::{BackendId, SlotTable};
use crate::slot;

pub enum Plan {
    Whole(BackendId),
    Parts(Vec<Part>, Merge),
}

/// The sub-command for one backend: the indices of its arguments in the command (the
/// name, index 0, first), so that splitting copies no argument.
pub struct Part {
    pub backend: BackendId,
    pub args: Vec<u32>,
}

/// How the parts of a split command come back together.
pub struct Merge {
    kind: Split,
    parts: Vec<Option<Bytes>>,
    remaining: usize,
    /// MGET: for each key in request order, its (part, index within the part's reply).
    order: Vec<(u32, u32)>,
}

/// Decides where the keys of a split command go.
pub fn plan(kind: Split, args: &[Bytes], table: &SlotTable) -> Result<Plan, CommandError> {
    let step = match kind {
        Split::Mset => {
            if args.len().is_multiple_of(2) {
                return Err(CommandError::WrongArity("mset"));
            }
            2
        }
        Split::Mget | Split::SumIntegers => 1,
    };
    let keys = args.len() / step;
    let mut parts: Vec<Part> = Vec::with_capacity(2);
    let mut order = Vec::with_capacity(if kind == Split::Mget { keys } else { 0 });
    for i in (1..args.len()).step_by(step) {
        let s = slot::slot(&args[i]);
        let backend = table.route(s).ok_or(CommandError::SlotOffline(s))?;
        let p = match parts.iter().position(|part| part.backend == backend) {
            Some(p) => p,
            None => {
                let mut first = Vec::with_capacity(1 + (args.len() - i));
                first.push(0);
                parts.push(Part {
                    backend,
                    args: first,
                });
                parts.len() - 1
            }
        };
        let part = &mut parts[p].args;
        if kind == Split::Mget {
            order.push((p as u32, part.len() as u32 - 1));
        }
        part.extend((i..i + step).map(|a| a as u32));
    }
    if parts.len() == 1 {
        return Ok(Plan::Whole(parts[0].backend));
    }
    let merge = Merge {
        kind,
        parts: vec![None; parts.len()],
        remaining: parts.len(),
        order,
    };
    Ok(Plan::Parts(parts, merge))
}

impl Merge {
    /// Takes the reply of one part; returns the merged reply once every part is in.
    pub fn add(&mut self, part: usize, reply: Bytes) -> Option<Bytes> {
        if self.parts[part].replace(reply).is_none() {
            self.remaining -= 1;
        }
        if self.remaining > 0 {
            return None;
        }
        let parts = self.parts.iter().flatten();
        if let Some(err) = parts.clone().find(|p| p.first() == Some(&b'-')) {
            return Some(err.clone());
        }
        Some(match self.kind {
            Split::Mset => Bytes::from_static(b"+OK\r\n"),
            Split::SumIntegers => {
                let parts: Vec<&Bytes> = parts.collect();
                sum_integers(&parts).unwrap_or_else(unexpected)
            }
            Split::Mget => self.merge_mget().unwrap_or_else(unexpected),
        })
    }

    fn merge_mget(&self) -> Option<Bytes> {
        let parts = &self.parts;
        // The elements of every part's array reply, part after part; `first[p]` is where
        // part p's begin.
        let mut spans = Vec::with_capacity(self.order.len());
        let mut first = Vec::with_capacity(parts.len() + 1);
        for reply in parts.iter().flatten() {
            first.push(spans.len());
            array_elements(reply, &mut spans)?;
        }
        first.push(spans.len());
        let size: usize = parts.iter().flatten().map(Bytes::len).sum();
        let mut out = BytesMut::with_capacity(size + 16);
        encode::array_header(&mut out, self.order.len());
        for &(p, i) in &self.order {
            let (p, i) = (p as usize, i as usize);
            if first[p] + i >= first[p + 1] {
                return None;
            }
            let (start, end) = spans[first[p] + i];
            out.extend_from_slice(&parts[p].as_ref()?[start..end]);
        }
        Some(out.freeze())
    }
}

/// Appends the places of the elements of an array reply to `spans`.
fn array_elements(reply: &[u8], spans: &mut Vec<(usize, usize)>) -> Option<()> {
    let header_end = reply.windows(2).position(|w| w == b"\r\n")?;
    if reply.first() != Some(&b'*') {
        return None;
    }
    let n = parse_int(&reply[1..header_end])?;
    let mut pos = header_end + 2;
    let mut scanner = ReplyScanner::default();
    for _ in 0..n {
        let len = scanner.scan(&reply[pos..]).ok()??;
        spans.push((pos, pos + len));
        pos += len;
    }
    Some(())
}

/// The values of integer replies; `None` if one is not an integer reply.
pub(super) fn integers(parts: &[&Bytes]) -> Option<Vec<i64>> {
    parts
        .iter()
        .map(|p| {
            p.strip_prefix(b":")
                .and_then(|r| r.strip_suffix(b"\r\n"))
                .and_then(parse_int)
        })
        .collect()
}

/// The integer replies `parts` added up, as one integer reply; `None` if one is not an
/// integer reply or the sum does not fit an i64.
pub(super) fn sum_integers(parts: &[&Bytes]) -> Option<Bytes> {
    integers(parts)?
        .into_iter()
        .try_fold(0i64, i64::checked_add)
        .map(integer_reply)
}

pub(super) fn integer_reply(n: i64) -> Bytes {
    let mut out = BytesMut::with_capacity(24);
    encode::integer(&mut out, n);
    out.freeze()
}

fn unexpected() -> Bytes {
    CommandError::UnexpectedSplitReply.reply()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::router::BackendRegistry;

    fn table() -> SlotTable {
        let config = Config::parse(
            "[[group]]\nid = 1\nservers = [\"a:1\"]\n[[group]]\nid = 2\nservers = [\"b:2\"]\n\
             [[slots]]\nrange = \"0-511\"\ngroup = 1\n[[slots]]\nrange = \"512-1023\"\ngroup = 2\n",
            "t",
        )
        .unwrap();
        SlotTable::from_config(&config, &BackendRegistry::default())
    }

    fn args(a: &[&str]) -> Vec<Bytes> {
        a.iter()
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect()
    }

    #[test]
    fn mget_across_groups_merges_in_key_order() {
        // slot("foo") = 289 (group 1), slot("hello") = 646 (group 2), slot("bar") = 170 (group 1)
        let Ok(Plan::Parts(parts, mut merge)) = plan(
            Split::Mget,
            &args(&["MGET", "foo", "hello", "bar"]),
            &table(),
        ) else {
            panic!("expected a split");
        };
        assert_eq!(parts[0].args, [0, 1, 3]);
        assert_eq!(parts[1].args, [0, 2]);
        assert!(
            merge
                .add(1, Bytes::from_static(b"*1\r\n$5\r\nworld\r\n"))
                .is_none()
        );
        let r = merge
            .add(0, Bytes::from_static(b"*2\r\n$1\r\n1\r\n$-1\r\n"))
            .unwrap();
        assert_eq!(&r[..], b"*3\r\n$1\r\n1\r\n$5\r\nworld\r\n$-1\r\n");
    }

    #[test]
    fn sums_and_errors() {
        let Ok(Plan::Parts(_, mut m)) = plan(
            Split::SumIntegers,
            &args(&["DEL", "foo", "hello"]),
            &table(),
        ) else {
            panic!("expected a split");
        };
        m.add(0, Bytes::from_static(b":1\r\n"));
        assert_eq!(
            &m.add(1, Bytes::from_static(b":1\r\n")).unwrap()[..],
            b":2\r\n"
        );
        let Ok(Plan::Parts(_, mut m)) = plan(
            Split::Mset,
            &args(&["MSET", "foo", "1", "hello", "2"]),
            &table(),
        ) else {
            panic!("expected a split");
        };
        m.add(0, Bytes::from_static(b"-ERR backend x unavailable\r\n"));
        assert_eq!(
            &m.add(1, Bytes::from_static(b"+OK\r\n")).unwrap()[..],
            b"-ERR backend x unavailable\r\n"
        );
    }

    #[test]
    fn one_backend_is_forwarded_whole() {
        assert!(matches!(
            plan(Split::Mget, &args(&["MGET", "foo", "bar"]), &table()),
            Ok(Plan::Whole(_))
        ));
        assert!(plan(Split::Mset, &args(&["MSET", "foo", "1", "bar"]), &table()).is_err());
    }
}
