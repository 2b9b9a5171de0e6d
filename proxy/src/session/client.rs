//! CLIENT subcommands about the proxy's own sessions (every worker's), with Redis 7.2's
//! replies and errors:
//!
//! ```text
//! CLIENT LIST [TYPE normal|master|replica|pubsub] [ID id [id ...]]
//!                                 -> one line per session, Redis's fields, proxy values
//! CLIENT INFO                     -> this session's line
//! CLIENT KILL ip:port             -> +OK, or -ERR No such client
//! CLIENT KILL [ID id] [TYPE type] [USER name] [ADDR ip:port] [LADDR ip:port]
//!             [SKIPME yes|no]     -> how many sessions were closed (SKIPME yes by default)
//! CLIENT NO-EVICT on|off          -> +OK (nothing to evict in the proxy)
//! CLIENT NO-TOUCH on|off          -> +OK (Redis 7.2; not in the 7.0 command table)
//! CLIENT SETINFO LIB-NAME|LIB-VER value
//!                                 -> +OK, shown by LIST and INFO (Redis 7.2, likewise)
//! CLIENT REPLY ON|OFF|SKIP        -> ON: +OK; OFF: no replies until ON; SKIP: the next
//!                                    command's reply is dropped (OFF and SKIP answer nothing)
//! ```

use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::Session;
use super::local::valid_client_name;
use super::queue::Replies;
use crate::clients::{Client, Details};
use crate::command::{CommandError, Local, Spec};
use crate::resp::{encode, parse_int};

impl Session {
    /// Answers the CLIENT subcommands of this module that are in the command table.
    pub(super) fn client_command(
        &mut self,
        seq: u64,
        cmd: Local,
        args: &[Bytes],
        out: &mut BytesMut,
    ) {
        match cmd {
            Local::ClientInfo => {
                let line = self.registered.line(Instant::now(), Some("client|info")) + "\n";
                encode::text(out, self.client.protocol, line.as_bytes());
            }
            Local::ClientList => match list_filter(&args[2..]) {
                Ok(filter) => {
                    let now = Instant::now();
                    let mut text = String::new();
                    for c in self.worker.shared.sessions.all() {
                        if filter.as_ref().is_some_and(|ids| !ids.contains(&c.id)) {
                            continue;
                        }
                        let cmd = (c.id == self.id).then_some("client|list");
                        text.push_str(&c.line(now, cmd));
                        text.push('\n');
                    }
                    encode::text(out, self.client.protocol, text.as_bytes());
                }
                Err(e) => e.write(out),
            },
            Local::ClientKill => self.client_kill(seq, args, out),
            Local::ClientNoEvict => on_off(&args[2], out),
            Local::ClientReply => match args[2].to_ascii_uppercase().as_slice() {
                b"ON" => {
                    self.queue.replies = Replies::On;
                    self.queue.entry(seq).silent = false;
                    encode::simple(out, "OK");
                }
                b"OFF" => {
                    self.queue.replies = Replies::Off;
                    self.queue.entry(seq).silent = true;
                }
                b"SKIP" => {
                    if self.queue.replies != Replies::Off {
                        self.queue.replies = Replies::SkipNext;
                    }
                    self.queue.entry(seq).silent = true;
                }
                _ => CommandError::Syntax.write(out),
            },
            _ => {}
        }
    }

    /// CLIENT SETINFO and CLIENT NO-TOUCH, which Redis 7.2 added and the 7.0 command table
    /// lacks: answered (true) if `args` is one of them, with CLIENT's checks.
    pub(super) fn newer_client_subcommand(
        &mut self,
        seq: u64,
        container: &Spec,
        args: &[Bytes],
    ) -> bool {
        if container.name != "client" {
            return false;
        }
        let sub = args[1].to_ascii_lowercase();
        let (name, arity) = match sub.as_slice() {
            b"setinfo" => ("client|setinfo", 4),
            b"no-touch" => ("client|no-touch", 3),
            _ => return false,
        };
        let mut out = BytesMut::new();
        if args.len() != arity {
            CommandError::WrongArity(name).write(&mut out);
        } else if !self.client.authenticated {
            CommandError::NoAuth.write(&mut out);
        } else if arity == 3 {
            on_off(&args[2], &mut out);
        } else {
            let attr = &args[2];
            let value = (!args[3].is_empty()).then(|| args[3].clone());
            let text = String::from_utf8_lossy(attr).into_owned();
            if !attr.eq_ignore_ascii_case(b"lib-name") && !attr.eq_ignore_ascii_case(b"lib-ver") {
                CommandError::UnrecognizedOption(text).write(&mut out);
            } else if !valid_client_name(&args[3]) {
                CommandError::ClientAttr(text).write(&mut out);
            } else {
                if attr.eq_ignore_ascii_case(b"lib-name") {
                    self.client.lib_name = value;
                } else {
                    self.client.lib_ver = value;
                }
                self.publish_client();
                encode::simple(&mut out, "OK");
            }
        }
        self.queue.complete(seq, out.freeze());
        true
    }

