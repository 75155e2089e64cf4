//! The volume composer peer: serves the volume protocol (archip-proto) with map lookups to
//! the mapper and object requests to the data blocker.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use archip_peer::{Peer, PeerIo};
use archip_proto::{decode_extents, VolumeInfo, MAPPING_CACHEABLE};
use xseg::{flags, Incoming, Op, Port, Request, Segment, TARGET_LEN_MAX};

use crate::mapcache::{MapCache, Piece as MapExtent};
use crate::subreq::{self, Failure, Retry, Sub, Timing, Window};
use crate::volumes::Volumes;

/// Longest volume name vlmcd passes on (the mapper checks the exact rules).
pub const VOLUME_NAME_MAX: usize = 64;

/// Smallest window offered for an extent list (64 KiB, or the buffer size if smaller).
const MAP_WINDOW_MIN: u64 = 64 << 10;
/// Room for one encoded extent: 20 bytes of header and a name (map object names are at
/// most 71 bytes long).
const EXTENT_BYTES_MAX: u64 = 20 + 76;
/// Room for a volume's INFO answer (JSON).
const INFO_WINDOW: u64 = 8 << 10;
/// Smallest block the mapper supports (block_shift 12), to bound the extents of a range.
const BLOCK_MIN: u64 = 4096;

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
    volumes: Volumes,
    /// Private ports for sub-requests not in use right now. A request takes one for its
    /// whole service, so there are at most as many as requests served at once (worker
    /// threads). They are left when the composer is dropped, on the thread that stops the
    /// peer: a thread-local port would be left by a thread-local destructor, which may still
    /// be running when the process exits.
    sub_ports: Mutex<Vec<Port>>,
    /// Read mappings of the volumes this host holds (see `mapcache`).
    cache: MapCache,
}

impl Composer {
    pub fn new(seg: &Arc<Segment>, config: Config) -> Composer {
        Composer {
            seg: seg.clone(),
            config,
            volumes: Volumes::default(),
            sub_ports: Mutex::default(),
            cache: MapCache::default(),
        }
    }

    fn timing(&self) -> Timing {
        Timing { retry: self.config.retry_timeout, request: self.config.request_timeout }
    }

