//! [`RadosStore`]: the [`ObjectStore`] on a RADOS pool. The mapping of each operation to
//! librados calls, and the lock design, are in the crate documentation.

use std::ffi::{CStr, CString};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use archip_store::{
    check_owner, check_prefix, check_range, now_unix_ms, AsyncIo, Completion, ContentHasher, Durability,
    ErrorKind, IoBuf, LockGrant, LockRecord, ObjectName, ObjectStore, Result, StoreError,
};

use crate::cls_lock;
use crate::error::RadosError;
use crate::rados::{Cluster, IoCtx, Locker, ReadOp, StatRead, WriteOp};

/// The prefix of lock objects' names. No object name starts with `.`, so a lock object can
/// never collide with an object, and `list` skips every name starting with `.`.
pub const LOCK_OBJECT_PREFIX: &str = ".lock.";
/// The name of the RADOS (cls_lock) lock taken on each lock object.
pub const RADOS_LOCK_NAME: &CStr = c"archipelago";
/// The tag of that lock.
const RADOS_LOCK_TAG: &[u8] = b"archipelago";
/// The description of that lock (shown by `rados lock info`).
const RADOS_LOCK_DESCRIPTION: &[u8] = b"archipelago lock";
/// The lock object's xattr holding the highest generation ever granted (decimal).
const XATTR_GENERATION: &CStr = c"archip.generation";
/// The lock object's xattr holding the current grant (`owner\ngeneration\nacquired_ms\n`),
/// empty when the lock is free.
const XATTR_HOLDER: &CStr = c"archip.holder";

/// How long a release waits for the acquirers watching the lock to acknowledge its notify.
/// They acknowledge at once; only a watcher that died meanwhile makes the release wait this.
const RELEASE_NOTIFY_TIMEOUT: Duration = Duration::from_millis(500);

/// Rounds of optimistic retries (a lost race on a lock's generation, an object that changed
/// size while read whole) before giving up with `EAGAIN`.
const RETRIES: usize = 64;

/// Tunables of a [`RadosStore`].
#[derive(Debug, Clone, Default)]
pub struct RadosStoreOptions {
    /// How long a client whose lock was broken stays blocklisted; zero: the cluster's default
    /// (`mon_osd_blocklist_default_expire`, one hour).
    pub blocklist_expire: Duration,
}

/// An object store in one namespace of one RADOS pool: one RADOS object per object.
pub struct RadosStore {
    io: Arc<IoCtx>,
    options: RadosStoreOptions,
    /// Set once this client was found blocklisted (logged once, not per request).
    fenced: Arc<AtomicBool>,
}

impl std::fmt::Debug for RadosStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RadosStore").field("io", &self.io).field("options", &self.options).finish()
    }
}

fn oid(name: &ObjectName) -> CString {
    CString::new(name.as_str()).expect("object names hold no NUL byte")
}

fn lock_oid(lock: &ObjectName) -> CString {
    CString::new(format!("{LOCK_OBJECT_PREFIX}{lock}")).expect("object names hold no NUL byte")
}

fn encode_record(r: &LockRecord) -> Vec<u8> {
    format!("{}\n{}\n{}\n", r.owner, r.generation, r.acquired_unix_ms).into_bytes()
}

fn decode_record(bytes: &[u8]) -> std::result::Result<Option<LockRecord>, String> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "the holder record is not UTF-8".to_string())?;
    let fields: Vec<&str> = text.split('\n').collect();
    match fields.as_slice() {
        [owner, generation, acquired, ""] if !owner.is_empty() => Ok(Some(LockRecord {
            owner: (*owner).to_string(),
            generation: generation
                .parse()
                .map_err(|_| format!("bad generation {generation:?} in the holder record"))?,
            acquired_unix_ms: acquired
                .parse()
                .map_err(|_| format!("bad time {acquired:?} in the holder record"))?,
        })),
        _ => Err(format!("malformed holder record {text:?}")),
    }
}

/// A lock object's state, read in one operation.
struct LockState {
    exists: bool,
    /// The generation xattr exactly as stored (empty if absent), for the compare-and-swap.
    generation_raw: Vec<u8>,
    generation: u64,
    holder: Option<LockRecord>,
}

