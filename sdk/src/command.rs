//! [`Command`]: the command a client sent, with its keys marked by the host. In a plugin the
//! SDK keeps one and decodes every call into it, reusing its buffers.

use std::fmt;

use crate::prefixes::{Condition, KeyPrefixes, encode_prefixes};
use crate::wire::{Action, DecodeError, FLAG_KEY, same_bytes};

/// The Redis 7.0 commands that have subcommands (*container* commands). For these the
/// proxy's command id — what it keeps [remembered verdicts](Command::remember) by — is the
/// name and the subcommand (`config|get` and `config|set` are two ids); for every other
/// command it is the name alone. So a decision that looks at argument 1 of a command may be
/// remembered only if the command is one of these. (A test of the proxy checks this list
/// against its command table.)
pub const CONTAINER_COMMANDS: [&str; 15] = [
    "acl", "client", "cluster", "command", "config", "function", "latency", "memory", "module",
    "object", "pubsub", "script", "slowlog", "xgroup", "xinfo",
];

/// Inserts `prefix` at the start of `buf`, in place (no allocation if `buf` has room): for
/// [`Command::edit_arg`] and [`Command::edit_keys`] callbacks that put a prefix in front.
pub fn prepend(buf: &mut Vec<u8>, prefix: &[u8]) {
    let len = buf.len();
    buf.extend_from_slice(prefix);
    buf.copy_within(..len, prefix.len());
    buf[..prefix.len()].copy_from_slice(prefix);
}

/// Whether `name` (lowercase) is one of the [`CONTAINER_COMMANDS`].
pub fn is_container_command(name: &str) -> bool {
    CONTAINER_COMMANDS.contains(&name)
}

/// Why a [`Command`] could not be changed as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// There is no argument at this index.
    NoSuchArg(usize),
    /// The argument at this index is not a key (for [`Command::set_key`]).
    NotAKey(usize),
    /// The command name (argument 0) cannot be removed.
    RemoveName,
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::NoSuchArg(i) => write!(f, "the command has no argument {i}"),
            CommandError::NotAKey(i) => write!(f, "argument {i} is not a key"),
            CommandError::RemoveName => f.write_str("the command name cannot be removed"),
        }
    }
}

impl std::error::Error for CommandError {}

/// Owned argument buffers with more capacity than this are not kept for the next call.
const KEEP_ARG_CAPACITY: usize = 64 * 1024;
/// Spare owned argument buffers beyond this many are not kept for the next call.
const KEEP_ARGS: usize = 1024;
/// A buffer of decoded arguments with more capacity than this is not kept for the next
/// call.
const KEEP_BYTES: usize = 1024 * 1024;

/// The edit calls a hook made on a command, for choosing how a `Continue` is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Edits {
    /// No edit call.
    #[default]
    None,
    /// One [`Command::prefix_keys`] call and nothing else: sent as a PrefixKeys.
    PrefixKeys,
    /// Anything else (even a call that changed nothing): sent as a rewrite if the command
    /// changed.
    Other,
}

/// Where one argument is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    /// `bytes[start..end]`, or, if `owned`, `owned[start]` (`end` unused). Keys prefixed
    /// with [`Command::prefix_keys`] are in `bytes` too: in place, or after the input.
    start: usize,
    end: usize,
    key: bool,
    owned: bool,
    /// How many bytes right before `start` belong to no argument (the input's fields
    /// around a decoded argument), free to take a prefix in place.
    room: u8,
}

impl Span {
    /// An argument in `owned[at]`.
    fn owned(at: usize, key: bool) -> Span {
        Span {
            start: at,
            end: 0,
            key,
            owned: true,
            room: 0,
        }
    }
}

/// One command as the client sent it: `args[0]` is the name, the host marked which
/// arguments are keys (from Redis's key specs), so a plugin needs no command table.
///
/// Changing a command in [`Plugin::on_command`](crate::Plugin::on_command) and returning
/// [`Verdict::Continue`](crate::Verdict::Continue) sends the host a *rewrite*: the host
/// then routes the new arguments (and re-reads the command table for them, so key
/// positions follow the rewritten command). Arguments added with
/// [`push_arg`](Command::push_arg) are not marked as keys here.
///
/// Reading a command never allocates; neither do [`is_named`](Command::is_named) and the
/// in-place edits [`edit_arg`](Command::edit_arg) and [`edit_keys`](Command::edit_keys)
/// once the SDK's buffers have grown to the plugin's usual commands.
// The SDK copies a call's commands, as the host encoded them, into one buffer (`bytes`)
// once per call, and decoding a command notes where each argument is in it: no copy per
// argument. An argument a plugin edits is copied into a buffer of its own (`owned`, whose
// buffers are kept for the next commands); a key prefix goes in place, into the input's
// length and flag fields before the key, when it fits there.
#[derive(Clone, Default)]
pub struct Command {
    /// The decoded arguments, back to back.
    bytes: Vec<u8>,
    /// One per argument, in order.
    spans: Vec<Span>,
    /// `owned[..n_owned]` hold the arguments edited since decoding (and arguments pushed);
    /// the rest are spare buffers kept for their capacity.
    owned: Vec<Vec<u8>>,
    n_owned: usize,
    /// `bytes[next..input_end]`: the commands of the call's input not decoded yet.
    next: usize,
    input_end: usize,
    /// `args[0]` lowercased.
    name: String,
    /// The `args[0]` `name` was made from (commands repeat: it is made again only when the
    /// name changes).
    name_from: Vec<u8>,
    /// The first 8 bytes of `name_from`, little-endian, zero-padded.
    name_word: u64,
    modified: bool,
    edits: Edits,
    /// The prefix of the one `prefix_keys` call, while `edits` is `Edits::PrefixKeys`.
    prefix: Vec<u8>,
    /// Whether the hook asked to remember its verdict; the condition is `cond`, encoded as
    /// the ABI sends it (a `u32` count, then the prefixes as *bytes* fields), empty for no
    /// condition.
    remember: bool,
    cond: Vec<u8>,
}

