//! `archip-client`: what tools (vlmc), frontends (FUSE, ublk) and tests use to talk to
//! vlmcd, the volume composer, over the shared-memory segment.
//!
//! A [`Client`] joins the segment and binds a dynamic port of its own. Every request goes to
//! vlmcd's port (archip-proto's `ports::VLMCD` by default) with the volume as its target,
//! exactly as archip-proto's volume protocol documents: data in the request's own data
//! window (copied into the segment once; vlmcd and the blockers never copy it again), names
//! and JSON in the data window, errors as errnos.
//!
//! # Blocking calls
//! [`Client::read`], [`Client::write`], [`Client::create`], ... each do one or more round
//! trips and return when vlmcd has answered, or fail with [`ClientError::TimedOut`] after
//! [`Client::timeout`] (30 s by default; set it above vlmcd's `--retry-timeout-ms` if
//! callers should ride out a restarting peer rather than see the timeout). IO larger than
//! the segment's buffer size ([`Client::max_request_bytes`]) is split into several requests,
//! sent one after the other. Nothing else is retried here: vlmcd retries while a peer behind
//! it restarts.
//!
//! # Pipelined IO for event loops
//! A frontend keeps many requests in flight on the one port:
//!
//! ```no_run
//! # fn demo(client: &mut archip_client::Client) -> Result<(), archip_client::ClientError> {
//! let mut done = Vec::new();
//! let a = client.submit_write("vol1", 0, &[1u8; 4096], false)?;
//! let b = client.submit_read("vol1", 1 << 20, 8192)?;
//! while client.in_flight() > 0 {
//!     client.wait(std::time::Duration::from_millis(100));
//!     client.poll_completions(&mut done);
//! }
//! # let _ = (a, b); Ok(()) }
//! ```
//!
//! [`Client::submit_read`] / [`Client::submit_write`] send the request(s) and return a
//! [`Ticket`] at once; [`Client::poll_completions`] collects the finished ones without
//! blocking (a read's [`Completion`] carries the bytes); [`Client::wait`] sleeps until a
//! reply is ready (or a ticket's timeout passes). IO larger than the buffer size is split
//! here too, and completes once every piece has. A ticket whose reply does not come within
//! the timeout completes with [`ClientError::TimedOut`]. How many requests may be in flight
//! is bounded by the segment: a port owns at most `queue_capacity` requests, and each
//! request with data holds one buffer; past that, submitting fails with a
//! [`ClientError::Segment`] whose errno is EAGAIN, and the caller polls completions first.
//! Blocking calls may be mixed with pipelined IO: replies to tickets that arrive while a
//! blocking call waits are kept for the next poll.
//!
//! A `Client` is one port with one receiver: its methods take `&mut self`. Threads that
//! want to share one wrap it in a mutex, or (better) have a client each.

mod error;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use archip_proto::{CreateOptions, VolumeInfo};
pub use error::ClientError;
use xseg::{flags, Held, Op, Port, Request, Segment};

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// How long a call waits for vlmcd's answer, by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The data window offered for an INFO answer (at most the segment's buffer size).
/// How long a request waits for the segment to free a descriptor or buffer before looking again.
const RESOURCE_WAIT: Duration = Duration::from_millis(1);
const INFO_WINDOW: u64 = 16 << 10;
/// The data window offered for a LIST page (at most the segment's buffer size).
const LIST_WINDOW: u64 = 1 << 20;

/// A connection to vlmcd: a dynamic port in the segment.
pub struct Client {
    port: Port,
    vlmcd: u32,
    timeout: Duration,
    /// Largest data window of one request (the segment's buffer size).
    chunk: u64,
    next_ticket: u64,
    /// Requests in flight for tickets, by request index.
    parts: HashMap<u32, Part>,
    tickets: HashMap<u64, TicketState>,
    ready: VecDeque<Completion>,
}

/// Names one pipelined IO until its [`Completion`] is collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(u64);

impl Ticket {
    /// The ticket's number (increasing per client, never reused).
    pub fn id(self) -> u64 {
        self.0
    }
}

/// A finished pipelined IO.
#[derive(Debug)]
pub struct Completion {
    pub ticket: Ticket,
    /// The bytes transferred, or why the IO failed.
    pub result: Result<u64>,
    /// A successful read's bytes; empty for writes and failures.
    pub data: Vec<u8>,
}

