//! Little-endian reading and the framing checks shared by the decoders.

use crate::error::MapError;

/// Reads little-endian fields front to back. The decoders check the length of the whole
/// encoding before reading any field past the fixed part, so running out of bytes is a
/// bug in this crate, never a reaction to input.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { rest: bytes }
    }

    pub(crate) fn array<const N: usize>(&mut self) -> [u8; N] {
        let (head, rest) = self.rest.split_first_chunk::<N>().expect("decoder checked the length first");
        self.rest = rest;
        *head
    }

    pub(crate) fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        head
    }

    pub(crate) fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    pub(crate) fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    pub(crate) fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    pub(crate) fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }
}

/// Checks that `len` is exactly `expected`.
pub(crate) fn check_len(what: &'static str, len: usize, expected: u64) -> Result<(), MapError> {
    let len = len as u64;
    if len < expected {
        Err(MapError::Truncated { what, len, needed: expected })
    } else if len > expected {
        Err(MapError::TrailingBytes { what, len, expected })
    } else {
        Ok(())
    }
}

/// Checks the trailing crc32c of `bytes` (over everything before it). `bytes` is at least
/// 4 bytes long.
pub(crate) fn check_crc(what: &'static str, bytes: &[u8]) -> Result<(), MapError> {
    let (body, tail) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes(tail.try_into().expect("4 bytes"));
    let computed = crc32c::crc32c(body);
    if stored == computed {
        Ok(())
    } else {
        Err(MapError::Checksum { what, stored, computed })
    }
}

/// Appends the crc32c of everything in `out` so far.
pub(crate) fn push_crc(out: &mut Vec<u8>) {
    let crc = crc32c::crc32c(out);
    out.extend_from_slice(&crc.to_le_bytes());
}
