//! Why a command gets an error instead of its reply: one type for every error the proxy itself
//! answers (Redis's own texts where Redis has one, tests pin them), rendered to RESP in one place.

use bytes::{Bytes, BytesMut};

use super::Spec;
use crate::resp::encode;

/// An error reply the proxy gives a command itself. The text (`Display`) is the error line
/// without the leading `-` and the CRLF; [`CommandError::reply`] is the reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    // Redis's own errors, worded as Redis 7.0 words them.
    /// A request that is not valid RESP; the connection is closed after it.
    #[error("ERR Protocol error: {0}")]
    Protocol(String),
    /// See [`CommandError::unknown_command`].
    #[error("ERR unknown command '{name}', with args beginning with: {args}")]
    UnknownCommand { name: String, args: String },
    /// See [`CommandError::unknown_subcommand`].
    #[error("ERR unknown subcommand '{sub}'. Try {container} HELP.")]
    UnknownSubcommand { sub: String, container: String },
    /// The command (`container|sub` for a subcommand) got a wrong number of arguments.
    #[error("ERR wrong number of arguments for '{0}' command")]
    WrongArity(&'static str),
    #[error("NOAUTH Authentication required.")]
    NoAuth,
    #[error("WRONGPASS invalid username-password pair or user is disabled.")]
    WrongPass,
    #[error(
        "ERR AUTH <password> called without any password configured for the default user. \
         Are you sure your configuration is correct?"
    )]
    NoPassword,
    #[error(
        "NOAUTH HELLO must be called with the client already authenticated, otherwise the \
         HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and \
         select the RESP protocol version at the same time"
    )]
    HelloNoAuth,
    #[error("NOPROTO unsupported protocol version")]
    NoProto,
    #[error("ERR Protocol version is not an integer or out of range")]
    ProtocolVersion,
    #[error("ERR Syntax error in HELLO option '{0}'")]
    HelloOption(String),
    #[error("ERR syntax error")]
    Syntax,
    #[error("ERR value is not an integer or out of range")]
    NotAnInteger,
    #[error("ERR DB index is out of range")]
    DbIndex,
    #[error("ERR Client names cannot contain spaces, newlines or special characters.")]
    ClientName,
    /// CLIENT SETINFO's value (the attribute named as sent) is not printable ASCII.
    #[error("ERR {0} cannot contain spaces, newlines or special characters.")]
    ClientAttr(String),
    #[error("ERR Unrecognized option '{0}'")]
    UnrecognizedOption(String),
    #[error("ERR No such client")]
    NoSuchClient,
    #[error("ERR Unknown client type '{0}'")]
    ClientType(String),
    #[error("ERR Invalid client ID")]
    InvalidClientId,
    #[error("ERR client-id should be greater than 0")]
    ClientIdNotPositive,
    #[error("CROSSSLOT Keys in request don't hash to the same slot")]
    CrossSlot,
    #[error("ERR invalid cursor")]
    InvalidCursor,
    #[error("ERR max number of clients reached")]
    MaxClients,
    /// An error a group answered to a fan-out command, naming the group.
    #[error("{code} group {group}: {message}")]
    InGroup {
        code: String,
        group: u32,
        message: String,
    },

    // The proxy's own errors.
    /// WAIT's timeout is 0 or not below `backend.timeout_ms` (`max` is the largest allowed).
    #[error(
        "ERR WAIT timeout must be between 1 and {max} ms through the proxy (backend.timeout_ms)"
    )]
    WaitTimeout { max: u64 },
    /// A fan-out whose groups must answer alike (SCRIPT LOAD, FUNCTION LOAD) did not.
    #[error("ERR group {group} answered differently from group {first}")]
    Disagree { group: u32, first: u32 },
    /// A command the proxy does not serve (named as typed: `object encoding`).
    #[error("ERR command '{0}' is not supported by the proxy")]
    NotSupported(String),
    /// A command, or one of its options, the proxy does not serve yet.
    #[error(
        "ERR command '{name}'{} is not supported by the proxy yet",
        with_option(.option)
    )]
    NotSupportedYet {
        name: String,
        option: Option<&'static str>,
    },
    /// SORT's BY or GET (the option named) with a pattern whose keys may be in another slot.
    #[error(
        "ERR {0} option of SORT denied by the proxy when keys formed by the pattern may be in \
         different slots."
    )]
    SortPattern(&'static str),
    #[error("ERR no group is configured")]
    NoGroup,
    #[error("ERR slot {0} is not served by any group")]
    SlotOffline(usize),
    #[error("ERR SCAN through the proxy walks at most {max} groups, there are {groups}")]
    ScanGroups { max: usize, groups: usize },
    /// A command the config does not allow: `command` as Redis's docs spell it, `setting`
    /// the `proxy.` setting that allows it.
    #[error("ERR {command} is disabled by the proxy's config (proxy.{setting} = false)")]
    Disabled {
        command: &'static str,
        setting: &'static str,
    },
    /// Why the proxy refuses every non-local command now (it lost its lease, say).
    #[error("ERR {0}")]
    Refused(String),
    /// A backend's reply to a part of a split command that cannot be merged.
    #[error("ERR unexpected reply from a backend to a split command")]
    UnexpectedSplitReply,
    /// A backend's reply to a fan-out command (named as in the command table) that cannot
    /// be merged.
    #[error("ERR unexpected reply from a backend to '{0}'")]
    UnexpectedReply(String),
    /// The backend connection failed, timed out, or waits to reconnect.
    #[error("ERR backend {addr} unavailable: {reason}")]
    BackendUnavailable { addr: String, reason: String },
    /// The backend connection's task is gone (the worker is shutting down).
    #[error("ERR backend connection closed")]
    BackendClosed,
    /// A command on keys of a migrating slot whose keys could not be moved to the slot's
    /// new group first: it was not sent, nothing was written, and it may be sent again.
    #[error("TRYAGAIN {0}")]
    TryAgain(String),
}