/// One request of a ticket: where its bytes go in the ticket's data.
struct Part {
    ticket: u64,
    at: usize,
    len: u64,
}

struct TicketState {
    op: &'static str,
    target: String,
    read: bool,
    len: u64,
    parts_left: usize,
    data: Vec<u8>,
    error: Option<ClientError>,
    deadline: Instant,
}

impl TicketState {
    fn finish(self, id: u64) -> Completion {
        match self.error {
            None => Completion { ticket: Ticket(id), result: Ok(self.len), data: self.data },
            Some(e) => Completion { ticket: Ticket(id), result: Err(e), data: Vec::new() },
        }
    }
}

/// The fields of a request to vlmcd.
#[derive(Clone, Copy)]
struct Spec<'a> {
    op: Op,
    name: &'static str,
    target: &'a str,
    offset: u64,
    size: u64,
    flags: u32,
}

impl<'a> Spec<'a> {
    fn new(op: Op, name: &'static str, target: &'a str) -> Spec<'a> {
        Spec { op, name, target, offset: 0, size: 0, flags: 0 }
    }
    fn range(self, offset: u64, size: u64) -> Spec<'a> {
        Spec { offset, size, ..self }
    }
    fn flags(self, flags: u32) -> Spec<'a> {
        Spec { flags, ..self }
    }
    fn failed(&self, errno: i32) -> ClientError {
        ClientError::Failed { op: self.name, target: self.target.to_string(), errno }
    }
    fn bad_reply(&self, reason: impl Into<String>) -> ClientError {
        ClientError::BadReply { op: self.name, target: self.target.to_string(), reason: reason.into() }
    }
}

/// The JSON in a data window: up to the first NUL byte (the window may be larger).
fn json_bytes(window: &[u8]) -> &[u8] {
    window.iter().position(|&b| b == 0).map_or(window, |end| &window[..end])
}

/// The first JSON value in `bytes`; whatever follows it (the rest of a window that was not
/// trimmed to the answer) is ignored.
fn first_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    match serde_json::Deserializer::from_slice(json_bytes(bytes)).into_iter::<T>().next() {
        Some(value) => value,
        None => serde_json::from_slice(b""),
    }
}

impl Client {
    /// Joins segment `segment` and binds a dynamic port; requests go to `vlmcd_port`.
    pub fn connect(segment: &str, vlmcd_port: u32) -> Result<Client> {
        let seg = Segment::join(segment)?;
        Client::with_segment(&seg, vlmcd_port)
    }

    /// Like [`Client::connect`], with a segment this process has already joined.
    pub fn with_segment(seg: &Arc<Segment>, vlmcd_port: u32) -> Result<Client> {
        let port = seg.bind_dynamic_port()?;
        Ok(Client {
            chunk: seg.geometry().buffer_bytes,
            port,
            vlmcd: vlmcd_port,
            timeout: DEFAULT_TIMEOUT,
            next_ticket: 1,
            parts: HashMap::new(),
            tickets: HashMap::new(),
            ready: VecDeque::new(),
        })
    }

    /// Sets how long a call (or a ticket) waits for vlmcd's answer.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// This client's own port number.
    pub fn port_number(&self) -> u32 {
        self.port.number()
    }

    /// The most bytes one request carries (the segment's buffer size); larger IO is split.
    pub fn max_request_bytes(&self) -> u64 {
        self.chunk
    }

    // ---- blocking IO ----

    /// Reads `buf.len()` bytes of `volume` at `offset` (never-written ranges read as zeros).
    pub fn read(&mut self, volume: &str, offset: u64, buf: &mut [u8]) -> Result<()> {
        let spec = Spec::new(Op::Read, "read", volume);
        check_range(&spec, offset, buf.len() as u64)?;
        let mut at = offset;
        for piece in buf.chunks_mut(self.chunk as usize) {
            let n = piece.len() as u64;
            let req = self.request(&Spec { offset: at, size: n, ..spec }, n, &[])?;
            let reply = self.round_trip(req, &spec)?;
            let copied = self.check_serviced(&reply, n, &spec).and_then(|()| {
                let data = self.port.data(&reply)?;
                piece.copy_from_slice(data.get(..piece.len()).ok_or_else(|| spec.bad_reply("short window"))?);
                Ok(())
            });
            self.port.put_request(reply);
            copied?;
            at += n;
        }
        Ok(())
    }

