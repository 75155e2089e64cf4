//! This crate's own reader of `/dev/fuse`, so that a write's data is copied once on its way
//! to vlmcd. fuser reads every request into a buffer of its own; a write's bytes would then
//! be copied twice here (kernel → fuser's buffer → segment). This loop reads each request
//! with `readv` into an 80-byte header buffer followed by a whole segment buffer: the
//! header of a READ or WRITE (`fuse_in_header` + `fuse_read_in`/`fuse_write_in`) fills
//! the first exactly, so a WRITE's data lands in the segment buffer where vlmcd and the
//! blocker read it, and the same descriptor goes to vlmcd as is. READ is served from the
//! same kind of descriptor; the answer is written to the kernel from the segment (as
//! before); FSYNC becomes a FLUSH from here as well. Everything else — lookups, open,
//! readdir... — is passed byte for byte to fuser's session over a `SOCK_SEQPACKET` pair
//! (fuser reads a socket as it reads `/dev/fuse`: one message, one request), and a relay
//! thread writes fuser's answers to the kernel.
//!
//! fuser still mounts and negotiates INIT with the kernel (`Negotiator`; that session is
//! never run, only kept to unmount at the end). Its session over the socket gets an INIT
//! made here with the kernel's version and capabilities, and at the end a DESTROY, which
//! makes it run `ArchipFs::destroy`; the answers to both are dropped by the relay.
//!
//! Answers to requests read from a `/dev/fuse` file must be written to that same file (the
//! kernel keeps the requests being processed per file), so all readers share one.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use fuser::{Filesystem, InitFlags, KernelConfig, Request as FuseRequest, Version};
use xseg::{Op, Request};

use crate::engine::{Engine, Reply};
use crate::fs::{self, DataIo, OpenFiles};

/// `fuse_in_header`.
const IN_HEADER: usize = 40;
/// `fuse_read_in` and `fuse_write_in` (protocol 7.9 and later).
const RW_IN: usize = 40;
/// What `readv` puts in the header buffer: the whole fixed part of a READ or WRITE.
const HEAD: usize = IN_HEADER + RW_IN;
/// `fuse_out_header`.
const OUT_HEADER: usize = 16;
const FUSE_READ: u32 = 15;
const FUSE_WRITE: u32 = 16;
const FUSE_FSYNC: u32 = 20;
/// `fuse_fsync_in`.
const FSYNC_IN: usize = 16;
const FUSE_INIT: u32 = 26;
const FUSE_DESTROY: u32 = 38;
/// `fuse_init_in` of protocol 7.36 and later.
const INIT_IN: usize = 64;
/// The uniques of the requests made here for fuser (the kernel counts up from 2 by 2).
const MADE_INIT: u64 = u64::MAX - 1;
const MADE_DESTROY: u64 = u64::MAX - 3;
/// The largest message fuser is sent or answers with: a request's fixed part and a name
/// or two, or a directory page; writes and reads never go to fuser from here.
const FUSER_MESSAGE_MAX: usize = (crate::fs::MAX_WRITE_BYTES as usize) + 4096;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The fields of `fuse_in_header` this loop looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InHeader {
    len: u32,
    opcode: u32,
    unique: u64,
    total_extlen: u16,
}

impl InHeader {
    fn parse(b: &[u8]) -> Option<InHeader> {
        (b.len() >= IN_HEADER).then(|| InHeader {
            len: u32_at(b, 0),
            opcode: u32_at(b, 4),
            unique: u64_at(b, 8),
            total_extlen: u16_at(b, 36),
        })
    }
}

/// The fields of `fuse_read_in` / `fuse_write_in` (same layout for these) used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RwIn {
    fh: u64,
    offset: u64,
    size: u32,
    /// The flags the file was opened with.
    open_flags: u32,
}

impl RwIn {
    fn parse(head: &[u8; HEAD]) -> RwIn {
        let b = &head[IN_HEADER..];
        RwIn { fh: u64_at(b, 0), offset: u64_at(b, 8), size: u32_at(b, 16), open_flags: u32_at(b, 32) }
    }
}

