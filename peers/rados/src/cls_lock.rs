//! Inputs of the OSD's `lock` object class (`cls_lock`, the class behind
//! `rados_lock_exclusive`, `rados_unlock` and `rados_break_lock`), in Ceph's encoding, so that
//! taking or breaking a lock can be one step of a compound write op (atomic with the lock's
//! generation and holder record; see the crate documentation).
//!
//! Ceph's encoding: integers little-endian; a string is a `u32` length and its bytes; a
//! versioned struct starts with `u8` version, `u8` oldest compatible version and a `u32`
//! length of the rest. The two structs (Ceph's `src/cls/lock/cls_lock_ops.h`, version 1
//! since 2012, the same layout the Linux kernel's `libceph` sends):
//!
//! ```text
//! cls_lock_lock_op  { string name; u8 type; string cookie; string tag; string description;
//!                     utime_t duration (u32 sec, u32 nsec; 0 = no expiry); u8 flags; }
//! cls_lock_break_op { string name; entity_name_t locker (u8 type, i64 num); string cookie; }
//! ```

use std::ffi::CStr;

/// The object class.
pub const CLASS: &CStr = c"lock";
/// Its method taking a lock (`cls_lock_lock_op`).
pub const METHOD_LOCK: &CStr = c"lock";
/// Its method removing one holder's hold (`cls_lock_break_op`).
pub const METHOD_BREAK: &CStr = c"break_lock";

/// `ClsLockType::EXCLUSIVE`.
const LOCK_TYPE_EXCLUSIVE: u8 = 1;
/// `CEPH_ENTITY_TYPE_CLIENT`.
const ENTITY_TYPE_CLIENT: u8 = 0x08;

struct Encoder(Vec<u8>);

impl Encoder {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn string(&mut self, s: &[u8]) {
        self.u32(u32::try_from(s.len()).expect("strings here are short"));
        self.0.extend_from_slice(s);
    }
    /// A version-1 struct (version 1, compatible with 1) whose body `body` encodes.
    fn struct_v1(body: impl FnOnce(&mut Encoder)) -> Vec<u8> {
        let mut inner = Encoder(Vec::new());
        body(&mut inner);
        let mut e = Encoder(Vec::with_capacity(inner.0.len() + 6));
        e.u8(1);
        e.u8(1);
        e.u32(u32::try_from(inner.0.len()).expect("structs here are short"));
        e.0.extend_from_slice(&inner.0);
        e.0
    }
}

/// The input of `lock.lock` taking the exclusive lock `name` with `cookie`, `tag` and
/// `description`, without expiry, failing if it is held (by anyone, this client included).
pub fn lock_exclusive(name: &[u8], cookie: &[u8], tag: &[u8], description: &[u8]) -> Vec<u8> {
    Encoder::struct_v1(|e| {
        e.string(name);
        e.u8(LOCK_TYPE_EXCLUSIVE);
        e.string(cookie);
        e.string(tag);
        e.string(description);
        e.u32(0); // duration: seconds
        e.u32(0); // and nanoseconds; zero = no expiry
        e.u8(0); // flags: not a renewal
    })
}

/// The input of `lock.break_lock` removing the hold of `client` (`client.N`, as
/// `rados_list_lockers` names it) with `cookie` on lock `name`. `None` if `client` is not a
/// client entity name.
pub fn break_lock(name: &[u8], client: &str, cookie: &[u8]) -> Option<Vec<u8>> {
    let num: i64 = client.strip_prefix("client.")?.parse().ok()?;
    Some(Encoder::struct_v1(|e| {
        e.string(name);
        e.u8(ENTITY_TYPE_CLIENT);
        e.i64(num);
        e.string(cookie);
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_op_bytes() {
        let got = lock_exclusive(b"L", b"ck", b"t", b"");
        #[rustfmt::skip]
        let want = [
            1, 1, 30, 0, 0, 0,          // version 1, compat 1, 30 bytes follow
            1, 0, 0, 0, b'L',           // name
            1,                          // exclusive
            2, 0, 0, 0, b'c', b'k',     // cookie
            1, 0, 0, 0, b't',           // tag
            0, 0, 0, 0,                 // description
            0, 0, 0, 0, 0, 0, 0, 0,     // duration
            0,                          // flags
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn break_op_bytes() {
        let got = break_lock(b"L", "client.4155", b"ck").unwrap();
        #[rustfmt::skip]
        let want = [
            1, 1, 20, 0, 0, 0,
            1, 0, 0, 0, b'L',
            0x08, 0x3b, 0x10, 0, 0, 0, 0, 0, 0,     // client.4155 (0x103b)
            2, 0, 0, 0, b'c', b'k',
        ];
        assert_eq!(got, want);
        assert!(break_lock(b"L", "osd.1", b"ck").is_none());
        assert!(break_lock(b"L", "client.x", b"ck").is_none());
    }
}