    /// Writes `data` to `volume` at `offset`; with `fua`, durable when this returns.
    pub fn write(&mut self, volume: &str, offset: u64, data: &[u8], fua: bool) -> Result<()> {
        let spec = Spec::new(Op::Write, "write", volume).flags(if fua { flags::FUA } else { 0 });
        check_range(&spec, offset, data.len() as u64)?;
        let mut at = offset;
        for piece in data.chunks(self.chunk as usize) {
            let n = piece.len() as u64;
            let req = self.request(&Spec { offset: at, size: n, ..spec }, n, piece)?;
            let reply = self.round_trip(req, &spec)?;
            let checked = self.check_serviced(&reply, n, &spec);
            self.port.put_request(reply);
            checked?;
            at += n;
        }
        Ok(())
    }

    /// Makes every write to `volume` completed before this call durable.
    pub fn flush(&mut self, volume: &str) -> Result<()> {
        self.simple(Spec::new(Op::Flush, "flush", volume), &[]).map(drop)
    }

    /// Discards `len` bytes at `offset`: the range reads as zeros afterwards.
    pub fn discard(&mut self, volume: &str, offset: u64, len: u64) -> Result<()> {
        let spec = Spec::new(Op::Discard, "discard", volume).range(offset, len);
        check_range(&spec, offset, len)?;
        self.simple(spec, &[]).map(drop)
    }

    /// Writes zeros over `len` bytes at `offset` (whole blocks become unstored zero blocks).
    pub fn write_zeroes(&mut self, volume: &str, offset: u64, len: u64) -> Result<()> {
        let spec = Spec::new(Op::WriteZeroes, "write_zeroes", volume).range(offset, len);
        check_range(&spec, offset, len)?;
        self.simple(spec, &[]).map(drop)
    }

    /// Asks vlmcd itself for an answer (a liveness check; no volume involved).
    pub fn ping(&mut self) -> Result<()> {
        self.simple(Spec::new(Op::Ping, "ping", ""), &[]).map(drop)
    }

    // ---- management ----

    /// Creates volume `name` of `size` bytes.
    pub fn create(&mut self, name: &str, size: u64, options: &CreateOptions) -> Result<()> {
        let spec = Spec::new(Op::Create, "create", name).range(0, size);
        let json =
            serde_json::to_vec(options).map_err(|e| spec.bad_reply(format!("encoding options: {e}")))?;
        self.simple(spec, &json).map(drop)
    }

    /// Creates volume `name` as a clone of `snapshot`; `size` defaults to the snapshot's.
    pub fn clone_volume(&mut self, name: &str, snapshot: &str, size: Option<u64>) -> Result<()> {
        let spec = Spec::new(Op::Clone, "clone", name).range(0, size.unwrap_or(0));
        self.simple(spec, snapshot.as_bytes()).map(drop)
    }

    /// Takes snapshot `snapshot` of `volume`.
    pub fn snapshot(&mut self, volume: &str, snapshot: &str) -> Result<()> {
        self.simple(Spec::new(Op::Snapshot, "snapshot", volume), snapshot.as_bytes()).map(drop)
    }

    /// Removes volume (or snapshot) `name`.
    pub fn remove(&mut self, name: &str) -> Result<()> {
        self.simple(Spec::new(Op::Delete, "remove", name), &[]).map(drop)
    }

    /// Renames `name` to `new_name`.
    pub fn rename(&mut self, name: &str, new_name: &str) -> Result<()> {
        self.simple(Spec::new(Op::Rename, "rename", name), new_name.as_bytes()).map(drop)
    }

    /// Changes the size of `name`; shrinking needs `allow_shrink`.
    pub fn resize(&mut self, name: &str, size: u64, allow_shrink: bool) -> Result<()> {
        let spec = Spec::new(Op::Resize, "resize", name).range(0, size).flags(if allow_shrink {
            flags::FORCE
        } else {
            0
        });
        self.simple(spec, &[]).map(drop)
    }

