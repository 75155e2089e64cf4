//! The read-mapping cache: which object holds each block of the volumes this host writes,
//! so that a read whose blocks are all known needs no mapper round trip (SPEC §8's
//! "caching mappings in vlmcd").
//!
//! Wrong data is the one thing this cache must never cause, so it caches only what cannot
//! change behind its back, and forgets eagerly:
//!
//! * **Only volumes this host holds.** A map answer is kept only if the mapper said so: a
//!   MAPR answer flagged [`MAPPING_CACHEABLE`](archip_proto::MAPPING_CACHEABLE) (the mapper
//!   holds the volume's lock and is not fenced, or it is a snapshot), or a successful MAPW
//!   (it holds the lock). Every write, discard and management op of a held volume goes
//!   through this vlmcd. An unflagged MAPR answer, any other management op on the volume
//!   (CLOSE, RELEASE, SNAPSHOT, DELETE, RENAME, RESIZE, ...) and any mapper error for it
//!   forget the volume.
//! * **No answer older than a mutation.** Writes, discards and write-zeroes *mutate*: each
//!   one forgets the blocks of its range when it starts, and bumps the volume's sequence
//!   number when it starts and when it ends. A map answer is kept only if no mutation of
//!   the volume started or ended while it was being fetched (and, for a read's answer, none
//!   was in flight when it was asked): an answer that may predate a copy-on-write is
//!   dropped, not cached. A write's own MAPW answer is kept only when it was the volume's
//!   only mutation.
//! * **Bounded age.** A volume's entries are dropped every [`MAX_AGE`], so a host whose lock
//!   was broken (fenced; it learns so at its next write) serves a stale mapping for at most
//!   that long — the mapper's own map cache has the same exposure for half a lease.
//! * **Bounded size.** At most [`MAX_BLOCKS`] entries in all (about 100 bytes each) and
//!   [`MAX_VOLUMES`] volumes; past that, entries are dropped.
//!
//! A read served from the cache that finds its object gone (a discard raced it) is read
//! again through the mapper, as any read whose object vanished.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long a volume's cached mappings live.
pub const MAX_AGE: Duration = Duration::from_secs(2);
/// Most block entries cached, over all volumes.
pub const MAX_BLOCKS: usize = 256 * 1024;
/// Most volumes tracked at once.
pub const MAX_VOLUMES: usize = 4096;

/// One piece of a range: the object holding it (`None`: a zero block) and where in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub object: Option<String>,
    pub object_offset: u64,
    pub len: u64,
}

#[derive(Default)]
pub struct MapCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    volumes: HashMap<String, VolumeCache>,
    blocks: usize,
    /// The source of sequence numbers, for all volumes: a volume dropped and tracked again
    /// never reuses one, so a ticket taken before never matches after.
    clock: u64,
}

impl Inner {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// The cache of `name`, tracked from now on if it was not.
    fn track(&mut self, name: &str) -> &mut VolumeCache {
        if !self.volumes.contains_key(name) {
            make_room(self);
            let seq = self.tick();
            self.volumes.insert(name.to_string(), VolumeCache::new(seq));
        }
        self.volumes.get_mut(name).expect("tracked")
    }
}

struct VolumeCache {
    /// This host uses the volume (an OPEN, a MAPW or a cacheable MAPR answer): learn its
    /// geometry so its answers can be kept.
    wanted: bool,
    /// The volume's block size, once known (0: not yet).
    block_size: u64,
    /// The volume's size in bytes (known with the block size); reads past it go to the
    /// mapper, which refuses them.
    size_bytes: u64,
    /// Set from the clock when a mutation starts and when it ends, and when the volume is
    /// forgotten.
    seq: u64,
    /// Mutations in flight.
    mutating: u32,
    filled_since: Instant,
    blocks: HashMap<u64, Option<Arc<str>>>,
}

