//! SORT and SORT_RO, read the way Redis's `sortCommandGeneric` reads them: the key STORE
//! writes, and the BY and GET patterns, refused when the keys they form may be in another slot.
//!
//! ```text
//! SORT key [BY pattern] [LIMIT offset count] [GET pattern ...] [ASC|DESC] [ALPHA] [STORE destination]
//! SORT_RO key [BY pattern] [LIMIT offset count] [GET pattern ...] [ASC|DESC] [ALPHA]
//! ```
//!
//! A pattern forms one key per element: its first `*` replaced by the element (`w_*` and
//! element `7` read `w_7`; `h_*->f` reads field `f` of hash `h_7`). `GET #` returns the element
//! itself, and a pattern without `*` reads no key (`BY nosort` means: do not sort). Redis
//! reads every such key on the server that holds the sorted key, so the proxy serves a pattern
//! only if every key it forms is in the sorted key's slot, as Redis Cluster does.

use bytes::Bytes;

use tessera_topology::slot;

use super::CommandError;

/// The error of a BY pattern whose keys may be in another slot than the sorted key.
pub const BY_DENIED: CommandError = CommandError::SortPattern("BY");

/// The error of a GET pattern whose keys may be in another slot than the sorted key.
pub const GET_DENIED: CommandError = CommandError::SortPattern("GET");

/// An option of a SORT line that names keys: the index of its argument.
enum Opt {
    Store(usize),
    By(usize),
    Get(usize),
}

/// Calls `f` with each STORE, BY and GET option in order, reading the options from argument 2
/// as `sortCommandGeneric` does: ASC, DESC and ALPHA take no argument, LIMIT two, STORE (not
/// in SORT_RO), BY and GET one — each only when that many arguments follow; anything else is
/// Redis's syntax error, where the walk stops (Redis then runs nothing). Stops when `f`
/// returns false. Returns whether it read every option.
fn walk(args: &[Bytes], readonly: bool, mut f: impl FnMut(Opt) -> bool) -> bool {
    let mut j = 2;
    while j < args.len() {
        let left = args.len() - j - 1;
        let arg = &args[j][..];
        let keep_going = if ["asc", "desc", "alpha"]
            .iter()
            .any(|o| arg.eq_ignore_ascii_case(o.as_bytes()))
        {
            true
        } else if arg.eq_ignore_ascii_case(b"limit") && left >= 2 {
            j += 2;
            true
        } else if !readonly && arg.eq_ignore_ascii_case(b"store") && left >= 1 {
            j += 1;
            f(Opt::Store(j))
        } else if arg.eq_ignore_ascii_case(b"by") && left >= 1 {
            j += 1;
            f(Opt::By(j))
        } else if arg.eq_ignore_ascii_case(b"get") && left >= 1 {
            j += 1;
            f(Opt::Get(j))
        } else {
            false
        };
        if !keep_going {
            return false;
        }
        j += 1;
    }
    true
}

/// The index of the key `SORT` writes: the argument of its last STORE option (Redis keeps
/// the last one); `None` without one, for SORT_RO, or when Redis refuses the line (it then
/// writes nothing).
///
/// `SORT k STORE by STORE dst` writes `dst`: the first STORE takes `by` as its argument.
/// (Redis's `sortGetKeys`, which `COMMAND GETKEYS` uses, names `by` there.)
pub fn store_key(args: &[Bytes], readonly: bool) -> Option<usize> {
    let mut store = None;
    let complete = walk(args, readonly, |opt| {
        if let Opt::Store(i) = opt {
            store = Some(i);
        }
        true
    });
    store.filter(|_| complete)
}

/// Refuses a BY or GET pattern whose keys may be in another slot than the sorted key
/// ([`BY_DENIED`], [`GET_DENIED`]), checking the options in Redis's order.
pub fn check(args: &[Bytes], readonly: bool) -> Result<(), CommandError> {
    let Some(key) = args.get(1) else {
        return Ok(());
    };
    let key_slot = slot::slot(key);
    let mut denied = None;
    walk(args, readonly, |opt| {
        let (pattern, why) = match opt {
            Opt::Store(_) => return true,
            Opt::By(i) => (&args[i], BY_DENIED),
            Opt::Get(i) => (&args[i], GET_DENIED),
        };
        match pattern_slot(pattern) {
            PatternKeys::None => true,
            PatternKeys::Slot(s) if s == key_slot => true,
            _ => {
                denied = Some(why);
                false
            }
        }
    });
    denied.map_or(Ok(()), Err)
}

/// Where the keys a SORT pattern forms are.
#[derive(Debug, PartialEq, Eq)]
enum PatternKeys {
    /// It forms no key: `#`, or no `*`.
    None,
    /// All in this slot.
    Slot(usize),
    /// Possibly in any slot.
    Any,
}

