//! The mapping cache: which object holds each block of the volumes this host holds, so
//! that a read whose blocks are all known needs no mapper round trip, and neither does a
//! write whose blocks are all known to be the volume's own (SPEC §8's "caching mappings in
//! vlmcd").
//!
//! Wrong data is the one thing this cache must never cause, so it caches only what cannot
//! change behind its back, and forgets eagerly:
//!
//! * **Only volumes this host holds.** A map answer is kept only if the mapper said so: a
//!   MAPR or MAPW answer flagged [`MAPPING_CACHEABLE`](archip_proto::MAPPING_CACHEABLE)
//!   (the mapper holds the volume's lock and is not fenced, or it is a snapshot). Every
//!   write, discard and management op of a held volume goes through this vlmcd. An
//!   unflagged MAPR answer, any other management op on the volume (CLOSE, RELEASE,
//!   SNAPSHOT, DELETE, RENAME, RESIZE, ...) and any mapper error for it forget the volume.
//! * **No answer older than a change.** A MAPW or DISCARD lookup may change mappings
//!   (copy-on-write, a block becoming zero): while one is in flight its blocks are
//!   *changing* — forgotten when it starts, served by no lookup until it ends — and the
//!   volume's sequence number moves when it starts and when it ends. A read's MAPR answer
//!   is kept only if the sequence did not move while it was fetched and none of its blocks
//!   is changing. A MAPW answer is kept only if no DISCARD (nor a forget) started or ended
//!   while it was fetched and no other lookup is changing its blocks: two MAPW answers for
//!   one block name the same own object (a snapshot, which changes that, drains the volume
//!   and forgets it first), but a DISCARD may have made the block zero.
//! * **Writes only to own blocks, within the lease.** A MAPW answer's objects are the
//!   volume's own (writable in place); the mapper flags how long its lock confirmation
//!   stays valid, and a write is served from the cache only until then (vlmcd counts from
//!   when it *sent* the MAPW, so it stops no later than the mapper would). A host whose lock
//!   was broken thus stops writing within the same bound as through the mapper (SPEC §4.4).
//! * **Bounded age.** A volume's entries are dropped every [`MAX_AGE`], so a host whose lock
//!   was broken serves a stale read mapping for at most that long — the mapper's own map
//!   cache has the same exposure for half a lease.
//! * **Bounded size.** At most [`MAX_BLOCKS`] entries in all (about 100 bytes each) and
//!   [`MAX_VOLUMES`] volumes; past that, entries are dropped.
//!
//! A read served from the cache that finds its object gone (a discard raced it) is read
//! again through the mapper, as any read whose object vanished.
//!
//! The cache is plain data: vlmcd keeps it under its state lock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::name::VolName;

/// How long a volume's cached mappings live.
pub const MAX_AGE: Duration = Duration::from_secs(2);
/// Most block entries cached, over all volumes.
pub const MAX_BLOCKS: usize = 256 * 1024;
/// Most volumes tracked at once.
pub const MAX_VOLUMES: usize = 4096;
/// A lookup covering more blocks than this marks its whole volume as changing rather than
/// each block (a discard of a whole disk must not cost a map entry per block).
const CHANGING_BLOCKS_MAX: u64 = 64;

/// One piece of a range: the object holding it (`None`: a zero block) and where in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub object: Option<Arc<str>>,
    pub object_offset: u64,
    pub len: u64,
}

#[derive(Default)]
pub struct MapCache {
    volumes: HashMap<VolName, VolumeCache>,
    blocks: usize,
    /// The source of sequence numbers, for all volumes: a volume dropped and tracked again
    /// never reuses one, so a ticket taken before never matches after.
    clock: u64,
}

struct Cached {
    object: Option<Arc<str>>,
    /// Until when a write may use this mapping without asking the mapper (a MAPW answer's
    /// own object, within the mapper's lock confirmation).
    writable_until: Option<Instant>,
}

