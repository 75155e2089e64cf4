//! Volume names held inline: vlmcd keys its per-volume tables by name without allocating
//! per request.

/// Longest volume name vlmcd passes on (the mapper checks the exact rules).
pub const VOLUME_NAME_MAX: usize = 64;

/// A volume name of at most [`VOLUME_NAME_MAX`] bytes, or the empty name (LIST).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VolName {
    len: u8,
    bytes: [u8; VOLUME_NAME_MAX],
}

impl VolName {
    /// `None` if `name` is longer than [`VOLUME_NAME_MAX`].
    pub fn new(name: &str) -> Option<VolName> {
        if name.len() > VOLUME_NAME_MAX {
            return None;
        }
        let mut bytes = [0; VOLUME_NAME_MAX];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        Some(VolName { len: name.len() as u8, bytes })
    }

    pub fn as_str(&self) -> &str {
        // Built from a &str in `new`, never changed.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).expect("built from a str")
    }
}

impl std::fmt::Debug for VolName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl std::fmt::Display for VolName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_bounded() {
        let n = VolName::new("vol-1").unwrap();
        assert_eq!(n.as_str(), "vol-1");
        assert_eq!(n, VolName::new("vol-1").unwrap());
        assert_ne!(n, VolName::new("vol-2").unwrap());
        assert!(VolName::new(&"a".repeat(VOLUME_NAME_MAX)).is_some());
        assert!(VolName::new(&"a".repeat(VOLUME_NAME_MAX + 1)).is_none());
        assert_eq!(VolName::new("").unwrap().as_str(), "");
    }
}
