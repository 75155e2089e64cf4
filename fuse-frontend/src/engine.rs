//! The data path: each FUSE data request (read, write, fsync, fallocate) becomes one xseg
//! request to vlmcd (more when it is larger than a segment buffer), and the FUSE reply is
//! sent when vlmcd's answer arrives, from the completion thread. No thread waits for one
//! request: a FUSE thread copies the request into the segment, submits it and goes back to
//! `/dev/fuse`; the completion thread receives the answers and replies to the kernel
//! (fuser's replies may be sent from any thread). A read's reply is sent straight from the
//! segment's data window, so read data is copied once (segment → kernel), as write data is
//! (kernel → segment).
//!
//! # What happens when vlmcd is away
//! vlmcd retries while a peer *behind* it restarts; this module rides out vlmcd itself
//! restarting. A request is *in trouble* when vlmcd's port is not bound when it is to be
//! sent, when vlmcd's ring is full, or when it comes back with ECONNABORTED (a restarted
//! vlmcd fails back what its dead predecessor had accepted), ENOTCONN or EAGAIN. A request in
//! trouble is held (its segment buffer keeps the write's data) and sent again after a short
//! backoff (5 ms doubling to 50 ms); once it has been in trouble for `retry_timeout`, it
//! fails with EIO. Requests sent before vlmcd died sit in its ring until its successor
//! recovers the port and fails them back; if no successor comes, they fail with EIO once
//! vlmcd's port has been unbound for `retry_timeout` (their descriptors stay in the dead
//! ring until a recovery frees them). A live vlmcd that does not answer within
//! `request_timeout` also fails the request (EIO) — a guard against a hung vlmcd; vlmcd's own
//! timeouts normally answer first.
//!
//! Resending after ECONNABORTED is safe for every op here: a write of the same bytes at the
//! same offset, a discard or a flush done twice is done once, and vlmcd's recovery makes sure
//! no sub-request of the dead vlmcd still runs when the request comes back.
//!
//! When the segment is momentarily out of request descriptors or buffers (or this port owns
//! its ring capacity), the request waits in a queue (a write's data copied into it) and is
//! sent when an answer frees resources; newer requests queue behind it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fuser::{Errno, ReplyData, ReplyEmpty, ReplyWrite};
use xseg::{flags, Held as _, Op, Port, Request, Segment};

use crate::devloop::KernelReply;

/// Most replies the completion thread takes off the port in one go.
const RECEIVE_BATCH: usize = 64;
const BACKOFF_MIN: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_millis(50);
/// How often the completion thread looks at vlmcd's port and at overdue requests.
const CHECK_EVERY: Duration = Duration::from_millis(20);
/// How long the completion thread sleeps at most when nothing is due.
const IDLE_WAIT: Duration = Duration::from_millis(20);
/// How often in-flight requests are checked against the request timeout.
const SCAN_EVERY: Duration = Duration::from_secs(1);

/// The FUSE reply a data request owes: through fuser, or written to the kernel by this
/// crate for the requests the `/dev/fuse` loop read itself (`devloop`).
pub enum Reply {
    Data(ReplyData),
    Written(ReplyWrite),
    Empty(ReplyEmpty),
    KernelData(KernelReply),
    KernelWritten(KernelReply),
    KernelEmpty(KernelReply),
}

impl Reply {
    pub fn error(self, errno: i32) {
        let e = Errno::from_i32(errno);
        match self {
            Reply::Data(r) => r.error(e),
            Reply::Written(r) => r.error(e),
            Reply::Empty(r) => r.error(e),
            Reply::KernelData(r) | Reply::KernelWritten(r) | Reply::KernelEmpty(r) => r.error(errno),
        }
    }