struct VolumeCache {
    /// This host uses the volume (an OPEN, a MAPW or a cacheable MAPR answer): learn its
    /// geometry so its answers can be kept.
    wanted: bool,
    /// The volume's block size, once known (0: not yet).
    block_size: u64,
    /// The volume's size in bytes (known with the block size); IO past it goes to the
    /// mapper, which refuses it.
    size_bytes: u64,
    /// Set from the clock when a changing lookup starts or ends, and on a forget.
    seq: u64,
    /// Set from the clock when a DISCARD lookup starts or ends, and on a forget.
    discard_seq: u64,
    /// Blocks with changing lookups in flight, and how many.
    changing: HashMap<u64, u32>,
    /// Changing lookups in flight that cover the whole volume (too many blocks to list, or
    /// started before the geometry was known).
    changing_all: u32,
    filled_since: Instant,
    blocks: HashMap<u64, Cached>,
}

impl VolumeCache {
    fn new(seq: u64) -> VolumeCache {
        VolumeCache {
            wanted: false,
            block_size: 0,
            size_bytes: 0,
            seq,
            discard_seq: seq,
            changing: HashMap::new(),
            changing_all: 0,
            filled_since: Instant::now(),
            blocks: HashMap::new(),
        }
    }

    fn idle(&self) -> bool {
        !self.wanted && self.changing.is_empty() && self.changing_all == 0 && self.blocks.is_empty()
    }

    /// The cached pieces of `[offset, offset + size)` if every block is cached, none is
    /// changing, and `usable` accepts each. Entries past [`MAX_AGE`] are dropped here.
    fn pieces_of(&mut self, offset: u64, size: u64, usable: impl Fn(&Cached) -> bool) -> Option<Vec<Piece>> {
        if self.block_size == 0 || offset.checked_add(size)? > self.size_bytes || self.changing_all > 0 {
            return None;
        }
        if self.filled_since.elapsed() >= MAX_AGE {
            self.blocks.clear();
            self.filled_since = Instant::now();
            return None;
        }
        pieces(self.block_size, offset, size)
            .map(|(block, at, len)| {
                let cached = self.blocks.get(&block)?;
                if self.changing.contains_key(&block) || !usable(cached) {
                    return None;
                }
                Some(Piece { object: cached.object.clone(), object_offset: at, len })
            })
            .collect()
    }
}

/// Taken before a read's map lookup; its answer is kept only if the volume did not change
/// meanwhile.
#[derive(Debug, Clone, Copy)]
pub struct ReadTicket {
    seq: u64,
}

/// A MAPW or DISCARD lookup in flight: its blocks are changing until [`MapCache::end_change`].
#[derive(Debug)]
pub struct Change {
    name: VolName,
    discard: bool,
    /// The volume's discard sequence right after this change started.
    discard_seq: u64,
    /// The blocks marked changing, by the block size of the time; `None`: the whole volume.
    blocks: Option<(u64, u64, u64)>,
}

/// What a MAPW lookup answered, to keep.
pub struct WriteAnswer<'a> {
    pub offset: u64,
    pub pieces: &'a [Piece],
    /// The mapper flagged the answer cacheable, valid for writes until then.
    pub writable_until: Option<Instant>,
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

/// The first and last block of `[offset, offset + size)`.
fn block_span(bs: u64, offset: u64, size: u64) -> (u64, u64) {
    let end = offset.saturating_add(size.max(1));
    (offset / bs, (end - 1) / bs)
}

impl MapCache {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// The cache of `name`, tracked from now on if it was not.
    fn track(&mut self, name: &VolName) -> &mut VolumeCache {
        if !self.volumes.contains_key(name) {
            self.make_room();
            let seq = self.tick();
            self.volumes.insert(*name, VolumeCache::new(seq));
        }
        self.volumes.get_mut(name).expect("tracked")
    }

    /// Makes room for one more volume: drops volumes with no change in flight (whose
    /// counts must survive).
    fn make_room(&mut self) {
        if self.volumes.len() < MAX_VOLUMES {
            return;
        }
        let droppable: Vec<VolName> = self
            .volumes
            .iter()
            .filter(|(_, v)| v.changing.is_empty() && v.changing_all == 0)
            .map(|(k, _)| *k)
            .collect();
        for name in droppable {
            if let Some(v) = self.volumes.remove(&name) {
                self.blocks -= v.blocks.len();
            }
        }
    }

