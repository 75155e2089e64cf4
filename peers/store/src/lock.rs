//! Lock records, shared by every store.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Result, StoreError};

/// The longest lock owner string, in bytes.
pub const MAX_OWNER_LEN: usize = 256;

/// What [`lock_acquire`](crate::ObjectStore::lock_acquire) grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LockGrant {
    /// Greater than the generation of every earlier acquisition of the same lock: a fencing token.
    pub generation: u64,
}

/// Who holds a lock, since when, under which generation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LockRecord {
    /// The opaque owner string given to `lock_acquire` (e.g. "hostA/vlmcd").
    pub owner: String,
    pub generation: u64,
    /// Wall-clock time of the acquisition, in milliseconds since the Unix epoch (of the acquirer's
    /// clock: for humans and for deciding whether a holder looks dead, not for ordering).
    pub acquired_unix_ms: u64,
}

impl fmt::Display for LockRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} (generation {}, acquired at unix time {}.{:03}s)",
            self.owner,
            self.generation,
            self.acquired_unix_ms / 1000,
            self.acquired_unix_ms % 1000
        )
    }
}

/// Checks a lock owner string: 1 to [`MAX_OWNER_LEN`] bytes, without a newline (or NUL).
pub fn check_owner(op: &'static str, lock: &str, owner: &str) -> Result<()> {
    let reason = if owner.is_empty() {
        "the lock owner is empty"
    } else if owner.len() > MAX_OWNER_LEN {
        "the lock owner is longer than 256 bytes"
    } else if owner.contains(['\n', '\0']) {
        "the lock owner contains a newline or NUL"
    } else {
        return Ok(());
    };
    Err(StoreError::invalid_argument(op, lock, reason))
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
