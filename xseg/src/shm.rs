//! The audited module: the only code that turns segment offsets into references.
//!
//! Every accessor checks bounds and alignment against the mapping and panics on a
//! violation, because callers pass offsets computed from the validated geometry: a failure
//! here is a bug in this crate, never a consequence of what another peer wrote.

use std::fs::File;

use memmap2::MmapRaw;

use crate::layout::{Geometry, Shared};

pub(crate) struct Mapping {
    map: MmapRaw,
}

impl Mapping {
    pub(crate) fn map(file: &File) -> std::io::Result<Mapping> {
        let map = memmap2::MmapOptions::new().map_raw(file)?;
        Ok(Mapping { map })
    }

    pub(crate) fn len(&self) -> u64 {
        self.map.len() as u64
    }

    fn check(&self, offset: u64, bytes: u64, align: u64) {
        let end = offset.checked_add(bytes).expect("segment range overflows");
        assert!(end <= self.len(), "segment range {offset}+{bytes} past the mapping of {}", self.len());
        assert!(offset % align == 0, "segment offset {offset} misaligned for {align}");
    }

    /// A shared reference to the `T` at `offset`.
    pub(crate) fn get<T: Shared>(&self, offset: u64) -> &T {
        self.check(offset, std::mem::size_of::<T>() as u64, std::mem::align_of::<T>() as u64);
        // SAFETY: in bounds and aligned (checked above); the mapping lives as long as
        // `self`; `T: Shared` is valid for any bit pattern and all its shared-mutable
        // fields are atomics, so concurrent access from other processes is not a data race.
        unsafe { &*(self.map.as_ptr().add(offset as usize) as *const T) }
    }

    /// A shared slice of `count` consecutive `T`s at `offset`.
    pub(crate) fn slice<T: Shared>(&self, offset: u64, count: usize) -> &[T] {
        let bytes = (std::mem::size_of::<T>() as u64).checked_mul(count as u64).expect("slice overflows");
        self.check(offset, bytes, std::mem::align_of::<T>() as u64);
        // SAFETY: as in `get`, for `count` elements.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(offset as usize) as *const T, count) }
    }

    /// Reads the geometry (plain data) with a volatile copy: it is written once by the
    /// creator before the header's state is published, but another process could scribble
    /// on it, and a copy taken once is what every later check uses.
    pub(crate) fn read_geometry(&self) -> Geometry {
        self.check(0, std::mem::size_of::<Geometry>() as u64, std::mem::align_of::<Geometry>() as u64);
        // SAFETY: in bounds and aligned (checked); Geometry is plain integers, valid for any
        // bits; volatile because the memory is shared with other processes.
        unsafe { std::ptr::read_volatile(self.map.as_ptr() as *const Geometry) }
    }

    /// Writes the geometry. Only the creator calls this, before publishing READY.
    pub(crate) fn write_geometry(&self, geometry: &Geometry) {
        self.check(0, std::mem::size_of::<Geometry>() as u64, std::mem::align_of::<Geometry>() as u64);
        // SAFETY: in bounds and aligned (checked); no other process reads it before the
        // creator stores READY with release ordering.
        unsafe { std::ptr::write_volatile(self.map.as_mut_ptr() as *mut Geometry, *geometry) }
    }

    /// The bytes at `offset..offset+len`.
    ///
    /// Data buffers are handed from peer to peer by the request protocol: at any moment
    /// exactly one party (the request's holder) may touch a request's data window, and the
    /// ring operations that pass a request on are release/acquire fences. The crate hands
    /// out these slices only to the holder of a request, for as long as it holds it.
    pub(crate) fn bytes(&self, offset: u64, len: u64) -> &[u8] {
        self.check(offset, len, 1);
        // SAFETY: in bounds (checked); see above for exclusivity by protocol.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(offset as usize), len as usize) }
    }

    /// The bytes at `offset..offset+len`, writable. Callers tie the lifetime to a `&mut`
    /// borrow of the request token that grants the window, so no two live slices of one
    /// process alias.
    #[allow(clippy::mut_from_ref)]
    pub(crate) fn bytes_mut(&self, offset: u64, len: u64) -> &mut [u8] {
        self.check(offset, len, 1);
        // SAFETY: in bounds (checked); exclusivity by the request protocol (see `bytes`)
        // and by the caller's `&mut` borrow of the token.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add(offset as usize), len as usize) }
    }
}