/// [`RadosStore::err`] for a context and its fenced flag.
fn map_err(io: &IoCtx, fenced: &AtomicBool, op: &'static str, name: &str, e: RadosError) -> StoreError {
    match e.errno() {
        libc::ENOENT => StoreError::not_found(op, name),
        errno => errno_err(io, fenced, op, name, errno),
    }
}

/// [`RadosStore::io_err`] for a context and its fenced flag.
fn errno_err(io: &IoCtx, fenced: &AtomicBool, op: &'static str, name: &str, errno: i32) -> StoreError {
    if errno == libc::ESHUTDOWN && !fenced.swap(true, Ordering::Relaxed) {
        tracing::error!(
            pool = io.pool(),
            client = %io.cluster().entity_name(),
            "this client is blocklisted by the cluster (a lock it held was broken): every operation \
             fails with ESHUTDOWN until the daemon is restarted"
        );
    }
    StoreError::io(op, name, io::Error::from_raw_os_error(errno))
}

/// An asynchronous read in flight: a stat + read op, sent again for the rest after a short
/// read inside the object (as the blocking read does).
struct AsyncRead {
    io: Arc<IoCtx>,
    fenced: Arc<AtomicBool>,
    name: ObjectName,
    oid: CString,
    offset: u64,
    buf: IoBuf,
    /// Bytes read so far.
    done_bytes: usize,
    attempts: usize,
    done: Completion,
}

impl AsyncRead {
    fn start(self: Box<Self>) {
        let (io, oid) = (self.io.clone(), self.oid.clone());
        let at = self.offset + self.done_bytes as u64;
        let (ptr, len) = (self.buf.ptr_at(self.done_bytes), self.buf.len() - self.done_bytes);
        // SAFETY: `ptr..ptr+len` lies in `buf`, lent to this read until `done` runs (IoBuf's
        // contract); the closure keeps `buf` (and so that right) until then.
        unsafe { io.aio_stat_read(&oid, at, ptr, len, move |result| self.finished(result)) };
    }

    fn finished(mut self: Box<Self>, result: std::result::Result<StatRead, RadosError>) {
        let read = match result {
            Ok(read) => read,
            Err(e) => {
                let err = map_err(&self.io, &self.fenced, "read", self.name.as_str(), e);
                return (self.done)(Err(err));
            }
        };
        let at = self.offset + self.done_bytes as u64;
        let want = self.buf.len() - self.done_bytes;
        let expected = want.min(usize::try_from(read.size.saturating_sub(at)).unwrap_or(usize::MAX));
        self.done_bytes += read.bytes;
        if read.bytes >= expected {
            self.buf.zero_from(self.done_bytes); // past the end of the object
            return (self.done)(Ok(()));
        }
        // A short read inside the object: read on from there.
        self.attempts += 1;
        if self.attempts >= RETRIES {
            let err = errno_err(&self.io, &self.fenced, "read", self.name.as_str(), libc::EIO);
            return (self.done)(Err(err));
        }
        self.start();
    }
}

impl AsyncIo for RadosStore {
    fn read_async(&self, name: &ObjectName, offset: u64, buf: IoBuf, done: Completion) {
        if let Err(e) = check_range("read", name, offset, buf.len() as u64) {
            return done(Err(e));
        }
        if buf.is_empty() {
            return done(Ok(()));
        }
        Box::new(AsyncRead {
            io: self.io.clone(),
            fenced: self.fenced.clone(),
            name: name.clone(),
            oid: oid(name),
            offset,
            buf,
            done_bytes: 0,
            attempts: 0,
            done,
        })
        .start();
    }

    fn write_async(
        &self,
        name: &ObjectName,
        offset: u64,
        data: IoBuf,
        durability: Durability,
        done: Completion,
    ) {
        if data.is_empty() {
            // Creating an empty object is rare: done here, waiting.
            return done(self.write(name, offset, &[], durability));
        }
        if let Err(e) = check_range("write", name, offset, data.len() as u64) {
            return done(Err(e));
        }
        let target = oid(name);
        let (io, fenced, name) = (self.io.clone(), self.fenced.clone(), name.clone());
        let (ptr, len) = (data.ptr_at(0), data.len());
        let finished = move |result: std::result::Result<(), RadosError>| {
            // `data` was lent until now: the closure holds it to here.
            let _lent = data;
            done(result.map_err(|e| errno_err(&io, &fenced, "write", name.as_str(), e.errno())))
        };
        // SAFETY: `ptr..ptr+len` is `data`, lent to this write until `done` runs (IoBuf's
        // contract); the closure keeps it until then.
        unsafe { self.io.aio_write(&target, offset, ptr, len, finished) };
    }
}

