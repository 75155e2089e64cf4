//! Golden vectors: the version-1 encodings, checked in as byte files under `tests/golden/`.
//!
//! Each test builds fully specified values written out literally below, and asserts both
//! `encode(values) == file bytes` and `decode(file bytes) == values`. A missing or different
//! file FAILS the test: the files are the format, and a change to them is a format change
//! (a new version), never a test update.
//!
//! To (re)generate the files, deliberately, run
//!
//! ```text
//! ARCHIP_BLESS=1 cargo test -p archip-map --test golden
//! ```
//!
//! which writes each file from the encoder and then checks it as usual. Review the diff of
//! `tests/golden/` before committing it.
//!
//! Every golden header and chunk is also damaged in every way a storage fault or a torn
//! write produces (each byte flipped, each bit flipped, each truncation, trailing bytes),
//! and each damaged copy must be refused.

use std::path::PathBuf;
use std::sync::Mutex;

use archip_map::{Chunk, ChunkRef, Digest, Entry, MapError, MapHeader, MapHeaderParts, VolumeName};

fn golden_path(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(file)
}

/// Checks `encoded` against the checked-in file (writing it first under `ARCHIP_BLESS=1`)
/// and returns the file's bytes.
fn golden(file: &str, encoded: &[u8]) -> Vec<u8> {
    // Tests run in parallel and several check the same file: no one reads a half-written one.
    static FILES: Mutex<()> = Mutex::new(());
    let _guard = FILES.lock().unwrap_or_else(|e| e.into_inner());
    let path = golden_path(file);
    if std::env::var_os("ARCHIP_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, encoded).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
    let stored = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "golden vector {} is missing ({e}); it is part of the format. \
             Regenerate deliberately with ARCHIP_BLESS=1 (see tests/golden.rs)",
            path.display()
        )
    });
    assert!(
        stored == encoded,
        "{file}: the encoder no longer produces the golden bytes (a format change!)\n stored:  {}\n encoded: {}",
        hex(&stored),
        hex(encoded)
    );
    stored
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" ")
}

fn name(s: &str) -> VolumeName {
    VolumeName::new(s).unwrap()
}

fn digest(hex: &str) -> Digest {
    Digest::from_hex(hex).unwrap()
}

/// `header_v1_volume.bin`: a writable volume with an own chunk of an earlier epoch, an
/// absent chunk and an own chunk of the current epoch.
fn header_volume() -> MapHeader {
    MapHeader::from_parts(MapHeaderParts {
        name: name("vol0"),
        parent: None,
        snapshot: false,
        deleted: false,
        block_shift: 22,
        volume_id: 0x0123_4567_89ab_cdef,
        size_bytes: 9 << 30, // 2304 blocks of 4 MiB: 3 chunks
        epoch: 3,
        created_unix_ms: 1_700_000_000_000,
        chunk_refs: vec![
            ChunkRef::Present { volume_id: 0x0123_4567_89ab_cdef, epoch: 2 },
            ChunkRef::Absent,
            ChunkRef::Present { volume_id: 0x0123_4567_89ab_cdef, epoch: 3 },
        ],
    })
    .unwrap()
}

/// The bytes of `header_v1_volume.bin`, field by field (also annotated in the crate docs).
const HEADER_V1_VOLUME_HEX: &[&str] = &[
    "41 52 43 48 4d 41 50 00", // 0x00 magic "ARCHMAP\0"
    "01 00",                   // 0x08 version 1
    "00 00",                   // 0x0a flags: none
    "16",                      // 0x0c block_shift 22 (4 MiB)
    "04",                      // 0x0d name_len 4
    "00",                      // 0x0e parent_len 0
    "00",                      // 0x0f reserved
    "ef cd ab 89 67 45 23 01", // 0x10 volume_id 0x0123456789abcdef
    "00 00 00 40 02 00 00 00", // 0x18 size_bytes 9 GiB
    "03 00 00 00",             // 0x20 epoch 3
    "03 00 00 00",             // 0x24 nr_chunks 3
    "00 68 e5 cf 8b 01 00 00", // 0x28 created_unix_ms 1_700_000_000_000
    "76 6f 6c 30",             // 0x30 name "vol0"
    "ef cd ab 89 67 45 23 01", // 0x34 ref 0: volume_id
    "02 00 00 00 01 00 00 00", // 0x3c        epoch 2, flags PRESENT
    "00 00 00 00 00 00 00 00", // 0x44 ref 1: absent
    "00 00 00 00 00 00 00 00", // 0x4c
    "ef cd ab 89 67 45 23 01", // 0x54 ref 2: volume_id
    "03 00 00 00 01 00 00 00", // 0x5c        epoch 3, flags PRESENT
    "1d ac e7 bd",             // 0x64 crc32c (of bytes 0x00..0x64)
];

