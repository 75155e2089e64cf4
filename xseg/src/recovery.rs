//! Recovering the port of a dead owner, and the segment report.
//!
//! Recovery of port P, whose owner is dead, in this order:
//! 1. **Orphan** P's requests that are away (SUBMITTED/ACCEPTED elsewhere): their servers
//!    will free them instead of replying.
//! 2. **Wait** until no orphan of P is still being served (ACCEPTED) by a live port: an
//!    orphan may point into a buffer of a request that step 3 fails back, and that buffer
//!    must not be reused while a server still writes into it. Orphans not yet accepted, or
//!    sent to dead ports, are freed at once.
//! 3. **Fail back** requests other ports sent to P (SUBMITTED/ACCEPTED with dst = P) with
//!    `ECONNABORTED`.
//! 4. **Free** what P held (HELD, or REPLIED and waiting in its reply ring).
//! 5. **Repair rings**: release slots P's consumers took and never released; steal slots
//!    that a dead producer claimed and never published, in every ring, after a grace period.
//! 6. **Free leaked buffers** whose owning request is free (an owner died between its
//!    claims).
//!
//! Entries left in rings are harmless: every pop re-validates the request's state word.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::layout::*;
use crate::segment::{owner_alive, Segment};
use crate::sync::Ordering;

/// What recovering a port did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    pub port: u32,
    /// The dead owner's pid (0 if the port was free).
    pub dead_pid: u32,
    pub failed_back: usize,
    pub orphaned: usize,
    pub freed: usize,
    pub released_slots: usize,
    pub stolen_claims: usize,
    pub freed_buffers: usize,
}

/// How long recovery lets a producer finish a claimed slot before stealing it.
pub const CLAIM_GRACE: Duration = Duration::from_millis(20);
/// How long recovery waits for live servers to finish the dead port's orphans.
pub const ORPHAN_WAIT: Duration = Duration::from_secs(10);

impl Segment {
    /// Recovers port `port` whose owner died. Idempotent on a free port; refuses a port
    /// whose owner is alive.
    pub fn recover_port(&self, port: u32) -> Result<RecoveryReport> {
        let nr_ports = self.geometry().nr_ports;
        if port >= nr_ports {
            return Err(Error::PortOutOfRange { port, nr_ports });
        }
        let desc = self.port_desc(port);
        let (me, _) = crate::segment::current_identity();
        let pid = desc.owner_pid.load(Ordering::Acquire);
        match pid {
            PORT_FREE => return Ok(RecoveryReport { port, ..Default::default() }),
            PORT_RECOVERING => {
                // Take over a recovery whose recoverer died before finishing it.
                let recoverer = desc.recoverer_pid.load(Ordering::Acquire);
                if owner_alive(recoverer, 0)
                    || desc
                        .recoverer_pid
                        .compare_exchange(recoverer, me, Ordering::AcqRel, Ordering::Acquire)
                        .is_err()
                {
                    return Err(Error::PortRecovering { port });
                }
            }
            _ => {
                if owner_alive(pid, desc.owner_start_time.load(Ordering::Acquire)) {
                    return Err(Error::PortBusy { port, pid, alive: true });
                }
                if desc
                    .owner_pid
                    .compare_exchange(pid, PORT_RECOVERING, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    return Err(Error::PortRecovering { port });
                }
                desc.recoverer_pid.store(me, Ordering::Release);
            }
        }
        match self.reclaim(port, CLAIM_GRACE, ORPHAN_WAIT) {
            Ok(mut report) => {
                report.dead_pid = pid;
                desc.owner_pid.store(PORT_FREE, Ordering::Release);
                Ok(report)
            }
            Err(e) => {
                // Hand it back to a dead owner's pid, so recovery can be retried.
                let dead =
                    if pid == PORT_RECOVERING { desc.recoverer_pid.load(Ordering::Acquire) } else { pid };
                desc.owner_pid.store(dead.max(1), Ordering::Release);
                Err(e)
            }
        }
    }