impl RadosStore {
    /// The store in `namespace` (`""`: the default namespace) of `pool`.
    pub fn open(
        cluster: &Arc<Cluster>,
        pool: &str,
        namespace: &str,
        options: RadosStoreOptions,
    ) -> std::result::Result<RadosStore, RadosError> {
        let io = cluster.ioctx(pool, namespace)?;
        Ok(RadosStore { io: Arc::new(io), options, fenced: Arc::new(AtomicBool::new(false)) })
    }

    /// The I/O context the store works in.
    pub fn ioctx(&self) -> &IoCtx {
        &self.io
    }

    /// Checks that this client may read the pool (a stat of an object that never exists):
    /// a daemon calls this at start so that missing caps fail the start, clearly, rather
    /// than every request later.
    pub fn check_access(&self) -> std::result::Result<(), RadosError> {
        match self.io.stat(c".archip-access-check") {
            Ok(_) => Ok(()),
            Err(e) if e.is(libc::ENOENT) => Ok(()),
            Err(e) if e.is(libc::EPERM) || e.is(libc::EACCES) => Err(e.with_hint(format!(
                "client.{} may not use pool {} (namespace {:?}): check its OSD caps",
                self.io.cluster().client_id(),
                self.io.pool(),
                self.io.namespace()
            ))),
            Err(e) => Err(e.with_hint(format!("pool {} did not answer", self.io.pool()))),
        }
    }

    /// Maps a librados error of `op` on `name`: `ENOENT` is [`ErrorKind::NotFound`],
    /// `ESHUTDOWN` (this client is blocklisted) is logged once and kept as the errno.
    fn err(&self, op: &'static str, name: &str, e: RadosError) -> StoreError {
        map_err(&self.io, &self.fenced, op, name, e)
    }

    /// An error that keeps its errno (no `NotFound` mapping).
    fn io_err(&self, op: &'static str, name: &str, errno: i32) -> StoreError {
        errno_err(&self.io, &self.fenced, op, name, errno)
    }

    fn stat_for(&self, op: &'static str, name: &ObjectName) -> Result<(u64, u64)> {
        self.io.stat(&oid(name)).map_err(|e| self.err(op, name.as_str(), e))
    }

    /// The whole object, read atomically (its size and content from one read operation).
    fn read_whole(&self, op: &'static str, name: &ObjectName) -> Result<Vec<u8>> {
        let oid = oid(name);
        let (mut size, _) = self.stat_for(op, name)?;
        for _ in 0..RETRIES {
            let len = usize::try_from(size).map_err(|_| {
                StoreError::invalid_argument(op, name.as_str(), format!("object of {size} bytes"))
            })?;
            let mut buf = vec![0u8; len];
            let mut read = ReadOp::new();
            read.stat().read(0, &mut buf);
            let r = self.io.operate_read(&oid, read).map_err(|e| self.err(op, name.as_str(), e))?;
            let now = r.size.unwrap_or(0);
            if now == size && r.bytes_read[0] == len {
                return Ok(buf);
            }
            size = now; // it changed meanwhile: again, with its new size
        }
        Err(self.io_err(op, name.as_str(), libc::EAGAIN))
    }

    /// Replaces `name` with `data` in one write op, storing the trailing zeros as a hole
    /// (write_full of the rest, then truncate to the full size). If `exclusive`, the op
    /// fails with `EEXIST` if the object exists, and writes nothing.
    fn put_sparse(
        &self,
        name: &ObjectName,
        data: &[u8],
        exclusive: bool,
    ) -> std::result::Result<(), RadosError> {
        let keep = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        let mut op = WriteOp::new();
        if exclusive {
            op.create(true);
        }
        op.write_full(&data[..keep]);
        if keep < data.len() {
            op.truncate(data.len() as u64);
        }
        self.io.operate_write(&oid(name), op).map(drop)
    }

