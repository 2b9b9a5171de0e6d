//! The key-spec interpreter: which arguments of a command line are keys, computed from the
//! key specs like Redis 7.0's `getKeysUsingKeySpecs`.

use bytes::Bytes;

use super::xread::XRead;
use super::{BeginSearch, FindKeys, KS_NOT_KEY, MOVABLEKEYS, Spec, georadius, sort};

/// Appends to `out` the indices (into `args`, the name being 0) of the keys of the command
/// line `args` of `spec`, in key-spec order: for `*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n`,
/// `[1]`; for `MSET a 1 b 2`, `[1, 3]`; for `EVAL s 2 a b x`, `[3, 4]`.
///
/// Follows Redis's `getKeysUsingKeySpecs`: begin search by index or by keyword (searched
/// case-insensitively, forwards from `startfrom` or backwards from `argc + startfrom`), then
/// a range (negative `lastkey` counts from the end; with a `limit`, only `1/limit` of the rest
/// of the arguments) or a key count (`numkeys` at `keynumidx`). Specs flagged `not_key`
/// (shard channels) are skipped. Where Redis would reject a spec this is lenient and never
/// reads out of bounds nor panics: positions are bounded by `args.len()`, so a `numkeys`
/// larger than the arguments yields the keys that are there, and one that is not a
/// non-negative integer (or is missing) yields none for that spec. A keyword search that
/// finds nothing yields no keys for that spec.
///
/// The commands whose keys depend on how Redis reads their options (their specs are
/// `unknown` or search for a keyword that may also be an option's argument or a key's name)
/// are read the way Redis executes them, which is not always what `COMMAND GETKEYS` says:
/// SORT's key and the destination of its last STORE (`SORT k STORE by STORE dst`: `dst`;
/// BY/GET patterns are not keys, see [`check_options`](super::check_options)), GEORADIUS's
/// and GEORADIUSBYMEMBER's source and the destination of the last STORE or STOREDIST, the
/// streams after XREAD's and XREADGROUP's STREAMS option (a group, consumer or stream may be
/// named `STREAMS`). A line Redis refuses with a syntax error has only the keys it surely
/// names (none for XREAD), since Redis touches none.
///
/// Meant to be called after [`Spec::arity_ok`], but safe on any `args`.
pub fn key_positions(spec: &Spec, args: &[Bytes], out: &mut Vec<usize>) {
    if spec.has_flag(MOVABLEKEYS) && read_as_executed(spec, args, out) {
        return;
    }
    let argc = args.len() as i64;
    for ks in spec.key_specs {
        if ks.flags & KS_NOT_KEY != 0 {
            continue;
        }
        let mut first = match ks.begin_search {
            BeginSearch::Index(pos) => pos as i64,
            BeginSearch::Keyword { keyword, startfrom } => {
                match find_keyword(args, keyword, startfrom as i64) {
                    Some(i) => i + 1,
                    None => continue,
                }
            }
            BeginSearch::Unknown => continue,
        };
        let (last, step) = match ks.find_keys {
            FindKeys::Range {
                lastkey,
                step,
                limit,
            } => {
                let lastkey = lastkey as i64;
                let last = if lastkey >= 0 {
                    first + lastkey
                } else if limit <= 0 {
                    argc + lastkey
                } else {
                    // Redis: first + ((argc - first) / limit + lastkey), C division.
                    first + ((argc - first) / limit as i64 + lastkey)
                };
                (last, step)
            }
            FindKeys::Keynum {
                keynumidx,
                firstkey,
                step,
            } => {
                let at = first + keynumidx as i64;
                let Some(numkeys) = usize::try_from(at)
                    .ok()
                    .and_then(|at| args.get(at))
                    .and_then(|arg| parse_numkeys(arg))
                else {
                    continue;
                };
                first += firstkey as i64;
                // numkeys <= i64::MAX; saturate rather than overflow, the bound below clamps.
                (first.saturating_add(numkeys).saturating_sub(1), step)
            }
            FindKeys::Unknown => continue,
        };
        let last = last.min(argc - 1);
        if first < 1 || first > last {
            continue;
        }
        let step = step.max(1) as usize;
        out.extend((first as usize..=last as usize).step_by(step));
    }
}

