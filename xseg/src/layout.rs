//! The in-segment ABI: every struct that lives in shared memory, `#[repr(C)]` with
//! fixed-width fields. `include/xseg.h` declares the same layout for C and a test checks
//! every size and offset. Bump [`ABI_VERSION`] on any change here.
//!
//! Layout of a segment (all positions are byte offsets from the segment's start):
//!
//! ```text
//! 0                 SegmentHeader (one page)
//! ports_offset      PortDesc[nr_ports]                 64-byte aligned
//! requests_offset   RequestDesc[nr_requests]           64-byte aligned
//! buffers_offset    BufferDesc[nr_buffers]             (owner of each data buffer)
//! rings_offset      Ring[2 * nr_ports]                 request ring of port p at 2p,
//!                                                      reply ring at 2p + 1
//! data_offset       nr_buffers * buffer_bytes          page aligned
//! ```
//!
//! Shared mutable fields are atomics, so a peer that scribbles on the segment can make
//! another peer read wrong values (which every reader bounds-checks) but never a torn or
//! undefined one. The geometry is plain data, written once before `state` becomes READY.

use crate::sync::{AtomicU32, AtomicU64};

pub const MAGIC: [u8; 8] = *b"ARCHXSEG";
pub const ABI_VERSION: u32 = 2;
/// Longest target (volume or object name) a request carries.
pub const TARGET_LEN_MAX: usize = 256;
pub const NO_BUFFER: u32 = u32::MAX;
pub const NO_PORT: u32 = u32::MAX;
pub const HEADER_BYTES: u64 = 4096;
pub const CACHE_LINE: u64 = 64;

pub const SEGMENT_INITIALIZING: u32 = 0;
pub const SEGMENT_READY: u32 = 1;

/// `PortDesc::owner_pid` of a free port; `PORT_RECOVERING` while recovery runs.
pub const PORT_FREE: u32 = 0;
pub const PORT_RECOVERING: u32 = u32::MAX;

/// `PortDesc::sleepers`: set by the signaller that woke the port's sleepers, cleared by each
/// sleeper that registers; the low bits count the sleepers (see `signal`).
pub const SLEEPERS_WOKEN: u32 = 1 << 31;

/// Request states: the low byte of `RequestDesc::state`; the owning port is in the high 16
/// bits, so claiming a request and recording its owner is one CAS. `ORPHAN` is or-ed in
/// when the owning port died while the request was away; whoever holds it then frees it
/// instead of replying. The whole word is 0 when the request is free.
pub const REQ_FREE: u32 = 0;
/// Held by its owner (after get, or after receive).
pub const REQ_HELD: u32 = 1;
/// In the destination's request ring.
pub const REQ_SUBMITTED: u32 = 2;
/// Held by the destination, which is serving it.
pub const REQ_ACCEPTED: u32 = 3;
/// Answered (errno says how), in the owner's reply ring.
pub const REQ_REPLIED: u32 = 4;
pub const REQ_ORPHAN: u32 = 0x100;
pub const REQ_STATE_MASK: u32 = 0xff;

pub fn req_word(owner_port: u32, state: u32) -> u32 {
    debug_assert!(owner_port < NR_PORTS_MAX);
    (owner_port << 16) | state
}
pub fn req_owner(word: u32) -> u32 {
    word >> 16
}
pub fn req_state(word: u32) -> u32 {
    word & REQ_STATE_MASK
}
pub fn req_orphaned(word: u32) -> bool {
    word & REQ_ORPHAN != 0
}

/// What never changes after creation. Copied out once when a segment is joined.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub magic: [u8; 8],
    pub abi_version: u32,
    pub header_bytes: u32,
    pub segment_bytes: u64,
    pub nr_ports: u32,
    pub dynamic_port_start: u32,
    pub nr_requests: u32,
    pub nr_buffers: u32,
    pub queue_capacity: u32,
    pub port_desc_bytes: u32,
    pub request_desc_bytes: u32,
    pub ring_header_bytes: u32,
    pub buffer_bytes: u64,
    pub ports_offset: u64,
    pub requests_offset: u64,
    pub buffers_offset: u64,
    pub rings_offset: u64,
    pub ring_stride_bytes: u64,
    pub data_offset: u64,
    pub data_bytes: u64,
}

