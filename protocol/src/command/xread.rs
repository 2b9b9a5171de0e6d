//! XREAD and XREADGROUP, read the way Redis's `xreadCommand` reads them: which arguments
//! are the streams (the keys), and whether the command may block.
//!
//! ```text
//! XREAD [COUNT count] [BLOCK milliseconds] STREAMS key [key ...] id [id ...]
//! XREADGROUP GROUP group consumer [COUNT count] [BLOCK milliseconds] [NOACK]
//!     STREAMS key [key ...] id [id ...]
//! ```
//!
//! The options come in any order before `STREAMS`; after it, half of the remaining arguments
//! are streams and half are ids. A group, a consumer or a stream may be named `STREAMS` or
//! `BLOCK`: only a word in an option's place is an option.

use std::ops::Range;

use bytes::Bytes;

/// An XREAD or XREADGROUP line as Redis reads its options.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct XRead {
    /// The indices of the streams; empty when Redis refuses the line before reading any.
    pub streams: Range<usize>,
    /// Whether the BLOCK option is given (the command may wait for entries).
    pub block: bool,
}

impl XRead {
    /// Reads the options of `args` (`group`: an XREADGROUP line) from argument 1 as
    /// `xreadCommand` does: BLOCK and COUNT take one argument, GROUP (XREADGROUP only) two,
    /// NOACK (XREADGROUP only) none, each only when that many arguments follow; STREAMS ends
    /// the options and needs an even number of arguments after it. Anything else is Redis's
    /// syntax error: no streams, and no BLOCK (Redis replies with the error at once).
    pub fn parse(args: &[Bytes], group: bool) -> XRead {
        let mut block = false;
        let mut i = 1;
        while i < args.len() {
            let more = args.len() - i - 1;
            let arg = &args[i][..];
            if arg.eq_ignore_ascii_case(b"block") && more >= 1 {
                block = true;
                i += 1;
            } else if arg.eq_ignore_ascii_case(b"count") && more >= 1 {
                i += 1;
            } else if arg.eq_ignore_ascii_case(b"streams") && more >= 1 {
                if !more.is_multiple_of(2) {
                    break;
                }
                let first = i + 1;
                return XRead {
                    streams: first..first + more / 2,
                    block,
                };
            } else if group && arg.eq_ignore_ascii_case(b"group") && more >= 2 {
                i += 2;
            } else if !(group && arg.eq_ignore_ascii_case(b"noack")) {
                break;
            }
            i += 1;
        }
        XRead::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> XRead {
        let args: Vec<Bytes> = s.split(' ').map(|w| Bytes::from(w.to_string())).collect();
        XRead::parse(&args, args[0].eq_ignore_ascii_case(b"xreadgroup"))
    }

    fn read(streams: Range<usize>, block: bool) -> XRead {
        XRead { streams, block }
    }

    #[test]
    fn options_then_streams() {
        assert_eq!(parse("XREAD STREAMS s 0"), read(2..3, false));
        assert_eq!(parse("xread count 2 streams a b 0 0"), read(4..6, false));
        assert_eq!(parse("XREAD BLOCK 0 STREAMS s $"), read(4..5, true));
        assert_eq!(parse("xread count 1 Block 5 streams s $"), read(6..7, true));
        assert_eq!(parse("XREADGROUP GROUP g c STREAMS s >"), read(5..6, false));
        assert_eq!(
            parse("XREADGROUP NOACK GROUP g c STREAMS s >"),
            read(6..7, false)
        );
        assert_eq!(
            parse("xreadgroup group g c block 0 noack streams s >"),
            read(8..9, true)
        );
    }

    #[test]
    fn keywords_as_names() {
        // Group and consumer named STREAMS; a stream named BLOCK.
        assert_eq!(
            parse("XREADGROUP GROUP g STREAMS STREAMS s >"),
            read(5..6, false)
        );
        assert_eq!(
            parse("XREADGROUP GROUP STREAMS c STREAMS s >"),
            read(5..6, false)
        );
        assert_eq!(parse("XREAD STREAMS BLOCK 0"), read(2..3, false));
        assert_eq!(parse("XREAD STREAMS STREAMS BLOCK 0 0"), read(2..4, false));
        assert_eq!(parse("XREAD COUNT 5 STREAMS STREAMS 0"), read(4..5, false));
        assert_eq!(
            parse("xreadgroup group block c streams s >"),
            read(5..6, false)
        );
    }

    #[test]
    fn syntax_errors_have_no_streams_and_do_not_block() {
        for line in [
            "XREAD STREAMS a b 0",
            "XREAD BLOCK 0 STREAMS",
            "XREAD BLOCK 0 COUNT",
            "XREAD BLOCK 0 bogus STREAMS s $",
            "XREAD GROUP g c STREAMS s 0",
            "XREAD NOACK STREAMS s 0",
            "XREADGROUP GROUP g STREAMS s >",
            "XREAD BLOCK",
            "XREAD",
        ] {
            assert_eq!(parse(line), XRead::default(), "{line}");
        }
    }
}
