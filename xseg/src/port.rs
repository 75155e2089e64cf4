//! Ports and the request lifecycle: get, prepare, submit, accept, respond, receive, put.
//!
//! ```text
//!  owner (client port C)                          server (port S)
//!  get_request ─▶ HELD ── submit ─▶ SUBMITTED ─▶ (S's request ring) ── accept ─▶ ACCEPTED
//!  put_request ◀─ HELD ◀─ receive ── (C's reply ring) ◀─ REPLIED ◀────────── respond ─┘
//! ```
//!
//! Every transition is a CAS on the request's state word, which also carries the owning
//! port. A ring entry is only a hint: whoever pops an index re-validates the state word,
//! so stale or duplicated entries (left by crashes and recovery) are skipped harmlessly.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::layout::*;
use crate::request::{Held, Incoming, Op, Request, Target};
use crate::segment::{current_identity, owner_alive, Segment};
use crate::signal::{
    register_sleeper, unregister_sleeper, Futex, FutexSignal, LinuxFutex, Signal, SignalWords,
};
use crate::sync::Ordering;

/// The spin of new ports: `$XSEG_SPIN_US` microseconds if set (read once), else
/// [`DEFAULT_SPIN`].
pub fn default_spin() -> Duration {
    static SPIN: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *SPIN.get_or_init(|| {
        std::env::var("XSEG_SPIN_US")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(DEFAULT_SPIN, Duration::from_micros)
    })
}

/// How long [`Segment::port_is_bound_cached`] trusts that a port's owner is alive.
pub const LIVENESS_RECHECK: Duration = Duration::from_millis(100);
/// Most (segment, port) entries one thread's liveness cache holds before it starts over.
const LIVENESS_CACHE_MAX: usize = 256;

type LivenessKey = (usize, u32);