    /// Steps 1–6 above, for a port this caller has marked `PORT_RECOVERING`.
    pub(crate) fn reclaim(
        &self,
        port: u32,
        claim_grace: Duration,
        orphan_wait: Duration,
    ) -> Result<RecoveryReport> {
        let g = *self.geometry();
        let mut report = RecoveryReport { port, ..Default::default() };

        // 1. Orphan what the port sent away.
        for index in 0..g.nr_requests {
            let state = &self.request_desc(index).state;
            loop {
                let word = state.load(Ordering::Acquire);
                let away = matches!(req_state(word), REQ_SUBMITTED | REQ_ACCEPTED);
                if req_owner(word) != port || !away || req_orphaned(word) || word == REQ_FREE {
                    break;
                }
                if state
                    .compare_exchange(word, word | REQ_ORPHAN, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    report.orphaned += 1;
                    break;
                }
            }
        }

        // 2. Wait for live servers to finish the orphans; free those no one will serve.
        let deadline = Instant::now() + orphan_wait;
        loop {
            let mut pending = 0;
            for index in 0..g.nr_requests {
                let desc = self.request_desc(index);
                let word = desc.state.load(Ordering::Acquire);
                if word == REQ_FREE || req_owner(word) != port || !req_orphaned(word) {
                    continue;
                }
                let dst = desc.dst_port.load(Ordering::Relaxed);
                // Only an ACCEPTED orphan may be touching data; a SUBMITTED one is freed at
                // once (CAS-guarded: a server that accepts it later finds it gone, and a
                // stale ring entry for it is skipped on pop).
                let served_elsewhere = req_state(word) == REQ_ACCEPTED
                    && dst != port
                    && dst < g.nr_ports
                    && self.port_is_bound(dst);
                if !served_elsewhere {
                    if self.free_request_if(index, word) {
                        report.freed += 1;
                    }
                } else {
                    pending += 1;
                }
            }
            if pending == 0 {
                break;
            }
            if Instant::now() >= deadline {
                return Err(Error::RecoveryPending { port, pending });
            }
            std::thread::sleep(Duration::from_millis(2));
        }

        // 3. Fail back what others sent to the port.
        for index in 0..g.nr_requests {
            let desc = self.request_desc(index);
            loop {
                let word = desc.state.load(Ordering::Acquire);
                let queued = matches!(req_state(word), REQ_SUBMITTED | REQ_ACCEPTED);
                if word == REQ_FREE || !queued || desc.dst_port.load(Ordering::Relaxed) != port {
                    break;
                }
                if req_orphaned(word) {
                    if self.free_request_if(index, word) {
                        report.freed += 1;
                        break;
                    }
                    continue;
                }
                desc.error.store(libc::ECONNABORTED as u32, Ordering::Relaxed);
                let replied = (word & !REQ_STATE_MASK) | REQ_REPLIED;
                if desc.state.compare_exchange(word, replied, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                    self.push_reply(req_owner(word), index);
                    report.failed_back += 1;
                    break;
                }
            }
        }

        // 4. Free what the port held.
        for index in 0..g.nr_requests {
            let word = self.request_desc(index).state.load(Ordering::Acquire);
            if word != REQ_FREE
                && req_owner(word) == port
                && matches!(req_state(word), REQ_HELD | REQ_REPLIED)
                && self.free_request_if(index, word)
            {
                report.freed += 1;
            }
        }

        // 5. Repair rings.
        report.released_slots += self.request_ring(port).release_abandoned();
        report.released_slots += self.reply_ring(port).release_abandoned();
        let claims: Vec<(u32, u64)> = (0..2 * g.nr_ports)
            .flat_map(|ring| self.ring(ring).unpublished_claims().into_iter().map(move |pos| (ring, pos)))
            .collect();
        if !claims.is_empty() {
            std::thread::sleep(claim_grace);
            report.stolen_claims =
                claims.iter().filter(|&&(ring, pos)| self.ring(ring).steal_claim(pos)).count();
        }

        // 6. Free leaked buffers.
        for buffer in 0..g.nr_buffers {
            let owner = &self.buffer_desc(buffer).owner_request;
            let request = owner.load(Ordering::Acquire);
            if request == 0 {
                continue;
            }
            let leaked = request > g.nr_requests
                || self.request_desc(request - 1).state.load(Ordering::Acquire) == REQ_FREE;
            if leaked && owner.compare_exchange(request, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                report.freed_buffers += 1;
            }
        }

        let desc = self.port_desc(port);
        desc.requests_owned.store(0, Ordering::Release);
        desc.sleepers.store(0, Ordering::Release);
        Ok(report)
    }