    fn lookup_with(
        &mut self,
        name: &VolName,
        offset: u64,
        size: u64,
        usable: impl Fn(&Cached) -> bool,
    ) -> Option<Vec<Piece>> {
        let v = self.volumes.get_mut(name)?;
        let before = v.blocks.len();
        let found = v.pieces_of(offset, size, usable);
        self.blocks -= before - v.blocks.len();
        found
    }

    /// The pieces of a read, if every block of the range is cached and none is changing.
    pub fn lookup_read(&mut self, name: &VolName, offset: u64, size: u64) -> Option<Vec<Piece>> {
        self.lookup_with(name, offset, size, |_| true)
    }

    /// The pieces of a write, if every block of the range is cached as the volume's own
    /// object within its write lease, and none is changing.
    pub fn lookup_write(
        &mut self,
        name: &VolName,
        offset: u64,
        size: u64,
        now: Instant,
    ) -> Option<Vec<Piece>> {
        self.lookup_with(name, offset, size, |c| {
            c.object.is_some() && c.writable_until.is_some_and(|t| t > now)
        })
    }

    /// Whether `name` is in use here but its geometry is not known yet (ask the mapper).
    pub fn wants_geometry(&self, name: &VolName) -> bool {
        self.volumes.get(name).is_some_and(|v| v.wanted && v.block_size == 0)
    }

    /// The volume's block size and size (from INFO; a RESIZE forgets them).
    pub fn set_geometry(&mut self, name: &VolName, block_size: u64, size_bytes: u64) {
        if let Some(v) = self.volumes.get_mut(name) {
            if block_size.is_power_of_two() {
                v.block_size = block_size;
                v.size_bytes = size_bytes;
            }
        }
    }

    /// A ticket for a read's map lookup, if its answer may be kept.
    pub fn read_ticket(&self, name: &VolName) -> Option<ReadTicket> {
        let v = self.volumes.get(name)?;
        (v.block_size != 0).then_some(ReadTicket { seq: v.seq })
    }

    /// A MAPR answer for `[offset, ...)`: kept if the mapper flagged it cacheable, the
    /// volume did not change since the ticket was taken and none of its blocks is changing;
    /// an unflagged one means this host does not hold the volume, and everything cached for
    /// it is forgotten.
    pub fn keep_read(
        &mut self,
        name: &VolName,
        ticket: ReadTicket,
        cacheable: bool,
        offset: u64,
        pieces: &[Piece],
    ) {
        if !cacheable {
            self.forget(name);
            return;
        }
        let Some(v) = self.volumes.get(name) else { return };
        if v.seq != ticket.seq || v.changing_all > 0 {
            return;
        }
        self.keep(name, offset, pieces, None);
    }

    /// A MAPW (`discard` false) or DISCARD lookup of `[offset, offset + size)` starts: its
    /// blocks are forgotten and changing until [`end_change`](Self::end_change).
    pub fn start_change(&mut self, name: &VolName, offset: u64, size: u64, discard: bool) -> Change {
        let seq = self.tick();
        let v = self.track(name);
        v.seq = seq;
        if discard {
            v.discard_seq = seq;
        }
        let discard_seq = v.discard_seq;
        let bs = v.block_size;
        let mut dropped = 0;
        let blocks = if bs != 0 && {
            let (first, last) = block_span(bs, offset, size);
            last - first < CHANGING_BLOCKS_MAX
        } {
            let (first, last) = block_span(bs, offset, size);
            for block in first..=last {
                *v.changing.entry(block).or_insert(0) += 1;
                dropped += usize::from(v.blocks.remove(&block).is_some());
            }
            Some((bs, first, last))
        } else {
            v.changing_all += 1;
            dropped = v.blocks.len();
            v.blocks.clear();
            None
        };
        self.blocks -= dropped;
        Change { name: *name, discard, discard_seq, blocks }
    }