impl Command {
    /// No command yet (not even a name), as the SDK keeps it before the first call.
    pub(crate) const fn empty() -> Command {
        Command {
            bytes: Vec::new(),
            spans: Vec::new(),
            owned: Vec::new(),
            n_owned: 0,
            next: 0,
            input_end: 0,
            name: String::new(),
            name_from: Vec::new(),
            name_word: 0,
            modified: false,
            edits: Edits::None,
            prefix: Vec::new(),
            remember: false,
            cond: Vec::new(),
        }
    }

    /// A command with these arguments (`args[0]` is the name) and no key marked; mark keys
    /// with [`with_key`](Command::with_key). For tests: in a plugin the SDK builds it.
    ///
    /// # Panics
    /// If `args` is empty: a command has at least its name.
    pub fn new<I, A>(args: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<Vec<u8>>,
    {
        Self::from_parts(args.into_iter().map(|a| (a.into(), false)).collect())
    }

    /// This command with argument `i` marked as a key, for tests.
    ///
    /// # Panics
    /// If there is no argument `i`.
    pub fn with_key(mut self, i: usize) -> Self {
        assert!(i < self.spans.len(), "the command has no argument {i}");
        self.spans[i].key = true;
        self
    }

    /// A command from `(argument, is_key)` pairs.
    ///
    /// # Panics
    /// If `parts` is empty.
    pub fn from_parts(parts: Vec<(Vec<u8>, bool)>) -> Self {
        assert!(!parts.is_empty(), "a command has at least its name");
        let mut cmd = Command::default();
        for (arg, is_key) in &parts {
            cmd.push_decoded(arg, *is_key);
        }
        cmd.set_name();
        cmd
    }

    /// Empties the command for decoding into it with [`push_decoded`](Self::push_decoded),
    /// keeping its buffers.
    #[cfg(test)]
    pub(crate) fn start_decode(&mut self) {
        self.start_input(&[]);
        self.clear_args();
    }

    /// Takes a copy of `input`, the commands of a call as the host encoded them, for
    /// [`decode_next`](Self::decode_next) to decode one by one.
    #[inline]
    pub(crate) fn start_input(&mut self, input: &[u8]) {
        if self.bytes.capacity() > KEEP_BYTES && input.len() <= KEEP_BYTES {
            self.bytes = Vec::new();
        }
        self.bytes.clear();
        self.bytes.extend_from_slice(input);
        self.next = 0;
        self.input_end = input.len();
    }

    /// Decodes the next command of the input given to [`start_input`](Self::start_input)
    /// into this one, reusing its buffers. On an error the command holds part of it.
    pub(crate) fn decode_next(&mut self) -> Result<(), DecodeError> {
        self.clear_args();
        let buf = &self.bytes[..self.input_end];
        let mut at = self.next;
        let argc = read_u32(buf, at).ok_or(DecodeError::Truncated("argument count"))? as usize;
        at += 4;
        if argc == 0 {
            return Err(DecodeError::EmptyCommand);
        }
        // Every argument takes at least one byte: a larger count cannot be right.
        if argc > buf.len() - at {
            return Err(DecodeError::Truncated("argument count"));
        }
        let mut free = self.next;
        for _ in 0..argc {
            let Some(&flags) = buf.get(at) else {
                return Err(DecodeError::Truncated("argument flags"));
            };
            let len = read_u32(buf, at + 1).ok_or(DecodeError::Truncated("argument"))? as usize;
            let start = at + 5;
            if len > buf.len() - start {
                return Err(DecodeError::Truncated("argument"));
            }
            self.spans.push(Span {
                start,
                end: start + len,
                key: flags & FLAG_KEY != 0,
                owned: false,
                room: (start - free).min(u8::MAX as usize) as u8,
            });
            at = start + len;
            free = at;
        }
        self.next = at;
        self.set_name();
        Ok(())
    }

    /// Forgets the arguments of the last command and what a hook did with it.
    #[inline]
    fn clear_args(&mut self) {
        self.start_call();
        self.spans.clear();
        if self.n_owned > 0 {
            self.release_owned();
        }
    }

    /// Forgets what a hook did with the command last time (edits, remember), keeping the
    /// arguments as they are now: the command a hook is given.
    #[inline]
    pub(crate) fn start_call(&mut self) {
        self.modified = false;
        self.edits = Edits::None;
        self.remember = false;
        self.cond.clear();
    }

    /// Marks every owned buffer spare again, dropping the ones grown too large to keep.
    fn release_owned(&mut self) {
        for buf in &mut self.owned[..self.n_owned] {
            if buf.capacity() > KEEP_ARG_CAPACITY {
                *buf = Vec::new();
            }
        }
        self.owned.truncate(KEEP_ARGS);
        self.n_owned = 0;
    }

    /// Appends an argument, for building a command from its parts.
    fn push_decoded(&mut self, arg: &[u8], is_key: bool) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(arg);
        self.spans.push(Span {
            start,
            end: self.bytes.len(),
            key: is_key,
            owned: false,
            room: 0,
        });
    }

    /// Ends building a command with [`push_decoded`](Self::push_decoded): at least the name
    /// was pushed.
    #[cfg(test)]
    fn finish_decode(&mut self) {
        debug_assert!(!self.spans.is_empty());
        self.set_name();
    }

