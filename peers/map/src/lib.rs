//! Volume maps of Archipelago: names, map data structures and their byte encodings.
//!
//! A volume is a linear array of fixed-size blocks (4 MiB by default); each block is one
//! object in an object store, and the volume's **map** says which object holds which
//! block. Thin provisioning, copy-on-write snapshots and instant clones all happen in the
//! map. This crate does no I/O: it defines the names, the in-memory types
//! ([`MapHeader`], [`ChunkRef`], [`Chunk`], [`Entry`]) and their encodings, and validates
//! everything it decodes. It implements the design below exactly, as decided; changing any
//! byte of it means a new format version.
//!
//! # Names
//!
//! A [`VolumeName`] is 1–64 characters of `[A-Za-z0-9._-]`, not starting with `.` or `-`.
//! Volumes and snapshots share the namespace. Object names use `[A-Za-z0-9._:-]` and are at
//! most [`OBJECT_NAME_MAX`] (200) bytes; hex is lowercase and of the exact width shown:
//!
//! | object | name | keyed by |
//! |---|---|---|
//! | map header | `map:<name>` | the name: lookup is one read; a rename writes the new header, then removes the old |
//! | map chunk | `chunk:<volume id, 16 hex>:<epoch, 8 hex>:<chunk index, 8 hex>` | the immutable volume id |
//! | data object | `data:<volume id, 16 hex>:<epoch, 8 hex>:<block index, 16 hex>` | the immutable volume id |
//! | content object | `sha256:<64 hex>` | the block's SHA-256 |
//! | lock | `lock:<name>` | the name |
//!
//! [`ObjectKind::parse`] recognises exactly these spellings (for garbage collection).
//!
//! **Volume id**: a `u64`, never reused, allocated by the mapper; 0 is reserved (never a
//! volume). **Epoch**: a `u32`, 1 for a new volume, incremented by every snapshot of it.
//!
//! # Formats
//!
//! All integers are little-endian; fields are packed (no padding). Checksums are CRC-32C
//! (Castagnoli) of every byte before them. Decoding is strict: every field is checked, a
//! value the encoder would not write is an error, and a corrupt, torn or misdirected object
//! is reported ([`MapError`]), never returned.
//!
//! ## Map entry (16 bytes)
//!
//! | offset | size | field | |
//! |---|---|---|---|
//! | 0 | 1 | `kind` | 0 ZERO, 1 OBJECT, 2 CONTENT; others invalid |
//! | 1 | 1 | `flags` | none defined in version 1: must be 0 |
//! | 2 | 2 | `reserved` | must be 0 |
//! | 4 | 4 | `epoch` | OBJECT: ≥ 1; CONTENT: 0 |
//! | 8 | 8 | `volume_id` | OBJECT: ≠ 0; CONTENT: the index into the chunk's digest table |
//!
//! * ZERO: all 16 bytes are zero; the block reads as zeros and is not stored.
//! * OBJECT: the block is `data:<volume_id>:<epoch>:<block index of this entry>`.
//! * CONTENT: the block is `sha256:<digest>`, the digest being slot `volume_id` of the
//!   chunk's digest table (below the chunk's digest count).
//!
//! ## Map chunk (32 + 16 × entries + 32 × digests + 4 bytes)
//!
//! | offset | size | field | |
//! |---|---|---|---|
//! | 0 | 8 | `magic` | `b"ARCHCHNK"` |
//! | 8 | 2 | `version` | 1 |
//! | 10 | 2 | `reserved` | must be 0 |
//! | 12 | 4 | `entries` | 1..=1024 (only a volume's last chunk may hold fewer than 1024) |
//! | 16 | 8 | `volume_id` | the volume that wrote the chunk; ≠ 0 |
//! | 24 | 4 | `chunk_index` | the chunk covers blocks `chunk_index × 1024 ..` |
//! | 28 | 4 | `digests` | number of digests, ≤ `entries` |
//! | 32 | 16 × `entries` | entries | map entries, slot 0 first |
//! | … | 32 × `digests` | digest table | SHA-256 digests used by CONTENT entries |
//! | … | 4 | `crc32c` | over everything before it |
//!
//! A full chunk of OBJECT entries is 16 420 bytes and maps 4 GiB (at 4 MiB blocks), so a
//! copy-on-write rewrites ≈ 16 KiB of map. The digest table holds each digest once and
//! only digests some entry uses (the setters of [`Chunk`] maintain this; decoding checks
//! it), so it is exactly the set of content objects the chunk keeps alive.
//!
//! ## Chunk ref (16 bytes)
//!
//! | offset | size | field | |
//! |---|---|---|---|
//! | 0 | 8 | `volume_id` | the volume that wrote the chunk |
//! | 8 | 4 | `epoch` | its epoch when it wrote the chunk |
//! | 12 | 4 | `flags` | bit 0 PRESENT; other bits 0 |
//!
//! A present ref (flags = 1, id ≠ 0, epoch ≥ 1) names `chunk:<volume_id>:<epoch>:<index>`.
//! An absent ref is 16 zero bytes and means "every entry of this chunk is ZERO", so a fresh
//! 1 TiB volume stores only its header.
//!
//! ## Map header (48 + name + parent + 16 × nr_chunks + 4 bytes)
//!
//! | offset | size | field | |
//! |---|---|---|---|
//! | 0 | 8 | `magic` | `b"ARCHMAP\0"` |
//! | 8 | 2 | `version` | 1 |
//! | 10 | 2 | `flags` | bit 0 SNAPSHOT (read-only), bit 1 DELETED (tombstone); other bits 0 |
//! | 12 | 1 | `block_shift` | 12..=26 (4 KiB to 64 MiB); default 22 (4 MiB) |
//! | 13 | 1 | `name_len` | 1..=64 |
//! | 14 | 1 | `parent_len` | 0..=64 |
//! | 15 | 1 | `reserved` | must be 0 |
//! | 16 | 8 | `volume_id` | ≠ 0 |
//! | 24 | 8 | `size_bytes` | ≤ 64 TiB ([`SIZE_BYTES_MAX`]); need not be a multiple of the block size |
//! | 32 | 4 | `epoch` | ≥ 1 |
//! | 36 | 4 | `nr_chunks` | = ceil(ceil(size_bytes / block size) / 1024) |
//! | 40 | 8 | `created_unix_ms` | creation time (of the volume, snapshot or clone) |
//! | 48 | `name_len` | name | a valid [`VolumeName`] |
//! | … | `parent_len` | parent | empty, or the valid name of the snapshot this volume was cloned from |
//! | … | 16 × `nr_chunks` | chunk refs | ref 0 first |
//! | … | 4 | `crc32c` | over everything before it |
//!
//! A 1 TiB volume at 4 MiB blocks has 262 144 blocks, 256 chunk refs and a header of at
//! most 4 276 bytes; its complete map (header and 256 full chunks) is 4 MiB + 256 × 36
//! bytes of chunk framing + the header. A 1 GiB volume has one chunk ref.
//!
//! Example: the header of volume `vol0` (id `0x0123456789abcdef`, 9 GiB at 4 MiB blocks, so
//! 2304 blocks and 3 chunks, epoch 3, refs: own chunk of epoch 2, absent, own chunk of
//! epoch 3). It is the golden vector `tests/golden/header_v1_volume.bin`:
//!
//! ```text
//! 00: 41 52 43 48 4d 41 50 00  magic "ARCHMAP\0"
//! 08: 01 00                    version 1
//! 0a: 00 00                    flags: none (a writable volume)
//! 0c: 16                       block_shift 22 (4 MiB)
//! 0d: 04                       name_len 4
//! 0e: 00                       parent_len 0
//! 0f: 00                       reserved
//! 10: ef cd ab 89 67 45 23 01  volume_id 0x0123456789abcdef
//! 18: 00 00 00 40 02 00 00 00  size_bytes 0x2_4000_0000 (9 GiB)
//! 20: 03 00 00 00              epoch 3
//! 24: 03 00 00 00              nr_chunks 3
//! 28: 00 68 e5 cf 8b 01 00 00  created_unix_ms 1_700_000_000_000
//! 30: 76 6f 6c 30              name "vol0"
//! 34: ef cd ab 89 67 45 23 01  ref 0: volume_id 0x0123456789abcdef
//! 3c: 02 00 00 00 01 00 00 00          epoch 2, flags PRESENT
//! 44: 00 00 00 00 00 00 00 00  ref 1: absent (16 zero bytes)
//! 4c: 00 00 00 00 00 00 00 00
//! 54: ef cd ab 89 67 45 23 01  ref 2: volume_id 0x0123456789abcdef
//! 5c: 03 00 00 00 01 00 00 00          epoch 3, flags PRESENT
//! 64: 1d ac e7 bd              crc32c of bytes 00..64
//! ```
//!
//! # The own/shared rule
//!
//! An OBJECT entry is **own** for volume V — writable in place — iff
//! `entry.volume_id == V.id && entry.epoch == V.epoch`; otherwise it is **shared**:
//! read-only for V, and a write copies the block into V's own object
//! `data:<V.id>:<V.epoch>:<block>` first and points the entry at it ([`Entry::classify`]).
//! ZERO and CONTENT entries are never written in place either.
//!
//! Chunks follow the same rule through their refs: chunk i is own (rewritable in place)
//! iff `ref.volume_id == header.volume_id && ref.epoch == header.epoch`
//! ([`ChunkRef::is_own`]); otherwise a modification writes the modified chunk as
//! `chunk:<V.id>:<V.epoch>:<i>` (writer = V) and updates the ref — copy-on-write of map
//! chunks, one chunk at a time.
//!
//! This makes a snapshot O(1):
//! * **Snapshot** of V as S: store [`MapHeader::snapshot_of`] (a copy of V's header with
//!   SNAPSHOT set, named S, sharing every chunk ref, same id and epoch) at `map:S`, then
//!   [`MapHeader::bump_epoch`] on V and store it. Every entry and chunk V had is now
//!   shared; nothing else is rewritten.
//! * **Clone** C of snapshot S: [`MapHeader::clone_from_snapshot`] — a new volume id,
//!   epoch 1, S's chunk refs (extended with absent refs if C is larger), parent = S.
//!   Everything C inherits carries another volume's id, so it is shared for C.
//! * **Delete**: the header becomes a DELETED tombstone ([`MapHeader::mark_deleted`]) that
//!   keeps the volume id and epoch.
//! * **Rename**: store the header under the new name, then remove the old `map:` object.
//!
//! The whole cycle, as the mapper runs it (the stores are left out):
//!
//! ```
//! use archip_map::{Chunk, Class, MapError, MapHeader, VolumeName, DEFAULT_BLOCK_SHIFT};
//!
//! let now = 1_700_000_000_000;
//! let mut vol = MapHeader::new_volume(VolumeName::new("vol1")?, 1, 1 << 30, DEFAULT_BLOCK_SHIFT, now)?;
//! // First write to block 5: chunk 0 is absent, so it is created own, and so is the block.
//! let (index, slot) = vol.chunk_of_block(5).unwrap();
//! assert!(!vol.chunk_ref(index).unwrap().is_present());
//! let mut chunk = Chunk::new_zero(vol.volume_id(), index, vol.chunk_entries(index).unwrap())?;
//! assert_eq!(vol.classify(&chunk.entry(slot).unwrap()), Class::Zero);
//! chunk.set_entry(slot, vol.own_entry())?;
//! vol.set_chunk_ref(index, vol.own_chunk_ref())?;
//! assert_eq!(chunk.block_object_name(slot).unwrap(), "data:0000000000000001:00000001:0000000000000005");
//! assert_eq!(vol.chunk_object_name(index).unwrap(), "chunk:0000000000000001:00000001:00000000");
//!
//! // Snapshot: store the snapshot's header, then bump the volume's epoch. O(1).
//! let snap = vol.snapshot_of(VolumeName::new("vol1-snap")?, now)?;
//! vol.bump_epoch()?;
//! assert_eq!(vol.classify(&chunk.entry(slot).unwrap()), Class::Shared);
//! assert!(!vol.is_own_chunk(index));
//!
//! // The next write to block 5 copies the chunk and the block into own ones.
//! let mut copy = chunk.clone();
//! copy.set_volume_id(vol.volume_id())?; // the writer: a clone's own id
//! copy.set_entry(slot, vol.own_entry())?;
//! vol.set_chunk_ref(index, vol.own_chunk_ref())?;
//! assert_eq!(vol.chunk_object_name(index).unwrap(), "chunk:0000000000000001:00000002:00000000");
//! assert_eq!(copy.block_object_name(slot).unwrap(), "data:0000000000000001:00000002:0000000000000005");
//!
//! // A clone of the snapshot, twice as large, shares the snapshot's chunk and block.
//! let clone = MapHeader::clone_from_snapshot(&snap, VolumeName::new("vol2")?, 2, 2 << 30, now)?;
//! assert_eq!(clone.chunk_ref(0), snap.chunk_ref(0));
//! assert_eq!(clone.parent().unwrap().as_str(), "vol1-snap");
//! assert_eq!(clone.classify(&chunk.entry(slot).unwrap()), Class::Shared);
//! # Ok::<(), MapError>(())
//! ```
//!
//! # Invariants
//!
//! Every constructor and setter keeps these, and decoding checks them all:
//! * Volume ids and epochs named anywhere (header, present ref, OBJECT entry, chunk writer)
//!   are nonzero.
//! * A header has exactly `nr_chunks = ceil(ceil(size / block) / 1024)` chunk refs; a
//!   present ref naming the header's own volume id names an epoch ≤ the header's (a volume
//!   only writes at its current epoch, and epochs only grow).
//! * A chunk holds 1..=1024 valid entries; every CONTENT index is below its digest count;
//!   its digest table has no duplicate and no unused digest.
//! * Reading: block b is entry `b % 1024` of chunk `b / 1024`; an absent ref, or a slot at or
//!   past the chunk's `entries` (a chunk written while the volume or a snapshot it shares
//!   with was smaller), reads as ZERO. A chunk read for ref i must have been written by the
//!   ref's volume as chunk i, with no more entries than the header gives chunk i
//!   ([`MapHeader::check_chunk`]); a shrink that cuts a present chunk short reports it
//!   ([`MapHeader::resize`]) so the caller stores it truncated.
//! * Snapshots and tombstones are not resized, snapshotted or epoch-bumped.

