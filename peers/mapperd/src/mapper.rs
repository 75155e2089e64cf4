//! The mapper peer: keeps volume maps, answers MAPR/MAPW/DISCARD with extents, performs
//! copy-on-write, and runs the management ops (create, clone, snapshot, delete, rename,
//! resize, info, list, open, close, lock, unlock).
//!
//! Concurrency: a volume's cached map is behind one mutex. Copies (the slow part of a
//! copy-on-write) run outside it; a block being copied is marked in-progress and other
//! writers of that block wait on a condvar for the single copy. Map objects are written
//! with the mutex held, so map updates of a volume are serialized.
//!
//! Crash safety (SPEC §4.3): copy the data object (durably), then write the chunk, then
//! (for a new chunk object) the header, then answer. A crash in between leaves at most an
//! unreferenced object, never an entry pointing at missing data. A snapshot bumps the
//! volume's epoch *before* writing the snapshot header, so no crash can leave a snapshot
//! whose blocks the volume still writes in place.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use archip_map::{
    chunk_object_name, data_object_name, map_object_name, Chunk, Class, Entry, MapHeader, VolumeName,
    DEFAULT_BLOCK_SHIFT,
};
use archip_peer::{Peer, PeerIo};
use archip_proto::{encode_extents, CreateOptions, Extent, VolumeInfo};
use xseg::{flags, Incoming, Op, Port};

use crate::blockers::Blockers;
use crate::error::{MapperError, Result};

/// Most map chunks cached per open volume (a chunk maps 1024 blocks and takes ≈ 16 KiB in
/// memory): ≈ 1 MiB per volume whatever its size. Chunks are written through, so any of
/// them can be dropped and read again.
pub const CHUNKS_CACHED_PER_VOLUME: usize = 64;

/// Caches chunk `index` of a volume, dropping another cached chunk if the volume is at
/// [`CHUNKS_CACHED_PER_VOLUME`].
fn cache_chunk(st: &mut VolumeState, index: u32, chunk: Chunk) {
    if st.chunks.len() >= CHUNKS_CACHED_PER_VOLUME && !st.chunks.contains_key(&index) {
        if let Some(&victim) = st.chunks.keys().find(|&&k| k != index) {
            st.chunks.remove(&victim);
        }
    }
    st.chunks.insert(index, chunk);
}

/// Longest wait asked of the blocker in one ACQUIRE while waiting for a lock.
const LOCK_WAIT_SLICE: Duration = Duration::from_secs(2);
/// Pause before asking again when the blocker could not wait (no waiting slot free).
const LOCK_RETRY_PAUSE: Duration = Duration::from_millis(50);

pub struct MapperConfig {
    /// This host's identity: the owner recorded in the locks it takes.
    pub host_id: String,
    /// How long a lock is trusted without re-reading it (filed fencing, SPEC §4.4).
    pub lease: Duration,
    /// How long a write waits for another host's lock to be released.
    pub lock_wait: Duration,
    /// Most volumes this host keeps open at once (each costs up to ≈ 1.3 MiB of cached map:
    /// the bound on mapperd's memory). Opening one more fails with ENFILE; reading one more
    /// is served uncached, as for a volume another host holds.
    pub max_open_volumes: usize,
}

pub struct Mapper {
    blockers: Blockers,
    config: MapperConfig,
    /// Volumes this host has open (holds the lock of), by name.
    open: Mutex<HashMap<String, Arc<Volume>>>,
}

struct Volume {
    state: Mutex<VolumeState>,
    copied: Condvar,
}

struct VolumeState {
    header: MapHeader,
    chunks: HashMap<u32, Chunk>,
    /// The lock generation this host holds (None: read-only view of another host's volume).
    generation: Option<u64>,
    confirmed_at: Instant,
    fenced: bool,
    copying: HashSet<u64>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn volume_name(name: &str) -> Result<VolumeName> {
    VolumeName::new(name).map_err(|e| MapperError::Invalid(e.to_string()))
}

fn lock_name(name: &str) -> String {
    format!("lock:{name}")
}

fn fence_name(name: &str) -> String {
    format!("fence:{name}")
}

fn new_volume_id() -> u64 {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut bytes);
    }
    let id = u64::from_le_bytes(bytes);
    // Never 0 (reserved); mix in the clock in case /dev/urandom was unreadable.
    (id ^ now_ms().rotate_left(17)) | 1
}

impl Mapper {
    pub fn new(blockers: Blockers, config: MapperConfig) -> Mapper {
        Mapper { blockers, config, open: Mutex::new(HashMap::new()) }
    }

    fn map_port(&self) -> u32 {
        self.blockers.map_port
    }

