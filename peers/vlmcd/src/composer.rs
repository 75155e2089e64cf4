//! The volume composer peer: serves the volume protocol (archip-proto) with map lookups to
//! the mapper and object requests to the data blocker, every request a small state machine
//! (a [`Flight`]) advanced by events — its arrival, its sub-requests' replies, a timer —
//! so that one worker thread keeps any number of requests in flight.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use archip_peer::{Peer, PeerIo};
use archip_proto::{decode_extents, VolumeInfo, MAPPING_CACHEABLE};
use xseg::{flags, Held as _, Incoming, Op, Port, Request, Segment, TARGET_LEN_MAX};

use crate::batch::{Batch, Failure, Received, Retry, Sub, SubTarget, Timing, Window};
use crate::mapcache::{Change, MapCache, Piece, ReadTicket, WriteAnswer};
use crate::name::{VolName, VOLUME_NAME_MAX};
use crate::volumes::{DrainAdmit, FlightRef, Volumes};

/// Smallest window offered for an extent list (64 KiB, or the buffer size if smaller).
const MAP_WINDOW_MIN: u64 = 64 << 10;
/// Room for one encoded extent: 20 bytes of header and a name (map object names are at
/// most 71 bytes long).
const EXTENT_BYTES_MAX: u64 = 20 + 76;
/// Room for a volume's INFO answer (JSON).
const INFO_WINDOW: u64 = 8 << 10;
/// Smallest block the mapper supports (block_shift 12), to bound the extents of a range.
const BLOCK_MIN: u64 = 4096;
/// How often requests in flight are checked against their peers' liveness and timeouts.
const SCAN_EVERY: Duration = Duration::from_millis(100);
/// The longest a MAPW answer is used for writes, whatever the mapper grants.
const WRITE_LEASE_MAX: Duration = Duration::from_secs(60);

/// Errnos of the mapper that reach the frontend as they are on the data path; any other
/// becomes EIO.
const MAPPER_ERRNOS: &[i32] = &[
    libc::ENOENT,
    libc::EINVAL,
    libc::EROFS,
    libc::ESTALE,
    libc::EBUSY,
    libc::EIO,
    libc::ENOSPC,
    libc::EDQUOT,
    libc::EPERM,
    libc::EACCES,
];
/// Errnos of the data blocker that reach the frontend as they are; any other becomes EIO.
const DATA_ERRNOS: &[i32] = &[libc::EIO, libc::ENOSPC, libc::EDQUOT, libc::EROFS];

/// The ops of the volume protocol (and PING, answered by vlmcd itself).
const SERVED: &[Op] = &[
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
    Op::List,
    Op::Acquire,
    Op::Release,
];

#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub mapper_port: u32,
    pub data_port: u32,
    pub retry_timeout: Duration,
    pub request_timeout: Duration,
}

pub struct Composer {
    seg: Arc<Segment>,
    config: Config,
    state: Mutex<State>,
    /// When [`Peer::poll`] has something to do next, in nanoseconds since `epoch`
    /// (`u64::MAX`: nothing), so that a worker's every round costs one load when nothing
    /// is due.
    next_due_ns: AtomicU64,
    epoch: Instant,
}

/// Everything vlmcd knows, under one lock: its work per request is a few microseconds and
/// it runs one worker thread by default, so the lock is uncontended (see ARCHITECTURE.md).
struct State {
    /// Requests in flight, by the index of the frontend's request descriptor.
    flights: Vec<Option<Box<Flight>>>,
    active: usize,
    volumes: Volumes,
    cache: MapCache,
    /// Batches to send again at a time (after a backoff), possibly stale.
    timers: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    /// Requests that found the segment out of descriptors or buffers, oldest first: tried
    /// again as replies free some.
    starved: VecDeque<FlightRef>,
    next_nonce: u32,
    last_scan: Instant,
}

/// Where a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Waiting behind a drain of its volume, or (a drain) for the IO before it to leave.
    Parked,
    /// Admitted, nothing sent yet.
    Start,
    /// Asking the mapper for the volume's geometry (INFO), so its mappings can be cached.
    Geometry,
    /// A map lookup (MAPR, MAPW, DISCARD) at the mapper.
    Lookup,
    /// Object IO (or FLUSH) at the data blocker.
    Data,
    /// A management op at the mapper.
    Forward,
}

/// What a request holds in the volume table until it completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holds {
    Nothing,
    Io,
    Drain,
}

/// One frontend request in flight.
struct Flight {
    req: Incoming,
    nonce: u32,
    /// The port that accepted it: its sub-requests go out from there, and its answer.
    port: u32,
    op: Op,
    name: VolName,
    offset: u64,
    size: u64,
    flag_word: u32,
    window: u64,
    step: Step,
    batch: Option<Batch>,
    holds: Holds,
    /// Reads: 1, or 2 once the objects named were found gone (read the map again).
    attempt: u8,
    ticket: Option<ReadTicket>,
    change: Option<Change>,
    /// A lookup's answer.
    extents: Vec<Piece>,
    cacheable: bool,
    /// MAPW: when it was sent, and for how long the mapper grants its answer for writes.
    lookup_sent: Instant,
    write_lease: Option<Duration>,
    geometry: Option<(u64, u64)>,
    /// A management op that changes the volume's map or lock: forget its mappings after it.
    forgetting: bool,
    /// In the starved queue (once at most: the queue stays bounded by the requests in flight).
    queued_starved: bool,
    /// The due time of this request's newest timer entry, if one is queued.
    timer_at: Option<Instant>,
    /// A forwarded op's answer: (`serviced`, window length).
    answer: (u64, u64),
}

