//! Commands the proxy answers itself, with Redis 7.0's replies:
//!
//! ```text
//! AUTH [username] password      HELLO [2|3 [AUTH username password] [SETNAME name]]
//! SELECT index                  PING [message]      ECHO message      QUIT
//! CLIENT SETNAME name           CLIENT GETNAME      CLIENT ID
//! ```
//!
//! The CLIENT subcommands about every session (LIST, INFO, KILL, ...) are in `client`;
//! HELLO, whose reply waits for the backends' version, in `hello`.

use bytes::{Bytes, BytesMut};

use super::Session;
use crate::command::REDIS_VERSION;
use crate::command::{CommandError, Local};
use crate::resp::{encode, parse_int};
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
            Local::Hello => {
                self.hello(seq, args);
                return self.publish_client();
            }
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
        if matches!(cmd, Local::Auth | Local::Select | Local::ClientSetName) {
            self.publish_client();
        }
        self.queue.complete(seq, out.freeze());
    }

    /// Checks a password; on success the session is authenticated, as the user `default`
    /// (the plugins' context user, unless a plugin set one). Returns whether it passed.
    pub(super) fn auth(&mut self, out: &mut BytesMut, user: Option<&[u8]>, pass: &[u8]) -> bool {
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
}

/// The backends' Redis version, as INFO reports it: what a backend said when the proxy
/// connected, or before any has, the version of the command table (HELLO waits for one:
/// `hello`).
pub(super) fn redis_version(shared: &Shared) -> String {
    shared
        .table
        .load()
        .any_backend()
        .and_then(|b| shared.registry.get(b).version.load_full())
        .map_or_else(|| REDIS_VERSION.to_string(), |v| v.to_string())
}

/// Redis's rule for client names: printable ASCII without spaces.
pub(super) fn valid_client_name(name: &[u8]) -> bool {
    name.iter().all(|b| (b'!'..=b'~').contains(b))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
