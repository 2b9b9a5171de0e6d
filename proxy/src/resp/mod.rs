//! RESP on the wire: the request decoder for client connections, a reply scanner that finds
//! frame boundaries in backend output without building frames, and reply encoders.

mod reply;
mod request;

pub(crate) use reply::parse_int;
pub use reply::{MalformedReply, ReplyScanner, encode};
pub use request::{Limits, ProtocolError, Request, RequestDecoder};
