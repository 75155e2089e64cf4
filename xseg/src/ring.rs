//! A bounded lock-free multi-producer multi-consumer ring of `u32` values that survives
//! the death of any producer or consumer at any instruction.
//!
//! The ring is Vyukov's bounded MPMC queue with one change that makes it crash-repairable:
//! each slot is a single `u64` holding `(sequence << 32) | value`, so a value and the
//! sequence that publishes it change in one atomic step.
//!
//! * A producer claims position `pos` by advancing `tail` with a CAS, then publishes with a
//!   CAS of its slot from `(pos, _)` to `(pos + 1, value)`.
//! * A consumer reads the slot at `head`; when its sequence is `pos + 1` it advances `head`
//!   with a CAS, takes the value it already read, and releases the slot for the next lap by
//!   storing `(pos + capacity, 0)`.
//!
//! A producer that dies between its claim and its publish leaves a slot that would stall
//! every consumer behind it. Recovery finds such slots (`pos` in `[head, tail)` whose
//! sequence is still `pos`) and *steals* them: it CASes `(pos, _)` to `(pos + 1, SKIP)`.
//! Because publish and steal are CASes on the same word, exactly one of them wins; a live
//! producer that lost its slot to a (too eager) steal simply enqueues again. Consumers drop
//! `SKIP`. A consumer that dies between advancing `head` and releasing its slot leaves a
//! slot still marked full for a lap that has passed; recovery of the consuming port releases
//! it. Nothing else can be half-done, so no lock is ever held across a crash.
//!
//! Sequences are the low 32 bits of the 64-bit positions and are compared with wrapping
//! arithmetic; a thread would have to stall for 2^32 laps of one slot for that to alias.

use crate::sync::{AtomicU64, Ordering};

/// The value recovery publishes in a slot stolen from a dead producer; consumers skip it.
pub const SKIP: u32 = u32::MAX;

/// A ring over memory it does not own (a segment, or the heap in tests).
#[derive(Clone, Copy)]
pub struct Ring<'a> {
    head: &'a AtomicU64,
    tail: &'a AtomicU64,
    slots: &'a [AtomicU64],
    mask: u64,
}

/// The ring has no free slot; the caller keeps its value and may retry later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

#[inline]
fn pack(seq: u32, value: u32) -> u64 {
    (u64::from(seq) << 32) | u64::from(value)
}

#[inline]
fn seq_of(slot: u64) -> u32 {
    (slot >> 32) as u32
}

/// `seq - expected` as a signed distance, so comparisons survive wrap-around.
#[inline]
fn distance(seq: u32, expected: u64) -> i32 {
    seq.wrapping_sub(expected as u32) as i32
}

/// Claims positions `[pos, pos + n)` by advancing `counter` (`head` or `tail`) from `pos`;
/// false when another thread moved it first (or spuriously: callers look again).
#[inline]
fn claim(counter: &AtomicU64, pos: u64, n: u64) -> bool {
    counter.compare_exchange_weak(pos, pos + n, Ordering::Relaxed, Ordering::Relaxed).is_ok()
}

impl<'a> Ring<'a> {
    /// Wraps existing storage. `slots.len()` must be a power of two (checked: a programmer
    /// error, the segment geometry guarantees it).
    pub fn new(head: &'a AtomicU64, tail: &'a AtomicU64, slots: &'a [AtomicU64]) -> Self {
        assert!(slots.len().is_power_of_two(), "ring capacity must be a power of two");
        assert!(slots.len() <= (1 << 30), "ring capacity too large for 32-bit sequences");
        Ring { head, tail, slots, mask: slots.len() as u64 - 1 }
    }