    fn sub_ports(&self) -> MutexGuard<'_, Vec<Port>> {
        self.sub_ports.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` with a private port of its own (from the pool, or bound now).
    fn with_sub_port<R>(&self, f: impl FnOnce(&Port) -> Result<R, Failure>) -> Result<R, Failure> {
        let pooled = self.sub_ports().pop();
        let port = match pooled {
            Some(port) => port,
            None => {
                let port = self.seg.bind_dynamic_port().map_err(|e| {
                    Failure::fault(libc::EIO, format!("binding a port for sub-requests: {e}"))
                })?;
                tracing::debug!(port = port.number(), "bound a sub-request port");
                port
            }
        };
        let result = f(&port);
        self.sub_ports().push(port);
        result
    }

    /// The frontend request, checked, and served.
    fn serve(&self, fport: &Port, req: &mut Incoming) -> Result<u64, Failure> {
        let view = fport.view(req);
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
        let check_name = || {
            if plausible_name(name) {
                Ok(())
            } else {
                Err(Failure::answer(libc::EINVAL, format!("implausible volume name {name:?}")))
            }
        };
        let check_range = |window_needed: bool| {
            if offset.checked_add(size).is_none() {
                return Err(Failure::answer(libc::EINVAL, format!("range {offset}+{size} overflows")));
            }
            if window_needed && size > window {
                return Err(Failure::answer(
                    libc::EINVAL,
                    format!("size {size} exceeds the data window of {window}"),
                ));
            }
            Ok(())
        };
        let fua = flag_word & flags::FUA;
        match op {
            Op::Ping => Ok(0),
            Op::Read | Op::Write => {
                check_name()?;
                check_range(true)?;
                self.with_sub_port(|port| {
                    if op == Op::Read {
                        self.read(port, req, name, offset, size)
                    } else {
                        self.write(port, req, name, offset, size, fua)
                    }
                })
            }
            Op::Discard | Op::WriteZeroes => {
                check_name()?;
                check_range(false)?;
                self.with_sub_port(|port| self.zero(port, req, name, offset, size, fua))
            }
            Op::Flush => {
                check_name()?;
                self.with_sub_port(|port| self.flush(port, req, name))
            }
            Op::List => {
                if !name.is_empty() {
                    check_name()?;
                }
                self.with_sub_port(|port| self.forward(port, req, op, name, offset, size, flag_word, window))
            }
            Op::Info
            | Op::Open
            | Op::Close
            | Op::Create
            | Op::Clone
            | Op::Snapshot
            | Op::Delete
            | Op::Rename
            | Op::Resize
            | Op::Acquire
            | Op::Release => {
                check_name()?;
                self.with_sub_port(|port| self.forward(port, req, op, name, offset, size, flag_word, window))
            }
            other => Err(Failure::answer(libc::EOPNOTSUPP, format!("vlmcd does not serve {}", other.name()))),
        }
    }

    fn read(
        &self,
        port: &Port,
        req: &mut Incoming,
        name: &str,
        offset: u64,
        size: u64,
    ) -> Result<u64, Failure> {
        let _io = self.volumes.io(name);
        // An object the map names may be gone by the time it is read: a DISCARD of its
        // block (from another request) deletes it. Then the map is read again, once.
        let mut attempt = 0;
        loop {
            attempt += 1;
            // The second attempt asks the mapper, whatever the cache says.
            match self.read_once(port, req, name, offset, size, attempt == 1) {
                Err(f) if f.object_missing && attempt == 1 => {
                    tracing::debug!(volume = name, cause = %f.cause, "object gone; reading the map again");
                }
                other => return other,
            }
        }
    }

    fn read_once(
        &self,
        port: &Port,
        req: &mut Incoming,
        name: &str,
        offset: u64,
        size: u64,
        use_cache: bool,
    ) -> Result<u64, Failure> {
        let cached = if use_cache { self.cache.lookup(name, offset, size) } else { None };
        let extents = match cached {
            Some(extents) => extents,
            None => {
                if self.cache.wants_geometry(name) {
                    self.learn_geometry(port, req, name);
                }
                let ticket = self.cache.read_ticket(name);
                let (extents, cacheable) = self
                    .map(port, req, Op::MapRead, name, offset, size, 0)
                    .inspect_err(|_| self.cache.forget(name))?;
                covers_exactly(&extents, size)?;
                match ticket {
                    Some(ticket) => self.cache.keep_read(name, ticket, cacheable, offset, &extents),
                    None if cacheable => self.cache.want(name),
                    None => {}
                }
                extents
            }
        };
        // Zero blocks are served here, before any object read shares the window.
        let data =
            port.data_mut(req).map_err(|e| Failure::fault(libc::EIO, format!("frontend window: {e}")))?;
        let mut subs = Vec::with_capacity(extents.len());
        let mut at = 0u64;
        for e in extents {
            match e.object {
                None => data[at as usize..(at + e.len) as usize].fill(0),
                Some(object) => subs.push(self.data_sub(Op::Read, object, e.object_offset, e.len, 0, at)),
            }
            at += e.len;
        }
        self.run_data(port, req, &subs)?;
        Ok(size)
    }

    fn write(
        &self,
        port: &Port,
        req: &mut Incoming,
        name: &str,
        offset: u64,
        size: u64,
        fua: u32,
    ) -> Result<u64, Failure> {
        let _io = self.volumes.io(name);
        let mutation = self.cache.mutation(name, offset, size);
        let (extents, _) = self
            .map(port, req, Op::MapWrite, name, offset, size, fua)
            .inspect_err(|_| self.cache.forget(name))?;
        covers_exactly(&extents, size)?;
        self.cache.keep_write(&mutation, offset, &extents);
        let mut subs = Vec::with_capacity(extents.len());
        let mut at = 0u64;
        for e in extents {
            let Some(object) = e.object else {
                return Err(Failure::fault(libc::EIO, "the mapper answered MAPW with a zero extent"));
            };
            subs.push(self.data_sub(Op::Write, object, e.object_offset, e.len, fua, at));
            at += e.len;
        }
        self.run_data(port, req, &subs)?;
        Ok(size)
    }

    /// DISCARD and WRITE_ZEROES: the mapper turns whole blocks into zero blocks and names
    /// the pieces of partial blocks that still need zeroing in their objects.
    fn zero(
        &self,
        port: &Port,
        req: &mut Incoming,
        name: &str,
        offset: u64,
        size: u64,
        fua: u32,
    ) -> Result<u64, Failure> {
        let _io = self.volumes.io(name);
        let _mutation = self.cache.mutation(name, offset, size);
        let (extents, _) = self
            .map(port, req, Op::Discard, name, offset, size, fua)
            .inspect_err(|_| self.cache.forget(name))?;
        let covered: u64 = extents.iter().map(|e| e.len).sum();
        if covered > size {
            return Err(Failure::fault(
                libc::EIO,
                format!("the mapper's DISCARD answer covers {covered} of {size} bytes"),
            ));
        }
        let subs: Vec<Sub> = extents
            .into_iter()
            .filter_map(|e| {
                let object = e.object?;
                Some(Sub {
                    dst: self.config.data_port,
                    op: Op::WriteZeroes,
                    target: object,
                    offset: e.object_offset,
                    size: e.len,
                    flags: fua,
                    window: Window::None,
                })
            })
            .collect();
        self.run_data(port, req, &subs)?;
        Ok(size)
    }

    fn flush(&self, port: &Port, req: &mut Incoming, name: &str) -> Result<u64, Failure> {
        let _drained = self.volumes.drain(name);
        let flush = Sub {
            dst: self.config.data_port,
            op: Op::Flush,
            target: String::new(),
            offset: 0,
            size: 0,
            flags: 0,
            window: Window::None,
        };
        self.run_data(port, req, std::slice::from_ref(&flush))?;
        Ok(0)
    }

    /// A management op, passed to the mapper as it is (SNAPSHOT, CLOSE and DELETE after
    /// draining the volume); the answer's errno and `serviced` are the mapper's.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        port: &Port,
        req: &mut Incoming,
        op: Op,
        name: &str,
        offset: u64,
        size: u64,
        flag_word: u32,
        window: u64,
    ) -> Result<u64, Failure> {
        let _drained = matches!(op, Op::Snapshot | Op::Close | Op::Delete).then(|| self.volumes.drain(name));
        // Whatever changes a volume's map or its lock ends its cached mappings, before and
        // after (a read's lookup racing the op is not kept: forgetting bumps its sequence).
        let _forgotten = (!matches!(op, Op::Info | Op::List | Op::Open)).then(|| self.cache.forgetting(name));
        let sub = Sub {
            dst: self.config.mapper_port,
            op,
            target: name.to_string(),
            offset,
            size,
            flags: flag_word,
            window: if window > 0 { Window::Shared { offset: 0, len: window } } else { Window::None },
        };
        // Reading is safe to repeat; anything else may have happened before an abort.
        let retry = if matches!(op, Op::Info | Op::List) { Retry::Idempotent } else { Retry::UnacceptedOnly };
        let mut answer = (0, window);
        subreq::run(
            port,
            req,
            std::slice::from_ref(&sub),
            retry,
            self.timing(),
            &|_, errno| {
                let cause = format!("the mapper answered {}", op.name());
                // Answers (ENOENT, EEXIST, EBUSY, ...) are the frontend's business; a storage
                // failure is worth a warning.
                if errno == libc::EIO {
                    Failure::fault(errno, cause)
                } else {
                    Failure::answer(errno, cause)
                }
            },
            &mut |_, reply| {
                let view = port.view(reply);
                answer = (view.serviced(), view.data_len());
                Ok(())
            },
        )?;
        if answer.1 < window {
            // The mapper sized its answer (e.g. INFO's JSON): show the frontend the same.
            port.truncate_data(req, answer.1)
                .map_err(|e| Failure::fault(libc::EIO, format!("sizing the answer: {e}")))?;
        }
        if op == Op::Open {
            self.cache.want(name);
        }
        Ok(answer.0)
    }

    /// Asks the mapper (MAPR, MAPW or DISCARD) for the extents of a range; also whether
    /// the answer is flagged [`MAPPING_CACHEABLE`].
    #[allow(clippy::too_many_arguments)]
    fn map(
        &self,
        port: &Port,
        req: &Incoming,
        op: Op,
        name: &str,
        offset: u64,
        size: u64,
        flag_word: u32,
    ) -> Result<(Vec<MapExtent>, bool), Failure> {
        let mut extents = Vec::new();
        let mut cacheable = false;
        let window = self.map_window(op, size);
        self.ask_mapper(port, req, op, name, offset, size, flag_word, window, &mut |reply| {
            let window = port
                .data(reply)
                .map_err(|e| Failure::fault(libc::EIO, format!("{} answer window: {e}", op.name())))?;
            extents = decode(window, size).map_err(|why| {
                Failure::fault(libc::EIO, format!("malformed {} answer from the mapper: {why}", op.name()))
            })?;
            cacheable = port.view(reply).flags() & MAPPING_CACHEABLE != 0;
            Ok(())
        })?;
        Ok((extents, cacheable))
    }

    /// Asks the mapper for a volume's block size and size (INFO), which the cache needs to
    /// place blocks. On any failure nothing is cached for the volume yet.
    fn learn_geometry(&self, port: &Port, req: &Incoming, name: &str) {
        let mut geometry = None;
        let asked = self.ask_mapper(port, req, Op::Info, name, 0, 0, 0, INFO_WINDOW, &mut |reply| {
            let n = port.view(reply).serviced() as usize;
            let window = port.data(reply).map_err(|e| Failure::fault(libc::EIO, e.to_string()))?;
            geometry = window
                .get(..n)
                .and_then(|json| serde_json::from_slice::<VolumeInfo>(json).ok())
                .map(|info| (info.block_size_bytes, info.size_bytes));
            Ok(())
        });
        match (asked, geometry) {
            (Ok(()), Some((block_size, size))) => self.cache.set_geometry(name, block_size, size),
            _ => tracing::debug!(volume = name, "no geometry for the map cache"),
        }
    }

    /// One lookup sent to the mapper with an answer buffer of its own (`window` bytes);
    /// repeatable, so retried while the mapper restarts. `on_reply` reads the answer.
    #[allow(clippy::too_many_arguments)]
    fn ask_mapper(
        &self,
        port: &Port,
        req: &Incoming,
        op: Op,
        name: &str,
        offset: u64,
        size: u64,
        flag_word: u32,
        window: u64,
        on_reply: &mut dyn FnMut(&Request) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        let sub = Sub {
            dst: self.config.mapper_port,
            op,
            target: name.to_string(),
            offset,
            size,
            flags: flag_word,
            window: Window::Own(window),
        };
        subreq::run(
            port,
            req,
            std::slice::from_ref(&sub),
            Retry::Idempotent,
            self.timing(),
            &|_, errno| mapper_failure(op, errno),
            &mut |_, reply| on_reply(reply),
        )
    }

    /// The window for the extent list of a `size`-byte range: room for one extent per
    /// smallest block, at least 64 KiB, at most the segment's buffer size.
    fn map_window(&self, op: Op, size: u64) -> u64 {
        let buffer = self.seg.geometry().buffer_bytes;
        let blocks = if op == Op::Discard { 2 } else { size / BLOCK_MIN + 2 };
        (4 + blocks.saturating_mul(EXTENT_BYTES_MAX)).max(MAP_WINDOW_MIN).min(buffer)
    }

    fn data_sub(&self, op: Op, object: String, object_offset: u64, len: u64, flag_word: u32, at: u64) -> Sub {
        Sub {
            dst: self.config.data_port,
            op,
            target: object,
            offset: object_offset,
            size: len,
            flags: flag_word,
            window: Window::Shared { offset: at, len },
        }
    }

    /// Object requests to the data blocker; each must be served whole.
    fn run_data(&self, port: &Port, req: &Incoming, subs: &[Sub]) -> Result<(), Failure> {
        if subs.is_empty() {
            return Ok(());
        }
        subreq::run(port, req, subs, Retry::Idempotent, self.timing(), &data_failure, &mut |i, reply| {
            let (serviced, sub) = (port.view(reply).serviced(), &subs[i]);
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
        })
    }
}

/// Recovers the sub-request ports of a vlmcd that died on `own` ports, before they are
/// bound again.
///
/// Binding a static port recovers it, which fails back the frontend requests the dead vlmcd
/// had accepted; the frontends may then reuse their buffers. But the sub-requests that point
/// into those buffers were sent from the dead vlmcd's *dynamic* ports, which that recovery
/// does not touch: a blocker could still be reading into a reused buffer. Recovering those
/// ports first orphans the sub-requests and waits until no live peer is still serving them.
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
fn decode(window: &[u8], size: u64) -> Result<Vec<MapExtent>, String> {
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
        extents.push(MapExtent {
            object: e.object.map(str::to_string),
            object_offset: e.object_offset,
            len: e.len,
        });
    }
    Ok(extents)
}

fn covers_exactly(extents: &[MapExtent], size: u64) -> Result<(), Failure> {
    let covered: u64 = extents.iter().map(|e| e.len).sum();
    if covered == size {
        Ok(())
    } else {
        Err(Failure::fault(libc::EIO, format!("the mapper's extents cover {covered} of {size} bytes")))
    }
}

impl Peer for Composer {
    fn on_request(&self, io: &PeerIo<'_>, mut req: Incoming) {
        let result = self.serve(io.port, &mut req);
        if let Err(f) = &result {
            let view = io.port.view(&req);
            let op = view.op().map_or("?", Op::name);
            let target = view.target();
            let volume =
                target.as_ref().map_or("?".into(), |t| String::from_utf8_lossy(t.as_bytes()).into_owned());
            if f.fault {
                warn_throttled(op, &volume, f);
            } else {
                tracing::debug!(op, volume, errno = f.errno, cause = %f.cause, "request refused");
            }
        }
        io.respond(req, result.map_err(|f| f.errno));
    }

    fn on_idle(&self, _io: &PeerIo<'_>) {
        // Return the replies to sub-requests abandoned earlier (after a timeout) to the pool.
        if let Ok(ports) = self.sub_ports.try_lock() {
            for port in ports.iter() {
                while let Some(stray) = port.receive() {
                    port.put_request(stray);
                }
            }
        }
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
            target: "o".into(),
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
