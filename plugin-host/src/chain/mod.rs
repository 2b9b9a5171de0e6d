//! One worker's instances of the chain, and the phases run through them: `on_connect`,
//! `on_command` over batches ([`batch`]), `on_reply`. What a failing call does is the
//! failure rule ([`failure`]).

mod batch;
mod failure;

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tessera_protocol::resp::Limits;

use crate::abi::{self, CallContext, Decision, Verdict};
use crate::error::CallError;
use crate::link::{max_input, timeout};
use crate::load::{LoadedPlugin, PluginChain, new_instance};
use crate::stats::{Counts, count_verdict};
use crate::wasm::{Hook, Instance};
use batch::{Change, Item};
pub use batch::{CommandOutcome, KeyFinder, MAX_BATCH, MAX_BATCH_BYTES};
use failure::error_reply;

/// One worker's instances of the current chain.
pub struct WorkerChain {
    pub version: u64,
    links: Vec<Link>,
    scratch: Vec<u8>,
    /// The batch of commands `run_batch` runs the chain over.
    items: Vec<Item>,
    /// About the argument bytes of `items`.
    batch_bytes: usize,
    /// Attribute changes plugins made during the batch.
    changes: Vec<Change>,
    /// Key position vectors of finished batches, reused.
    spare_keys: Vec<Vec<usize>>,
    /// Where keys given a prefix are written: one allocation for many keys.
    key_arena: bytes::BytesMut,
    /// The commands of one call, reused.
    group: Vec<usize>,
    /// Some counts are not flushed yet.
    dirty: bool,
    /// The bounds of a client's command, which a rewrite is held to (the proxy's config).
    limits: Limits,
}

struct Link {
    plugin: Arc<LoadedPlugin>,
    counts: Counts,
    instance: Option<Instance>,
    /// When the instance was last (re-)created, for the rate limit.
    created: Option<Instant>,
}

