//! The blocker: a [`Peer`] that serves object requests with an [`ObjectStore`]. The
//! daemons `archip-filed` (a directory) and `archip-radosd` (a RADOS pool) are this peer
//! over their store.
//!
//! The wire contract (what each op means to a blocker; the target is an object name):
//!
//! | op | request | answer (`serviced`, data window) |
//! |---|---|---|
//! | READ | `offset`, `size` ≤ window | `size`; window[..size] = bytes (zeros past the end) |
//! | WRITE | `offset`, `size`, window[..size]; FUA flag = durable on completion | `size` |
//! | WRITE_FULL | window[..size] replaces the object atomically; FUA flag | `size` |
//! | CREATE | window[..size] becomes the object only if it does not exist (EEXIST); FUA flag | `size` |
//! | WRITE_ZEROES, DISCARD | `offset`, `size`: the range reads as zeros; FUA flag | `size` |
//! | FLUSH | (no target) every completed write is durable | 0 |
//! | DELETE | | 0 |
//! | INFO | | the object's size |
//! | COPY | window[..size] = source name; target = destination; FUA flag | 0 |
//! | HASH | window ≥ 32 bytes | 32; window[..32] = SHA-256 digest (content copy stored) |
//! | ACQUIRE | target = lock, window[..size] = owner; NOSYNC = try once, else wait up to `offset` ms (at most [`LOCK_WAIT_MAX`]) for a release | the lock's generation; EBUSY if still held |
//! | RELEASE | target = lock, window[..size] = owner; FORCE flag breaks another's | 0 |
//! | LOCK_INFO | target = lock | bytes; window = `owner\ngeneration\nacquired_unix_ms\n`; ENOENT if free |
//! | LIST | target = prefix (may be empty); `offset` = names to skip | bytes; window = names, each + `\n` |
//! | PING | | 0 |
//!
//! Errors complete the request with the store error's errno; unknown ops with EOPNOTSUPP;
//! a size larger than the window, or a target that is not a valid name, with EINVAL.
//! Blocking store calls run on the peer's worker threads (`--threads`). A store with
//! asynchronous IO ([`ObjectStore::async_io`], RADOS) serves READ and WRITE without a worker
//! waiting: the worker starts the operation on the request's data window (zero copy) and
//! returns; the store's completion answers the request from its own thread.
//!
//! A waiting ACQUIRE holds its worker while it waits (the store wakes it on a release:
//! RADOS watch/notify, or a poll), so at most `--threads` − 1 wait at once per peer: one
//! worker is always left for other requests. A waiter past that bound gets EBUSY at once;
//! the mapper then sleeps before asking again.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use archip_peer::{Peer, PeerIo, Throttle};
use archip_store::{Durability, IoBuf, ObjectName, ObjectStore, StoreError};
use xseg::{flags, Incoming, Op, Port};

/// Longest one ACQUIRE waits for a release; a longer wait is the caller's loop.
pub const LOCK_WAIT_MAX: Duration = Duration::from_secs(2);

pub struct BlockerPeer {
    store: Arc<dyn ObjectStore>,
    warnings: Arc<Throttle>,
    /// ACQUIREs waiting for a release right now, and how many may.
    lock_waiters: AtomicU32,
    lock_waiters_max: u32,
}

impl BlockerPeer {
    /// A blocker over `store` whose ports are served by `threads` workers each.
    pub fn new(store: Arc<dyn ObjectStore>, threads: u32) -> BlockerPeer {
        BlockerPeer {
            store,
            warnings: Arc::new(Throttle::new(1000)),
            lock_waiters: AtomicU32::new(0),
            lock_waiters_max: threads.saturating_sub(1),
        }
    }

    /// Takes `lock` for `owner`, waiting up to `wait` for its holder to release it if a
    /// waiting slot is free.
    fn acquire(&self, lock: &ObjectName, owner: &str, wait: Duration) -> Result<u64, Failure> {
        let store = self.store.as_ref();
        let first = store.lock_acquire(lock, owner);
        let busy = matches!(&first, Err(e) if e.errno() == libc::EBUSY);
        if !busy || wait.is_zero() {
            return Ok(first?.generation);
        }
        let slot = self.lock_waiters.fetch_add(1, Ordering::AcqRel);
        let _slot = WaitSlot(&self.lock_waiters);
        if slot >= self.lock_waiters_max {
            return Ok(first?.generation);
        }
        let deadline = Instant::now() + wait.min(LOCK_WAIT_MAX);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(store.lock_acquire(lock, owner)?.generation);
            }
            store.lock_wait(lock, left)?;
            match store.lock_acquire(lock, owner) {
                Err(e) if e.errno() == libc::EBUSY => {}
                other => return Ok(other?.generation),
            }
        }
    }
}

