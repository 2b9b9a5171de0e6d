//! How a session uses the plugin host: the phases of a connection ([`Phases`]: connect,
//! commands in batches, reply) and what the host keeps per connection ([`ConnCtx`], held
//! by the session as one field, as pingora's `ProxyHttp` keeps its `CTX`).

use std::net::SocketAddr;
use std::vec;

use bytes::Bytes;

use crate::abi::CallContext;
use crate::chain::{CommandOutcome, KeyFinder, WorkerChain};
use crate::memory::Memory;

/// Connection attributes set by plugins, in the order set (`user`, `tenant`, ...).
pub type Attrs = Vec<(String, String)>;

/// The connection as the session knows it, given to every phase.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    pub id: u64,
    /// The selected database.
    pub db: u32,
    /// The protocol of the session's replies (HELLO): 2 or 3.
    pub protocol: u8,
}

/// What the plugin host keeps for one client connection.
#[derive(Default)]
pub struct ConnCtx {
    /// Attributes plugins set on the connection (AUTH without a plugin sets `user` too).
    pub attrs: Attrs,
    /// Whether the worker's chain has any plugin (the session refreshes it once per read).
    pub active: bool,
    /// The peer address as plugins see it.
    peer: String,
    /// The raw requests of the commands in the worker's batch, in order.
    raws: Vec<Option<Bytes>>,
    /// The outcomes of a batch, reused.
    outcomes: Vec<CommandOutcome>,
    /// The key positions of a batch's commands, reused (the inner vectors go back to the
    /// worker's chain).
    keys: Vec<Vec<usize>>,
    /// Verdicts plugins asked the host to remember for this connection.
    memory: Memory,
}

impl ConnCtx {
    /// Names the peer to plugins (before the first phase).
    pub fn set_peer(&mut self, peer: Option<SocketAddr>) {
        self.peer = peer.map(|p| p.to_string()).unwrap_or_default();
    }

    /// Whether a plugin set a (non-empty) `user` attribute: the connection is authenticated.
    pub fn has_user(&self) -> bool {
        self.attrs.iter().any(|(k, v)| k == "user" && !v.is_empty())
    }

    /// Takes back the buffers of a dispatched batch (its key positions already given back
    /// to the chain), to reuse them.
    fn reuse(&mut self, mut decided: Decided) {
        decided.outcomes.clear();
        decided.raws.clear();
        decided.keys.clear();
        self.outcomes = decided.outcomes;
        self.raws = decided.raws;
        self.keys = decided.keys;
    }

    fn call_context(&self, conn: Conn) -> CallContext<'_> {
        CallContext {
            conn_id: conn.id,
            db: conn.db,
            peer: &self.peer,
            attrs: &self.attrs,
            protocol: conn.protocol,
        }
    }
}

/// The outcomes of a batch of commands, in order, with the raw requests they came from, the
/// key positions of their arguments and the attributes plugins set on the way. The session
/// dispatches them ([`Decided::steps`]) and gives the buffers back ([`Phases::reuse`]).
pub struct Decided {
    outcomes: Vec<CommandOutcome>,
    raws: Vec<Option<Bytes>>,
    /// The key positions of each outcome's arguments (none for a command that is no valid one).
    keys: Vec<Vec<usize>>,
    /// `(i, attributes)`: the connection's attributes from the `i`-th command on.
    changes: Vec<(usize, Attrs)>,
}

/// One step of dispatching a batch.
pub enum Step<'a> {
    /// From the next command on, the connection has these attributes (a plugin set them
    /// while deciding it): a pipelined command before an AUTH is not run as its user.
    Attrs(Attrs),
    /// A command as the chain decided it, with its raw request (`None`: re-encode it) and
    /// the key positions of its arguments, as the chain found them: dispatch need not find
    /// them again.
    Command(CommandOutcome, Option<Bytes>, &'a [usize]),
}

impl Decided {
    /// The steps in order, each command after the attributes it is to run under.
    pub fn steps(&mut self) -> Steps<'_> {
        Steps {
            outcomes: self.outcomes.drain(..),
            raws: self.raws.drain(..),
            keys: self.keys.iter(),
            changes: self.changes.drain(..).peekable(),
            next: 0,
        }
    }
}

/// The steps of a [`Decided`] batch.
pub struct Steps<'a> {
    outcomes: vec::Drain<'a, CommandOutcome>,
    raws: vec::Drain<'a, Option<Bytes>>,
    keys: std::slice::Iter<'a, Vec<usize>>,
    changes: std::iter::Peekable<vec::Drain<'a, (usize, Attrs)>>,
    /// The index of the next command.
    next: usize,
}

impl<'a> Iterator for Steps<'a> {
    type Item = Step<'a>;

    fn next(&mut self) -> Option<Step<'a>> {
        if let Some((_, attrs)) = self.changes.next_if(|(from, _)| *from <= self.next) {
            return Some(Step::Attrs(attrs));
        }
        let outcome = self.outcomes.next()?;
        let raw = self.raws.next().flatten();
        let keys = self.keys.next().map_or(&[][..], Vec::as_slice);
        self.next += 1;
        Some(Step::Command(outcome, raw, keys))
    }
}

