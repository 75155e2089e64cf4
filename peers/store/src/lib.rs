//! Object stores for Archipelago's blockers.
//!
//! A volume is made of objects (4 MiB each, by convention of the mapper) kept in an object store.
//! This crate defines what an object store is — the [`ObjectStore`] trait — and provides two of
//! them: [`MemStore`], in memory, for the unit tests of other crates, and [`FileStore`], one file
//! per object in a directory, the store of `archip-filed`. Other stores (`archip-radosd`'s, on
//! Ceph RADOS) live in their own crates and prove themselves against the [`conformance`] suite,
//! which every store in this crate passes too (see [`object_store_conformance!`]).
//!
//! # The contract
//!
//! A store is called concurrently from many threads (`Send + Sync`, object-safe: peers hold an
//! `Arc<dyn ObjectStore>`). Every operation is atomic with respect to the others on the same
//! object, except that a `read` overlapping a `write` may see part of the write (as a disk does).
//!
//! * **Names** are [`ObjectName`]s, validated when constructed: 1..=200 bytes of
//!   `[A-Za-z0-9._:-]`, not starting with `.` or `-`. Names are validated before any path (or
//!   RADOS oid) is built from them, and a name can never escape a directory.
//! * **Objects** are sparse byte arrays with a size. Bytes past the size read as zeros; writing
//!   past the end grows the object (the gap is a hole, not stored zeros). Every operation on a
//!   missing object fails with [`ErrorKind::NotFound`] (`ENOENT`) — never silently zeros — except
//!   `write`, `write_full` and `copy`'s destination, which create it.
//! * **Durability**: [`Durability::Fua`] makes an operation durable when it returns;
//!   [`Durability::Buffered`] only when a later [`flush`](ObjectStore::flush) returns. `delete`,
//!   `hash` (its content-addressed copy) and the lock operations are always durable on return.
//! * **Atomic replacement**: `write_full` and `copy` replace their target whole: a concurrent
//!   reader, or one after a crash, sees the old content or the new, never a mix.
//! * **Content addressing**: [`hash`](ObjectStore::hash) is SHA-256 of the content with its
//!   trailing zero bytes stripped ([`ContentHasher`]), and leaves a copy of the object under the
//!   name `sha256:<64 lowercase hex>` ([`ObjectName::content_address`]) unless one exists.
//! * **Locks** are persistent named records in the store (they survive process and host crashes),
//!   in a namespace of their own: the lock `x` and the object `x` are unrelated, and `list` never
//!   shows locks. A lock is held by an opaque owner string; acquiring is idempotent for the holder.
//!   Every fresh acquisition gets a generation strictly greater than every earlier acquisition of
//!   that lock, across releases, force-breaks and re-opens: **a lock's generation never goes
//!   backwards**, so it can serve as a fencing token.
//! * **Errors** are reported, never hidden; [`StoreError::errno`] gives the errno a peer completes
//!   a request with.
//!
//! # The `filed` layout
//!
//! [`FileStore`] keeps a store in one directory:
//!
//! ```text
//! <dir>/archip-store.format   format marker: "archip-store\nformat=filed\nversion=1\n"
//! <dir>/objects/ab/cd/<name>  one file per object; ab and cd are the first two bytes of
//!                             SHA-256(name) in hex, so no directory grows past ~1/65536 of the store
//! <dir>/locks/held/<name>     exists while lock <name> is held; holds its LockRecord (text, checksummed)
//! <dir>/locks/gen/<name>      the highest generation ever granted for lock <name> (decimal)
//! .../.tmp-<instance>-<n>     temporary files (write_full, copy, hash, lock records), always next to
//!                             their destination; never listed, swept by `remove_stale_temp_files`
//! ```
//!
//! Invariants of the layout:
//!
//! * a file under `objects/` whose name starts with `.` is never an object; every other file there
//!   is one, at the place its name hashes to;
//! * an object file is replaced only by `rename` of a complete, fsynced temporary file;
//! * a lock is taken only by `link()`ing a complete, fsynced record to `locks/held/<name>` (which
//!   fails if it exists, on NFS too), so at most one owner holds it at a time;
//! * `locks/gen/<name>` only grows, and is at least the generation of the record in
//!   `locks/held/<name>` whenever that lock is free; a new generation is decided only while
//!   holding the lock, from the larger of the two.
//!
//! Several processes (and several hosts sharing the directory over NFS) may open the same store at
//! once: correctness rests on the filesystem's atomic operations (`link`, `rename`, `O_EXCL`), never
//! on in-process locks. Each process caches open file descriptors (bounded, LRU) and revalidates a
//! cached descriptor on each use, so it never keeps using one whose object was deleted or replaced.

mod error;
mod file;
mod hash;
mod lock;
mod mem;
mod name;

pub mod conformance;

pub use error::{ErrorKind, Result, StoreError};
pub use file::{FileStore, FileStoreOptions, FORMAT_VERSION};
pub use hash::{content_digest, ContentHasher};
pub use lock::{check_owner, now_unix_ms, LockGrant, LockRecord, MAX_OWNER_LEN};
pub use mem::MemStore;
pub use name::{check_prefix, ObjectName, CONTENT_ADDRESS_PREFIX};