#[repr(C)]
pub struct SegmentHeader {
    pub geometry: Geometry,
    pub state: AtomicU32,
    /// Allocation hints: where the next scan for a free request / buffer / port starts.
    pub request_cursor: AtomicU32,
    pub buffer_cursor: AtomicU32,
    pub dynamic_cursor: AtomicU32,
    pub created_unix_ms: AtomicU64,
}

/// One port: a read-mostly cache line (owner, doorbell) and a line of counters that only
/// the owner writes, so a submitter checking the doorbell does not steal the line the
/// owner updates on every request.
#[repr(C, align(64))]
pub struct PortDesc {
    /// The binding word: `PORT_FREE`, `PORT_RECOVERING`, or the owner's pid. Binding is a
    /// CAS from `PORT_FREE` to the binder's pid.
    pub owner_pid: AtomicU32,
    pub bind_generation: AtomicU32,
    /// The owner's start time (clock ticks since boot, from /proc), so a recycled pid is
    /// not mistaken for a live owner.
    pub owner_start_time: AtomicU64,
    /// Futex word of the port's doorbell, and the count of its sleepers with
    /// [`SLEEPERS_WOKEN`].
    pub wake_seq: AtomicU32,
    pub sleepers: AtomicU32,
    pub _pad0: [u64; 5],
    /// Requests this port has taken from the pool and not yet put back (bounded by the
    /// ring capacity, so replies always fit the reply ring).
    pub requests_owned: AtomicU32,
    /// Who is recovering the port while `owner_pid` is `PORT_RECOVERING`: if that process
    /// dies mid-recovery (e.g. exiting during a port's drop), another may take over.
    pub recoverer_pid: AtomicU32,
    pub requests_submitted: AtomicU64,
    pub requests_served: AtomicU64,
    pub requests_failed: AtomicU64,
    pub requests_rejected: AtomicU64,
    pub _pad1: [u64; 3],
}

/// The two cursors of a ring, each on its own cache line; `capacity` slots follow.
#[repr(C)]
pub struct RingHeader {
    pub head: AtomicU64,
    pub _pad0: [u64; 7],
    pub tail: AtomicU64,
    pub _pad1: [u64; 7],
}

/// A request descriptor. The first cache line holds everything that crosses between
/// client and server on every request; the second what only the owner uses.
#[repr(C, align(64))]
pub struct RequestDesc {
    /// `(owner_port << 16) | [REQ_ORPHAN] | state`, see `req_word`.
    pub state: AtomicU32,
    pub op: AtomicU32,
    pub flags: AtomicU32,
    /// 0 when served, else the (positive) errno of the failure. Not named `errno`, which
    /// is a macro in C.
    pub error: AtomicU32,
    pub target_len: AtomicU32,
    pub dst_port: AtomicU32,
    pub offset: AtomicU64,
    pub size: AtomicU64,
    pub serviced: AtomicU64,
    /// The request's data window, relative to the data area (may lie in another request's
    /// buffer: that is how sub-requests share their parent's data without a copy).
    pub data_offset: AtomicU64,
    pub data_len: AtomicU64,
    // Second cache line.
    pub owner_generation: AtomicU32,
    pub src_port: AtomicU32,
    pub buffer_index: AtomicU32,
    pub _reserved: u32,
    pub serial: AtomicU64,
    /// Opaque to xseg; the sender's own tag.
    pub user_data: AtomicU64,
    pub target: [AtomicU64; TARGET_LEN_MAX / 8],
    pub _pad: [u64; 4],
}

/// Which request (index + 1) holds a data buffer; 0 when free.
#[repr(C)]
pub struct BufferDesc {
    pub owner_request: AtomicU32,
}

