//! XSEG: the shared-memory segment through which Archipelago's peers talk.
//!
//! A [`Segment`] is one file under `/dev/shm` mapped by every peer of a host. It holds a
//! fixed set of ports, a pool of request descriptors, a pool of data buffers, and per port
//! two bounded lock-free rings (requests to serve, replies to receive). Everything inside is
//! addressed by offsets, so each process may map it anywhere; the layout is a C ABI
//! ([`layout`], `include/xseg.h`).
//!
//! A peer binds a [`Port`] and runs the request lifecycle:
//! client `get_request` → fill → `submit`; server `accept` → serve → `respond`; client
//! `receive` → read result → `put_request`. Waiting spins briefly, then sleeps on a shared
//! futex; submitters only make a system call when the destination sleeps ([`signal`]).
//!
//! No lock is held across a crash: the rings are repairable ([`ring`]), request ownership
//! is a CAS-owned state word, and [`Segment::recover_port`] cleans up after a dead owner.
//!
//! Invariants:
//! * Only this crate does arithmetic on segment offsets, and only [`shm`] turns them into
//!   references (bounds- and alignment-checked).
//! * Every index or window read from the segment is checked before use: a peer that
//!   scribbles on the segment fails its own requests, never crashes another peer.
//! * The data path neither allocates nor makes system calls, except the futex wake/wait.

#[cfg(not(loom))]
mod error;
pub mod layout;
#[cfg(not(loom))]
mod port;
#[cfg(not(loom))]
mod recovery;
#[cfg(not(loom))]
mod request;
pub mod ring;
#[cfg(not(loom))]
mod segment;
#[cfg(not(loom))]
mod shm;
pub mod signal;
mod sync;

#[cfg(not(loom))]
pub use error::{Error, Result};
pub use layout::{SegmentConfig, ABI_VERSION, TARGET_LEN_MAX};
#[cfg(not(loom))]
pub use port::{flush_plug, plugged, CallError, ExternalSleep, Port, RequestMut, RequestView, DEFAULT_SPIN};
#[cfg(not(loom))]
pub use recovery::{PortReport, RecoveryReport, SegmentReport};
#[cfg(not(loom))]
pub use request::{flags, Held, Incoming, Op, Request, Target};
#[cfg(not(loom))]
pub use segment::{segment_path, shm_dir, validate_name, Segment};
