//! Replies: a resumable scanner that finds where each backend reply ends (replies are passed
//! through as bytes, never rebuilt), and encoders for the replies the proxy makes itself.

/// Finds complete replies at the front of a backend's read buffer.
///
/// Resumable: a large reply that arrives in many reads is scanned once, not once per read.
/// Aggregates are tracked with an explicit stack, so nesting depth costs no recursion.
#[derive(Debug, Default)]
pub struct ReplyScanner {
    /// Bytes of the current reply already scanned.
    pos: usize,
    /// Elements still expected by each open aggregate, innermost last.
    stack: Vec<i64>,
}

/// A reply a backend sent that is not RESP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("backend sent a malformed reply (byte {byte:#04x} at offset {offset})")]
pub struct MalformedReply {
    pub byte: u8,
    pub offset: usize,
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
            let bad = MalformedReply {
                byte: kind,
                offset: self.pos,
            };
            match kind {
                b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => self.pos = after,
                b'$' | b'!' | b'=' => {
                    let n = parse_int(&buf[self.pos + 1..eol]).ok_or(bad.clone())?;
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
                    let n = parse_int(&buf[self.pos + 1..eol]).ok_or(bad.clone())?;
                    self.pos = after;
                    let n = if matches!(kind, b'%' | b'|') {
                        n.checked_mul(2).ok_or(bad.clone())?
                    } else {
                        n
                    };
                    if n > 0 {
                        self.stack.push(n);
                        continue;
                    }
                }
                _ => return Err(bad),
            }
            // One element finished: close every aggregate it completes.
            while let Some(top) = self.stack.last_mut() {
                *top -= 1;
                if *top > 0 {
                    break;
                }
                self.stack.pop();
            }
            if self.stack.is_empty() {
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
pub(crate) fn parse_int(s: &[u8]) -> Option<i64> {
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

    pub fn null(out: &mut BytesMut) {
        out.extend_from_slice(b"$-1\r\n");
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
