//! The properties of `tessera_proxy::resp::RequestDecoder`, in one copy.
//!
//! Included with `#[path]` by the cargo-fuzz target (`fuzz_targets/request_decoder.rs`, nightly)
//! and by the stable corpus replay test (`proxy/tests/decoder_corpus.rs`), so a corpus file or a
//! fuzzer artifact is judged the same way in both places. [`check`] panics on a violation.
//!
//! For one input, under two sets of limits (Redis's defaults, and tiny ones so that the limit
//! paths are reached by small inputs):
//!
//! 1. decoding never panics;
//! 2. feeding the input in one piece, in two pieces (at every split point for short inputs, at
//!    a few content-chosen points for long ones) and byte by byte (short inputs) gives the same
//!    requests, the same error and the same undecoded tail;
//! 3. every byte the decoder consumes is accounted for: each call consumes zero or more empty
//!    commands (`*0`, `*-N`, blank inline lines) followed by the request it returns, and a
//!    request's `raw` is exactly the bytes it was decoded from;
//! 4. differential, RESP arrays: the `redis-protocol` crate decodes each `raw` into an array of
//!    bulk strings equal to `args`, consuming exactly `raw`; a frame `redis-protocol` finds
//!    complete is never left waiting; a canonical frame within the limits is never refused;
//!    and `raw` is byte for byte the canonical encoding of `args` (what the proxy forwards as
//!    sent, Redis must parse as the same command);
//! 5. differential, inline commands: the arguments of an inline line, whether it is skipped as
//!    blank, and whether its quotes are refused, are those of Redis's `sdssplitargs` (a port of
//!    it is below, [`sdssplitargs`]);
//! 6. accepted requests respect the limits.

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::decode::decode_bytes;
use redis_protocol::resp2::types::BytesFrame;
use tessera_proxy::resp::{Limits, ProtocolError, Request, RequestDecoder};

/// Inputs up to this length are split at every point.
const ALL_SPLITS_MAX: usize = 256;
/// Inputs up to this length are also fed one byte at a time.
const BYTEWISE_MAX: usize = 512;

/// The limit sets every input is decoded under.
pub fn limit_sets() -> [Limits; 2] {
    [
        Limits::default(),
        Limits {
            max_bulk_len: 16,
            max_array_len: 8,
            max_inline_len: 32,
        },
    ]
}

/// What one decoder call produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Request(Request),
    Error(ProtocolError),
}

/// Everything a feeding strategy observed: the events in order, and the bytes left in the
/// buffer at the end (`None` once an error stopped decoding: the session closes then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub events: Vec<Event>,
    pub rest: Option<Vec<u8>>,
}

/// Checks every property on `data`; panics with a description on the first violation.
pub fn check(data: &[u8]) {
    for limits in limit_sets() {
        let whole = feed_whole_checked(data, limits);
        for split in split_points(data) {
            let split_outcome = feed_split(data, split, limits);
            assert_eq!(
                split_outcome, whole,
                "feeding in two pieces split at {split} differs from feeding in one ({limits:?})"
            );
        }
        if data.len() <= BYTEWISE_MAX {
            let bytewise = feed_bytewise(data, limits);
            assert_eq!(
                bytewise, whole,
                "feeding byte by byte differs from feeding in one piece ({limits:?})"
            );
        }
    }
}

