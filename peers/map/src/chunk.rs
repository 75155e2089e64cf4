//! Map chunks: 1024 consecutive entries of a volume's map, stored as one object.

use std::collections::HashSet;

use crate::codec::{check_crc, check_len, push_crc, Reader};
use crate::digest::{Digest, DIGEST_SIZE};
use crate::entry::{Entry, ENTRY_SIZE};
use crate::error::MapError;
use crate::name::{content_object_name, data_object_name};

/// Magic of an encoded chunk.
pub const CHUNK_MAGIC: [u8; 8] = *b"ARCHCHNK";
/// The chunk format version this build writes and reads.
pub const CHUNK_VERSION: u16 = 1;
/// Entries in a full chunk (4 GiB of volume at 4 MiB blocks). Only the last chunk of a
/// volume may hold fewer.
pub const CHUNK_ENTRIES: u32 = 1024;
/// Size of the fixed chunk header.
pub const CHUNK_HEADER_SIZE: usize = 32;
/// Size of the trailing checksum.
pub const CRC_SIZE: usize = 4;

const WHAT: &str = "map chunk";

/// One chunk of a volume's map: the entries of blocks `index * 1024 ..` and the table of
/// SHA-256 digests its CONTENT entries refer to.
///
/// Invariants (established by every constructor, kept by every method, checked by
/// [`Chunk::decode`]):
/// * `1 <= entries <= 1024` and the writer's `volume_id != 0`;
/// * every entry passes [`Entry::check`], and every CONTENT index is below the digest count;
/// * the digest table is exactly the set of digests the entries use: no duplicates and no
///   unreferenced digest (so `digests <= entries`, and garbage collection may read the
///   table as "the content objects this chunk keeps alive").
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Chunk {
    volume_id: u64,
    index: u32,
    entries: Vec<Entry>,
    digests: Vec<Digest>,
}

impl Chunk {
    /// A chunk of `entries` ZERO entries, to be written by volume `volume_id` as chunk
    /// `index` of its map.
    pub fn new_zero(volume_id: u64, index: u32, entries: u32) -> Result<Chunk, MapError> {
        Chunk::from_parts(volume_id, index, vec![Entry::Zero; entries as usize], Vec::new())
    }

    /// A chunk from all its values, validated against the invariants above.
    pub fn from_parts(
        volume_id: u64,
        index: u32,
        entries: Vec<Entry>,
        digests: Vec<Digest>,
    ) -> Result<Chunk, MapError> {
        if volume_id == 0 {
            return Err(MapError::invalid(WHAT, "volume_id", "volume id 0 is reserved"));
        }
        check_entry_count(entries.len())?;
        if digests.len() > entries.len() {
            return Err(MapError::invalid(
                WHAT,
                "digests",
                format!("{} digests for {} entries", digests.len(), entries.len()),
            ));
        }
        let mut used = vec![false; digests.len()];
        for (slot, entry) in entries.iter().enumerate() {
            if let Some((field, reason)) = entry.fault() {
                return Err(MapError::invalid(WHAT, "entry", format!("slot {slot}: {field}: {reason}")));
            }
            if let Entry::Content { digest_index } = *entry {
                match used.get_mut(digest_index as usize) {
                    Some(u) => *u = true,
                    None => {
                        return Err(MapError::invalid(
                            WHAT,
                            "entry",
                            format!(
                                "slot {slot}: digest index {digest_index} is past the table of {} digests",
                                digests.len()
                            ),
                        ))
                    }
                }
            }
        }
        if let Some(i) = used.iter().position(|u| !u) {
            return Err(MapError::invalid(WHAT, "digests", format!("digest {i} is not used by any entry")));
        }
        let mut seen = HashSet::with_capacity(digests.len());
        for (i, d) in digests.iter().enumerate() {
            if !seen.insert(d) {
                return Err(MapError::invalid(WHAT, "digests", format!("digest {i} ({d}) is a duplicate")));
            }
        }
        Ok(Chunk { volume_id, index, entries, digests })
    }

