//! A small glob matcher for key patterns: `*` (any run of bytes), `?` (one byte) and `\`
//! (the next byte literally). Byte-wise, so binary keys match too.

/// Whether `text` matches `pattern` as a whole.
///
/// Iterative with one backtrack point (the last `*`), so it runs in O(pattern × text)
/// at worst and never recurses.
pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where to resume after the last `*`: (pattern index after it, text index it took up to).
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p + 1, t));
                p += 1;
                continue;
            }
            Some(b'?') => {
                p += 1;
                t += 1;
                continue;
            }
            Some(b'\\') if p + 1 < pattern.len() && pattern[p + 1] == text[t] => {
                p += 2;
                t += 1;
                continue;
            }
            Some(&c) if c != b'\\' && c == text[t] => {
                p += 1;
                t += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((sp, st)) => {
                p = sp;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn globs() {
        let yes = [
            ("*", ""),
            ("*", "anything"),
            ("app:*", "app:"),
            ("app:*", "app:1:2"),
            ("a?c", "abc"),
            ("*:x", "a:b:x"),
            ("a*b*c", "aXbYbZc"),
            ("\\*", "*"),
            ("a\\?", "a?"),
            ("", ""),
        ];
        let no = [
            ("app:*", "ap"),
            ("app:*", "xapp:1"),
            ("a?c", "ac"),
            ("*:x", "a:b:y"),
            ("\\*", "a"),
            ("a\\?", "ab"),
            ("", "a"),
            ("a\\", "a\\"),
        ];
        for (p, t) in yes {
            assert!(matches(p.as_bytes(), t.as_bytes()), "{p} ~ {t}");
        }
        for (p, t) in no {
            assert!(!matches(p.as_bytes(), t.as_bytes()), "{p} !~ {t}");
        }
    }

    #[test]
    fn long_inputs_stay_fast() {
        let text = "a".repeat(10_000);
        assert!(!matches(b"*a*a*a*a*b", text.as_bytes()));
    }
}