    fn read_header(&self, name: &str) -> Result<Option<MapHeader>> {
        let object = map_object_name(&volume_name(name)?);
        match self.blockers.read_all(self.map_port(), &object)? {
            None => Ok(None),
            Some(bytes) => {
                let header = MapHeader::decode(&bytes)
                    .map_err(|e| MapperError::Corrupt(name.into(), e.to_string()))?;
                if header.name().as_str() != name {
                    return Err(MapperError::Corrupt(name.into(), format!("header names {}", header.name())));
                }
                Ok((!header.is_deleted()).then_some(header))
            }
        }
    }

    fn existing_header(&self, name: &str) -> Result<MapHeader> {
        self.read_header(name)?.ok_or_else(|| MapperError::NotFound(name.into()))
    }

    fn write_header(&self, header: &MapHeader) -> Result<()> {
        self.blockers.write_full(self.map_port(), &header.object_name(), &header.encode())
    }

    /// Stores the header of a new volume or snapshot, refusing a name in use. One durable
    /// exclusive create when the store can (no lock round trips); otherwise, or over a
    /// tombstone, under the name's lock.
    fn create_header(&self, header: &MapHeader) -> Result<()> {
        let name = header.name().as_str();
        match self.blockers.create_exclusive(self.map_port(), &header.object_name(), &header.encode()) {
            Ok(()) => Ok(()),
            Err(e) if e.errno() == libc::EEXIST || e.errno() == libc::EOPNOTSUPP => {
                self.with_lock(name, || {
                    if self.read_header(name)?.is_some() {
                        return Err(MapperError::Exists(name.into()));
                    }
                    self.write_header(header)
                })
            }
            Err(e) => Err(e),
        }
    }

    fn lock_owner(&self) -> &str {
        &self.config.host_id
    }

    /// Takes a volume's lock once (idempotent for this host).
    fn try_lock(&self, name: &str) -> Result<u64> {
        self.blockers.acquire(&lock_name(name), self.lock_owner(), Duration::ZERO)
    }

    /// Takes a volume's lock, waiting up to `lock_wait` for another host to release it
    /// (how live migration hands a volume over). The blocker waits in slices and is woken by
    /// the release (RADOS watch/notify); a blocker with no waiting slot free answers at once,
    /// and then this thread sleeps before asking again. After a forced break, waits out the
    /// lease so the broken owner has stopped writing before this host starts.
    fn lock_waiting(&self, name: &str) -> Result<u64> {
        let deadline = Instant::now() + self.config.lock_wait;
        // Each slice is well within the blocker call's own timeout.
        let slice_max = LOCK_WAIT_SLICE.min(self.blockers.request_timeout / 2);
        let generation = loop {
            let slice = deadline.saturating_duration_since(Instant::now()).min(slice_max);
            let asked = Instant::now();
            match self.blockers.acquire(&lock_name(name), self.lock_owner(), slice) {
                Ok(generation) => break generation,
                Err(MapperError::Busy { .. }) if Instant::now() < deadline => {
                    if asked.elapsed() < LOCK_RETRY_PAUSE {
                        std::thread::sleep(LOCK_RETRY_PAUSE);
                    }
                }
                Err(e) => return Err(e),
            }
        };
        if let Some(bytes) = self.blockers.read_all(self.map_port(), &fence_name(name))? {
            let broken_at: u64 = String::from_utf8_lossy(&bytes).trim().parse().unwrap_or(0);
            let safe_at = broken_at + self.config.lease.as_millis() as u64;
            let now = now_ms();
            if safe_at > now {
                std::thread::sleep(Duration::from_millis(
                    (safe_at - now).min(self.config.lease.as_millis() as u64),
                ));
            }
            self.blockers.delete(self.map_port(), &fence_name(name))?;
        }
        Ok(generation)
    }

    /// The open volume `name`, opening it (taking the lock, waiting if `wait`) if needed.
    fn open_volume(&self, name: &str, wait: bool) -> Result<Arc<Volume>> {
        if let Some(v) = self.open.lock().expect("poisoned").get(name) {
            return Ok(v.clone());
        }
        self.check_open_room(name)?;
        let header = self.existing_header(name)?;
        let generation = if header.is_snapshot() {
            None
        } else if wait {
            Some(self.lock_waiting(name)?)
        } else {
            Some(self.try_lock(name)?)
        };
        // Re-read under the lock: another host may have changed it before handing over.
        let header = if generation.is_some() { self.existing_header(name)? } else { header };
        let volume = Arc::new(Volume {
            state: Mutex::new(VolumeState {
                header,
                chunks: HashMap::new(),
                generation,
                confirmed_at: Instant::now(),
                fenced: false,
                copying: HashSet::new(),
            }),
            copied: Condvar::new(),
        });
        let mut open = self.open.lock().expect("poisoned");
        if !open.contains_key(name) && open.len() >= self.config.max_open_volumes {
            // Others filled the table while this one took its lock: give the lock back.
            drop(open);
            if generation.is_some() {
                self.blockers.release(&lock_name(name), self.lock_owner(), false)?;
            }
            return Err(self.too_many_open(name));
        }
        Ok(open.entry(name.to_string()).or_insert(volume).clone())
    }

