//! Volume names and the names of the objects a volume is stored in.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

use crate::digest::{hex_value, Digest};
use crate::error::{MapError, NameError};

/// The longest volume (or snapshot) name, in characters (= bytes: names are ASCII).
pub const VOLUME_NAME_MAX: usize = 64;

/// The longest object name this crate builds, in bytes. Every name is far shorter (the
/// longest, `sha256:…`, is 71 bytes); stores may rely on this bound.
pub const OBJECT_NAME_MAX: usize = 200;

/// Prefix of the object holding the map header of a volume or snapshot: `map:<name>`.
pub const MAP_PREFIX: &str = "map:";
/// Prefix of a map chunk object: `chunk:<volume id>:<epoch>:<chunk index>`.
pub const CHUNK_PREFIX: &str = "chunk:";
/// Prefix of a data object: `data:<volume id>:<epoch>:<block index>`.
pub const DATA_PREFIX: &str = "data:";
/// Prefix of a content-addressed data object: `sha256:<digest>`.
pub const CONTENT_PREFIX: &str = "sha256:";
/// Prefix of the lock object of a volume: `lock:<name>`.
pub const LOCK_PREFIX: &str = "lock:";

/// A validated volume or snapshot name: 1 to 64 characters of `[A-Za-z0-9._-]`, not
/// starting with `.` or `-`.
///
/// Volumes and snapshots share one namespace (their headers are both `map:<name>`). The
/// charset keeps names safe in object names (no `:` or `/`), file names and command lines;
/// the first-character rule rules out `.`, `..`, hidden files and things that look like
/// options.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VolumeName(String);

impl VolumeName {
    /// Validates `name`; the error says why it is refused.
    pub fn new(name: impl Into<String>) -> Result<VolumeName, MapError> {
        let name = name.into();
        match check_volume_name(&name) {
            Ok(()) => Ok(VolumeName(name)),
            Err(reason) => Err(MapError::InvalidName { name: shown(&name), reason }),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// Checks a would-be volume name. Reports, in this order: an empty name, a disallowed
/// character (the first one; a `.` or `-` in first position is [`NameError::BadFirstChar`]),
/// a name longer than [`VOLUME_NAME_MAX`].
pub fn check_volume_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    let mut len = 0;
    for (pos, ch) in name.chars().enumerate() {
        let allowed = ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-');
        if !allowed {
            return Err(NameError::BadChar { ch, pos });
        }
        if pos == 0 && matches!(ch, '.' | '-') {
            return Err(NameError::BadFirstChar { ch });
        }
        len += 1;
    }
    if len > VOLUME_NAME_MAX {
        return Err(NameError::TooLong { len });
    }
    Ok(())
}

/// The refused name as shown in an error: cut after 80 characters, so that a runaway
/// input does not make a runaway message.
fn shown(name: &str) -> String {
    const SHOWN: usize = 80;
    match name.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}…", &name[..cut]),
        None => name.to_owned(),
    }
}

impl fmt::Display for VolumeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for VolumeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VolumeName({:?})", self.0)
    }
}

impl FromStr for VolumeName {
    type Err = MapError;
    fn from_str(s: &str) -> Result<VolumeName, MapError> {
        VolumeName::new(s)
    }
}

impl TryFrom<&str> for VolumeName {
    type Error = MapError;
    fn try_from(s: &str) -> Result<VolumeName, MapError> {
        VolumeName::new(s)
    }
}

impl TryFrom<String> for VolumeName {
    type Error = MapError;
    fn try_from(s: String) -> Result<VolumeName, MapError> {
        VolumeName::new(s)
    }
}

impl AsRef<str> for VolumeName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for VolumeName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for VolumeName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for VolumeName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// `map:<name>`: the map header of the volume or snapshot called `name` (looked up by name in
/// one read; a rename writes the new header, then removes the old one).
pub fn map_object_name(name: &VolumeName) -> String {
    format!("{MAP_PREFIX}{name}")
}

