//! The byte streams sessions serve and backend connections talk over: TCP sockets when the
//! proxy runs, in-memory pipes (`tokio::io::duplex`) when tests drive a session in-process.

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream both ways.
pub trait Stream: AsyncRead + AsyncWrite + Unpin {}

impl<T: AsyncRead + AsyncWrite + Unpin> Stream for T {}

/// A stream of either kind. One allocation per connection; its reads and writes are calls
/// through the box, one per syscall, so `Session` and the connection task stay non-generic.
pub type BoxStream = Box<dyn Stream>;

/// Writes as much of `data` as the stream takes now, without waiting; how much it took.
/// What is left is the caller's to write once the stream is ready again (polled then with
/// the caller's task waker: this poll has none).
pub fn write_now(stream: &mut BoxStream, data: &[u8]) -> std::io::Result<usize> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut written = 0;
    while written < data.len() {
        match Pin::new(&mut *stream).poll_write(&mut cx, &data[written..]) {
            Poll::Ready(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => written += n,
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => break,
        }
    }
    Ok(written)
}