/// A taken waiting slot, given back when dropped.
struct WaitSlot<'a>(&'a AtomicU32);

impl Drop for WaitSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a request failed: the errno it completes with, and a reason for the log.
struct Failure {
    errno: i32,
    reason: String,
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        Failure { errno: e.errno(), reason: e.to_string() }
    }
}

fn invalid(reason: impl Into<String>) -> Failure {
    Failure { errno: libc::EINVAL, reason: reason.into() }
}

/// Logs a failed request: missing objects and held locks are answers (debug), anything
/// else a warning, at most one a second (a fenced or broken store fails every request).
fn log_failure(warnings: &Throttle, op: u32, f: &Failure) {
    if f.errno == libc::ENOENT || f.errno == libc::EBUSY || f.errno == libc::EEXIST {
        tracing::debug!(op, reason = %f.reason, "request failed");
    } else if let Some(suppressed) = warnings.allow() {
        tracing::warn!(op, reason = %f.reason, suppressed, "request failed");
    }
}

/// Whether serving `op` (with `flag_word`) is quick: page-cache IO, or IO a store with
/// asynchronous IO only starts. Anything else may wait on the disk or the network.
fn quick(op: Option<Op>, flag_word: u32, has_async_io: bool) -> bool {
    match op {
        Some(Op::Ping | Op::Info | Op::Read) => true,
        Some(Op::Write) => has_async_io || flag_word & flags::FUA == 0,
        _ => false,
    }
}

impl Peer for BlockerPeer {
    /// Rounds run plugged (answers wake each sender once per round); a request that may
    /// wait first rings what the round deferred so far.
    fn plug_rounds(&self) -> bool {
        true
    }

    // `accept_batch` stays 1: an ACQUIRE may wait for a release (up to `LOCK_WAIT_MAX`),
    // a sync or a synchronous store's IO on the disk, and whatever a worker took in the same
    // batch would wait behind it instead of going to an idle sibling worker.

    fn on_request(&self, io: &PeerIo<'_>, mut req: Incoming) {
        let view = io.port.view(&req);
        if !quick(view.op(), view.flags(), self.store.async_io().is_some()) {
            xseg::flush_plug();
        }
        if self.store.async_io().is_some() {
            match self.start_async(io, req) {
                Ok(()) => return,
                Err(r) => req = r,
            }
        }
        let result = self.serve(io.port, &mut req);
        if let Err(f) = &result {
            log_failure(&self.warnings, io.port.view(&req).op_raw(), f);
        }
        io.respond(req, result.map_err(|f| f.errno));
    }
}

fn durability(flags_word: u32) -> Durability {
    if flags_word & flags::FUA != 0 {
        Durability::Fua
    } else {
        Durability::Buffered
    }
}

impl BlockerPeer {
    /// Starts a READ or WRITE on the store's asynchronous IO; the completion answers it.
    /// Any other request (or one that is malformed) comes back to be served the usual way.
    fn start_async(&self, io: &PeerIo<'_>, mut req: Incoming) -> Result<(), Incoming> {
        let Some(store) = self.store.async_io() else { return Err(req) };
        let view = io.port.view(&req);
        let (op, offset, size, flag_word) = (view.op(), view.offset(), view.size(), view.flags());
        if !matches!(op, Some(Op::Read | Op::Write)) {
            return Err(req);
        }
        let Some(name) = view.target().and_then(|t| t.as_str().and_then(|n| ObjectName::new(n).ok())) else {
            return Err(req);
        };
        let Ok(data) = io.port.data_mut(&mut req) else { return Err(req) };
        let Some(len) = usize::try_from(size).ok().filter(|&n| n <= data.len()) else { return Err(req) };
        // SAFETY: the window lies in the segment, which the responder's port keeps mapped
        // until the completion ran; and it belongs to `req`, which this blocker holds (no
        // one else touches the window) until the completion answers it.
        let buf = unsafe { IoBuf::new(data.as_mut_ptr(), len) };
        let (responder, warnings, op_raw) =
            (io.responder(), self.warnings.clone(), op.map_or(0, |o| o as u32));
        let done = Box::new(move |result: archip_store::Result<()>| {
            let result = result.map(|()| size).map_err(Failure::from);
            if let Err(f) = &result {
                log_failure(&warnings, op_raw, f);
            }
            responder.respond(req, result.map_err(|f| f.errno));
        });
        if op == Some(Op::Read) {
            store.read_async(&name, offset, buf, done);
        } else {
            store.write_async(&name, offset, buf, durability(flag_word), done);
        }
        Ok(())
    }

