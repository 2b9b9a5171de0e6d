//! The byte layouts of the plugin ABI (`docs/plugin-abi.md`, version 1), in plain safe Rust.
//!
//! Everything here works on the host too, so the encoding is unit-tested with `cargo test`
//! and a host (or a test harness) can build the very buffers a plugin receives. Plugin
//! authors normally never touch this module: [`export_plugin!`](crate::export_plugin)
//! decodes inputs into [`Context`] and [`Command`] and encodes verdicts for them.
//!
//! All integers are little-endian; a *string* or *bytes* field is a `u32` length followed by
//! that many bytes.
//!
//! ```text
//! context:  u64 conn id, u32 db, string peer, string user, u32 n, n × (string key, string value)
//! command:  u32 argc (>= 1), argc × (u8 flags (bit 0: key), bytes arg)
//! verdict:  u8 kind (0 Continue, 1 Rewrite, 2 Reply, 3 Reject, 4 PrefixKeys;
//!             | 0x80: remember it),
//!           if 0x80: u32 n, n × bytes (key prefixes: the condition; 0: none),
//!           kind's payload, u32 n, n × (string key, string value)
//!
//! tessera_on_commands (a batch):
//!   input:  context, u32 n (>= 1), n × command
//!   output: u32 k (1 <= k <= n), k × (u32 len, len bytes of a verdict; len 0 = Continue)
//! ```

use std::fmt;

use crate::prefixes::Condition;
use crate::{Command, Context};

/// The ABI version this SDK implements; `tessera_abi_version` returns it.
pub const ABI_VERSION: i32 = 1;

/// Flag bit of a command argument: the host marked this argument as a key.
pub const FLAG_KEY: u8 = 1;

/// Flag bit of a verdict's kind byte: the plugin asks the host to remember the verdict
/// (a key-prefix condition follows the kind byte).
pub const REMEMBER: u8 = 0x80;

/// Why a buffer could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The buffer ended before the field named here was complete.
    Truncated(&'static str),
    /// A field that must be UTF-8 (named here) was not.
    NotUtf8(&'static str),
    /// A command with no arguments at all (the ABI requires at least the name).
    EmptyCommand,
    /// An unknown verdict kind byte.
    BadKind(u8),
    /// Bytes were left over after the last field.
    TrailingBytes(usize),
    /// A verdict list (the output of `tessera_on_commands`) with no entry.
    EmptyVerdictList,
    /// An entry of a verdict list that sets attributes but is not the last (its index).
    AttributesNotLast(usize),
    /// A rewrite with the remember flag (a rewrite cannot be remembered).
    RememberedRewrite,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated(what) => write!(f, "buffer ends inside the {what}"),
            DecodeError::NotUtf8(what) => write!(f, "the {what} is not UTF-8"),
            DecodeError::EmptyCommand => f.write_str("a command with no arguments"),
            DecodeError::BadKind(kind) => write!(f, "unknown verdict kind {kind}"),
            DecodeError::TrailingBytes(n) => write!(f, "{n} bytes left after the last field"),
            DecodeError::EmptyVerdictList => f.write_str("a verdict list with no entry"),
            DecodeError::AttributesNotLast(i) => {
                write!(
                    f,
                    "verdict {i} of the list sets attributes but is not the last"
                )
            }
            DecodeError::RememberedRewrite => f.write_str("a rewrite with the remember flag"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// A cursor over an input buffer.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// The bytes not read yet.
    pub fn remaining(&self) -> &'a [u8] {
        self.buf
    }

    /// Skips `n` bytes.
    pub fn skip(&mut self, n: usize, what: &'static str) -> Result<(), DecodeError> {
        self.take(n, what).map(drop)
    }

    /// Fails with [`DecodeError::TrailingBytes`] unless everything was read.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.buf.len() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated(what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// Reads one byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    /// Reads a little-endian `u32`.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Reads a little-endian `u64`.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_le_bytes(b))
    }

    /// Reads a *bytes* field (`u32` length, then the bytes), borrowing from the buffer.
    pub fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.u32(what)? as usize;
        self.take(len, what)
    }

    /// Reads a *string* field: a *bytes* field that must be UTF-8.
    pub fn string(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.bytes(what)?).map_err(|_| DecodeError::NotUtf8(what))
    }

    /// Reads a count field; a count larger than the bytes left cannot be right (every
    /// element takes at least one byte), so it fails early instead of allocating for it.
    fn count(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        let n = self.u32(what)? as usize;
        if n > self.buf.len() {
            return Err(DecodeError::Truncated(what));
        }
        Ok(n)
    }
}

