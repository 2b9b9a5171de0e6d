//! The safe half of the glue [`export_plugin!`](crate::export_plugin) emits: decode a hook's
//! input, call the [`Plugin`], encode its verdict.
//!
//! [`Runtime`] works on byte slices only, so it runs on the host too: plugin tests can feed
//! it the exact buffers the proxy would send and read back the exact verdict bytes. The
//! pointer handling lives in [`abi`](crate::abi).
//!
//! A runtime keeps one [`Context`], one [`Command`] and one output buffer and decodes every
//! call into them, so once they have grown to the plugin's usual inputs a call allocates
//! nothing the plugin itself does not.

use std::fmt::Display;

use crate::wire::{self, Action, Reader, WriteExt};
use crate::{Command, Context, Plugin, Verdict, log};

/// One plugin instance, the context and command its hooks get, and its output buffer.
#[derive(Debug)]
pub struct Runtime<P> {
    plugin: Option<P>,
    ctx: Context,
    /// The encoded context `ctx` was decoded from; empty if `ctx` is not a whole decode.
    ctx_bytes: Vec<u8>,
    cmd: Command,
    out: Vec<u8>,
}

impl<P> Default for Runtime<P> {
    fn default() -> Self {
        Self::new()
    }
}

/// The result of a hook: `None` is a plain `Continue` (the export returns `0`), `Some` the
/// encoded verdict, valid until the next call.
pub type Output<'a> = Option<&'a [u8]>;

impl<P> Runtime<P> {
    /// A runtime with no plugin configured yet.
    pub const fn new() -> Self {
        Runtime {
            plugin: None,
            ctx: Context::empty(),
            ctx_bytes: Vec::new(),
            cmd: Command::empty(),
            out: Vec::new(),
        }
    }

    /// The configured plugin, if any (for tests).
    pub fn plugin(&self) -> Option<&P> {
        self.plugin.as_ref()
    }
}

impl<P: Plugin> Runtime<P> {
    /// `tessera_on_configure`: builds the plugin from its config bytes. A second call
    /// replaces the instance.
    pub fn on_configure(&mut self, input: &[u8]) -> Output<'_> {
        match P::configure(input) {
            Ok(plugin) => {
                self.plugin = Some(plugin);
                None
            }
            Err(msg) => {
                self.plugin = None;
                emit(&mut self.out, Action::Reject(&msg), &[])
            }
        }
    }

    /// `tessera_subscriptions`: the encoded string list of [`Plugin::subscriptions`].
    pub fn subscriptions(&mut self) -> &[u8] {
        self.out.clear();
        wire::encode_string_list(&mut self.out, P::subscriptions());
        &self.out
    }

    /// `tessera_reply_subscriptions`: the encoded string list of
    /// [`Plugin::reply_subscriptions`].
    pub fn reply_subscriptions(&mut self) -> &[u8] {
        self.out.clear();
        wire::encode_string_list(&mut self.out, P::reply_subscriptions());
        &self.out
    }

    /// `tessera_on_connect`: input is a context.
    pub fn on_connect(&mut self, input: &[u8]) -> Output<'_> {
        let Some(plugin) = self.plugin.as_mut() else {
            return self.not_configured();
        };
        let mut r = Reader::new(input);
        if let Err(e) = decode_context(&mut r, &mut self.ctx, &mut self.ctx_bytes) {
            return self.bad_input("on_connect", e);
        }
        let verdict = plugin.on_connect(&self.ctx);
        emit(&mut self.out, action_of(&verdict), &self.ctx.changes())
    }

    /// `tessera_on_command`: input is a context then a command. A changed command with
    /// `Continue` becomes a `Rewrite` (a `PrefixKeys` if its only change was
    /// [`Command::prefix_keys`]); a verdict the hook asked to [remember](Command::remember)
    /// carries the flag and its condition (not on a `Rewrite`).
    pub fn on_command(&mut self, input: &[u8]) -> Output<'_> {
        let Some(plugin) = self.plugin.as_mut() else {
            return self.not_configured();
        };
        let mut r = Reader::new(input);
        let decoded = decode_context(&mut r, &mut self.ctx, &mut self.ctx_bytes)
            .and_then(|()| wire::decode_command_into(&mut r, &mut self.cmd));
        if let Err(e) = decoded {
            return self.bad_input("on_command", e);
        }
        let verdict = plugin.on_command(&self.ctx, &mut self.cmd);
        self.out.clear();
        if put_command_verdict(&mut self.out, &verdict, &self.cmd, &self.ctx.changes()) {
            Some(&self.out)
        } else {
            None
        }
    }

    /// `tessera_on_commands`: input is a context, a `u32` count N, then N commands; output
    /// is a list of verdicts, one per command decided, in order (`None`: all N continue
    /// unchanged, no attribute changed).
    ///
    /// Each command goes through [`Plugin::on_command`] exactly as in
    /// [`on_command`](Runtime::on_command). The list stops after the first verdict that
    /// sets attributes (the host calls again with the rest of the commands and the new
    /// context), and before a command that cannot be decoded: a call whose *first* command
    /// (or whose context or count) cannot be decoded answers that one command with a
    /// `Reject` (a list of one), like the other hooks on bad input.
    pub fn on_commands(&mut self, input: &[u8]) -> Output<'_> {
        let Some(plugin) = self.plugin.as_mut() else {
            log::error(NOT_CONFIGURED);
            return reject_list(&mut self.out, NOT_CONFIGURED);
        };
        let mut r = Reader::new(input);
        let n = decode_context(&mut r, &mut self.ctx, &mut self.ctx_bytes)
            .and_then(|()| r.u32("command count"));
        let n = match n {
            Ok(0) => return self.bad_list_input("a batch of no commands"),
            Ok(n) => n,
            Err(e) => return self.bad_list_input(e),
        };
        let out = &mut self.out;
        out.clear();
        // Room for the usual entries (a remembered Continue, or a PrefixKeys with a short
        // prefix), so that they need not grow the buffer. A command takes at least
        // MIN_COMMAND_LEN bytes of the input, whatever count it claims; past
        // RESERVED_COMMANDS the buffer grows as it needs.
        let most = (n as usize)
            .min(r.remaining().len() / MIN_COMMAND_LEN)
            .min(RESERVED_COMMANDS);
        out.reserve(4 + most * USUAL_ENTRY_LEN);
        out.put_u32(0); // the count, once known
        let (mut k, mut plain) = (0, true);
        self.cmd.start_input(r.remaining());
        while k < n {
            if let Err(e) = self.cmd.decode_next() {
                if k == 0 {
                    return reject_list(out, &bad_input_message("on_commands", e));
                }
                // Decide the commands before it; the next call starts with it.
                break;
            }
            let verdict = plugin.on_command(&self.ctx, &mut self.cmd);
            k += 1;
            if !self.ctx.has_changes()
                && matches!(verdict, Verdict::Continue)
                && let Some(prefix) = self.cmd.remembered_continue()
            {
                // The usual verdicts, encoded with no length to patch.
                wire::put_remembered_continue_entry(out, prefix, self.cmd.condition());
                plain = false;
                continue;
            }
            let changes = self.ctx.changes();
            let at = out.len();
            out.put_u32(0);
            if !put_command_verdict(out, &verdict, &self.cmd, &changes) {
                continue;
            }
            plain = false;
            wire::patch_len(out, at);
            if !changes.is_empty() {
                // The next command must see the new attributes: the host sends them with
                // the rest of the batch.
                break;
            }
        }
        if plain && k == n {
            return None;
        }
        out[..4].copy_from_slice(&k.to_le_bytes());
        Some(out)
    }

    /// `tessera_on_reply`: input is a context, the command, then the reply as bytes.
    pub fn on_reply(&mut self, input: &[u8]) -> Output<'_> {
        let Some(plugin) = self.plugin.as_mut() else {
            return self.not_configured();
        };
        let mut r = Reader::new(input);
        let decoded = decode_context(&mut r, &mut self.ctx, &mut self.ctx_bytes)
            .and_then(|()| wire::decode_command_into(&mut r, &mut self.cmd))
            .and_then(|()| r.bytes("reply"));
        let reply = match decoded {
            Ok(reply) => reply,
            Err(e) => return self.bad_input("on_reply", e),
        };
        let new = plugin.on_reply(&self.ctx, &self.cmd, reply);
        let action = match &new {
            Some(resp) => Action::Reply(resp),
            None => Action::Continue,
        };
        emit(&mut self.out, action, &self.ctx.changes())
    }

    fn not_configured(&mut self) -> Output<'_> {
        log::error(NOT_CONFIGURED);
        emit(&mut self.out, Action::Reject(NOT_CONFIGURED), &[])
    }

    fn bad_input(&mut self, hook: &str, e: impl Display) -> Output<'_> {
        let msg = bad_input_message(hook, e);
        emit(&mut self.out, Action::Reject(&msg), &[])
    }

    /// [`bad_input`](Self::bad_input) for `on_commands`: a list of one `Reject`.
    fn bad_list_input(&mut self, e: impl Display) -> Output<'_> {
        let msg = bad_input_message("on_commands", e);
        reject_list(&mut self.out, &msg)
    }
}

