//! Map headers: a volume's or snapshot's metadata and the references to its map chunks.

use crate::chunk::{Chunk, CHUNK_ENTRIES, CRC_SIZE};
use crate::codec::{check_crc, check_len, push_crc, Reader};
use crate::entry::{Class, Entry};
use crate::error::MapError;
use crate::name::{chunk_object_name, lock_object_name, map_object_name, VolumeName, VOLUME_NAME_MAX};

/// Magic of an encoded map header.
pub const MAP_MAGIC: [u8; 8] = *b"ARCHMAP\0";
/// The map header format version this build writes and reads.
pub const MAP_VERSION: u16 = 1;
/// Size of the fixed part of a map header (before the name).
pub const MAP_HEADER_FIXED_SIZE: usize = 48;
/// Size of an encoded [`ChunkRef`].
pub const CHUNK_REF_SIZE: usize = 16;

/// Header flag: the header is a snapshot (read-only).
pub const FLAG_SNAPSHOT: u16 = 1 << 0;
/// Header flag: the volume or snapshot is deleted (a tombstone keeping its id and epoch).
pub const FLAG_DELETED: u16 = 1 << 1;
/// All header flags version 1 defines; the other bits must be 0.
pub const HEADER_FLAGS_KNOWN: u16 = FLAG_SNAPSHOT | FLAG_DELETED;
/// Chunk ref flag: the chunk object exists.
pub const CHUNK_REF_PRESENT: u32 = 1 << 0;

/// Smallest block: 4 KiB.
pub const MIN_BLOCK_SHIFT: u8 = 12;
/// Largest block: 64 MiB.
pub const MAX_BLOCK_SHIFT: u8 = 26;
/// Default block: 4 MiB.
pub const DEFAULT_BLOCK_SHIFT: u8 = 22;
/// Largest volume: 64 TiB.
pub const SIZE_BYTES_MAX: u64 = 64 << 40;

const WHAT: &str = "map header";
const REF_WHAT: &str = "chunk ref";

/// Where chunk `index` of a map lives (16 bytes on disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ChunkRef {
    /// No chunk object: every entry of the chunk is ZERO. Encoded as 16 zero bytes.
    #[default]
    Absent,
    /// The chunk object `chunk:<volume_id>:<epoch>:<index>`.
    Present { volume_id: u64, epoch: u32 },
}

impl ChunkRef {
    pub fn is_present(&self) -> bool {
        matches!(self, ChunkRef::Present { .. })
    }

    /// Whether the chunk is own for the volume `volume_id` at `epoch`, i.e. rewritable in
    /// place: it was written by that volume during that epoch. Otherwise (absent, or shared
    /// with a snapshot or a parent) a modification writes a new chunk object under the
    /// volume's own id and epoch and points the ref at it.
    pub fn is_own(&self, volume_id: u64, epoch: u32) -> bool {
        *self == ChunkRef::Present { volume_id, epoch }
    }

    /// The object name of chunk `index` if present.
    pub fn object_name(&self, index: u32) -> Option<String> {
        match *self {
            ChunkRef::Absent => None,
            ChunkRef::Present { volume_id, epoch } => Some(chunk_object_name(volume_id, epoch, index)),
        }
    }

    /// `volume_id u64, epoch u32, flags u32` (flags = PRESENT); an absent ref is all zero.
    pub fn encode(&self) -> [u8; CHUNK_REF_SIZE] {
        let mut out = [0u8; CHUNK_REF_SIZE];
        if let ChunkRef::Present { volume_id, epoch } = *self {
            out[0..8].copy_from_slice(&volume_id.to_le_bytes());
            out[8..12].copy_from_slice(&epoch.to_le_bytes());
            out[12..16].copy_from_slice(&CHUNK_REF_PRESENT.to_le_bytes());
        }
        out
    }

    /// Decodes exactly 16 bytes: all zero (absent), or PRESENT with a nonzero id and epoch.
    pub fn decode(bytes: &[u8]) -> Result<ChunkRef, MapError> {
        check_len(REF_WHAT, bytes.len(), CHUNK_REF_SIZE as u64)?;
        let raw: &[u8; CHUNK_REF_SIZE] = bytes.try_into().expect("length checked");
        ChunkRef::decode_raw(raw).map_err(|(field, reason)| MapError::invalid(REF_WHAT, field, reason))
    }

    fn decode_raw(raw: &[u8; CHUNK_REF_SIZE]) -> Result<ChunkRef, (&'static str, String)> {
        let mut r = Reader::new(raw);
        let volume_id = r.u64();
        let epoch = r.u32();
        let flags = r.u32();
        match flags {
            0 if volume_id == 0 && epoch == 0 => Ok(ChunkRef::Absent),
            0 => Err(("flags", "an absent ref (flags 0) has nonzero bytes".into())),
            CHUNK_REF_PRESENT => {
                let r = ChunkRef::Present { volume_id, epoch };
                r.fault().map_or(Ok(r), Err)
            }
            other => Err(("flags", format!("{other:#010x}; only bit 0 (PRESENT) is defined"))),
        }
    }

    fn fault(&self) -> Option<(&'static str, String)> {
        match *self {
            ChunkRef::Present { volume_id: 0, .. } => {
                Some(("volume_id", "a present ref names volume id 0".into()))
            }
            ChunkRef::Present { epoch: 0, .. } => Some(("epoch", "a present ref names epoch 0".into())),
            _ => None,
        }
    }
}

/// All the values of a [`MapHeader`], public, for building one literally
/// ([`MapHeader::from_parts`] validates them) or taking one apart.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MapHeaderParts {
    pub name: VolumeName,
    /// The snapshot this volume was cloned from (kept by its own snapshots).
    pub parent: Option<VolumeName>,
    pub snapshot: bool,
    pub deleted: bool,
    pub block_shift: u8,
    pub volume_id: u64,
    pub size_bytes: u64,
    pub epoch: u32,
    pub created_unix_ms: u64,
    pub chunk_refs: Vec<ChunkRef>,
}

/// The metadata of a volume or snapshot, stored as the object `map:<name>`.
///
/// Invariants (established by every constructor, kept by every method, checked by
/// [`MapHeader::decode`]):
/// * `block_shift` in 12..=26, `size_bytes <= SIZE_BYTES_MAX`, `volume_id != 0`,
///   `epoch >= 1`;
/// * one chunk ref per chunk: `chunk_refs.len() == ceil(ceil(size / block) / 1024)`;
/// * every present ref has a nonzero id and epoch, and a ref naming the header's own volume
///   id has an epoch `<=` the header's (a volume only writes at its current epoch, and
///   epochs only grow).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MapHeader {
    name: VolumeName,
    parent: Option<VolumeName>,
    snapshot: bool,
    deleted: bool,
    block_shift: u8,
    volume_id: u64,
    size_bytes: u64,
    epoch: u32,
    created_unix_ms: u64,
    chunk_refs: Vec<ChunkRef>,
}