/// `chunk:<volume id, 16 hex>:<epoch, 8 hex>:<chunk index, 8 hex>`: map chunk `chunk_index`
/// as written by volume `volume_id` during `epoch`. Keyed by the immutable volume id, so
/// renames never touch chunks.
pub fn chunk_object_name(volume_id: u64, epoch: u32, chunk_index: u32) -> String {
    format!("{CHUNK_PREFIX}{volume_id:016x}:{epoch:08x}:{chunk_index:08x}")
}

/// `data:<volume id, 16 hex>:<epoch, 8 hex>:<block index, 16 hex>`: block `block_index` as
/// written by volume `volume_id` during `epoch`.
pub fn data_object_name(volume_id: u64, epoch: u32, block_index: u64) -> String {
    format!("{DATA_PREFIX}{volume_id:016x}:{epoch:08x}:{block_index:016x}")
}

/// `sha256:<64 lowercase hex>`: a content-addressed block.
pub fn content_object_name(digest: &Digest) -> String {
    format!("{CONTENT_PREFIX}{}", digest.to_hex())
}

/// `lock:<name>`: the lock object of volume `name`.
pub fn lock_object_name(name: &VolumeName) -> String {
    format!("{LOCK_PREFIX}{name}")
}

/// What an object name denotes: the inverse of the `*_object_name` functions.
///
/// [`ObjectKind::parse`] accepts exactly the spellings the builders write (lowercase hex of
/// the exact width, a valid volume name) and nothing else, so `parse(kind.object_name())
/// == Some(kind)` and every parsed name re-spells to itself. It checks syntax only: an id
/// or epoch of 0, which no volume uses, still parses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// `map:<name>`
    MapHeader { name: VolumeName },
    /// `chunk:<volume id>:<epoch>:<chunk index>`
    MapChunk { volume_id: u64, epoch: u32, chunk_index: u32 },
    /// `data:<volume id>:<epoch>:<block index>`
    Data { volume_id: u64, epoch: u32, block_index: u64 },
    /// `sha256:<digest>`
    Content { digest: Digest },
    /// `lock:<name>`
    Lock { name: VolumeName },
}

impl ObjectKind {
    /// Recognises an object name; `None` if it is not one this crate builds (another
    /// tenant's object, a typo, a foreign spelling such as uppercase hex).
    pub fn parse(name: &str) -> Option<ObjectKind> {
        if name.len() > OBJECT_NAME_MAX {
            return None;
        }
        if let Some(rest) = name.strip_prefix(MAP_PREFIX) {
            return VolumeName::new(rest).ok().map(|name| ObjectKind::MapHeader { name });
        }
        if let Some(rest) = name.strip_prefix(LOCK_PREFIX) {
            return VolumeName::new(rest).ok().map(|name| ObjectKind::Lock { name });
        }
        if let Some(rest) = name.strip_prefix(CONTENT_PREFIX) {
            return Digest::from_hex(rest).map(|digest| ObjectKind::Content { digest });
        }
        if let Some(rest) = name.strip_prefix(CHUNK_PREFIX) {
            let (volume_id, epoch, index) = three_fields(rest)?;
            return Some(ObjectKind::MapChunk {
                volume_id: parse_hex(volume_id, 16)?,
                epoch: u32::try_from(parse_hex(epoch, 8)?).ok()?,
                chunk_index: u32::try_from(parse_hex(index, 8)?).ok()?,
            });
        }
        if let Some(rest) = name.strip_prefix(DATA_PREFIX) {
            let (volume_id, epoch, block) = three_fields(rest)?;
            return Some(ObjectKind::Data {
                volume_id: parse_hex(volume_id, 16)?,
                epoch: u32::try_from(parse_hex(epoch, 8)?).ok()?,
                block_index: parse_hex(block, 16)?,
            });
        }
        None
    }