impl WorkerChain {
    /// A worker's instances of `chain` (none created yet); `limits` are the bounds of a
    /// client's command, which plugin rewrites are held to.
    pub fn new(chain: &PluginChain, limits: Limits) -> WorkerChain {
        WorkerChain {
            version: chain.version,
            links: chain
                .plugins
                .iter()
                .map(|p| Link {
                    counts: Counts::default(),
                    plugin: p.clone(),
                    instance: None,
                    created: None,
                })
                .collect(),
            scratch: Vec::new(),
            items: Vec::new(),
            batch_bytes: 0,
            changes: Vec::new(),
            spare_keys: Vec::new(),
            key_arena: bytes::BytesMut::new(),
            group: Vec::new(),
            dirty: false,
            limits,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// Whether any plugin wants the reply to command `cmd`.
    pub fn wants_reply(&self, cmd: u16) -> bool {
        self.links.iter().any(|l| l.plugin.wants(Hook::Reply, cmd))
    }

    /// A client connected (`on_connect`), its attributes in `attrs`, not `ctx`. `Err(reply)`
    /// refuses the connection with that error reply.
    pub(crate) fn connect(
        &mut self,
        ctx: &CallContext,
        attrs: &mut Vec<(String, String)>,
    ) -> Result<(), Bytes> {
        for i in 0..self.links.len() {
            if !self.links[i].plugin.wants(Hook::Connect, 0) {
                continue;
            }
            let ctx = CallContext { attrs, ..*ctx };
            self.scratch.clear();
            abi::encode_context(
                &mut self.scratch,
                &ctx,
                self.links[i].plugin.context_protocol,
            );
            if self.scratch.len() > max_input(&self.links[i].plugin.config) {
                return Err(self.too_large(i, "connection context", self.scratch.len()));
            }
            match self.call(i, Hook::Connect, &[]) {
                Ok(v) => {
                    if let Some(what) = self.gates_open(i, &Decision::Continue, &v.attrs, None) {
                        return Err(self.refuse_gating(i, what));
                    }
                    let mut next = attrs.clone();
                    set_attrs(&mut next, v.attrs);
                    if let Err(e) = abi::check_attrs(&next, "would give the connection") {
                        self.fail(i, e.into())?;
                        continue;
                    }
                    *attrs = next;
                    match v.decision {
                        Decision::Continue | Decision::Rewrite(_) | Decision::PrefixKeys(_) => {}
                        Decision::Reply(r) => return Err(r),
                        Decision::Reject(msg) => return Err(error_reply(&msg)),
                    }
                }
                Err(reply) => return Err(reply),
            }
        }
        Ok(())
    }

    /// Whether any plugin wants `on_connect`.
    pub fn wants_connect(&self) -> bool {
        self.links.iter().any(|l| l.plugin.wants(Hook::Connect, 0))
    }

    /// Runs `on_reply` through the chain, last plugin first; returns the reply to send.
    pub(crate) fn reply(
        &mut self,
        ctx: &CallContext,
        cmd: u16,
        args: &[Bytes],
        keys: &[usize],
        mut reply: Bytes,
    ) -> Bytes {
        // Some((n, p)): `scratch` starts with the encoded context (with the protocol if p)
        // and command, n bytes.
        let mut encoded: Option<(usize, bool)> = None;
        for i in (0..self.links.len()).rev() {
            if !self.links[i].plugin.wants(Hook::Reply, cmd) {
                continue;
            }
            let with_protocol = self.links[i].plugin.context_protocol;
            match encoded {
                Some((n, p)) if p == with_protocol => self.scratch.truncate(n),
                _ => {
                    self.scratch.clear();
                    abi::encode_context(&mut self.scratch, ctx, with_protocol);
                    abi::encode_command(&mut self.scratch, args, keys);
                    encoded = Some((self.scratch.len(), with_protocol));
                }
            }
            abi::encode_reply(&mut self.scratch, &reply);
            if self.scratch.len() > max_input(&self.links[i].plugin.config) {
                return self.too_large(i, "reply", self.scratch.len());
            }
            match self.call(i, Hook::Reply, &[]) {
                Ok(v) => match v.decision {
                    Decision::Continue => {}
                    Decision::Reply(r) => reply = r,
                    other => {
                        if let Err(r) = self.fail(i, CallError::ReplyAnswer(other)) {
                            return r;
                        }
                    }
                },
                Err(r) => return r,
            }
        }
        reply
    }

    /// Calls hook `hook` of link `i` with the input in `scratch` (which holds the command
    /// `args`, if any). A failure is handled by the failure rule: `Err(reply)` when
    /// fail-closed, `Ok(Continue)` when fail-open.
    fn call(&mut self, i: usize, hook: Hook, args: &[Bytes]) -> Result<Verdict, Bytes> {
        let counts = &mut self.links[i].counts;
        match hook {
            Hook::Connect => counts.connect_calls += 1,
            Hook::Reply => counts.reply_calls += 1,
            _ => {}
        }
        let decoded = self.invoke(i, hook).and_then(|out| {
            let link = &mut self.links[i];
            link.counts.calls += 1;
            let v = match out {
                None => Verdict::CONTINUE,
                Some(at) => {
                    let instance = link.instance.as_ref().expect("an instance answered");
                    abi::decode_verdict(instance.output(at), args, &self.limits)?
                }
            };
            count_verdict(&mut link.counts, &v.decision);
            Ok(v)
        });
        match decoded {
            Ok(v) => Ok(v),
            Err(failure) => self.fail(i, failure).map(|()| Verdict::CONTINUE),
        }
    }

    /// Calls hook `hook` of link `i` with the input in `scratch`, creating its instance
    /// first if there is none; the place of the output in the instance's memory.
    /// `Err`: the call failed, or was not made (the instance is restarting).
    fn invoke(&mut self, i: usize, hook: Hook) -> Result<Option<Range<usize>>, CallError> {
        let link = &mut self.links[i];
        if link.instance.is_none() {
            let recent = link
                .created
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1));
            if recent {
                return Err(CallError::Restarting);
            }
            link.created = Some(Instant::now());
            match new_instance(&link.plugin.module, &link.plugin.config) {
                Ok(inst) => link.instance = Some(inst),
                Err(e) => return Err(CallError::Instantiate(e)),
            }
        }
        let instance = link.instance.as_mut().expect("instance exists");
        let start = Instant::now();
        let result = instance.call_raw(hook, &self.scratch, timeout(&link.plugin.config));
        link.counts.invocations += 1;
        link.counts.nanos += start.elapsed().as_nanos() as u64;
        self.dirty = true;
        Ok(result?)
    }

    /// Adds this worker's counts since the last flush to the plugins' shared counters. Called
    /// once per batch of commands, so the shared cache lines are not written on every call.
    pub fn flush_stats(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        for link in &mut self.links {
            link.counts.flush_into(&link.plugin.stats);
        }
    }
}

/// Sets the attributes `new` (an empty value removes one): the last value given for a key
/// wins, and the keys set go to the end in the order given. Linear in both lists.
fn set_attrs(attrs: &mut Vec<(String, String)>, new: Vec<(String, String)>) {
    let mut seen = std::collections::HashSet::with_capacity(new.len());
    let mut kept: Vec<(String, String)> = new
        .into_iter()
        .rev()
        .filter(|(k, _)| seen.insert(k.clone()))
        .collect();
    attrs.retain(|(k, _)| !seen.contains(k));
    kept.reverse();
    attrs.extend(kept.into_iter().filter(|(_, v)| !v.is_empty()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_attrs_keeps_the_last_value_of_a_key_and_removes_empty_ones() {
        let pairs = |p: &[(&str, &str)]| -> Vec<(String, String)> {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let mut attrs = pairs(&[("user", "bob"), ("tenant", "t1"), ("x", "1")]);
        set_attrs(
            &mut attrs,
            pairs(&[("a", "1"), ("tenant", ""), ("user", "alice"), ("a", "2")]),
        );
        assert_eq!(attrs, pairs(&[("x", "1"), ("user", "alice"), ("a", "2")]));
    }
}
