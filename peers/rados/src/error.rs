//! The wrapper's error: a librados return code, what was being done, and a hint.

use std::fmt;
use std::io;

/// A failed librados call: the errno it returned (positive), what was being done, and,
/// for the failures an operator can fix (an unreachable monitor, a missing pool, bad
/// credentials), a hint saying what to check.
#[derive(Debug, Clone)]
pub struct RadosError {
    errno: i32,
    what: String,
    hint: Option<String>,
}

impl RadosError {
    /// An error from a librados return value `ret` (a negative errno).
    pub fn new(what: impl Into<String>, ret: i64) -> Self {
        let errno = i32::try_from(ret.unsigned_abs()).unwrap_or(libc::EIO);
        RadosError { errno, what: what.into(), hint: None }
    }

    /// Adds a hint, shown after the error.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The errno (positive), e.g. `libc::ENOENT`.
    pub fn errno(&self) -> i32 {
        self.errno
    }

    /// Whether this is `errno` (positive).
    pub fn is(&self, errno: i32) -> bool {
        self.errno == errno
    }

    /// What was being done when the call failed.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// The errno as an `io::Error` (keeps the raw OS error, so it maps back to the errno).
    pub fn to_io_error(&self) -> io::Error {
        io::Error::from_raw_os_error(self.errno)
    }
}

impl fmt::Display for RadosError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.to_io_error())?;
        if let Some(hint) = &self.hint {
            write!(f, " — {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RadosError {}

pub type Result<T, E = RadosError> = std::result::Result<T, E>;

/// `Ok(ret)` for a non-negative librados return value, else the error.
pub(crate) fn check(what: impl FnOnce() -> String, ret: i64) -> Result<u64> {
    u64::try_from(ret).map_err(|_| RadosError::new(what(), ret))
}
