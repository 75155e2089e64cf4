//! The worker loop: accept requests on the peer's ports (bounded by `nr_ops`), hand them
//! and the replies to the peer's own requests to the [`Peer`], and drain on stop.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use xseg::{Incoming, Port, Request, Segment};

use crate::args::PeerArgs;
use crate::daemon::{self, Pidfile, Readiness};

/// What a daemon implements. Called from the worker threads of every port the peer binds.
pub trait Peer: Send + Sync + 'static {
    /// A request arrived. Answer it now or later (from any thread) with [`PeerIo::respond`].
    fn on_request(&self, io: &PeerIo<'_>, req: Incoming);

    /// A reply to a request this peer sent on `io.port`. The default returns it to the pool.
    fn on_reply(&self, io: &PeerIo<'_>, reply: Request) {
        io.port.put_request(reply);
    }

    /// Called when a worker found nothing to do, at most every `IDLE_TICK`.
    fn on_idle(&self, _io: &PeerIo<'_>) {}

    /// Whether a worker's round of replies and requests runs plugged (`xseg::plugged`): the
    /// doorbells it rings are rung once each when the round ends. For peers whose callbacks
    /// return quickly (a peer that may block in one must call `xseg::flush_plug` before it
    /// does, or answer `false`, the default).
    fn plug_rounds(&self) -> bool {
        false
    }

    /// Most requests a worker takes off its port at once (`Port::accept_many`) before it
    /// hands them to `on_request` one after the other. A peer whose `on_request` returns
    /// quickly (it only starts the work) takes a batch: one ring claim and overlapped
    /// cache-line fetches for the lot. A peer that may block in `on_request` keeps the
    /// default of 1, so that requests queued behind a slow one go to idle sibling workers.
    fn accept_batch(&self) -> usize {
        1
    }

    /// Called by each worker after every round of requests and replies, busy or not, so it
    /// must be cheap when nothing is due: runs the peer's timed work (retries after a
    /// backoff, timeouts) and returns how soon it wants to be called again. `None`: no timer
    /// (the worker sleeps until work arrives, at most [`IDLE_TICK`]).
    fn poll(&self, _io: &PeerIo<'_>) -> Option<Duration> {
        None
    }

    /// The most data buffers each of the peer's ports may hold, given the segment's count
    /// (`Port::limit_buffers`); `None`: no limit of its own. A peer that asks others for
    /// help while serving (vlmcd asks the mapper) limits itself, so that the peers it waits
    /// on always find buffers.
    fn buffer_limit(&self, _nr_buffers: u32) -> Option<u32> {
        None
    }

    /// Requests with a buffer each of the peer's ports keeps back for when the segment has
    /// none free (`Port::keep_spares`), given the segment's count of buffers. A peer whose
    /// answers wait on its own calls to another peer keeps a few, so that it moves on
    /// however many buffers the frontends hold.
    fn spare_requests(&self, _nr_buffers: u32) -> u32 {
        0
    }
}

/// How often an idle worker wakes up to call [`Peer::on_idle`] and check for stop.
pub const IDLE_TICK: Duration = Duration::from_millis(100);

/// Shared by the workers: the in-flight count (bounded by `nr_ops`) and the stop flag.
pub struct PeerState {
    in_flight: AtomicU32,
    nr_ops: u32,
    stop: Arc<AtomicBool>,
}

impl PeerState {
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}

/// A worker's handle to its port, given to every [`Peer`] callback.
pub struct PeerIo<'a> {
    pub port: &'a Arc<Port>,
    pub state: &'a Arc<PeerState>,
    /// Every port of the peer (`port` among them), for work that must continue on the port
    /// that accepted a request.
    pub ports: &'a [Arc<Port>],
}

impl PeerIo<'_> {
    /// The peer's bound port number `no`, if it has it.
    pub fn port_no(&self, no: u32) -> Option<&Port> {
        self.ports.iter().find(|p| p.number() == no).map(|p| &**p)
    }

    /// A handle that answers requests accepted on this worker's port from any thread,
    /// later: for stores that complete IO on their own threads (librados callbacks).
    pub fn responder(&self) -> Responder {
        Responder { port: self.port.clone(), state: self.state.clone() }
    }
}

