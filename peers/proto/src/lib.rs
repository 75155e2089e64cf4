//! What Archipelago's peers say to each other over xseg: the default port plan, the
//! meaning of each op at each peer, and the encodings of payloads that are not raw data.
//!
//! # Volume requests (frontends and tools → vlmcd)
//! The target is a volume (or snapshot) name. A name or JSON payload fills the whole data
//! window: the request's buffer is exactly as long as the payload.
//!
//! | op | request | answer |
//! |---|---|---|
//! | READ, WRITE | `offset`, `size`, data window; FUA flag on WRITE | `size` |
//! | DISCARD, WRITE_ZEROES | `offset`, `size` | `size` |
//! | FLUSH | | 0: every write completed before is durable |
//! | INFO | window for a [`VolumeInfo`] (JSON) | the JSON's length, window = JSON; with no window, the volume size |
//! | OPEN, CLOSE | | 0 (OPEN takes the volume's lock for this host) |
//! | CREATE | `size`; window = [`CreateOptions`] (JSON, may be empty) | 0 |
//! | CLONE | target = new volume; window = snapshot name; `size` (0 = the snapshot's) | 0 |
//! | SNAPSHOT | target = volume; window = snapshot name | 0 |
//! | DELETE | | 0 |
//! | RENAME | window = new name | 0 |
//! | RESIZE | `size`; FORCE flag allows shrinking | 0 |
//! | LIST | (no target) window for a JSON array of [`VolumeInfo`]; `offset` = entries to skip | bytes |
//! | ACQUIRE / RELEASE | lock / unlock for this host; FORCE on RELEASE breaks another's | 0 |
//!
//! Errors are errnos: ENOENT (no such volume), EEXIST, EINVAL (bad name, size or range),
//! EBUSY (locked by another host), EROFS (write to a snapshot), EIO (storage failure or a
//! corrupt map), ESTALE (this host's lock was broken: it is fenced).
//!
//! # Map requests (vlmcd → mapperd)
//! MAPR / MAPW with target = volume, `offset`, `size`: the answer's window holds the
//! [`Extent`]s covering the range in order ([`encode_extents`]). MAPW first makes every
//! block of the range writable by this volume (copy-on-write), so all its extents are
//! objects. DISCARD turns whole blocks into zero blocks and answers with the extents of the
//! partial pieces still to be zeroed. An extent list larger than the window is EOVERFLOW.
//! A MAPR answer carries [`MAPPING_CACHEABLE`] in its flags when this host holds the
//! volume (or it is a snapshot): no other host changes its map, so vlmcd may cache it. A
//! MAPW answer carries it when the mapper's confirmation of this host's lock is still
//! valid, and then the answer's `offset` field holds for how many milliseconds more: until
//! then the returned objects (the volume's own) may be written without asking again (the
//! sender counts from when it sent the MAPW). A resent request is built afresh, never
//! resent with fields an answer changed.

use serde::{Deserialize, Serialize};

/// Reply flag of MAPR and MAPW: the volume is held by this host or is a snapshot, so the
/// mapping may be cached until the volume changes through this host (above the request
/// flags). On MAPW the reply's `offset` is then the write lease in milliseconds.
pub const MAPPING_CACHEABLE: u32 = 1 << 16;

/// The default static ports of a host's peers.
pub mod ports {
    pub const VLMCD: u32 = 1;
    pub const MAPPERD: u32 = 2;
    pub const DATA_BLOCKER: u32 = 3;
    pub const MAP_BLOCKER: u32 = 4;
}

/// What `vlmc info --json` and `list --json` show of a volume or snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfo {
    pub name: String,
    pub size_bytes: u64,
    /// "volume" or "snapshot".
    pub kind: String,
    /// The snapshot a clone was made from.
    pub parent: Option<String>,
    /// The owner of the volume's lock, if any.
    pub locked_by: Option<String>,
    pub block_size_bytes: u64,
    pub epoch: u32,
    pub volume_id: String,
    pub created_unix_ms: u64,
}

/// Options of CREATE beyond the size.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateOptions {
    /// log2 of the block size (12..=26); default 22 (4 MiB).
    #[serde(default)]
    pub block_shift: Option<u8>,
}

/// One piece of a volume range: where its bytes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent<'a> {
    /// `None`: a zero block (reads as zeros, not stored).
    pub object: Option<&'a str>,
    pub object_offset: u64,
    pub len: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    #[error("extent list does not fit the {0}-byte window")]
    TooLarge(usize),
    #[error("malformed extent list: {0}")]
    Malformed(&'static str),
}