/// The fewest bytes a command takes in the input: an argument count and one argument (its
/// flags and an empty *bytes* field).
const MIN_COMMAND_LEN: usize = 4 + 1 + 4;
/// The room reserved per command of a batch: enough for the entry of a remembered
/// `Continue` without a condition (13 bytes) or of a PrefixKeys with a prefix of up to 8
/// bytes (25).
const USUAL_ENTRY_LEN: usize = 4 + 1 + 4 + 4 + 8 + 4;
/// The most commands of a batch room is reserved for up front.
const RESERVED_COMMANDS: usize = 1024;

const NOT_CONFIGURED: &str = "ERR plugin called before it was configured";

/// The reject message for an input a hook cannot decode (logged too).
fn bad_input_message(hook: &str, e: impl Display) -> String {
    let msg = format!("ERR plugin cannot decode the input of {hook}: {e}");
    log::error(&msg);
    msg
}

/// Decodes the context at the reader into `ctx`, unless its bytes are those `ctx` was
/// decoded from last time (connections send the same context call after call). An encoded
/// context delimits itself, so input that starts with the bytes of a whole context starts
/// with that very context.
fn decode_context(
    r: &mut Reader<'_>,
    ctx: &mut Context,
    ctx_bytes: &mut Vec<u8>,
) -> Result<(), wire::DecodeError> {
    let input = r.remaining();
    let n = ctx_bytes.len();
    if n > 0 && input.len() >= n && wire::same_bytes(&input[..n], ctx_bytes) {
        ctx.clear_changes();
        return r.skip(n, "context");
    }
    ctx_bytes.clear();
    wire::decode_context_into(r, ctx)?;
    let n = input.len() - r.remaining().len();
    ctx_bytes.extend_from_slice(&input[..n]);
    Ok(())
}

/// Encodes a verdict into `out`; a plain `Continue` is `None`.
fn emit<'o>(out: &'o mut Vec<u8>, action: Action<'_>, attrs: &[(String, String)]) -> Output<'o> {
    if matches!(action, Action::Continue) && attrs.is_empty() {
        return None;
    }
    out.clear();
    wire::encode_action(out, action, None, attrs);
    Some(out)
}

/// Appends the encoding of `on_command`'s `verdict` for `cmd` (the command as the hook left
/// it) to `out` and returns `true`, or appends nothing and returns `false` for a plain
/// `Continue` (unchanged, not remembered, no attribute changed).
pub(crate) fn put_command_verdict(
    out: &mut Vec<u8>,
    verdict: &Verdict,
    cmd: &Command,
    attrs: &[(String, String)],
) -> bool {
    let action = match verdict {
        Verdict::Continue => cmd.continue_action(),
        v => action_of(v),
    };
    let remember = cmd.remember_condition(&action);
    if matches!(action, Action::Continue) && remember.is_none() && attrs.is_empty() {
        return false;
    }
    wire::encode_action(out, action, remember, attrs);
    true
}

