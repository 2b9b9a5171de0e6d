//! The batch runner: the commands of one read, up to an AUTH, HELLO, SELECT or QUIT, run
//! through the chain plugin by plugin, each plugin deciding its part in as few calls as its
//! module allows, or from the verdicts it asked the host to remember.

use std::ops::Range;

use bytes::Bytes;
use tessera_protocol::command;

use super::failure::{error_reply, gating, refuse_gating};
use super::{WorkerChain, set_attrs};
use crate::abi::{self, CallContext, Decision, VerdictList};
use crate::error::CallError;
use crate::link::{FailMode, max_input};
use crate::memory::{Memory, Remembered};
use crate::stats::count_verdict;
use crate::wasm::Hook;

/// Most commands one batch holds, and about the most argument bytes: a batch ends with the
/// command that reaches either.
pub const MAX_BATCH: usize = 128;
pub const MAX_BATCH_BYTES: usize = 64 * 1024;

/// One command of the batch on its way through the chain.
pub(super) struct Item {
    pub(super) args: Vec<Bytes>,
    /// The command id as the client sent it; `None`: not a valid command.
    pub(super) id: Option<u16>,
    /// The command id after the rewrites so far.
    pub(super) cmd: u16,
    pub(super) keys: Vec<usize>,
    pub(super) rewritten: bool,
    /// A plugin's answer: the plugins after it do not see the command.
    pub(super) answer: Option<Bytes>,
    /// A rewrite made it no valid command: the plugins after it do not see it.
    pub(super) ended: bool,
}

/// Connection attributes link `link` set when it decided command `item` of the batch.
pub(super) struct Change {
    pub(super) item: usize,
    pub(super) link: usize,
    pub(super) attrs: Vec<(String, String)>,
}

/// Finds the command id of a command line and puts its key positions in the vector (which
/// it clears first); `None` if the line is not a valid command.
pub type KeyFinder = dyn FnMut(&[Bytes], &mut Vec<usize>) -> Option<u16>;

/// What the chain decided about a command.
pub enum CommandOutcome {
    /// Go on with these arguments; `true` if a plugin rewrote them; the id of their
    /// command, if they are a valid one (its arity checked).
    Continue(Vec<Bytes>, bool, Option<u16>),
    /// Answer with this RESP value without calling Redis; the id is the command's as the
    /// client sent it.
    Answer(u16, Bytes),
}

impl WorkerChain {
    /// Adds a command to the batch `run_batch` runs; returns its command id (`None`: not a
    /// valid command, which the plugins do not see).
    pub(crate) fn push(&mut self, args: Vec<Bytes>, keys: &mut KeyFinder) -> Option<u16> {
        let mut key_pos = self.spare_keys.pop().unwrap_or_default();
        let id = keys(&args, &mut key_pos);
        self.batch_bytes += args.iter().map(|a| a.len() + 5).sum::<usize>();
        self.items.push(Item {
            args,
            id,
            cmd: id.unwrap_or(0),
            keys: key_pos,
            rewritten: false,
            answer: None,
            ended: false,
        });
        id
    }

    /// Takes back the key position vectors of a dispatched batch, to reuse them.
    pub(crate) fn take_back_keys(&mut self, keys: &mut Vec<Vec<usize>>) {
        self.spare_keys.append(keys);
    }

    /// Whether the batch has as many commands or bytes as one may hold.
    pub fn batch_full(&self) -> bool {
        self.items.len() >= MAX_BATCH || self.batch_bytes >= MAX_BATCH_BYTES
    }