/// Whether `a` and `b` hold the same bytes. Compares 8 bytes at a time, and the last
/// bytes (or a string shorter than 8) as two overlapping words, without a loop: on wasm32
/// the `memcmp` behind `==` on slices goes byte by byte, several times slower for the short
/// strings a plugin compares on every call.
#[inline(always)]
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if b.len() != n {
        return false;
    }
    let w8 = |s: &[u8], i: usize| u64::from_ne_bytes(s[i..i + 8].try_into().expect("8 bytes"));
    let w4 = |s: &[u8], i: usize| u32::from_ne_bytes(s[i..i + 4].try_into().expect("4 bytes"));
    let w2 = |s: &[u8], i: usize| u16::from_ne_bytes(s[i..i + 2].try_into().expect("2 bytes"));
    match n {
        0 => true,
        1 => a[0] == b[0],
        2..4 => w2(a, 0) == w2(b, 0) && w2(a, n - 2) == w2(b, n - 2),
        4..8 => w4(a, 0) == w4(b, 0) && w4(a, n - 4) == w4(b, n - 4),
        _ => {
            let mut i = 0;
            while i + 8 < n {
                if w8(a, i) != w8(b, i) {
                    return false;
                }
                i += 8;
            }
            w8(a, n - 8) == w8(b, n - 8)
        }
    }
}

/// Appends ABI fields to a buffer.
pub trait WriteExt {
    /// Appends a little-endian `u32`.
    fn put_u32(&mut self, v: u32);
    /// Appends a little-endian `u64`.
    fn put_u64(&mut self, v: u64);
    /// Appends a *bytes* (or *string*) field.
    fn put_bytes(&mut self, b: &[u8]);
}

impl WriteExt for Vec<u8> {
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }

    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_le_bytes());
    }

    fn put_bytes(&mut self, b: &[u8]) {
        self.put_u32(len_u32(b.len()));
        self.extend_from_slice(b);
    }
}

fn len_u32(len: usize) -> u32 {
    // wasm32 memory cannot hold more than 4 GiB; on the host a longer field is a bug.
    u32::try_from(len).expect("an ABI field longer than 4 GiB")
}

/// Decodes a *context* from the reader into a new [`Context`].
pub fn decode_context(r: &mut Reader<'_>) -> Result<Context, DecodeError> {
    let mut ctx = Context::default();
    decode_context_into(r, &mut ctx)?;
    Ok(ctx)
}

/// Decodes a *context* into `ctx`, reusing its buffers (what the SDK does on every call).
/// On an error `ctx` holds part of the input.
pub fn decode_context_into(r: &mut Reader<'_>, ctx: &mut Context) -> Result<(), DecodeError> {
    let conn_id = r.u64("connection id")?;
    let db = r.u32("database")?;
    let peer = r.string("peer address")?;
    let user = r.string("user")?;
    ctx.start_decode(conn_id, db, peer, user);
    let n = r.count("attribute count")?;
    for _ in 0..n {
        let key = r.string("attribute key")?;
        let value = r.string("attribute value")?;
        ctx.push_decoded_attr(key, value);
    }
    // The module exports `tessera_context_protocol`: the host adds the protocol.
    ctx.set_protocol(r.u8("protocol")?);
    Ok(())
}

/// The length in bytes of the *context* at the start of `buf`, found by skipping its fields
/// without decoding them, or `None` if `buf` ends inside it.
pub fn context_len(buf: &[u8]) -> Option<usize> {
    let mut r = Reader::new(buf);
    r.take(12, "").ok()?;
    r.bytes("").ok()?;
    r.bytes("").ok()?;
    let n = r.u32("").ok()?;
    for _ in 0..n {
        r.bytes("").ok()?;
        r.bytes("").ok()?;
    }
    r.u8("").ok()?;
    Some(buf.len() - r.remaining().len())
}

/// Encodes a *context* (the host's side; here for tests and test harnesses).
pub fn encode_context(out: &mut Vec<u8>, ctx: &Context) {
    out.put_u64(ctx.conn_id());
    out.put_u32(ctx.db());
    out.put_bytes(ctx.peer().as_bytes());
    out.put_bytes(ctx.user().as_bytes());
    let attrs = ctx.received_attrs();
    out.put_u32(len_u32(attrs.len()));
    for (k, v) in attrs {
        out.put_bytes(k.as_bytes());
        out.put_bytes(v.as_bytes());
    }
    out.push(ctx.protocol());
}

/// Decodes a *command* from the reader into a new [`Command`].
pub fn decode_command(r: &mut Reader<'_>) -> Result<Command, DecodeError> {
    let mut cmd = Command::default();
    decode_command_into(r, &mut cmd)?;
    Ok(cmd)
}