    /// What vlmcd (its mapper) knows of `name`.
    pub fn info(&mut self, name: &str) -> Result<VolumeInfo> {
        let spec = Spec::new(Op::Info, "info", name);
        // A zeroed window: the answer is the JSON up to the first NUL, however the mapper
        // sizes it.
        let zeros = vec![0u8; INFO_WINDOW.min(self.chunk) as usize];
        let req = self.request(&spec, zeros.len() as u64, &zeros)?;
        let reply = self.round_trip(req, &spec)?;
        let info = self
            .port
            .data(&reply)
            .map_err(ClientError::from)
            .and_then(|data| first_json(data).map_err(|e| spec.bad_reply(format!("volume info: {e}"))));
        self.port.put_request(reply);
        info
    }

    /// Every volume and snapshot, fetched page by page (each page skips the entries already
    /// seen, until an empty page).
    pub fn list(&mut self) -> Result<Vec<VolumeInfo>> {
        let mut all: Vec<VolumeInfo> = Vec::new();
        loop {
            let spec = Spec::new(Op::List, "list", "").range(all.len() as u64, 0);
            let req = self.request(&spec, LIST_WINDOW.min(self.chunk), &[])?;
            let reply = self.round_trip(req, &spec)?;
            let page = self.port.data(&reply).map_err(ClientError::from).and_then(|data| {
                let serviced = self.port.view(&reply).serviced();
                let used = data.get(..serviced as usize).ok_or_else(|| {
                    spec.bad_reply(format!("{serviced} bytes claimed in a {}-byte window", data.len()))
                })?;
                let json = json_bytes(used);
                if json.is_empty() {
                    return Ok(Vec::new());
                }
                first_json::<Vec<VolumeInfo>>(json).map_err(|e| spec.bad_reply(format!("volume list: {e}")))
            });
            self.port.put_request(reply);
            let page = page?;
            if page.is_empty() {
                return Ok(all);
            }
            all.extend(page);
        }
    }

    /// Opens `name` on this host (takes its lock).
    pub fn open(&mut self, name: &str) -> Result<()> {
        self.simple(Spec::new(Op::Open, "open", name), &[]).map(drop)
    }

    /// Closes `name` (after every request on it before the close has completed).
    pub fn close(&mut self, name: &str) -> Result<()> {
        self.simple(Spec::new(Op::Close, "close", name), &[]).map(drop)
    }

    /// Takes the lock of `name` for this host.
    pub fn lock(&mut self, name: &str) -> Result<()> {
        self.simple(Spec::new(Op::Acquire, "lock", name), &[]).map(drop)
    }

    /// Releases the lock of `name`; `force` breaks another host's lock.
    pub fn unlock(&mut self, name: &str, force: bool) -> Result<()> {
        let spec = Spec::new(Op::Release, "unlock", name).flags(if force { flags::FORCE } else { 0 });
        self.simple(spec, &[]).map(drop)
    }

    // ---- pipelined IO ----

    /// Sends a read of `len` bytes; its [`Completion`] carries the bytes.
    pub fn submit_read(&mut self, volume: &str, offset: u64, len: usize) -> Result<Ticket> {
        self.submit_io(Spec::new(Op::Read, "read", volume), offset, len, None)
    }

    /// Sends a write of `data` (copied into the segment before this returns).
    pub fn submit_write(&mut self, volume: &str, offset: u64, data: &[u8], fua: bool) -> Result<Ticket> {
        let spec = Spec::new(Op::Write, "write", volume).flags(if fua { flags::FUA } else { 0 });
        self.submit_io(spec, offset, data.len(), Some(data))
    }

    /// Tickets sent and not yet collected by [`Client::poll_completions`].
    pub fn in_flight(&self) -> usize {
        self.tickets.len() + self.ready.len()
    }

    /// Moves every finished ticket's [`Completion`] to `out` without blocking; returns how
    /// many were added.
    pub fn poll_completions(&mut self, out: &mut Vec<Completion>) -> usize {
        while let Some(reply) = self.port.receive() {
            self.dispatch(reply);
        }
        self.expire(Instant::now());
        let n = self.ready.len();
        out.extend(self.ready.drain(..));
        n
    }