    pub fn batch_is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Runs `on_command` through the chain for the batch, plugin by plugin, and appends
    /// the outcomes to `out` in order, emptying the batch. `ctx` is the connection as the
    /// batch starts. Returned: where plugins changed its attributes, as `(i, attributes)`:
    /// the attributes from the `i`-th command of the batch on (set while deciding it),
    /// ascending in `i`; empty if they changed none.
    /// `keys` finds the id and key positions of a rewritten command; a rewrite to no valid
    /// command ends the chain for it (the session then reports the error as usual).
    /// `memory` holds the connection's remembered verdicts: they decide commands without
    /// a call, and verdicts plugins ask to be remembered are added to it.
    /// `out_keys` gets the key positions of each outcome's arguments, in order (found when
    /// the command was pushed, again after a rewrite): dispatch uses them as they are, and
    /// gives the vectors back with [`WorkerChain::take_back_keys`].
    pub(crate) fn run_batch(
        &mut self,
        ctx: &CallContext,
        keys: &mut KeyFinder,
        memory: &mut Memory,
        out: &mut Vec<CommandOutcome>,
        out_keys: &mut Vec<Vec<usize>>,
    ) -> Vec<(usize, Vec<(String, String)>)> {
        self.changes.clear();
        memory.validate(self.version, self.links.len(), ctx);
        for link in 0..self.links.len() {
            self.run_link(link, ctx, keys, memory);
        }
        self.batch_bytes = 0;
        for item in self.items.drain(..) {
            out_keys.push(item.keys);
            out.push(match (item.id, item.answer) {
                (Some(id), Some(reply)) => CommandOutcome::Answer(id, reply),
                _ => {
                    let valid = item.id.is_some() && !item.ended;
                    CommandOutcome::Continue(item.args, item.rewritten, valid.then_some(item.cmd))
                }
            });
        }
        let mut from = Vec::new();
        if self.changes.is_empty() {
            return from;
        }
        let mut attrs = ctx.attrs.to_vec();
        self.changes.sort_by_key(|c| (c.item, c.link));
        let mut changes = self.changes.drain(..).peekable();
        while let Some(c) = changes.next() {
            set_attrs(&mut attrs, c.attrs);
            if changes.peek().is_none_or(|next| next.item != c.item) {
                from.push((c.item, attrs.clone()));
            }
        }
        from
    }

    /// Runs link `q` over the commands of the batch it wants, in as few calls as its module
    /// allows. It sees the attributes the links before it set from the command they set
    /// them on, and its own from the command after. A command it has a remembered verdict
    /// for is decided by that, once the commands before it are decided under the same
    /// attributes.
    fn run_link(&mut self, q: usize, ctx: &CallContext, keys: &mut KeyFinder, memory: &mut Memory) {
        let mut earlier: Vec<usize> = Vec::new();
        earlier.extend((0..self.changes.len()).filter(|&c| self.changes[c].link < q));
        earlier.sort_by_key(|&c| (self.changes[c].item, self.changes[c].link));
        let batched = self.links[q].plugin.batched();
        let mut view: Option<Vec<(String, String)>> = None;
        let mut next = 0;
        let mut group = std::mem::take(&mut self.group);
        group.clear();
        for i in 0..self.items.len() {
            let item = &self.items[i];
            let wanted = item.id.is_some()
                && item.answer.is_none()
                && !item.ended
                && self.links[q].plugin.wants(Hook::Command, item.cmd);
            if !wanted {
                continue;
            }
            if earlier
                .get(next)
                .is_some_and(|&c| self.changes[c].item <= i)
            {
                self.call_group(q, ctx, &mut view, &mut group, keys, memory);
                while let Some(&c) = earlier.get(next).filter(|&&c| self.changes[c].item <= i) {
                    let attrs = self.changes[c].attrs.clone();
                    set_attrs(view.get_or_insert_with(|| ctx.attrs.to_vec()), attrs);
                    next += 1;
                }
            }
            // Only under the attributes the batch started with, which the memory is for.
            let recall = |view: &Option<_>, memory: &Memory, item: &Item| match view {
                Some(_) => None,
                None => memory.recall(q, item.cmd, &item.args, &item.keys).cloned(),
            };
            let mut recalled = recall(&view, memory, &self.items[i]);
            if recalled.is_some() && !group.is_empty() {
                // The commands waiting for a call may set attributes: decide them first.
                self.call_group(q, ctx, &mut view, &mut group, keys, memory);
                recalled = recall(&view, memory, &self.items[i]);
            }
            if let Some(verdict) = recalled {
                self.links[q].counts.remembered += 1;
                self.dirty = true;
                self.apply_remembered(i, verdict, q, keys);
                continue;
            }
            group.push(i);
            if !batched {
                self.call_group(q, ctx, &mut view, &mut group, keys, memory);
            }
        }
        self.call_group(q, ctx, &mut view, &mut group, keys, memory);
        self.group = group;
    }

    /// Applies a verdict of link `q` to command `i` of the batch without calling the plugin.
    fn apply_remembered(&mut self, i: usize, verdict: Remembered, q: usize, keys: &mut KeyFinder) {
        let item = &mut self.items[i];
        let counts = &mut self.links[q].counts;
        match verdict {
            Remembered::Continue => counts.continues += 1,
            Remembered::PrefixKeys(prefix) => {
                counts.rewrites += 1;
                prefix_keys(item, &prefix, &mut self.key_arena, keys);
            }
            Remembered::Reply(reply) => {
                counts.replies += 1;
                item.answer = Some(reply);
            }
            Remembered::Reject(reply) => {
                counts.rejects += 1;
                item.answer = Some(reply);
            }
        }
    }