    /// The object name (what the matching `*_object_name` function builds).
    pub fn object_name(&self) -> String {
        match self {
            ObjectKind::MapHeader { name } => map_object_name(name),
            ObjectKind::MapChunk { volume_id, epoch, chunk_index } => {
                chunk_object_name(*volume_id, *epoch, *chunk_index)
            }
            ObjectKind::Data { volume_id, epoch, block_index } => {
                data_object_name(*volume_id, *epoch, *block_index)
            }
            ObjectKind::Content { digest } => content_object_name(digest),
            ObjectKind::Lock { name } => lock_object_name(name),
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.object_name())
    }
}

fn three_fields(s: &str) -> Option<(&str, &str, &str)> {
    let mut it = s.split(':');
    let fields = (it.next()?, it.next()?, it.next()?);
    it.next().is_none().then_some(fields)
}

/// Exactly `width` lowercase hex digits (no sign, no prefix).
fn parse_hex(s: &str, width: usize) -> Option<u64> {
    if s.len() != width {
        return None;
    }
    s.bytes().try_fold(0u64, |acc, c| Some((acc << 4) | u64::from(hex_value(c)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> VolumeName {
        VolumeName::new(s).unwrap()
    }

    #[test]
    fn valid_volume_names() {
        let max = "a".repeat(VOLUME_NAME_MAX);
        for ok in ["a", "A", "0", "_", "vol-1", "my.disk_2", "a..b", "x-", "x.", "_.-", max.as_str()] {
            let n = VolumeName::new(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
            assert_eq!(n.as_str(), ok);
            assert_eq!(ok.parse::<VolumeName>().unwrap(), n);
            assert_eq!(n, ok);
            assert_eq!(n.to_string(), ok);
        }
    }

    #[test]
    fn invalid_volume_names_say_why() {
        let long = "a".repeat(VOLUME_NAME_MAX + 1);
        let cases: Vec<(&str, NameError)> = vec![
            ("", NameError::Empty),
            (&long, NameError::TooLong { len: 65 }),
            ("a/b", NameError::BadChar { ch: '/', pos: 1 }),
            ("..", NameError::BadFirstChar { ch: '.' }),
            (".", NameError::BadFirstChar { ch: '.' }),
            (".hidden", NameError::BadFirstChar { ch: '.' }),
            ("-rf", NameError::BadFirstChar { ch: '-' }),
            ("é", NameError::BadChar { ch: 'é', pos: 0 }),
            ("café", NameError::BadChar { ch: 'é', pos: 3 }),
            ("a b", NameError::BadChar { ch: ' ', pos: 1 }),
            ("a:b", NameError::BadChar { ch: ':', pos: 1 }),
            ("a\0", NameError::BadChar { ch: '\0', pos: 1 }),
            ("a\n", NameError::BadChar { ch: '\n', pos: 1 }),
        ];
        for (input, reason) in cases {
            assert_eq!(check_volume_name(input), Err(reason), "{input:?}");
            match VolumeName::new(input) {
                Err(MapError::InvalidName { name, reason: r }) => {
                    assert_eq!(name, input);
                    assert_eq!(r, reason);
                }
                other => panic!("{input:?}: {other:?}"),
            }
        }
        // 64 two-byte characters are 128 bytes: refused for the character, not the length.
        assert_eq!(check_volume_name(&"é".repeat(64)), Err(NameError::BadChar { ch: 'é', pos: 0 }));
    }

    #[test]
    fn name_error_messages_are_clear() {
        let msg = VolumeName::new("a/b").unwrap_err().to_string();
        assert_eq!(msg, "invalid volume name \"a/b\": character '/' at position 1 is not allowed (only A-Z a-z 0-9 . _ -)");
        let msg = VolumeName::new("").unwrap_err().to_string();
        assert_eq!(msg, "invalid volume name \"\": the name is empty");
        let msg = VolumeName::new("a".repeat(65)).unwrap_err().to_string();
        assert!(msg.ends_with("the name has 65 characters; at most 64 are allowed"), "{msg}");
        let msg = VolumeName::new("-x").unwrap_err().to_string();
        assert!(
            msg.ends_with("the name starts with '-'; it must start with a letter, a digit or '_'"),
            "{msg}"
        );
        // A runaway input is cut in the message.
        let msg = VolumeName::new("a".repeat(10_000)).unwrap_err().to_string();
        assert!(msg.len() < 300, "{msg}");
    }

    #[test]
    fn object_names_are_spelled_as_specified() {
        let n = name("vol-1");
        assert_eq!(map_object_name(&n), "map:vol-1");
        assert_eq!(lock_object_name(&n), "lock:vol-1");
        assert_eq!(chunk_object_name(0x42, 3, 0x10), "chunk:0000000000000042:00000003:00000010");
        assert_eq!(
            data_object_name(0x0123_4567_89ab_cdef, 0xffff_ffff, 0x1_0000_0000),
            "data:0123456789abcdef:ffffffff:0000000100000000"
        );
        let d = Digest::of(b"abc");
        assert_eq!(
            content_object_name(&d),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.object_name(), content_object_name(&d));
    }

    #[test]
    fn object_names_round_trip() {
        let kinds = vec![
            ObjectKind::MapHeader { name: name("a") },
            ObjectKind::MapHeader { name: name(&"Z".repeat(64)) },
            ObjectKind::Lock { name: name("my.disk_2") },
            ObjectKind::MapChunk { volume_id: 1, epoch: 1, chunk_index: 0 },
            ObjectKind::MapChunk { volume_id: u64::MAX, epoch: u32::MAX, chunk_index: u32::MAX },
            ObjectKind::Data { volume_id: 0x42, epoch: 7, block_index: 262_143 },
            ObjectKind::Data { volume_id: u64::MAX, epoch: u32::MAX, block_index: u64::MAX },
            ObjectKind::Content { digest: Digest::of(b"") },
            ObjectKind::Content { digest: Digest([0xff; 32]) },
        ];
        for kind in kinds {
            let s = kind.object_name();
            assert!(s.len() <= OBJECT_NAME_MAX, "{s}");
            assert!(
                s.bytes().all(|c| c.is_ascii_alphanumeric() || b"._:-".contains(&c)),
                "{s} leaves the object-name charset"
            );
            assert_eq!(ObjectKind::parse(&s), Some(kind.clone()), "{s}");
            assert_eq!(kind.to_string(), s);
        }
    }

    #[test]
    fn foreign_or_misspelled_object_names_are_not_recognised() {
        let d = Digest::of(b"x").to_hex();
        for bad in [
            "",
            "map:",
            "map:a/b",
            "map:.x",
            "map:a:b",
            "lock:",
            "lock:-x",
            "MAP:a",
            "maps:a",
            "chunk:",
            "chunk:0000000000000042:00000003",
            "chunk:0000000000000042:00000003:00000010:",
            "chunk:0000000000000042:00000003:00000010:00000000",
            "chunk:000000000000042:00000003:00000010",
            "chunk:00000000000000042:00000003:00000010",
            "chunk:0000000000000042:0000003:00000010",
            "chunk:000000000000004A:00000003:00000010",
            "chunk:000000000000004g:00000003:00000010",
            "chunk:+000000000000042:00000003:00000010",
            "chunk:0000000000000042:+0000003:00000010",
            "chunk:0000000000000042:00000003:-0000010",
            "data:0000000000000042:00000003:00000010",
            "data:0000000000000042:00000003:0000000000000010:x",
            "data:0000000000000042:00000003:000000000000001 ",
            "sha256:",
            "sha256:abc",
            &format!("sha256:{}", d.to_uppercase()),
            &format!("sha256:{d}0"),
            &format!("SHA256:{d}"),
            "other:thing",
            "vol-1",
        ] {
            assert_eq!(ObjectKind::parse(bad), None, "{bad:?}");
        }
        assert_eq!(ObjectKind::parse(&"map:a".repeat(100)), None);
    }
}
