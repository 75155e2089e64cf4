//! The mapper's errors, each with the errno a request completes with.

#[derive(Debug, thiserror::Error)]
pub enum MapperError {
    #[error("{0}: no such volume or snapshot")]
    NotFound(String),
    #[error("{0} already exists")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{what} is locked by {holder}")]
    Busy { what: String, holder: String },
    #[error("{0} is a snapshot (read-only)")]
    ReadOnly(String),
    #[error("{0}: this host's lock was broken; it no longer writes to the volume (fenced)")]
    Fenced(String),
    #[error("{0}: the map is corrupt: {1}")]
    Corrupt(String, String),
    #[error("{0}")]
    Overflow(String),
    #[error("cannot open {name}: this host has {max} volumes open (mapperd --max-open-volumes, [mapperd] max_open_volumes); close one first")]
    TooManyOpen { name: String, max: usize },
    #[error("{op} {object}: {reason}")]
    Storage { op: &'static str, object: String, errno: i32, reason: String },
}

impl MapperError {
    pub fn errno(&self) -> i32 {
        match self {
            MapperError::NotFound(_) => libc::ENOENT,
            MapperError::Exists(_) => libc::EEXIST,
            MapperError::Invalid(_) => libc::EINVAL,
            MapperError::Busy { .. } => libc::EBUSY,
            MapperError::ReadOnly(_) => libc::EROFS,
            MapperError::Fenced(_) => libc::ESTALE,
            MapperError::Corrupt(..) => libc::EIO,
            MapperError::Overflow(_) => libc::EOVERFLOW,
            MapperError::TooManyOpen { .. } => libc::ENFILE,
            MapperError::Storage { errno, .. } => *errno,
        }
    }
}

impl From<archip_map::MapError> for MapperError {
    fn from(e: archip_map::MapError) -> MapperError {
        MapperError::Invalid(e.to_string())
    }
}

pub type Result<T, E = MapperError> = std::result::Result<T, E>;