/// How every error reply about a backend begins ([`CommandError::BackendUnavailable`],
/// [`CommandError::BackendClosed`]).
pub const BACKEND_ERROR_PREFIX: &[u8] = b"-ERR backend ";

impl CommandError {
    /// The error reply, the same in RESP2 and RESP3 (a simple error; CR and LF in the text
    /// become spaces, so no text breaks the framing).
    pub fn reply(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.write(&mut out);
        out.freeze()
    }

    /// Appends the error reply to `out`.
    pub fn write(&self, out: &mut BytesMut) {
        encode::error(out, &self.to_string());
    }

    /// An unknown command, as Redis 7.0 words it:
    /// `-ERR unknown command 'foo', with args beginning with: 'a' 'b' \r\n`.
    ///
    /// Like Redis: the name and each argument are cut at 128 bytes (and at a NUL byte, as
    /// `%s` does), arguments are added while the list is shorter than 128 bytes, each as
    /// `'arg' ` (note the trailing space, also after "with: " when there are no arguments),
    /// and CR/LF become spaces. Bytes that are not UTF-8 are replaced by U+FFFD.
    pub fn unknown_command(args: &[Bytes]) -> CommandError {
        let mut name = Vec::with_capacity(16);
        if let Some(n) = args.first() {
            push_c_str(&mut name, n, 128);
        }
        let mut list = Vec::with_capacity(64);
        for arg in args.iter().skip(1) {
            if list.len() >= 128 {
                break;
            }
            let len = list.len();
            list.push(b'\'');
            push_c_str(&mut list, arg, 128 - len);
            list.extend_from_slice(b"' ");
        }
        CommandError::UnknownCommand {
            name: error_text(name),
            args: error_text(list),
        }
    }

