//! The store's error: what went wrong ([`ErrorKind`]), in which operation, on which object.

use std::fmt;
use std::io;

use crate::LockRecord;

/// What went wrong. Match on it with a wildcard arm: kinds may be added.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The object (or, for `lock_release`, the lock) does not exist.
    #[error("no such object")]
    NotFound,
    /// The object already exists (`create_exclusive`).
    #[error("the object already exists")]
    Exists,
    /// The store does not offer this operation.
    #[error("not supported by this store")]
    Unsupported,
    /// The lock is held by someone else.
    #[error("the lock is held by {holder}")]
    Busy { holder: LockRecord },
    /// Only the holder of a lock may release it (without `force`).
    #[error("the lock is held by {holder}, not by the caller")]
    NotOwner { holder: LockRecord },
    /// The name is not a valid [`ObjectName`](crate::ObjectName).
    #[error("invalid name: {reason}")]
    InvalidName { reason: &'static str },
    /// Some other argument is out of range (a lock owner string, an offset).
    #[error("invalid argument: {reason}")]
    InvalidArgument { reason: String },
    /// The store is out of space (or quota).
    #[error("no space left in the store")]
    NoSpace,
    /// Something the store wrote earlier cannot be parsed back.
    #[error("corrupt store data: {reason}")]
    Corrupt { reason: String },
    /// The store on disk has another format (or version) than this build speaks.
    #[error("the store has format {found}; this build speaks {expected}")]
    FormatMismatch { found: String, expected: String },
    /// Any other failure of the underlying system.
    #[error("{0}")]
    Io(io::Error),
}

/// An error of an [`ObjectStore`](crate::ObjectStore) operation: its [`ErrorKind`], the name of
/// the operation and the object (or lock, or store directory) it was about.
#[derive(Debug)]
pub struct StoreError {
    op: &'static str,
    name: String,
    kind: ErrorKind,
}

impl StoreError {
    /// An error of operation `op` on `name` (an object or lock name, a directory; may be empty).
    /// Public so that stores in other crates report errors the same way.
    pub fn new(op: &'static str, name: impl Into<String>, kind: ErrorKind) -> Self {
        StoreError { op, name: name.into(), kind }
    }

    pub fn not_found(op: &'static str, name: impl Into<String>) -> Self {
        Self::new(op, name, ErrorKind::NotFound)
    }

    /// An I/O error; running out of space or quota becomes [`ErrorKind::NoSpace`].
    pub fn io(op: &'static str, name: impl Into<String>, err: io::Error) -> Self {
        let kind = match err.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => ErrorKind::NoSpace,
            _ => ErrorKind::Io(err),
        };
        Self::new(op, name, kind)
    }

    pub fn invalid_argument(op: &'static str, name: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::new(op, name, ErrorKind::InvalidArgument { reason: reason.into() })
    }

    pub fn corrupt(op: &'static str, name: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::new(op, name, ErrorKind::Corrupt { reason: reason.into() })
    }

    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    pub fn into_kind(self) -> ErrorKind {
        self.kind
    }

    /// The operation that failed ("read", "lock_acquire", ...).
    pub fn op(&self) -> &'static str {
        self.op
    }

    /// The object, lock or directory the operation was about.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self.kind, ErrorKind::NotFound)
    }

    /// The errno a peer completes a request with when this error stops it.
    pub fn errno(&self) -> i32 {
        match &self.kind {
            ErrorKind::NotFound => libc::ENOENT,
            ErrorKind::Exists => libc::EEXIST,
            ErrorKind::Unsupported => libc::EOPNOTSUPP,
            ErrorKind::Busy { .. } => libc::EBUSY,
            ErrorKind::NotOwner { .. } => libc::EPERM,
            ErrorKind::InvalidName { .. } | ErrorKind::InvalidArgument { .. } => libc::EINVAL,
            ErrorKind::NoSpace => libc::ENOSPC,
            ErrorKind::Corrupt { .. } => libc::EIO,
            ErrorKind::FormatMismatch { .. } => libc::EPROTO,
            ErrorKind::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name.is_empty() {
            write!(f, "{}: {}", self.op, self.kind)
        } else {
            write!(f, "{} {}: {}", self.op, self.name, self.kind)
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::Io(e) => Some(e),
            _ => None,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_errno() {
        let e = StoreError::not_found("read", "vol1");
        assert_eq!(e.to_string(), "read vol1: no such object");
        assert_eq!(e.errno(), libc::ENOENT);
        let e = StoreError::io("flush", "", io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(matches!(e.kind(), ErrorKind::NoSpace));
        assert_eq!(e.errno(), libc::ENOSPC);
        let e = StoreError::io("write", "x", io::Error::from_raw_os_error(libc::EROFS));
        assert_eq!(e.errno(), libc::EROFS);
        assert!(std::error::Error::source(&e).is_some());
        let e = StoreError::io("write", "x", io::Error::other("boom"));
        assert_eq!(e.errno(), libc::EIO);
        let holder = LockRecord { owner: "hostA/vlmcd".into(), generation: 7, acquired_unix_ms: 1 };
        let e = StoreError::new("lock_acquire", "v", ErrorKind::Busy { holder });
        assert_eq!(e.errno(), libc::EBUSY);
        assert!(e.to_string().contains("hostA/vlmcd"), "{e}");
    }
}
