//! Decodes client requests (RESP arrays of bulk strings, or inline commands) from a buffer.
//! Limits are checked on the length headers, before any byte of the body is awaited or stored.

use bytes::{Buf, Bytes, BytesMut};

/// Bounds on what a client may send, checked as headers are read.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bulk_len: usize,
    pub max_array_len: usize,
    pub max_inline_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 512 * 1024 * 1024,
            max_array_len: 1024 * 1024,
            max_inline_len: 64 * 1024,
        }
    }
}

/// A malformed or oversized request. The session answers `-ERR Protocol error: ...` and closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("invalid multibulk length")]
    InvalidArrayLen,
    #[error("invalid bulk length")]
    InvalidBulkLen,
    #[error("expected '$', got '{0}'")]
    ExpectedBulk(char),
    #[error("too big inline request")]
    InlineTooBig,
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
    #[error("bulk string not terminated by CRLF")]
    MissingCrlf,
}

/// One command line from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The arguments; `args[0]` is the command name. Never empty.
    pub args: Vec<Bytes>,
    /// The request exactly as the client sent it, when it was a RESP array: forwarded as is.
    /// `None` for inline commands, which are re-encoded before they reach Redis.
    pub raw: Option<Bytes>,
}

impl Request {
    /// The request in RESP form, as a backend should receive it.
    pub fn write_resp(&self, out: &mut BytesMut) {
        match &self.raw {
            Some(raw) => out.extend_from_slice(raw),
            None => super::encode::command(out, &self.args),
        }
    }
}

/// Turns a client byte stream into requests.
///
/// Decoding is two-phase, as in mini-redis: the headers are scanned to learn whether a whole
/// frame is buffered (an incomplete frame is normal, not an error), and only then is the
/// frame split off the buffer, without copying the arguments.
#[derive(Debug, Default)]
pub struct RequestDecoder {
    limits: Limits,
    /// Argument spans (start, end) within the frame being scanned; reused between frames.
    spans: Vec<(usize, usize)>,
    /// The arguments of the inline command being scanned (unescaped, so owned).
    inline_args: Vec<Vec<u8>>,
    /// Where the scan of an incomplete array frame stopped, so the next read resumes there
    /// instead of re-scanning every argument already seen (`spans` holds those).
    resume: Option<Resume>,
}

/// An array frame scanned up to `pos` (the start of the first incomplete argument).
#[derive(Debug, Clone, Copy)]
struct Resume {
    count: usize,
    pos: usize,
}

enum Scan {
    Incomplete,
    /// Nothing but an empty command (an empty inline line, `*0`, `*-1`) of this many bytes.
    Skip(usize),
    Frame {
        len: usize,
        inline: bool,
    },
}

impl RequestDecoder {
    pub fn new(limits: Limits) -> Self {
        RequestDecoder {
            limits,
            spans: Vec::new(),
            inline_args: Vec::new(),
            resume: None,
        }
    }

