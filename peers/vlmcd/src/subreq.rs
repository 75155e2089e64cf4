//! Sending the sub-requests of one frontend request and collecting their replies, with
//! retries while a peer behind vlmcd restarts.
//!
//! [`run`] submits every [`Sub`] on the request's private port, then waits for the replies.
//! Sub-requests that carry data point into the frontend request's window
//! ([`Window::Shared`]); map lookups have a small buffer of their own ([`Window::Own`]).
//!
//! A peer is *unavailable* when its port is not bound (dead or restarting), when its ring
//! is full, when the segment is momentarily out of requests or buffers, or when a
//! sub-request comes back with ECONNABORTED (a restarted peer fails back what its dead
//! predecessor had accepted). Then [`run`] backs off (5 ms doubling to 50 ms) and tries
//! again, until the retry timeout has passed since the first trouble (a successful reply
//! ends an outage: the next one is timed afresh); after that it fails with EIO. ECONNABORTED is retried only for [`Retry::Idempotent`] batches: a management
//! op may have been carried out before its peer died, so it is retried only while it was
//! never accepted (not bound, ring full).
//!
//! [`run`] never returns while a sub-request may still touch the frontend's window, except
//! in one case: a live peer that does not answer within the request timeout. Then the
//! request is abandoned (its late reply is returned to the pool) and the frontend request
//! fails; should that peer wake up later, it would access a window the frontend may have
//! reused. The request timeout (60 s by default) is meant for hung peers only.

use std::time::{Duration, Instant};

use xseg::{Held, Incoming, Op, Port, Request};