    fn serve(&self, port: &Port, req: &mut Incoming) -> Result<u64, Failure> {
        let view = port.view(req);
        let op =
            view.op().ok_or(Failure { errno: libc::EOPNOTSUPP, reason: format!("op {}", view.op_raw()) })?;
        let (offset, size, flag_word) = (view.offset(), view.size(), view.flags());
        let target = view.target().ok_or_else(|| invalid("target length out of range"))?;
        let target = target.as_str().ok_or_else(|| invalid("target is not UTF-8"))?.to_string();
        let name = || ObjectName::new(target.clone()).map_err(Failure::from);
        let data = port.data_mut(req).map_err(|e| invalid(e.to_string()))?;
        let payload = |data: &[u8]| -> Result<usize, Failure> {
            usize::try_from(size)
                .ok()
                .filter(|&n| n <= data.len())
                .ok_or_else(|| invalid(format!("size {size} exceeds the data window of {}", data.len())))
        };
        let text = |bytes: &[u8]| -> Result<String, Failure> {
            String::from_utf8(bytes.to_vec()).map_err(|_| invalid("payload is not UTF-8"))
        };
        let store = self.store.as_ref();
        match op {
            Op::Ping => Ok(0),
            Op::Read => {
                let n = payload(data)?;
                store.read(&name()?, offset, &mut data[..n])?;
                Ok(size)
            }
            Op::Write => {
                let n = payload(data)?;
                store.write(&name()?, offset, &data[..n], durability(flag_word))?;
                Ok(size)
            }
            Op::WriteFull => {
                let n = payload(data)?;
                store.write_full(&name()?, &data[..n], durability(flag_word))?;
                Ok(size)
            }
            Op::Create => {
                let n = payload(data)?;
                store.create_exclusive(&name()?, &data[..n], durability(flag_word))?;
                Ok(size)
            }
            Op::WriteZeroes | Op::Discard => {
                store.zero(&name()?, offset, size, durability(flag_word))?;
                Ok(size)
            }
            Op::Flush => {
                store.flush()?;
                Ok(0)
            }
            Op::Delete => {
                store.delete(&name()?)?;
                Ok(0)
            }
            Op::Info => Ok(store.stat(&name()?)?),
            Op::Copy => {
                let n = payload(data)?;
                let src = ObjectName::new(text(&data[..n])?)?;
                store.copy(&src, &name()?, durability(flag_word))?;
                Ok(0)
            }
            Op::Hash => {
                if data.len() < 32 {
                    return Err(invalid("HASH needs a 32-byte data window"));
                }
                let digest = store.hash(&name()?)?;
                data[..32].copy_from_slice(&digest);
                Ok(32)
            }
            Op::Acquire => {
                let n = payload(data)?;
                let wait = if flag_word & flags::NOSYNC != 0 {
                    Duration::ZERO
                } else {
                    Duration::from_millis(offset)
                };
                self.acquire(&name()?, &text(&data[..n])?, wait)
            }
            Op::Release => {
                let n = payload(data)?;
                store.lock_release(&name()?, &text(&data[..n])?, flag_word & flags::FORCE != 0)?;
                Ok(0)
            }
            Op::LockInfo => {
                let record = store
                    .lock_holder(&name()?)?
                    .ok_or(Failure { errno: libc::ENOENT, reason: format!("lock {target} is free") })?;
                let answer =
                    format!("{}\n{}\n{}\n", record.owner, record.generation, record.acquired_unix_ms);
                if answer.len() > data.len() {
                    return Err(invalid("data window too small for the lock record"));
                }
                data[..answer.len()].copy_from_slice(answer.as_bytes());
                Ok(answer.len() as u64)
            }
            Op::List => {
                let names = store.list(&target)?;
                let mut used = 0;
                for name in names.iter().skip(usize::try_from(offset).unwrap_or(usize::MAX)) {
                    let bytes = name.as_str().as_bytes();
                    if used + bytes.len() + 1 > data.len() {
                        break;
                    }
                    data[used..used + bytes.len()].copy_from_slice(bytes);
                    data[used + bytes.len()] = b'\n';
                    used += bytes.len() + 1;
                }
                Ok(used as u64)
            }
            other => Err(Failure {
                errno: libc::EOPNOTSUPP,
                reason: format!("a blocker does not serve {}", other.name()),
            }),
        }
    }
}
