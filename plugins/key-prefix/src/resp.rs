//! A small RESP parser: just enough to read the replies that carry keys.
//!
//! Wire form: a type byte, then the rest of the line up to CRLF: `+simple`, `-error`,
//! `:integer`, `$len` then `len` bytes and CRLF (`$-1`: null), `*count` then `count` values
//! (`*-1`: null), and RESP3's `_` (null). Any other type is kept as raw bytes
//! ([`Value::Other`]) only if it is a one-line type; the rest make [`parse`] fail.

/// A parsed RESP value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `$len` bulk string.
    Bulk(Vec<u8>),
    /// `*count` array.
    Array(Vec<Value>),
    /// `$-1`, `*-1` or `_`.
    Null,
    /// A one-line value (`+`, `-`, `:`, `#`, `,`, `(`), kept whole with its type byte.
    Other(Vec<u8>),
}

/// Parses one complete value that fills `buf` exactly, or `None`.
pub fn parse(buf: &[u8]) -> Option<Value> {
    let (v, rest) = value(buf, 0)?;
    rest.is_empty().then_some(v)
}

/// Arrays nested deeper than this are refused (replies with keys are at most 2 deep).
const MAX_DEPTH: usize = 8;

fn line(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = buf.windows(2).position(|w| w == b"\r\n")?;
    Some((&buf[..end], &buf[end + 2..]))
}

fn number(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn value(buf: &[u8], depth: usize) -> Option<(Value, &[u8])> {
    let (&kind, _) = buf.split_first()?;
    let (head, rest) = line(buf)?;
    let body = &head[1..];
    match kind {
        b'$' => {
            let n = number(body)?;
            if n < 0 {
                return Some((Value::Null, rest));
            }
            let n = usize::try_from(n).ok()?;
            if rest.len() < n + 2 || &rest[n..n + 2] != b"\r\n" {
                return None;
            }
            Some((Value::Bulk(rest[..n].to_vec()), &rest[n + 2..]))
        }
        b'*' => {
            let n = number(body)?;
            if n < 0 {
                return Some((Value::Null, rest));
            }
            if depth >= MAX_DEPTH || n as usize > rest.len() {
                return None;
            }
            let mut items = Vec::with_capacity(n as usize);
            let mut rest = rest;
            for _ in 0..n {
                let (v, r) = value(rest, depth + 1)?;
                items.push(v);
                rest = r;
            }
            Some((Value::Array(items), rest))
        }
        b'_' if body.is_empty() => Some((Value::Null, rest)),
        b'+' | b'-' | b':' | b'#' | b',' | b'(' => Some((Value::Other(head.to_vec()), rest)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_key_replies_look_like() {
        assert_eq!(
            parse(b"$3\r\na\r\n\r\n"),
            Some(Value::Bulk(b"a\r\n".to_vec()))
        );
        assert_eq!(parse(b"$-1\r\n"), Some(Value::Null));
        assert_eq!(parse(b"_\r\n"), Some(Value::Null));
        assert_eq!(parse(b"*0\r\n"), Some(Value::Array(vec![])));
        assert_eq!(
            parse(b"*2\r\n$1\r\n0\r\n*1\r\n$1\r\nk\r\n"),
            Some(Value::Array(vec![
                Value::Bulk(b"0".to_vec()),
                Value::Array(vec![Value::Bulk(b"k".to_vec())])
            ]))
        );
        assert_eq!(parse(b"-ERR x\r\n"), Some(Value::Other(b"-ERR x".to_vec())));
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for bad in [
            &b""[..],
            b"$3\r\nab\r\n",
            b"$1\r\nab\r\n",
            b"*2\r\n$1\r\na\r\n",
            b"+OK\r\nextra",
            b"%1\r\n",
            b"$x\r\n",
            b"*99999999\r\n",
        ] {
            assert_eq!(parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = "*1\r\n".repeat(20) + "*0\r\n";
        assert_eq!(parse(deep.as_bytes()), None);
    }
}