/// `header_v1_snapshot_clone.bin`: a snapshot of a clone (so it has a parent), 1 MiB blocks,
/// a partial last chunk, one chunk inherited from the clone's ancestor.
fn header_snapshot_clone() -> MapHeader {
    MapHeader::from_parts(MapHeaderParts {
        name: name("clone1.snap-1"),
        parent: Some(name("base_snap")),
        snapshot: true,
        deleted: false,
        block_shift: 20,
        volume_id: 0x42,
        size_bytes: (1 << 30) + 1, // 1025 blocks of 1 MiB: 2 chunks, the second of 1 entry
        epoch: 2,
        created_unix_ms: 1_700_000_123_456,
        chunk_refs: vec![
            ChunkRef::Present { volume_id: 0x7, epoch: 5 },
            ChunkRef::Present { volume_id: 0x42, epoch: 2 },
        ],
    })
    .unwrap()
}

/// `header_v1_tombstone.bin`: a deleted volume (keeps its id and epoch), 64 MiB blocks.
fn header_tombstone() -> MapHeader {
    MapHeader::from_parts(MapHeaderParts {
        name: name("old_vol"),
        parent: None,
        snapshot: false,
        deleted: true,
        block_shift: 26,
        volume_id: 0xfedc_ba98_7654_3210,
        size_bytes: 3 << 26,
        epoch: 9,
        created_unix_ms: 0,
        chunk_refs: vec![ChunkRef::Present { volume_id: 0xfedc_ba98_7654_3210, epoch: 9 }],
    })
    .unwrap()
}

const DIGEST_A: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
const DIGEST_B: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// `chunk_v1_mixed.bin`: chunk 3 of volume 0x42 (a partial last chunk of 8 entries) with
/// ZERO, own and inherited OBJECT, and CONTENT entries sharing a two-digest table.
fn chunk_mixed() -> Chunk {
    Chunk::from_parts(
        0x42,
        3,
        vec![
            Entry::Zero,
            Entry::Object { volume_id: 0x42, epoch: 2 },
            Entry::Content { digest_index: 0 },
            Entry::Object { volume_id: 0x7, epoch: 5 },
            Entry::Content { digest_index: 1 },
            Entry::Content { digest_index: 0 },
            Entry::Zero,
            Entry::Object { volume_id: 0x42, epoch: 1 },
        ],
        vec![digest(DIGEST_A), digest(DIGEST_B)],
    )
    .unwrap()
}

