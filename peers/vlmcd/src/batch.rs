//! The sub-requests of one step of a frontend request (a map lookup, the object IO, a
//! forwarded management op), sent without waiting: [`Batch::send`] submits what it can,
//! replies are matched by [`Batch::receive`] as they arrive, and [`Batch::check`] applies
//! the timeouts. Nothing here blocks.
//!
//! Sub-requests that carry data point into the frontend request's window
//! ([`Window::Shared`]); map lookups have a small buffer of their own ([`Window::Own`]).
//! Each carries the frontend request's tag in `user_data`, so its reply finds its way back.
//!
//! A peer is *unavailable* when its port is not bound (dead or restarting), when its ring
//! is full, when the segment is momentarily out of requests or buffers with nothing of the
//! batch in flight, or when a sub-request comes back with ECONNABORTED (a restarted peer
//! fails back what its dead predecessor had accepted). Then the batch is *due* again after a
//! backoff (5 ms doubling to 50 ms), until the retry timeout has passed since the first
//! trouble (a successful reply ends an outage: the next one is timed afresh); after that it
//! fails with EIO. ECONNABORTED is retried only for [`Retry::Idempotent`] batches: a
//! management op may have been carried out before its peer died, so it is resent only while
//! it was never accepted (not bound, ring full). A resent sub-request is built afresh from
//! its [`Sub`]: a peer that died after changing fields of the descriptor cannot make the
//! second attempt ask for something else.
//!
//! A batch is not [`done`](Batch::is_done) while a sub-request may still touch the
//! frontend's window, except in one case: a live peer that does not answer within the
//! request timeout. Then the sub-request is abandoned (its late reply is returned to the
//! pool) and the frontend request fails; should that peer wake up later, it would access a
//! window the frontend may have reused. The request timeout (60 s by default) is meant for
//! hung peers only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use xseg::{Held, Incoming, Op, Port, Request, Segment};

use crate::name::VolName;

const BACKOFF_MIN: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_millis(50);

/// What a sub-request names.
#[derive(Debug, Clone)]
pub enum SubTarget {
    None,
    Volume(VolName),
    Object(Arc<str>),
}

impl SubTarget {
    fn as_bytes(&self) -> &[u8] {
        match self {
            SubTarget::None => &[],
            SubTarget::Volume(v) => v.as_str().as_bytes(),
            SubTarget::Object(o) => o.as_bytes(),
        }
    }
}

impl std::fmt::Display for SubTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(std::str::from_utf8(self.as_bytes()).unwrap_or("?"))
    }
}

/// One request vlmcd sends on behalf of a frontend request.
#[derive(Debug, Clone)]
pub struct Sub {
    pub dst: u32,
    pub op: Op,
    pub target: SubTarget,
    pub offset: u64,
    pub size: u64,
    pub flags: u32,
    pub window: Window,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    None,
    /// `[offset, offset + len)` of the frontend request's window (zero copy).
    Shared {
        offset: u64,
        len: u64,
    },
    /// A buffer of this many bytes of its own (for an answer, e.g. an extent list).
    Own(u64),
}

/// Whether a sub-request that was accepted and then aborted (ECONNABORTED) may be resent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Yes: doing it twice is doing it once (IO, map lookups, flush).
    Idempotent,
    /// No: only a request that was never accepted is sent again.
    UnacceptedOnly,
}

/// The two timeouts of a batch.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long a peer may stay unavailable, counted from the first trouble.
    pub retry: Duration,
    /// How long one sub-request may go unanswered by a live peer.
    pub request: Duration,
}

/// Why a frontend request fails: the errno it is answered with, and the cause for the log.
#[derive(Debug)]
pub struct Failure {
    pub errno: i32,
    pub cause: String,
    /// A fault worth a warning (storage failure, protocol error, timeout), not an answer
    /// like ENOENT or EINVAL.
    pub fault: bool,
    /// An object the map named was missing (it may have been discarded since the lookup).
    pub object_missing: bool,
}

impl Failure {
    pub fn answer(errno: i32, cause: impl Into<String>) -> Failure {
        Failure { errno, cause: cause.into(), fault: false, object_missing: false }
    }

    pub fn fault(errno: i32, cause: impl Into<String>) -> Failure {
        Failure { errno, cause: cause.into(), fault: true, object_missing: false }
    }
}

enum Slot {
    /// Not sent yet (or to be sent again).
    Todo,
    Flying {
        index: u32,
        since: Instant,
    },
    Done,
}

/// Sub-requests of one step, and where they are.
pub struct Batch {
    pub subs: Vec<Sub>,
    slots: Vec<Slot>,
    flying: usize,
    retry: Retry,
    /// The first failure; once set, nothing more is sent.
    pub failure: Option<Failure>,
    /// When a peer was first found unavailable (reset by a successful reply).
    trouble: Option<Instant>,
    backoff: Duration,
    /// When to try sending again (something is left to send, or a peer is away).
    pub due: Option<Instant>,
}