    /// Has link `q` decide the commands `group` names (indices into the batch), calling it
    /// again while it leaves some undecided; empties `group`.
    fn call_group(
        &mut self,
        q: usize,
        ctx: &CallContext,
        view: &mut Option<Vec<(String, String)>>,
        group: &mut Vec<usize>,
        keys: &mut KeyFinder,
        memory: &mut Memory,
    ) {
        let batched = self.links[q].plugin.batched();
        let max = max_input(&self.links[q].plugin.config);
        let mut done = 0;
        while done < group.len() {
            let todo = &group[done..];
            let attrs = view.as_deref().unwrap_or(ctx.attrs);
            self.scratch.clear();
            abi::encode_context(
                &mut self.scratch,
                &CallContext { attrs, ..*ctx },
                self.links[q].plugin.context_protocol,
            );
            let count_at = self.scratch.len();
            let first = abi::command_len(&self.items[todo[0]].args);
            let alone = count_at + if batched { 4 } else { 0 } + first;
            if alone > max {
                self.items[todo[0]].answer = Some(self.too_large(q, "command", alone));
                done += 1;
                continue;
            }
            if batched {
                self.scratch.extend_from_slice(&[0; 4]);
            }
            // As many commands as fit in one input; the rest go in the next call.
            let mut n = 0;
            for &i in todo {
                let item = &self.items[i];
                let fits = self.scratch.len() + abi::command_len(&item.args) <= max;
                if n > 0 && !(batched && fits) {
                    break;
                }
                abi::encode_command(&mut self.scratch, &item.args, &item.keys);
                n += 1;
            }
            if batched {
                self.scratch[count_at..count_at + 4].copy_from_slice(&(n as u32).to_le_bytes());
            }
            let hook = if batched {
                Hook::Commands
            } else {
                Hook::Command
            };
            let decided = match self.invoke(q, hook) {
                Ok(out) => {
                    let todo = &group[done..done + n];
                    self.apply_verdicts(q, out, todo, view, ctx, keys, memory)
                }
                Err(failure) => Err(failure),
            };
            let decided = match decided {
                Ok(k) => k,
                Err(failure) => {
                    self.links[q].counts.calls += n as u64;
                    if let Err(reply) = self.fail(q, failure) {
                        for &i in &group[done..done + n] {
                            self.items[i].answer = Some(reply.clone());
                        }
                    }
                    n
                }
            };
            done += decided;
        }
        group.clear();
    }

    /// Applies the output of link `q` for the commands `todo` (indices into the batch):
    /// how many it decided, or why the output is malformed. Verdicts the plugin asks to be
    /// remembered go into `memory` when given under the attributes the batch started with.
    #[allow(clippy::too_many_arguments)]
    fn apply_verdicts(
        &mut self,
        q: usize,
        out: Option<Range<usize>>,
        todo: &[usize],
        view: &mut Option<Vec<(String, String)>>,
        ctx: &CallContext,
        keys: &mut KeyFinder,
        memory: &mut Memory,
    ) -> Result<usize, CallError> {
        let batched = self.links[q].plugin.batched();
        let link = &mut self.links[q];
        let Some(out) = out else {
            link.counts.calls += todo.len() as u64;
            link.counts.continues += todo.len() as u64;
            return Ok(todo.len());
        };
        let instance = link.instance.as_ref().expect("an instance answered");
        let bytes = instance.output(out);
        let mut list = if batched {
            Some(VerdictList::new(bytes, todo.len())?)
        } else {
            None
        };
        let k = list.as_ref().map_or(1, VerdictList::remaining);
        for (j, &i) in todo[..k].iter().enumerate() {
            let raw = match &mut list {
                Some(list) => list.next_verdict()?,
                None => bytes,
            };
            let item = &mut self.items[i];
            let v = abi::decode_verdict(raw, &item.args, &self.limits)?;
            if !v.attrs.is_empty() && j + 1 < k {
                return Err(CallError::AttributesNotLast { at: j + 1, of: k });
            }
            // The connection's attributes with this verdict's, checked before any is applied.
            let next_attrs = if v.attrs.is_empty() {
                None
            } else {
                let mut next = view.clone().unwrap_or_else(|| ctx.attrs.to_vec());
                set_attrs(&mut next, v.attrs.clone());
                abi::check_attrs(&next, "would give the connection")?;
                Some(next)
            };
            let counts = &mut link.counts;
            counts.calls += 1;
            if link.plugin.config.settings.fail == FailMode::Open
                && let Some(what) = gating(&v.decision, &v.attrs, Some(item))
            {
                counts.rejects += 1;
                item.answer = Some(refuse_gating(&link.plugin, what));
                continue;
            }
            count_verdict(counts, &v.decision);
            let given = item.cmd;
            let kept = match v.decision {
                Decision::Continue => Some(Remembered::Continue),
                Decision::Rewrite(args) => {
                    let keys_only = only_keys_changed(item, &args);
                    item.args = args;
                    item.rewritten = true;
                    if !keys_only {
                        match keys(&item.args, &mut item.keys) {
                            Some(cmd) => item.cmd = cmd,
                            None => item.ended = true,
                        }
                    }
                    None
                }
                Decision::PrefixKeys(prefix) => {
                    prefix_keys(item, &prefix, &mut self.key_arena, keys);
                    Some(Remembered::PrefixKeys(prefix))
                }
                Decision::Reply(r) => {
                    item.answer = Some(r.clone());
                    Some(Remembered::Reply(r))
                }
                Decision::Reject(msg) => {
                    let r = error_reply(&msg);
                    item.answer = Some(r.clone());
                    Some(Remembered::Reject(r))
                }
            };
            if let (Some(prefixes), Some(kept)) = (v.remember, kept)
                && view.is_none()
                && v.attrs.is_empty()
                && link.plugin.config.settings.remember
            {
                memory.remember(q, given, prefixes, kept);
            }
            if let Some(next) = next_attrs {
                *view = Some(next);
                self.changes.push(Change {
                    item: i,
                    link: q,
                    attrs: v.attrs,
                });
            }
        }
        Ok(k)
    }
}