    /// Takes the next whole request off the front of `buf`, if one is there.
    ///
    /// Between calls the caller may only append to `buf`: after an incomplete frame the
    /// decoder resumes where it stopped.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        loop {
            if buf.is_empty() {
                return Ok(None);
            }
            match self.scan(buf)? {
                Scan::Incomplete => return Ok(None),
                Scan::Skip(n) => buf.advance(n),
                Scan::Frame { len, inline } => {
                    let frame = buf.split_to(len).freeze();
                    if inline {
                        let args = self.inline_args.drain(..).map(Bytes::from).collect();
                        return Ok(Some(Request { args, raw: None }));
                    }
                    let args = self.spans.iter().map(|&(s, e)| frame.slice(s..e)).collect();
                    let raw = Some(frame);
                    return Ok(Some(Request { args, raw }));
                }
            }
        }
    }

    fn scan(&mut self, buf: &[u8]) -> Result<Scan, ProtocolError> {
        let (count, pos) = match self.resume.take() {
            Some(r) if buf[0] == b'*' && r.pos <= buf.len() => (r.count, r.pos),
            _ => {
                self.spans.clear();
                if buf[0] != b'*' {
                    return self.scan_inline(buf);
                }
                let Some((count, pos)) = read_header(buf, 1, self.limits.max_array_len as i64)?
                else {
                    return Ok(Scan::Incomplete);
                };
                let count = match count {
                    Header::Len(n) => n,
                    Header::TooBig | Header::Bad => return Err(ProtocolError::InvalidArrayLen),
                };
                if count <= 0 {
                    return Ok(Scan::Skip(pos));
                }
                self.spans.reserve((count as usize).min(1024));
                (count as usize, pos)
            }
        };
        let scanned = self.scan_args(buf, count, pos)?;
        if matches!(scanned, Scan::Incomplete) {
            self.resume = Some(Resume {
                count,
                pos: self.spans.last().map_or(pos, |&(_, end)| end + 2),
            });
        }
        Ok(scanned)
    }

    /// Scans the bulk strings of an array from `pos` on, until `count` arguments are in
    /// `spans`.
    fn scan_args(
        &mut self,
        buf: &[u8],
        count: usize,
        mut pos: usize,
    ) -> Result<Scan, ProtocolError> {
        while self.spans.len() < count {
            let Some(&first) = buf.get(pos) else {
                return Ok(Scan::Incomplete);
            };
            if first != b'$' {
                return Err(ProtocolError::ExpectedBulk(printable(first)));
            }
            let Some((len, body)) = read_header(buf, pos + 1, self.limits.max_bulk_len as i64)?
            else {
                return Ok(Scan::Incomplete);
            };
            let len = match len {
                Header::Len(n) if n >= 0 => n as usize,
                _ => return Err(ProtocolError::InvalidBulkLen),
            };
            let end = body + len;
            if buf.len() < end + 2 {
                return Ok(Scan::Incomplete);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ProtocolError::MissingCrlf);
            }
            self.spans.push((body, end));
            pos = end + 2;
        }
        Ok(Scan::Frame {
            len: pos,
            inline: false,
        })
    }

    fn scan_inline(&mut self, buf: &[u8]) -> Result<Scan, ProtocolError> {
        let Some(nl) = memchr(b'\n', buf) else {
            if buf.len() > self.limits.max_inline_len {
                return Err(ProtocolError::InlineTooBig);
            }
            return Ok(Scan::Incomplete);
        };
        if nl > self.limits.max_inline_len {
            return Err(ProtocolError::InlineTooBig);
        }
        let line_end = if nl > 0 && buf[nl - 1] == b'\r' {
            nl - 1
        } else {
            nl
        };
        self.inline_args.clear();
        split_inline(&buf[..line_end], &mut self.inline_args)?;
        if self.inline_args.len() > self.limits.max_array_len {
            return Err(ProtocolError::InvalidArrayLen);
        }
        if self.inline_args.is_empty() {
            return Ok(Scan::Skip(nl + 1));
        }
        Ok(Scan::Frame {
            len: nl + 1,
            inline: true,
        })
    }
}

enum Header {
    Len(i64),
    TooBig,
    Bad,
}

/// Reads the decimal after a type byte up to CRLF: `(value, index after CRLF)`, or `None`
/// when the line is not complete yet. A line longer than any valid number is `Bad` at once.
///
/// Only the canonical form Redis's `string2ll` accepts is a number: an optional `-`, then
/// `0` alone or digits that do not start with `0` (`01`, `-0`, `-` and `+1` are `Bad`).
/// The decoder forwards frames as the client sent them, so it must refuse whatever Redis
/// would refuse.
fn read_header(
    buf: &[u8],
    start: usize,
    max: i64,
) -> Result<Option<(Header, usize)>, ProtocolError> {
    let mut value: i64 = 0;
    let mut neg = false;
    let mut digits = 0;
    let mut overflow = false;
    let mut leading_zero = false;
    let mut i = start;
    loop {
        let Some(&b) = buf.get(i) else {
            return if i - start > 20 {
                Ok(Some((Header::Bad, i)))
            } else {
                Ok(None)
            };
        };
        match b {
            b'\r' => {
                let Some(&lf) = buf.get(i + 1) else {
                    return Ok(None);
                };
                if lf != b'\n' || digits == 0 || (leading_zero && (digits > 1 || neg)) {
                    return Ok(Some((Header::Bad, i)));
                }
                let v = if neg { -value } else { value };
                let h = if overflow || v > max {
                    Header::TooBig
                } else {
                    Header::Len(v)
                };
                return Ok(Some((h, i + 2)));
            }
            b'-' if i == start => neg = true,
            b'0'..=b'9' => {
                if digits == 0 {
                    leading_zero = b == b'0';
                }
                if digits < 18 {
                    value = value * 10 + (b - b'0') as i64;
                } else {
                    overflow = true;
                }
                digits += 1;
            }
            _ => return Ok(Some((Header::Bad, i))),
        }
        i += 1;
    }
}