/// The phases of a client connection that run plugins, in the order a session calls them.
/// The session knows nothing of what runs them (the WebAssembly chain, [`WorkerChain`]).
/// A plugin that fails follows the failure rule (`chain::failure`): fail-closed, the
/// command or connection gets its error reply; fail-open, it goes on.
pub trait Phases {
    /// A client connected, before its first read. `Err(reply)` refuses the connection with
    /// that reply.
    fn on_connect(&mut self, ctx: &mut ConnCtx, conn: Conn) -> Result<(), Bytes>;

    /// Adds a command to the batch [`Phases::on_commands`] runs; `raw` is the request as the
    /// client sent it. Returns its command id (`None`: not a valid command, which plugins do
    /// not see). `keys` finds a command's id and key positions.
    fn push_command(
        &mut self,
        ctx: &mut ConnCtx,
        args: Vec<Bytes>,
        raw: Option<Bytes>,
        keys: &mut KeyFinder,
    ) -> Option<u16>;

    /// Runs `on_command` over the batch, emptying it: the outcomes to dispatch in order.
    /// `conn` is the connection as the batch starts; `keys` finds the id and key positions
    /// of a rewritten command.
    fn on_commands(&mut self, ctx: &mut ConnCtx, conn: Conn, keys: &mut KeyFinder) -> Decided;

    /// Takes back the buffers of a batch the session dispatched, to reuse them.
    fn reuse(&mut self, ctx: &mut ConnCtx, decided: Decided);

    /// A reply to command `cmd` (`args`, its keys at `keys`) is about to be written; the
    /// reply to write instead. `conn.protocol` is the one the command was sent under.
    fn on_reply(
        &mut self,
        ctx: &ConnCtx,
        conn: Conn,
        cmd: u16,
        args: &[Bytes],
        keys: &[usize],
        reply: Bytes,
    ) -> Bytes;
}

impl Phases for WorkerChain {
    fn on_connect(&mut self, ctx: &mut ConnCtx, conn: Conn) -> Result<(), Bytes> {
        let mut attrs = std::mem::take(&mut ctx.attrs);
        let result = self.connect(&ctx.call_context(conn), &mut attrs);
        ctx.attrs = attrs;
        result
    }

    fn push_command(
        &mut self,
        ctx: &mut ConnCtx,
        args: Vec<Bytes>,
        raw: Option<Bytes>,
        keys: &mut KeyFinder,
    ) -> Option<u16> {
        ctx.raws.push(raw);
        self.push(args, keys)
    }

    fn on_commands(&mut self, ctx: &mut ConnCtx, conn: Conn, keys: &mut KeyFinder) -> Decided {
        let mut outcomes = std::mem::take(&mut ctx.outcomes);
        let mut out_keys = std::mem::take(&mut ctx.keys);
        let call = CallContext {
            conn_id: conn.id,
            db: conn.db,
            peer: &ctx.peer,
            attrs: &ctx.attrs,
            protocol: conn.protocol,
        };
        let changes = self.run_batch(&call, keys, &mut ctx.memory, &mut outcomes, &mut out_keys);
        Decided {
            outcomes,
            raws: std::mem::take(&mut ctx.raws),
            keys: out_keys,
            changes,
        }
    }

    fn reuse(&mut self, ctx: &mut ConnCtx, mut decided: Decided) {
        self.take_back_keys(&mut decided.keys);
        ctx.reuse(decided);
    }

    fn on_reply(
        &mut self,
        ctx: &ConnCtx,
        conn: Conn,
        cmd: u16,
        args: &[Bytes],
        keys: &[usize],
        reply: Bytes,
    ) -> Bytes {
        self.reply(&ctx.call_context(conn), cmd, args, keys, reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_steps_through_its_commands_with_each_attribute_change_before_its_command() {
        let answer = |cmd: u16| CommandOutcome::Answer(cmd, Bytes::from_static(b"+OK\r\n"));
        let attrs = |user: &str| vec![("user".to_string(), user.to_string())];
        let mut decided = Decided {
            outcomes: vec![answer(10), answer(11), answer(12)],
            raws: vec![Some(Bytes::from_static(b"raw0")), None, None],
            keys: vec![vec![], vec![1], vec![]],
            changes: vec![(1, attrs("alice")), (1, attrs("bob"))],
        };
        let steps: Vec<String> = decided
            .steps()
            .map(|step| match step {
                Step::Attrs(a) => format!("attrs {}", a[0].1),
                Step::Command(CommandOutcome::Answer(cmd, _), raw, keys) => {
                    format!("command {cmd} raw {} keys {keys:?}", raw.is_some())
                }
                Step::Command(CommandOutcome::Continue(..), ..) => "continue".to_string(),
            })
            .collect();
        assert_eq!(
            steps,
            [
                "command 10 raw true keys []",
                "attrs alice",
                "attrs bob",
                "command 11 raw false keys [1]",
                "command 12 raw false keys []"
            ]
        );
        let mut ctx = ConnCtx::default();
        ctx.reuse(decided);
        assert!(ctx.outcomes.is_empty() && ctx.raws.is_empty() && ctx.keys.is_empty());
    }
}
