//! Loom models of the ring and of the wait/wake protocol. Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p xseg --test loom --release`.
#![cfg(loom)]

use std::time::Duration;

use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use loom::sync::{Arc, Condvar, Mutex};
use xseg::ring::Ring;
use xseg::signal::{Futex, FutexSignal, Signal, SignalWords};

struct Storage {
    head: AtomicU64,
    tail: AtomicU64,
    slots: Vec<AtomicU64>,
}

impl Storage {
    fn new(cap: usize) -> Arc<Storage> {
        let s = Storage {
            head: AtomicU64::new(0),
            tail: AtomicU64::new(0),
            slots: (0..cap).map(|_| AtomicU64::new(0)).collect(),
        };
        s.ring().init();
        Arc::new(s)
    }
    fn ring(&self) -> Ring<'_> {
        Ring::new(&self.head, &self.tail, &self.slots)
    }
}

fn drain(ring: Ring<'_>) -> Vec<u32> {
    std::iter::from_fn(|| ring.pop()).collect()
}

/// A consumer thread that takes up to `max` values in one `pop_many` and returns them.
fn spawn_batch_consumer(s: &Arc<Storage>, max: usize) -> loom::thread::JoinHandle<Vec<u32>> {
    let s = s.clone();
    loom::thread::spawn(move || {
        let mut got = Vec::new();
        s.ring().pop_many(max, |v| got.push(v));
        got
    })
}

#[test]
fn two_producers_one_consumer_deliver_each_value_once() {
    loom::model(|| {
        let s = Storage::new(2);
        let producers: Vec<_> = [10u32, 20]
            .into_iter()
            .map(|v| {
                let s = s.clone();
                loom::thread::spawn(move || s.ring().push(v).unwrap())
            })
            .collect();
        let consumer = {
            let s = s.clone();
            loom::thread::spawn(move || s.ring().pop())
        };
        for p in producers {
            p.join().unwrap();
        }
        let mut got: Vec<u32> = consumer.join().unwrap().into_iter().collect();
        got.extend(drain(s.ring()));
        got.sort();
        assert_eq!(got, vec![10, 20]);
    });
}

#[test]
fn two_consumers_never_take_the_same_value() {
    loom::model(|| {
        let s = Storage::new(2);
        s.ring().push(1).unwrap();
        s.ring().push(2).unwrap();
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let s = s.clone();
                loom::thread::spawn(move || s.ring().pop())
            })
            .collect();
        let producer = {
            let s = s.clone();
            loom::thread::spawn(move || s.ring().push(3))
        };
        let mut got: Vec<u32> = consumers.into_iter().filter_map(|c| c.join().unwrap()).collect();
        let pushed = producer.join().unwrap().is_ok();
        got.extend(drain(s.ring()));
        got.sort();
        let want = if pushed { vec![1, 2, 3] } else { vec![1, 2] };
        assert_eq!(got, want);
    });
}

/// Recovery stealing an unpublished claim races a live producer's publish: whichever wins,
/// the value is delivered exactly once and the ring is not wedged.
#[test]
fn steal_races_publish_without_loss_or_duplicate() {
    loom::model(|| {
        let s = Storage::new(2);
        let producer = {
            let s = s.clone();
            loom::thread::spawn(move || s.ring().push(5).unwrap())
        };
        let recovery = {
            let s = s.clone();
            loom::thread::spawn(move || {
                for pos in s.ring().unpublished_claims() {
                    s.ring().steal_claim(pos);
                }
            })
        };
        producer.join().unwrap();
        recovery.join().unwrap();
        assert_eq!(drain(s.ring()), vec![5]);
        s.ring().push(6).unwrap();
        assert_eq!(drain(s.ring()), vec![6]);
    });
}

/// A batch producer and a single producer race, a batch consumer takes what is ready:
/// every value is delivered once.
#[test]
fn batch_and_single_producers_and_a_batch_consumer_deliver_each_value_once() {
    loom::model(|| {
        let s = Storage::new(4);
        let batch = {
            let s = s.clone();
            loom::thread::spawn(move || assert_eq!(s.ring().push_many(&[1, 2], |_| unreachable!()), 2))
        };
        let single = {
            let s = s.clone();
            loom::thread::spawn(move || s.ring().push(3).unwrap())
        };
        let consumer = spawn_batch_consumer(&s, 4);
        batch.join().unwrap();
        single.join().unwrap();
        let mut got = consumer.join().unwrap();
        got.extend(drain(s.ring()));
        got.sort();
        assert_eq!(got, vec![1, 2, 3]);
    });
}