impl VolumeCache {
    fn new(seq: u64) -> VolumeCache {
        VolumeCache {
            wanted: false,
            block_size: 0,
            size_bytes: 0,
            seq,
            mutating: 0,
            filled_since: Instant::now(),
            blocks: HashMap::new(),
        }
    }

    fn idle(&self) -> bool {
        !self.wanted && self.mutating == 0 && self.blocks.is_empty()
    }
}

/// Taken before a read's map lookup; its answer is kept only if the volume did not change
/// meanwhile.
#[derive(Debug, Clone, Copy)]
pub struct ReadTicket {
    seq: u64,
}

/// A write, discard or write-zeroes in flight; ends when dropped.
pub struct Mutation<'a> {
    cache: &'a MapCache,
    name: &'a str,
    /// The volume's sequence number right after this mutation started.
    seq: u64,
}

impl Drop for Mutation<'_> {
    fn drop(&mut self) {
        let mut inner = self.cache.lock();
        let seq = inner.tick();
        if let Some(v) = inner.volumes.get_mut(self.name) {
            v.mutating -= 1;
            v.seq = seq;
            if v.idle() {
                inner.volumes.remove(self.name);
            }
        }
    }
}

/// A management op on a volume in flight: its mappings were forgotten when it started and
/// are forgotten again when it ends (dropped).
pub struct Forgetting<'a> {
    cache: &'a MapCache,
    name: &'a str,
}

impl Drop for Forgetting<'_> {
    fn drop(&mut self) {
        self.cache.forget(self.name);
    }
}

/// The blocks of `[offset, offset + size)` for `bs`-byte blocks: (block, offset in it, length).
fn pieces(bs: u64, offset: u64, size: u64) -> impl Iterator<Item = (u64, u64, u64)> {
    let end = offset.saturating_add(size);
    (offset / bs..end.div_ceil(bs)).map(move |block| {
        let start = (block * bs).max(offset);
        let stop = ((block + 1) * bs).min(end);
        (block, start - block * bs, stop - start)
    })
}