thread_local! {
    /// Per thread: (segment, port) → (owner pid, its start time, when it was found alive).
    static LIVENESS_CACHE: std::cell::RefCell<std::collections::HashMap<LivenessKey, (u32, u64, std::time::Instant)>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// How long a waiter spins before it sleeps on the futex, by default.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);

const NO_HINT: u32 = u32::MAX;

/// A bound port. Its owner (this process) accepts requests sent to it and receives the
/// replies to requests it sent. `Send + Sync`: worker threads share one port.
pub struct Port {
    seg: Arc<Segment>,
    no: u32,
    generation: u32,
    signal: FutexSignal<LinuxFutex>,
    /// Request descriptors this port freed recently (process-private hints): reusing them
    /// keeps descriptors hot in this core's cache instead of walking the whole pool.
    recent: [std::sync::atomic::AtomicU32; RECENT_HINTS],
    recent_next: std::sync::atomic::AtomicUsize,
    /// Data buffers held by requests this port took (process-private), and the most it may
    /// hold (`limit_buffers`; `u32::MAX`: no limit of its own).
    buffers_held: std::sync::atomic::AtomicU32,
    buffer_limit: std::sync::atomic::AtomicU32,
    /// Requests with a buffer kept back (held, off the pool) for when the segment has no
    /// free request or buffer (`keep_spares`), and how many to keep.
    spares: std::sync::Mutex<Vec<u32>>,
    spares_wanted: std::sync::atomic::AtomicU32,
}

const RECENT_HINTS: usize = 64;
/// How many of the most recent hints `get_request` tries before scanning the pool.
const RECENT_PROBES: usize = 4;

/// Most requests one `accept_many`, `receive_many` or `submit_many` round moves at once.
const BATCH_MAX: usize = 64;

impl Segment {
    /// Binds static port `port` to this process.
    pub fn bind_port(self: &Arc<Self>, port: u32) -> Result<Port> {
        let g = self.geometry();
        if port >= g.nr_ports {
            return Err(Error::PortOutOfRange { port, nr_ports: g.nr_ports });
        }
        if port >= g.dynamic_port_start {
            return Err(Error::PortIsDynamic { port });
        }
        self.try_bind(port)
    }

    /// Binds static port `port`, first recovering it if its previous owner died (what a
    /// restarted peer does).
    pub fn bind_port_recovering(self: &Arc<Self>, port: u32) -> Result<Port> {
        match self.bind_port(port) {
            Err(Error::PortBusy { alive: false, .. }) => {
                self.recover_port(port)?;
                self.bind_port(port)
            }
            other => other,
        }
    }

    /// Binds any free dynamic port.
    pub fn bind_dynamic_port(self: &Arc<Self>) -> Result<Port> {
        let g = *self.geometry();
        let count = g.nr_ports - g.dynamic_port_start;
        if count == 0 {
            return Err(Error::NoFreePort);
        }
        let start = self.header().dynamic_cursor.fetch_add(1, Ordering::Relaxed);
        for i in 0..count {
            let port = g.dynamic_port_start + (start.wrapping_add(i) % count);
            match self.try_bind(port) {
                Ok(p) => return Ok(p),
                Err(Error::PortBusy { alive: false, .. }) => {
                    // A dead frontend's port: reclaim it on the way (best effort).
                    if self.recover_port(port).is_ok() {
                        if let Ok(p) = self.try_bind(port) {
                            return Ok(p);
                        }
                    }
                }
                Err(_) => {}
            }
        }
        Err(Error::NoFreePort)
    }

    fn try_bind(self: &Arc<Self>, port: u32) -> Result<Port> {
        let desc = self.port_desc(port);
        let (pid, start_time) = current_identity();
        match desc.owner_pid.compare_exchange(PORT_FREE, pid, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                desc.owner_start_time.store(start_time, Ordering::Release);
                let generation = desc.bind_generation.fetch_add(1, Ordering::AcqRel).wrapping_add(1);
                desc.requests_owned.store(0, Ordering::Release);
                desc.sleepers.store(0, Ordering::Release);
                Ok(Port {
                    seg: self.clone(),
                    no: port,
                    generation,
                    signal: FutexSignal::new(default_spin()),
                    recent: std::array::from_fn(|_| std::sync::atomic::AtomicU32::new(NO_HINT)),
                    recent_next: std::sync::atomic::AtomicUsize::new(0),
                    buffers_held: std::sync::atomic::AtomicU32::new(0),
                    buffer_limit: std::sync::atomic::AtomicU32::new(u32::MAX),
                    spares: std::sync::Mutex::new(Vec::new()),
                    spares_wanted: std::sync::atomic::AtomicU32::new(0),
                })
            }
            Err(PORT_RECOVERING) => {
                let recoverer = desc.recoverer_pid.load(Ordering::Acquire);
                if owner_alive(recoverer, 0) {
                    Err(Error::PortRecovering { port })
                } else {
                    // An abandoned recovery: the caller may finish it with recover_port.
                    Err(Error::PortBusy { port, pid: recoverer, alive: false })
                }
            }
            Err(owner) => Err(Error::PortBusy {
                port,
                pid: owner,
                alive: owner_alive(owner, desc.owner_start_time.load(Ordering::Acquire)),
            }),
        }
    }

    /// [`port_is_bound`](Self::port_is_bound) for the data path: the owner word is read on
    /// every call, but whether its process is alive (a read of `/proc/<pid>/stat`) is
    /// looked up at most every [`LIVENESS_RECHECK`] per thread and port. A dead owner is
    /// seen that much later; a port freed or taken over is seen at once.
    pub fn port_is_bound_cached(&self, port: u32) -> bool {
        if port >= self.geometry().nr_ports {
            return false;
        }
        let desc = self.port_desc(port);
        let pid = desc.owner_pid.load(Ordering::Acquire);
        if pid == PORT_FREE || pid == PORT_RECOVERING {
            return false;
        }
        let start_time = desc.owner_start_time.load(Ordering::Acquire);
        let now = std::time::Instant::now();
        let key = (self as *const Segment as usize, port);
        LIVENESS_CACHE.with(|cache| {
            let mut cache = cache.borrow_mut();
            if let Some(&(p, s, at)) = cache.get(&key) {
                if p == pid && s == start_time && now.duration_since(at) < LIVENESS_RECHECK {
                    return true;
                }
            }
            let alive = owner_alive(pid, start_time);
            if alive {
                if cache.len() >= LIVENESS_CACHE_MAX {
                    cache.clear();
                }
                cache.insert(key, (pid, start_time, now));
            } else {
                cache.remove(&key);
            }
            alive
        })
    }

    /// Whether some live process has `port` bound (a request sent there will be served).
    pub fn port_is_bound(&self, port: u32) -> bool {
        port < self.geometry().nr_ports && {
            let desc = self.port_desc(port);
            let pid = desc.owner_pid.load(Ordering::Acquire);
            pid != PORT_FREE
                && pid != PORT_RECOVERING
                && owner_alive(pid, desc.owner_start_time.load(Ordering::Acquire))
        }
    }

    /// Claims request `index` for `owner` if it is free.
    fn claim_request_at(&self, index: u32, owner: u32) -> bool {
        index < self.geometry().nr_requests && {
            let state = &self.request_desc(index).state;
            state.load(Ordering::Relaxed) == REQ_FREE
                && state
                    .compare_exchange(
                        REQ_FREE,
                        req_word(owner, REQ_HELD),
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    )
                    .is_ok()
        }
    }

    /// Claims a free request descriptor for `owner` (scan from a rotating cursor).
    fn claim_request(&self, owner: u32) -> Option<u32> {
        let n = self.geometry().nr_requests;
        let start = self.header().request_cursor.fetch_add(1, Ordering::Relaxed);
        (0..n).map(|i| start.wrapping_add(i) % n).find(|&index| self.claim_request_at(index, owner))
    }

    /// Claims a free data buffer for request `index`.
    fn claim_buffer(&self, index: u32) -> Option<u32> {
        let n = self.geometry().nr_buffers;
        if n == 0 {
            return None;
        }
        let start = self.header().buffer_cursor.fetch_add(1, Ordering::Relaxed);
        (0..n).map(|i| start.wrapping_add(i) % n).find(|&buffer| {
            let owner = &self.buffer_desc(buffer).owner_request;
            owner.load(Ordering::Relaxed) == 0
                && owner.compare_exchange(0, index + 1, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        })
    }

    /// Returns request `index`'s own buffer (if any) to the pool.
    pub(crate) fn release_buffer_of(&self, index: u32) {
        let desc = self.request_desc(index);
        let buffer = desc.buffer_index.swap(NO_BUFFER, Ordering::AcqRel);
        if buffer < self.geometry().nr_buffers {
            let _ = self.buffer_desc(buffer).owner_request.compare_exchange(
                index + 1,
                0,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }

    /// Frees request `index` if its state word is still `expected`.
    pub(crate) fn free_request_if(&self, index: u32, expected: u32) -> bool {
        let desc = self.request_desc(index);
        if desc.state.load(Ordering::Acquire) != expected {
            return false;
        }
        // Take the buffer back first: a request is never FREE while it holds one.
        self.release_buffer_of(index);
        desc.state.compare_exchange(expected, REQ_FREE, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    pub(crate) fn signal_words(&self, port: u32) -> SignalWords<'_> {
        let desc = self.port_desc(port);
        SignalWords { wake_seq: &desc.wake_seq, sleepers: &desc.sleepers }
    }

    /// Wakes `port`'s sleepers, if any, after work was published to it.
    pub(crate) fn notify_port(&self, port: u32) {
        FutexSignal::<LinuxFutex>::new(Duration::ZERO).notify(self.signal_words(port));
    }

    /// Pushes `index` on `port`'s reply ring, retrying briefly if it is full (it cannot be
    /// while the owner respects its request bound; stale entries could fill it), and rings
    /// the port's doorbell unless `defer` takes the ring.
    pub(crate) fn push_reply_with(&self, port: u32, index: u32, defer: impl FnOnce(u32) -> bool) -> bool {
        let ring = self.reply_ring(port);
        let mut defer = Some(defer);
        for attempt in 0..10_000 {
            if ring.push(index).is_ok() {
                if !defer.take().is_some_and(|d| d(port)) {
                    self.notify_port(port);
                }
                return true;
            }
            if attempt > 100 {
                std::thread::yield_now();
            }
        }
        false
    }
}

impl Segment {
    /// [`push_reply_with`](Self::push_reply_with), ringing the doorbell at once.
    pub(crate) fn push_reply(&self, port: u32, index: u32) -> bool {
        self.push_reply_with(port, index, |_| false)
    }
}

/// This thread's plugged section: whether one is open, and the doorbells it has yet to
/// ring, (segment, port) each once. The vector keeps its room between sections, so a
/// worker's rounds do not allocate.
struct Plug {
    active: bool,
    pending: Vec<(Arc<Segment>, u32)>,
}

thread_local! {
    static PLUG: std::cell::RefCell<Plug> =
        const { std::cell::RefCell::new(Plug { active: false, pending: Vec::new() }) };
}

/// Rings (and forgets) the doorbells this thread's section has deferred so far.
fn ring_deferred() {
    PLUG.with(|p| {
        // Ringing does not defer (it is not a submit), so the borrow is not re-entered.
        for (seg, port) in p.borrow_mut().pending.drain(..) {
            seg.notify_port(port);
        }
    });
}

/// Most distinct doorbells one plugged section defers; past that, doorbells ring at once.
const PLUG_MAX: usize = 64;

/// Runs `f` with the doorbells it rings (submits, responds) deferred and coalesced: each
/// port it published work to is woken once, when `f` returns. A thread that handles a batch
/// (a peer's round of requests and replies, a ublk queue's round of completions) thus wakes
/// each peer once per batch; ringing at every request wakes the peer for the first one and
/// again for each later one it finished before the next arrived — a wake-up per request on
/// two cores. Work is published at once either way; only the wake-up waits for the end of
/// the batch. Sections nest (the outermost rings).
pub fn plugged<R>(f: impl FnOnce() -> R) -> R {
    let outer = PLUG.with(|p| !std::mem::replace(&mut p.borrow_mut().active, true));
    if !outer {
        return f();
    }
    /// Rings the deferred doorbells, also if `f` unwinds (a waiter must never be left asleep).
    struct Ring;
    impl Drop for Ring {
        fn drop(&mut self) {
            ring_deferred();
            PLUG.with(|p| p.borrow_mut().active = false);
        }
    }
    let _ring = Ring;
    f()
}

/// Rings the doorbells this thread's plugged section deferred so far (the section goes on).
/// Whatever waits (for a reply, a lock, the disk) inside a section calls this first, so the
/// peers it published work to are not left asleep meanwhile; `Port::wait`, `wait_reply`,
/// `call` and `sleep_for_replies` do it themselves.
pub fn flush_plug() {
    ring_deferred();
}

/// Defers ringing `port`'s doorbell to the end of this thread's plugged section; false when
/// there is none (or it is full): the caller rings now.
fn defer_doorbell(seg: &Arc<Segment>, port: u32) -> bool {
    PLUG.with(|p| {
        let mut p = p.borrow_mut();
        if !p.active {
            return false;
        }
        let pending = &mut p.pending;
        if pending.iter().any(|(s, q)| *q == port && Arc::ptr_eq(s, seg)) {
            return true;
        }
        if pending.len() >= PLUG_MAX {
            return false;
        }
        pending.push((seg.clone(), port));
        true
    })
}

/// Read access to a held request's fields.
pub struct RequestView<'a> {
    seg: &'a Segment,
    desc: &'a RequestDesc,
}

impl RequestView<'_> {
    /// The operation, or `None` for a number this build does not know.
    pub fn op(&self) -> Option<Op> {
        Op::from_u32(self.desc.op.load(Ordering::Relaxed))
    }
    pub fn op_raw(&self) -> u32 {
        self.desc.op.load(Ordering::Relaxed)
    }
    pub fn flags(&self) -> u32 {
        self.desc.flags.load(Ordering::Relaxed)
    }
    pub fn offset(&self) -> u64 {
        self.desc.offset.load(Ordering::Relaxed)
    }
    pub fn size(&self) -> u64 {
        self.desc.size.load(Ordering::Relaxed)
    }
    pub fn serviced(&self) -> u64 {
        self.desc.serviced.load(Ordering::Relaxed)
    }
    pub fn user_data(&self) -> u64 {
        self.desc.user_data.load(Ordering::Relaxed)
    }
    pub fn serial(&self) -> u64 {
        self.desc.serial.load(Ordering::Relaxed)
    }
    pub fn src_port(&self) -> u32 {
        self.desc.src_port.load(Ordering::Relaxed)
    }
    /// 0 when the request was served, else the errno it failed with.
    pub fn errno(&self) -> i32 {
        self.desc.error.load(Ordering::Relaxed) as i32
    }
    pub fn data_len(&self) -> u64 {
        self.desc.data_len.load(Ordering::Relaxed)
    }
    /// The target, bounds-checked; `None` if its recorded length is out of range.
    pub fn target(&self) -> Option<Target> {
        let len = self.desc.target_len.load(Ordering::Relaxed) as usize;
        if len > TARGET_LEN_MAX {
            return None;
        }
        let mut target = Target { bytes: [0; TARGET_LEN_MAX], len };
        for (chunk, word) in target.bytes.chunks_exact_mut(8).zip(&self.desc.target).take(len.div_ceil(8)) {
            chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
        }
        Some(target)
    }
    fn window(&self) -> (u64, u64) {
        (self.desc.data_offset.load(Ordering::Relaxed), self.desc.data_len.load(Ordering::Relaxed))
    }
    fn window_ok(&self) -> bool {
        let (offset, len) = self.window();
        self.seg.data_window_ok(offset, len)
    }
}

/// Write access to a held request's fields.
pub struct RequestMut<'a> {
    view: RequestView<'a>,
}

impl<'a> std::ops::Deref for RequestMut<'a> {
    type Target = RequestView<'a>;
    fn deref(&self) -> &RequestView<'a> {
        &self.view
    }
}