/// Marker for types that may be viewed in shared memory: `repr(C)`, every field an integer
/// or an atomic integer, valid for every bit pattern.
///
/// # Safety
/// Implement only for such types.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) unsafe trait Shared {}
// SAFETY: all of these are repr(C) structs of integers / atomics, valid for any bits.
unsafe impl Shared for SegmentHeader {}
// SAFETY: as above.
unsafe impl Shared for PortDesc {}
// SAFETY: as above.
unsafe impl Shared for RingHeader {}
// SAFETY: as above.
unsafe impl Shared for RequestDesc {}
// SAFETY: as above.
unsafe impl Shared for BufferDesc {}
// SAFETY: a single atomic integer.
unsafe impl Shared for AtomicU64 {}

/// The tunable part of a segment's geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentConfig {
    pub nr_ports: u32,
    /// Ports `[0, dynamic_port_start)` are static (bound by number); the rest are handed out.
    pub dynamic_port_start: u32,
    pub nr_requests: u32,
    pub nr_buffers: u32,
    pub buffer_bytes: u64,
    /// Slots per ring (power of two); also the most requests one port may own at once.
    pub queue_capacity: u32,
}

impl Default for SegmentConfig {
    fn default() -> Self {
        SegmentConfig {
            nr_ports: 1024,
            dynamic_port_start: 512,
            nr_requests: 4096,
            nr_buffers: 256,
            buffer_bytes: 1 << 20,
            queue_capacity: 256,
        }
    }
}

/// Hard bounds on configurations, so a typo cannot ask for a terabyte of shared memory.
/// Port numbers must fit the 16 owner bits of a request's state word.
pub const NR_PORTS_MAX: u32 = 65_535;
pub const NR_REQUESTS_MAX: u32 = 1 << 20;
pub const NR_BUFFERS_MAX: u32 = 1 << 20;
pub const BUFFER_BYTES_MAX: u64 = 64 << 20;
pub const QUEUE_CAPACITY_MAX: u32 = 1 << 20;
pub const SEGMENT_BYTES_MAX: u64 = 64 << 30;

fn align_up(value: u64, align: u64) -> u64 {
    value.div_ceil(align) * align
}

impl SegmentConfig {
    /// Checks the configuration and lays it out. Errors name the offending field.
    pub fn geometry(&self) -> Result<Geometry, String> {
        let c = self;
        if c.nr_ports == 0 || c.nr_ports > NR_PORTS_MAX {
            return Err(format!("nr_ports must be 1..={NR_PORTS_MAX}, got {}", c.nr_ports));
        }
        if c.dynamic_port_start > c.nr_ports {
            return Err(format!(
                "dynamic_port_start {} is past nr_ports {}",
                c.dynamic_port_start, c.nr_ports
            ));
        }
        if c.nr_requests == 0 || c.nr_requests > NR_REQUESTS_MAX {
            return Err(format!("nr_requests must be 1..={NR_REQUESTS_MAX}, got {}", c.nr_requests));
        }
        if c.nr_buffers > NR_BUFFERS_MAX {
            return Err(format!("nr_buffers must be at most {NR_BUFFERS_MAX}, got {}", c.nr_buffers));
        }
        if c.buffer_bytes == 0 || c.buffer_bytes > BUFFER_BYTES_MAX || c.buffer_bytes % 4096 != 0 {
            return Err(format!(
                "buffer_bytes must be a multiple of 4096 up to {BUFFER_BYTES_MAX}, got {}",
                c.buffer_bytes
            ));
        }
        if !c.queue_capacity.is_power_of_two()
            || c.queue_capacity < 2
            || c.queue_capacity > QUEUE_CAPACITY_MAX
        {
            return Err(format!(
                "queue_capacity must be a power of two in 2..={QUEUE_CAPACITY_MAX}, got {}",
                c.queue_capacity
            ));
        }
        let port_desc_bytes = std::mem::size_of::<PortDesc>() as u64;
        let request_desc_bytes = std::mem::size_of::<RequestDesc>() as u64;
        let ring_header_bytes = std::mem::size_of::<RingHeader>() as u64;
        let ports_offset = HEADER_BYTES;
        let requests_offset = align_up(ports_offset + port_desc_bytes * u64::from(c.nr_ports), CACHE_LINE);
        let buffers_offset =
            align_up(requests_offset + request_desc_bytes * u64::from(c.nr_requests), CACHE_LINE);
        let rings_offset = align_up(buffers_offset + 4 * u64::from(c.nr_buffers), CACHE_LINE);
        let ring_stride_bytes = align_up(ring_header_bytes + 8 * u64::from(c.queue_capacity), CACHE_LINE);
        let data_offset = align_up(rings_offset + ring_stride_bytes * 2 * u64::from(c.nr_ports), 4096);
        let data_bytes = u64::from(c.nr_buffers) * c.buffer_bytes;
        let segment_bytes = data_offset + data_bytes;
        if segment_bytes > SEGMENT_BYTES_MAX {
            return Err(format!(
                "the segment would need {segment_bytes} bytes, more than {SEGMENT_BYTES_MAX}"
            ));
        }
        Ok(Geometry {
            magic: MAGIC,
            abi_version: ABI_VERSION,
            header_bytes: std::mem::size_of::<SegmentHeader>() as u32,
            segment_bytes,
            nr_ports: c.nr_ports,
            dynamic_port_start: c.dynamic_port_start,
            nr_requests: c.nr_requests,
            nr_buffers: c.nr_buffers,
            queue_capacity: c.queue_capacity,
            port_desc_bytes: port_desc_bytes as u32,
            request_desc_bytes: request_desc_bytes as u32,
            ring_header_bytes: ring_header_bytes as u32,
            buffer_bytes: c.buffer_bytes,
            ports_offset,
            requests_offset,
            buffers_offset,
            rings_offset,
            ring_stride_bytes,
            data_offset,
            data_bytes,
        })
    }
}

