//! Waking a port's owner when work arrives, without a system call when it is awake.
//!
//! Each port has two words in the segment: `wake_seq` (the futex word) and `sleepers`: how
//! many threads are, or are about to be, asleep on it (low bits), and [`SLEEPERS_WOKEN`],
//! set by the signaller that woke them. The protocol:
//!
//! * waiter: spin on the condition for a while; then `seq = wake_seq`; atomically
//!   `sleepers = (sleepers + 1) & !WOKEN` (register, and ask to be woken); full fence;
//!   re-check the condition; sleep on `wake_seq` while it still equals `seq`;
//!   `sleepers -= 1`.
//! * signaller (after publishing work): full fence; if the count is not 0 and `WOKEN` is
//!   clear: set `WOKEN`; if it was clear before, `wake_seq += 1` and wake the futex.
//!
//! Both sides order their write before their read with `SeqCst`, so either the waiter's
//! re-check sees the work, or the signaller sees the sleeper registered. Then either
//! `WOKEN` is clear and this signaller wakes it, or a signaller set `WOKEN` *after* the
//! registration (which cleared it) and bumps `wake_seq` after that, so the futex wait (on
//! the older `seq`) returns at once or is woken. No wake-up is lost; an awake port costs a
//! submitter one load; and while woken sleepers are on their way, later signallers make no
//! system call (a burst of replies to one waiter costs one wake, not one per reply). A
//! waiter that dies asleep leaves the count too high, which costs at most one spurious
//! wake per registration until recovery resets it.
//!
//! The kernel module implements the same [`Signal`] contract with its own primitive.

use std::time::{Duration, Instant};

use crate::layout::SLEEPERS_WOKEN;
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

/// Spin, then sleep on a futex. Generic over the futex so loom can model it.
///
/// The spin adapts (like an adaptive mutex): a spin that found the condition doubles the
/// next one, up to `spin`; one that ran out halves it, down to none. Waiters outnumber
/// cores on a loaded host (every peer has worker threads, and these machines have two
/// cores): there a spin mostly burns the time slice of the very thread it waits for, so it
/// fades away; a pair of processes ping-ponging on idle cores keeps spinning at full length.
/// While the spin is off, every [`PROBE_EVERY`]-th wait spins briefly to find out whether
/// spinning pays again.
pub struct FutexSignal<F> {
    /// The longest a waiter spins.
    pub spin: Duration,
    /// The current spin in nanoseconds (a hint shared by the port's waiters; not part of the
    /// wake-up protocol, so a plain process-local atomic).
    current_ns: std::sync::atomic::AtomicU64,
    waits: std::sync::atomic::AtomicU32,
    _futex: std::marker::PhantomData<F>,
}

/// While spinning is off, one wait in this many spins (for a probe's length).
pub const PROBE_EVERY: u32 = 32;
/// The shortest spin worth its clock reads; below it the spin is off.
const SPIN_MIN_NS: u64 = 1_000;

impl<F> FutexSignal<F> {
    pub const fn new(spin: Duration) -> Self {
        FutexSignal {
            spin,
            current_ns: std::sync::atomic::AtomicU64::new(spin.as_nanos() as u64),
            waits: std::sync::atomic::AtomicU32::new(0),
            _futex: std::marker::PhantomData,
        }
    }

    /// How long this wait spins.
    fn spin_now(&self) -> Duration {
        use std::sync::atomic::Ordering::Relaxed;
        let max = self.spin.as_nanos() as u64;
        if max == 0 {
            return Duration::ZERO;
        }
        let current = self.current_ns.load(Relaxed);
        if current >= SPIN_MIN_NS {
            return Duration::from_nanos(current);
        }
        if self.waits.fetch_add(1, Relaxed) % PROBE_EVERY == 0 {
            return Duration::from_nanos((max / 8).max(SPIN_MIN_NS));
        }
        Duration::ZERO
    }

    /// A spin found its condition: the next one may be twice as long (up to the most). No
    /// clock read and no store when it is at the most already: this is the ping-pong path.
    fn spin_paid(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let max = self.spin.as_nanos() as u64;
        let current = self.current_ns.load(Relaxed);
        if current < max {
            self.current_ns.store((current * 2).clamp(SPIN_MIN_NS, max), Relaxed);
        }
    }

    /// A spin ran out: the next one is half as long, or none.
    fn spin_wasted(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let current = self.current_ns.load(Relaxed);
        self.current_ns.store(if current / 2 < SPIN_MIN_NS { 0 } else { current / 2 }, Relaxed);
    }

