//! HELLO, which the proxy answers itself with Redis 7's fields and the backends' Redis version.
//! The version is learnt as a backend connection is set up: a HELLO before then waits for it.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::Session;
use super::local::valid_client_name;
use super::queue::{Dest, State};
use crate::command::{CommandError, REDIS_VERSION};
use crate::resp::{Protocol, encode, parse_int};
use crate::router::BackendInfo;

/// A HELLO reply to be: the connection's properties, and the backend whose version it reports.
pub(super) struct HelloReply {
    protocol: Protocol,
    id: u64,
    backend: Option<Arc<BackendInfo>>,
}

impl HelloReply {
    /// The Redis version the backend reported, once one of its connections was set up.
    fn known_version(&self) -> Option<Arc<String>> {
        self.backend.as_ref()?.version.load_full()
    }

    /// The reply: the connection's properties as a map (RESP3) or a flat array (RESP2), with
    /// the backend's version, or, if it never told one, the version of the command table.
    pub(super) fn encode(&self) -> Bytes {
        let known = self.known_version();
        let version = known.as_deref().map_or(REDIS_VERSION, String::as_str);
        let mut out = BytesMut::with_capacity(192);
        encode::map_header(&mut out, self.protocol, 8);
        for (k, v) in [("server", "redis"), ("version", version)] {
            encode::bulk(&mut out, k.as_bytes());
            encode::bulk(&mut out, v.as_bytes());
        }
        encode::bulk(&mut out, b"proto");
        encode::integer(&mut out, self.protocol.version() as i64);
        encode::bulk(&mut out, b"id");
        encode::integer(&mut out, self.id as i64);
        encode::bulk(&mut out, b"mode");
        encode::bulk(&mut out, b"standalone");
        encode::bulk(&mut out, b"role");
        encode::bulk(&mut out, b"master");
        encode::bulk(&mut out, b"modules");
        encode::array_header(&mut out, 0);
        encode::bulk(&mut out, b"proxy");
        encode::bulk(
            &mut out,
            concat!("tessera/", env!("CARGO_PKG_VERSION")).as_bytes(),
        );
        out.freeze()
    }
}

impl Session {
    /// `HELLO [protover [AUTH username password] [SETNAME clientname]]`, as Redis 7 answers
    /// it, in the protocol it switches to; `version` is the backends' Redis version, and one
    /// field more than Redis's, `proxy`, names the proxy and its version.
    ///
    /// The version is the one the backend for keyless commands reported when a connection
    /// to it was set up. Until one was, the reply waits for a PING sent behind the setup of
    /// the session's connection to it (bounded by the backend's connect and command
    /// timeouts); a backend that is down or never tells its version leaves the version of
    /// the command table.
    pub(super) fn hello(&mut self, seq: u64, args: &[Bytes]) {
        if let Err(refused) = self.hello_switch(args) {
            return self.queue.complete(seq, refused);
        }
        let backend = self.worker.shared.table.load().any_backend();
        let reply = HelloReply {
            protocol: self.client.protocol,
            id: self.id,
            backend: backend.map(|b| self.worker.shared.registry.get(b)),
        };
        match backend {
            Some(b) if reply.known_version().is_none() => {
                self.queue.entry(seq).state = State::Hello(Box::new(reply));
                if let Some(out) = self.outgoing(b, Dest::Part(seq, 0)) {
                    encode::command(out, &["PING"]);
                }
            }
            _ => self.queue.complete(seq, reply.encode()),
        }
    }

    /// Checks HELLO's arguments in the order Redis does and applies them (authentication,
    /// name, protocol); `Err(reply)`: refused, with Redis's error.
    fn hello_switch(&mut self, args: &[Bytes]) -> Result<(), Bytes> {
        let mut protocol = None;
        if let Some(ver) = args.get(1) {
            match parse_int(ver) {
                Some(v) => match Protocol::from_version(v) {
                    Some(p) => protocol = Some(p),
                    None => return Err(CommandError::NoProto.reply()),
                },
                None => return Err(CommandError::ProtocolVersion.reply()),
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
                return Err(CommandError::HelloOption(opt).reply());
            }
        }
        if let Some((user, pass)) = credentials {
            let mut auth_reply = BytesMut::new();
            if !self.auth(&mut auth_reply, Some(user), pass) {
                return Err(auth_reply.freeze());
            }
        }
        if !self.client.authenticated {
            return Err(CommandError::HelloNoAuth.reply());
        }
        if let Some(n) = name {
            if !valid_client_name(&n) {
                return Err(CommandError::ClientName.reply());
            }
            self.client.name = (!n.is_empty()).then_some(n);
        }
        if let Some(p) = protocol
            && p != self.client.protocol
        {
            self.switch_protocol(p);
        }
        Ok(())
    }
}
