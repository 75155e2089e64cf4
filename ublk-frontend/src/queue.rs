//! One ublk queue: its io tasks turn block requests into xseg requests to vlmcd.
//!
//! Each queue thread (libublk's) runs a local executor with one task per tag. A task takes
//! the block request the kernel hands it, copies a write's data into a segment buffer,
//! submits the request to vlmcd on the queue's own dynamic port and awaits the reply; the
//! next request of the tag is fetched when the reply has been committed. So a queue keeps
//! up to `depth` requests in flight on its port (pipelined; no thread waits per IO).
//!
//! The queue thread sleeps in `io_uring_enter`, so replies need a way to wake it. It
//! registers as a sleeper of its port's doorbell (`Port::sleep_for_replies`) and keeps an
//! io_uring `FUTEX_WAIT` on the doorbell's futex word in its own ring (Linux 6.7+): the
//! thread sleeps on block requests and replies at once, and vlmcd's wake completes the
//! wait. It then takes every reply off the port, wakes the tasks they belong to, and waits
//! again. On a kernel without io_uring futex ops, a small *kicker* thread sleeps on the
//! doorbell (`Port::wait_reply`) instead and writes an eventfd the ring polls (a thread and
//! two wake-ups more per batch of replies); the kicker is re-armed only after the queue's
//! drain, so it never spins on replies the queue has not taken yet. Replies that are
//! already there when the executor goes idle are taken without either round trip.
//!
//! # When vlmcd is away or the segment is full
//! A request that cannot be sent because vlmcd's port is not bound, whose reply is
//! ECONNABORTED, ENOTCONN or EAGAIN (a restarting vlmcd fails back what its predecessor had
//! accepted), or that finds the segment out of descriptors or buffers, is sent again after
//! a short sleep (an io_uring timeout: 1 ms for resources, 5 ms doubling to 50 ms for
//! vlmcd), for up to `retry_timeout`; then it fails with EIO. Resending is safe for every
//! op here (the same write at the same offset, a discard, a flush).

use std::cell::{Cell, RefCell};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use io_uring::{opcode, types};
use libublk::helpers::IoBuf;
use libublk::io::{UblkDev, UblkQueue};
use libublk::uring_async::ublk_submit_sqe_async;
use libublk::{sys, BufDesc, UblkError, UblkUringData};
use xseg::{flags, Op, Port, Request};

const RESOURCE_WAIT: Duration = Duration::from_millis(1);
const BACKOFF_MIN: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_millis(50);
/// How long a "vlmcd is bound" answer is trusted.
const BOUND_CHECK_EVERY: Duration = Duration::from_millis(100);
/// How long the kicker sleeps at most before it looks at its stop flag.
const KICK_SLICE: Duration = Duration::from_millis(100);

/// What every queue of a device shares.
pub struct Shared {
    pub volume: String,
    pub vlmcd: u32,
    pub ro: bool,
    pub retry_timeout: Duration,
    /// `add --null`: answer every request at once, send nothing (benchmarks only).
    pub null_answer: bool,
    /// The dynamic ports bound for the queues (one each, by queue id), taken by the queue
    /// threads; bound before the device starts so a full segment fails `add` cleanly.
    pub ports: Mutex<Vec<Option<Port>>>,
    /// Set when a queue could not start (its port or its ring failed).
    pub failed: AtomicBool,
}

/// The errno a block request fails with for an errno from vlmcd (the cause is in vlmcd's
/// log): the kernel turns EOPNOTSUPP and ENOSPC into their own block statuses, and
/// everything else is an IO error anyway.
fn user_errno(errno: i32) -> i32 {
    match errno {
        libc::EOPNOTSUPP | libc::ENOSPC => errno,
        _ => libc::EIO,
    }
}

/// Errnos with which a restarting vlmcd fails back requests: try again.
fn retryable(errno: i32) -> bool {
    matches!(errno, libc::ECONNABORTED | libc::ENOTCONN | libc::EAGAIN)
}