    /// A snapshot of the segment for `xseg report` and `archipelago status`.
    pub fn report(&self) -> SegmentReport {
        let g = *self.geometry();
        let mut ports = Vec::new();
        for port in 0..g.nr_ports {
            let desc = self.port_desc(port);
            let pid = desc.owner_pid.load(Ordering::Acquire);
            let (request_queue, reply_queue) = (self.request_ring(port).len(), self.reply_ring(port).len());
            let submitted = desc.requests_submitted.load(Ordering::Relaxed);
            let served = desc.requests_served.load(Ordering::Relaxed);
            let failed = desc.requests_failed.load(Ordering::Relaxed);
            let idle = request_queue == 0 && reply_queue == 0 && submitted + served + failed == 0;
            if pid == PORT_FREE && idle {
                continue;
            }
            ports.push(PortReport {
                port,
                dynamic: port >= g.dynamic_port_start,
                owner_pid: if pid == PORT_RECOVERING { 0 } else { pid },
                owner_alive: pid != PORT_RECOVERING
                    && owner_alive(pid, desc.owner_start_time.load(Ordering::Acquire)),
                recovering: pid == PORT_RECOVERING,
                request_queue_depth: request_queue,
                reply_queue_depth: reply_queue,
                requests_owned: desc.requests_owned.load(Ordering::Relaxed),
                requests_submitted: submitted,
                requests_served: served,
                requests_failed: failed,
                requests_rejected: desc.requests_rejected.load(Ordering::Relaxed),
            });
        }
        let states = (0..g.nr_requests).map(|i| self.request_desc(i).state.load(Ordering::Relaxed));
        let requests_in_flight = states.clone().filter(|&w| w != REQ_FREE).count() as u32;
        let requests_held = states.filter(|&w| w != REQ_FREE && req_state(w) == REQ_HELD).count() as u32;
        let buffers_in_use = (0..g.nr_buffers)
            .filter(|&b| self.buffer_desc(b).owner_request.load(Ordering::Relaxed) != 0)
            .count() as u32;
        SegmentReport {
            name: self.name().to_string(),
            geometry: g,
            ports,
            requests_in_flight,
            requests_held,
            buffers_in_use,
        }
    }
}

#[derive(Debug, Clone)]
pub struct PortReport {
    pub port: u32,
    pub dynamic: bool,
    pub owner_pid: u32,
    pub owner_alive: bool,
    pub recovering: bool,
    pub request_queue_depth: u64,
    pub reply_queue_depth: u64,
    pub requests_owned: u32,
    pub requests_submitted: u64,
    pub requests_served: u64,
    pub requests_failed: u64,
    pub requests_rejected: u64,
}

#[derive(Debug, Clone)]
pub struct SegmentReport {
    pub name: String,
    pub geometry: Geometry,
    /// Ports that are bound, or have queued work or history.
    pub ports: Vec<PortReport>,
    /// Taken from the pool and not yet put back (held, queued, being served or answered).
    pub requests_in_flight: u32,
    /// Of those, held by their owner (being filled in, or kept back as spares), in no queue.
    pub requests_held: u32,
    pub buffers_in_use: u32,
}
