//! Converts a whole reply to a session's protocol: replies that come from Redis are already
//! in it (each protocol has its own backend connections), but replies a plugin writes may be
//! in either, and are delivered in the session's.
//!
//! To RESP2, as Redis itself answers a RESP2 client: null `_` becomes `$-1`, a boolean an
//! integer (`#t` → `:1`), a double or big number a bulk string, a verbatim string a bulk
//! string without its format, a blob error a simple error (CR and LF as spaces), a map a
//! flat array of twice its length, a set or push an array, and an attribute is left out.
//! To RESP3: the RESP2 nulls `$-1` and `*-1` become `_`. Everything else is kept as it is.

use bytes::{Bytes, BytesMut};

use super::Protocol;
use super::reply::{ReplyScanner, encode, parse_int};

/// `reply` (one whole RESP value) in `protocol`; the same bytes when nothing changes, and
/// when `reply` is not a well-formed value.
pub fn for_protocol(reply: Bytes, protocol: Protocol) -> Bytes {
    match reply.first() {
        None | Some(b'+' | b'-' | b':') => reply,
        _ => match convert(&reply, protocol) {
            Some(converted) => converted.freeze(),
            None => reply,
        },
    }
}

/// The converted reply, or `None` if nothing changes (or `reply` is malformed).
fn convert(reply: &[u8], protocol: Protocol) -> Option<BytesMut> {
    let mut out = BytesMut::with_capacity(reply.len() + 16);
    let mut changed = false;
    // Elements still expected by each open aggregate, innermost last.
    let mut stack: Vec<i64> = Vec::new();
    let mut pos = 0;
    loop {
        let kind = *reply.get(pos)?;
        let eol = pos
            + 1
            + reply
                .get(pos + 1..)?
                .windows(2)
                .position(|w| w == b"\r\n")?;
        let line = &reply[pos + 1..eol];
        let after = eol + 2;
        let mut opened = None;
        match (kind, protocol) {
            (b'$' | b'!' | b'=', _) => {
                let n = parse_int(line)?;
                if n < 0 {
                    match protocol {
                        Protocol::Resp3 => {
                            out.extend_from_slice(b"_\r\n");
                            changed = true;
                        }
                        Protocol::Resp2 => out.extend_from_slice(&reply[pos..after]),
                    }
                    pos = after;
                } else {
                    let end = after.checked_add(n as usize)?;
                    let body = reply.get(after..end)?;
                    match (kind, protocol) {
                        (b'!', Protocol::Resp2) => {
                            encode::error(&mut out, &String::from_utf8_lossy(body));
                            changed = true;
                        }
                        (b'=', Protocol::Resp2) => {
                            encode::bulk(&mut out, body.get(4..).unwrap_or_default());
                            changed = true;
                        }
                        _ => out.extend_from_slice(reply.get(pos..end + 2)?),
                    }
                    pos = end + 2;
                }
            }
            (b'*' | b'~' | b'>' | b'%', _) => {
                let n = parse_int(line)?;
                if n < 0 && protocol == Protocol::Resp3 {
                    out.extend_from_slice(b"_\r\n");
                    changed = true;
                } else if protocol == Protocol::Resp2 && kind != b'*' {
                    let len = if kind == b'%' { n.checked_mul(2)? } else { n };
                    encode::array_header(&mut out, len.max(0) as usize);
                    opened = Some(len);
                    changed = true;
                } else {
                    out.extend_from_slice(&reply[pos..after]);
                    opened = Some(if kind == b'%' { n.checked_mul(2)? } else { n });
                }
                pos = after;
            }
            (b'|', Protocol::Resp2) => {
                // An attribute is left out whole; the value it belongs to follows.
                let n = parse_int(line)?.checked_mul(2)?;
                pos = after;
                for _ in 0..n {
                    pos += ReplyScanner::default().scan(&reply[pos..]).ok()??;
                }
                changed = true;
                continue;
            }
            (b'|', Protocol::Resp3) => {
                let n = parse_int(line)?.checked_mul(2)?;
                let start = pos;
                pos = after;
                for _ in 0..n {
                    pos += ReplyScanner::default().scan(&reply[pos..]).ok()??;
                }
                out.extend_from_slice(&reply[start..pos]);
                continue;
            }
            (b'_', Protocol::Resp2) => {
                encode::null(&mut out, Protocol::Resp2);
                changed = true;
                pos = after;
            }
            (b'#', Protocol::Resp2) => {
                encode::integer(&mut out, (line == b"t") as i64);
                changed = true;
                pos = after;
            }
            (b',' | b'(', Protocol::Resp2) => {
                encode::bulk(&mut out, line);
                changed = true;
                pos = after;
            }
            (b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(', _) => {
                out.extend_from_slice(&reply[pos..after]);
                pos = after;
            }
            _ => return None,
        }
        if let Some(n) = opened
            && n > 0
        {
            stack.push(n);
            continue;
        }
        while let Some(top) = stack.last_mut() {
            *top -= 1;
            if *top > 0 {
                break;
            }
            stack.pop();
        }
        if stack.is_empty() {
            return (changed && pos == reply.len()).then_some(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to(protocol: Protocol, reply: &[u8]) -> String {
        let out = for_protocol(Bytes::copy_from_slice(reply), protocol);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn resp3_types_become_what_redis_sends_a_resp2_client() {
        let cases: &[(&[u8], &str)] = &[
            (b"_\r\n", "$-1\r\n"),
            (b"#t\r\n", ":1\r\n"),
            (b"#f\r\n", ":0\r\n"),
            (b",3.14\r\n", "$4\r\n3.14\r\n"),
            (
                b"(12345678901234567890\r\n",
                "$20\r\n12345678901234567890\r\n",
            ),
            (b"=9\r\ntxt:hello\r\n", "$5\r\nhello\r\n"),
            (b"!10\r\nERR a\r\nb c\r\n", "-ERR a  b c\r\n"),
            (
                b"%1\r\n$1\r\na\r\n,1.5\r\n",
                "*2\r\n$1\r\na\r\n$3\r\n1.5\r\n",
            ),
            (b"~2\r\n:1\r\n_\r\n", "*2\r\n:1\r\n$-1\r\n"),
            (b"|1\r\n+ttl\r\n:5\r\n$1\r\nv\r\n", "$1\r\nv\r\n"),
            (
                b"*2\r\n|1\r\n+a\r\n+b\r\n#t\r\n$1\r\nx\r\n",
                "*2\r\n:1\r\n$1\r\nx\r\n",
            ),
            (b"%0\r\n", "*0\r\n"),
            (b">2\r\n+m\r\n_\r\n", "*2\r\n+m\r\n$-1\r\n"),
        ];
        for (reply, want) in cases {
            assert_eq!(
                to(Protocol::Resp2, reply),
                *want,
                "{:?}",
                String::from_utf8_lossy(reply)
            );
        }
    }

    #[test]
    fn resp2_nulls_become_resp3_nulls() {
        assert_eq!(to(Protocol::Resp3, b"$-1\r\n"), "_\r\n");
        assert_eq!(to(Protocol::Resp3, b"*-1\r\n"), "_\r\n");
        assert_eq!(
            to(Protocol::Resp3, b"*3\r\n$1\r\na\r\n$-1\r\n*-1\r\n"),
            "*3\r\n$1\r\na\r\n_\r\n_\r\n"
        );
    }

    #[test]
    fn replies_valid_in_the_protocol_are_kept_as_they_are() {
        for reply in [
            &b"+OK\r\n"[..],
            b"-ERR x\r\n",
            b":5\r\n",
            b"$3\r\nabc\r\n",
            b"*2\r\n$1\r\na\r\n:1\r\n",
            b"*0\r\n",
        ] {
            for p in [Protocol::Resp2, Protocol::Resp3] {
                assert_eq!(to(p, reply).as_bytes(), reply);
            }
        }
        for reply in [
            &b"%1\r\n+a\r\n,1.5\r\n"[..],
            b"|1\r\n+a\r\n+b\r\n_\r\n",
            b"#t\r\n",
        ] {
            assert_eq!(to(Protocol::Resp3, reply).as_bytes(), reply);
        }
        // Malformed or trailing bytes: left alone (the host checks plugin replies).
        assert_eq!(
            to(Protocol::Resp2, b"%1\r\n+a\r\n").as_bytes(),
            b"%1\r\n+a\r\n"
        );
        assert_eq!(to(Protocol::Resp2, b"_\r\n_\r\n").as_bytes(), b"_\r\n_\r\n");
    }
}