/// Splits an inline command line exactly like Redis's `sdssplitargs`: blanks separate
/// arguments; double quotes allow escapes (`\n`, `\r`, `\t`, `\b`, `\a`, `\xNN`, `\"`);
/// single quotes are literal but for `\'`; a closing quote must end the argument.
fn split_inline(line: &[u8], args: &mut Vec<Vec<u8>>) -> Result<(), ProtocolError> {
    // Redis parses the line as a C string: a NUL byte ends it.
    let line = &line[..line.iter().position(|&b| b == 0).unwrap_or(line.len())];
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let mut p = 0;
    loop {
        while p < line.len() && is_c_space(at(p)) {
            p += 1;
        }
        if p >= line.len() {
            return Ok(());
        }
        let (mut in_dq, mut in_sq) = (false, false);
        let mut current = Vec::new();
        loop {
            let c = at(p);
            if in_dq {
                if c == b'\\'
                    && at(p + 1) == b'x'
                    && at(p + 2).is_ascii_hexdigit()
                    && at(p + 3).is_ascii_hexdigit()
                {
                    current.push(hex(at(p + 2)) * 16 + hex(at(p + 3)));
                    p += 3;
                } else if c == b'\\' && p + 1 < line.len() {
                    p += 1;
                    current.push(match at(p) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        other => other,
                    });
                } else if c == b'"' {
                    if p + 1 < line.len() && !is_c_space(at(p + 1)) {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    p += 1;
                    break;
                } else if p >= line.len() {
                    return Err(ProtocolError::UnbalancedQuotes);
                } else {
                    current.push(c);
                }
            } else if in_sq {
                if c == b'\\' && at(p + 1) == b'\'' {
                    p += 1;
                    current.push(b'\'');
                } else if c == b'\'' {
                    if p + 1 < line.len() && !is_c_space(at(p + 1)) {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    p += 1;
                    break;
                } else if p >= line.len() {
                    return Err(ProtocolError::UnbalancedQuotes);
                } else {
                    current.push(c);
                }
            } else {
                match c {
                    _ if p >= line.len() => break,
                    b' ' | b'\n' | b'\r' | b'\t' => break,
                    b'"' => in_dq = true,
                    b'\'' => in_sq = true,
                    _ => current.push(c),
                }
            }
            p += 1;
        }
        args.push(current);
    }
}

/// C's `isspace`, which Redis uses: unlike `u8::is_ascii_whitespace` it counts `\v`.
fn is_c_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

fn printable(b: u8) -> char {
    if b.is_ascii_graphic() { b as char } else { '?' }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<Vec<Vec<String>>, ProtocolError> {
        let mut d = RequestDecoder::default();
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(r) = d.decode(&mut buf)? {
            out.push(
                r.args
                    .iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect(),
            );
        }
        Ok(out)
    }

    #[test]
    fn decodes_pipelined_arrays_and_keeps_raw() {
        let input = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n";
        let mut d = RequestDecoder::default();
        let mut buf = BytesMut::from(&input[..]);
        let a = d.decode(&mut buf).unwrap().unwrap();
        assert_eq!(a.args, vec![Bytes::from("GET"), Bytes::from("k")]);
        assert_eq!(a.raw.as_deref(), Some(&input[..20]));
        let b = d.decode(&mut buf).unwrap().unwrap();
        assert_eq!(b.args[2], Bytes::new());
        assert!(d.decode(&mut buf).unwrap().is_none());
        assert!(buf.is_empty());
    }

    #[test]
    fn every_split_point_is_incomplete_not_an_error() {
        let input = b"*3\r\n$3\r\nSET\r\n$5\r\nhello\r\n$5\r\nworld\r\n";
        for cut in 0..input.len() {
            let mut d = RequestDecoder::default();
            let mut buf = BytesMut::from(&input[..cut]);
            assert_eq!(d.decode(&mut buf), Ok(None), "cut at {cut}");
            buf.extend_from_slice(&input[cut..]);
            let r = d.decode(&mut buf).unwrap().unwrap();
            assert_eq!(r.args.len(), 3);
        }
    }

    #[test]
    fn a_long_array_fed_in_small_pieces_resumes_where_it_stopped() {
        let args: Vec<Vec<u8>> = (0..2000).map(|i| format!("arg{i}").into_bytes()).collect();
        let mut input = BytesMut::new();
        super::super::encode::command(&mut input, &args);
        input.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        for piece in [1, 7, 64, 1000] {
            let mut d = RequestDecoder::default();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for chunk in input.chunks(piece) {
                buf.extend_from_slice(chunk);
                while let Some(r) = d.decode(&mut buf).unwrap() {
                    got.push(r);
                }
            }
            assert_eq!(got.len(), 2, "pieces of {piece}");
            assert_eq!(got[0].args, args, "pieces of {piece}");
            assert_eq!(got[0].raw.as_deref(), Some(&input[..input.len() - 14]));
            assert_eq!(got[1].args, vec![Bytes::from_static(b"PING")]);
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn inline_commands() {
        assert_eq!(
            decode_all(b"PING\r\nset  a 'b c'\n\r\n  \r\nGET \"x y\"\r\n").unwrap(),
            vec![vec!["PING"], vec!["set", "a", "b c"], vec!["GET", "x y"]]
        );
        assert_eq!(
            decode_all(b"GET 'x\r\n"),
            Err(ProtocolError::UnbalancedQuotes)
        );
    }

    #[test]
    fn inline_escapes_as_redis() {
        assert_eq!(
            decode_all(b"ECHO \"esc\\x41\\n\" 'it\\'s' a\"b c\"\r\n").unwrap(),
            vec![vec!["ECHO", "escA\n", "it's", "ab c"]]
        );
        assert_eq!(
            decode_all(b"ECHO \"a\"b\r\n"),
            Err(ProtocolError::UnbalancedQuotes)
        );
        assert_eq!(
            decode_all(b"ECHO \"abc\r\n"),
            Err(ProtocolError::UnbalancedQuotes)
        );
        assert_eq!(
            decode_all(b"ECHO a\0b c\r\nPING\r\n").unwrap(),
            vec![vec!["ECHO", "a"], vec!["PING"]]
        );
    }

    #[test]
    fn empty_arrays_are_skipped() {
        assert_eq!(
            decode_all(b"*0\r\n*-1\r\nPING\r\n").unwrap(),
            vec![vec!["PING"]]
        );
    }

    #[test]
    fn huge_headers_are_refused_before_any_body() {
        assert_eq!(
            decode_all(b"*1000000000\r\n"),
            Err(ProtocolError::InvalidArrayLen)
        );
        assert_eq!(
            decode_all(b"*1\r\n$2000000000\r\n"),
            Err(ProtocolError::InvalidBulkLen)
        );
        assert_eq!(
            decode_all(b"*99999999999999999999999\r\n"),
            Err(ProtocolError::InvalidArrayLen)
        );
        assert_eq!(
            decode_all(b"*1\r\n$-1\r\n"),
            Err(ProtocolError::InvalidBulkLen)
        );
    }

    #[test]
    fn malformed_frames() {
        assert_eq!(
            decode_all(b"*1\r\n:5\r\n"),
            Err(ProtocolError::ExpectedBulk(':'))
        );
        assert_eq!(decode_all(b"*x\r\n"), Err(ProtocolError::InvalidArrayLen));
        assert_eq!(
            decode_all(b"*1\r\n$3\r\nGETxx"),
            Err(ProtocolError::MissingCrlf)
        );
        let long = vec![b'a'; 70 * 1024];
        assert_eq!(decode_all(&long), Err(ProtocolError::InlineTooBig));
    }

    /// Redis reads lengths with `string2ll`: no leading zero, no `-0`, no sign alone. A frame
    /// Redis would refuse must not be forwarded as sent (Redis would drop the shared backend
    /// connection), so the decoder refuses it with Redis's own error.
    #[test]
    fn non_canonical_lengths_are_refused_as_redis_does() {
        for bad in [
            &b"*02\r\n$3\r\nGET\r\n$1\r\nk\r\n"[..],
            b"*-0\r\n",
            b"*-01\r\n",
            b"*-\r\n",
            b"*00\r\n",
        ] {
            assert_eq!(
                decode_all(bad),
                Err(ProtocolError::InvalidArrayLen),
                "{bad:?}"
            );
        }
        for bad in [
            &b"*2\r\n$3\r\nGET\r\n$01\r\nk\r\n"[..],
            b"*1\r\n$-0\r\n\r\n",
            b"*1\r\n$00\r\n\r\n",
            b"*1\r\n$-\r\n",
        ] {
            assert_eq!(
                decode_all(bad),
                Err(ProtocolError::InvalidBulkLen),
                "{bad:?}"
            );
        }
        // The canonical forms still decode; `*0`, `*-1` and `$0` are canonical.
        assert_eq!(decode_all(b"*0\r\n*-1\r\n*-5\r\n"), Ok(vec![]));
        assert_eq!(
            decode_all(b"*2\r\n$3\r\nGET\r\n$0\r\n\r\n"),
            Ok(vec![vec!["GET".to_string(), String::new()]])
        );
        assert_eq!(
            decode_all(b"*1\r\n$10\r\n0123456789\r\n"),
            Ok(vec![vec!["0123456789".to_string()]])
        );
    }

    #[test]
    fn an_array_of_many_small_args_does_not_preallocate() {
        let mut d = RequestDecoder::default();
        let mut buf = BytesMut::from(&b"*1000000\r\n$1\r\na\r\n"[..]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert!(d.spans.capacity() <= 1024);
    }
}