/// `fuse_out_header` for an answer of `payload` bytes (`errno` 0) or an error.
fn out_header(unique: u64, errno: i32, payload: usize) -> [u8; OUT_HEADER] {
    let mut h = [0u8; OUT_HEADER];
    h[0..4].copy_from_slice(&((OUT_HEADER + payload) as u32).to_ne_bytes());
    h[4..8].copy_from_slice(&(-errno).to_ne_bytes());
    h[8..16].copy_from_slice(&unique.to_ne_bytes());
    h
}

/// A request's header with no argument (DESTROY) or with `fuse_init_in` (INIT).
fn made_request(opcode: u32, unique: u64, arg: &[u8]) -> Vec<u8> {
    let mut m = vec![0u8; IN_HEADER];
    m[0..4].copy_from_slice(&((IN_HEADER + arg.len()) as u32).to_ne_bytes());
    m[4..8].copy_from_slice(&opcode.to_ne_bytes());
    m[8..16].copy_from_slice(&unique.to_ne_bytes());
    m.extend_from_slice(arg);
    m
}

/// The INIT fuser's session over the socket gets: the kernel's version and capabilities.
fn made_init(kernel: &Offer) -> Vec<u8> {
    let bits = kernel.capabilities.bits() | InitFlags::FUSE_INIT_EXT.bits();
    let mut arg = [0u8; INIT_IN];
    arg[0..4].copy_from_slice(&kernel.version.0.to_ne_bytes());
    arg[4..8].copy_from_slice(&kernel.version.1.to_ne_bytes());
    arg[8..12].copy_from_slice(&(128u32 << 10).to_ne_bytes());
    arg[12..16].copy_from_slice(&(bits as u32).to_ne_bytes());
    arg[16..20].copy_from_slice(&((bits >> 32) as u32).to_ne_bytes());
    made_request(FUSE_INIT, MADE_INIT, &arg)
}

/// What the kernel offered at INIT.
#[derive(Debug, Clone, Copy)]
pub struct Offer {
    version: Version,
    capabilities: InitFlags,
}

/// The filesystem of the session that mounts: it only negotiates INIT (as `ArchipFs` does)
/// and notes what the kernel offered.
pub struct Negotiator {
    pub offer: Arc<Mutex<Option<Offer>>>,
}

impl Filesystem for Negotiator {
    fn init(&mut self, _req: &FuseRequest, config: &mut KernelConfig) -> io::Result<()> {
        *self.offer.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Offer { version: config.kernel_abi(), capabilities: config.capabilities() });
        fs::negotiate(config);
        Ok(())
    }
}

fn last_errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

/// Answers to the kernel, written to the `/dev/fuse` file the requests were read from.
pub struct Kernel {
    dev: OwnedFd,
}

/// Per-request messages: at most one a second.
static DEV_LOG: archip_peer::Throttle = archip_peer::Throttle::new(1000);

impl Kernel {
    /// The kernel end of a mount: `dev` is made non-blocking for reading (`DevLoop::run`).
    pub fn new(dev: OwnedFd) -> io::Result<Kernel> {
        use std::os::fd::AsFd;
        set_nonblocking(dev.as_fd())?;
        Ok(Kernel { dev })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.dev.as_fd()
    }

    /// Writes one answer made of at most two `parts` (a header and a payload), with no
    /// allocation: this is every read's and write's answer.
    fn write(&self, parts: &[&[u8]]) {
        debug_assert!(parts.len() <= 2);
        let empty = libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 };
        let mut iov = [empty; 2];
        for (slot, part) in iov.iter_mut().zip(parts) {
            *slot = libc::iovec { iov_base: part.as_ptr() as *mut _, iov_len: part.len() };
        }
        let count = parts.len().min(2) as i32;
        // SAFETY: writev only reads the buffers `iov` points at, which `parts` keeps alive.
        let n = unsafe { libc::writev(self.dev.as_raw_fd(), iov.as_ptr(), count) };
        if n < 0 {
            match last_errno() {
                // The request was interrupted (the kernel no longer waits for it), or the
                // mount is gone: nobody to tell.
                libc::ENOENT | libc::ENODEV => {}
                e => {
                    if DEV_LOG.allow().is_some() {
                        tracing::warn!("answering the kernel: {}", io::Error::from_raw_os_error(e));
                    }
                }
            }
        }
    }

    fn answer(&self, unique: u64, errno: i32, payload: &[u8]) {
        let header = out_header(unique, errno, payload.len());
        if payload.is_empty() {
            self.write(&[&header]);
        } else {
            self.write(&[&header, payload]);
        }
    }
}