fn entries() -> [(&'static str, Entry); 3] {
    [
        ("entry_v1_zero.bin", Entry::Zero),
        ("entry_v1_object.bin", Entry::Object { volume_id: 0x0123_4567_89ab_cdef, epoch: 0x0a0b_0c0d }),
        ("entry_v1_content.bin", Entry::Content { digest_index: 0x3ff }),
    ]
}

fn chunk_refs() -> [(&'static str, ChunkRef); 2] {
    [
        ("chunkref_v1_absent.bin", ChunkRef::Absent),
        (
            "chunkref_v1_present.bin",
            ChunkRef::Present { volume_id: 0x0123_4567_89ab_cdef, epoch: 0x0a0b_0c0d },
        ),
    ]
}

fn headers() -> [(&'static str, MapHeader); 3] {
    [
        ("header_v1_volume.bin", header_volume()),
        ("header_v1_snapshot_clone.bin", header_snapshot_clone()),
        ("header_v1_tombstone.bin", header_tombstone()),
    ]
}

#[test]
fn golden_headers() {
    for (file, h) in headers() {
        let bytes = golden(file, &h.encode());
        assert_eq!(MapHeader::decode(&bytes), Ok(h), "{file}");
    }
}

#[test]
fn golden_header_hex_dump_matches_the_file() {
    let bytes = golden("header_v1_volume.bin", &header_volume().encode());
    let dump: Vec<u8> = HEADER_V1_VOLUME_HEX
        .iter()
        .flat_map(|line| line.split(' '))
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    assert_eq!(hex(&dump), hex(&bytes));
    assert_eq!(bytes.len(), 0x68);
    assert_eq!(crc32c::crc32c(&bytes[..0x64]).to_le_bytes(), bytes[0x64..]);
}

#[test]
fn golden_chunk() {
    let c = chunk_mixed();
    let bytes = golden("chunk_v1_mixed.bin", &c.encode());
    assert_eq!(bytes.len(), 32 + 8 * 16 + 2 * 32 + 4);
    assert_eq!(Chunk::decode(&bytes), Ok(c));
}

#[test]
fn golden_entries_and_refs() {
    for (file, e) in entries() {
        let bytes = golden(file, &e.encode());
        assert_eq!(Entry::decode(&bytes), Ok(e), "{file}");
    }
    for (file, r) in chunk_refs() {
        let bytes = golden(file, &r.encode());
        assert_eq!(ChunkRef::decode(&bytes), Ok(r), "{file}");
    }
}

/// Offsets of the fields that decide the framing (magic, version, lengths and counts): a
/// flip there is reported as such; a flip anywhere else must be a checksum error.
fn is_framing(offset: usize, framing: &[std::ops::Range<usize>]) -> bool {
    framing.iter().any(|r| r.contains(&offset))
}

/// Every damaged copy of `good` is refused; flips outside the framing fields are caught by
/// the checksum, before any field is trusted.
fn assert_damage_refused<T: std::fmt::Debug>(
    file: &str,
    good: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, MapError>,
    framing: &[std::ops::Range<usize>],
) {
    assert!(decode(good).is_ok(), "{file}");
    let mut damaged = good.to_vec();
    for offset in 0..good.len() {
        let masks = [0xffu8, 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80];
        for mask in masks {
            damaged[offset] ^= mask;
            match decode(&damaged) {
                Ok(v) => panic!("{file}: byte {offset} ^ {mask:#04x} decoded to {v:?}"),
                Err(MapError::Checksum { .. }) => {}
                Err(e) => assert!(is_framing(offset, framing), "{file}: byte {offset} ^ {mask:#04x}: {e}"),
            }
            damaged[offset] ^= mask;
        }
    }
    for len in 0..good.len() {
        assert!(
            matches!(decode(&good[..len]), Err(MapError::Truncated { .. })),
            "{file}: truncated to {len} bytes: {:?}",
            decode(&good[..len]).map(|_| ())
        );
    }
    for extra in [&[0u8][..], &[0; 3], &[0; 16], &good[good.len() - 4..], good] {
        let mut long = good.to_vec();
        long.extend_from_slice(extra);
        assert!(
            matches!(decode(&long), Err(MapError::TrailingBytes { .. })),
            "{file}: {} trailing bytes",
            extra.len()
        );
    }
    // Trailing bytes with the checksum recomputed over them: still the wrong length.
    let mut long = good[..good.len() - 4].to_vec();
    long.extend_from_slice(&[0; 16]);
    long.extend_from_slice(&crc32c::crc32c(&long).to_le_bytes());
    assert!(
        matches!(decode(&long), Err(MapError::TrailingBytes { .. })),
        "{file}: checksummed trailing bytes"
    );
}

#[test]
fn every_damaged_header_is_refused() {
    // magic, version, name_len + parent_len, nr_chunks
    let framing = [0..8, 8..10, 13..15, 36..40];
    for (file, h) in headers() {
        let good = golden(file, &h.encode());
        assert_damage_refused(file, &good, MapHeader::decode, &framing);
    }
}

#[test]
fn every_damaged_chunk_is_refused() {
    // magic, version, entries, digests
    let framing = [0..8, 8..10, 12..16, 28..32];
    let good = golden("chunk_v1_mixed.bin", &chunk_mixed().encode());
    assert_damage_refused("chunk_v1_mixed.bin", &good, Chunk::decode, &framing);
}
