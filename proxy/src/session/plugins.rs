//! The session's side of the plugin chain: the context it gives plugins, and where the
//! phases run — `on_connect` before the first read, `on_command` before a command is looked
//! at (so an auth plugin owns AUTH and HELLO), `on_reply` before a reply is written.

use bytes::Bytes;

use super::Session;
use crate::command::{self, Lookup, Spec};
use crate::plugin::{CallContext, CommandOutcome};
use crate::resp::Request;

/// A command whose reply a plugin wants to see.
pub struct ReplyHook {
    cmd: u16,
    args: Vec<Bytes>,
    keys: Vec<usize>,
}

/// The command id of a command line, if it is a valid command, with its key positions put
/// in `keys`.
fn command_keys(args: &[Bytes], keys: &mut Vec<usize>) -> Option<u16> {
    let Lookup::Found(spec) = command::lookup(args) else {
        return None;
    };
    if !spec.arity_ok(args.len()) {
        return None;
    }
    keys.clear();
    command::key_positions(spec, args, keys);
    Some(spec.id)
}

impl Session {
    fn call_context(&self) -> CallContext<'_> {
        CallContext {
            conn_id: self.id,
            db: self.db,
            peer: &self.peer_text,
            attrs: &self.attrs,
        }
    }

    /// `Err(reply)`: a plugin refused the connection.
    pub(super) fn plugins_on_connect(&mut self) -> Result<(), Bytes> {
        if !self.worker.refresh_chain() {
            return Ok(());
        }
        let worker = self.worker.clone();
        let mut chain = worker.chain.borrow_mut();
        if !chain.wants_connect() {
            return Ok(());
        }
        let mut attrs = std::mem::take(&mut self.attrs);
        let result = chain.on_connect(&self.call_context(), &mut attrs);
        chain.flush_stats();
        self.attrs = attrs;
        self.note_user();
        result
    }

    /// Runs the chain; `Err((command id, reply))` when a plugin answered the command itself.
    pub(super) fn plugins_on_command(
        &mut self,
        req: Request,
    ) -> Result<Request, (Option<u16>, Bytes)> {
        let worker = self.worker.clone();
        let mut chain = worker.chain.borrow_mut();
        let mut attrs = std::mem::take(&mut self.attrs);
        let outcome = chain.on_command(
            &self.call_context(),
            &mut attrs,
            req.args,
            &mut command_keys,
        );
        self.attrs = attrs;
        self.note_user();
        match outcome {
            CommandOutcome::Continue(args, false) => Ok(Request { args, raw: req.raw }),
            CommandOutcome::Continue(args, true) => Ok(Request { args, raw: None }),
            CommandOutcome::Answer(cmd, reply) => Err((Some(cmd), reply)),
        }
    }

    /// Remembers the command of entry `seq` if a plugin wants its reply.
    pub(super) fn keep_for_reply_hook(&mut self, seq: u64, spec: &Spec, req: &Request) {
        if !self.worker.chain.borrow().wants_reply(spec.id) {
            return;
        }
        let mut keys = Vec::new();
        command::key_positions(spec, &req.args, &mut keys);
        self.entry(seq).reply_hook = Some(Box::new(ReplyHook {
            cmd: spec.id,
            args: req.args.clone(),
            keys,
        }));
    }

    pub(super) fn plugins_on_reply(&mut self, hook: &ReplyHook, reply: Bytes) -> Bytes {
        let worker = self.worker.clone();
        let mut chain = worker.chain.borrow_mut();
        chain.on_reply(
            &self.call_context(),
            hook.cmd,
            &hook.args,
            &hook.keys,
            reply,
        )
    }

    /// A plugin that set the `user` attribute has authenticated the connection.
    fn note_user(&mut self) {
        if self.attrs.iter().any(|(k, v)| k == "user" && !v.is_empty()) {
            self.authenticated = true;
        }
    }
}