/// Decodes a *command* into `cmd`, reusing its buffers (what the SDK does on every call).
/// On an error `cmd` holds part of the input.
pub fn decode_command_into(r: &mut Reader<'_>, cmd: &mut Command) -> Result<(), DecodeError> {
    let mut skip = r.clone();
    let argc = skip.count("argument count")?;
    for _ in 0..argc {
        skip.u8("argument flags")?;
        skip.bytes("argument")?;
    }
    let len = r.remaining().len() - skip.remaining().len();
    cmd.start_input(&r.remaining()[..len]);
    cmd.decode_next()?;
    *r = skip;
    Ok(())
}

/// Encodes a *command* with its key flags (the host's side; here for tests).
pub fn encode_command(out: &mut Vec<u8>, cmd: &Command) {
    out.put_u32(len_u32(cmd.len()));
    for (i, arg) in cmd.args().enumerate() {
        out.push(if cmd.is_key(i) { FLAG_KEY } else { 0 });
        out.put_bytes(arg);
    }
}

/// Encodes the input of `tessera_on_commands`: the context, `u32` count, then the commands
/// (the host's side; here for tests and test harnesses). `cmds` must not be empty.
pub fn encode_commands_input(out: &mut Vec<u8>, ctx: &Context, cmds: &[Command]) {
    encode_context(out, ctx);
    out.put_u32(len_u32(cmds.len()));
    for cmd in cmds {
        encode_command(out, cmd);
    }
}

/// Encodes a *string list* (`u32` count, then the strings), as `tessera_subscriptions`
/// returns it.
pub fn encode_string_list(out: &mut Vec<u8>, items: &[&str]) {
    out.put_u32(len_u32(items.len()));
    for item in items {
        out.put_bytes(item.as_bytes());
    }
}

/// Decodes a *string list*.
pub fn decode_string_list(r: &mut Reader<'_>) -> Result<Vec<String>, DecodeError> {
    let n = r.count("string list count")?;
    (0..n)
        .map(|_| r.string("string list item").map(str::to_owned))
        .collect()
}

/// What a hook answers, as it travels on the wire: the action, whether to remember it, and
/// the attributes to set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireVerdict {
    /// What to do with the command (or reply).
    pub action: WireAction,
    /// Connection attributes to set, in order; an empty value removes the attribute.
    pub attrs: Vec<(String, String)>,
    /// `Some` if the hook asks the host to remember the verdict (the flag `0x80`), with the
    /// key prefixes of its condition (empty: no condition).
    pub remember: Option<Vec<Vec<u8>>>,
}

/// The action part of a [`WireVerdict`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireAction {
    /// Kind 0: go on.
    Continue,
    /// Kind 1: go on with these arguments instead (`args[0]` is the command name).
    Rewrite(Vec<Vec<u8>>),
    /// Kind 2: answer with this complete RESP value; Redis is not called.
    Reply(Vec<u8>),
    /// Kind 3: answer `-<message>\r\n`.
    Reject(String),
    /// Kind 4: go on with this prefix in front of every argument the host marked as a key.
    PrefixKeys(Vec<u8>),
}

impl WireAction {
    /// The kind byte, without the remember flag.
    pub fn kind(&self) -> u8 {
        match self {
            WireAction::Continue => 0,
            WireAction::Rewrite(_) => 1,
            WireAction::Reply(_) => 2,
            WireAction::Reject(_) => 3,
            WireAction::PrefixKeys(_) => 4,
        }
    }
}

impl WireVerdict {
    /// `Continue` with no attributes, not remembered: the hook may then return `0` instead
    /// of a buffer.
    pub fn is_plain_continue(&self) -> bool {
        self.action == WireAction::Continue && self.attrs.is_empty() && self.remember.is_none()
    }

    /// The arguments the host passes on after this verdict for `cmd`, the command the
    /// plugin was given (with its keys marked): `cmd`'s for a `Continue`, the new ones for a
    /// `Rewrite`, `cmd`'s with the prefix in front of each key for a `PrefixKeys`; `None` for
    /// a `Reply` or `Reject`, which answer the command.
    pub fn forwarded_args(&self, cmd: &Command) -> Option<Vec<Vec<u8>>> {
        match &self.action {
            WireAction::Continue => Some(cmd.args().map(<[u8]>::to_vec).collect()),
            WireAction::Rewrite(args) => Some(args.clone()),
            WireAction::PrefixKeys(prefix) => Some(
                cmd.args()
                    .enumerate()
                    .map(|(i, a)| {
                        if cmd.is_key(i) {
                            [prefix.as_slice(), a].concat()
                        } else {
                            a.to_vec()
                        }
                    })
                    .collect(),
            ),
            WireAction::Reply(_) | WireAction::Reject(_) => None,
        }
    }
}