/// Where the keys `pattern` forms are. Redis reads the pattern as a C string (up to a NUL)
/// and puts the element in place of its first `*`; the key's hash tag is fixed by the
/// pattern only when the part before the `*` holds a whole tag (a `{` and a `}` after it):
/// `{user7}:w_*` forms keys of the slot of `user7`. Without one the element decides (it may
/// hold `{...}` or close an open `{`), and so does anything after the `*`, such as a tag
/// after it or in a hash field after `->`.
fn pattern_slot(pattern: &[u8]) -> PatternKeys {
    let c_str = &pattern[..pattern
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(pattern.len())];
    if c_str == b"#" {
        return PatternKeys::None;
    }
    let Some(star) = c_str.iter().position(|&b| b == b'*') else {
        return PatternKeys::None;
    };
    let prefix = &c_str[..star];
    match prefix.iter().position(|&b| b == b'{') {
        Some(open) if prefix[open + 1..].contains(&b'}') => PatternKeys::Slot(slot::slot(prefix)),
        _ => PatternKeys::Any,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(s: &str) -> Vec<Bytes> {
        s.split(' ').map(|w| Bytes::from(w.to_string())).collect()
    }

    #[test]
    fn the_last_store_redis_reads_is_written() {
        let store = |s: &str| store_key(&line(s), false);
        assert_eq!(store("sort k"), None);
        assert_eq!(store("sort k STORE dst"), Some(3));
        assert_eq!(store("sort k store a LIMIT 0 1 STORE b"), Some(8));
        assert_eq!(store("SORT k STORE by STORE dst"), Some(5));
        assert_eq!(store("sort k BY store GET store LIMIT 0 1"), None);
        assert_eq!(store("sort k STORE store store x"), Some(5));
        // Syntax errors: Redis writes nothing.
        assert_eq!(store("sort k STORE"), None);
        assert_eq!(store("sort k STORE a LIMIT 0"), None);
        assert_eq!(store("sort k STORE a bogus"), None);
        // SORT_RO has no STORE.
        assert_eq!(store_key(&line("sort_ro k STORE dst"), true), None);
    }

    #[test]
    fn where_pattern_keys_are() {
        let tag = slot::slot(b"user7");
        assert_eq!(pattern_slot(b"#"), PatternKeys::None);
        assert_eq!(pattern_slot(b"nosort"), PatternKeys::None);
        assert_eq!(pattern_slot(b"{user7}"), PatternKeys::None);
        assert_eq!(pattern_slot(b"a\0*"), PatternKeys::None);
        assert_eq!(pattern_slot(b"#\0x"), PatternKeys::None);
        assert_eq!(pattern_slot(b"{user7}:w_*"), PatternKeys::Slot(tag));
        assert_eq!(pattern_slot(b"x{user7}y*->{z}"), PatternKeys::Slot(tag));
        assert_eq!(pattern_slot(b"{}*"), PatternKeys::Slot(slot::slot(b"{}")));
        for any in [
            &b"w_*"[..],
            b"*",
            b"*{user7}",
            b"*->{user7}",
            b"{user7*}",
            b"{user*7}",
            b"user7}*",
            b"{a*}{user7}",
        ] {
            assert_eq!(pattern_slot(any), PatternKeys::Any, "{any:?}");
        }
    }

    #[test]
    fn patterns_of_another_slot_are_refused() {
        let check = |s: &str| check(&line(s), s.starts_with("sort_ro"));
        assert_eq!(
            check("sort {u}k BY {u}w_* GET # GET {u}o_* STORE d"),
            Ok(())
        );
        assert_eq!(check("sort {u}k BY nosort GET # LIMIT 0 1"), Ok(()));
        assert_eq!(check("sort {u}k BY w_*"), Err(BY_DENIED));
        assert_eq!(check("sort_ro {u}k get x_*"), Err(GET_DENIED));
        assert_eq!(check("sort {u}k GET {v}o_*"), Err(GET_DENIED));
        // The first refused option is reported, as Redis reports it.
        assert_eq!(check("sort {u}k GET o_* BY w_*"), Err(GET_DENIED));
        // Arguments of other options are not patterns.
        assert_eq!(check("sort {u}k STORE by"), Ok(()));
        assert_eq!(check("sort {u}k STORE BY GET w_*"), Err(GET_DENIED));
        assert_eq!(check("sort {u}k STORE BY BY w_*"), Err(BY_DENIED));
        // After a syntax error Redis reads no pattern.
        assert_eq!(check("sort {u}k bogus BY w_*"), Ok(()));
        // A key without a tag: its own slot.
        assert_eq!(check("sort k BY {k}w_*"), Ok(()));
    }
}