    fn too_many_open(&self, name: &str) -> MapperError {
        MapperError::TooManyOpen { name: name.into(), max: self.config.max_open_volumes }
    }

    /// Fails when this host already has `max_open_volumes` open (checked before taking a
    /// lock, and again after, since other threads open volumes meanwhile).
    fn check_open_room(&self, name: &str) -> Result<()> {
        if self.open.lock().expect("poisoned").len() >= self.config.max_open_volumes {
            return Err(self.too_many_open(name));
        }
        Ok(())
    }

    /// A volume for reading: open by this host if it can take the lock; otherwise (another
    /// host holds it) a fresh, uncached view (SPEC §4.4: reads are served, nothing cached).
    fn volume_for_read(&self, name: &str) -> Result<Arc<Volume>> {
        match self.open_volume(name, false) {
            Err(MapperError::Busy { .. } | MapperError::TooManyOpen { .. }) => {
                let header = self.existing_header(name)?;
                Ok(Arc::new(Volume {
                    state: Mutex::new(VolumeState {
                        header,
                        chunks: HashMap::new(),
                        generation: None,
                        confirmed_at: Instant::now(),
                        fenced: false,
                        copying: HashSet::new(),
                    }),
                    copied: Condvar::new(),
                }))
            }
            other => other,
        }
    }

    /// Confirms this host still holds the volume's lock (at most every half lease).
    fn confirm_lock(&self, name: &str, st: &mut VolumeState, force: bool) -> Result<()> {
        if st.fenced {
            return Err(MapperError::Fenced(name.into()));
        }
        let Some(generation) = st.generation else {
            return Err(MapperError::Busy { what: name.into(), holder: "another host".into() });
        };
        if !force && st.confirmed_at.elapsed() < self.config.lease / 2 {
            return Ok(());
        }
        match self.blockers.lock_holder(&lock_name(name))? {
            Some((owner, g)) if owner == self.lock_owner() && g == generation => {
                st.confirmed_at = Instant::now();
                Ok(())
            }
            _ => {
                st.fenced = true;
                tracing::error!(volume = name, "this host's lock was broken: the volume is fenced");
                Err(MapperError::Fenced(name.into()))
            }
        }
    }