/// Appends the encoding of a verdict to `out`. (A `Rewrite` with `remember` is encoded as
/// given, though the host refuses it.)
pub fn encode_verdict(out: &mut Vec<u8>, v: &WireVerdict) {
    let kind = v.action.kind();
    match &v.remember {
        Some(prefixes) => {
            out.push(kind | REMEMBER);
            put_list(out, prefixes.iter().map(Vec::as_slice));
        }
        None => out.push(kind),
    }
    match &v.action {
        WireAction::Continue => {}
        WireAction::Rewrite(args) => put_list(out, args.iter().map(Vec::as_slice)),
        WireAction::Reply(resp) => out.put_bytes(resp),
        WireAction::Reject(msg) => out.put_bytes(msg.as_bytes()),
        WireAction::PrefixKeys(prefix) => out.put_bytes(prefix),
    }
    put_attrs(out, v.attrs.iter());
}

/// A verdict's action as the SDK encodes it on each call, borrowing its payload.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Action<'a> {
    Continue,
    /// Rewrite to the arguments of this command.
    Rewrite(&'a Command),
    Reply(&'a [u8]),
    Reject(&'a str),
    /// This prefix in front of every key.
    PrefixKeys(&'a [u8]),
}

/// Appends the encoding of a verdict to `out`, without copying its payload anywhere else;
/// with `remember`, flagged to be remembered on that condition.
pub(crate) fn encode_action(
    out: &mut Vec<u8>,
    action: Action<'_>,
    remember: Option<Condition<'_>>,
    attrs: &[(String, String)],
) {
    let kind = match action {
        Action::Continue => 0,
        Action::Rewrite(_) => 1,
        Action::Reply(_) => 2,
        Action::Reject(_) => 3,
        Action::PrefixKeys(_) => 4,
    };
    match remember {
        Some(cond) => {
            out.push(kind | REMEMBER);
            out.extend_from_slice(cond.encoded());
        }
        None => out.push(kind),
    }
    match action {
        Action::Continue => {}
        Action::Rewrite(cmd) => put_list(out, cmd.args()),
        Action::Reply(resp) | Action::PrefixKeys(resp) => out.put_bytes(resp),
        Action::Reject(msg) => out.put_bytes(msg.as_bytes()),
    }
    put_attrs(out, attrs.iter());
}

/// Appends a verdict list entry (its `u32` length, then the verdict) for a remembered
/// `Continue` (`prefix` `None`) or `PrefixKeys` of `prefix`, on `cond`, with no attribute:
/// what [`encode_action`] writes for them, without a length to patch afterwards.
#[inline]
pub(crate) fn put_remembered_continue_entry(
    out: &mut Vec<u8>,
    prefix: Option<&[u8]>,
    cond: Condition<'_>,
) {
    let cond = cond.encoded();
    match prefix {
        // The most common entry of all, with no condition: 13 constant bytes.
        None if cond == [0; 4] => {
            out.extend_from_slice(&[9, 0, 0, 0, REMEMBER, 0, 0, 0, 0, 0, 0, 0, 0])
        }
        None => {
            out.put_u32(len_u32(1 + cond.len() + 4));
            out.push(REMEMBER);
            out.extend_from_slice(cond);
            out.extend_from_slice(&[0; 4]);
        }
        Some(prefix) if cond == [0; 4] => {
            // The 13 bytes before the prefix in one piece: entry length, kind, no
            // condition, prefix length.
            let n = len_u32(prefix.len());
            let mut head = [0, 0, 0, 0, 4 | REMEMBER, 0, 0, 0, 0, 0, 0, 0, 0];
            head[..4].copy_from_slice(&(1 + 4 + 4 + n + 4).to_le_bytes());
            head[9..].copy_from_slice(&n.to_le_bytes());
            out.extend_from_slice(&head);
            out.extend_from_slice(prefix);
            out.extend_from_slice(&[0; 4]);
        }
        Some(prefix) => {
            out.put_u32(len_u32(1 + cond.len() + 4 + prefix.len() + 4));
            out.push(4 | REMEMBER);
            out.extend_from_slice(cond);
            out.put_bytes(prefix);
            out.extend_from_slice(&[0; 4]);
        }
    }
}

fn put_list<'a>(out: &mut Vec<u8>, items: impl ExactSizeIterator<Item = &'a [u8]>) {
    out.put_u32(len_u32(items.len()));
    for item in items {
        out.put_bytes(item);
    }
}

fn put_attrs<'a>(out: &mut Vec<u8>, attrs: impl ExactSizeIterator<Item = &'a (String, String)>) {
    out.put_u32(len_u32(attrs.len()));
    for (k, val) in attrs {
        out.put_bytes(k.as_bytes());
        out.put_bytes(val.as_bytes());
    }
}

/// Decodes a whole verdict buffer (the host's side; here for tests). Trailing bytes are an
/// error: a verdict is exactly `len` bytes.
pub fn decode_verdict(buf: &[u8]) -> Result<WireVerdict, DecodeError> {
    let mut r = Reader::new(buf);
    let kind = r.u8("verdict kind")?;
    let remember = if kind & REMEMBER != 0 {
        let n = r.count("remember prefix count")?;
        let prefixes = (0..n)
            .map(|_| r.bytes("remember prefix").map(<[u8]>::to_vec))
            .collect::<Result<_, _>>()?;
        Some(prefixes)
    } else {
        None
    };
    let action = match kind & !REMEMBER {
        0 => WireAction::Continue,
        1 => {
            let n = r.count("rewrite argument count")?;
            let args = (0..n)
                .map(|_| r.bytes("rewrite argument").map(<[u8]>::to_vec))
                .collect::<Result<_, _>>()?;
            WireAction::Rewrite(args)
        }
        2 => WireAction::Reply(r.bytes("reply")?.to_vec()),
        3 => WireAction::Reject(r.string("reject message")?.to_owned()),
        4 => WireAction::PrefixKeys(r.bytes("key prefix")?.to_vec()),
        _ => return Err(DecodeError::BadKind(kind)),
    };
    if remember.is_some() && matches!(action, WireAction::Rewrite(_)) {
        return Err(DecodeError::RememberedRewrite);
    }
    let n = r.count("attribute count")?;
    let mut attrs = Vec::with_capacity(n);
    for _ in 0..n {
        let k = r.string("attribute key")?.to_owned();
        let v = r.string("attribute value")?.to_owned();
        attrs.push((k, v));
    }
    r.finish()?;
    Ok(WireVerdict {
        action,
        attrs,
        remember,
    })
}

/// Appends the encoding of a verdict list (the output of `tessera_on_commands`) to `out`:
/// `u32` count, then each verdict as `u32` length and its bytes, a plain `Continue` as
/// length 0. For tests and test harnesses; the SDK itself encodes the list as it goes.
pub fn encode_verdict_list(out: &mut Vec<u8>, verdicts: &[WireVerdict]) {
    out.put_u32(len_u32(verdicts.len()));
    for v in verdicts {
        if v.is_plain_continue() {
            out.put_u32(0);
            continue;
        }
        let at = out.len();
        out.put_u32(0);
        encode_verdict(out, v);
        patch_len(out, at);
    }
}

/// Writes the length of what follows the `u32` placeholder at `at` into that placeholder.
pub(crate) fn patch_len(out: &mut [u8], at: usize) {
    let len = len_u32(out.len() - at - 4);
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

/// Decodes a whole verdict list, the output of `tessera_on_commands` (the host's side; here
/// for tests). A length-0 entry is a plain `Continue`.
///
/// Checks what the buffer alone can tell: at least one entry, every entry a whole verdict,
/// only the last one setting (or removing) attributes, no bytes after the last entry. The
/// host also refuses more entries than it sent commands; that is the caller's to check
/// (`list.len() <= n`).
pub fn decode_verdict_list(buf: &[u8]) -> Result<Vec<WireVerdict>, DecodeError> {
    let mut r = Reader::new(buf);
    let k = r.count("verdict count")?;
    if k == 0 {
        return Err(DecodeError::EmptyVerdictList);
    }
    let mut list = Vec::with_capacity(k);
    for i in 0..k {
        let entry = r.bytes("verdict")?;
        let v = if entry.is_empty() {
            WireVerdict {
                action: WireAction::Continue,
                attrs: Vec::new(),
                remember: None,
            }
        } else {
            decode_verdict(entry)?
        };
        if !v.attrs.is_empty() && i + 1 < k {
            return Err(DecodeError::AttributesNotLast(i));
        }
        list.push(v);
    }
    r.finish()?;
    Ok(list)
}

/// Packs a pointer and a length into a hook's `i64` result: `(ptr << 32) | len`.
pub fn pack(ptr: u32, len: u32) -> i64 {
    ((u64::from(ptr) << 32) | u64::from(len)) as i64
}

/// Splits a hook's `i64` result into `(ptr, len)`.
pub fn unpack(v: i64) -> (u32, u32) {
    let v = v as u64;
    ((v >> 32) as u32, v as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ctx() -> Context {
        let mut attrs = BTreeMap::new();
        attrs.insert("user".to_owned(), "alice".to_owned());
        attrs.insert("tenant".to_owned(), "t1".to_owned());
        Context::new(0x0102_0304_0506_0708, 3, "127.0.0.1:53211", "alice", attrs)
    }

    fn cmd() -> Command {
        Command::from_parts(vec![
            (b"MSET".to_vec(), false),
            (b"k1".to_vec(), true),
            (b"v1".to_vec(), false),
            (b"k2".to_vec(), true),
            (Vec::new(), false),
        ])
    }

    #[test]
    fn context_layout_is_the_documented_one() {
        let ctx = Context::new(7, 2, "p", "", BTreeMap::new()).with_protocol(3);
        let mut buf = Vec::new();
        encode_context(&mut buf, &ctx);
        let want: Vec<u8> = [
            &7u64.to_le_bytes()[..],
            &2u32.to_le_bytes(),
            &1u32.to_le_bytes(),
            b"p",
            &0u32.to_le_bytes(),
            &0u32.to_le_bytes(),
            &[3],
        ]
        .concat();
        assert_eq!(buf, want);
        assert_eq!(context_len(&buf), Some(buf.len()));
        let decoded = decode_context(&mut Reader::new(&buf)).unwrap();
        assert_eq!(decoded.protocol(), 3);
    }

    #[test]
    fn context_and_command_round_trip() {
        let mut buf = Vec::new();
        encode_context(&mut buf, &ctx());
        encode_command(&mut buf, &cmd());
        let mut r = Reader::new(&buf);
        let c = decode_context(&mut r).unwrap();
        let m = decode_command(&mut r).unwrap();
        r.finish().unwrap();
        assert_eq!(c.conn_id(), 0x0102_0304_0506_0708);
        assert_eq!(c.db(), 3);
        assert_eq!(c.peer(), "127.0.0.1:53211");
        assert_eq!(c.user(), "alice");
        assert_eq!(c.attr("tenant"), Some("t1"));
        assert_eq!(m.name(), "mset");
        assert_eq!(m.len(), 5);
        assert_eq!(
            m.keys().collect::<Vec<_>>(),
            vec![(1, &b"k1"[..]), (3, &b"k2"[..])]
        );
        assert_eq!(m.arg(4), Some(&b""[..]));
    }

    #[test]
    fn same_bytes_is_slice_equality() {
        let text = b"0123456789abcdefghijklmnopq";
        for i in 0..text.len() {
            for j in i..text.len() {
                let a = &text[i..j];
                assert!(same_bytes(a, a));
                let mut b = a.to_vec();
                for k in 0..b.len() {
                    b[k] ^= 1;
                    assert!(!same_bytes(a, &b), "{a:?} differs at {k}");
                    b[k] ^= 1;
                }
                assert!(!same_bytes(a, &text[i..]) || j == text.len());
            }
        }
    }

    #[test]
    fn context_len_skips_exactly_the_context() {
        let mut buf = Vec::new();
        encode_context(&mut buf, &ctx());
        let n = buf.len();
        encode_command(&mut buf, &cmd());
        assert_eq!(context_len(&buf), Some(n));
        for cut in 0..n {
            assert_eq!(context_len(&buf[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn command_layout_is_the_documented_one() {
        let c = Command::from_parts(vec![(b"GET".to_vec(), false), (b"k".to_vec(), true)]);
        let mut buf = Vec::new();
        encode_command(&mut buf, &c);
        assert_eq!(buf, b"\x02\0\0\0\0\x03\0\0\0GET\x01\x01\0\0\0k");
    }

    #[test]
    fn truncated_inputs_are_errors_not_panics() {
        let mut buf = Vec::new();
        encode_context(&mut buf, &ctx());
        encode_command(&mut buf, &cmd());
        for cut in 0..buf.len() {
            let mut r = Reader::new(&buf[..cut]);
            let res = decode_context(&mut r).and_then(|_| decode_command(&mut r));
            assert!(res.is_err(), "cut at {cut} decoded");
        }
    }

    #[test]
    fn huge_counts_fail_without_allocating() {
        let mut r = Reader::new(b"\xff\xff\xff\xff");
        assert_eq!(
            decode_command(&mut r).unwrap_err(),
            DecodeError::Truncated("argument count")
        );
        let mut r = Reader::new(b"\0\0\0\0");
        assert_eq!(
            decode_command(&mut r).unwrap_err(),
            DecodeError::EmptyCommand
        );
    }

    #[test]
    fn non_utf8_strings_are_refused() {
        let mut buf = Vec::new();
        buf.put_u64(1);
        buf.put_u32(0);
        buf.put_bytes(b"\xff");
        let mut r = Reader::new(&buf);
        assert_eq!(
            decode_context(&mut r).unwrap_err(),
            DecodeError::NotUtf8("peer address")
        );
    }

    #[test]
    fn verdicts_round_trip() {
        let all = [
            WireAction::Continue,
            WireAction::Rewrite(vec![b"GET".to_vec(), b"t1:k".to_vec()]),
            WireAction::Reply(b"+OK\r\n".to_vec()),
            WireAction::Reject("NOPERM no".into()),
            WireAction::PrefixKeys(b"t1:".to_vec()),
            WireAction::PrefixKeys(Vec::new()),
        ];
        let remembers = [None, Some(vec![]), Some(vec![b"app:".to_vec(), Vec::new()])];
        for action in all {
            for attrs in [
                vec![],
                vec![
                    ("user".to_owned(), "bob".to_owned()),
                    ("x".into(), "".into()),
                ],
            ] {
                for remember in remembers.clone() {
                    let v = WireVerdict {
                        action: action.clone(),
                        attrs: attrs.clone(),
                        remember,
                    };
                    let mut buf = Vec::new();
                    encode_verdict(&mut buf, &v);
                    let got = decode_verdict(&buf);
                    if v.remember.is_some() && matches!(action, WireAction::Rewrite(_)) {
                        assert_eq!(got, Err(DecodeError::RememberedRewrite));
                    } else {
                        assert_eq!(got.unwrap(), v);
                    }
                    for cut in 0..buf.len() {
                        assert!(decode_verdict(&buf[..cut]).is_err(), "cut at {cut}");
                    }
                }
            }
        }
    }

    #[test]
    fn verdict_layout_is_the_documented_one() {
        let v = WireVerdict {
            action: WireAction::Reject("ERR x".into()),
            attrs: vec![("user".into(), "a".into())],
            remember: None,
        };
        let mut buf = Vec::new();
        encode_verdict(&mut buf, &v);
        assert_eq!(
            buf,
            b"\x03\x05\0\0\0ERR x\x01\0\0\0\x04\0\0\0user\x01\0\0\0a"
        );
        assert_eq!(
            decode_verdict(b"\x05\0\0\0\0"),
            Err(DecodeError::BadKind(5))
        );
        assert_eq!(
            decode_verdict(b"\x85\0\0\0\0\0\0\0\0"),
            Err(DecodeError::BadKind(0x85))
        );
        assert_eq!(
            decode_verdict(b"\0\0\0\0\0\0"),
            Err(DecodeError::TrailingBytes(1))
        );
    }

    #[test]
    fn remembered_and_prefix_keys_layouts_are_the_documented_ones() {
        let v = WireVerdict {
            action: WireAction::PrefixKeys(b"t1:".to_vec()),
            attrs: vec![],
            remember: None,
        };
        let mut buf = Vec::new();
        encode_verdict(&mut buf, &v);
        assert_eq!(buf, b"\x04\x03\0\0\0t1:\0\0\0\0");

        // Kind | 0x80, the condition (u32 count, bytes fields), the body, the attributes.
        let v = WireVerdict {
            remember: Some(vec![b"app:".to_vec(), b"".to_vec()]),
            ..v
        };
        let mut buf = Vec::new();
        encode_verdict(&mut buf, &v);
        assert_eq!(
            buf,
            b"\x84\x02\0\0\0\x04\0\0\0app:\0\0\0\0\x03\0\0\0t1:\0\0\0\0"
        );
        let v = WireVerdict {
            action: WireAction::Continue,
            attrs: vec![],
            remember: Some(vec![]),
        };
        let mut buf = Vec::new();
        encode_verdict(&mut buf, &v);
        assert_eq!(buf, b"\x80\0\0\0\0\0\0\0\0");
        assert!(!v.is_plain_continue());
        assert_eq!(
            decode_verdict(b"\x81\0\0\0\0\x01\0\0\0\x01\0\0\0k\0\0\0\0"),
            Err(DecodeError::RememberedRewrite)
        );
    }

    #[test]
    fn forwarded_args_apply_the_verdict_to_the_command() {
        let v = |action| WireVerdict {
            action,
            attrs: vec![],
            remember: None,
        };
        let strs = |args: Option<Vec<Vec<u8>>>| {
            args.map(|a| {
                a.into_iter()
                    .map(|a| String::from_utf8(a).unwrap())
                    .collect::<Vec<_>>()
            })
        };
        let mset = cmd();
        assert_eq!(
            strs(v(WireAction::PrefixKeys(b"t1:".to_vec())).forwarded_args(&mset)).unwrap(),
            ["MSET", "t1:k1", "v1", "t1:k2", ""]
        );
        assert_eq!(
            strs(v(WireAction::Continue).forwarded_args(&mset)).unwrap(),
            ["MSET", "k1", "v1", "k2", ""]
        );
        assert_eq!(
            strs(v(WireAction::Rewrite(vec![b"PING".to_vec()])).forwarded_args(&mset)).unwrap(),
            ["PING"]
        );
        assert_eq!(
            v(WireAction::Reject("ERR".into())).forwarded_args(&mset),
            None
        );
    }

    #[test]
    fn commands_input_is_the_context_a_count_and_the_commands() {
        let get = Command::new(["GET", "k"]).with_key(1);
        let mut buf = Vec::new();
        encode_commands_input(&mut buf, &ctx(), &[cmd(), get.clone()]);
        let mut want = Vec::new();
        encode_context(&mut want, &ctx());
        want.put_u32(2);
        encode_command(&mut want, &cmd());
        encode_command(&mut want, &get);
        assert_eq!(buf, want);

        let mut r = Reader::new(&buf);
        decode_context(&mut r).unwrap();
        assert_eq!(r.u32("count").unwrap(), 2);
        assert_eq!(decode_command(&mut r).unwrap().name(), "mset");
        assert_eq!(decode_command(&mut r).unwrap().name(), "get");
        r.finish().unwrap();
    }

    fn list_entries() -> Vec<WireVerdict> {
        let v = |action| WireVerdict {
            action,
            attrs: vec![],
            remember: None,
        };
        vec![
            v(WireAction::Continue),
            v(WireAction::Rewrite(vec![b"GET".to_vec(), b"t1:k".to_vec()])),
            v(WireAction::Continue),
            v(WireAction::Reply(b"+OK\r\n".to_vec())),
            v(WireAction::Reject("NOPERM no".into())),
            WireVerdict {
                remember: Some(vec![]),
                ..v(WireAction::PrefixKeys(b"t1:".to_vec()))
            },
            WireVerdict {
                remember: Some(vec![b"app:".to_vec()]),
                ..v(WireAction::Continue)
            },
            WireVerdict {
                action: WireAction::Reply(b"+OK\r\n".to_vec()),
                attrs: vec![("user".into(), "bob".into())],
                remember: None,
            },
        ]
    }

    #[test]
    fn verdict_lists_round_trip() {
        let all = list_entries();
        // Every prefix is a valid list: K < N is up to the plugin.
        for k in 1..=all.len() {
            let mut buf = Vec::new();
            encode_verdict_list(&mut buf, &all[..k]);
            assert_eq!(decode_verdict_list(&buf).unwrap(), &all[..k], "k = {k}");
        }
    }

    #[test]
    fn verdict_list_layout_is_the_documented_one() {
        let mut buf = Vec::new();
        encode_verdict_list(&mut buf, &list_entries()[3..5]);
        let mut want = b"\x02\0\0\0".to_vec();
        want.extend_from_slice(b"\x0e\0\0\0\x02\x05\0\0\0+OK\r\n\0\0\0\0");
        want.extend_from_slice(b"\x12\0\0\0\x03\x09\0\0\0NOPERM no\0\0\0\0");
        assert_eq!(buf, want);
        // A plain Continue is an empty entry, and may also be spelled out.
        let plain = WireVerdict {
            action: WireAction::Continue,
            attrs: vec![],
            remember: None,
        };
        assert_eq!(
            decode_verdict_list(b"\x02\0\0\0\0\0\0\0\x05\0\0\0\0\0\0\0\0").unwrap(),
            [plain.clone(), plain]
        );
    }

    #[test]
    fn malformed_verdict_lists_are_errors() {
        assert_eq!(
            decode_verdict_list(b"\0\0\0\0"),
            Err(DecodeError::EmptyVerdictList)
        );
        assert_eq!(
            decode_verdict_list(b"\x01\0\0\0\0\0\0\0\x07"),
            Err(DecodeError::TrailingBytes(1))
        );
        // An entry's bytes are exactly one verdict.
        assert_eq!(
            decode_verdict_list(b"\x01\0\0\0\x06\0\0\0\0\0\0\0\0\0"),
            Err(DecodeError::TrailingBytes(1))
        );
        assert_eq!(
            decode_verdict_list(b"\x01\0\0\0\x05\0\0\0\x09\0\0\0\0"),
            Err(DecodeError::BadKind(9))
        );
        // Attributes only on the last entry.
        let mut all = list_entries();
        all.rotate_right(1);
        let mut buf = Vec::new();
        encode_verdict_list(&mut buf, &all);
        assert_eq!(
            decode_verdict_list(&buf),
            Err(DecodeError::AttributesNotLast(0))
        );
        // Cut anywhere: an error, never a panic.
        let mut buf = Vec::new();
        encode_verdict_list(&mut buf, &list_entries());
        for cut in 0..buf.len() {
            assert!(decode_verdict_list(&buf[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn string_lists_round_trip() {
        let mut buf = Vec::new();
        encode_string_list(&mut buf, &["get", "object|encoding"]);
        let mut r = Reader::new(&buf);
        assert_eq!(
            decode_string_list(&mut r).unwrap(),
            vec!["get".to_owned(), "object|encoding".to_owned()]
        );
        let mut empty = Vec::new();
        encode_string_list(&mut empty, &[]);
        assert_eq!(empty, [0, 0, 0, 0]);
    }

    #[test]
    fn pack_puts_the_pointer_high() {
        assert_eq!(pack(0x10, 0x20), 0x0000_0010_0000_0020);
        assert_eq!(
            unpack(pack(0xffff_fff0, 0xffff_ffff)),
            (0xffff_fff0, 0xffff_ffff)
        );
        assert_eq!(pack(0, 0), 0);
    }
}