    #[inline(always)]
    fn set_name(&mut self) {
        let s = self.spans[0];
        let len = s.end.wrapping_sub(s.start);
        // A name of up to 8 bytes with 8 bytes of the buffer from its start (nearly every
        // decoded one) is compared as one word.
        let same = match self.bytes.get(s.start..s.start.wrapping_add(8)) {
            Some(word) if !s.owned && len <= 8 => {
                let word = u64::from_le_bytes(word.try_into().expect("8 bytes"));
                len == self.name_from.len() && word & low_bytes(len) == self.name_word
            }
            _ => same_bytes(self.span_bytes(s), &self.name_from),
        };
        if !same || self.name.is_empty() {
            self.rename();
        }
    }

    #[inline(never)]
    fn rename(&mut self) {
        let raw = slice(&self.bytes, &self.owned, self.spans[0]);
        self.name_from.clear();
        self.name_from.extend_from_slice(raw);
        let mut word = [0u8; 8];
        let n = raw.len().min(8);
        word[..n].copy_from_slice(&raw[..n]);
        self.name_word = u64::from_le_bytes(word);
        self.name.clear();
        if raw.is_ascii() {
            self.name
                .extend(raw.iter().map(|b| char::from(b.to_ascii_lowercase())));
        } else {
            self.name.push_str(&String::from_utf8_lossy(raw));
            self.name.make_ascii_lowercase();
        }
    }

    #[inline(always)]
    fn span_bytes(&self, s: Span) -> &[u8] {
        slice(&self.bytes, &self.owned, s)
    }

    /// The buffer of argument `i` (which must exist), copied into an owned buffer first if
    /// it is still in `bytes`.
    fn owned_arg(&mut self, i: usize) -> &mut Vec<u8> {
        let s = self.spans[i];
        if s.owned {
            return &mut self.owned[s.start];
        }
        let at = self.take_owned();
        let buf = &mut self.owned[at];
        buf.clear();
        buf.extend_from_slice(&self.bytes[s.start..s.end]);
        self.spans[i] = Span::owned(at, s.key);
        &mut self.owned[at]
    }

    /// The index of an owned buffer now in use (a spare one if there is one; its contents
    /// are the caller's to replace).
    fn take_owned(&mut self) -> usize {
        let at = self.n_owned;
        if at == self.owned.len() {
            self.owned.push(Vec::new());
        }
        self.n_owned += 1;
        at
    }

    /// The command name, ASCII-lowercased (`"get"` for `GET` or `Get`). Bytes that are
    /// not UTF-8 become U+FFFD.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this command is `name` (lowercase, e.g. `"get"`), or, for a name with a
    /// `|` such as `"config|get"`, whether it is that command with that subcommand (its
    /// argument 1, compared ignoring ASCII case). `"config"` is every `CONFIG` command.
    /// Does not allocate; the usual way to check a command against a configured list.
    // The cheap rejections (most names of a list differ in length or at the name's end) are
    // inlined into the caller's loop; a WebAssembly call costs more than they do.
    #[inline(always)]
    pub fn is_named(&self, name: &str) -> bool {
        let n = self.name.len();
        match name.as_bytes().get(n) {
            _ if name.len() < n => false,
            None | Some(b'|') => self.is_named_from(name.as_bytes()),
            Some(_) => false,
        }
    }

    /// [`is_named`](Command::is_named) for a `name` that is this command's name's length, or
    /// longer with a `|` right after that.
    #[inline(never)]
    fn is_named_from(&self, name: &[u8]) -> bool {
        let own = self.name.as_bytes();
        let n = own.len();
        if !same_bytes(&name[..n], own) {
            return false;
        }
        match name.get(n + 1..) {
            None => true,
            Some(sub) => self.arg(1).is_some_and(|a| a.eq_ignore_ascii_case(sub)),
        }
    }

    /// `"<name>|<subcommand>"` (both lowercased, e.g. `"object|encoding"`) when the command
    /// has a second argument, else `None`. Whether the command really has subcommands is
    /// the plugin's business: for `GET k` this is `Some("get|k")`. Allocates a `String`:
    /// to compare with a known name, [`is_named`](Command::is_named) does not.
    pub fn name_with_subcommand(&self) -> Option<String> {
        let sub = self.arg(1)?;
        Some(format!("{}|{}", self.name, lowercase(sub)))
    }

    /// The number of arguments, the name included (always at least 1).
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Always `false`: a command has at least its name. (Here for clippy's sake.)
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// All arguments, the name first, as sent (not lowercased).
    pub fn args(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.spans.iter().map(|&s| self.span_bytes(s))
    }

    /// Argument `i` (0 is the name as sent), or `None` past the end.
    pub fn arg(&self, i: usize) -> Option<&[u8]> {
        self.spans.get(i).map(|&s| self.span_bytes(s))
    }

    /// Argument `i` as UTF-8 text, or `None` past the end or if it is not UTF-8.
    pub fn arg_str(&self, i: usize) -> Option<&str> {
        std::str::from_utf8(self.arg(i)?).ok()
    }

    /// Whether the host marked argument `i` as a key (`false` past the end).
    pub fn is_key(&self, i: usize) -> bool {
        self.spans.get(i).is_some_and(|s| s.key)
    }

    /// The keys, as `(argument index, key)` pairs in argument order.
    pub fn keys(&self) -> impl Iterator<Item = (usize, &[u8])> + '_ {
        self.spans
            .iter()
            .enumerate()
            .filter(|(_, s)| s.key)
            .map(|(i, &s)| (i, self.span_bytes(s)))
    }

    /// Replaces argument `i` (replacing 0 renames the command).
    pub fn set_arg(&mut self, i: usize, value: impl Into<Vec<u8>>) -> Result<(), CommandError> {
        self.edits = Edits::Other;
        if i >= self.spans.len() {
            return Err(CommandError::NoSuchArg(i));
        }
        let s = self.spans[i];
        let at = if s.owned { s.start } else { self.take_owned() };
        self.owned[at] = value.into();
        self.spans[i] = Span::owned(at, s.key);
        self.edited(i);
        Ok(())
    }

