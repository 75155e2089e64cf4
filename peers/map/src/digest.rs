//! SHA-256 digests of content-addressed blocks.

use std::fmt;

use sha2::{Digest as _, Sha256};

/// Size of a [`Digest`] in bytes (and of one digest-table slot in a chunk).
pub const DIGEST_SIZE: usize = 32;

/// The SHA-256 digest of a block's contents: names a content-addressed object
/// `sha256:<64 lowercase hex>` and fills a chunk's digest table.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(pub [u8; DIGEST_SIZE]);

impl Digest {
    /// The SHA-256 digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest(Sha256::digest(data).into())
    }

    /// 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(2 * DIGEST_SIZE);
        for b in self.0 {
            s.push(hex_digit(b >> 4));
            s.push(hex_digit(b & 0xf));
        }
        s
    }

    /// Parses exactly 64 **lowercase** hex digits (the spelling [`Digest::to_hex`] writes), so
    /// that each digest has one object name.
    pub fn from_hex(s: &str) -> Option<Digest> {
        let s = s.as_bytes();
        if s.len() != 2 * DIGEST_SIZE {
            return None;
        }
        let mut out = [0u8; DIGEST_SIZE];
        for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
            *o = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
        }
        Some(Digest(out))
    }

    /// The name of the content-addressed object holding the block: `sha256:<hex>`.
    pub fn object_name(&self) -> String {
        crate::content_object_name(self)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

fn hex_digit(v: u8) -> char {
    char::from(b"0123456789abcdef"[usize::from(v)])
}

/// The value of one lowercase hex digit.
pub(crate) fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_input() {
        // FIPS 180-2 test vector.
        assert_eq!(
            Digest::of(b"abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hex_round_trip_and_strictness() {
        let d = Digest::of(b"archipelago");
        assert_eq!(Digest::from_hex(&d.to_hex()), Some(d));
        assert_eq!(Digest::from_hex(&d.to_hex().to_uppercase()), None, "uppercase is refused");
        assert_eq!(Digest::from_hex(&d.to_hex()[1..]), None);
        assert_eq!(Digest::from_hex(&format!("{}0", d.to_hex())), None);
        assert_eq!(Digest::from_hex(&format!("+{}", &d.to_hex()[1..])), None);
        assert_eq!(Digest::from_hex(""), None);
        assert_eq!(format!("{d}"), d.to_hex());
        assert_eq!(format!("{d:?}"), format!("Digest({})", d.to_hex()));
    }
}
