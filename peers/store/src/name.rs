//! Validated object names.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

use crate::error::{ErrorKind, StoreError};

/// The name of an object (or of a lock): 1 to [`ObjectName::MAX_LEN`] bytes of `[A-Za-z0-9._:-]`,
/// not starting with `.` or `-`.
///
/// A name holds no `/` and is never `.` or `..`, so joining it to a directory can never leave that
/// directory; and as no name starts with `.`, a store may keep its temporary files under
/// dot-names without any risk of colliding with an object. Once constructed an `ObjectName` is
/// valid forever: stores take `&ObjectName`, so a name is validated before any path is built.
///
/// Names order (and [`ObjectStore::list`](crate::ObjectStore::list) sorts them) bytewise.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectName(String);

/// The prefix of content-addressed object names; see [`ObjectName::content_address`].
pub const CONTENT_ADDRESS_PREFIX: &str = "sha256:";

impl ObjectName {
    /// The longest name, in bytes.
    pub const MAX_LEN: usize = 200;

    /// Validates `name`. The error is [`ErrorKind::InvalidName`] with the reason, and the
    /// rejected name (escaped) as context.
    pub fn new(name: impl Into<String>) -> Result<Self, StoreError> {
        let name = name.into();
        match check(&name) {
            Ok(()) => Ok(ObjectName(name)),
            Err(reason) => {
                Err(StoreError::new("validate name", format!("{name:?}"), ErrorKind::InvalidName { reason }))
            }
        }
    }

    /// The name of the content-addressed object with this SHA-256 digest:
    /// `sha256:` followed by 64 lowercase hex digits.
    pub fn content_address(digest: &[u8; 32]) -> Self {
        ObjectName(format!("{CONTENT_ADDRESS_PREFIX}{}", hex(digest)))
    }

    /// Whether this is the name of a content-addressed object (`sha256:<64 lowercase hex>`).
    pub fn is_content_address(&self) -> bool {
        self.0.strip_prefix(CONTENT_ADDRESS_PREFIX).is_some_and(|h| {
            h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// Why `name` is not a valid object name, if it is not.
fn check(name: &str) -> Result<(), &'static str> {
    let bytes = name.as_bytes();
    if bytes.is_empty() {
        return Err("the name is empty");
    }
    if bytes.len() > ObjectName::MAX_LEN {
        return Err("the name is longer than 200 bytes");
    }
    if let Some(&b) = bytes.iter().find(|&&b| !is_name_byte(b)) {
        return Err(if b == b'/' {
            "the name contains '/'"
        } else if b == 0 {
            "the name contains a NUL byte"
        } else if !b.is_ascii() {
            "the name contains a non-ASCII character"
        } else {
            "the name contains a character outside [A-Za-z0-9._:-]"
        });
    }
    // "." and ".." are covered by this rule too.
    if bytes[0] == b'.' {
        return Err("the name starts with '.'");
    }
    if bytes[0] == b'-' {
        return Err("the name starts with '-'");
    }
    Ok(())
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-')
}

/// Checks a [`list`](crate::ObjectStore::list) prefix: the empty string (everything), or a string
/// that could start a valid name. Anything else is `InvalidName` (a caller bug, not an empty list).
pub fn check_prefix(op: &'static str, prefix: &str) -> Result<(), StoreError> {
    if prefix.is_empty() {
        return Ok(());
    }
    check(prefix).map_err(|reason| {
        StoreError::new(op, format!("prefix {prefix:?}"), ErrorKind::InvalidName { reason })
    })
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl FromStr for ObjectName {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, StoreError> {
        ObjectName::new(s)
    }
}

impl TryFrom<&str> for ObjectName {
    type Error = StoreError;
    fn try_from(s: &str) -> Result<Self, StoreError> {
        ObjectName::new(s)
    }
}

impl TryFrom<String> for ObjectName {
    type Error = StoreError;
    fn try_from(s: String) -> Result<Self, StoreError> {
        ObjectName::new(s)
    }
}

impl AsRef<str> for ObjectName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

// Hash, Eq and Ord are derived from the inner String, so they agree with str's.
impl Borrow<str> for ObjectName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<ObjectName> for String {
    fn from(n: ObjectName) -> String {
        n.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_names() {
        for n in ["a", "A9", "vol_1:snap-2.x", "a..b", "x.", "x-", "_", ":", "0", &"a".repeat(200)] {
            assert_eq!(ObjectName::new(n).unwrap().as_str(), n);
        }
    }

    #[test]
    fn rejects_invalid_names_with_reason() {
        let long = "a".repeat(201);
        for (n, why) in [
            ("", "empty"),
            (".", "starts with '.'"),
            ("..", "starts with '.'"),
            (".x", "starts with '.'"),
            ("-x", "starts with '-'"),
            ("a/b", "'/'"),
            ("a b", "outside"),
            ("é", "non-ASCII"),
            ("a\0", "NUL"),
            (long.as_str(), "longer"),
        ] {
            let e = ObjectName::new(n).unwrap_err();
            assert!(
                matches!(e.kind(), ErrorKind::InvalidName { reason } if reason.contains(why)),
                "{n:?}: {e}"
            );
            assert_eq!(e.errno(), libc::EINVAL);
        }
    }

    #[test]
    fn content_address_is_a_valid_name() {
        let n = ObjectName::content_address(&[0xab; 32]);
        assert_eq!(n.as_str(), format!("sha256:{}", "ab".repeat(32)));
        assert!(ObjectName::new(n.as_str()).is_ok());
        assert!(n.is_content_address());
        assert!(!ObjectName::new("sha256:AB").unwrap().is_content_address());
    }
}