    /// Changes argument `i` in place (changing 0 renames the command): `f` gets the
    /// argument's buffer, e.g. to insert a prefix without allocating.
    pub fn edit_arg(&mut self, i: usize, f: impl FnOnce(&mut Vec<u8>)) -> Result<(), CommandError> {
        self.edits = Edits::Other;
        if i >= self.spans.len() {
            return Err(CommandError::NoSuchArg(i));
        }
        f(self.owned_arg(i));
        self.edited(i);
        Ok(())
    }

    /// Notes that argument `i` changed.
    fn edited(&mut self, i: usize) {
        if i == 0 {
            self.set_name();
        }
        self.modified = true;
    }

    /// Replaces argument `i`, which must be a key.
    pub fn set_key(&mut self, i: usize, key: impl Into<Vec<u8>>) -> Result<(), CommandError> {
        self.edits = Edits::Other;
        match self.spans.get(i) {
            None => Err(CommandError::NoSuchArg(i)),
            Some(s) if !s.key => Err(CommandError::NotAKey(i)),
            Some(_) => self.set_arg(i, key),
        }
    }

    /// Replaces every key by `f(key)`. (To change keys in place, without a new `Vec` per
    /// key, use [`edit_keys`](Command::edit_keys).)
    pub fn map_keys(&mut self, mut f: impl FnMut(&[u8]) -> Vec<u8>) {
        self.edits = Edits::Other;
        for i in 0..self.spans.len() {
            let s = self.spans[i];
            if s.key {
                let new = f(self.span_bytes(s));
                let _ = self.set_arg(i, new);
            }
        }
    }

    /// Changes every key in place: `f` gets each key's buffer, in argument order.
    pub fn edit_keys(&mut self, mut f: impl FnMut(&mut Vec<u8>)) {
        self.edits = Edits::Other;
        for i in 0..self.spans.len() {
            if self.spans[i].key {
                f(self.owned_arg(i));
                self.modified = true;
            }
        }
    }

    /// Puts `prefix` in front of every key (every argument the host marked as a key), in
    /// place: `GET k` → `GET t1:k`. The hook sees the prefixed keys afterwards, through
    /// [`keys`](Command::keys) and [`args`](Command::args).
    ///
    /// If this is the hook's only edit of the command, a [`Verdict::Continue`] is sent as a
    /// *PrefixKeys* verdict, the prefix alone, instead of a rewrite with every argument: the
    /// host applies it to the keys it marked, and a PrefixKeys verdict may be
    /// [remembered](Command::remember), a rewrite not. It is sent so even for a command
    /// without keys (nothing to prefix), so that a remembered one prefixes the keys of the
    /// next command with this id (`EVAL` with and without keys is one command id). After
    /// any other edit, or a second `prefix_keys`, the command goes as a rewrite, as with
    /// [`edit_keys`](Command::edit_keys).
    ///
    /// Allocates nothing once the SDK's buffers have grown to the plugin's usual commands.
    ///
    /// [`Verdict::Continue`]: crate::Verdict::Continue
    pub fn prefix_keys(&mut self, prefix: &[u8]) {
        if self.edits == Edits::None {
            self.edits = Edits::PrefixKeys;
            self.prefix.clear();
            self.prefix.extend_from_slice(prefix);
        } else {
            self.edits = Edits::Other;
        }
        // The usual case, every key decoded with room for the prefix before it, in a loop
        // of its own: the other cases are left to `prefix_keys_from`.
        let n = prefix.len();
        let mut i = 0;
        while let Some(s) = self.spans.get_mut(i) {
            if s.key {
                if s.owned || n > s.room as usize {
                    self.prefix_keys_from(i, prefix);
                    return;
                }
                s.start -= n;
                s.room -= n as u8;
                let at = s.start;
                self.bytes[at..at + n].copy_from_slice(prefix);
                self.modified = true;
            }
            i += 1;
        }
    }

    /// Puts `prefix` in front of keys `from..`, the first of which has no room for it in
    /// place: each key into a buffer of its own, or copied with the prefix after the input.
    #[inline(never)]
    fn prefix_keys_from(&mut self, from: usize, prefix: &[u8]) {
        for i in from..self.spans.len() {
            let s = self.spans[i];
            if !s.key {
                continue;
            }
            if s.owned {
                prepend(&mut self.owned[s.start], prefix);
            } else {
                // The prefixed key goes after the input, in the same buffer: no owned
                // buffer to take, and the other arguments stay where they are.
                let start = self.bytes.len();
                self.bytes.extend_from_slice(prefix);
                self.bytes.extend_from_within(s.start..s.end);
                self.spans[i] = Span {
                    start,
                    end: self.bytes.len(),
                    key: true,
                    owned: false,
                    room: 0,
                };
            }
            self.modified = true;
        }
    }

    /// Appends an argument (not marked as a key).
    pub fn push_arg(&mut self, value: impl Into<Vec<u8>>) {
        self.edits = Edits::Other;
        let at = self.take_owned();
        self.owned[at] = value.into();
        self.spans.push(Span::owned(at, false));
        self.modified = true;
    }

    /// Removes argument `i` (not the name) and returns it.
    pub fn remove_arg(&mut self, i: usize) -> Result<Vec<u8>, CommandError> {
        self.edits = Edits::Other;
        if i == 0 {
            return Err(CommandError::RemoveName);
        }
        if i >= self.spans.len() {
            return Err(CommandError::NoSuchArg(i));
        }
        let s = self.spans.remove(i);
        self.modified = true;
        Ok(if s.owned {
            std::mem::take(&mut self.owned[s.start])
        } else {
            self.bytes[s.start..s.end].to_vec()
        })
    }