const EXTENT_HEADER_BYTES: usize = 4 + 8 + 8; // name length, object offset, length

/// Encodes `extents` into `out`: `count: u32`, then per extent `name_len: u32` (0 = zero
/// block), `object_offset: u64`, `len: u64`, name bytes; little-endian. Returns the bytes used.
pub fn encode_extents(extents: &[Extent<'_>], out: &mut [u8]) -> Result<usize, ProtoError> {
    let need = 4 + extents.iter().map(|e| EXTENT_HEADER_BYTES + e.object.map_or(0, str::len)).sum::<usize>();
    if need > out.len() {
        return Err(ProtoError::TooLarge(out.len()));
    }
    out[..4].copy_from_slice(&(extents.len() as u32).to_le_bytes());
    let mut at = 4;
    for e in extents {
        let name = e.object.unwrap_or("").as_bytes();
        out[at..at + 4].copy_from_slice(&(name.len() as u32).to_le_bytes());
        out[at + 4..at + 12].copy_from_slice(&e.object_offset.to_le_bytes());
        out[at + 12..at + 20].copy_from_slice(&e.len.to_le_bytes());
        at += EXTENT_HEADER_BYTES;
        out[at..at + name.len()].copy_from_slice(name);
        at += name.len();
    }
    Ok(at)
}

/// Iterates over an encoded extent list without allocating. Every field is bounds-checked.
pub struct ExtentIter<'a> {
    bytes: &'a [u8],
    left: u32,
}

/// Starts decoding an extent list.
pub fn decode_extents(bytes: &[u8]) -> Result<ExtentIter<'_>, ProtoError> {
    let count = bytes.get(..4).ok_or(ProtoError::Malformed("no count"))?;
    Ok(ExtentIter { bytes: &bytes[4..], left: u32::from_le_bytes(count.try_into().expect("4 bytes")) })
}

impl<'a> Iterator for ExtentIter<'a> {
    type Item = Result<Extent<'a>, ProtoError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let Some(header) = self.bytes.get(..EXTENT_HEADER_BYTES) else {
            self.left = 0;
            return Some(Err(ProtoError::Malformed("truncated extent")));
        };
        let name_len = u32::from_le_bytes(header[..4].try_into().expect("4")) as usize;
        let object_offset = u64::from_le_bytes(header[4..12].try_into().expect("8"));
        let len = u64::from_le_bytes(header[12..20].try_into().expect("8"));
        let Some(name) = self.bytes.get(EXTENT_HEADER_BYTES..EXTENT_HEADER_BYTES + name_len) else {
            self.left = 0;
            return Some(Err(ProtoError::Malformed("truncated object name")));
        };
        self.bytes = &self.bytes[EXTENT_HEADER_BYTES + name_len..];
        let object = if name_len == 0 {
            None
        } else {
            match std::str::from_utf8(name) {
                Ok(s) => Some(s),
                Err(_) => {
                    self.left = 0;
                    return Some(Err(ProtoError::Malformed("object name is not UTF-8")));
                }
            }
        };
        Some(Ok(Extent { object, object_offset, len }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_round_trip() {
        let extents = [
            Extent {
                object: Some("data:0000000000000001:00000001:0000000000000000"),
                object_offset: 4096,
                len: 8192,
            },
            Extent { object: None, object_offset: 0, len: 4 << 20 },
        ];
        let mut buf = [0u8; 256];
        let used = encode_extents(&extents, &mut buf).unwrap();
        let back: Vec<_> = decode_extents(&buf[..used]).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(back, extents);
        assert_eq!(encode_extents(&extents, &mut buf[..40]), Err(ProtoError::TooLarge(40)));
    }

    #[test]
    fn malformed_extent_lists_are_errors_not_panics() {
        assert!(decode_extents(&[1, 0]).is_err());
        let mut buf = [0u8; 64];
        let used =
            encode_extents(&[Extent { object: Some("abc"), object_offset: 0, len: 1 }], &mut buf).unwrap();
        for cut in 4..used {
            let items: Vec<_> = decode_extents(&buf[..cut]).unwrap().collect();
            assert!(items.iter().any(Result::is_err), "cut at {cut}");
        }
        // A count far larger than the bytes present ends in an error, not a long loop.
        let items: Vec<_> = decode_extents(&[255, 255, 255, 255]).unwrap().collect();
        assert_eq!(items.len(), 1);
        assert!(items[0].is_err());
        // A name that is not UTF-8.
        let mut bad = buf;
        bad[4 + EXTENT_HEADER_BYTES] = 0xff;
        assert!(decode_extents(&bad[..used]).unwrap().next().unwrap().is_err());
    }
}