/// The answer one request read by this loop owes the kernel.
pub struct KernelReply {
    kernel: Arc<Kernel>,
    unique: u64,
}

impl KernelReply {
    pub fn data(self, data: &[u8]) {
        self.kernel.answer(self.unique, 0, data);
    }

    pub fn written(self, n: u32) {
        let mut out = [0u8; 8]; // fuse_write_out: size, padding
        out[0..4].copy_from_slice(&n.to_ne_bytes());
        self.kernel.answer(self.unique, 0, &out);
    }

    pub fn error(self, errno: i32) {
        self.kernel.answer(self.unique, errno, &[]);
    }
}

/// A `SOCK_SEQPACKET` pair: (this loop's end, fuser's end).
fn socket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: socketpair writes two descriptors into `fds`, which has room for them.
    let rc = unsafe {
        libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr())
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let pair = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    for fd in [&pair.0, &pair.1] {
        let size = FUSER_MESSAGE_MAX as libc::c_int + 64 * 1024;
        for option in [libc::SO_SNDBUFFORCE, libc::SO_SNDBUF] {
            // SAFETY: setsockopt reads one c_int from `size`.
            let rc = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    option,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc == 0 {
                break; // SO_SNDBUFFORCE needs CAP_NET_ADMIN; SO_SNDBUF is capped by wmem_max
            }
        }
    }
    Ok(pair)
}

/// The loop's side of the pair to fuser's session.
pub struct ToFuser {
    sock: OwnedFd,
}

impl ToFuser {
    /// Creates the pair and queues the INIT fuser's session reads first; returns fuser's end.
    pub fn new(offer: &Offer) -> io::Result<(ToFuser, OwnedFd)> {
        let (ours, theirs) = socket_pair()?;
        let to = ToFuser { sock: ours };
        to.send(&made_init(offer))?;
        Ok((to, theirs))
    }

    fn send(&self, message: &[u8]) -> io::Result<()> {
        loop {
            // SAFETY: send reads `message`, alive for the call.
            let n = unsafe {
                libc::send(self.sock.as_raw_fd(), message.as_ptr().cast(), message.len(), libc::MSG_NOSIGNAL)
            };
            if n >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        }
    }

    /// Ends fuser's session: it answers a DESTROY (dropped), runs `destroy` and returns.
    pub fn destroy(&self) -> io::Result<()> {
        self.send(&made_request(FUSE_DESTROY, MADE_DESTROY, &[]))
    }

