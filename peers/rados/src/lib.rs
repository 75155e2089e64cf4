//! Archipelago on Ceph RADOS: a small safe wrapper over librados, and [`RadosStore`], the
//! [`ObjectStore`](archip_store::ObjectStore) of `archip-radosd`.
//!
//! # The FFI surface
//!
//! `archip-rados-sys` declares, by hand from Debian's `librados.h` (Ceph 16.2 "Pacific"),
//! the librados C calls used here (its crate documentation has the table); its build
//! script links `librados.so`. This crate wraps them in safe types, and every `unsafe` block
//! says why it is sound:
//!
//! * [`Cluster`] — a connected `rados_t` (`rados_create`, `rados_conf_read_file`,
//!   `rados_conf_set`, `rados_connect`, `rados_shutdown` on drop), shared by `Arc`;
//!   blocklisting (`rados_blocklist_add`), its identity (`rados_get_instance_id`,
//!   `rados_getaddrs`), pool lookup.
//! * [`IoCtx`] — a `rados_ioctx_t` on one pool and namespace, holding its `Cluster` alive:
//!   object I/O, compound operations, listing, lock inspection.
//! * [`ReadOp`] / [`WriteOp`] — compound operations (`rados_read_op_*`, `rados_write_op_*`):
//!   their steps apply atomically on one object (all or nothing for writes). They borrow
//!   the buffers they read into or write from, and own the slots librados writes results
//!   into, so nothing they lend can go away before the operation completes.
//! * Completions — private: every operation is submitted asynchronously and waited for.
//!
//! # What is asynchronous
//!
//! Every object operation (read, write, write_full, remove, stat, compound read and write
//! ops) is submitted with the `rados_aio_*` calls and a completion
//! (`rados_aio_create_completion2`), then the calling thread waits on that completion
//! (`rados_aio_wait_for_complete`): the call returns only once librados is done with the
//! buffers it was lent. No lock of ours is held while an operation is in flight, so a
//! daemon keeps as many operations in flight as it has threads calling the store — the
//! blocker's worker threads (`--threads` per port) — over one connection. Listing
//! (`rados_nobjects_list_*`), lock listing (`rados_list_lockers`), blocklisting and
//! connecting are synchronous librados calls; connecting runs on a helper thread so that
//! its time limit is exact.
//!
//! # ObjectStore operations → librados
//!
//! Objects live in one namespace of one pool, one RADOS object per object, its oid the
//! object's name (at most 200 bytes; OSDs accept 2048). RADOS acknowledges a write once it
//! is durable on every replica, so `Durability::Buffered` and `Fua` are the same here.
//!
//! | operation | librados |
//! |---|---|
//! | `read` | one read op: `rados_read_op_stat` + `rados_read_op_read` straight into the caller's buffer (`rados_aio_read_op_operate`); the size and the bytes come from the same atomic operation, bytes past the size are zero-filled, a short read inside the object reads on (`ENOENT`: `NotFound`) |
//! | `write` | `rados_aio_write` (an empty write: `rados_write_op_create(IDEMPOTENT)`, which creates without extending) |
//! | `write_full` | `rados_aio_write_full` (atomic replacement) |
//! | `zero` | `rados_aio_stat` for the size and version, then one write op: `rados_write_op_assert_version` + `rados_write_op_zero` of the range clamped to the size + `rados_write_op_truncate` back to the size (the OSD's zero truncates a range that reaches the end, and refuses ranges past its largest object size); a version that moved in between fails the op, which is tried again. Never changes the size; a missing object is `NotFound` |
//! | `flush` | `rados_aio_flush` (every store call already waited for its durable acknowledgement) |
//! | `delete` | `rados_aio_remove` |
//! | `stat` | `rados_aio_stat` |
//! | `copy` | read the source whole (stat + read, one atomic op, again if its size changed), then one write op on the destination: `rados_write_op_write_full` of the content without its trailing zeros + `rados_write_op_truncate` to the full size (a hole, not stored zeros) — atomic for readers |
//! | `hash` | read whole as for copy, [`ContentHasher`](archip_store::ContentHasher) (SHA-256 without trailing zeros), then one write op on `sha256:<hex>`: `rados_write_op_create(EXCLUSIVE)` + write_full + truncate; `EEXIST` means a copy exists and nothing was written |
//! | `create_exclusive` | one write op: `rados_write_op_create(EXCLUSIVE)` + `rados_write_op_write_full`; `EEXIST` is `Exists` |
//! | `list` | `rados_nobjects_list_open/next2/close` over the namespace, keeping names with the prefix, skipping names that start with `.` (locks) or are not valid object names, sorted; a listing error is returned, never a partial list |
//! | `lock_acquire`, `lock_release`, `lock_holder` | see below |
//!
//! Missing objects are [`NotFound`](archip_store::ErrorKind::NotFound) everywhere (`ENOENT`),
//! other errors keep their errno.
//!
//! # Locks, generations and fencing
//!
//! The lock `L` is the RADOS object `.lock.L` in the store's namespace (no object name starts
//! with `.`, so locks and objects never collide and `list` never shows a lock). It carries:
//!
//! * the RADOS exclusive lock [`RADOS_LOCK_NAME`] (the OSD's `cls_lock`, the lock
//!   `rados_lock_exclusive` takes and `rados lock info` shows), whose **cookie is the owner**
//!   string — the RADOS lock is the source of truth for "held";
//! * xattr `archip.generation`: the highest generation ever granted (never decreases);
//! * xattr `archip.holder`: `owner\ngeneration\nacquired_unix_ms\n` of the current grant,
//!   empty when free.
//!
//! **Acquire** reads the xattrs; if the record names the caller and `rados_list_lockers`
//! confirms the RADOS lock is held under that cookie, it returns the same generation
//! (idempotent, also across a restart of the daemon: the owner string, not the RADOS client,
//! is the identity). Otherwise it sends **one atomic write op**: `cmpxattr(generation ==
//! what was read)` (or `create(EXCLUSIVE)` for a new lock object), `exec lock.lock`
//! (exclusive, no expiry; `EBUSY` if anyone holds it), `setxattr generation = previous + 1`,
//! `setxattr holder`. So the lock, its generation and its record change together or not at
//! all, and two acquisitions can never get the same generation (a lost race is `ECANCELED`
//! and is retried). `EBUSY` answers [`Busy`](archip_store::ErrorKind::Busy) with the holder.
//!
//! **Release** looks up the holder with `rados_list_lockers` (client `client.N`, cookie,
//! address). Another owner's lock needs `force` (else `NotOwner`). When forced and the
//! holder is another RADOS client, that client is first **blocklisted**
//! (`rados_blocklist_add` of the locker's address, as RBD does): once that returns, the
//! OSDs refuse every operation of the old holder with `ESHUTDOWN`, and none of its writes
//! lands after one sent by anyone afterwards. Then one atomic write op `exec lock.break_lock
//! (client.N, cookie)` + `setxattr holder = ""` ends the grant. A holder that is this very
//! client is not blocklisted (one cannot fence oneself; it only happens in tests and when
//! one daemon breaks a lock it holds itself). A blocklisted store stays fenced: it does not
//! reconnect on its own (that would undo the fence); it logs once and fails every object
//! operation with `ESHUTDOWN` until its daemon is restarted with a new client. (Listing is
//! a placement-group operation, which OSDs still serve to a blocklisted client: it only
//! reads names.)
//!
//! **Holder** reads `rados_list_lockers` and the record; they change together, so a mismatch
//! means a change between the two reads and they are read again.
//!
//! The cls_lock calls go through `rados_write_op_exec` with their arguments in Ceph's
//! encoding (module `cls_lock`, checked byte by byte in its tests), which is what makes them
//! one atomic operation with the generation update; the plain `rados_lock_exclusive` /
//! `rados_break_lock` calls take or break the very same lock.
//!
//! # Connecting
//!
//! [`Cluster::connect`] fails within its `connect_timeout` when no monitor answers ("no
//! monitor at ... answered within N ms; is the cluster running?"), says so when
//! authentication fails or there is no keyring, and [`Cluster::ioctx`] says "pool X does not
//! exist". OSD and monitor operations time out after `op_timeout` (`rados_osd_op_timeout`,
//! `rados_mon_op_timeout`) instead of hanging on an unavailable cluster.
//!
//! # Limits
//!
//! * An object is at most the OSDs' `osd_max_object_size` (128 MiB by default) and one write
//!   at most `osd_max_write_size` (90 MiB): beyond, `EFBIG`. Blocks are 4 MiB.
//! * `copy` and `hash` hold the whole object in memory (they read it in one operation, so
//!   that they see one version of it).
//! * `list` walks the whole namespace (RADOS has no index by prefix).
//! * Locks are managed through this store only: a RADOS lock broken with `rados lock break`
//!   leaves a holder record without a lock, which `lock_holder` then ignores and the next
//!   acquisition replaces.
//!
//! # Waiting for a lock: watch/notify
//!
//! `lock_wait` watches the lock object (`rados_watch2`), then looks at its lockers: free
//! already, it returns; otherwise it sleeps until a notify (or a watch error, after which
//! notifies may have been lost) or its timeout, then unwatches and flushes the callbacks.
//! `lock_release` (a release or a forced break) notifies the lock object's watchers
//! (`rados_notify2`, waiting ≤ 500 ms for their acknowledgements; each watcher acknowledges
//! in its callback). Watching before looking means no release is slept through. A never-taken
//! lock has no object: the watch fails with `ENOENT` and the lock is free.
//!
//! # Tests
//!
//! The crate's tests run on a real throwaway cluster ([`test_cluster`]): the unchanged
//! conformance suite (`tests/conformance.rs`, each case in a namespace of its own), and
//! `tests/rados.rs` (large objects, fencing of a broken lock's holder while it writes,
//! listing errors, the RADOS lock underneath, a lock waiter woken by the release's notify,
//! bad configurations, names at the limit).

mod cls_lock;
mod error;
mod rados;
mod store;
pub mod test_cluster;

pub use error::{RadosError, Result};
pub use rados::{
    Cluster, Completed, ConnectOptions, IoCtx, LockInfo, Locker, ObjectList, ReadOp, ReadResult, Watch,
    WriteOp,
};
pub use store::{RadosStore, RadosStoreOptions, LOCK_OBJECT_PREFIX, RADOS_LOCK_NAME};