/// Where a reply belongs.
pub enum Received {
    /// It was one of this batch's; handled.
    Mine,
    /// It was not (a reply to a request given up on earlier): the caller returns it.
    NotMine(Request),
}

impl Batch {
    pub fn new(subs: Vec<Sub>, retry: Retry) -> Batch {
        let slots = subs.iter().map(|_| Slot::Todo).collect();
        Batch { subs, slots, flying: 0, retry, failure: None, trouble: None, backoff: BACKOFF_MIN, due: None }
    }

    /// Everything answered or given up on: nothing of the batch touches the window any more.
    pub fn is_done(&self) -> bool {
        self.flying == 0 && self.slots.iter().all(|s| matches!(s, Slot::Done))
    }

    /// Whether something is left to send and may be sent at `now`.
    pub fn wants_send(&self, now: Instant) -> bool {
        self.failure.is_none()
            && self.due.is_none_or(|due| due <= now)
            && self.slots.iter().any(|s| matches!(s, Slot::Todo))
    }

    fn note_trouble(&mut self, now: Instant, dst: u32, why: &str) {
        if self.trouble.is_none() {
            self.trouble = Some(now);
            notice(dst, why);
        }
    }

    /// Something could not be sent: try again after the backoff.
    fn retry_later(&mut self, now: Instant) {
        self.due = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// Gives up what was not sent; requests in flight stay as they are.
    fn abandon_unsent(&mut self) {
        for slot in &mut self.slots {
            if matches!(slot, Slot::Todo) {
                *slot = Slot::Done;
            }
        }
        self.due = None;
    }

    /// Sends what is left to send from `port`, children of `parent`, tagged `tag`. Returns
    /// whether it stopped for want of request descriptors or buffers (the caller tries
    /// again when replies free some).
    pub fn send(&mut self, port: &Port, parent: &Incoming, tag: u64, now: Instant) -> bool {
        self.due = None;
        if self.failure.is_some() {
            self.abandon_unsent();
            return false;
        }
        let seg = port.segment();
        let mut starved = false;
        for i in 0..self.subs.len() {
            if !matches!(self.slots[i], Slot::Todo) {
                continue;
            }
            let dst = self.subs[i].dst;
            if !seg.port_is_bound_cached(dst) {
                self.note_trouble(now, dst, "its port is not bound");
                self.retry_later(now);
                break;
            }
            let req = match prepare(port, parent, &self.subs[i], tag) {
                Ok(req) => req,
                Err(e) if e.is_transient() => {
                    // Out of requests or buffers: replies in flight (this batch's or other
                    // requests') free some. Past the retry timeout it is an outage.
                    if self.flying == 0 {
                        self.note_trouble(now, dst, "the segment is out of requests");
                    }
                    starved = true;
                    self.due = Some(now + BACKOFF_MIN);
                    break;
                }
                Err(e) => {
                    self.failure =
                        Some(Failure::fault(libc::EIO, format!("preparing {}: {e}", self.subs[i].op.name())));
                    break;
                }
            };
            let index = req.index();
            match port.submit(req, dst) {
                Ok(()) => {
                    self.slots[i] = Slot::Flying { index, since: now };
                    self.flying += 1;
                }
                Err((req, e)) => {
                    port.put_request(req);
                    if e.is_transient() {
                        self.note_trouble(now, dst, "its ring is full");
                        self.retry_later(now);
                    } else {
                        self.failure = Some(Failure::fault(
                            libc::EIO,
                            format!("sending {}: {e}", self.subs[i].op.name()),
                        ));
                    }
                    break;
                }
            }
        }
        if self.failure.is_some() {
            self.abandon_unsent();
        }
        starved
    }

    /// Takes `reply` if it answers one of this batch's sub-requests: a success is passed to
    /// `on_reply` (with its sub) while the reply is held, an error's errno to
    /// `classify`; an aborted idempotent one is sent again by the next [`send`](Self::send).
    pub fn receive(
        &mut self,
        port: &Port,
        reply: Request,
        now: Instant,
        classify: &dyn Fn(&Sub, i32) -> Failure,
        on_reply: &mut dyn FnMut(&Sub, &Request) -> Result<(), Failure>,
    ) -> Received {
        let index = reply.index();
        let Some(i) =
            self.slots.iter().position(|s| matches!(s, Slot::Flying { index: f, .. } if *f == index))
        else {
            return Received::NotMine(reply);
        };
        self.flying -= 1;
        let errno = port.view(&reply).errno();
        if errno == 0 {
            // The peers answer again: a later outage gets a retry timeout of its own.
            self.trouble = None;
            self.backoff = BACKOFF_MIN;
            if let Err(f) = on_reply(&self.subs[i], &reply) {
                self.failure.get_or_insert(f);
            }
        } else if errno == libc::ECONNABORTED {
            if self.retry == Retry::Idempotent && self.failure.is_none() {
                self.note_trouble(now, self.subs[i].dst, "it restarted with requests in flight");
                port.put_request(reply);
                self.slots[i] = Slot::Todo;
                return Received::Mine;
            }
            let (op, dst) = (self.subs[i].op, self.subs[i].dst);
            self.failure.get_or_insert_with(|| {
                Failure::fault(
                    libc::EIO,
                    format!(
                        "{} aborted: the peer on port {dst} died while serving it; not resent",
                        op.name()
                    ),
                )
            });
        } else {
            let failure = classify(&self.subs[i], errno);
            self.failure.get_or_insert(failure);
        }
        port.put_request(reply);
        self.slots[i] = Slot::Done;
        if self.failure.is_some() {
            self.abandon_unsent();
        }
        Received::Mine
    }

    /// Applies the timeouts: a peer away past the retry timeout fails the batch (and what
    /// waits at dead peers is given up: it will never be served), a live peer silent past
    /// the request timeout too (its request is abandoned).
    pub fn check(&mut self, seg: &Segment, timing: Timing, now: Instant) {
        let dead = self.subs.iter().zip(&self.slots).find_map(|(sub, slot)| {
            (matches!(slot, Slot::Flying { .. }) && !seg.port_is_bound_cached(sub.dst)).then_some(sub.dst)
        });
        if let Some(dst) = dead {
            // What a dead peer had comes back (ECONNABORTED) only when it restarts.
            self.note_trouble(now, dst, "it died with requests in flight");
        }
        if let Some(since) = self.trouble {
            if now.duration_since(since) >= timing.retry {
                let dst = self
                    .subs
                    .iter()
                    .zip(&self.slots)
                    .find(|(_, s)| !matches!(s, Slot::Done))
                    .map_or(u32::MAX, |(sub, _)| sub.dst);
                self.failure.get_or_insert_with(|| {
                    Failure::fault(
                        libc::EIO,
                        format!(
                            "the peer on port {dst} stayed unavailable for {} ms",
                            timing.retry.as_millis()
                        ),
                    )
                });
                self.abandon_unsent();
                // Requests stuck at a dead peer will never be served: nothing touches the
                // window any more. Requests at live peers are still waited for.
                let all_dead = self
                    .subs
                    .iter()
                    .zip(&self.slots)
                    .all(|(sub, s)| !matches!(s, Slot::Flying { .. }) || !seg.port_is_bound(sub.dst));
                if all_dead {
                    self.abandon_flying();
                }
            }
        }
        let oldest = self
            .slots
            .iter()
            .filter_map(|s| if let Slot::Flying { since, .. } = s { Some(*since) } else { None })
            .min();
        if oldest.is_some_and(|oldest| now.duration_since(oldest) >= timing.request) {
            self.failure.get_or_insert_with(|| {
                Failure::fault(
                    libc::EIO,
                    format!("no reply within {} ms (abandoned)", timing.request.as_millis()),
                )
            });
            self.abandon_unsent();
            self.abandon_flying();
        }
    }

    /// Stops waiting for what is in flight (its late replies are returned to the pool).
    fn abandon_flying(&mut self) {
        for slot in &mut self.slots {
            if matches!(slot, Slot::Flying { .. }) {
                *slot = Slot::Done;
            }
        }
        self.flying = 0;
    }
}

/// A request for `sub`, filled in.
fn prepare(port: &Port, parent: &Incoming, sub: &Sub, tag: u64) -> xseg::Result<Request> {
    let own = if let Window::Own(len) = sub.window { len } else { 0 };
    port.prepare_request(own, |req| {
        let edit = port.edit(req);
        edit.set_op(sub.op).set_offset(sub.offset).set_size(sub.size).set_flags(sub.flags).set_user_data(tag);
        edit.set_target(sub.target.as_bytes())?;
        if let Window::Shared { offset, len } = sub.window {
            port.share_window(req, parent, offset, len)?;
        }
        Ok(())
    })
}

/// Logs that a peer is unavailable, at most once a second for the whole daemon.
fn notice(dst: u32, why: &str) {
    static NOTICES: archip_peer::Throttle = archip_peer::Throttle::new(1000);
    if NOTICES.allow().is_some() {
        tracing::info!(port = dst, "peer unavailable ({why}); retrying");
    } else {
        tracing::debug!(port = dst, "peer unavailable ({why}); retrying");
    }
}
