//! Waking a port's owner when work arrives, without a system call when it is awake.
//!
//! Each port has two words in the segment: `wake_seq` (the futex word) and `sleepers`
//! (how many threads are, or are about to be, asleep on it). The protocol:
//!
//! * waiter: spin on the condition for a while; then `seq = wake_seq`; `sleepers += 1`;
//!   full fence; re-check the condition; sleep on `wake_seq` while it still equals `seq`; `sleepers -= 1`.
//! * signaller (after publishing work): full fence; if `sleepers > 0`: `wake_seq += 1` and
//!   wake the futex.
//!
//! Both sides order their write before their read with `SeqCst`, so either the waiter's
//! re-check sees the work, or the signaller sees the sleeper and bumps `wake_seq`, which
//! makes the futex wait return at once. No wake-up is lost; an awake port costs the
//! submitter one load. A waiter that dies asleep leaves `sleepers` too high, which only
//! costs its port's submitters a spurious wake until recovery resets it.
//!
//! The kernel module implements the same [`Signal`] contract with its own primitive.

use std::time::{Duration, Instant};

use crate::sync::{fence, AtomicU32, Ordering};

/// How a port's owner sleeps and is woken. The user-space implementation is [`FutexSignal`];
/// the kernel path has its own.
pub trait Signal {
    /// Waits until `ready()` is true or `timeout` passes; returns the last `ready()`.
    fn wait_until(&self, words: SignalWords<'_>, ready: &mut dyn FnMut() -> bool, timeout: Duration) -> bool;
    /// Wakes the sleepers of a port after work was published to it.
    fn notify(&self, words: SignalWords<'_>);
}

/// The two shared words of one port's doorbell.
#[derive(Clone, Copy)]
pub struct SignalWords<'a> {
    pub wake_seq: &'a AtomicU32,
    pub sleepers: &'a AtomicU32,
}

/// A futex: sleep while a word holds a value; wake sleepers of a word.
pub trait Futex {
    fn wait(word: &AtomicU32, expected: u32, timeout: Duration);
    fn wake_all(word: &AtomicU32);
}

/// The Linux futex, *shared* (not `FUTEX_PRIVATE`), so it works across processes.
#[cfg(not(loom))]
pub struct LinuxFutex;

#[cfg(not(loom))]
impl Futex for LinuxFutex {
    fn wait(word: &AtomicU32, expected: u32, timeout: Duration) {
        use rustix::thread::futex;
        let ts =
            futex::Timespec { tv_sec: timeout.as_secs() as i64, tv_nsec: i64::from(timeout.subsec_nanos()) };
        // EAGAIN (value changed), EINTR and ETIMEDOUT all mean "look again".
        let _ = futex::wait(word, futex::Flags::empty(), expected, Some(&ts));
    }

    fn wake_all(word: &AtomicU32) {
        use rustix::thread::futex;
        let _ = futex::wake(word, futex::Flags::empty(), i32::MAX as u32);
    }
}

/// Spin for `spin`, then sleep on a futex. Generic over the futex so loom can model it.
pub struct FutexSignal<F> {
    pub spin: Duration,
    _futex: std::marker::PhantomData<F>,
}

impl<F> FutexSignal<F> {
    pub const fn new(spin: Duration) -> Self {
        FutexSignal { spin, _futex: std::marker::PhantomData }
    }
}

/// Upper bound of one futex sleep, so a waiter re-checks its condition (and its stop flag)
/// even if a wake were ever lost to a crashed signaller.
const SLEEP_SLICE: Duration = Duration::from_millis(100);

impl<F: Futex> Signal for FutexSignal<F> {
    fn wait_until(&self, words: SignalWords<'_>, ready: &mut dyn FnMut() -> bool, timeout: Duration) -> bool {
        if ready() {
            return true;
        }
        let start = Instant::now();
        if !self.spin.is_zero() {
            // One pause between checks (a pause can cost ~100 cycles on recent x86, so a
            // burst of them would add microseconds of latency); the clock every 64 checks.
            'spin: loop {
                for _ in 0..64 {
                    crate::sync::spin_hint();
                    if ready() {
                        return true;
                    }
                }
                if start.elapsed() >= self.spin.min(timeout) {
                    break 'spin;
                }
            }
        }
        loop {
            let elapsed = start.elapsed();
            if elapsed >= timeout {
                return ready();
            }
            let seq = words.wake_seq.load(Ordering::SeqCst);
            words.sleepers.fetch_add(1, Ordering::SeqCst);
            // Pairs with the fence in `notify`: the re-check below must not be ordered
            // before the sleeper count is visible (the condition's loads are only Acquire).
            fence(Ordering::SeqCst);
            if ready() {
                words.sleepers.fetch_sub(1, Ordering::SeqCst);
                return true;
            }
            F::wait(words.wake_seq, seq, (timeout - elapsed).min(SLEEP_SLICE));
            words.sleepers.fetch_sub(1, Ordering::SeqCst);
            if ready() {
                return true;
            }
        }
    }

    fn notify(&self, words: SignalWords<'_>) {
        fence(Ordering::SeqCst);
        if words.sleepers.load(Ordering::SeqCst) > 0 {
            words.wake_seq.fetch_add(1, Ordering::SeqCst);
            F::wake_all(words.wake_seq);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    #[test]
    fn sleeping_waiter_is_woken() {
        let seq = Arc::new(AtomicU32::new(0));
        let sleepers = Arc::new(AtomicU32::new(0));
        let flag = Arc::new(AtomicBool::new(false));
        let signal = FutexSignal::<LinuxFutex>::new(Duration::ZERO);
        let (s2, sl2, f2) = (seq.clone(), sleepers.clone(), flag.clone());
        let waiter = std::thread::spawn(move || {
            let signal = FutexSignal::<LinuxFutex>::new(Duration::ZERO);
            let words = SignalWords { wake_seq: &s2, sleepers: &sl2 };
            let start = Instant::now();
            let ok = signal.wait_until(words, &mut || f2.load(Ordering::SeqCst), Duration::from_secs(10));
            (ok, start.elapsed())
        });
        while sleepers.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        flag.store(true, Ordering::SeqCst);
        signal.notify(SignalWords { wake_seq: &seq, sleepers: &sleepers });
        let (ok, took) = waiter.join().unwrap();
        assert!(ok);
        assert!(took < Duration::from_secs(5), "woken, not timed out: {took:?}");
        assert_eq!(sleepers.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn times_out_when_nothing_arrives() {
        let seq = AtomicU32::new(0);
        let sleepers = AtomicU32::new(0);
        let signal = FutexSignal::<LinuxFutex>::new(Duration::from_micros(50));
        let words = SignalWords { wake_seq: &seq, sleepers: &sleepers };
        assert!(!signal.wait_until(words, &mut || false, Duration::from_millis(20)));
        assert_eq!(sleepers.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn awake_port_costs_no_wake() {
        let seq = AtomicU32::new(7);
        let sleepers = AtomicU32::new(0);
        FutexSignal::<LinuxFutex>::new(Duration::ZERO)
            .notify(SignalWords { wake_seq: &seq, sleepers: &sleepers });
        assert_eq!(seq.load(Ordering::SeqCst), 7, "no sleeper, no bump");
    }
}