/// When a modifying operation must be durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Durability {
    /// Durable once a later [`ObjectStore::flush`] returns (it may be sooner).
    Buffered,
    /// Durable when the call returns (force unit access).
    Fua,
}

/// The largest end offset (offset + length) of any object range: `i64::MAX`, as for files.
pub const MAX_OBJECT_END: u64 = i64::MAX as u64;

/// How often the default [`ObjectStore::lock_wait`] looks at a lock again.
pub const LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// Checks that `offset + len` does not pass [`MAX_OBJECT_END`]; returns the end.
pub fn check_range(op: &'static str, name: &ObjectName, offset: u64, len: u64) -> Result<u64> {
    match offset.checked_add(len) {
        Some(end) if end <= MAX_OBJECT_END => Ok(end),
        _ => Err(StoreError::invalid_argument(
            op,
            name.as_str(),
            format!("range {offset}+{len} ends past the largest object offset"),
        )),
    }
}

/// An object store; see the [crate documentation](crate) for the contract every store keeps, and
/// the [`conformance`] suite that checks it.
pub trait ObjectStore: Send + Sync {
    /// Fills `buf` with the bytes at `offset`; bytes past the object's end read as zeros.
    /// A missing object is `NotFound`.
    fn read(&self, name: &ObjectName, offset: u64, buf: &mut [u8]) -> Result<()>;

    /// Writes `data` at `offset`, creating the object if missing (sparse: the bytes before
    /// `offset` of a new object are a hole). An empty write creates the object if missing and
    /// changes nothing else.
    fn write(&self, name: &ObjectName, offset: u64, data: &[u8], durability: Durability) -> Result<()>;

    /// Replaces the whole object (creating it if missing) with `data`, atomically: a concurrent
    /// or post-crash reader sees the old content or the new, never a mix.
    fn write_full(&self, name: &ObjectName, data: &[u8], durability: Durability) -> Result<()>;

    /// Makes `len` bytes at `offset` read as zeros (releasing their space where the store can).
    /// The object's size does not change. A missing object is `NotFound`.
    fn zero(&self, name: &ObjectName, offset: u64, len: u64, durability: Durability) -> Result<()>;

    /// Makes every operation that completed before this call durable.
    fn flush(&self) -> Result<()>;

    /// Removes the object (durably). A missing object is `NotFound`.
    fn delete(&self, name: &ObjectName) -> Result<()>;

    /// The object's size in bytes. A missing object is `NotFound`.
    fn stat(&self, name: &ObjectName) -> Result<u64>;

    /// Makes `dst` a copy of `src`, atomically replacing `dst` if it exists.
    /// A missing `src` is `NotFound`. Copying an object onto itself changes nothing.
    fn copy(&self, src: &ObjectName, dst: &ObjectName, durability: Durability) -> Result<()>;

    /// SHA-256 of the content with trailing zero bytes stripped ([`ContentHasher`]); stores a
    /// copy of the object named [`ObjectName::content_address`] of the digest unless that object
    /// exists already (then nothing is written). The copy is durable when this returns.
    fn hash(&self, name: &ObjectName) -> Result<[u8; 32]>;

    /// The objects whose names start with `prefix` (`""`: all), sorted bytewise. Locks and
    /// temporary files are never listed. A prefix that no valid name can start with is
    /// `InvalidName`.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectName>>;

    /// Acquires `lock` for `owner` (1..=256 bytes, no newline). Idempotent: if `owner` holds it
    /// already, returns the same generation. Held by another owner: `Busy` with the holder.
    fn lock_acquire(&self, lock: &ObjectName, owner: &str) -> Result<LockGrant>;

    /// Releases `lock`. Only its holder may (else `NotOwner`), unless `force` breaks it whoever
    /// holds it. A lock nobody holds is `NotFound`.
    fn lock_release(&self, lock: &ObjectName, owner: &str, force: bool) -> Result<()>;

    /// Who holds `lock`, if anybody.
    fn lock_holder(&self, lock: &ObjectName) -> Result<Option<LockRecord>>;

    /// Waits until `lock` may have been released or broken, or until `timeout` passed,
    /// whichever is first; then the caller tries [`lock_acquire`](Self::lock_acquire) again.
    /// Returning early is allowed (the caller waits again); sleeping through a release is
    /// not. The default polls ([`LOCK_POLL`]); a store that can be told of a release (RADOS
    /// watch/notify, a condition variable in memory) overrides it.
    fn lock_wait(&self, lock: &ObjectName, timeout: std::time::Duration) -> Result<()> {
        let _ = lock;
        std::thread::sleep(timeout.min(LOCK_POLL));
        Ok(())
    }

    /// Creates `name` with `data`, atomically, only if it does not exist (else `Exists`):
    /// of two racing creators exactly one succeeds, on every host sharing the store. A store
    /// that cannot do this atomically answers `Unsupported` (callers then serialize creators
    /// with a lock).
    fn create_exclusive(&self, name: &ObjectName, data: &[u8], durability: Durability) -> Result<()> {
        let _ = (data, durability);
        Err(StoreError::new("create_exclusive", name.as_str(), ErrorKind::Unsupported))
    }

