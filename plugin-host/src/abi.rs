//! The plugin ABI's byte formats (docs/plugin-abi.md): the context and command the host
//! writes into a plugin's memory, and the verdict it reads back.

use bytes::Bytes;

use tessera_protocol::resp::{Limits, ReplyScanner};

/// Most attributes one verdict may set, and most attributes a connection may hold.
pub const MAX_ATTRS: usize = 64;
/// Most bytes of the keys and values of those attributes.
pub const MAX_ATTR_BYTES: usize = 4096;

/// Why a plugin's output is malformed (the host treats it like a trap).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AbiError {
    #[error("verdict truncated at byte {0}")]
    Truncated(usize),
    #[error("verdict string is not UTF-8")]
    NotUtf8,
    #[error("rewrite to an empty command")]
    EmptyRewrite,
    #[error("rewrite to {n} arguments; at most {max}")]
    TooManyArguments { n: usize, max: usize },
    #[error("rewrite to an argument of {len} bytes; at most {max}")]
    ArgumentTooLong { len: usize, max: usize },
    #[error("reply is not one complete RESP value")]
    NotOneValue,
    #[error("unknown verdict kind {0}")]
    UnknownKind(u8),
    #[error("asked the host to remember a rewrite")]
    RememberedRewrite,
    /// `whose` says whose attributes they are: `set` (a verdict's), `would give the
    /// connection` (the connection's with a verdict's).
    #[error("{whose} {n} attributes; at most {MAX_ATTRS}")]
    TooManyAttributes { whose: &'static str, n: usize },
    #[error("{whose} {bytes} bytes of attributes; at most {MAX_ATTR_BYTES}")]
    AttributesTooLarge { whose: &'static str, bytes: usize },
    #[error("{0} bytes after the verdict")]
    AfterVerdict(usize),
    #[error("decided {k} of the {n} commands it was given")]
    Decided { k: usize, n: usize },
    #[error("{0} bytes after the verdicts")]
    AfterVerdicts(usize),
}

/// `Err` if `attrs` are more than [`MAX_ATTRS`] or [`MAX_ATTR_BYTES`] allow; `whose` says
/// whose attributes they are, for the message.
pub fn check_attrs(attrs: &[(String, String)], whose: &'static str) -> Result<(), AbiError> {
    if attrs.len() > MAX_ATTRS {
        return Err(AbiError::TooManyAttributes {
            whose,
            n: attrs.len(),
        });
    }
    let bytes: usize = attrs.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_ATTR_BYTES {
        return Err(AbiError::AttributesTooLarge { whose, bytes });
    }
    Ok(())
}

/// What a hook is told about the connection.
pub struct CallContext<'a> {
    pub conn_id: u64,
    pub db: u32,
    pub peer: &'a str,
    pub attrs: &'a [(String, String)],
    /// The protocol of the session's replies (HELLO): 2 or 3.
    pub protocol: u8,
}

impl CallContext<'_> {
    fn user(&self) -> &str {
        self.attrs
            .iter()
            .find(|(k, _)| k == "user")
            .map_or("", |(_, v)| v)
    }
}

/// What a hook decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Continue,
    Rewrite(Vec<Bytes>),
    /// A complete RESP value.
    Reply(Bytes),
    /// An error message, sent as `-<message>`.
    Reject(String),
    /// Put this prefix in front of every key argument.
    PrefixKeys(Bytes),
}

/// The kind byte's flag asking the host to remember a verdict.
const REMEMBER: u8 = 0x80;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    /// Connection attributes to set (an empty value removes one).
    pub attrs: Vec<(String, String)>,
    /// The plugin asked the host to remember the verdict: with these key prefixes as the
    /// condition (none: no condition).
    pub remember: Option<Vec<Bytes>>,
}

