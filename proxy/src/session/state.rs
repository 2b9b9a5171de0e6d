//! What a client connection has set up and where it stands: its database, protocol,
//! authentication, name and library, and whether the session reads on or is closing.

use bytes::Bytes;

use crate::resp::Protocol;

pub(super) struct ConnectionState {
    pub(super) db: u32,
    /// The protocol of this client's replies (HELLO), and so of its backend connections.
    pub(super) protocol: Protocol,
    pub(super) authenticated: bool,
    /// CLIENT SETNAME's name.
    pub(super) name: Option<Bytes>,
    /// CLIENT SETINFO's LIB-NAME and LIB-VER.
    pub(super) lib_name: Option<Bytes>,
    pub(super) lib_ver: Option<Bytes>,
    /// Close once the reply with this sequence number is written (QUIT, protocol error).
    pub(super) close_after: Option<u64>,
    /// A SELECT (or HELLO) switched databases (or protocols) while commands were in flight
    /// on the old connections: later commands wait (unread in the read buffer) until those
    /// are answered, so they cannot overtake them on the new connections.
    pub(super) held: bool,
}

impl ConnectionState {
    /// A new connection: database 0, RESP2, authenticated if no password is set.
    pub(super) fn new(authenticated: bool) -> ConnectionState {
        ConnectionState {
            db: 0,
            protocol: Protocol::Resp2,
            authenticated,
            name: None,
            lib_name: None,
            lib_ver: None,
            close_after: None,
            held: false,
        }
    }

    /// Whether the session may read and dispatch more commands now.
    pub(super) fn reads(&self) -> bool {
        !self.held && self.close_after.is_none()
    }

    /// Whether the session is done: the last reply before it closes is written (`head` is the
    /// sequence number of the next reply to write).
    pub(super) fn closed(&self, head: u64) -> bool {
        self.close_after.is_some_and(|seq| seq < head)
    }
}