    /// A changing lookup ended (its answer is in, or it failed). A MAPW's answer is kept
    /// (see the module doc for when); any answer marks the volume as in use here.
    pub fn end_change(&mut self, change: Change, answer: Option<WriteAnswer<'_>>) {
        let seq = self.tick();
        let Some(v) = self.volumes.get_mut(&change.name) else {
            debug_assert!(false, "a volume with a change in flight is tracked");
            return;
        };
        match change.blocks {
            Some((_, first, last)) => {
                for block in first..=last {
                    if let Some(n) = v.changing.get_mut(&block) {
                        *n -= 1;
                        if *n == 0 {
                            v.changing.remove(&block);
                        }
                    }
                }
            }
            None => v.changing_all -= 1,
        }
        let unchanged = v.discard_seq == change.discard_seq;
        v.seq = seq;
        if change.discard {
            v.discard_seq = seq;
        }
        if let Some(answer) = answer {
            v.wanted = true;
            let others_changing = v.changing_all > 0
                || pieces_blocks(v.block_size, answer.offset, answer.pieces)
                    .any(|b| v.changing.contains_key(&b));
            if !change.discard && unchanged && !others_changing {
                self.keep(&change.name, answer.offset, answer.pieces, answer.writable_until);
            }
        }
        if let Some(v) = self.volumes.get(&change.name) {
            if v.idle() {
                self.volumes.remove(&change.name);
            }
        }
    }

    /// This host uses `name` (an OPEN succeeded, or a MAPR answer was flagged cacheable):
    /// its geometry is worth learning.
    pub fn want(&mut self, name: &VolName) {
        self.track(name).wanted = true;
    }

    /// Forgets everything about `name` and stops caching it (a management op or a mapper
    /// error); answers in flight for it are not kept.
    pub fn forget(&mut self, name: &VolName) {
        let seq = self.tick();
        if let Some(v) = self.volumes.get_mut(name) {
            self.blocks -= v.blocks.len();
            v.blocks.clear();
            v.wanted = false;
            v.block_size = 0;
            v.size_bytes = 0;
            v.seq = seq;
            v.discard_seq = seq;
            if v.idle() {
                self.volumes.remove(name);
            }
        }
    }

    fn keep(&mut self, name: &VolName, offset: u64, pieces: &[Piece], writable_until: Option<Instant>) {
        let Some(v) = self.volumes.get_mut(name) else { return };
        if v.block_size == 0 {
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
            found.push((at / bs, p.object.clone()));
            at += p.len;
        }
        if self.blocks + found.len() > MAX_BLOCKS {
            self.blocks -= v.blocks.len();
            v.blocks.clear();
            if self.blocks + found.len() > MAX_BLOCKS {
                return;
            }
        }
        if v.blocks.is_empty() {
            v.filled_since = Instant::now();
        }
        for (block, object) in found {
            let writable_until = writable_until.filter(|_| object.is_some());
            if v.blocks.insert(block, Cached { object, writable_until }).is_none() {
                self.blocks += 1;
            }
        }
    }

    /// Entries cached in all (for tests and reports).
    #[cfg(test)]
    fn entries(&self) -> usize {
        self.blocks
    }
}