    /// The volume that writes (wrote) this chunk: its object is
    /// `chunk:<volume_id>:<epoch>:<index>` for that volume's epoch at the time.
    pub fn volume_id(&self) -> u64 {
        self.volume_id
    }

    /// The chunk's position in the map: it covers blocks `index * 1024 ..`.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Number of entries, 1..=1024.
    pub fn entry_count(&self) -> u32 {
        self.entries.len() as u32
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entry of `slot`, or `None` past the chunk's entries. (A reader treats slots past
    /// a chunk's entries, but within the volume, as ZERO: see the crate docs.)
    pub fn entry(&self, slot: u32) -> Option<Entry> {
        self.entries.get(slot as usize).copied()
    }

    /// The volume block index of `slot`: `index * 1024 + slot`.
    pub fn block_index(&self, slot: u32) -> u64 {
        u64::from(self.index) * u64::from(CHUNK_ENTRIES) + u64::from(slot)
    }

    /// Sets the entry of `slot`. A CONTENT entry must use a digest already in the table
    /// (use [`Chunk::set_content`] to add one); a digest no entry uses any more leaves the
    /// table, which may renumber the digests after it (the entries follow).
    pub fn set_entry(&mut self, slot: u32, entry: Entry) -> Result<(), MapError> {
        self.check_slot(slot)?;
        if let Some((field, reason)) = entry.fault() {
            return Err(MapError::invalid(WHAT, "entry", format!("{field}: {reason}")));
        }
        if let Entry::Content { digest_index } = entry {
            if digest_index as usize >= self.digests.len() {
                return Err(MapError::invalid(
                    WHAT,
                    "entry",
                    format!(
                        "digest index {digest_index} is past the table of {} digests",
                        self.digests.len()
                    ),
                ));
            }
        }
        let old = std::mem::replace(&mut self.entries[slot as usize], entry);
        if matches!(old, Entry::Content { .. }) && old != entry {
            self.drop_unused_digests();
        }
        Ok(())
    }

    /// Makes `slot` a CONTENT entry for `digest`, adding the digest to the table unless it
    /// is already there (identical digests are stored once). Returns the digest's index.
    pub fn set_content(&mut self, slot: u32, digest: Digest) -> Result<u32, MapError> {
        self.check_slot(slot)?;
        let digest_index = match self.find_digest(&digest) {
            Some(i) => i,
            None => {
                // May exceed `entries` for a moment: the entry replaced below may have held
                // the only reference to another digest, which then leaves.
                self.digests.push(digest);
                (self.digests.len() - 1) as u32
            }
        };
        let old = std::mem::replace(&mut self.entries[slot as usize], Entry::Content { digest_index });
        if matches!(old, Entry::Content { .. }) && old != self.entries[slot as usize] {
            self.drop_unused_digests();
        }
        match self.entries[slot as usize] {
            Entry::Content { digest_index } => Ok(digest_index),
            _ => unreachable!("slot {slot} was just set to a CONTENT entry"),
        }
    }

    /// The digest table (SHA-256 digests of the content objects the entries use).
    pub fn digests(&self) -> &[Digest] {
        &self.digests
    }

    pub fn digest(&self, digest_index: u32) -> Option<&Digest> {
        self.digests.get(digest_index as usize)
    }

    /// The index of `digest` in the table, if present.
    pub fn find_digest(&self, digest: &Digest) -> Option<u32> {
        self.digests.iter().position(|d| d == digest).map(|i| i as u32)
    }

    /// The digest of `slot` if it is a CONTENT entry.
    pub fn content_digest(&self, slot: u32) -> Option<&Digest> {
        match self.entry(slot)? {
            Entry::Content { digest_index } => self.digest(digest_index),
            _ => None,
        }
    }

    /// The object holding the block of `slot`: `data:…` for OBJECT, `sha256:…` for CONTENT,
    /// `None` for ZERO or past the entries.
    pub fn block_object_name(&self, slot: u32) -> Option<String> {
        match self.entry(slot)? {
            Entry::Zero => None,
            Entry::Object { volume_id, epoch } => {
                Some(data_object_name(volume_id, epoch, self.block_index(slot)))
            }
            Entry::Content { digest_index } => self.digest(digest_index).map(content_object_name),
        }
    }

    /// Makes volume `volume_id` the writer: the first step of copying a shared chunk into
    /// an own one (the entries stay as they are; they remain shared for that volume).
    pub fn set_volume_id(&mut self, volume_id: u64) -> Result<(), MapError> {
        if volume_id == 0 {
            return Err(MapError::invalid(WHAT, "volume_id", "volume id 0 is reserved"));
        }
        self.volume_id = volume_id;
        Ok(())
    }

    /// Grows the chunk with ZERO entries or cuts entries off its end (digests only the
    /// cut entries used leave the table). Used when the volume grows past a partial last
    /// chunk, or shrinks into one.
    pub fn resize(&mut self, entries: u32) -> Result<(), MapError> {
        check_entry_count(entries as usize)?;
        let shrinks = (entries as usize) < self.entries.len();
        self.entries.resize(entries as usize, Entry::Zero);
        if shrinks {
            self.drop_unused_digests();
        }
        Ok(())
    }

    /// Length of [`Chunk::encode`]'s output: 32 + 16 × entries + 32 × digests + 4.
    pub fn encoded_len(&self) -> usize {
        CHUNK_HEADER_SIZE + ENTRY_SIZE * self.entries.len() + DIGEST_SIZE * self.digests.len() + CRC_SIZE
    }

    /// The encoding (see the crate docs for the layout).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(&CHUNK_MAGIC);
        out.extend_from_slice(&CHUNK_VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.volume_id.to_le_bytes());
        out.extend_from_slice(&self.index.to_le_bytes());
        out.extend_from_slice(&(self.digests.len() as u32).to_le_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.encode());
        }
        for d in &self.digests {
            out.extend_from_slice(&d.0);
        }
        push_crc(&mut out);
        debug_assert_eq!(out.len(), self.encoded_len());
        out
    }

    /// Decodes and fully validates a chunk: length exact, magic, version, counts bounded,
    /// checksum, reserved 0, every entry valid, every CONTENT index inside the digest
    /// table, no duplicate or unused digest.
    pub fn decode(bytes: &[u8]) -> Result<Chunk, MapError> {
        if bytes.len() < CHUNK_HEADER_SIZE {
            return Err(MapError::Truncated {
                what: WHAT,
                len: bytes.len() as u64,
                needed: (CHUNK_HEADER_SIZE + ENTRY_SIZE + CRC_SIZE) as u64,
            });
        }
        let mut r = Reader::new(bytes);
        if r.array::<8>() != CHUNK_MAGIC {
            return Err(MapError::BadMagic { what: WHAT });
        }
        let version = r.u16();
        if version != CHUNK_VERSION {
            return Err(MapError::BadVersion { what: WHAT, found: version, expected: CHUNK_VERSION });
        }
        let reserved = r.u16();
        let nr_entries = r.u32();
        let volume_id = r.u64();
        let index = r.u32();
        let nr_digests = r.u32();
        check_entry_count(nr_entries as usize)?;
        if nr_digests > nr_entries {
            return Err(MapError::invalid(
                WHAT,
                "digests",
                format!("{nr_digests} digests for {nr_entries} entries"),
            ));
        }
        let expected = (CHUNK_HEADER_SIZE + CRC_SIZE) as u64
            + ENTRY_SIZE as u64 * u64::from(nr_entries)
            + DIGEST_SIZE as u64 * u64::from(nr_digests);
        check_len(WHAT, bytes.len(), expected)?;
        check_crc(WHAT, bytes)?;
        if reserved != 0 {
            return Err(MapError::invalid(WHAT, "reserved", format!("{reserved:#06x}; it must be 0")));
        }
        let mut entries = Vec::with_capacity(nr_entries as usize);
        for slot in 0..nr_entries {
            let entry = Entry::decode_raw(&r.array()).map_err(|(field, reason)| {
                MapError::invalid(WHAT, "entry", format!("slot {slot}: {field}: {reason}"))
            })?;
            entries.push(entry);
        }
        let digests = (0..nr_digests).map(|_| Digest(r.array())).collect();
        Chunk::from_parts(volume_id, index, entries, digests)
    }

    fn check_slot(&self, slot: u32) -> Result<(), MapError> {
        if (slot as usize) < self.entries.len() {
            Ok(())
        } else {
            Err(MapError::invalid(
                WHAT,
                "slot",
                format!("slot {slot} is past the chunk's {} entries", self.entries.len()),
            ))
        }
    }

    /// Removes digests no entry uses, keeping the order of the others and renumbering the
    /// entries to match.
    fn drop_unused_digests(&mut self) {
        let mut used = vec![false; self.digests.len()];
        for e in &self.entries {
            if let Entry::Content { digest_index } = *e {
                used[digest_index as usize] = true;
            }
        }
        if used.iter().all(|&u| u) {
            return;
        }
        let mut renumber = vec![0u32; self.digests.len()];
        let mut next = 0u32;
        for (i, &u) in used.iter().enumerate() {
            renumber[i] = next;
            next += u32::from(u);
        }
        let mut i = 0;
        self.digests.retain(|_| {
            i += 1;
            used[i - 1]
        });
        for e in &mut self.entries {
            if let Entry::Content { digest_index } = e {
                *digest_index = renumber[*digest_index as usize];
            }
        }
    }
}