    /// Resets the ring to empty. Only for storage no other thread or process uses yet.
    pub fn init(&self) {
        self.head.store(0, Ordering::Relaxed);
        self.tail.store(0, Ordering::Relaxed);
        for (i, slot) in self.slots.iter().enumerate() {
            slot.store(pack(i as u32, 0), Ordering::Relaxed);
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    #[inline]
    fn slot(&self, pos: u64) -> &AtomicU64 {
        &self.slots[(pos & self.mask) as usize]
    }

    /// Appends `value` (never `SKIP`). Fails only when the ring is full.
    pub fn push(&self, value: u32) -> Result<(), Full> {
        debug_assert_ne!(value, SKIP);
        loop {
            let pos = self.tail.load(Ordering::Relaxed);
            let slot = self.slot(pos);
            let current = slot.load(Ordering::Acquire);
            let d = distance(seq_of(current), pos);
            if d == 0 {
                if !claim(self.tail, pos, 1) {
                    continue;
                }
                fail::fail_point!("xseg-ring-push-claimed", |_| std::process::abort());
                // Publish. Fails only if recovery stole the slot meanwhile: enqueue again.
                if slot
                    .compare_exchange(
                        current,
                        pack(pos.wrapping_add(1) as u32, value),
                        Ordering::Release,
                        Ordering::Relaxed,
                    )
                    .is_ok()
                {
                    fail::fail_point!("xseg-ring-push-published", |_| std::process::abort());
                    return Ok(());
                }
            } else if d < 0 {
                // The slot still holds the previous lap's value: full, unless a consumer is
                // between its head CAS and its release; either way there is no room now.
                if self.tail.load(Ordering::Relaxed) == pos {
                    return Err(Full);
                }
            }
            crate::sync::spin_hint();
        }
    }

    /// Takes the oldest published value, or `None` when the ring is empty or the oldest
    /// position is claimed but not yet published.
    pub fn pop(&self) -> Option<u32> {
        loop {
            let pos = self.head.load(Ordering::Relaxed);
            let slot = self.slot(pos);
            let current = slot.load(Ordering::Acquire);
            let d = distance(seq_of(current), pos.wrapping_add(1));
            if d == 0 {
                if !claim(self.head, pos, 1) {
                    crate::sync::spin_hint();
                    continue;
                }
                fail::fail_point!("xseg-ring-pop-claimed", |_| std::process::abort());
                let value = current as u32;
                slot.store(pack(pos.wrapping_add(self.slots.len() as u64) as u32, 0), Ordering::Release);
                fail::fail_point!("xseg-ring-pop-released", |_| std::process::abort());
                if value == SKIP {
                    continue;
                }
                return Some(value);
            } else if d < 0 {
                return None;
            }
            // Another consumer took `pos` already; look again.
            crate::sync::spin_hint();
        }
    }

    /// How many slots from position `pos` on (at most `max`, and at most a lap) carry the
    /// sequence `position + lag`: free for this lap with lag 0, published with lag 1. Also
    /// whether the first slot that does not is ahead of that (another thread moved past).
    fn run_from(&self, pos: u64, max: usize, lag: u64) -> (usize, bool) {
        let mut n = 0;
        while n < max.min(self.slots.len()) {
            let at = pos.wrapping_add(n as u64);
            let d = distance(seq_of(self.slot(at).load(Ordering::Acquire)), at.wrapping_add(lag));
            if d != 0 {
                return (n, d > 0);
            }
            n += 1;
        }
        (n, false)
    }

    /// Appends a prefix of `values` with one claim of `tail` for all of them, so a burst
    /// costs one claim and its slots' lines move to the producer once, not once per value.
    /// Returns how many it claimed: `values[..n]` are in the ring, except those whose slot
    /// recovery stole while they were claimed and that found the ring full when pushed again:
    /// `unpushed(i)` is called for each of those. 0 when the ring is full.
    pub fn push_many(&self, values: &[u32], mut unpushed: impl FnMut(usize)) -> usize {
        debug_assert!(!values.contains(&SKIP));
        loop {
            let pos = self.tail.load(Ordering::Relaxed);
            let (free, ahead) = self.run_from(pos, values.len(), 0);
            if free == 0 {
                // As in `push`: a slot of the previous lap still full means no room now,
                // unless another producer claimed `pos` meanwhile.
                if !ahead && self.tail.load(Ordering::Relaxed) == pos {
                    return 0;
                }
                crate::sync::spin_hint();
                continue;
            }
            if !claim(self.tail, pos, free as u64) {
                crate::sync::spin_hint();
                continue;
            }
            fail::fail_point!("xseg-ring-push-claimed", |_| std::process::abort());
            for (i, &value) in values[..free].iter().enumerate() {
                let at = pos.wrapping_add(i as u64);
                let slot = self.slot(at);
                let current = slot.load(Ordering::Acquire);
                let published = distance(seq_of(current), at) == 0
                    && slot
                        .compare_exchange(
                            current,
                            pack(at.wrapping_add(1) as u32, value),
                            Ordering::Release,
                            Ordering::Relaxed,
                        )
                        .is_ok();
                // Not published: recovery stole the claim. Enqueue that value again.
                if !published && self.push(value).is_err() {
                    unpushed(i);
                }
            }
            fail::fail_point!("xseg-ring-push-published", |_| std::process::abort());
            return free;
        }
    }

    /// Takes up to `max` of the oldest published values with one claim of `head`, giving
    /// each to `take` in order; returns how many it took (0 when none is ready). Values
    /// stop at the first position not yet published.
    pub fn pop_many(&self, max: usize, mut take: impl FnMut(u32)) -> usize {
        let cap = self.slots.len();
        loop {
            let pos = self.head.load(Ordering::Relaxed);
            let (ready, ahead) = self.run_from(pos, max, 1);
            if ready == 0 {
                if !ahead {
                    return 0;
                }
                // Another consumer took `pos` already; look again.
                crate::sync::spin_hint();
                continue;
            }
            if !claim(self.head, pos, ready as u64) {
                crate::sync::spin_hint();
                continue;
            }
            fail::fail_point!("xseg-ring-pop-claimed", |_| std::process::abort());
            // Positions [pos, pos + ready) are this consumer's now: nothing else writes
            // their slots until it releases them, so they still hold what was checked.
            let mut taken = 0;
            for i in 0..ready as u64 {
                let at = pos.wrapping_add(i);
                let slot = self.slot(at);
                let value = slot.load(Ordering::Acquire) as u32;
                slot.store(pack(at.wrapping_add(cap as u64) as u32, 0), Ordering::Release);
                if value != SKIP {
                    take(value);
                    taken += 1;
                }
            }
            fail::fail_point!("xseg-ring-pop-released", |_| std::process::abort());
            if taken > 0 {
                return taken;
            }
        }
    }

    /// True when the oldest position holds a published value (a `pop` would make progress).
    pub fn has_ready(&self) -> bool {
        loop {
            let pos = self.head.load(Ordering::Acquire);
            let d = distance(seq_of(self.slot(pos).load(Ordering::Acquire)), pos.wrapping_add(1));
            if d == 0 {
                return true;
            }
            if d < 0 {
                return false;
            }
            // The slot is ahead of `pos`: another consumer took `pos` and `head` was read
            // before its CAS became visible here. Look again rather than answer "empty"
            // while the next position may hold a value (a waiter would sleep on it; loom
            // found this with two consumers on one port).
            crate::sync::spin_hint();
        }
    }

    /// Positions claimed (`tail` passed them) but not consumed: published or not.
    pub fn len(&self) -> u64 {
        let tail = self.tail.load(Ordering::Acquire);
        let head = self.head.load(Ordering::Acquire);
        tail.saturating_sub(head)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Positions whose producer claimed them but has not published. Recovery calls this,
    /// waits a grace period, and steals what is still unpublished.
    pub fn unpublished_claims(&self) -> Vec<u64> {
        let head = self.head.load(Ordering::Acquire);
        let tail = self.tail.load(Ordering::Acquire);
        (head..tail)
            .filter(|&pos| distance(seq_of(self.slot(pos).load(Ordering::Acquire)), pos) == 0)
            .collect()
    }

    /// Publishes `SKIP` at `pos` if it is still claimed but unpublished. Returns whether it
    /// did. Safe against a live producer: only one of its publish and this steal wins.
    pub fn steal_claim(&self, pos: u64) -> bool {
        let slot = self.slot(pos);
        let current = slot.load(Ordering::Acquire);
        if distance(seq_of(current), pos) != 0 || pos >= self.tail.load(Ordering::Acquire) {
            return false;
        }
        slot.compare_exchange(
            current,
            pack(pos.wrapping_add(1) as u32, SKIP),
            Ordering::Release,
            Ordering::Relaxed,
        )
        .is_ok()
    }

    /// Releases slots that a dead consumer took (advanced `head` past) but never released.
    /// Only for a ring whose every consumer is dead (the recovered port's own rings).
    pub fn release_abandoned(&self) -> usize {
        let head = self.head.load(Ordering::Acquire);
        let cap = self.slots.len() as u64;
        let mut released = 0;
        for pos in head.saturating_sub(cap)..head {
            let slot = self.slot(pos);
            let current = slot.load(Ordering::Acquire);
            if distance(seq_of(current), pos.wrapping_add(1)) == 0
                && slot
                    .compare_exchange(
                        current,
                        pack(pos.wrapping_add(cap) as u32, 0),
                        Ordering::Release,
                        Ordering::Relaxed,
                    )
                    .is_ok()
            {
                released += 1;
            }
        }
        released
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    struct Storage {
        head: AtomicU64,
        tail: AtomicU64,
        slots: Vec<AtomicU64>,
    }

    fn storage(cap: usize) -> Storage {
        let s = Storage {
            head: AtomicU64::new(0),
            tail: AtomicU64::new(0),
            slots: (0..cap).map(|_| AtomicU64::new(0)).collect(),
        };
        Ring::new(&s.head, &s.tail, &s.slots).init();
        s
    }

    fn ring(s: &Storage) -> Ring<'_> {
        Ring::new(&s.head, &s.tail, &s.slots)
    }

    #[test]
    fn fifo_order_and_full() {
        let s = storage(4);
        let r = ring(&s);
        for v in 0..4 {
            r.push(v).unwrap();
        }
        assert_eq!(r.push(9), Err(Full));
        assert_eq!(r.len(), 4);
        for v in 0..4 {
            assert_eq!(r.pop(), Some(v));
        }
        assert_eq!(r.pop(), None);
        assert!(r.is_empty());
    }

    #[test]
    fn wraps_many_laps() {
        let s = storage(2);
        let r = ring(&s);
        for v in 0..10_000 {
            r.push(v).unwrap();
            assert!(r.has_ready());
            assert_eq!(r.pop(), Some(v));
            assert!(!r.has_ready());
        }
    }

    #[test]
    fn sequences_survive_u32_wrap() {
        let s = storage(4);
        let r = ring(&s);
        // Start near the 32-bit wrap of the sequence numbers.
        let start = u64::from(u32::MAX) - 5;
        s.head.store(start, Ordering::Relaxed);
        s.tail.store(start, Ordering::Relaxed);
        for pos in start..start + 4 {
            r.slot(pos).store(pack(pos as u32, 0), Ordering::Relaxed);
        }
        for v in 0..100 {
            r.push(v).unwrap();
            assert_eq!(r.pop(), Some(v));
        }
    }

    #[test]
    fn dead_producer_claim_is_stolen_and_skipped() {
        let s = storage(4);
        let r = ring(&s);
        r.push(1).unwrap();
        // A producer claims position 1 and dies before publishing.
        s.tail.fetch_add(1, Ordering::Relaxed);
        r.push(3).unwrap();
        assert_eq!(r.pop(), Some(1));
        assert_eq!(r.pop(), None, "consumers stall behind an unpublished claim");
        assert!(!r.has_ready());
        assert_eq!(r.unpublished_claims(), vec![1]);
        assert!(r.steal_claim(1));
        assert!(!r.steal_claim(1), "a slot is stolen once");
        assert_eq!(r.pop(), Some(3));
        assert_eq!(r.pop(), None);
        // The ring keeps working for further laps.
        for v in 10..20 {
            r.push(v).unwrap();
            assert_eq!(r.pop(), Some(v));
        }
    }

    #[test]
    fn steal_loses_to_publish() {
        let s = storage(4);
        let r = ring(&s);
        r.push(5).unwrap();
        assert!(!r.steal_claim(0), "a published slot cannot be stolen");
        assert!(!r.steal_claim(3), "a position past tail cannot be stolen");
        assert_eq!(r.pop(), Some(5));
    }

    #[test]
    fn dead_consumer_slot_is_released() {
        let s = storage(2);
        let r = ring(&s);
        r.push(1).unwrap();
        r.push(2).unwrap();
        // A consumer advances head past position 0 and dies before releasing the slot.
        s.head.fetch_add(1, Ordering::Relaxed);
        assert_eq!(r.push(3), Err(Full), "the unreleased slot blocks the next lap");
        assert_eq!(r.release_abandoned(), 1);
        r.push(3).unwrap();
        assert_eq!(r.pop(), Some(2));
        assert_eq!(r.pop(), Some(3));
    }

    fn pop_all(r: &Ring<'_>, max: usize) -> Vec<u32> {
        let mut got = Vec::new();
        r.pop_many(max, |v| got.push(v));
        got
    }

    #[test]
    fn batches_claim_what_fits_and_keep_fifo_order() {
        let s = storage(4);
        let r = ring(&s);
        let never = |i| panic!("value {i} unpushed");
        assert_eq!(r.push_many(&[1, 2, 3], never), 3);
        assert_eq!(r.push_many(&[4, 5, 6], never), 1, "one slot was left");
        assert_eq!(r.push_many(&[7], never), 0, "full");
        assert_eq!(pop_all(&r, 2), vec![1, 2]);
        assert_eq!(r.push_many(&[8, 9, 10], never), 2);
        assert_eq!(pop_all(&r, 64), vec![3, 4, 8, 9]);
        assert_eq!(pop_all(&r, 64), Vec::<u32>::new());
        assert_eq!(r.push_many(&[], never), 0);
        // Many laps of batches that straddle the end of the slots.
        for lap in 0..1000u32 {
            assert_eq!(r.push_many(&[lap, lap + 1, lap + 2], never), 3);
            assert_eq!(pop_all(&r, 2), vec![lap, lap + 1]);
            assert_eq!(pop_all(&r, 2), vec![lap + 2]);
        }
        assert!(r.is_empty());
    }

    #[test]
    fn a_batch_stops_at_an_unpublished_claim_and_drops_stolen_slots() {
        let s = storage(8);
        let r = ring(&s);
        r.push(1).unwrap();
        // A producer claims position 1 and dies before publishing.
        s.tail.fetch_add(1, Ordering::Relaxed);
        assert_eq!(r.push_many(&[3, 4], |_| unreachable!()), 2);
        assert_eq!(pop_all(&r, 64), vec![1], "consumers stall behind the claim");
        assert!(r.steal_claim(1));
        assert_eq!(pop_all(&r, 64), vec![3, 4], "the stolen slot is dropped");
    }

    /// 4 producers push 50,000 values each through a 64-slot ring while 2 consumers take
    /// them: every value must arrive exactly once. `produce(ring, values)` pushes all of
    /// `values`; `consume(ring, consumer, deliver)` takes what is ready (consumer 0 or 1),
    /// hands each value to `deliver` and returns how many it took.
    fn assert_threads_deliver_every_value_once(
        produce: impl Fn(&Ring<'_>, &[u32]) + Sync,
        consume: impl Fn(&Ring<'_>, usize, &dyn Fn(u32)) -> usize + Sync,
    ) {
        let s = storage(64);
        let r = ring(&s);
        let producers = 4u32;
        let per = 50_000u32;
        let seen: Vec<AtomicU64> = (0..producers * per).map(|_| AtomicU64::new(0)).collect();
        let taken = AtomicU64::new(0);
        let (r, produce, consume, seen, taken) = (&r, &produce, &consume, &seen, &taken);
        std::thread::scope(|scope| {
            for p in 0..producers {
                scope.spawn(move || {
                    let values: Vec<u32> = (p * per..(p + 1) * per).collect();
                    produce(r, &values);
                });
            }
            for c in 0..2 {
                scope.spawn(move || {
                    let deliver = |v: u32| {
                        seen[v as usize].fetch_add(1, Ordering::Relaxed);
                    };
                    while taken.load(Ordering::Relaxed) < u64::from(producers * per) {
                        let got = consume(r, c, &deliver);
                        taken.fetch_add(got as u64, Ordering::Relaxed);
                        if got == 0 {
                            std::thread::yield_now();
                        }
                    }
                });
            }
        });
        assert!(seen.iter().all(|c| c.load(Ordering::Relaxed) == 1));
    }

    #[test]
    fn threads_deliver_every_value_once() {
        assert_threads_deliver_every_value_once(
            |r, values| {
                for &v in values {
                    while r.push(v).is_err() {
                        std::thread::yield_now();
                    }
                }
            },
            |r, _, deliver| {
                r.pop().map_or(0, |v| {
                    deliver(v);
                    1
                })
            },
        );
    }

    #[test]
    fn threads_deliver_every_value_once_in_batches() {
        assert_threads_deliver_every_value_once(
            |r, values| {
                let mut next = 0;
                while next < values.len() {
                    // Batches of 1 to 7, mixed with single pushes.
                    let n = 1 + next % 7;
                    let end = (next + n).min(values.len());
                    let pushed = if n == 4 {
                        usize::from(r.push(values[next]).is_ok())
                    } else {
                        r.push_many(&values[next..end], |i| panic!("value {i} unpushed"))
                    };
                    if pushed == 0 {
                        std::thread::yield_now();
                    }
                    next += pushed;
                }
            },
            // One consumer in batches of up to 5, the other one at a time.
            |r, c, deliver| {
                if c == 0 {
                    r.pop_many(5, deliver)
                } else {
                    r.pop().map_or(0, |v| {
                        deliver(v);
                        1
                    })
                }
            },
        );
    }
}
