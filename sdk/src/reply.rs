//! Build RESP replies for [`Verdict::Reply`](crate::Verdict::Reply) and
//! [`Plugin::on_reply`](crate::Plugin::on_reply).
//!
//! Each helper returns one complete RESP2 value (RESP2 values are understood by RESP2 and
//! RESP3 clients alike). [`array()`] takes values built by the other helpers.
//!
//! ```
//! use tessera_sdk::reply;
//! assert_eq!(reply::ok(), b"+OK\r\n");
//! assert_eq!(
//!     reply::array([reply::bulk("a"), reply::integer(2)]),
//!     b"*2\r\n$1\r\na\r\n:2\r\n"
//! );
//! ```

/// `+OK`.
pub fn ok() -> Vec<u8> {
    b"+OK\r\n".to_vec()
}

/// A simple string, `+<s>`. CR and LF (which would end it early) become spaces.
pub fn simple(s: &str) -> Vec<u8> {
    line(b'+', s)
}

/// An error, `-<msg>`; start `msg` with an error code such as `ERR` or `NOPERM`. CR and LF
/// become spaces.
pub fn error(msg: &str) -> Vec<u8> {
    line(b'-', msg)
}

/// A bulk string, `$<len>` then the bytes (binary-safe).
pub fn bulk(b: impl AsRef<[u8]>) -> Vec<u8> {
    let b = b.as_ref();
    let mut out = format!("${}\r\n", b.len()).into_bytes();
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
    out
}

/// The null bulk string, `$-1` (what `GET` answers for a missing key).
pub fn null() -> Vec<u8> {
    b"$-1\r\n".to_vec()
}

/// An integer, `:<n>`.
pub fn integer(n: i64) -> Vec<u8> {
    format!(":{n}\r\n").into_bytes()
}

/// An array of values, each already a complete RESP value (from the other helpers).
pub fn array<I>(items: I) -> Vec<u8>
where
    I: IntoIterator,
    I::Item: AsRef<[u8]>,
{
    let mut body = Vec::new();
    let mut n = 0usize;
    for item in items {
        body.extend_from_slice(item.as_ref());
        n += 1;
    }
    let mut out = format!("*{n}\r\n").into_bytes();
    out.extend_from_slice(&body);
    out
}

fn line(prefix: u8, s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 3);
    out.push(prefix);
    out.extend(
        s.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        assert_eq!(simple("PONG"), b"+PONG\r\n");
        assert_eq!(error("ERR a\r\nb"), b"-ERR a  b\r\n");
        assert_eq!(bulk(b"a\r\nb"), b"$4\r\na\r\nb\r\n");
        assert_eq!(bulk(""), b"$0\r\n\r\n");
        assert_eq!(null(), b"$-1\r\n");
        assert_eq!(integer(-3), b":-3\r\n");
        assert_eq!(array(Vec::<Vec<u8>>::new()), b"*0\r\n");
        assert_eq!(
            array([bulk("k"), null()]),
            b"*2\r\n$1\r\nk\r\n$-1\r\n".to_vec()
        );
    }
}