/// The keys of the commands whose options Redis's own parser must decide (see
/// [`key_positions`]); false for any other command.
fn read_as_executed(spec: &Spec, args: &[Bytes], out: &mut Vec<usize>) -> bool {
    let store = match spec.name {
        "sort" => sort::store_key(args, false),
        "sort_ro" => None,
        "georadius" => georadius::store_key(args, false),
        "georadiusbymember" => georadius::store_key(args, true),
        "xread" | "xreadgroup" => {
            out.extend(XRead::parse(args, spec.name == "xreadgroup").streams);
            return true;
        }
        _ => return false,
    };
    if args.len() > 1 {
        out.push(1);
    }
    out.extend(store);
    true
}

/// Redis's keyword search: forwards from `startfrom` up to (not including) the last argument,
/// or, for a negative `startfrom`, backwards from `argc + startfrom` down to (not including)
/// argument 1. Returns the keyword's index.
fn find_keyword(args: &[Bytes], keyword: &str, startfrom: i64) -> Option<i64> {
    let argc = args.len() as i64;
    let (start, end) = if startfrom > 0 {
        (startfrom, argc - 1)
    } else {
        (argc + startfrom, 1)
    };
    let forwards = start <= end;
    let mut i = start;
    while i != end {
        if i >= argc || i < 1 {
            break;
        }
        if args[i as usize].eq_ignore_ascii_case(keyword.as_bytes()) {
            return Some(i);
        }
        i += if forwards { 1 } else { -1 };
    }
    None
}

