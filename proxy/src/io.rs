//! The byte streams sessions serve and backend connections talk over: TCP sockets when the
//! proxy runs, in-memory pipes (`tokio::io::duplex`) when tests drive a session in-process.

use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream both ways.
pub trait Stream: AsyncRead + AsyncWrite + Unpin {}

impl<T: AsyncRead + AsyncWrite + Unpin> Stream for T {}

/// A stream of either kind. One allocation per connection; its reads and writes are calls
/// through the box, one per syscall, so `Session` and the connection task stay non-generic.
pub type BoxStream = Box<dyn Stream>;