mod chunk;
mod codec;
mod digest;
mod entry;
mod error;
mod header;
mod name;

pub use chunk::{Chunk, CHUNK_ENTRIES, CHUNK_HEADER_SIZE, CHUNK_MAGIC, CHUNK_VERSION, CRC_SIZE};
pub use digest::{Digest, DIGEST_SIZE};
pub use entry::{Class, Entry, ENTRY_SIZE, KIND_CONTENT, KIND_OBJECT, KIND_ZERO};
pub use error::{MapError, NameError};
pub use header::{
    ChunkRef, MapHeader, MapHeaderParts, CHUNK_REF_PRESENT, CHUNK_REF_SIZE, DEFAULT_BLOCK_SHIFT,
    FLAG_DELETED, FLAG_SNAPSHOT, HEADER_FLAGS_KNOWN, MAP_HEADER_FIXED_SIZE, MAP_MAGIC, MAP_VERSION,
    MAX_BLOCK_SHIFT, MIN_BLOCK_SHIFT, SIZE_BYTES_MAX,
};
pub use name::{
    check_volume_name, chunk_object_name, content_object_name, data_object_name, lock_object_name,
    map_object_name, ObjectKind, VolumeName, CHUNK_PREFIX, CONTENT_PREFIX, DATA_PREFIX, LOCK_PREFIX,
    MAP_PREFIX, OBJECT_NAME_MAX, VOLUME_NAME_MAX,
};