impl Verdict {
    pub const CONTINUE: Verdict = Verdict {
        decision: Decision::Continue,
        attrs: Vec::new(),
        remember: None,
    };
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// `with_protocol`: the module asked for the session's protocol (`tessera_context_protocol`),
/// one byte after the attributes.
pub fn encode_context(out: &mut Vec<u8>, ctx: &CallContext, with_protocol: bool) {
    out.extend_from_slice(&ctx.conn_id.to_le_bytes());
    out.extend_from_slice(&ctx.db.to_le_bytes());
    put_bytes(out, ctx.peer.as_bytes());
    put_bytes(out, ctx.user().as_bytes());
    out.extend_from_slice(&(ctx.attrs.len() as u32).to_le_bytes());
    for (k, v) in ctx.attrs {
        put_bytes(out, k.as_bytes());
        put_bytes(out, v.as_bytes());
    }
    if with_protocol {
        out.push(ctx.protocol);
    }
}

/// `keys` are the indices of the key arguments, ascending (an index may repeat).
pub fn encode_command(out: &mut Vec<u8>, args: &[Bytes], keys: &[usize]) {
    out.extend_from_slice(&(args.len() as u32).to_le_bytes());
    debug_assert!(keys.is_sorted(), "key positions out of order: {keys:?}");
    let mut keys = keys.iter().peekable();
    for (i, a) in args.iter().enumerate() {
        while keys.next_if(|&&k| k < i).is_some() {}
        out.push(keys.peek().is_some_and(|&&k| k == i) as u8);
        put_bytes(out, a);
    }
}

/// The bytes [`encode_command`] writes for `args`.
pub fn command_len(args: &[Bytes]) -> usize {
    4 + args.iter().map(|a| 5 + a.len()).sum::<usize>()
}

pub fn encode_reply(out: &mut Vec<u8>, reply: &[u8]) {
    put_bytes(out, reply);
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], AbiError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or(AbiError::Truncated(self.pos))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, AbiError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, AbiError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn bytes(&mut self) -> Result<&'a [u8], AbiError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, AbiError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| AbiError::NotUtf8)
    }
}

/// Reads a verdict; anything malformed is an error (treated like a trap by the host). An
/// argument of a rewrite equal to the argument at the same index of `previous` (the command
/// the plugin was given) shares its bytes instead of being copied: a plugin that changes a
/// key sends the whole command back. A rewrite is held to the bounds of a client's command
/// (`limits`), attributes to [`MAX_ATTRS`] and [`MAX_ATTR_BYTES`].
pub fn decode_verdict(
    buf: &[u8],
    previous: &[Bytes],
    limits: &Limits,
) -> Result<Verdict, AbiError> {
    if buf.is_empty() {
        return Ok(Verdict::CONTINUE);
    }
    let mut r = Reader { buf, pos: 0 };
    let kind = r.u8()?;
    let remember = if kind & REMEMBER != 0 {
        let n = r.u32()? as usize;
        let mut prefixes = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            prefixes.push(Bytes::copy_from_slice(r.bytes()?));
        }
        Some(prefixes)
    } else {
        None
    };
    let decision = match kind & !REMEMBER {
        0 => Decision::Continue,
        1 => {
            let n = r.u32()? as usize;
            if n == 0 {
                return Err(AbiError::EmptyRewrite);
            }
            if n > limits.max_array_len {
                return Err(AbiError::TooManyArguments {
                    n,
                    max: limits.max_array_len,
                });
            }
            let mut args = Vec::with_capacity(n.min(1024));
            for i in 0..n {
                let arg = r.bytes()?;
                if arg.len() > limits.max_bulk_len {
                    return Err(AbiError::ArgumentTooLong {
                        len: arg.len(),
                        max: limits.max_bulk_len,
                    });
                }
                args.push(match previous.get(i) {
                    Some(same) if same[..] == *arg => same.clone(),
                    _ => Bytes::copy_from_slice(arg),
                });
            }
            Decision::Rewrite(args)
        }
        2 => {
            let resp = r.bytes()?;
            let mut scanner = ReplyScanner::default();
            match scanner.scan(resp) {
                Ok(Some(n)) if n == resp.len() => Decision::Reply(Bytes::copy_from_slice(resp)),
                _ => return Err(AbiError::NotOneValue),
            }
        }
        3 => Decision::Reject(r.string()?),
        4 => Decision::PrefixKeys(Bytes::copy_from_slice(r.bytes()?)),
        _ => return Err(AbiError::UnknownKind(kind)),
    };
    if remember.is_some() && matches!(decision, Decision::Rewrite(_)) {
        return Err(AbiError::RememberedRewrite);
    }
    let n = r.u32()? as usize;
    if n > MAX_ATTRS {
        return Err(AbiError::TooManyAttributes { whose: "set", n });
    }
    let mut attrs = Vec::with_capacity(n);
    for _ in 0..n {
        attrs.push((r.string()?, r.string()?));
    }
    check_attrs(&attrs, "set")?;
    if r.pos != buf.len() {
        return Err(AbiError::AfterVerdict(buf.len() - r.pos));
    }
    Ok(Verdict {
        decision,
        attrs,
        remember,
    })
}