/// Number of blocks of `block_shift` covering `size` bytes (the last one may be partial).
fn blocks_for(size: u64, block_shift: u8) -> u64 {
    size.div_ceil(1u64 << block_shift)
}

/// Number of chunks covering `blocks` blocks.
fn chunks_for(blocks: u64) -> u64 {
    blocks.div_ceil(u64::from(CHUNK_ENTRIES))
}

fn check_shift_and_size(block_shift: u8, size_bytes: u64) -> Result<(), MapError> {
    if !(MIN_BLOCK_SHIFT..=MAX_BLOCK_SHIFT).contains(&block_shift) {
        return Err(MapError::invalid(
            WHAT,
            "block_shift",
            format!("{block_shift}; blocks are 2^{MIN_BLOCK_SHIFT} to 2^{MAX_BLOCK_SHIFT} bytes"),
        ));
    }
    if size_bytes > SIZE_BYTES_MAX {
        return Err(MapError::invalid(
            WHAT,
            "size_bytes",
            format!("{size_bytes} bytes exceed the largest volume ({SIZE_BYTES_MAX} bytes, 64 TiB)"),
        ));
    }
    Ok(())
}

impl MapHeader {
    /// A fresh volume: epoch 1, no parent, every chunk ref absent (so it stores nothing but
    /// this header, whatever its size).
    pub fn new_volume(
        name: VolumeName,
        volume_id: u64,
        size_bytes: u64,
        block_shift: u8,
        now_ms: u64,
    ) -> Result<MapHeader, MapError> {
        check_shift_and_size(block_shift, size_bytes)?;
        let nr_chunks = chunks_for(blocks_for(size_bytes, block_shift)) as usize;
        MapHeader::from_parts(MapHeaderParts {
            name,
            parent: None,
            snapshot: false,
            deleted: false,
            block_shift,
            volume_id,
            size_bytes,
            epoch: 1,
            created_unix_ms: now_ms,
            chunk_refs: vec![ChunkRef::Absent; nr_chunks],
        })
    }

    /// A header from all its values, validated against the invariants above.
    pub fn from_parts(p: MapHeaderParts) -> Result<MapHeader, MapError> {
        check_shift_and_size(p.block_shift, p.size_bytes)?;
        if p.volume_id == 0 {
            return Err(MapError::invalid(WHAT, "volume_id", "volume id 0 is reserved"));
        }
        if p.epoch == 0 {
            return Err(MapError::invalid(WHAT, "epoch", "epoch 0 is reserved; epochs start at 1"));
        }
        let nr_chunks = chunks_for(blocks_for(p.size_bytes, p.block_shift));
        if p.chunk_refs.len() as u64 != nr_chunks {
            return Err(MapError::invalid(
                WHAT,
                "nr_chunks",
                format!(
                    "{} chunk refs; a volume of {} bytes in blocks of 2^{} bytes has {nr_chunks} chunks",
                    p.chunk_refs.len(),
                    p.size_bytes,
                    p.block_shift
                ),
            ));
        }
        for (i, r) in p.chunk_refs.iter().enumerate() {
            check_ref(p.volume_id, p.epoch, i, r)?;
        }
        Ok(MapHeader {
            name: p.name,
            parent: p.parent,
            snapshot: p.snapshot,
            deleted: p.deleted,
            block_shift: p.block_shift,
            volume_id: p.volume_id,
            size_bytes: p.size_bytes,
            epoch: p.epoch,
            created_unix_ms: p.created_unix_ms,
            chunk_refs: p.chunk_refs,
        })
    }

    /// All values, public.
    pub fn into_parts(self) -> MapHeaderParts {
        MapHeaderParts {
            name: self.name,
            parent: self.parent,
            snapshot: self.snapshot,
            deleted: self.deleted,
            block_shift: self.block_shift,
            volume_id: self.volume_id,
            size_bytes: self.size_bytes,
            epoch: self.epoch,
            created_unix_ms: self.created_unix_ms,
            chunk_refs: self.chunk_refs,
        }
    }

    pub fn name(&self) -> &VolumeName {
        &self.name
    }

    /// The snapshot this volume was cloned from, if any.
    pub fn parent(&self) -> Option<&VolumeName> {
        self.parent.as_ref()
    }

    pub fn is_snapshot(&self) -> bool {
        self.snapshot
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted
    }

    /// Whether the volume's data and map may change: neither a snapshot nor deleted.
    pub fn is_writable(&self) -> bool {
        !self.snapshot && !self.deleted
    }

    /// The flags word as encoded ([`FLAG_SNAPSHOT`], [`FLAG_DELETED`]).
    pub fn flags(&self) -> u16 {
        (if self.snapshot { FLAG_SNAPSHOT } else { 0 }) | (if self.deleted { FLAG_DELETED } else { 0 })
    }