impl MapCache {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The pieces of a read, if every block of the range is cached.
    pub fn lookup(&self, name: &str, offset: u64, size: u64) -> Option<Vec<Piece>> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let v = inner.volumes.get_mut(name)?;
        if v.block_size == 0 || v.mutating > 0 || offset.checked_add(size)? > v.size_bytes {
            return None;
        }
        if v.filled_since.elapsed() >= MAX_AGE {
            inner.blocks -= v.blocks.len();
            v.blocks.clear();
            v.filled_since = Instant::now();
            return None;
        }
        pieces(v.block_size, offset, size)
            .map(|(block, at, len)| {
                let object = v.blocks.get(&block)?;
                Some(Piece { object: object.as_deref().map(str::to_string), object_offset: at, len })
            })
            .collect()
    }

    /// Whether `name` is in use here but its geometry is not known yet (ask the mapper).
    pub fn wants_geometry(&self, name: &str) -> bool {
        self.lock().volumes.get(name).is_some_and(|v| v.wanted && v.block_size == 0)
    }

    /// The volume's block size and size (from INFO; a RESIZE forgets them).
    pub fn set_geometry(&self, name: &str, block_size: u64, size_bytes: u64) {
        if let Some(v) = self.lock().volumes.get_mut(name) {
            if block_size.is_power_of_two() {
                v.block_size = block_size;
                v.size_bytes = size_bytes;
            }
        }
    }

    /// A ticket for a read's map lookup, if its answer may be kept.
    pub fn read_ticket(&self, name: &str) -> Option<ReadTicket> {
        let inner = self.lock();
        let v = inner.volumes.get(name)?;
        (v.block_size != 0 && v.mutating == 0).then_some(ReadTicket { seq: v.seq })
    }

    /// A MAPR answer for `[offset, ...)`: kept if the mapper flagged it cacheable and the
    /// volume did not change since the ticket was taken; an unflagged one means this host
    /// does not hold the volume, and everything cached for it is forgotten.
    pub fn keep_read(&self, name: &str, ticket: ReadTicket, cacheable: bool, offset: u64, pieces: &[Piece]) {
        if !cacheable {
            self.forget(name);
            return;
        }
        self.keep(name, offset, pieces, |v| v.seq == ticket.seq && v.mutating == 0);
    }

    /// Starts a mutation of `[offset, offset + size)`: forgets its blocks.
    pub fn mutation<'a>(&'a self, name: &'a str, offset: u64, size: u64) -> Mutation<'a> {
        let mut inner = self.lock();
        let seq = inner.tick();
        let v = inner.track(name);
        v.mutating += 1;
        v.seq = seq;
        let mut dropped = 0;
        if v.block_size != 0 {
            for (block, _, _) in pieces(v.block_size, offset, size) {
                dropped += usize::from(v.blocks.remove(&block).is_some());
            }
        } else {
            dropped = v.blocks.len();
            v.blocks.clear();
        }
        inner.blocks -= dropped;
        Mutation { cache: self, name, seq }
    }

    /// A MAPW succeeded: this host holds the volume. Keeps the answer if `mutation` was the
    /// volume's only change since it started.
    pub fn keep_write(&self, mutation: &Mutation<'_>, offset: u64, pieces: &[Piece]) {
        if let Some(v) = self.lock().volumes.get_mut(mutation.name) {
            v.wanted = true;
        }
        self.keep(mutation.name, offset, pieces, |v| v.seq == mutation.seq && v.mutating == 1);
    }

    /// This host uses `name` (an OPEN succeeded, or a MAPR answer was flagged cacheable):
    /// its geometry is worth learning.
    pub fn want(&self, name: &str) {
        self.lock().track(name).wanted = true;
    }

    /// Forgets `name` now and again when the returned guard drops: around a management op
    /// that changes the volume's map or lock.
    pub fn forgetting<'a>(&'a self, name: &'a str) -> Forgetting<'a> {
        self.forget(name);
        Forgetting { cache: self, name }
    }

    /// Forgets everything about `name` and stops caching it (a management op or a mapper
    /// error); answers in flight for it are not kept.
    pub fn forget(&self, name: &str) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let seq = inner.tick();
        if let Some(v) = inner.volumes.get_mut(name) {
            inner.blocks -= v.blocks.len();
            v.blocks.clear();
            v.wanted = false;
            v.block_size = 0;
            v.size_bytes = 0;
            v.seq = seq;
            if v.idle() {
                inner.volumes.remove(name);
            }
        }
    }

    fn keep(&self, name: &str, offset: u64, pieces: &[Piece], unchanged: impl Fn(&VolumeCache) -> bool) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some(v) = inner.volumes.get_mut(name) else { return };
        if v.block_size == 0 || !unchanged(v) {
            return;
        }
        let bs = v.block_size;
        // Each piece lies in one block at its offset in that block's object; anything else
        // is an answer this cache does not understand, and nothing of it is kept.
        let mut at = offset;
        let mut found = Vec::with_capacity(pieces.len());
        for p in pieces {
            if p.object_offset >= bs || at % bs != p.object_offset || p.object_offset + p.len > bs {
                return;
            }
            found.push((at / bs, p.object.as_deref().map(Arc::<str>::from)));
            at += p.len;
        }
        if inner.blocks + found.len() > MAX_BLOCKS {
            inner.blocks -= v.blocks.len();
            v.blocks.clear();
            if inner.blocks + found.len() > MAX_BLOCKS {
                return;
            }
        }
        if v.blocks.is_empty() {
            v.filled_since = Instant::now();
        }
        for (block, object) in found {
            if v.blocks.insert(block, object).is_none() {
                inner.blocks += 1;
            }
        }
    }
}

