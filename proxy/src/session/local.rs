//! Commands the proxy answers itself, with Redis 7.0's replies:
//!
//! ```text
//! AUTH [username] password      HELLO [2|3 [AUTH username password] [SETNAME name]]
//! SELECT index                  PING [message]      ECHO message      QUIT
//! CLIENT SETNAME name           CLIENT GETNAME      CLIENT ID
//! ```
//!
//! The CLIENT subcommands about every session (LIST, INFO, KILL, ...) are in `client`.

use bytes::{Bytes, BytesMut};

use super::Session;
use crate::command::{CommandError, Local};
use crate::resp::{Protocol, encode, parse_int};
use crate::shared::Shared;

/// Commands a client may send before it has authenticated.
pub fn allowed_before_auth(l: Local) -> bool {
    matches!(l, Local::Auth | Local::Hello | Local::Quit)
}

impl Session {
    pub(super) fn local(&mut self, seq: u64, cmd: Local, args: &[Bytes]) {
        let mut out = BytesMut::new();
        match cmd {
            Local::Ping => match args {
                [_] => encode::simple(&mut out, "PONG"),
                [_, msg] => encode::bulk(&mut out, msg),
                _ => CommandError::WrongArity("ping").write(&mut out),
            },
            Local::Echo => encode::bulk(&mut out, &args[1]),
            Local::Quit => {
                encode::simple(&mut out, "OK");
                self.client.close_after = Some(seq);
            }
            Local::Auth => match args {
                [_, pass] => {
                    self.auth(&mut out, None, pass);
                }
                [_, user, pass] => {
                    self.auth(&mut out, Some(user), pass);
                }
                // Redis: only the two and three argument forms.
                _ => CommandError::Syntax.write(&mut out),
            },
            Local::Select => self.select(&mut out, &args[1]),
            Local::Hello => self.hello(&mut out, args),
            Local::ClientSetName => {
                if !valid_client_name(&args[2]) {
                    CommandError::ClientName.write(&mut out);
                } else {
                    self.client.name = (!args[2].is_empty()).then(|| args[2].clone());
                    encode::simple(&mut out, "OK");
                }
            }
            Local::ClientGetName => match &self.client.name {
                Some(n) => encode::bulk(&mut out, n),
                None => encode::null(&mut out, self.client.protocol),
            },
            Local::ClientId => encode::integer(&mut out, self.id as i64),
            Local::ClientInfo
            | Local::ClientList
            | Local::ClientKill
            | Local::ClientNoEvict
            | Local::ClientReply => self.client_command(seq, cmd, args, &mut out),
        }
        if matches!(
            cmd,
            Local::Auth | Local::Select | Local::Hello | Local::ClientSetName
        ) {
            self.publish_client();
        }
        self.queue.complete(seq, out.freeze());
    }

    /// Checks a password; on success the session is authenticated, as the user `default`
    /// (the plugins' context user, unless a plugin set one). Returns whether it passed.
    fn auth(&mut self, out: &mut BytesMut, user: Option<&[u8]>, pass: &[u8]) -> bool {
        let passwords = self.worker.shared.passwords.load();
        let expected = passwords.session.as_bytes();
        if expected.is_empty() {
            CommandError::NoPassword.write(out);
            return false;
        }
        let user_ok = user.is_none_or(|u| u == b"default");
        if user_ok && constant_time_eq(pass, expected) {
            self.client.authenticated = true;
            if !self.plugins.attrs.iter().any(|(k, _)| k == "user") {
                self.plugins.attrs.push(("user".into(), "default".into()));
            }
            encode::simple(out, "OK");
            true
        } else {
            CommandError::WrongPass.write(out);
            false
        }
    }

    fn select(&mut self, out: &mut BytesMut, index: &[u8]) {
        let databases = self.worker.shared.config.proxy.databases as i64;
        match parse_int(index) {
            None => CommandError::NotAnInteger.write(out),
            Some(db) if db < 0 || db >= databases => CommandError::DbIndex.write(out),
            Some(db) => {
                if self.client.db != db as u32 {
                    self.switch_db(db as u32);
                }
                encode::simple(out, "OK");
            }
        }
    }

