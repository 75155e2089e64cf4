//! Map entries: where one block of a volume lives.

use crate::chunk::CHUNK_ENTRIES;
use crate::codec::{check_len, Reader};
use crate::error::MapError;

/// Size of an encoded [`Entry`].
pub const ENTRY_SIZE: usize = 16;

/// Entry kind byte: the block reads as zeros and is not stored.
pub const KIND_ZERO: u8 = 0;
/// Entry kind byte: the block is the data object `data:<volume id>:<epoch>:<block index>`.
pub const KIND_OBJECT: u8 = 1;
/// Entry kind byte: the block is the content-addressed object of a digest in the chunk's table.
pub const KIND_CONTENT: u8 = 2;

const WHAT: &str = "map entry";

/// Where one block of a volume lives (16 bytes on disk, see the crate docs).
///
/// The variants may hold values the format forbids (an `Object` with id or epoch 0, a
/// `Content` index past the digest table); [`Entry::check`] says whether it is valid, and a
/// [`Chunk`](crate::Chunk) only ever holds valid entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Entry {
    /// Never written (or discarded): reads as zeros, stores nothing.
    #[default]
    Zero,
    /// The data object `data:<volume_id>:<epoch>:<block index>`, written by volume
    /// `volume_id` during `epoch`.
    Object { volume_id: u64, epoch: u32 },
    /// The content-addressed object `sha256:<digest>`, where the digest is slot
    /// `digest_index` of the chunk's digest table.
    Content { digest_index: u32 },
}

/// What an entry means to the volume that reads it (see [`Entry::classify`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// The block reads as zeros; a write stores a new own object.
    Zero,
    /// The volume's own object: writable in place.
    Own,
    /// Another volume's or an earlier epoch's object: read-only; a write copies it into
    /// an own object first (copy-on-write).
    Shared,
    /// A content-addressed object: immutable; a write stores a new own object.
    Content,
}

impl Entry {
    /// The entry of a block written by volume `volume_id` during `epoch`.
    pub fn object(volume_id: u64, epoch: u32) -> Entry {
        Entry::Object { volume_id, epoch }
    }

    pub fn is_zero(&self) -> bool {
        matches!(self, Entry::Zero)
    }

    /// The own/shared rule: an `Object` entry is [`Class::Own`] for the volume with id
    /// `volume_id` at epoch `epoch` iff it names exactly that id and epoch, else
    /// [`Class::Shared`]. A snapshot bumps the volume's epoch, which turns all its existing
    /// entries shared without rewriting any of them.
    pub fn classify(&self, volume_id: u64, epoch: u32) -> Class {
        match *self {
            Entry::Zero => Class::Zero,
            Entry::Object { volume_id: v, epoch: e } if v == volume_id && e == epoch => Class::Own,
            Entry::Object { .. } => Class::Shared,
            Entry::Content { .. } => Class::Content,
        }
    }

    /// Whether the entry may be encoded: an `Object` needs a nonzero volume id and epoch,
    /// a `Content` index must be below [`CHUNK_ENTRIES`] (a chunk further requires it to be
    /// below its digest count).
    pub fn check(&self) -> Result<(), MapError> {
        self.fault().map_or(Ok(()), |(field, reason)| Err(MapError::invalid(WHAT, field, reason)))
    }

    pub(crate) fn fault(&self) -> Option<(&'static str, String)> {
        match *self {
            Entry::Zero => None,
            Entry::Object { volume_id: 0, .. } => {
                Some(("volume_id", "an object entry names volume id 0".into()))
            }
            Entry::Object { epoch: 0, .. } => Some(("epoch", "an object entry names epoch 0".into())),
            Entry::Object { .. } => None,
            Entry::Content { digest_index } if digest_index >= CHUNK_ENTRIES => Some((
                "digest_index",
                format!("{digest_index} is past the largest digest table ({CHUNK_ENTRIES})"),
            )),
            Entry::Content { .. } => None,
        }
    }

    /// The 16-byte encoding: `kind u8, flags u8 (0), reserved u16 (0), epoch u32,
    /// volume_id u64` (for `Content`, the `volume_id` field holds the digest index and the
    /// epoch is 0). An entry that fails [`Entry::check`] encodes to bytes `decode` refuses.
    pub fn encode(&self) -> [u8; ENTRY_SIZE] {
        let (kind, epoch, id) = match *self {
            Entry::Zero => (KIND_ZERO, 0, 0),
            Entry::Object { volume_id, epoch } => (KIND_OBJECT, epoch, volume_id),
            Entry::Content { digest_index } => (KIND_CONTENT, 0, u64::from(digest_index)),
        };
        let mut out = [0u8; ENTRY_SIZE];
        out[0] = kind;
        // out[1] flags and out[2..4] reserved stay 0.
        out[4..8].copy_from_slice(&epoch.to_le_bytes());
        out[8..16].copy_from_slice(&id.to_le_bytes());
        out
    }

    /// Decodes exactly 16 bytes, refusing anything [`Entry::encode`] of a valid entry would
    /// not have written.
    pub fn decode(bytes: &[u8]) -> Result<Entry, MapError> {
        check_len(WHAT, bytes.len(), ENTRY_SIZE as u64)?;
        let raw: &[u8; ENTRY_SIZE] = bytes.try_into().expect("length checked");
        Entry::decode_raw(raw).map_err(|(field, reason)| MapError::invalid(WHAT, field, reason))
    }