    /// Waits until a reply is ready or a ticket times out (then [`Client::poll_completions`]
    /// has something), or `timeout` passes. Returns whether there may be completions.
    pub fn wait(&mut self, timeout: Duration) -> bool {
        if !self.ready.is_empty() {
            return true;
        }
        let now = Instant::now();
        let mut timeout = timeout;
        if let Some(deadline) = self.tickets.values().map(|t| t.deadline).min() {
            if deadline <= now {
                return true;
            }
            timeout = timeout.min(deadline - now);
        }
        self.port.wait_reply(timeout) || self.tickets.values().any(|t| t.deadline <= Instant::now())
    }

    fn submit_io(&mut self, spec: Spec<'_>, offset: u64, len: usize, data: Option<&[u8]>) -> Result<Ticket> {
        check_range(&spec, offset, len as u64)?;
        let id = self.next_ticket;
        self.next_ticket += 1;
        let mut sent = Vec::new();
        let mut at = 0usize;
        while at < len {
            let n = (len - at).min(self.chunk as usize);
            let payload = data.map_or(&[][..], |d| &d[at..at + n]);
            let piece = Spec { offset: offset + at as u64, size: n as u64, ..spec };
            // A failure strands the pieces already sent: they are not registered, so their
            // replies are returned to the pool when they come.
            let req = self.request(&piece, n as u64, payload)?;
            let index = req.index();
            self.send(req)?;
            sent.push((index, Part { ticket: id, at, len: n as u64 }));
            at += n;
        }
        let state = TicketState {
            op: spec.name,
            target: spec.target.to_string(),
            read: data.is_none(),
            len: len as u64,
            parts_left: sent.len(),
            data: if data.is_none() { vec![0; len] } else { Vec::new() },
            error: None,
            deadline: Instant::now() + self.timeout,
        };
        if state.parts_left == 0 {
            self.ready.push_back(state.finish(id));
        } else {
            self.parts.extend(sent);
            self.tickets.insert(id, state);
        }
        Ok(Ticket(id))
    }

    /// Files a reply: a piece of a ticket, or a stray (the reply to a request given up on),
    /// which goes back to the pool.
    fn dispatch(&mut self, reply: Request) {
        let Some(part) = self.parts.remove(&reply.index()) else {
            self.port.put_request(reply);
            return;
        };
        if let Some(t) = self.tickets.get_mut(&part.ticket) {
            let view = self.port.view(&reply);
            let (errno, serviced) = (view.errno(), view.serviced());
            let bad = |reason: String| ClientError::BadReply { op: t.op, target: t.target.clone(), reason };
            if t.error.is_none() {
                if errno != 0 {
                    t.error = Some(ClientError::Failed { op: t.op, target: t.target.clone(), errno });
                } else if serviced != part.len {
                    t.error = Some(bad(format!("{serviced} of {} bytes done", part.len)));
                } else if t.read {
                    let n = part.len as usize;
                    match self.port.data(&reply) {
                        Ok(d) if d.len() >= n => t.data[part.at..part.at + n].copy_from_slice(&d[..n]),
                        _ => t.error = Some(bad("read window lost".into())),
                    }
                }
            }
            t.parts_left -= 1;
            if t.parts_left == 0 {
                let t = self.tickets.remove(&part.ticket).expect("present");
                self.ready.push_back(t.finish(part.ticket));
            }
        }
        self.port.put_request(reply);
    }

    /// Completes tickets past their deadline with a timeout; their pieces become strays.
    fn expire(&mut self, now: Instant) {
        let expired: Vec<u64> =
            self.tickets.iter().filter(|(_, t)| t.deadline <= now).map(|(&id, _)| id).collect();
        for id in expired {
            let t = self.tickets.remove(&id).expect("present");
            self.parts.retain(|_, p| p.ticket != id);
            let error = ClientError::TimedOut { op: t.op, target: t.target, timeout: self.timeout };
            self.ready.push_back(Completion { ticket: Ticket(id), result: Err(error), data: Vec::new() });
        }
    }

    // ---- plumbing ----

