//! The safe half of the glue [`export_plugin!`](crate::export_plugin) emits: decode a hook's
//! input, call the [`Plugin`], encode its verdict.
//!
//! [`Runtime`] works on byte slices only, so it runs on the host too: plugin tests can feed
//! it the exact buffers the proxy would send and read back the exact verdict bytes. The
//! pointer handling lives in [`abi`](crate::abi).

use std::fmt::Display;

use crate::wire::{self, Reader, WireAction, WireVerdict};
use crate::{Plugin, Verdict, log};

/// One plugin instance and its output buffer.
#[derive(Debug)]
pub struct Runtime<P> {
    plugin: Option<P>,
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
                self.emit(WireAction::Reject(msg), Vec::new())
            }
        }
    }

    /// `tessera_subscriptions`: the encoded string list of [`Plugin::subscriptions`].
    pub fn subscriptions(&mut self) -> &[u8] {
        self.out.clear();
        wire::encode_string_list(&mut self.out, P::subscriptions());
        &self.out
    }

    /// `tessera_on_connect`: input is a context.
    pub fn on_connect(&mut self, input: &[u8]) -> Output<'_> {
        let Some(plugin) = self.plugin.as_mut() else {
            return self.not_configured();
        };
        let mut r = Reader::new(input);
        let ctx = match wire::decode_context(&mut r) {
            Ok(ctx) => ctx,
            Err(e) => return self.bad_input("on_connect", e),
        };
        let action = verdict_action(plugin.on_connect(&ctx));
        self.emit(action, ctx.take_attr_changes())
    }

    /// `tessera_on_command`: input is a context then a command. A changed command with
    /// `Continue` becomes a `Rewrite`.
    pub fn on_command(&mut self, input: &[u8]) -> Output<'_> {
        let Some(plugin) = self.plugin.as_mut() else {
            return self.not_configured();
        };
        let mut r = Reader::new(input);
        let decoded =
            wire::decode_context(&mut r).and_then(|ctx| Ok((ctx, wire::decode_command(&mut r)?)));
        let (ctx, mut cmd) = match decoded {
            Ok(v) => v,
            Err(e) => return self.bad_input("on_command", e),
        };
        let action = match plugin.on_command(&ctx, &mut cmd) {
            Verdict::Continue if cmd.is_modified() => WireAction::Rewrite(cmd.into_args()),
            v => verdict_action(v),
        };
        self.emit(action, ctx.take_attr_changes())
    }

    /// `tessera_on_reply`: input is a context, the command, then the reply as bytes.
    pub fn on_reply(&mut self, input: &[u8]) -> Output<'_> {
        let Some(plugin) = self.plugin.as_mut() else {
            return self.not_configured();
        };
        let mut r = Reader::new(input);
        let decoded = wire::decode_context(&mut r).and_then(|ctx| {
            let cmd = wire::decode_command(&mut r)?;
            let reply = r.bytes("reply")?;
            Ok((ctx, cmd, reply))
        });
        let (ctx, cmd, reply) = match decoded {
            Ok(v) => v,
            Err(e) => return self.bad_input("on_reply", e),
        };
        let action = match plugin.on_reply(&ctx, &cmd, reply) {
            Some(new) => WireAction::Reply(new),
            None => WireAction::Continue,
        };
        self.emit(action, ctx.take_attr_changes())
    }

    fn emit(&mut self, action: WireAction, attrs: Vec<(String, String)>) -> Output<'_> {
        let v = WireVerdict { action, attrs };
        if v.is_plain_continue() {
            return None;
        }
        self.out.clear();
        wire::encode_verdict(&mut self.out, &v);
        Some(&self.out)
    }

    fn not_configured(&mut self) -> Output<'_> {
        let msg = "ERR plugin called before it was configured";
        log::error(msg);
        self.emit(WireAction::Reject(msg.to_owned()), Vec::new())
    }

    fn bad_input(&mut self, hook: &str, e: impl Display) -> Output<'_> {
        let msg = format!("ERR plugin cannot decode the input of {hook}: {e}");
        log::error(&msg);
        self.emit(WireAction::Reject(msg), Vec::new())
    }
}

fn verdict_action(v: Verdict) -> WireAction {
    match v {
        Verdict::Continue => WireAction::Continue,
        Verdict::Reply(resp) => WireAction::Reply(resp),
        Verdict::Reject(msg) => WireAction::Reject(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Command, Context, reply};
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
}
