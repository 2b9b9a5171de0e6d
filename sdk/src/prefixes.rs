//! The key-prefix condition of a remembered verdict, as the ABI encodes it (a `u32` count,
//! then *bytes* fields): [`KeyPrefixes`] built ahead by a plugin, and the SDK's view of it.

/// The key prefixes of a remember request, borrowed from the [`Command`](crate::Command):
/// their ABI encoding (a `u32` count, then *bytes* fields), empty for no condition.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Condition<'a> {
    pub(crate) encoded: &'a [u8],
}

impl<'a> Condition<'a> {
    /// The prefixes, in order.
    pub(crate) fn iter(self) -> Prefixes<'a> {
        Prefixes::of(self.encoded)
    }

    /// The condition as the ABI sends it: the list of prefixes (`u32` count first).
    #[inline]
    pub(crate) fn encoded(self) -> &'a [u8] {
        if self.encoded.is_empty() {
            &[0; 4]
        } else {
            self.encoded
        }
    }
}

/// Appends the ABI encoding of `prefixes` (a `u32` count, then *bytes* fields) to `out`, or
/// nothing if there are none.
pub(crate) fn encode_prefixes<I>(out: &mut Vec<u8>, prefixes: I)
where
    I: IntoIterator,
    I::Item: AsRef<[u8]>,
{
    let at = out.len();
    let mut n: u32 = 0;
    for p in prefixes {
        if n == 0 {
            out.extend_from_slice(&[0; 4]);
        }
        let p = p.as_ref();
        let len = u32::try_from(p.len()).expect("a key prefix longer than 4 GiB");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(p);
        n += 1;
    }
    if n > 0 {
        out[at..at + 4].copy_from_slice(&n.to_le_bytes());
    }
}

/// The prefixes of an encoded prefix list, in order.
#[derive(Debug, Clone)]
pub(crate) struct Prefixes<'a> {
    rest: &'a [u8],
    left: usize,
}

impl<'a> Prefixes<'a> {
    fn of(encoded: &'a [u8]) -> Self {
        match encoded.split_first_chunk::<4>() {
            Some((n, rest)) => Prefixes {
                rest,
                left: u32::from_le_bytes(*n) as usize,
            },
            None => Prefixes { rest: &[], left: 0 },
        }
    }
}

impl<'a> Iterator for Prefixes<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        let (len, rest) = self.rest.split_first_chunk::<4>()?;
        let (p, rest) = rest.split_at(u32::from_le_bytes(*len) as usize);
        self.rest = rest;
        self.left -= 1;
        Some(p)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Prefixes<'_> {}

/// Key prefixes for [`Command::remember_if_keys_start_with_any`], encoded once as the ABI
/// sends them, so that asking to remember a verdict on them is one copy whatever their
/// number. Build one per condition a plugin uses (say, per user, at configure time).
///
/// [`Command::remember_if_keys_start_with_any`]: crate::Command::remember_if_keys_start_with_any
///
/// ```
/// use tessera_sdk::{Command, KeyPrefixes};
///
/// let app = KeyPrefixes::new(["app:", "shared:"]);
/// let mut cmd = Command::new(["GET", "app:1"]).with_key(1);
/// cmd.remember_if_keys_start_with_any(&app);
/// let asked: Vec<&[u8]> = cmd.remembered().unwrap().collect();
/// assert_eq!(asked, [&b"app:"[..], b"shared:"]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPrefixes {
    /// Empty if there are no prefixes.
    pub(crate) encoded: Vec<u8>,
}

impl KeyPrefixes {
    /// These prefixes, in order.
    pub fn new<I>(prefixes: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let mut encoded = Vec::new();
        encode_prefixes(&mut encoded, prefixes);
        KeyPrefixes { encoded }
    }

    /// Whether there are no prefixes (a condition no key meets: nothing is remembered).
    pub fn is_empty(&self) -> bool {
        self.encoded.is_empty()
    }

    /// The prefixes, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        Prefixes::of(&self.encoded)
    }
}