    /// Zeroes `[offset, offset + len)` of the object, keeping its size. The OSD's zero op
    /// truncates the object when the range reaches its end (and refuses ranges past the
    /// largest object size), so the range is clamped to the size read by a stat, and the
    /// write op asserts the object's version from that stat (a change in between makes it
    /// fail, and it is tried again) and ends with a truncate back to that size.
    fn zero_in_place(&self, name: &ObjectName, offset: u64, len: u64) -> Result<()> {
        for _ in 0..RETRIES {
            let (size, version) = self.stat_for("zero", name)?;
            if len == 0 || offset >= size {
                return Ok(());
            }
            let mut op = WriteOp::new();
            op.assert_version(version).zero(offset, len.min(size - offset)).truncate(size);
            match self.io.operate_write(&oid(name), op) {
                Ok(_) => return Ok(()),
                Err(e) if e.is(libc::ERANGE) || e.is(libc::EOVERFLOW) => continue,
                Err(e) => return Err(self.err("zero", name.as_str(), e)),
            }
        }
        Err(self.io_err("zero", name.as_str(), libc::EAGAIN))
    }

    // ---- locks ---------------------------------------------------------------------------

    fn lock_state(&self, op: &'static str, lock: &ObjectName, oid: &CStr) -> Result<LockState> {
        let mut read = ReadOp::new();
        read.getxattrs();
        let xattrs = match self.io.operate_read(oid, read) {
            Err(e) if e.is(libc::ENOENT) => {
                return Ok(LockState {
                    exists: false,
                    generation_raw: Vec::new(),
                    generation: 0,
                    holder: None,
                })
            }
            Err(e) => return Err(self.err(op, lock.as_str(), e)),
            Ok(r) => r.xattrs.unwrap_or_default(),
        };
        let get = |name: &CStr| {
            xattrs
                .iter()
                .find(|(k, _)| k.as_bytes() == name.to_bytes())
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let corrupt = |reason: String| StoreError::corrupt(op, lock.as_str(), reason);
        let generation_raw = get(XATTR_GENERATION);
        let generation = match generation_raw.as_slice() {
            [] => 0,
            raw => std::str::from_utf8(raw)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| corrupt(format!("bad generation {:?}", String::from_utf8_lossy(raw))))?,
        };
        let holder = decode_record(&get(XATTR_HOLDER)).map_err(corrupt)?;
        Ok(LockState { exists: true, generation_raw, generation, holder })
    }

    /// The lock's RADOS holders; none if the lock object does not exist.
    fn lockers(&self, op: &'static str, lock: &ObjectName, oid: &CStr) -> Result<Vec<Locker>> {
        match self.io.list_lockers(oid, RADOS_LOCK_NAME) {
            Ok(info) => Ok(info.lockers),
            Err(e) if e.is(libc::ENOENT) => Ok(Vec::new()),
            Err(e) => Err(self.err(op, lock.as_str(), e)),
        }
    }

    /// Who holds the lock: the holder record, checked against the RADOS lock's holder (the
    /// two change together, atomically; reading them takes two operations, so a mismatch
    /// means a change in between, and they are read again).
    fn holder(&self, op: &'static str, lock: &ObjectName, oid: &CStr) -> Result<Option<LockRecord>> {
        let mut seen = None;
        for _ in 0..5 {
            let lockers = self.lockers(op, lock, oid)?;
            let Some(locker) = lockers.first() else { return Ok(None) };
            let state = self.lock_state(op, lock, oid)?;
            match state.holder {
                Some(h) if h.owner == locker.cookie => return Ok(Some(h)),
                // A RADOS lock without our record: taken outside Archipelago.
                _ => {
                    seen = Some(LockRecord {
                        owner: locker.cookie.clone(),
                        generation: state.generation,
                        acquired_unix_ms: 0,
                    })
                }
            }
        }
        Ok(seen)
    }

    /// Blocklists the client holding a lock that is being broken, before breaking it (as
    /// RBD does), so that the cluster refuses that client's writes from now on.
    fn fence(&self, lock: &ObjectName, locker: &Locker) -> Result<()> {
        let expire = u32::try_from(self.options.blocklist_expire.as_secs()).unwrap_or(u32::MAX);
        tracing::warn!(
            lock = %lock,
            holder = %locker.cookie,
            client = %locker.client,
            addr = %locker.addr,
            "breaking another client's lock: blocklisting that client first"
        );
        self.io.cluster().blocklist_add(&locker.addr, expire).map_err(|e| {
            StoreError::io(
                "lock_release",
                lock.as_str(),
                io::Error::new(
                    e.to_io_error().kind(),
                    format!(
                        "could not blocklist {} at {} (not breaking its lock): {e}",
                        locker.client, locker.addr
                    ),
                ),
            )
        })
    }
}

