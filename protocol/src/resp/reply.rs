//! Replies: a resumable scanner that finds where each backend reply ends (replies are passed
//! through as bytes, never rebuilt), and encoders for the replies the proxy makes itself.

/// Finds complete replies at the front of a backend's read buffer, in RESP2 or RESP3.
///
/// Resumable: a large reply that arrives in many reads is scanned once, not once per read.
/// Aggregates are tracked with an explicit stack, so nesting depth costs no recursion.
///
/// RESP3: an attribute (`|`) is part of the value it precedes, at any depth, so an attribute
/// and its reply are one reply. A push (`>`) is scanned as a reply of its own: the caller
/// tells it apart with [`is_push`]. Streamed strings and aggregates (`$?`, `*?`), which Redis
/// never sends, are an error rather than a guess.
#[derive(Debug, Default)]
pub struct ReplyScanner {
    /// Bytes of the current reply already scanned.
    pos: usize,
    /// The open aggregates, innermost last.
    stack: Vec<Open>,
}

/// An aggregate being scanned.
#[derive(Debug, Clone, Copy)]
struct Open {
    /// Elements still expected (a map's or attribute's count twice).
    remaining: i64,
    /// An attribute: once complete, it is not an element of what holds it.
    attribute: bool,
}

/// A reply a backend sent that is not RESP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("backend sent {what} (byte {byte:#04x} at offset {offset})")]
pub struct MalformedReply {
    pub what: &'static str,
    pub byte: u8,
    pub offset: usize,
}

/// Whether a whole reply is a RESP3 push (out-of-band data, not the answer to a command).
pub fn is_push(reply: &[u8]) -> bool {
    reply.first() == Some(&b'>')
}

impl ReplyScanner {
    /// The length of the first complete reply in `buf`, or `None` if it is not all there yet.
    /// After `Some(n)` the caller removes those `n` bytes before calling again.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, MalformedReply> {
        loop {
            let Some(&kind) = buf.get(self.pos) else {
                return Ok(None);
            };
            let Some(eol) = find_crlf(buf, self.pos + 1) else {
                return Ok(None);
            };
            let after = eol + 2;
            let offset = self.pos;
            let bad = |what| MalformedReply {
                what,
                byte: kind,
                offset,
            };
            let length = |line: &[u8]| match line {
                b"?" => Err(bad("a streamed reply, which the proxy does not pass on")),
                _ => parse_int(line).ok_or_else(|| bad("a malformed reply")),
            };
            match kind {
                b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => self.pos = after,
                b'$' | b'!' | b'=' => {
                    let n = length(&buf[self.pos + 1..eol])?;
                    if n < 0 {
                        self.pos = after;
                    } else {
                        let end = after + n as usize + 2;
                        if buf.len() < end {
                            return Ok(None);
                        }
                        self.pos = end;
                    }
                }
                b'*' | b'~' | b'>' | b'%' | b'|' => {
                    let n = length(&buf[self.pos + 1..eol])?;
                    self.pos = after;
                    let n = if matches!(kind, b'%' | b'|') {
                        n.checked_mul(2).ok_or_else(|| bad("a malformed reply"))?
                    } else {
                        n
                    };
                    let attribute = kind == b'|';
                    if n > 0 {
                        self.stack.push(Open {
                            remaining: n,
                            attribute,
                        });
                        continue;
                    }
                    if attribute {
                        // An empty attribute: the value it precedes comes next.
                        continue;
                    }
                }
                _ => return Err(bad("a malformed reply")),
            }
            // One element finished: close every aggregate it completes. A completed
            // attribute is no element: the value it belongs to follows.
            let mut attribute_done = false;
            while let Some(top) = self.stack.last_mut() {
                top.remaining -= 1;
                if top.remaining > 0 {
                    break;
                }
                let closed = self.stack.pop().expect("a top");
                if closed.attribute {
                    attribute_done = true;
                    break;
                }
            }
            if self.stack.is_empty() && !attribute_done {
                let n = self.pos;
                self.pos = 0;
                return Ok(Some(n));
            }
        }
    }

    /// Forgets a partly scanned reply (the connection it came from was reset).
    pub fn reset(&mut self) {
        self.pos = 0;
        self.stack.clear();
    }
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 1 < buf.len() {
        match buf[i..buf.len() - 1].iter().position(|&b| b == b'\r') {
            Some(off) => {
                i += off;
                if buf[i + 1] == b'\n' {
                    return Some(i);
                }
                i += 1;
            }
            None => return None,
        }
    }
    None
}

