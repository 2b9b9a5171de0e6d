//! The session's side of the plugin chain: the context it gives plugins, and where the
//! phases run — `on_connect` before the first read, `on_command` over batches of the
//! commands of a read before they are looked at (so an auth plugin owns AUTH and HELLO),
//! `on_reply` before a reply is written.

use std::time::Instant;

use bytes::Bytes;

use super::{Known, Session};
use crate::command::{self, Class, Local, Lookup, Spec};
use crate::plugin::{CommandOutcome, Conn, Phases, Step};
use crate::resp::{Protocol, Request, convert};
use crate::router::SlotTable;

/// A command whose reply a plugin wants to see.
pub struct ReplyHook {
    cmd: u16,
    args: Vec<Bytes>,
    keys: Vec<usize>,
    /// The session's protocol when the command was sent: its reply's.
    protocol: Protocol,
}

/// The command id of a command line, if it is a valid command, with its key positions put
/// in `keys`.
fn command_keys(args: &[Bytes], keys: &mut Vec<usize>) -> Option<u16> {
    keys.clear();
    let Lookup::Found(spec) = command::lookup(args) else {
        return None;
    };
    if !spec.arity_ok(args.len()) {
        return None;
    }
    command::key_positions(spec, args, keys);
    Some(spec.id)
}

impl Session {
    /// The connection as plugins see it, besides the plugin host's context.
    fn plugin_conn(&self) -> Conn {
        Conn {
            id: self.id,
            db: self.client.db,
            protocol: self.client.protocol.version(),
        }
    }

    /// `Err(reply)`: a plugin refused the connection.
    pub(super) fn plugins_on_connect(&mut self) -> Result<(), Bytes> {
        self.plugins.set_peer(self.peer);
        if !self.worker.refresh_chain() {
            return Ok(());
        }
        let worker = self.worker.clone();
        let mut chain = worker.chain.borrow_mut();
        if !chain.wants_connect() {
            return Ok(());
        }
        let conn = self.plugin_conn();
        let result = chain.on_connect(&mut self.plugins, conn);
        chain.flush_stats();
        self.note_user();
        result
    }

    /// Adds a request to the worker's plugin batch, and runs the batch once it is full or
    /// the request changes what the next command's context is (AUTH, HELLO, SELECT) or
    /// ends the connection (QUIT).
    pub(super) fn batch_request(
        &mut self,
        req: Request,
        table: &SlotTable,
        refusal: Option<&str>,
        now: Instant,
    ) {
        let worker = self.worker.clone();
        let mut chain = worker.chain.borrow_mut();
        let id = chain.push_command(&mut self.plugins, req.args, req.raw, &mut command_keys);
        let ends = id.is_some_and(|id| {
            matches!(
                command::by_id(id).class(),
                Class::Local(Local::Auth | Local::Hello | Local::Select | Local::Quit)
            )
        });
        if ends || chain.batch_full() {
            drop(chain);
            self.run_plugin_batch(table, refusal, now);
        }
    }

    /// Runs the plugin chain over the batch and dispatches its commands in order. Attributes
    /// plugins set take effect at the command they were set on: the commands before an AUTH
    /// that authenticates are not run as its user.
    pub(super) fn run_plugin_batch(
        &mut self,
        table: &SlotTable,
        refusal: Option<&str>,
        now: Instant,
    ) {
        let worker = self.worker.clone();
        let mut chain = worker.chain.borrow_mut();
        if chain.batch_is_empty() {
            return;
        }
        let conn = self.plugin_conn();
        let mut decided = chain.on_commands(&mut self.plugins, conn, &mut command_keys);
        drop(chain);
        for step in decided.steps() {
            match step {
                Step::Attrs(attrs) => {
                    self.plugins.attrs = attrs;
                    self.note_user();
                }
                Step::Command(CommandOutcome::Continue(args, rewritten, cmd), raw, keys) => {
                    let raw = if rewritten { None } else { raw };
                    let known = cmd.map(|c| Known {
                        spec: command::by_id(c),
                        keys,
                    });
                    self.dispatch_found(known, Request { args, raw }, table, refusal, now);
                }
                Step::Command(CommandOutcome::Answer(cmd, reply), ..) => {
                    let seq = self.queue.push(Some(cmd), now);
                    self.queue
                        .complete(seq, convert::for_protocol(reply, self.client.protocol));
                }
            }
        }
        worker.chain.borrow_mut().reuse(&mut self.plugins, decided);
    }

    /// Remembers the command of entry `seq` if a plugin wants its reply; `found`: its key
    /// positions, if the chain found them already.
    pub(super) fn keep_for_reply_hook(
        &mut self,
        seq: u64,
        spec: &Spec,
        req: &Request,
        found: Option<&[usize]>,
    ) {
        if !self.worker.chain.borrow().wants_reply(spec.id) {
            return;
        }
        let keys = match found {
            Some(keys) => keys.to_vec(),
            None => {
                let mut keys = Vec::new();
                command::key_positions(spec, &req.args, &mut keys);
                keys
            }
        };
        let protocol = self.client.protocol;
        self.queue.entry(seq).reply_hook = Some(Box::new(ReplyHook {
            cmd: spec.id,
            args: req.args.clone(),
            keys,
            protocol,
        }));
    }

    /// The reply after the plugins' `on_reply`, in the protocol its command was sent under
    /// (a HELLO after it does not change it).
    pub(super) fn plugins_on_reply(&mut self, hook: &ReplyHook, reply: Bytes) -> Bytes {
        let worker = self.worker.clone();
        let mut chain = worker.chain.borrow_mut();
        let conn = Conn {
            protocol: hook.protocol.version(),
            ..self.plugin_conn()
        };
        let reply = chain.on_reply(&self.plugins, conn, hook.cmd, &hook.args, &hook.keys, reply);
        convert::for_protocol(reply, hook.protocol)
    }

    /// A plugin that set the `user` attribute has authenticated the connection.
    fn note_user(&mut self) {
        if self.plugins.has_user() {
            self.client.authenticated = true;
        }
        self.publish_client();
    }
}
