//! RESP on the wire: the request decoder for client connections, a reply scanner that finds
//! frame boundaries in backend output without building frames, and reply encoders.

pub mod convert;
mod reply;
mod request;

pub use reply::parse_int;
pub use reply::{MalformedReply, ReplyScanner, encode, is_push};
pub use request::{Limits, ProtocolError, Request, RequestDecoder};

/// The RESP version a connection speaks, chosen with `HELLO 2` / `HELLO 3` (2 until then).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Protocol {
    #[default]
    Resp2,
    Resp3,
}

impl Protocol {
    /// From HELLO's `protover`.
    pub fn from_version(v: i64) -> Option<Protocol> {
        match v {
            2 => Some(Protocol::Resp2),
            3 => Some(Protocol::Resp3),
            _ => None,
        }
    }

    pub fn version(self) -> u8 {
        match self {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        }
    }
}