    /// Takes a request with a data window of `window` bytes (`payload` copied to its start)
    /// and fills it in per `spec`. While the segment is out of requests or buffers (a busy
    /// host's frontends may hold most of them), it files the replies that came meanwhile —
    /// some may be ours, holding buffers — and tries again, up to the client's timeout.
    fn request(&mut self, spec: &Spec<'_>, window: u64, payload: &[u8]) -> Result<Request> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let built = self.port.prepare_request(window.max(payload.len() as u64), |req| -> Result<()> {
                let edit = self.port.edit(req);
                edit.set_op(spec.op).set_offset(spec.offset).set_size(spec.size).set_flags(spec.flags);
                edit.set_target(spec.target.as_bytes())?;
                if !payload.is_empty() {
                    self.port.data_mut(req)?[..payload.len()].copy_from_slice(payload);
                }
                Ok(())
            });
            match built {
                Err(ClientError::Segment(e)) if e.is_transient() && Instant::now() < deadline => {
                    while let Some(reply) = self.port.receive() {
                        self.dispatch(reply);
                    }
                    self.port.wait_reply(RESOURCE_WAIT);
                }
                other => return other,
            }
        }
    }

    /// One round trip of a request whose window is exactly `payload`; returns `serviced`.
    fn simple(&mut self, spec: Spec<'_>, payload: &[u8]) -> Result<u64> {
        let req = self.request(&spec, payload.len() as u64, payload)?;
        let reply = self.round_trip(req, &spec)?;
        let serviced = self.port.view(&reply).serviced();
        self.port.put_request(reply);
        Ok(serviced)
    }

    /// Sends `req` to vlmcd; fails at once if vlmcd's port is not bound.
    fn send(&self, req: Request) -> Result<()> {
        if !self.port.segment().port_is_bound_cached(self.vlmcd) {
            self.port.put_request(req);
            return Err(xseg::Error::PortNotBound { port: self.vlmcd }.into());
        }
        self.port.submit(req, self.vlmcd).map_err(|(req, e)| {
            self.port.put_request(req);
            e.into()
        })
    }

    /// Sends `req` and waits for its reply, filing replies to tickets on the way. Returns
    /// the reply when it succeeded; an errno becomes [`ClientError::Failed`].
    fn round_trip(&mut self, req: Request, spec: &Spec<'_>) -> Result<Request> {
        let index = req.index();
        self.send(req)?;
        let deadline = Instant::now() + self.timeout;
        loop {
            while let Some(reply) = self.port.receive() {
                if reply.index() != index {
                    self.dispatch(reply);
                    continue;
                }
                let errno = self.port.view(&reply).errno();
                if errno != 0 {
                    self.port.put_request(reply);
                    return Err(spec.failed(errno));
                }
                return Ok(reply);
            }
            let now = Instant::now();
            if now >= deadline {
                // The request stays in flight; its reply is a stray when it comes.
                return Err(ClientError::TimedOut {
                    op: spec.name,
                    target: spec.target.to_string(),
                    timeout: self.timeout,
                });
            }
            self.port.wait_reply(deadline - now);
        }
    }

    fn check_serviced(&self, reply: &Request, expected: u64, spec: &Spec<'_>) -> Result<()> {
        let serviced = self.port.view(reply).serviced();
        if serviced == expected {
            Ok(())
        } else {
            Err(spec.bad_reply(format!("{serviced} of {expected} bytes done")))
        }
    }
}

/// `offset + len` must not overflow (vlmcd's mapper checks it against the volume size).
fn check_range(spec: &Spec<'_>, offset: u64, len: u64) -> Result<()> {
    match offset.checked_add(len) {
        Some(_) => Ok(()),
        None => Err(spec.failed(libc::EINVAL)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_stops_at_the_first_nul() {
        assert_eq!(json_bytes(b"{\"a\":1}\0\0\0"), b"{\"a\":1}");
        assert_eq!(json_bytes(b"[]"), b"[]");
        assert_eq!(json_bytes(b"\0\0"), b"");
    }

    #[test]
    fn the_first_json_value_is_taken_whatever_follows() {
        assert_eq!(first_json::<Vec<u32>>(b"[1,2]\0garbage").unwrap(), [1, 2]);
        assert_eq!(first_json::<Vec<u32>>(b"[1,2]  }{ stale bytes").unwrap(), [1, 2]);
        assert!(first_json::<Vec<u32>>(b"").is_err());
        assert!(first_json::<Vec<u32>>(b"[1,").is_err());
    }

    #[test]
    fn ranges_that_overflow_are_refused_before_sending() {
        let spec = Spec::new(Op::Read, "read", "v");
        assert_eq!(check_range(&spec, u64::MAX, 1).unwrap_err().errno(), libc::EINVAL);
        assert!(check_range(&spec, u64::MAX - 1, 1).is_ok());
    }
}