const BACKOFF_MIN: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_millis(50);
/// How often a waiting batch re-checks that the peers it waits on are alive.
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// One request vlmcd sends on behalf of a frontend request.
#[derive(Debug, Clone)]
pub struct Sub {
    pub dst: u32,
    pub op: Op,
    /// Empty: no target.
    pub target: String,
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

enum State {
    /// Not sent yet.
    Todo,
    /// Held, to be sent again (it came back aborted, or the destination's ring was full).
    Ready(Request),
    Flying {
        index: u32,
        since: Instant,
    },
    Done,
}

/// Sends `subs` (children of `parent`) from `port` and waits for all of them. Each success
/// is passed to `on_reply` (with the sub's position) while the reply is held; each error
/// reply's errno to `classify`. Returns the first failure, once nothing sent can still touch
/// `parent`'s window (see the module doc for the one exception).
pub fn run(
    port: &Port,
    parent: &Incoming,
    subs: &[Sub],
    retry: Retry,
    timing: Timing,
    classify: &dyn Fn(&Sub, i32) -> Failure,
    on_reply: &mut dyn FnMut(usize, &Request) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let seg = port.segment();
    let mut states: Vec<State> = subs.iter().map(|_| State::Todo).collect();
    let mut flying = 0usize;
    let mut failure: Option<Failure> = None;
    // When a peer was first found unavailable during this batch.
    let mut trouble: Option<Instant> = None;
    let mut backoff = BACKOFF_MIN;
    let note_trouble = |trouble: &mut Option<Instant>, dst: u32, why: &str| {
        if trouble.is_none() {
            *trouble = Some(Instant::now());
            notice(dst, why);
        }
    };

    loop {
        // Send what can be sent.
        let mut blocked = false;
        if failure.is_none() {
            for (i, sub) in subs.iter().enumerate() {
                if !matches!(states[i], State::Todo | State::Ready(_)) {
                    continue;
                }
                if !seg.port_is_bound_cached(sub.dst) {
                    note_trouble(&mut trouble, sub.dst, "its port is not bound");
                    blocked = true;
                    break;
                }
                let req = match std::mem::replace(&mut states[i], State::Todo) {
                    State::Ready(req) => req,
                    _ => match prepare(port, parent, sub) {
                        Ok(req) => req,
                        // Out of requests or buffers: replies in flight will free some.
                        Err(e) if e.is_transient() && flying > 0 => break,
                        Err(e) if e.is_transient() => {
                            note_trouble(&mut trouble, sub.dst, "the segment is out of requests");
                            blocked = true;
                            break;
                        }
                        Err(e) => {
                            failure =
                                Some(Failure::fault(libc::EIO, format!("preparing {}: {e}", sub.op.name())));
                            break;
                        }
                    },
                };
                let index = req.index();
                match port.submit(req, sub.dst) {
                    Ok(()) => {
                        states[i] = State::Flying { index, since: Instant::now() };
                        flying += 1;
                    }
                    Err((req, e)) => {
                        states[i] = State::Ready(req);
                        if e.is_transient() {
                            note_trouble(&mut trouble, sub.dst, "its ring is full");
                            blocked = true;
                        } else {
                            failure =
                                Some(Failure::fault(libc::EIO, format!("sending {}: {e}", sub.op.name())));
                        }
                        break;
                    }
                }
            }
        }
        if failure.is_some() {
            abandon_unsent(port, &mut states);
        }
        if flying == 0 && states.iter().all(|s| matches!(s, State::Done)) {
            break;
        }

        // Deadlines.
        let now = Instant::now();
        let dead_dst = subs
            .iter()
            .zip(&states)
            .find(|(sub, s)| matches!(s, State::Flying { .. }) && !seg.port_is_bound_cached(sub.dst));
        if let Some((sub, _)) = dead_dst {
            // What a dead peer had comes back (ECONNABORTED) only when it restarts.
            note_trouble(&mut trouble, sub.dst, "it died with requests in flight");
        }
        if let Some(since) = trouble {
            if now.duration_since(since) >= timing.retry {
                let dst = subs
                    .iter()
                    .zip(&states)
                    .find(|(_, s)| !matches!(s, State::Done))
                    .map_or(u32::MAX, |(sub, _)| sub.dst);
                failure.get_or_insert_with(|| {
                    Failure::fault(
                        libc::EIO,
                        format!(
                            "the peer on port {dst} stayed unavailable for {} ms",
                            timing.retry.as_millis()
                        ),
                    )
                });
                abandon_unsent(port, &mut states);
                // Requests stuck at a dead peer will never be served: nothing touches the
                // window any more. Requests at live peers are still waited for.
                let all_dead = subs
                    .iter()
                    .zip(&states)
                    .all(|(sub, s)| !matches!(s, State::Flying { .. }) || !seg.port_is_bound(sub.dst));
                if all_dead {
                    break;
                }
            }
        }
        let oldest = states
            .iter()
            .filter_map(|s| if let State::Flying { since, .. } = s { Some(*since) } else { None })
            .min();
        if let Some(oldest) = oldest {
            if now.duration_since(oldest) >= timing.request {
                let failed = Failure::fault(
                    libc::EIO,
                    format!("no reply within {} ms (abandoned)", timing.request.as_millis()),
                );
                failure = Some(failure.unwrap_or(failed));
                abandon_unsent(port, &mut states);
                break;
            }
        }

        // Wait.
        if flying > 0 {
            let until_timeout =
                oldest.map_or(CHECK_EVERY, |o| (o + timing.request).saturating_duration_since(now));
            let wait = if blocked { backoff } else { CHECK_EVERY };
            port.wait_reply(wait.min(until_timeout).max(Duration::from_micros(1)));
        } else if blocked {
            std::thread::sleep(backoff);
        }
        if blocked {
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }

        // Collect replies.
        while let Some(reply) = port.receive() {
            let index = reply.index();
            let Some(i) =
                states.iter().position(|s| matches!(s, State::Flying { index: f, .. } if *f == index))
            else {
                // A reply to a request abandoned earlier.
                port.put_request(reply);
                continue;
            };
            flying -= 1;
            let errno = port.view(&reply).errno();
            if errno == 0 {
                // The peers answer again: a later outage gets a retry timeout of its own.
                trouble = None;
                backoff = BACKOFF_MIN;
                if let Err(f) = on_reply(i, &reply) {
                    failure.get_or_insert(f);
                }
            } else if errno == libc::ECONNABORTED {
                if retry == Retry::Idempotent && failure.is_none() {
                    note_trouble(&mut trouble, subs[i].dst, "it restarted with requests in flight");
                    states[i] = State::Ready(reply);
                    continue;
                }
                failure.get_or_insert_with(|| {
                    Failure::fault(
                        libc::EIO,
                        format!(
                            "{} aborted: the peer on port {} died while serving it; not resent",
                            subs[i].op.name(),
                            subs[i].dst
                        ),
                    )
                });
            } else {
                failure.get_or_insert_with(|| classify(&subs[i], errno));
            }
            port.put_request(reply);
            states[i] = State::Done;
        }
    }
    match failure {
        Some(f) => Err(f),
        None => Ok(()),
    }
}

/// Gives up what was not sent (returning held requests to the pool); requests in flight
/// stay as they are.
fn abandon_unsent(port: &Port, states: &mut [State]) {
    for state in states.iter_mut() {
        match std::mem::replace(state, State::Done) {
            State::Ready(req) => port.put_request(req),
            State::Todo | State::Done => {}
            flying @ State::Flying { .. } => *state = flying,
        }
    }
}

/// A request for `sub`, filled in.
fn prepare(port: &Port, parent: &Incoming, sub: &Sub) -> xseg::Result<Request> {
    let own = if let Window::Own(len) = sub.window { len } else { 0 };
    port.prepare_request(own, |req| {
        let edit = port.edit(req);
        edit.set_op(sub.op).set_offset(sub.offset).set_size(sub.size).set_flags(sub.flags);
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
