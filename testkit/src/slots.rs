//! Codis's slot function, written here independently of the proxy's code (a bit-by-bit
//! CRC-32 of the hash tag) so that tests check placement against an oracle of their own.
//!
//! Also the slot split the kit gives `n` groups in a generated proxy config.

/// Number of slots of the proxy (Codis's 1024).
pub const SLOTS: usize = 1024;

/// The slot ranges the kit assigns to `n` groups: `n` equal contiguous ranges in group
/// order (group 1 gets slot 0), the remainder to the last group. `(first, last, group)`.
pub fn slot_ranges(n: usize) -> Vec<(usize, usize, u32)> {
    assert!(n > 0 && n <= SLOTS, "bad group count {n}");
    let per = SLOTS / n;
    (0..n)
        .map(|i| {
            let first = i * per;
            let last = if i + 1 == n {
                SLOTS - 1
            } else {
                first + per - 1
            };
            (first, last, i as u32 + 1)
        })
        .collect()
}

/// The group (1-based) that owns `slot` under `slot_ranges(n)`.
pub fn group_of_slot(slot: usize, n: usize) -> u32 {
    slot_ranges(n)
        .into_iter()
        .find(|&(a, b, _)| slot >= a && slot <= b)
        .map(|(_, _, g)| g)
        .expect("slot out of range")
}

/// The group (1-based) that owns `key` under `slot_ranges(n)`.
pub fn group_of_key(key: &[u8], n: usize) -> u32 {
    group_of_slot(slot(key), n)
}

/// CRC-32/IEEE (zlib's, Go's `crc32.ChecksumIEEE`), bit by bit.
pub fn crc32_ieee(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Codis's hash tag: the bytes between the first `{` and the first `}` after it (possibly
/// empty), else the whole key.
pub fn hashtag(key: &[u8]) -> &[u8] {
    let open = key.iter().position(|&b| b == b'{');
    let tag = open.and_then(|o| {
        let rest = &key[o + 1..];
        rest.iter().position(|&b| b == b'}').map(|len| &rest[..len])
    });
    tag.unwrap_or(key)
}

/// `crc32(hashtag(key)) % 1024`.
pub fn slot(key: &[u8]) -> usize {
    crc32_ieee(hashtag(key)) as usize % SLOTS
}

/// The first key `format!("{prefix}{i}")` (i = 0, 1, ...) that `want` accepts.
pub fn find_key(prefix: &str, want: impl Fn(&[u8]) -> bool) -> String {
    (0..1_000_000)
        .map(|i| format!("{prefix}{i}"))
        .find(|k| want(k.as_bytes()))
        .expect("no key found in 1e6 candidates")
}
