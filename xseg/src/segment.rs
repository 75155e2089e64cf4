//! Creating, joining and destroying a segment, and typed access to its parts.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::layout::*;
use crate::ring::Ring;
use crate::shm::Mapping;
use crate::sync::{AtomicU64, Ordering};

/// A mapped segment. Share it between threads with `Arc`; bind ports from it.
pub struct Segment {
    name: String,
    path: PathBuf,
    map: Mapping,
    geo: Geometry,
    _file: File,
}

/// Where segment files live: `/dev/shm`, or `$XSEG_SHM_DIR` (e.g. a hugetlbfs mount).
pub fn shm_dir() -> PathBuf {
    std::env::var_os("XSEG_SHM_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/dev/shm"))
}

/// Segment names: 1–64 characters of `[A-Za-z0-9._-]`, not starting with `.` or `-`.
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |reason| Err(Error::InvalidName { name: name.to_string(), reason });
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 64 {
        return bad("longer than 64 characters");
    }
    if name.starts_with('.') || name.starts_with('-') {
        return bad("starts with '.' or '-'");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-') {
        return bad("only A-Z, a-z, 0-9, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// The file that backs segment `name`.
pub fn segment_path(name: &str) -> Result<PathBuf> {
    validate_name(name)?;
    Ok(shm_dir().join(format!("xseg-{name}")))
}

fn io_err<'a>(name: &'a str, op: &'static str) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io { name: name.to_string(), op, source }
}

impl Segment {
    /// Creates segment `name` with the given geometry. Fails if it already exists.
    pub fn create(name: &str, config: &SegmentConfig) -> Result<Arc<Segment>> {
        let geo = config.geometry().map_err(Error::InvalidConfig)?;
        let path = segment_path(name)?;
        let file =
            OpenOptions::new().read(true).write(true).create_new(true).mode(0o660).open(&path).map_err(
                |e| match e.kind() {
                    io::ErrorKind::AlreadyExists => Error::Exists { name: name.to_string() },
                    _ => Error::Io { name: name.to_string(), op: "create", source: e },
                },
            )?;
        let result = (|| {
            file.set_len(geo.segment_bytes).map_err(io_err(name, "resize"))?;
            let map = Mapping::map(&file).map_err(io_err(name, "mmap"))?;
            let seg = Segment { name: name.to_string(), path: path.clone(), map, geo, _file: file };
            seg.initialize();
            Ok(Arc::new(seg))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&path);
        }
        result
    }

    /// The file is fresh (all zero): zero is FREE for ports, requests and buffers, so only
    /// the geometry and the ring sequences need writing before READY is published.
    fn initialize(&self) {
        self.map.write_geometry(&self.geo);
        for ring in 0..2 * self.geo.nr_ports {
            self.ring(ring).init();
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let header = self.header();
        header.created_unix_ms.store(now_ms, Ordering::Relaxed);
        header.state.store(SEGMENT_READY, Ordering::Release);
    }

    /// Joins an existing segment, checking magic, ABI version, sizes and layout. Waits up to
    /// two seconds for a segment that is still being created.
    pub fn join(name: &str) -> Result<Arc<Segment>> {
        let path = segment_path(name)?;
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match Self::try_join(name, &path) {
                Err(Error::NotReady { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                other => return other,
            }
        }
    }

    fn try_join(name: &str, path: &std::path::Path) -> Result<Arc<Segment>> {
        let file = OpenOptions::new().read(true).write(true).open(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::NotFound { name: name.to_string() },
            _ => Error::Io { name: name.to_string(), op: "open", source: e },
        })?;
        let file_bytes = file.metadata().map_err(io_err(name, "stat"))?.len();
        if file_bytes < HEADER_BYTES {
            return Err(Error::Truncated { name: name.to_string(), file_bytes, needed_bytes: HEADER_BYTES });
        }
        let map = Mapping::map(&file).map_err(io_err(name, "mmap"))?;
        let geo = map.read_geometry();
        if geo.magic != MAGIC {
            return Err(Error::BadMagic { name: name.to_string() });
        }
        if geo.abi_version != ABI_VERSION {
            return Err(Error::AbiMismatch {
                name: name.to_string(),
                found: geo.abi_version,
                expected: ABI_VERSION,
            });
        }
        let state = map.get::<SegmentHeader>(0).state.load(Ordering::Acquire);
        if state != SEGMENT_READY {
            return Err(Error::NotReady { name: name.to_string() });
        }
        // Recompute the layout from the recorded parameters: anything else is corruption.
        let expected =
            geo.config().geometry().map_err(|reason| Error::Corrupt { name: name.to_string(), reason })?;
        if expected != geo {
            return Err(Error::Corrupt {
                name: name.to_string(),
                reason: "the recorded layout does not match its parameters".into(),
            });
        }
        if file_bytes < geo.segment_bytes {
            return Err(Error::Truncated {
                name: name.to_string(),
                file_bytes,
                needed_bytes: geo.segment_bytes,
            });
        }
        Ok(Arc::new(Segment { name: name.to_string(), path: path.to_path_buf(), map, geo, _file: file }))
    }

    /// Removes segment `name`. Processes that have it mapped keep their mapping.
    pub fn destroy(name: &str) -> Result<()> {
        let path = segment_path(name)?;
        std::fs::remove_file(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::NotFound { name: name.to_string() },
            _ => Error::Io { name: name.to_string(), op: "remove", source: e },
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    pub fn geometry(&self) -> &Geometry {
        &self.geo
    }

    pub fn config(&self) -> SegmentConfig {
        self.geo.config()
    }

    pub(crate) fn header(&self) -> &SegmentHeader {
        self.map.get(0)
    }

    pub(crate) fn port_desc(&self, port: u32) -> &PortDesc {
        assert!(port < self.geo.nr_ports, "port {port} out of range");
        self.map.get(self.geo.ports_offset + u64::from(port) * u64::from(self.geo.port_desc_bytes))
    }

    pub(crate) fn request_desc(&self, index: u32) -> &RequestDesc {
        assert!(index < self.geo.nr_requests, "request {index} out of range");
        self.map.get(self.geo.requests_offset + u64::from(index) * u64::from(self.geo.request_desc_bytes))
    }

    pub(crate) fn buffer_desc(&self, index: u32) -> &BufferDesc {
        assert!(index < self.geo.nr_buffers, "buffer {index} out of range");
        self.map.get(self.geo.buffers_offset + u64::from(index) * 4)
    }

    /// Ring number `ring`: the request ring of port p is 2p, its reply ring 2p + 1.
    pub(crate) fn ring(&self, ring: u32) -> Ring<'_> {
        assert!(ring < 2 * self.geo.nr_ports, "ring {ring} out of range");
        let at = self.geo.rings_offset + u64::from(ring) * self.geo.ring_stride_bytes;
        let header: &RingHeader = self.map.get(at);
        let slots: &[AtomicU64] =
            self.map.slice(at + u64::from(self.geo.ring_header_bytes), self.geo.queue_capacity as usize);
        Ring::new(&header.head, &header.tail, slots)
    }

    pub(crate) fn request_ring(&self, port: u32) -> Ring<'_> {
        self.ring(2 * port)
    }

    pub(crate) fn reply_ring(&self, port: u32) -> Ring<'_> {
        self.ring(2 * port + 1)
    }

    /// The data window `[offset, offset+len)` of the data area, if it lies inside it.
    pub(crate) fn data_window_ok(&self, offset: u64, len: u64) -> bool {
        offset.checked_add(len).is_some_and(|end| end <= self.geo.data_bytes)
    }

    pub(crate) fn data(&self, offset: u64, len: u64) -> &[u8] {
        assert!(self.data_window_ok(offset, len));
        self.map.bytes(self.geo.data_offset + offset, len)
    }

    #[allow(clippy::mut_from_ref)]
    pub(crate) fn data_mut(&self, offset: u64, len: u64) -> &mut [u8] {
        assert!(self.data_window_ok(offset, len));
        self.map.bytes_mut(self.geo.data_offset + offset, len)
    }

    pub(crate) fn buffer_offset(&self, buffer: u32) -> u64 {
        assert!(buffer < self.geo.nr_buffers);
        u64::from(buffer) * self.geo.buffer_bytes
    }
}

/// This process's identity as a port owner: its pid and its start time, so that a pid
/// recycled by the kernel is not taken for the owner.
pub(crate) fn current_identity() -> (u32, u64) {
    let pid = std::process::id();
    (pid, process_start_time(pid).unwrap_or(0))
}

/// Field 22 of /proc/PID/stat: the process's start time in clock ticks since boot, or
/// `None` if there is no such process or it has exited (a zombie not yet reaped, which
/// happens to daemons under an init that does not reap).
pub(crate) fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: skip past its last ')'.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// Whether the process recorded as (pid, start_time) still runs.
pub(crate) fn owner_alive(pid: u32, start_time: u64) -> bool {
    if pid == 0 {
        return false;
    }
    match process_start_time(pid) {
        None => false,
        Some(now) => start_time == 0 || now == start_time,
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for bad in ["", ".hidden", "-x", "a/b", "..", "é", &"x".repeat(65)] {
            assert!(matches!(validate_name(bad), Err(Error::InvalidName { .. })), "{bad:?}");
        }
        for good in ["archipelago", "a", "x.y_z-1", &"x".repeat(64)] {
            validate_name(good).unwrap();
        }
    }

    #[test]
    fn start_time_of_self_is_known() {
        let (pid, start) = current_identity();
        assert!(start > 0);
        assert!(owner_alive(pid, start));
        assert!(!owner_alive(pid, start + 1), "a different start time is a different process");
        assert!(!owner_alive(0, 0));
    }
}