fn check_entry_count(n: usize) -> Result<(), MapError> {
    if (1..=CHUNK_ENTRIES as usize).contains(&n) {
        Ok(())
    } else {
        Err(MapError::invalid(WHAT, "entries", format!("{n} entries; a chunk holds 1 to {CHUNK_ENTRIES}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(n: u8) -> Digest {
        Digest([n; 32])
    }

    fn sample() -> Chunk {
        let mut c = Chunk::new_zero(0x42, 3, 8).unwrap();
        c.set_entry(1, Entry::object(0x42, 2)).unwrap();
        c.set_content(2, d(0xaa)).unwrap();
        c.set_entry(3, Entry::object(7, 5)).unwrap();
        c.set_content(4, d(0xbb)).unwrap();
        c.set_content(5, d(0xaa)).unwrap();
        c
    }

    #[test]
    fn new_zero_and_accessors() {
        let c = Chunk::new_zero(9, 2, CHUNK_ENTRIES).unwrap();
        assert_eq!((c.volume_id(), c.index(), c.entry_count()), (9, 2, 1024));
        assert!(c.entries().iter().all(Entry::is_zero));
        assert_eq!(c.entry(1023), Some(Entry::Zero));
        assert_eq!(c.entry(1024), None);
        assert_eq!(c.block_index(5), 2 * 1024 + 5);
        assert_eq!(c.block_object_name(5), None);
        assert_eq!(c.encoded_len(), 32 + 16 * 1024 + 4);
        assert_eq!(c.encode().len(), c.encoded_len());
        assert!(Chunk::new_zero(9, 2, 0).is_err());
        assert!(Chunk::new_zero(9, 2, CHUNK_ENTRIES + 1).is_err());
        assert!(Chunk::new_zero(0, 2, 1).is_err());
    }

    #[test]
    fn digest_table_dedups_and_drops_unused() {
        let mut c = sample();
        assert_eq!(c.digests(), &[d(0xaa), d(0xbb)]);
        assert_eq!(c.entry(2), Some(Entry::Content { digest_index: 0 }));
        assert_eq!(c.entry(5), Some(Entry::Content { digest_index: 0 }), "identical digest stored once");
        assert_eq!(c.content_digest(4), Some(&d(0xbb)));
        assert_eq!(c.content_digest(1), None);
        assert_eq!(c.find_digest(&d(0xbb)), Some(1));
        assert_eq!(c.block_object_name(1), Some(data_object_name(0x42, 2, 3 * 1024 + 1)));
        assert_eq!(c.block_object_name(4), Some(content_object_name(&d(0xbb))));

        // Overwriting one of two users keeps the digest.
        c.set_entry(2, Entry::Zero).unwrap();
        assert_eq!(c.digests(), &[d(0xaa), d(0xbb)]);
        // Overwriting the last user drops it; the later digest is renumbered.
        c.set_entry(5, Entry::object(0x42, 3)).unwrap();
        assert_eq!(c.digests(), &[d(0xbb)]);
        assert_eq!(c.entry(4), Some(Entry::Content { digest_index: 0 }));
        // Re-setting the same content is a no-op.
        assert_eq!(c.set_content(4, d(0xbb)), Ok(0));
        assert_eq!(c.digests(), &[d(0xbb)]);
        // Replacing the only user with a new digest swaps the table.
        assert_eq!(c.set_content(4, d(0xcc)), Ok(0));
        assert_eq!(c.digests(), &[d(0xcc)]);
        // Sharing an existing digest through set_entry.
        c.set_entry(0, Entry::Content { digest_index: 0 }).unwrap();
        assert_eq!(c.content_digest(0), Some(&d(0xcc)));
        assert!(c.set_entry(0, Entry::Content { digest_index: 1 }).is_err());
        assert_eq!(Chunk::decode(&c.encode()), Ok(c));
    }

    #[test]
    fn full_table_of_distinct_digests_can_be_overwritten() {
        let mut c = Chunk::new_zero(1, 0, 4).unwrap();
        for slot in 0..4 {
            c.set_content(slot, d(slot as u8)).unwrap();
        }
        assert_eq!(c.digests().len(), 4);
        let i = c.set_content(1, d(9)).unwrap();
        assert_eq!(c.digests().len(), 4);
        assert_eq!(c.content_digest(1), Some(&d(9)));
        assert_eq!(c.digest(i), Some(&d(9)));
        for slot in [0, 2, 3] {
            assert_eq!(c.content_digest(slot), Some(&d(slot as u8)));
        }
        assert_eq!(Chunk::decode(&c.encode()), Ok(c));
    }

    #[test]
    fn setters_refuse_invalid_values() {
        let mut c = sample();
        let before = c.clone();
        assert!(c.set_entry(8, Entry::Zero).is_err());
        assert!(c.set_content(8, d(1)).is_err());
        assert!(c.set_entry(0, Entry::object(0, 1)).is_err());
        assert!(c.set_entry(0, Entry::object(1, 0)).is_err());
        assert!(c.set_entry(0, Entry::Content { digest_index: 2 }).is_err());
        assert!(c.set_volume_id(0).is_err());
        assert!(c.resize(0).is_err());
        assert!(c.resize(CHUNK_ENTRIES + 1).is_err());
        assert_eq!(c, before);
    }

    #[test]
    fn resize_grows_with_zeros_and_cuts_digests() {
        let mut c = sample();
        c.resize(CHUNK_ENTRIES).unwrap();
        assert_eq!(c.entry_count(), CHUNK_ENTRIES);
        assert_eq!(c.entry(1000), Some(Entry::Zero));
        c.resize(5).unwrap(); // cuts slot 5 (0xaa, also used by slot 2) and everything after
        assert_eq!(c.digests(), &[d(0xaa), d(0xbb)]);
        c.resize(4).unwrap(); // cuts slot 4, the only user of 0xbb
        assert_eq!(c.digests(), &[d(0xaa)]);
        c.resize(2).unwrap();
        assert!(c.digests().is_empty());
        assert_eq!(Chunk::decode(&c.encode()), Ok(c));
    }

    #[test]
    fn from_parts_checks_the_table() {
        let e = |i| Entry::Content { digest_index: i };
        assert!(Chunk::from_parts(1, 0, vec![e(0), e(1)], vec![d(1), d(2)]).is_ok());
        let dup = Chunk::from_parts(1, 0, vec![e(0), e(1)], vec![d(1), d(1)]).unwrap_err();
        assert!(dup.to_string().contains("duplicate"), "{dup}");
        let unused = Chunk::from_parts(1, 0, vec![e(0), Entry::Zero], vec![d(1), d(2)]).unwrap_err();
        assert!(unused.to_string().contains("not used"), "{unused}");
        let past = Chunk::from_parts(1, 0, vec![e(0), e(2)], vec![d(1), d(2)]).unwrap_err();
        assert!(past.to_string().contains("past the table"), "{past}");
        let many = Chunk::from_parts(1, 0, vec![e(0)], vec![d(1), d(2)]).unwrap_err();
        assert!(matches!(many, MapError::Invalid { field: "digests", .. }), "{many}");
        assert!(Chunk::from_parts(1, 0, vec![], vec![]).is_err());
        assert!(Chunk::from_parts(1, 0, vec![Entry::object(1, 0)], vec![]).is_err());
    }

    /// Re-encodes a chunk with a valid checksum after `edit`, to reach the checks behind it.
    fn with_crc(mut bytes: Vec<u8>, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        bytes.truncate(bytes.len() - 4);
        edit(&mut bytes);
        push_crc(&mut bytes);
        bytes
    }

    fn invalid_field(bytes: &[u8]) -> &'static str {
        match Chunk::decode(bytes) {
            Err(MapError::Invalid { what: "map chunk", field, .. }) => field,
            other => panic!("decoded to {other:?}"),
        }
    }

    #[test]
    fn decode_checks_every_field() {
        let good = sample().encode();
        assert_eq!(Chunk::decode(&good), Ok(sample()));

        let mut b = good.clone();
        b[0] = b'X';
        assert_eq!(Chunk::decode(&b), Err(MapError::BadMagic { what: "map chunk" }));
        let b = with_crc(good.clone(), |b| b[8] = 2);
        assert_eq!(Chunk::decode(&b), Err(MapError::BadVersion { what: "map chunk", found: 2, expected: 1 }));
        assert_eq!(invalid_field(&with_crc(good.clone(), |b| b[10] = 1)), "reserved");
        assert_eq!(
            invalid_field(&with_crc(good.clone(), |b| b[12..16].copy_from_slice(&0u32.to_le_bytes()))),
            "entries"
        );
        assert_eq!(
            invalid_field(&with_crc(good.clone(), |b| b[12..16].copy_from_slice(&1025u32.to_le_bytes()))),
            "entries"
        );
        assert_eq!(
            invalid_field(&with_crc(good.clone(), |b| b[28..32].copy_from_slice(&9u32.to_le_bytes()))),
            "digests"
        );
        assert_eq!(invalid_field(&with_crc(good.clone(), |b| b[16..24].fill(0))), "volume_id");
        // Slot 0 (offset 32) becomes an unknown kind; slot 2 (offset 64) a CONTENT index past the table.
        assert_eq!(invalid_field(&with_crc(good.clone(), |b| b[32] = 9)), "entry");
        assert_eq!(invalid_field(&with_crc(good.clone(), |b| b[64 + 8] = 2)), "entry");
        // The second digest becomes a copy of the first.
        let b = with_crc(good.clone(), |b| {
            let first = b[32 + 128..32 + 160].to_vec();
            b[32 + 160..32 + 192].copy_from_slice(&first);
        });
        assert_eq!(invalid_field(&b), "digests");
        // A bit flip anywhere is a checksum error (or framing, when it hits a count).
        let mut b = good.clone();
        b[40] ^= 1;
        assert!(matches!(Chunk::decode(&b), Err(MapError::Checksum { what: "map chunk", .. })));
    }

    #[test]
    fn decode_refuses_every_truncation_and_trailing_bytes() {
        let good = sample().encode();
        for len in 0..good.len() {
            assert!(matches!(Chunk::decode(&good[..len]), Err(MapError::Truncated { .. })), "len {len}");
        }
        let mut long = good.clone();
        long.push(0);
        assert!(matches!(Chunk::decode(&long), Err(MapError::TrailingBytes { .. })));
    }

    #[test]
    fn error_messages_are_clear() {
        let good = sample().encode();
        let mut b = good.clone();
        b[40] ^= 1;
        let msg = Chunk::decode(&b).unwrap_err().to_string();
        assert!(msg.starts_with("map chunk: checksum mismatch: stored crc32c 0x"), "{msg}");
        let msg = Chunk::decode(&good[..10]).unwrap_err().to_string();
        assert_eq!(msg, "map chunk: truncated: 10 bytes, the encoding needs 52");
        let msg = Chunk::decode(&with_crc(good, |b| b[32 + 16 * 3] = 9)).unwrap_err().to_string();
        assert_eq!(msg, "map chunk: invalid entry: slot 3: kind: unknown entry kind 9");
    }

    fn arb_entry() -> impl Strategy<Value = (u8, u64, u32, u8)> {
        // (what to do, id, epoch, digest seed)
        (0u8..4, 1u64..=u64::MAX, 1u32..=u32::MAX, 0u8..12)
    }

    proptest! {
        /// Random edit sequences through the public setters keep the chunk valid and
        /// canonical: it always encodes to bytes that decode back to it.
        #[test]
        fn edits_keep_the_chunk_valid(
            n in 1u32..=CHUNK_ENTRIES,
            ops in proptest::collection::vec((any::<u32>(), arb_entry()), 0..64),
            new_len in proptest::option::of(1u32..=CHUNK_ENTRIES),
        ) {
            let mut c = Chunk::new_zero(77, 5, n).unwrap();
            for (slot, (op, id, epoch, seed)) in ops {
                let slot = slot % c.entry_count();
                match op {
                    0 => c.set_entry(slot, Entry::Zero).unwrap(),
                    1 => c.set_entry(slot, Entry::object(id, epoch)).unwrap(),
                    2 => { c.set_content(slot, d(seed)).unwrap(); }
                    _ => {
                        if !c.digests().is_empty() {
                            let i = seed as u32 % c.digests().len() as u32;
                            c.set_entry(slot, Entry::Content { digest_index: i }).unwrap();
                        }
                    }
                }
            }
            if let Some(len) = new_len {
                c.resize(len).unwrap();
            }
            let bytes = c.encode();
            prop_assert_eq!(bytes.len(), c.encoded_len());
            prop_assert_eq!(Chunk::decode(&bytes), Ok(c));
        }

        /// Arbitrary bytes never make the decoder panic.
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Chunk::decode(&bytes);
        }

        /// Arbitrary bytes behind a valid header prefix and checksum never make the decoder
        /// panic, and whatever decodes re-encodes to the same bytes.
        #[test]
        fn decode_of_checksummed_garbage_is_canonical(
            entries in 1u32..=8, digests in 0u32..=8, body in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let mut b = CHUNK_MAGIC.to_vec();
            b.extend_from_slice(&CHUNK_VERSION.to_le_bytes());
            b.extend_from_slice(&0u16.to_le_bytes());
            b.extend_from_slice(&entries.to_le_bytes());
            b.extend_from_slice(&1u64.to_le_bytes());
            b.extend_from_slice(&0u32.to_le_bytes());
            b.extend_from_slice(&digests.to_le_bytes());
            b.extend_from_slice(&body);
            push_crc(&mut b);
            if let Ok(c) = Chunk::decode(&b) {
                prop_assert_eq!(c.encode(), b);
            }
        }
    }
}