impl RequestMut<'_> {
    pub fn set_op(&self, op: Op) -> &Self {
        self.view.desc.op.store(op as u32, Ordering::Relaxed);
        self
    }
    pub fn set_flags(&self, flags: u32) -> &Self {
        self.view.desc.flags.store(flags, Ordering::Relaxed);
        self
    }
    pub fn set_offset(&self, offset: u64) -> &Self {
        self.view.desc.offset.store(offset, Ordering::Relaxed);
        self
    }
    pub fn set_size(&self, size: u64) -> &Self {
        self.view.desc.size.store(size, Ordering::Relaxed);
        self
    }
    pub fn set_serviced(&self, serviced: u64) -> &Self {
        self.view.desc.serviced.store(serviced, Ordering::Relaxed);
        self
    }
    pub fn set_user_data(&self, value: u64) -> &Self {
        self.view.desc.user_data.store(value, Ordering::Relaxed);
        self
    }
    pub fn set_target(&self, target: &[u8]) -> Result<&Self> {
        if target.len() > TARGET_LEN_MAX {
            return Err(Error::TargetTooLong { len: target.len(), max: TARGET_LEN_MAX });
        }
        for (i, chunk) in target.chunks(8).enumerate() {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.view.desc.target[i].store(u64::from_le_bytes(word), Ordering::Relaxed);
        }
        self.view.desc.target_len.store(target.len() as u32, Ordering::Relaxed);
        Ok(self)
    }
}