    /// Whether the command was changed since the SDK decoded it (then `Continue` becomes a
    /// rewrite, or a PrefixKeys after [`prefix_keys`](Command::prefix_keys)).
    pub fn is_modified(&self) -> bool {
        self.modified
    }

    /// Asks the host to remember the verdict this hook returns for this command: every later
    /// command with the same command id on this connection gets the same verdict, without a
    /// call into the plugin, until the connection's context changes (an attribute is set or
    /// removed, the client authenticates or `SELECT`s) or the plugin chain is swapped. The
    /// *command id* is the name, and for the [`CONTAINER_COMMANDS`] the subcommand too
    /// (`config|get`).
    ///
    /// A call the host need not make is the cheapest there is: use it whenever it is
    /// correct, which it is only if the verdict (and any [`prefix_keys`](Command::prefix_keys)
    /// edit) depends on nothing but the connection's [`Context`](crate::Context) and the
    /// command id. Never remember a verdict that looks at other arguments, keys included
    /// (see [`remember_if_keys_start_with`](Command::remember_if_keys_start_with) for
    /// those), at the time, at counters or at what the plugin saw before; the host would go
    /// on applying it when the plugin would have decided otherwise.
    ///
    /// Works with every verdict [`on_command`](crate::Plugin::on_command) returns:
    /// `Continue` (unchanged, or after a lone `prefix_keys`), `Reply` and `Reject`. A
    /// `Continue` of a command changed otherwise is a rewrite, which depends on the
    /// arguments and cannot be remembered: it is then sent without the request (so is a
    /// `Continue` after an edit that happened to change nothing, such as `edit_keys` on a
    /// command without keys). A verdict that also sets attributes is applied by the host
    /// and not remembered (the context changes anyway).
    ///
    /// Calling this or `remember_if_keys_start_with` again replaces the earlier choice; the
    /// choice is the hook's, for this command only.
    pub fn remember(&mut self) {
        self.remember = true;
        self.cond.clear();
    }

    /// [`remember`](Command::remember), with a condition: the host applies the verdict only
    /// to a later command (with this command id, on this connection, in this context) whose
    /// keys *all* start with one of `prefixes`; for any other it calls the plugin as usual.
    /// A command without keys meets the condition; the empty prefix matches every key.
    ///
    /// For verdicts that depend on the keys, but only on whether they start with one of a
    /// few prefixes: say, an ACL that admits the keys `app:*` (`["app:"]`). The verdict must
    /// be the one the plugin would give *every* command of this id whose keys meet the
    /// condition, not only this one. The host keeps conditions of up to 4 KiB.
    ///
    /// An empty `prefixes` would be a condition no key meets; the ABI has no way to say so
    /// (no prefixes means no condition), so the verdict is then not remembered at all.
    /// Allocates nothing once the SDK's buffers have grown to the plugin's usual lists.
    /// A plugin that asks with the same prefixes command after command can encode them
    /// once, as a [`KeyPrefixes`], and use
    /// [`remember_if_keys_start_with_any`](Command::remember_if_keys_start_with_any).
    pub fn remember_if_keys_start_with<I>(&mut self, prefixes: I)
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        self.cond.clear();
        encode_prefixes(&mut self.cond, prefixes);
        self.remember = !self.cond.is_empty();
    }

    /// [`remember_if_keys_start_with`](Command::remember_if_keys_start_with) with prefixes
    /// encoded beforehand (say, once per user at configure time): the SDK copies their
    /// encoding as it is, with no work per prefix. Empty `prefixes` are a condition no key
    /// meets, so, as there, the verdict is then not remembered.
    ///
    /// Allocates nothing once the SDK's buffers have grown to the plugin's usual lists.
    #[inline]
    pub fn remember_if_keys_start_with_any(&mut self, prefixes: &KeyPrefixes) {
        self.cond.clear();
        self.cond.extend_from_slice(&prefixes.encoded);
        self.remember = !self.cond.is_empty();
    }

    /// What the hook asked with [`remember`](Command::remember) or
    /// [`remember_if_keys_start_with`](Command::remember_if_keys_start_with): `None` for
    /// nothing, else the condition's prefixes (none: no condition). Whether the request is
    /// sent depends on the verdict too (not with a rewrite); `testing::decide` shows what
    /// is sent.
    pub fn remembered(&self) -> Option<impl ExactSizeIterator<Item = &[u8]> + '_> {
        self.remember.then(|| self.condition().iter())
    }

    /// The remember condition as it is kept.
    #[inline]
    pub(crate) fn condition(&self) -> Condition<'_> {
        Condition {
            encoded: &self.cond,
        }
    }

    /// How a remembered [`Verdict::Continue`](crate::Verdict::Continue) of this command is
    /// sent, for the SDK's fast path: `Some(None)` as a `Continue` (no edit call),
    /// `Some(Some(prefix))` as a `PrefixKeys` (a lone `prefix_keys`), `None` otherwise (not
    /// to be remembered, or anything else).
    #[inline]
    pub(crate) fn remembered_continue(&self) -> Option<Option<&[u8]>> {
        if !self.remember {
            return None;
        }
        match self.edits {
            Edits::None => Some(None),
            Edits::PrefixKeys => Some(Some(&self.prefix)),
            Edits::Other => None,
        }
    }

    /// How [`Verdict::Continue`](crate::Verdict::Continue) is sent for this command.
    #[inline]
    pub(crate) fn continue_action(&self) -> Action<'_> {
        match self.edits {
            Edits::PrefixKeys => Action::PrefixKeys(&self.prefix),
            _ if self.modified => Action::Rewrite(self),
            _ => Action::Continue,
        }
    }

    /// The condition to send with `action`, if the verdict is to be remembered.
    #[inline]
    pub(crate) fn remember_condition(&self, action: &Action<'_>) -> Option<Condition<'_>> {
        if !self.remember {
            return None;
        }
        match action {
            Action::Rewrite(_) => None,
            Action::Continue if self.edits != Edits::None => None,
            _ => Some(self.condition()),
        }
    }
}