    /// Writes fuser's answers (and notifications) to the kernel until the pair is shut down.
    pub fn relay(&self, kernel: &Kernel) {
        let mut buf = vec![0u8; FUSER_MESSAGE_MAX];
        loop {
            // SAFETY: recv writes at most `buf.len()` bytes into `buf`.
            let n = unsafe { libc::recv(self.sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                if last_errno() == libc::EINTR {
                    continue;
                }
                tracing::warn!("reading fuser's answers: {}", io::Error::last_os_error());
                return;
            }
            let message = &buf[..n as usize];
            if message.len() < OUT_HEADER {
                return; // shut down (0 bytes), or nothing an answer could be
            }
            let unique = u64_at(message, 8);
            if unique != MADE_INIT && unique != MADE_DESTROY {
                kernel.write(&[message]);
            }
        }
    }

    /// Wakes `relay` (and any reader of fuser's end) with end-of-file.
    pub fn shut_down(&self) {
        // SAFETY: shutdown of a socket this struct owns.
        unsafe { libc::shutdown(self.sock.as_raw_fd(), libc::SHUT_RDWR) };
    }
}

/// The reader: what one thread needs to serve `/dev/fuse`.
pub struct DevLoop {
    pub kernel: Arc<Kernel>,
    pub engine: Arc<Engine>,
    pub files: OpenFiles,
    pub to_fuser: Arc<ToFuser>,
}

/// Sleeps until `/dev/fuse` has a request to read (or the mount is gone: the next read
/// says so).
fn wait_readable(dev: BorrowedFd<'_>) {
    let mut pfd = libc::pollfd { fd: dev.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: poll reads and writes the one pollfd it is given. EINTR only ends the wait.
    unsafe { libc::poll(&mut pfd, 1, -1) };
}

/// Makes reads of `/dev/fuse` return EAGAIN instead of sleeping, so a reader sleeps in
/// `wait_readable` without a segment buffer.
pub fn set_nonblocking(dev: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor this process owns; F_GETFL/F_SETFL touch no memory.
    let flags = unsafe { libc::fcntl(dev.as_raw_fd(), libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(dev.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `readv` of one request into `head` and `body`.
fn read_request(dev: BorrowedFd<'_>, head: &mut [u8; HEAD], body: &mut [u8]) -> Result<usize, i32> {
    let iov = [
        libc::iovec { iov_base: head.as_mut_ptr().cast(), iov_len: head.len() },
        libc::iovec { iov_base: body.as_mut_ptr().cast(), iov_len: body.len() },
    ];
    // SAFETY: readv writes at most each iovec's length into the buffers they point at,
    // which are borrowed mutably for the call.
    let n = unsafe { libc::readv(dev.as_raw_fd(), iov.as_ptr(), 2) };
    if n < 0 {
        Err(last_errno())
    } else {
        Ok(n as usize)
    }
}

impl DevLoop {
    /// Serves requests until the mount goes away (`Ok`) or reading fails otherwise.
    pub fn run(&self) -> io::Result<()> {
        // A segment buffer must hold the largest write the kernel sends, with the header
        // apart; with smaller buffers (a custom segment) writes go through `private`.
        let in_place = self.engine.chunk() >= u64::from(fs::MAX_WRITE_BYTES);
        let mut head = [0u8; HEAD];
        let mut private = vec![0u8; fs::MAX_WRITE_BYTES as usize + 4096];
        let mut spare: Option<Request> = None;
        let result = loop {
            if in_place && spare.is_none() {
                spare = self.engine.spare();
            }
            let read = match spare.as_mut() {
                Some(req) => read_request(self.kernel.fd(), &mut head, self.engine.window_of(req)),
                None => read_request(self.kernel.fd(), &mut head, &mut private),
            };
            let n = match read {
                Ok(n) => n,
                // Nothing to read: never sleep holding a segment buffer (with the segment
                // short of buffers, the requests queued for one would wait on this one).
                Err(libc::EAGAIN) => {
                    if let Some(req) = spare.take() {
                        self.engine.return_spare(req);
                    }
                    wait_readable(self.kernel.fd());
                    continue;
                }
                // Interrupted before we read it, or a signal: read the next one.
                Err(libc::ENOENT | libc::EINTR) => continue,
                Err(libc::ENODEV) => break Ok(()),
                Err(e) => break Err(io::Error::from_raw_os_error(e)),
            };
            self.dispatch(n, &head, &mut spare, &private);
        };
        if let Some(req) = spare {
            self.engine.return_spare(req);
        }
        result
    }

    /// Serves or passes on the request of `n` bytes just read into `head` and `spare`'s
    /// window (or `private` when there was no spare).
    fn dispatch(&self, n: usize, head: &[u8; HEAD], spare: &mut Option<Request>, private: &[u8]) {
        let Some(header) = InHeader::parse(&head[..n.min(HEAD)]) else {
            if DEV_LOG.allow().is_some() {
                tracing::warn!("a {n}-byte read from /dev/fuse is no request");
            }
            return;
        };
        let body_len = n.saturating_sub(HEAD);
        let fixed = n >= HEAD && header.total_extlen == 0 && header.len as usize == n;
        let reply = || KernelReply { kernel: self.kernel.clone(), unique: header.unique };
        match header.opcode {
            FUSE_WRITE if fixed => {
                let arg = RwIn::parse(head);
                if body_len != arg.size as usize {
                    return reply().error(libc::EINVAL);
                }
                match self.files.write(arg.fh, arg.offset, u64::from(arg.size), arg.open_flags as i32) {
                    Err(e) => reply().error(e),
                    Ok(DataIo::Nothing) => reply().written(0),
                    Ok(DataIo::Io { volume, offset, len, fua }) => match spare.take() {
                        Some(req) => self.engine.write_in_place(
                            req,
                            &volume,
                            offset,
                            len,
                            fua,
                            Reply::KernelWritten(reply()),
                        ),
                        None => self.engine.write(
                            &volume,
                            offset,
                            &private[..len as usize],
                            fua,
                            Reply::KernelWritten(reply()),
                        ),
                    },
                }
            }
            FUSE_READ if fixed => {
                let arg = RwIn::parse(head);
                match self.files.read(arg.fh, arg.offset, arg.size) {
                    Err(e) => reply().error(e),
                    Ok(DataIo::Nothing) => reply().data(&[]),
                    Ok(DataIo::Io { volume, offset, len, .. }) => match spare.take() {
                        Some(req) if len <= self.engine.chunk() => {
                            self.engine.read_in_place(req, &volume, offset, len, Reply::KernelData(reply()))
                        }
                        other => {
                            *spare = other;
                            self.engine.read(&volume, offset, len, Reply::KernelData(reply()))
                        }
                    },
                }
            }
            // fsync is a database's hot path too: not worth two more thread hops.
            FUSE_FSYNC if n == IN_HEADER + FSYNC_IN && header.len as usize == n => {
                match self.files.fsync(u64_at(head, IN_HEADER)) {
                    Err(e) => reply().error(e),
                    Ok(None) => reply().data(&[]),
                    Ok(Some(volume)) => {
                        self.engine.control(Op::Flush, &volume, 0, 0, Reply::KernelEmpty(reply()))
                    }
                }
            }
            _ => {
                let head_len = n.min(HEAD);
                let mut message = Vec::with_capacity(n);
                message.extend_from_slice(&head[..head_len]);
                match spare.as_mut() {
                    Some(req) => message.extend_from_slice(&self.engine.window_of(req)[..body_len]),
                    None => message.extend_from_slice(&private[..body_len]),
                }
                if let Err(e) = self.to_fuser.send(&message) {
                    if DEV_LOG.allow().is_some() {
                        tracing::warn!("passing request {} on to fuser: {e}", header.opcode);
                    }
                    if header.opcode != FUSE_DESTROY {
                        reply().error(libc::EIO);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A READ or WRITE header as the kernel lays it out (golden bytes, little-endian x86).
    fn golden_write() -> [u8; HEAD] {
        let mut b = [0u8; HEAD];
        b[0..4].copy_from_slice(&[0x50, 0x10, 0, 0]); // len 4176 = 80 + 4096
        b[4..8].copy_from_slice(&[16, 0, 0, 0]); // FUSE_WRITE
        b[8..16].copy_from_slice(&[0x2a, 0, 0, 0, 0, 0, 0, 0]); // unique 42
        b[16..24].copy_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0]); // nodeid 2
        b[36..38].copy_from_slice(&[0, 0]); // total_extlen
        b[40..48].copy_from_slice(&[7, 0, 0, 0, 0, 0, 0, 0]); // fh 7
        b[48..56].copy_from_slice(&[0, 0x10, 0, 0, 0, 0, 0, 0]); // offset 4096
        b[56..60].copy_from_slice(&[0, 0x10, 0, 0]); // size 4096
        b[72..76].copy_from_slice(&[0x02, 0x10, 0, 0]); // flags O_RDWR | O_DSYNC
        b
    }

    #[test]
    fn request_headers_parse_from_the_kernels_layout() {
        let b = golden_write();
        assert_eq!(
            InHeader::parse(&b),
            Some(InHeader { len: 4176, opcode: FUSE_WRITE, unique: 42, total_extlen: 0 })
        );
        let arg = RwIn::parse(&b);
        assert_eq!(arg, RwIn { fh: 7, offset: 4096, size: 4096, open_flags: 0x1002 });
        assert_ne!(arg.open_flags as i32 & libc::O_DSYNC, 0);
        assert_eq!(InHeader::parse(&b[..39]), None, "shorter than fuse_in_header");
    }

    #[test]
    fn answers_have_the_kernels_layout() {
        assert_eq!(out_header(42, 0, 8), [24, 0, 0, 0, 0, 0, 0, 0, 42, 0, 0, 0, 0, 0, 0, 0]);
        // Errors are negative errnos.
        assert_eq!(out_header(9, libc::EIO, 0)[..8], [16, 0, 0, 0, 0xfb, 0xff, 0xff, 0xff]);
    }

    #[test]
    fn the_init_made_for_fuser_carries_the_kernels_offer() {
        let offer = Offer {
            version: Version(7, 41),
            capabilities: InitFlags::FUSE_ASYNC_DIO | InitFlags::from_bits_retain(1 << 33),
        };
        let m = made_init(&offer);
        assert_eq!(m.len(), IN_HEADER + INIT_IN);
        let h = InHeader::parse(&m).unwrap();
        assert_eq!((h.len as usize, h.opcode, h.unique), (m.len(), FUSE_INIT, MADE_INIT));
        let arg = &m[IN_HEADER..];
        assert_eq!((u32_at(arg, 0), u32_at(arg, 4)), (7, 41));
        let low = u64::from(u32_at(arg, 12));
        let high = u64::from(u32_at(arg, 16));
        let flags = InitFlags::from_bits_retain(low | high << 32);
        assert!(flags.contains(offer.capabilities | InitFlags::FUSE_INIT_EXT));
        let destroy = made_request(FUSE_DESTROY, MADE_DESTROY, &[]);
        assert_eq!(InHeader::parse(&destroy).unwrap().len as usize, IN_HEADER);
    }

    #[test]
    fn messages_pass_through_the_pair_whole_and_made_answers_are_dropped() {
        let offer = Offer { version: Version(7, 41), capabilities: InitFlags::empty() };
        let (to, theirs) = ToFuser::new(&offer).unwrap();
        // fuser's end reads the made INIT as one message.
        let mut buf = vec![0u8; 4096];
        // SAFETY: recv into a buffer of its length.
        let n = unsafe { libc::recv(theirs.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        assert_eq!(n as usize, IN_HEADER + INIT_IN);
        // Answers: the made INIT's is dropped, a kernel request's passes, in order.
        let (kernel_end, test_end) = socket_pair().unwrap();
        let kernel = Kernel::new(kernel_end).unwrap();
        for unique in [MADE_INIT, 2] {
            let answer = out_header(unique, 0, 0);
            // SAFETY: send of a live buffer.
            let sent = unsafe { libc::send(theirs.as_raw_fd(), answer.as_ptr().cast(), answer.len(), 0) };
            assert_eq!(sent, OUT_HEADER as isize);
        }
        // SAFETY: shutdown of fuser's end: the relay then sees end-of-file.
        unsafe { libc::shutdown(theirs.as_raw_fd(), libc::SHUT_WR) };
        to.relay(&kernel);
        // SAFETY: recv into a buffer of its length.
        let n = unsafe {
            libc::recv(test_end.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT)
        };
        assert_eq!(n as usize, OUT_HEADER);
        assert_eq!(u64_at(&buf, 8), 2);
        // SAFETY: as above.
        let n = unsafe {
            libc::recv(test_end.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT)
        };
        assert_eq!(n, -1, "nothing else was relayed");
    }
}