impl Geometry {
    pub fn config(&self) -> SegmentConfig {
        SegmentConfig {
            nr_ports: self.nr_ports,
            dynamic_port_start: self.dynamic_port_start,
            nr_requests: self.nr_requests,
            nr_buffers: self.nr_buffers,
            buffer_bytes: self.buffer_bytes,
            queue_capacity: self.queue_capacity,
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn struct_sizes_are_stable() {
        // Changing any of these is an ABI change: bump ABI_VERSION and update xseg.h.
        assert_eq!(std::mem::size_of::<Geometry>(), 120);
        assert!(std::mem::size_of::<SegmentHeader>() as u64 <= HEADER_BYTES);
        assert_eq!(std::mem::size_of::<PortDesc>(), 128);
        assert_eq!(std::mem::size_of::<RingHeader>(), 128);
        assert_eq!(std::mem::size_of::<RequestDesc>(), 384);
        assert_eq!(std::mem::size_of::<BufferDesc>(), 4);
        // The fields every request moves between client and server share one cache line.
        assert_eq!(std::mem::offset_of!(RequestDesc, data_len) + 8, 64);
        assert_eq!(std::mem::offset_of!(PortDesc, requests_owned), 64);
    }

    #[test]
    fn default_geometry_is_laid_out_in_order() {
        let g = SegmentConfig::default().geometry().unwrap();
        assert!(g.ports_offset < g.requests_offset);
        assert!(g.requests_offset < g.buffers_offset);
        assert!(g.buffers_offset < g.rings_offset);
        assert!(g.rings_offset < g.data_offset);
        assert_eq!(g.data_offset % 4096, 0);
        assert_eq!(g.segment_bytes, g.data_offset + g.data_bytes);
    }

    #[test]
    fn bad_configs_name_the_field() {
        let bad = [
            (SegmentConfig { nr_ports: 0, ..Default::default() }, "nr_ports"),
            (SegmentConfig { dynamic_port_start: 5000, ..Default::default() }, "dynamic_port_start"),
            (SegmentConfig { nr_requests: 0, ..Default::default() }, "nr_requests"),
            (SegmentConfig { buffer_bytes: 1000, ..Default::default() }, "buffer_bytes"),
            (SegmentConfig { queue_capacity: 100, ..Default::default() }, "queue_capacity"),
            (SegmentConfig { nr_buffers: 1 << 20, buffer_bytes: 64 << 20, ..Default::default() }, "segment"),
        ];
        for (config, field) in bad {
            let err = config.geometry().unwrap_err();
            assert!(err.contains(field), "{err}");
        }
    }
}