    /// An unknown subcommand of a container command, as Redis 7.0 words it:
    /// `-ERR unknown subcommand 'foo'. Try OBJECT HELP.\r\n` (the subcommand as given, cut at
    /// 128 bytes; the container upper-cased).
    pub fn unknown_subcommand(container: &Spec, args: &[Bytes]) -> CommandError {
        let mut sub = Vec::with_capacity(16);
        if let Some(s) = args.get(1) {
            push_c_str(&mut sub, s, 128);
        }
        CommandError::UnknownSubcommand {
            sub: error_text(sub),
            container: container.name.to_ascii_uppercase(),
        }
    }

    /// A wrong number of arguments: `-ERR wrong number of arguments for 'get' command\r\n`; a
    /// subcommand is named `container|sub`.
    pub fn arity(spec: &Spec) -> CommandError {
        CommandError::WrongArity(spec.name)
    }

    /// A command the proxy does not serve.
    pub fn not_supported(spec: &Spec) -> CommandError {
        CommandError::NotSupported(display_name(spec))
    }

    /// A command, or one of its options, that the proxy does not serve yet:
    /// `-ERR command 'blpop' is not supported by the proxy yet`, with an option
    /// `-ERR command 'xread' with BLOCK is not supported by the proxy yet`.
    pub fn not_supported_yet(spec: &Spec, option: Option<&'static str>) -> CommandError {
        CommandError::NotSupportedYet {
            name: display_name(spec),
            option,
        }
    }
}

/// ` with BLOCK` for an option, nothing without.
fn with_option(option: &Option<&'static str>) -> String {
    option.map(|o| format!(" with {o}")).unwrap_or_default()
}

/// `object|encoding` → `object encoding`, as users type it.
fn display_name(spec: &Spec) -> String {
    spec.name.replace('|', " ")
}

/// Appends `arg` as C's `%.<max>s` prints it: at most `max` bytes, stopping at a NUL.
fn push_c_str(out: &mut Vec<u8>, arg: &[u8], max: usize) {
    let arg = &arg[..arg.len().min(max)];
    let end = arg.iter().position(|&b| b == 0).unwrap_or(arg.len());
    out.extend_from_slice(&arg[..end]);
}

/// Bytes of a client's command as error text: Redis replaces CR and LF by spaces; bytes that
/// are not UTF-8 become U+FFFD.
fn error_text(mut s: Vec<u8>) -> String {
    for b in &mut s {
        if *b == b'\r' || *b == b'\n' {
            *b = b' ';
        }
    }
    match String::from_utf8(s) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_simple_errors_whatever_the_text() {
        assert_eq!(
            &CommandError::NoAuth.reply()[..],
            b"-NOAUTH Authentication required.\r\n"
        );
        let e = CommandError::BackendUnavailable {
            addr: "127.0.0.1:1".into(),
            reason: "a\r\nb".into(),
        };
        assert_eq!(
            &e.reply()[..],
            b"-ERR backend 127.0.0.1:1 unavailable: a  b\r\n"
        );
        assert!(e.reply().starts_with(BACKEND_ERROR_PREFIX));
        assert!(
            CommandError::BackendClosed
                .reply()
                .starts_with(BACKEND_ERROR_PREFIX)
        );
    }

    #[test]
    fn texts_with_parts() {
        assert_eq!(
            CommandError::SlotOffline(7).to_string(),
            "ERR slot 7 is not served by any group"
        );
        assert_eq!(
            CommandError::Disabled {
                command: "FLUSHDB",
                setting: "allow_flushdb"
            }
            .to_string(),
            "ERR FLUSHDB is disabled by the proxy's config (proxy.allow_flushdb = false)"
        );
        assert_eq!(
            CommandError::NotSupportedYet {
                name: "xread".into(),
                option: Some("BLOCK")
            }
            .to_string(),
            "ERR command 'xread' with BLOCK is not supported by the proxy yet"
        );
        assert_eq!(
            CommandError::NotSupportedYet {
                name: "script load".into(),
                option: None
            }
            .to_string(),
            "ERR command 'script load' is not supported by the proxy yet"
        );
    }
}