impl PeerIo<'_> {
    /// Answers an accepted request and releases its `nr_ops` slot.
    pub fn respond(&self, req: Incoming, result: Result<u64, i32>) {
        self.respond_on(self.port, req, result);
    }

    /// Answers a request accepted on `port` (one of the peer's, maybe not this worker's)
    /// and releases its `nr_ops` slot.
    pub fn respond_on(&self, port: &Port, req: Incoming, result: Result<u64, i32>) {
        port.respond(req, result);
        self.state.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Answers requests accepted on one port, from any thread (see [`PeerIo::responder`]). It
/// keeps the port bound (and the segment mapped) while it lives.
pub struct Responder {
    port: Arc<Port>,
    state: Arc<PeerState>,
}

impl Responder {
    /// Answers an accepted request and releases its `nr_ops` slot.
    pub fn respond(&self, req: Incoming, result: Result<u64, i32>) {
        self.port.respond(req, result);
        self.state.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn port(&self) -> &Port {
        &self.port
    }
}

/// Everything a peer daemon's `main` does after parsing flags: daemonize if asked, set up
/// logging and the pidfile, join the segment, build the peer, bind its ports (recovering
/// them from a dead predecessor), report ready, serve until SIGTERM/SIGINT, drain, leave.
pub fn run<P: Peer>(
    args: &PeerArgs,
    build: impl FnOnce(&Arc<Segment>) -> anyhow::Result<P>,
) -> anyhow::Result<()> {
    let mut readiness =
        if args.daemonize { daemon::daemonize(args.log_file.as_deref())? } else { Readiness::foreground() };
    match start(args, build) {
        Ok(running) => {
            readiness.ready();
            running.serve(args)
        }
        Err(e) => {
            readiness.failed(&format!("{e:#}"));
            Err(e)
        }
    }
}

struct Running<P> {
    peer: Arc<P>,
    ports: Vec<Arc<Port>>,
    state: Arc<PeerState>,
    _pidfile: Option<Pidfile>,
}

fn start<P: Peer>(
    args: &PeerArgs,
    build: impl FnOnce(&Arc<Segment>) -> anyhow::Result<P>,
) -> anyhow::Result<Running<P>> {
    crate::logging::init(&args.log_level, if args.daemonize { None } else { args.log_file.as_deref() })?;
    let ports = args.ports()?;
    let pidfile = args.pidfile.as_deref().map(Pidfile::create).transpose()?;
    let seg = Segment::join(&args.segment).with_context(|| format!("joining segment {}", args.segment))?;
    let peer = Arc::new(build(&seg)?);
    let mut bound = Vec::new();
    for no in ports {
        let port = seg.bind_port_recovering(no).with_context(|| format!("binding port {no}"))?;
        let nr_buffers = seg.geometry().nr_buffers;
        if let Some(limit) = peer.buffer_limit(nr_buffers) {
            port.limit_buffers(limit);
        }
        let spares = peer.spare_requests(nr_buffers);
        if spares > 0 && port.keep_spares(spares) < spares {
            tracing::warn!(port = no, spares, "the segment has fewer free buffers than this peer keeps back");
        }
        bound.push(Arc::new(port));
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    let state = Arc::new(PeerState { in_flight: AtomicU32::new(0), nr_ops: args.nr_ops, stop });
    tracing::info!(
        segment = %args.segment,
        ports = ?bound.iter().map(|p| p.number()).collect::<Vec<_>>(),
        nr_ops = args.nr_ops,
        threads = args.threads,
        "peer ready"
    );
    Ok(Running { peer, ports: bound, state, _pidfile: pidfile })
}

impl<P: Peer> Running<P> {
    fn serve(self, args: &PeerArgs) -> anyhow::Result<()> {
        let drain_timeout = Duration::from_millis(args.drain_timeout_ms);
        std::thread::scope(|scope| {
            for port in &self.ports {
                for t in 0..args.threads {
                    let (peer, state, ports) = (&self.peer, &self.state, &self.ports[..]);
                    std::thread::Builder::new()
                        .name(format!("port{}-w{t}", port.number()))
                        .spawn_scoped(scope, move || {
                            worker(peer.as_ref(), PeerIo { port, state, ports }, drain_timeout)
                        })
                        .expect("spawning a worker thread");
                }
            }
        });
        let left = self.state.in_flight();
        if left > 0 {
            tracing::warn!(in_flight = left, "drain timed out; leaving with requests unanswered");
        }
        tracing::info!("peer stopped");
        // Dropping the ports fails back whatever is still queued for them (a port is left
        // when its last holder drops it: a completion still running keeps it).
        drop(self.ports);
        Ok(())
    }
}

fn worker<P: Peer>(peer: &P, io: PeerIo<'_>, drain_timeout: Duration) {
    let (port, state) = (io.port, io.state);
    let plug = peer.plug_rounds();
    let batch = peer.accept_batch().clamp(1, MAX_BATCH);
    let mut replies = Vec::with_capacity(MAX_BATCH);
    let mut requests = Vec::with_capacity(batch);
    let mut last_idle = Instant::now();
    let mut stop_seen: Option<Instant> = None;
    loop {
        if state.stopping() {
            let since = *stop_seen.get_or_insert_with(Instant::now);
            if state.in_flight() == 0 || since.elapsed() >= drain_timeout {
                // Wake sibling workers sleeping on this port so they see the stop too.
                port.wake();
                return;
            }
        }
        let mut round = || {
            let mut busy = false;
            while port.receive_many(MAX_BATCH, &mut replies) > 0 {
                replies.drain(..).for_each(|reply| peer.on_reply(&io, reply));
                busy = true;
            }
            while !state.stopping() {
                let slots = reserve_slots(state, batch);
                if slots == 0 {
                    break;
                }
                let got = port.accept_many(slots as usize, &mut requests);
                if got < slots as usize {
                    state.in_flight.fetch_sub(slots - got as u32, Ordering::AcqRel);
                }
                if got == 0 {
                    break;
                }
                requests.drain(..).for_each(|req| peer.on_request(&io, req));
                busy = true;
            }
            (busy, peer.poll(&io))
        };
        let (busy, due) = if plug { xseg::plugged(round) } else { round() };
        if !busy {
            if last_idle.elapsed() >= IDLE_TICK {
                peer.on_idle(&io);
                last_idle = Instant::now();
            }
            let sleep = due.map_or(IDLE_TICK, |d| d.min(IDLE_TICK));
            if sleep.is_zero() {
                continue;
            }
            if state.in_flight() >= state.nr_ops {
                // Requests are queued but no slot is free: only a reply can help now.
                port.wait_reply(sleep.min(Duration::from_millis(1)));
            } else {
                port.wait(sleep);
            }
        }
    }
}

/// Most requests or replies a worker takes off its port in one go.
const MAX_BATCH: usize = 64;

/// Takes up to `want` of the `nr_ops` in-flight slots; returns how many (0: none free).
fn reserve_slots(state: &PeerState, want: usize) -> u32 {
    let want = want as u32;
    match state.in_flight.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
        (n < state.nr_ops).then(|| n + want.min(state.nr_ops - n))
    }) {
        Ok(before) => want.min(state.nr_ops - before),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_slots_are_bounded_by_nr_ops() {
        let state = PeerState { in_flight: AtomicU32::new(0), nr_ops: 3, stop: Arc::default() };
        assert!((0..3).all(|_| reserve_slots(&state, 1) == 1));
        assert_eq!(reserve_slots(&state, 1), 0, "the fourth slot is refused");
        state.in_flight.fetch_sub(1, Ordering::AcqRel);
        assert_eq!(reserve_slots(&state, 1), 1);
        assert_eq!(state.in_flight(), 3);
    }

    #[test]
    fn a_batch_takes_only_the_slots_that_are_free() {
        let state = PeerState { in_flight: AtomicU32::new(0), nr_ops: 5, stop: Arc::default() };
        assert_eq!(reserve_slots(&state, 3), 3);
        assert_eq!(reserve_slots(&state, 3), 2, "two were left");
        assert_eq!(reserve_slots(&state, 3), 0);
        assert_eq!(state.in_flight(), 5);
    }
}
