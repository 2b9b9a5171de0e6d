//! Key placement: the hash tag of a key and its slot, byte-for-byte Codis's function
//! (`crc32_ieee(hashtag(key)) % 1024`), so a Codis user keeps the same placement.

/// The number of slots keys are spread over.
pub const SLOT_COUNT: usize = 1024;

/// The part of `key` that is hashed: the bytes between the first `{` and the first `}`
/// after it (possibly empty, as in Codis), or the whole key when it has no such pair.
#[inline]
pub fn hashtag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        let rest = &key[open + 1..];
        if let Some(close) = rest.iter().position(|&b| b == b'}') {
            return &rest[..close];
        }
    }
    key
}

/// The slot of `key`: `crc32_ieee(hashtag(key)) % 1024`.
#[inline]
pub fn slot(key: &[u8]) -> usize {
    crc32fast::hash(hashtag(key)) as usize % SLOT_COUNT
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors of Codis's `models.HashTag` + `crc32.ChecksumIEEE(...) % 1024`
    /// (Go's ChecksumIEEE is the same CRC as zlib's crc32, which produced these numbers).
    const VECTORS: &[(&[u8], &[u8], u32, usize)] = &[
        (b"foo", b"foo", 2356372769, 289),
        (b"bar", b"bar", 1996459178, 170),
        (b"hello", b"hello", 907060870, 646),
        (b"123456789", b"123456789", 0xCBF43926, 294),
        (b"{user1000}.following", b"user1000", 307944294, 870),
        (b"{user1000}.followers", b"user1000", 307944294, 870),
        (b"foo{}{bar}", b"", 0, 0),
        (b"foo{{bar}}zap", b"{bar", 348433721, 313),
        (b"foo{bar}{zap}", b"bar", 1996459178, 170),
        (b"{}", b"", 0, 0),
        (b"", b"", 0, 0),
        (b"}{", b"}{", 480230896, 496),
        (b"a{b", b"a{b", 3643005004, 76),
    ];

    #[test]
    fn codis_vectors() {
        for &(key, tag, crc, want) in VECTORS {
            assert_eq!(
                hashtag(key),
                tag,
                "hashtag of {:?}",
                String::from_utf8_lossy(key)
            );
            assert_eq!(
                crc32fast::hash(tag),
                crc,
                "crc of {:?}",
                String::from_utf8_lossy(tag)
            );
            assert_eq!(
                slot(key),
                want,
                "slot of {:?}",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn tags_put_related_keys_together() {
        assert_eq!(slot(b"{tenant:7}:a"), slot(b"prefix{tenant:7}:b"));
        assert_eq!(slot(b"x{tenant:7}"), slot(b"tenant:7"));
    }
}