/// Makes room for one more volume: drops idle-but-cached volumes (never one with a mutation
/// in flight, whose count must survive).
fn make_room(inner: &mut Inner) {
    if inner.volumes.len() < MAX_VOLUMES {
        return;
    }
    let droppable: Vec<String> =
        inner.volumes.iter().filter(|(_, v)| v.mutating == 0).map(|(k, _)| k.clone()).collect();
    for name in droppable {
        if let Some(v) = inner.volumes.remove(&name) {
            inner.blocks -= v.blocks.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn piece(object: &str, object_offset: u64, len: u64) -> Piece {
        Piece { object: (!object.is_empty()).then(|| object.to_string()), object_offset, len }
    }

    fn cacheable(cache: &MapCache, name: &str) {
        cache.want(name);
        cache.set_geometry(name, 4 * MIB, 1 << 40);
    }

    #[test]
    fn nothing_is_cached_for_a_volume_this_host_does_not_hold() {
        let cache = MapCache::default();
        assert!(cache.read_ticket("vol").is_none());
        cache.set_geometry("vol", 4 * MIB, 1 << 40);
        assert!(cache.lookup("vol", 0, 4096).is_none());
        // An unflagged answer is not kept, and forgets what was.
        cacheable(&cache, "vol");
        let t = cache.read_ticket("vol").unwrap();
        cache.keep_read("vol", t, true, 0, &[piece("a", 0, 4096)]);
        assert!(cache.lookup("vol", 0, 4096).is_some());
        let t = cache.read_ticket("vol").unwrap();
        cache.keep_read("vol", t, false, 8 * MIB, &[piece("b", 0, 4096)]);
        assert!(cache.lookup("vol", 0, 4096).is_none());
        assert!(cache.lookup("vol", 8 * MIB, 4096).is_none());
        assert!(!cache.wants_geometry("vol"));
    }

    #[test]
    fn reads_past_the_end_are_left_to_the_mapper() {
        let cache = MapCache::default();
        cache.want("vol");
        cache.set_geometry("vol", 4 * MIB, 4 * MIB + 100);
        let t = cache.read_ticket("vol").unwrap();
        cache.keep_read("vol", t, true, 4 * MIB, &[piece("", 0, 100)]);
        assert_eq!(cache.lookup("vol", 4 * MIB + 99, 1).unwrap(), vec![piece("", 99, 1)]);
        assert!(cache.lookup("vol", 4 * MIB + 100, 1).is_none());
        assert!(cache.lookup("vol", 4 * MIB + 99, 2).is_none());
        assert!(cache.lookup("vol", u64::MAX, 2).is_none());
    }

    #[test]
    fn a_read_answer_is_served_until_a_write_touches_its_block() {
        let cache = MapCache::default();
        cacheable(&cache, "vol");
        let t = cache.read_ticket("vol").unwrap();
        // 8 KiB spanning blocks 0 and 1.
        let answer = [piece("a", 4 * MIB - 4096, 4096), piece("", 0, 4096)];
        cache.keep_read("vol", t, true, 4 * MIB - 4096, &answer);
        assert_eq!(cache.lookup("vol", 4 * MIB - 4096, 8192).unwrap(), answer.to_vec());
        assert_eq!(cache.lookup("vol", 100, 10).unwrap(), vec![piece("a", 100, 10)]);
        assert!(cache.lookup("vol", 8 * MIB, 1).is_none(), "block 2 was never looked up");
        // A write to block 1 forgets it (and nothing is served while it is in flight).
        let w = cache.mutation("vol", 4 * MIB + 10, 1);
        assert!(cache.lookup("vol", 0, 1).is_none());
        cache.keep_write(&w, 4 * MIB + 10, &[piece("b", 10, 1)]);
        drop(w);
        assert_eq!(cache.lookup("vol", 4 * MIB, 20).unwrap(), vec![piece("b", 0, 20)]);
        assert_eq!(cache.lookup("vol", 0, 1).unwrap(), vec![piece("a", 0, 1)]);
    }

    #[test]
    fn an_answer_that_may_predate_a_mutation_is_not_kept() {
        let cache = MapCache::default();
        cacheable(&cache, "vol");
        // A write starts and ends while a read's lookup is in flight.
        let t = cache.read_ticket("vol").unwrap();
        drop(cache.mutation("vol", 0, 4096));
        cache.keep_read("vol", t, true, 0, &[piece("old", 0, 4096)]);
        assert!(cache.lookup("vol", 0, 4096).is_none());
        // No ticket while a mutation is in flight.
        let w = cache.mutation("vol", 8 * MIB, 4096);
        assert!(cache.read_ticket("vol").is_none());
        // Two concurrent writes: neither keeps its answer.
        let w2 = cache.mutation("vol", 0, 4096);
        cache.keep_write(&w2, 0, &[piece("x", 0, 4096)]);
        drop((w, w2));
        assert!(cache.lookup("vol", 0, 4096).is_none());
    }

    #[test]
    fn forgetting_stops_caching_until_the_host_holds_the_volume_again() {
        let cache = MapCache::default();
        cacheable(&cache, "vol");
        let t = cache.read_ticket("vol").unwrap();
        cache.keep_read("vol", t, true, 0, &[piece("a", 0, 4096)]);
        cache.forget("vol");
        assert!(cache.lookup("vol", 0, 4096).is_none());
        assert!(cache.read_ticket("vol").is_none());
        // A ticket taken before a forget is worthless after it.
        cacheable(&cache, "vol");
        let t = cache.read_ticket("vol").unwrap();
        cache.forget("vol");
        cacheable(&cache, "vol");
        cache.keep_read("vol", t, true, 0, &[piece("a", 0, 4096)]);
        assert!(cache.lookup("vol", 0, 4096).is_none());
        // A successful MAPW makes the volume cacheable again.
        cache.forget("vol");
        let w = cache.mutation("vol", 0, 1);
        cache.keep_write(&w, 0, &[piece("a", 0, 1)]);
        drop(w);
        assert!(cache.wants_geometry("vol"));
    }

    #[test]
    fn answers_it_does_not_understand_are_not_kept() {
        let cache = MapCache::default();
        cacheable(&cache, "vol");
        let t = cache.read_ticket("vol").unwrap();
        // The object offset is not the offset in the block.
        cache.keep_read("vol", t, true, 4096, &[piece("a", 0, 4096)]);
        assert!(cache.lookup("vol", 4096, 1).is_none());
        // A piece crossing a block boundary.
        cache.keep_read("vol", t, true, 4 * MIB - 1, &[piece("a", 4 * MIB - 1, 2)]);
        assert!(cache.lookup("vol", 4 * MIB - 1, 1).is_none());
    }

    #[test]
    fn entries_age_out() {
        let cache = MapCache::default();
        cacheable(&cache, "vol");
        let t = cache.read_ticket("vol").unwrap();
        cache.keep_read("vol", t, true, 0, &[piece("a", 0, 1)]);
        cache.lock().volumes.get_mut("vol").unwrap().filled_since = Instant::now() - MAX_AGE;
        assert!(cache.lookup("vol", 0, 1).is_none());
        assert_eq!(cache.lock().blocks, 0);
    }

    #[test]
    fn size_is_bounded() {
        let cache = MapCache::default();
        for i in 0..(MAX_BLOCKS / 1024 + 2) {
            let name = format!("v{i}");
            cacheable(&cache, &name);
            let t = cache.read_ticket(&name).unwrap();
            let answer: Vec<Piece> = (0..1024).map(|_| piece("o", 0, 4 * MIB)).collect();
            cache.keep_read(&name, t, true, 0, &answer);
        }
        assert!(cache.lock().blocks <= MAX_BLOCKS);
        for i in 0..MAX_VOLUMES + 10 {
            cache.want(&format!("w{i}"));
        }
        assert!(cache.lock().volumes.len() <= MAX_VOLUMES);
    }
}