/// Whether a rewrite of `item` to `new` changed key arguments only, on a command whose
/// key positions do not depend on the keys' bytes: its command and key positions stay.
/// (An unchanged argument of a rewrite shares the old one's bytes.)
fn only_keys_changed(item: &Item, new: &[Bytes]) -> bool {
    let same = |a: &Bytes, b: &Bytes| a.as_ptr() == b.as_ptr() && a.len() == b.len();
    let mut keys = item.keys.iter().peekable();
    new.len() == item.args.len()
        && key_positions_fixed(item.cmd)
        && (0..new.len()).all(|j| {
            while keys.next_if(|&&k| k < j).is_some() {}
            keys.peek() == Some(&&j) || same(&new[j], &item.args[j])
        })
}

/// Whether the key positions of command `cmd` depend only on the number of arguments and
/// their non-key bytes, not on the keys' bytes.
fn key_positions_fixed(cmd: u16) -> bool {
    command::by_id(cmd)
        .key_specs
        .iter()
        .all(|k| matches!(k.begin_search, command::BeginSearch::Index(_)))
}

/// Puts `prefix` in front of every key argument of `item` (a `PrefixKeys` verdict). The new
/// keys are written in `arena`, which is refilled a few KiB at a time.
fn prefix_keys(item: &mut Item, prefix: &[u8], arena: &mut bytes::BytesMut, keys: &mut KeyFinder) {
    const ARENA_BLOCK: usize = 4096;
    if item.keys.is_empty() || prefix.is_empty() {
        return;
    }
    let mut last = None;
    for &k in &item.keys {
        if last == Some(k) {
            continue;
        }
        last = Some(k);
        let len = prefix.len() + item.args[k].len();
        if arena.capacity() < len {
            arena.reserve(len.max(ARENA_BLOCK));
        }
        arena.extend_from_slice(prefix);
        arena.extend_from_slice(&item.args[k]);
        item.args[k] = arena.split().freeze();
    }
    item.rewritten = true;
    if !key_positions_fixed(item.cmd) {
        match keys(&item.args, &mut item.keys) {
            Some(cmd) => item.cmd = cmd,
            None => item.ended = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::{PluginConfig, PluginSettings};
    use crate::load::PluginChain;
    use command::Lookup;
    use tessera_protocol::resp::Limits;

    /// A batch item for `line`, its command and keys found as the session finds them.
    fn item(line: &[&str]) -> Item {
        let args: Vec<Bytes> = line.iter().map(|a| Bytes::from(a.to_string())).collect();
        let Lookup::Found(spec) = command::lookup(&args) else {
            panic!("{line:?} is not a command");
        };
        let mut keys = Vec::new();
        command::key_positions(spec, &args, &mut keys);
        Item {
            args,
            id: Some(spec.id),
            cmd: spec.id,
            keys,
            rewritten: false,
            answer: None,
            ended: false,
        }
    }

    /// The rewrite of `item` that replaces the arguments `changed` (index, new bytes) and
    /// shares the others, as `decode_verdict` does.
    fn rewrite(item: &Item, changed: &[(usize, &str)]) -> Vec<Bytes> {
        let mut new = item.args.clone();
        for &(i, v) in changed {
            new[i] = Bytes::from(v.to_string());
        }
        new
    }

    /// Finds a command's id and keys as the session does.
    fn find(args: &[Bytes], keys: &mut Vec<usize>) -> Option<u16> {
        let Lookup::Found(spec) = command::lookup(args) else {
            return None;
        };
        keys.clear();
        command::key_positions(spec, args, keys);
        Some(spec.id)
    }

    #[test]
    fn a_batch_too_large_for_one_input_is_split_and_a_command_too_large_alone_is_answered() {
        // need-attr continues every command of a call when the connection has an attribute.
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/wat/need-attr.wat");
        let config = PluginConfig {
            name: "need".into(),
            path: path.into(),
            settings: PluginSettings {
                config: String::new(),
                fail: FailMode::Closed,
                memory_limit_mb: 1,
                timeout_ms: 1000,
                remember: true,
            },
        };
        assert_eq!(max_input(&config), 256 * 1024);
        let chain = PluginChain::load(&[config], 1).unwrap();
        let mut w = WorkerChain::new(&chain, Limits::default());
        let line = |args: &[&[u8]]| args.iter().map(|a| Bytes::copy_from_slice(a)).collect();
        let value = vec![b'v'; 100 * 1024];
        for i in 0..10 {
            w.push(
                line(&[b"SET", format!("k{i}").as_bytes(), &value]),
                &mut find,
            );
        }
        w.push(line(&[b"SET", b"huge", &[b'h'; 256 * 1024]]), &mut find);
        w.push(line(&[b"GET", b"k"]), &mut find);
        let attrs = vec![("a".to_string(), "b".to_string())];
        let ctx = CallContext {
            conn_id: 1,
            db: 0,
            peer: "127.0.0.1:1",
            attrs: &attrs,
            protocol: 2,
        };
        let mut out = Vec::new();
        let mut keys = Vec::new();
        let changes = w.run_batch(&ctx, &mut find, &mut Memory::default(), &mut out, &mut keys);
        assert_eq!(keys.len(), 12);
        assert_eq!(keys[11], [1], "GET k: its key");
        assert!(changes.is_empty());
        assert_eq!(out.len(), 12);
        for (i, o) in out.iter().enumerate() {
            match (i, o) {
                (10, CommandOutcome::Answer(_, reply)) => {
                    let text = String::from_utf8_lossy(reply);
                    assert!(
                        text.starts_with("-ERR plugin 'need' cannot take a command of 262")
                            && text.contains("at most 262144 bytes"),
                        "{text}"
                    );
                }
                (10, _) => panic!("the command too large was not answered"),
                (_, CommandOutcome::Continue(_, false, Some(_))) => {}
                _ => panic!("command {i} did not continue"),
            }
        }
        // Two of the 100 KiB commands fit in one input: five calls, then one for GET.
        let counts = &w.links[0].counts;
        assert_eq!(
            (counts.invocations, counts.calls, counts.failures),
            (6, 11, 0)
        );
    }

    #[test]
    fn a_rewrite_of_keys_alone_keeps_the_command_and_its_key_positions() {
        let get = item(&["GET", "k"]);
        assert!(only_keys_changed(&get, &rewrite(&get, &[(1, "t1:k")])));
        // The name, or an argument that is no key, changed: look the command up again.
        assert!(!only_keys_changed(&get, &rewrite(&get, &[(0, "STRLEN")])));
        let set = item(&["SET", "k", "v"]);
        assert!(!only_keys_changed(&set, &rewrite(&set, &[(2, "w")])));
        // Equal bytes that are not shared count as changed (decode_verdict shares them).
        assert!(!only_keys_changed(&set, &rewrite(&set, &[(0, "SET")])));
        let mut longer = set.args.clone();
        longer.push(Bytes::from_static(b"NX"));
        assert!(!only_keys_changed(&set, &longer));
        // numkeys is no key and stays: the positions stay.
        let eval = item(&["EVAL", "return 1", "2", "a", "b", "x"]);
        assert!(only_keys_changed(
            &eval,
            &rewrite(&eval, &[(3, "t:a"), (4, "t:b")])
        ));
        // Keys found after a keyword: a key's bytes could move them, look up again.
        let xread = item(&["XREAD", "STREAMS", "s", "0"]);
        assert_eq!(xread.keys, [2]);
        assert!(!only_keys_changed(&xread, &rewrite(&xread, &[(2, "t:s")])));
    }
}