/// Where to split `data` in two: everywhere for short inputs; for long ones, the ends, the
/// middle and a few points chosen by the content (so the fuzzer moves them by mutating it).
pub fn split_points(data: &[u8]) -> Vec<usize> {
    let n = data.len();
    if n < 2 {
        return Vec::new();
    }
    if n <= ALL_SPLITS_MAX {
        return (1..n).collect();
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    let mut points = vec![1, n / 2, n - 1];
    for i in 0..5 {
        let x = h.rotate_left(i * 13) as usize;
        points.push(1 + x % (n - 1));
    }
    points.sort_unstable();
    points.dedup();
    points
}

/// Decodes `buf` until it needs more bytes or fails; appends what it saw to `events`.
/// Returns false once an error was seen.
fn drain(decoder: &mut RequestDecoder, buf: &mut BytesMut, events: &mut Vec<Event>) -> bool {
    loop {
        match decoder.decode(buf) {
            Ok(Some(req)) => {
                assert!(!req.args.is_empty(), "a request with no arguments: {req:?}");
                events.push(Event::Request(req));
            }
            Ok(None) => return true,
            Err(e) => {
                events.push(Event::Error(e));
                return false;
            }
        }
    }
}

/// Feeds `data[..split]`, decodes, appends the rest, decodes again.
pub fn feed_split(data: &[u8], split: usize, limits: Limits) -> Outcome {
    let mut decoder = RequestDecoder::new(limits);
    let mut buf = BytesMut::from(&data[..split]);
    let mut events = Vec::new();
    if !drain(&mut decoder, &mut buf, &mut events) {
        return Outcome { events, rest: None };
    }
    buf.extend_from_slice(&data[split..]);
    let ok = drain(&mut decoder, &mut buf, &mut events);
    Outcome {
        events,
        rest: ok.then(|| buf.to_vec()),
    }
}

/// Feeds one byte at a time, decoding after each.
pub fn feed_bytewise(data: &[u8], limits: Limits) -> Outcome {
    let mut decoder = RequestDecoder::new(limits);
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    for &b in data {
        buf.extend_from_slice(&[b]);
        if !drain(&mut decoder, &mut buf, &mut events) {
            return Outcome { events, rest: None };
        }
    }
    Outcome {
        events,
        rest: Some(buf.to_vec()),
    }
}

/// Feeds `data` in one piece and checks, call by call, what each call consumed
/// (properties 3 to 6).
pub fn feed_whole_checked(data: &[u8], limits: Limits) -> Outcome {
    let mut decoder = RequestDecoder::new(limits);
    let mut buf = BytesMut::from(data);
    let mut events = Vec::new();
    loop {
        let before = data.len() - buf.len();
        let result = decoder.decode(&mut buf);
        let now = data.len() - buf.len();
        assert!(now >= before, "the buffer grew during decode");
        let consumed = &data[before..now];
        match result {
            Ok(Some(req)) => {
                assert!(!req.args.is_empty(), "a request with no arguments: {req:?}");
                check_request(&req, consumed, limits);
                events.push(Event::Request(req));
            }
            Ok(None) => {
                assert!(
                    is_skips(consumed),
                    "a call that returned nothing consumed more than empty commands: {:?}",
                    show(consumed)
                );
                check_waiting(&buf, limits);
                return Outcome {
                    events,
                    rest: Some(buf.to_vec()),
                };
            }
            Err(e) => {
                assert!(
                    is_skips(consumed),
                    "a call that failed consumed more than empty commands: {:?}",
                    show(consumed)
                );
                check_error(&e, &buf, limits);
                events.push(Event::Error(e));
                return Outcome { events, rest: None };
            }
        }
    }
}

/// `consumed`: the bytes the call that returned `req` took off the buffer.
fn check_request(req: &Request, consumed: &[u8], limits: Limits) {
    assert!(
        req.args.len() <= limits.max_array_len,
        "{} arguments accepted with max_array_len {}",
        req.args.len(),
        limits.max_array_len
    );
    match &req.raw {
        Some(raw) => {
            assert!(
                consumed.ends_with(raw),
                "raw {:?} is not the end of the consumed bytes {:?}",
                show(raw),
                show(consumed)
            );
            let skipped = &consumed[..consumed.len() - raw.len()];
            assert!(
                is_skips(skipped),
                "bytes before the request are not empty commands: {:?}",
                show(skipped)
            );
            assert_eq!(raw.first(), Some(&b'*'), "raw is not a RESP array");
            for a in &req.args {
                assert!(
                    a.len() <= limits.max_bulk_len,
                    "an argument of {} bytes accepted with max_bulk_len {}",
                    a.len(),
                    limits.max_bulk_len
                );
                if !a.is_empty() {
                    // Zero-copy: arguments are views into the frame.
                    let (lo, hi) = (raw.as_ptr() as usize, raw.as_ptr() as usize + raw.len());
                    let p = a.as_ptr() as usize;
                    assert!(
                        p >= lo && p + a.len() <= hi,
                        "argument is not a view into raw"
                    );
                }
            }
            differential_array(raw, &req.args);
            canonical_array(raw, &req.args);
        }
        None => {
            let items = items(consumed).unwrap_or_else(|| {
                panic!(
                    "inline request: consumed bytes do not split into commands: {:?}",
                    show(consumed)
                )
            });
            let (line, skips) = items
                .split_last()
                .expect("an inline request consumed nothing");
            for s in skips {
                assert!(is_skip_item(s), "not an empty command: {:?}", show(s));
            }
            assert!(line.ends_with(b"\n"), "inline request without a newline");
            assert_ne!(line.first(), Some(&b'*'), "a '*' line decoded as inline");
            let body = strip_eol(line);
            assert!(
                line.len() - 1 <= limits.max_inline_len,
                "an inline line of {} bytes accepted with max_inline_len {}",
                line.len() - 1,
                limits.max_inline_len
            );
            assert_eq!(
                Ok(req.args.iter().map(|a| a.to_vec()).collect::<Vec<_>>()),
                sdssplitargs(body),
                "inline line {:?} split differently from Redis",
                show(body)
            );
        }
    }
}

/// `raw` is forwarded to Redis as it is, so it must be the one canonical encoding of `args`
/// (no `$01`, `*02` or `$-0`): Redis parses lengths with `string2ll` and refuses the rest,
/// closing a connection other sessions share.
fn canonical_array(raw: &Bytes, args: &[Bytes]) {
    let mut canonical = BytesMut::new();
    tessera_proxy::resp::encode::command(&mut canonical, args);
    assert_eq!(
        &raw[..],
        &canonical[..],
        "raw {:?} is not the canonical encoding of its arguments",
        show(raw)
    );
}

/// `raw` must decode with redis-protocol into exactly `args`, consuming all of it.
fn differential_array(raw: &Bytes, args: &[Bytes]) {
    match decode_bytes(raw) {
        Ok(Some((BytesFrame::Array(items), amt))) => {
            assert_eq!(
                amt,
                raw.len(),
                "redis-protocol consumed {amt} of the {} raw bytes {:?}",
                raw.len(),
                show(raw)
            );
            let theirs: Vec<Option<&Bytes>> = items
                .iter()
                .map(|f| match f {
                    BytesFrame::BulkString(b) => Some(b),
                    _ => None,
                })
                .collect();
            let ours: Vec<Option<&Bytes>> = args.iter().map(Some).collect();
            assert_eq!(
                ours,
                theirs,
                "redis-protocol decodes {:?} differently",
                show(raw)
            );
        }
        other => panic!(
            "redis-protocol does not decode raw {:?} as an array: {other:?}",
            show(raw)
        ),
    }
}

/// The decoder returned `Ok(None)` with `rest` left: it must really be waiting for bytes.
fn check_waiting(rest: &[u8], limits: Limits) {
    let Some(&first) = rest.first() else {
        return;
    };
    if first == b'*' {
        if !shallow(rest) {
            return;
        }
        let rest = Bytes::copy_from_slice(rest);
        if let Ok(Some((BytesFrame::Array(items), amt))) = decode_bytes(&rest) {
            assert!(
                items.is_empty(),
                "waiting for more bytes, but redis-protocol finds a complete frame of {amt} bytes in {:?}",
                show(&rest)
            );
        }
    } else {
        assert!(
            !rest.contains(&b'\n'),
            "waiting for more bytes with a whole inline line buffered: {:?}",
            show(rest)
        );
        assert!(
            rest.len() <= limits.max_inline_len,
            "waiting on {} bytes of an inline line, over max_inline_len {}",
            rest.len(),
            limits.max_inline_len
        );
    }
}

/// The decoder failed with `e` on `rest` (the buffer after the empty commands it skipped).
fn check_error(e: &ProtocolError, rest: &[u8], limits: Limits) {
    let first = *rest.first().expect("an error on an empty buffer");
    if first == b'*' {
        assert!(
            matches!(
                e,
                ProtocolError::InvalidArrayLen
                    | ProtocolError::InvalidBulkLen
                    | ProtocolError::ExpectedBulk(_)
                    | ProtocolError::MissingCrlf
            ),
            "{e:?} for a RESP array"
        );
        // A canonical frame within the limits must never be refused.
        if !shallow(rest) {
            return;
        }
        let rest = Bytes::copy_from_slice(rest);
        if let Ok(Some((BytesFrame::Array(items), amt))) = decode_bytes(&rest) {
            let bulks: Option<Vec<&Bytes>> = items
                .iter()
                .map(|f| match f {
                    BytesFrame::BulkString(b) => Some(b),
                    _ => None,
                })
                .collect();
            if let Some(bulks) = bulks {
                let within = !bulks.is_empty()
                    && bulks.len() <= limits.max_array_len
                    && bulks.iter().all(|b| b.len() <= limits.max_bulk_len);
                if within && canonical(&bulks) == rest[..amt] {
                    panic!("{e:?} for the valid frame {:?}", show(&rest[..amt]));
                }
            }
        }
    } else {
        match e {
            ProtocolError::InlineTooBig => {
                let line_len = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
                assert!(
                    line_len > limits.max_inline_len,
                    "inline line of {line_len} bytes called too big (max_inline_len {})",
                    limits.max_inline_len
                );
            }
            ProtocolError::UnbalancedQuotes => {
                let nl = rest
                    .iter()
                    .position(|&b| b == b'\n')
                    .expect("unbalanced quotes reported before the line ended");
                let body = strip_eol(&rest[..=nl]);
                assert!(
                    sdssplitargs(body).is_err(),
                    "unbalanced quotes reported for {:?}, which Redis accepts",
                    show(body)
                );
            }
            ProtocolError::InvalidArrayLen => {
                // More arguments than max_array_len on one inline line.
                let nl = rest
                    .iter()
                    .position(|&b| b == b'\n')
                    .expect("an inline line refused before it ended");
                let line = strip_eol(&rest[..=nl]);
                let runs = line
                    .split(|b| b.is_ascii_whitespace())
                    .filter(|run| !run.is_empty())
                    .count();
                assert!(
                    runs > limits.max_array_len,
                    "an inline line of at most {runs} arguments refused with max_array_len {}",
                    limits.max_array_len
                );
            }
            other => panic!("{other:?} for an inline command"),
        }
    }
}

/// redis-protocol's decoder recurses once per nesting level; only hand it buffers that cannot
/// nest deeply (a decoder that never builds nested arrays refuses them at the first level).
fn shallow(bytes: &[u8]) -> bool {
    bytes.windows(3).filter(|w| w == b"\r\n*").count() <= 64
}

/// The canonical RESP encoding of an array of bulk strings.
fn canonical(args: &[&Bytes]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Splits consumed bytes into commands: `*` header lines (an empty command is only its
/// header) and inline lines, each with its line ending. `None` if the bytes do not end on an
/// item boundary. Only used on bytes that hold no array requests.
fn items(mut bytes: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let end = if bytes[0] == b'*' {
            bytes.windows(2).position(|w| w == b"\r\n")? + 2
        } else {
            bytes.iter().position(|&b| b == b'\n')? + 1
        };
        let (item, tail) = bytes.split_at(end);
        out.push(item);
        bytes = tail;
    }
    Some(out)
}

/// True if `bytes` is nothing but empty commands.
fn is_skips(bytes: &[u8]) -> bool {
    items(bytes).is_some_and(|items| items.iter().all(|i| is_skip_item(i)))
}

/// `*N\r\n` with N <= 0, or an inline line in which Redis finds no argument.
fn is_skip_item(item: &[u8]) -> bool {
    if item.first() == Some(&b'*') {
        let Some(digits) = item[1..].strip_suffix(b"\r\n") else {
            return false;
        };
        let (neg, digits) = match digits.strip_prefix(b"-") {
            Some(d) => (true, d),
            None => (false, digits),
        };
        if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
            return false;
        }
        neg || digits.iter().all(|&d| d == b'0')
    } else {
        item.ends_with(b"\n") && sdssplitargs(strip_eol(item)).is_ok_and(|a| a.is_empty())
    }
}

fn strip_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// C's `isspace` in the "C" locale, which `sdssplitargs` uses between arguments.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Redis's `sdssplitargs` (sds.c), on a line without its line ending.
pub fn sdssplitargs(line: &[u8]) -> Result<Vec<Vec<u8>>, ()> {
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let mut args = Vec::new();
    let mut p = 0;
    loop {
        while at(p) != 0 && is_c_space(at(p)) {
            p += 1;
        }
        if at(p) == 0 {
            return Ok(args);
        }
        let (mut inq, mut insq, mut done) = (false, false, false);
        let mut cur = Vec::new();
        while !done {
            let c = at(p);
            if inq {
                if c == b'\\'
                    && at(p + 1) == b'x'
                    && at(p + 2).is_ascii_hexdigit()
                    && at(p + 3).is_ascii_hexdigit()
                {
                    let hex = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
                    cur.push(hex(at(p + 2)) * 16 + hex(at(p + 3)));
                    p += 3;
                } else if c == b'\\' && at(p + 1) != 0 {
                    p += 1;
                    cur.push(match at(p) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if c == b'"' {
                    if at(p + 1) != 0 && !is_c_space(at(p + 1)) {
                        return Err(());
                    }
                    done = true;
                } else if c == 0 {
                    return Err(());
                } else {
                    cur.push(c);
                }
            } else if insq {
                if c == b'\\' && at(p + 1) == b'\'' {
                    p += 1;
                    cur.push(b'\'');
                } else if c == b'\'' {
                    if at(p + 1) != 0 && !is_c_space(at(p + 1)) {
                        return Err(());
                    }
                    done = true;
                } else if c == 0 {
                    return Err(());
                } else {
                    cur.push(c);
                }
            } else {
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => done = true,
                    b'"' => inq = true,
                    b'\'' => insq = true,
                    _ => cur.push(c),
                }
            }
            if at(p) != 0 {
                p += 1;
            }
        }
        args.push(cur);
    }
}

/// Bytes in a form that is readable in a panic message.
pub fn show(bytes: &[u8]) -> String {
    const MAX: usize = 200;
    let mut s = String::new();
    for &b in bytes.iter().take(MAX) {
        s.extend(std::ascii::escape_default(b).map(char::from));
    }
    if bytes.len() > MAX {
        s.push_str(&format!("... ({} bytes)", bytes.len()));
    }
    s
}