    /// Reads and writes that complete later, if the store has them (RADOS): a blocker then
    /// keeps many in flight without a thread waiting for each.
    fn async_io(&self) -> Option<&dyn AsyncIo> {
        None
    }
}

/// A buffer lent to an asynchronous operation ([`AsyncIo`]) until its completion runs.
pub struct IoBuf {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: an IoBuf is the exclusive right to `len` bytes at `ptr` until its operation
// completes (see `IoBuf::new`); which thread exercises it does not matter.
unsafe impl Send for IoBuf {}

impl IoBuf {
    /// # Safety
    /// The `len` bytes at `ptr` must stay valid for reads and writes, and nothing else may
    /// access them, until the operation this buffer is given to has called its completion.
    pub unsafe fn new(ptr: *mut u8, len: usize) -> IoBuf {
        IoBuf { ptr, len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address of byte `at` (at most `len`), to lend to a lower layer under the same
    /// contract.
    pub fn ptr_at(&self, at: usize) -> *mut u8 {
        assert!(at <= self.len, "offset {at} past a buffer of {} bytes", self.len);
        self.ptr.wrapping_add(at)
    }

    /// Fills the bytes from `at` to the end with zeros.
    pub fn zero_from(&mut self, at: usize) {
        if at < self.len {
            // SAFETY: `at..len` lies in the buffer, which this IoBuf may write exclusively
            // (the contract of `new`).
            unsafe { self.ptr.add(at).write_bytes(0, self.len - at) };
        }
    }
}

/// How an asynchronous operation ends: called exactly once, from any thread (possibly the
/// caller's, when the operation could not start). Keep it short: it may run on the store's
/// own completion thread.
pub type Completion = Box<dyn FnOnce(Result<()>) + Send>;

/// Reads and writes that return at once and complete later, for stores whose IO waits on
/// a network round trip. Same contract as [`ObjectStore::read`] and [`ObjectStore::write`].
pub trait AsyncIo: Send + Sync {
    /// Reads `buf.len()` bytes at `offset` into `buf` (zeros past the object's end).
    fn read_async(&self, name: &ObjectName, offset: u64, buf: IoBuf, done: Completion);

    /// Writes `data` at `offset`, creating the object if missing.
    fn write_async(
        &self,
        name: &ObjectName,
        offset: u64,
        data: IoBuf,
        durability: Durability,
        done: Completion,
    );
}

macro_rules! delegate_object_store {
    ($($ptr:ty),*) => {$(
        impl<T: ObjectStore + ?Sized> ObjectStore for $ptr {
            fn read(&self, name: &ObjectName, offset: u64, buf: &mut [u8]) -> Result<()> {
                (**self).read(name, offset, buf)
            }
            fn write(&self, name: &ObjectName, offset: u64, data: &[u8], d: Durability) -> Result<()> {
                (**self).write(name, offset, data, d)
            }
            fn write_full(&self, name: &ObjectName, data: &[u8], d: Durability) -> Result<()> {
                (**self).write_full(name, data, d)
            }
            fn zero(&self, name: &ObjectName, offset: u64, len: u64, d: Durability) -> Result<()> {
                (**self).zero(name, offset, len, d)
            }
            fn flush(&self) -> Result<()> {
                (**self).flush()
            }
            fn delete(&self, name: &ObjectName) -> Result<()> {
                (**self).delete(name)
            }
            fn stat(&self, name: &ObjectName) -> Result<u64> {
                (**self).stat(name)
            }
            fn copy(&self, src: &ObjectName, dst: &ObjectName, d: Durability) -> Result<()> {
                (**self).copy(src, dst, d)
            }
            fn hash(&self, name: &ObjectName) -> Result<[u8; 32]> {
                (**self).hash(name)
            }
            fn list(&self, prefix: &str) -> Result<Vec<ObjectName>> {
                (**self).list(prefix)
            }
            fn lock_acquire(&self, lock: &ObjectName, owner: &str) -> Result<LockGrant> {
                (**self).lock_acquire(lock, owner)
            }
            fn lock_release(&self, lock: &ObjectName, owner: &str, force: bool) -> Result<()> {
                (**self).lock_release(lock, owner, force)
            }
            fn lock_holder(&self, lock: &ObjectName) -> Result<Option<LockRecord>> {
                (**self).lock_holder(lock)
            }
            fn lock_wait(&self, lock: &ObjectName, timeout: std::time::Duration) -> Result<()> {
                (**self).lock_wait(lock, timeout)
            }
            fn create_exclusive(&self, name: &ObjectName, data: &[u8], durability: Durability) -> Result<()> {
                (**self).create_exclusive(name, data, durability)
            }
            fn async_io(&self) -> Option<&dyn AsyncIo> {
                (**self).async_io()
            }
        }
    )*};
}

delegate_object_store!(&T, Box<T>, std::sync::Arc<T>);