enum Outcome {
    Done,
    /// vlmcd is away: back off and resend.
    Away,
    /// The segment is momentarily out of descriptors or buffers.
    NoResources,
    Failed(i32),
}

/// A tag's wait for its reply.
#[derive(Default)]
struct Slot {
    /// The `user_data` of the request in flight (0: none).
    expect: u64,
    reply: Option<Request>,
    waker: Option<Waker>,
}

/// The handshake between the queue thread and its kicker.
struct Kick {
    /// The kicker may kick (the queue has drained since the last kick).
    armed: AtomicBool,
    stop: AtomicBool,
    efd: OwnedFd,
}

/// The kicker thread of a queue whose kernel has no io_uring futex wait.
struct Kicker {
    kick: Arc<Kick>,
    thread: std::thread::JoinHandle<()>,
}

struct QueueIo {
    qid: u16,
    port: Arc<Port>,
    shared: Arc<Shared>,
    slots: RefCell<Vec<Slot>>,
    seq: Cell<u64>,
    /// When vlmcd's port was last seen bound.
    bound_at: Cell<Option<Instant>>,
    /// Started only when the io_uring futex wait is not available.
    kicker: RefCell<Option<Kicker>>,
    /// `drain`'s batch of replies, kept between rounds so that it does not allocate.
    replies: Cell<Vec<xseg::Request>>,
}

/// Most replies a queue takes off its port in one go.
const RECEIVE_BATCH: usize = 64;

impl QueueIo {
    /// Takes every reply off the port and hands each to its tag; returns how many.
    fn drain(&self) -> usize {
        let mut n = 0;
        let mut replies = self.replies.take();
        while self.port.receive_many(RECEIVE_BATCH, &mut replies) > 0 {
            n += replies.len();
            for reply in replies.drain(..) {
                let ud = self.port.view(&reply).user_data();
                let mut slots = self.slots.borrow_mut();
                match slots.get_mut((ud & 0xffff) as usize) {
                    Some(slot) if slot.expect == ud && ud != 0 && slot.reply.is_none() => {
                        slot.reply = Some(reply);
                        if let Some(w) = slot.waker.take() {
                            w.wake();
                        }
                    }
                    // A reply nobody waits for: give the descriptor back.
                    _ => self.port.put_request(reply),
                }
            }
        }
        self.replies.set(replies);
        n
    }

    /// Whether vlmcd's port is bound by a live process. The answer reads `/proc`, so it
    /// is cached for `BOUND_CHECK_EVERY` while it is yes (a request sent to a vlmcd that
    /// just died waits in its ring until its successor fails it back with ECONNABORTED).
    fn vlmcd_bound(&self) -> bool {
        let now = Instant::now();
        if let Some(at) = self.bound_at.get() {
            if now.duration_since(at) < BOUND_CHECK_EVERY {
                return true;
            }
        }
        let bound = self.port.segment().port_is_bound(self.shared.vlmcd);
        self.bound_at.set(bound.then_some(now));
        bound
    }

    /// Starts the kicker thread (and its eventfd), for a kernel without io_uring futex ops.
    fn start_kicker(&self) -> anyhow::Result<Arc<Kick>> {
        use anyhow::Context as _;
        // SAFETY: eventfd has no memory preconditions; the result is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        anyhow::ensure!(fd >= 0, "eventfd: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` is a new descriptor owned by nobody else.
        let efd = unsafe { OwnedFd::from_raw_fd(fd) };
        let kick = Arc::new(Kick { armed: AtomicBool::new(true), stop: AtomicBool::new(false), efd });
        let thread = {
            let (port, kick) = (self.port.clone(), kick.clone());
            std::thread::Builder::new()
                .name(format!("kick-q{}", self.qid))
                .spawn(move || kicker_loop(port, kick))
                .context("starting the kicker thread")?
        };
        *self.kicker.borrow_mut() = Some(Kicker { kick: kick.clone(), thread });
        Ok(kick)
    }

    /// Stops the kicker thread, if there is one.
    fn stop_kicker(&self) {
        if let Some(k) = self.kicker.borrow_mut().take() {
            k.kick.stop.store(true, Ordering::Release);
            k.thread.thread().unpark();
            let _ = k.thread.join();
        }
    }

