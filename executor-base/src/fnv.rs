//! FNV-1a (64 bit): a short, stable hash for names and checksums that must read the same
//! in every process and every version (std's hashers promise neither), without a hashing
//! crate. Not for anything an adversary chooses.

/// The 64-bit FNV-1a hash of `bytes`.
///
/// ```
/// use executor_base::fnv::fnv1a;
/// assert_eq!(fnv1a(*b""), 0xcbf2_9ce4_8422_2325);
/// assert_eq!(fnv1a(*b"a"), 0xaf63_dc4c_8601_ec8c);
/// ```
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