    pub fn volume_id(&self) -> u64 {
        self.volume_id
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    pub fn block_shift(&self) -> u8 {
        self.block_shift
    }

    pub fn block_size(&self) -> u64 {
        1 << self.block_shift
    }

    pub fn created_unix_ms(&self) -> u64 {
        self.created_unix_ms
    }

    /// `map:<name>`: the object this header is stored in.
    pub fn object_name(&self) -> String {
        map_object_name(&self.name)
    }

    /// `lock:<name>`.
    pub fn lock_object_name(&self) -> String {
        lock_object_name(&self.name)
    }

    /// Number of blocks: `ceil(size / block size)` (the last one may be partial).
    pub fn block_count(&self) -> u64 {
        blocks_for(self.size_bytes, self.block_shift)
    }

    /// Number of chunks (= chunk refs): `ceil(block_count / 1024)`.
    pub fn nr_chunks(&self) -> u32 {
        self.chunk_refs.len() as u32
    }

    /// Number of blocks chunk `index` covers: 1024, fewer for the last chunk, `None` past
    /// the end. A chunk object may hold fewer entries than this (it was written while the
    /// volume, or a snapshot it shares the chunk with, was smaller); the entries it lacks
    /// are ZERO.
    pub fn chunk_entries(&self, index: u32) -> Option<u32> {
        let first = u64::from(index) * u64::from(CHUNK_ENTRIES);
        let blocks = self.block_count();
        (first < blocks).then(|| (blocks - first).min(u64::from(CHUNK_ENTRIES)) as u32)
    }

    /// The chunk and the slot in it that hold the entry of `block`, or `None` past the end.
    pub fn chunk_of_block(&self, block: u64) -> Option<(u32, u32)> {
        (block < self.block_count())
            .then(|| ((block / u64::from(CHUNK_ENTRIES)) as u32, (block % u64::from(CHUNK_ENTRIES)) as u32))
    }

    /// The block holding byte `offset`, or `None` past the end.
    pub fn block_of_offset(&self, offset: u64) -> Option<u64> {
        (offset < self.size_bytes).then(|| offset >> self.block_shift)
    }

    pub fn chunk_refs(&self) -> &[ChunkRef] {
        &self.chunk_refs
    }

    pub fn chunk_ref(&self, index: u32) -> Option<ChunkRef> {
        self.chunk_refs.get(index as usize).copied()
    }

    /// The object name of chunk `index` if its ref is present.
    pub fn chunk_object_name(&self, index: u32) -> Option<String> {
        self.chunk_ref(index)?.object_name(index)
    }

    /// The ref to a chunk this volume writes now: its own id and current epoch.
    pub fn own_chunk_ref(&self) -> ChunkRef {
        ChunkRef::Present { volume_id: self.volume_id, epoch: self.epoch }
    }

    /// Whether chunk `index` may be rewritten in place (see [`ChunkRef::is_own`]).
    pub fn is_own_chunk(&self, index: u32) -> bool {
        self.chunk_ref(index).is_some_and(|r| r.is_own(self.volume_id, self.epoch))
    }

    /// The entry of a block this volume writes now: its own id and current epoch.
    pub fn own_entry(&self) -> Entry {
        Entry::Object { volume_id: self.volume_id, epoch: self.epoch }
    }

    /// [`Entry::classify`] for this volume's id and epoch.
    pub fn classify(&self, entry: &Entry) -> Class {
        entry.classify(self.volume_id, self.epoch)
    }

    /// Points chunk `index` at a chunk object. A present ref needs a nonzero id and epoch,
    /// and one naming this volume's id may not name a later epoch than the header's.
    /// (Format rules only: whether the volume may change is the caller's business, see
    /// [`MapHeader::is_writable`].)
    pub fn set_chunk_ref(&mut self, index: u32, chunk_ref: ChunkRef) -> Result<(), MapError> {
        if index as usize >= self.chunk_refs.len() {
            return Err(MapError::invalid(
                WHAT,
                "chunk_refs",
                format!("chunk {index} is past the volume's {} chunks", self.chunk_refs.len()),
            ));
        }
        check_ref(self.volume_id, self.epoch, index as usize, &chunk_ref)?;
        self.chunk_refs[index as usize] = chunk_ref;
        Ok(())
    }

    /// Checks that `chunk`, read from the object of ref `index`, is that chunk: the ref is
    /// present, the chunk was written by the ref's volume for this index, and it holds no
    /// more entries than the chunk covers. Catches misdirected reads and stale chunks.
    pub fn check_chunk(&self, index: u32, chunk: &Chunk) -> Result<(), MapError> {
        let fail = |reason: String| Err(MapError::invalid("map chunk", "identity", reason));
        let (Some(r), Some(entries)) = (self.chunk_ref(index), self.chunk_entries(index)) else {
            return fail(format!("chunk {index} is past the map of {}", self.name));
        };
        let ChunkRef::Present { volume_id, .. } = r else {
            return fail(format!("chunk ref {index} of {} is absent", self.name));
        };
        if chunk.volume_id() != volume_id || chunk.index() != index {
            return fail(format!(
                "expected chunk {index} of volume {volume_id:#x}, read chunk {} of volume {:#x}",
                chunk.index(),
                chunk.volume_id()
            ));
        }
        if chunk.entry_count() > entries {
            return fail(format!(
                "chunk {index} holds {} entries; the volume has {entries} blocks there",
                chunk.entry_count()
            ));
        }
        Ok(())
    }

    /// Renames the volume or snapshot (the caller writes the header under the new name,
    /// then removes the old object).
    pub fn set_name(&mut self, name: VolumeName) {
        self.name = name;
    }

    /// Turns the header into a tombstone (DELETED); the volume id and epoch stay, so the
    /// objects it owned remain identifiable for garbage collection.
    pub fn mark_deleted(&mut self) {
        self.deleted = true;
    }

    /// Changes the size: growing appends absent chunk refs, shrinking drops the refs past
    /// the new end. Whether a shrink is allowed is the caller's decision; snapshots and
    /// tombstones cannot be resized.
    ///
    /// Returns `Some(index)` when a shrink cut present chunk `index` short: the caller must
    /// store that chunk truncated to [`MapHeader::chunk_entries`] (with [`Chunk::resize`],
    /// as a new own chunk if it is shared) before storing this header, or the entries past
    /// the new end would reappear if the volume grew again. (Likewise the bytes past the
    /// new size in a partial last block are the data layer's to zero.)
    pub fn resize(&mut self, new_size: u64) -> Result<Option<u32>, MapError> {
        self.check_writable("resize")?;
        check_shift_and_size(self.block_shift, new_size)?;
        let new_nr = chunks_for(blocks_for(new_size, self.block_shift)) as usize;
        let last = new_nr.checked_sub(1).map(|i| i as u32);
        let old_last_entries = last.and_then(|i| self.chunk_entries(i));
        self.chunk_refs.resize(new_nr, ChunkRef::Absent);
        self.size_bytes = new_size;
        let cut = match (last, old_last_entries) {
            (Some(i), Some(old)) => {
                self.chunk_entries(i).is_some_and(|new| new < old) && self.chunk_refs[i as usize].is_present()
            }
            _ => false,
        };
        Ok(if cut { last } else { None })
    }

    /// The header of a snapshot of this volume, named `snap_name`: a copy with SNAPSHOT
    /// set, sharing every chunk ref (and the volume id, epoch and parent). The caller
    /// stores it, then calls [`MapHeader::bump_epoch`] on the volume and stores that: from
    /// then on every existing entry and chunk is shared, and the next write copies.
    pub fn snapshot_of(&self, snap_name: VolumeName, now_ms: u64) -> Result<MapHeader, MapError> {
        self.check_writable("snapshot")?;
        let mut snap = self.clone();
        snap.name = snap_name;
        snap.snapshot = true;
        snap.created_unix_ms = now_ms;
        Ok(snap)
    }

    /// Increments the epoch (after a snapshot); returns the new epoch.
    pub fn bump_epoch(&mut self) -> Result<u32, MapError> {
        self.check_writable("bump the epoch of")?;
        self.epoch = self.epoch.checked_add(1).ok_or_else(|| {
            MapError::invalid(WHAT, "epoch", "the volume has used up its epochs (2^32 - 1 snapshots)")
        })?;
        Ok(self.epoch)
    }

    /// A clone of snapshot `snap`: a new volume `name` with id `new_id`, epoch 1, the
    /// snapshot's chunk refs (then absent refs if `size_bytes` is larger), and parent = the
    /// snapshot's name. Everything it shares stays read-only for it (other volume id).
    pub fn clone_from_snapshot(
        snap: &MapHeader,
        name: VolumeName,
        new_id: u64,
        size_bytes: u64,
        now_ms: u64,
    ) -> Result<MapHeader, MapError> {
        if !snap.snapshot {
            return Err(MapError::invalid(
                WHAT,
                "flags",
                format!("{} is not a snapshot; only snapshots can be cloned", snap.name),
            ));
        }
        if snap.deleted {
            return Err(MapError::invalid(WHAT, "flags", format!("snapshot {} is deleted", snap.name)));
        }
        if size_bytes < snap.size_bytes {
            return Err(MapError::invalid(
                WHAT,
                "size_bytes",
                format!(
                    "a clone of {size_bytes} bytes is smaller than snapshot {} ({} bytes)",
                    snap.name, snap.size_bytes
                ),
            ));
        }
        if new_id == snap.volume_id {
            return Err(MapError::invalid(WHAT, "volume_id", "a clone needs a new volume id"));
        }
        check_shift_and_size(snap.block_shift, size_bytes)?;
        let mut chunk_refs = snap.chunk_refs.clone();
        chunk_refs.resize(chunks_for(blocks_for(size_bytes, snap.block_shift)) as usize, ChunkRef::Absent);
        MapHeader::from_parts(MapHeaderParts {
            name,
            parent: Some(snap.name.clone()),
            snapshot: false,
            deleted: false,
            block_shift: snap.block_shift,
            volume_id: new_id,
            size_bytes,
            epoch: 1,
            created_unix_ms: now_ms,
            chunk_refs,
        })
    }

    /// Length of [`MapHeader::encode`]'s output: 48 + name + parent + 16 × nr_chunks + 4.
    pub fn encoded_len(&self) -> usize {
        MAP_HEADER_FIXED_SIZE
            + self.name.as_str().len()
            + self.parent.as_ref().map_or(0, |p| p.as_str().len())
            + CHUNK_REF_SIZE * self.chunk_refs.len()
            + CRC_SIZE
    }

    /// The encoding (see the crate docs for the layout).
    pub fn encode(&self) -> Vec<u8> {
        let name = self.name.as_str().as_bytes();
        let parent = self.parent.as_ref().map_or(&[][..], |p| p.as_str().as_bytes());
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(&MAP_MAGIC);
        out.extend_from_slice(&MAP_VERSION.to_le_bytes());
        out.extend_from_slice(&self.flags().to_le_bytes());
        out.push(self.block_shift);
        out.push(name.len() as u8);
        out.push(parent.len() as u8);
        out.push(0); // reserved
        out.extend_from_slice(&self.volume_id.to_le_bytes());
        out.extend_from_slice(&self.size_bytes.to_le_bytes());
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&(self.chunk_refs.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.created_unix_ms.to_le_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(parent);
        for r in &self.chunk_refs {
            out.extend_from_slice(&r.encode());
        }
        push_crc(&mut out);
        debug_assert_eq!(out.len(), self.encoded_len());
        out
    }

    /// Decodes and fully validates a header: length exact, magic, version, checksum, flags,
    /// reserved 0, block shift, size, names, id, epoch, `nr_chunks` consistent with the
    /// size, every chunk ref valid.
    pub fn decode(bytes: &[u8]) -> Result<MapHeader, MapError> {
        if bytes.len() < MAP_HEADER_FIXED_SIZE {
            return Err(MapError::Truncated {
                what: WHAT,
                len: bytes.len() as u64,
                needed: (MAP_HEADER_FIXED_SIZE + 1 + CRC_SIZE) as u64,
            });
        }
        let mut r = Reader::new(bytes);
        if r.array::<8>() != MAP_MAGIC {
            return Err(MapError::BadMagic { what: WHAT });
        }
        let version = r.u16();
        if version != MAP_VERSION {
            return Err(MapError::BadVersion { what: WHAT, found: version, expected: MAP_VERSION });
        }
        let flags = r.u16();
        let block_shift = r.u8();
        let name_len = r.u8();
        let parent_len = r.u8();
        let reserved = r.u8();
        let volume_id = r.u64();
        let size_bytes = r.u64();
        let epoch = r.u32();
        let nr_chunks = r.u32();
        let created_unix_ms = r.u64();
        let expected = (MAP_HEADER_FIXED_SIZE + CRC_SIZE) as u64
            + u64::from(name_len)
            + u64::from(parent_len)
            + CHUNK_REF_SIZE as u64 * u64::from(nr_chunks);
        check_len(WHAT, bytes.len(), expected)?;
        check_crc(WHAT, bytes)?;
        if flags & !HEADER_FLAGS_KNOWN != 0 {
            return Err(MapError::invalid(
                WHAT,
                "flags",
                format!("{flags:#06x}; only bits 0 (SNAPSHOT) and 1 (DELETED) are defined"),
            ));
        }
        if reserved != 0 {
            return Err(MapError::invalid(WHAT, "reserved", format!("{reserved:#04x}; it must be 0")));
        }
        let name = decode_name("name", r.bytes(name_len.into()))?;
        let parent = match parent_len {
            0 => None,
            n => Some(decode_name("parent", r.bytes(n.into()))?),
        };
        check_shift_and_size(block_shift, size_bytes)?;
        let computed = chunks_for(blocks_for(size_bytes, block_shift));
        if u64::from(nr_chunks) != computed {
            return Err(MapError::invalid(
                WHAT,
                "nr_chunks",
                format!("{nr_chunks}; a volume of {size_bytes} bytes in blocks of 2^{block_shift} bytes has {computed} chunks"),
            ));
        }
        let mut chunk_refs = Vec::with_capacity(nr_chunks as usize);
        for i in 0..nr_chunks {
            let cr = ChunkRef::decode_raw(&r.array()).map_err(|(field, reason)| {
                MapError::invalid(WHAT, "chunk_refs", format!("ref {i}: {field}: {reason}"))
            })?;
            chunk_refs.push(cr);
        }
        MapHeader::from_parts(MapHeaderParts {
            name,
            parent,
            snapshot: flags & FLAG_SNAPSHOT != 0,
            deleted: flags & FLAG_DELETED != 0,
            block_shift,
            volume_id,
            size_bytes,
            epoch,
            created_unix_ms,
            chunk_refs,
        })
    }

    fn check_writable(&self, op: &str) -> Result<(), MapError> {
        if self.snapshot {
            Err(MapError::invalid(
                WHAT,
                "flags",
                format!("cannot {op} {}: it is a snapshot (read-only)", self.name),
            ))
        } else if self.deleted {
            Err(MapError::invalid(WHAT, "flags", format!("cannot {op} {}: it is deleted", self.name)))
        } else {
            Ok(())
        }
    }
}

fn check_ref(volume_id: u64, epoch: u32, index: usize, r: &ChunkRef) -> Result<(), MapError> {
    if let Some((field, reason)) = r.fault() {
        return Err(MapError::invalid(WHAT, "chunk_refs", format!("ref {index}: {field}: {reason}")));
    }
    if let ChunkRef::Present { volume_id: v, epoch: e } = *r {
        if v == volume_id && e > epoch {
            return Err(MapError::invalid(
                WHAT,
                "chunk_refs",
                format!("ref {index}: names this volume's epoch {e}, later than the header's epoch {epoch}"),
            ));
        }
    }
    Ok(())
}

fn decode_name(field: &'static str, bytes: &[u8]) -> Result<VolumeName, MapError> {
    let s = std::str::from_utf8(bytes).map_err(|_| MapError::invalid(WHAT, field, "not UTF-8"))?;
    if s.len() > VOLUME_NAME_MAX {
        // Reported by VolumeName too; checked here so the message is about the header.
        return Err(MapError::invalid(WHAT, field, format!("{} bytes; at most {VOLUME_NAME_MAX}", s.len())));
    }
    VolumeName::new(s).map_err(|e| match e {
        MapError::InvalidName { reason, .. } => MapError::invalid(WHAT, field, reason.to_string()),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::CHUNK_HEADER_SIZE;
    use crate::entry::ENTRY_SIZE;
    use proptest::prelude::*;

    const GIB: u64 = 1 << 30;
    const TIB: u64 = 1 << 40;

    fn name(s: &str) -> VolumeName {
        VolumeName::new(s).unwrap()
    }

    fn vol(size: u64) -> MapHeader {
        MapHeader::new_volume(name("vol"), 0x42, size, DEFAULT_BLOCK_SHIFT, 1000).unwrap()
    }

    #[test]
    fn size_math_of_a_1_tib_volume() {
        let long = "v".repeat(VOLUME_NAME_MAX);
        let mut h = MapHeader::new_volume(name(&long), 1, TIB, DEFAULT_BLOCK_SHIFT, 0).unwrap();
        assert_eq!(h.block_size(), 4 << 20);
        assert_eq!(h.block_count(), 262_144);
        assert_eq!(h.nr_chunks(), 256);
        assert_eq!(h.chunk_refs().len(), 256);
        assert_eq!(h.chunk_entries(255), Some(1024));
        assert_eq!(h.chunk_entries(256), None);
        // A fresh volume: every ref absent, the header is all there is.
        assert!(h.chunk_refs().iter().all(|r| !r.is_present()));
        assert_eq!(h.encode().len(), 48 + 64 + 256 * 16 + 4);
        // Worst case: longest name and parent, every ref present: still ≤ 4.2 KiB.
        let snap = h.snapshot_of(name(&long.replace('v', "s")), 0).unwrap();
        let mut clone =
            MapHeader::clone_from_snapshot(&snap, name(&long.replace('v', "c")), 2, TIB, 0).unwrap();
        for i in 0..256 {
            clone.set_chunk_ref(i, clone.own_chunk_ref()).unwrap();
            h.set_chunk_ref(i, h.own_chunk_ref()).unwrap();
        }
        assert_eq!(clone.encoded_len(), 48 + 64 + 64 + 256 * 16 + 4);
        assert!(clone.encoded_len() as f64 <= 4.2 * 1024.0, "{}", clone.encoded_len());
        assert_eq!(clone.encode().len(), clone.encoded_len());
        // The complete map: the header and 256 full chunks of OBJECT entries.
        let mut chunk = Chunk::new_zero(1, 0, CHUNK_ENTRIES).unwrap();
        for slot in 0..CHUNK_ENTRIES {
            chunk.set_entry(slot, h.own_entry()).unwrap();
        }
        let chunk_len = chunk.encode().len();
        assert_eq!(chunk_len, CHUNK_HEADER_SIZE + ENTRY_SIZE * 1024 + CRC_SIZE);
        let total = h.encoded_len() + 256 * chunk_len;
        assert!(total <= (4 << 20) + 256 * (CHUNK_HEADER_SIZE + CRC_SIZE) + h.encoded_len(), "{total}");
        assert_eq!(256 * ENTRY_SIZE * 1024, 4 << 20, "the entries alone are 4 MiB");
    }

    #[test]
    fn size_math_of_small_and_odd_sizes() {
        let h = vol(GIB);
        assert_eq!((h.block_count(), h.nr_chunks()), (256, 1));
        assert_eq!(h.chunk_entries(0), Some(256));
        let h = vol(4 * GIB);
        assert_eq!((h.block_count(), h.nr_chunks()), (1024, 1));
        let h = vol(4 * GIB + 1);
        assert_eq!((h.block_count(), h.nr_chunks()), (1025, 2));
        assert_eq!(h.chunk_entries(1), Some(1));
        assert_eq!(h.chunk_of_block(1024), Some((1, 0)));
        assert_eq!(h.chunk_of_block(1023), Some((0, 1023)));
        assert_eq!(h.chunk_of_block(1025), None);
        assert_eq!(h.block_of_offset(4 * GIB), Some(1024));
        assert_eq!(h.block_of_offset(4 * GIB + 1), None);
        let h = vol(0);
        assert_eq!((h.block_count(), h.nr_chunks()), (0, 0));
        assert_eq!(h.chunk_of_block(0), None);
        assert_eq!(MapHeader::decode(&h.encode()), Ok(h));
        let h = vol(SIZE_BYTES_MAX);
        assert_eq!((h.block_count(), h.nr_chunks()), (1 << 24, 1 << 14));
        assert_eq!(h.chunk_of_block((1 << 24) - 1), Some(((1 << 14) - 1, 1023)));
        let h = MapHeader::new_volume(name("v"), 1, 5 << 12, MIN_BLOCK_SHIFT, 0).unwrap();
        assert_eq!((h.block_size(), h.block_count(), h.nr_chunks()), (4096, 5, 1));
        let h = MapHeader::new_volume(name("v"), 1, (64 << 20) * 2048, MAX_BLOCK_SHIFT, 0).unwrap();
        assert_eq!((h.block_count(), h.nr_chunks()), (2048, 2));
    }

    #[test]
    fn new_volume_refuses_bad_values() {
        let new = |id, size, shift| MapHeader::new_volume(name("v"), id, size, shift, 0);
        let field = |r: Result<MapHeader, MapError>| match r {
            Err(MapError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(new(1, GIB, 11)), "block_shift");
        assert_eq!(field(new(1, GIB, 27)), "block_shift");
        assert_eq!(field(new(1, SIZE_BYTES_MAX + 1, 22)), "size_bytes");
        assert_eq!(field(new(0, GIB, 22)), "volume_id");
        let h = vol(GIB);
        assert_eq!((h.epoch(), h.parent(), h.is_snapshot(), h.is_deleted()), (1, None, false, false));
        assert_eq!(h.object_name(), "map:vol");
        assert_eq!(h.lock_object_name(), "lock:vol");
    }

    #[test]
    fn from_parts_checks_refs_against_the_header() {
        let parts = vol(8 * GIB).into_parts();
        let with = |f: &dyn Fn(&mut MapHeaderParts)| {
            let mut p = parts.clone();
            f(&mut p);
            MapHeader::from_parts(p)
        };
        assert!(with(&|_| {}).is_ok());
        assert!(with(&|p| p.chunk_refs.pop().map_or((), drop)).is_err());
        assert!(with(&|p| p.chunk_refs.push(ChunkRef::Absent)).is_err());
        assert!(with(&|p| p.epoch = 0).is_err());
        assert!(with(&|p| p.chunk_refs[0] = ChunkRef::Present { volume_id: 0x42, epoch: 2 }).is_err());
        assert!(with(&|p| {
            p.epoch = 2;
            p.chunk_refs[0] = ChunkRef::Present { volume_id: 0x42, epoch: 2 };
        })
        .is_ok());
        assert!(with(&|p| p.chunk_refs[1] = ChunkRef::Present { volume_id: 7, epoch: 99 }).is_ok());
        assert!(with(&|p| p.chunk_refs[1] = ChunkRef::Present { volume_id: 0, epoch: 1 }).is_err());
        assert!(with(&|p| p.chunk_refs[1] = ChunkRef::Present { volume_id: 7, epoch: 0 }).is_err());
    }

    #[test]
    fn chunk_refs_and_the_own_rule() {
        let mut h = vol(8 * GIB);
        assert_eq!(h.chunk_object_name(0), None);
        assert!(!h.is_own_chunk(0), "an absent chunk is not own: writing it creates one");
        h.set_chunk_ref(0, h.own_chunk_ref()).unwrap();
        assert!(h.is_own_chunk(0));
        assert_eq!(h.chunk_object_name(0).as_deref(), Some("chunk:0000000000000042:00000001:00000000"));
        assert!(h.set_chunk_ref(2, h.own_chunk_ref()).is_err(), "past the end");
        assert!(h.set_chunk_ref(1, ChunkRef::Present { volume_id: 0x42, epoch: 2 }).is_err(), "future epoch");
        h.set_chunk_ref(1, ChunkRef::Present { volume_id: 7, epoch: 9 }).unwrap();
        assert!(!h.is_own_chunk(1), "a parent's chunk");
        assert_eq!(h.classify(&h.own_entry()), Class::Own);
        assert_eq!(h.classify(&Entry::object(7, 9)), Class::Shared);
        h.bump_epoch().unwrap();
        assert!(!h.is_own_chunk(0), "after a snapshot the chunk is shared");
        assert_eq!(h.classify(&Entry::object(0x42, 1)), Class::Shared);
        assert_eq!(MapHeader::decode(&h.encode()), Ok(h));
    }

    #[test]
    fn chunk_ref_encoding() {
        assert_eq!(ChunkRef::Absent.encode(), [0; 16]);
        let r = ChunkRef::Present { volume_id: 0x0102_0304_0506_0708, epoch: 0x0a0b_0c0d };
        assert_eq!(r.encode(), [8, 7, 6, 5, 4, 3, 2, 1, 0x0d, 0x0c, 0x0b, 0x0a, 1, 0, 0, 0]);
        assert_eq!(ChunkRef::decode(&r.encode()), Ok(r));
        assert_eq!(ChunkRef::decode(&[0; 16]), Ok(ChunkRef::Absent));
        let bad = |b: [u8; 16]| match ChunkRef::decode(&b) {
            Err(MapError::Invalid { what: "chunk ref", field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let mut b = [0u8; 16];
        b[3] = 1;
        assert_eq!(bad(b), "flags", "absent with bytes");
        let mut b = r.encode();
        b[12] = 3;
        assert_eq!(bad(b), "flags");
        b[12] = 1;
        b[15] = 0x80;
        assert_eq!(bad(b), "flags");
        assert_eq!(bad(ChunkRef::Present { volume_id: 0, epoch: 1 }.encode()), "volume_id");
        assert_eq!(bad(ChunkRef::Present { volume_id: 1, epoch: 0 }.encode()), "epoch");
        assert!(matches!(ChunkRef::decode(&[0; 15]), Err(MapError::Truncated { .. })));
        assert!(matches!(ChunkRef::decode(&[0; 17]), Err(MapError::TrailingBytes { .. })));
    }

    #[test]
    fn snapshot_and_clone() {
        let mut v = vol(6 * GIB); // 1536 blocks: chunk 1 holds 512
        v.set_chunk_ref(0, v.own_chunk_ref()).unwrap();
        v.set_chunk_ref(1, v.own_chunk_ref()).unwrap();

        let snap = v.snapshot_of(name("vol-snap1"), 2000).unwrap();
        assert!(snap.is_snapshot() && !snap.is_writable());
        assert_eq!((snap.volume_id(), snap.epoch(), snap.size_bytes()), (0x42, 1, 6 * GIB));
        assert_eq!(snap.chunk_refs(), v.chunk_refs());
        assert_eq!((snap.name().as_str(), snap.created_unix_ms()), ("vol-snap1", 2000));
        assert_eq!(v.bump_epoch(), Ok(2));
        assert!(
            !v.is_own_chunk(0) && !v.is_own_chunk(1),
            "the volume now shares its chunks with the snapshot"
        );
        assert_eq!(MapHeader::decode(&snap.encode()), Ok(snap.clone()));

        // Snapshots are read-only.
        let mut s = snap.clone();
        assert!(s.bump_epoch().is_err());
        assert!(s.resize(8 * GIB).is_err());
        assert!(s.snapshot_of(name("x"), 0).is_err());
        assert_eq!(s, snap);

        let c = MapHeader::clone_from_snapshot(&snap, name("clone"), 0x99, 10 * GIB, 3000).unwrap();
        assert_eq!(
            (c.volume_id(), c.epoch(), c.parent().map(VolumeName::as_str)),
            (0x99, 1, Some("vol-snap1"))
        );
        assert!(c.is_writable());
        assert_eq!(c.nr_chunks(), 3);
        assert_eq!(&c.chunk_refs()[..2], snap.chunk_refs());
        assert_eq!(c.chunk_ref(2), Some(ChunkRef::Absent));
        assert!(!c.is_own_chunk(0) && !c.is_own_chunk(1));
        assert_eq!(c.classify(&Entry::object(0x42, 1)), Class::Shared);
        assert_eq!(MapHeader::decode(&c.encode()), Ok(c.clone()));
        // A snapshot of a clone keeps the parent.
        assert_eq!(c.snapshot_of(name("clone-s"), 0).unwrap().parent(), Some(&name("vol-snap1")));

        let clone = |s: &MapHeader, id, size| MapHeader::clone_from_snapshot(s, name("c2"), id, size, 0);
        assert!(clone(&v, 0x100, 6 * GIB).is_err(), "not a snapshot");
        assert!(clone(&snap, 0x100, 6 * GIB - 1).is_err(), "smaller than the snapshot");
        assert!(clone(&snap, 0x42, 6 * GIB).is_err(), "same id");
        assert!(clone(&snap, 0, 6 * GIB).is_err(), "id 0");
        assert!(clone(&snap, 0x100, SIZE_BYTES_MAX + 1).is_err());
        assert!(clone(&snap, 0x100, 6 * GIB).is_ok());
        let mut dead = snap.clone();
        dead.mark_deleted();
        assert!(clone(&dead, 0x100, 6 * GIB).is_err(), "deleted snapshot");
    }

    #[test]
    fn epoch_exhaustion_is_an_error() {
        let mut p = vol(GIB).into_parts();
        p.epoch = u32::MAX;
        let mut h = MapHeader::from_parts(p).unwrap();
        assert!(h.bump_epoch().is_err());
        assert_eq!(h.epoch(), u32::MAX);
    }

    #[test]
    fn tombstone_and_rename() {
        let mut h = vol(GIB);
        h.set_chunk_ref(0, h.own_chunk_ref()).unwrap();
        h.bump_epoch().unwrap();
        h.set_name(name("renamed"));
        assert_eq!(h.object_name(), "map:renamed");
        h.mark_deleted();
        assert!(h.is_deleted() && !h.is_writable());
        assert_eq!((h.volume_id(), h.epoch(), h.flags()), (0x42, 2, FLAG_DELETED));
        assert!(h.resize(2 * GIB).is_err());
        assert!(h.bump_epoch().is_err());
        assert!(h.snapshot_of(name("s"), 0).is_err());
        assert_eq!(MapHeader::decode(&h.encode()), Ok(h));
    }

    #[test]
    fn resize_grows_and_shrinks() {
        let mut h = vol(6 * GIB); // chunks: 1024 + 512 blocks
        h.set_chunk_ref(1, h.own_chunk_ref()).unwrap();
        assert_eq!(h.resize(10 * GIB), Ok(None));
        assert_eq!(h.nr_chunks(), 3);
        assert_eq!(h.chunk_ref(2), Some(ChunkRef::Absent));
        assert_eq!(h.chunk_ref(1), Some(h.own_chunk_ref()));
        // Shrinking into present chunk 1 cuts it: the caller must truncate it.
        assert_eq!(h.resize(5 * GIB), Ok(Some(1)));
        assert_eq!((h.nr_chunks(), h.chunk_entries(1)), (2, Some(256)));
        // Growing again does not; shrinking within the same block count does not either.
        assert_eq!(h.resize(5 * GIB + 4096), Ok(None));
        assert_eq!(h.resize(5 * GIB + 1), Ok(None));
        // Shrinking to a chunk boundary drops the ref, nothing to truncate.
        assert_eq!(h.resize(4 * GIB), Ok(None));
        assert_eq!(h.nr_chunks(), 1);
        // Shrinking into an absent chunk: nothing to truncate.
        assert_eq!(h.resize(GIB), Ok(None));
        assert_eq!(h.resize(0), Ok(None));
        assert_eq!(h.nr_chunks(), 0);
        assert!(h.resize(SIZE_BYTES_MAX + 1).is_err());
        assert_eq!(h.size_bytes(), 0, "a refused resize changes nothing");
        assert_eq!(MapHeader::decode(&h.encode()), Ok(h));
    }

    #[test]
    fn check_chunk_catches_misdirected_and_oversized_chunks() {
        let mut h = vol(6 * GIB);
        let own = Chunk::new_zero(0x42, 1, 512).unwrap();
        assert!(h.check_chunk(1, &own).is_err(), "absent ref");
        h.set_chunk_ref(1, h.own_chunk_ref()).unwrap();
        assert_eq!(h.check_chunk(1, &own), Ok(()));
        assert_eq!(
            h.check_chunk(1, &Chunk::new_zero(0x42, 1, 100).unwrap()),
            Ok(()),
            "a shorter chunk is fine"
        );
        assert!(h.check_chunk(1, &Chunk::new_zero(0x42, 1, 513).unwrap()).is_err(), "too many entries");
        assert!(h.check_chunk(1, &Chunk::new_zero(0x43, 1, 512).unwrap()).is_err(), "another writer");
        assert!(h.check_chunk(1, &Chunk::new_zero(0x42, 0, 512).unwrap()).is_err(), "another index");
        assert!(h.check_chunk(2, &own).is_err(), "past the end");
    }

    /// Re-encodes with a valid checksum after `edit`, to reach the checks behind it.
    fn with_crc(mut bytes: Vec<u8>, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        bytes.truncate(bytes.len() - 4);
        edit(&mut bytes);
        crate::codec::push_crc(&mut bytes);
        bytes
    }

    fn invalid_field(bytes: &[u8]) -> &'static str {
        match MapHeader::decode(bytes) {
            Err(MapError::Invalid { what: "map header", field, .. }) => field,
            other => panic!("decoded to {other:?}"),
        }
    }

    fn sample() -> MapHeader {
        let mut h = vol(6 * GIB);
        h.set_chunk_ref(1, h.own_chunk_ref()).unwrap();
        let snap = h.snapshot_of(name("snap"), 5).unwrap();
        MapHeader::clone_from_snapshot(&snap, name("clone"), 0x77, 6 * GIB, 9).unwrap()
    }

    #[test]
    fn decode_checks_every_field() {
        let good = sample().encode();
        assert_eq!(MapHeader::decode(&good), Ok(sample()));
        // Offsets: name "clone" at 48..53, parent "snap" at 53..57, refs at 57.., ref 1 at 73.
        let set = |off: usize, v: &[u8]| {
            let v = v.to_vec();
            with_crc(good.clone(), move |b| b[off..off + v.len()].copy_from_slice(&v))
        };
        let mut b = good.clone();
        b[7] = 1;
        assert_eq!(MapHeader::decode(&b), Err(MapError::BadMagic { what: "map header" }));
        assert!(matches!(MapHeader::decode(&set(8, &[0, 1])), Err(MapError::BadVersion { found: 256, .. })));
        assert_eq!(invalid_field(&set(10, &[4, 0])), "flags");
        assert_eq!(invalid_field(&set(10, &[0, 0x80])), "flags");
        assert_eq!(invalid_field(&set(12, &[11])), "block_shift");
        assert_eq!(invalid_field(&set(12, &[27])), "block_shift");
        assert_eq!(invalid_field(&set(12, &[21])), "nr_chunks", "the same refs, twice the blocks");
        assert_eq!(invalid_field(&set(15, &[1])), "reserved");
        assert_eq!(invalid_field(&set(16, &[0; 8])), "volume_id");
        assert_eq!(invalid_field(&set(24, &(SIZE_BYTES_MAX + 1).to_le_bytes())), "size_bytes");
        assert_eq!(invalid_field(&set(24, &(10 * GIB).to_le_bytes())), "nr_chunks");
        assert_eq!(invalid_field(&set(24, &(4 * GIB).to_le_bytes())), "nr_chunks");
        assert_eq!(invalid_field(&set(32, &[0; 4])), "epoch");
        assert_eq!(invalid_field(&set(48, b"c/one")), "name");
        assert_eq!(invalid_field(&set(48, b"-lone")), "name");
        assert_eq!(invalid_field(&set(48, &[b'c', 0xc3, 0xa9, b'n', b'e'])), "name", "é");
        assert_eq!(invalid_field(&set(48, &[b'c', 0xff, b'o', b'n', b'e'])), "name", "not UTF-8");
        assert_eq!(invalid_field(&set(53, b".nap")), "parent");
        assert_eq!(invalid_field(&set(73 + 12, &[3])), "chunk_refs");
        assert_eq!(invalid_field(&set(73, &[0; 8])), "chunk_refs");
        // Length fields, fixed up consistently: an empty name, a name too long.
        let b = with_crc(good.clone(), |b| {
            b[13] = 0;
            b.drain(48..53);
        });
        assert_eq!(invalid_field(&b), "name");
        let b = with_crc(good.clone(), |b| {
            b[13] = 70;
            b.splice(48..53, std::iter::repeat_n(b'a', 70));
        });
        assert_eq!(invalid_field(&b), "name");
    }

    #[test]
    fn decode_refuses_every_truncation_and_trailing_bytes() {
        let good = sample().encode();
        for len in 0..good.len() {
            assert!(matches!(MapHeader::decode(&good[..len]), Err(MapError::Truncated { .. })), "len {len}");
        }
        for extra in [&[0u8][..], &[0; 4], &[0xff; 16]] {
            let mut long = good.clone();
            long.extend_from_slice(extra);
            assert!(matches!(MapHeader::decode(&long), Err(MapError::TrailingBytes { .. })));
        }
        // A huge nr_chunks is refused as truncation, without allocating for it.
        let b = with_crc(good, |b| b[36..40].copy_from_slice(&u32::MAX.to_le_bytes()));
        assert!(matches!(MapHeader::decode(&b), Err(MapError::Truncated { needed, .. }) if needed > 1 << 36));
    }

    #[test]
    fn error_messages_are_clear() {
        let good = sample().encode();
        let msg = MapHeader::decode(&good[..good.len() - 1]).unwrap_err().to_string();
        assert_eq!(
            msg,
            format!("map header: truncated: {} bytes, the encoding needs {}", good.len() - 1, good.len())
        );
        let mut b = good.clone();
        b.push(0);
        let msg = MapHeader::decode(&b).unwrap_err().to_string();
        assert_eq!(
            msg,
            format!(
                "map header: {} bytes, but the encoding is {} bytes long (trailing garbage)",
                b.len(),
                good.len()
            )
        );
        let msg =
            MapHeader::decode(b"not a map header at all, just some random bytes!").unwrap_err().to_string();
        assert_eq!(msg, "map header: bad magic (these bytes are not an Archipelago map header)");
        let b = with_crc(good.clone(), |b| b[8] = 2);
        let msg = MapHeader::decode(&b).unwrap_err().to_string();
        assert_eq!(msg, "map header: format version 2; this build reads version 1");
        let mut b = good.clone();
        b[30] ^= 0x10;
        let msg = MapHeader::decode(&b).unwrap_err().to_string();
        assert!(msg.starts_with("map header: checksum mismatch: stored crc32c 0x"), "{msg}");
        assert!(msg.ends_with("(torn or corrupt)"), "{msg}");
        let msg = MapHeader::decode(&with_crc(good, |b| b[48] = b'/')).unwrap_err().to_string();
        assert_eq!(
            msg,
            "map header: invalid name: character '/' at position 0 is not allowed (only A-Z a-z 0-9 . _ -)"
        );
    }

    fn arb_name() -> impl Strategy<Value = VolumeName> {
        "[A-Za-z0-9_][A-Za-z0-9._-]{0,63}".prop_map(|s| VolumeName::new(s).unwrap())
    }

    prop_compose! {
        fn arb_header()(
            name in arb_name(),
            parent in proptest::option::of(arb_name()),
            snapshot in any::<bool>(),
            deleted in any::<bool>(),
            block_shift in MIN_BLOCK_SHIFT..=MAX_BLOCK_SHIFT,
            volume_id in 1..=u64::MAX,
            epoch in 1..=u32::MAX,
            created_unix_ms in any::<u64>(),
            // Up to 5 chunks' worth of blocks (the last one maybe partial), or any size at
            // 64 MiB blocks (at most 1024 chunks).
            blocks in 0u64..=5 * 1024,
            tail in any::<u64>(),
            big in proptest::option::weighted(0.2, 0..=SIZE_BYTES_MAX),
            seeds in proptest::collection::vec((0u8..3, 1..=u64::MAX, any::<u32>()), 1024),
        ) -> MapHeader {
            let (block_shift, size) = match big {
                Some(size) => (MAX_BLOCK_SHIFT, size),
                None => (block_shift, (blocks << block_shift).saturating_sub(tail % (1 << block_shift))),
            };
            let n = chunks_for(blocks_for(size, block_shift)) as usize;
            let chunk_refs = seeds[..n]
                .iter()
                .map(|&(kind, other_id, e)| match kind {
                    0 => ChunkRef::Absent,
                    1 => ChunkRef::Present { volume_id, epoch: e % epoch + 1 },
                    _ => ChunkRef::Present { volume_id: other_id, epoch: e.max(1) },
                })
                .map(|r| match r {
                    ChunkRef::Present { volume_id: v, epoch: e } if v == volume_id && e > epoch => ChunkRef::Absent,
                    r => r,
                })
                .collect();
            MapHeader::from_parts(MapHeaderParts {
                name, parent, snapshot, deleted, block_shift, volume_id, size_bytes: size, epoch,
                created_unix_ms, chunk_refs,
            })
            .unwrap()
        }
    }

    proptest! {
        #[test]
        fn headers_round_trip(h in arb_header()) {
            let bytes = h.encode();
            prop_assert_eq!(bytes.len(), h.encoded_len());
            let back = MapHeader::decode(&bytes).unwrap();
            prop_assert_eq!(&back, &h);
            prop_assert_eq!(MapHeader::from_parts(back.into_parts()), Ok(h));
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = MapHeader::decode(&bytes);
        }

        /// Garbage behind a valid magic and version, checksummed: never a panic, and what
        /// decodes re-encodes to the same bytes (the encoding is canonical).
        #[test]
        fn decode_of_checksummed_garbage_is_canonical(body in proptest::collection::vec(any::<u8>(), 40..200)) {
            let mut b = MAP_MAGIC.to_vec();
            b.extend_from_slice(&MAP_VERSION.to_le_bytes());
            b.extend_from_slice(&body);
            crate::codec::push_crc(&mut b);
            if let Ok(h) = MapHeader::decode(&b) {
                prop_assert_eq!(h.encode(), b);
            }
        }
    }
}
