//! GEORADIUS and GEORADIUSBYMEMBER, read the way Redis's `georadiusGeneric` reads them: the
//! key that STORE or STOREDIST writes.
//!
//! ```text
//! GEORADIUS key longitude latitude radius M|KM|FT|MI [WITHCOORD] [WITHDIST] [WITHHASH]
//!     [COUNT count [ANY]] [ASC|DESC] [STORE key] [STOREDIST key]
//! GEORADIUSBYMEMBER key member radius M|KM|FT|MI [...the same options]
//! ```
//!
//! The options come in any order and may repeat; Redis writes the key of the last STORE or
//! STOREDIST. (The key specs name the first STORE and the first STOREDIST, and `COMMAND
//! GETKEYS` follows them: `GEORADIUS src 0 0 10 km STORE a STORE b` writes `b`, not `a`.)
//! The `_RO` forms have no STORE.

use bytes::Bytes;

/// The index of the key a GEORADIUS (`by_member`: GEORADIUSBYMEMBER) line writes, if any:
/// the argument of the last STORE or STOREDIST. Options are read after the unit (argument 5,
/// or 4 by member): WITHCOORD, WITHDIST, WITHHASH, ANY, ASC and DESC alone, COUNT, STORE and
/// STOREDIST with one argument when one follows. Anything else is Redis's syntax error, and
/// Redis then writes nothing: `None`.
pub fn store_key(args: &[Bytes], by_member: bool) -> Option<usize> {
    let mut store = None;
    let mut i = if by_member { 5 } else { 6 };
    while i < args.len() {
        let more = i + 1 < args.len();
        let arg = &args[i][..];
        if ["withdist", "withhash", "withcoord", "any", "asc", "desc"]
            .iter()
            .any(|o| arg.eq_ignore_ascii_case(o.as_bytes()))
        {
        } else if arg.eq_ignore_ascii_case(b"count") && more {
            i += 1;
        } else if (arg.eq_ignore_ascii_case(b"store") || arg.eq_ignore_ascii_case(b"storedist"))
            && more
        {
            i += 1;
            store = Some(i);
        } else {
            return None;
        }
        i += 1;
    }
    store
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(s: &str) -> Option<usize> {
        let args: Vec<Bytes> = s.split(' ').map(|w| Bytes::from(w.to_string())).collect();
        store_key(&args, args[0].eq_ignore_ascii_case(b"georadiusbymember"))
    }

    #[test]
    fn the_last_store_is_written() {
        assert_eq!(store("GEORADIUS src 0 0 10 km"), None);
        assert_eq!(store("GEORADIUS src 0 0 10 km STORE dst"), Some(7));
        assert_eq!(store("georadius src 0 0 10 km ASC storedist dst"), Some(8));
        assert_eq!(store("GEORADIUS src 0 0 10 km STORE a STORE b"), Some(9));
        assert_eq!(
            store("GEORADIUS src 0 0 10 km STORE a STOREDIST b"),
            Some(9)
        );
        assert_eq!(
            store("georadius src 0 0 10 km storedist a count 3 store b"),
            Some(11)
        );
        assert_eq!(store("georadiusbymember src m 10 km STORE dst"), Some(6));
        // Keywords as key and member names.
        assert_eq!(store("GEORADIUS STORE 0 0 10 km STORE store"), Some(7));
        assert_eq!(
            store("georadiusbymember src STORE 10 km STORE STORE"),
            Some(6)
        );
        assert_eq!(
            store("georadius src 0 0 10 km store storedist storedist x"),
            Some(9)
        );
    }

    #[test]
    fn syntax_errors_write_nothing() {
        assert_eq!(store("GEORADIUS src 0 0 10 km STORE"), None);
        assert_eq!(store("GEORADIUS src 0 0 10 km STORE a bogus"), None);
        assert_eq!(store("GEORADIUS src 0 0 10 km STORE a COUNT"), None);
    }
}