    fn chunk<'s>(&self, name: &str, st: &'s mut VolumeState, index: u32) -> Result<Option<&'s mut Chunk>> {
        let chunk_ref =
            st.header.chunk_ref(index).ok_or_else(|| MapperError::Invalid("chunk past the end".into()))?;
        if !chunk_ref.is_present() {
            return Ok(None);
        }
        if !st.chunks.contains_key(&index) {
            let object = st.header.chunk_object_name(index).expect("present ref");
            let bytes = self.blockers.read_all(self.map_port(), &object)?.ok_or_else(|| {
                MapperError::Corrupt(name.into(), format!("chunk object {object} is missing"))
            })?;
            let chunk = Chunk::decode(&bytes)
                .map_err(|e| MapperError::Corrupt(name.into(), format!("{object}: {e}")))?;
            st.header
                .check_chunk(index, &chunk)
                .map_err(|e| MapperError::Corrupt(name.into(), format!("{object}: {e}")))?;
            cache_chunk(st, index, chunk);
        }
        Ok(st.chunks.get_mut(&index))
    }

    fn entry(&self, name: &str, st: &mut VolumeState, block: u64) -> Result<Entry> {
        let (index, slot) = st
            .header
            .chunk_of_block(block)
            .ok_or_else(|| MapperError::Invalid("block past the end".into()))?;
        Ok(self.chunk(name, st, index)?.and_then(|c| c.entry(slot)).unwrap_or(Entry::Zero))
    }

    /// The object holding `block` under `entry`, if any.
    fn object_of(
        &self,
        name: &str,
        st: &mut VolumeState,
        block: u64,
        entry: Entry,
    ) -> Result<Option<String>> {
        Ok(match entry {
            Entry::Zero => None,
            Entry::Object { volume_id, epoch } => Some(data_object_name(volume_id, epoch, block)),
            Entry::Content { .. } => {
                let (index, slot) = st.header.chunk_of_block(block).expect("in range");
                let chunk = self.chunk(name, st, index)?.expect("content entries live in chunks");
                Some(chunk.content_digest(slot).expect("checked at decode").object_name())
            }
        })
    }

    /// Stores a changed entry: rewrites the chunk (as a new own chunk object if it was
    /// shared or absent), then the header if the chunk ref changed.
    fn set_entry(&self, name: &str, st: &mut VolumeState, block: u64, entry: Entry) -> Result<()> {
        let (index, slot) = st.header.chunk_of_block(block).expect("in range");
        let own_ref = st.header.own_chunk_ref();
        let own_chunk = st.header.is_own_chunk(index);
        let volume_id = st.header.volume_id();
        let entries = st.header.chunk_entries(index).expect("in range");
        let mut chunk = match self.chunk(name, st, index)? {
            Some(c) => c.clone(),
            None => Chunk::new_zero(volume_id, index, entries)?,
        };
        // A chunk stored before the volume grew (or shared from a smaller snapshot by a
        // larger clone) holds fewer entries than the volume has blocks there; the missing
        // ones read as ZERO. Extend it before setting an entry past its end.
        if chunk.entry_count() < entries {
            chunk.resize(entries)?;
        }
        if !own_chunk {
            chunk.set_volume_id(volume_id)?;
        }
        chunk.set_entry(slot, entry)?;
        let object = chunk_object_name(volume_id, st.header.epoch(), index);
        fail::fail_point!("mapper-map-before-chunk-write", |_| std::process::abort());
        self.blockers.write_full(self.map_port(), &object, &chunk.encode())?;
        fail::fail_point!("mapper-map-after-chunk-write", |_| std::process::abort());
        cache_chunk(st, index, chunk);
        if !own_chunk {
            let mut header = st.header.clone();
            header.set_chunk_ref(index, own_ref)?;
            self.write_header(&header)?;
            st.header = header;
        }
        Ok(())
    }

    fn check_range(st: &VolumeState, offset: u64, size: u64) -> Result<()> {
        let end = offset.checked_add(size).ok_or_else(|| MapperError::Invalid("range overflows".into()))?;
        if size == 0 || end > st.header.size_bytes() {
            return Err(MapperError::Invalid(format!(
                "range {offset}+{size} is outside the volume ({} bytes)",
                st.header.size_bytes()
            )));
        }
        Ok(())
    }

    /// The blocks of `[offset, offset+size)` as (block, offset in block, length).
    /// The pieces of `[offset, offset + size)` per block of `bs` bytes: (block, offset in
    /// the block, length).
    fn pieces(bs: u64, offset: u64, size: u64) -> impl Iterator<Item = (u64, u64, u64)> {
        let end = offset + size;
        (offset / bs..end.div_ceil(bs)).map(move |block| {
            let start = (block * bs).max(offset);
            let stop = ((block + 1) * bs).min(end);
            (block, start - block * bs, stop - start)
        })
    }

    /// The extents of a read, and whether they may be cached (this host holds the volume and
    /// is not fenced, or it is a snapshot).
    fn map_read(&self, name: &str, offset: u64, size: u64, out: &mut [u8]) -> Result<(u64, bool)> {
        let volume = self.volume_for_read(name)?;
        let mut st = volume.state.lock().expect("poisoned");
        Self::check_range(&st, offset, size)?;
        let mut extents: Vec<(Option<String>, u64, u64)> = Vec::new();
        for (block, at, len) in Self::pieces(st.header.block_size(), offset, size) {
            let entry = self.entry(name, &mut st, block)?;
            extents.push((self.object_of(name, &mut st, block, entry)?, at, len));
        }
        let cacheable = st.header.is_snapshot() || (st.generation.is_some() && !st.fenced);
        Ok((encode(&extents, out)?, cacheable))
    }

    /// Makes `block` writable by the volume (copy-on-write), returning its object.
    fn make_own<'v>(
        &self,
        name: &str,
        volume: &'v Volume,
        mut st: MutexGuard<'v, VolumeState>,
        block: u64,
    ) -> Result<(String, MutexGuard<'v, VolumeState>)> {
        loop {
            let entry = self.entry(name, &mut st, block)?;
            if st.header.classify(&entry) == Class::Own {
                let own = data_object_name(st.header.volume_id(), st.header.epoch(), block);
                return Ok((own, st));
            }
            if st.copying.contains(&block) {
                st = volume.copied.wait(st).expect("poisoned");
                continue;
            }
            st.copying.insert(block);
            let source = self.object_of(name, &mut st, block, entry)?;
            let own = data_object_name(st.header.volume_id(), st.header.epoch(), block);
            let own_entry = st.header.own_entry();
            drop(st);
            let copied = match &source {
                Some(src) => self.blockers.copy(src, &own),
                None => self.blockers.write_full(self.blockers.data_port, &own, &[]),
            };
            fail::fail_point!("mapper-cow-after-copy", |_| std::process::abort());
            let mut relocked = volume.state.lock().expect("poisoned");
            let stored = copied.and_then(|()| self.set_entry(name, &mut relocked, block, own_entry));
            fail::fail_point!("mapper-cow-after-map-update", |_| std::process::abort());
            relocked.copying.remove(&block);
            volume.copied.notify_all();
            stored?;
            st = relocked;
        }
    }

    fn writable_volume(&self, name: &str) -> Result<Arc<Volume>> {
        let volume = self.open_volume(name, true)?;
        {
            let mut st = volume.state.lock().expect("poisoned");
            if st.header.is_snapshot() {
                return Err(MapperError::ReadOnly(name.into()));
            }
            self.confirm_lock(name, &mut st, false)?;
        }
        Ok(volume)
    }

    /// The extents of a write (every block made the volume's own first), and for how long
    /// the answer may be used for writes without asking again: what is left of this host's
    /// lock confirmation (half a lease from the last time the lock was read).
    fn map_write(&self, name: &str, offset: u64, size: u64, out: &mut [u8]) -> Result<(u64, Duration)> {
        let volume = self.writable_volume(name)?;
        let mut st = volume.state.lock().expect("poisoned");
        Self::check_range(&st, offset, size)?;
        let mut extents = Vec::new();
        for (block, at, len) in Self::pieces(st.header.block_size(), offset, size) {
            let (object, relocked) = self.make_own(name, &volume, st, block)?;
            st = relocked;
            extents.push((Some(object), at, len));
        }
        let valid = if st.fenced || st.generation.is_none() {
            Duration::ZERO
        } else {
            (self.config.lease / 2).saturating_sub(st.confirmed_at.elapsed())
        };
        Ok((encode(&extents, out)?, valid))
    }

    /// Whole blocks become zero blocks (own objects deleted after the map no longer names
    /// them); partial pieces that are not zero are made own and returned for zeroing.
    fn discard(&self, name: &str, offset: u64, size: u64, out: &mut [u8]) -> Result<u64> {
        let volume = self.writable_volume(name)?;
        let mut st = volume.state.lock().expect("poisoned");
        Self::check_range(&st, offset, size)?;
        let block_size = st.header.block_size();
        let volume_size = st.header.size_bytes();
        let mut extents = Vec::new();
        for (block, at, len) in Self::pieces(st.header.block_size(), offset, size) {
            let entry = self.entry(name, &mut st, block)?;
            if entry == Entry::Zero {
                continue;
            }
            let whole = at == 0 && (len == block_size || block * block_size + len == volume_size);
            if whole {
                let own = st.header.classify(&entry) == Class::Own;
                let object = self.object_of(name, &mut st, block, entry)?;
                self.set_entry(name, &mut st, block, Entry::Zero)?;
                if let (true, Some(object)) = (own, object) {
                    self.blockers.delete(self.blockers.data_port, &object)?;
                }
            } else {
                let (object, relocked) = self.make_own(name, &volume, st, block)?;
                st = relocked;
                extents.push((Some(object), at, len));
            }
        }
        encode(&extents, out)
    }

    fn info(&self, name: &str) -> Result<VolumeInfo> {
        let header = match self.open.lock().expect("poisoned").get(name) {
            Some(v) => v.state.lock().expect("poisoned").header.clone(),
            None => self.existing_header(name)?,
        };
        let locked_by = if header.is_snapshot() {
            None
        } else {
            self.blockers.lock_holder(&lock_name(name))?.map(|(owner, _)| owner)
        };
        Ok(VolumeInfo {
            name: name.to_string(),
            size_bytes: header.size_bytes(),
            kind: if header.is_snapshot() { "snapshot" } else { "volume" }.into(),
            parent: header.parent().map(|p| p.as_str().to_string()),
            locked_by,
            block_size_bytes: header.block_size(),
            epoch: header.epoch(),
            volume_id: format!("{:016x}", header.volume_id()),
            created_unix_ms: header.created_unix_ms(),
        })
    }

    /// Runs `f` holding the volume's lock: this host's if it has the volume open, else
    /// taken once for the operation (EBUSY if another host holds it) and released after.
    fn with_lock<T>(&self, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let held = self.open.lock().expect("poisoned").contains_key(name);
        if held {
            return f();
        }
        let generation = self.try_lock(name)?;
        let result = f();
        let _ = generation;
        if let Err(e) = self.blockers.release(&lock_name(name), self.lock_owner(), false) {
            tracing::warn!(volume = name, error = %e, "releasing a lock taken for one operation");
        }
        result
    }

    fn create(&self, name: &str, size: u64, options: &CreateOptions) -> Result<()> {
        let vname = volume_name(name)?;
        if size == 0 {
            return Err(MapperError::Invalid("a volume needs a size above 0".into()));
        }
        let shift = options.block_shift.unwrap_or(DEFAULT_BLOCK_SHIFT);
        let header = MapHeader::new_volume(vname, new_volume_id(), size, shift, now_ms())?;
        self.create_header(&header)
    }

    fn clone_volume(&self, name: &str, snapshot: &str, size: u64) -> Result<()> {
        let vname = volume_name(name)?;
        let snap = self.existing_header(snapshot)?;
        if !snap.is_snapshot() {
            return Err(MapperError::Invalid(format!(
                "{snapshot} is not a snapshot; only snapshots can be cloned"
            )));
        }
        let size = if size == 0 { snap.size_bytes() } else { size };
        let header = MapHeader::clone_from_snapshot(&snap, vname, new_volume_id(), size, now_ms())?;
        self.create_header(&header)
    }

    fn snapshot(&self, name: &str, snap_name: &str) -> Result<()> {
        let snap_vname = volume_name(snap_name)?;
        volume_name(name)?;
        self.with_lock(name, || {
            if self.read_header(snap_name)?.is_some() {
                return Err(MapperError::Exists(snap_name.into()));
            }
            let open = self.open.lock().expect("poisoned").get(name).cloned();
            let apply = |st: &mut VolumeState| -> Result<()> {
                if st.header.is_snapshot() {
                    return Err(MapperError::Invalid(format!("{name} is a snapshot; snapshot a volume")));
                }
                let snap = st.header.snapshot_of(snap_vname.clone(), now_ms())?;
                let mut bumped = st.header.clone();
                bumped.bump_epoch()?;
                // Epoch first: from here on the volume copies before writing any block.
                self.write_header(&bumped)?;
                fail::fail_point!("mapper-snapshot-after-epoch-bump", |_| std::process::abort());
                st.header = bumped;
                self.create_header(&snap)
            };
            match open {
                Some(volume) => {
                    let mut st = volume.state.lock().expect("poisoned");
                    // A snapshot read (or refused a write) here is cached without a lock:
                    // it is refused as a snapshot (EINVAL), not as locked elsewhere.
                    if !st.header.is_snapshot() {
                        self.confirm_lock(name, &mut st, true)?;
                    }
                    apply(&mut st)
                }
                None => {
                    let header = self.existing_header(name)?;
                    let mut st = VolumeState {
                        header,
                        chunks: HashMap::new(),
                        generation: None,
                        confirmed_at: Instant::now(),
                        fenced: false,
                        copying: HashSet::new(),
                    };
                    apply(&mut st)
                }
            }
        })
    }

    fn delete(&self, name: &str) -> Result<()> {
        volume_name(name)?;
        // Open here: the lock is this host's and stays taken past `with_lock`; release it
        // once the volume is gone, so the name is free for every host.
        let was_open = self
            .open
            .lock()
            .expect("poisoned")
            .get(name)
            .is_some_and(|v| v.state.lock().expect("poisoned").generation.is_some());
        self.with_lock(name, || {
            let header = self.existing_header(name)?;
            let mut tombstone = header.clone();
            tombstone.mark_deleted();
            // The tombstone first: a crash after it leaves only unreferenced objects.
            self.write_header(&tombstone)?;
            fail::fail_point!("mapper-delete-after-tombstone", |_| std::process::abort());
            self.open.lock().expect("poisoned").remove(name);
            if !header.is_snapshot() {
                let mut st = VolumeState {
                    header: header.clone(),
                    chunks: HashMap::new(),
                    generation: None,
                    confirmed_at: Instant::now(),
                    fenced: false,
                    copying: HashSet::new(),
                };
                for block in 0..header.block_count() {
                    let entry = self.entry(name, &mut st, block)?;
                    if header.classify(&entry) == Class::Own {
                        self.blockers.delete(
                            self.blockers.data_port,
                            &data_object_name(header.volume_id(), header.epoch(), block),
                        )?;
                    }
                }
                for index in 0..header.nr_chunks() {
                    if header.is_own_chunk(index) {
                        self.blockers.delete(
                            self.map_port(),
                            &chunk_object_name(header.volume_id(), header.epoch(), index),
                        )?;
                    }
                }
            }
            Ok(())
        })?;
        if was_open {
            self.blockers.release(&lock_name(name), self.lock_owner(), false)?;
        }
        Ok(())
    }

    fn rename(&self, name: &str, new_name: &str) -> Result<()> {
        let new_vname = volume_name(new_name)?;
        volume_name(name)?;
        if self.open.lock().expect("poisoned").contains_key(name) {
            return Err(MapperError::Busy {
                what: name.into(),
                holder: format!("{} (open here; close it first)", self.lock_owner()),
            });
        }
        self.with_lock(name, || {
            self.with_lock(new_name, || {
                let header = self.existing_header(name)?;
                if self.read_header(new_name)?.is_some() {
                    return Err(MapperError::Exists(new_name.into()));
                }
                let mut renamed = header.clone();
                renamed.set_name(new_vname.clone());
                self.write_header(&renamed)?;
                let mut tombstone = header;
                tombstone.mark_deleted();
                self.write_header(&tombstone)
            })
        })
    }

    fn resize(&self, name: &str, size: u64, allow_shrink: bool) -> Result<()> {
        volume_name(name)?;
        if size == 0 {
            return Err(MapperError::Invalid("a volume needs a size above 0".into()));
        }
        self.with_lock(name, || {
            let open = self.open.lock().expect("poisoned").get(name).cloned();
            let volume = match open {
                Some(v) => v,
                None => Arc::new(Volume {
                    state: Mutex::new(VolumeState {
                        header: self.existing_header(name)?,
                        chunks: HashMap::new(),
                        generation: None,
                        confirmed_at: Instant::now(),
                        fenced: false,
                        copying: HashSet::new(),
                    }),
                    copied: Condvar::new(),
                }),
            };
            let mut st = volume.state.lock().expect("poisoned");
            if st.header.is_snapshot() {
                return Err(MapperError::ReadOnly(name.into()));
            }
            let old = st.header.size_bytes();
            if size < old && !allow_shrink {
                return Err(MapperError::Invalid(format!(
                    "{size} bytes is smaller than {name} ({old} bytes); shrinking needs --allow-shrink"
                )));
            }
            if size < old {
                // Zero what lies past the new end, so growing again shows zeros.
                let block_size = st.header.block_size();
                let first_gone = size.div_ceil(block_size);
                if size % block_size != 0 {
                    let block = size / block_size;
                    if self.entry(name, &mut st, block)? != Entry::Zero {
                        let (object, relocked) = self.make_own(name, &volume, st, block)?;
                        st = relocked;
                        let at = size % block_size;
                        self.blockers.zero(&object, at, block_size - at)?;
                    }
                }
                for block in first_gone..st.header.block_count() {
                    if self.entry(name, &mut st, block)? != Entry::Zero {
                        self.set_entry(name, &mut st, block, Entry::Zero)?;
                    }
                }
            }
            let mut header = st.header.clone();
            if let Some(index) = header.resize(size)? {
                // The last chunk was cut short: store it truncated under the new header.
                let entries = header.chunk_entries(index).expect("in range");
                let mut chunk = self.chunk(name, &mut st, index)?.expect("present").clone();
                chunk.resize(entries)?;
                chunk.set_volume_id(header.volume_id())?;
                let object = chunk_object_name(header.volume_id(), header.epoch(), index);
                self.blockers.write_full(self.map_port(), &object, &chunk.encode())?;
                header.set_chunk_ref(index, header.own_chunk_ref())?;
                cache_chunk(&mut st, index, chunk);
            }
            self.write_header(&header)?;
            st.header = header;
            Ok(())
        })
    }

    fn list(&self) -> Result<Vec<VolumeInfo>> {
        let mut infos = Vec::new();
        for object in self.blockers.list("map:")? {
            let name = object.trim_start_matches("map:");
            match self.info(name) {
                Ok(info) => infos.push(info),
                Err(MapperError::NotFound(_)) => {} // a tombstone
                Err(e) => return Err(e),
            }
        }
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(infos)
    }

    fn close(&self, name: &str) -> Result<()> {
        volume_name(name)?;
        let removed = self.open.lock().expect("poisoned").remove(name);
        match removed {
            Some(volume) => {
                let st = volume.state.lock().expect("poisoned");
                if st.generation.is_some() && !st.fenced {
                    self.blockers.release(&lock_name(name), self.lock_owner(), false)?;
                }
                Ok(())
            }
            None => {
                // Not open in this process (e.g. the mapper restarted since): the lock in the
                // store may still be this host's, and closing releases it.
                self.existing_header(name)?;
                match self.blockers.lock_holder(&lock_name(name))? {
                    Some((owner, _)) if owner == self.lock_owner() => {
                        self.blockers.release(&lock_name(name), self.lock_owner(), false)
                    }
                    _ => Ok(()),
                }
            }
        }
    }

    fn unlock(&self, name: &str, force: bool) -> Result<()> {
        volume_name(name)?;
        let holder = self.blockers.lock_holder(&lock_name(name))?;
        match holder {
            None => Err(MapperError::Invalid(format!("{name} is not locked"))),
            Some((owner, _)) if owner == self.lock_owner() => {
                self.open.lock().expect("poisoned").remove(name);
                self.blockers.release(&lock_name(name), self.lock_owner(), false)
            }
            Some((owner, _)) if !force => Err(MapperError::Busy { what: name.into(), holder: owner }),
            Some(_) => {
                // Record the break, so whoever takes the lock next waits out the lease.
                self.blockers.write_full(
                    self.map_port(),
                    &fence_name(name),
                    now_ms().to_string().as_bytes(),
                )?;
                self.blockers.release(&lock_name(name), self.lock_owner(), true)
            }
        }
    }

    /// Serves one request; `Ok(serviced)` or the error.
    fn serve(&self, port: &Port, req: &mut Incoming) -> Result<u64> {
        let view = port.view(req);
        let op = view.op().ok_or_else(|| MapperError::Invalid(format!("unknown op {}", view.op_raw())))?;
        let (offset, size, flag_word) = (view.offset(), view.size(), view.flags());
        let target = view
            .target()
            .and_then(|t| t.as_str().map(str::to_string))
            .ok_or_else(|| MapperError::Invalid("target is not a name".into()))?;
        let window = port.data_mut(req).map_err(|e| MapperError::Invalid(e.to_string()))?;
        // Name payloads fill the whole data window (its length is the name's).
        let payload = |window: &[u8]| -> Result<String> {
            String::from_utf8(window.to_vec())
                .map_err(|_| MapperError::Invalid("payload is not UTF-8".into()))
        };
        let json_answer = |window: &mut [u8], json: String| -> Result<u64> {
            if json.len() > window.len() {
                return Err(MapperError::Invalid(format!(
                    "the answer ({} bytes) does not fit the data window",
                    json.len()
                )));
            }
            window[..json.len()].copy_from_slice(json.as_bytes());
            Ok(json.len() as u64)
        };
        match op {
            Op::Ping => Ok(0),
            Op::MapRead => {
                let (answer, cacheable) = self.map_read(&target, offset, size, window)?;
                if cacheable {
                    port.edit(req).set_flags(flag_word | archip_proto::MAPPING_CACHEABLE);
                }
                Ok(answer)
            }
            Op::MapWrite => {
                let (answer, valid) = self.map_write(&target, offset, size, window)?;
                if !valid.is_zero() {
                    port.edit(req)
                        .set_flags(flag_word | archip_proto::MAPPING_CACHEABLE)
                        .set_offset(valid.as_millis() as u64);
                }
                Ok(answer)
            }
            Op::Discard | Op::WriteZeroes => self.discard(&target, offset, size, window),
            Op::Create => {
                let text = payload(window)?;
                let text = text.trim();
                let options: CreateOptions = if text.is_empty() {
                    CreateOptions::default()
                } else {
                    serde_json::from_str(text)
                        .map_err(|e| MapperError::Invalid(format!("create options: {e}")))?
                };
                self.create(&target, size, &options).map(|()| 0)
            }
            Op::Clone => {
                let snapshot = payload(window)?;
                self.clone_volume(&target, &snapshot, size).map(|()| 0)
            }
            Op::Snapshot => {
                let snap = payload(window)?;
                self.snapshot(&target, &snap).map(|()| 0)
            }
            Op::Delete => self.delete(&target).map(|()| 0),
            Op::Rename => {
                let new_name = payload(window)?;
                self.rename(&target, &new_name).map(|()| 0)
            }
            Op::Resize => self.resize(&target, size, flag_word & flags::FORCE != 0).map(|()| 0),
            Op::Info => {
                let info = self.info(&target)?;
                let json = serde_json::to_string(&info).expect("serializable");
                if window.is_empty() {
                    return Ok(info.size_bytes);
                }
                json_answer(window, json)
            }
            Op::List => {
                let all = self.list()?;
                let skip = usize::try_from(offset).unwrap_or(usize::MAX);
                let mut page: Vec<VolumeInfo> = Vec::new();
                for info in all.into_iter().skip(skip) {
                    page.push(info);
                    if serde_json::to_string(&page).expect("serializable").len() > window.len() {
                        page.pop();
                        break;
                    }
                }
                json_answer(window, serde_json::to_string(&page).expect("serializable"))
            }
            Op::Open => self.open_volume(&target, false).map(|_| 0),
            Op::Close => self.close(&target).map(|()| 0),
            Op::Acquire => {
                volume_name(&target)?;
                self.existing_header(&target)?;
                self.try_lock(&target).map(|_| 0)
            }
            Op::Release => self.unlock(&target, flag_word & flags::FORCE != 0).map(|()| 0),
            other => Err(MapperError::Invalid(format!("the mapper does not serve {}", other.name()))),
        }
    }

    /// Re-confirms the locks of open volumes (so a fenced host notices without writing).
    fn confirm_all(&self) {
        let open: Vec<(String, Arc<Volume>)> =
            self.open.lock().expect("poisoned").iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (name, volume) in open {
            if let Ok(mut st) = volume.state.try_lock() {
                if st.generation.is_some() && st.confirmed_at.elapsed() >= self.config.lease / 2 {
                    let _ = self.confirm_lock(&name, &mut st, true);
                }
            }
        }
    }
}

fn encode(extents: &[(Option<String>, u64, u64)], out: &mut [u8]) -> Result<u64> {
    let list: Vec<Extent<'_>> = extents
        .iter()
        .map(|(o, at, len)| Extent { object: o.as_deref(), object_offset: *at, len: *len })
        .collect();
    encode_extents(&list, out).map(|n| n as u64).map_err(|e| MapperError::Overflow(e.to_string()))
}

impl Peer for Mapper {
    fn on_request(&self, io: &PeerIo<'_>, mut req: Incoming) {
        let result = self.serve(io.port, &mut req);
        if let Err(e) = &result {
            let view = io.port.view(&req);
            let op = view.op().map(Op::name).unwrap_or("?");
            match e.errno() {
                libc::ENOENT | libc::EEXIST | libc::EBUSY | libc::EINVAL | libc::EROFS => {
                    tracing::debug!(op, error = %e, "request refused")
                }
                _ => tracing::warn!(op, error = %e, "request failed"),
            }
        }
        io.respond(req, result.map_err(|e| e.errno()));
    }

    fn on_idle(&self, _io: &PeerIo<'_>) {
        self.confirm_all();
    }
}