    /// The current spin (for tests and reports).
    pub fn current_spin(&self) -> Duration {
        Duration::from_nanos(self.current_ns.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// Registers the caller as a sleeper of a doorbell and returns the `wake_seq` to sleep on
/// (the futex wait returns at once if it changed). The caller then re-checks its condition
/// and, if it still holds, sleeps on `wake_seq` while it equals the value returned; either
/// way it calls [`unregister_sleeper`] after. For waiters that sleep outside this library
/// too (an io_uring futex wait, see `Port::sleep_for_replies`).
pub fn register_sleeper(words: SignalWords<'_>) -> u32 {
    let seq = words.wake_seq.load(Ordering::SeqCst);
    // Register, and clear WOKEN: this sleeper wants a wake of its own.
    let _ = words
        .sleepers
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| Some(n.wrapping_add(1) & !SLEEPERS_WOKEN));
    // Pairs with the fence in `notify`: the caller's re-check must not be ordered before the
    // registration is visible (the condition's loads are only Acquire).
    fence(Ordering::SeqCst);
    seq
}

/// Ends a registration made by [`register_sleeper`].
pub fn unregister_sleeper(words: SignalWords<'_>) {
    words.sleepers.fetch_sub(1, Ordering::SeqCst);
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
        let spin = self.spin_now().min(timeout);
        if !spin.is_zero() {
            // One pause between checks (a pause can cost ~100 cycles on recent x86, so a
            // burst of them would add microseconds of latency); the clock every 64 checks.
            'spin: loop {
                for _ in 0..64 {
                    crate::sync::spin_hint();
                    if ready() {
                        self.spin_paid();
                        return true;
                    }
                }
                if start.elapsed() >= spin {
                    self.spin_wasted();
                    break 'spin;
                }
            }
        }
        loop {
            let elapsed = start.elapsed();
            if elapsed >= timeout {
                return ready();
            }
            let seq = register_sleeper(words);
            if ready() {
                unregister_sleeper(words);
                return true;
            }
            F::wait(words.wake_seq, seq, (timeout - elapsed).min(SLEEP_SLICE));
            unregister_sleeper(words);
            if ready() {
                return true;
            }
        }
    }

    fn notify(&self, words: SignalWords<'_>) {
        fence(Ordering::SeqCst);
        let sleepers = words.sleepers.load(Ordering::SeqCst);
        if sleepers & !SLEEPERS_WOKEN == 0 || sleepers & SLEEPERS_WOKEN != 0 {
            return;
        }
        let before = words.sleepers.fetch_or(SLEEPERS_WOKEN, Ordering::SeqCst);
        if before & SLEEPERS_WOKEN == 0 && before & !SLEEPERS_WOKEN != 0 {
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
        while sleepers.load(Ordering::SeqCst) & !SLEEPERS_WOKEN == 0 {
            std::thread::yield_now();
        }
        flag.store(true, Ordering::SeqCst);
        signal.notify(SignalWords { wake_seq: &seq, sleepers: &sleepers });
        let (ok, took) = waiter.join().unwrap();
        assert!(ok);
        assert!(took < Duration::from_secs(5), "woken, not timed out: {took:?}");
        assert_eq!(sleepers.load(Ordering::SeqCst) & !SLEEPERS_WOKEN, 0);
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
    fn the_spin_fades_when_it_does_not_pay_and_returns_when_it_does() {
        let seq = AtomicU32::new(0);
        let sleepers = AtomicU32::new(0);
        let max = Duration::from_micros(40);
        let signal = FutexSignal::<LinuxFutex>::new(max);
        let words = SignalWords { wake_seq: &seq, sleepers: &sleepers };
        assert_eq!(signal.current_spin(), max);
        // Nothing ever arrives while spinning: each wait halves the spin, then it is off.
        for _ in 0..10 {
            signal.wait_until(words, &mut || false, Duration::from_millis(1));
        }
        assert_eq!(signal.current_spin(), Duration::ZERO);
        // The condition turns true during the spin of a probe: the spin grows back.
        let mut grew = false;
        for _ in 0..(4 * PROBE_EVERY) {
            let mut checks = 0;
            signal.wait_until(
                words,
                &mut || {
                    checks += 1;
                    checks > 10
                },
                Duration::from_millis(1),
            );
            grew |= signal.current_spin() > Duration::ZERO;
        }
        assert!(grew, "a probe that found the condition re-enabled spinning");
        assert!(signal.current_spin() <= max);
    }

    #[test]
    fn sleepers_already_woken_cost_later_signallers_nothing() {
        let seq = AtomicU32::new(7);
        // One sleeper registered (as `wait_until` does).
        let sleepers = AtomicU32::new(1);
        let signal = FutexSignal::<LinuxFutex>::new(Duration::ZERO);
        let words = SignalWords { wake_seq: &seq, sleepers: &sleepers };
        signal.notify(words);
        signal.notify(words);
        signal.notify(words);
        assert_eq!(seq.load(Ordering::SeqCst), 8, "one wake for three signals");
        // A sleeper registering again wants a wake of its own.
        let _ =
            sleepers.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| Some((n + 1) & !SLEEPERS_WOKEN));
        signal.notify(words);
        assert_eq!(seq.load(Ordering::SeqCst), 9);
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