/// Parses a RESP integer line body.
pub fn parse_int(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.first()? {
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut v: i64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((b - b'0') as i64)?;
    }
    Some(if neg { -v } else { v })
}

/// Encoders for replies and commands the proxy writes itself.
pub mod encode {
    use bytes::{BufMut, BytesMut};

    use crate::resp::Protocol;

    pub fn simple(out: &mut BytesMut, s: &str) {
        out.reserve(s.len() + 3);
        out.put_u8(b'+');
        out.extend_from_slice(s.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    /// `msg` starts with the error code, e.g. `ERR unknown command`.
    pub fn error(out: &mut BytesMut, msg: &str) {
        out.reserve(msg.len() + 3);
        out.put_u8(b'-');
        // An error line must not break the framing, whatever text it carries.
        out.extend(
            msg.bytes()
                .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
        out.extend_from_slice(b"\r\n");
    }

    pub fn integer(out: &mut BytesMut, n: i64) {
        header(out, b':', n);
    }

    pub fn bulk(out: &mut BytesMut, b: &[u8]) {
        header(out, b'$', b.len() as i64);
        out.extend_from_slice(b);
        out.extend_from_slice(b"\r\n");
    }

    /// Text for a human to read (INFO, CLIENT LIST): a bulk string in RESP2, a verbatim
    /// string of format `txt` in RESP3, as Redis 7 sends it.
    pub fn text(out: &mut BytesMut, protocol: Protocol, text: &[u8]) {
        match protocol {
            Protocol::Resp2 => bulk(out, text),
            Protocol::Resp3 => {
                header(out, b'=', text.len() as i64 + 4);
                out.extend_from_slice(b"txt:");
                out.extend_from_slice(text);
                out.extend_from_slice(b"\r\n");
            }
        }
    }

    /// The null reply: `$-1` in RESP2, `_` in RESP3.
    pub fn null(out: &mut BytesMut, protocol: Protocol) {
        match protocol {
            Protocol::Resp2 => out.extend_from_slice(b"$-1\r\n"),
            Protocol::Resp3 => out.extend_from_slice(b"_\r\n"),
        }
    }

    /// A map of `pairs` entries: `%pairs` in RESP3, a flat array of twice as many in RESP2.
    pub fn map_header(out: &mut BytesMut, protocol: Protocol, pairs: usize) {
        match protocol {
            Protocol::Resp2 => header(out, b'*', 2 * pairs as i64),
            Protocol::Resp3 => header(out, b'%', pairs as i64),
        }
    }

    pub fn array_header(out: &mut BytesMut, n: usize) {
        header(out, b'*', n as i64);
    }

    /// A command as a RESP array of bulk strings.
    pub fn command<A: AsRef<[u8]>>(out: &mut BytesMut, args: &[A]) {
        out.reserve(16 + args.iter().map(|a| a.as_ref().len() + 16).sum::<usize>());
        array_header(out, args.len());
        for a in args {
            bulk(out, a.as_ref());
        }
    }

    fn header(out: &mut BytesMut, kind: u8, n: i64) {
        // Lengths and counts are mostly under 100: one write, no division loop.
        if (0..10).contains(&n) {
            out.extend_from_slice(&[kind, b'0' + n as u8, b'\r', b'\n']);
            return;
        }
        if (10..100).contains(&n) {
            let (tens, ones) = (n as u8 / 10, n as u8 % 10);
            out.extend_from_slice(&[kind, b'0' + tens, b'0' + ones, b'\r', b'\n']);
            return;
        }
        let (digits, len) = itoa_buf(n);
        out.reserve(len + 3);
        out.put_u8(kind);
        out.extend_from_slice(&digits[digits.len() - len..]);
        out.extend_from_slice(b"\r\n");
    }

    fn itoa_buf(n: i64) -> ([u8; 20], usize) {
        let mut buf = [0u8; 20];
        let mut i = buf.len();
        let neg = n < 0;
        let mut v = n.unsigned_abs();
        loop {
            i -= 1;
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        if neg {
            i -= 1;
            buf[i] = b'-';
        }
        (buf, 20 - i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn scans_every_kind_and_resumes() {
        let replies: &[&[u8]] = &[
            b"+OK\r\n",
            b"-ERR no\r\n",
            b":-42\r\n",
            b"$-1\r\n",
            b"$5\r\nhe\r\no\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            b"*3\r\n$1\r\na\r\n*2\r\n:1\r\n*0\r\n$-1\r\n",
            b"%1\r\n+k\r\n:1\r\n",
            // RESP3: every type, an attribute before a reply and inside an aggregate.
            b"_\r\n",
            b",1.5\r\n",
            b"#t\r\n",
            b"(3492890328409238509324850943850943825024385\r\n",
            b"=15\r\ntxt:Some string\r\n",
            b"!21\r\nSYNTAX invalid syntax\r\n",
            b"~2\r\n+a\r\n+b\r\n",
            b"|1\r\n+key-popularity\r\n*2\r\n$1\r\na\r\n,0.19\r\n*2\r\n:1\r\n:2\r\n",
            b"*2\r\n|1\r\n+ttl\r\n:3600\r\n$1\r\nv\r\n:2\r\n",
            b"|0\r\n+OK\r\n",
            b">3\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n_\r\n",
        ];
        let all: Vec<u8> = replies.concat();
        let mut s = ReplyScanner::default();
        let mut off = 0;
        for r in replies {
            // Feed byte by byte: the scanner must find each boundary exactly once.
            let mut found = None;
            for end in off + 1..=all.len() {
                if let Some(n) = s.scan(&all[off..end]).unwrap() {
                    found = Some(n);
                    break;
                }
            }
            assert_eq!(
                found,
                Some(r.len()),
                "reply {:?}",
                String::from_utf8_lossy(r)
            );
            off += r.len();
        }
    }

    #[test]
    fn malformed_reply_is_an_error() {
        let mut s = ReplyScanner::default();
        assert!(s.scan(b"?what\r\n").is_err());
        s.reset();
        assert!(s.scan(b"$abc\r\n").is_err());
        s.reset();
        assert!(
            s.scan(b"%9000000000000000000\r\n").is_err(),
            "a map header that overflows"
        );
        for streamed in [&b"$?\r\n;4\r\nHell\r\n;0\r\n"[..], b"*?\r\n:1\r\n.\r\n"] {
            s.reset();
            let e = s.scan(streamed).unwrap_err();
            assert!(e.to_string().contains("streamed"), "{e}");
        }
    }

    #[test]
    fn pushes_are_told_apart() {
        assert!(is_push(b">2\r\n+message\r\n+x\r\n"));
        assert!(!is_push(b"*2\r\n+message\r\n+x\r\n"));
    }

    #[test]
    fn encoders() {
        let mut b = BytesMut::new();
        encode::integer(&mut b, -1234567890123);
        encode::integer(&mut b, 0);
        encode::error(&mut b, "ERR bad\r\nthing");
        encode::command(&mut b, &["SET", "k", ""]);
        assert_eq!(
            &b[..],
            b":-1234567890123\r\n:0\r\n-ERR bad  thing\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"
        );
        assert_eq!(parse_int(b"-17"), Some(-17));
        assert_eq!(parse_int(b"99999999999999999999"), None);
    }

    #[test]
    fn headers_around_the_short_forms() {
        for n in [-1i64, 0, 9, 10, 42, 99, 100, 101, 12345, i64::MAX, i64::MIN] {
            let mut b = BytesMut::new();
            encode::integer(&mut b, n);
            assert_eq!(&b[..], format!(":{n}\r\n").as_bytes());
        }
        let mut b = BytesMut::new();
        encode::array_header(&mut b, 10);
        encode::bulk(&mut b, &[b'x'; 100]);
        assert!(b.starts_with(b"*10\r\n$100\r\nxxx"));
    }
}
