//! Request operations, flags, and the tokens that say who holds a request.

/// What a request asks for. The numbers are ABI (see `include/xseg.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Op {
    Ping = 0,
    Read = 1,
    Write = 2,
    Flush = 3,
    Discard = 4,
    WriteZeroes = 5,
    Info = 6,
    Open = 7,
    Close = 8,
    Create = 9,
    Clone = 10,
    Snapshot = 11,
    Delete = 12,
    Rename = 13,
    Resize = 14,
    Copy = 15,
    Hash = 16,
    Acquire = 17,
    Release = 18,
    MapRead = 19,
    MapWrite = 20,
    List = 21,
    /// Replace an object whole, atomically (map headers and chunks).
    WriteFull = 22,
    /// Who holds a lock (answer in the data window).
    LockInfo = 23,
}

impl Op {
    pub const ALL: [Op; 24] = [
        Op::Ping,
        Op::Read,
        Op::Write,
        Op::Flush,
        Op::Discard,
        Op::WriteZeroes,
        Op::Info,
        Op::Open,
        Op::Close,
        Op::Create,
        Op::Clone,
        Op::Snapshot,
        Op::Delete,
        Op::Rename,
        Op::Resize,
        Op::Copy,
        Op::Hash,
        Op::Acquire,
        Op::Release,
        Op::MapRead,
        Op::MapWrite,
        Op::List,
        Op::WriteFull,
        Op::LockInfo,
    ];

    pub fn from_u32(value: u32) -> Option<Op> {
        Op::ALL.get(value as usize).copied()
    }

    pub fn name(self) -> &'static str {
        match self {
            Op::Ping => "PING",
            Op::Read => "READ",
            Op::Write => "WRITE",
            Op::Flush => "FLUSH",
            Op::Discard => "DISCARD",
            Op::WriteZeroes => "WRITE_ZEROES",
            Op::Info => "INFO",
            Op::Open => "OPEN",
            Op::Close => "CLOSE",
            Op::Create => "CREATE",
            Op::Clone => "CLONE",
            Op::Snapshot => "SNAPSHOT",
            Op::Delete => "DELETE",
            Op::Rename => "RENAME",
            Op::Resize => "RESIZE",
            Op::Copy => "COPY",
            Op::Hash => "HASH",
            Op::Acquire => "ACQUIRE",
            Op::Release => "RELEASE",
            Op::MapRead => "MAPR",
            Op::MapWrite => "MAPW",
            Op::List => "LIST",
            Op::WriteFull => "WRITE_FULL",
            Op::LockInfo => "LOCK_INFO",
        }
    }
}

/// Request flags (a bit set; the numbers are ABI).
pub mod flags {
    /// Durable when completed (force unit access).
    pub const FUA: u32 = 1;
    /// Try once, do not wait (e.g. for a lock).
    pub const NOSYNC: u32 = 2;
    /// Override a safety check (e.g. break another owner's lock).
    pub const FORCE: u32 = 4;
    pub const ALL: u32 = FUA | NOSYNC | FORCE;
}

/// A request held by its owner: after `get_request`, and again after `receive`.
/// Not `Clone`: the token is the right to touch the request.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub(crate) index: u32,
}

/// A request held by the port that serves it, between `accept` and `respond`.
#[derive(Debug, PartialEq, Eq)]
pub struct Incoming {
    pub(crate) index: u32,
}

/// Either kind of held request.
pub trait Held {
    fn index(&self) -> u32;
}

impl Held for Request {
    fn index(&self) -> u32 {
        self.index
    }
}

impl Held for Incoming {
    fn index(&self) -> u32 {
        self.index
    }
}

/// A request's target name, copied out of the segment (bounded, on the stack).
#[derive(Clone, Copy)]
pub struct Target {
    pub(crate) bytes: [u8; crate::layout::TARGET_LEN_MAX],
    pub(crate) len: usize,
}

impl Target {
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// The target as UTF-8, if it is.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(self.as_bytes()).ok()
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_numbers_round_trip() {
        for (i, op) in Op::ALL.iter().enumerate() {
            assert_eq!(*op as u32, i as u32);
            assert_eq!(Op::from_u32(i as u32), Some(*op));
        }
        assert_eq!(Op::from_u32(24), None);
        assert_eq!(Op::from_u32(u32::MAX), None);
    }
}