/// The verdicts of an `on_commands` output, for a call given `n` commands: `u32 K`
/// (1 ≤ K ≤ n), then K verdicts, each `u32` length-prefixed (empty: Continue).
pub struct VerdictList<'a> {
    r: Reader<'a>,
    left: usize,
}

impl<'a> VerdictList<'a> {
    pub fn new(buf: &'a [u8], n: usize) -> Result<VerdictList<'a>, AbiError> {
        let mut r = Reader { buf, pos: 0 };
        let k = r.u32()? as usize;
        if k == 0 || k > n {
            return Err(AbiError::Decided { k, n });
        }
        Ok(VerdictList { r, left: k })
    }

    /// How many verdicts are left.
    pub fn remaining(&self) -> usize {
        self.left
    }

    /// The next verdict's bytes; after the last, an error if bytes follow.
    pub fn next_verdict(&mut self) -> Result<&'a [u8], AbiError> {
        self.left -= 1;
        let v = self.r.bytes()?;
        if self.left == 0 && self.r.pos != self.r.buf.len() {
            return Err(AbiError::AfterVerdicts(self.r.buf.len() - self.r.pos));
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(buf: &[u8], previous: &[Bytes]) -> Result<Verdict, String> {
        decode_verdict(buf, previous, &Limits::default()).map_err(|e| e.to_string())
    }

    fn verdict(kind: u8, body: &[u8], attrs: &[(&str, &str)]) -> Vec<u8> {
        let mut v = vec![kind];
        v.extend_from_slice(body);
        v.extend_from_slice(&(attrs.len() as u32).to_le_bytes());
        for (k, val) in attrs {
            put_bytes(&mut v, k.as_bytes());
            put_bytes(&mut v, val.as_bytes());
        }
        v
    }

    #[test]
    fn decodes_every_kind() {
        assert_eq!(decode(&[], &[]).unwrap(), Verdict::CONTINUE);
        let mut body = 2u32.to_le_bytes().to_vec();
        put_bytes(&mut body, b"GET");
        put_bytes(&mut body, b"t1:k");
        let v = decode(&verdict(1, &body, &[("user", "alice")]), &[]).unwrap();
        assert_eq!(
            v.decision,
            Decision::Rewrite(vec![Bytes::from("GET"), Bytes::from("t1:k")])
        );
        assert_eq!(v.attrs, vec![("user".to_string(), "alice".to_string())]);
        let mut body = Vec::new();
        put_bytes(&mut body, b"+OK\r\n");
        assert_eq!(
            decode(&verdict(2, &body, &[]), &[]).unwrap().decision,
            Decision::Reply(Bytes::from("+OK\r\n"))
        );
        let mut body = Vec::new();
        put_bytes(&mut body, b"NOPERM no");
        assert_eq!(
            decode(&verdict(3, &body, &[]), &[]).unwrap().decision,
            Decision::Reject("NOPERM no".into())
        );
    }

    #[test]
    fn a_rewrite_shares_the_arguments_it_left_unchanged() {
        let line = Bytes::from_static(b"SET k value");
        let previous = [line.slice(0..3), line.slice(4..5), line.slice(6..11)];
        let mut body = 3u32.to_le_bytes().to_vec();
        for arg in [&b"SET"[..], b"t1:k", b"value"] {
            put_bytes(&mut body, arg);
        }
        let v = decode(&verdict(1, &body, &[]), &previous).unwrap();
        let Decision::Rewrite(args) = v.decision else {
            panic!("not a rewrite: {v:?}");
        };
        assert_eq!(args, ["SET", "t1:k", "value"].map(Bytes::from));
        assert_eq!(args[0].as_ptr(), previous[0].as_ptr());
        assert_ne!(args[1].as_ptr(), previous[1].as_ptr());
        assert_eq!(args[2].as_ptr(), previous[2].as_ptr());
        // Fewer or more arguments than before: those past the old ones are copied.
        let mut body = 4u32.to_le_bytes().to_vec();
        for arg in [&b"SET"[..], b"k", b"value", b"EX"] {
            put_bytes(&mut body, arg);
        }
        let v = decode(&verdict(1, &body, &[]), &previous).unwrap();
        assert_eq!(
            v.decision,
            Decision::Rewrite(["SET", "k", "value", "EX"].map(Bytes::from).to_vec())
        );
    }

    #[test]
    fn decodes_prefix_keys_and_the_remember_flag() {
        let mut body = Vec::new();
        put_bytes(&mut body, b"t1:");
        let v = decode(&verdict(4, &body, &[]), &[]).unwrap();
        assert_eq!(v.decision, Decision::PrefixKeys(Bytes::from("t1:")));
        assert_eq!(v.remember, None);

        // 0x80, then the condition's prefixes, then the body.
        let mut cond = 2u32.to_le_bytes().to_vec();
        put_bytes(&mut cond, b"app:");
        put_bytes(&mut cond, b"");
        let v = decode(&verdict(0x80, &cond, &[]), &[]).unwrap();
        assert_eq!(v.decision, Decision::Continue);
        assert_eq!(v.remember, Some(vec![Bytes::from("app:"), Bytes::new()]));

        let mut cond_body = 0u32.to_le_bytes().to_vec();
        put_bytes(&mut cond_body, b"NOPERM no");
        let v = decode(&verdict(0x83, &cond_body, &[]), &[]).unwrap();
        assert_eq!(v.decision, Decision::Reject("NOPERM no".into()));
        assert_eq!(v.remember, Some(vec![]));

        let mut rewrite = 0u32.to_le_bytes().to_vec();
        rewrite.extend_from_slice(&1u32.to_le_bytes());
        put_bytes(&mut rewrite, b"PING");
        assert!(
            decode(&verdict(0x81, &rewrite, &[]), &[]).is_err(),
            "a remembered rewrite"
        );
        assert!(
            decode(&verdict(0x80, &[1, 0, 0], &[]), &[]).is_err(),
            "truncated condition"
        );
    }

    #[test]
    fn refuses_malformed_verdicts() {
        assert!(decode(&[9, 0, 0, 0, 0], &[]).is_err());
        assert!(decode(&[1, 255, 255, 255, 255], &[]).is_err());
        let mut body = Vec::new();
        put_bytes(&mut body, b"+OK");
        assert!(
            decode(&verdict(2, &body, &[]), &[]).is_err(),
            "reply without CRLF"
        );
        let mut v = verdict(0, &[], &[]);
        v.push(0);
        assert!(decode(&v, &[]).is_err(), "trailing bytes");
    }

    #[test]
    fn refuses_verdicts_over_the_limits() {
        let attrs: Vec<(String, String)> = (0..=MAX_ATTRS)
            .map(|i| (format!("a{i}"), "v".into()))
            .collect();
        let attrs: Vec<(&str, &str)> = attrs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let err = decode(&verdict(0, &[], &attrs), &[]).unwrap_err();
        assert_eq!(err, "set 65 attributes; at most 64");
        assert!(decode(&verdict(0, &[], &attrs[..MAX_ATTRS]), &[]).is_ok());
        let long = "x".repeat(MAX_ATTR_BYTES);
        let err = decode(&verdict(0, &[], &[("k", &long)]), &[]).unwrap_err();
        assert_eq!(err, "set 4097 bytes of attributes; at most 4096");
        // A count past the limit is refused before anything is read.
        assert!(decode(&[0, 255, 255, 255, 255], &[]).is_err());

        let limits = Limits {
            max_array_len: 2,
            max_bulk_len: 3,
            ..Limits::default()
        };
        let rewrite = |args: &[&str]| {
            let mut body = (args.len() as u32).to_le_bytes().to_vec();
            for a in args {
                put_bytes(&mut body, a.as_bytes());
            }
            verdict(1, &body, &[])
        };
        assert!(decode_verdict(&rewrite(&["GET", "k"]), &[], &limits).is_ok());
        assert_eq!(
            decode_verdict(&rewrite(&["DEL", "a", "b"]), &[], &limits)
                .unwrap_err()
                .to_string(),
            "rewrite to 3 arguments; at most 2"
        );
        assert_eq!(
            decode_verdict(&rewrite(&["GET", "long"]), &[], &limits)
                .unwrap_err()
                .to_string(),
            "rewrite to an argument of 4 bytes; at most 3"
        );
    }

    #[test]
    fn marks_keys_given_in_order_with_repeats() {
        let args: Vec<Bytes> = ["MSET", "a", "1", "b", "2"].map(Bytes::from).to_vec();
        let mut out = Vec::new();
        encode_command(&mut out, &args, &[1, 1, 3]);
        assert_eq!(out.len(), command_len(&args));
        let flags: Vec<u8> = {
            let mut pos = 4;
            args.iter()
                .map(|a| {
                    let f = out[pos];
                    pos += 5 + a.len();
                    f
                })
                .collect()
        };
        assert_eq!(flags, [0, 1, 0, 1, 0]);
    }

    fn list(k: u32, entries: &[&[u8]]) -> Vec<u8> {
        let mut out = k.to_le_bytes().to_vec();
        for e in entries {
            put_bytes(&mut out, e);
        }
        out
    }

    #[test]
    fn reads_a_verdict_list_and_refuses_a_malformed_one() {
        let reject = verdict(
            3,
            &{
                let mut b = Vec::new();
                put_bytes(&mut b, b"ERR no");
                b
            },
            &[],
        );
        let buf = list(2, &[b"", &reject]);
        let mut l = VerdictList::new(&buf, 3).unwrap();
        assert_eq!(l.remaining(), 2);
        assert_eq!(l.next_verdict().unwrap(), b"");
        assert_eq!(l.next_verdict().unwrap(), &reject[..]);
        assert_eq!(l.remaining(), 0);

        assert!(VerdictList::new(&list(0, &[]), 3).is_err(), "K = 0");
        assert!(
            VerdictList::new(&list(4, &[b"", b"", b"", b""]), 3).is_err(),
            "K > n"
        );
        assert!(VerdictList::new(&[1, 0], 3).is_err(), "truncated count");
        let mut trailing = list(1, &[b""]);
        trailing.push(7);
        let mut l = VerdictList::new(&trailing, 1).unwrap();
        assert!(l.next_verdict().is_err(), "trailing bytes");
        let short = list(2, &[b""]);
        let mut l = VerdictList::new(&short, 2).unwrap();
        assert!(l.next_verdict().is_ok());
        assert!(l.next_verdict().is_err(), "fewer entries than K");
    }

    #[test]
    fn encodes_context_and_command() {
        let attrs = vec![("user".to_string(), "bob".to_string())];
        let ctx = CallContext {
            conn_id: 7,
            db: 2,
            peer: "1.2.3.4:5",
            attrs: &attrs,
            protocol: 3,
        };
        let mut out = Vec::new();
        encode_context(&mut out, &ctx, false);
        encode_command(&mut out, &[Bytes::from("GET"), Bytes::from("k")], &[1]);
        let mut expect = 7u64.to_le_bytes().to_vec();
        expect.extend_from_slice(&2u32.to_le_bytes());
        put_bytes(&mut expect, b"1.2.3.4:5");
        put_bytes(&mut expect, b"bob");
        expect.extend_from_slice(&1u32.to_le_bytes());
        put_bytes(&mut expect, b"user");
        put_bytes(&mut expect, b"bob");
        expect.extend_from_slice(&2u32.to_le_bytes());
        expect.push(0);
        put_bytes(&mut expect, b"GET");
        expect.push(1);
        put_bytes(&mut expect, b"k");
        assert_eq!(out, expect);
    }
}