    /// Success with `data` for a read, `len` bytes for a write, nothing otherwise.
    fn done(self, data: &[u8], len: u64) {
        let written = u32::try_from(len).unwrap_or(u32::MAX);
        match self {
            Reply::Data(r) => r.data(data),
            Reply::Written(r) => r.written(written),
            Reply::Empty(r) => r.ok(),
            Reply::KernelData(r) => r.data(data),
            Reply::KernelWritten(r) => r.written(written),
            Reply::KernelEmpty(r) => r.data(&[]),
        }
    }
}

/// The errno a FUSE request fails with for an errno from vlmcd: the ones a file's user can
/// act on pass through; everything else is an IO error (the cause is in the log).
pub fn user_errno(errno: i32) -> i32 {
    match errno {
        libc::EROFS
        | libc::EINVAL
        | libc::ENOSPC
        | libc::EDQUOT
        | libc::EFBIG
        | libc::EOPNOTSUPP
        | libc::ENFILE => errno,
        _ => libc::EIO,
    }
}

/// vlmcd is away (restarting): try again.
fn is_retryable(errno: i32) -> bool {
    matches!(errno, libc::ECONNABORTED | libc::ENOTCONN | libc::EAGAIN)
}

fn backoff(attempt: u32) -> Duration {
    BACKOFF_MIN.saturating_mul(1 << attempt.min(8)).min(BACKOFF_MAX)
}

/// One data request of a FUSE request.
#[derive(Clone)]
struct Spec {
    op: Op,
    volume: Arc<str>,
    offset: u64,
    size: u64,
    flags: u32,
}

impl Spec {
    /// Reads and writes carry a window of `size` bytes; the other ops none.
    fn window(&self) -> u64 {
        match self.op {
            Op::Read | Op::Write => self.size,
            _ => 0,
        }
    }
}

/// Who gets the answer of one xseg request.
enum Track {
    /// The whole FUSE request.
    Whole(Reply),
    /// One piece of a FUSE request split at the segment's buffer size.
    Part { job: Arc<Job>, at: usize },
}

/// A FUSE request split into several xseg requests.
struct Job {
    state: Mutex<JobState>,
}

struct JobState {
    reply: Option<Reply>,
    parts_left: usize,
    errno: i32,
    /// A read's bytes, put together.
    data: Vec<u8>,
    total: u64,
}

/// An xseg request and what to do with its answer.
struct Flight {
    spec: Spec,
    track: Track,
    /// Since when this request has been in trouble (vlmcd away); reset by nothing: one
    /// request's whole outage is bounded by the retry timeout.
    trouble_since: Option<Instant>,
    attempts: u32,
    sent_at: Instant,
}

/// A request we hold, to be sent again at `due`.
struct Waiting {
    req: Request,
    flight: Flight,
    due: Instant,
}

/// A request not built yet (no descriptor or buffer was free).
struct Unsent {
    flight: Flight,
    payload: Vec<u8>,
    since: Instant,
}

#[derive(Default)]
struct Queues {
    waiting: Vec<Waiting>,
    unsent: VecDeque<Unsent>,
}

/// Timeouts of the data path.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long a request may stay in trouble (vlmcd away) before it fails with EIO.
    pub retry: Duration,
    /// How long a live vlmcd may take to answer one request.
    pub request: Duration,
}

/// The data path's port and its requests in flight. Shared by the FUSE threads (which
/// submit) and the completion thread (which answers).
pub struct Engine {
    port: Port,
    vlmcd: u32,
    /// The largest window of one request (the segment's buffer size).
    chunk: u64,
    timing: Timing,
    /// In-flight requests by descriptor index.
    slots: Box<[Mutex<Option<Flight>>]>,
    queues: Mutex<Queues>,
    /// `waiting.len() + unsent.len()`, read without the lock.
    queued: AtomicUsize,
    /// Whether vlmcd's port was bound at the last check.
    vlmcd_up: AtomicBool,
    stop: AtomicBool,
}

/// Per-request messages: at most one a second (SPEC §9: an outage must not flood the log).
static REQUEST_LOG: archip_peer::Throttle = archip_peer::Throttle::new(1000);