/// Two batch consumers (a peer's workers) never take the same value.
#[test]
fn two_batch_consumers_never_take_the_same_value() {
    loom::model(|| {
        let s = Storage::new(4);
        assert_eq!(s.ring().push_many(&[1, 2, 3], |_| unreachable!()), 3);
        let consumers: Vec<_> = (0..2).map(|_| spawn_batch_consumer(&s, 2)).collect();
        let mut got: Vec<u32> = consumers.into_iter().flat_map(|c| c.join().unwrap()).collect();
        got.extend(drain(s.ring()));
        got.sort();
        assert_eq!(got, vec![1, 2, 3]);
    });
}

/// Recovery steals a batch producer's claims while it publishes: every value is either
/// delivered exactly once or reported unpushed (the ring was full of stolen slots), never
/// lost silently nor duplicated.
#[test]
fn steal_races_a_batch_publish_without_loss_or_duplicate() {
    loom::model(|| {
        let s = Storage::new(4);
        let producer = {
            let s = s.clone();
            loom::thread::spawn(move || {
                let values = [5, 6];
                let mut unpushed = Vec::new();
                assert_eq!(s.ring().push_many(&values, |i| unpushed.push(values[i])), 2);
                unpushed
            })
        };
        let recovery = {
            let s = s.clone();
            loom::thread::spawn(move || {
                for pos in s.ring().unpublished_claims() {
                    s.ring().steal_claim(pos);
                }
            })
        };
        let mut got = producer.join().unwrap();
        recovery.join().unwrap();
        got.extend(drain(s.ring()));
        got.sort();
        assert_eq!(got, vec![5, 6]);
        s.ring().push(7).unwrap();
        assert_eq!(drain(s.ring()), vec![7]);
    });
}

struct LoomFutex;

loom::lazy_static! {
    static ref FUTEX: (Mutex<()>, Condvar) = (Mutex::new(()), Condvar::new());
}

impl Futex for LoomFutex {
    fn wait(word: &AtomicU32, expected: u32, _timeout: Duration) {
        // Check-and-sleep is atomic with respect to wake, as the kernel's futex is.
        let guard = FUTEX.0.lock().unwrap();
        if word.load(Ordering::SeqCst) == expected {
            drop(FUTEX.1.wait(guard).unwrap());
        }
    }
    fn wake_all(_word: &AtomicU32) {
        let _guard = FUTEX.0.lock().unwrap();
        FUTEX.1.notify_all();
    }
}

/// A waiter that goes to sleep as work arrives is always woken: loom reports a deadlock
/// if any interleaving loses the wake-up.
#[test]
fn no_lost_wakeup() {
    loom::model(|| {
        let words = Arc::new((AtomicU32::new(0), AtomicU32::new(0)));
        let s = Storage::new(2);
        let waiter = {
            let (words, s) = (words.clone(), s.clone());
            loom::thread::spawn(move || {
                let signal = FutexSignal::<LoomFutex>::new(Duration::ZERO);
                let w = SignalWords { wake_seq: &words.0, sleepers: &words.1 };
                let ring = s.ring();
                assert!(signal.wait_until(w, &mut || ring.has_ready(), Duration::from_secs(3600)));
                ring.pop()
            })
        };
        s.ring().push(9).unwrap();
        let signal = FutexSignal::<LoomFutex>::new(Duration::ZERO);
        signal.notify(SignalWords { wake_seq: &words.0, sleepers: &words.1 });
        assert_eq!(waiter.join().unwrap(), Some(9));
    });
}

/// Two waiters on one port (a peer's worker threads) and two pieces of work signalled one
/// after the other: each waiter gets one, whatever the interleaving — the second signal is
/// never swallowed by the first waiter's wake still being on its way (the WOKEN flag).
#[test]
fn two_waiters_two_signals_no_lost_wakeup() {
    // Three threads: the preemptions are bounded to keep the search to seconds (3: 5 s, 4:
    // 50 s here). The bug it found (a stale `head` read as "empty") needed one.
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(3);
    model.check(|| {
        let words = Arc::new((AtomicU32::new(0), AtomicU32::new(0)));
        let s = Storage::new(2);
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let (words, s) = (words.clone(), s.clone());
                loom::thread::spawn(move || {
                    let signal = FutexSignal::<LoomFutex>::new(Duration::ZERO);
                    let w = SignalWords { wake_seq: &words.0, sleepers: &words.1 };
                    let ring = s.ring();
                    loop {
                        assert!(signal.wait_until(w, &mut || ring.has_ready(), Duration::from_secs(3600)));
                        if let Some(v) = ring.pop() {
                            return v;
                        }
                    }
                })
            })
            .collect();
        let signal = FutexSignal::<LoomFutex>::new(Duration::ZERO);
        for v in [7, 9] {
            s.ring().push(v).unwrap();
            signal.notify(SignalWords { wake_seq: &words.0, sleepers: &words.1 });
        }
        let mut got: Vec<u32> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
        got.sort();
        assert_eq!(got, vec![7, 9]);
    });
}