/// `numkeys` as Redis's `string2ll` reads it, if it is not negative: decimal digits, no sign,
/// no leading zero (except "0" itself), no spaces, at most `i64::MAX`.
fn parse_numkeys(arg: &[u8]) -> Option<i64> {
    match arg {
        [] => None,
        [b'0'] => Some(0),
        [b'1'..=b'9', ..] => arg.iter().try_fold(0i64, |n, &b| {
            if b.is_ascii_digit() {
                n.checked_mul(10)?.checked_add((b - b'0') as i64)
            } else {
                None
            }
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Lookup, lookup};
    use super::*;

    fn args(line: &str) -> Vec<Bytes> {
        line.split(' ')
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect()
    }

    /// The key positions of a command line (words separated by single spaces).
    fn keys(line: &str) -> Vec<usize> {
        let args = args(line);
        let Lookup::Found(spec) = lookup(&args) else {
            panic!("{line}: not found");
        };
        let mut out = vec![7]; // appends, does not clear
        key_positions(spec, &args, &mut out);
        assert_eq!(out[0], 7);
        out.remove(0);
        out
    }

    #[test]
    fn simple() {
        assert_eq!(keys("GET k"), [1]);
        assert_eq!(keys("set k v EX 10"), [1]);
        assert_eq!(keys("mset a 1 b 2 c 3"), [1, 3, 5]);
        assert_eq!(keys("MGET a b c"), [1, 2, 3]);
        assert_eq!(keys("del a b"), [1, 2]);
        assert_eq!(keys("exists a"), [1]);
        assert_eq!(keys("rename a b"), [1, 2]);
        assert_eq!(keys("smove src dst m"), [1, 2]);
        assert_eq!(keys("lmove src dst LEFT RIGHT"), [1, 2]);
        assert_eq!(keys("pfmerge dst a b"), [1, 2, 3]);
        assert_eq!(keys("bitop AND dest a b"), [2, 3, 4]);
        assert_eq!(keys("object encoding k"), [2]);
        assert_eq!(keys("OBJECT FREQ k"), [2]);
        assert_eq!(keys("memory usage k SAMPLES 5"), [2]);
        assert_eq!(keys("xinfo stream s FULL"), [2]);
        assert_eq!(keys("xgroup create s g $ MKSTREAM"), [2]);
        assert_eq!(keys("blpop a b 0"), [1, 2]);
        assert_eq!(keys("ping"), [] as [usize; 0]);
        assert_eq!(keys("copy a b DB 1"), [1, 2]);
    }

    #[test]
    fn odd_mset_takes_what_is_there() {
        // Fails the backend's own check; the positions stay in bounds.
        assert_eq!(keys("mset a 1 b"), [1, 3]);
    }

    #[test]
    fn numkeys() {
        for cmd in [
            "eval",
            "EVALSHA",
            "eval_ro",
            "evalsha_ro",
            "fcall",
            "FCALL_RO",
        ] {
            assert_eq!(keys(&format!("{cmd} s 0")), [] as [usize; 0], "{cmd}");
            assert_eq!(keys(&format!("{cmd} s 0 arg")), [] as [usize; 0], "{cmd}");
            assert_eq!(keys(&format!("{cmd} s 2 a b arg")), [3, 4], "{cmd}");
            assert_eq!(keys(&format!("{cmd} s 2 a b")), [3, 4], "{cmd}");
            // More keys than arguments: the ones that are there.
            assert_eq!(keys(&format!("{cmd} s 5 a b")), [3, 4], "{cmd}");
            assert_eq!(
                keys(&format!("{cmd} s 99999999999999999999 a")),
                [] as [usize; 0]
            );
            assert_eq!(keys(&format!("{cmd} s 9223372036854775807 a")), [3]);
            // Not a non-negative integer as string2ll reads it: no keys.
            let spec = match lookup(&args(cmd)) {
                Lookup::Found(spec) => spec,
                other => panic!("{other:?}"),
            };
            for bogus in ["-1", "x", "01", "+1", " 1", "1 ", "1x", "", "-0", "1.0"] {
                let line =
                    [cmd, "s", bogus, "a", "b"].map(|w| Bytes::copy_from_slice(w.as_bytes()));
                let mut out = Vec::new();
                key_positions(spec, &line, &mut out);
                assert_eq!(out, [] as [usize; 0], "{cmd} {bogus:?}");
            }
        }
    }

    #[test]
    fn numkeys_with_destination_and_options() {
        assert_eq!(keys("zunionstore dest 2 k1 k2 WEIGHTS 1 2"), [1, 3, 4]);
        assert_eq!(keys("ZINTERSTORE dest 1 k1 AGGREGATE MAX"), [1, 3]);
        assert_eq!(keys("zdiffstore dest 2 a b"), [1, 3, 4]);
        assert_eq!(keys("zunion 2 a b WITHSCORES"), [2, 3]);
        assert_eq!(keys("sintercard 2 a b LIMIT 5"), [2, 3]);
        assert_eq!(keys("zintercard 3 a b c"), [2, 3, 4]);
        assert_eq!(keys("lmpop 2 a b LEFT COUNT 3"), [2, 3]);
        assert_eq!(keys("zmpop 1 a MIN"), [2]);
        assert_eq!(keys("blmpop 0 2 a b LEFT"), [3, 4]);
        assert_eq!(keys("bzmpop 0 1 a MAX"), [3]);
        // numkeys 0: the destination only.
        assert_eq!(keys("zunionstore dest 0 x"), [1]);
    }

    #[test]
    fn streams() {
        assert_eq!(keys("XREAD COUNT 2 STREAMS s1 s2 0 0"), [4, 5]);
        assert_eq!(keys("xread streams s 0"), [2]);
        assert_eq!(keys("xread BLOCK 0 streams a b c $ $ $"), [4, 5, 6]);
        // An odd count of ids: Redis's syntax error, no keys.
        assert_eq!(keys("xread streams a b 0"), [] as [usize; 0]);
        // No STREAMS keyword: no keys.
        assert_eq!(keys("xread count 1 block 0"), [] as [usize; 0]);
        // The keyword is not searched for in the last argument.
        assert_eq!(keys("xread count 1 streams"), [] as [usize; 0]);
        assert_eq!(
            keys("XREADGROUP GROUP g c COUNT 1 STREAMS s1 s2 > >"),
            [7, 8]
        );
        assert_eq!(keys("xreadgroup group g c streams s >"), [5]);
        // Named like the keyword: only the option counts.
        assert_eq!(keys("XREADGROUP GROUP g STREAMS STREAMS s >"), [5]);
        assert_eq!(keys("XREADGROUP NOACK GROUP g c STREAMS s >"), [6]);
        assert_eq!(keys("xread count 5 streams streams 0"), [4]);
    }

    #[test]
    fn geo_store() {
        assert_eq!(keys("georadius src 0 0 10 km"), [1]);
        assert_eq!(keys("GEORADIUS src 0 0 10 km STORE dst"), [1, 7]);
        assert_eq!(keys("georadius src 0 0 10 km ASC storedist dst"), [1, 8]);
        assert_eq!(keys("georadiusbymember src m 10 km STORE dst"), [1, 6]);
        // The last STORE or STOREDIST is the one written.
        assert_eq!(keys("GEORADIUS src 0 0 10 km STORE a STORE b"), [1, 9]);
        assert_eq!(keys("georadius src 0 0 10 km STORE a STOREDIST b"), [1, 9]);
        assert_eq!(keys("georadius_ro src 0 0 10 km STORE a"), [1]);
        assert_eq!(
            keys("geosearchstore dst src FROMMEMBER m BYRADIUS 1 km"),
            [1, 2]
        );
    }

    #[test]
    fn sort() {
        assert_eq!(keys("sort k"), [1]);
        assert_eq!(keys("SORT k BY w_* GET o_* LIMIT 0 10 ALPHA"), [1]);
        assert_eq!(keys("sort k STORE dst"), [1, 3]);
        assert_eq!(keys("sort k store a LIMIT 0 1 STORE b"), [1, 8]);
        // STORE as an argument of BY/GET/STORE is not the option.
        assert_eq!(keys("sort k BY store GET store LIMIT 0 1"), [1]);
        assert_eq!(keys("SORT k STORE by STORE dst"), [1, 5]);
        assert_eq!(keys("sort k STORE"), [1]);
        // SORT_RO has no STORE.
        assert_eq!(keys("sort_ro k STORE dst"), [1]);
    }

    #[test]
    fn migrate() {
        // The key specs as they are: the "" placeholder at 3 and the keys after KEYS (the
        // second spec is flagged incomplete; MIGRATE is Unsupported anyway).
        assert_eq!(keys("migrate host 6379  0 5000 KEYS a b"), [3, 7, 8]);
        assert_eq!(keys("MIGRATE host 6379 k 0 5000"), [3]);
        assert_eq!(
            keys("migrate host 6379  0 5000 COPY REPLACE AUTH pw KEYS a"),
            [3, 11]
        );
    }

    #[test]
    fn shard_channels_are_not_keys() {
        assert_eq!(keys("spublish ch msg"), [] as [usize; 0]);
        assert_eq!(keys("ssubscribe a b"), [] as [usize; 0]);
    }

    #[test]
    fn never_out_of_bounds() {
        // Every spec with every short command line, arity ignored.
        let words = ["1", "2", "0", "-1", "STREAMS", "KEYS", "STORE", "x", "999"];
        for spec in super::super::all() {
            let name = Bytes::copy_from_slice(spec.name.split('|').next().unwrap().as_bytes());
            let sub = spec
                .name
                .split('|')
                .nth(1)
                .map(|s| Bytes::copy_from_slice(s.as_bytes()));
            for len in 0..8 {
                for w in words {
                    let mut line = vec![name.clone()];
                    line.extend(sub.clone());
                    line.extend((0..len).map(|_| Bytes::from_static(w.as_bytes())));
                    let mut out = Vec::new();
                    key_positions(spec, &line, &mut out);
                    assert!(out.iter().all(|&i| i >= 1 && i < line.len()), "{line:?}");
                }
            }
        }
    }
}