    async fn reply(&self, tag: u16) -> Request {
        std::future::poll_fn(|cx| {
            let mut slots = self.slots.borrow_mut();
            let slot = &mut slots[tag as usize];
            match slot.reply.take() {
                Some(r) => {
                    slot.expect = 0;
                    slot.waker = None;
                    Poll::Ready(r)
                }
                None => {
                    slot.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Serves one block request; returns the result to commit (bytes or -errno).
    async fn handle(&self, q: &UblkQueue<'_>, tag: u16, buf: &mut [u8]) -> i32 {
        let iod = q.get_iod(tag);
        let (op_flags, start_sector, nr_sectors) = (iod.op_flags, iod.start_sector, iod.nr_sectors);
        let offset = start_sector << 9;
        let len = u64::from(nr_sectors) << 9;
        let fua = op_flags & sys::UBLK_IO_F_FUA != 0;
        let (op, window) = match op_flags & 0xff {
            sys::UBLK_IO_OP_READ => (Op::Read, len),
            sys::UBLK_IO_OP_WRITE => (Op::Write, len),
            sys::UBLK_IO_OP_FLUSH => (Op::Flush, 0),
            sys::UBLK_IO_OP_DISCARD => (Op::Discard, 0),
            sys::UBLK_IO_OP_WRITE_ZEROES => (Op::WriteZeroes, 0),
            _ => return -libc::EOPNOTSUPP,
        };
        if self.shared.ro && !matches!(op, Op::Read | Op::Flush) {
            return -libc::EROFS;
        }
        if window > buf.len() as u64 {
            return -libc::EINVAL;
        }
        if self.shared.null_answer {
            return match op {
                Op::Read => {
                    buf[..len as usize].fill(0);
                    len as i32
                }
                Op::Write => len as i32,
                _ => 0,
            };
        }
        let started = Instant::now();
        let mut backoff = BACKOFF_MIN;
        loop {
            let wait = match self.round_trip(tag, op, offset, len, window, fua, buf).await {
                Outcome::Done => {
                    return if matches!(op, Op::Read | Op::Write) { len as i32 } else { 0 };
                }
                Outcome::Failed(errno) => {
                    tracing::warn!(%tag, op = op.name(), offset, len, errno, "request failed");
                    return -user_errno(errno);
                }
                Outcome::NoResources => RESOURCE_WAIT,
                Outcome::Away => {
                    let b = backoff;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    b
                }
            };
            if started.elapsed() >= self.shared.retry_timeout {
                tracing::error!(
                    op = op.name(),
                    offset,
                    len,
                    "vlmcd unreachable for {:?}: failing with EIO",
                    self.shared.retry_timeout
                );
                return -libc::EIO;
            }
            sleep(wait).await;
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn round_trip(
        &self,
        tag: u16,
        op: Op,
        offset: u64,
        len: u64,
        window: u64,
        fua: bool,
        buf: &mut [u8],
    ) -> Outcome {
        let port = &*self.port;
        if !self.vlmcd_bound() {
            return Outcome::Away;
        }
        let seq = self.seq.get() + 1;
        self.seq.set(seq);
        let ud = (seq << 16) | u64::from(tag);
        let prepared = port.prepare_request(window, |req| -> Result<(), xseg::Error> {
            let edit = port.edit(req);
            edit.set_op(op)
                .set_offset(offset)
                .set_size(len)
                .set_flags(if fua { flags::FUA } else { 0 })
                .set_user_data(ud);
            edit.set_target(self.shared.volume.as_bytes())?;
            if op == Op::Write {
                port.data_mut(req)?[..len as usize].copy_from_slice(&buf[..len as usize]);
            }
            Ok(())
        });
        let req = match prepared {
            Ok(r) => r,
            Err(e) if e.is_transient() => return Outcome::NoResources,
            Err(e) => return Outcome::Failed(e.errno()),
        };
        self.slots.borrow_mut()[tag as usize].expect = ud;
        if let Err((req, e)) = port.submit(req, self.shared.vlmcd) {
            self.slots.borrow_mut()[tag as usize].expect = 0;
            port.put_request(req);
            return if e.is_transient() || e.errno() == libc::ENOTCONN {
                Outcome::Away
            } else {
                Outcome::Failed(e.errno())
            };
        }
        let reply = self.reply(tag).await;
        let view = port.view(&reply);
        let (errno, serviced) = (view.errno(), view.serviced());
        let outcome = if errno != 0 {
            if retryable(errno) {
                Outcome::Away
            } else {
                Outcome::Failed(errno)
            }
        } else if matches!(op, Op::Read | Op::Write) && serviced != len {
            tracing::error!(op = op.name(), offset, len, serviced, "short answer from vlmcd");
            Outcome::Failed(libc::EIO)
        } else if op == Op::Read {
            match port.data(&reply) {
                Ok(d) if d.len() as u64 >= len => {
                    buf[..len as usize].copy_from_slice(&d[..len as usize]);
                    Outcome::Done
                }
                _ => Outcome::Failed(libc::EIO),
            }
        } else {
            Outcome::Done
        };
        port.put_request(reply);
        outcome
    }
}

/// Sleeps on the queue's ring (an io_uring timeout), so the thread keeps serving others.
async fn sleep(d: Duration) {
    let ts = types::Timespec::new().sec(d.as_secs()).nsec(d.subsec_nanos());
    let sqe = opcode::Timeout::new(&ts).build();
    // -ETIME is the normal result; an error only means the sleep was shorter.
    let _ = ublk_submit_sqe_async(sqe, UblkUringData::Target as u64).await;
}

/// `futex2` flags of the doorbell word: 32 bits, shared (no `FUTEX2_PRIVATE`: the waker is
/// another process).
const FUTEX2_SIZE_U32: u32 = 0x02;
/// Any waker wakes this waiter.
const FUTEX_BITSET_MATCH_ANY: u64 = 0xffff_ffff;

/// The task that takes the replies off the port whenever its doorbell rings: an io_uring
/// futex wait on the doorbell, or (without kernel support) the kicker's eventfd.
async fn drainer(io: Rc<QueueIo>) {
    loop {
        io.drain();
        let Some(sleep) = io.port.sleep_for_replies() else {
            // A reply came meanwhile: let the tasks run, then take it.
            smol::future::yield_now().await;
            continue;
        };
        let sqe = opcode::FutexWait::new(
            sleep.futex_word(),
            u64::from(sleep.value()),
            FUTEX_BITSET_MATCH_ANY,
            FUTEX2_SIZE_U32,
        )
        .build();
        let Ok(res) = ublk_submit_sqe_async(sqe, UblkUringData::Target as u64).await else {
            return; // the queue is going down
        };
        drop(sleep);
        if matches!(-res, libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS) {
            tracing::info!(
                qid = io.qid,
                res,
                "no io_uring futex wait on this kernel: replies wake a kicker thread"
            );
            return kicked_drainer(io).await;
        }
        // 0 (woken), -EAGAIN (the word moved before the wait began), -EINTR: look again.
    }
}

/// [`drainer`] on a kernel without io_uring futex ops: the kicker thread signals an eventfd.
async fn kicked_drainer(io: Rc<QueueIo>) {
    let kick = match io.start_kicker() {
        Ok(kick) => kick,
        Err(e) => {
            // Never leave replies untaken: look for them every millisecond instead.
            tracing::error!(qid = io.qid, "no kicker thread ({e:#}): polling for replies every 1 ms");
            loop {
                sleep(RESOURCE_WAIT).await;
                io.drain();
            }
        }
    };
    loop {
        let sqe = opcode::PollAdd::new(types::Fd(kick.efd.as_raw_fd()), libc::POLLIN as u32).build();
        if ublk_submit_sqe_async(sqe, UblkUringData::Target as u64).await.is_err() {
            return;
        }
        let mut value = 0u64;
        // SAFETY: reads 8 bytes into a local u64 from an eventfd this queue owns
        // (non-blocking: EAGAIN when a drain already reset it is fine).
        let _ = unsafe { libc::read(kick.efd.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
        io.drain();
        // Let the kicker watch the port again.
        kick.armed.store(true, Ordering::Release);
        if let Some(k) = io.kicker.borrow().as_ref() {
            k.thread.thread().unpark();
        }
    }
}

fn kicker_loop(port: Arc<Port>, kick: Arc<Kick>) {
    loop {
        while !kick.armed.load(Ordering::Acquire) {
            if kick.stop.load(Ordering::Acquire) {
                return;
            }
            std::thread::park_timeout(KICK_SLICE);
        }
        if kick.stop.load(Ordering::Acquire) {
            return;
        }
        if port.wait_reply(KICK_SLICE) {
            kick.armed.store(false, Ordering::Release);
            let one = 1u64;
            // SAFETY: writes 8 bytes from a local u64 to an eventfd this queue owns.
            let _ = unsafe { libc::write(kick.efd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }
}

async fn io_task(q: Rc<UblkQueue<'_>>, io: Rc<QueueIo>, tag: u16) -> Result<(), UblkError> {
    let mut buf = IoBuf::<u8>::new(q.dev.dev_info.max_io_buf_bytes as usize);
    q.submit_io_prep_cmd(tag, BufDesc::Slice(buf.as_slice()), 0, Some(&buf)).await?;
    loop {
        let res = io.handle(&q, tag, buf.as_mut_slice()).await;
        q.submit_io_commit_cmd(tag, BufDesc::Slice(buf.as_slice()), res).await?;
    }
}

/// The body of queue `qid`'s thread: returns when the queue goes down.
pub fn run(qid: u16, dev: &UblkDev, shared: &Arc<Shared>) {
    if let Err(e) = run_queue(qid, dev, shared) {
        tracing::error!(qid, "queue failed: {e:#}");
        shared.failed.store(true, Ordering::Release);
    }
}

fn run_queue(qid: u16, dev: &UblkDev, shared: &Arc<Shared>) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let port =
        shared.ports.lock().unwrap_or_else(|e| e.into_inner()).get_mut(qid as usize).and_then(Option::take);
    let port = Arc::new(port.context("no segment port for this queue")?);
    let q = Rc::new(UblkQueue::new(qid, dev).map_err(|e| anyhow::anyhow!("creating queue {qid}: {e}"))?);
    let depth = dev.dev_info.queue_depth as usize;
    let io = Rc::new(QueueIo {
        qid,
        port,
        shared: shared.clone(),
        slots: RefCell::new((0..depth).map(|_| Slot::default()).collect()),
        seq: Cell::new(0),
        bound_at: Cell::new(None),
        kicker: RefCell::new(None),
        replies: Cell::new(Vec::with_capacity(RECEIVE_BATCH)),
    });
    let exe = smol::LocalExecutor::new();
    let tasks: Vec<_> = q
        .tags()
        .map(|tag| {
            let (q, io) = (q.clone(), io.clone());
            exe.spawn(async move {
                match io_task(q, io, tag).await {
                    Ok(()) | Err(UblkError::QueueIsDown) => {}
                    Err(e) => tracing::error!(tag, "io task failed: {e}"),
                }
            })
        })
        .collect();
    let drain_task = exe.spawn(drainer(io.clone()));
    let result = smol::block_on(exe.run(async {
        // One round of the queue's tasks: the requests they send to vlmcd wake it once, at
        // the end of the round (before the thread sleeps in io_uring_enter).
        let run_ops = || {
            xseg::plugged(|| loop {
                while exe.try_tick() {}
                if io.drain() == 0 {
                    break;
                }
            })
        };
        let done = || tasks.iter().all(|t| t.is_finished());
        libublk::wait_and_handle_io_events(&q, Some(20), run_ops, done).await
    }));
    drop(drain_task);
    io.stop_kicker();
    result.map_err(|e| anyhow::anyhow!("queue {qid}: {e}"))
}