impl ObjectStore for RadosStore {
    fn async_io(&self) -> Option<&dyn AsyncIo> {
        Some(self)
    }

    fn read(&self, name: &ObjectName, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range("read", name, offset, buf.len() as u64)?;
        let oid = oid(name);
        let mut done = 0usize;
        for _ in 0..RETRIES {
            let at = offset + done as u64;
            let want = buf.len() - done;
            let mut read = ReadOp::new();
            read.stat().read(at, &mut buf[done..]);
            let r = self.io.operate_read(&oid, read).map_err(|e| self.err("read", name.as_str(), e))?;
            let size = r.size.unwrap_or(0);
            let expected = want.min(usize::try_from(size.saturating_sub(at)).unwrap_or(usize::MAX));
            let got = r.bytes_read[0];
            done += got;
            if got >= expected {
                buf[done..].fill(0); // past the end of the object
                return Ok(());
            }
            // A short read inside the object: read on from there.
        }
        Err(self.io_err("read", name.as_str(), libc::EIO))
    }

    fn write(&self, name: &ObjectName, offset: u64, data: &[u8], _durability: Durability) -> Result<()> {
        check_range("write", name, offset, data.len() as u64)?;
        let result = if data.is_empty() {
            // Creates the object if missing; a zero-length write could extend it.
            let mut op = WriteOp::new();
            op.create(false);
            self.io.operate_write(&oid(name), op).map(drop)
        } else {
            self.io.write(&oid(name), offset, data)
        };
        result.map_err(|e| self.io_err("write", name.as_str(), e.errno()))
    }

    fn write_full(&self, name: &ObjectName, data: &[u8], _durability: Durability) -> Result<()> {
        self.io.write_full(&oid(name), data).map_err(|e| self.io_err("write_full", name.as_str(), e.errno()))
    }

    fn zero(&self, name: &ObjectName, offset: u64, len: u64, _durability: Durability) -> Result<()> {
        check_range("zero", name, offset, len)?;
        self.zero_in_place(name, offset, len)
    }

    fn flush(&self) -> Result<()> {
        // Every operation of this store waited for its acknowledgement, which RADOS sends
        // once the write is durable on every replica: nothing is left to wait for but
        // operations other users of this I/O context have in flight.
        self.io.flush().map_err(|e| self.io_err("flush", "", e.errno()))
    }

    fn delete(&self, name: &ObjectName) -> Result<()> {
        self.io.remove(&oid(name)).map_err(|e| self.err("delete", name.as_str(), e))
    }

    fn stat(&self, name: &ObjectName) -> Result<u64> {
        self.stat_for("stat", name).map(|(size, _)| size)
    }

    fn copy(&self, src: &ObjectName, dst: &ObjectName, _durability: Durability) -> Result<()> {
        if src == dst {
            return self.stat_for("copy", src).map(drop);
        }
        let data = self.read_whole("copy", src)?;
        self.put_sparse(dst, &data, false).map_err(|e| self.io_err("copy", dst.as_str(), e.errno()))
    }