    /// `HELLO [protover [AUTH username password] [SETNAME clientname]]`, as Redis 7 answers
    /// it: the connection's properties as a map (RESP3) or a flat array (RESP2), in the
    /// protocol it switches to; `version` is the backends' Redis version, and one field more
    /// than Redis's, `proxy`, names the proxy and its version.
    fn hello(&mut self, out: &mut BytesMut, args: &[Bytes]) {
        let mut protocol = None;
        if let Some(ver) = args.get(1) {
            match parse_int(ver) {
                Some(v) => match Protocol::from_version(v) {
                    Some(p) => protocol = Some(p),
                    None => return CommandError::NoProto.write(out),
                },
                None => return CommandError::ProtocolVersion.write(out),
            }
        }
        let mut i = 2;
        let mut name = None;
        let mut credentials = None;
        while i < args.len() {
            let opt = args[i].to_ascii_uppercase();
            let more = args.len() - i - 1;
            if opt == b"AUTH" && more >= 2 {
                credentials = Some((&args[i + 1], &args[i + 2]));
                i += 3;
            } else if opt == b"SETNAME" && more >= 1 {
                name = Some(args[i + 1].clone());
                i += 2;
            } else {
                let opt = String::from_utf8_lossy(&args[i]).into_owned();
                return CommandError::HelloOption(opt).write(out);
            }
        }
        if let Some((user, pass)) = credentials {
            let mut auth_reply = BytesMut::new();
            if !self.auth(&mut auth_reply, Some(user), pass) {
                out.extend_from_slice(&auth_reply);
                return;
            }
        }
        if !self.client.authenticated {
            return CommandError::HelloNoAuth.write(out);
        }
        if let Some(n) = name {
            if !valid_client_name(&n) {
                return CommandError::ClientName.write(out);
            }
            self.client.name = (!n.is_empty()).then_some(n);
        }
        if let Some(p) = protocol
            && p != self.client.protocol
        {
            self.switch_protocol(p);
        }
        let version = redis_version(&self.worker.shared);
        encode::map_header(out, self.client.protocol, 8);
        for (k, v) in [("server", "redis"), ("version", version.as_str())] {
            encode::bulk(out, k.as_bytes());
            encode::bulk(out, v.as_bytes());
        }
        encode::bulk(out, b"proto");
        encode::integer(out, self.client.protocol.version() as i64);
        encode::bulk(out, b"id");
        encode::integer(out, self.id as i64);
        encode::bulk(out, b"mode");
        encode::bulk(out, b"standalone");
        encode::bulk(out, b"role");
        encode::bulk(out, b"master");
        encode::bulk(out, b"modules");
        encode::array_header(out, 0);
        encode::bulk(out, b"proxy");
        encode::bulk(
            out,
            concat!("tessera/", env!("CARGO_PKG_VERSION")).as_bytes(),
        );
    }
}

/// The backends' Redis version, as HELLO and INFO report it: what a backend said when the
/// proxy connected, or [`ASSUMED_REDIS_VERSION`] before any has.
pub(super) fn redis_version(shared: &Shared) -> String {
    shared
        .table
        .load()
        .any_backend()
        .and_then(|b| shared.registry.get(b).version.load_full())
        .map_or_else(|| ASSUMED_REDIS_VERSION.to_string(), |v| v.to_string())
}

/// The Redis version HELLO reports before any backend has told its own: the version whose
/// command table the proxy carries.
const ASSUMED_REDIS_VERSION: &str = "7.0.0";

/// Redis's rule for client names: printable ASCII without spaces.
pub(super) fn valid_client_name(name: &[u8]) -> bool {
    name.iter().all(|b| (b'!'..=b'~').contains(b))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