/// Encodes a verdict list of one `Reject` into `out`.
fn reject_list<'o>(out: &'o mut Vec<u8>, msg: &str) -> Output<'o> {
    out.clear();
    out.put_u32(1);
    out.put_u32(0);
    wire::encode_action(out, Action::Reject(msg), None, &[]);
    wire::patch_len(out, 4);
    Some(out)
}

fn action_of(v: &Verdict) -> Action<'_> {
    match v {
        Verdict::Continue => Action::Continue,
        Verdict::Reply(resp) => Action::Reply(resp),
        Verdict::Reject(msg) => Action::Reject(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyPrefixes;
    use crate::reply;
    use crate::wire::{WireAction, WireVerdict};
    use std::collections::BTreeMap;

    /// Prefixes keys with `config`, answers `PING` itself, rejects `FLUSHALL`, logs the
    /// user in on `LOGIN name`, and upper-cases `GET` replies.
    struct Demo {
        prefix: Vec<u8>,
    }

    impl Plugin for Demo {
        fn configure(config: &[u8]) -> Result<Self, String> {
            if config.is_empty() {
                return Err("empty config".into());
            }
            Ok(Demo {
                prefix: config.to_vec(),
            })
        }

        fn subscriptions() -> &'static [&'static str] {
            &["get", "ping", "flushall", "login"]
        }

        fn on_connect(&mut self, ctx: &Context) -> Verdict {
            ctx.set_attr("seen", "1");
            Verdict::Continue
        }

        fn on_command(&mut self, ctx: &Context, cmd: &mut Command) -> Verdict {
            match cmd.name() {
                "ping" => Verdict::Reply(reply::simple("PONG")),
                "flushall" => Verdict::Reject("NOPERM no".into()),
                "login" => {
                    ctx.set_attr("user", cmd.arg_str(1).unwrap_or(""));
                    Verdict::Reply(reply::ok())
                }
                _ => {
                    let p = self.prefix.clone();
                    cmd.map_keys(|k| [&p[..], k].concat());
                    Verdict::Continue
                }
            }
        }

        fn on_reply(&mut self, _: &Context, cmd: &Command, reply: &[u8]) -> Option<Vec<u8>> {
            (cmd.name() == "get").then(|| reply.to_ascii_uppercase())
        }
    }

    fn input(cmd: Option<&Command>, reply: Option<&[u8]>) -> Vec<u8> {
        let ctx = Context::new(1, 0, "127.0.0.1:1", "", BTreeMap::new());
        let mut buf = Vec::new();
        wire::encode_context(&mut buf, &ctx);
        if let Some(cmd) = cmd {
            wire::encode_command(&mut buf, cmd);
        }
        if let Some(reply) = reply {
            wire::WriteExt::put_bytes(&mut buf, reply);
        }
        buf
    }

    fn verdict(out: Output<'_>) -> Option<WireVerdict> {
        out.map(|b| wire::decode_verdict(b).unwrap())
    }

    #[test]
    fn configure_errors_are_rejects() {
        let mut rt = Runtime::<Demo>::new();
        assert_eq!(
            verdict(rt.on_configure(b"")).unwrap().action,
            WireAction::Reject("empty config".into())
        );
        assert!(rt.plugin().is_none());
        let cmd = Command::new(["GET", "k"]).with_key(1);
        let v = verdict(rt.on_command(&input(Some(&cmd), None))).unwrap();
        assert!(matches!(v.action, WireAction::Reject(m) if m.contains("configured")));
        assert_eq!(rt.on_configure(b"t:"), None);
        assert!(rt.plugin().is_some());
    }

    #[test]
    fn subscriptions_are_a_string_list() {
        let mut rt = Runtime::<Demo>::new();
        let mut r = Reader::new(rt.subscriptions());
        assert_eq!(wire::decode_string_list(&mut r).unwrap().len(), 4);
    }

    #[test]
    fn hooks_encode_every_verdict_kind() {
        let mut rt = Runtime::<Demo>::new();
        rt.on_configure(b"t:");

        let v = verdict(rt.on_connect(&input(None, None))).unwrap();
        assert_eq!(v.action, WireAction::Continue);
        assert_eq!(v.attrs, vec![("seen".into(), "1".into())]);

        let get = Command::new(["GET", "k"]).with_key(1);
        let v = verdict(rt.on_command(&input(Some(&get), None))).unwrap();
        assert_eq!(
            v.action,
            WireAction::Rewrite(vec![b"GET".to_vec(), b"t:k".to_vec()])
        );

        let keyless = Command::new(["GET"]);
        assert_eq!(rt.on_command(&input(Some(&keyless), None)), None);

        let ping = Command::new(["PING"]);
        let v = verdict(rt.on_command(&input(Some(&ping), None))).unwrap();
        assert_eq!(v.action, WireAction::Reply(b"+PONG\r\n".to_vec()));

        let flush = Command::new(["FLUSHALL"]);
        let v = verdict(rt.on_command(&input(Some(&flush), None))).unwrap();
        assert_eq!(v.action, WireAction::Reject("NOPERM no".into()));

        let login = Command::new(["LOGIN", "bob"]);
        let v = verdict(rt.on_command(&input(Some(&login), None))).unwrap();
        assert_eq!(v.attrs, vec![("user".into(), "bob".into())]);

        let v = verdict(rt.on_reply(&input(Some(&get), Some(b"$1\r\nx\r\n")))).unwrap();
        assert_eq!(v.action, WireAction::Reply(b"$1\r\nX\r\n".to_vec()));
        assert_eq!(rt.on_reply(&input(Some(&ping), Some(b"+PONG\r\n"))), None);
    }

    #[test]
    fn bad_input_is_a_reject_naming_the_hook() {
        let mut rt = Runtime::<Demo>::new();
        rt.on_configure(b"t:");
        let v = verdict(rt.on_command(&input(None, None))).unwrap();
        assert!(
            matches!(&v.action, WireAction::Reject(m) if m.contains("on_command") && m.contains("argument count")),
            "{v:?}"
        );
    }

    /// Records what each call saw, and prefixes keys in place.
    #[derive(Default)]
    struct Recorder {
        seen: Vec<String>,
    }

    impl Plugin for Recorder {
        fn configure(_: &[u8]) -> Result<Self, String> {
            Ok(Recorder::default())
        }

        fn on_command(&mut self, ctx: &Context, cmd: &mut Command) -> Verdict {
            let attrs: Vec<String> = ctx
                .received_attrs()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let args: Vec<String> = cmd
                .args()
                .enumerate()
                .map(|(i, a)| {
                    let key = if cmd.is_key(i) { "*" } else { "" };
                    format!("{key}{}", String::from_utf8_lossy(a))
                })
                .collect();
            self.seen.push(format!(
                "{} db{} {} user={} [{}] {} {}",
                ctx.conn_id(),
                ctx.db(),
                ctx.peer(),
                ctx.user(),
                attrs.join(","),
                cmd.name(),
                args.join(" ")
            ));
            if cmd.is_named("set") {
                cmd.edit_keys(|k| drop(k.splice(0..0, *b"p:")));
            }
            if cmd.is_named("login") {
                ctx.set_attr("user", "zed");
            }
            Verdict::Continue
        }

        fn on_reply(&mut self, ctx: &Context, cmd: &Command, _: &[u8]) -> Option<Vec<u8>> {
            self.seen
                .push(format!("reply {} {} {}", ctx.user(), cmd.name(), cmd.len()));
            None
        }
    }

    fn input_with(
        conn: u64,
        user: &str,
        attrs: &[(&str, &str)],
        cmd: &Command,
        reply: Option<&[u8]>,
    ) -> Vec<u8> {
        let attrs = attrs.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let ctx = Context::new(conn, conn as u32, format!("10.0.0.{conn}:1"), user, attrs);
        let mut buf = Vec::new();
        wire::encode_context(&mut buf, &ctx);
        wire::encode_command(&mut buf, cmd);
        if let Some(reply) = reply {
            wire::WriteExt::put_bytes(&mut buf, reply);
        }
        buf
    }

    #[test]
    fn calls_of_varying_shapes_see_nothing_of_the_previous_one() {
        let mut rt = Runtime::<Recorder>::new();
        rt.on_configure(b"");
        let mset = Command::new(["MSET", "a", "1", "b", "2", "c", "3"])
            .with_key(1)
            .with_key(3)
            .with_key(5);
        let attrs = [("user", "alice"), ("tenant", "t1"), ("x", "y")];
        assert_eq!(
            rt.on_command(&input_with(1, "alice", &attrs, &mset, None)),
            None
        );

        let get = Command::new(["get", "k"]).with_key(1);
        assert_eq!(rt.on_command(&input_with(2, "", &[], &get, None)), None);

        let set = Command::new(["SET", "key", "v"]).with_key(1);
        let v = verdict(rt.on_command(&input_with(3, "bob", &[("user", "bob")], &set, None)));
        assert_eq!(
            v.unwrap().action,
            WireAction::Rewrite(vec![b"SET".to_vec(), b"p:key".to_vec(), b"v".to_vec()])
        );

        let login = Command::new(["LOGIN"]);
        let v = verdict(rt.on_command(&input_with(4, "", &[("a", "1"), ("b", "2")], &login, None)));
        assert_eq!(v.unwrap().attrs, [("user".to_owned(), "zed".to_owned())]);
        // The attribute change of LOGIN does not travel with the next verdict.
        let ping = Command::new(["PING", "hello"]);
        assert_eq!(rt.on_command(&input_with(5, "", &[], &ping, None)), None);
        // Nor does the rewrite of SET: the same command with another key is rewritten anew.
        let set2 = Command::new(["SET", "k2", "v", "EX", "1"]).with_key(1);
        let v = verdict(rt.on_command(&input_with(6, "", &[], &set2, None))).unwrap();
        assert_eq!(
            v.action,
            WireAction::Rewrite(
                ["SET", "p:k2", "v", "EX", "1"]
                    .map(|a| a.as_bytes().to_vec())
                    .to_vec()
            )
        );
        let reply = input_with(7, "carol", &[("user", "carol")], &get, Some(b"+x\r\n"));
        assert_eq!(rt.on_reply(&reply), None);

        assert_eq!(
            rt.plugin().unwrap().seen,
            [
                "1 db1 10.0.0.1:1 user=alice [user=alice,tenant=t1,x=y] mset MSET *a 1 *b 2 *c 3",
                "2 db2 10.0.0.2:1 user= [] get get *k",
                "3 db3 10.0.0.3:1 user=bob [user=bob] set SET *key v",
                "4 db4 10.0.0.4:1 user= [a=1,b=2] login LOGIN",
                "5 db5 10.0.0.5:1 user= [] ping PING hello",
                "6 db6 10.0.0.6:1 user= [] set SET *k2 v EX 1",
                "reply carol get 2",
            ]
        );
    }

    #[test]
    fn a_repeated_context_is_reused_but_never_a_half_decoded_one() {
        let mut rt = Runtime::<Recorder>::new();
        rt.on_configure(b"");
        let get = Command::new(["GET", "k"]).with_key(1);
        let login = Command::new(["LOGIN"]);
        let a = input_with(1, "alice", &[("user", "alice")], &get, None);
        assert_eq!(rt.on_command(&a), None);
        // Same context: LOGIN's attribute change goes with LOGIN's verdict only.
        let a_login = input_with(1, "alice", &[("user", "alice")], &login, None);
        assert!(verdict(rt.on_command(&a_login)).is_some());
        assert_eq!(rt.on_command(&a), None);
        // Same context, broken command: refused, the context stays good.
        let ctx_len = wire::context_len(&a).unwrap();
        let broken = [&a[..ctx_len], &[9, 0, 0, 0][..]].concat();
        assert!(
            verdict(rt.on_command(&broken))
                .is_some_and(|v| matches!(v.action, WireAction::Reject(_)))
        );
        assert_eq!(rt.on_command(&a), None);
        // A context that fails halfway (a user that is not UTF-8) is not reused afterwards.
        let mut bad = Vec::new();
        wire::WriteExt::put_u64(&mut bad, 2);
        wire::WriteExt::put_u32(&mut bad, 5);
        wire::WriteExt::put_bytes(&mut bad, b"10.0.0.2:1");
        wire::WriteExt::put_bytes(&mut bad, b"\xff");
        assert!(
            verdict(rt.on_command(&bad)).is_some_and(|v| matches!(v.action, WireAction::Reject(_)))
        );
        assert_eq!(rt.on_command(&a), None);
        let b = input_with(2, "", &[], &get, None);
        assert_eq!(rt.on_command(&b), None);
        assert_eq!(
            rt.plugin().unwrap().seen,
            [
                "1 db1 10.0.0.1:1 user=alice [user=alice] get GET *k",
                "1 db1 10.0.0.1:1 user=alice [user=alice] login LOGIN",
                "1 db1 10.0.0.1:1 user=alice [user=alice] get GET *k",
                "1 db1 10.0.0.1:1 user=alice [user=alice] get GET *k",
                "1 db1 10.0.0.1:1 user=alice [user=alice] get GET *k",
                "2 db2 10.0.0.2:1 user= [] get GET *k",
            ]
        );
    }

    /// Checks a command against a list, reads the user, prefixes keys in place.
    struct Lean;

    impl Plugin for Lean {
        fn configure(_: &[u8]) -> Result<Self, String> {
            Ok(Lean)
        }

        fn on_command(&mut self, ctx: &Context, cmd: &mut Command) -> Verdict {
            if ["flushall", "config|set"].iter().any(|n| cmd.is_named(n)) {
                return Verdict::reject("NOPERM no");
            }
            if ctx.attr("tenant") == Some("t1") {
                cmd.edit_keys(|k| drop(k.splice(0..0, *b"t1:")));
            }
            Verdict::Continue
        }

        fn on_reply(&mut self, _: &Context, _: &Command, _: &[u8]) -> Option<Vec<u8>> {
            None
        }
    }

    #[test]
    fn a_warm_runtime_allocates_nothing_per_call() {
        let mut rt = Runtime::<Lean>::new();
        rt.on_configure(b"");
        let attrs = [("user", "alice"), ("tenant", "t1")];
        let get = input_with(
            1,
            "alice",
            &attrs,
            &Command::new(["GET", "key:1"]).with_key(1),
            None,
        );
        let set = Command::new(["SET", "key:000000000001", "xxx"]).with_key(1);
        let set = input_with(1, "alice", &attrs, &set, None);
        let ping = input_with(1, "", &[], &Command::new(["PING"]), None);
        let reply = Command::new(["GET", "t1:key:1"]).with_key(1);
        let reply = input_with(1, "alice", &attrs, &reply, Some(b"$3\r\nxxx\r\n"));
        for input in [&get, &set, &ping] {
            rt.on_command(input);
        }
        rt.on_reply(&reply);
        let (_, n) = crate::testing::count_allocations(|| Vec::<u8>::with_capacity(1));
        assert_eq!(n, 1, "the counting allocator is not counting");

        for _ in 0..3 {
            for input in [&set, &get, &ping] {
                let (out, n) = crate::testing::count_allocations(|| rt.on_command(input).is_some());
                assert_eq!(n, 0, "on_command allocated");
                assert_eq!(out, !std::ptr::eq(input, &ping));
            }
            let (_, n) = crate::testing::count_allocations(|| rt.on_reply(&reply).is_none());
            assert_eq!(n, 0, "on_reply allocated");
        }
    }

    fn batch(ctx: &Context, cmds: &[Command]) -> Vec<u8> {
        crate::testing::commands_input(ctx, cmds)
    }

    /// The verdicts of a batch call; `None` (all continue) as N plain `Continue`s.
    fn verdicts(out: Output<'_>, n: usize) -> Vec<WireVerdict> {
        match out {
            Some(b) => wire::decode_verdict_list(b).unwrap(),
            None => vec![plain(); n],
        }
    }

    fn plain() -> WireVerdict {
        WireVerdict {
            action: WireAction::Continue,
            attrs: vec![],
            remember: None,
        }
    }

    /// Runs `cmds` as one batch and one by one, on two runtimes of `P`.
    fn batch_and_singles<P: Plugin>(
        config: &[u8],
        ctx: &Context,
        cmds: &[Command],
    ) -> (Vec<WireVerdict>, Vec<WireVerdict>) {
        let mut rt = Runtime::<P>::new();
        rt.on_configure(config);
        let batched = verdicts(rt.on_commands(&batch(ctx, cmds)), cmds.len());
        let mut rt = Runtime::<P>::new();
        rt.on_configure(config);
        let singles = cmds
            .iter()
            .map(|cmd| {
                verdict(rt.on_command(&crate::testing::command_input(ctx, cmd)))
                    .unwrap_or_else(plain)
            })
            .collect();
        (batched, singles)
    }

    #[test]
    fn a_batch_decides_each_command_as_a_single_call_would() {
        let cmds = [
            Command::new(["GET", "k"]).with_key(1),
            Command::new(["PING"]),
            Command::new(["GET"]),
            Command::new(["FLUSHALL"]),
            Command::new(["MSET", "a", "1", "b", "2"])
                .with_key(1)
                .with_key(3),
            Command::new(["ECHO", "x"]),
        ];
        let ctx = Context::new(1, 0, "127.0.0.1:1", "", BTreeMap::new());
        let (batched, singles) = batch_and_singles::<Demo>(b"t:", &ctx, &cmds);
        assert_eq!(batched, singles);
        let rewrite = |args: &[&str]| {
            WireAction::Rewrite(args.iter().map(|a| a.as_bytes().to_vec()).collect())
        };
        assert_eq!(
            batched.into_iter().map(|v| v.action).collect::<Vec<_>>(),
            [
                rewrite(&["GET", "t:k"]),
                WireAction::Reply(b"+PONG\r\n".to_vec()),
                WireAction::Continue,
                WireAction::Reject("NOPERM no".into()),
                rewrite(&["MSET", "t:a", "1", "t:b", "2"]),
                WireAction::Continue,
            ]
        );

        // Keys edited in place (edit_keys), for a tenant; and a batch of plain Continues.
        let t1 = ctx.clone().with_attr("tenant", "t1");
        let (batched, singles) = batch_and_singles::<Lean>(b"", &t1, &cmds);
        assert_eq!(batched, singles);
        assert_eq!(batched[0].action, rewrite(&["GET", "t1:k"]));
        assert_eq!(batched[3].action, WireAction::Reject("NOPERM no".into()));
        let mut rt = Runtime::<Lean>::new();
        rt.on_configure(b"");
        assert_eq!(rt.on_commands(&batch(&ctx, &cmds[..3])), None);
        assert_eq!(rt.on_commands(&batch(&ctx, &cmds[5..])), None);
        let v = wire::decode_verdict_list(rt.on_commands(&batch(&ctx, &cmds[3..])).unwrap());
        assert_eq!(
            v.unwrap().len(),
            3,
            "a list for every command, even all but one plain"
        );
    }

    #[test]
    fn an_attribute_change_ends_the_batch() {
        let mut rt = Runtime::<Recorder>::new();
        rt.on_configure(b"");
        let set = |k: &str| Command::new(["SET", k, "v"]).with_key(1);
        let get = Command::new(["GET", "k"]).with_key(1);
        let cmds = [set("a"), Command::new(["LOGIN"]), get.clone(), set("b")];
        let anon = Context::new(1, 0, "10.0.0.1:1", "", BTreeMap::new());
        let first = batch(&anon, &cmds);
        let rewrite = |k: &str| WireAction::Rewrite(vec![b"SET".to_vec(), k.into(), b"v".to_vec()]);

        // LOGIN sets `user`: the list stops there, K = 2 of 4.
        let v = wire::decode_verdict_list(rt.on_commands(&first).unwrap()).unwrap();
        assert_eq!(
            v,
            [
                WireVerdict {
                    action: rewrite("p:a"),
                    attrs: vec![],
                    remember: None,
                },
                WireVerdict {
                    action: WireAction::Continue,
                    attrs: vec![("user".into(), "zed".into())],
                    remember: None,
                },
            ]
        );

        // The host calls again with the rest and the new context; the change is not
        // reported again.
        let zed = anon.clone().with_user("zed");
        let v = wire::decode_verdict_list(rt.on_commands(&batch(&zed, &cmds[2..])).unwrap());
        assert_eq!(
            v.unwrap(),
            [
                plain(),
                WireVerdict {
                    action: rewrite("p:b"),
                    attrs: vec![],
                    remember: None,
                }
            ]
        );
        // The old context again (its bytes differ from the cached ones) and the same
        // context twice: nothing of LOGIN's change is left either way.
        assert_eq!(
            rt.on_commands(&batch(&anon, std::slice::from_ref(&get))),
            None
        );
        assert_eq!(
            rt.on_commands(&batch(&anon, std::slice::from_ref(&get))),
            None
        );
        // The first batch again, on a runtime that has seen other contexts since.
        let v = wire::decode_verdict_list(rt.on_commands(&first).unwrap());
        assert_eq!(v.unwrap().len(), 2);
        // The change on the last command of a batch: K = N.
        let tail = batch(&anon, &[get.clone(), Command::new(["LOGIN"])]);
        let v = wire::decode_verdict_list(rt.on_commands(&tail).unwrap()).unwrap();
        assert_eq!((v.len(), v[0].clone(), v[1].attrs.len()), (2, plain(), 1));

        assert_eq!(
            rt.plugin().unwrap().seen,
            [
                "1 db0 10.0.0.1:1 user= [] set SET *a v",
                "1 db0 10.0.0.1:1 user= [] login LOGIN",
                "1 db0 10.0.0.1:1 user=zed [user=zed] get GET *k",
                "1 db0 10.0.0.1:1 user=zed [user=zed] set SET *b v",
                "1 db0 10.0.0.1:1 user= [] get GET *k",
                "1 db0 10.0.0.1:1 user= [] get GET *k",
                "1 db0 10.0.0.1:1 user= [] set SET *a v",
                "1 db0 10.0.0.1:1 user= [] login LOGIN",
                "1 db0 10.0.0.1:1 user= [] get GET *k",
                "1 db0 10.0.0.1:1 user= [] login LOGIN",
            ]
        );
    }

    #[test]
    fn bad_batch_input_rejects_the_first_undecodable_command() {
        let rejected = |out: Output<'_>| -> String {
            let v = wire::decode_verdict_list(out.unwrap()).unwrap();
            match &v[..] {
                [
                    WireVerdict {
                        action: WireAction::Reject(m),
                        attrs,
                        remember: None,
                    },
                ] if attrs.is_empty() => m.clone(),
                other => panic!("not a list of one reject: {other:?}"),
            }
        };
        let mut rt = Runtime::<Recorder>::new();
        let ctx = Context::new(1, 0, "10.0.0.1:1", "", BTreeMap::new());
        let get = Command::new(["GET", "k"]).with_key(1);
        let good = batch(&ctx, &[get.clone(), get.clone()]);
        assert!(rejected(rt.on_commands(&good)).contains("configured"));
        rt.on_configure(b"");

        let ctx_len = wire::context_len(&good).unwrap();
        let none = [&good[..ctx_len], &[0, 0, 0, 0][..]].concat();
        assert!(rejected(rt.on_commands(&none)).contains("no commands"));
        let m = rejected(rt.on_commands(&good[..ctx_len + 2]));
        assert!(
            m.contains("on_commands") && m.contains("command count"),
            "{m}"
        );
        let m = rejected(rt.on_commands(&good[..ctx_len + 6]));
        assert!(m.contains("argument count"), "{m}");
        assert!(rejected(rt.on_commands(&good[..ctx_len - 1])).contains("on_commands"));
        // The second command cut short: the first is decided, the host comes back for it.
        let v = wire::decode_verdict_list(rt.on_commands(&good[..good.len() - 1]).unwrap());
        assert_eq!(v.unwrap(), [plain()]);
        assert_eq!(rt.on_commands(&good), None);
        assert_eq!(rt.plugin().unwrap().seen.len(), 3);
    }

    #[test]
    fn a_warm_runtime_allocates_nothing_per_batch() {
        let mut rt = Runtime::<Lean>::new();
        rt.on_configure(b"");
        let t1 = Context::default()
            .with_user("alice")
            .with_attr("tenant", "t1");
        let cmds = [
            Command::new(["SET", "key:000000000001", "xxx"]).with_key(1),
            Command::new(["GET", "key:1"]).with_key(1),
            Command::new(["PING"]),
            Command::new(["MGET", "a", "b", "c"])
                .with_key(1)
                .with_key(2)
                .with_key(3),
        ];
        let rewrites = batch(&t1, &cmds);
        let plain = batch(&Context::default(), &cmds[1..3]);
        for input in [&rewrites, &plain] {
            rt.on_commands(input);
        }
        let (_, n) = crate::testing::count_allocations(|| Vec::<u8>::with_capacity(1));
        assert_eq!(n, 1, "the counting allocator is not counting");

        for _ in 0..3 {
            for (input, k) in [(&rewrites, 4), (&plain, 0), (&rewrites, 4)] {
                let (out, n) = crate::testing::count_allocations(|| {
                    rt.on_commands(input)
                        .map(|b| u32::from_le_bytes(b[..4].try_into().unwrap()))
                });
                assert_eq!(n, 0, "on_commands allocated");
                assert_eq!(out, (k > 0).then_some(k));
            }
        }
    }

    /// Asks to remember its verdicts: GET/MGET prefixed with `t:`, PING continued, FLUSHALL
    /// rejected and EXISTS continued only for keys under `a:` or `b:`, ECHO answered; SET is rewritten (which
    /// drops the request), LOGIN sets an attribute, anything else continues plainly.
    struct Remembers;

    impl Plugin for Remembers {
        fn configure(_: &[u8]) -> Result<Self, String> {
            Ok(Remembers)
        }

        fn on_command(&mut self, ctx: &Context, cmd: &mut Command) -> Verdict {
            let name = cmd.name();
            if name == "get" || name == "mget" {
                cmd.prefix_keys(b"t:");
                cmd.remember();
                return Verdict::Continue;
            }
            if name == "ping" {
                cmd.remember();
                return Verdict::Continue;
            }
            if name == "flushall" {
                cmd.remember_if_keys_start_with([&b"a:"[..], b"b:"]);
                return Verdict::reject("NOPERM no");
            }
            if name == "exists" {
                cmd.remember_if_keys_start_with([&b"a:"[..], b"b:"]);
                return Verdict::Continue;
            }
            if name == "echo" {
                cmd.remember();
                return Verdict::Reply(reply::simple("x"));
            }
            if name == "set" {
                cmd.remember();
                cmd.prefix_keys(b"t:");
                let _ = cmd.set_arg(2, "v2");
                return Verdict::Continue;
            }
            if name == "login" {
                cmd.remember();
                ctx.set_attr("user", "zed");
            }
            Verdict::Continue
        }
    }

    fn remembered(v: &WireVerdict) -> Option<Vec<&[u8]>> {
        v.remember
            .as_ref()
            .map(|p| p.iter().map(Vec::as_slice).collect())
    }

    #[test]
    fn remembered_verdicts_carry_the_flag_and_prefix_keys_the_prefix() {
        let mut rt = Runtime::<Remembers>::new();
        rt.on_configure(b"");
        let ctx = Context::default();
        let mut call =
            |cmd: &Command| verdict(rt.on_command(&crate::testing::command_input(&ctx, cmd)));

        let v = call(&Command::new(["GET", "k"]).with_key(1)).unwrap();
        assert_eq!(v.action, WireAction::PrefixKeys(b"t:".to_vec()));
        assert_eq!(remembered(&v), Some(vec![]));

        // Remembered with no edit is not a plain Continue any more.
        let v = call(&Command::new(["PING"])).unwrap();
        assert_eq!(
            (v.action.clone(), remembered(&v)),
            (WireAction::Continue, Some(vec![]))
        );
        assert!(v.attrs.is_empty());

        let v = call(&Command::new(["FLUSHALL"])).unwrap();
        assert_eq!(v.action, WireAction::Reject("NOPERM no".into()));
        assert_eq!(remembered(&v), Some(vec![&b"a:"[..], b"b:"]));

        // A rewrite goes without the flag.
        let v = call(&Command::new(["SET", "k", "v"]).with_key(1)).unwrap();
        let want = ["SET", "t:k", "v2"].map(|a| a.as_bytes().to_vec());
        assert_eq!(v.action, WireAction::Rewrite(want.to_vec()));
        assert_eq!(v.remember, None);

        // With attributes: sent as asked (the host applies it and does not remember it).
        let v = call(&Command::new(["LOGIN"])).unwrap();
        assert_eq!(remembered(&v), Some(vec![]));
        assert_eq!(v.attrs, [("user".to_owned(), "zed".to_owned())]);

        // Nothing of it is left for the next command.
        assert_eq!(call(&Command::new(["DEL", "k"]).with_key(1)), None);
        let v = call(&Command::new(["MGET", "a", "b"]).with_key(1).with_key(2)).unwrap();
        assert_eq!(v.action, WireAction::PrefixKeys(b"t:".to_vec()));
        assert_eq!(call(&Command::new(["DEL", "k"]).with_key(1)), None);
    }

    #[test]
    fn a_batch_remembers_per_command() {
        let cmds = [
            Command::new(["PING"]),
            Command::new(["DEL", "k"]).with_key(1),
            Command::new(["GET", "k"]).with_key(1),
            Command::new(["SET", "k", "v"]).with_key(1),
            Command::new(["FLUSHALL"]),
            Command::new(["ECHO", "x"]),
            Command::new(["DEL", "k"]).with_key(1),
            Command::new(["LOGIN"]),
            Command::new(["PING"]),
        ];
        let ctx = Context::default();
        let (batched, singles) = batch_and_singles::<Remembers>(b"", &ctx, &cmds);
        assert_eq!(batched, singles[..8]);
        let got: Vec<_> = batched
            .iter()
            .map(|v| (v.action.kind(), remembered(v).map(|p| p.len())))
            .collect();
        assert_eq!(
            got,
            [
                (0, Some(0)),
                (0, None),
                (4, Some(0)),
                (1, None),
                (3, Some(2)),
                (2, Some(0)),
                (0, None),
                (0, Some(0)),
            ]
        );
        // The plain ones are empty entries.
        let mut rt = Runtime::<Remembers>::new();
        rt.on_configure(b"");
        let out = rt.on_commands(&batch(&ctx, &cmds[..2])).unwrap();
        assert_eq!(&out[out.len() - 4..], [0, 0, 0, 0]);
    }

    #[test]
    fn batch_entries_are_the_bytes_of_single_verdicts() {
        let cmds = [
            Command::new(["PING"]),
            Command::new(["GET", "k"]).with_key(1),
            Command::new(["EXISTS", "a:1", "b:2"])
                .with_key(1)
                .with_key(2),
            Command::new(["FLUSHALL"]),
            Command::new(["SET", "k", "v"]).with_key(1),
            Command::new(["ECHO", "x"]),
            Command::new(["MGET", "a", "b"]).with_key(1).with_key(2),
            Command::new(["DEL", "k"]).with_key(1),
        ];
        let ctx = Context::default().with_user("alice");
        let mut rt = Runtime::<Remembers>::new();
        rt.on_configure(b"");
        let list = rt.on_commands(&batch(&ctx, &cmds)).unwrap().to_vec();
        let mut r = Reader::new(&list);
        assert_eq!(r.u32("count").unwrap() as usize, cmds.len());
        for cmd in &cmds {
            let entry = r.bytes("entry").unwrap();
            let single = rt.on_command(&crate::testing::command_input(&ctx, cmd));
            assert_eq!(entry, single.unwrap_or(&[]), "{cmd:?}");
        }
        r.finish().unwrap();
        // The 13 bytes of a remembered Continue with no condition.
        assert_eq!(&list[4..17], [9, 0, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn key_prefixes_are_the_condition_of_remember_if_keys_start_with() {
        let prefixes: [&[u8]; 3] = [b"app:", b"", b"shared:"];
        let encoded = KeyPrefixes::new(prefixes);
        assert!(!encoded.is_empty());
        assert_eq!(encoded.iter().collect::<Vec<_>>(), prefixes);
        let mut by_list = Command::new(["GET", "app:1"]).with_key(1);
        by_list.remember_if_keys_start_with(prefixes);
        let mut by_encoded = by_list.clone();
        by_encoded.remember_if_keys_start_with_any(&encoded);
        let sent = |cmd: &Command| {
            let mut out = Vec::new();
            assert!(put_command_verdict(&mut out, &Verdict::Continue, cmd, &[]));
            out
        };
        assert_eq!(sent(&by_list), sent(&by_encoded));
        assert_eq!(
            by_encoded.remembered().unwrap().collect::<Vec<_>>(),
            prefixes
        );
        // No prefixes: not remembered, as with an empty list.
        let none = KeyPrefixes::new(Vec::<&[u8]>::new());
        assert!(none.is_empty() && none.iter().next().is_none());
        by_encoded.remember_if_keys_start_with_any(&none);
        assert!(by_encoded.remembered().is_none());
    }

    #[test]
    fn decide_shows_what_the_host_gets() {
        use crate::testing::decide;
        let ctx = Context::default();
        let d = decide(
            &mut Remembers,
            &ctx,
            Command::new(["MGET", "a", "b"]).with_key(1).with_key(2),
        );
        assert_eq!(d.verdict, Verdict::Continue);
        assert_eq!(d.wire.action, WireAction::PrefixKeys(b"t:".to_vec()));
        assert_eq!(d.remembered(), Some(vec![]));
        assert_eq!(d.args().unwrap(), ["MGET", "t:a", "t:b"]);
        assert_eq!(d.command.keys().count(), 2);

        let d = decide(&mut Remembers, &ctx, Command::new(["FLUSHALL"]));
        assert_eq!(d.remembered(), Some(vec!["a:".into(), "b:".into()]));
        assert_eq!((d.args(), d.forwarded), (None, None));

        let d = decide(
            &mut Remembers,
            &ctx,
            Command::new(["SET", "k", "v"]).with_key(1),
        );
        assert_eq!((d.wire.action.kind(), d.remembered()), (1, None));
        assert_eq!(d.args().unwrap(), ["SET", "t:k", "v2"]);

        // Attributes set during the call only, and a command taken as the host sent it.
        let d = decide(&mut Remembers, &ctx, Command::new(["LOGIN"]));
        assert_eq!(d.wire.attrs.len(), 1);
        let mut used = d.command;
        used.remember();
        let d = decide(&mut Remembers, &ctx, used);
        assert_eq!(d.wire.attrs.len(), 1);
        let d = decide(&mut Remembers, &ctx, Command::new(["DEL", "k"]).with_key(1));
        assert!(d.wire.is_plain_continue());
        assert_eq!(d.args().unwrap(), ["DEL", "k"]);
    }

    #[test]
    fn a_warm_runtime_remembers_without_allocating() {
        let mut rt = Runtime::<Remembers>::new();
        rt.on_configure(b"");
        let ctx = Context::default().with_user("alice");
        let cmds = [
            Command::new(["GET", "key:000000000001"]).with_key(1),
            Command::new(["PING"]),
            Command::new(["EXISTS", "a:1", "b:2"])
                .with_key(1)
                .with_key(2),
            Command::new(["MGET", "a", "b", "c"])
                .with_key(1)
                .with_key(2)
                .with_key(3),
            Command::new(["DEL", "k"]).with_key(1),
            Command::new(["GET", "key:2"]).with_key(1),
        ];
        let whole = batch(&ctx, &cmds);
        let singles: Vec<Vec<u8>> = cmds
            .iter()
            .map(|c| crate::testing::command_input(&ctx, c))
            .collect();
        rt.on_commands(&whole);
        for input in &singles {
            rt.on_command(input);
        }
        for _ in 0..3 {
            let (out, n) = crate::testing::count_allocations(|| {
                rt.on_commands(&whole)
                    .map(|b| u32::from_le_bytes(b[..4].try_into().unwrap()))
            });
            assert_eq!((out, n), (Some(6), 0), "on_commands allocated");
            for input in &singles {
                let (_, n) = crate::testing::count_allocations(|| rt.on_command(input).is_some());
                assert_eq!(n, 0, "on_command allocated");
            }
        }
    }
}