fn log_request(warn: bool, message: std::fmt::Arguments<'_>) {
    if let Some(suppressed) = REQUEST_LOG.allow() {
        let more = if suppressed > 0 { format!(" ({suppressed} more suppressed)") } else { String::new() };
        if warn {
            tracing::warn!("{message}{more}");
        } else {
            tracing::info!("{message}{more}");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves consistent data (plain moves).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Engine {
    /// Binds a dynamic port of `seg` for the data path; requests go to `vlmcd`.
    pub fn new(seg: &Arc<Segment>, vlmcd: u32, timing: Timing) -> xseg::Result<Engine> {
        let port = seg.bind_dynamic_port()?;
        let g = *seg.geometry();
        // Never hold more than half of the segment's buffers: the other half is for vlmcd's
        // map lookups and the mapper's reads, which the requests holding ours wait on.
        port.limit_buffers(g.nr_buffers / 2);
        let slots = (0..g.nr_requests).map(|_| Mutex::new(None)).collect();
        Ok(Engine {
            port,
            vlmcd,
            chunk: g.buffer_bytes,
            timing,
            slots,
            queues: Mutex::new(Queues::default()),
            queued: AtomicUsize::new(0),
            vlmcd_up: AtomicBool::new(seg.port_is_bound(vlmcd)),
            stop: AtomicBool::new(false),
        })
    }

    pub fn port_number(&self) -> u32 {
        self.port.number()
    }

    /// Reads `len` bytes of `volume` at `offset`; the reply carries them.
    pub fn read(&self, volume: &Arc<str>, offset: u64, len: u64, reply: Reply) {
        self.submit(Op::Read, volume, offset, len, 0, &[], reply);
    }

    /// Writes `data` at `offset` (with `fua`, durable when answered).
    pub fn write(&self, volume: &Arc<str>, offset: u64, data: &[u8], fua: bool, reply: Reply) {
        let flags = if fua { flags::FUA } else { 0 };
        self.submit(Op::Write, volume, offset, data.len() as u64, flags, data, reply);
    }

    /// A request descriptor with a whole segment buffer, for the `/dev/fuse` loop to read the
    /// next FUSE request's payload into; `None` when the segment has none free right now.
    pub fn spare(&self) -> Option<Request> {
        self.port.get_request(self.chunk).ok()
    }

    /// The window of a `spare` request.
    pub fn window_of<'a>(&'a self, spare: &'a mut Request) -> &'a mut [u8] {
        self.port.data_mut(spare).expect("a spare request has its buffer")
    }

    /// Gives back a `spare` that was not used.
    pub fn return_spare(&self, spare: Request) {
        self.port.put_request(spare);
    }

    /// The largest read or write a `spare` can carry.
    pub fn chunk(&self) -> u64 {
        self.chunk
    }

    /// Writes the first `len` bytes of `spare`'s window (where the kernel put them) at
    /// `offset`: no copy in this process.
    pub fn write_in_place(
        &self,
        spare: Request,
        volume: &Arc<str>,
        offset: u64,
        len: u64,
        fua: bool,
        reply: Reply,
    ) {
        let flags = if fua { flags::FUA } else { 0 };
        let spec = Spec { op: Op::Write, volume: volume.clone(), offset, size: len, flags };
        self.start_in_place(spare, spec, reply);
    }

    /// Reads `len` bytes at `offset` into `spare`'s window.
    pub fn read_in_place(&self, spare: Request, volume: &Arc<str>, offset: u64, len: u64, reply: Reply) {
        let spec = Spec { op: Op::Read, volume: volume.clone(), offset, size: len, flags: 0 };
        self.start_in_place(spare, spec, reply);
    }

    fn start_in_place(&self, mut req: Request, spec: Spec, reply: Reply) {
        debug_assert!(spec.size <= self.chunk);
        let now = Instant::now();
        let flight =
            Flight { spec, track: Track::Whole(reply), trouble_since: None, attempts: 0, sent_at: now };
        if self.queued.load(Ordering::Acquire) > 0 {
            // Older requests wait for resources: queue behind them, with a copy of the data.
            let payload = match flight.spec.op {
                Op::Write => self.window_of(&mut req)[..flight.spec.size as usize].to_vec(),
                _ => Vec::new(),
            };
            self.port.put_request(req);
            self.enqueue_unsent(Unsent { flight, payload, since: now });
            return;
        }
        let filled = self
            .fill(&mut req, &flight.spec)
            .and_then(|()| self.port.truncate_data(&mut req, flight.spec.window()));
        match filled {
            Ok(()) => self.launch(req, flight),
            Err(e) => {
                self.port.put_request(req);
                self.unbuildable(flight, e);
            }
        }
    }

    /// Sets a request's fields from `spec`.
    fn fill(&self, req: &mut Request, spec: &Spec) -> xseg::Result<()> {
        let edit = self.port.edit(req);
        edit.set_op(spec.op).set_offset(spec.offset).set_size(spec.size).set_flags(spec.flags);
        edit.set_target(spec.volume.as_bytes())?;
        Ok(())
    }

    /// Fails a request that cannot be built (not for want of resources).
    fn unbuildable(&self, flight: Flight, e: xseg::Error) {
        log_request(
            true,
            format_args!("{} {}: cannot build the request: {e}", flight.spec.op.name(), flight.spec.volume),
        );
        self.finish(flight, Err(e.errno()), &[]);
    }

    /// FLUSH, DISCARD or WRITE_ZEROES of a range (no data window).
    pub fn control(&self, op: Op, volume: &Arc<str>, offset: u64, len: u64, reply: Reply) {
        debug_assert!(matches!(op, Op::Flush | Op::Discard | Op::WriteZeroes));
        self.submit(op, volume, offset, len, 0, &[], reply);
    }

    #[allow(clippy::too_many_arguments)]
    fn submit(
        &self,
        op: Op,
        volume: &Arc<str>,
        offset: u64,
        len: u64,
        flags: u32,
        data: &[u8],
        reply: Reply,
    ) {
        let now = Instant::now();
        let spec = Spec { op, volume: volume.clone(), offset, size: len, flags };
        let split = matches!(op, Op::Read | Op::Write) && len > self.chunk;
        if !split {
            self.start(
                Flight { spec, track: Track::Whole(reply), trouble_since: None, attempts: 0, sent_at: now },
                data,
            );
            return;
        }
        let parts = len.div_ceil(self.chunk) as usize;
        let job = Arc::new(Job {
            state: Mutex::new(JobState {
                reply: Some(reply),
                parts_left: parts,
                errno: 0,
                data: if op == Op::Read { vec![0; len as usize] } else { Vec::new() },
                total: len,
            }),
        });
        let mut at = 0u64;
        while at < len {
            let n = (len - at).min(self.chunk);
            let piece = Spec { offset: offset + at, size: n, ..spec.clone() };
            let payload = if op == Op::Write { &data[at as usize..(at + n) as usize] } else { &[][..] };
            let track = Track::Part { job: job.clone(), at: at as usize };
            self.start(
                Flight { spec: piece, track, trouble_since: None, attempts: 0, sent_at: now },
                payload,
            );
            at += n;
        }
    }

    /// Builds and sends one request, or queues it when resources are short.
    fn start(&self, flight: Flight, payload: &[u8]) {
        if self.queued.load(Ordering::Acquire) > 0 {
            // Older requests wait for resources: queue behind them.
            self.enqueue_unsent(Unsent { flight, payload: payload.to_vec(), since: Instant::now() });
            return;
        }
        match self.build(&flight.spec, payload) {
            Ok(req) => self.launch(req, flight),
            Err(e) if e.is_transient() => {
                self.enqueue_unsent(Unsent { flight, payload: payload.to_vec(), since: Instant::now() })
            }
            Err(e) => self.unbuildable(flight, e),
        }
    }

    fn enqueue_unsent(&self, unsent: Unsent) {
        let mut q = lock(&self.queues);
        q.unsent.push_back(unsent);
        self.queued.fetch_add(1, Ordering::AcqRel);
    }

    /// Takes a request descriptor (and buffer) and fills it in.
    fn build(&self, spec: &Spec, payload: &[u8]) -> xseg::Result<Request> {
        self.port.prepare_request(spec.window(), |req| {
            self.fill(req, spec)?;
            if !payload.is_empty() {
                self.port.data_mut(req)?[..payload.len()].copy_from_slice(payload);
            }
            Ok(())
        })
    }

    /// Sends a built request to vlmcd, or holds it while vlmcd is away.
    fn launch(&self, req: Request, mut flight: Flight) {
        let now = Instant::now();
        if !self.vlmcd_up.load(Ordering::Acquire) {
            self.hold(req, flight, now);
            return;
        }
        let index = req.index() as usize;
        flight.sent_at = now;
        *lock(&self.slots[index]) = Some(flight);
        if let Err((req, e)) = self.port.submit(req, self.vlmcd) {
            let Some(flight) = lock(&self.slots[index]).take() else {
                // Given up on meanwhile (and answered): just return the descriptor.
                self.port.put_request(req);
                return;
            };
            if e.is_transient() {
                self.hold(req, flight, now);
            } else {
                log_request(
                    true,
                    format_args!(
                        "{} {}: cannot send to vlmcd: {e}",
                        flight.spec.op.name(),
                        flight.spec.volume
                    ),
                );
                self.port.put_request(req);
                self.finish(flight, Err(e.errno()), &[]);
            }
        }
    }

    /// Keeps `req` to send it again after a backoff, unless it has been in trouble too long.
    fn hold(&self, req: Request, mut flight: Flight, now: Instant) {
        let since = *flight.trouble_since.get_or_insert(now);
        if now.duration_since(since) >= self.timing.retry {
            log_request(
                true,
                format_args!(
                    "{} {} at {}: vlmcd unavailable for {:?}, failing with EIO",
                    flight.spec.op.name(),
                    flight.spec.volume,
                    flight.spec.offset,
                    self.timing.retry
                ),
            );
            self.port.put_request(req);
            self.finish(flight, Err(libc::EIO), &[]);
            return;
        }
        let due = now + backoff(flight.attempts);
        flight.attempts += 1;
        let mut q = lock(&self.queues);
        q.waiting.push(Waiting { req, flight, due });
        self.queued.fetch_add(1, Ordering::AcqRel);
    }

    /// Answers the FUSE request (or its part) of `flight`: `Ok(len)` with a read's bytes in
    /// `data`, or an errno from vlmcd.
    fn finish(&self, flight: Flight, result: Result<u64, i32>, data: &[u8]) {
        match flight.track {
            Track::Whole(reply) => match result {
                Ok(len) => reply.done(data, len),
                Err(errno) => reply.error(user_errno(errno)),
            },
            Track::Part { job, at } => {
                let mut s = lock(&job.state);
                match result {
                    Ok(_) if !data.is_empty() => s.data[at..at + data.len()].copy_from_slice(data),
                    Ok(_) => {}
                    Err(errno) if s.errno == 0 => s.errno = errno,
                    Err(_) => {}
                }
                s.parts_left -= 1;
                if s.parts_left == 0 {
                    let reply = s.reply.take().expect("a job is answered once");
                    if s.errno != 0 {
                        reply.error(user_errno(s.errno));
                    } else {
                        reply.done(&s.data, s.total);
                    }
                }
            }
        }
    }

    /// Handles vlmcd's answer to one of our requests.
    fn on_reply(&self, reply: Request) {
        let Some(mut flight) = lock(&self.slots[reply.index() as usize]).take() else {
            // The answer to a request given up on: return it to the pool.
            self.port.put_request(reply);
            return;
        };
        let view = self.port.view(&reply);
        let (errno, serviced) = (view.errno(), view.serviced());
        let spec = &flight.spec;
        if errno == 0 {
            let expected = spec.window();
            if matches!(spec.op, Op::Read | Op::Write) && serviced != expected {
                log_request(
                    true,
                    format_args!(
                        "{} {} at {}: {serviced} of {expected} bytes done",
                        spec.op.name(),
                        spec.volume,
                        spec.offset
                    ),
                );
                self.port.put_request(reply);
                self.finish(flight, Err(libc::EIO), &[]);
                return;
            }
            if spec.op == Op::Read {
                match self.port.data(&reply) {
                    Ok(window) if window.len() as u64 >= expected => {
                        let len = spec.size;
                        self.finish(flight, Ok(len), &window[..len as usize]);
                    }
                    _ => {
                        log_request(
                            true,
                            format_args!(
                                "read {} at {}: the answer's window is lost",
                                spec.volume, spec.offset
                            ),
                        );
                        self.finish(flight, Err(libc::EIO), &[]);
                    }
                }
            } else {
                let len = spec.size;
                self.finish(flight, Ok(len), &[]);
            }
            self.port.put_request(reply);
        } else if is_retryable(errno) {
            if flight.trouble_since.is_none() {
                log_request(
                    false,
                    format_args!(
                        "{} {} at {}: vlmcd away ({}), retrying for up to {:?}",
                        spec.op.name(),
                        spec.volume,
                        spec.offset,
                        std::io::Error::from_raw_os_error(errno),
                        self.timing.retry
                    ),
                );
            }
            let now = Instant::now();
            flight.trouble_since.get_or_insert(now);
            self.hold(reply, flight, now);
        } else {
            if user_errno(errno) == libc::EIO {
                log_request(
                    true,
                    format_args!(
                        "{} {} at {}+{}: {}",
                        spec.op.name(),
                        spec.volume,
                        spec.offset,
                        spec.size,
                        std::io::Error::from_raw_os_error(errno)
                    ),
                );
            }
            self.port.put_request(reply);
            self.finish(flight, Err(errno), &[]);
        }
    }

    /// Sends again what is due, and builds what waited for resources.
    fn pump(&self, now: Instant) {
        let (due, mut unsent) = {
            let mut q = lock(&self.queues);
            let mut due = Vec::new();
            let mut i = 0;
            while i < q.waiting.len() {
                if q.waiting[i].due <= now {
                    due.push(q.waiting.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            let unsent = std::mem::take(&mut q.unsent);
            self.queued.fetch_sub(due.len() + unsent.len(), Ordering::AcqRel);
            (due, unsent)
        };
        for w in due {
            self.launch(w.req, w.flight);
        }
        while let Some(u) = unsent.pop_front() {
            match self.build(&u.flight.spec, &u.payload) {
                Ok(req) => self.launch(req, u.flight),
                Err(e) if e.is_transient() && now.duration_since(u.since) < self.timing.retry => {
                    // Put it and everything behind it back, in order.
                    unsent.push_front(u);
                    let mut q = lock(&self.queues);
                    self.queued.fetch_add(unsent.len(), Ordering::AcqRel);
                    while let Some(u) = unsent.pop_back() {
                        q.unsent.push_front(u);
                    }
                    return;
                }
                Err(e) => {
                    log_request(
                        true,
                        format_args!(
                            "{} {}: no segment resources: {e}",
                            u.flight.spec.op.name(),
                            u.flight.spec.volume
                        ),
                    );
                    self.finish(u.flight, Err(libc::EIO), &[]);
                }
            }
        }
    }

    /// When vlmcd's port has been unbound for the retry timeout, or a live vlmcd has not
    /// answered within the request timeout, fails the requests in flight with EIO. Their
    /// descriptors stay with vlmcd's ring (or vlmcd) until its successor or recovery
    /// returns them; their late answers are then put back.
    fn give_up_on(&self, why: &str, mut overdue: impl FnMut(&Flight) -> bool) {
        let mut failed = 0usize;
        for slot in self.slots.iter() {
            let mut s = lock(slot);
            if s.as_ref().is_some_and(&mut overdue) {
                let flight = s.take().expect("checked");
                drop(s);
                self.finish(flight, Err(libc::EIO), &[]);
                failed += 1;
            }
        }
        if failed > 0 {
            tracing::warn!("{failed} requests failed with EIO: {why}");
        }
    }

    /// The completion thread: receives vlmcd's answers and replies to FUSE, resends what
    /// was in trouble, enforces the timeouts. Returns when [`Engine::stop`] is called.
    pub fn run_completions(&self) {
        let seg = self.port.segment().clone();
        let mut last_check = Instant::now();
        let mut last_scan = Instant::now();
        let mut down_since: Option<Instant> = None;
        let mut replies = Vec::with_capacity(RECEIVE_BATCH);
        while !self.stop.load(Ordering::Acquire) {
            while self.port.receive_many(RECEIVE_BATCH, &mut replies) > 0 {
                replies.drain(..).for_each(|reply| self.on_reply(reply));
            }
            let now = Instant::now();
            if now.duration_since(last_check) >= CHECK_EVERY {
                last_check = now;
                let up = seg.port_is_bound(self.vlmcd);
                if self.vlmcd_up.swap(up, Ordering::AcqRel) != up {
                    if up {
                        tracing::info!("vlmcd (port {}) is back", self.vlmcd);
                    } else {
                        tracing::warn!("vlmcd (port {}) is not running; holding IO", self.vlmcd);
                    }
                }
                match (up, down_since) {
                    (true, _) => down_since = None,
                    (false, None) => down_since = Some(now),
                    (false, Some(since)) if now.duration_since(since) >= self.timing.retry => {
                        self.give_up_on("vlmcd stayed away past the retry timeout", |f| {
                            now.duration_since(f.sent_at.max(since)) >= self.timing.retry
                        });
                    }
                    (false, Some(_)) => {}
                }
                if now.duration_since(last_scan) >= SCAN_EVERY {
                    last_scan = now;
                    let limit = self.timing.request;
                    self.give_up_on("no answer from vlmcd within the request timeout", |f| {
                        now.duration_since(f.sent_at) >= limit
                    });
                }
            }
            if self.queued.load(Ordering::Acquire) > 0 {
                self.pump(now);
            }
            let wait =
                if self.queued.load(Ordering::Acquire) > 0 { Duration::from_millis(1) } else { IDLE_WAIT };
            self.port.wait_reply(wait);
        }
    }

    /// Makes [`Engine::run_completions`] return (within its idle tick).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Requests in flight or queued (for the drain at exit).
    pub fn busy(&self) -> bool {
        self.queued.load(Ordering::Acquire) > 0 || self.slots.iter().any(|s| lock(s).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        assert_eq!(backoff(0), Duration::from_millis(5));
        assert_eq!(backoff(1), Duration::from_millis(10));
        assert_eq!(backoff(3), Duration::from_millis(40));
        assert_eq!(backoff(4), BACKOFF_MAX);
        assert_eq!(backoff(1000), BACKOFF_MAX);
    }

    #[test]
    fn only_errnos_a_user_can_act_on_pass_through() {
        assert_eq!(user_errno(libc::EROFS), libc::EROFS);
        assert_eq!(user_errno(libc::EINVAL), libc::EINVAL);
        assert_eq!(user_errno(libc::ENFILE), libc::ENFILE);
        assert_eq!(user_errno(libc::ESTALE), libc::EIO);
        assert_eq!(user_errno(libc::ENOENT), libc::EIO);
        assert_eq!(user_errno(libc::ETIMEDOUT), libc::EIO);
        assert!(is_retryable(libc::ECONNABORTED) && is_retryable(libc::ENOTCONN));
        assert!(!is_retryable(libc::EIO));
    }
}
