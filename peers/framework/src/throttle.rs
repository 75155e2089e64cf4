//! Bounded logging: a peer that fails every request (a fenced blocker, a dead backend)
//! must not flood its log (SPEC §9).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Allows one event per `period_ms`, counting the ones it suppressed in between.
pub struct Throttle {
    period_ms: u64,
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

fn now_ms() -> u64 {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl Throttle {
    pub const fn new(period_ms: u64) -> Throttle {
        Throttle { period_ms, next_ms: AtomicU64::new(0), suppressed: AtomicU64::new(0) }
    }

    /// `Some(suppressed since the last allowed event)` if this event may be logged.
    pub fn allow(&self) -> Option<u64> {
        let now = now_ms();
        let due = self.next_ms.load(Ordering::Relaxed);
        if now >= due
            && self
                .next_ms
                .compare_exchange(due, now + self.period_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_period_and_a_count_of_the_rest() {
        let t = Throttle::new(60_000);
        assert_eq!(t.allow(), Some(0));
        for _ in 0..1000 {
            assert_eq!(t.allow(), None);
        }
        let quick = Throttle::new(0);
        assert!(quick.allow().is_some());
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(quick.allow().is_some());
    }
}