impl Port {
    pub fn number(&self) -> u32 {
        self.no
    }

    pub fn segment(&self) -> &Arc<Segment> {
        &self.seg
    }

    /// Sets how long `wait` spins before sleeping (0 = sleep at once).
    pub fn set_spin(&mut self, spin: Duration) {
        self.signal = FutexSignal::new(spin);
    }

    fn desc(&self) -> &PortDesc {
        self.seg.port_desc(self.no)
    }

    /// Takes a request with a `data_len`-byte window ([`get_request`](Self::get_request))
    /// and lets `fill` set it up; if `fill` fails, the request goes back to the pool and
    /// `fill`'s error is returned, so a half-built request is never leaked.
    pub fn prepare_request<E: From<Error>>(
        &self,
        data_len: u64,
        fill: impl FnOnce(&mut Request) -> std::result::Result<(), E>,
    ) -> std::result::Result<Request, E> {
        let mut req = self.get_request(data_len)?;
        match fill(&mut req) {
            Ok(()) => Ok(req),
            Err(e) => {
                self.put_request(req);
                Err(e)
            }
        }
    }

    /// Takes a request descriptor from the pool, with a data buffer of `data_len` bytes
    /// (none when 0). Fails when the pool, the buffers, or this port's bound is exhausted.
    pub fn get_request(&self, data_len: u64) -> Result<Request> {
        let g = self.seg.geometry();
        if data_len > g.buffer_bytes {
            return Err(Error::DataTooLarge { len: data_len, max: g.buffer_bytes });
        }
        let desc = self.desc();
        if desc.requests_owned.fetch_add(1, Ordering::AcqRel) >= g.queue_capacity {
            desc.requests_owned.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::TooManyRequests { port: self.no, limit: g.queue_capacity });
        }
        let Some(index) = self.claim_recent().or_else(|| self.seg.claim_request(self.no)) else {
            desc.requests_owned.fetch_sub(1, Ordering::AcqRel);
            return self.take_spare(data_len).ok_or(Error::NoFreeRequest);
        };
        let r = self.seg.request_desc(index);
        self.reset(r);
        r.buffer_index.store(NO_BUFFER, Ordering::Relaxed);
        r.data_offset.store(0, Ordering::Relaxed);
        if data_len > 0 {
            let over_limit =
                self.buffers_held.load(Ordering::Relaxed) >= self.buffer_limit.load(Ordering::Relaxed);
            if over_limit {
                // The spares count in the limit already: handing one out adds nothing.
                self.put_request(Request { index });
                return self.take_spare(data_len).ok_or(Error::NoFreeBuffer);
            }
            let Some(buffer) = self.seg.claim_buffer(index) else {
                self.put_request(Request { index });
                return self.take_spare(data_len).ok_or(Error::NoFreeBuffer);
            };
            self.buffers_held.fetch_add(1, Ordering::Relaxed);
            r.buffer_index.store(buffer, Ordering::Relaxed);
            r.data_offset.store(self.seg.buffer_offset(buffer), Ordering::Relaxed);
            r.data_len.store(data_len, Ordering::Relaxed);
        }
        Ok(Request { index })
    }

    /// Sets a held request's fields as a fresh one's (all but its buffer).
    fn reset(&self, r: &RequestDesc) {
        r.owner_generation.store(self.generation, Ordering::Relaxed);
        r.serial.fetch_add(1, Ordering::Relaxed);
        for field in [&r.op, &r.flags, &r.error, &r.target_len] {
            field.store(0, Ordering::Relaxed);
        }
        for field in [&r.offset, &r.size, &r.serviced, &r.data_len, &r.user_data] {
            field.store(0, Ordering::Relaxed);
        }
        r.src_port.store(self.no, Ordering::Relaxed);
        r.dst_port.store(NO_PORT, Ordering::Relaxed);
    }

    /// A kept-back request (`keep_spares`) as a fresh one with a `data_len` window, when the
    /// pool has none to give.
    fn take_spare(&self, data_len: u64) -> Option<Request> {
        if self.spares_wanted.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let index = self.spares.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
        let r = self.seg.request_desc(index);
        self.reset(r);
        r.data_offset
            .store(self.seg.buffer_offset(r.buffer_index.load(Ordering::Relaxed)), Ordering::Relaxed);
        r.data_len.store(data_len, Ordering::Relaxed);
        Some(Request { index })
    }

    /// Keeps `n` requests with a whole buffer each back from the pool for this port: when the
    /// segment has no request or buffer free, `get_request` hands out one of these, and
    /// `put_request` keeps a request with a buffer while fewer than `n` are kept. A peer
    /// whose answers wait on its own calls to another peer (vlmcd's map lookups, the
    /// mapper's map reads) keeps a few, so it moves on however many buffers the frontends
    /// hold. Returns how many it could take now (the rest are kept as requests come back).
    pub fn keep_spares(&self, n: u32) -> u32 {
        self.spares_wanted.store(0, Ordering::Relaxed);
        let buffer_bytes = self.seg.geometry().buffer_bytes;
        let mut taken = Vec::new();
        while (taken.len() as u32) < n {
            match self.get_request(buffer_bytes) {
                Ok(req) => taken.push(req.index),
                Err(_) => break,
            }
        }
        let got = taken.len() as u32;
        self.spares.lock().unwrap_or_else(|e| e.into_inner()).extend(taken);
        self.spares_wanted.store(n, Ordering::Relaxed);
        got
    }

    /// Returns a request to the pool (with its buffer), or keeps it as a spare.
    pub fn put_request(&self, req: Request) {
        let had_buffer = self.seg.request_desc(req.index).buffer_index.load(Ordering::Relaxed) != NO_BUFFER;
        if had_buffer {
            let wanted = self.spares_wanted.load(Ordering::Relaxed) as usize;
            if wanted > 0 {
                let mut spares = self.spares.lock().unwrap_or_else(|e| e.into_inner());
                if spares.len() < wanted {
                    spares.push(req.index);
                    return;
                }
            }
            self.buffers_held.fetch_sub(1, Ordering::Relaxed);
        }
        let word = req_word(self.no, REQ_HELD);
        let freed = self.seg.free_request_if(req.index, word);
        debug_assert!(freed, "put_request of a request this port does not hold");
        self.desc().requests_owned.fetch_sub(1, Ordering::AcqRel);
        let slot = self.recent_next.fetch_add(1, Ordering::Relaxed) % RECENT_HINTS;
        self.recent[slot].store(req.index, Ordering::Relaxed);
    }

    /// Tries the descriptors this port freed most recently.
    fn claim_recent(&self) -> Option<u32> {
        let next = self.recent_next.load(Ordering::Relaxed);
        (1..=RECENT_PROBES).find_map(|back| {
            let slot = &self.recent[next.wrapping_sub(back) % RECENT_HINTS];
            let index = slot.swap(NO_HINT, Ordering::Relaxed);
            (index != NO_HINT && self.seg.claim_request_at(index, self.no)).then_some(index)
        })
    }

    /// Holds at most `max` data buffers at once: `get_request` with a window fails with
    /// `NoFreeBuffer` (transient) beyond it. A frontend sets this so that its own requests
    /// never take the buffers the peers behind it need to serve them (vlmcd asking the
    /// mapper, the mapper reading a map): with every buffer held by writes waiting on a map
    /// lookup, nothing would move until timeouts fail them.
    pub fn limit_buffers(&self, max: u32) {
        self.buffer_limit.store(max.max(1), Ordering::Relaxed);
    }

    /// Data buffers held by requests of this port (taken with `get_request`, not yet put).
    pub fn buffers_held(&self) -> u32 {
        self.buffers_held.load(Ordering::Relaxed)
    }

    pub fn view<'a>(&'a self, req: &impl Held) -> RequestView<'a> {
        RequestView { seg: &self.seg, desc: self.seg.request_desc(req.index()) }
    }

    pub fn edit<'a>(&'a self, req: &mut impl Held) -> RequestMut<'a> {
        RequestMut { view: self.view(req) }
    }

    /// The request's data window.
    pub fn data<'a>(&'a self, req: &'a impl Held) -> Result<&'a [u8]> {
        let view = self.view(req);
        let (offset, len) = view.window();
        if !view.window_ok() {
            return Err(Error::WindowOutOfRange { offset, len });
        }
        Ok(self.seg.data(offset, len))
    }

    /// The request's data window, writable while the token is borrowed.
    pub fn data_mut<'a>(&'a self, req: &'a mut impl Held) -> Result<&'a mut [u8]> {
        let view = self.view(req);
        let (offset, len) = view.window();
        if !view.window_ok() {
            return Err(Error::WindowOutOfRange { offset, len });
        }
        Ok(self.seg.data_mut(offset, len))
    }

    /// Shrinks a request's window to its first `len` bytes (e.g. to size a reply payload).
    pub fn truncate_data(&self, req: &mut impl Held, len: u64) -> Result<()> {
        let desc = self.seg.request_desc(req.index());
        let current = desc.data_len.load(Ordering::Relaxed);
        if len > current {
            return Err(Error::DataTooLarge { len, max: current });
        }
        desc.data_len.store(len, Ordering::Relaxed);
        Ok(())
    }

    /// Points `sub`'s data window at `[offset, offset+len)` of `parent`'s window: the
    /// zero-copy path by which a request is split into object requests.
    pub fn share_window(&self, sub: &mut Request, parent: &impl Held, offset: u64, len: u64) -> Result<()> {
        let p = self.seg.request_desc(parent.index());
        let (p_offset, p_len) = (p.data_offset.load(Ordering::Relaxed), p.data_len.load(Ordering::Relaxed));
        if offset.checked_add(len).is_none_or(|end| end > p_len) || !self.seg.data_window_ok(p_offset, p_len)
        {
            return Err(Error::WindowOutOfRange { offset, len });
        }
        let s = self.seg.request_desc(sub.index);
        if s.buffer_index.load(Ordering::Relaxed) != NO_BUFFER {
            self.buffers_held.fetch_sub(1, Ordering::Relaxed);
        }
        self.seg.release_buffer_of(sub.index);
        s.data_offset.store(p_offset + offset, Ordering::Relaxed);
        s.data_len.store(len, Ordering::Relaxed);
        Ok(())
    }

    /// Sends `req` to port `dst`. On failure the request comes back with the error.
    pub fn submit(&self, req: Request, dst: u32) -> std::result::Result<(), (Request, Error)> {
        let nr_ports = self.seg.geometry().nr_ports;
        if dst >= nr_ports {
            return Err((req, Error::PortOutOfRange { port: dst, nr_ports }));
        }
        let desc = self.seg.request_desc(req.index);
        desc.src_port.store(self.no, Ordering::Relaxed);
        desc.dst_port.store(dst, Ordering::Relaxed);
        let held = req_word(self.no, REQ_HELD);
        let submitted = req_word(self.no, REQ_SUBMITTED);
        let swapped = desc.state.compare_exchange(held, submitted, Ordering::AcqRel, Ordering::Relaxed);
        assert!(swapped.is_ok(), "submit of a request this port does not hold");
        if self.seg.request_ring(dst).push(req.index).is_err() {
            desc.state.store(held, Ordering::Release);
            return Err((req, Error::QueueFull { port: dst }));
        }
        self.desc().requests_submitted.fetch_add(1, Ordering::Relaxed);
        if !defer_doorbell(&self.seg, dst) {
            self.signal.notify(self.seg.signal_words(dst));
        }
        Ok(())
    }

    /// Sends every request of `reqs` to port `dst`, draining it, with one claim on `dst`'s
    /// ring per round of up to 64 and one doorbell for the lot. When the ring fills, the
    /// requests not sent stay in `reqs` (in order) and `QueueFull` is returned; those sent
    /// are gone either way.
    pub fn submit_many(&self, reqs: &mut Vec<Request>, dst: u32) -> Result<()> {
        let nr_ports = self.seg.geometry().nr_ports;
        if dst >= nr_ports {
            return Err(Error::PortOutOfRange { port: dst, nr_ports });
        }
        let held = req_word(self.no, REQ_HELD);
        let submitted = req_word(self.no, REQ_SUBMITTED);
        let ring = self.seg.request_ring(dst);
        // `reqs[..kept]` went back to the caller; the rest is still to send.
        let mut kept = 0;
        let mut went = 0u64;
        let mut full = false;
        while kept < reqs.len() && !full {
            let round = &reqs[kept..reqs.len().min(kept + BATCH_MAX)];
            let mut indices = [0u32; BATCH_MAX];
            for (slot, req) in indices.iter_mut().zip(round) {
                let desc = self.seg.request_desc(req.index);
                desc.src_port.store(self.no, Ordering::Relaxed);
                desc.dst_port.store(dst, Ordering::Relaxed);
                let swapped =
                    desc.state.compare_exchange(held, submitted, Ordering::AcqRel, Ordering::Relaxed);
                assert!(swapped.is_ok(), "submit of a request this port does not hold");
                *slot = req.index;
            }
            let len = round.len();
            let mut lost = [false; BATCH_MAX];
            let pushed = ring.push_many(&indices[..len], |i| lost[i] = true);
            full = pushed < len || lost[..pushed].contains(&true);
            // What did not go in is the caller's again: back to HELD, moved to the front.
            let start = kept;
            for (i, &index) in indices[..len].iter().enumerate() {
                if i >= pushed || lost[i] {
                    self.seg.request_desc(index).state.store(held, Ordering::Release);
                    reqs.swap(kept, start + i);
                    kept += 1;
                }
            }
            let gone = len - (kept - start);
            went += gone as u64;
            // The sent ones are the server's now: no longer held here.
            reqs.drain(kept..kept + gone);
        }
        if went > 0 {
            self.desc().requests_submitted.fetch_add(went, Ordering::Relaxed);
            if !defer_doorbell(&self.seg, dst) {
                self.signal.notify(self.seg.signal_words(dst));
            }
        }
        if full {
            return Err(Error::QueueFull { port: dst });
        }
        Ok(())
    }

    /// Takes the next request sent to this port. Malformed requests (bad target length or
    /// data window) are failed back with EINVAL and skipped; stale ring entries are skipped.
    pub fn accept(&self) -> Option<Incoming> {
        let ring = self.seg.request_ring(self.no);
        loop {
            let index = ring.pop()?;
            if let Some(incoming) = self.admit(index) {
                return Some(incoming);
            }
        }
    }

    /// Takes up to `max` requests sent to this port at once, appending them to `out` in
    /// order; returns how many. One claim on the ring for the lot, whose slots then move
    /// between the cores once per line rather than once per request.
    pub fn accept_many(&self, max: usize, out: &mut Vec<Incoming>) -> usize {
        self.take_many(self.seg.request_ring(self.no), max, out, |index| self.admit(index))
    }

    /// Pops up to `max` indices from `ring` at once and appends what `admit` makes of each
    /// to `out`; returns how many it appended, popping again while every one was stale.
    fn take_many<T>(
        &self,
        ring: crate::ring::Ring<'_>,
        max: usize,
        out: &mut Vec<T>,
        admit: impl Fn(u32) -> Option<T>,
    ) -> usize {
        let before = out.len();
        let mut indices = [0u32; BATCH_MAX];
        loop {
            let mut popped = 0;
            ring.pop_many(max.min(BATCH_MAX), |index| {
                indices[popped] = index;
                popped += 1;
            });
            if popped == 0 {
                return out.len() - before;
            }
            out.extend(indices[..popped].iter().filter_map(|&index| admit(index)));
            if out.len() > before {
                return out.len() - before;
            }
        }
    }

    /// Accepts request `index` popped from this port's request ring, or skips it (stale,
    /// orphaned, malformed: failed back with EINVAL).
    fn admit(&self, index: u32) -> Option<Incoming> {
        if index >= self.seg.geometry().nr_requests {
            self.desc().requests_rejected.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let desc = self.seg.request_desc(index);
        let word = desc.state.load(Ordering::Acquire);
        if req_state(word) != REQ_SUBMITTED || desc.dst_port.load(Ordering::Relaxed) != self.no {
            return None;
        }
        if req_orphaned(word) {
            self.seg.free_request_if(index, word);
            return None;
        }
        let accepted = (word & !REQ_STATE_MASK) | REQ_ACCEPTED;
        if desc.state.compare_exchange(word, accepted, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return None;
        }
        let incoming = Incoming { index };
        let view = self.view(&incoming);
        if view.target().is_none() || !view.window_ok() {
            self.desc().requests_rejected.fetch_add(1, Ordering::Relaxed);
            self.respond(incoming, Err(libc::EINVAL));
            return None;
        }
        Some(incoming)
    }

    /// Answers an accepted request: `Ok(serviced bytes)` or `Err(errno)`.
    pub fn respond(&self, incoming: Incoming, result: std::result::Result<u64, i32>) {
        let index = incoming.index;
        let desc = self.seg.request_desc(index);
        match result {
            Ok(serviced) => {
                desc.serviced.store(serviced, Ordering::Relaxed);
                desc.error.store(0, Ordering::Relaxed);
                self.desc().requests_served.fetch_add(1, Ordering::Relaxed);
            }
            Err(errno) => {
                desc.error.store(errno.max(1) as u32, Ordering::Relaxed);
                self.desc().requests_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        loop {
            let word = desc.state.load(Ordering::Acquire);
            if req_state(word) != REQ_ACCEPTED {
                // Recovered under us (this port was declared dead): nothing to answer.
                return;
            }
            if req_orphaned(word) {
                self.seg.free_request_if(index, word);
                return;
            }
            let replied = (word & !REQ_STATE_MASK) | REQ_REPLIED;
            if desc.state.compare_exchange(word, replied, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                if !self.seg.push_reply_with(req_owner(word), index, |owner| defer_doorbell(&self.seg, owner))
                {
                    self.desc().requests_rejected.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
        }
    }

    /// Takes the next reply to a request this port sent.
    pub fn receive(&self) -> Option<Request> {
        let ring = self.seg.reply_ring(self.no);
        loop {
            let index = ring.pop()?;
            if let Some(req) = self.claim_reply(index) {
                return Some(req);
            }
        }
    }

    /// Takes up to `max` replies at once, appending them to `out`; returns how many. As
    /// [`accept_many`](Self::accept_many) for the reply ring.
    pub fn receive_many(&self, max: usize, out: &mut Vec<Request>) -> usize {
        self.take_many(self.seg.reply_ring(self.no), max, out, |index| self.claim_reply(index))
    }

    /// Takes back request `index` popped from this port's reply ring, unless the entry is
    /// stale (another generation of this port, or not a reply).
    fn claim_reply(&self, index: u32) -> Option<Request> {
        if index >= self.seg.geometry().nr_requests {
            return None;
        }
        let desc = self.seg.request_desc(index);
        if desc.owner_generation.load(Ordering::Relaxed) != self.generation {
            return None;
        }
        let replied = req_word(self.no, REQ_REPLIED);
        desc.state
            .compare_exchange(replied, req_word(self.no, REQ_HELD), Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
            .then_some(Request { index })
    }

    /// Whether a request or a reply is ready for this port.
    pub fn has_work(&self) -> bool {
        self.seg.request_ring(self.no).has_ready() || self.seg.reply_ring(self.no).has_ready()
    }

    /// Waits until a request or a reply is ready, or `timeout` passes.
    pub fn wait(&self, timeout: Duration) -> bool {
        flush_plug();
        self.signal.wait_until(self.seg.signal_words(self.no), &mut || self.has_work(), timeout)
    }

    /// Waits until a reply is ready, or `timeout` passes.
    pub fn wait_reply(&self, timeout: Duration) -> bool {
        flush_plug();
        let ring = self.seg.reply_ring(self.no);
        self.signal.wait_until(self.seg.signal_words(self.no), &mut || ring.has_ready(), timeout)
    }

    /// Registers the caller as a sleeper waiting for replies, for a thread that sleeps
    /// outside this library (on an io_uring `FUTEX_WAIT` of the returned word and value,
    /// next to its other IO): from now on a reply wakes that futex. `None` if a reply is
    /// ready already (nothing is registered: take it instead). The registration ends when
    /// the returned value is dropped, which the caller does once it woke.
    pub fn sleep_for_replies(&self) -> Option<ExternalSleep<'_>> {
        flush_plug();
        let words = self.seg.signal_words(self.no);
        let value = register_sleeper(words);
        if self.seg.reply_ring(self.no).has_ready() {
            unregister_sleeper(words);
            return None;
        }
        Some(ExternalSleep { words, value })
    }

    /// Wakes this port's own waiters (e.g. so worker threads notice a stop flag).
    pub fn wake(&self) {
        let words = self.seg.signal_words(self.no);
        words.wake_seq.fetch_add(1, Ordering::SeqCst);
        LinuxFutex::wake_all(words.wake_seq);
    }

    /// Sends `req` and waits for its reply (a blocking round trip for tools and tests;
    /// requires that no other thread receives on this port).
    pub fn call(&self, req: Request, dst: u32, timeout: Duration) -> std::result::Result<Request, CallError> {
        let index = req.index;
        self.submit(req, dst).map_err(|(req, e)| CallError::Submit(req, e))?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            while let Some(reply) = self.receive() {
                if reply.index == index {
                    return Ok(reply);
                }
                // A reply for a request this caller gave up on earlier.
                self.put_request(reply);
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Err(CallError::TimedOut);
            }
            self.wait_reply(deadline - now);
        }
    }
}

/// A registration as a sleeper of a port's doorbell ([`Port::sleep_for_replies`]); ends
/// when dropped.
pub struct ExternalSleep<'a> {
    words: SignalWords<'a>,
    value: u32,
}

impl ExternalSleep<'_> {
    /// The futex word to wait on (shared, 32-bit; it lives in the segment mapping).
    pub fn futex_word(&self) -> *const u32 {
        self.words.wake_seq.as_ptr().cast_const()
    }

    /// The value to wait for the word to leave.
    pub fn value(&self) -> u32 {
        self.value
    }

    /// Whether the doorbell rang since the registration (the word left the value).
    pub fn rang(&self) -> bool {
        self.words.wake_seq.load(Ordering::SeqCst) != self.value
    }
}

impl Drop for ExternalSleep<'_> {
    fn drop(&mut self) {
        unregister_sleeper(self.words);
    }
}

/// Why a blocking [`Port::call`] did not return a reply.
#[derive(Debug)]
pub enum CallError {
    /// Not sent; the request comes back.
    Submit(Request, Error),
    /// Sent, but no reply within the timeout. The request stays in flight; its reply, if it
    /// comes, is put back by a later `call`.
    TimedOut,
}

impl Drop for Port {
    /// Leaving a port: requests still queued for it are failed back to their senders,
    /// requests it still owns are released, and the port becomes free.
    fn drop(&mut self) {
        let desc = self.desc();
        let (pid, _) = current_identity();
        if desc.owner_pid.compare_exchange(pid, PORT_RECOVERING, Ordering::AcqRel, Ordering::Acquire).is_ok()
        {
            desc.recoverer_pid.store(pid, Ordering::Release);
            let _ = self.seg.reclaim(self.no, Duration::ZERO, Duration::from_secs(2));
            desc.owner_pid.store(PORT_FREE, Ordering::Release);
        }
    }
}