    fn hash(&self, name: &ObjectName) -> Result<[u8; 32]> {
        let data = self.read_whole("hash", name)?;
        let mut hasher = ContentHasher::new();
        hasher.update(&data);
        let digest = hasher.finish();
        let ca = ObjectName::content_address(&digest);
        if &ca == name {
            return Ok(digest);
        }
        // Created only if absent: the exclusive create and the content are one operation.
        match self.put_sparse(&ca, &data, true) {
            Ok(()) => Ok(digest),
            Err(e) if e.is(libc::EEXIST) => Ok(digest),
            Err(e) => Err(self.io_err("hash", ca.as_str(), e.errno())),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectName>> {
        check_prefix("list", prefix)?;
        let context = || format!("prefix {prefix:?}");
        let objects = self.io.list().map_err(|e| self.io_err("list", &context(), e.errno()))?;
        let mut names = Vec::new();
        for entry in objects {
            let entry = entry.map_err(|e| self.io_err("list", &context(), e.errno()))?;
            // The store's own objects (locks) start with '.'; no object name does.
            if entry.first() == Some(&b'.') || !entry.starts_with(prefix.as_bytes()) {
                continue;
            }
            match String::from_utf8(entry).ok().and_then(|s| ObjectName::new(s).ok()) {
                Some(name) => names.push(name),
                None => tracing::debug!(
                    pool = self.io.pool(),
                    "list: skipping an object that is not an Archipelago name"
                ),
            }
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn lock_acquire(&self, lock: &ObjectName, owner: &str) -> Result<LockGrant> {
        const OP: &str = "lock_acquire";
        check_owner(OP, lock.as_str(), owner)?;
        let oid = lock_oid(lock);
        for _ in 0..RETRIES {
            let state = self.lock_state(OP, lock, &oid)?;
            if let Some(h) = &state.holder {
                if h.owner == owner && self.lockers(OP, lock, &oid)?.iter().any(|l| l.cookie == owner) {
                    return Ok(LockGrant { generation: h.generation });
                }
            }
            let previous = state.generation.max(state.holder.as_ref().map_or(0, |h| h.generation));
            let generation = previous
                .checked_add(1)
                .ok_or_else(|| StoreError::corrupt(OP, lock.as_str(), "the generation is at its maximum"))?;
            let record = encode_record(&LockRecord {
                owner: owner.to_string(),
                generation,
                acquired_unix_ms: now_unix_ms(),
            });
            let generation_text = generation.to_string();
            let lock_input = cls_lock::lock_exclusive(
                RADOS_LOCK_NAME.to_bytes(),
                owner.as_bytes(),
                RADOS_LOCK_TAG,
                RADOS_LOCK_DESCRIPTION,
            );
            // One atomic operation: the generation has not moved since it was read, the RADOS
            // lock is free and becomes ours, and the new generation and holder are recorded.
            let mut op = WriteOp::new();
            if state.exists {
                op.cmpxattr_eq(XATTR_GENERATION, &state.generation_raw);
            } else {
                op.create(true);
            }
            op.exec(cls_lock::CLASS, cls_lock::METHOD_LOCK, lock_input)
                .setxattr(XATTR_GENERATION, generation_text.as_bytes())
                .setxattr(XATTR_HOLDER, &record);
            match self.io.operate_write(&oid, op) {
                Ok(_) => return Ok(LockGrant { generation }),
                // Another acquisition (or a creation, or a removal) came in between: look again.
                Err(e)
                    if e.is(libc::ECANCELED)
                        || e.is(libc::ENOENT)
                        || (e.is(libc::EEXIST) && !state.exists) => {}
                Err(e) if e.is(libc::EEXIST) => {
                    // This client holds the RADOS lock under this owner, yet the record says
                    // otherwise (it was changed outside Archipelago): record the grant.
                    let mut op = WriteOp::new();
                    op.cmpxattr_eq(XATTR_GENERATION, &state.generation_raw)
                        .setxattr(XATTR_GENERATION, generation_text.as_bytes())
                        .setxattr(XATTR_HOLDER, &record);
                    match self.io.operate_write(&oid, op) {
                        Ok(_) => return Ok(LockGrant { generation }),
                        Err(e) if e.is(libc::ECANCELED) => {}
                        Err(e) => return Err(self.io_err(OP, lock.as_str(), e.errno())),
                    }
                }
                Err(e) if e.is(libc::EBUSY) => match self.holder(OP, lock, &oid)? {
                    Some(holder) if holder.owner != owner => {
                        return Err(StoreError::new(OP, lock.as_str(), ErrorKind::Busy { holder }))
                    }
                    // Released meanwhile, or held under this owner by another client: again.
                    _ => {}
                },
                Err(e) => return Err(self.io_err(OP, lock.as_str(), e.errno())),
            }
        }
        Err(self.io_err(OP, lock.as_str(), libc::EAGAIN))
    }

    fn lock_release(&self, lock: &ObjectName, owner: &str, force: bool) -> Result<()> {
        const OP: &str = "lock_release";
        check_owner(OP, lock.as_str(), owner)?;
        let oid = lock_oid(lock);
        for _ in 0..RETRIES {
            let lockers = self.lockers(OP, lock, &oid)?;
            let Some(locker) = lockers.first() else { return Err(StoreError::not_found(OP, lock.as_str())) };
            if locker.cookie != owner {
                if !force {
                    let holder = self.holder(OP, lock, &oid)?.unwrap_or_else(|| LockRecord {
                        owner: locker.cookie.clone(),
                        generation: 0,
                        acquired_unix_ms: 0,
                    });
                    return Err(StoreError::new(OP, lock.as_str(), ErrorKind::NotOwner { holder }));
                }
                if locker.client != self.io.cluster().entity_name() {
                    self.fence(lock, locker)?;
                }
            }
            let Some(input) =
                cls_lock::break_lock(RADOS_LOCK_NAME.to_bytes(), &locker.client, locker.cookie.as_bytes())
            else {
                return Err(StoreError::corrupt(
                    OP,
                    lock.as_str(),
                    format!("held by {:?}, not a client", locker.client),
                ));
            };
            // One atomic operation: that holder's hold goes, and so does the holder record.
            let mut op = WriteOp::new();
            op.exec(cls_lock::CLASS, cls_lock::METHOD_BREAK, input).setxattr(XATTR_HOLDER, b"");
            match self.io.operate_write(&oid, op) {
                Ok(_) => {
                    // Wake the acquirers waiting in lock_wait. Best effort: one that misses it
                    // (its watch failed) still looks again when its wait times out.
                    if let Err(e) = self.io.notify(&oid, RELEASE_NOTIFY_TIMEOUT) {
                        tracing::debug!(lock = lock.as_str(), error = %e, "notifying the lock's waiters");
                    }
                    return Ok(());
                }
                Err(e) if e.is(libc::ENOENT) => {} // that hold went meanwhile: look again
                Err(e) => return Err(self.io_err(OP, lock.as_str(), e.errno())),
            }
        }
        Err(self.io_err(OP, lock.as_str(), libc::EAGAIN))
    }

    fn lock_holder(&self, lock: &ObjectName) -> Result<Option<LockRecord>> {
        self.holder("lock_holder", lock, &lock_oid(lock))
    }

    /// Watches the lock object, then looks at the lock: a release after that look notifies
    /// the watch (lock_release), one before it is seen by the look, so none is slept through.
    fn lock_wait(&self, lock: &ObjectName, timeout: Duration) -> Result<()> {
        const OP: &str = "lock_wait";
        let oid = lock_oid(lock);
        let released = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = Arc::clone(&released);
        let watch = self.io.watch(&oid, move || {
            *signal.0.lock().unwrap_or_else(PoisonError::into_inner) = true;
            signal.1.notify_all();
        });
        let _watch = match watch {
            Ok(watch) => watch,
            // No lock object: the lock was never taken, so it is free.
            Err(e) if e.is(libc::ENOENT) => return Ok(()),
            Err(e) => return Err(self.err(OP, lock.as_str(), e)),
        };
        if self.lockers(OP, lock, &oid)?.is_empty() {
            return Ok(());
        }
        let (flag, cond) = &*released;
        let notified = flag.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = cond.wait_timeout_while(notified, timeout, |n| !*n).unwrap_or_else(PoisonError::into_inner);
        Ok(())
    }

    fn create_exclusive(&self, name: &ObjectName, data: &[u8], _durability: Durability) -> Result<()> {
        // One write op: the exclusive create and the content (all or nothing).
        let mut op = WriteOp::new();
        op.create(true).write_full(data);
        match self.io.operate_write(&oid(name), op) {
            Ok(_) => Ok(()),
            Err(e) if e.is(libc::EEXIST) => {
                Err(StoreError::new("create_exclusive", name.as_str(), ErrorKind::Exists))
            }
            Err(e) => Err(self.io_err("create_exclusive", name.as_str(), e.errno())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_records_round_trip() {
        let r = LockRecord {
            owner: "hôte/vlmcd=1 x\r".into(),
            generation: 42,
            acquired_unix_ms: 1_700_000_000_123,
        };
        assert_eq!(decode_record(&encode_record(&r)).unwrap(), Some(r));
        assert_eq!(decode_record(b"").unwrap(), None);
        for bad in [&b"a\n1\n"[..], b"a\nx\n1\n", b"\n1\n2\n", b"a\n1\n2\nextra", b"\xff\n1\n2\n"] {
            assert!(decode_record(bad).is_err(), "{bad:?}");
        }
    }
}