impl PartialEq for Command {
    fn eq(&self, other: &Self) -> bool {
        self.args().eq(other.args())
            && (0..self.len()).all(|i| self.is_key(i) == other.is_key(i))
            && self.modified == other.modified
    }
}

impl Eq for Command {}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_list();
        for (i, a) in self.args().enumerate() {
            let text = String::from_utf8_lossy(a);
            if self.is_key(i) {
                d.entry(&format_args!("key {text:?}"));
            } else {
                d.entry(&text);
            }
        }
        d.finish()?;
        if self.modified {
            f.write_str(" (modified)")?;
        }
        Ok(())
    }
}

/// The little-endian `u32` at `buf[at..at + 4]`, if `buf` has it.
#[inline(always)]
fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(b.try_into().expect("4 bytes")))
}

/// A mask of the low `n` bytes of a `u64` (`n` <= 8).
#[inline(always)]
fn low_bytes(n: usize) -> u64 {
    match n {
        8 => u64::MAX,
        n => (1u64 << (n * 8)) - 1,
    }
}

/// The bytes of an argument at `s`.
#[inline(always)]
fn slice<'a>(bytes: &'a [u8], owned: &'a [Vec<u8>], s: Span) -> &'a [u8] {
    if s.owned {
        &owned[s.start]
    } else {
        &bytes[s.start..s.end]
    }
}

impl Command {
    #[cfg(test)]
    fn with_modified(mut self, modified: bool) -> Self {
        self.modified = modified;
        self
    }
}