    /// Shows what the client has set up (name, db, protocol, library) to CLIENT LIST.
    pub(super) fn publish_client(&self) {
        self.registered.set_details(Details {
            name: self.client.name.clone(),
            db: self.client.db,
            resp: self.client.protocol.version(),
            lib_name: self.client.lib_name.clone(),
            lib_ver: self.client.lib_ver.clone(),
            user: self
                .plugins
                .attrs
                .iter()
                .find(|(k, _)| k == "user")
                .map(|(_, v)| v.clone()),
        });
    }

    fn client_kill(&mut self, seq: u64, args: &[Bytes], out: &mut BytesMut) {
        let sessions = self.worker.shared.sessions.all();
        if args.len() == 3 {
            // The old form: one address, this session included.
            let addr = String::from_utf8_lossy(&args[2]);
            match sessions.iter().find(|c| c.addr() == addr) {
                Some(c) => {
                    self.kill(seq, c);
                    encode::simple(out, "OK");
                }
                None => CommandError::NoSuchClient.write(out),
            }
            return;
        }
        let filter = match KillFilter::parse(&args[2..]) {
            Ok(f) => f,
            Err(e) => return e.write(out),
        };
        let mut killed = 0;
        for c in &sessions {
            if (filter.skip_me && c.id == self.id) || !filter.matches(c) {
                continue;
            }
            self.kill(seq, c);
            killed += 1;
        }
        encode::integer(out, killed);
    }

    /// Closes session `c`: another at once, this one after the reply to `seq`.
    fn kill(&mut self, seq: u64, c: &Client) {
        if c.id == self.id {
            self.client.close_after = Some(seq);
        } else {
            c.kill();
        }
    }
}

/// `on` or `off` (any case): +OK, else a syntax error.
fn on_off(arg: &[u8], out: &mut BytesMut) {
    if arg.eq_ignore_ascii_case(b"on") || arg.eq_ignore_ascii_case(b"off") {
        encode::simple(out, "OK");
    } else {
        CommandError::Syntax.write(out);
    }
}

/// Whether a client type is Redis's: `Ok(true)` for normal clients (every proxy session is
/// one), `Ok(false)` for the others.
fn normal_type(t: &[u8]) -> Result<bool, CommandError> {
    let lower = t.to_ascii_lowercase();
    match lower.as_slice() {
        b"normal" => Ok(true),
        b"master" | b"replica" | b"slave" | b"pubsub" => Ok(false),
        _ => Err(CommandError::ClientType(
            String::from_utf8_lossy(t).into_owned(),
        )),
    }
}

/// CLIENT LIST's options: the ids to list (`None`: every session).
fn list_filter(opts: &[Bytes]) -> Result<Option<Vec<u64>>, CommandError> {
    match opts {
        [] => Ok(None),
        [t, ty] if t.eq_ignore_ascii_case(b"type") => Ok(if normal_type(ty)? {
            None
        } else {
            Some(Vec::new())
        }),
        [t, ids @ ..] if t.eq_ignore_ascii_case(b"id") && !ids.is_empty() => ids
            .iter()
            .map(|id| match parse_int(id) {
                Some(n) if n > 0 => Ok(n as u64),
                _ => Err(CommandError::InvalidClientId),
            })
            .collect::<Result<Vec<u64>, _>>()
            .map(Some),
        _ => Err(CommandError::Syntax),
    }
}

/// CLIENT KILL's filters; every one given must match.
#[derive(Default)]
struct KillFilter {
    id: Option<u64>,
    /// False: a type no proxy session has.
    normal: bool,
    user: Option<String>,
    addr: Option<String>,
    laddr: Option<String>,
    skip_me: bool,
}

impl KillFilter {
    fn parse(opts: &[Bytes]) -> Result<KillFilter, CommandError> {
        let mut f = KillFilter {
            normal: true,
            skip_me: true,
            ..KillFilter::default()
        };
        if opts.is_empty() || !opts.len().is_multiple_of(2) {
            return Err(CommandError::Syntax);
        }
        for pair in opts.chunks(2) {
            let (name, value) = (pair[0].to_ascii_lowercase(), &pair[1]);
            let text = || String::from_utf8_lossy(value).into_owned();
            match name.as_slice() {
                b"id" => match parse_int(value) {
                    Some(n) if n > 0 => f.id = Some(n as u64),
                    _ => return Err(CommandError::ClientIdNotPositive),
                },
                b"type" => f.normal = normal_type(value)?,
                b"user" => f.user = Some(text()),
                b"addr" => f.addr = Some(text()),
                b"laddr" => f.laddr = Some(text()),
                b"skipme" if value.eq_ignore_ascii_case(b"yes") => f.skip_me = true,
                b"skipme" if value.eq_ignore_ascii_case(b"no") => f.skip_me = false,
                _ => return Err(CommandError::Syntax),
            }
        }
        Ok(f)
    }

    fn matches(&self, c: &Client) -> bool {
        self.normal
            && self.id.is_none_or(|id| id == c.id)
            && self.addr.as_ref().is_none_or(|a| *a == c.addr())
            && self.laddr.as_ref().is_none_or(|a| *a == c.laddr())
            && self
                .user
                .as_ref()
                .is_none_or(|u| *u == c.details().user.as_deref().unwrap_or("default"))
    }
}