    pub(crate) fn decode_raw(raw: &[u8; ENTRY_SIZE]) -> Result<Entry, (&'static str, String)> {
        let mut r = Reader::new(raw);
        let kind = r.u8();
        let flags = r.u8();
        let reserved = r.u16();
        let epoch = r.u32();
        let id = r.u64();
        let entry = match kind {
            KIND_ZERO => {
                if raw.iter().any(|&b| b != 0) {
                    return Err(("kind", "a ZERO entry (kind 0) has nonzero bytes".into()));
                }
                return Ok(Entry::Zero);
            }
            KIND_OBJECT => Entry::Object { volume_id: id, epoch },
            KIND_CONTENT => {
                if epoch != 0 {
                    return Err(("epoch", format!("a CONTENT entry has epoch {epoch}; it must be 0")));
                }
                if id >= u64::from(CHUNK_ENTRIES) {
                    return Err((
                        "digest_index",
                        format!("{id} is past the largest digest table ({CHUNK_ENTRIES})"),
                    ));
                }
                Entry::Content { digest_index: id as u32 }
            }
            other => return Err(("kind", format!("unknown entry kind {other}"))),
        };
        if flags != 0 {
            return Err(("flags", format!("{flags:#04x}; no entry flag is defined in version 1")));
        }
        if reserved != 0 {
            return Err(("reserved", format!("{reserved:#06x}; it must be 0")));
        }
        match entry.fault() {
            None => Ok(entry),
            Some(fault) => Err(fault),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid_field(bytes: [u8; 16]) -> &'static str {
        match Entry::decode(&bytes) {
            Err(MapError::Invalid { what: "map entry", field, .. }) => field,
            other => panic!("{bytes:02x?} decoded to {other:?}"),
        }
    }

    #[test]
    fn encodings_are_as_specified() {
        assert_eq!(Entry::Zero.encode(), [0; 16]);
        assert_eq!(
            Entry::object(0x0102_0304_0506_0708, 0x0a0b_0c0d).encode(),
            [1, 0, 0, 0, 0x0d, 0x0c, 0x0b, 0x0a, 8, 7, 6, 5, 4, 3, 2, 1]
        );
        assert_eq!(
            Entry::Content { digest_index: 0x3ff }.encode(),
            [2, 0, 0, 0, 0, 0, 0, 0, 0xff, 3, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn round_trips() {
        for e in [
            Entry::Zero,
            Entry::object(1, 1),
            Entry::object(u64::MAX, u32::MAX),
            Entry::Content { digest_index: 0 },
            Entry::Content { digest_index: CHUNK_ENTRIES - 1 },
        ] {
            assert_eq!(e.check(), Ok(()));
            assert_eq!(Entry::decode(&e.encode()), Ok(e));
        }
    }

    #[test]
    fn invalid_encodings_are_refused() {
        let obj = Entry::object(5, 2).encode();
        let content = Entry::Content { digest_index: 3 }.encode();
        for kind in 3..=255u8 {
            let mut b = obj;
            b[0] = kind;
            assert_eq!(invalid_field(b), "kind");
        }
        for i in 1..16 {
            let mut b = [0u8; 16];
            b[i] = 0x80;
            assert_eq!(invalid_field(b), "kind", "zero entry with byte {i} set");
        }
        let mut b = obj;
        b[1] = 1;
        assert_eq!(invalid_field(b), "flags");
        let mut b = content;
        b[1] = 0x80;
        assert_eq!(invalid_field(b), "flags");
        let mut b = obj;
        b[3] = 1;
        assert_eq!(invalid_field(b), "reserved");
        let mut b = content;
        b[2] = 1;
        assert_eq!(invalid_field(b), "reserved");
        assert_eq!(invalid_field(Entry::object(0, 1).encode()), "volume_id");
        assert_eq!(invalid_field(Entry::object(1, 0).encode()), "epoch");
        let mut b = content;
        b[4] = 1;
        assert_eq!(invalid_field(b), "epoch");
        assert_eq!(invalid_field(Entry::Content { digest_index: CHUNK_ENTRIES }.encode()), "digest_index");
        let mut b = content;
        b[15] = 1; // index 2^56 + 3
        assert_eq!(invalid_field(b), "digest_index");
        let mut b = content;
        b[12] = 1; // index 2^32 + 3
        assert_eq!(invalid_field(b), "digest_index");
    }

    #[test]
    fn wrong_lengths_are_refused() {
        let e = Entry::object(5, 2).encode();
        for len in 0..16 {
            assert_eq!(
                Entry::decode(&e[..len]),
                Err(MapError::Truncated { what: "map entry", len: len as u64, needed: 16 })
            );
        }
        let mut long = e.to_vec();
        long.push(0);
        assert_eq!(
            Entry::decode(&long),
            Err(MapError::TrailingBytes { what: "map entry", len: 17, expected: 16 })
        );
    }

    #[test]
    fn own_shared_rule() {
        let (v, e) = (7, 3);
        assert_eq!(Entry::Zero.classify(v, e), Class::Zero);
        assert_eq!(Entry::object(v, e).classify(v, e), Class::Own);
        assert_eq!(Entry::object(v, e - 1).classify(v, e), Class::Shared, "an earlier epoch (a snapshot)");
        assert_eq!(
            Entry::object(v + 1, e).classify(v, e),
            Class::Shared,
            "another volume (a clone's parent)"
        );
        assert_eq!(Entry::Content { digest_index: 0 }.classify(v, e), Class::Content);
        // A snapshot: bumping the epoch turns the own entry shared, without touching it.
        assert_eq!(Entry::object(v, e).classify(v, e + 1), Class::Shared);
    }
}
