//! Errors of the map library: why a name, a value or a byte encoding was refused.

/// Why a map object, an entry or a name was refused.
///
/// Every decoding error names `what` was being decoded (`"map header"`, `"map chunk"`,
/// `"chunk ref"`, `"map entry"`), so a log line says which object is damaged. Decoding
/// checks the framing (length, magic, version) first and the checksum before any field,
/// so a torn or bit-rotted object reports [`MapError::Truncated`] or
/// [`MapError::Checksum`]; [`MapError::Invalid`] on a checksummed object means a writer
/// produced a value the format forbids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MapError {
    #[error("{what}: bad magic (these bytes are not an Archipelago {what})")]
    BadMagic { what: &'static str },
    #[error("{what}: format version {found}; this build reads version {expected}")]
    BadVersion { what: &'static str, found: u16, expected: u16 },
    #[error("{what}: truncated: {len} bytes, the encoding needs {needed}")]
    Truncated { what: &'static str, len: u64, needed: u64 },
    #[error("{what}: {len} bytes, but the encoding is {expected} bytes long (trailing garbage)")]
    TrailingBytes { what: &'static str, len: u64, expected: u64 },
    #[error("{what}: checksum mismatch: stored crc32c {stored:#010x}, computed {computed:#010x} (torn or corrupt)")]
    Checksum { what: &'static str, stored: u32, computed: u32 },
    #[error("{what}: invalid {field}: {reason}")]
    Invalid { what: &'static str, field: &'static str, reason: String },
    #[error("invalid volume name {name:?}: {reason}")]
    InvalidName { name: String, reason: NameError },
}

/// Why a string is not a valid [`VolumeName`](crate::VolumeName).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    #[error("the name is empty")]
    Empty,
    #[error("the name has {len} characters; at most {max} are allowed", max = crate::VOLUME_NAME_MAX)]
    TooLong { len: usize },
    #[error("character {ch:?} at position {pos} is not allowed (only A-Z a-z 0-9 . _ -)")]
    BadChar { ch: char, pos: usize },
    #[error("the name starts with {ch:?}; it must start with a letter, a digit or '_'")]
    BadFirstChar { ch: char },
}

impl MapError {
    pub(crate) fn invalid(what: &'static str, field: &'static str, reason: impl Into<String>) -> MapError {
        MapError::Invalid { what, field, reason: reason.into() }
    }
}