fn lowercase(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_is_lowercased_and_follows_renames() {
        let mut c = Command::new(["GeT", "k"]).with_key(1);
        assert_eq!(c.name(), "get");
        assert!(!c.is_modified());
        c.set_arg(0, "STRLEN").unwrap();
        assert_eq!(c.name(), "strlen");
        assert!(c.is_modified());
        assert_eq!(
            Command::new(["OBJECT", "Encoding", "k"])
                .name_with_subcommand()
                .as_deref(),
            Some("object|encoding")
        );
        c.edit_arg(0, |n| n.make_ascii_uppercase()).unwrap();
        assert_eq!(c.name(), "strlen");
        assert_eq!(c.arg(0), Some(&b"STRLEN"[..]));
    }

    #[test]
    fn is_named_matches_names_and_subcommands() {
        let c = Command::new(["Config", "GET", "x"]);
        assert!(c.is_named("config"));
        assert!(c.is_named("config|get"));
        assert!(!c.is_named("config|set"));
        assert!(!c.is_named("get"));
        assert!(!c.is_named("conf"));
        assert!(!c.is_named("configx"));
        assert!(!c.is_named("config|g"));
        let c = Command::new(["CONFIG"]);
        assert!(!c.is_named("config|get"));
        assert!(Command::new(["GET", "k"]).is_named("get|k"));
        let c = Command::new([&b"G\xffT"[..]]);
        assert_eq!(c.name(), "g\u{fffd}t");
        assert!(c.is_named("g\u{fffd}t"));
    }

    #[test]
    fn keys_and_edits() {
        let mut c = Command::new(["MSET", "a", "1", "b", "2"])
            .with_key(1)
            .with_key(3);
        assert_eq!(c.keys().map(|(i, _)| i).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(c.set_key(2, "x"), Err(CommandError::NotAKey(2)));
        assert_eq!(c.set_key(9, "x"), Err(CommandError::NoSuchArg(9)));
        assert!(!c.is_modified());
        c.map_keys(|k| [b"t:", k].concat());
        assert_eq!(c.arg(1), Some(&b"t:a"[..]));
        assert_eq!(c.arg(3), Some(&b"t:b"[..]));
        assert_eq!(c.arg(2), Some(&b"1"[..]));
        c.edit_keys(|k| k.push(b'!'));
        assert_eq!(c.arg(3), Some(&b"t:b!"[..]));
        c.push_arg("x");
        assert!(!c.is_key(5));
        assert_eq!(c.remove_arg(0), Err(CommandError::RemoveName));
        assert_eq!(c.remove_arg(1).unwrap(), b"t:a!");
        assert_eq!(c.keys().map(|(i, _)| i).collect::<Vec<_>>(), vec![2]);
        assert_eq!(c.len(), 5);
        assert_eq!(c.edit_arg(5, |_| ()), Err(CommandError::NoSuchArg(5)));
    }

    #[test]
    fn decoding_again_leaves_nothing_of_the_last_command() {
        let mut c = Command::default();
        c.start_decode();
        for (a, k) in [
            (&b"MSET"[..], false),
            (b"a", true),
            (b"1", false),
            (b"b", true),
        ] {
            c.push_decoded(a, k);
        }
        c.finish_decode();
        c.edit_keys(|k| k.insert(0, b'x'));
        c.push_arg("extra");
        assert_eq!(c.len(), 5);

        c.start_decode();
        c.push_decoded(b"get", false);
        c.push_decoded(b"k", false);
        c.finish_decode();
        assert_eq!(c, Command::new(["get", "k"]));
        assert_eq!(c.name(), "get");
        assert_eq!(c.keys().count(), 0, "a key flag of the last command leaked");
        assert!(!c.is_key(3) && c.arg(2).is_none() && !c.is_modified());
        assert_eq!(format!("{c:?}"), r#"["get", "k"]"#);
    }

    /// Every edit, in many orders and over several decodes into one command, against a
    /// plain list of arguments.
    #[test]
    fn edits_match_a_plain_list_of_arguments() {
        let mut c = Command::default();
        let mut seed = 7u32;
        let mut next = |n: u32| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (seed >> 16) % n
        };
        for round in 0..200 {
            let argc = 1 + next(5) as usize;
            let mut model: Vec<(Vec<u8>, bool)> = (0..argc)
                .map(|i| (format!("a{round}.{i}").into_bytes(), i % 2 == 1))
                .collect();
            if round % 2 == 0 {
                c.start_decode();
                for (a, k) in &model {
                    c.push_decoded(a, *k);
                }
                c.finish_decode();
            } else {
                // As the SDK decodes a call's input: keys prefixed in place when they fit.
                let mut input = Vec::new();
                crate::wire::encode_command(&mut input, &Command::from_parts(model.clone()));
                c.start_input(&input);
                c.decode_next().unwrap();
            }
            for step in 0..next(6) {
                let i = next(model.len() as u32 + 1) as usize;
                let v = format!("v{step}").into_bytes();
                match next(8) {
                    7 => {
                        let prefix = &b"0123456789"[..next(11) as usize];
                        c.prefix_keys(prefix);
                        model
                            .iter_mut()
                            .filter(|a| a.1)
                            .for_each(|a| a.0.splice(0..0, prefix.iter().copied()).for_each(drop));
                    }
                    0 => drop(c.set_arg(i, v.clone()).map(|()| model[i].0 = v)),
                    1 => drop(
                        c.edit_arg(i, |a| a.push(b'!'))
                            .map(|()| model[i].0.push(b'!')),
                    ),
                    2 => {
                        c.edit_keys(|k| k.insert(0, b'p'));
                        model
                            .iter_mut()
                            .filter(|a| a.1)
                            .for_each(|a| a.0.insert(0, b'p'));
                    }
                    3 => {
                        c.map_keys(|k| [k, b"s"].concat());
                        model
                            .iter_mut()
                            .filter(|a| a.1)
                            .for_each(|a| a.0.push(b's'));
                    }
                    4 => {
                        c.push_arg(v.clone());
                        model.push((v, false));
                    }
                    5 if i > 0 && i < model.len() => {
                        assert_eq!(c.remove_arg(i).unwrap(), model.remove(i).0);
                    }
                    _ => drop(c.set_key(i, v.clone()).map(|()| model[i].0 = v)),
                }
                assert_eq!(
                    c,
                    Command::from_parts(model.clone()).with_modified(c.modified)
                );
                assert_eq!(c.name(), lowercase(&model[0].0));
            }
        }
    }

    /// How `Continue` is sent: kind 0, 1 (rewrite) or 4 (PrefixKeys, with its prefix).
    fn sent_as(c: &Command) -> (u8, Vec<u8>) {
        match c.continue_action() {
            Action::Continue => (0, vec![]),
            Action::Rewrite(_) => (1, vec![]),
            Action::PrefixKeys(p) => (4, p.to_vec()),
            other => panic!("{other:?}"),
        }
    }

    fn args(c: &Command) -> Vec<String> {
        c.args()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }

    #[test]
    fn prepend_inserts_in_place() {
        let mut b = b"key".to_vec();
        prepend(&mut b, b"t1:");
        assert_eq!(b, b"t1:key");
        let mut e = Vec::new();
        prepend(&mut e, b"p");
        assert_eq!(e, b"p");
        prepend(&mut e, b"");
        assert_eq!(e, b"p");
    }

    #[test]
    fn prefix_keys_alone_is_sent_as_prefix_keys() {
        let mset = || {
            Command::new(["MSET", "a", "1", "b", "2"])
                .with_key(1)
                .with_key(3)
        };
        let mut c = mset();
        assert_eq!(sent_as(&c), (0, vec![]));
        c.prefix_keys(b"t1:");
        assert_eq!(args(&c), ["MSET", "t1:a", "1", "t1:b", "2"]);
        assert_eq!(c.keys().map(|(i, _)| i).collect::<Vec<_>>(), [1, 3]);
        assert!(c.is_modified());
        assert_eq!(sent_as(&c), (4, b"t1:".to_vec()));

        // A second prefix_keys, or any other edit before or after: a rewrite.
        c.prefix_keys(b"x:");
        assert_eq!(args(&c), ["MSET", "x:t1:a", "1", "x:t1:b", "2"]);
        assert_eq!(sent_as(&c), (1, vec![]));
        let edits: [fn(&mut Command); 7] = [
            |c| drop(c.set_arg(2, "9")),
            |c| drop(c.edit_arg(0, |n| n.make_ascii_lowercase())),
            |c| drop(c.set_key(1, "k")),
            |c| c.map_keys(|k| k.to_vec()),
            |c| c.edit_keys(|_| ()),
            |c| c.push_arg("x"),
            |c| drop(c.remove_arg(4)),
        ];
        for edit in edits {
            let mut c = mset();
            edit(&mut c);
            c.prefix_keys(b"t1:");
            assert_eq!(sent_as(&c), (1, vec![]), "{c:?}");
            let mut c = mset();
            c.prefix_keys(b"t1:");
            edit(&mut c);
            assert_eq!(sent_as(&c), (1, vec![]), "{c:?}");
        }

        // No keys: nothing changes, still a PrefixKeys (for a remembered verdict's sake).
        let mut c = Command::new(["PING"]);
        c.prefix_keys(b"t1:");
        assert!(!c.is_modified());
        assert_eq!(sent_as(&c), (4, b"t1:".to_vec()));
    }

    #[test]
    fn each_command_of_an_input_gets_its_own_name() {
        let names = [
            "GET", "SET", "get", "GET", "GETX", "GETEX", "GET", "getdelex", "GETDELEX", "getdele",
            "", "x", "GET",
        ];
        let mut input = Vec::new();
        for name in names {
            crate::wire::encode_command(&mut input, &Command::new([name, "k"]));
        }
        crate::wire::encode_command(&mut input, &Command::new(["Ping"]));
        let mut c = Command::default();
        c.start_input(&input);
        for name in names.iter().chain(&["Ping"]) {
            c.decode_next().unwrap();
            assert_eq!(c.name(), name.to_ascii_lowercase());
            assert!(c.is_named(&name.to_ascii_lowercase()));
        }
    }

    #[test]
    fn prefix_keys_in_place_leaves_the_other_commands_of_the_input_whole() {
        let cmds = [
            Command::new(["MSET", "a", "1", "bb", "22"])
                .with_key(1)
                .with_key(3),
            Command::new(["GET", "k"]).with_key(1),
            Command::new(["PING"]),
            Command::new(["SET", "", "v"]).with_key(1),
        ];
        for prefix in [&b"t:"[..], b"12345", b"123456", b"0123456789"] {
            let mut input = Vec::new();
            for cmd in &cmds {
                crate::wire::encode_command(&mut input, cmd);
            }
            let mut c = Command::default();
            c.start_input(&input);
            for cmd in &cmds {
                c.decode_next().unwrap();
                assert_eq!(&c, cmd);
                c.prefix_keys(prefix);
                c.prefix_keys(b"x");
                let want: Vec<Vec<u8>> = cmd
                    .args()
                    .enumerate()
                    .map(|(i, a)| match cmd.is_key(i) {
                        true => [b"x", prefix, a].concat(),
                        false => a.to_vec(),
                    })
                    .collect();
                assert_eq!(c.args().map(<[u8]>::to_vec).collect::<Vec<_>>(), want);
            }
            assert!(
                c.decode_next().is_err(),
                "the input ends after four commands"
            );
        }
    }

    #[test]
    fn prefix_keys_on_an_edited_key_and_after_a_new_decode() {
        let mut c = Command::new(["GET", "k"]).with_key(1);
        c.edit_keys(|k| k.push(b'!'));
        c.prefix_keys(b"p:");
        assert_eq!(args(&c), ["GET", "p:k!"]);
        c.start_decode();
        c.push_decoded(b"GET", false);
        c.push_decoded(b"other", true);
        c.finish_decode();
        assert_eq!(sent_as(&c), (0, vec![]));
        c.prefix_keys(b"q:");
        assert_eq!(args(&c), ["GET", "q:other"]);
        assert_eq!(sent_as(&c), (4, b"q:".to_vec()));
    }

    #[test]
    fn remember_choices_replace_each_other_and_last_one_call() {
        let strs = |c: &Command| {
            c.remembered().map(|p| {
                p.map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect::<Vec<_>>()
            })
        };
        let mut c = Command::new(["GET", "k"]).with_key(1);
        assert_eq!(strs(&c), None);
        c.remember();
        assert_eq!(strs(&c), Some(vec![]));
        c.remember_if_keys_start_with(["app:", "", "x"]);
        assert_eq!(strs(&c), Some(vec!["app:".into(), "".into(), "x".into()]));
        c.remember_if_keys_start_with([b"b:".to_vec()]);
        assert_eq!(strs(&c), Some(vec!["b:".into()]));
        c.remember_if_keys_start_with(Vec::<&[u8]>::new());
        assert_eq!(strs(&c), None, "no prefix at all: not remembered");
        c.remember_if_keys_start_with(&["a:".to_owned()]);
        c.remember();
        assert_eq!(strs(&c), Some(vec![]));

        c.start_decode();
        c.push_decoded(b"GET", false);
        c.finish_decode();
        assert_eq!(
            strs(&c),
            None,
            "a remember request leaked into the next command"
        );
    }

    #[test]
    fn a_rewrite_is_not_remembered_nor_a_continue_after_an_edit() {
        let cond = |c: &Command, a: &Action<'_>| {
            c.remember_condition(a)
                .map(|c| c.iter().map(<[u8]>::to_vec).collect::<Vec<_>>())
        };
        let mut c = Command::new(["GET", "k"]).with_key(1);
        c.remember_if_keys_start_with(["k"]);
        assert_eq!(cond(&c, &c.continue_action()), Some(vec![b"k".to_vec()]));
        c.prefix_keys(b"t:");
        assert!(matches!(c.continue_action(), Action::PrefixKeys(_)));
        assert_eq!(cond(&c, &c.continue_action()), Some(vec![b"k".to_vec()]));
        c.set_arg(1, "x").unwrap();
        assert!(matches!(c.continue_action(), Action::Rewrite(_)));
        assert_eq!(cond(&c, &c.continue_action()), None);
        // Answering it is remembered whatever the hook changed before.
        assert!(cond(&c, &Action::Reject("NOPERM")).is_some());

        // An edit that changed nothing: a plain Continue, but not a remembered one.
        let mut c = Command::new(["PING"]);
        c.remember();
        c.edit_keys(|k| k.clear());
        assert!(matches!(c.continue_action(), Action::Continue));
        assert_eq!(cond(&c, &c.continue_action()), None);
        assert!(cond(&c, &Action::Reply(b"+PONG\r\n")).is_some());
    }

    #[test]
    fn container_commands_are_the_ones_with_subcommand_ids() {
        assert!(is_container_command("config") && is_container_command("object"));
        assert!(!is_container_command("get") && !is_container_command("CONFIG"));
        assert!(CONTAINER_COMMANDS.is_sorted());
    }

    #[test]
    fn push_arg_after_a_longer_command_takes_a_spare_buffer() {
        let mut c = Command::new(["SET", "k", "v", "EX", "10"]).with_key(1);
        c.start_decode();
        c.push_decoded(b"SET", false);
        c.push_decoded(b"k", true);
        c.finish_decode();
        c.push_arg("w");
        assert_eq!(c.args().collect::<Vec<_>>(), [&b"SET"[..], b"k", b"w"]);
        assert!(c.is_key(1) && !c.is_key(2) && c.is_modified());
    }
}