impl Flight {
    fn key(&self) -> FlightRef {
        (self.req.index(), self.nonce)
    }

    fn tag(&self) -> u64 {
        (u64::from(self.nonce) << 32) | u64::from(self.req.index())
    }
}

/// What a step leads to.
enum Next {
    Batch(Step, Batch),
    Finish(Result<u64, Failure>),
}

/// How driving a request went.
enum Driven {
    /// Waiting for replies or a timer.
    Waiting,
    /// Waiting for request descriptors or buffers to be freed.
    Starved,
    /// Answered (its slot is free).
    Finished,
}

impl Composer {
    pub fn new(seg: &Arc<Segment>, config: Config) -> Composer {
        let nr_requests = seg.geometry().nr_requests as usize;
        let now = Instant::now();
        Composer {
            seg: seg.clone(),
            config,
            state: Mutex::new(State {
                flights: (0..nr_requests).map(|_| None).collect(),
                active: 0,
                volumes: Volumes::default(),
                cache: MapCache::default(),
                timers: BinaryHeap::new(),
                starved: VecDeque::new(),
                next_nonce: 0,
                last_scan: now,
            }),
            next_due_ns: AtomicU64::new(u64::MAX),
            epoch: now,
        }
    }

    fn timing(&self) -> Timing {
        Timing { retry: self.config.retry_timeout, request: self.config.request_timeout }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is consistent between statements that could panic (plain moves).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn ns(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// Checks a frontend request and turns it into a flight (not yet admitted).
    fn parse(&self, port: &Port, req: Incoming) -> Result<Box<Flight>, (Incoming, Failure)> {
        let view = port.view(&req);
        let checked = (|| {
            let op = view
                .op()
                .ok_or_else(|| Failure::answer(libc::EOPNOTSUPP, format!("unknown op {}", view.op_raw())))?;
            if !SERVED.contains(&op) {
                return Err(Failure::answer(libc::EOPNOTSUPP, format!("vlmcd does not serve {}", op.name())));
            }
            let (offset, size, flag_word, window) =
                (view.offset(), view.size(), view.flags() & flags::ALL, view.data_len());
            let target = view.target().ok_or_else(|| Failure::answer(libc::EINVAL, "bad target length"))?;
            let name = target.as_str().ok_or_else(|| Failure::answer(libc::EINVAL, "target is not UTF-8"))?;
            let name_needed = !(op == Op::Ping || (op == Op::List && name.is_empty()));
            if name_needed && !plausible_name(name) {
                return Err(Failure::answer(libc::EINVAL, format!("implausible volume name {name:?}")));
            }
            let name = VolName::new(name)
                .ok_or_else(|| Failure::answer(libc::EINVAL, format!("implausible volume name {name:?}")))?;
            if matches!(op, Op::Read | Op::Write | Op::Discard | Op::WriteZeroes) {
                if offset.checked_add(size).is_none() {
                    return Err(Failure::answer(libc::EINVAL, format!("range {offset}+{size} overflows")));
                }
                if matches!(op, Op::Read | Op::Write) && size > window {
                    return Err(Failure::answer(
                        libc::EINVAL,
                        format!("size {size} exceeds the data window of {window}"),
                    ));
                }
            }
            Ok((op, name, offset, size, flag_word, window))
        })();
        let (op, name, offset, size, flag_word, window) = match checked {
            Ok(parsed) => parsed,
            Err(f) => return Err((req, f)),
        };
        let holds = match op {
            Op::Read | Op::Write | Op::Discard | Op::WriteZeroes => Holds::Io,
            Op::Flush | Op::Snapshot | Op::Close | Op::Delete => Holds::Drain,
            _ => Holds::Nothing,
        };
        Ok(Box::new(Flight {
            req,
            nonce: 0,
            port: port.number(),
            op,
            name,
            offset,
            size,
            flag_word,
            window,
            step: Step::Parked,
            batch: None,
            holds,
            attempt: 1,
            ticket: None,
            change: None,
            extents: Vec::new(),
            cacheable: false,
            lookup_sent: Instant::now(),
            write_lease: None,
            geometry: None,
            forgetting: false,
            queued_starved: false,
            timer_at: None,
            answer: (0, 0),
        }))
    }

    /// Drives request `index` and whatever its completion lets start; requests that starve
    /// for segment resources join the back of the starved queue.
    fn drive_all(&self, st: &mut State, io: &PeerIo<'_>, index: u32, now: Instant) {
        let mut work = vec![index];
        while let Some(index) = work.pop() {
            if let Driven::Starved = self.drive(st, io, index, now, &mut work) {
                let flight = st.flights[index as usize].as_mut().expect("a starved request stays");
                if !flight.queued_starved {
                    flight.queued_starved = true;
                    let key = flight.key();
                    st.starved.push_back(key);
                }
            }
        }
    }

    /// Advances request `index` as far as it goes now; requests its completion lets start
    /// are pushed on `work`.
    fn drive(
        &self,
        st: &mut State,
        io: &PeerIo<'_>,
        index: u32,
        now: Instant,
        work: &mut Vec<u32>,
    ) -> Driven {
        let Some(mut flight) = st.flights[index as usize].take() else { return Driven::Waiting };
        let Some(port) = io.port_no(flight.port) else {
            // Cannot happen: a request is only accepted on one of the peer's ports.
            st.flights[index as usize] = Some(flight);
            return Driven::Waiting;
        };
        let result = loop {
            if flight.step == Step::Parked {
                st.flights[index as usize] = Some(flight);
                return Driven::Waiting;
            }
            let tag = flight.tag();
            let next = match flight.batch.as_mut() {
                Some(batch) => {
                    let mut starved = false;
                    if batch.wants_send(now) {
                        starved = batch.send(port, &flight.req, tag, now);
                    }
                    if let Some(due) = batch.due.filter(|&due| flight.timer_at != Some(due)) {
                        // One timer entry per due time (replies drive a request many times).
                        st.timers.push(Reverse((due, index, flight.nonce)));
                        flight.timer_at = Some(due);
                    }
                    if !batch.is_done() {
                        st.flights[index as usize] = Some(flight);
                        return if starved { Driven::Starved } else { Driven::Waiting };
                    }
                    let batch = flight.batch.take().expect("checked");
                    self.step_done(st, port, &mut flight, batch.failure, now)
                }
                None => self.begin(st, port, &mut flight, now),
            };
            match next {
                Next::Batch(step, batch) => {
                    flight.step = step;
                    flight.batch = Some(batch);
                }
                Next::Finish(result) => break result,
            }
        };
        self.finish(st, io, port, flight, result, work);
        Driven::Finished
    }

    /// Answers a request, releases what it held in the volume table, and queues what that
    /// lets start.
    fn finish(
        &self,
        st: &mut State,
        io: &PeerIo<'_>,
        port: &Port,
        flight: Box<Flight>,
        result: Result<u64, Failure>,
        work: &mut Vec<u32>,
    ) {
        st.active -= 1;
        let started = match flight.holds {
            Holds::Io => st.volumes.leave_io(&flight.name).into_iter().collect(),
            Holds::Drain => st.volumes.leave_drain(&flight.name),
            Holds::Nothing => Vec::new(),
        };
        for (index, nonce) in started {
            if let Some(f) = st.flights[index as usize].as_mut().filter(|f| f.nonce == nonce) {
                f.step = Step::Start;
                work.push(index);
            }
        }
        if let Err(f) = &result {
            log_failure(flight.op, &flight.name, f);
        }
        io.respond_on(port, flight.req, result.map_err(|f| f.errno));
    }

    /// The first step of an admitted request.
    fn begin(&self, st: &mut State, port: &Port, f: &mut Flight, now: Instant) -> Next {
        match f.op {
            Op::Ping => Next::Finish(Ok(0)),
            Op::Read => {
                if f.attempt == 1 {
                    if let Some(pieces) = st.cache.lookup_read(&f.name, f.offset, f.size) {
                        return self.read_data(port, f, pieces);
                    }
                }
                if st.cache.wants_geometry(&f.name) {
                    return self.geometry(f);
                }
                self.read_lookup(st, f, now)
            }
            Op::Write => {
                if let Some(pieces) = st.cache.lookup_write(&f.name, f.offset, f.size, now) {
                    return self.write_data(f, pieces);
                }
                if st.cache.wants_geometry(&f.name) {
                    return self.geometry(f);
                }
                self.write_lookup(st, f, now)
            }
            Op::Discard | Op::WriteZeroes => {
                f.change = Some(st.cache.start_change(&f.name, f.offset, f.size, true));
                Next::Batch(Step::Lookup, self.lookup_batch(f, Op::Discard, 0))
            }
            Op::Flush => {
                let flush = Sub {
                    dst: self.config.data_port,
                    op: Op::Flush,
                    target: SubTarget::None,
                    offset: 0,
                    size: 0,
                    flags: 0,
                    window: Window::None,
                };
                Next::Batch(Step::Data, Batch::new(vec![flush], Retry::Idempotent))
            }
            _ => {
                // Whatever changes a volume's map or its lock ends its cached mappings,
                // before and after (an answer fetched across the op is not kept).
                f.forgetting = !matches!(f.op, Op::Info | Op::List | Op::Open);
                if f.forgetting {
                    st.cache.forget(&f.name);
                }
                let sub = Sub {
                    dst: self.config.mapper_port,
                    op: f.op,
                    target: SubTarget::Volume(f.name),
                    offset: f.offset,
                    size: f.size,
                    flags: f.flag_word,
                    window: if f.window > 0 {
                        Window::Shared { offset: 0, len: f.window }
                    } else {
                        Window::None
                    },
                };
                // Reading is safe to repeat; anything else may have happened before an abort.
                let retry = if matches!(f.op, Op::Info | Op::List) {
                    Retry::Idempotent
                } else {
                    Retry::UnacceptedOnly
                };
                Next::Batch(Step::Forward, Batch::new(vec![sub], retry))
            }
        }
    }

    /// A step's batch is done (answered, failed, or given up on).
    fn step_done(
        &self,
        st: &mut State,
        port: &Port,
        f: &mut Flight,
        failure: Option<Failure>,
        now: Instant,
    ) -> Next {
        match (f.step, f.op) {
            (Step::Geometry, _) => {
                // On any failure nothing is cached for the volume yet; the lookup goes on.
                match (failure, f.geometry.take()) {
                    (None, Some((block_size, size))) => st.cache.set_geometry(&f.name, block_size, size),
                    _ => tracing::debug!(volume = %f.name, "no geometry for the map cache"),
                }
                if f.op == Op::Write {
                    self.write_lookup(st, f, now)
                } else {
                    self.read_lookup(st, f, now)
                }
            }
            (Step::Lookup, Op::Read) => {
                if let Some(failure) = failure {
                    st.cache.forget(&f.name);
                    return Next::Finish(Err(failure));
                }
                let extents = std::mem::take(&mut f.extents);
                if let Err(failure) = covers_exactly(&extents, f.size) {
                    return Next::Finish(Err(failure));
                }
                match f.ticket.take() {
                    Some(ticket) => st.cache.keep_read(&f.name, ticket, f.cacheable, f.offset, &extents),
                    None if f.cacheable => st.cache.want(&f.name),
                    None => {}
                }
                self.read_data(port, f, extents)
            }
            (Step::Lookup, Op::Write) => {
                let change = f.change.take().expect("a MAPW is a change");
                let extents = std::mem::take(&mut f.extents);
                let checked = failure.map_or_else(|| covers_exactly(&extents, f.size), Err).and_then(|()| {
                    if extents.iter().any(|e| e.object.is_none()) {
                        Err(Failure::fault(libc::EIO, "the mapper answered MAPW with a zero extent"))
                    } else {
                        Ok(())
                    }
                });
                if let Err(failure) = checked {
                    st.cache.end_change(change, None);
                    st.cache.forget(&f.name);
                    return Next::Finish(Err(failure));
                }
                let writable_until = f.write_lease.map(|lease| f.lookup_sent + lease);
                let answer = WriteAnswer { offset: f.offset, pieces: &extents, writable_until };
                st.cache.end_change(change, Some(answer));
                self.write_data(f, extents)
            }
            (Step::Lookup, _) => {
                // DISCARD, WRITE_ZEROES: whole blocks are zero blocks now; the partial
                // pieces the mapper names are zeroed in their objects.
                st.cache.end_change(f.change.take().expect("a DISCARD is a change"), None);
                if let Some(failure) = failure {
                    st.cache.forget(&f.name);
                    return Next::Finish(Err(failure));
                }
                let extents = std::mem::take(&mut f.extents);
                let covered: u64 = extents.iter().map(|e| e.len).sum();
                if covered > f.size {
                    return Next::Finish(Err(Failure::fault(
                        libc::EIO,
                        format!("the mapper's DISCARD answer covers {covered} of {} bytes", f.size),
                    )));
                }
                let fua = f.flag_word & flags::FUA;
                let subs: Vec<Sub> = extents
                    .into_iter()
                    .filter_map(|e| {
                        Some(Sub {
                            dst: self.config.data_port,
                            op: Op::WriteZeroes,
                            target: SubTarget::Object(e.object?),
                            offset: e.object_offset,
                            size: e.len,
                            flags: fua,
                            window: Window::None,
                        })
                    })
                    .collect();
                if subs.is_empty() {
                    return Next::Finish(Ok(f.size));
                }
                Next::Batch(Step::Data, Batch::new(subs, Retry::Idempotent))
            }
            (Step::Data, Op::Read) => match failure {
                // An object the map named may be gone by the time it is read: a DISCARD of
                // its block (from another request) deletes it. Then the map is read again,
                // from the mapper, once.
                Some(failure) if failure.object_missing && f.attempt == 1 => {
                    tracing::debug!(volume = %f.name, cause = %failure.cause, "object gone; reading the map again");
                    f.attempt = 2;
                    self.read_lookup(st, f, now)
                }
                Some(failure) => Next::Finish(Err(failure)),
                None => Next::Finish(Ok(f.size)),
            },
            (Step::Data, Op::Flush) => Next::Finish(failure.map_or(Ok(0), Err)),
            (Step::Data, _) => Next::Finish(failure.map_or(Ok(f.size), Err)),
            (Step::Forward, _) => {
                if f.forgetting {
                    st.cache.forget(&f.name);
                }
                if let Some(failure) = failure {
                    return Next::Finish(Err(failure));
                }
                let (serviced, len) = f.answer;
                if len < f.window {
                    // The mapper sized its answer (e.g. INFO's JSON): show the frontend the same.
                    if let Err(e) = port.truncate_data(&mut f.req, len) {
                        return Next::Finish(Err(Failure::fault(
                            libc::EIO,
                            format!("sizing the answer: {e}"),
                        )));
                    }
                }
                if f.op == Op::Open {
                    st.cache.want(&f.name);
                }
                Next::Finish(Ok(serviced))
            }
            (Step::Parked | Step::Start, _) => unreachable!("no batch runs in {:?}", f.step),
        }
    }

    fn geometry(&self, f: &mut Flight) -> Next {
        let info = self.mapper_sub(f, Op::Info, 0, 0, 0, INFO_WINDOW);
        Next::Batch(Step::Geometry, Batch::new(vec![info], Retry::Idempotent))
    }

    fn read_lookup(&self, st: &mut State, f: &mut Flight, now: Instant) -> Next {
        f.ticket = st.cache.read_ticket(&f.name);
        f.lookup_sent = now;
        Next::Batch(Step::Lookup, self.lookup_batch(f, Op::MapRead, 0))
    }

    fn write_lookup(&self, st: &mut State, f: &mut Flight, now: Instant) -> Next {
        f.change = Some(st.cache.start_change(&f.name, f.offset, f.size, false));
        f.lookup_sent = now;
        Next::Batch(Step::Lookup, self.lookup_batch(f, Op::MapWrite, f.flag_word & flags::FUA))
    }

    /// A map lookup of the request's range, with an answer buffer of its own.
    fn lookup_batch(&self, f: &Flight, op: Op, flag_word: u32) -> Batch {
        let sub = self.mapper_sub(f, op, f.offset, f.size, flag_word, self.map_window(op, f.size));
        Batch::new(vec![sub], Retry::Idempotent)
    }

    fn mapper_sub(&self, f: &Flight, op: Op, offset: u64, size: u64, flag_word: u32, window: u64) -> Sub {
        Sub {
            dst: self.config.mapper_port,
            op,
            target: SubTarget::Volume(f.name),
            offset,
            size,
            flags: flag_word,
            window: Window::Own(window),
        }
    }

    /// Reads of the pieces: zero pieces are served here, before any object read shares the
    /// window.
    fn read_data(&self, port: &Port, f: &mut Flight, pieces: Vec<Piece>) -> Next {
        let data = match port.data_mut(&mut f.req) {
            Ok(data) => data,
            Err(e) => return Next::Finish(Err(Failure::fault(libc::EIO, format!("frontend window: {e}")))),
        };
        let mut subs = Vec::with_capacity(pieces.len());
        let mut at = 0u64;
        for p in pieces {
            match p.object {
                None => data[at as usize..(at + p.len) as usize].fill(0),
                Some(object) => subs.push(self.data_sub(Op::Read, object, p.object_offset, p.len, 0, at)),
            }
            at += p.len;
        }
        if subs.is_empty() {
            return Next::Finish(Ok(f.size));
        }
        Next::Batch(Step::Data, Batch::new(subs, Retry::Idempotent))
    }

    /// Writes of the pieces (all objects: a MAPW answer, or own blocks from the cache).
    fn write_data(&self, f: &Flight, pieces: Vec<Piece>) -> Next {
        let fua = f.flag_word & flags::FUA;
        let mut subs = Vec::with_capacity(pieces.len());
        let mut at = 0u64;
        for p in pieces {
            let Some(object) = p.object else {
                return Next::Finish(Err(Failure::fault(libc::EIO, "a write mapped to a zero block")));
            };
            subs.push(self.data_sub(Op::Write, object, p.object_offset, p.len, fua, at));
            at += p.len;
        }
        Next::Batch(Step::Data, Batch::new(subs, Retry::Idempotent))
    }

    /// The window for the extent list of a `size`-byte range: room for one extent per
    /// smallest block, at least 64 KiB, at most the segment's buffer size.
    fn map_window(&self, op: Op, size: u64) -> u64 {
        let buffer = self.seg.geometry().buffer_bytes;
        let blocks = if op == Op::Discard { 2 } else { size / BLOCK_MIN + 2 };
        (4 + blocks.saturating_mul(EXTENT_BYTES_MAX)).max(MAP_WINDOW_MIN).min(buffer)
    }

    fn data_sub(
        &self,
        op: Op,
        object: Arc<str>,
        object_offset: u64,
        len: u64,
        flag_word: u32,
        at: u64,
    ) -> Sub {
        Sub {
            dst: self.config.data_port,
            op,
            target: SubTarget::Object(object),
            offset: object_offset,
            size: len,
            flags: flag_word,
            window: Window::Shared { offset: at, len },
        }
    }

    /// A sub-request's reply, while it is held: what the current step learns from it.
    fn on_sub_reply(&self, port: &Port, f: &mut Flight, sub: &Sub, reply: &Request) -> Result<(), Failure> {
        let view = port.view(reply);
        match f.step {
            Step::Geometry => {
                let n = view.serviced() as usize;
                let window = port.data(reply).map_err(|e| Failure::fault(libc::EIO, e.to_string()))?;
                f.geometry = window
                    .get(..n)
                    .and_then(|json| serde_json::from_slice::<VolumeInfo>(json).ok())
                    .map(|info| (info.block_size_bytes, info.size_bytes));
                Ok(())
            }
            Step::Lookup => {
                let window = port.data(reply).map_err(|e| {
                    Failure::fault(libc::EIO, format!("{} answer window: {e}", sub.op.name()))
                })?;
                f.extents = decode(window, f.size).map_err(|why| {
                    Failure::fault(
                        libc::EIO,
                        format!("malformed {} answer from the mapper: {why}", sub.op.name()),
                    )
                })?;
                f.cacheable = view.flags() & MAPPING_CACHEABLE != 0;
                // MAPW: a cacheable answer carries, in `offset`, how long (ms) the mapper's
                // lock confirmation stays valid.
                f.write_lease = (sub.op == Op::MapWrite && f.cacheable)
                    .then(|| Duration::from_millis(view.offset()).min(WRITE_LEASE_MAX))
                    .filter(|lease| !lease.is_zero());
                Ok(())
            }
            Step::Data => {
                let serviced = view.serviced();
                if sub.op != Op::Flush && serviced != sub.size {
                    return Err(Failure::fault(
                        libc::EIO,
                        format!(
                            "{} {}: the blocker served {serviced} of {} bytes",
                            sub.op.name(),
                            sub.target,
                            sub.size
                        ),
                    ));
                }
                Ok(())
            }
            Step::Forward => {
                f.answer = (view.serviced(), view.data_len());
                Ok(())
            }
            Step::Parked | Step::Start => Ok(()),
        }
    }

    fn classify(&self, step: Step, op: Op) -> impl Fn(&Sub, i32) -> Failure {
        move |sub: &Sub, errno: i32| match step {
            Step::Data => data_failure(sub, errno),
            Step::Forward => {
                let cause = format!("the mapper answered {}", op.name());
                // Answers (ENOENT, EEXIST, EBUSY, ...) are the frontend's business; a storage
                // failure is worth a warning.
                if errno == libc::EIO {
                    Failure::fault(errno, cause)
                } else {
                    Failure::answer(errno, cause)
                }
            }
            _ => mapper_failure(sub.op, errno),
        }
    }

    /// Sends again the batches that are due, checks every request's peers and timeouts
    /// (every [`SCAN_EVERY`]), and sets when to look again.
    fn run_timers(&self, st: &mut State, io: &PeerIo<'_>, now: Instant) {
        while let Some(Reverse((due, index, nonce))) = st.timers.peek().copied() {
            if due > now {
                break;
            }
            st.timers.pop();
            let current =
                st.flights[index as usize].as_mut().filter(|f| f.nonce == nonce && f.timer_at == Some(due));
            if let Some(flight) = current {
                flight.timer_at = None;
                self.drive_all(st, io, index, now);
            }
        }
        if st.active > 0 && now.duration_since(st.last_scan) >= SCAN_EVERY {
            st.last_scan = now;
            let timing = self.timing();
            for index in 0..st.flights.len() {
                let Some(f) = st.flights[index].as_mut() else { continue };
                if let Some(batch) = f.batch.as_mut() {
                    batch.check(&self.seg, timing, now);
                    if batch.is_done() || batch.wants_send(now) {
                        self.drive_all(st, io, index as u32, now);
                    }
                }
            }
        }
        self.pump_starved(st, io, now);
        self.set_next_due(st, now);
    }

    /// Tries the starved requests again, oldest first, until one still starves.
    fn pump_starved(&self, st: &mut State, io: &PeerIo<'_>, now: Instant) {
        let mut work = Vec::new();
        while let Some((index, nonce)) = st.starved.pop_front() {
            let Some(flight) = st.flights[index as usize].as_mut().filter(|f| f.nonce == nonce) else {
                continue;
            };
            flight.queued_starved = false;
            match self.drive(st, io, index, now, &mut work) {
                Driven::Starved => {
                    if let Some(flight) = st.flights[index as usize].as_mut() {
                        flight.queued_starved = true;
                    }
                    st.starved.push_front((index, nonce));
                    break;
                }
                Driven::Waiting | Driven::Finished => {}
            }
        }
        for index in work {
            self.drive_all(st, io, index, now);
        }
    }

    fn set_next_due(&self, st: &State, now: Instant) {
        let timer = st.timers.peek().map(|Reverse((due, _, _))| *due);
        let scan = (st.active > 0).then(|| st.last_scan + SCAN_EVERY);
        let next = match (timer, scan) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let ns = next.map_or(u64::MAX, |t| self.ns(t.max(now)));
        self.next_due_ns.store(ns, Ordering::Release);
    }
}

impl Peer for Composer {
    fn on_request(&self, io: &PeerIo<'_>, req: Incoming) {
        let mut flight = match self.parse(io.port, req) {
            Ok(flight) => flight,
            Err((req, f)) => {
                let view = io.port.view(&req);
                let op = view.op().map_or("?", Op::name);
                let volume =
                    view.target().map_or("?".into(), |t| String::from_utf8_lossy(t.as_bytes()).into_owned());
                tracing::debug!(op, volume, errno = f.errno, cause = %f.cause, "request refused");
                io.respond(req, Err(f.errno));
                return;
            }
        };
        let now = Instant::now();
        let mut st = self.lock();
        let st = &mut *st;
        st.next_nonce = st.next_nonce.wrapping_add(1);
        flight.nonce = st.next_nonce;
        let key = flight.key();
        let index = key.0;
        flight.step = match flight.holds {
            Holds::Io if !st.volumes.enter_io(&flight.name, key) => Step::Parked,
            Holds::Drain if st.volumes.enter_drain(&flight.name, key) != DrainAdmit::Run => Step::Parked,
            _ => Step::Start,
        };
        let start = flight.step == Step::Start;
        debug_assert!(st.flights[index as usize].is_none(), "an accepted descriptor is in flight once");
        st.flights[index as usize] = Some(flight);
        st.active += 1;
        if start {
            self.drive_all(st, io, index, now);
        }
        self.set_next_due(st, now);
    }

    fn on_reply(&self, io: &PeerIo<'_>, reply: Request) {
        let view = io.port.view(&reply);
        let tag = view.user_data();
        let (index, nonce) = (tag as u32, (tag >> 32) as u32);
        let now = Instant::now();
        let mut st = self.lock();
        let st = &mut *st;
        let Some(f) =
            st.flights.get_mut(index as usize).and_then(Option::as_mut).filter(|f| f.nonce == nonce)
        else {
            // The reply to a sub-request given up on earlier.
            io.port.put_request(reply);
            return;
        };
        let Some(mut batch) = f.batch.take() else {
            io.port.put_request(reply);
            return;
        };
        let classify = self.classify(f.step, f.op);
        let received = batch.receive(io.port, reply, now, &classify, &mut |sub, reply| {
            self.on_sub_reply(io.port, f, sub, reply)
        });
        if let Received::NotMine(reply) = received {
            io.port.put_request(reply);
        }
        f.batch = Some(batch);
        self.drive_all(st, io, index, now);
        self.pump_starved(st, io, now);
        self.set_next_due(st, now);
    }

    /// vlmcd never blocks: a round's sub-requests and answers wake each peer once.
    fn plug_rounds(&self) -> bool {
        true
    }

    /// `on_request` only starts the work and never blocks: take requests in batches.
    fn accept_batch(&self) -> usize {
        32
    }

    /// A quarter of the segment's buffers for map lookups (their answers need a window):
    /// frontends hold at most half, so the mapper, which vlmcd waits on, always finds the
    /// last quarter for reading and writing maps.
    fn buffer_limit(&self, nr_buffers: u32) -> Option<u32> {
        Some(nr_buffers / 4)
    }

    /// One buffer in 64 (at least one) kept back for map lookups: with several frontends
    /// holding every free buffer, lookups still go out, writes complete and free theirs.
    fn spare_requests(&self, nr_buffers: u32) -> u32 {
        (nr_buffers / 64).max(1)
    }

    fn poll(&self, io: &PeerIo<'_>) -> Option<Duration> {
        let due = self.next_due_ns.load(Ordering::Acquire);
        if due == u64::MAX {
            return None;
        }
        let now = Instant::now();
        let now_ns = self.ns(now);
        if now_ns < due {
            return Some(Duration::from_nanos(due - now_ns));
        }
        let mut st = self.lock();
        self.run_timers(&mut st, io, now);
        let due = self.next_due_ns.load(Ordering::Acquire);
        (due != u64::MAX).then(|| Duration::from_nanos(due.saturating_sub(self.ns(Instant::now()))))
    }
}

/// Recovers the sub-request ports of a vlmcd that died on `own` ports, before they are
/// bound again.
///
/// Binding a static port recovers it, which first orphans the sub-requests it sent (waiting
/// until no live peer still serves one) and then fails back the frontend requests it had
/// accepted, so the frontends may reuse their buffers safely. Earlier versions of vlmcd sent
/// sub-requests from *dynamic* ports, which that recovery does not touch: recovering those
/// ports first orphans their sub-requests the same way.
pub fn recover_predecessor(seg: &Segment, own: std::ops::RangeInclusive<u32>) {
    let report = seg.report();
    let dead: Vec<u32> = report
        .ports
        .iter()
        .filter(|p| own.contains(&p.port) && p.owner_pid != 0 && !p.owner_alive && !p.recovering)
        .map(|p| p.owner_pid)
        .collect();
    if dead.is_empty() {
        return;
    }
    for p in report.ports.iter().filter(|p| p.dynamic && !p.owner_alive && dead.contains(&p.owner_pid)) {
        match seg.recover_port(p.port) {
            Ok(r) => tracing::info!(
                port = p.port,
                dead_pid = r.dead_pid,
                orphaned = r.orphaned,
                failed_back = r.failed_back,
                "recovered a sub-request port of a dead vlmcd"
            ),
            Err(e) => tracing::warn!(port = p.port, "recovering a sub-request port of a dead vlmcd: {e}"),
        }
    }
}

fn mapper_failure(op: Op, errno: i32) -> Failure {
    let cause = format!("the mapper answered {}: {}", op.name(), std::io::Error::from_raw_os_error(errno));
    if !MAPPER_ERRNOS.contains(&errno) {
        Failure::fault(libc::EIO, cause)
    } else if errno == libc::EIO {
        Failure::fault(errno, cause)
    } else {
        Failure::answer(errno, cause)
    }
}

fn data_failure(sub: &Sub, errno: i32) -> Failure {
    let cause = format!(
        "the data blocker answered {} {}: {}",
        sub.op.name(),
        sub.target,
        std::io::Error::from_raw_os_error(errno)
    );
    let mut failure = Failure::fault(if DATA_ERRNOS.contains(&errno) { errno } else { libc::EIO }, cause);
    failure.object_missing = errno == libc::ENOENT;
    failure
}

/// 1 to 64 bytes of printable ASCII without spaces (the mapper checks the exact rules).
fn plausible_name(name: &str) -> bool {
    (1..=VOLUME_NAME_MAX).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_graphic())
}

/// Decodes an extent list of a `size`-byte range: every extent non-empty, object names
/// that fit a request's target, and no more than `size` bytes in all.
fn decode(window: &[u8], size: u64) -> Result<Vec<Piece>, String> {
    let mut extents = Vec::new();
    let mut total = 0u64;
    for extent in decode_extents(window).map_err(|e| e.to_string())? {
        let e = extent.map_err(|e| e.to_string())?;
        if e.len == 0 {
            return Err("an empty extent".into());
        }
        if e.object.is_some_and(|o| o.len() > TARGET_LEN_MAX) {
            return Err("an object name longer than a target".into());
        }
        if e.object_offset.checked_add(e.len).is_none() {
            return Err("an extent past the end of any object".into());
        }
        total = total.saturating_add(e.len);
        if total > size {
            return Err(format!("extents cover more than the {size} bytes asked"));
        }
        extents.push(Piece { object: e.object.map(Arc::from), object_offset: e.object_offset, len: e.len });
    }
    Ok(extents)
}

fn covers_exactly(extents: &[Piece], size: u64) -> Result<(), Failure> {
    let covered: u64 = extents.iter().map(|e| e.len).sum();
    if covered == size {
        Ok(())
    } else {
        Err(Failure::fault(libc::EIO, format!("the mapper's extents cover {covered} of {size} bytes")))
    }
}

/// A failed request: faults are warned about (throttled), answers logged at debug.
fn log_failure(op: Op, volume: &VolName, f: &Failure) {
    if f.fault {
        warn_throttled(op.name(), volume.as_str(), f);
    } else {
        tracing::debug!(op = op.name(), volume = volume.as_str(), errno = f.errno, cause = %f.cause, "request refused");
    }
}

/// One warning per failed request, but at most about 10 a second for the whole daemon; the
/// number left out is reported with the next one.
fn warn_throttled(op: &str, volume: &str, f: &Failure) {
    static WARNINGS: archip_peer::Throttle = archip_peer::Throttle::new(100);
    if let Some(suppressed) = WARNINGS.allow() {
        tracing::warn!(op, volume, errno = f.errno, cause = %f.cause, suppressed, "request failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use archip_proto::{encode_extents, Extent};

    #[test]
    fn names_must_be_plausible() {
        assert!(plausible_name("vol1"));
        assert!(plausible_name(&"a".repeat(64)));
        assert!(!plausible_name(&"a".repeat(65)));
        assert!(!plausible_name(""));
        assert!(!plausible_name("a b"));
        assert!(!plausible_name("a\nb"));
        assert!(!plausible_name("é"));
    }

    #[test]
    fn extent_lists_are_checked() {
        let mut buf = [0u8; 512];
        let ok = [
            Extent { object: Some("data:1:2"), object_offset: 100, len: 50 },
            Extent { object: None, object_offset: 0, len: 50 },
        ];
        let n = encode_extents(&ok, &mut buf).unwrap();
        let got = decode(&buf[..n], 100).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].object.as_deref(), Some("data:1:2"));
        assert!(covers_exactly(&got, 100).is_ok());
        assert!(covers_exactly(&got, 101).is_err());
        assert!(decode(&buf[..n], 99).unwrap_err().contains("more than"));
        let empty = [Extent { object: None, object_offset: 0, len: 0 }];
        let n = encode_extents(&empty, &mut buf).unwrap();
        assert!(decode(&buf[..n], 10).is_err());
        assert!(decode(&[1, 0], 10).is_err());
    }

    #[test]
    fn unexpected_errnos_become_eio_on_the_data_path() {
        let sub = Sub {
            dst: 3,
            op: Op::Read,
            target: SubTarget::Object(Arc::from("o")),
            offset: 0,
            size: 1,
            flags: 0,
            window: Window::None,
        };
        assert_eq!(data_failure(&sub, libc::ENOENT).errno, libc::EIO);
        assert!(data_failure(&sub, libc::ENOENT).object_missing);
        assert!(!data_failure(&sub, libc::EIO).object_missing);
        assert_eq!(data_failure(&sub, libc::ENOSPC).errno, libc::ENOSPC);
        assert_eq!(mapper_failure(Op::MapRead, libc::EINVAL).errno, libc::EINVAL);
        assert!(!mapper_failure(Op::MapRead, libc::EINVAL).fault);
        assert_eq!(mapper_failure(Op::MapRead, libc::EOPNOTSUPP).errno, libc::EIO);
    }
}