/// The blocks the pieces of an answer starting at `offset` lie in.
fn pieces_blocks(bs: u64, offset: u64, pieces: &[Piece]) -> impl Iterator<Item = u64> + '_ {
    let mut at = offset;
    pieces.iter().filter_map(move |p| {
        let block = at.checked_div(bs);
        at = at.saturating_add(p.len);
        block
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn vol(name: &str) -> VolName {
        VolName::new(name).unwrap()
    }

    fn piece(object: &str, object_offset: u64, len: u64) -> Piece {
        Piece { object: (!object.is_empty()).then(|| Arc::from(object)), object_offset, len }
    }

    fn cacheable(cache: &mut MapCache, name: &str) {
        cache.want(&vol(name));
        cache.set_geometry(&vol(name), 4 * MIB, 1 << 40);
    }

    fn later(ms: u64) -> Option<Instant> {
        Some(Instant::now() + Duration::from_millis(ms))
    }

    /// A MAPW of `[offset, offset+len)` answered with `pieces`, valid for writes for 1 s.
    fn mapw(cache: &mut MapCache, name: &str, offset: u64, len: u64, pieces: &[Piece]) {
        let c = cache.start_change(&vol(name), offset, len, false);
        cache.end_change(c, Some(WriteAnswer { offset, pieces, writable_until: later(1000) }));
    }

    #[test]
    fn nothing_is_cached_for_a_volume_this_host_does_not_hold() {
        let mut cache = MapCache::default();
        let v = vol("vol");
        assert!(cache.read_ticket(&v).is_none());
        cache.set_geometry(&v, 4 * MIB, 1 << 40);
        assert!(cache.lookup_read(&v, 0, 4096).is_none());
        // An unflagged answer is not kept, and forgets what was.
        cacheable(&mut cache, "vol");
        let t = cache.read_ticket(&v).unwrap();
        cache.keep_read(&v, t, true, 0, &[piece("a", 0, 4096)]);
        assert!(cache.lookup_read(&v, 0, 4096).is_some());
        let t = cache.read_ticket(&v).unwrap();
        cache.keep_read(&v, t, false, 8 * MIB, &[piece("b", 0, 4096)]);
        assert!(cache.lookup_read(&v, 0, 4096).is_none());
        assert!(cache.lookup_read(&v, 8 * MIB, 4096).is_none());
        assert!(!cache.wants_geometry(&v));
    }

    #[test]
    fn reads_past_the_end_are_left_to_the_mapper() {
        let mut cache = MapCache::default();
        let v = vol("vol");
        cache.want(&v);
        cache.set_geometry(&v, 4 * MIB, 4 * MIB + 100);
        let t = cache.read_ticket(&v).unwrap();
        cache.keep_read(&v, t, true, 4 * MIB, &[piece("", 0, 100)]);
        assert_eq!(cache.lookup_read(&v, 4 * MIB + 99, 1).unwrap(), vec![piece("", 99, 1)]);
        assert!(cache.lookup_read(&v, 4 * MIB + 100, 1).is_none());
        assert!(cache.lookup_read(&v, 4 * MIB + 99, 2).is_none());
        assert!(cache.lookup_read(&v, u64::MAX, 2).is_none());
    }

    #[test]
    fn a_read_answer_is_served_until_a_write_changes_its_block() {
        let mut cache = MapCache::default();
        let v = vol("vol");
        cacheable(&mut cache, "vol");
        let t = cache.read_ticket(&v).unwrap();
        // 8 KiB spanning blocks 0 and 1.
        let answer = [piece("a", 4 * MIB - 4096, 4096), piece("", 0, 4096)];
        cache.keep_read(&v, t, true, 4 * MIB - 4096, &answer);
        assert_eq!(cache.lookup_read(&v, 4 * MIB - 4096, 8192).unwrap(), answer.to_vec());
        assert_eq!(cache.lookup_read(&v, 100, 10).unwrap(), vec![piece("a", 100, 10)]);
        assert!(cache.lookup_read(&v, 8 * MIB, 1).is_none(), "block 2 was never looked up");
        // A MAPW of block 1 forgets it and keeps block 1 changing; block 0 is still served.
        let w = cache.start_change(&v, 4 * MIB + 10, 1, false);
        assert!(cache.lookup_read(&v, 4 * MIB, 1).is_none());
        assert_eq!(cache.lookup_read(&v, 0, 1).unwrap(), vec![piece("a", 0, 1)]);
        let answer = [piece("b", 10, 1)];
        cache.end_change(
            w,
            Some(WriteAnswer { offset: 4 * MIB + 10, pieces: &answer, writable_until: later(1000) }),
        );
        assert_eq!(cache.lookup_read(&v, 4 * MIB, 20).unwrap(), vec![piece("b", 0, 20)]);
        assert_eq!(cache.lookup_read(&v, 0, 1).unwrap(), vec![piece("a", 0, 1)]);
    }

    #[test]
    fn writes_are_served_only_for_own_blocks_within_the_lease() {
        let mut cache = MapCache::default();
        let v = vol("vol");
        cacheable(&mut cache, "vol");
        let now = Instant::now();
        // A MAPR answer says nothing of ownership: not for writes.
        let t = cache.read_ticket(&v).unwrap();
        cache.keep_read(&v, t, true, 0, &[piece("shared", 0, 4096)]);
        assert!(cache.lookup_write(&v, 0, 4096, now).is_none());
        // A MAPW answer is, until its lease.
        mapw(&mut cache, "vol", 0, 4096, &[piece("own", 0, 4096)]);
        assert_eq!(cache.lookup_write(&v, 100, 10, now).unwrap(), vec![piece("own", 100, 10)]);
        assert!(cache.lookup_write(&v, 100, 10, now + Duration::from_secs(2)).is_none(), "lease over");
        assert!(cache.lookup_write(&v, 4 * MIB - 1, 2, now).is_none(), "block 1 unknown");
        // A MAPW answer without a lease is kept for reads only.
        let c = cache.start_change(&v, 8 * MIB, 1, false);
        cache.end_change(
            c,
            Some(WriteAnswer { offset: 8 * MIB, pieces: &[piece("o2", 0, 1)], writable_until: None }),
        );
        assert!(cache.lookup_read(&v, 8 * MIB, 1).is_some());
        assert!(cache.lookup_write(&v, 8 * MIB, 1, now).is_none());
    }

    #[test]
    fn an_answer_that_may_predate_a_change_is_not_kept() {
        let mut cache = MapCache::default();
        let v = vol("vol");
        cacheable(&mut cache, "vol");
        // A MAPW starts and ends while a read's lookup is in flight.
        let t = cache.read_ticket(&v).unwrap();
        mapw(&mut cache, "vol", 8 * MIB, 4096, &[piece("x", 0, 4096)]);
        cache.keep_read(&v, t, true, 0, &[piece("old", 0, 4096)]);
        assert!(cache.lookup_read(&v, 0, 4096).is_none());
        // A read answer is not kept for a block still changing.
        let w = cache.start_change(&v, 0, 4096, false);
        let t = cache.read_ticket(&v).unwrap();
        cache.keep_read(&v, t, true, 0, &[piece("old", 0, 4096)]);
        assert!(cache.lookup_read(&v, 0, 4096).is_none());
        // Two MAPWs of one block: the first to end sees the other changing, the last keeps.
        let w2 = cache.start_change(&v, 0, 4096, false);
        cache.end_change(
            w,
            Some(WriteAnswer { offset: 0, pieces: &[piece("own", 0, 4096)], writable_until: later(1000) }),
        );
        assert!(cache.lookup_read(&v, 0, 4096).is_none());
        cache.end_change(
            w2,
            Some(WriteAnswer { offset: 0, pieces: &[piece("own", 0, 4096)], writable_until: later(1000) }),
        );
        assert_eq!(cache.lookup_read(&v, 0, 4096).unwrap(), vec![piece("own", 0, 4096)]);
        // A MAPW answer fetched across a discard is not kept, for any block.
        let w = cache.start_change(&v, 12 * MIB, 4096, false);
        let d = cache.start_change(&v, 16 * MIB, 4096, true);
        cache.end_change(d, None);
        cache.end_change(
            w,
            Some(WriteAnswer {
                offset: 12 * MIB,
                pieces: &[piece("o", 0, 4096)],
                writable_until: later(1000),
            }),
        );
        assert!(cache.lookup_read(&v, 12 * MIB, 4096).is_none());
        // A discard forgets its blocks, and its answer is never kept.
        let d = cache.start_change(&v, 0, 4096, true);
        assert!(cache.lookup_read(&v, 0, 4096).is_none());
        cache.end_change(
            d,
            Some(WriteAnswer { offset: 0, pieces: &[piece("z", 0, 4096)], writable_until: later(1000) }),
        );
        assert!(cache.lookup_read(&v, 0, 4096).is_none());
    }

    #[test]
    fn a_large_change_holds_the_whole_volume() {
        let mut cache = MapCache::default();
        let v = vol("vol");
        cacheable(&mut cache, "vol");
        mapw(&mut cache, "vol", 0, 4096, &[piece("a", 0, 4096)]);
        let d = cache.start_change(&v, 4 * MIB, 1 << 30, true);
        assert!(cache.lookup_read(&v, 0, 4096).is_none());
        assert_eq!(cache.entries(), 0);
        cache.end_change(d, None);
        mapw(&mut cache, "vol", 0, 4096, &[piece("a", 0, 4096)]);
        assert!(cache.lookup_read(&v, 0, 4096).is_some());
        // Changes end whatever happened to the volume meanwhile (a forget, new geometry).
        let w = cache.start_change(&v, 0, 1, false);
        cache.forget(&v);
        cacheable(&mut cache, "vol");
        cache.end_change(w, None);
        assert!(cache.volumes.get(&v).unwrap().changing.is_empty());
    }

    #[test]
    fn forgetting_stops_caching_until_the_host_holds_the_volume_again() {
        let mut cache = MapCache::default();
        let v = vol("vol");
        cacheable(&mut cache, "vol");
        let t = cache.read_ticket(&v).unwrap();
        cache.keep_read(&v, t, true, 0, &[piece("a", 0, 4096)]);
        cache.forget(&v);
        assert!(cache.lookup_read(&v, 0, 4096).is_none());
        assert!(cache.read_ticket(&v).is_none());
        // A ticket taken before a forget is worthless after it.
        cacheable(&mut cache, "vol");
        let t = cache.read_ticket(&v).unwrap();
        cache.forget(&v);
        cacheable(&mut cache, "vol");
        cache.keep_read(&v, t, true, 0, &[piece("a", 0, 4096)]);
        assert!(cache.lookup_read(&v, 0, 4096).is_none());
        // A MAPW answer fetched across a forget is not kept either.
        let w = cache.start_change(&v, 0, 1, false);
        cache.forget(&v);
        cacheable(&mut cache, "vol");
        cache.end_change(
            w,
            Some(WriteAnswer { offset: 0, pieces: &[piece("a", 0, 1)], writable_until: later(1000) }),
        );
        assert!(cache.lookup_read(&v, 0, 1).is_none());
        // A successful MAPW makes the volume cacheable again.
        cache.forget(&v);
        let w = cache.start_change(&v, 0, 1, false);
        cache.end_change(
            w,
            Some(WriteAnswer { offset: 0, pieces: &[piece("a", 0, 1)], writable_until: later(1000) }),
        );
        assert!(cache.wants_geometry(&v));
    }

    #[test]
    fn answers_it_does_not_understand_are_not_kept() {
        let mut cache = MapCache::default();
        let v = vol("vol");
        cacheable(&mut cache, "vol");
        let t = cache.read_ticket(&v).unwrap();
        // The object offset is not the offset in the block.
        cache.keep_read(&v, t, true, 4096, &[piece("a", 0, 4096)]);
        assert!(cache.lookup_read(&v, 4096, 1).is_none());
        // A piece crossing a block boundary.
        cache.keep_read(&v, t, true, 4 * MIB - 1, &[piece("a", 4 * MIB - 1, 2)]);
        assert!(cache.lookup_read(&v, 4 * MIB - 1, 1).is_none());
    }

    #[test]
    fn entries_age_out() {
        let mut cache = MapCache::default();
        let v = vol("vol");
        cacheable(&mut cache, "vol");
        let t = cache.read_ticket(&v).unwrap();
        cache.keep_read(&v, t, true, 0, &[piece("a", 0, 1)]);
        cache.volumes.get_mut(&v).unwrap().filled_since = Instant::now() - MAX_AGE;
        assert!(cache.lookup_read(&v, 0, 1).is_none());
        assert_eq!(cache.entries(), 0);
    }

    #[test]
    fn size_is_bounded() {
        let mut cache = MapCache::default();
        for i in 0..(MAX_BLOCKS / 1024 + 2) {
            let name = format!("v{i}");
            cacheable(&mut cache, &name);
            let t = cache.read_ticket(&vol(&name)).unwrap();
            let answer: Vec<Piece> = (0..1024).map(|_| piece("o", 0, 4 * MIB)).collect();
            cache.keep_read(&vol(&name), t, true, 0, &answer);
        }
        assert!(cache.entries() <= MAX_BLOCKS);
        for i in 0..MAX_VOLUMES + 10 {
            cache.want(&vol(&format!("w{i}")));
        }
        assert!(cache.volumes.len() <= MAX_VOLUMES);
    }
}
